"""A rehearsal of the lent GPU machine's one command, on the CPU: what must not fail there.

The GPU machine (docs/benchmarks.md, "GPU") has a Python 3.12 whose ``python3`` is a
virtual environment made without pip, holding numpy, CuPy and NVRTC, and no package
registry. scripts/gpu-rehearsal-prep builds that environment from Python 3.12 and
downloads the carried wheels with ``scripts/gpu-wheels`` (cached under
``~/.cache/replay-gpu-rehearsal``; scripts/test runs it, so this test reaches no
network); the test copies the working tree and the wheels and runs ``scripts/gpu-run
setup doctor tests`` there, installing with ``--no-index`` as on the GPU machine. Then
setup and doctor must succeed (CuPy finds NVRTC from inside the nested venv), the tests
step must collect every ``gpu``-marked test with no collection error (each skips without
CUDA), and every file that comes back must be JSON with a simple name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "replay-gpu-rehearsal"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def prepared() -> Path:
    """The cache scripts/gpu-rehearsal-prep made (the test itself reaches no network)."""
    if not (CACHE / "STAMP").exists():
        message = "run scripts/gpu-rehearsal-prep first (scripts/test does)"
        if os.environ.get("REPLAY_GPU_REHEARSAL") == "required":
            pytest.fail(message)
        pytest.skip(message)
    return CACHE


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


def working_copy(target: Path) -> Path:
    """The working tree's files (tracked, and untracked but not ignored) in `target`."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def gpu_test_ids() -> set[str]:
    """The gpu-marked tests this environment collects, named as tests.json names them."""
    done = run(
        sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "gpu", "-p",
        "no:cacheprovider", "tests/replay", "tests/capture",
        *map(str, sorted(ROOT.glob("tests/service/*_gpu.py"))), cwd=ROOT,
    )  # fmt: skip
    ids = (line.split("::", 1) for line in done.stdout.splitlines() if "::" in line)
    return {f"{path.removesuffix('.py').replace('/', '.')}::{name}" for path, name in ids}


def test_the_gpu_run_sets_up_and_collects_every_gpu_test(tmp_path: Path) -> None:
    cache = prepared()
    venv = cache / "gpu-python"
    repo = working_copy(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    shutil.copytree(cache / "wheels", repo / "wheels")
    out = tmp_path / "out"
    env = {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}", "OUT": str(out)}
    done = subprocess.run(
        ["scripts/gpu-run", "setup", "doctor", "tests"],
        cwd=repo, env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    report = done.stdout[-4000:] + done.stderr[-2000:]

    files = sorted(p.name for p in out.iterdir())
    assert files == ["doctor.json", "logs.json", "steps.json", "tests.json"], report
    docs = {name: json.loads((out / name).read_text()) for name in files}
    assert all(re.fullmatch(r"[a-z]+\.json", name) for name in files)
    steps = {s["step"]: s for s in docs["steps.json"]["steps"]}
    logs = docs["logs.json"]
    assert steps["setup"]["ok"], logs["setup"]
    assert any(line.startswith("NVRTC (13") for line in logs["setup"]), logs["setup"]
    assert steps["doctor"]["ok"], logs["doctor"]
    assert docs["doctor.json"]["ok"] is True
    assert steps["tests"]["ok"], logs["tests"]
    assert not any("ERROR" in line or "Interrupted" in line for line in logs["tests"])
    assert docs["tests.json"]["counts"]["failed"] == 0, docs["tests.json"]
    # every gpu test, none lost to a module skipped for a package the GPU machine lacks
    cases = docs["tests.json"]["tests"]
    modules = [c for c in cases if c["test"].startswith("::")]
    assert all("collection skipped" in c["message"] for c in modules), modules
    assert {c["test"] for c in cases if c not in modules} == gpu_test_ids()
    # without gpu-run's LD_LIBRARY_PATH the nested venv's CuPy misses NVRTC: the fix matters
    bare = {k: v for k, v in env.items() if k != "LD_LIBRARY_PATH"}
    probe = "from cupy_backends.cuda.libs import nvrtc; print(nvrtc.getVersion())"
    missed = subprocess.run(
        [str(repo / ".gpu-venv/bin/python"), "-c", probe],
        env=bare, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert missed.returncode != 0, missed.stdout
    assert "libnvrtc" in missed.stderr, missed.stderr
