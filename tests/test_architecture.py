"""The shape of the house, checked on the source with `ast` (nothing is imported).

- `replay/` is a house of wings, one per job, in the order of `WINGS`: a module imports
  only modules of its own wing or of the wings below it (docs/architecture.md draws it);
- no import cycle inside a package;
- no module of replay/ (outside bench/) over 400 lines, no function over 60 lines in
  replay/, service/ or capture/ (bench/ excepted);
- at most 6 modules at the top of replay/ and at most 12 in a wing (bench/ excepted:
  one module per benchmark, as tests are one module per subject);
- `replay` never imports `service` or `capture`, and `capture` uses only the public
  names of `replay` (`replay/__init__.py`'s, `replay.errors` and `replay.closing`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("replay", "service", "capture")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_TOP_LEVEL_MODULES = 6
MAX_WING_MODULES = 12

#: The wings of `replay`, lowest first: each may import only itself and those before it.
#: A tuple names top-level modules that stand between wings.
WINGS: tuple[str | tuple[str, ...], ...] = (
    ("replay.errors", "replay.closing", "replay.cpus", "replay.arguments"),  # every wing's
    "storage",  # bytes on disk or in an object store
    "codec",  # frames and steps to bytes and back, on the CPU and the GPU
    "format",  # the store's documents, shards, races and leases
    "maintenance",  # capacity, recovery, verify, repair
    "write",  # the writer beside the driver
    "read",  # index, reader, decode, transform, batches
    "sample",  # samplers, selectors, priorities, rate limits
    "remote",  # the HTTP client and the batch protocol
    ("replay.store",),  # the front door
    "integrations",  # Gymnasium, TorchRL, PyTorch loaders, export
    "cli",  # the replay command
    "bench",  # benchmarks (a replay.commands plugin)
)


def _sources(package: str) -> Iterator[Path]:
    return (p for p in sorted((ROOT / package).rglob("*.py")) if "bench" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, counting every import: at the top,
    under TYPE_CHECKING and inside functions (a cycle hidden there is still a cycle)."""
    modules = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m not in (name, package)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    assert cycles(import_graph(package)) == []


def test_no_long_module_in_replay() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources("replay")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: split them"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_long_function(package: str) -> None:
    long = {}
    for path in _sources(package):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines: split them"


def wing_rank(module: str) -> int:
    """The position in `WINGS` of a module of `replay` (ValueError if it is in none)."""
    parts = module.split(".")
    for rank, wing in enumerate(WINGS):
        if module in wing if isinstance(wing, tuple) else parts[1:2] == [wing]:
            return rank
    raise ValueError(f"{module} is in no wing of tests/test_architecture.py WINGS")


def test_every_module_of_replay_is_in_a_wing() -> None:
    for module in import_graph("replay"):
        if module != "replay":
            wing_rank(module)


def test_a_wing_imports_only_the_wings_below_it() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph("replay").items()
        for target in targets
        if module != "replay" and wing_rank(target) > wing_rank(module)
    )
    assert upward == [], "imports of a higher wing (see WINGS): move the shared part down"


def test_wing_order_check_finds_an_upward_import() -> None:
    assert wing_rank("replay.storage.local") < wing_rank("replay.write.writer")
    assert wing_rank("replay.store") > wing_rank("replay.remote.client")


def test_the_top_level_and_each_wing_stay_small() -> None:
    top = sorted(p.name for p in (ROOT / "replay").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES - 1, top  # __init__.py is the sixth
    for wing in sorted(p for p in (ROOT / "replay").iterdir() if (p / "__init__.py").exists()):
        modules = [p for p in wing.glob("*.py") if p.name != "__init__.py"]
        if wing.name != "bench":
            assert len(modules) <= MAX_WING_MODULES, f"{wing.name}: {len(modules)} modules"
        assert (wing / "__init__.py").read_text() == "", f"{wing.name}/__init__.py is not empty"


def _imported_packages(package: str) -> set[str]:
    """The modules that the files under `package` (a folder or a .py file) import."""
    found: set[str] = set()
    root = ROOT / package
    for path in [root] if root.suffix == ".py" else root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def test_replay_never_imports_service_or_capture() -> None:
    """bench/ excepted: a ``replay.commands`` plugin, like ``record``, that plays real games."""
    imported = {
        m.split(".")[0]
        for p in (ROOT / "replay").iterdir()
        if p.name != "bench"
        for m in _imported_packages(str(p.relative_to(ROOT)))
    }
    assert imported.isdisjoint({"service", "capture"})


def test_capture_uses_only_public_names_of_replay() -> None:
    used = {m for m in _imported_packages("capture") if m.split(".")[0] == "replay"}
    assert used <= {"replay", "replay.errors", "replay.closing"}, sorted(used)
