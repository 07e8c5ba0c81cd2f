"""A rehearsal of the lent GPU machine's one command, on the CPU: what must not fail there.

The GPU machine (docs/benchmarks.md, "GPU") has a Python 3.12 whose ``python3`` is a
virtual environment made without pip, holding numpy, CuPy and NVRTC, and no package
registry. This builds that environment from Python 3.12 (cached under
``~/.cache/replay-gpu-rehearsal``: the first run downloads about 150 MB), downloads the
carried wheels with ``scripts/gpu-wheels`` into a copy of the working tree, and runs
``scripts/gpu-run setup doctor tests`` there, installing with ``--no-index`` as on the
GPU machine. Then setup and doctor must succeed (CuPy finds NVRTC from inside the nested
venv), the tests step must collect every ``gpu``-marked test with no collection error
(each skips without CUDA), and every file that comes back must be JSON with a simple name.
"""

from __future__ import annotations

import glob
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
#: What the GPU machine's python3 holds that matters to replay (torch is left out: the
#: tests import it where they need it and skip without it).
GPU_PYTHON = (
    "numpy>=2,<3",
    "cupy-cuda13x>=14,<15",
    "nvidia-cuda-nvrtc>=13,<14",
    "pytest",
    "psutil",
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def python312() -> str:
    """A Python 3.12 that runs (a pyenv shim may exist and refuse)."""
    pyenv = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.12*/bin/python3.12")))
    for candidate in [*pyenv, shutil.which("python3.12")]:
        if candidate and subprocess.run([candidate, "-c", ""], check=False).returncode == 0:
            return candidate
    pytest.skip("no Python 3.12 here to rehearse the GPU machine's python3 with")


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


def gpu_python() -> Path:
    """The GPU machine's python3 as a venv without pip (made once, kept in the cache)."""
    venv = CACHE / "gpu-python"
    ready = venv / "ready"  # what was installed: a new list builds the venv again
    if not ready.exists() or ready.read_text() != " ".join(GPU_PYTHON):
        shutil.rmtree(venv, ignore_errors=True)
        run(python312(), "-m", "venv", "--without-pip", venv)
        pip = [sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "-q"]
        run(*pip, "--disable-pip-version-check", *GPU_PYTHON)
        ready.write_text(" ".join(GPU_PYTHON))
    return venv


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
        "no:cacheprovider", "tests/replay", "tests/capture", cwd=ROOT,
    )  # fmt: skip
    ids = (line.split("::", 1) for line in done.stdout.splitlines() if "::" in line)
    return {f"{path.removesuffix('.py').replace('/', '.')}::{name}" for path, name in ids}


def test_the_gpu_run_sets_up_and_collects_every_gpu_test(tmp_path: Path) -> None:
    venv = gpu_python()
    repo = working_copy(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheels = CACHE / "wheels"
    stamp = (ROOT / "scripts/gpu-wheels").read_text()
    if not (wheels / "STAMP").exists() or (wheels / "STAMP").read_text() != stamp:
        run("scripts/gpu-wheels", cwd=repo, env={**env, "PYTHON": sys.executable})
        shutil.rmtree(wheels, ignore_errors=True)
        shutil.copytree(repo / "wheels", wheels)
        (wheels / "STAMP").write_text(stamp)
    else:
        shutil.copytree(wheels, repo / "wheels")
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
