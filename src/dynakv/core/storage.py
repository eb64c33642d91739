"""The storage port: what the core needs of a storage engine.

Reads are plain synchronous calls; writes are effects that the driver applies in
one transaction and one sync for many events (group commit) before it sends the
messages and replies that depend on them. Keys are (partition, bytes); negative
partitions are not ring partitions: META_PARTITION holds node metadata (bucket
properties), core/hints.py's HINTS_PARTITION the hints of hinted handoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

META_PARTITION = -1
# Data directory format; a node refuses to open a directory of a format it cannot read.
# 2: objects are stored flat (core/messages.py, OBJECT_FORMAT). A directory of format 1
# is still read (its objects decode, and hash as their re-encoding) and is marked 2 on
# opening, so an older dynakv, which cannot read flat objects, refuses it.
FORMAT_VERSION = 2
FORMAT_VERSIONS_READ = (1, 2)


@dataclass(frozen=True, slots=True)
class Write:
    """Set (value bytes) or delete (value None) one key of one partition."""

    partition: int
    key: bytes
    value: bytes | None


class Storage(Protocol):
    def get(self, partition: int, key: bytes) -> bytes | None:
        """The stored bytes, or None."""
        ...

    def scan(self, partition: int, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, value) pairs of `partition` with key >= start, in key order."""
        ...

    def write(self, writes: Sequence[Write]) -> None:
        """Apply all writes in one transaction, durable when this returns.
        Raises errors.StorageFull when the disk is full (nothing applied)."""
        ...

    def close(self) -> None: ...
