"""The background writer beside the driver: the `Writer` interface and its settings.

Two writers implement it. `replay.write.thread_writer.ThreadWriter` encodes in a thread of
the driver's process (the CUDA path, and ``new_race(writer="thread")``); for CPU
frames the default is the process writer (`replay.write.process_writer`), which runs a
`ThreadWriter` in a writer process fed through shared memory. docs/writer.md says which and why.

`Writer.append` validates a frame, copies it into a preallocated ring slot and
returns: the driver never waits on encoding or disk. A background thread takes
frames in batches, JPEG-encodes them (nvImageCodec's nvJPEG on the GPU for a
CUDA writer, libjpeg-turbo otherwise), assembles whole shards and commits them
(`replay.format.spec` describes the protocol). The open shard is re-committed every
`flush_interval` seconds, so a crash loses at most that much.

    with store.new_race(env="CarRacing-v3") as writer:       # complete on exit,
        for frame, action, reward in driver():                # aborted on exception
            writer.append(frame, action=action, reward=reward)
    print(writer.stats())

When the ring is full, ``on_full="block"`` waits for a slot and ``"drop"`` drops
the frame (counted in `WriterStats.dropped`). If the background thread fails
(a full disk, say), `append` keeps the driver alive by dropping frames, the error
shows in `stats().error`, and `close()` raises `WriterFailedError`. So does a race
taken over by a process that judged the writer dead (`replay.format.lease`): the writer
stops at its next commit rather than write to an aborted or removed race.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from replay.closing import Closing
from replay.codec.devices import Device, on_device
from replay.errors import FrameError, ReplayError, StepDataError
from replay.format import spec as fmt
from replay.format.race_schema import StepSpec
from replay.write.settings import WriterSettings

if TYPE_CHECKING:
    from replay.format.race import RaceInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterStats:
    """Counters of a writer; `written` frames are committed (durable and visible).

    `encode_ms_mean` is the encode time per frame over the race so far and
    `encode_ms_p99` its 99th percentile over the last frames (frames are encoded in
    batches: each frame of a batch counts the batch's time over its size).
    """

    appended: int
    written: int
    dropped: int
    queue_depth: int
    encode_ms_mean: float
    encode_ms_p99: float
    bytes_written: int
    shards_written: int
    error: str | None


def _is_cuda_array(obj: object) -> bool:
    return hasattr(obj, "__cuda_array_interface__") or (
        hasattr(obj, "__dlpack_device__") and obj.__dlpack_device__()[0] in (2, 13)
    )


def device_array(frame: Any, xp: Any, race_id: str = "") -> Any:
    """A device frame as an array of module `xp` (CuPy), without a copy.

    DLPack first: torch, JAX and CuPy export it, and the exporter makes the consumer's
    current stream wait for its own (torch's ``__cuda_array_interface__`` carries no
    stream, so CuPy would not wait for the kernel that drew the frame). Objects with
    only ``__cuda_array_interface__`` go through ``xp.asarray``. The result has a NumPy
    dtype whatever the producer's dtype type (``torch.uint8`` is not a NumPy dtype);
    a dtype `xp` cannot hold (bfloat16) raises `FrameError`.
    """
    if isinstance(frame, xp.ndarray):
        return frame  # already one (a CuPy frame: the common case, kept cheap)
    try:
        if hasattr(frame, "__dlpack__"):
            return xp.from_dlpack(frame)
        return xp.asarray(frame)
    except (BufferError, RuntimeError, TypeError, ValueError) as e:
        raise FrameError(
            f"race {race_id}: frames must be (H, W, 3) uint8, got a {type(frame).__name__} "
            f"of dtype {getattr(frame, 'dtype', '?')} ({e})"
        ) from e


class Writer(Closing):
    """Records one race. Create it with `Store.new_race`, not directly.

    Two kinds share this interface: `ThreadWriter` (encodes in a thread of the
    driver's process; the CUDA path) and `replay.write.process_writer.ProcessWriter`
    (encodes in a separate writer process fed through a shared-memory ring; the
    default for CPU frames). `pid` is the process that encodes and commits (the
    race's lease holder).
    """

    pid: int

    def __init__(self, info: RaceInfo, specs: list[StepSpec], settings: WriterSettings) -> None:
        """What both kinds hold: the race, its step arrays, and the (resolved) settings."""
        self.race_id = info.race_id
        self.device: Device = settings.kind
        self._gpu = settings.gpu  # the CUDA device a CUDA writer's frames live on
        self._specs = {s.name: s for s in specs}
        self._shape = (info.height, info.width, 3)
        self._on_full = settings.on_full
        self._slots = settings.slots(info.fps)

    def append(self, frame: Any, **steps: Any) -> bool:
        """Queue one frame and its step data; returns False if the frame was dropped.

        `frame` is (H, W, 3) uint8: a NumPy array (any strides, read-only is fine) or,
        on a CUDA writer, a CUDA array (CuPy, torch, anything with
        ``__cuda_array_interface__``). A host frame is copied as the block of memory it
        lies in when it is a transposition or flip of a contiguous array (a pygame
        surface, planar CHW, a reversed BGR view): one memcpy, as fast as a contiguous
        frame (`replay.codec.pixel_order`). `steps` are the race's step arrays: ``action``,
        ``reward``, ``terminated``, ``truncated``, ``t_ns`` (default: now) and the
        declared extras; missing ones are zero. A step value that does not fit its
        array, or a NaN or infinity, raises `StepDataError` (the frame is not queued).
        """
        raise NotImplementedError

    def frame_buffer(self) -> Any:
        """A free slot of the writer's ring to draw the next frame into: `append` then
        posts it without copying it.

        `append` copies each frame into the ring, 4.3 MB at 1600x900: most of its cost.
        A driver that produces its frame by writing into memory anyway (a copy out of
        the game's screen, a resize, a colour conversion, a capture) can write it
        straight into the ring:

            frame = writer.frame_buffer()        # (H, W, 3) uint8, yours until append
            np.copyto(frame, screen)             # or cv2.resize(src, (W, H), dst=frame)
            writer.append(frame, action=action, reward=reward)

        Pass that same array to `append` (not a copy or a view of it), and leave it
        alone afterwards: the writer owns it again. Calls before that append return the
        same array. Any `append` ends the loan; appending another array copies it into
        this slot. When the ring is full, `frame_buffer` waits for a slot
        (``on_full="block"``) or lends a spare array whose frame `append` copies if a
        slot has freed by then and drops otherwise (``"drop"``). On a CUDA writer it is a
        CuPy array in device memory: draw into it on CuPy's current stream.
        """
        raise NotImplementedError

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        raise NotImplementedError

    def close(self, status: str = fmt.COMPLETE) -> None:
        """Commit what is queued and mark the race `status` (complete); idempotent.

        `status` is ``"complete"`` or ``"aborted"`` (ValueError for another, the race left
        open). Raises `WriterFailedError` if the background writer failed (the race is then
        marked aborted; what was committed before the failure stays readable).
        """
        raise NotImplementedError

    def _check_frame(self, frame: Any) -> tuple[Any, bool]:
        """The frame as an array, and whether it is on the GPU; FrameError if it is wrong."""
        on_cuda = _is_cuda_array(frame)
        if on_cuda and self.device != "cuda":
            raise FrameError(
                f"race {self.race_id}: got a CUDA frame but this writer encodes on the CPU "
                "(open the race with device='cuda', or pass a host array)"
            )
        if on_cuda:
            import cupy

            with on_device(self._gpu):
                frame = device_array(frame, cupy, self.race_id)
        else:
            frame = np.asarray(frame)
        shape, dtype = tuple(frame.shape), np.dtype(frame.dtype)
        if shape != self._shape or dtype != np.uint8:
            raise FrameError(
                f"race {self.race_id}: frames must be {self._shape} uint8, got {shape} {dtype}"
            )
        return frame, on_cuda

    def _check_steps(self, steps: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
        unknown = steps.keys() - self._specs.keys()
        if unknown:
            raise StepDataError(
                f"race {self.race_id}: unknown step data {sorted(unknown)}; "
                f"declared: {sorted(self._specs)} (declare more with new_race(extras=...))"
            )
        values: dict[str, npt.NDArray[Any]] = {}
        for name, value in steps.items():
            spec = self._specs[name]
            try:
                # a copy: the caller may reuse its array (an action buffer) after append
                array = np.array(value, dtype=spec.dtype)
            except (TypeError, ValueError, OverflowError) as e:  # OverflowError: t_ns=2**70
                raise StepDataError(f"race {self.race_id}: {name}={value!r}: {e}") from e
            if array.shape != spec.shape:
                raise StepDataError(
                    f"race {self.race_id}: {name} must have shape {spec.shape}, got {array.shape}"
                )
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                # as the service refuses them: a NaN reward would poison every learner
                raise StepDataError(
                    f"race {self.race_id}: {name}={value!r} is not finite (NaN or infinity)"
                )
            values[name] = array
        values.setdefault("t_ns", np.asarray(time.time_ns(), dtype=np.int64))
        return values

    def _leave(self, error: BaseException | None) -> None:
        """Leaving a ``with`` block: complete, or aborted when the block raised."""
        if error is None:
            self.close()
            return
        try:
            self.close(status=fmt.ABORTED)
        except ReplayError:  # the driver's own exception is the one to see
            log.exception("race %s: writer failed while aborting", self.race_id)
