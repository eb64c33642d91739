"""Membership changes in the simulator: what a plan will move, and what must hold after.

The membership scenarios (scenarios.py: join-under-partition, join-with-crash,
leave-under-load, remove-dead-node, two-joins-one-plan) script joins, leaves and
removals with the runner's membership actions (faults.py: add, join, leave, remove,
commit). This module gives them:

- `expected_ring`: the ring the claimant will commit, computed as the claimant does
  (core/membership.py: plan over the bootstrap state with the changes staged), so a
  scenario knows which partitions move and which old owners must hand data over
  before anything runs;
- `moves`: per partition, the primary owners it loses and gains;
- `membership_premise`: the checks that the change really happened and finished,
  so that a scenario that stopped exercising its case fails: one commit was
  accepted; every live node holds the expected ring at the expected version;
  joiners are valid members that own their weight's share and hold data; leavers
  are removed, own nothing and hold nothing; dead nodes removed without handoff are
  removed and own nothing; every node that lost partitions
  finished transfers (over all its lives) and none is pending;
  no node keeps a key of a partition it does not own (every copy was handed off,
  then dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dynakv.config import Config
from dynakv.core import membership as ms
from dynakv.core.ring import Ring, primary_owners
from dynakv.sim.cluster import make_ring
from dynakv.sim.runner import Simulation
from dynakv.sim.workload import BUCKET_TYPE, Key


@dataclass(frozen=True, slots=True)
class Joiner:
    name: str
    weight: int = 1
    zone: str = ""


def expected_ring(names: Sequence[str], config: Config, joiners: Sequence[Joiner] = (),
                  leavers: Sequence[str] = ()) -> Ring:
    """The ring a commit of these staged changes gives, from the boot ring of `names`."""
    ring = make_ring(names, config)
    state = ms.bootstrap(config.cluster_name, [ms.MemberInfo(name, "") for name in names],
                         ring.owners, config.n_val)
    for joiner in joiners:
        state = ms.stage_join(state, ms.MemberInfo(joiner.name, f"{joiner.name}:sim",
                                                   joiner.weight, joiner.zone))
    for name in leavers:
        state = ms.stage_leave(state, name)
    return Ring(ms.plan(state).owners)


def _primaries(ring: Ring, partition: int, n_val: int) -> set[str]:
    return {target.node for target in primary_owners(ring, partition, n_val)}


def moves(before: Ring, after: Ring, n_val: int) -> dict[int, tuple[set[str], set[str]]]:
    """Per partition whose primary owners change: (the owners it loses, those it gains)."""
    found = {}
    for partition in range(before.size):
        old, new = _primaries(before, partition, n_val), _primaries(after, partition, n_val)
        if old != new:
            found[partition] = (old - new, new - old)
    return found


def keys_in(ring: Ring, partitions: Sequence[int], prefix: str, count: int) -> list[Key]:
    """The first `count` keys b0/<prefix><i> that fall in `partitions`."""
    wanted = set(partitions)
    found: list[Key] = []
    for index in range(1_000 * count):
        key = ("b0", f"{prefix}{index}")
        if ring.partition_of(BUCKET_TYPE, *key) in wanted:
            found.append(key)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} keys {prefix}* fall in partitions {partitions}")


def held_not_owned(sim: Simulation, name: str, ring: Ring) -> dict[int, int]:
    """Keys `name` holds (on disk, and pending) per partition it is no primary owner of."""
    node = sim.cluster.nodes[name].node
    disk = sim.cluster.nodes[name].disk
    found = {}
    for partition in range(ring.size):
        if name in _primaries(ring, partition, sim.config.n_val):
            continue
        rows = (node._scan(partition, b"", 10_000) if node is not None
                else disk.scan(partition, b"", 10_000))
        if rows:
            found[partition] = len(rows)
    return found


def keys_held(sim: Simulation, name: str, ring: Ring) -> int:
    return sum(len(sim.cluster.nodes[name].disk.scan(partition, b"", 10_000))
               for partition in range(ring.size))


def membership_premise(sim: Simulation, expected: Ring, version: int,
                       joiners: Sequence[Joiner] = (), leavers: Sequence[str] = (),
                       removed: Sequence[str] = ()) -> list[str]:
    """What must hold once a membership change committed and settled (see the module).
    `removed`: dead nodes removed without handoff (down at the end, their disks left as
    they were): every live node sees them removed, and they own nothing."""
    failures = []
    # One commit accepted (none if its answer was lost: the ring version shows it).
    if len(sim.commits()) > 1:
        failures.append(f"{len(sim.commits())} plans were committed (expected one): "
                        f"{[(e.time_ms, e.what, e.via, e.answer) for e in sim.membership]}")
    cluster = sim.cluster
    for name in cluster.names:
        node = cluster.nodes[name].node
        if node is None:
            if name not in removed:
                failures.append(f"{name} is down at the end")
            continue
        state = node.cluster
        if state.ring.version != version or node.ring.owners != expected.owners:
            failures.append(f"{name} holds ring version {state.ring.version} "
                            f"{node.ring.owners}, expected version {version} {expected.owners}")
        for joiner in joiners:
            info = state.member(joiner.name)
            if info is None or info.status is not ms.Status.VALID:
                failures.append(f"{name} sees joiner {joiner.name} as "
                                f"{info.status.value if info else 'unknown'}")
        for leaver in (*leavers, *removed):
            info = state.member(leaver)
            if info is None or info.status is not ms.Status.REMOVED:
                failures.append(f"{name} sees leaver {leaver} as "
                                f"{info.status.value if info else 'unknown'}")
        if node.transfers or node._transfer_candidates:
            failures.append(f"{name} still has transfers: {node.transfers_status()} and "
                            f"{len(node._transfer_candidates)} pending")
        leftover = held_not_owned(sim, name, expected)
        if leftover:
            failures.append(f"{name} still holds keys of partitions it does not own "
                            f"(partition: keys) {leftover}")
    for joiner in joiners:
        owned = expected.partitions_of(joiner.name)
        if not owned:
            failures.append(f"joiner {joiner.name} owns no partition")
        if keys_held(sim, joiner.name, expected) == 0:
            failures.append(f"joiner {joiner.name} holds no key")
    for leaver in (*leavers, *removed):
        if expected.partitions_of(leaver):
            failures.append(f"leaver {leaver} still owns {expected.partitions_of(leaver)}")
    for leaver in leavers:
        if keys_held(sim, leaver, expected):
            failures.append(f"leaver {leaver} still holds "
                            f"{keys_held(sim, leaver, expected)} keys")
    senders = sorted({node for lost, _ in moves(cluster.ring, expected, sim.config.n_val).values()
                      for node in lost})
    for name in senders:
        if name not in removed and cluster.metrics([name])["transfers_done"] == 0:
            failures.append(f"{name} lost partitions but finished no transfer")
    return failures
