"""Service settings, read from the environment (``REPLAY_*``) by pydantic-settings.

Routes get them through the cached `get_settings` dependency; tests and
`create_app(settings)` override that dependency instead of touching the
environment. Nothing here runs at import time::

    REPLAY_STORE=./replay-data REPLAY_TOKEN=s3cret replay serve ./replay-data

A non-loopback `host` without a `token` fails validation (the service refuses
to start) unless `allow_public` (``REPLAY_ALLOW_PUBLIC=1``) says that is intended.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix ``REPLAY_``)."""

    model_config = SettingsConfigDict(env_prefix="REPLAY_", frozen=True, extra="ignore")

    store: str = Field(
        description="The replay store to serve (REPLAY_STORE): a directory or s3://bucket/prefix."
    )
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0: any free port).")
    token: SecretStr | None = Field(
        None, description="Bearer token every route but the probes and the viewer shell requires."
    )
    allow_public: bool = Field(
        False, description="Allow binding a non-loopback address without a token."
    )
    max_batch_size: int = Field(1024, ge=1, description="Largest batch_size of /v1/sample.")
    max_seq_len: int = Field(256, ge=1, description="Largest seq_len of /v1/sample.")
    max_batch_frames: int = Field(
        8192, ge=1, description="Largest batch_size * seq_len of /v1/sample."
    )
    max_decoded_bytes: int = Field(
        256 << 20, ge=1, description="Largest decoded (raw pixel) /v1/sample response."
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1024, description="Largest request body (the chunk route excepted)."
    )
    max_chunk_bytes: int = Field(
        16 << 20,
        ge=1024,
        description="Largest chunk body (POST /v1/races/{id}/chunks): about a second of "
        "full-size JPEG frames, so an actor sends a chunk per flush_interval, not per few frames.",
    )
    max_page_size: int = Field(1000, ge=1, description="Largest `limit` of /v1/races.")
    max_steps_window: int = Field(
        100_000, ge=1, description="Most steps /v1/races/{id}/steps returns at once."
    )
    max_batches_in_flight: int = Field(
        8,
        ge=1,
        description="Batches read and sent at once; more /v1/sample requests wait (memory bound).",
    )
    sampler_cache_size: int = Field(
        32, ge=1, description="Samplers kept (one per kind and parameters), least recent out."
    )
    max_requests_in_flight: int = Field(
        256,
        ge=1,
        description="Requests handled at once (the probes excepted); more are answered 503. "
        "Open connections do not count.",
    )
    timeout_request_s: float = Field(
        10.0, gt=0, description="A request (head and body) must arrive within this long."
    )
    timeout_keep_alive_s: int = Field(
        5, ge=1, description="An idle connection between requests is closed after this long."
    )
    timeout_send_s: float = Field(
        30.0, gt=0, description="A client that reads none of its answer for this long is dropped."
    )
    request_ids_ttl_s: float = Field(
        300.0,
        gt=0,
        description="How long the answer to a request id (Replay-Request-Id) is remembered.",
    )
    read_only: bool = Field(
        False,
        description="Refuse the insert routes (403): actors cannot record through this service.",
    )
    max_insert_bytes_per_race: int | None = Field(
        None,
        ge=1024,
        description="Chunk bytes of one race being received and committed at once; a chunk "
        "past it is answered 429 with Retry-After. At least max_chunk_bytes; "
        "default 2 x max_chunk_bytes.",
    )
    max_insert_bytes: int | None = Field(
        None,
        ge=1024,
        description="Chunk bytes of all races being received and committed at once; a chunk "
        "past it is answered 503 with Retry-After. At least the per-race limit; "
        "default 8 x max_chunk_bytes.",
    )
    insert_workers: int = Field(
        2,
        ge=1,
        description="Chunks unpacked, checked and committed at once in the whole service; "
        "more wait their turn (no thread held, their bytes still count against "
        "max_insert_bytes). Commits share the service's GIL with the sample routes: two "
        "overlap one's fsync with the other's work, and each one more is one more thread "
        "a sample request waits behind.",
    )
    max_rate_wait_s: float = Field(
        2.0,
        ge=0,
        description="Longest a rate-limited /v1/sample waits (min_size, samples_per_insert) "
        "before answering 429 with Retry-After; the client waits and retries.",
    )
    max_rate_waiters: int = Field(
        256,
        ge=1,
        description="Rate-limited /v1/sample requests waiting at once (they hold no batch "
        "slot and no thread); more are answered 503 with Retry-After.",
    )

    @field_validator("store", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _refuse_public_without_token(self) -> Self:
        if not is_loopback(self.host) and self.token is None and not self.allow_public:
            raise ValueError(
                f"refusing to bind {self.host!r} without a token: anyone who can reach it "
                "could read the store. Set REPLAY_TOKEN (--token), bind 127.0.0.1, or pass "
                "--allow-public (REPLAY_ALLOW_PUBLIC=1) if that is really intended"
            )
        return self

    @model_validator(mode="after")
    def _insert_limits_fit_a_chunk(self) -> Self:
        per_race, total = self.insert_limits()
        if per_race < self.max_chunk_bytes:
            raise ValueError(
                f"max_insert_bytes_per_race ({per_race}) is below max_chunk_bytes "
                f"({self.max_chunk_bytes}): the largest chunk would never be taken"
            )
        if total < per_race:
            raise ValueError(
                f"max_insert_bytes ({total}) is below max_insert_bytes_per_race ({per_race})"
            )
        return self

    def insert_limits(self) -> tuple[int, int]:
        """(bytes of one race, bytes of all races) of chunks in flight at once."""
        per_race = self.max_insert_bytes_per_race or 2 * self.max_chunk_bytes
        return per_race, self.max_insert_bytes or max(per_race, 8 * self.max_chunk_bytes)

    def token_value(self) -> str | None:
        """The token as plain text (None when auth is off)."""
        return None if self.token is None else self.token.get_secret_value()


@functools.cache
def get_settings() -> Settings:
    """The settings from the environment, read once (a FastAPI dependency)."""
    return Settings()  # type: ignore[call-arg]  # `store` comes from REPLAY_STORE
