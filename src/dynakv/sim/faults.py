"""Fault mixes and the fault plans drawn from them.

A fault mix names what can go wrong in a run; `plan` draws, from the run's seed, a
timed list of FaultActions inside the fault window [start_ms, end_ms). At end_ms
every fault stops: partitions heal, crashed nodes restart, the network is clean
again. The checkers then judge the cluster once it had time to settle.

Mixes (the sweep cycles through SWEEP_MIXES):
- none:       a clean network (1-5 ms delay), no crash;
- lossy:      5% loss, 3% duplication, 20% reordering, 1-20 ms delay;
- partitions: symmetric splits, isolated nodes and one-way cuts that start and heal;
- crashes:    nodes crash (losing what was not synced) and restart; slow fsyncs;
- wipe:       crashes, one of which loses the disk (the node comes back empty, with
              a new server id); at most one wipe per run, so that every write
              acknowledged by W=2 distinct nodes keeps one durable copy;
- fallbacks:  hinted handoff under crashes: two primary owners of a hot key crash
              together (writes to it are then acknowledged through fallbacks, which
              keep hints), a third node (often a fallback holding hints) crashes
              while they are down, losing what it had not synced, and restarts; the
              owners come back (before or after it), and the hints are handed off;
- chaos:      all of the above at once.

Crashes in `crashes`, `wipe` and `chaos` are sometimes correlated too: two nodes of
one owner group (the primary owners of a hot key, which the runner passes in; any
two nodes without groups) go down together, so that writes need fallbacks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dynakv.sim.disk import DiskParams
from dynakv.sim.network import Link, NetworkParams

ActionKind = Literal["network", "cut", "restore", "slow", "crash", "wipe", "restart", "heal",
                     "add", "join", "leave", "remove", "commit"]
# Membership actions (scripted by scenarios, never drawn by a mix): "add" starts a new
# node `node` alone (a one-node cluster of its own, as `dynakv node` with no peers);
# "join" stages its join through the member `via` (`dynakv admin join`); "leave"
# stages the departure of `node` through `via`; "remove" stages the removal of `node`
# (a dead one) through `via` (`dynakv admin remove`); "commit" asks `via` for the plan and
# commits it (`dynakv admin plan` then `commit`), again until it is accepted.
MEMBERSHIP_KINDS = ("add", "join", "leave", "remove", "commit")


CLEAN = NetworkParams()
FAST_DISK = DiskParams()


@dataclass(frozen=True, slots=True)
class FaultMix:
    name: str
    description: str
    network: NetworkParams = CLEAN
    disk: DiskParams = FAST_DISK
    partitions: bool = False
    crashes: bool = False
    wipes_max: int = 0
    # Chance that a crash takes down two nodes of an owner group together.
    double_crash: float = 0.0
    # The fallbacks pattern: owners of a hot key down, a fallback crashes meanwhile.
    fallbacks: bool = False


LOSSY = NetworkParams(delay_min_ms=1, delay_max_ms=20, loss=0.05, duplicate=0.03, reorder=0.2)
SLOW_DISK = DiskParams(fsync_min_ms=1, fsync_max_ms=25)

MIXES: dict[str, FaultMix] = {
    mix.name: mix
    for mix in (
        FaultMix("none", "no faults"),
        FaultMix("lossy", "message loss, duplication, reordering", network=LOSSY),
        FaultMix("partitions", "symmetric and one-way partitions that start and heal",
                 partitions=True),
        FaultMix("crashes", "crashes and restarts, slow fsyncs", disk=SLOW_DISK, crashes=True,
                 double_crash=0.3),
        FaultMix("wipe", "crashes and restarts, one with a wiped disk", crashes=True,
                 wipes_max=1, double_crash=0.3),
        FaultMix("fallbacks", "two owners of a hot key down, a fallback holding hints "
                 "crashes and restarts, the owners return", disk=SLOW_DISK, fallbacks=True),
        FaultMix("chaos", "everything: loss, partitions, crashes, one wipe", network=LOSSY,
                 disk=SLOW_DISK, partitions=True, crashes=True, wipes_max=1, double_crash=0.3,
                 fallbacks=True),
    )
}
SWEEP_MIXES = ("none", "lossy", "partitions", "crashes", "wipe", "fallbacks", "chaos")


@dataclass(frozen=True, slots=True)
class FaultAction:
    time_ms: int
    kind: ActionKind
    node: str = ""
    links: tuple[Link, ...] = ()
    network: NetworkParams | None = None
    delay_ms: int = 0  # "slow": the links' extra delay (0 ends it)
    via: str = ""  # join, leave, remove, commit: the member the request is sent to
    weight: int = 1  # add: the new node's weight
    zone: str = ""  # add: the new node's zone
    # commit: the staged changes the plan must show before it is committed (an operator
    # reads `admin plan` first); fewer, and the plan is asked again, as after a refusal.
    staged: int = 1

    def describe(self) -> str:
        match self.kind:
            case "network":
                return f"{self.time_ms}ms network {self.network}"
            case "cut" | "restore":
                shown = ", ".join(f"{a}->{b}" for a, b in self.links)
                return f"{self.time_ms}ms {self.kind} {shown}"
            case "slow":
                shown = ", ".join(f"{a}->{b}" for a, b in self.links)
                return f"{self.time_ms}ms slow {shown} by +{self.delay_ms} ms"
            case "crash" | "wipe" | "restart":
                return f"{self.time_ms}ms {self.kind} {self.node}"
            case "heal":
                return f"{self.time_ms}ms heal: faults stop"
            case "add":
                zone = f" zone {self.zone}" if self.zone else ""
                return f"{self.time_ms}ms add {self.node} (weight {self.weight}{zone})"
            case "join" | "leave" | "remove":
                return f"{self.time_ms}ms {self.kind} {self.node} via {self.via}"
            case "commit":
                return f"{self.time_ms}ms plan and commit via {self.via}"


def get_mix(name: str) -> FaultMix:
    try:
        return MIXES[name]
    except KeyError:
        raise ValueError(f"unknown fault mix {name!r}; choose one of {', '.join(MIXES)}") from None


def split_links(side: Sequence[str], rest: Sequence[str], one_way: bool) -> tuple[Link, ...]:
    """The links a partition between `side` and `rest` cuts (side -> rest only if one_way)."""
    links = [(a, b) for a in side for b in rest]
    if not one_way:
        links += [(b, a) for a in side for b in rest]
    return tuple(sorted(links))


def _partition_shape(rng: random.Random, names: Sequence[str]) -> tuple[Link, ...]:
    roll = rng.random()
    if roll < 0.4:  # a minority cut off from the majority, both ways
        side = sorted(rng.sample(list(names), rng.randint(1, max(1, len(names) // 2))))
        return split_links(side, [n for n in names if n not in side], one_way=False)
    if roll < 0.7:  # one node isolated
        node = rng.choice(list(names))
        return split_links([node], [n for n in names if n != node], one_way=False)
    # one way: a group's messages to the others are lost, the others' still arrive
    side = sorted(rng.sample(list(names), rng.randint(1, max(1, len(names) // 2))))
    return split_links(side, [n for n in names if n not in side], one_way=True)


def _partition_plan(
    rng: random.Random, names: Sequence[str], start_ms: int, end_ms: int
) -> list[FaultAction]:
    actions: list[FaultAction] = []
    span = end_ms - start_ms
    time_ms = start_ms + rng.randint(0, span // 8)
    while time_ms < end_ms:
        links = _partition_shape(rng, names)
        heal_ms = min(end_ms, time_ms + rng.randint(100, max(100, span // 2)))
        actions.append(FaultAction(time_ms, "cut", links=links))
        actions.append(FaultAction(heal_ms, "restore", links=links))
        time_ms = heal_ms + rng.randint(20, max(20, span // 4))
    return actions


def _crash_plan(
    rng: random.Random, names: Sequence[str], start_ms: int, end_ms: int, wipes_max: int,
    double_crash: float, groups: Sequence[Sequence[str]],
) -> list[FaultAction]:
    actions: list[FaultAction] = []
    down_until = {name: 0 for name in names}
    wipes = 0
    span = end_ms - start_ms
    time_ms = start_ms + rng.randint(0, span // 8)
    while time_ms < end_ms:
        candidates = [name for name in names if down_until[name] <= time_ms]
        victims = _victims(rng, candidates, names, double_crash, groups)
        if victims:
            back_ms = min(end_ms, time_ms + rng.randint(20, max(20, span // 2)))
            for node in victims:
                wipe = wipes < wipes_max and rng.random() < 0.35
                wipes += wipe
                down_until[node] = back_ms + 1
                actions.append(FaultAction(time_ms, "wipe" if wipe else "crash", node=node))
                actions.append(FaultAction(back_ms, "restart", node=node))
        time_ms += rng.randint(50, max(50, span // 3))
    return actions


def _victims(
    rng: random.Random, candidates: Sequence[str], names: Sequence[str], double_crash: float,
    groups: Sequence[Sequence[str]],
) -> list[str]:
    """One node to crash, or (with chance `double_crash`) two of one owner group."""
    if not candidates:
        return []
    if double_crash and rng.random() < double_crash:
        pairs = _group_pairs(names, groups)
        up_pairs = [pair for pair in pairs if all(node in candidates for node in pair)]
        if up_pairs:
            return list(rng.choice(up_pairs))
    return [rng.choice(list(candidates))]


def _group_pairs(names: Sequence[str], groups: Sequence[Sequence[str]]
                 ) -> list[tuple[str, str]]:
    """Pairs of nodes that hold replicas of one key (every pair without groups)."""
    source = [sorted(group) for group in groups] or [sorted(names)]
    pairs = {(a, b) for group in source for a in group for b in group if a < b}
    return sorted(pairs)


def _fallback_plan(
    rng: random.Random, names: Sequence[str], start_ms: int, end_ms: int,
    groups: Sequence[Sequence[str]],
) -> list[FaultAction]:
    """Two owners of a key down together; meanwhile a third node (a fallback holding
    hints for them, or any other node) crashes and restarts; the owners return before
    or after it. One or two rounds in the window."""
    actions: list[FaultAction] = []
    span = end_ms - start_ms
    rounds = 1 if span < 1_500 or rng.random() < 0.5 else 2
    slot = span // rounds
    for round_index in range(rounds):
        begin = start_ms + round_index * slot
        owners = list(rng.choice(_group_pairs(names, groups)))
        others = [name for name in names if name not in owners]
        down_ms = begin + rng.randint(0, slot // 8)
        back_ms = down_ms + rng.randint(slot // 2, max(slot // 2, slot * 7 // 8))
        third = rng.choice(others)
        third_down = rng.randint(down_ms + slot // 8, max(down_ms + slot // 8,
                                                          down_ms + slot // 2))
        # The third node comes back before the owners, or just after them (it then
        # holds hints that wait for it while the owners are already up).
        third_back = min(end_ms, third_down + rng.randint(20, max(20, slot // 3)))
        if rng.random() < 0.3:
            third_back = min(end_ms, back_ms + rng.randint(20, 200))
        for node in owners:
            actions.append(FaultAction(down_ms, "crash", node=node))
            actions.append(FaultAction(min(end_ms, back_ms), "restart", node=node))
        actions.append(FaultAction(third_down, "crash", node=third))
        actions.append(FaultAction(third_back, "restart", node=third))
    return actions


def plan(
    mix: FaultMix, rng: random.Random, names: Sequence[str], start_ms: int, end_ms: int,
    groups: Sequence[Sequence[str]] = (),
) -> list[FaultAction]:
    """The fault plan of one run, in time order, ending with a heal at end_ms.

    `groups` are owner groups (the primary owners of the workload's hot keys): the
    correlated crashes and the fallbacks pattern take down two nodes of one group."""
    actions: list[FaultAction] = []
    if mix.network != CLEAN:
        actions.append(FaultAction(start_ms, "network", network=mix.network))
    partition_rng = random.Random(rng.getrandbits(64))
    crash_rng = random.Random(rng.getrandbits(64))
    fallback_rng = random.Random(rng.getrandbits(64))
    if mix.partitions:
        actions += _partition_plan(partition_rng, names, start_ms, end_ms)
    if mix.fallbacks and len(names) >= 4:
        if mix.crashes:  # chaos: the pattern in the first half, random crashes after
            middle = (start_ms + end_ms) // 2
            actions += _fallback_plan(fallback_rng, names, start_ms, middle, groups)
            actions += _crash_plan(crash_rng, names, middle, end_ms, mix.wipes_max,
                                   mix.double_crash, groups)
        else:
            actions += _fallback_plan(fallback_rng, names, start_ms, end_ms, groups)
    elif mix.crashes:
        actions += _crash_plan(crash_rng, names, start_ms, end_ms, mix.wipes_max,
                               mix.double_crash, groups)
    actions.append(FaultAction(end_ms, "heal"))
    order = {"network": 0, "cut": 1, "slow": 1, "crash": 1, "wipe": 1, "restore": 2,
             "restart": 2, "heal": 3}
    return sorted(actions, key=lambda action: (action.time_ms, order[action.kind]))
