"""`replay.storage.local.LocalStorage`: the `ByteStorage` contract, atomic replaces under a
concurrent reader, temp files cleaned up after failed writes, read-only refusals."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from storage_contract import ByteStorageContract

from replay.errors import ReadOnlyStoreError, StoreError
from replay.storage.base import ByteStorage
from replay.storage.local import TEMP_PREFIX, LocalStorage


class TestLocalStorage(ByteStorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> ByteStorage:
        return LocalStorage(tmp_path / "bytes")


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def test_a_replace_is_never_seen_half_written(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    storage = LocalStorage(tmp_path)
    versions = [real_frames[0].tobytes(), real_frames[-1].tobytes()]  # 4.3 MB each
    assert versions[0] != versions[1]
    storage.write("frame", versions[0])
    seen: list[int] = []
    torn: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            data = storage.read("frame")
            if data in versions:
                seen.append(versions.index(data))
            else:
                torn.append(len(data))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(12):
            storage.write("frame", versions[(i + 1) % 2])
    finally:
        done.set()
        reader.join()
    assert torn == []
    assert set(seen) == {0, 1}  # the reader did see the file change under it
    assert storage.read("frame") == versions[0]
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_bytes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("races/x/old", b"committed")
    with pytest.raises(TypeError):
        storage.write("races/x/old", "not bytes")  # type: ignore[arg-type]
    assert storage.read("races/x/old") == b"committed"
    (tmp_path / "races" / "x" / "dir").mkdir()
    (tmp_path / "races" / "x" / "dir" / "inside").write_bytes(b"1")
    with pytest.raises(IsADirectoryError):  # the rename onto a directory fails
        storage.write("races/x/dir", b"new")
    assert (tmp_path / "races" / "x" / "dir" / "inside").read_bytes() == b"1"
    assert leftovers(tmp_path) == []
    assert storage.list_dir("races/x") == ["dir", "old"]


def test_read_only_storage_refuses_changes(tmp_path: Path) -> None:
    LocalStorage(tmp_path).write("a/b", b"kept")
    storage = LocalStorage(tmp_path, read_only=True)
    assert storage.read("a/b") == b"kept"
    for attempt, key in (
        (lambda: storage.write("a/b", b"new"), "a/b"),
        (lambda: storage.write("a/c", b"new"), "a/c"),
        (lambda: storage.delete("a/b"), "a/b"),
        (lambda: storage.delete_tree("a"), "a"),
    ):
        with pytest.raises(ReadOnlyStoreError, match=rf"{tmp_path} is open read-only.*{key}$"):
            attempt()
    assert storage.read("a/b") == b"kept"
    assert storage.list_dir("a") == ["b"]


def test_ranges_and_listing_edge_cases(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("k", b"0123456789")
    assert storage.read_ranges("k", []) == []
    assert storage.read_ranges("k", [(3, 0), (10, 0)]) == [b"", b""]
    assert storage.read_ranges("k", [(8, 2), (-10, 3), (0, 1)]) == [b"89", b"012", b"0"]
    with pytest.raises(EOFError, match="k: wanted 4 bytes at 8, got 2"):
        storage.read_ranges("k", [(8, 4)])
    with pytest.raises(FileNotFoundError):
        storage.read_ranges("missing", [(0, 1)])
    with pytest.raises(StoreError, match="is not a directory"):
        storage.list_dir("k")
    assert repr(storage) == f"LocalStorage({str(tmp_path)!r})"


def test_a_tail_longer_than_the_file_is_a_clear_eof_error(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("races/R/frames/c/0/0/0/0", b"short")
    with pytest.raises(EOFError, match=r"races/R/frames/c/0/0/0/0: wanted .*132.* got 5"):
        storage.read_ranges("races/R/frames/c/0/0/0/0", [(-132, 132)])


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_stores_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Every file was 0600 (``tempfile.mkstemp``): a store recorded on the host could not
    be served by the deploy image's user, nor read by another user."""
    import replay

    old = os.umask(umask)
    try:
        store = replay.open_store(tmp_path / "s")
        # a thread writer: a writer process started earlier keeps its own umask
        with store.new_race(env="e", height=8, width=8, codec="zstd", writer="thread") as w:
            w.append(np.zeros((8, 8, 3), np.uint8))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert len(files) > 5  # the store's, the race's and its arrays' documents, a shard
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}
