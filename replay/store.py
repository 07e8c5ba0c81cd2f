"""The front door: open a store, start races, list and read them.

import replay
store = replay.open_store("./replay-data")           # created if missing
with store.new_race(env="CarRacing-v3", fps=30) as writer:
    writer.append(frame, action=a, reward=r)
for info in store.races():
    print(info.race_id, info.length, info.status)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Unpack

import zarr
from ulid import ULID

from replay.codec.frames import CodecName, writer_device
from replay.errors import RaceNotFoundError, ReadOnlyStoreError, ReplayError, StoreError
from replay.format import catalogue
from replay.format import spec as fmt
from replay.format.groups import ensure_groups, write_group
from replay.format.race import Race, RaceInfo, read_json, read_race_info
from replay.format.race_schema import RaceSpec, write_race
from replay.maintenance import capacity
from replay.maintenance.capacity import Capacity, EvictionPlan, read_capacity, save_capacity
from replay.maintenance.recovery import RecoveryReport, recover
from replay.maintenance.repair import Repair, repair
from replay.maintenance.verify import RaceCheck, StoreCheck, verify_store
from replay.sample.params import Kind, SamplerOptions
from replay.sample.sampler import Sampler
from replay.storage.base import ByteStorage, is_read_only_error
from replay.storage.local import LocalStorage
from replay.write.settings import QueuePolicy, WriterKind, WriterSettings
from replay.write.start import start_writer
from replay.write.store_sink import StoreDestination
from replay.write.writer import Writer

if TYPE_CHECKING:
    from collections.abc import Callable

    from replay.storage.s3 import ObjectStorage

Mode = Literal["a", "r"]
log = logging.getLogger(__name__)
#: Paths that name an object store rather than a directory.
OBJECT_STORE_PREFIXES = ("s3://",)


def open_store(path: str | os.PathLike[str], mode: Mode = "a") -> Store:
    """Open the replay store at `path`: a directory, or ``s3://bucket/prefix``.

    ``mode="a"`` (default) creates an empty store where nothing exists yet (or in an
    empty directory); ``mode="r"`` opens an existing store read-only. Raises
    `StoreError` for a path that is a file or a directory that is not a store.
    An ``s3://`` URL opens the store on an S3-compatible object store
    (`replay.storage.s3`; needs ``replay[s3]``).
    """
    if mode not in ("a", "r"):
        raise ValueError(f"mode must be 'a' or 'r', not {mode!r}")
    if isinstance(path, str) and path.startswith(OBJECT_STORE_PREFIXES):
        return _open_object_store(path, mode)
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root} is a file, not a replay store (a store is a directory)")
    storage = LocalStorage(root, read_only=mode == "r")
    meta_key = fmt.METADATA
    if storage.exists(meta_key):
        _check_root(storage, root)
    elif mode == "r":
        raise StoreError(f"{root} is not a replay store (no {meta_key}); record into it first")
    elif root.exists() and any(root.iterdir()):
        raise StoreError(f"{root} is a non-empty directory that is not a replay store")
    else:
        try:
            root.mkdir(parents=True, exist_ok=True)
            write_group(storage, "", {fmt.FORMAT_ATTR: fmt.FORMAT_VERSION})
        except (OSError, ReadOnlyStoreError) as e:
            if isinstance(e, OSError) and not is_read_only_error(e):
                raise StoreError(f"cannot create a store at {root}: {e}") from e
            raise ReadOnlyStoreError(f"cannot create a store at {root}: {e}") from e
    if mode == "a":
        ensure_groups(storage)  # a new store, or one written before these groups existed
    return Store(storage, read_only=mode == "r")


def _open_object_store(url: str, mode: Mode) -> Store:
    try:
        from replay.storage.s3 import ObjectStorage
    except ImportError as e:
        raise StoreError(f"{url}: object stores need obstore (pip install 'replay[s3]')") from e
    try:
        storage = ObjectStorage(url, read_only=mode == "r")
        if storage.exists(fmt.METADATA):
            _check_root(storage, storage.url)
        elif mode == "r":
            raise StoreError(
                f"{url} is not a replay store (no {fmt.METADATA}); record into it first"
            )
        elif storage.list_dir(""):
            raise StoreError(f"{url} holds objects but is not a replay store")
        else:
            write_group(storage, "", {fmt.FORMAT_ATTR: fmt.FORMAT_VERSION})
        if mode == "a":
            ensure_groups(storage)
    except ValueError as e:  # a malformed URL
        raise StoreError(str(e)) from e
    except OSError as e:  # unreachable, refused credentials, no such bucket
        raise StoreError(f"cannot open the store: {e.strerror or e}") from e
    return Store(storage, read_only=mode == "r")


def _check_root(storage: ByteStorage, root: Path | str) -> None:
    try:
        attrs = read_json(storage, fmt.METADATA).get("attributes", {})
    except ValueError as e:
        raise StoreError(f"{root}/{fmt.METADATA} is not valid JSON: {e}") from e
    version = attrs.get(fmt.FORMAT_ATTR)
    if version is None:
        raise StoreError(f"{root} is a Zarr group but not a replay store (no {fmt.FORMAT_ATTR})")
    if version != fmt.FORMAT_VERSION:
        raise StoreError(
            f"{root} has replay format {version}; this version reads format {fmt.FORMAT_VERSION}"
        )


class Store:
    """A replay store: a Zarr v3 group of races. Get one from `open_store`."""

    def __init__(self, storage: LocalStorage | ObjectStorage, *, read_only: bool) -> None:
        self.storage = storage
        self.read_only = read_only
        self._zarr: zarr.Group | None = None

    def __repr__(self) -> str:
        return f"Store({str(self.storage.root)!r}, read_only={self.read_only})"

    @property
    def root(self) -> Path | str:
        """The store's directory, or its ``s3://`` URL."""
        return self.storage.root

    @property
    def zarr(self) -> zarr.Group:
        """The store as a read-only zarr Group (for plain zarr-python access)."""
        if self._zarr is None:
            self._zarr = catalogue.zarr_group(self.storage)
        return self._zarr

    def race_ids(self) -> list[str]:
        """Ids of all races, oldest first (ids sort by creation time)."""
        return catalogue.race_ids(self.storage)

    def check(self) -> None:
        """StoreError if the store is gone since it was opened (its root document removed)."""
        if not self.storage.exists(fmt.METADATA):
            raise StoreError(f"{self.root} is no longer a replay store (no {fmt.METADATA})")

    def races(self) -> list[RaceInfo]:
        """Metadata of every race, oldest first.

        Races being created (no metadata yet) are skipped, and so are races whose
        metadata is damaged (logged; `scan` and `replay verify` name them), so one bad
        race never hides the others.
        """
        return self.scan()[0]

    def scan(self) -> tuple[list[RaceInfo], dict[str, str]]:
        """(metadata of every readable race, {race id: damage} of those that cannot be read)."""
        return catalogue.scan(self.storage)

    def race(self, race_id: str) -> Race:
        """One race; `RaceNotFoundError` if the id is malformed or absent."""
        return catalogue.open_race(self.storage, race_id, self.zarr)

    def resolve(self, ref: str) -> str:
        """The full id of the one race whose id starts with `ref` (as git resolves hashes).

        Lets people type ``01JF3`` for a 26-character id: the CLI and the service
        accept any unique prefix (case-insensitive). `RaceNotFoundError` names the
        store when nothing matches, and lists the candidates when several do.

            store.resolve("01jf3k")  # -> "01JF3K6XQ6W1M8Y4ZP0V2C7D9B"
        """
        prefix = ref.strip().upper()
        if not prefix or not fmt.RACE_ID_PATTERN.fullmatch(prefix.ljust(26, "0")):
            raise RaceNotFoundError(f"{ref!r} is not a race id or the start of one (ULID)")
        if fmt.is_race_id(prefix):
            return prefix
        matches = [r for r in self.race_ids() if r.startswith(prefix)]
        if not matches:
            raise RaceNotFoundError(f"no race id starting with {ref!r} in {self.root}")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise RaceNotFoundError(
                f"race id prefix {ref!r} is ambiguous in {self.root}: "
                f"{len(matches)} races match ({shown}); give more characters"
            )
        return matches[0]

    def sampler(self, kind: Kind | None = None, /, **options: Unpack[SamplerOptions]) -> Sampler:
        """A `Sampler` of this store's races (see `replay.sample.sampler`).

        `kind` is ``"uniform"`` (the default), ``"prioritized"`` or ``"recent"``, given
        first or as a keyword. Items are windows of `seq_len` steps `stride` apart
        inside one race. The keywords are the sampler parameters (`replay.sample.params`:
        ``batch_size, seq_len, stride, seed, filters, skip_corrupt``, ``n_step, gamma,
        next_frames`` for n-step returns, ``min_size, samples_per_insert,
        error_margin`` for rate limits) and `Sampler`'s own options: ``device, out,
        transform`` (defaults for `sample` and iteration), ``alpha, beta, name,
        checkpoint_interval, checkpoint_path, save_priorities`` (prioritized; where
        priorities are saved: `replay.sample.sampler`), ``recent_seconds, recent_fraction``
        (recent), ``refresh_interval``, ``io_threads`` (threads that read a batch's shards at
        once: an object store's; a local store reads them in the caller unless it is given),
        ``timeout`` (a rate limit's wait).

            sampler = store.sampler("uniform", batch_size=32, seq_len=4, seed=0)
            batch = sampler.sample()        # batch.frames: (32, 4, 900, 1600, 3) uint8
        """
        if kind is not None:
            if "kind" in options:
                raise TypeError("sampler() got kind twice (first and as a keyword)")
            options["kind"] = kind
        return Sampler(self.storage, read_only=self.read_only, **options)

    def race_nbytes(self, race_id: str) -> int:
        """Bytes the race takes on disk."""
        read_race_info(self.storage, race_id)  # validates the id
        return catalogue.folder_nbytes(self.storage, race_id)

    def new_race(
        self,
        *,
        env: str,
        map: str = "",
        policy: str = "",
        fps: float = 30,
        height: int = 900,
        width: int = 1600,
        action_shape: tuple[int, ...] = (3,),
        extras: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
        meta: Mapping[str, Any] | None = None,
        codec: CodecName = "jpeg",
        quality: int = fmt.DEFAULT_QUALITY,
        subsampling: str = "420",
        shard_size: int = fmt.DEFAULT_SHARD_SIZE,
        flush_interval: float = 1.0,
        queue_size: int | None = None,
        on_full: QueuePolicy = "block",
        device: str = "auto",
        writer: WriterKind = "auto",
    ) -> Writer:
        """Start recording a race; returns its `Writer` (use it as a context manager).

        `codec` is ``"jpeg"`` (lossy, `quality` 1-100, `subsampling` "420"/"422"/"444")
        or ``"zstd"`` (lossless). `extras` declares more per-step arrays as
        ``{name: (dtype, shape)}``. `meta` is any JSON-able user metadata.
        ``flush_interval, queue_size, on_full, device, writer`` are the writer's
        settings (`replay.write.settings.WriterSettings`: `queue_size` None sizes the
        ring for `fps`; `writer` ``"process"`` or ``"thread"``, docs/writer.md).
        """
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.root} is open read-only; cannot start a race")
        race = RaceSpec(  # its fields are these arguments, in this order
            *(env, map, policy, fps, height, width, action_shape, extras or {}, meta or {}),
            *(codec, quality, subsampling, shard_size),
        )
        frames, specs = race.check()
        settings = WriterSettings(
            flush_interval=flush_interval,
            queue_size=queue_size,
            on_full=on_full,
            device=writer_device(frames, device),
            writer=writer,
            enforce_capacity=not read_capacity(self.storage).unlimited,
        )
        race_id = str(ULID())
        with self._whole_race(race_id):
            info = write_race(self.storage, race_id, race.attrs(frames), specs)
            return start_writer(StoreDestination(self.storage), info, specs, settings)

    @contextlib.contextmanager
    def _whole_race(self, race_id: str) -> Iterator[None]:
        """Leave no half-made race: on any failure (ENOSPC, MemoryError...) remove it,
        and name the store in a read-only or OS error."""
        try:
            yield
        except BaseException as e:
            self._discard_race(race_id)
            if isinstance(e, ReadOnlyStoreError):
                raise ReadOnlyStoreError(f"cannot write a race into {self.root}: {e}") from e
            if isinstance(e, OSError):
                raise StoreError(f"cannot create a race in {self.root}: {e}") from e
            raise

    def _discard_race(self, race_id: str) -> None:
        try:
            self.storage.delete_tree(fmt.race_key(race_id))
        except (OSError, ReplayError) as e:  # then `replay prune` removes it as an orphan
            log.warning("could not remove the failed race %s: %s", race_id, e)

    def set_capacity(self, max_bytes: float | None = None, max_age: float | None = None) -> None:
        """Save a byte budget and/or a maximum race age (seconds) in the store.

        Writers started afterwards evict the oldest finished races as they commit
        shards; `enforce_capacity` (or ``replay prune``) does it on demand.
        """
        save_capacity(
            self.storage, Capacity(None if max_bytes is None else int(max_bytes), max_age)
        )

    def enforce_capacity(self) -> EvictionPlan:
        """Evict the oldest finished races that exceed the saved capacity; returns what went."""
        return capacity.enforce(self.storage)

    def recover(self, *, dry_run: bool = False) -> RecoveryReport:
        """Mark dead writers' races aborted and delete their temp files
        (`replay.maintenance.recovery`)."""
        return recover(self.storage, dry_run=dry_run)

    def verify(self, progress: Callable[[int], None] = lambda n: None) -> StoreCheck:
        """Check every committed frame, step chunk and document of every race
        (`replay.maintenance.verify`); `progress` gets the number of frames checked as it goes."""
        return verify_store(self.storage, progress)

    def repair(self, check: RaceCheck) -> Repair:
        """Repair the damage `check` (from `verify`) found in one race
        (`replay.maintenance.repair`):
        keep every intact frame, record the lost steps; refused for a live writer's race."""
        return repair(self.storage, check)
