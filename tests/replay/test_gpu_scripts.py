"""The scripts of the one-command GPU run, checked where they can be without a GPU.

scripts/nested-venv makes the environment scripts/gpu-run installs into. On the lent
GPU machines `python3` is itself a virtual environment holding torch, CuPy and numpy;
these tests build that situation with two nested environments and a package only the
outer one has."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def parent_venv(tmp_path: Path, *venv_options: str) -> Path:
    """A virtual environment A holding a package `parentonly` that nothing else has."""
    a = tmp_path / "A"
    subprocess.run([sys.executable, "-m", "venv", *venv_options, str(a)], check=True)
    site = Path(
        subprocess.run(
            [
                str(a / "bin/python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "parentonly").mkdir()
    (site / "parentonly/__init__.py").write_text("WHERE = 'A'\n")
    info = site / "parentonly-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: parentonly\nVersion: 1.0\n")
    (info / "RECORD").write_text("")
    return a


def python_in(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin/python"), "-c", code], capture_output=True, text=True, check=False
    )


def test_system_site_packages_of_a_venv_miss_its_packages(tmp_path: Path) -> None:
    """The failure scripts/gpu-run had: the inner venv sees the base interpreter only."""
    a = parent_venv(tmp_path, "--without-pip")
    b = tmp_path / "B"
    subprocess.run(
        [str(a / "bin/python"), "-m", "venv", "--system-site-packages", "--without-pip", str(b)],
        check=True,
    )
    assert "No module named 'parentonly'" in python_in(b, "import parentonly").stderr


def test_nested_venv_sees_the_parents_packages_after_its_own(tmp_path: Path) -> None:
    """B is made without ensurepip (the GPU machine may lack it); with no pip wheel
    carried, A's pip serves B (tests/replay/test_gpu_rehearsal.py carries one)."""
    a = parent_venv(tmp_path)
    b = tmp_path / "B"
    subprocess.run(
        [str(ROOT / "scripts/nested-venv"), str(a / "bin/python"), str(b)], check=True, cwd=tmp_path
    )
    assert not list(b.glob("lib/python*/site-packages/pip"))  # no ensurepip, no wheel
    done = python_in(
        b,
        "import sys, importlib.metadata as m, parentonly; "
        "print(parentonly.WHERE, m.version('parentonly'), sys.prefix)",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["A", "1.0"]
    assert Path(done.stdout.split()[2]) == b  # B is the environment pip installs into
    # pip counts the parent's package as installed: nothing to fetch, nothing replaced
    pip = subprocess.run(
        [str(b / "bin/python"), "-m", "pip", "install", "--no-index", "parentonly"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert "Requirement already satisfied: parentonly" in pip.stdout
    # B's own packages come first: a module installed into B shadows A's
    b_site = Path(
        python_in(b, "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    )
    (b_site / "parentonly.py").write_text("WHERE = 'B'\n")
    assert python_in(b, "import parentonly; print(parentonly.WHERE)").stdout.strip() == "B"


def test_the_run_leaves_out_what_the_gpu_machine_has() -> None:
    wheels = (ROOT / "scripts/gpu-wheels").read_text()
    assert "rm -f wheels/numpy-*.whl wheels/torch-*.whl wheels/cupy*.whl" in wheels
    run = (ROOT / "scripts/gpu-run").read_text()
    assert "scripts/nested-venv python3" in run
    assert "--system-site-packages" not in run
    assert sysconfig.get_paths()["purelib"]  # the helper's own query works here
