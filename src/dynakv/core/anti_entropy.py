"""Anti-entropy: Merkle-tree exchanges that repair replicas of a partition.

Dynamo (section 4.7) repairs replicas that diverged for good (a lost disk, dropped
hints, a long partition) by comparing hash trees. Each node keeps a MerkleTree
(core/merkle.py) per partition it is a primary owner of, over (key, hash of the
object's canonical encoding), updated on every write and delete.

Trees are built in the background at start (and rebuilt every
`anti_entropy_rebuild_interval_ms`, to catch disk rot): a page of keys per tick,
so building never stalls requests; writes during a build update it too. Until a
partition's tree is built it takes no part in exchanges.

An exchange (one per `anti_entropy_interval_ms` at most, and at most
AE_EXCHANGES_IN_FLIGHT_MAX at once per node) pairs this node with another primary
owner of a partition, round robin over partitions and partners. That round is slow
by design (at the lan preset a node with 40 partitions and 2 partners each takes
800 s to go round), so a peer that was down and is up again (back from a crash, a
pause or a partition: the detector saw it go and come back) is caught up at once:
every (partition, peer) pair the two share is queued as a catch-up exchange, run
ahead of the round as soon as fewer than AE_EXCHANGES_IN_FLIGHT_MAX are in flight.
Whatever either side missed while apart (writes with no fallback to hold a hint,
hints lost with a fallback) is repaired within seconds of the heal. A catch-up
exchange that fails (the partner still building its trees) is tried again
AE_CATCH_UP_RETRY_MS later, then twice that, and so on; after
AE_CATCH_UP_FAILURES_MAX failures it is left to the round (a partner that never has
trees, such as one with anti-entropy off, costs a few tries, not one a second). An
exchange:
1. compare roots, then descend level by level only into differing nodes
   (AeLevel / AeLevelReply), down to the differing segments;
2. fetch those segments' (key, hash) items (AeSegments / AeSegmentsReply, at most
   AE_SEGMENTS_PER_MESSAGE a message) and list the keys whose hashes differ;
3. send this node's objects for those keys (AeRepair, AE_REPAIR_KEYS_PER_MESSAGE a
   message); the partner merges each with sync and answers its merged objects
   (AeRepairReply), which this node merges in turn. Both then hold the merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dynakv.core.merkle import MerkleTree


@dataclass(slots=True)
class Exchange:
    """One exchange this node runs with `partner` over `partition`."""

    deadline_ms: int
    partition: int
    partner: str
    tree: MerkleTree
    depth: int = 0
    keys: list[bytes] = field(default_factory=list)  # differing keys left to repair
    segments: list[int] = field(default_factory=list)  # differing segments left to fetch
    # What the last request asked for: ("level", indexes at `depth`), ("segments",
    # segment numbers) or ("repair", keys). A reply that does not answer it (a late
    # reply to another request, a confused peer) fails the exchange.
    asked: tuple[str, frozenset[int] | frozenset[bytes]] = ("level", frozenset({0}))
    keys_repaired: int = 0  # keys whose copy on this node the exchange changed
    bytes_received: int = 0
    # A catch-up exchange: how many tries of it failed before this one; None for an
    # exchange of the round.
    catch_up_failures: int | None = None


@dataclass(slots=True)
class TreeBuild:
    """A tree being built from storage, a page at a time."""

    tree: MerkleTree
    next_start: bytes = b""
    keys: int = 0


@dataclass(slots=True)
class AntiEntropy:
    """A node's trees, builds and exchange bookkeeping."""

    trees: dict[int, MerkleTree] = field(default_factory=dict)
    builds: dict[int, TreeBuild] = field(default_factory=dict)
    build_queue: list[int] = field(default_factory=list)
    next_exchange_ms: int = 0
    next_rebuild_ms: int = 0
    next_build_ms: int = 0
    cursor: int = 0  # round robin over (partition, partner) pairs
    in_flight: int = 0
    trees_built: int = 0
    exchanges_done: int = 0
    exchanges_failed: int = 0
    keys_repaired: int = 0  # keys whose copy here an exchange changed (either side)
    last_exchange_ms: dict[int, int] = field(default_factory=dict)
    # Catch-up exchanges: (partition, partner) -> (not before this time, tries that
    # failed). Bounded by the pairs this node's partitions have (partitions x
    # (n_val - 1)).
    catch_up: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)
    catch_ups_done: int = 0
    catch_ups_given_up: int = 0

    def catch_up_due(self) -> int | None:
        """When the next catch-up exchange may start (None if none is queued)."""
        return min(when for when, _ in self.catch_up.values()) if self.catch_up else None

    def tree_for_update(self, partition: int) -> list[MerkleTree]:
        """The trees (built and building) that a write to `partition` must update."""
        found = []
        tree = self.trees.get(partition)
        if tree is not None:
            found.append(tree)
        build = self.builds.get(partition)
        if build is not None:
            found.append(build.tree)
        return found

    def status(self, partitions_owned: int) -> dict[str, object]:
        return {
            "trees_built": len(self.trees),
            "trees_total": partitions_owned,
            "trees_building": sorted(self.builds),
            "tree_builds_done": self.trees_built,
            "exchanges_done": self.exchanges_done,
            "exchanges_failed": self.exchanges_failed,
            "exchanges_in_flight": self.in_flight,
            "catch_up_queued": len(self.catch_up),
            "catch_ups_done": self.catch_ups_done,
            "catch_ups_given_up": self.catch_ups_given_up,
            "keys_repaired": self.keys_repaired,
            # Keys per partition, from the built trees (what this replica holds).
            "partition_keys": {str(p): tree.keys_count for p, tree in sorted(self.trees.items())},
            "last_exchange_ms": {str(p): t for p, t in sorted(self.last_exchange_ms.items())},
        }
