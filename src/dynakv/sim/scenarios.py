"""Named scenarios from the Dynamo paper and Jepsen's Riak analysis.

Each scenario scripts its faults and its clients instead of drawing them from a
fault mix, runs under every checker, and adds checks of its own (that the
scenario really happened: writes acknowledged on both sides of the partition, a
crash that hit between the local write and replication, and so on). The seed
still drives delays, client choices and node randomness:

    python -m dynakv.sim --scenario minority-partition --seed 3

- minority-partition: five nodes split 2 | 3 for a while; clients on both sides
  keep writing the same keys (the minority takes writes through fallback nodes,
  and one of its clients writes with W=1). After the heal, every write
  acknowledged on either side must be in the union of the replicas or superseded
  by a write that had seen it (Jepsen lost most of them under last-write-wins).
- coordinator-crash: the coordinator of a key crashes twice: once right after its
  local write became durable but before anything was sent (no replica has it, the
  client is never answered), once before the write reached its disk (it is lost,
  and nobody ever saw its dot). Both writes are indeterminate; no acknowledged
  write may be lost, and after the restart the node must never reuse a dot.
- stale-contexts: clients write one key again and again, each with the context of
  its own previous write, never reading (the DVVSet paper's interleaved writers).
  Dotted version vectors keep only the truly concurrent writes as siblings: at
  most one per client, where per-server version vectors kept them all.
- fallback-rewrite (Dynamo's hinted handoff): a key's three owners crash; its
  first fallback coordinates two writes; the owners come back and take the hints,
  and the fallbacks drop their copies; the owners crash again and the fallback
  coordinates a third write. All three are acknowledged and must survive.
  Regression: the fallback used to count its dots afresh and reuse one (fixed by
  actor epochs, Node._actor).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from dynakv.core import api, dvvset
from dynakv.core import messages as m
from dynakv.core.ring import key_bytes, primary_owners
from dynakv.core.storage import Write
from dynakv.sim.cluster import make_ring
from dynakv.sim.faults import FaultAction, split_links
from dynakv.sim.runner import SIM_CONFIG, SimOptions, SimResult, Simulation, node_names
from dynakv.sim.workload import BUCKET_TYPE, ClientSpec, Key, WorkloadParams

# A scenario's own checks, run after the checkers: a list of failures.
Verify = Callable[[SimResult], list[str]]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    build: Callable[[SimOptions], tuple[Simulation, Verify]]
    # A bug in core/ that makes this scenario fail today (the tests expect it to
    # fail, strictly, until the core is fixed); empty when it passes.
    known_core_bug: str = ""


def _acked_puts_between(sim: Simulation, nodes: Sequence[str], start_ms: int,
                        end_ms: int) -> int:
    return sum(
        1 for op in sim.workload.history
        if op.kind == "put" and op.acked and op.node in nodes and start_ms <= op.start_ms
        and op.end_ms <= end_ms
    )


# --- minority partition ---------------------------------------------------------------

MINORITY = ("n0", "n1")
MAJORITY = ("n2", "n3", "n4")
SPLIT_MS, HEAL_MS = 500, 3_000


def _build_minority(options: SimOptions) -> tuple[Simulation, Verify]:
    keys: tuple[Key, ...] = (("b0", "k0"), ("b0", "k1"), ("b0", "k2"))
    clients = (
        ClientSpec("rmw", nodes=MINORITY, keys=keys),
        ClientSpec("blind", nodes=MINORITY, keys=keys, w=1),
        ClientSpec("rmw", nodes=MAJORITY, keys=keys),
        ClientSpec("blind", nodes=MAJORITY, keys=keys),
        ClientSpec("deleter", nodes=MAJORITY, keys=keys),
    )
    links = split_links(MINORITY, MAJORITY, one_way=False)
    actions = [
        FaultAction(SPLIT_MS, "cut", links=links),
        FaultAction(HEAL_MS, "restore", links=links),
        FaultAction(HEAL_MS, "heal"),
    ]
    workload = WorkloadParams(clients=clients, buckets=("b0",), keys_per_bucket=3,
                              end_ms=options.duration_ms)
    sim = Simulation(options, workload=workload, actions=actions)
    return sim, lambda result: _verify_minority(sim)


def _verify_minority(sim: Simulation) -> list[str]:
    failures = []
    # Count writes acknowledged while the partition was up (after detection).
    window = (SPLIT_MS + 2 * sim.config.reconnect_interval_ms, HEAL_MS)
    minority = _acked_puts_between(sim, MINORITY, *window)
    majority = _acked_puts_between(sim, MAJORITY, *window)
    if minority == 0:
        failures.append("the minority side acknowledged no write during the partition")
    if majority == 0:
        failures.append("the majority side acknowledged no write during the partition")
    return failures


# --- coordinator crash ----------------------------------------------------------------

COORDINATOR = "n0"
CRASH_AFTER_MS, CRASH_BEFORE_MS = 800, 2_000
DOWNTIME_MS = 400


@dataclass(slots=True)
class _CrashRecord:
    """What the crash hooks saw: the value each crash left in doubt."""

    after_value: bytes = b""
    before_value: bytes = b""
    after_ms: int = -1
    before_ms: int = -1


def _local_write(sim: Simulation, key: Key, writes: Sequence[Write]) -> bytes:
    """The value of a write to `key` that this node coordinated in `writes`, or b""."""
    sim_node = sim.cluster.nodes[COORDINATOR]
    partition = sim.cluster.partition_of(BUCKET_TYPE, *key)
    raw_key = key_bytes(BUCKET_TYPE, *key)
    durable = sim_node.disk.get(partition, raw_key)
    old = dict(dvvset.join(m.decode_object(durable))) if durable is not None else {}
    for write in writes:
        if (write.partition, write.key) == (partition, raw_key) and write.value is not None:
            obj = m.decode_object(write.value)
            for entry in obj.entries:
                if entry.server_id == sim_node.server_id and entry.counter > old.get(
                        entry.server_id, 0) and entry.values:
                    content: api.Content = entry.values[0]
                    return content.value
    return b""


def _coordinator_key(options: SimOptions) -> Key:
    """A key whose first primary owner is the coordinator."""
    names = node_names(options.nodes)
    ring = make_ring(names, SIM_CONFIG)
    for index in range(1_000):
        key = ("b0", f"k{index}")
        partition = ring.partition_of(BUCKET_TYPE, *key)
        if primary_owners(ring, partition, SIM_CONFIG.n_val)[0].node == COORDINATOR:
            return key
    raise AssertionError("no key is owned first by the coordinator")


def _build_coordinator_crash(options: SimOptions) -> tuple[Simulation, Verify]:
    key = _coordinator_key(options)
    clients = (
        ClientSpec("blind", nodes=(COORDINATOR,), keys=(key,)),
        ClientSpec("blind", nodes=(COORDINATOR,), keys=(key,)),
        ClientSpec("rmw", nodes=("n1", "n2"), keys=(key,)),
        ClientSpec("rmw", nodes=("n3", "n4"), keys=(key,)),
    )
    workload = WorkloadParams(clients=clients, buckets=("b0",), end_ms=options.duration_ms)
    sim = Simulation(options, workload=workload, actions=[FaultAction(3_000, "heal")])
    record = _CrashRecord()

    def arm(when: Literal["before", "after"]) -> None:
        def hook(writes: Sequence[Write]) -> Literal["before", "after"] | None:
            value = _local_write(sim, key, writes)
            if not value:
                return None
            if when == "after":
                record.after_value, record.after_ms = value, sim.scheduler.now_ms
            else:
                record.before_value, record.before_ms = value, sim.scheduler.now_ms
            sim.scheduler.after(DOWNTIME_MS, lambda: sim.cluster.restart(COORDINATOR))
            return when

        sim.cluster.nodes[COORDINATOR].sync_hook = hook

    sim.scheduler.at(CRASH_AFTER_MS, lambda: arm("after"))
    sim.scheduler.at(CRASH_BEFORE_MS, lambda: arm("before"))
    return sim, lambda result: _verify_coordinator_crash(sim, record)


def _verify_coordinator_crash(sim: Simulation, record: _CrashRecord) -> list[str]:
    failures = []
    history = {op.value: op for op in sim.workload.history if op.kind == "put"}
    for what, value in (("after", record.after_value), ("before", record.before_value)):
        if not value:
            failures.append(f"the crash {what} the local write never happened")
            continue
        op = history[value]
        if op.acked:
            failures.append(f"{op.describe()} was acknowledged though its coordinator crashed")
    if record.before_value and record.before_value in sim.observations.dots:
        failures.append("the write lost before its sync became durable somewhere")
    if record.after_value and record.after_value not in sim.observations.dots:
        failures.append("the write synced before the crash was not durable")
    return failures


# --- stale contexts -------------------------------------------------------------------

STALE_WRITERS = 3


def _build_stale_contexts(options: SimOptions) -> tuple[Simulation, Verify]:
    key: Key = ("b0", "stale")
    # Each writer writes back with the context of its own last put (returnbody: a put
    # without it answers no context), which goes stale as the others write.
    clients = tuple(ClientSpec("chain", keys=(key,), return_body=True)
                    for _ in range(STALE_WRITERS))
    workload = WorkloadParams(clients=clients, buckets=("b0",), think_max_ms=10,
                              end_ms=options.duration_ms)
    sim = Simulation(options, workload=workload, actions=[FaultAction(300, "heal")])
    return sim, lambda result: _verify_stale_contexts(sim)


def _verify_stale_contexts(sim: Simulation) -> list[str]:
    failures = []
    key: Key = ("b0", "stale")
    acked = sum(1 for op in sim.workload.history if op.acked)
    if acked < 10 * STALE_WRITERS:
        failures.append(f"only {acked} writes were acknowledged")
    union = sim.final_state().union(key)
    live = [c for c in dvvset.values(union) if not c.deleted]
    if not 1 <= len(live) <= STALE_WRITERS:
        failures.append(
            f"{len(live)} siblings left by {STALE_WRITERS} stale-context writers "
            f"(expected 1 to {STALE_WRITERS})")
    return failures


# --- fallback rewrite (hinted handoff) ------------------------------------------------

FALLBACK_KEY: Key = ("b0", "k0")
FALLBACK_WRITES = ((300, b"first"), (500, b"second"), (2_700, b"third"))


def _owners_and_fallbacks(options: SimOptions, key: Key) -> tuple[list[str], list[str]]:
    names = node_names(options.nodes)
    ring = make_ring(names, SIM_CONFIG)
    partition = ring.partition_of(BUCKET_TYPE, *key)
    owners = [t.node for t in primary_owners(ring, partition, SIM_CONFIG.n_val)]
    walk = [t.node for t in primary_owners(ring, partition, len(names))]
    return owners, [name for name in walk if name not in owners]


def _build_fallback_rewrite(options: SimOptions) -> tuple[Simulation, Verify]:
    owners, fallbacks = _owners_and_fallbacks(options, FALLBACK_KEY)
    actions = [FaultAction(100, "crash", node=n) for n in owners]
    actions += [FaultAction(900, "restart", node=n) for n in owners]
    actions += [FaultAction(2_400, "crash", node=n) for n in owners]
    actions += [FaultAction(3_000, "restart", node=n) for n in owners]
    actions.append(FaultAction(3_000, "heal"))
    workload = WorkloadParams(clients=(), end_ms=options.duration_ms)
    sim = Simulation(options, workload=workload, actions=actions)
    for at, value in FALLBACK_WRITES:
        sim.scheduler.at(at, functools.partial(
            sim.workload.request, fallbacks[0], "put", FALLBACK_KEY, value))

    def verify(result: SimResult) -> list[str]:
        acked = {op.value for op in sim.workload.history if op.acked}
        missing = [value for _, value in FALLBACK_WRITES if value not in acked]
        return [f"write {value!r} was not acknowledged" for value in missing]

    return sim, verify


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("minority-partition", "a 2 | 3 split that keeps taking writes, then heals",
                 _build_minority),
        Scenario("coordinator-crash", "the coordinator crashes between its local write "
                 "and replication", _build_coordinator_crash),
        Scenario("stale-contexts", "concurrent writers that write back stale contexts",
                 _build_stale_contexts),
        Scenario("fallback-rewrite", "a fallback coordinates the same key before and after "
                 "handing it off (a regression: it reused a dot, Riak's kv679, until "
                 "local deletes started a new actor epoch)", _build_fallback_rewrite),
    )
}


def scenario_options(name: str, seed: int, base: SimOptions | None = None) -> SimOptions:
    base = base or SimOptions()
    duration_ms = 5_000 if name == "fallback-rewrite" else 4_000
    return replace(base, seed=seed, scenario=name, nodes=5, duration_ms=duration_ms,
                   faults="none", lww=False)


def run_scenario(name: str, options: SimOptions) -> SimResult:
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}") from None
    options = scenario_options(name, options.seed, options)
    sim, verify = scenario.build(options)
    result = sim.run()
    result.extra_failures += verify(result)
    result.known_core_bug = scenario.known_core_bug
    return result
