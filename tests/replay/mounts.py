"""Real small filesystems for the fault tests: a tmpfs of a given size, mounted for the
block and unmounted after; the test is skipped where mounting is not allowed."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's syntax: "64k", "2m") at the new folder `path`."""
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        _umount(path)


def _umount(path: Path) -> None:
    """Unmount, waiting up to 5 s while the kernel still releases a file just unmapped
    (a writer process's ring: "target is busy" for a moment after its munmap)."""
    deadline = time.monotonic() + 5
    while (done := subprocess.run(["umount", str(path)], capture_output=True)).returncode:
        if b"busy" not in done.stderr or time.monotonic() > deadline:
            raise RuntimeError(f"cannot unmount {path}: {done.stderr.decode().strip()}")
        time.sleep(0.1)
