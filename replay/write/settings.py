"""A writer's settings, defined once: `WriterSettings` travels from `Store.new_race` to
either writer kind (and, pickled, to the writer process).

It is validated when made (`ValueError` naming the value), so a bad setting is refused
before a race is created; `resolved` then picks the device (``"auto"``: the GPU when
it passes its self-check) and the writer kind (``"auto"``: a process for CPU frames,
a thread for CUDA ones: docs/writer.md says why).

    settings = WriterSettings(flush_interval=0.5, on_full="drop").resolved()
    settings.slots(fps=30)   # ring slots for a 30 FPS race: 15

The ring (`queue_size` slots) is sized by what a race needs unless given: half a
second of frames at the race's frame rate (`RING_S`), at least `MIN_SLOTS`. Commits
run in a thread of their own (`replay.write.shard_committer`), so neither a flush nor a
full shard stops the encoder; the ring only absorbs the encoder's jitter (a batch
being encoded, the writer process's nice-10 threads waiting for a core), and a
driver faster than its encoder fills any ring. docs/writer.md gives the memory a race
costs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from replay.codec.devices import Device, device_index, parse_device
from replay.codec.gpu_check import resolve_device

QueuePolicy = Literal["block", "drop"]
WriterKind = Literal["auto", "thread", "process"]

RING_S = 0.5  # seconds of frames a ring holds, at the race's fps
MIN_SLOTS = 8  # fewer and a batch being encoded (up to 16 frames) makes the driver wait
MAX_SLOTS = 256


@dataclass(frozen=True)
class WriterSettings:
    """How a race is recorded, as opposed to what it is (`replay.format.race_schema`).

    `flush_interval`: seconds between commits of the open shard (what a crash loses at
    most); `queue_size`: ring slots (None: sized by `slots` from the race's fps);
    `on_full`: ``"block"`` or ``"drop"`` when the ring is full; `device`: ``"auto"``,
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; `writer`: ``"auto"``, ``"thread"`` or
    ``"process"``; `enforce_capacity`: evict races over the store's saved capacity as
    shards are committed (`replay.maintenance.capacity.enforce`).
    """

    flush_interval: float = 1.0
    queue_size: int | None = None
    on_full: QueuePolicy = "block"
    device: str = "auto"
    writer: WriterKind = "auto"
    enforce_capacity: bool = False

    def __post_init__(self) -> None:
        interval = self.flush_interval
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise ValueError(f"flush_interval must be a number of seconds, got {interval!r}")
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"flush_interval must be positive and finite, got {interval!r}")
        size = self.queue_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"queue_size must be a positive integer or None, got {size!r}")
        if self.on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', not {self.on_full!r}")
        if not isinstance(self.device, str):
            raise ValueError(
                f"device must be a string such as 'cpu' or 'cuda:0', not {self.device!r}"
            )
        parse_device(self.device)  # ValueError naming it
        if self.writer not in ("auto", "thread", "process"):
            raise ValueError(f"writer must be 'auto', 'thread' or 'process', not {self.writer!r}")

    @property
    def kind(self) -> Device:
        """Where frames are encoded: ``"cuda"`` or ``"cpu"`` (of resolved settings)."""
        return "cuda" if self.device.startswith("cuda") else "cpu"

    @property
    def gpu(self) -> int:
        """The GPU a CUDA writer's frames live on (0 on the CPU)."""
        return device_index(self.device) if self.kind == "cuda" else 0

    def resolved(self) -> WriterSettings:
        """These settings with the device (``"cpu"`` or ``"cuda:N"``) and the writer kind
        (``"thread"`` or ``"process"``) decided; RuntimeError if the device is missing,
        ValueError for ``writer="process"`` with CUDA frames."""
        kind = resolve_device(self.device)
        device = "cpu" if kind == "cpu" else f"cuda:{device_index(self.device)}"
        writer: WriterKind = "thread" if self.writer == "thread" or kind == "cuda" else "process"
        if kind == "cuda" and self.writer == "process":
            raise ValueError(
                "writer='process' encodes on the CPU; a CUDA writer encodes in a thread "
                "(nvImageCodec releases the GIL while nvJPEG runs): use writer='thread'"
            )
        return dataclasses.replace(self, device=device, writer=writer)

    def slots(self, fps: float) -> int:
        """The ring slots of a race at `fps`: `queue_size`, or `RING_S` of frames."""
        if self.queue_size is not None:
            return self.queue_size
        return max(MIN_SLOTS, min(MAX_SLOTS, math.ceil(fps * RING_S)))
