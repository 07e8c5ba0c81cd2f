"""Click groups that also hold commands registered by other packages (entry points).

Commands that need optional packages live in `capture` and `service`, which
`replay` never imports: they register under an entry point group (``replay.commands``
for top-level commands, ``replay.bench`` for benchmarks) and `PluginGroup` loads them
when asked. A plugin whose extra is missing still shows in ``--help`` and, when run,
says which extra to install (`EXTRAS`); a broken plugin (not a click command) says so
when run and never takes ``--help`` down with it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

import click

#: The extra of `replay` that installs what each of its own plugins imports, by the
#: entry point's object reference (pyproject.toml's ``replay.commands`` and
#: ``replay.bench``; tests/replay/test_plugins.py checks that the two agree). Plugins
#: of other distributions have none: their message names the missing module.
EXTRAS: Mapping[str, str] = {
    "capture.cli:record": "capture",
    "replay.bench.cli:bench": "bench",
    "service.cli:serve": "service",
    "service.tools.soak:soak": "service",
    "service.tools.bench:serve_bench": "service",
    "replay.bench.s3:command": "s3",
    "replay.bench.torchrl:command": "torch",
}


def install_hint(ep: EntryPoint, error: ImportError) -> str:
    """What to install for a plugin that failed to import with `error`."""
    extra = EXTRAS.get(ep.value)
    if extra is not None:
        return f"pip install 'replay[{extra}]'"
    return f"the package that provides {error.name or ep.module!r}"


class PluginGroup(click.Group):
    """A click group that adds the commands registered under `entry_point_group`."""

    def __init__(self, *args: object, entry_point_group: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.entry_point_group = entry_point_group

    @functools.cached_property  # scanning installed packages' metadata is slow: once
    def _plugins(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=self.entry_point_group)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._plugins.get(cmd_name)
        if ep is None:
            return None
        try:
            loaded = ep.load()
        except ImportError as e:
            hint = install_hint(ep, e)
            return _unusable_command(
                cmd_name,
                f"(needs: {hint})",
                f"'{cmd_name}' needs optional packages that are not installed ({e}). "
                f"Install them with: {hint}",
            )
        if not isinstance(loaded, click.Command):
            message = f"plugin {ep.value} is not a click command"
            return _unusable_command(cmd_name, f"(broken: {message})", message)
        return loaded


def _unusable_command(name: str, help: str, error: str) -> click.Command:
    """A stand-in listed under `help` that fails with `error` when run."""

    @click.command(name=name, help=help)
    def unusable() -> None:
        raise click.ClickException(error)

    return unusable
