"""The simulated disk: the storage port over an in-memory engine, with fsync latency.

The node reads through it like any storage engine. Only the driver writes to it,
at a simulated sync: the cluster (sim/cluster.py) gathers the writes of every
Output queued since the last sync into one transaction (group commit), applies
it when the simulated fsync finishes, and only then sends the messages and
replies of those Outputs (persist, then send). A crash loses the node's pending
writes and any sync in progress; what `write` applied survives. A wipe loses
everything (the node restarts with a new incarnation, so a new server id).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from dynakv.core.storage import Write
from dynakv.storage.memory import MemoryStorage


@dataclass(frozen=True, slots=True)
class DiskParams:
    """How long a simulated fsync takes: uniform in [fsync_min_ms, fsync_max_ms]."""

    fsync_min_ms: int = 1
    fsync_max_ms: int = 4

    def fsync_ms(self, rng: random.Random) -> int:
        return rng.randint(self.fsync_min_ms, self.fsync_max_ms)


class SimDisk:
    """Durable storage of one simulated node (implements core.storage.Storage)."""

    def __init__(self) -> None:
        self._memory = MemoryStorage()
        self.transactions = 0
        self.writes = 0
        self.wipes = 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self._memory.get(partition, key)

    def scan(self, partition: int, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        return self._memory.scan(partition, start, limit)

    def write(self, writes: Sequence[Write]) -> None:
        """Apply one transaction; durable once this returns (called at a simulated sync)."""
        self._memory.write(writes)
        self.transactions += 1
        self.writes += len(writes)

    def wipe(self) -> None:
        """Lose every byte: the disk was replaced."""
        self._memory = MemoryStorage()
        self.wipes += 1

    def close(self) -> None:
        pass
