"""An in-memory storage engine: for tests and the simulator (nothing is durable)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from dynakv.core.storage import Write


class MemoryStorage:
    def __init__(self) -> None:
        self._partitions: dict[int, dict[bytes, bytes]] = {}
        self._sorted: dict[int, list[bytes]] = {}
        self.transactions = 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self._partitions.get(partition, {}).get(key)

    def scan(self, partition: int, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        data = self._partitions.get(partition)
        if not data:
            return []
        keys = self._sorted.get(partition)
        if keys is None:
            keys = self._sorted[partition] = sorted(data)
        index = bisect.bisect_left(keys, start)
        return [(key, data[key]) for key in keys[index : index + limit]]

    def write(self, writes: Sequence[Write]) -> None:
        self.transactions += 1
        for write in writes:
            data = self._partitions.setdefault(write.partition, {})
            if write.value is None:
                if data.pop(write.key, None) is not None:
                    self._sorted.pop(write.partition, None)
            else:
                if write.key not in data:
                    self._sorted.pop(write.partition, None)
                data[write.key] = write.value

    def keys_count(self, partition: int) -> int:
        return len(self._partitions.get(partition, {}))

    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def close(self) -> None:
        pass
