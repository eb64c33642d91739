"""The ring: Q equal partitions of a 160-bit hash space, each owned by one node.

Dynamo's partitioning strategy 3 (and Riak's ring): the hash space is cut into Q
equal partitions (Q a power of two, fixed when the cluster is created), and each
partition is owned by a node. A key belongs to the partition its hash falls in.

The key hash is stable and documented (docs/architecture.md):

    h = SHA-1(msgpack([bucket_type, bucket, key]))  as a 160-bit big-endian integer
    partition = h >> (160 - log2(Q))                i.e. floor(h * Q / 2**160)

The preference list of a key walks the partitions clockwise from the key's
partition and collects distinct owners.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass

import msgpack

from dynakv.core import limits

HASH_BITS = 160


def key_bytes(bucket_type: str, bucket: str, key: str) -> bytes:
    """The canonical encoding of a key's full name: hashed, and used as the storage key."""
    packed: bytes = msgpack.packb([bucket_type, bucket, key])
    return packed


def split_key_bytes(packed: bytes) -> tuple[str, str, str]:
    """Inverse of key_bytes."""
    bucket_type, bucket, key = msgpack.unpackb(packed)
    return str(bucket_type), str(bucket), str(key)


def key_hash(bucket_type: str, bucket: str, key: str) -> int:
    """The 160-bit SHA-1 hash of a key's canonical name."""
    return int.from_bytes(hashlib.sha1(key_bytes(bucket_type, bucket, key)).digest(), "big")


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def partition_of_hash(ring_size: int, hash_value: int) -> int:
    assert is_power_of_two(ring_size)
    return hash_value >> (HASH_BITS - (ring_size.bit_length() - 1))


@dataclass(frozen=True, slots=True)
class Ring:
    """Partition ownership: owners[i] is the node that owns partition i."""

    owners: tuple[str, ...]

    def __post_init__(self) -> None:
        size = len(self.owners)
        if not is_power_of_two(size) or not limits.RING_SIZE_MIN <= size <= limits.RING_SIZE_MAX:
            raise ValueError(f"ring size must be a power of two up to {limits.RING_SIZE_MAX}")

    @property
    def size(self) -> int:
        return len(self.owners)

    def partition_of(self, bucket_type: str, bucket: str, key: str) -> int:
        return partition_of_hash(self.size, key_hash(bucket_type, bucket, key))

    def nodes(self) -> list[str]:
        """The distinct owners, sorted."""
        return sorted(set(self.owners))

    def digest(self) -> str:
        """A short digest of the ownership: equal rings have equal digests."""
        return hashlib.sha1("\n".join(self.owners).encode()).hexdigest()[:16]

    def partitions_of(self, node: str) -> list[int]:
        return [index for index, owner in enumerate(self.owners) if owner == node]


@dataclass(frozen=True, slots=True)
class Target:
    """One replica of a key: the node, the ring position it was found at,
    whether it is one of the key's N primary owners, and for a fallback the down
    primary it stands in for (its hint names that node)."""

    partition: int
    node: str
    primary: bool
    hint_for: str = ""


def primary_owners(ring: Ring, partition: int, n: int) -> list[Target]:
    """The first n distinct owners walking clockwise from `partition`."""
    found: list[Target] = []
    seen: set[str] = set()
    for step in range(ring.size):
        index = (partition + step) % ring.size
        owner = ring.owners[index]
        if owner not in seen:
            seen.add(owner)
            found.append(Target(index, owner, True))
            if len(found) == n:
                break
    return found


def preference_list(
    ring: Ring, partition: int, n: int, up: Collection[str] | None = None
) -> list[Target]:
    """The key's replicas: its primary owners that are up, then (sloppy quorum)
    the next distinct up nodes clockwise as fallbacks, n in all when possible.

    With `up` None every node counts as up, and the list is the n primaries.
    """
    primaries = primary_owners(ring, partition, n)
    if up is None:
        return primaries
    chosen = [target for target in primaries if target.node in up]
    if len(chosen) == n:
        return chosen
    seen = {target.node for target in primaries}
    stand_in_for = [target.node for target in primaries if target.node not in up]
    start = primaries[-1].partition if primaries else partition
    for step in range(1, ring.size + 1):
        if len(chosen) == n:
            break
        index = (start + step) % ring.size
        owner = ring.owners[index]
        if owner not in seen and owner in up:
            seen.add(owner)
            chosen.append(Target(index, owner, False, stand_in_for.pop(0)))
    return chosen
