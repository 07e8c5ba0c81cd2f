"""`replay.cpus`: the thread pools size themselves by the CPUs the process may run on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from replay.cpus import usable_cpus


def test_usable_cpus_is_the_affinity_mask() -> None:
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no affinity masks on this platform")
    # a child pinned to one CPU (as taskset or a container's cpuset would) sees one,
    # and sizes its encoder lanes by it
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from replay.cpus import usable_cpus; from replay.codec import jpeg;"
        "print(usable_cpus(), jpeg.JpegEncoder('cpu').max_lanes)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
