"""Request counters and latency percentiles for GET /stats, named as Riak names them.

The HTTP API times every get, put and delete it sends through the node. Counters
are totals since the node started; latencies are kept as a bounded window of the
most recent samples per operation (microseconds, as Riak reports its
node_get_fsm_time_* and node_put_fsm_time_*), so memory stays fixed however long
the node runs.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

from dynakv.core import limits

Operation = Literal["get", "put", "delete"]
OPERATIONS: tuple[Operation, ...] = ("get", "put", "delete")


# Riak's suffixes for a latency summary, and the percentile each stands for
# (the mean is computed apart).
PERCENTILES: tuple[tuple[str, float], ...] = (("median", 50.0), ("95", 95.0), ("99", 99.0),
                                              ("100", 100.0))


class LatencyWindow:
    """The last `size` latencies of one operation, in microseconds."""

    def __init__(self, size: int = limits.LATENCY_WINDOW_SAMPLES) -> None:
        assert size > 0
        self._samples: deque[int] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, microseconds: int) -> None:
        self._samples.append(max(0, microseconds))

    def summary(self) -> dict[str, int]:
        """mean, median, 95, 99 and 100 (the maximum); all 0 with no samples."""
        ordered = sorted(self._samples)
        if not ordered:
            return {"mean": 0, **{name: 0 for name, _ in PERCENTILES}}
        result = {"mean": round(sum(ordered) / len(ordered))}
        for name, percentile in PERCENTILES:
            result[name] = nearest_rank(ordered, percentile)
        return result


def nearest_rank(ordered: list[int], percentile: float) -> int:
    """The nearest-rank percentile of a sorted, non-empty list."""
    assert ordered and 0 < percentile <= 100
    rank = math.ceil(percentile / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


class RequestStats:
    """Counts and latency windows of the gets, puts and deletes the API served."""

    def __init__(self, window_samples: int = limits.LATENCY_WINDOW_SAMPLES) -> None:
        self.counts: dict[Operation, int] = dict.fromkeys(OPERATIONS, 0)
        self.latencies: dict[Operation, LatencyWindow] = {
            operation: LatencyWindow(window_samples) for operation in OPERATIONS
        }

    def record(self, operation: Operation, microseconds: int) -> None:
        self.counts[operation] += 1
        self.latencies[operation].record(microseconds)

    def to_json(self) -> dict[str, int]:
        """Riak's stat names: node_gets, node_puts, node_deletes (and *_total),
        node_get_fsm_time_{mean,median,95,99,100}, node_put_fsm_time_*, and
        node_delete_time_* for deletes (Riak has no delete FSM of its own)."""
        result: dict[str, int] = {}
        for operation in OPERATIONS:
            result[f"node_{operation}s"] = self.counts[operation]
            result[f"node_{operation}s_total"] = self.counts[operation]
        names: dict[Operation, str] = {
            "get": "node_get_fsm_time",
            "put": "node_put_fsm_time",
            "delete": "node_delete_time",
        }
        for operation, prefix in names.items():
            for suffix, value in self.latencies[operation].summary().items():
                result[f"{prefix}_{suffix}"] = value
        return result
