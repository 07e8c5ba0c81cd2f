"""How many CPUs this process may use, for sizing its encode, decode and I/O threads.

`os.cpu_count()` counts the machine's CPUs; a container pinned to a cpuset, or a
process started under ``taskset``, may run on fewer. The affinity mask says how many
it really has (Python 3.13's `os.process_cpu_count` does the same).
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs in this process's affinity mask (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks on this platform (macOS, Windows)
        return os.cpu_count() or 1
