"""Helpers of the service tests: the served store's layout, a server in a thread
(`service.tools.process.ServerProcess` runs one in a child process), a raw HTTP GET that
sends paths byte for byte, and damage done to a store on disk (the way a flipped
bit or a bad write would)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import uvicorn
from fastapi import FastAPI

import replay
from replay.format import shards
from replay.format import spec as fmt
from service.app import create_app
from service.cli import bind
from service.connections import uvicorn_config
from service.settings import Settings, get_settings

#: Races of the served store: (env, map, policy, number of frames, reversed order).
RACES = [
    ("CarRacing-v3", "procedural", "pure-pursuit", 48, False),
    ("CarRacing-v3", "track-b", "random", 32, True),
    ("Other-v0", "arena", "random", 20, False),
]
SHARD = 16


def write_race(
    store: replay.Store,
    frames: npt.NDArray[np.uint8] | list[Any],
    *,
    env: str = "CarRacing-v3",
    map: str = "procedural",
    policy: str = "pure-pursuit",
    shard_size: int = SHARD,
) -> str:
    """Record `frames` as one race (reward = step, action = step * (0.1, 0.2, 0.3))."""
    with store.new_race(env=env, map=map, policy=policy, fps=30, shard_size=shard_size) as w:
        for step, frame in enumerate(frames):
            w.append(
                frame,
                action=np.array([0.1, 0.2, 0.3], np.float32) * step,
                reward=float(step),
                terminated=step == len(frames) - 1,
            )
    return w.race_id


class ThreadServer:
    """An app served by uvicorn in a thread of this process, on 127.0.0.1 and a free port,
    configured as `replay serve` configures it (`service.connections.uvicorn_config`)."""

    def __init__(self, settings: Settings | None = None, *, app: FastAPI | None = None) -> None:
        self.app = app if app is not None else create_app(settings)
        self._sock = bind("127.0.0.1", 0)
        port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # the timeouts of `replay serve` (settings from the environment with `app` alone)
        config = uvicorn_config(
            self.app, settings or get_settings(), log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("thread server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def raw_get(url: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Send ``GET <target>`` byte for byte (no client-side normalisation); (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


# -- raw clients ---------------------------------------------------------------------------


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def sample_request(batch_size: int, **extra: object) -> bytes:
    """A raw ``POST /v1/sample`` (keep-alive, so several can be pipelined)."""
    body = json.dumps({"batch_size": batch_size, **extra}).encode()
    return (
        f"POST /v1/sample HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def non_reader(url: str, requests: int = 2, **params: object) -> socket.socket:
    """A client that asks for batches (pipelined) and reads none of them: its answer
    waits for it, holding a batch slot."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
    s.connect(address(url))
    s.sendall(sample_request(**{"batch_size": 100, **params}) * requests)  # type: ignore[arg-type]
    return s


def batches_drawn(url: str) -> int:
    """Batches the server has drawn so far (its ``replay_batch_bytes`` histogram)."""
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("replay_batch_bytes_count"):
            return int(float(line.split()[-1]))
    return 0


# -- damage on disk ------------------------------------------------------------------------


def _frames_shard(store: Path, race_id: str, shard: int) -> Path:
    return store / fmt.shard_key(race_id, fmt.FRAMES, shard, 4)


def damage_shard_index(store: Path, race_id: str, shard: int) -> None:
    """Flip a byte of a frames shard's index: the whole shard becomes unreadable."""
    path = _frames_shard(store, race_id, shard)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_frame(store: Path, race_id: str, step: int, shard_size: int = SHARD) -> None:
    """Flip a byte inside one frame's stored bytes: that frame fails its CRC32C."""
    shard, slot = divmod(step, shard_size)
    path = _frames_shard(store, race_id, shard)
    data = bytearray(path.read_bytes())
    offset, nbytes = shards.parse_index(
        bytes(data[-shards.index_nbytes(shard_size) :]), shard_size
    )[slot]
    data[int(offset) + int(nbytes) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def replace_frame(
    store: Path, race_id: str, step: int, blob: bytes, shard_size: int = SHARD
) -> None:
    """Store `blob` as one frame, with a valid CRC32C: it reads fine and fails to decode.

    The shard must hold its frames from slot 0 on (a written race's shards do).
    """
    shard, slot = divmod(step, shard_size)
    path = _frames_shard(store, race_id, shard)
    data = path.read_bytes()
    index = shards.parse_index(data[-shards.index_nbytes(shard_size) :], shard_size)
    chunks = [data[int(o) : int(o) + int(n)] for o, n in index if o != shards.EMPTY]
    chunks[slot] = shards.with_checksum(blob)
    path.write_bytes(shards.build_shard(chunks, shard_size))


# -- remote races ----------------------------------------------------------------------------


def assert_sampled_from(batch: Any, race_id: str, frames: list[npt.NDArray[np.uint8]]) -> None:
    """Every item of `batch` (one step each) is a step of race `race_id`, whose step k was
    recorded from ``frames[k % len(frames)]`` with reward k, losslessly (zstd)."""
    assert len(batch) > 0
    for i, (race, step) in enumerate(batch.keys):
        assert race == race_id
        assert float(batch.steps["reward"][i, 0]) == step
        np.testing.assert_array_equal(np.asarray(batch.frames[i, 0]), frames[step % len(frames)])
