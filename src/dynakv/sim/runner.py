"""One simulation run, and sweeps of many.

`Simulation` wires the parts together from one seed: a random.Random(seed) draws
the seeds of every other stream (cluster, network, workload, faults), so a run is
a pure function of its options. The timeline of a run:

    0                 the nodes boot (bucket properties are set if asked)
    100 ms            clients start
    300 ms            faults start (the mix's plan)
    75% of duration   faults stop: partitions heal, crashed nodes restart
    duration          clients stop sending
    + settle_ms       the checkers judge the history and the replicas; by default
                      settle_ms is convergence_bound_ms: every open request ends,
                      then anti-entropy reaches every pair of replicas (checker 3
                      judges them converged by then)

`run` returns a SimResult (trace hash, counts, checker results); `sweep` runs
many seeds, cycling through the fault mixes, in parallel processes if asked.
"""

from __future__ import annotations

import concurrent.futures
import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from dynakv.config import Config, preset
from dynakv.core import api, dvvset
from dynakv.core import membership as ms
from dynakv.core.ring import Ring, primary_owners
from dynakv.sim import checkers, faults
from dynakv.sim.checkers import CheckResult, FinalState, Observations
from dynakv.sim.cluster import Cluster, make_ring
from dynakv.sim.faults import FaultAction
from dynakv.sim.network import NetworkParams
from dynakv.sim.scheduler import Scheduler, Trace
from dynakv.sim.workload import BUCKET_TYPE, Op, Workload, WorkloadParams, default_clients

LWW_BUCKET = "lww"
FAULTS_START_MS = 300
MIXED = "mixed"  # a sweep's default: cycle through faults.SWEEP_MIXES
# The local preset (quorum defaults: N=3, R=W=2; reconnect, probe and handoff every
# 250 ms; tombstone grace 10 s, reaper every 1 s), shortened where a run of a few
# virtual seconds needs it:
# - request_timeout_ms 1 s (local: 5 s): a request whose messages were lost gives up
#   soon and its client goes on;
# - ring_size 16 (local: 64) and anti_entropy_interval_ms 20 (local: 100): a node
#   starts an exchange every 20 ms, round robin over its (partition, partner) pairs,
#   24 at most with 5 nodes and 16 partitions, so one anti-entropy round takes 480 ms
#   (7.8 s with the local preset's 64 partitions and 100 ms). Every exchange start
#   costs the core a walk over all of the node's partitions, so the smaller ring also
#   keeps a run cheap; it still gives each of 5 nodes 9 to 12 partitions to own.
# The tombstone grace stays 10 s, longer than a sweep's run: tombstones are reaped in
# the scenarios that shorten it (delete-races-repair), not in sweeps, because reaping
# within a run exposes a core bug (the reap-read-repair scenario, an xfail: with a
# 1 s grace the CI sweep lost a delete to it). Lower it to 1 s once that is fixed,
# keeping tombstone_reap_interval_ms >= request_timeout_ms (the reaper-spin bug).
SIM_CONFIG = preset("local").with_options(
    request_timeout_ms=1_000, ring_size=16, anti_entropy_interval_ms=20)
# Added to the client's timeout: open requests are answered or given up by then.
CLIENT_TIMEOUT_MARGIN_MS = 1_000


def node_names(count: int) -> list[str]:
    return [f"n{index}" for index in range(count)]


def convergence_bound_ms(config: Config, names: Sequence[str], ring: Ring | None = None) -> int:
    """Checker 3's bound: virtual time from the clients' stop until every replica of
    every key must hold the same versions (the default settle time). The sum of:

    - the client timeout (request_timeout_ms + CLIENT_TIMEOUT_MARGIN_MS): every
      request open at the stop has ended, and with it the replica writes, forwards
      and read repairs it caused; from then on only the cluster itself changes data;
    - two reconnect intervals: every connection is open again (faults stopped earlier);
    - a tree build (partitions owned x anti_entropy_build_interval_ms): a node that
      restarted late has its Merkle trees again;
    - one anti-entropy round: a node starts an exchange every
      anti_entropy_interval_ms, round robin over its (partition, partner) pairs, so
      within (pairs x interval) every pair has exchanged, and an exchange merges
      both ways; after every pair of a key's three replicas merged once, in any
      order, all three hold the merge of all three;
    - another round of slack: an exchange waits for a free slot (at most
      AE_EXCHANGES_IN_FLIGHT_MAX run at once) and a slow disk stretches one.

    With the sim's Config and 5 nodes: 2,000 + 500 + 120 + 2 x 480 = 3,580 ms (the
    slowest of the 200 CI seeds converged 1,100 ms after the clients stopped).
    `ring` is the ownership at the end when membership changes during the run (the
    nodes owning most partitions then set the tree build and the rounds).
    """
    ring = ring or make_ring(names, config)
    names = ring.nodes()
    owned = dict.fromkeys(names, 0)
    for partition in range(ring.size):
        for target in primary_owners(ring, partition, config.n_val):
            owned[target.node] += 1
    owned_max = max(owned.values())
    pairs_max = owned_max * (config.n_val - 1)
    quiet = config.request_timeout_ms + CLIENT_TIMEOUT_MARGIN_MS
    build = owned_max * config.anti_entropy_build_interval_ms
    rounds = 2 * pairs_max * config.anti_entropy_interval_ms
    return quiet + 2 * config.reconnect_interval_ms + build + rounds


@dataclass(frozen=True, slots=True)
class SimOptions:
    seed: int = 0
    nodes: int = 5
    duration_ms: int = 4_000
    faults: str = "chaos"
    clients: int = 6
    lww: bool = False  # add a bucket with last_write_wins (checker 1 then fails)
    check_convergence: bool = True  # checker 3 (on for every seed; off only to debug)
    scenario: str = ""  # a named scenario (scenarios.py) instead of a fault mix
    settle_ms: int = 0  # time after the clients stop before the checks; 0: the default
    trace_lines: int = 0  # keep the last lines of the trace (debugging)

    def replay_command(self) -> str:
        parts = ["python -m dynakv.sim", f"--seed {self.seed}"]
        if self.scenario:
            parts.append(f"--scenario {self.scenario}")
        else:
            parts += [f"--nodes {self.nodes}", f"--duration-ms {self.duration_ms}",
                      f"--faults {self.faults}", f"--clients {self.clients}"]
        if self.lww:
            parts.append("--lww")
        if not self.check_convergence:
            parts.append("--no-check-convergence")
        if self.settle_ms:
            parts.append(f"--settle-ms {self.settle_ms}")
        return " ".join(parts)


# A commit the membership actions retry (after a refusal: the claimant has not heard
# of the staged change yet, or cannot be reached) every COMMIT_RETRY_MS, at most
# COMMIT_ATTEMPTS_MAX times, as an operator would run `admin plan` and `commit` again.
COMMIT_RETRY_MS = 200
COMMIT_ATTEMPTS_MAX = 15


@dataclass(slots=True)
class MembershipEvent:
    """One membership request of the script and what came of it."""

    time_ms: int
    what: str  # "join n5", "leave n3", "plan", "commit"
    via: str
    ok: bool = False
    answer: str = ""  # the error message, or the committed plan's moves
    end_ms: int = -1
    # A commit whose answer was lost (a timeout) that a later plan through the same
    # member showed applied (nothing staged any more, a newer ring) by `end_ms`.
    applied: bool = False


@dataclass(slots=True)
class SimResult:
    options: SimOptions
    trace_hash: str
    events: int
    ops: dict[str, int]
    checks: list[CheckResult]
    stats: dict[str, int]
    faults: list[str]
    wall_s: float
    trace_lines: list[str] = field(default_factory=list)
    extra_failures: list[str] = field(default_factory=list)
    known_core_bug: str = ""  # a scenario expected to fail until the core is fixed
    settle_ms: int = 0  # the settle time the run used (checker 3's bound)

    @property
    def failed(self) -> bool:
        return bool(self.extra_failures) or not all(check.ok for check in self.checks)

    def check(self, name: str) -> CheckResult:
        return next(check for check in self.checks if check.name == name)

    def summary(self) -> str:
        options = self.options
        what = f"scenario {options.scenario}" if options.scenario else f"faults {options.faults}"
        lines = [
            f"seed {options.seed}: {options.nodes} nodes, {what}, "
            f"{options.duration_ms} ms, settle {self.settle_ms} ms, {self.events} events, "
            f"{self.wall_s:.2f} s",
            "ops " + " ".join(f"{name}={count}" for name, count in self.ops.items()),
            "stats " + " ".join(f"{name}={count}" for name, count in self.stats.items()),
        ]
        lines += [check.summary() for check in self.checks]
        lines += [f"scenario: FAILED {text}" for text in self.extra_failures]
        if self.known_core_bug:
            lines.append(f"known core bug: {self.known_core_bug}")
        lines.append(f"trace {self.trace_hash}")
        return "\n".join(lines)


class Simulation:
    """One run: the cluster, its clients and its faults, from `options.seed`.

    `workload` and `actions` replace the default clients and the fault mix's plan
    (scenarios.py scripts them); `config` replaces SIM_CONFIG.
    """

    def __init__(
        self,
        options: SimOptions,
        *,
        config: Config | None = None,
        workload: WorkloadParams | None = None,
        actions: Sequence[FaultAction] | None = None,
    ) -> None:
        self.options = options
        master = random.Random(options.seed)
        streams = [random.Random(master.getrandbits(64)) for _ in range(4)]
        cluster_rng, network_rng, workload_rng, fault_rng = streams
        # Half the runs model a transport whose keepalive closes connections across a
        # partition; the other half leave partitions to the core's failure detector.
        self.keepalive = master.random() < 0.5
        self.config = config or SIM_CONFIG
        self.scheduler = Scheduler()
        self.trace = Trace(options.trace_lines)
        self.observations = Observations()
        self.mix = faults.get_mix(options.faults) if not actions else faults.MIXES["none"]
        self.names = node_names(options.nodes)
        self.cluster = Cluster(
            names=self.names, config=self.config, scheduler=self.scheduler, rng=cluster_rng,
            trace=self.trace, observer=self.observations, reply=self._reply,
            disk_params=self.mix.disk, network_rng=network_rng, keepalive=self.keepalive,
        )
        self.fault_end_ms = int(options.duration_ms * 0.75)
        buckets = ("b0", "b1", LWW_BUCKET) if options.lww else ("b0", "b1")
        self.workload_params = workload or WorkloadParams(
            clients=default_clients(options.clients), buckets=buckets,
            end_ms=options.duration_ms,
        )
        self.workload = Workload(
            self.workload_params, self.scheduler, self.cluster, workload_rng, self.trace,
            self.observations.issue,
        )
        if actions is None:
            actions = faults.plan(self.mix, fault_rng, self.names, FAULTS_START_MS,
                                  self.fault_end_ms, groups=self.owner_groups())
        self.actions = list(actions)
        self.membership: list[MembershipEvent] = []
        # Every request still open when clients stop ends, then anti-entropy makes
        # every replica identical: checker 3's bound.
        self.settle_ms = options.settle_ms or convergence_bound_ms(self.config, self.names)

    def owner_groups(self) -> list[list[str]]:
        """The primary owners of each hot key (the correlated crashes hit two of them)."""
        params = self.workload_params
        hot = self.workload.keys[:params.hot_keys] if params.hot_keys else []
        groups = {tuple(sorted(self.cluster.primaries(BUCKET_TYPE, *key, self.config.n_val)))
                  for key in hot}
        return [list(group) for group in sorted(groups)]

    def _reply(self, client_id: int, response: api.Response) -> None:
        self.workload.on_reply(client_id, response)

    # --- faults -----------------------------------------------------------------------

    def apply(self, action: FaultAction) -> None:
        cluster = self.cluster
        match action.kind:
            case "network":
                assert action.network is not None
                cluster.network.params = action.network
            case "cut":
                cluster.network.cut(action.links)
            case "restore":
                cluster.network.restore(action.links)
            case "slow":
                cluster.network.slow_down(action.links, action.delay_ms)
            case "crash" | "wipe":
                cluster.crash(action.node, wipe=action.kind == "wipe")
            case "restart":
                cluster.restart(action.node)
            case "heal":
                cluster.network.heal_all()
                cluster.network.params = NetworkParams()
                for name in list(cluster.names):
                    cluster.restart(name)
            case "add":
                cluster.add_node(action.node, action.weight, action.zone)
            case "join":
                self._membership(action.via, f"join {action.node}", api.JoinRequest(
                    action.node, f"{action.node}:sim", self._weight(action.node),
                    self._zone(action.node)))
            case "leave":
                self._membership(action.via, f"leave {action.node}",
                                 api.LeaveRequest(action.node))
            case "remove":
                self._remove(action.via, action.node, 1)
            case "commit":
                node = cluster.nodes[action.via].node
                version = node.cluster.ring.version if node is not None else 0
                self._plan_and_commit(action.via, 1, version, action.staged)
        if action.kind in ("network", "cut", "restore", "slow", "heal"):
            self.trace.record(self.scheduler.now_ms, "-", "fault", action.describe().encode())

    # --- membership (scripted by scenarios) -------------------------------------------

    def _added(self, name: str) -> FaultAction:
        return next(a for a in self.actions if a.kind == "add" and a.node == name)

    def _weight(self, name: str) -> int:
        return self._added(name).weight

    def _zone(self, name: str) -> str:
        return self._added(name).zone

    def _membership(self, via: str, what: str, request: api.Request,
                    then: Callable[[MembershipEvent, api.Response | None], None] | None = None,
                    ) -> None:
        event = MembershipEvent(self.scheduler.now_ms, what, via)
        self.membership.append(event)
        if not self.cluster.alive(via):
            event.answer, event.end_ms = f"{via} is down", event.time_ms
            if then is not None:
                then(event, None)
            return

        def done(op: Op) -> None:
            response = op.response
            event.end_ms = self.scheduler.now_ms
            event.ok = isinstance(response, (api.DoneResponse, api.StatusResponse))
            if isinstance(response, api.ErrorResponse):
                event.answer = response.message
            elif response is None:
                event.answer = "no answer"
            if then is not None:
                then(event, response)

        self.workload.admin(via, request, then=done)

    def _remove(self, via: str, node: str, attempt: int) -> None:
        """`admin remove` of a dead node through `via`; refused while `via` still sees it
        up (its detector has not convicted it yet), so asked again, as an operator would
        once `admin status` shows it down."""

        def answered(event: MembershipEvent, response: api.Response | None) -> None:
            if not event.ok and attempt < COMMIT_ATTEMPTS_MAX:
                self.scheduler.after(COMMIT_RETRY_MS,
                                     lambda: self._remove(via, node, attempt + 1))

        self._membership(via, f"remove {node}", api.LeaveRequest(node, remove=True),
                         then=answered)

    def _plan_and_commit(self, via: str, attempt: int, version: int, expected: int) -> None:
        """`admin plan` then `admin commit` of that plan through `via` once it shows the
        `expected` staged changes; again after a refusal, as an operator would, until a
        plan past ring `version` (the one `via` held when asked) shows nothing staged: a
        commit whose answer was lost may have been applied. A committed plan changes
        which nodes clients use: joiners in, leavers out."""

        def retry() -> None:
            if attempt < COMMIT_ATTEMPTS_MAX:
                self.scheduler.after(COMMIT_RETRY_MS, lambda: self._plan_and_commit(
                    via, attempt + 1, version, expected))

        def planned(event: MembershipEvent, response: api.Response | None) -> None:
            if not isinstance(response, api.StatusResponse):
                retry()
                return
            plan = response.status
            staged = [(entry["name"], entry["status"]) for entry in plan["staged"]]
            if not staged:
                if plan["ring_version"] > version:  # committed already
                    event.answer = f"nothing staged at ring version {plan['ring_version']}"
                    lost = [e for e in self.membership if e.what == "commit" and e.via == via]
                    if lost and not lost[-1].ok:  # applied, though its answer was lost
                        lost[-1].applied, lost[-1].end_ms = True, self.scheduler.now_ms
                    self._follow_members()
                else:  # the staged change has not reached `via` yet
                    retry()
                return
            if len(staged) < expected and plan["ring_version"] == version and (
                    attempt < COMMIT_ATTEMPTS_MAX):
                retry()  # a change staged elsewhere has not reached `via` yet
                return

            def committed(event: MembershipEvent, answer: api.Response | None) -> None:
                if not isinstance(answer, api.DoneResponse):
                    retry()
                    return
                event.answer = (f"ring version {plan['ring_version'] + 1}: "
                                f"{len(plan['moves'])} partitions move; staged {staged}")
                self._follow_members()

            self._membership(via, "commit", api.CommitRequest(
                plan["ring_version"], tuple(plan["owners"])), then=committed)

        self._membership(via, "plan", api.PlanRequest(), then=planned)

    def _follow_members(self) -> None:
        """Clients talk to the valid members of the newest ring (as a load balancer
        would be updated after a commit): joiners in, leavers out."""
        state = self.cluster.current_state()
        if state is not None:
            self.cluster.client_names = sorted(
                info.name for info in state.members
                if info.status is ms.Status.VALID and info.name in self.cluster.nodes)

    def commits(self) -> list[MembershipEvent]:
        """The commits applied: accepted, or shown applied after their answer was lost."""
        return [event for event in self.membership
                if event.what == "commit" and (event.ok or event.applied)]

    # --- running ----------------------------------------------------------------------

    def run(self) -> SimResult:
        started = time.perf_counter()
        self.cluster.start()
        if self.options.lww:
            self.workload.admin(self.names[0], api.SetBucketPropsRequest(
                BUCKET_TYPE, LWW_BUCKET, {"last_write_wins": True}))
        for action in self.actions:
            self.scheduler.at(action.time_ms, functools.partial(self.apply, action))
        self.workload.start()
        end_ms = max(self.options.duration_ms, max((a.time_ms for a in self.actions), default=0))
        self.scheduler.run_until(end_ms + self.settle_ms)
        return self._result(time.perf_counter() - started)

    def final_state(self) -> FinalState:
        """What every live node holds for each key touched, with the key's primary owners
        in the newest ring and the nodes that left the cluster."""
        state = self.cluster.current_state()
        ring = self.cluster.ring if state is None else Ring(state.ring.owners)
        removed = frozenset() if state is None else frozenset(
            info.name for info in state.members if info.status is ms.Status.REMOVED)
        stored = {}
        primaries = {}
        for key in self.workload.touched_keys():
            stored[key] = self.cluster.stored_objects(BUCKET_TYPE, *key)
            primaries[key] = self.cluster.primaries(BUCKET_TYPE, *key, self.config.n_val, ring)
        return FinalState(stored, primaries, set(self.cluster.server_ids), removed)

    def leftovers(self) -> dict[str, str]:
        """What is wrong with the nodes at the end: a timer the driver let pass, a busy
        loop (a node that asked to be woken at the same time again and again), or an
        exception a node raised (it crashed)."""
        found: dict[str, str] = {}
        now = self.scheduler.now_ms
        for name in self.cluster.alive_names():
            node = self.cluster.nodes[name].node
            assert node is not None
            deadline = node.next_deadline_ms()
            if deadline is not None and deadline < now:
                found[name] = f"a deadline at {deadline} ms that passed unserved (now {now} ms)"
        for name, what in [*self.cluster.spins.items(), *self.cluster.errors]:
            found[name] = f"{found[name]}; {what}" if name in found else what
        return found

    def _hints_left(self) -> int:
        total = 0
        for name in self.cluster.alive_names():
            node = self.cluster.nodes[name].node
            assert node is not None
            total += sum(node.status().get("hints", {}).get("queued", {}).values())
        return total

    def _result(self, wall_s: float) -> SimResult:
        history = self.workload.history
        final = self.final_state()
        observations = self.observations
        checks = [
            checkers.check_acknowledged_writes(history, observations, final),
            checkers.check_no_phantoms(history, observations, final),
            checkers.check_convergence(final, self.options.check_convergence),
            checkers.check_siblings(history, observations, final),
            checkers.check_queues(history, observations, self.cluster.network.stats,
                                  self.leftovers()),
            checkers.check_deletes(history, observations, final),
        ]
        ops = {
            "attempted": sum(1 for op in history if op.kind != "admin"),
            "gets": sum(1 for op in history if op.kind == "get"),
            "puts": sum(1 for op in history if op.kind == "put"),
            "deletes": sum(1 for op in history if op.kind == "delete"),
            "acknowledged": sum(1 for op in history if op.acked),
            "reads_ok": sum(1 for op in history
                            if op.kind == "get" and isinstance(op.response, api.ObjectResponse)),
            "failed": sum(1 for op in history if op.failed),
        }
        network = self.cluster.network.stats
        stats = {
            "messages": network.sent,
            "lost": network.lost,
            "cut": network.cut,
            "duplicated": network.duplicated,
            "syncs": self.cluster.stats.syncs,
            "crashes": sum(node.crashes for node in self.cluster.nodes.values()),
            "peer_events": self.cluster.stats.peer_status_events,
            "keepalive": int(self.keepalive),
            "requests_in_flight_max": observations.requests_in_flight_max,
            "pending_writes_max": observations.pending_writes_max,
            "hints_max": observations.hints_per_target_max,
            "hints_left": self._hints_left(),
            "max_siblings": max((_live(final.union(key)) for key in final.stored), default=0),
            **self.cluster.metrics(),
        }
        return SimResult(
            options=self.options,
            trace_hash=self.trace.hexdigest(),
            events=self.trace.events,
            ops=ops,
            checks=checks,
            stats=stats,
            faults=[action.describe() for action in self.actions],
            wall_s=wall_s,
            trace_lines=list(self.trace.lines),
            settle_ms=self.settle_ms,
        )


def _live(obj: api.Object) -> int:
    return sum(1 for content in dvvset.values(obj) if not content.deleted)


def run(options: SimOptions) -> SimResult:
    """Run one simulation: a fault mix, or a named scenario when options.scenario is set."""
    if options.scenario:
        from dynakv.sim import scenarios

        return scenarios.run_scenario(options.scenario, options)
    return Simulation(options).run()


def sweep_options(count: int, start_seed: int, base: SimOptions) -> Iterator[SimOptions]:
    """The options of each run of a sweep: seeds from start_seed, mixes cycled if MIXED."""
    for index in range(count):
        mix = base.faults
        if mix == MIXED:
            mix = faults.SWEEP_MIXES[(start_seed + index) % len(faults.SWEEP_MIXES)]
        yield replace(base, seed=start_seed + index, faults=mix)


def sweep(
    count: int, start_seed: int, base: SimOptions, jobs: int = 1
) -> Iterator[SimResult]:
    """Run `count` seeds; results come back in seed order."""
    all_options = list(sweep_options(count, start_seed, base))
    if jobs <= 1:
        for options in all_options:
            yield run(options)
        return
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(run, all_options, chunksize=4)
