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
  local write became durable but before its answer (the client is never answered),
  once before the write reached its disk (it is lost here; with early replication
  its replicas may hold it, else nobody ever saw its dot). Both writes are
  indeterminate; no acknowledged write may be lost, and after the restart the node
  must never reuse a dot: a restart after early sends begins a new epoch.
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
- fallback-crash (issue 3): two of some keys' owners crash; writes are acknowledged
  through fallbacks, which keep hints; one fallback crashes while holding hints (it
  loses the batch it had not synced) and restarts before the owners return. At the
  end every owner's disk holds every acknowledged write, no hint is left (in the
  ledgers or on disk), and the fallbacks dropped their copies.
- owner-returns-during-handoff (issue 3): an owner is down while hundreds of its
  keys are written (its fallback holds more hints than one handoff batch); it comes
  back reachable only from that fallback, which starts handing off while the other
  nodes still see the owner down and keep writing those keys through the fallback:
  hinted objects change while their delivery is in flight. Nothing acknowledged is
  lost, the hints drain, the fallback drops its copies.
- wipe-repair (issue 5): hundreds of keys are written, then a node loses its disk
  and comes back empty with a new server id; no client reads (so no read repair) and
  no hints: anti-entropy alone must give it back every key it owns.
- long-partition-hints-lost (issue 5): hinted handoff is off (Config), so a 2 | 3
  split lasting two seconds leaves replicas that simply missed writes; clients stop
  at the heal (no reads after it): anti-entropy must make the replicas identical,
  and no acknowledged write may be lost.
- delete-races-repair (issue 5): writes, reads (read repair) and deletes interleave
  on a few keys while a primary is down (hinted handoff off: it misses deletes) and
  comes back with stale values; then every key is read from all replicas and
  deleted with that context while another primary is down (it misses the deletes);
  tombstones have a 300 ms grace. Anti-entropy, read repair and reaping all run:
  no deleted key comes back (checker 6), tombstones are reaped, and nothing returns
  after they are.
- handoff-backoff (a core bug, fixed): an owner returns, its fallbacks start
  handing off a batch of hints, and it crashes again before acknowledging them; each
  failed delivery of the batch used to double the target's backoff, so the hints waited
  HANDOFF_BACKOFF_MAX_MS (30 s) after the owner was back. Now a failed round backs off
  once, and the owner coming back up clears the backoff.
- reap-read-repair (a core bug, fixed by remembering reaped tombstones): a get reads
  the old value of a deleted key from a replica that missed the delete and nothing
  from a wiped one, while the third replica's reply is lost; within the get's timeout
  another get read-repairs both with the tombstone and it is reaped; then the first
  get's read repair used to write the old value to the wiped replica, and
  anti-entropy spread it (checker 6).
- request-id-reuse (a core bug, fixed: random request ids, replies checked): a node
  restarts while a peer's reply to one of its anti-entropy requests is on its way (a
  slow link); its new exchange with that peer used to get the same request id, take
  the late reply for its own, and MerkleTree.level raised out of Node.step.
- reaper-spin (a core bug, fixed): with tombstone_reap_interval_ms below
  request_timeout_ms, a reap that waits for a lost vote leaves the reaper's deadline
  in the past: the node asks to be woken at once, again and again (a busy loop), until
  the reap times out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from dynakv.config import Config
from dynakv.core import api, dvvset
from dynakv.core import messages as m
from dynakv.core.anti_entropy import Exchange
from dynakv.core.coordinator import HandoffState
from dynakv.core.hints import HANDOFF_BATCH_MAX, HINTS_PARTITION
from dynakv.core.node import Node
from dynakv.core.ring import Ring, key_bytes, primary_owners
from dynakv.core.storage import Write
from dynakv.sim import checkers
from dynakv.sim.checkers import FinalState
from dynakv.sim.cluster import make_ring
from dynakv.sim.faults import LOSSY, FaultAction, split_links
from dynakv.sim.joins import (
    Joiner,
    expected_ring,
    held_not_owned,
    keys_in,
    membership_premise,
    moves,
)
from dynakv.sim.runner import (
    SIM_CONFIG,
    SimOptions,
    SimResult,
    Simulation,
    convergence_bound_ms,
    node_names,
)
from dynakv.sim.workload import BUCKET_TYPE, ClientSpec, Key, Op, Role, WorkloadParams

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
    duration_ms: int = 4_000  # how long its clients and script run (SimOptions.duration_ms)


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
                mine = entry.server_id == sim_node.server_id or entry.server_id.startswith(
                    sim_node.server_id + ".")  # the actor of a later epoch (Node._actor)
                if mine and entry.counter > old.get(entry.server_id, 0) and entry.values:
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
    early = sim.cluster.config.early_replication
    if record.before_value and record.before_value in sim.observations.dots and not early:
        failures.append("the write lost before its sync became durable somewhere")
    # With early replication the replicas may keep it (it stays indeterminate); the
    # restarted coordinator must then mint under a new epoch (checker 1 finds a reuse).
    coordinator = sim.cluster.nodes[COORDINATOR].node
    if early and (coordinator is None or coordinator.epoch < 1):
        failures.append("the coordinator restarted after sending early without a new epoch")
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
    return _placement(node_names(options.nodes), key)


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


# --- shared helpers of the scenarios below ----------------------------------------------


def _placement(names: Sequence[str], key: Key) -> tuple[list[str], list[str]]:
    """A key's primary owners (in preference order) and the other nodes in ring order
    after them (the fallbacks, first one first)."""
    ring = make_ring(names, SIM_CONFIG)
    partition = ring.partition_of(BUCKET_TYPE, *key)
    owners = [t.node for t in primary_owners(ring, partition, SIM_CONFIG.n_val)]
    walk = [t.node for t in primary_owners(ring, partition, len(names))]
    return owners, [name for name in walk if name not in owners]


def _keys_where(names: Sequence[str], prefix: str, count: int,
                wanted: Callable[[list[str], list[str]], bool]) -> list[Key]:
    """The first `count` keys b0/<prefix><i> whose placement is `wanted`."""
    found: list[Key] = []
    for index in range(100 * count + 1_000):
        key = ("b0", f"{prefix}{index}")
        if wanted(*_placement(names, key)):
            found.append(key)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} keys {prefix}* are placed as wanted")


def _disk_object(sim: Simulation, node: str, key: Key) -> api.Object | None:
    """What `node` holds durably for `key` (its disk, not its pending writes)."""
    partition = sim.cluster.partition_of(BUCKET_TYPE, *key)
    data = sim.cluster.nodes[node].disk.get(partition, key_bytes(BUCKET_TYPE, *key))
    return None if data is None else m.decode_object(data)


def _node_lacks_acked_writes(sim: Simulation, node: str, keys: Sequence[Key]) -> list[str]:
    """Checker 1 with `node`'s disk as the only replica: every acknowledged put to
    `keys` is a sibling there or was superseded by a write that had seen it."""
    stored = {key: {node: obj} for key in keys
              if (obj := _disk_object(sim, node, key)) is not None}
    history = [op for op in sim.workload.history if (op.bucket, op.key) in set(keys)]
    final = FinalState(stored, {key: [node] for key in keys}, set(sim.cluster.server_ids))
    check = checkers.check_acknowledged_writes(history, sim.observations, final)
    return [f"{node}'s disk: {text}" for text in check.violations if "acknowledged" in text]


def _hints_left(sim: Simulation, dead: Sequence[str] = ()) -> list[str]:
    """Hints still queued anywhere (but on the disks of `dead` nodes, removed): in a
    node's ledger, or as rows on its disk."""
    left = []
    for name in [n for n in sim.names if n not in dead]:
        sim_node = sim.cluster.nodes[name]
        if sim_node.node is not None and sim_node.node.hints.counts:
            left.append(f"{name} still queues hints {dict(sim_node.node.hints.counts)}")
        rows = sim_node.disk.scan(HINTS_PARTITION, b"", 1_000)
        if rows:
            left.append(f"{name} still has {len(rows)} hint row(s) on its disk")
    return left


def _fallback_copies(sim: Simulation, keys: Sequence[Key]) -> list[str]:
    """Copies of `keys` held on disk by nodes that are not their primary owners."""
    found = []
    for key in keys:
        owners = sim.cluster.primaries(BUCKET_TYPE, *key, sim.config.n_val)
        holders = [n for n in sim.names if n not in owners and _disk_object(sim, n, key)]
        if holders:
            found.append(f"{key[0]}/{key[1]} is still held by fallback(s) {holders}")
    return found


def _load(sim: Simulation, keys: Sequence[Key], start_ms: int, gap_ms: int,
          via: Sequence[str]) -> None:
    """Write each key once, `gap_ms` apart from `start_ms`, through the nodes `via`."""
    for index, key in enumerate(keys):
        node = via[index % len(via)]
        value = f"{key[0]}/{key[1]}#load".encode()
        sim.scheduler.at(start_ms + index * gap_ms, functools.partial(
            sim.workload.request, node, "put", key, value))


def _every(sim: Simulation, start_ms: int, end_ms: int, step_ms: int,
           action: Callable[[], object]) -> None:
    for time_ms in range(start_ms, end_ms, step_ms):
        sim.scheduler.at(time_ms, action)


def _acked(sim: Simulation, keys: Sequence[Key], kind: str, start_ms: int,
           end_ms: int) -> list[Op]:
    wanted = set(keys)
    return [op for op in sim.workload.history
            if op.kind == kind and op.acked and (op.bucket, op.key) in wanted
            and start_ms <= op.start_ms and op.end_ms <= end_ms]


# --- fallback crash (issue 3) -----------------------------------------------------------

FALLBACK_CRASH_OWNERS_DOWN_MS, FALLBACK_CRASH_OWNERS_BACK_MS = 100, 2_000
FALLBACK_CRASH_ARM_MS, FALLBACK_CRASH_DOWNTIME_MS = 900, 300
FALLBACK_CRASH_CLIENTS_END_MS = 2_600


@dataclass(slots=True)
class _FallbackCrash:
    crash_ms: int = -1
    hint_rows_at_crash: int = 0  # durable hint rows on the fallback's disk when it crashed
    hints_at_restart: int = 0  # hints the restarted fallback loaded from its disk


def _build_fallback_crash(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    owners, fallbacks = _placement(names, ("b0", "k0"))
    keys = _keys_where(names, "f", 4, lambda o, f: (o, f) == (owners, fallbacks))
    down, holder = owners[:2], fallbacks[0]
    actions = [FaultAction(FALLBACK_CRASH_OWNERS_DOWN_MS, "crash", node=n) for n in down]
    actions += [FaultAction(FALLBACK_CRASH_OWNERS_BACK_MS, "restart", node=n) for n in down]
    actions.append(FaultAction(FALLBACK_CRASH_OWNERS_BACK_MS, "heal"))
    up = tuple(n for n in names if n not in down)
    clients = (ClientSpec("rmw", nodes=up, keys=tuple(keys)),
               ClientSpec("rmw", nodes=up, keys=tuple(keys)),
               ClientSpec("blind", nodes=up, keys=tuple(keys)))
    workload = WorkloadParams(clients=clients, buckets=("b0",),
                              end_ms=FALLBACK_CRASH_CLIENTS_END_MS)
    sim = Simulation(options, workload=workload, actions=actions)
    record = _FallbackCrash()

    def restart_holder() -> None:
        sim.cluster.restart(holder)
        node = sim.cluster.nodes[holder].node
        assert node is not None
        record.hints_at_restart = sum(node.hints.counts.values())

    hinted = {(sim.cluster.partition_of(BUCKET_TYPE, *key), key_bytes(BUCKET_TYPE, *key))
              for key in keys}

    def crash_on_replica_write(writes: Sequence[Write]) -> Literal["before", "after"] | None:
        """Crash at the next sync of a hinted key's new version: that batch is lost
        (the fallback never acknowledged it); what it synced before survives."""
        if not any((write.partition, write.key) in hinted for write in writes):
            return None
        record.crash_ms = sim.scheduler.now_ms
        record.hint_rows_at_crash = len(
            sim.cluster.nodes[holder].disk.scan(HINTS_PARTITION, b"", 10_000))
        sim.scheduler.after(FALLBACK_CRASH_DOWNTIME_MS, restart_holder)
        return "before"

    def arm() -> None:
        sim.cluster.nodes[holder].sync_hook = crash_on_replica_write

    sim.scheduler.at(FALLBACK_CRASH_ARM_MS, arm)

    def verify(result: SimResult) -> list[str]:
        failures = []
        if not 0 <= record.crash_ms < FALLBACK_CRASH_OWNERS_BACK_MS - FALLBACK_CRASH_DOWNTIME_MS:
            failures.append(f"fallback {holder} did not crash (and restart) while the "
                            f"owners were down (crash at {record.crash_ms} ms)")
        elif record.hint_rows_at_crash == 0:
            failures.append(f"fallback {holder} held no durable hint when it crashed")
        elif record.hints_at_restart == 0:
            failures.append(f"fallback {holder} loaded no hint from its disk at restart")
        if not _acked(sim, keys, "put", FALLBACK_CRASH_OWNERS_DOWN_MS,
                      FALLBACK_CRASH_OWNERS_BACK_MS):
            failures.append("no write was acknowledged while the owners were down")
        for owner in owners:
            failures += _node_lacks_acked_writes(sim, owner, keys)
        failures += _hints_left(sim)
        failures += _fallback_copies(sim, keys)
        if result.stats["hints_delivered"] == 0:
            failures.append("no hint was delivered")
        return failures

    return sim, verify


# --- owner returns during handoff (issue 3) --------------------------------------------

HANDOFF_KEYS, HANDOFF_HOT_KEYS = 300, 5
HANDOFF_OWNER_DOWN_MS, HANDOFF_RETURN_MS, HANDOFF_REJOIN_MS = 100, 1_500, 2_700
HANDOFF_DURATION_MS = 3_300
HANDOFF_SLOW_MS = 30


@dataclass(slots=True)
class _Handoff:
    hints_at_return: int = 0
    delivered_at_return: int = 0
    delivered_at_rejoin: int = 0
    changed_in_flight: set[bytes] = field(default_factory=set)  # keys that changed


def _build_owner_returns(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    owners, fallbacks = _placement(names, ("b0", "k0"))
    owner, fallback = owners[0], fallbacks[0]
    keys = _keys_where(names, "h", HANDOFF_KEYS, lambda o, f: owner in o and f[0] == fallback)
    hot = tuple(keys[:HANDOFF_HOT_KEYS])
    others = [n for n in names if n not in (owner, fallback)]
    # The owner comes back reachable only from its fallback: the fallback hands off
    # while every other node still sees the owner down and writes through the fallback.
    links = split_links([owner], others, one_way=False)
    actions = [
        FaultAction(HANDOFF_OWNER_DOWN_MS, "crash", node=owner),
        FaultAction(HANDOFF_RETURN_MS, "cut", links=links),
        FaultAction(HANDOFF_RETURN_MS, "restart", node=owner),
        # A congested link between them: deliveries stay in flight long enough for the
        # hot keys to change under them.
        FaultAction(HANDOFF_RETURN_MS, "slow", links=((fallback, owner), (owner, fallback)),
                    delay_ms=HANDOFF_SLOW_MS),
        FaultAction(HANDOFF_REJOIN_MS, "restore", links=links),
        FaultAction(HANDOFF_REJOIN_MS, "heal"),
    ]
    writers = tuple(n for n in names if n != owner)
    clients = tuple(ClientSpec(role, nodes=writers, keys=hot)
                    for role in ("rmw", "rmw", "blind", "blind"))
    workload = WorkloadParams(clients=clients, buckets=("b0",), end_ms=HANDOFF_DURATION_MS)
    sim = Simulation(options, workload=workload, actions=actions)
    _load(sim, keys, 150, 3, writers)
    record = _Handoff()

    def fallback_node() -> Node:
        node = sim.cluster.nodes[fallback].node
        assert node is not None, "the fallback never crashes in this scenario"
        return node

    def at_return() -> None:
        node = fallback_node()
        record.hints_at_return = node.hints.counts.get(owner, 0)
        record.delivered_at_return = node.hints.delivered

    def at_rejoin() -> None:
        record.delivered_at_rejoin = fallback_node().hints.delivered

    def sample() -> None:
        """A hinted object that changed while its delivery to the owner is in flight."""
        node = fallback_node()
        for state in list(node._requests.values()):
            if isinstance(state, HandoffState) and state.target == owner and (
                    node._read_stored(state.partition, state.key) != state.data):
                record.changed_in_flight.add(state.key)

    sim.scheduler.at(HANDOFF_RETURN_MS - 1, at_return)
    sim.scheduler.at(HANDOFF_REJOIN_MS - 1, at_rejoin)
    _every(sim, HANDOFF_RETURN_MS, HANDOFF_REJOIN_MS, 2, sample)

    def verify(result: SimResult) -> list[str]:
        failures = []
        if record.hints_at_return <= HANDOFF_BATCH_MAX:
            failures.append(f"fallback {fallback} held {record.hints_at_return} hints for "
                            f"{owner} when it returned (wanted more than one batch, "
                            f"{HANDOFF_BATCH_MAX})")
        if record.delivered_at_rejoin <= record.delivered_at_return:
            failures.append("no hint was delivered while the owner was reachable only from "
                            "its fallback")
        if not record.changed_in_flight:
            failures.append("no hinted object changed while its delivery was in flight")
        if not _acked(sim, hot, "put", HANDOFF_RETURN_MS, HANDOFF_REJOIN_MS):
            failures.append("no write was acknowledged during the handoff")
        failures += _node_lacks_acked_writes(sim, owner, keys)
        failures += _hints_left(sim)
        failures += _fallback_copies(sim, keys)
        return failures

    return sim, verify


# --- wipe repaired by anti-entropy (issue 5) ------------------------------------------

WIPE_KEYS = 200
WIPED = "n1"
WIPE_MS, WIPE_RESTART_MS, WIPE_DURATION_MS = 1_200, 1_300, 1_500


def _build_wipe_repair(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    keys: list[Key] = [("b0", f"w{index}") for index in range(WIPE_KEYS)]
    actions = [FaultAction(WIPE_MS, "wipe", node=WIPED),
               FaultAction(WIPE_RESTART_MS, "restart", node=WIPED),
               FaultAction(WIPE_RESTART_MS, "heal")]
    workload = WorkloadParams(clients=(), end_ms=WIPE_DURATION_MS)
    sim = Simulation(options, workload=workload, actions=actions)
    _load(sim, keys, 150, 4, [n for n in names if n != WIPED])
    first_server_id = sim.cluster.nodes[WIPED].server_id

    def verify(result: SimResult) -> list[str]:
        failures = []
        if sim.cluster.nodes[WIPED].server_id == first_server_id:
            failures.append(f"{WIPED} came back with its old server id")
        if any(op.kind == "get" for op in sim.workload.history):
            failures.append("a client read: read repair could have done the work")
        if len(_acked(sim, keys, "put", 0, WIPE_MS)) != WIPE_KEYS:
            failures.append("not every key's write was acknowledged before the wipe")
        owned = [key for key in keys
                 if WIPED in sim.cluster.primaries(BUCKET_TYPE, *key, sim.config.n_val)]
        missing = [key for key in owned if _disk_object(sim, WIPED, key) is None]
        if missing:
            failures.append(f"{WIPED} owns {len(owned)} keys but {len(missing)} are not "
                            f"back on its disk, e.g. {missing[0][0]}/{missing[0][1]}")
        failures += _node_lacks_acked_writes(sim, WIPED, owned)
        if result.stats["ae_keys_repaired"] == 0:
            failures.append("anti-entropy repaired no key")
        if result.stats["read_repairs"] or result.stats["hints_delivered"]:
            failures.append("read repair or handoff took part; only anti-entropy should")
        return failures

    return sim, verify


# --- long partition, hints lost (issue 5) -------------------------------------------

LONG_SPLIT_MS, LONG_HEAL_MS = 300, 2_300
NO_HINTS_CONFIG = SIM_CONFIG.with_options(hinted_handoff_enabled=False)


@dataclass(slots=True)
class _Divergence:
    keys_differing_at_heal: set[Key] = field(default_factory=set)


def _differing_keys(sim: Simulation) -> set[Key]:
    """The keys whose primary replicas do not all hold the union (checker 3's view)."""
    final = sim.final_state()
    return {key for key in final.stored if not checkers.check_convergence(FinalState(
        {key: final.stored[key]}, final.primaries, final.server_ids)).ok}


def _build_long_partition(options: SimOptions) -> tuple[Simulation, Verify]:
    keys: tuple[Key, ...] = tuple(("b0", f"k{index}") for index in range(5))
    clients = (
        ClientSpec("blind", nodes=MINORITY, keys=keys, w=1),
        ClientSpec("rmw", nodes=MINORITY, keys=keys, w=1),
        ClientSpec("blind", nodes=MAJORITY, keys=keys, w=1),
        ClientSpec("rmw", nodes=MAJORITY, keys=keys),
    )
    links = split_links(MINORITY, MAJORITY, one_way=False)
    actions = [FaultAction(LONG_SPLIT_MS, "cut", links=links),
               FaultAction(LONG_HEAL_MS, "restore", links=links),
               FaultAction(LONG_HEAL_MS, "heal")]
    # Clients stop at the heal: no read after it, so read repair cannot converge them.
    workload = WorkloadParams(clients=clients, buckets=("b0",), end_ms=LONG_HEAL_MS)
    sim = Simulation(options, config=NO_HINTS_CONFIG, workload=workload, actions=actions)
    record = _Divergence()

    def at_heal() -> None:
        record.keys_differing_at_heal = _differing_keys(sim)

    sim.scheduler.at(LONG_HEAL_MS - 1, at_heal)

    def verify(result: SimResult) -> list[str]:
        failures = []
        window = (LONG_SPLIT_MS + 2 * sim.config.reconnect_interval_ms, LONG_HEAL_MS)
        for side, nodes in (("minority", MINORITY), ("majority", MAJORITY)):
            if not _acked_puts_between(sim, nodes, *window):
                failures.append(f"the {side} acknowledged no write during the partition")
        if not record.keys_differing_at_heal:
            failures.append("the replicas did not differ at the heal")
        # A request still open at the heal may repair its key (read repair, or a write
        # coordinated after it); a key no such request touched is anti-entropy's alone.
        touched_after = {(op.bucket, op.key) for op in sim.workload.history
                         if op.timed_out or op.end_ms >= LONG_HEAL_MS - 1}
        if not record.keys_differing_at_heal - touched_after:
            failures.append("every key that differed at the heal was touched by a request "
                            "after it: anti-entropy was not shown to converge any")
        if result.stats["hints_max"]:
            failures.append("a node kept hints though hinted handoff is off")
        return failures

    return sim, verify


# --- deletes racing with repair (issue 5) ---------------------------------------------

DELETE_KEYS = 6
DELETE_CONFIG = SIM_CONFIG.with_options(hinted_handoff_enabled=False, tombstone_grace_ms=300)
STALE_DOWN_MS, STALE_BACK_MS = 500, 1_300
DELETE_CLIENTS_END_MS, FINAL_READ_MS, FINAL_DELETE_MS = 2_500, 2_950, 3_100
LATE_DOWN_MS, LATE_BACK_MS = 3_050, 3_600


@dataclass(slots=True)
class _FinalDeletes:
    reads: dict[Key, Op] = field(default_factory=dict)
    deletes: list[Op] = field(default_factory=list)


def _build_delete_races(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    owners, _ = _placement(names, ("b0", "k0"))
    stale, late = owners[0], owners[1]
    keys = _keys_where(names, "d", DELETE_KEYS, lambda o, f: stale in o and late in o)
    roles: tuple[Role, ...] = ("rmw", "rmw", "deleter", "deleter", "reader", "blind")
    clients = tuple(ClientSpec(role, keys=tuple(keys)) for role in roles)
    actions = [FaultAction(STALE_DOWN_MS, "crash", node=stale),
               FaultAction(STALE_BACK_MS, "restart", node=stale),
               FaultAction(LATE_DOWN_MS, "crash", node=late),
               FaultAction(LATE_BACK_MS, "restart", node=late),
               FaultAction(LATE_BACK_MS, "heal")]
    workload = WorkloadParams(clients=clients, buckets=("b0",), end_ms=DELETE_CLIENTS_END_MS)
    sim = Simulation(options, config=DELETE_CONFIG, workload=workload, actions=actions)
    record = _FinalDeletes()
    via = next(n for n in names if n not in (stale, late))

    def read_all(key: Key) -> None:
        sim.workload.request(via, "get", key, quorum="all",
                             then=lambda op: record.reads.__setitem__(key, op))

    def delete(key: Key) -> None:
        read = record.reads.get(key)
        response = read.response if read is not None else None
        if isinstance(response, api.ObjectResponse) and response.found:
            seen = frozenset(content.value for content in response.siblings)
            record.deletes.append(sim.workload.request(
                via, "delete", key, context=response.context, seen=seen))

    for key in keys:
        sim.scheduler.at(FINAL_READ_MS, functools.partial(read_all, key))
        sim.scheduler.at(FINAL_DELETE_MS, functools.partial(delete, key))

    def verify(result: SimResult) -> list[str]:
        failures = []
        if not _acked(sim, keys, "delete", STALE_DOWN_MS, STALE_BACK_MS):
            failures.append(f"no delete was acknowledged while {stale} was down")
        if not any(op.acked for op in record.deletes):
            failures.append(f"no final delete was acknowledged while {late} was down")
        judged = checkers.deleted_keys(sim.workload.history, sim.observations)
        if len(judged) < DELETE_KEYS // 2:
            failures.append(f"only {len(judged)} of {DELETE_KEYS} keys were deleted with a "
                            "context that had seen every version")
        if result.stats["reaped"] == 0:
            failures.append("no tombstone was reaped")
        final = sim.final_state()
        if not any(not final.stored.get(key) for key in judged):
            failures.append("no deleted key was reaped from every node")
        return failures

    return sim, verify


# --- handoff backoff (a core bug) --------------------------------------------------------

BACKOFF_KEYS = 20
BACKOFF_DOWN_MS, BACKOFF_RETURN_MS, BACKOFF_DOWNTIME_MS = 100, 800, 200


@dataclass(slots=True)
class _Backoff:
    crash_ms: int = -1
    deliveries_in_flight: int = 0


def _build_handoff_backoff(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    owner = _placement(names, ("b0", "k0"))[0][0]
    keys = _keys_where(names, "bk", BACKOFF_KEYS, lambda o, f: owner in o)
    actions = [FaultAction(BACKOFF_DOWN_MS, "crash", node=owner),
               FaultAction(BACKOFF_RETURN_MS, "restart", node=owner)]
    workload = WorkloadParams(clients=(), end_ms=options.duration_ms)
    sim = Simulation(options, workload=workload, actions=actions)
    _load(sim, keys, 150, 10, [n for n in names if n != owner])
    record = _Backoff()

    def watch() -> None:
        """Crash the owner as soon as some fallback has deliveries to it in flight."""
        if record.crash_ms >= 0 or not sim.cluster.alive(owner):
            return
        in_flight = sum(node.hints.in_flight.get(owner, 0) for name in sim.names
                        if name != owner and (node := sim.cluster.nodes[name].node))
        if in_flight:
            record.crash_ms, record.deliveries_in_flight = sim.scheduler.now_ms, in_flight
            sim.cluster.crash(owner)
            sim.scheduler.after(BACKOFF_DOWNTIME_MS, lambda: sim.cluster.restart(owner))

    _every(sim, BACKOFF_RETURN_MS, BACKOFF_RETURN_MS + 1_500, 1, watch)

    def verify(result: SimResult) -> list[str]:
        if record.crash_ms < 0:
            return ["no fallback started handing off to the returned owner"]
        left = _hints_left(sim)
        if not left:
            return []
        waits = {}
        for name in sim.names:
            node = sim.cluster.nodes[name].node
            if name != owner and node is not None and owner in node.hints.backoff_ms:
                waits[name] = (f"backoff {node.hints.backoff_ms[owner]} ms, next attempt at "
                               f"{node.hints.next_attempt_ms.get(owner)} ms")
        return [f"{owner} crashed at {record.crash_ms} ms with {record.deliveries_in_flight} "
                f"hint deliveries in flight and was back {BACKOFF_DOWNTIME_MS} ms later; at "
                f"{sim.scheduler.now_ms} ms the hints still wait: {waits}", *left]

    return sim, verify


# --- reaper spin (a core bug) ------------------------------------------------------------

SPIN_CONFIG = SIM_CONFIG.with_options(tombstone_reap_interval_ms=100, tombstone_grace_ms=100)
SPIN_CUT_MS, SPIN_RESTORE_MS = 300, 1_800


def _build_reaper_spin(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    key: Key = ("b0", "k0")
    owners, fallbacks = _placement(names, key)
    silent = fallbacks[0]  # not a primary: the delete needs it not, the reap's vote does
    links = split_links([silent], [n for n in names if n != silent], one_way=False)
    actions = [FaultAction(SPIN_CUT_MS, "cut", links=links),
               FaultAction(SPIN_RESTORE_MS, "restore", links=links),
               FaultAction(SPIN_RESTORE_MS, "heal")]
    workload = WorkloadParams(clients=(), end_ms=options.duration_ms)
    sim = Simulation(options, config=SPIN_CONFIG, workload=workload, actions=actions)
    # Connections stay open across the cut: only the failure detector (phi accrual)
    # sees the silent node down, so a reap waits for its vote.
    sim.keepalive = sim.cluster.keepalive = False
    record: dict[str, Op] = {}

    def delete(read: Op) -> None:
        if isinstance(read.response, api.ObjectResponse) and read.response.found:
            seen = frozenset(c.value for c in read.response.siblings)
            record["delete"] = sim.workload.request(owners[0], "delete", key,
                                                    context=read.response.context, seen=seen)

    sim.scheduler.at(150, lambda: sim.workload.request(owners[0], "put", key, b"b0/k0#spin"))
    sim.scheduler.at(400, lambda: sim.workload.request(owners[0], "get", key, then=delete))

    def verify(result: SimResult) -> list[str]:
        delete_op = record.get("delete")
        if delete_op is None or not delete_op.acked:
            return ["the key was not deleted"]
        return []

    return sim, verify


# --- a read repair older than a reap (a core bug) ---------------------------------------

STALE_PUT_MS, STALE_A_DOWN_MS, STALE_DELETE_MS, STALE_C_WIPE_MS = 150, 300, 400, 500
STALE_C_RETURN_MS, STALE_A_RETURN_MS, STALE_READ_MS = 600, 1_100, 1_106
STALE_REPAIR_READ_MS, STALE_HEAL_MS = 1_130, 2_400


def _build_reap_read_repair(options: SimOptions) -> tuple[Simulation, Verify]:
    """Replicas a, b, c; hinted handoff off, tombstone grace 300 ms, reaper every 1 s.

    The key is written everywhere, then deleted while a is down (b and c take the
    tombstone); c loses its disk and comes back empty, cut off from b for a while (so
    anti-entropy cannot give it the tombstone); a comes back with the old value, and
    b's messages to a are cut. a coordinates a get: it reads the old value from itself
    and nothing from c, answers the client (R=2), and keeps the read repair for when
    b answers, which it never does: a's detector sees b down a second later. Meanwhile
    a get through c reads the tombstone and read-repairs a and c with it, and c's
    reaper (1 s after its restart) reaps it from a, b and c. Then a's first get ends
    and sends c the old value it merged a second ago: the deleted key is back, and
    anti-entropy spreads it (checker 6)."""
    names = node_names(options.nodes)
    key: Key = ("b0", "k0")
    (a, b, c), _ = _placement(names, key)
    b_c = split_links([b], [c], one_way=False)
    b_to_a = split_links([b], [a], one_way=True)  # b's replies to a are lost
    actions = [FaultAction(STALE_A_DOWN_MS, "crash", node=a),
               FaultAction(STALE_C_WIPE_MS, "wipe", node=c),
               FaultAction(STALE_C_RETURN_MS - 10, "cut", links=b_c),
               FaultAction(STALE_C_RETURN_MS, "restart", node=c),
               FaultAction(STALE_A_RETURN_MS - 5, "cut", links=b_to_a),
               FaultAction(STALE_A_RETURN_MS, "restart", node=a),
               FaultAction(STALE_READ_MS + 4, "restore", links=b_c),
               FaultAction(STALE_HEAL_MS, "restore", links=b_to_a),
               FaultAction(STALE_HEAL_MS, "heal")]
    workload = WorkloadParams(clients=(), end_ms=options.duration_ms)
    sim = Simulation(options, config=DELETE_CONFIG, workload=workload, actions=actions)
    sim.keepalive = sim.cluster.keepalive = False  # the cuts close no connection

    def delete(read: Op) -> None:
        if isinstance(read.response, api.ObjectResponse) and read.response.found:
            seen = frozenset(content.value for content in read.response.siblings)
            sim.workload.request(b, "delete", key, context=read.response.context, seen=seen)

    value = f"{key[0]}/{key[1]}#old".encode()
    sim.scheduler.at(STALE_PUT_MS, lambda: sim.workload.request(b, "put", key, value))
    sim.scheduler.at(STALE_DELETE_MS - 20,
                     lambda: sim.workload.request(b, "get", key, then=delete))
    sim.scheduler.at(STALE_READ_MS, lambda: sim.workload.request(a, "get", key))
    sim.scheduler.at(STALE_REPAIR_READ_MS, lambda: sim.workload.request(c, "get", key))

    def verify(result: SimResult) -> list[str]:
        if key not in checkers.deleted_keys(sim.workload.history, sim.observations):
            return ["the key was not deleted with a context that had seen the old value"]
        return []

    return sim, verify


# --- request ids reused after a restart (a core bug) -----------------------------------

REUSE_NODE = "n1"
REUSE_KEYS, REUSE_SLOW_MS = 10, 60
REUSE_DOWN_MS, REUSE_SLOW_FROM_MS, REUSE_RETURN_MS, REUSE_HEAL_MS = 50, 400, 500, 2_000


@dataclass(slots=True)
class _Reuse:
    descended_ms: int = -1  # when the returned node's exchange went below the root


def _build_request_id_reuse(options: SimOptions) -> tuple[Simulation, Verify]:
    """A node misses writes to its first partition, comes back, and starts an
    anti-entropy exchange with that partition's first other primary; messages to it
    are slow (+60 ms, congested links). Once that exchange has gone below the root,
    the node crashes and restarts, and starts a new exchange with the same partner
    over the same partition while the partner's late reply to the earlier one
    (indexes of depth 1) is on its way. Request ids used to restart at 1, so the late
    reply was taken for the new exchange's; now they start at random, and a reply
    that does not answer what an exchange asked fails the exchange."""
    names = node_names(options.nodes)
    ring = make_ring(names, SIM_CONFIG)
    node = REUSE_NODE
    first = min(p for p in range(ring.size)
                if node in (t.node for t in primary_owners(ring, p, SIM_CONFIG.n_val)))
    partner = next(t.node for t in primary_owners(ring, first, SIM_CONFIG.n_val)
                   if t.node != node)
    keys: list[Key] = []
    for index in range(10_000):
        key = ("b0", f"r{index}")
        if ring.partition_of(BUCKET_TYPE, *key) == first:
            keys.append(key)
            if len(keys) == REUSE_KEYS:
                break
    slow = tuple((peer, node) for peer in names if peer != node)  # replies to it are late
    actions = [FaultAction(REUSE_DOWN_MS, "crash", node=node),
               FaultAction(REUSE_SLOW_FROM_MS, "slow", links=slow, delay_ms=REUSE_SLOW_MS),
               FaultAction(REUSE_RETURN_MS, "restart", node=node),
               FaultAction(REUSE_HEAL_MS, "heal")]
    workload = WorkloadParams(clients=(), end_ms=options.duration_ms)
    sim = Simulation(options, config=NO_HINTS_CONFIG, workload=workload, actions=actions)
    _load(sim, keys, 100, 10, [n for n in names if n != node])
    record = _Reuse()

    def watch() -> None:
        """Once the exchange asked for a level below the root, crash and restart."""
        current = sim.cluster.nodes[node].node
        if record.descended_ms >= 0 or current is None:
            return
        if any(isinstance(state, Exchange) and state.partner == partner and state.depth >= 1
               for state in current._requests.values()):
            record.descended_ms = sim.scheduler.now_ms
            # The deeper request has left (after at most one sync) before the crash.
            sim.scheduler.after(6, lambda: sim.cluster.crash(node))
            sim.scheduler.after(10, lambda: sim.cluster.restart(node))

    _every(sim, REUSE_RETURN_MS, REUSE_RETURN_MS + 1_000, 1, watch)

    def verify(result: SimResult) -> list[str]:
        if record.descended_ms < 0:
            return [f"{node}'s exchange with {partner} never went below the root"]
        return []

    return sim, verify


# --- membership: joins and leaves (issue 4) ---------------------------------------------

MEMBER_LOAD_KEYS, MEMBER_HOT_KEYS = 160, 6
MEMBER_LOAD_MS = 150  # one key a millisecond, through every node, before any change
MEMBER_ADD_MS, MEMBER_JOIN_MS = 400, 500
MEMBER_DETECT_MS = 500  # after a cut: both sides see each other down (probe timeout)


def _membership_workload(sim_end_ms: int, hot: Sequence[Key],
                         pinned: Sequence[tuple[Role, tuple[str, ...], int | None]] = (),
                         ) -> WorkloadParams:
    """Clients on the hot keys (in partitions that move): read-modify-write, blind,
    deleting and reading clients on any member, plus `pinned` (role, nodes, w)."""
    roles: tuple[Role, ...] = ("rmw", "blind", "deleter", "reader")
    clients = tuple(ClientSpec(role, keys=tuple(hot)) for role in roles)
    clients += tuple(ClientSpec(role, nodes=nodes, keys=tuple(hot), w=w)
                     for role, nodes, w in pinned)
    return WorkloadParams(clients=clients, buckets=("b0",), end_ms=sim_end_ms)


def _membership_sim(options: SimOptions, actions: list[FaultAction], expected: Ring,
                    hot: Sequence[Key],
                    pinned: Sequence[tuple[Role, tuple[str, ...], int | None]] = (),
                    config: Config = SIM_CONFIG) -> Simulation:
    """A run with the keys loaded first, clients on `hot`, and the settle time bounded
    by the ring at the end (its owners of most partitions build and exchange most)."""
    names = node_names(options.nodes)
    workload = _membership_workload(options.duration_ms, hot, pinned)
    sim = Simulation(options, config=config, workload=workload, actions=actions)
    if not options.settle_ms:
        sim.settle_ms = convergence_bound_ms(config, names, expected)
    loaded = [("b0", f"m{index}") for index in range(MEMBER_LOAD_KEYS)]
    _load(sim, loaded, MEMBER_LOAD_MS, 1, names)
    return sim


def _losers(names: Sequence[str], expected: Ring) -> list[str]:
    """The old owners that lose partitions to the change (they must hand data over)."""
    return sorted({node for lost, _ in moves(make_ring(names, SIM_CONFIG), expected,
                                             SIM_CONFIG.n_val).values() for node in lost})


def _hot_keys(names: Sequence[str], expected: Ring) -> list[Key]:
    moved = sorted(moves(make_ring(names, SIM_CONFIG), expected, SIM_CONFIG.n_val))
    return keys_in(make_ring(names, SIM_CONFIG), moved, "j", MEMBER_HOT_KEYS)


def _commit_during(sim: Simulation, start_ms: int, end_ms: int) -> list[str]:
    """A commit asked for and applied between the two times. One whose answer was lost
    counts if it was asked for in time: a later plan showed it applied, but not when."""
    if not any(start_ms <= event.time_ms and (event.end_ms <= end_ms if event.ok
                                               else event.time_ms <= end_ms)
               for event in sim.commits()):
        return [f"no commit was accepted between {start_ms} and {end_ms} ms: "
                f"{[(e.time_ms, e.what, e.via, e.ok, e.answer) for e in sim.membership]}"]
    return []


# join-under-partition: n5 joins; the plan is committed while a 2 | 3 split cuts an old
# owner of the moving partitions (and one more node) from the joiner and the claimant.
JUP_CUT_MS, JUP_COMMIT_MS, JUP_HEAL_MS, JUP_END_MS = 700, 1_000, 2_200, 2_800


@dataclass(slots=True)
class _AtHeal:
    ring_version: int = -1  # the cut-off old owner's ring version just before the heal
    to_hand_over: dict[int, int] = field(default_factory=dict)  # partition -> keys


def _build_join_under_partition(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    joiner = Joiner(f"n{options.nodes}")
    expected = expected_ring(names, SIM_CONFIG, [joiner])
    claimant = names[0]
    cut_owner = next(n for n in _losers(names, expected) if n != claimant)
    minority = sorted([cut_owner, next(n for n in names if n not in (claimant, cut_owner))])
    majority = tuple(n for n in names if n not in minority)
    links = split_links(minority, [*majority, joiner.name], one_way=False)
    actions = [FaultAction(MEMBER_ADD_MS, "add", node=joiner.name),
               FaultAction(MEMBER_JOIN_MS, "join", node=joiner.name, via=majority[-1]),
               FaultAction(JUP_CUT_MS, "cut", links=links),
               FaultAction(JUP_COMMIT_MS, "commit", via=majority[1]),
               FaultAction(JUP_HEAL_MS, "restore", links=links),
               FaultAction(JUP_HEAL_MS, "heal")]
    pinned: list[tuple[Role, tuple[str, ...], int | None]] = [
        ("rmw", tuple(minority), None), ("blind", tuple(minority), 1),
        ("rmw", majority, None)]
    sim = _membership_sim(options, actions, expected, _hot_keys(names, expected), pinned)
    record = _AtHeal()

    def at_heal() -> None:
        node = sim.cluster.nodes[cut_owner].node
        if node is not None:
            record.ring_version = node.cluster.ring.version
            record.to_hand_over = held_not_owned(sim, cut_owner, expected)

    sim.scheduler.at(JUP_HEAL_MS - 1, at_heal)

    def verify(result: SimResult) -> list[str]:
        failures = _commit_during(sim, JUP_CUT_MS, JUP_HEAL_MS)
        if record.ring_version != 1:
            failures.append(f"{cut_owner} held ring version {record.ring_version} before the "
                            "heal: the split did not keep the commit from it")
        if not record.to_hand_over:
            failures.append(f"{cut_owner} had nothing to hand over when the split healed")
        window = (JUP_CUT_MS + MEMBER_DETECT_MS, JUP_HEAL_MS)
        for side, nodes in (("minority", minority), ("majority", majority)):
            if not _acked_puts_between(sim, nodes, *window):
                failures.append(f"the {side} acknowledged no write during the split")
        return failures + membership_premise(sim, expected, 2, [joiner]) + _hints_left(sim)

    return sim, verify


# join-with-crash: n5 joins; it crashes at the sync of the first transfer batch it
# merged (it never acknowledges it), and restarts; the transfers, which waited for it,
# resume, and an old owner crashes while one of its batches is in flight, and restarts.
JWC_COMMIT_MS, JWC_END_MS, JWC_DOWNTIME_MS, JWC_RESTART_SPARE_MS = 700, 2_600, 300, 100


@dataclass(slots=True)
class _TransferCrashes:
    joiner_crash_ms: int = -1
    joiner_batch_keys: int = 0  # keys of the batch lost with the joiner's crash
    owner: str = ""
    owner_crash_ms: int = -1
    owner_in_flight: list[int] = field(default_factory=list)  # partitions being sent


def _build_join_with_crash(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    joiner = Joiner(f"n{options.nodes}")
    expected = expected_ring(names, SIM_CONFIG, [joiner])
    losers = _losers(names, expected)
    gained = {p for p, (_, new) in moves(make_ring(names, SIM_CONFIG), expected,
                                         SIM_CONFIG.n_val).items() if joiner.name in new}
    actions = [FaultAction(MEMBER_ADD_MS, "add", node=joiner.name),
               FaultAction(MEMBER_JOIN_MS, "join", node=joiner.name, via=names[1]),
               FaultAction(JWC_COMMIT_MS, "commit", via=names[2]),
               FaultAction(JWC_END_MS - 600, "heal")]
    sim = _membership_sim(options, actions, expected, _hot_keys(names, expected))
    record = _TransferCrashes()

    def watch_owners() -> None:
        """Crash the first old owner seen with a transfer batch in flight."""
        if record.joiner_crash_ms < 0 or record.owner_crash_ms >= 0:
            return
        for name in losers:
            node = sim.cluster.nodes[name].node
            sending = sorted(p for p, t in node.transfers.items() if t.waiting) if node else []
            if sending:
                record.owner, record.owner_crash_ms = name, sim.scheduler.now_ms
                record.owner_in_flight = sending
                sim.cluster.crash(name)
                sim.scheduler.after(JWC_DOWNTIME_MS,
                                    functools.partial(sim.cluster.restart, name))
                return

    def crash_on_batch(writes: Sequence[Write]) -> Literal["before", "after"] | None:
        batch = [w for w in writes if w.partition in gained and w.value is not None]
        if len(batch) < 2:  # a client's write, not a transfer batch
            return None
        now = sim.scheduler.now_ms
        record.joiner_crash_ms, record.joiner_batch_keys = now, len(batch)
        sim.scheduler.after(JWC_DOWNTIME_MS, lambda: sim.cluster.restart(joiner.name))
        # Until the owner, crashed now, would restart with time to spare before the end.
        _every(sim, now + JWC_DOWNTIME_MS, JWC_END_MS - JWC_DOWNTIME_MS - JWC_RESTART_SPARE_MS,
               1, watch_owners)
        return "before"

    def arm_joiner() -> None:
        sim.cluster.nodes[joiner.name].sync_hook = crash_on_batch

    sim.scheduler.at(JWC_COMMIT_MS, arm_joiner)

    def verify(result: SimResult) -> list[str]:
        failures = _commit_during(sim, JWC_COMMIT_MS, JWC_END_MS)
        if record.joiner_crash_ms < 0:
            failures.append(f"{joiner.name} did not crash at the sync of a transfer batch")
        elif record.owner_crash_ms < 0:
            failures.append("no old owner crashed with a transfer in flight after "
                            f"{joiner.name} came back")
        owned = [key for key in sim.workload.touched_keys()
                 if joiner.name in sim.cluster.primaries(BUCKET_TYPE, *key, sim.config.n_val,
                                                         expected)]
        if not owned:
            failures.append(f"no key touched is owned by {joiner.name}")
        failures += _node_lacks_acked_writes(sim, joiner.name, owned)
        return failures + membership_premise(sim, expected, 2, [joiner]) + _hints_left(sim)

    return sim, verify


# leave-under-load: n3 leaves while clients write; a node that gains some of its
# partitions is cut off from everyone from before the commit until after it, so the
# transfers to it wait; the leaver must end owning nothing and holding nothing.
LUL_LEAVE_MS, LUL_CUT_MS, LUL_COMMIT_MS, LUL_RESTORE_MS, LUL_END_MS = 400, 500, 700, 1_800, 2_600


@dataclass(slots=True)
class _LeaveRecord:
    waiting_for_cut: dict[int, int] = field(default_factory=dict)  # partition -> keys


def _build_leave_under_load(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    leaver = names[3]
    expected = expected_ring(names, SIM_CONFIG, leavers=[leaver])
    gains = {p: new for p, (_, new) in moves(make_ring(names, SIM_CONFIG), expected,
                                             SIM_CONFIG.n_val).items()}
    # Cut off a node that gains some of the leaver's partitions (not the claimant, which
    # must apply the commit); the leave is staged and committed through two others.
    isolated = next(n for n in names[1:] if n != leaver and any(n in g for g in gains.values()))
    via_leave, via_commit = [n for n in names[1:] if n not in (leaver, isolated)][:2]
    links = split_links([isolated], [n for n in names if n != isolated], one_way=False)
    actions = [FaultAction(LUL_LEAVE_MS, "leave", node=leaver, via=via_leave),
               FaultAction(LUL_CUT_MS, "cut", links=links),
               FaultAction(LUL_COMMIT_MS, "commit", via=via_commit),
               FaultAction(LUL_RESTORE_MS, "restore", links=links),
               FaultAction(LUL_RESTORE_MS, "heal")]
    hot = _hot_keys(names, expected)
    sim = _membership_sim(options, actions, expected, hot,
                          [("blind", (leaver,), None), ("rmw", (isolated,), 1)])
    record = _LeaveRecord()
    waiting = sorted(p for p, g in gains.items() if isolated in g)

    def at_restore() -> None:
        held = held_not_owned(sim, leaver, expected)
        record.waiting_for_cut = {p: held[p] for p in waiting if p in held}

    sim.scheduler.at(LUL_RESTORE_MS - 1, at_restore)

    def verify(result: SimResult) -> list[str]:
        failures = _commit_during(sim, LUL_CUT_MS, LUL_RESTORE_MS)
        if not record.waiting_for_cut:
            failures.append(f"{leaver} held nothing for {isolated}'s new partitions "
                            f"{waiting} when the cut healed: no transfer waited for it")
        if not _acked(sim, hot, "put", LUL_COMMIT_MS, LUL_RESTORE_MS):
            failures.append("no write was acknowledged while the leave was under way")
        return failures + membership_premise(sim, expected, 2, leavers=[leaver]) + _hints_left(sim)

    return sim, verify


# remove-dead-node: n3 dies for good while clients write (writes for its replicas go to
# fallbacks, with hints for it); it is staged for removal through one member and the
# plan committed through another. It is removed at once, without handoff: its hints
# are dropped and their copies handed to the new owners, and the replicas it held are
# rebuilt on them from the other copies (read repair, anti-entropy).
RDN_CRASH_MS, RDN_REMOVE_MS, RDN_COMMIT_MS, RDN_END_MS = 400, 1_000, 1_100, 2_600


def _build_remove_dead_node(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    dead = names[3]
    expected = expected_ring(names, SIM_CONFIG, leavers=[dead])
    via_remove, via_commit = names[1], names[2]
    actions = [FaultAction(RDN_CRASH_MS, "crash", node=dead),
               FaultAction(RDN_REMOVE_MS, "remove", node=dead, via=via_remove),
               FaultAction(RDN_COMMIT_MS, "commit", via=via_commit)]
    hot = _hot_keys(names, expected)
    sim = _membership_sim(options, actions, expected, hot)
    gained = {p for p, (_, new) in moves(make_ring(names, SIM_CONFIG), expected,
                                         SIM_CONFIG.n_val).items() if new}

    def verify(result: SimResult) -> list[str]:
        failures = _commit_during(sim, RDN_REMOVE_MS, RDN_END_MS)
        removal = [e for e in sim.membership if e.what == f"remove {dead}"]
        if not removal or not removal[-1].ok:
            failures.append(f"the removal of {dead} was not staged: "
                            f"{[(e.time_ms, e.ok, e.answer) for e in removal]}")
        if not _acked(sim, hot, "put", RDN_CRASH_MS, RDN_COMMIT_MS):
            failures.append(f"no write was acknowledged while {dead} was down")
        if not _acked(sim, hot, "put", RDN_COMMIT_MS, RDN_END_MS):
            failures.append("no write was acknowledged after the removal")
        if result.stats["ae_keys_repaired"] + result.stats["read_repairs"] == 0:
            failures.append(f"nothing was repaired: {dead}'s replicas were not rebuilt")
        if not gained:
            failures.append(f"no partition of {dead} gained an owner")
        return (failures + membership_premise(sim, expected, 2, removed=[dead])
                + _hints_left(sim, dead=[dead]))

    return sim, verify


# two-joins-one-plan: n5 (weight 1) and n6 (weight 2) are staged through two members
# and join in one plan, committed through a third, over a lossy network.
TJ_LOSSY_MS, TJ_COMMIT_MS, TJ_HEAL_MS, TJ_END_MS = 300, 800, 1_800, 2_600


def _build_two_joins(options: SimOptions) -> tuple[Simulation, Verify]:
    names = node_names(options.nodes)
    light, heavy = Joiner(f"n{options.nodes}", 1), Joiner(f"n{options.nodes + 1}", 2)
    expected = expected_ring(names, SIM_CONFIG, [light, heavy])
    actions = [FaultAction(TJ_LOSSY_MS, "network", network=LOSSY),
               FaultAction(MEMBER_ADD_MS, "add", node=light.name, weight=light.weight),
               FaultAction(MEMBER_ADD_MS, "add", node=heavy.name, weight=heavy.weight),
               FaultAction(MEMBER_JOIN_MS, "join", node=light.name, via=names[0]),
               FaultAction(MEMBER_JOIN_MS + 50, "join", node=heavy.name, via=names[-1]),
               FaultAction(TJ_COMMIT_MS, "commit", via=names[1], staged=2),
               FaultAction(TJ_HEAL_MS, "heal")]
    sim = _membership_sim(options, actions, expected, _hot_keys(names, expected))

    def verify(result: SimResult) -> list[str]:
        failures = _commit_during(sim, TJ_COMMIT_MS, TJ_END_MS)
        counts = {j.name: len(expected.partitions_of(j.name)) for j in (light, heavy)}
        if counts[heavy.name] != 2 * counts[light.name]:
            failures.append(f"partitions owned {counts}: the weight-2 node should own twice "
                            "the weight-1 node's")
        if result.stats["lost"] == 0:
            failures.append("the network lost no message")
        return failures + membership_premise(sim, expected, 2, [light, heavy]) + _hints_left(sim)

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
                 "local deletes started a new actor epoch)", _build_fallback_rewrite,
                 duration_ms=5_000),
        Scenario("fallback-crash", "two owners down, writes through fallbacks, a fallback "
                 "holding hints crashes and restarts, the owners return",
                 _build_fallback_crash, duration_ms=FALLBACK_CRASH_CLIENTS_END_MS),
        Scenario("owner-returns-during-handoff", "an owner returns while hundreds of its "
                 "hints are handed off and their keys keep being written",
                 _build_owner_returns, duration_ms=HANDOFF_DURATION_MS),
        Scenario("wipe-repair", "a node loses its disk and anti-entropy alone restores it",
                 _build_wipe_repair, duration_ms=WIPE_DURATION_MS),
        Scenario("long-partition-hints-lost", "a long 2 | 3 split with hinted handoff off, "
                 "healed: anti-entropy converges the replicas", _build_long_partition,
                 duration_ms=LONG_HEAL_MS),
        Scenario("delete-races-repair", "deletes racing with read repair, anti-entropy and "
                 "reaping while replicas miss deletes", _build_delete_races,
                 duration_ms=LATE_BACK_MS),
        Scenario("handoff-backoff", "an owner crashes again while its hints are handed off; "
                 "the hints then wait the maximum backoff", _build_handoff_backoff,
                 duration_ms=2_500),
        Scenario("reaper-spin", "a reap waits for a lost vote while the reap interval is "
                 "shorter than the request timeout", _build_reaper_spin,
                 duration_ms=2_000),
        Scenario("reap-read-repair", "a read repair computed before a tombstone was reaped "
                 "arrives after it", _build_reap_read_repair,
                 duration_ms=STALE_HEAL_MS),
        Scenario("request-id-reuse", "a node restarts and reuses the request id of an "
                 "exchange whose reply is still on its way", _build_request_id_reuse,
                 duration_ms=REUSE_HEAL_MS),
        Scenario("join-under-partition", "a node joins; the plan is committed while a "
                 "2 | 3 split cuts an old owner off; clients write on both sides; heal",
                 _build_join_under_partition, duration_ms=JUP_END_MS),
        Scenario("join-with-crash", "a node joins; an old owner crashes during its "
                 "transfers, then the joiner crashes at a transfer batch; both restart",
                 _build_join_with_crash, duration_ms=JWC_END_MS),
        Scenario("leave-under-load", "a member leaves while clients write and a node that "
                 "gains its partitions is cut off", _build_leave_under_load,
                 duration_ms=LUL_END_MS),
        Scenario("remove-dead-node", "a node dies for good while clients write and is "
                 "removed; its replicas are rebuilt on the new owners",
                 _build_remove_dead_node, duration_ms=RDN_END_MS),
        Scenario("two-joins-one-plan", "two nodes (weights 1 and 2) join in one plan over a "
                 "lossy network", _build_two_joins, duration_ms=TJ_END_MS),
    )
}


def scenario_options(name: str, seed: int, base: SimOptions | None = None) -> SimOptions:
    base = base or SimOptions()
    return replace(base, seed=seed, scenario=name, nodes=5,
                   duration_ms=SCENARIOS[name].duration_ms, faults="none", lww=False)


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
