"""Two service replicas on one store (docs/deploy.md, "Recording through replicas"): the
replica that created a race holds its lease and takes its chunks; when it dies, the
actor's writer, moved to the other replica by the load balancer, goes on there.

Two real ``replay serve`` processes on one local store. The load balancer is a TCP
forwarder on loopback (`DelayProxy` with no delay) whose upstream is switched from
the dead replica to the live one, as a balancer drops an endpoint that stopped
answering. "Another host" is a replica in a UTS namespace of its own (``unshare
--uts``), so that its host name differs, as a pod's does."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay.bench.delay_proxy import DelayProxy
from replay.codec.frames import ZstdFrames
from replay.format import spec as fmt
from replay.remote.chunks import MEDIA_TYPE, Chunk, pack
from replay.write.writer import Writer
from service.tools.process import ServerProcess

BODY = {"REPLAY_MAX_CHUNK_BYTES": str(16 << 20)}
#: `replay serve` as if on a host named replica-b
OTHER_HOST = ["unshare", "--uts", "sh", "-c", 'hostname replica-b && exec "$@"', "sh"]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _other_hosts_possible() -> bool:
    """Whether this machine lets a child have a host name of its own (root, util-linux)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*OTHER_HOST, "hostname"], capture_output=True, text=True, check=False)
    return probe.returncode == 0 and probe.stdout.strip() == "replica-b"


def _append(writer: Writer, frames: list[npt.NDArray[np.uint8]], start: int, stop: int) -> None:
    """Append steps [start, stop) (frame k % n, reward k); return once all are acknowledged."""
    for step in range(start, stop):
        assert writer.append(frames[step % len(frames)], reward=step)
    deadline = time.monotonic() + 120
    while writer.stats().written < stop:
        assert writer.stats().error is None, writer.stats()
        assert time.monotonic() < deadline, writer.stats()
        time.sleep(0.02)


def _chunk_to(
    url: str, race_id: str, first: int, frames: list[npt.NDArray[np.uint8]]
) -> httpx.Response:
    body = b"".join(pack(Chunk(first, ZstdFrames().encode(frames), {})))
    return httpx.post(
        f"{url}/v1/races/{race_id}/chunks",
        content=body,
        headers={"Content-Type": MEDIA_TYPE},
        timeout=30,
    )


def _fail_over(
    store: Path,
    frames: list[npt.NDArray[np.uint8]],
    second: ServerProcess,
    refused: tuple[int, str | None],
) -> str:
    """Record 20 steps through replica A; check `second` refuses a chunk with `refused`
    (status, Retry-After) while A lives; SIGKILL A, move the balancer to `second`, record
    20 more and close. The race id."""
    first = ServerProcess(store, env=BODY)
    try:
        with (
            DelayProxy("127.0.0.1", _port(first.url), delay=0.0) as balancer,
            replay.Client(balancer.endpoint) as client,
        ):
            writer = client.new_race(
                env="CarRacing-v3", codec="zstd", shard_size=8, flush_interval=0.05
            )
            _append(writer, frames, 0, 20)
            answer = _chunk_to(second.url, writer.race_id, 20, frames[:1])
            assert (answer.status_code, answer.headers.get("Retry-After")) == refused
            assert "is held by" in answer.json()["detail"]
            first.close(signal.SIGKILL)
            balancer.upstream = ("127.0.0.1", _port(second.url))
            _append(writer, frames, 20, 40)
            writer.close()
    finally:
        first.close(signal.SIGKILL)
    stats = writer.stats()
    assert (stats.appended, stats.written, stats.dropped, stats.error) == (40, 40, 0, None)
    return writer.race_id


def _assert_whole(store: Path, race_id: str, frames: list[npt.NDArray[np.uint8]]) -> None:
    race = replay.open_store(store, mode="r").race(race_id)
    assert (race.status, race.length, race.info.lease) == (fmt.COMPLETE, 40, None)
    np.testing.assert_array_equal(race.steps("reward"), np.arange(40))
    for step in range(40):
        np.testing.assert_array_equal(race.frame(step), frames[step % len(frames)])


@pytest.mark.slow
def test_a_replica_on_the_same_host_takes_over_a_race_once_its_replica_dies(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Same host: replica B answers A's race busy (503, retry) while A's process lives
    (judged by pid), and takes it over at once when A is killed; every step is in the
    race once."""
    replay.open_store(tmp_path / "s")
    with ServerProcess(tmp_path / "s", env=BODY) as second:
        race_id = _fail_over(tmp_path / "s", frames, second, refused=(503, "1"))
    _assert_whole(tmp_path / "s", race_id, frames)


@pytest.mark.slow
def test_a_replica_on_another_host_takes_over_a_race_once_its_lease_expires(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Another host cannot see A's process: it answers 503 (retry) while A's lease is fresh
    (its heartbeat younger than the ttl, 30 s), so the actor's writer waits, then takes
    the race over and the writer goes on from the last acknowledged step."""
    if not _other_hosts_possible():
        pytest.skip("needs `unshare --uts` (root, util-linux) for a replica on 'another host'")
    replay.open_store(tmp_path / "s")
    with ServerProcess(tmp_path / "s", env=BODY, run_under=OTHER_HOST) as second:
        race_id = _fail_over(tmp_path / "s", frames, second, refused=(503, "1"))
    _assert_whole(tmp_path / "s", race_id, frames)
