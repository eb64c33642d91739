"""The claim: which node owns which partition, in proportion to node weights.

Rules, in order of precedence (they cannot always all hold):
1. each node's partition count is within one of its weight-proportional share
   (quotas by the largest-remainder method, ties broken by name);
2. neighbouring partitions (within n_val - 1 of each other) have distinct owners
   where the quotas allow, so that the N replicas of a key land on N distinct
   nodes without walking far;
3. on a change, as few partitions as possible move: only partitions of departed
   nodes and the excess of nodes above their quota are reassigned.

Pure functions of their arguments: every node computes the same ring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    weight: int = 1
    zone: str = ""

    def __post_init__(self) -> None:
        if self.weight < 1:
            raise ValueError(f"node {self.name}: weight must be a positive integer")


def quotas(
    ring_size: int, members: Sequence[Member], current: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Partitions per node: floor or ceiling of its weight-proportional share.

    The ceilings go to nodes with a fractional share (largest-remainder method);
    given the current counts, nodes that already hold more than their floor get them
    first, so that a change of members moves no partition it need not move.
    """
    if not members:
        raise ValueError("a ring needs at least one member")
    held = current or {}
    total = sum(member.weight for member in members)
    exact = {m.name: ring_size * m.weight / total for m in members}
    counts = {name: int(share) for name, share in exact.items()}
    left = ring_size - sum(counts.values())
    fractional = [name for name in exact if exact[name] > counts[name]]
    ranked = sorted(fractional, key=lambda name: (
        held.get(name, 0) <= counts[name], -(exact[name] - counts[name]), name))
    for name in ranked[:left]:
        counts[name] += 1
    return counts


def _pick(
    candidates: dict[str, int], owners: Sequence[str | None], index: int, n_val: int
) -> str:
    """The candidate with most quota left, preferring one not owning a neighbour."""
    size = len(owners)
    near = {
        owners[(index + offset) % size]
        for offset in range(-(n_val - 1), n_val)
        if offset != 0
    }
    ranked = sorted(candidates, key=lambda name: (name in near, -candidates[name], name))
    return ranked[0]


def claim(
    ring_size: int,
    members: Sequence[Member],
    n_val: int,
    current: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """A new ownership for `members`, moving as little of `current` as the quotas allow."""
    held: dict[str, int] = {}
    for owner in current or ():
        held[owner] = held.get(owner, 0) + 1
    quota = quotas(ring_size, members, held)
    owners: list[str | None] = [None] * ring_size
    if current is not None:
        assert len(current) == ring_size
        kept = {name: 0 for name in quota}
        for index, owner in enumerate(current):
            if owner in quota and kept[owner] < quota[owner]:
                owners[index] = owner
                kept[owner] += 1
    remaining = {name: quota[name] - sum(1 for o in owners if o == name) for name in quota}
    for index in range(ring_size):
        if owners[index] is not None:
            continue
        candidates = {name: left for name, left in remaining.items() if left > 0}
        chosen = _pick(candidates, owners, index, n_val)
        owners[index] = chosen
        remaining[chosen] -= 1
    assert all(owner is not None for owner in owners)
    return tuple(owner for owner in owners if owner is not None)
