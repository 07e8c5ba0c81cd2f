"""What a benchmark shows a person: a progress bar while it runs, a summary table at the end.

A benchmark runs for seconds to minutes in stages (an approach, a configuration, a
cache state). Its command opens `progress` around the run; the run calls `expect` once
it knows how many stages there are and `stage` as each begins, wherever it is (no
argument threads through the measuring code, and outside a `progress` block both do
nothing: a run called from a script or a test is silent). The bar goes to stderr and
only to a terminal (nothing when piped or captured). At the end `summary_tables` turns
the JSON results into tables: the dicts of a few numbers that recur (one per approach
and configuration) become the rows of one table, everything else a two-column table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.progress import (
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.table import Table

from replay.cli.common import progress_bar

#: A dict of at most this many numbers is a row of a table; a larger one is listed.
ROW_FIELDS = 8
#: A list of at most this many entries is shown; a longer one (a time series) is counted.
MAX_ROWS = 16


@dataclass
class _Bar:
    """The progress bar of the running benchmark, and whether a stage has begun."""

    bar: Progress
    task: TaskID
    started: bool = False


_active: list[_Bar] = []


@contextlib.contextmanager
def progress(title: str) -> Iterator[None]:
    """Show a progress bar titled `title` on stderr (a terminal only) for the block."""
    bar = progress_bar(SpinnerColumn(), TextColumn("{task.description}"))
    with bar:
        task = bar.add_task(title, total=None)
        _active.append(_Bar(bar, task))
        try:
            yield
        finally:
            _active.pop()


def expect(stages: int) -> None:
    """The run has `stages` stages in all (the bar's length)."""
    if _active:
        _active[-1].bar.update(_active[-1].task, total=stages)


def stage(description: str) -> None:
    """A stage begins: the one before it (if any) is done; show what runs now."""
    if _active:
        run = _active[-1]
        run.bar.update(run.task, description=description, advance=1 if run.started else 0)
        run.started = True


def advance_to(done: float, description: str) -> None:
    """`done` of the expected total is done (a run measured in seconds): show it."""
    if _active:
        _active[-1].bar.update(_active[-1].task, completed=done, description=description)


def number(value: Any) -> str:
    """A figure for people: 4 significant digits, thousands grouped (``1,228``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _is_row(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and 0 < len(value) <= ROW_FIELDS
        and all(not isinstance(v, Mapping | list) for v in value.values())
    )


def _walk(
    doc: Mapping[str, Any], path: str, rows: dict[tuple[str, ...], list[tuple[str, Any]]]
) -> list[tuple[str, str]]:
    """Sort the results' leaves: recurring small dicts into `rows` (by their fields),
    the other scalars returned as (path, value)."""
    loose: list[tuple[str, str]] = []
    for key, value in doc.items():
        where = f"{path}.{key}" if path else str(key)
        if _is_row(value):
            rows.setdefault(tuple(value), []).append((where, value))
        elif isinstance(value, Mapping):
            loose += _walk(value, where, rows)
        elif isinstance(value, list):
            records = bool(value) and all(isinstance(v, Mapping) for v in value)
            if len(value) > (MAX_ROWS if records else ROW_FIELDS):
                loose.append((where, f"{len(value)} values (in the JSON)"))
            elif records:
                loose += _walk({str(i): v for i, v in enumerate(value)}, where, rows)
            else:
                texts = (str(v) if isinstance(v, int) else number(v) for v in value)
                loose.append((where, ", ".join(texts) or "-"))
        else:
            loose.append((where, number(value)))
    return loose


def summary_tables(name: str, results: Mapping[str, Any]) -> list[Table]:
    """The results as tables: one per recurring set of fields, then the other figures."""
    rows: dict[tuple[str, ...], list[tuple[str, Any]]] = {}
    loose = _walk(results, "", rows)
    tables = []
    for fields, entries in rows.items():
        if len(entries) == 1:  # a lone small dict reads better as figures of its own
            loose += [(f"{entries[0][0]}.{k}", number(v)) for k, v in entries[0][1].items()]
            continue
        table = Table(title=f"{name}: {', '.join(fields)}")
        table.add_column("")
        for field in fields:
            table.add_column(field, justify="right")
        for where, value in entries:
            table.add_row(where, *(number(value[f]) for f in fields))
        tables.append(table)
    if loose:
        table = Table(title=f"{name}: figures", show_header=False)
        table.add_column("")
        table.add_column("", justify="right")
        for where, text in loose:
            table.add_row(where, text)
        tables.insert(0, table)
    return tables
