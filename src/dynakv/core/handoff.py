"""Ownership handoff: streaming partitions to their new owners after a ring change.

When a committed plan moves partitions, a node that holds keys of a partition it no
longer owns (it is not among the partition's primary owners for the default n_val)
streams them to the current primary owners, then drops them:

- at most TRANSFERS_IN_FLIGHT_MAX partitions at a time per node, one batch of up to
  TRANSFER_BATCH_KEYS keys per partition in flight, a step per handoff interval
  (throttled); a transfer waits while any of its targets is down;
- a batch goes to every target; each merges the objects with sync (writes made on
  the new owners meanwhile are kept: sync is a merge, not an overwrite) and
  acknowledges; only then does the sender drop those keys, and only the ones that did
  not change since they were sent (a late write is sent again on the next round);
- resumable: a transfer is nothing but "the keys of this partition still here", so
  after a restart of either side it simply starts again from the first key left.

Writes during the move go to the new owners already (they are the ring's primaries
from the commit on), so no acknowledged write depends on the old owner. Reads go to
the new owners too, and also to the previous owners (the ring keeps the owners of
the version before) that have not yet said they are done: a read does not answer
"not found" before those have answered, and merges what they hold, so a key that
has two new, still empty, replicas is found while it streams. A node says it is done
by setting `handoff_version` in its own member record (gossiped) once it holds no
partition it does not own; a freed transfer slot starts the next partition at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRANSFERS_IN_FLIGHT_MAX = 2
TRANSFER_BATCH_KEYS = 100


@dataclass(slots=True)
class Transfer:
    """One partition streaming from this node to its owners."""

    partition: int
    targets: tuple[str, ...]
    keys_total: int | None  # an estimate, when known (the partition's tree had it)
    started_ms: int
    cursor: bytes = b""
    keys_done: int = 0
    bytes_done: int = 0
    batch: dict[bytes, bytes] = field(default_factory=dict)  # key -> encoded object sent
    waiting: set[str] = field(default_factory=set)  # targets yet to acknowledge the batch
    request_id: int = 0
    deadline_ms: int = 0

    def status(self, source: str, now_ms: int) -> dict[str, object]:
        elapsed_s = max(0.001, (now_ms - self.started_ms) / 1000)
        return {
            "partition": self.partition,
            "from": source,
            "to": list(self.targets),
            "keys_done": self.keys_done,
            "keys_total": self.keys_total,
            "bytes_done": self.bytes_done,
            "keys_per_s": round(self.keys_done / elapsed_s, 1),
            "state": "sending" if self.waiting else "waiting",
        }
