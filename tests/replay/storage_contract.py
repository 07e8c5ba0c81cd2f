"""The `ByteStorage` contract, one test class that every storage implementation runs.

Subclass `ByteStorageContract` in the implementation's test module and give it a
`storage` fixture that returns an empty storage of that kind (zarr-python's shared
store tests work the same way)::

    class TestLocalStorage(ByteStorageContract):
        @pytest.fixture
        def storage(self, tmp_path: Path) -> ByteStorage:
            return LocalStorage(tmp_path / "bytes")
"""

from __future__ import annotations

import pytest

from replay.storage.base import ByteStorage

BLOB = bytes(range(256)) * 40


class ByteStorageContract:
    """What the store relies on from any `ByteStorage`; keys are '/'-separated."""

    @pytest.fixture
    def storage(self) -> ByteStorage:
        raise NotImplementedError("a subclass provides an empty storage")

    def test_missing_keys(self, storage: ByteStorage) -> None:
        assert not storage.exists("a/b/c")
        with pytest.raises(FileNotFoundError):
            storage.read("a/b/c")
        with pytest.raises(FileNotFoundError):
            storage.size("a/b/c")
        assert storage.list_dir("nothing") == []
        assert list(storage.walk_sizes("")) == []
        storage.delete("a/b/c")  # absent: no error

    def test_write_replace_and_read(self, storage: ByteStorage) -> None:
        storage.write("a/b/c", BLOB[::-1])
        storage.write("a/b/c", BLOB)  # replacing is fine
        storage.write("a/d", b"xy")
        assert storage.exists("a/b/c")
        assert storage.read("a/b/c") == BLOB
        assert storage.size("a/b/c") == len(BLOB)
        assert storage.read("a/d") == b"xy"

    def test_read_ranges(self, storage: ByteStorage) -> None:
        storage.write("a/b/c", BLOB)
        ranges = [(0, 10), (5000, 300), (10, 1), (len(BLOB) - 4, 4)]
        assert storage.read_ranges("a/b/c", ranges) == [BLOB[o : o + n] for o, n in ranges]
        assert storage.read_ranges("a/b/c", [(-20, 20), (-20, 5)]) == [BLOB[-20:], BLOB[-20:-15]]
        with pytest.raises((EOFError, OSError)):
            storage.read_ranges("a/b/c", [(len(BLOB) - 4, 8)])
        with pytest.raises((EOFError, OSError)):
            storage.read_ranges("a/b/c", [(-len(BLOB) - 1, 8)])

    def test_list_walk_and_delete(self, storage: ByteStorage) -> None:
        storage.write("a/b/c", BLOB)
        storage.write("a/d", b"xy")
        assert storage.list_dir("a") == ["b", "d"]
        assert storage.list_dir("") == ["a"]
        assert sorted(storage.walk_sizes("a")) == [("a/b/c", len(BLOB)), ("a/d", 2)]
        storage.delete("a/d")
        storage.delete("a/d")  # absent: no error
        assert storage.list_dir("a") == ["b"]
        storage.delete_tree("a")
        assert list(storage.walk_sizes("")) == []
        assert not storage.exists("a/b/c")
        # (SeaweedFS may still list the emptied "a" as a prefix until its directory cleanup)
