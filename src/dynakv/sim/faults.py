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
- chaos:      all of the above at once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dynakv.sim.disk import DiskParams
from dynakv.sim.network import Link, NetworkParams

ActionKind = Literal["network", "cut", "restore", "crash", "wipe", "restart", "heal"]


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


LOSSY = NetworkParams(delay_min_ms=1, delay_max_ms=20, loss=0.05, duplicate=0.03, reorder=0.2)
SLOW_DISK = DiskParams(fsync_min_ms=1, fsync_max_ms=25)

MIXES: dict[str, FaultMix] = {
    mix.name: mix
    for mix in (
        FaultMix("none", "no faults"),
        FaultMix("lossy", "message loss, duplication, reordering", network=LOSSY),
        FaultMix("partitions", "symmetric and one-way partitions that start and heal",
                 partitions=True),
        FaultMix("crashes", "crashes and restarts, slow fsyncs", disk=SLOW_DISK, crashes=True),
        FaultMix("wipe", "crashes and restarts, one with a wiped disk", crashes=True,
                 wipes_max=1),
        FaultMix("chaos", "everything: loss, partitions, crashes, one wipe", network=LOSSY,
                 disk=SLOW_DISK, partitions=True, crashes=True, wipes_max=1),
    )
}
SWEEP_MIXES = ("none", "lossy", "partitions", "crashes", "wipe", "chaos")


@dataclass(frozen=True, slots=True)
class FaultAction:
    time_ms: int
    kind: ActionKind
    node: str = ""
    links: tuple[Link, ...] = ()
    network: NetworkParams | None = None

    def describe(self) -> str:
        match self.kind:
            case "network":
                return f"{self.time_ms}ms network {self.network}"
            case "cut" | "restore":
                shown = ", ".join(f"{a}->{b}" for a, b in self.links)
                return f"{self.time_ms}ms {self.kind} {shown}"
            case "crash" | "wipe" | "restart":
                return f"{self.time_ms}ms {self.kind} {self.node}"
            case "heal":
                return f"{self.time_ms}ms heal: faults stop"


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
    rng: random.Random, names: Sequence[str], start_ms: int, end_ms: int, wipes_max: int
) -> list[FaultAction]:
    actions: list[FaultAction] = []
    down_until = {name: 0 for name in names}
    wipes = 0
    span = end_ms - start_ms
    time_ms = start_ms + rng.randint(0, span // 8)
    while time_ms < end_ms:
        candidates = [name for name in names if down_until[name] <= time_ms]
        if candidates:
            node = rng.choice(candidates)
            wipe = wipes < wipes_max and rng.random() < 0.35
            wipes += wipe
            back_ms = min(end_ms, time_ms + rng.randint(20, max(20, span // 2)))
            down_until[node] = back_ms + 1
            actions.append(FaultAction(time_ms, "wipe" if wipe else "crash", node=node))
            actions.append(FaultAction(back_ms, "restart", node=node))
        time_ms += rng.randint(50, max(50, span // 3))
    return actions


def plan(
    mix: FaultMix, rng: random.Random, names: Sequence[str], start_ms: int, end_ms: int
) -> list[FaultAction]:
    """The fault plan of one run, in time order, ending with a heal at end_ms."""
    actions: list[FaultAction] = []
    if mix.network != CLEAN:
        actions.append(FaultAction(start_ms, "network", network=mix.network))
    partition_rng = random.Random(rng.getrandbits(64))
    crash_rng = random.Random(rng.getrandbits(64))
    if mix.partitions:
        actions += _partition_plan(partition_rng, names, start_ms, end_ms)
    if mix.crashes:
        actions += _crash_plan(crash_rng, names, start_ms, end_ms, mix.wipes_max)
    actions.append(FaultAction(end_ms, "heal"))
    order = {"network": 0, "cut": 1, "crash": 1, "wipe": 1, "restore": 2, "restart": 2, "heal": 3}
    return sorted(actions, key=lambda action: (action.time_ms, order[action.kind]))
