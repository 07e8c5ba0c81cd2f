"""Click groups that also hold commands registered by other packages (entry points).

Commands that need optional packages live in `capture` and `service`, which
`replay` never imports: they register under an entry point group (``replay.commands``
for top-level commands, ``replay.bench`` for benchmarks) and `PluginGroup` loads them
when asked. A plugin whose extra is missing still shows in ``--help`` and, when run,
says which extra to install.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import click


class PluginGroup(click.Group):
    """A click group that adds the commands registered under `entry_point_group`."""

    def __init__(self, *args: object, entry_point_group: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.entry_point_group = entry_point_group

    def _plugins(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=self.entry_point_group)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._plugins().get(cmd_name)
        if ep is None:
            return None
        try:
            loaded = ep.load()
        except ImportError as e:
            return _missing_extra_command(cmd_name, ep.value.split(".")[0], e)
        if not isinstance(loaded, click.Command):
            raise click.ClickException(f"plugin {ep.value} is not a click command")
        return loaded


def _missing_extra_command(name: str, extra: str, error: ImportError) -> click.Command:
    @click.command(name=name, help=f"(needs: pip install 'replay[{extra}]')")
    def missing() -> None:
        raise click.ClickException(
            f"'{name}' needs optional packages that are not installed ({error}). "
            f"Install them with: pip install 'replay[{extra}]'"
        )

    return missing
