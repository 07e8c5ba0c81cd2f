"""replay: replay memory for agents that learn to drive from full-resolution pixels.

Frames are JPEG-encoded (nvImageCodec, on the GPU when there is one) by a
background writer and stored in a sharded Zarr v3 store; samplers read
randomized mini-batches back. The public surface is this module's ``__all__``.

    import replay
    store = replay.open_store("./replay-data")
    with store.new_race(env="CarRacing-v3", fps=30) as writer:
        writer.append(frame, action=action, reward=reward)
"""

from replay.codec.transform import Transform
from replay.errors import (
    CorruptDataError,
    FrameError,
    RaceBusyError,
    RaceNotFoundError,
    RaceTakenOverError,
    RateLimitedError,
    ReadOnlyStoreError,
    ReplayError,
    SamplingError,
    StepDataError,
    StoreError,
    WriterClosedError,
    WriterFailedError,
)
from replay.format.race import Race, RaceInfo
from replay.read.batch import Batch, EncodedBatch, SampleKeys
from replay.read.decode import decode_batch
from replay.read.filters import Filters
from replay.remote.client import Client
from replay.remote.protocol import ProtocolError
from replay.remote.retries import ServiceError
from replay.sample.params import SamplerParams
from replay.sample.sampler import Sampler
from replay.store import Store, open_store
from replay.write.writer import Writer, WriterStats

__all__ = [
    "Batch",
    "Client",
    "CorruptDataError",
    "EncodedBatch",
    "Filters",
    "FrameError",
    "ProtocolError",
    "Race",
    "RaceBusyError",
    "RaceInfo",
    "RaceNotFoundError",
    "RaceTakenOverError",
    "RateLimitedError",
    "ReadOnlyStoreError",
    "ReplayError",
    "SampleKeys",
    "Sampler",
    "SamplerParams",
    "SamplingError",
    "ServiceError",
    "StepDataError",
    "Store",
    "StoreError",
    "Transform",
    "Writer",
    "WriterClosedError",
    "WriterFailedError",
    "WriterStats",
    "decode_batch",
    "open_store",
]
