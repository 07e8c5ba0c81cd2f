"""The sampler parameters, defined once: what names a sampler's stream of batches.

`SamplerParams` holds them, validated (`ValueError` naming the value) when made. The
embedded sampler (`Store.sampler`, `Sampler`) and the HTTP client (`Client.sample`,
``sample_encoded``, ``sample_decoded``, ``batches``) take them as keywords
(`SamplerKwargs`) and build one; the service validates a ``POST /v1/sample`` body into
one (`service.models.SampleRequest.params`) and keys its cached samplers by
`SamplerParams.key`; the client's request body is `SamplerParams.request_body`.

    params = SamplerParams(kind="prioritized", batch_size=32, seq_len=4, seed=0)
    store.sampler(**params.kwargs())          # the same as the keywords themselves

Options of the embedded sampler alone (``device``, ``alpha``, ``name``, ...) are
`Sampler`'s keywords; a call's rate-limit wait (``timeout``) is not a parameter.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

from replay.read.filters import Filters
from replay.read.nstep import NStep
from replay.sample.rate_limit import RateLimit

if TYPE_CHECKING:
    from replay.codec.transform import Transform
    from replay.read.batch import Out

__all__ = ["Kind", "SamplerKwargs", "SamplerOptions", "SamplerParams"]

Kind = Literal["uniform", "prioritized", "recent"]
KINDS: tuple[Kind, ...] = ("uniform", "prioritized", "recent")


@dataclass(frozen=True)
class SamplerParams:
    """What a batch is drawn from and how: see `replay.sample.sampler` for each field's meaning.

    `kind` chooses the selector; items are windows of `seq_len` steps `stride` apart;
    `seed` names the random stream; `filters` (a `Filters` or a dict of its fields)
    chooses races; `skip_corrupt` redraws past damaged data; ``n_step, gamma,
    next_frames`` add n-step returns (`replay.read.nstep`); ``min_size,
    samples_per_insert, error_margin`` rate-limit (`replay.sample.rate_limit`).
    """

    kind: Kind = "uniform"
    batch_size: int = 64
    seq_len: int = 1
    stride: int = 1
    seed: int | None = None
    filters: Filters | Mapping[str, Any] | None = None
    skip_corrupt: bool = False
    n_step: int | None = None
    gamma: float = 0.99
    next_frames: bool = False
    min_size: int = 0
    samples_per_insert: float | None = None
    error_margin: float | None = None

    def __post_init__(self) -> None:
        for arg in ("batch_size", "seq_len", "stride"):
            value = getattr(self, arg)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if self.kind not in KINDS:
            raise ValueError(
                f"kind must be 'uniform', 'prioritized' or 'recent', not {self.kind!r}"
            )
        if self.filters is not None and not isinstance(self.filters, Filters):
            object.__setattr__(self, "filters", dict(self.filters))
        Filters.of(self.filters)  # unknown fields, bad times
        self.nstep  # noqa: B018  (n_step, gamma, next_frames)
        self.rate_limit(None)

    @property
    def nstep(self) -> NStep | None:
        """The n-step parameters (`replay.read.nstep`); None without ``n_step``."""
        return NStep.of(self.n_step, self.gamma, self.next_frames)

    def rate_limit(self, timeout: float | None) -> RateLimit:
        """The rate limit (`replay.sample.rate_limit`), waiting at most `timeout` seconds."""
        return RateLimit(self.min_size, self.samples_per_insert, self.error_margin, timeout)

    @property
    def span(self) -> int:
        """Steps one item (window) covers."""
        return (self.seq_len - 1) * self.stride + 1

    def kwargs(self) -> SamplerKwargs:
        """The parameters as keywords (`Store.sampler`, `Client.sample`)."""
        return cast(SamplerKwargs, {f.name: getattr(self, f.name) for f in fields(self)})

    def key(self) -> dict[str, Any]:
        """The parameters as JSON-able values (filters as a dict of the fields set): what
        names a cached sampler in the service and shows in ``GET /v1/stats``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["filters"] = _filter_fields(self.filters) or None
        return out

    def request_body(self) -> dict[str, Any]:
        """The ``POST /v1/sample`` fields of these parameters (docs/protocol.md). The n-step
        and rate-limit fields go only when set, so a service older than them still
        answers requests that do not use them."""
        body: dict[str, Any] = {
            "kind": self.kind,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "stride": self.stride,
            "seed": self.seed,
            "filters": None if self.filters is None else _filter_fields(self.filters),
            "skip_corrupt": self.skip_corrupt,
        }
        if self.n_step is not None:
            body.update(n_step=self.n_step, gamma=self.gamma, next_frames=self.next_frames)
        if self.min_size:
            body["min_size"] = self.min_size
        if self.samples_per_insert is not None:
            body["samples_per_insert"] = self.samples_per_insert
            if self.error_margin is not None:
                body["error_margin"] = self.error_margin
        return body


def _filter_fields(filters: Filters | Mapping[str, Any] | None) -> dict[str, Any]:
    """Filters as a dict of the fields set (a `Filters`' non-default fields)."""
    if filters is None:
        return {}
    if isinstance(filters, Filters):
        return {
            f.name: getattr(filters, f.name)
            for f in dataclasses.fields(filters)
            if getattr(filters, f.name) != f.default
        }
    return dict(filters)


class SamplerKwargs(TypedDict, total=False):
    """`SamplerParams` as keywords (``**params: Unpack[SamplerKwargs]``); every one optional.

    The same names, types and meaning as `SamplerParams`' fields (a test holds them
    equal); the defaults are `SamplerParams`'."""

    kind: Kind
    batch_size: int
    seq_len: int
    stride: int
    seed: int | None
    filters: Filters | Mapping[str, Any] | None
    skip_corrupt: bool
    n_step: int | None
    gamma: float
    next_frames: bool
    min_size: int
    samples_per_insert: float | None
    error_margin: float | None


class SamplerOptions(SamplerKwargs, total=False):
    """`Store.sampler`'s keywords: the parameters and the embedded sampler's own options
    (`Sampler`'s keywords, which give their defaults and meaning)."""

    device: str
    out: Out
    transform: Transform | None
    alpha: float
    beta: float
    name: str
    recent_seconds: float
    recent_fraction: float
    refresh_interval: float
    checkpoint_interval: float | None
    checkpoint_path: str | os.PathLike[str] | None
    save_priorities: bool
    io_threads: int | None
    timeout: float | None
    check_sizes: bool
