"""The public surface of `replay` is its curated, sorted `__all__`."""

from __future__ import annotations

import types

import replay

CONTRACT = {
    # the store issue
    "open_store",
    "Store",
    "Writer",
    "WriterStats",
    "Race",
    "RaceInfo",
    # the sampling issue
    "Sampler",
    "SamplerParams",
    "Batch",
    "EncodedBatch",
    "SampleKeys",
    "Filters",
    "Transform",
    "decode_batch",
    # the service issue
    "Client",
    # errors
    "ReplayError",
    "StoreError",
    "ReadOnlyStoreError",
    "RaceNotFoundError",
    "RaceBusyError",
    "RaceTakenOverError",
    "FrameError",
    "StepDataError",
    "WriterClosedError",
    "WriterFailedError",
    "CorruptDataError",
    "SamplingError",
    "RateLimitedError",
    "ServiceError",
    "ProtocolError",
}


def test_all_is_sorted_and_complete() -> None:
    assert replay.__all__ == sorted(replay.__all__)
    assert set(replay.__all__) == CONTRACT
    for name in replay.__all__:
        assert getattr(replay, name).__doc__, f"replay.{name} has no docstring"


def test_nothing_else_public_leaks() -> None:
    public = {
        name
        for name, value in vars(replay).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(replay.__all__)


def test_every_error_is_a_replay_error() -> None:
    errors = [getattr(replay, n) for n in replay.__all__ if n.endswith("Error")]
    assert all(issubclass(e, replay.ReplayError) for e in errors)
