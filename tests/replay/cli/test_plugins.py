"""`replay.cli.plugins.PluginGroup`: commands registered by another installed distribution
(a real dist-info folder on sys.path) load, a missing extra says what to install, a
plugin that is not a command is refused, built-in commands win."""

from __future__ import annotations

import textwrap
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from replay.cli.plugins import EXTRAS, PluginGroup, install_hint

ROOT = Path(__file__).parents[3]

GROUP = "replay.test_plugins"
BAD_GROUP = "replay.test_bad_plugins"


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install (on sys.path) a distribution that registers commands under GROUP."""
    (tmp_path / "replay_plugin_fixture.py").write_text(
        textwrap.dedent(
            """
            import click

            @click.command(help="Say hello from a plugin.")
            @click.argument("name")
            def hello(name):
                click.echo(f"hello {name} from a plugin")

            NOT_A_COMMAND = 42
            """
        )
    )
    info = tmp_path / "replay_plugin_fixture-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: replay-plugin-fixture\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{GROUP}]\n"
        "hello = replay_plugin_fixture:hello\n"
        "optional = replay_no_such_extra.cli:command\n"
        "builtin = replay_plugin_fixture:hello\n"
        f"[{BAD_GROUP}]\n"
        "odd = replay_plugin_fixture:NOT_A_COMMAND\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def make_cli(group: str) -> click.Group:
    @click.group(cls=PluginGroup, entry_point_group=group)
    def cli() -> None:
        """A CLI with plugins."""

    @cli.command()
    def builtin() -> None:
        """A command of the group itself."""
        click.echo("the built-in command")

    return cli


@pytest.mark.usefixtures("plugins")
def test_plugins_are_listed_and_run() -> None:
    cli = make_cli(GROUP)
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line]
    assert listed == ["builtin", "hello", "optional"]
    assert "Say hello from a plugin." in result.output
    result = runner.invoke(cli, ["hello", "world"])
    assert (result.exit_code, result.output) == (0, "hello world from a plugin\n")
    result = runner.invoke(cli, ["builtin"])  # the group's own command wins over a plugin
    assert (result.exit_code, result.output) == (0, "the built-in command\n")
    result = runner.invoke(cli, ["nope"])
    assert result.exit_code == 2
    assert "No such command 'nope'" in result.output


@pytest.mark.usefixtures("plugins")
def test_a_plugin_whose_extra_is_missing_says_what_to_install() -> None:
    cli = make_cli(GROUP)
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert "(needs: the package that provides 'replay_no_such_extra')" in result.output
    result = runner.invoke(cli, ["optional"])
    assert result.exit_code == 1
    assert "'optional' needs optional packages that are not installed" in result.output
    assert "No module named 'replay_no_such_extra'" in result.output
    assert "replay[" not in result.output  # another distribution's plugin: no extra guessed


def test_each_plugin_of_replay_names_its_own_extra() -> None:
    """`replay bench s3` says ``replay[s3]`` (not ``replay[replay]``, guessed from the
    package name); every entry point in pyproject.toml has an extra that exists."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    error = ImportError("No module named 'obstore'", name="obstore")
    s3 = EntryPoint(name="s3", value="replay.bench.s3:command", group="replay.bench")
    assert install_hint(s3, error) == "pip install 'replay[s3]'"
    registered = {
        value
        for group in ("replay.commands", "replay.bench")
        for value in project["entry-points"][group].values()
    }
    assert registered == set(EXTRAS)
    assert set(EXTRAS.values()) <= set(project["optional-dependencies"])
    serve = EntryPoint(name="serve", value="service.cli:serve", group="replay.commands")
    assert install_hint(serve, error) == "pip install 'replay[service]'"


@pytest.mark.usefixtures("plugins")
def test_a_plugin_that_is_not_a_command_is_refused() -> None:
    result = CliRunner().invoke(make_cli(BAD_GROUP), ["odd"])
    assert result.exit_code == 1
    assert "plugin replay_plugin_fixture:NOT_A_COMMAND is not a click command" in result.output
    listing = CliRunner().invoke(make_cli(BAD_GROUP), ["--help"])  # --help still works
    assert listing.exit_code == 0
    assert "odd" in listing.output
    assert "broken" in listing.output


def test_without_plugins_the_group_is_plain_click() -> None:
    cli = make_cli("replay.no_such_group")
    assert cli.list_commands(click.Context(cli)) == ["builtin"]
    assert CliRunner().invoke(cli, ["builtin"]).output == "the built-in command\n"
