"""The simulated cluster: real core Nodes driven like net/runtime.py drives them.

For each node the driver does what the production runtime does, in virtual time:
- feed it one event at a time (`Node.step(event, now_ms)`), then take its Output;
- put Outputs into a core.pipeline.CommitPipeline; when no sync is running, start
  one for every queued write (group commit): after a simulated fsync, apply them in
  one transaction, call `on_durable`, and only then send the messages and replies
  the pipeline releases (persist, then send). An Output that depends on no pending
  write is sent at once, as the runtime does;
- deliver a TickEvent at `next_deadline_ms()`, from the node's boot on; a node
  whose deadline stays in the past after SPIN_TICKS_MAX ticks at one virtual time
  is in a busy loop (a real runtime would spin): it is recorded in `spins`
  (checker 5) and its ticks are spaced 1 ms apart, so that virtual time goes on;
  an exception out of `step` is recorded (checker 5) and crashes the node, as it
  would end a real node's process;
- tell it when its connection to a peer breaks or opens (PeerStatusEvent), like
  the TCP transport (net/transport.py): a crash resets the peers' connections to
  the crashed node, so they see it down after one network delay, and a node that
  boots sees its connections to crashed peers refused as soon; while a
  connection is down it is retried every `reconnect_interval_ms`, and opens (the
  peer is up) when the peer is alive and no partition cuts either direction (a
  handshake goes both ways). A partition does not break an open connection unless
  the run's transport has `keepalive` (drawn per seed): then the check every
  `reconnect_interval_ms` also closes connections across a partition. Without it,
  only the core's own failure detector (pings) notices the partition.

A crash drops the Node object (its pending writes, request state, queued Outputs
and any sync in progress); restart builds a new Node on the same disk with the
same server id. A wipe empties the disk and draws a new incarnation, hence a new
server id `name@incarnation`, as a node whose data directory was lost would.

Membership: the first nodes boot as one cluster (the bootstrap state every node
computes from the same member list, as `dynakv node --peer ...` does). `add_node`
starts one more node mid-run, alone: a one-node cluster of its own, as `dynakv
node` with no peers; it becomes a member only when a member stages its join and a
plan is committed (the runner's membership actions). A restarted node takes its
membership from its disk (the stored state wins), like a real one. `current_ring`
is the newest ring any live node holds; `client_names` are the nodes clients may
talk to (members, as a load balancer would list them).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from dynakv.config import Config
from dynakv.core import api, codec
from dynakv.core import membership as ms
from dynakv.core import messages as m
from dynakv.core.claim import Member, claim
from dynakv.core.node import (
    ClientEvent,
    Event,
    MessageEvent,
    Node,
    PeerStatusEvent,
    TickEvent,
)
from dynakv.core.pipeline import CommitPipeline, Released
from dynakv.core.ring import Ring, key_bytes, primary_owners
from dynakv.core.storage import Write
from dynakv.sim.disk import DiskParams, SimDisk
from dynakv.sim.network import Network
from dynakv.sim.scheduler import Scheduler, Trace

# Ticks one node may take at one virtual time before it counts as a busy loop.
SPIN_TICKS_MAX = 10

# A one-shot hook a scenario sets on a node: looks at the writes of a sync about to
# happen and says whether to crash "before" it (the writes are lost) or "after" it
# (durable, but no message or reply of the batch is sent), or None to go on.
SyncHook = Callable[[Sequence[Write]], Literal["before", "after"] | None]


class ClusterObserver(Protocol):
    """What the checkers watch while the cluster runs."""

    def on_synced(self, node: str, server_id: str, writes: Sequence[Write]) -> None: ...

    def on_wiped(self, node: str) -> None: ...

    def on_sample(self, node: str, status: dict[str, Any], queued_outputs: int) -> None: ...


@dataclass(slots=True)
class SimNode:
    """One node's driver state; `node` is None while it is crashed."""

    name: str
    disk: SimDisk
    incarnation: str
    node: Node | None = None
    life: int = 0  # bumped at each crash and boot: stale syncs and ticks are ignored
    pipeline: CommitPipeline = field(default_factory=CommitPipeline)
    link_up: dict[str, bool] = field(default_factory=dict)
    ticks: set[int] = field(default_factory=set)
    sync_hook: SyncHook | None = None
    crashes: int = 0
    tick_ms: int = -1  # the virtual time of its last tick
    ticks_same_ms: int = 0  # ticks delivered at tick_ms
    past: dict[str, int] = field(default_factory=dict)  # metrics of its earlier lives
    # A node added mid-run: the one-node cluster it founds when its disk holds no state.
    founder: ms.ClusterState | None = None

    @property
    def server_id(self) -> str:
        return f"{self.name}@{self.incarnation}"


@dataclass(slots=True)
class ClusterStats:
    delivered_to_dead: int = 0
    peer_status_events: int = 0
    syncs: int = 0
    synced_writes: int = 0
    sync_batch_writes_max: int = 0


class Cluster:
    def __init__(
        self,
        *,
        names: Sequence[str],
        config: Config,
        scheduler: Scheduler,
        rng: random.Random,
        trace: Trace,
        observer: ClusterObserver,
        reply: Callable[[int, api.Response], None],
        disk_params: DiskParams,
        network_rng: random.Random,
        keepalive: bool = True,
    ) -> None:
        self.names = sorted(names)
        self.initial_names = list(self.names)  # the members the cluster boots with
        self.client_names = list(self.names)  # the nodes clients may talk to
        self.config = config
        self.scheduler = scheduler
        self.rng = rng
        self.trace = trace
        self.observer = observer
        self.reply = reply
        self.disk_params = disk_params
        self.keepalive = keepalive
        self.network = Network(scheduler, network_rng, self._deliver)
        self.ring = make_ring(self.names, config)
        self.stats = ClusterStats()
        self.nodes = {name: SimNode(name, SimDisk(), self._incarnation()) for name in self.names}
        self.server_ids: set[str] = set()
        # Busy loops: a node that asks for a tick at the same virtual time again and
        # again (its deadline stays in the past after a tick) would stop virtual time;
        # it is noted here (checker 5) and its ticks are then spaced 1 ms apart.
        self.spins: dict[str, str] = {}
        # Exceptions a node raised from step() (a core bug: checker 5); the node is
        # crashed, as its process would be, and restarts like any crashed node.
        self.errors: list[tuple[str, str]] = []  # (node, what happened)
        # Called with a node's name when it crashes (clients connected to it see the
        # connection drop).
        self.crash_listeners: list[Callable[[str], None]] = []

    def _incarnation(self) -> str:
        return f"{self.rng.getrandbits(32):08x}"

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        interval = self.config.reconnect_interval_ms
        for name in self.names:
            self._boot(self.nodes[name])
            phase = self.rng.randint(1, interval)
            self.scheduler.at(phase, functools.partial(self._probe, name))

    def add_node(self, name: str, weight: int = 1, zone: str = "") -> None:
        """Start a new node now, alone: it founds a one-node cluster of its own and
        joins this one only when a member stages its join (JoinRequest) and a plan is
        committed. Its connections to the others open as they would when the
        transport learns of it (the core ignores peers it does not know yet)."""
        if name in self.nodes:
            raise ValueError(f"node {name} already exists")
        sim_node = SimNode(name, SimDisk(), self._incarnation())
        own = ms.MemberInfo(name, f"{name}:sim", weight, zone)
        sim_node.founder = ms.new_cluster(self.config.cluster_name, sim_node.server_id, own,
                                          self.config.ring_size, self.config.n_val)
        self.nodes[name] = sim_node
        self.names = sorted([*self.names, name])
        for other in self.nodes.values():
            if other.name != name and other.node is not None:
                other.link_up[name] = True
        self._boot(sim_node)
        self.trace.record(self.scheduler.now_ms, name, "add", sim_node.server_id.encode())
        phase = self.rng.randint(1, self.config.reconnect_interval_ms)
        self.scheduler.after(phase, functools.partial(self._probe, name))

    def _boot(self, sim_node: SimNode) -> None:
        sim_node.life += 1
        sim_node.pipeline = CommitPipeline()
        sim_node.ticks = set()
        sim_node.link_up = {peer: True for peer in self.names if peer != sim_node.name}
        self.server_ids.add(sim_node.server_id)
        founder = sim_node.founder
        sim_node.node = Node(
            name=sim_node.name,
            server_id=sim_node.server_id,
            ring=self.ring if founder is None else Ring(founder.ring.owners),
            peers=self.initial_names if founder is None else [],
            storage=sim_node.disk,
            config=self.config,
            rng=random.Random(self.rng.getrandbits(64)),
            now_ms=self.scheduler.now_ms,
            cluster=founder,
        )
        # A booting node's timers run from the start (its first probes announce it),
        # as they do when the transport's connections open at a real node's start.
        sim_node.tick_ms, sim_node.ticks_same_ms = -1, 0
        deadline = sim_node.node.next_deadline_ms()
        if deadline is not None:
            self._arm_tick(sim_node, deadline)
        # Its connections to crashed peers are refused at once (the transport reports
        # a failed connect as the peer down; the core starts assuming every peer up).
        params = self.network.params
        for peer in self.names:
            if peer != sim_node.name and not self.alive(peer):
                delay = self.rng.randint(params.delay_min_ms, params.delay_max_ms)
                self.scheduler.after(delay, functools.partial(
                    self._connection_refused, sim_node.name, sim_node.life, peer))

    def alive(self, name: str) -> bool:
        return self.nodes[name].node is not None

    def alive_names(self) -> list[str]:
        return [name for name in self.names if self.nodes[name].node is not None]

    def crash(self, name: str, wipe: bool = False) -> None:
        sim_node = self.nodes[name]
        if sim_node.node is None:
            return
        for metric, count in node_metrics(sim_node.node).items():
            sim_node.past[metric] = sim_node.past.get(metric, 0) + count
        sim_node.node = None
        sim_node.life += 1
        sim_node.pipeline = CommitPipeline()
        sim_node.crashes += 1
        if wipe:
            sim_node.disk.wipe()
            sim_node.incarnation = self._incarnation()
            self.observer.on_wiped(name)
        self.trace.record(self.scheduler.now_ms, name, "wipe" if wipe else "crash", b"")
        for listener in self.crash_listeners:
            listener(name)
        params = self.network.params
        for peer in self.alive_names():
            delay = self.rng.randint(params.delay_min_ms, params.delay_max_ms)
            self.scheduler.after(delay, functools.partial(self._connection_lost, peer, name))

    def restart(self, name: str) -> None:
        sim_node = self.nodes[name]
        if sim_node.node is not None:
            return
        self._boot(sim_node)
        self.trace.record(self.scheduler.now_ms, name, "restart", sim_node.server_id.encode())

    # --- events in ------------------------------------------------------------------

    def submit(self, name: str, client_id: int, request: api.Request) -> bool:
        """A client's request arrives at `name`; False if the node is down."""
        if self.nodes[name].node is None:
            return False
        self._step(name, ClientEvent(client_id, request), "client", repr(request).encode())
        return True

    def _deliver(self, src: str, dst: str, payload: bytes) -> None:
        if self.nodes[dst].node is None:
            self.stats.delivered_to_dead += 1
            return
        message = codec.decode(payload)
        self._step(dst, MessageEvent(src, message), "msg:" + src, payload)

    def _step(self, name: str, event: Event, kind: str, payload: bytes) -> None:
        sim_node = self.nodes[name]
        node = sim_node.node
        assert node is not None
        now = self.scheduler.now_ms
        self.trace.record(now, name, kind, payload)
        try:
            node.step(event, now)
        except Exception as error:  # a bug in the core: the process would die
            self.errors.append((name, (
                f"an exception from step(), {type(error).__name__}: {error}, at {now} ms on "
                f"{kind} {event!r:.160} (it crashed)")))
            self.crash(name)
            return
        self._take_output(sim_node, node)
        deadline = node.next_deadline_ms()
        if deadline is not None:
            self._arm_tick(sim_node, deadline)

    def _arm_tick(self, sim_node: SimNode, deadline_ms: int) -> None:
        now = self.scheduler.now_ms
        at = max(deadline_ms, now)
        if at == now and sim_node.tick_ms == now and sim_node.ticks_same_ms >= SPIN_TICKS_MAX:
            # A real runtime would spin the CPU here; virtual time would stand still.
            self.spins.setdefault(sim_node.name, (
                f"a busy loop: after {SPIN_TICKS_MAX} ticks at {now} ms its next deadline was "
                f"still {deadline_ms} ms (a timer that a tick does not advance)"))
            at = now + 1
        if at in sim_node.ticks or (sim_node.ticks and min(sim_node.ticks) <= at):
            return
        sim_node.ticks.add(at)
        life = sim_node.life
        self.scheduler.at(at, lambda: self._tick(sim_node, life, at))

    def _tick(self, sim_node: SimNode, life: int, at: int) -> None:
        if sim_node.life != life:
            return
        sim_node.ticks.discard(at)
        if sim_node.tick_ms == at:
            sim_node.ticks_same_ms += 1
        else:
            sim_node.tick_ms, sim_node.ticks_same_ms = at, 1
        self._step(sim_node.name, TickEvent(), "tick", b"")

    # --- persist, then send ---------------------------------------------------------

    def _take_output(self, sim_node: SimNode, node: Node) -> None:
        output = node.take_output()
        if not output.empty():
            self._send(sim_node, output.early)
            self._release(sim_node, sim_node.pipeline.add(output))
        if sim_node.pipeline.has_writes() and not sim_node.pipeline.committing():
            self._start_sync(sim_node)

    def _start_sync(self, sim_node: SimNode) -> None:
        writes, seq = sim_node.pipeline.take_writes()
        latency = self.disk_params.fsync_ms(self.rng)
        life = sim_node.life
        self.scheduler.after(latency, lambda: self._sync_done(sim_node, life, writes, seq))

    def _sync_done(self, sim_node: SimNode, life: int, writes: list[Write], seq: int) -> None:
        if sim_node.life != life:
            return  # crashed during the sync: the batch is lost
        node = sim_node.node
        assert node is not None
        hook = sim_node.sync_hook(writes) if sim_node.sync_hook is not None else None
        if hook is not None:
            sim_node.sync_hook = None
        if hook == "before":
            self.crash(sim_node.name)
            return
        sim_node.disk.write(writes)
        self.stats.syncs += 1
        self.stats.synced_writes += len(writes)
        self.stats.sync_batch_writes_max = max(self.stats.sync_batch_writes_max, len(writes))
        self.trace.record(self.scheduler.now_ms, sim_node.name, "sync",
                          str(len(writes)).encode())
        self.observer.on_synced(sim_node.name, sim_node.server_id, writes)
        if hook == "after":
            self.crash(sim_node.name)
            return
        node.on_durable(seq)
        self._release(sim_node, sim_node.pipeline.committed(seq, True))
        self._take_output(sim_node, node)  # what on_durable produced; the next sync

    def _send(self, sim_node: SimNode, messages: list[tuple[str, m.Message]]) -> None:
        for peer, message in messages:
            self.network.send(sim_node.name, peer, codec.encode(message))

    def _release(self, sim_node: SimNode, released: list[Released]) -> None:
        for item in released:
            self._send(sim_node, item.output.messages)
            for client_id, response in item.output.replies:
                self.reply(client_id, response)

    # --- connections ----------------------------------------------------------------

    def _probe(self, name: str) -> None:
        """Every reconnect_interval_ms: reconnect what is down (and keepalive what is up)."""
        self.scheduler.after(self.config.reconnect_interval_ms, lambda: self._probe(name))
        sim_node = self.nodes[name]
        if sim_node.node is None:
            return
        for peer in sorted(sim_node.link_up):
            reachable = self.alive(peer) and self.network.connected(name, peer)
            was_up = sim_node.link_up[peer]
            if sim_node.node is not None and reachable != was_up and (
                    not was_up or self.keepalive):
                self._set_link(sim_node, peer, reachable)
        if sim_node.node is not None:
            self.observer.on_sample(name, sim_node.node.status(), sim_node.pipeline.held())

    def _connection_lost(self, name: str, peer: str) -> None:
        sim_node = self.nodes[name]
        if sim_node.node is not None and sim_node.link_up.get(peer) and not self.alive(peer):
            self._set_link(sim_node, peer, False)

    def _connection_refused(self, name: str, life: int, peer: str) -> None:
        sim_node = self.nodes[name]
        if (sim_node.life == life and sim_node.node is not None
                and sim_node.link_up.get(peer) and not self.alive(peer)):
            self._set_link(sim_node, peer, False)

    def _set_link(self, sim_node: SimNode, peer: str, up: bool) -> None:
        sim_node.link_up[peer] = up
        self.stats.peer_status_events += 1
        event = PeerStatusEvent(peer, up)
        self._step(sim_node.name, event, "peer", repr(event).encode())

    # --- inspection (checkers, scenarios) -------------------------------------------

    def metrics(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """node_metrics summed over the nodes (all by default) and all their lives."""
        total = dict.fromkeys(METRICS, 0)
        for name in names if names is not None else self.names:
            sim_node = self.nodes[name]
            for metric, count in sim_node.past.items():
                total[metric] += count
            if sim_node.node is not None:
                for metric, count in node_metrics(sim_node.node).items():
                    total[metric] += count
        return total

    def partition_of(self, bucket_type: str, bucket: str, key: str) -> int:
        return self.ring.partition_of(bucket_type, bucket, key)

    def primaries(self, bucket_type: str, bucket: str, key: str, n_val: int,
                  ring: Ring | None = None) -> list[str]:
        """A key's primary owners in `ring` (default: the ring the cluster booted with)."""
        partition = self.partition_of(bucket_type, bucket, key)
        return [target.node for target in primary_owners(ring or self.ring, partition, n_val)]

    def current_state(self) -> ms.ClusterState | None:
        """The cluster state with the newest ring among the live members of the first
        cluster (a node added but not joined yet holds a cluster of its own)."""
        lineage = None
        best: ms.ClusterState | None = None
        for name in self.initial_names:
            node = self.nodes[name].node
            if node is None:
                continue
            lineage = lineage or node.cluster.cluster_id
        for name in self.alive_names():
            node = self.nodes[name].node
            assert node is not None
            state = node.cluster
            if state.cluster_id == lineage and (
                    best is None or state.ring.order() > best.ring.order()):
                best = state
        return best

    def current_ring(self) -> Ring:
        """The newest ring a live member holds (the boot ring when none is up)."""
        state = self.current_state()
        return self.ring if state is None else Ring(state.ring.owners)

    def stored_objects(self, bucket_type: str, bucket: str, key: str) -> dict[str, api.Object]:
        """What every live node holds for a key (its storage, with its pending writes)."""
        partition = self.partition_of(bucket_type, bucket, key)
        raw_key = key_bytes(bucket_type, bucket, key)
        found: dict[str, api.Object] = {}
        for name in self.alive_names():
            node = self.nodes[name].node
            assert node is not None
            obj = node.read_object(partition, raw_key)
            if obj is not None:
                found[name] = obj
        return found


METRICS = ("hints_delivered", "read_repairs", "ae_exchanges", "ae_keys_repaired", "reaped",
           "transfers_done")


def node_metrics(node: Node) -> dict[str, int]:
    """Counters of one node's life (they start from zero at each restart)."""
    return {
        "hints_delivered": node.hints.delivered,
        "read_repairs": node.stats.get("read_repairs", 0),
        "ae_exchanges": node.ae.exchanges_done,
        "ae_keys_repaired": node.ae.keys_repaired,
        "reaped": node.reaper.reaped,
        "transfers_done": node.transfers_done,
    }


def make_ring(names: Sequence[str], config: Config) -> Ring:
    """The ring every node starts with: the claim over equal-weight members."""
    return Ring(claim(config.ring_size, [Member(name) for name in sorted(names)], config.n_val))
