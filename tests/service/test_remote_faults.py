"""Remote recording across an actor's failures: an actor process killed with SIGKILL
mid-race (alone, and beside two others), and an actor behind a slow link (the
project's delay proxy). Real uvicorn (`ServerProcess`) on loopback, real stores, real
CarRacing frames, zstd races so every committed frame is checked byte for byte."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from service_helpers import assert_sampled_from

import replay
from replay.bench.delay_proxy import DelayProxy
from replay.format import spec as fmt
from replay.maintenance.recovery import recover
from service.tools.process import ServerProcess

BODY = {"REPLAY_MAX_CHUNK_BYTES": str(16 << 20)}  # chunks of a few real frames each
WRITER_CHILD = Path(__file__).parents[1] / "replay" / "writer_child.py"
FLUSH = 0.1


def _progress(line: str) -> tuple[int, int]:
    """(appended, written) from the child's "appended A written W" line."""
    words = line.split()
    assert words[0::2] == ["appended", "written"], line
    return int(words[1]), int(words[3])


def _actor(url: str, frames_file: Path, count: int, *options: str) -> subprocess.Popen[str]:
    """An actor process (writer_child.py, remote, zstd, 30 FPS) recording `count` steps."""
    options += ("--codec", "zstd", "--count", str(count), "--shard-size", "8")
    options += ("--flush-interval", str(FLUSH))
    return subprocess.Popen(
        [sys.executable, str(WRITER_CHILD), url, str(frames_file), *options],
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill_actor_mid_race(
    url: str, frames_file: Path, writer: str = "thread"
) -> tuple[str, int, int]:
    """Run an actor (its `writer` kind); SIGKILL it once 20 steps are acknowledged.
    (race id, appended, written) as the actor last told them."""
    child = _actor(url, frames_file, 100_000, "--progress", "--writer", writer)
    assert child.stdout is not None
    race_id = child.stdout.readline().strip()
    try:
        for line in child.stdout:
            if _progress(line)[1] >= 20:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        rest = child.communicate(timeout=30)[0].splitlines()
    assert child.returncode == -signal.SIGKILL
    appended, written = _progress(rest[-1] if rest else line)
    return race_id, appended, written


@pytest.mark.slow
def test_an_actor_killed_mid_race_loses_only_what_was_not_acknowledged(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """SIGKILL of the actor's process: every step it saw acknowledged is in the store once
    (rewards 0..L-1, frames byte-equal), nothing past what it appended; the race stays
    ``recording`` under the lease the service took until the lease times out, then
    recovery closes it as aborted, and its steps are sampled by the embedded sampler and
    through a service. The service is stopped (SIGTERM: uvicorn's graceful shutdown
    finishes the requests it has) before the store is read, so that a chunk the actor
    sent whole just before its end, acknowledged to nobody, is committed first."""
    replay.open_store(tmp_path / "s")
    np.save(tmp_path / "frames.npy", np.stack(frames))
    with ServerProcess(tmp_path / "s", env=BODY) as server:
        race_id, appended, written = _kill_actor_mid_race(server.url, tmp_path / "frames.npy")
    store = replay.open_store(tmp_path / "s")
    race = store.race(race_id)
    assert race.status == fmt.RECORDING
    # acknowledged steps all there; at most the unacknowledged ones (and the one
    # append after the last line the actor printed) lost
    assert written <= race.length <= appended + 1
    np.testing.assert_array_equal(race.steps("reward"), np.arange(race.length))
    for step in range(race.length):
        np.testing.assert_array_equal(race.frame(step), frames[step % len(frames)])
    assert race_id in recover(store.storage).live  # the lease is still fresh
    heartbeat = float(race.info.lease["heartbeat"])  # type: ignore[index]
    expired = heartbeat + fmt.lease_ttl(FLUSH) + 1
    assert recover(store.storage, now=expired).aborted == [race_id]
    after = replay.open_store(tmp_path / "s", mode="r").race(race_id)
    assert (after.status, after.length) == (fmt.ABORTED, race.length)
    only = {"race_ids": [race_id]}
    embedded = store.sampler(batch_size=8, seed=1, filters=only).sample()
    assert_sampled_from(embedded, race_id, frames)
    with ServerProcess(tmp_path / "s") as server, replay.Client(server.url) as client:
        assert client.race(race_id).status == fmt.ABORTED
        assert_sampled_from(client.sample(batch_size=8, filters=only), race_id, frames)


@pytest.mark.slow
def test_an_actor_killed_mid_race_with_a_writer_process_loses_nothing_it_appended(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """The default writer for CPU frames is a process: SIGKILL of the actor's driver
    leaves its writer process, which sends every frame already in its ring and closes the
    race as aborted (as a local process writer commits them): every step the driver
    appended is in the store once, byte-equal, and the race samples at once."""
    replay.open_store(tmp_path / "s")
    np.save(tmp_path / "frames.npy", np.stack(frames))
    with ServerProcess(tmp_path / "s", env=BODY) as server, replay.Client(server.url) as client:
        race_id, appended, written = _kill_actor_mid_race(
            server.url, tmp_path / "frames.npy", "process"
        )
        deadline = time.monotonic() + 60
        while client.race(race_id).status == fmt.RECORDING and time.monotonic() < deadline:
            time.sleep(0.1)
        race = client.race(race_id)
        assert (race.status, race.length >= appended >= written >= 20) == (fmt.ABORTED, True)
        only = {"race_ids": [race_id]}
        assert_sampled_from(client.sample(batch_size=8, filters=only), race_id, frames)
    stored = replay.open_store(tmp_path / "s", mode="r").race(race_id)
    assert stored.length == race.length
    np.testing.assert_array_equal(stored.steps("reward"), np.arange(stored.length))
    for step in range(stored.length):
        np.testing.assert_array_equal(stored.frame(step), frames[step % len(frames)])


@pytest.mark.slow
def test_actor_processes_record_at_once_and_one_killed_harms_no_other(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Three actor processes record through one service; one is SIGKILLed mid-race: the
    other two races are complete and whole, the killed one keeps what it saw acknowledged."""
    replay.open_store(tmp_path / "s")
    np.save(tmp_path / "frames.npy", np.stack(frames))
    with ServerProcess(tmp_path / "s", env=BODY) as server:
        others = [_actor(server.url, tmp_path / "frames.npy", 60) for _ in range(2)]
        killed, _, written = _kill_actor_mid_race(server.url, tmp_path / "frames.npy")
        outputs = [child.communicate(timeout=120)[0].split() for child in others]
    # read once the service has finished its requests (SIGTERM), as above
    store = replay.open_store(tmp_path / "s", mode="r")
    for child, (race_id, *done) in zip(others, outputs, strict=True):
        assert (child.returncode, done) == (0, ["done", "60"])
        race = store.race(race_id)
        assert (race.status, race.length) == (fmt.COMPLETE, 60)
        np.testing.assert_array_equal(race.steps("reward"), np.arange(60))
        for step in range(60):
            np.testing.assert_array_equal(race.frame(step), frames[step % len(frames)])
    assert store.race(killed).length >= written


@pytest.mark.slow
def test_a_race_over_a_slow_link_is_recorded_whole_and_never_blocks_the_driver(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Actor -> `DelayProxy` (every request held 1 s, a long round trip) -> service.
    The writer encodes while its chunk is on its way and then sends a chunk of every
    step that came meanwhile, while the driver appends at 30 FPS: with
    ``on_full="drop"`` nothing is dropped (the queue, 16 frames, fewer than the 30 of a
    round trip, never filled, so a blocking writer would never have waited; a writer
    that encoded and sent on one thread stopped taking frames for each round trip and
    dropped about half), and at close every appended step is acknowledged and in the
    store, byte-exact."""
    replay.open_store(tmp_path / "s")
    steps = 3 * len(frames)
    with (
        ServerProcess(tmp_path / "s", env=BODY) as server,
        DelayProxy("127.0.0.1", int(server.url.rsplit(":", 1)[1]), delay=1.0) as proxy,
        replay.Client(proxy.endpoint) as client,
    ):
        writer = client.new_race(
            env="CarRacing-v3", codec="zstd", flush_interval=0.05, on_full="drop", queue_size=16
        )
        deepest = 0
        for step in range(steps):
            writer.append(frames[step % len(frames)], reward=step)
            deepest = max(deepest, writer.stats().queue_depth)
            time.sleep(1 / 30)
        unacknowledged = writer.stats().appended - writer.stats().written
        writer.close()
    stats = writer.stats()
    assert (stats.appended, stats.written, stats.dropped, stats.error) == (steps, steps, 0, None)
    assert deepest < 16
    assert unacknowledged > 0  # the link was slow: steps were still on their way
    race = replay.open_store(tmp_path / "s", mode="r").race(writer.race_id)
    assert (race.status, race.length) == (fmt.COMPLETE, steps)
    np.testing.assert_array_equal(race.steps("reward"), np.arange(steps))
    for step in range(0, steps, 5):
        np.testing.assert_array_equal(race.frame(step), frames[step % len(frames)])
