"""Cluster membership as gossiped state: members, the ring, and staged changes.

Dynamo's membership is eventually consistent: every node keeps its own copy of the
cluster state and gossips it with a random peer every second; any two copies merge
deterministically, so all nodes converge on one state once gossip has spread.

State (a join-semilattice: `merge` is commutative, associative and idempotent):
- members: per node a MemberInfo (status, weight, zone, address), each record with a
  version; the higher version wins, ties broken by a total order of the records;
- the ring: the partition owners with a version; only the claimant makes a new
  ring, and only from a plan computed against the current ring version, so commits
  made through two nodes can never produce two rings of one version (a stale plan is
  refused: plan again);
- the claimant: a role, not a special node: the first member by name among the
  valid ones, which every node computes alike from the same state.

Staging, as Riak's `cluster join / leave / plan / commit`: a join or leave marks the
member JOINING or LEAVING; `plan` shows the claim that would follow (the partitions
that move); `commit` has the claimant apply it: a new ring version, joiners VALID,
leavers EXITING (they own nothing, stay members and hand their data off; each marks
itself REMOVED once its handoff is done), members staged for removal (`admin remove`
of a dead node: REMOVING) REMOVED at once, without handoff. Which of the two a member
gets is the operator's choice when staging, never the claimant's view of it at the
commit: a live leaver that a claimant happens to suspect for a moment still hands off.

Clusters have an id drawn at their founding: a node started alone founds its own
cluster, and takes another cluster's state only when that cluster staged it as a
joiner (node.py); nodes started together with the same `--peer` list compute the
same bootstrap state. After a commit, moved partitions stream to their new owners
(core/handoff.py); the ring keeps the previous owners, and each member records the
ring version whose handoff it finished, so that reads can still ask a previous
owner until it is done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from dynakv.core.claim import Member, claim


class Status(Enum):
    JOINING = "joining"
    VALID = "valid"
    LEAVING = "leaving"  # staged to leave (graceful: hands its data off)
    REMOVING = "removing"  # staged for removal (a dead node: no handoff)
    EXITING = "exiting"  # left the ring (committed), still handing its data off
    REMOVED = "removed"


# In a version tie, the record with the later status in this order wins.
_STATUS_RANK = {Status.JOINING: 0, Status.VALID: 1, Status.LEAVING: 2, Status.REMOVING: 3,
                Status.EXITING: 4, Status.REMOVED: 5}
# Staged changes: what a plan and a commit apply.
STAGED = (Status.JOINING, Status.LEAVING, Status.REMOVING)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    name: str
    address: str  # internode host:port
    weight: int = 1
    zone: str = ""
    status: Status = Status.JOINING
    version: int = 1
    # The ring version whose ownership handoff this member has finished: it holds no
    # partition it does not own under that ring (see core/handoff.py).
    handoff_version: int = 0

    def order(self) -> tuple[int, int, str, int, str, int]:
        """A total order for merging: version, then status, then the other fields."""
        return (self.version, _STATUS_RANK[self.status], self.address, self.weight, self.zone,
                self.handoff_version)


@dataclass(frozen=True, slots=True)
class RingInfo:
    version: int
    owners: tuple[str, ...]
    claimant: str = ""  # the member that made it
    previous: tuple[str, ...] = ()  # the owners of the version before, while they hand off

    def order(self) -> tuple[int, str, str]:
        return (self.version, self.claimant, _digest_owners(self.owners))


@dataclass(frozen=True, slots=True)
class ClusterState:
    cluster_name: str
    cluster_id: str  # drawn when the cluster is founded: states of two clusters never merge
    n_val: int
    members: tuple[MemberInfo, ...]  # sorted by name
    ring: RingInfo

    def member(self, name: str) -> MemberInfo | None:
        for info in self.members:
            if info.name == name:
                return info
        return None

    def active(self) -> list[MemberInfo]:
        """Members that take part in the cluster (not removed)."""
        return [m for m in self.members if m.status is not Status.REMOVED]


def _digest_owners(owners: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(owners).encode()).hexdigest()


def digest(state: ClusterState) -> str:
    """Equal states have equal digests: gossip sends the state only when they differ."""
    text = repr((state.cluster_name, state.cluster_id, state.n_val, state.members,
                 state.ring.order()))
    return hashlib.sha1(text.encode()).hexdigest()


def new_cluster(cluster_name: str, cluster_id: str, founder: MemberInfo, ring_size: int,
                n_val: int) -> ClusterState:
    """A one-member cluster: the founder owns every partition."""
    valid = replace(founder, status=Status.VALID)
    owners = claim(ring_size, [Member(valid.name, valid.weight, valid.zone)], n_val)
    return ClusterState(cluster_name, cluster_id, n_val, (valid,),
                        RingInfo(1, owners, valid.name))


def bootstrap(cluster_name: str, members: Sequence[MemberInfo], owners: Sequence[str],
              n_val: int) -> ClusterState:
    """The state of a cluster whose first members were all started with the same member
    list (`dynakv node --peer ...`): every one of them computes the same state."""
    valid = tuple(sorted((replace(m, status=Status.VALID, version=1) for m in members),
                         key=lambda m: m.name))
    lineage = hashlib.sha1(repr((cluster_name, [(m.name, m.weight, m.zone) for m in valid],
                                 tuple(owners))).encode()).hexdigest()[:16]
    return ClusterState(cluster_name, lineage, n_val, valid,
                        RingInfo(1, tuple(owners), valid[0].name))


def merge(a: ClusterState, b: ClusterState) -> ClusterState:
    """The least state that includes both: per member the greater record, the greater ring."""
    if (a.cluster_name, a.cluster_id) != (b.cluster_name, b.cluster_id):
        raise ValueError(f"cannot merge states of two clusters ({a.cluster_name!r} "
                         f"{a.cluster_id} and {b.cluster_name!r} {b.cluster_id})")
    by_name: dict[str, MemberInfo] = {}
    for info in (*a.members, *b.members):
        known = by_name.get(info.name)
        if known is None or info.order() > known.order():
            by_name[info.name] = info
    members = tuple(by_name[name] for name in sorted(by_name))
    ring = a.ring if a.ring.order() >= b.ring.order() else b.ring
    return ClusterState(a.cluster_name, a.cluster_id, max(a.n_val, b.n_val), members, ring)


def merge_all(states: Iterable[ClusterState]) -> ClusterState:
    result: ClusterState | None = None
    for state in states:
        result = state if result is None else merge(result, state)
    if result is None:
        raise ValueError("no state to merge")
    return result


def claimant(state: ClusterState) -> str:
    """The member that applies committed plans: the first valid member by name."""
    valid = [m.name for m in state.members if m.status is Status.VALID]
    if not valid:
        raise ValueError("the cluster has no valid member")
    return valid[0]


def _bump(info: MemberInfo, **changes: object) -> MemberInfo:
    return replace(info, version=info.version + 1, **changes)  # type: ignore[arg-type]


def _with_member(state: ClusterState, info: MemberInfo) -> ClusterState:
    others = [m for m in state.members if m.name != info.name]
    members = tuple(sorted([*others, info], key=lambda m: m.name))
    return replace(state, members=members)


def stage_join(state: ClusterState, joiner: MemberInfo) -> ClusterState:
    """Stage `joiner` (it owns nothing until a plan with it is committed)."""
    known = state.member(joiner.name)
    version = known.version + 1 if known is not None else joiner.version
    return _with_member(state, replace(joiner, status=Status.JOINING, version=version))


def _stage_departure(state: ClusterState, name: str, status: Status,
                     refused: tuple[Status, ...]) -> ClusterState:
    """Stage `name`'s departure as `status`, unless it is not a member or is in
    `refused` already."""
    info = state.member(name)
    if info is None or info.status is Status.REMOVED:
        raise ValueError(f"{name} is not a member")
    if info.status in refused:
        raise ValueError(f"{name} is {info.status.value} already")
    return _with_member(state, _bump(info, status=status))


def stage_leave(state: ClusterState, name: str) -> ClusterState:
    """Stage the graceful departure of a member: at the commit it leaves the ring and
    hands its data off to the new owners (EXITING), then marks itself REMOVED."""
    return _stage_departure(state, name, Status.LEAVING, (Status.EXITING, Status.REMOVING))


def stage_remove(state: ClusterState, name: str) -> ClusterState:
    """Stage the removal of a member that is gone for good (a dead node): at the commit
    it is REMOVED at once, without handing anything off; its replicas are rebuilt from
    the others' copies. Also for a leaver that died while exiting."""
    return _stage_departure(state, name, Status.REMOVING, (Status.REMOVING,))


@dataclass(frozen=True, slots=True)
class Plan:
    """The claim that committing would apply, against ring version `base_version`."""

    base_version: int
    owners: tuple[str, ...]
    moves: tuple[tuple[int, str, str], ...]  # (partition, from, to)


def plan(state: ClusterState) -> Plan:
    """The new ownership for the staged changes: joiners in, leavers out, as few moves
    as the claim allows."""
    members = [Member(m.name, m.weight, m.zone) for m in state.members
               if m.status in (Status.VALID, Status.JOINING)]
    if not members:
        raise ValueError("a plan needs at least one member that stays")
    owners = claim(len(state.ring.owners), members, state.n_val, state.ring.owners)
    moves = tuple((p, old, new) for p, (old, new) in enumerate(zip(state.ring.owners, owners,
                                                                    strict=True)) if old != new)
    return Plan(state.ring.version, owners, moves)


class StalePlan(Exception):
    """A commit of a plan computed against an older ring: plan again."""


def commit(state: ClusterState, committed: Plan, actor: str) -> ClusterState:
    """The claimant applies a plan: joiners become valid, leavers exiting, members staged
    for removal removed; a new ring version if the owners change. Refused unless `actor`
    is the claimant and the plan is current."""
    if actor != claimant(state):
        raise ValueError(f"only the claimant ({claimant(state)}) commits plans")
    if committed.base_version != state.ring.version:
        raise StalePlan(f"the plan was made against ring version {committed.base_version}; "
                        f"the ring is at version {state.ring.version}")
    members = []
    for info in state.members:
        if info.status is Status.JOINING:
            info = _bump(info, status=Status.VALID)
        elif info.status is Status.LEAVING:
            info = _bump(info, status=Status.EXITING)
        elif info.status is Status.REMOVING:
            info = _bump(info, status=Status.REMOVED)
        members.append(info)
    if committed.owners == state.ring.owners:
        # Only a removal of a member that owned nothing (an exiting leaver that died):
        # nothing moves, so no new ring, and no handoff to wait for.
        return replace(state, members=tuple(members))
    ring = RingInfo(state.ring.version + 1, committed.owners, actor, state.ring.owners)
    return replace(state, members=tuple(members), ring=ring)


def handoff_done(state: ClusterState, name: str) -> ClusterState:
    """`name` has handed off every partition it no longer owns under the current ring;
    an exiting member is then removed."""
    info = state.member(name)
    if info is None or (info.handoff_version >= state.ring.version
                        and info.status is not Status.EXITING):
        return state
    status = Status.REMOVED if info.status is Status.EXITING else info.status
    return _with_member(state, _bump(info, handoff_version=state.ring.version, status=status))


def handing_off(state: ClusterState) -> set[str]:
    """Members that may still hold partitions they owned under the previous ring."""
    if not state.ring.previous:
        return set()
    return {m.name for m in state.members if m.handoff_version < state.ring.version}
