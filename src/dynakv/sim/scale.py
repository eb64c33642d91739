"""`python -m dynakv.sim.scale`: how the claim and membership gossip behave at 10, 100
and 1,000 nodes (docs/scale.md).

A membership-only simulation: the full simulator runs every node's whole core (stores,
anti-entropy, probes of every peer), too heavy for 1,000 nodes; this one runs the real
core pieces that scale with the cluster, in virtual time with a seeded RNG:
- the claim (core/claim.py) for rings of 2^14 to 2^16 partitions with mixed weights:
  balance of partitions and of keys per unit of weight, and the data moved by one join
  and one leave against the ideal share;
- gossip as core/node.py does it (core/membership.py's ClusterState, digest and merge):
  every gossip interval each node sends a GossipDigest to a random peer; a peer whose
  digest differs answers with its GossipState; a node that merges a state different
  from its own answers with the merge. Messages are the real core/messages.py classes
  encoded with core/codec.py to count bytes. It counts rounds until every node knows
  of a staged join, then of the committed ring;
- the failure detector's cost from its documented schedule (core/detector.py: a Ping
  to every peer each probe interval, answered by a Pong), with real encoded sizes.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dynakv.config import Config
from dynakv.core import codec
from dynakv.core import membership as ms
from dynakv.core import messages as m
from dynakv.core.claim import Member, claim, violations
from dynakv.core.ring import HASH_BITS, Ring, key_hash, primary_owners
from dynakv.sim.scheduler import Scheduler

WEIGHTS = (1, 1, 2, 4)  # mixed weights, drawn per node
DELIVERY_MS = 5  # one-way message latency in the gossip simulation


def ring_size_for(nodes: int) -> int:
    """2^14 for 10 nodes, 2^15 for 100, 2^16 for 1,000 (about 64+ partitions a node)."""
    return 1 << min(16, max(14, 13 + math.ceil(math.log10(max(nodes, 10)))))


@dataclass
class ClaimReport:
    nodes: int
    ring_size: int
    zones: int
    claim_seconds: float
    violations: int
    partitions_balance: float  # mean over max of partitions per unit of weight
    keys_balance: float  # mean over max of replica keys per unit of weight
    join_seconds: float
    join_partitions_moved: int
    join_partitions_ideal: int  # the joiner's quota: the least any claim could move
    join_data_moved: float  # fraction of replica data that changes holder
    join_data_ideal: float  # the joiner's weight share
    join_violations: int
    leave_seconds: float
    leave_partitions_moved: int
    leave_partitions_ideal: int
    leave_data_moved: float
    leave_data_ideal: float
    leave_violations: int


@dataclass
class GossipReport:
    nodes: int
    ring_size: int
    seed: int
    rounds_join_known: float  # gossip intervals until every node has the staged join
    rounds_ring_known: float  # ... until every node has the committed ring
    state_bytes: int  # one GossipState message, encoded
    digest_bytes: int  # one GossipDigest message, encoded
    steady_messages_per_node_s: float  # sent, when nothing changes
    steady_bytes_per_node_s: float
    change_messages_per_node: float  # sent per node to spread one join and its commit
    change_bytes_per_node: float
    detector_messages_per_node_s: float  # pings and pongs sent
    detector_bytes_per_node_s: float
    merge_ms: float  # CPU for one merge of two differing states
    digest_ms: float  # CPU for one digest


@dataclass
class Report:
    claims: list[ClaimReport] = field(default_factory=list)
    gossip: list[GossipReport] = field(default_factory=list)


def members_for(nodes: int, rng: random.Random, zones: int) -> list[Member]:
    return [Member(f"n{index:04d}", rng.choice(WEIGHTS), f"z{index % zones}" if zones > 1
                   else "") for index in range(nodes)]


def balance(values: dict[str, float], weights: dict[str, int]) -> float:
    per_weight = [values.get(name, 0) / weight for name, weight in weights.items()]
    return sum(per_weight) / len(per_weight) / max(per_weight)


def replicas(owners: Sequence[str], n_val: int) -> list[frozenset[str]]:
    ring = Ring(tuple(owners))
    return [frozenset(t.node for t in primary_owners(ring, p, n_val)) for p in range(ring.size)]


def keys_per_partition(hashes: Sequence[int], ring_size: int) -> list[int]:
    shift = HASH_BITS - (ring_size.bit_length() - 1)
    counts = [0] * ring_size
    for value in hashes:
        counts[value >> shift] += 1
    return counts


def data_moved(before: list[frozenset[str]], after: list[frozenset[str]], keys: list[int],
               n_val: int) -> float:
    """The fraction of replica data (keys x N) that lands on a node that lacked it."""
    moved = sum(len(new - old) * count for old, new, count in zip(before, after, keys,
                                                                   strict=True))
    return moved / (sum(keys) * n_val)


def measure_claim(nodes: int, seed: int, keys: int, zones: int = 1, n_val: int = 3,
                  ring_size: int | None = None) -> ClaimReport:
    rng = random.Random(seed)
    size = ring_size or ring_size_for(nodes)
    members = members_for(nodes, rng, zones)
    weights = {member.name: member.weight for member in members}
    hashes = [key_hash("default", "scale", f"key{index}") for index in range(keys)]
    per_partition = keys_per_partition(hashes, size)

    started = time.perf_counter()
    owners = claim(size, members, n_val)
    claim_seconds = time.perf_counter() - started
    holders = replicas(owners, n_val)
    replica_keys: Counter[str] = Counter()
    for group, count in zip(holders, per_partition, strict=True):
        for node in group:
            replica_keys[node] += count

    joiner = Member("joiner", 2, "z1" if zones > 1 else "")
    grown = [*members, joiner]
    started = time.perf_counter()
    joined = claim(size, grown, n_val, owners)
    join_seconds = time.perf_counter() - started
    leaver = members[nodes // 2]
    rest = [member for member in members if member is not leaver]
    started = time.perf_counter()
    left = claim(size, rest, n_val, owners)
    leave_seconds = time.perf_counter() - started
    total = sum(weights.values())

    def gains(before: Sequence[str], after: Sequence[str]) -> int:
        old, new = Counter(before), Counter(after)
        return sum(max(0, new[name] - old[name]) for name in new)

    return ClaimReport(
        nodes=nodes, ring_size=size, zones=zones, claim_seconds=round(claim_seconds, 3),
        violations=len(violations(owners, members, n_val)),
        partitions_balance=round(balance(dict(Counter(owners)), weights), 4),
        keys_balance=round(balance(dict(replica_keys), weights), 4),
        join_seconds=round(join_seconds, 3),
        join_partitions_moved=sum(a != b for a, b in zip(owners, joined, strict=True)),
        join_partitions_ideal=gains(owners, joined),
        join_data_moved=round(data_moved(holders, replicas(joined, n_val), per_partition,
                                         n_val), 5),
        join_data_ideal=round(joiner.weight / (total + joiner.weight), 5),
        join_violations=len(violations(joined, grown, n_val)),
        leave_seconds=round(leave_seconds, 3),
        leave_partitions_moved=sum(a != b for a, b in zip(owners, left, strict=True)),
        leave_partitions_ideal=gains(owners, left),
        leave_data_moved=round(data_moved(holders, replicas(left, n_val), per_partition,
                                          n_val), 5),
        leave_data_ideal=round(leaver.weight / total, 5),
        leave_violations=len(violations(left, rest, n_val)),
    )


class GossipSim:
    """Every node's ClusterState, gossiped as core/node.py does, in virtual time."""

    def __init__(self, state: ms.ClusterState, rng: random.Random, interval_ms: int) -> None:
        self.names = [info.name for info in state.members]
        self.states = dict.fromkeys(self.names, state)
        self.rng = rng
        self.interval_ms = interval_ms
        self.scheduler = Scheduler()
        self.messages = 0
        self.bytes = 0
        self._digests: dict[int, tuple[ms.ClusterState, str]] = {}
        self._sizes: dict[str, int] = {}
        self.merge_seconds: list[float] = []
        for name in self.names:  # each node's timer starts at its own phase
            self.scheduler.at(rng.randrange(interval_ms), functools.partial(self._tick, name))

    def digest(self, state: ms.ClusterState) -> str:
        cached = self._digests.get(id(state))
        if cached is None or cached[0] is not state:
            cached = (state, ms.digest(state))
            self._digests[id(state)] = cached
        return cached[1]

    def _send(self, message: m.GossipDigest | m.GossipState, action: object) -> None:
        self.messages += 1
        if isinstance(message, m.GossipState):
            key = self.digest(message.state)
            if key not in self._sizes:
                self._sizes[key] = len(codec.encode(message))
            self.bytes += self._sizes[key]
        else:
            self.bytes += len(codec.encode(message))
        self.scheduler.after(DELIVERY_MS, action)  # type: ignore[arg-type]

    def _tick(self, name: str) -> None:
        self.scheduler.after(self.interval_ms, lambda: self._tick(name))
        peer = self.rng.choice(self.names)
        while peer == name:
            peer = self.rng.choice(self.names)
        mine = self.digest(self.states[name])
        self._send(m.GossipDigest(mine), lambda: self._on_digest(peer, name, mine))

    def _on_digest(self, name: str, sender: str, digest: str) -> None:
        if digest != self.digest(self.states[name]):
            state = self.states[name]
            self._send(m.GossipState(state), lambda: self._on_state(sender, name, state))

    def _on_state(self, name: str, sender: str, state: ms.ClusterState) -> None:
        mine = self.states[name]
        started = time.perf_counter()
        merged = ms.merge(mine, state)
        self.merge_seconds.append(time.perf_counter() - started)
        if merged != mine:
            self.states[name] = merged
        if self.digest(merged) != self.digest(state):
            self._send(m.GossipState(merged), lambda: self._on_state(sender, name, merged))

    def run_until_all(self, done: object, limit_rounds: int = 200) -> float:
        """Virtual time (in gossip intervals) until `done(state)` holds at every node."""
        started = self.scheduler.now_ms
        step = self.interval_ms // 10
        while not all(done(state) for state in self.states.values()):  # type: ignore[operator]
            if self.scheduler.now_ms - started > limit_rounds * self.interval_ms:
                raise RuntimeError(f"gossip did not converge in {limit_rounds} rounds")
            self.scheduler.run_until(self.scheduler.now_ms + step)
        return (self.scheduler.now_ms - started) / self.interval_ms


def measure_gossip(nodes: int, seed: int, ring_size: int | None = None,
                   config: Config | None = None) -> GossipReport:
    config = config or Config()
    rng = random.Random(seed)
    size = ring_size or ring_size_for(nodes)
    members = members_for(nodes, rng, 1)
    infos = [ms.MemberInfo(member.name, f"10.0.0.{index}:8100", member.weight)
             for index, member in enumerate(members)]
    owners = claim(size, members, config.n_val)
    base = ms.bootstrap(config.cluster_name, infos, owners, config.n_val)
    sim = GossipSim(base, rng, config.gossip_interval_ms)

    # Steady state: digests only.
    sim.scheduler.run_until(config.gossip_interval_ms * 5)
    steady_messages, steady_bytes = sim.messages, sim.bytes
    steady_seconds = sim.scheduler.now_ms / 1000

    # A join staged at one node spreads; then the claimant commits and the ring spreads.
    joiner = ms.MemberInfo("joiner", "10.0.1.1:8100", 2)
    seed_node = rng.choice(sim.names)
    sim.messages = sim.bytes = 0
    sim.states[seed_node] = ms.stage_join(sim.states[seed_node], joiner)
    rounds_join = sim.run_until_all(lambda s: s.member("joiner") is not None)
    leader = ms.claimant(base)
    plan = ms.plan(sim.states[leader])
    sim.states[leader] = ms.commit(sim.states[leader], plan, leader)
    version = sim.states[leader].ring.version
    rounds_ring = sim.run_until_all(lambda s: s.ring.version == version)
    change_messages, change_bytes = sim.messages, sim.bytes

    state = sim.states[leader]
    started = time.perf_counter()
    for _ in range(3):
        ms.digest(state)
    digest_ms = (time.perf_counter() - started) / 3 * 1000
    ping = len(codec.encode(m.Ping(1)))
    pong = len(codec.encode(m.Pong(1)))
    per_second = 1000 / config.probe_interval_ms
    peers = nodes - 1
    merges = sim.merge_seconds or [0.0]
    return GossipReport(
        nodes=nodes, ring_size=size, seed=seed,
        rounds_join_known=rounds_join, rounds_ring_known=rounds_ring,
        state_bytes=len(codec.encode(m.GossipState(state))),
        digest_bytes=len(codec.encode(m.GossipDigest(ms.digest(state)))),
        steady_messages_per_node_s=round(steady_messages / nodes / steady_seconds, 3),
        steady_bytes_per_node_s=round(steady_bytes / nodes / steady_seconds, 1),
        change_messages_per_node=round(change_messages / nodes, 2),
        change_bytes_per_node=round(change_bytes / nodes, 1),
        detector_messages_per_node_s=round(peers * per_second * 2, 1),
        detector_bytes_per_node_s=round(peers * per_second * (ping + pong), 1),
        merge_ms=round(sum(merges) / len(merges) * 1000, 3),
        digest_ms=round(digest_ms, 3),
    )


def plot(report: Report, out: Path) -> list[Path]:
    """PNG plots of a report beside docs/scale.md (needs matplotlib: the dev extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    claims = [c for c in report.claims if c.zones == 1]
    sizes = [c.nodes for c in claims]
    written = []

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(sizes, [c.partitions_balance for c in claims], "o-", label="partitions / weight")
    axis.plot(sizes, [c.keys_balance for c in claims], "s-", label="replica keys / weight")
    axis.set(xscale="log", ylim=(0, 1.05), xlabel="nodes", ylabel="mean / max",
             title="Load balance per unit of weight (mixed weights 1,1,2,4)")
    axis.legend()
    written.append(_save(figure, out / "balance.png"))

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(sizes, [c.join_data_moved for c in claims], "o-", label="join: data moved")
    axis.plot(sizes, [c.join_data_ideal for c in claims], "k:", label="join: ideal (its share)")
    axis.plot(sizes, [c.leave_data_moved for c in claims], "s-", label="leave: data moved")
    axis.plot(sizes, [c.leave_data_ideal for c in claims], "k--", label="leave: ideal")
    axis.plot(sizes, [1 / n for n in sizes], color="grey", alpha=0.5, label="1/n")
    axis.set(xscale="log", yscale="log", xlabel="nodes", ylabel="fraction of replica data",
             title="Data moved by one join and one leave")
    axis.legend()
    written.append(_save(figure, out / "movement.png"))

    by_size: dict[int, list[GossipReport]] = {}
    for g in report.gossip:
        by_size.setdefault(g.nodes, []).append(g)
    gossip_sizes = sorted(by_size)
    figure, axis = plt.subplots(figsize=(6, 4))
    for attribute, label, marker in (("rounds_join_known", "staged join known", "o"),
                                     ("rounds_ring_known", "committed ring known", "s")):
        means = [sum(getattr(g, attribute) for g in by_size[n]) / len(by_size[n])
                 for n in gossip_sizes]
        worst = [max(getattr(g, attribute) for g in by_size[n]) for n in gossip_sizes]
        axis.plot(gossip_sizes, means, marker + "-", label=f"{label} (mean)")
        axis.plot(gossip_sizes, worst, marker + ":", label=f"{label} (max)")
    axis.plot(gossip_sizes, [math.log2(n) for n in gossip_sizes], "k--", label="log2 n")
    axis.set(xscale="log", xlabel="nodes", ylabel="gossip rounds (1 s each)",
             title="Gossip rounds until every node knows")
    axis.legend()
    written.append(_save(figure, out / "gossip-rounds.png"))

    figure, axis = plt.subplots(figsize=(6, 4))
    first = [by_size[n][0] for n in gossip_sizes]
    axis.plot(gossip_sizes, [g.steady_bytes_per_node_s for g in first], "o-",
              label="gossip, steady (digests)")
    axis.plot(gossip_sizes, [g.change_bytes_per_node / max(g.rounds_ring_known +
                                                           g.rounds_join_known, 1)
                             for g in first], "s-", label="gossip, while a join spreads")
    axis.plot(gossip_sizes, [g.detector_bytes_per_node_s for g in first], "^-",
              label="failure detector (ping every peer)")
    axis.set(xscale="log", yscale="log", xlabel="nodes", ylabel="bytes sent per node per s",
             title="What membership costs a node")
    axis.legend()
    written.append(_save(figure, out / "membership-cost.png"))
    return written


def _save(figure: object, path: Path) -> Path:
    figure.tight_layout()  # type: ignore[attr-defined]
    figure.savefig(path, dpi=100)  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    plt.close(figure)  # type: ignore[arg-type]
    return path


def run(sizes: Sequence[int], seed: int, keys_per_node: int, gossip_seeds: int,
        zones: Sequence[int], progress: bool = True) -> Report:
    report = Report()
    for nodes in sizes:
        for zone_count in zones:
            if progress:
                print(f"claim: {nodes} nodes, {ring_size_for(nodes)} partitions, "
                      f"{zone_count} zone(s) ...", file=sys.stderr, flush=True)
            report.claims.append(measure_claim(nodes, seed, keys_per_node * nodes, zone_count))
        for index in range(gossip_seeds):
            if progress:
                print(f"gossip: {nodes} nodes, seed {seed + index} ...", file=sys.stderr,
                      flush=True)
            report.gossip.append(measure_gossip(nodes, seed + index))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dynakv.sim.scale", description=__doc__.split(
        "\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keys-per-node", type=int, default=1000,
                   help="keys hashed per node, for the key balance (default 1000)")
    p.add_argument("--gossip-seeds", type=int, default=3, help="gossip runs per size")
    p.add_argument("--zones", type=int, nargs="+", default=[1, 3],
                   help="zone counts to claim with (1: no zones)")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    args = p.parse_args(argv)
    if any(n < 2 for n in args.nodes) or args.keys_per_node < 1 or args.gossip_seeds < 1:
        p.error("--nodes must be 2 or more; --keys-per-node and --gossip-seeds positive")
    report = run(args.nodes, args.seed, args.keys_per_node, args.gossip_seeds, args.zones)
    data = asdict(report)
    text = json.dumps(data, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    else:
        print(text)
    if args.plots:
        for path in plot(report, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
