"""The LMDB storage engine (the default): durable, memory-mapped, one writer.

Layout: one environment `DIR/data.lmdb` with these databases: `data`, keyed by a
4-byte big-endian partition number followed by the key's canonical bytes (so a
partition, and a bucket within it, is a contiguous key range), `meta` for node
metadata (META_PARTITION), `hints` for hinted handoff (HINTS_PARTITION) and
`tombstones`, the index of tombstones to reap (TOMBSTONES_PARTITION), `reaped`,
tombstones reaped a moment ago (REAPED_PARTITION). The map
starts at 1 GiB and doubles whenever it fills (LMDB's map is virtual and sparse); a
full disk raises StorageFull (HTTP 503) and applies nothing. Each `write` is one
transaction and one fsync: the driver calls it with the writes of many requests at
once (group commit).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmdb

from dynakv.core.errors import StorageFull
from dynakv.core.hints import HINTS_PARTITION
from dynakv.core.storage import META_PARTITION, Write
from dynakv.core.tombstones import REAPED_PARTITION, TOMBSTONES_PARTITION

MAP_SIZE_INITIAL_BYTES = 1 << 30
MAP_SIZE_MAX_BYTES = 1 << 44


def _partition_prefix(partition: int) -> bytes:
    return partition.to_bytes(4, "big")


class LmdbStorage:
    def __init__(self, path: Path, map_size_bytes: int = MAP_SIZE_INITIAL_BYTES) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(
            str(path),
            map_size=map_size_bytes,
            max_dbs=8,
            sync=True,
            metasync=True,
            readahead=False,
            writemap=False,
        )
        # The map may only be resized while no transaction runs: readers hold this
        # lock (for microseconds) and so does a resize; the one writer resizes only
        # between its own transactions, so writes need not hold it.
        self._lock = threading.Lock()
        self._data = self._env.open_db(b"data")
        self._meta = self._env.open_db(b"meta")
        self._special = {
            META_PARTITION: self._meta,
            HINTS_PARTITION: self._env.open_db(b"hints"),
            TOMBSTONES_PARTITION: self._env.open_db(b"tombstones"),
            REAPED_PARTITION: self._env.open_db(b"reaped"),
        }

    def _locate(self, partition: int, key: bytes) -> tuple[Any, bytes]:
        if partition < 0:
            return self._special[partition], key
        return self._data, _partition_prefix(partition) + key

    def get(self, partition: int, key: bytes) -> bytes | None:
        db, full_key = self._locate(partition, key)
        with self._lock, self._env.begin(db=db, buffers=False) as txn:
            value = txn.get(full_key)
        return None if value is None else bytes(value)

    def scan(self, partition: int, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        db, full_start = self._locate(partition, start)
        prefix = b"" if partition < 0 else _partition_prefix(partition)
        out: list[tuple[bytes, bytes]] = []
        with self._lock, self._env.begin(db=db) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(full_start):
                return out
            for key, value in cursor:
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                out.append((bytes(key[len(prefix):]), bytes(value)))
        return out

    def write(self, writes: Sequence[Write]) -> None:
        while True:
            try:
                self._write_once(writes)
                return
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as error:
                if _is_disk_full(error):
                    raise StorageFull(f"storage full: {error}; free disk space") from error
                raise

    def _write_once(self, writes: Sequence[Write]) -> None:
        with self._env.begin(write=True) as txn:
            for write in writes:
                db, full_key = self._locate(write.partition, write.key)
                if write.value is None:
                    txn.delete(full_key, db=db)
                else:
                    txn.put(full_key, write.value, db=db)

    def _grow(self) -> None:
        with self._lock:
            size = self._env.info()["map_size"]
            if size >= MAP_SIZE_MAX_BYTES:
                raise StorageFull(f"storage map reached its maximum of {size} bytes")
            self._env.set_mapsize(size * 2)

    def keys_count(self, partition: int) -> int:
        prefix = _partition_prefix(partition)
        count = 0
        with self._lock, self._env.begin(db=self._data) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    count += 1
        return count

    def close(self) -> None:
        self._env.close()


def _is_disk_full(error: Exception) -> bool:
    text = str(error)
    return "No space left" in text or getattr(error, "errno", None) == errno.ENOSPC
