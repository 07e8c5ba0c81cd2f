"""What every ``replay`` command shares: opening a store, sizes for people, clean errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeElapsedColumn

from replay.errors import ReplayError
from replay.store import Store, open_store

P = ParamSpec("P")


def open_for_reading(path: str) -> Store:
    """An existing store, read-only; a clean CLI error if it is not one."""
    try:
        return open_store(path, mode="r")
    except ReplayError as e:
        raise click.ClickException(str(e)) from e


def open_for_writing(path: str, read_only: bool) -> Store:
    """An existing store (never a new empty one), writable unless `read_only`."""
    try:
        store = open_store(path, mode="r")
        return store if read_only else open_store(path, mode="a")
    except ReplayError as e:
        raise click.ClickException(str(e)) from e


def human_bytes(nbytes: float) -> str:
    """Bytes in decimal units: ``5_691_972`` -> ``"5.7 MB"`` (also for `replay record`)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def plural(n: int, noun: str) -> str:
    """A count for people: ``1 race``, ``2 races``, ``0 races``, ``12,000 frames``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def clean_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Turn the store's errors (and OS errors: a read-only mount, a failing disk) into a
    one-line CLI error instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (ReplayError, OSError) as e:
            raise click.ClickException(str(e)) from e

    return run


def progress_bar(*columns: str | ProgressColumn) -> Progress:
    """A rich progress bar on stderr, transient, shown only on a terminal (piped output and
    CliRunner stay clean): `columns`, then a bar, done/total and the elapsed time."""
    console = Console(stderr=True)
    return Progress(
        *columns,
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
