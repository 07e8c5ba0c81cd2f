"""Every code example in README.md and docs/*.md, run as a new user would run it.

Python blocks (found by pytest-examples) run in a fresh folder holding ``./replay-data``,
a copy of a real store of real CarRacing frames. The names the prose leaves to the
reader are filled by fixtures: `game()` plays the fixture's frames, `learner` computes a
TD error from a batch, `train_steps` bounds a training loop, `race_id` names a race of
the store; the addresses in the text (``http://replay-host:8000``, ``s3://replay/team-a``)
become a real ``replay serve`` and a real SeaweedFS on loopback.

Bash blocks: every ``replay ...`` line runs through the CLI (click's CliRunner) on the
copy, with ``RACE_ID`` filled in and recording sizes shrunk (`SHRINK`). Lines that cannot
run here are listed in `NOT_RUN` with the reason and where they are tested instead; a
line neither run nor listed fails, so a new example cannot slip past.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from pytest_examples import CodeExample, EvalExample, find_examples

import replay
from replay.cli.main import main as cli
from service.tools.process import ServerProcess

torch = pytest.importorskip("torch")

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOKEN = "secret"

#: Lines of bash blocks that are not run, and why (each is tested elsewhere).
NOT_RUN = {
    "scripts/demo": "sets up .venv, records and serves until stopped (its parts run below)",
    "scripts/test": "is what CI runs (this test included)",
    "replay serve": "serves until stopped: tests/service runs it (ServerProcess), and the "
    "Client example here talks to a real one",
    "REPLAY_TOKEN=secret replay serve": "as above, with a token (tests/service/test_security.py)",
    "replay bench": "minutes at these sizes: tests/replay/test_bench.py and "
    "tests/service/test_service_bench.py run each at small sizes",
    "replay soak": "an hour: tests/service/test_soak.py runs it for 30 s",
    "export": "deploy/compose.yaml needs docker: tests/deploy/test_manifests.py checks it",
    "docker compose": "needs docker: tests/deploy/test_manifests.py checks the files",
    "curl": "against the compose deployment above",
}
#: Recording sizes of the examples, shrunk so that CI records in seconds.
SHRINK = [(re.compile(r"--races \d+ --steps \d+"), "--races 1 --steps 6")]


def python_examples() -> list[CodeExample]:
    return list(find_examples(*DOCS))


def bash_blocks() -> list[tuple[str, list[str]]]:
    """(``file:line``, its lines) of every bash block of the docs."""
    out: list[tuple[str, list[str]]] = []
    for path in DOCS:
        block: list[str] | None = None
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("```") and block is None:
                if line.strip() in ("```bash", "```sh"):
                    block = []
                    out.append((f"{path.name}:{number}", block))
                continue
            if line.startswith("```"):
                block = None
            elif block is not None and line.strip() and not line.strip().startswith("#"):
                block.append(line.strip())  # a line that is only a comment runs nothing
    return out


@pytest.fixture(scope="module")
def docs_store(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two complete races of 48 real CarRacing frames (90 windows of 4 steps)."""
    path = tmp_path_factory.mktemp("docs") / "replay-data"
    store = replay.open_store(path)
    for map_ in ("seed-7", "seed-8"):
        with store.new_race(env="CarRacing-v3", map=map_, fps=50, action_shape=(3,)) as writer:
            for i, frame in enumerate(real_frames):
                writer.append(frame, action=np.zeros(3, np.float32), reward=float(i))
    return path


#: The names each page's examples defined so far: a page reads as one session, so an
#: example may use the `store` an earlier one opened (docs/nstep-and-rate-limits.md).
_NAMES: dict[str, dict[str, Any]] = {}
#: One folder per document: its examples run there in order, as a reader follows a page
#: (docs/learners.md records races in its first example and reads them in the next).
_FOLDERS: dict[str, Path] = {}


@pytest.fixture
def workdir(
    docs_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Path:
    """The document's folder, holding ``./replay-data`` (a copy of the store), as the cwd;
    Minari datasets go into it too, not into the user's home."""
    name = request.node.callspec.id.split(":")[0]  # the document (python, then bash)
    folder = _FOLDERS.get(name)
    if folder is None:
        folder = tmp_path_factory.mktemp(name.replace(".", "-"))
        shutil.copytree(docs_store, folder / "replay-data")
        _FOLDERS[name] = folder
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(folder / "minari"))
    return folder


@pytest.fixture(scope="module")
def docs_server(docs_store: Path) -> Iterator[ServerProcess]:
    """``replay serve`` with a token, on a copy of the store (the Client example)."""
    served = docs_store.parent / "served"
    shutil.copytree(docs_store, served, dirs_exist_ok=True)
    with ServerProcess(served, env={"REPLAY_TOKEN": TOKEN}) as proc:
        yield proc


class Learner:
    """The README's `learner`: a TD error per item, computed from the batch itself."""

    def td_error(self, frames: Any, action: Any, reward: Any, terminated: Any) -> Any:
        assert frames.dtype == torch.uint8
        value = frames.float().mean(dim=(1, 2, 3, 4)) / 255
        return value - reward.sum(dim=1) * 0.01 + terminated.float().sum(dim=1)


def placeholders(workdir: Path, carracing_frames: list[Any]) -> dict[str, Any]:
    """The names the examples leave to the reader, filled with real things."""

    def game() -> Iterator[tuple[Any, Any, float, bool]]:
        steps = carracing_frames[:12]
        for i, step in enumerate(steps):
            yield step.frame, step.action, float(step.reward), i == len(steps) - 1

    race_id = replay.open_store(workdir / "replay-data", mode="r").races()[0].race_id
    return {"game": game, "learner": Learner(), "train_steps": 1, "race_id": race_id}


@pytest.mark.parametrize(
    "example", python_examples(), ids=lambda e: f"{e.path.name}:{e.start_line}"
)
def test_python_example_runs(
    example: CodeExample,
    eval_example: EvalExample,
    workdir: Path,
    carracing_frames: list[Any],
    request: pytest.FixtureRequest,
) -> None:
    source = example.source
    page = example.path.name
    if "replay-host:8000" in source:
        server: ServerProcess = request.getfixturevalue("docs_server")
        source = source.replace("http://replay-host:8000", server.url)
    if "s3://replay/team-a" in source:
        source = source.replace("s3://replay/team-a", request.getfixturevalue("s3_url"))
    runnable = CodeExample.create(source, path=example.path, start_line=example.start_line)
    races = len(replay.open_store(workdir / "replay-data", mode="r").races())
    main = sys.modules["__main__"]  # pytest-examples runs the example as __main__
    failure = None
    try:
        known = {**placeholders(workdir, carracing_frames), **_NAMES.get(page, {})}
        module = eval_example.run(runnable, module_globals=known)
    except Exception as e:  # pytest-examples' rewritten traceback cannot be formatted
        failure = f"{type(e).__name__}: {e}"
    finally:
        sys.modules["__main__"] = main
    if failure is not None:
        where = f"{example.path.name}:{example.start_line}"
        pytest.fail(f"the example at {where} fails: {failure}", pytrace=False)
    _NAMES[page] = {k: v for k, v in module.items() if not k.startswith("__")}
    for value in module.values():  # what a script's exit would close
        if isinstance(value, replay.Client):
            value.close()
    # each example did what its text says
    if "update_priorities" in source and '"./replay-data"' in source:
        assert (workdir / "replay-data" / "samplers" / "default" / "priorities.npz").is_file()
    if "new_race" in source and '"./replay-data"' in source:
        assert len(replay.open_store(workdir / "replay-data", mode="r").races()) == races + 1
    if "make_loader" in source:
        assert tuple(module["frames"].shape) == (32, 4, 900, 1600, 3)
    if "def read_batch" in source:  # the protocol's reader, on a real response body
        server = request.getfixturevalue("docs_server")
        import httpx

        body = httpx.post(
            f"{server.url}/v1/sample",
            json={"batch_size": 2, "seq_len": 1},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).content
        race_ids, steps, frames, _ = module["read_batch"](body)
        assert len(race_ids) == 2
        assert steps.shape == (2, 1)
        assert frames[0][0][:2] == b"\xff\xd8"  # JPEG bytes


@pytest.mark.parametrize(("where", "lines"), bash_blocks(), ids=[w for w, _ in bash_blocks()])
def test_bash_example_runs(where: str, lines: list[str], workdir: Path) -> None:
    """The lines of a block run in order on one copy of the store, as typed in a shell."""
    for line in lines:
        if any(line.startswith(prefix) for prefix in NOT_RUN):
            continue  # listed in NOT_RUN, with where it is tested
        assert line.startswith("replay "), f"{where}: {line!r} is neither run nor in NOT_RUN"
        for pattern, small in SHRINK:
            line = pattern.sub(small, line)
        args = shlex.split(line, comments=True)[1:]
        if "RACE_ID" in args:  # a race of the store the line names (`replay CMD STORE ...`)
            race_id = replay.open_store(workdir / args[1], mode="r").races()[0].race_id
            args = [race_id if a == "RACE_ID" else a for a in args]
        variants = [args]
        optional = [a for a in args if a.startswith("[") and a.endswith("]")]
        if optional:  # `replay verify ./replay-data [--repair]`: without it, then with it
            plain = [a for a in args if a not in optional]
            variants = [plain, plain + [a.strip("[]") for a in optional]]
        for argv in variants:
            result = CliRunner().invoke(cli, argv, catch_exceptions=False)
            assert result.exit_code == 0, f"{where}: replay {' '.join(argv)}\n{result.output}"
