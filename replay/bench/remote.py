"""Recording through the service (issue 25): actors that send their races over HTTP.

One ``replay serve`` child on a random loopback port (`service.tools.process`), and
actors in processes of their own (spawned, started together behind a barrier), each
recording one race of real frames with the public API only: ``replay.Client(url)
.new_race(...)`` (the local writer with a `ServiceSink`: encodes here, in its writer
process, sends chunks, counts a step as written once the service has committed it),
or ``Store.new_race`` on a local store (the local writer: the baseline, in the same
run, on the same frames and codec).
For each game in the frames given, with the codec its race was recorded with:

- ``ingest``: frames acknowledged, frames/s until every race is closed (every frame
  durable) and frames dropped, for the local writer and for 1, 4, ... remote actors
  recording at once at full speed;
- ``per_frame``: CPU ms of the actors (user + system of the actor process and of its
  child processes, a writer process, all threads) and of the service; bytes on the
  wire (what the service's insert routes received, `insert_counts`: request lines,
  headers and bodies of every request and every try, whatever client sent them) and
  requests; bytes stored (the races' folders); bytes written to files
  (``/proc/PID/io`` ``wchar`` of the actors, their children and the service: an open
  shard committed again by every chunk shows here);
- ``append_paced``: the driver's `append` paced at `fps` (30), local and remote;
- ``ratios``: remote over local, in the same run.

Then ``sample_latency``: `Client.sample` (decoded here) and `Client.sample_encoded`
(``request``: what the service answers) of one batch size, p50/p99, with no actor
recording, with `load_actors` remote actors appending as fast as they can (issue 25's
target: within 2x of none), with the same actors at nice 19, and pinned apart
(``*_pinned``). On a small machine the actors, the service and the sampling client
share the same cores: the first loaded figure says what inserting costs the others
on this machine; at nice 19 the actors take only the CPU the service and the learner
leave idle; pinned, the actors and their child processes run on half the CPUs and the
service and the sampling client on the other half (on 2 CPUs: one each; ``pinned``
says which; skipped on 1 CPU), so what remains is the service's own insert work, as
with actors on machines of their own. Each pinned figure is compared with no actor,
pinned alike (``..._vs_0_pinned``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from replay.bench.ingest import Frame, latency_summary, paced
from replay.bench.report import expect, stage
from replay.format.race import RaceInfo
from replay.remote.client import Client
from replay.store import Store, open_store
from replay.write.writer import Writer
from service.tools.process import ServerProcess

#: Seconds an actor may take to start (imports, frames, its race) before the run fails.
STARTUP_S = 300.0
#: Seconds the run waits for an actor's figures once it has begun.
FINISH_S = 900.0
#: The frames of an actor that records until it is told to stop.
UNTIL_STOPPED = 10**9
#: The niceness of the actors that stand in for actors on other machines.
NICE = 19

#: A game to record: its distinct frames, and `new_race`'s codec arguments.
Game = tuple[Sequence[Frame], Mapping[str, Any]]


def race_codec(info: RaceInfo) -> dict[str, Any]:
    """`new_race`'s codec arguments for frames recorded like the race `info`."""
    attrs = info.frame_codec.attrs
    if attrs["name"] == "jpeg":
        return {"codec": "jpeg", "quality": attrs["quality"], "subsampling": attrs["subsampling"]}
    return {"codec": attrs["name"]}


def insert_counts(url: str) -> tuple[float, float]:
    """(requests, bytes) the insert routes of the service at `url` have received so far:
    its ``replay_insert_requests_total`` and ``replay_insert_request_bytes_total``."""
    found = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("replay_insert_requests_total", "replay_insert_request_bytes_total"):
            found[name] = float(value)
    return found["replay_insert_requests_total"], found["replay_insert_request_bytes_total"]


@dataclasses.dataclass(frozen=True)
class ActorJob:
    """One actor's race: `frames` steps (cycling the frames saved at `frames_path`) at
    `fps` (0: as fast as it can), at niceness `nice` and on `cpus` (None: any, as the
    parent), into `target`: a store folder (the local writer) or a service URL (the same
    writer, sending chunks). Its child processes (a writer process) inherit both."""

    target: str
    frames_path: str
    env: str
    race: Mapping[str, Any]
    frames: int
    fps: float = 0.0
    nice: int = 0
    cpus: frozenset[int] | None = None


def written_bytes(pid: int) -> int:
    """Bytes process `pid` has written to files (``wchar``: sockets do not count)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/io has no wchar")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all threads), of its children that it
    has waited for (a writer process that has exited) and of those still running."""
    seconds = 0.0
    for proc in (psutil.Process(pid), *psutil.Process(pid).children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            seconds += times.user + times.system + times.children_user + times.children_system
    return seconds


def usage(pid: int) -> tuple[float, int]:
    """CPU seconds (`tree_cpu_seconds`) and bytes written to files of process `pid` and
    its children, so far."""
    pids = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    written = 0
    for p in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            written += written_bytes(p)
    return tree_cpu_seconds(pid), written


@dataclasses.dataclass(frozen=True)
class _Signals:
    """How the actors of one group and the parent keep step: `barrier` (every race made:
    go), `started` (released by each actor after its first `append`), `stop` (set: stop
    appending and close)."""

    barrier: Any
    started: Any
    stop: Any


def _record(job: ActorJob, signals: _Signals) -> dict[str, Any]:
    """In an actor process: make the race, wait for the others, record, close."""
    os.nice(job.nice)
    if job.cpus is not None:
        pin(os.getpid(), job.cpus)
    frames = list(np.load(job.frames_path))
    written = written_bytes(os.getpid())  # the race's documents count (as on the service)
    with contextlib.ExitStack() as stack:
        writer: Writer
        if job.target.startswith("http"):
            client = stack.enter_context(Client(job.target))
            writer = client.new_race(env=job.env, **job.race)
        else:
            writer = open_store(job.target).new_race(env=job.env, **job.race)

        def append(i: int, frame: Frame) -> None:
            writer.append(frame)
            if i == 0:
                signals.started.release()

        signals.barrier.wait(STARTUP_S)
        cpu, _ = usage(os.getpid())  # a fresh writer process has written nothing before
        started = time.perf_counter()
        with writer:
            lat = paced(frames, job.frames, job.fps, append, signals.stop.is_set)
        seconds = time.perf_counter() - started  # closed: every frame durable
        cpu_after, written_after = usage(os.getpid())
    stats = writer.stats()
    return {
        "race_id": writer.race_id,
        "written": stats.written,
        "dropped": stats.dropped,
        "seconds": seconds,
        "cpu_s": cpu_after - cpu,
        "file_bytes": written_after - written,
        "append": latency_summary(lat),
        "cpus": sorted(affinity(os.getpid())),  # its threads' and its writer process's
    }


def _actor(job: ActorJob, signals: _Signals, out: Any) -> None:
    """An actor process: its figures, or its error, go to `out` (the parent waits for one
    answer from each actor, so a failure is reported instead of hanging the run)."""
    try:
        out.put(_record(job, signals))
    except BaseException as e:
        signals.barrier.abort()  # the others (and the parent) stop waiting for this one
        out.put({"error": f"{type(e).__name__}: {e}"})


def _wait_started(signals: _Signals, n: int) -> None:
    """Wait until `n` actors have appended a frame each (a busy machine may hold an actor
    back past the barrier); BrokenBarrierError if one fails meanwhile."""
    for _ in range(n):
        while not signals.started.acquire(timeout=0.1):
            if signals.barrier.broken:
                raise threading.BrokenBarrierError


def run_actors(
    jobs: Sequence[ActorJob], while_recording: Callable[[], Any] | None = None
) -> tuple[list[dict[str, Any]], Any]:
    """Run `jobs` in actor processes that begin together; returns their figures and, with
    `while_recording`, what it returned, called once all record (then they are stopped)."""
    ctx = multiprocessing.get_context("spawn")  # nothing inherited: a fresh actor
    out = ctx.Queue()
    signals = _Signals(ctx.Barrier(len(jobs) + 1), ctx.Semaphore(0), ctx.Event())
    procs = [ctx.Process(target=_actor, args=(job, signals, out)) for job in jobs]
    for p in procs:
        p.start()
    during = None
    try:
        signals.barrier.wait(STARTUP_S)
        if while_recording is not None:
            _wait_started(signals, len(jobs))
            during = while_recording()
    except threading.BrokenBarrierError:
        pass  # an actor failed: its error comes through `out`
    finally:
        if while_recording is not None or signals.barrier.broken:
            signals.stop.set()
    figures = [out.get(timeout=FINISH_S) for _ in procs]
    for p in procs:
        p.join()
    failed = [f["error"] for f in figures if "error" in f]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} actors failed; first: {failed[0]}")
    return figures, during


@dataclasses.dataclass
class Group:
    """What a group of actors recording at once did: `ingest` (frames acknowledged,
    frames/s until all were closed, frames dropped), `per_frame` (CPU ms of the actors
    and of the service, bytes on the wire, requests, bytes stored, bytes written to
    files by the actors and the service) and each actor's own figures."""

    ingest: dict[str, Any]
    per_frame: dict[str, float]
    actors: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class ServiceUsage:
    """What the service did while a group recorded: CPU seconds, bytes written to files,
    and the requests and bytes its insert routes received (`insert_counts`)."""

    cpu_s: float = 0.0
    file_bytes: int = 0
    requests: float = 0.0
    request_bytes: float = 0.0


def _group(figures: list[dict[str, Any]], store: Store, service: ServiceUsage) -> Group:
    """The figures of a group of actors, and the service's usage meanwhile."""
    n = sum(f["written"] for f in figures)
    ingest = {
        "frames": n,
        "frames_per_s": n / max(f["seconds"] for f in figures),
        "dropped": sum(f["dropped"] for f in figures),
    }
    per_frame = {
        "actor_cpu_ms": 1000 * sum(f["cpu_s"] for f in figures) / n,
        "service_cpu_ms": 1000 * service.cpu_s / n,
        "wire_bytes": service.request_bytes / n,
        "requests": service.requests / n,
        "stored_bytes": sum(store.race_nbytes(f["race_id"]) for f in figures) / n,
        "written_bytes": (sum(f["file_bytes"] for f in figures) + service.file_bytes) / n,
    }
    return Group(ingest, per_frame, figures)


class _Service:
    """The served store, its ``replay serve`` child, and a local store beside them."""

    def __init__(self, work: Path, server: ServerProcess) -> None:
        self.server = server
        self.store = open_store(work / "served", mode="r")
        self.local = open_store(work / "local")
        self.local_path = str(work / "local")

    def record(
        self, jobs: Sequence[ActorJob], while_recording: Callable[[], Any] | None = None
    ) -> tuple[Group, Any]:
        """Run `jobs` (all local or all remote): their `Group`, and what `while_recording`
        returned. The service's usage counts for remote actors only (a local writer's
        race never reaches it)."""
        url, pid = self.server.url, self.server.process.pid
        (cpu, written), (requests, nbytes) = usage(pid), insert_counts(url)
        figures, during = run_actors(jobs, while_recording)
        if jobs[0].target != url:
            return _group(figures, self.local, ServiceUsage()), during
        (cpu_after, written_after), (requests_after, nbytes_after) = usage(pid), insert_counts(url)
        service = ServiceUsage(
            cpu_after - cpu,
            written_after - written,
            requests_after - requests,
            nbytes_after - nbytes,
        )
        return _group(figures, self.store, service), during


def _game(
    service: _Service,
    job: ActorJob,
    actors: Sequence[int],
    paced_frames: int,
    fps: float,
) -> dict[str, Any]:
    """Local writer vs remote actors on one game's frames (`job`: one actor's race of
    them, at full speed)."""
    url = service.server.url
    local = dataclasses.replace(job, target=service.local_path)
    remote = dataclasses.replace(job, target=url)
    stage(f"remote: {job.env}, local writer")
    groups = {"local": service.record([local])[0]}
    for k in actors:
        stage(f"remote: {job.env}, {k} actor{'s' if k > 1 else ''}")
        groups[f"remote_{k}"] = service.record([remote] * k)[0]
    appends = {}
    for name, target in (("local", service.local_path), ("remote", url)):
        stage(f"remote: {job.env}, {name} append at {fps:g} FPS")
        pace = dataclasses.replace(job, target=target, frames=paced_frames, fps=fps)
        appends[name] = service.record([pace])[0].actors[0]["append"]
    base = groups["local"].ingest["frames_per_s"]
    ratios = {
        f"frames_per_s_{k}_vs_local": group.ingest["frames_per_s"] / base
        for k, group in groups.items()
        if k != "local"
    }
    ratios["append_p99_remote_vs_local"] = appends["remote"]["p99_us"] / appends["local"]["p99_us"]
    return {
        "ingest": {k: group.ingest for k, group in groups.items()},
        "per_frame": {k: group.per_frame for k, group in groups.items()},
        "append_paced": appends,
        "ratios": ratios,
    }


def _sample_latency(url: str, batch_size: int, batches: int) -> dict[str, dict[str, float]]:
    """`Client.sample` and `Client.sample_encoded` of `batch_size` frames, `batches` of each,
    alternating, after one warm-up batch (the service's sampler and index, the decoder)."""
    request, decoded = [], []
    with Client(url) as client:
        client.sample(batch_size=batch_size)
        for _ in range(batches):
            started = time.perf_counter()
            client.sample_encoded(batch_size=batch_size)
            request.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.sample(batch_size=batch_size)
            decoded.append(time.perf_counter() - started)
    return {"request": latency_summary(request), "decoded": latency_summary(decoded)}


def cpu_split() -> tuple[frozenset[int], frozenset[int]] | None:
    """The CPUs this process may use, cut in two: (the service's and the sampling
    client's, the actors'), the first half the larger (on 2 CPUs: one each); None with
    fewer than 2."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = (len(cpus) + 1) // 2
    return frozenset(cpus[:half]), frozenset(cpus[half:])


def _tasks(pid: int) -> list[int]:
    """The threads of process `pid` and of its children, all of them."""
    procs = (pid, *(c.pid for c in psutil.Process(pid).children(recursive=True)))
    tasks = []
    for proc in procs:
        with contextlib.suppress(FileNotFoundError):  # a child that just ended
            tasks += [int(task.name) for task in Path(f"/proc/{proc}/task").iterdir()]
    return tasks


def affinity(pid: int) -> set[int]:
    """The CPUs any thread of process `pid` or of its children may run on."""
    cpus: set[int] = set()
    for task in _tasks(pid):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            cpus |= os.sched_getaffinity(task)
    return cpus


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Pin every thread of process `pid` and of its children to `cpus`; the threads and
    processes they start later inherit it (Linux affinity is per thread)."""
    cpus = set(cpus)
    for task in _tasks(pid):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(task, cpus)


def _pinned(
    service: _Service, jobs: Sequence[ActorJob], sample: Callable[[], Any]
) -> tuple[dict[str, Any], dict[str, Group], dict[str, Any]]:
    """Sample latency with the service and the sampling client (this process) on one half
    of the CPUs, with no actor, then with `jobs` on the other half (`cpu_split`): actors
    on machines of their own, as far as one machine goes. Returns (runs, what the actors
    recorded, where each ran), or no runs on a 1-CPU machine."""
    split = cpu_split()
    if split is None:
        return {}, {}, {"skipped": "1 usable CPU: no CPU to pin the actors apart on"}
    service_cpus, actor_cpus = split
    where = {"service_and_sampler_cpus": sorted(service_cpus), "actor_cpus": sorted(actor_cpus)}
    everyone = os.sched_getaffinity(0)
    server = service.server.process.pid
    runs, inserting = {}, {}
    try:
        for pid in (server, os.getpid()):
            pin(pid, service_cpus)
        stage("remote: sampling, service pinned apart, no actor recording")
        runs["0_actors_pinned"] = sample()
        name = f"{len(jobs)}_actors_pinned"
        stage(f"remote: sampling, {len(jobs)} actors pinned apart recording")
        apart = [dataclasses.replace(job, cpus=actor_cpus) for job in jobs]
        inserting[name], runs[name] = service.record(apart, sample)
        where["actors_ran_on"] = sorted({c for f in inserting[name].actors for c in f["cpus"]})
        where["service_ran_on"] = sorted(affinity(server))
    finally:
        for pid in (server, os.getpid()):
            pin(pid, everyone)
    return runs, inserting, where


def _baseline(name: str) -> str:
    """The run a loaded run of `_sampling` is compared with: no actor, pinned alike."""
    if name == "0_actors_pinned":
        return "0_actors"
    return "0_actors_pinned" if name.endswith("_pinned") else "0_actors"


def _sampling(
    service: _Service, jobs: Sequence[ActorJob], batch_size: int, batches: int
) -> dict[str, Any]:
    """Sample latency with no actor recording, then with `jobs` at full speed: at the
    service's priority, at nice `NICE` (the actors take only the CPU the service and the
    learner leave), then pinned to CPUs apart from the service's and the sampler's
    (`_pinned`; each loaded run is compared with no actor, pinned alike)."""
    url = service.server.url

    def sample() -> dict[str, dict[str, float]]:
        return _sample_latency(url, batch_size, batches)

    stage("remote: sampling, no actor recording")
    runs = {"0_actors": sample()}
    inserting: dict[str, Group] = {}  # what the actors recorded meanwhile
    for nice in (0, NICE):
        name = f"{len(jobs)}_actors" + (f"_nice_{nice}" if nice else "")
        stage(f"remote: sampling, {name.replace('_', ' ')} recording")
        niced = [dataclasses.replace(job, nice=nice) for job in jobs]
        inserting[name], runs[name] = service.record(niced, sample)
    pinned_runs, pinned_inserting, where = _pinned(service, jobs, sample)
    runs |= pinned_runs
    inserting |= pinned_inserting
    results: dict[str, Any] = {"batch_size": batch_size, "batches": batches, "pinned": where}
    for kind in ("request", "decoded"):
        results[kind] = {name: run[kind] for name, run in runs.items()}
    results["inserting"] = {name: group.ingest for name, group in inserting.items()}
    results["inserting_per_frame"] = {name: group.per_frame for name, group in inserting.items()}
    results["ratios"] = ratios = {}
    for name in list(runs)[1:]:
        base = _baseline(name)
        for kind in ("request", "decoded"):
            for q in ("p50", "p99"):
                key = f"{kind}_{q}_{name}_vs_{base.replace('_actors', '')}"
                ratios[key] = results[kind][name][f"{q}_us"] / results[kind][base][f"{q}_us"]
    return results


def run_remote_bench(
    games: Mapping[str, Game],
    work: Path,
    *,
    frames: int = 120,
    actors: Sequence[int] = (1, 4),
    paced_frames: int = 90,
    fps: float = 30.0,
    load_actors: int = 8,
    batch_size: int = 8,
    batches: int = 30,
) -> dict[str, Any]:
    """Remote actors vs the local writer on each game's frames, then sampling latency
    with and without `load_actors` recording; `work` is a scratch folder. Returns the
    figures (the module doc says what each is)."""
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "frames_per_actor": frames,
        "paced_frames": paced_frames,
        "fps": fps,
        "load_average_before": list(os.getloadavg()),
    }
    jobs = {}
    for i, (env, (distinct, race)) in enumerate(games.items()):
        path = work / f"frames-{i}.npy"
        np.save(path, np.stack(distinct))
        h, w = distinct[0].shape[:2]
        jobs[env] = ActorJob("", str(path), env, {**race, "height": h, "width": w}, frames)
        results[env] = {
            "frame_shape": list(distinct[0].shape),
            "distinct_frames": len(distinct),
            "codec": dict(race),
        }
    expect(len(games) * (3 + len(actors)) + 3 + (2 if cpu_split() else 0))
    open_store(work / "served")
    with ServerProcess(work / "served") as server:
        service = _Service(work, server)
        for env, job in jobs.items():
            results[env] |= _game(service, job, actors, paced_frames, fps)
        load = [  # the games in turn
            dataclasses.replace(j, target=server.url, frames=UNTIL_STOPPED)
            for j in (list(jobs.values()) * load_actors)[:load_actors]
        ]
        results["sample_latency"] = _sampling(service, load, batch_size, batches)
        results["service_peak_rss_mb"] = server.peak_rss / 2**20
    results["load_average_after"] = list(os.getloadavg())
    return results
