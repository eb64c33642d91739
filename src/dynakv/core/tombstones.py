"""Tombstone reaping: deleting deleted keys for good, without resurrecting them.

A delete leaves a tombstone (a sibling marked deleted) so that replicas that missed
the delete, and anti-entropy, learn of it instead of bringing the old value back.
Keeping tombstones forever costs disk, so a primary owner reaps one when it is safe:

- every tombstone (an object with no live sibling) has a row in TOMBSTONES_PARTITION
  (partition, key -> when it was written), kept as objects are stored;
- every `tombstone_reap_interval_ms` a node looks at a page of its rows; a row is a
  candidate once `tombstone_grace_ms` has passed since the tombstone was written and
  this node is a primary owner of the key;
- the node then asks every member of the cluster (all must be up in its view):
  a primary owner votes yes only if it holds the identical tombstone (same object
  hash); any other node only if it holds no copy of the key (no fallback copy);
  and every node only if it holds no hint for the key (no pending handoff);
- with every vote yes, the node tells the primary owners to delete the key, each
  only if its object still has that hash (a write that raced with the vote wins).

So a tombstone goes only when every replica holds it, no hint, fallback copy or
handoff for it is pending, and the grace time has passed: anti-entropy and handoff
cannot bring the deleted value back.

Messages already on their way can: a get that read the old value before the delete
sends its read repair when it ends (up to a request timeout later), and an
anti-entropy repair or a replica write may be in flight. So a replica that reaps a
key remembers the reaped tombstone for a while (REAPED_PARTITION: row -> when, and
the tombstone; like Riak's delete_mode): until `reaped_memory_ms(config)` has passed,
a version that arrives for the key is merged with the remembered tombstone as if it
were still there, and dropped when the tombstone already covers it. A truly new
write (a dot the tombstone has not seen) is stored as usual. The memory is three
request timeouts: a request started before the reap ends within one.

A node runs at most limits.REAPS_IN_FLIGHT_MAX reaps at once; while a page of
tombstones has candidates it goes on at once, and it waits the reap interval only
after a pass over all its tombstones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOMBSTONES_PARTITION = -3
REAPED_PARTITION = -4
REAP_PAGE_KEYS = 100


def reaped_memory_ms(request_timeout_ms: int) -> int:
    """How long a replica remembers a tombstone it reaped (see the module docstring)."""
    return 3 * request_timeout_ms


def encode_reaped(reaped_at_ms: int, data: bytes) -> bytes:
    return reaped_at_ms.to_bytes(8, "big") + data


def decode_reaped(raw: bytes) -> tuple[int, bytes]:
    return int.from_bytes(raw[:8], "big"), raw[8:]


def tombstone_row(partition: int, key: bytes) -> bytes:
    return partition.to_bytes(4, "big") + key


def parse_tombstone_row(row: bytes) -> tuple[int, bytes]:
    return int.from_bytes(row[:4], "big"), row[4:]


@dataclass(slots=True)
class ReapState:
    """One tombstone being reaped: the votes still awaited."""

    deadline_ms: int
    partition: int
    key: bytes
    digest: bytes
    waiting: set[str] = field(default_factory=set)
    refused: bool = False


@dataclass(slots=True)
class Reaper:
    next_reap_ms: int = 0
    cursor: bytes = b""
    reaped_cursor: bytes = b""
    reaping: set[tuple[int, bytes]] = field(default_factory=set)  # (partition, key)
    reaped: int = 0
    refused: int = 0
