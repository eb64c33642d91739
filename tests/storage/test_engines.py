"""The storage engines implement the core's storage port the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dynakv.core.storage import META_PARTITION, Storage, Write
from dynakv.storage.lmdb_engine import LmdbStorage
from dynakv.storage.memory import MemoryStorage


@pytest.fixture(params=["memory", "lmdb"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    engine: Storage = MemoryStorage() if request.param == "memory" else LmdbStorage(tmp_path / "db")
    yield engine
    engine.close()


def test_write_get_delete(storage: Storage) -> None:
    storage.write([Write(3, b"k1", b"v1"), Write(3, b"k2", b"v2"), Write(4, b"k1", b"other")])
    assert storage.get(3, b"k1") == b"v1"
    assert storage.get(4, b"k1") == b"other"
    assert storage.get(5, b"k1") is None
    storage.write([Write(3, b"k1", None)])
    assert storage.get(3, b"k1") is None
    assert storage.get(3, b"k2") == b"v2"


def test_scan_is_ordered_bounded_and_per_partition(storage: Storage) -> None:
    storage.write([Write(7, f"k{i:03d}".encode(), b"x") for i in range(50)])
    storage.write([Write(8, b"k000", b"y"), Write(6, b"k999", b"z")])
    page = storage.scan(7, b"", 10)
    assert [key for key, _ in page] == [f"k{i:03d}".encode() for i in range(10)]
    rest = storage.scan(7, page[-1][0] + b"\x00", 1000)
    assert len(rest) == 40
    assert all(value == b"x" for _, value in rest)
    assert storage.scan(9, b"", 10) == []


def test_meta_partition_is_separate(storage: Storage) -> None:
    storage.write([Write(META_PARTITION, b"name", b"meta"), Write(0, b"name", b"data")])
    assert storage.get(META_PARTITION, b"name") == b"meta"
    assert storage.get(0, b"name") == b"data"
    assert storage.scan(META_PARTITION, b"", 10) == [(b"name", b"meta")]


def test_lmdb_data_survives_reopen(tmp_path: Path) -> None:
    engine = LmdbStorage(tmp_path / "db")
    engine.write([Write(1, b"key", b"value")])
    engine.close()
    again = LmdbStorage(tmp_path / "db")
    assert again.get(1, b"key") == b"value"
    again.close()


def test_lmdb_map_grows_when_full(tmp_path: Path) -> None:
    engine = LmdbStorage(tmp_path / "db", map_size_bytes=1 << 20)
    value = b"v" * 4096
    for batch in range(8):
        engine.write([Write(0, f"{batch}-{i}".encode(), value) for i in range(100)])
    assert engine.get(0, b"7-99") == value
    assert engine.keys_count(0) == 800
    engine.close()
