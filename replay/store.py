"""The front door: open a store, start races, list and read them.

import replay
store = replay.open_store("./replay-data")           # created if missing
with store.new_race(env="CarRacing-v3", fps=30) as writer:
    writer.append(frame, action=a, reward=r)
for info in store.races():
    print(info.race_id, info.length, info.status)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr
from ulid import ULID
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore, MemoryStore

from replay import format as fmt
from replay import jpeg
from replay.capacity import (
    Capacity,
    EvictionPlan,
    evict,
    plan_eviction,
    read_capacity,
    save_capacity,
)
from replay.codecs import JpegCodec, SingletonDimCodec
from replay.codecs.jpeg import is_quality
from replay.errors import (
    CorruptDataError,
    RaceNotFoundError,
    ReadOnlyStoreError,
    ReplayError,
    StoreError,
)
from replay.index import Filters
from replay.race import Race, RaceInfo, read_json, read_race_info
from replay.recovery import RecoveryReport, recover
from replay.samplers import Kind, Sampler
from replay.storage import ByteStorage, LocalStorage
from replay.writer import QueuePolicy, StepSpec, ThreadWriter, Writer, check_settings
from replay.writer_process import ProcessWriter, WriterKind, resolve_writer_kind

if TYPE_CHECKING:
    from zarr.abc.store import Store as ZarrStore

    from replay.object_storage import ObjectStorage

Mode = Literal["a", "r"]
log = logging.getLogger(__name__)
Codec = Literal["jpeg", "zstd"]
#: Paths that name an object store rather than a directory.
OBJECT_STORE_PREFIXES = ("s3://",)


def open_store(path: str | os.PathLike[str], mode: Mode = "a") -> Store:
    """Open the replay store at `path`: a directory, or ``s3://bucket/prefix``.

    ``mode="a"`` (default) creates an empty store where nothing exists yet (or in an
    empty directory); ``mode="r"`` opens an existing store read-only. Raises
    `StoreError` for a path that is a file or a directory that is not a store.
    An ``s3://`` URL opens the store on an S3-compatible object store
    (`replay.object_storage`; needs ``replay[s3]``).
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
        except (PermissionError, ReadOnlyStoreError) as e:
            raise ReadOnlyStoreError(f"cannot create a store at {root}: {e}") from e
    return Store(storage, read_only=mode == "r")


def _open_object_store(url: str, mode: Mode) -> Store:
    try:
        from replay.object_storage import ObjectStorage
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
    except ValueError as e:  # a malformed URL
        raise StoreError(str(e)) from e
    except OSError as e:  # unreachable, refused credentials, no such bucket
        raise StoreError(f"cannot open the store: {e.strerror or e}") from e
    return Store(storage, read_only=mode == "r")


def write_group(
    storage: ByteStorage,
    prefix: str,
    attributes: dict[str, Any],
    build: Callable[[zarr.Group], None] = lambda group: None,
) -> None:
    """Create a Zarr group (and the arrays `build` adds to it) at `prefix`, durably.

    zarr-python writes the metadata documents (it is our compatibility oracle), but
    into memory: each document then goes through `storage.write` (fsynced and renamed
    into place locally, one PUT on S3), the group's own document last, so the group
    is listed only once its arrays are on disk.
    """
    documents: dict[str, Any] = {}
    build(zarr.open_group(store=MemoryStore(documents), mode="w", attributes=attributes))
    group_doc = fmt.METADATA
    for key in sorted(documents, key=lambda k: k == group_doc):
        storage.write(f"{prefix}/{key}" if prefix else key, documents[key].to_bytes())


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
            zarr_store: ZarrStore = (
                LocalStore(self.storage.root, read_only=True)
                if isinstance(self.storage, LocalStorage)
                else self.storage.zarr_store()
            )
            self._zarr = zarr.open_group(store=zarr_store, mode="r")
        return self._zarr

    def race_ids(self) -> list[str]:
        """Ids of all races, oldest first (ids sort by creation time)."""
        return [n for n in self.storage.list_dir(fmt.RACES) if fmt.is_race_id(n)]

    def races(self) -> list[RaceInfo]:
        """Metadata of every race, oldest first.

        Races being created (no metadata yet) are skipped, and so are races whose
        metadata is damaged (logged; `replay verify` reports them), so one bad race
        never hides the others.
        """
        out = []
        for race_id in self.race_ids():
            try:
                out.append(read_race_info(self.storage, race_id))
            except RaceNotFoundError:  # being created right now
                continue
            except CorruptDataError as e:
                log.warning("skipping race %s: %s", race_id, e)
        return out

    def race(self, race_id: str) -> Race:
        """One race; `RaceNotFoundError` if the id is malformed or absent."""
        return Race(self.storage, read_race_info(self.storage, race_id), self.zarr)

    def sampler(
        self,
        kind: Kind = "uniform",
        *,
        batch_size: int = 64,
        seq_len: int = 1,
        stride: int = 1,
        seed: int | None = None,
        filters: Filters | Mapping[str, Any] | None = None,
        skip_corrupt: bool = False,
        **options: Any,
    ) -> Sampler:
        """A `Sampler` of this store's races (see `replay.samplers`).

        `kind` is ``"uniform"``, ``"prioritized"`` or ``"recent"``. Items are windows
        of `seq_len` steps `stride` apart inside one race. More `options` (`Sampler`'s
        keywords): ``device, out, transform`` (defaults for `sample` and iteration),
        ``alpha, beta, name, checkpoint_interval`` (prioritized),
        ``recent_seconds, recent_fraction`` (recent), ``refresh_interval, io_threads``.

            sampler = store.sampler("uniform", batch_size=32, seq_len=4, seed=0)
            batch = sampler.sample()        # batch.frames: (32, 4, 900, 1600, 3) uint8
        """
        return Sampler(
            self.storage,
            kind=kind,
            batch_size=batch_size,
            seq_len=seq_len,
            stride=stride,
            seed=seed,
            filters=filters,
            skip_corrupt=skip_corrupt,
            read_only=self.read_only,
            **options,
        )

    def race_nbytes(self, race_id: str) -> int:
        """Bytes the race takes on disk."""
        read_race_info(self.storage, race_id)  # validates the id
        return sum(size for _, size in self.storage.walk_sizes(fmt.race_key(race_id)))

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
        codec: Codec = "jpeg",
        quality: int = fmt.DEFAULT_QUALITY,
        subsampling: str = "420",
        shard_size: int = fmt.DEFAULT_SHARD_SIZE,
        flush_interval: float = 1.0,
        queue_size: int = 32,
        on_full: QueuePolicy = "block",
        device: str = "auto",
        writer: WriterKind = "auto",
    ) -> Writer:
        """Start recording a race; returns its `Writer` (use it as a context manager).

        `codec` is ``"jpeg"`` (lossy, `quality` 1-100, `subsampling` "420"/"422"/"444")
        or ``"zstd"`` (lossless). `extras` declares more per-step arrays as
        ``{name: (dtype, shape)}``. `meta` is any JSON-able user metadata.
        `writer` is where frames are encoded: ``"process"`` (a writer process fed
        through shared memory; ``"auto"`` for CPU frames) or ``"thread"`` (a thread
        of this process; ``"auto"`` for CUDA frames), see `replay.writer_process`.
        """
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.root} is open read-only; cannot start a race")
        _check_race_args(height, width, fps, shard_size, codec, quality, subsampling, meta)
        kind = resolve_writer_kind(
            writer, check_settings(flush_interval, queue_size, on_full, device)
        )
        specs = _step_specs(action_shape, extras or {})
        race_id = str(ULID())
        codec_attrs: dict[str, Any] = (
            {"name": "jpeg", "quality": quality, "subsampling": subsampling}
            if codec == "jpeg"
            else {"name": "zstd", "level": 3}
        )
        attrs: dict[str, Any] = {
            "env": env,
            "map": map,
            "policy": policy,
            "fps": fps,
            "height": height,
            "width": width,
            "shard_size": shard_size,
            "started_at": fmt.utc_now(),
            "ended_at": None,
            "status": fmt.RECORDING,
            "length": 0,
            "codec": codec_attrs,
            "action_shape": list(action_shape),
            "extras": {n: {"dtype": d, "shape": list(s)} for n, (d, s) in (extras or {}).items()},
            "meta": dict(meta or {}),
            "lease": None,
        }
        try:
            self._create_race(race_id, attrs, specs)
        except PermissionError as e:
            raise ReadOnlyStoreError(f"cannot write a race into {self.root}: {e.strerror}") from e
        info = RaceInfo.from_attrs(race_id, attrs)
        enforce = None if read_capacity(self).unlimited else self.enforce_capacity
        if kind == "process":
            return ProcessWriter(
                self.storage,
                info,
                specs,
                flush_interval=flush_interval,
                queue_size=queue_size,
                on_full=on_full,
                enforce_capacity=enforce is not None,
            )
        return ThreadWriter(
            self.storage,
            info,
            specs,
            flush_interval=flush_interval,
            queue_size=queue_size,
            on_full=on_full,
            device=device,
            on_shard=enforce,
        )

    def set_capacity(self, max_bytes: float | None = None, max_age: float | None = None) -> None:
        """Save a byte budget and/or a maximum race age (seconds) in the store.

        Writers started afterwards evict the oldest finished races as they commit
        shards; `enforce_capacity` (or ``replay prune``) does it on demand.
        """
        save_capacity(self, Capacity(None if max_bytes is None else int(max_bytes), max_age))

    def enforce_capacity(self) -> EvictionPlan:
        """Evict the oldest finished races that exceed the saved capacity; returns what went."""
        plan = plan_eviction(self)
        evict(self, plan)
        return plan

    def recover(self, *, dry_run: bool = False) -> RecoveryReport:
        """Mark dead writers' races aborted and delete their temp files (`replay.recovery`)."""
        return recover(self, dry_run=dry_run)

    def _create_race(self, race_id: str, attrs: dict[str, Any], specs: list[StepSpec]) -> None:
        h, w, s = attrs["height"], attrs["width"], attrs["shard_size"]
        codec = attrs["codec"]
        serializer: Any
        compressors: Any
        if codec["name"] == "jpeg":
            serializer = JpegCodec(quality=codec["quality"], subsampling=codec["subsampling"])
            filters: Any = [SingletonDimCodec()]
            compressors = [Crc32cCodec()]
        else:
            serializer, filters = BytesCodec(), None
            compressors = [ZstdCodec(level=3), Crc32cCodec()]

        def build(group: zarr.Group) -> None:
            group.create_array(
                fmt.FRAMES,
                shape=(0, h, w, 3),
                chunks=(1, h, w, 3),
                shards=(s, h, w, 3),
                dtype="uint8",
                filters=filters,
                serializer=serializer,
                compressors=compressors,
                fill_value=0,
                dimension_names=["step", "y", "x", "channel"],
            )
            for spec in specs:
                group.create_array(
                    spec.name,
                    shape=(0, *spec.shape),
                    chunks=(s, *spec.shape),
                    dtype=spec.dtype,
                    compressors=[ZstdCodec(level=3)],
                    fill_value=0,
                )

        write_group(self.storage, fmt.race_key(race_id), attrs, build)


def _check_race_args(
    height: int,
    width: int,
    fps: float,
    shard_size: int,
    codec: str,
    quality: int,
    subsampling: str,
    meta: Mapping[str, Any] | None,
) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not 1 <= shard_size <= 65536:
        raise ValueError(f"shard_size must be in 1..65536, got {shard_size}")
    if codec not in ("jpeg", "zstd"):
        raise ValueError(f"codec must be 'jpeg' or 'zstd', got {codec!r}")
    if codec == "jpeg" and not is_quality(quality):
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    if subsampling not in jpeg.SUBSAMPLING_FACTORS:
        raise ValueError(f"subsampling must be '420', '422' or '444', got {subsampling!r}")
    try:
        json.dumps(dict(meta or {}))
    except TypeError as e:
        raise ValueError(f"meta must be JSON-serialisable: {e}") from e


def _step_specs(
    action_shape: tuple[int, ...], extras: Mapping[str, tuple[str, tuple[int, ...]]]
) -> list[StepSpec]:
    specs = [
        StepSpec(name, np.dtype(dtype), tuple(action_shape) if name == "action" else ())
        for name, dtype in fmt.STANDARD_STEPS.items()
    ]
    for name, (dtype, shape) in extras.items():
        if name in fmt.STANDARD_STEPS or name == fmt.FRAMES or not name.isidentifier():
            raise ReplayError(f"extra step array name {name!r} is reserved or not an identifier")
        specs.append(StepSpec(name, np.dtype(dtype), tuple(shape)))
    return specs
