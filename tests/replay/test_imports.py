"""What each module pulls in when it is imported (its module-level imports, followed).

Imports under ``if TYPE_CHECKING:`` and inside functions are left out: they cost
nothing at import time. The package's ``__init__`` is not followed either (it
re-exports everything); what matters is which modules a module needs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import replay

ROOT = Path(replay.__file__).parent


def _path(module: str) -> Path | None:
    """The file of a replay module; None if `module` names no module (a class, say)."""
    base = ROOT.joinpath(*module.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _direct(module: str) -> set[str]:
    """The replay modules `module` imports at module level."""
    path = _path(module)
    assert path is not None, module
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("replay.")}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "replay":  # from replay import format as fmt
                out |= {f"replay.{a.name}" for a in node.names}
            elif node.module.startswith("replay."):
                out.add(node.module)
    return {m for m in out if _path(m) is not None}


def imported_by(module: str) -> set[str]:
    """Every replay module that importing `module` loads (not counting the package)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in _direct(todo.pop()) - seen:
            seen.add(name)
            todo.append(name)
    return seen


def test_the_http_client_needs_no_sampler_index_or_reader() -> None:
    pulled = imported_by("replay.remote.client")
    assert "replay.read.batch" in pulled  # the helper works: client imports batch
    assert pulled.isdisjoint(
        {
            "replay.sample.sampler",
            "replay.read.index",
            "replay.read.reader",
            "replay.sample.selectors",
            "replay.store",
        }
    ), sorted(pulled)
