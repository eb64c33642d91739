"""The checkers can fail: broken merges injected here (never in core/) are caught,
last-write-wins loses acknowledged writes, and each checker flags what it exists for."""

from __future__ import annotations

import pytest

from dynakv.core import api, dvvset, limits
from dynakv.core import messages as m
from dynakv.core.node import Node
from dynakv.core.storage import Write
from dynakv.sim import checkers, runner
from dynakv.sim.checkers import FinalState, Observations
from dynakv.sim.network import LINK_IN_FLIGHT_MAX, NetworkStats
from dynakv.sim.runner import LWW_BUCKET, SimOptions, Simulation, run
from dynakv.sim.workload import ClientSpec, Key, Op, WorkloadParams

SHORT = SimOptions(seed=3, faults="none", duration_ms=1_500)


def _clock(*entries: tuple[str, int, tuple[bytes, ...]]) -> api.Object:
    return dvvset.Clock(tuple(
        dvvset.Entry(server, counter, tuple(api.Content(v) for v in values))
        for server, counter, values in entries))


def test_a_merge_that_drops_siblings_is_caught_by_checker_1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_sync = dvvset.sync

    def sync_dropping_older_siblings(a: api.Object, b: api.Object) -> api.Object:
        merged = real_sync(a, b)
        return dvvset.Clock(tuple(
            dvvset.Entry(e.server_id, e.counter, e.values[:1]) for e in merged.entries))

    monkeypatch.setattr(dvvset, "sync", sync_dropping_older_siblings)
    result = run(SHORT)
    check = result.check("acknowledged-writes")
    assert not check.ok
    assert any("the cluster discarded it" in text for text in check.violations)
    assert result.failed


def test_a_merge_that_keeps_superseded_values_is_caught_by_checker_4(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_sync = dvvset.sync

    def sync_keeping_everything(a: api.Object, b: api.Object) -> api.Object:
        merged = real_sync(a, b)
        entries = []
        for entry in merged.entries:
            values = list(entry.values)
            for side in (a, b):
                for other in side.entries:
                    if other.server_id == entry.server_id:
                        values += [v for v in other.values if v not in values]
            entries.append(dvvset.Entry(entry.server_id, max(entry.counter, len(values)),
                                        tuple(values)))
        return dvvset.Clock(tuple(entries))

    monkeypatch.setattr(dvvset, "sync", sync_keeping_everything)
    result = run(SimOptions(seed=3, faults="none", duration_ms=800))
    check = result.check("siblings")
    assert not check.ok
    assert any("had seen it" in text for text in check.violations)


def test_last_write_wins_loses_acknowledged_writes() -> None:
    """Why siblings are the default: with last_write_wins, checker 1 fails (Jepsen)."""
    result = run(SimOptions(seed=3, faults="none", duration_ms=2_500, lww=True))
    check = result.check("acknowledged-writes")
    assert not check.ok
    lost = [text for text in check.violations if "put " in text]
    assert lost and all(f"put {LWW_BUCKET}/" in text for text in lost), check.summary()
    # The same run without the last_write_wins bucket loses nothing.
    assert not run(SimOptions(seed=3, faults="none", duration_ms=2_500)).failed


def test_writing_back_a_put_context_without_returnbody_keeps_concurrent_writes() -> None:
    """Regression: a put without returnbody used to answer join(object) as its context,
    covering siblings the client was never shown; writing back with it lost them."""
    key: Key = ("b0", "k0")
    clients = (ClientSpec("chain", keys=(key,), return_body=False),
               ClientSpec("blind", keys=(key,)), ClientSpec("blind", keys=(key,)))
    sim = Simulation(SimOptions(seed=0, faults="none", duration_ms=1_500),
                     workload=WorkloadParams(clients=clients, buckets=("b0",), end_ms=1_500))
    result = sim.run()
    assert result.check("acknowledged-writes").ok, result.check("acknowledged-writes").summary()


def test_checker_2_flags_a_value_no_client_wrote() -> None:
    observations = Observations()
    observations.issue(b"written")
    obj = _clock(("n0@1", 2, (b"written", b"invented")))
    observations.on_synced("n0", "n0@1", [Write(0, b"k", m.encode_object(obj))])
    final = FinalState({("b", "k"): {"n0": obj}}, {("b", "k"): ["n0"]}, {"n0@1"})
    check = checkers.check_no_phantoms([], observations, final)
    assert not check.ok and "invented" in check.summary()


def test_checker_1_flags_a_dot_that_names_two_writes() -> None:
    observations = Observations()
    for value in (b"one", b"two"):
        observations.issue(value)
    for value in (b"one", b"two"):
        obj = _clock(("n0@1", 1, (value,)))
        observations.on_synced("n0", "n0@1", [Write(0, b"k", m.encode_object(obj))])
    final = FinalState({}, {}, {"n0@1"})
    check = checkers.check_acknowledged_writes([], observations, final)
    assert not check.ok and "names two writes" in check.summary()


def test_checker_3_flags_replicas_that_differ_and_is_on_by_default() -> None:
    key: Key = ("b", "k")
    final = FinalState(
        {key: {"n0": _clock(("n0@1", 1, (b"v",))), "n1": _clock(("n0@1", 1, (b"v",)))}},
        {key: ["n0", "n1", "n2"]}, {"n0@1"})
    assert not checkers.check_convergence(final).ok
    assert "n2: []" in checkers.check_convergence(final).summary()
    assert checkers.check_convergence(final, enabled=False).ok
    assert "off" in checkers.check_convergence(final, enabled=False).summary()
    final.stored[key]["n2"] = _clock(("n0@1", 1, (b"v",)))
    assert checkers.check_convergence(final).ok
    assert SimOptions().check_convergence


def test_checker_3_flags_a_version_only_a_fallback_holds() -> None:
    """Identical primaries are not enough: a hint not handed off leaves them behind."""
    key: Key = ("b", "k")
    old = _clock(("n0@1", 1, (b"v",)))
    final = FinalState(
        {key: {"n0": old, "n1": old, "n2": old, "n3": _clock(("n0@1", 2, (b"w", b"v")))}},
        {key: ["n0", "n1", "n2"]}, {"n0@1"})
    check = checkers.check_convergence(final)
    assert not check.ok and "fallback copies on ['n3']" in check.summary()


def test_checker_3_accepts_a_tombstone_reaped_on_some_primaries_only() -> None:
    key: Key = ("b", "k")
    tombstone = dvvset.Clock((dvvset.Entry("n0@1", 2, (api.Content(b"", deleted=True),)),))
    final = FinalState({key: {"n0": tombstone, "n2": tombstone}}, {key: ["n0", "n1", "n2"]},
                       {"n0@1"})
    assert checkers.check_convergence(final).ok  # n1 reaped it first
    final.stored[key]["n1"] = _clock(("n0@1", 1, (b"v",)))  # but not a live older version
    assert not checkers.check_convergence(final).ok


def test_checker_3_passes_without_faults() -> None:
    result = run(SimOptions(seed=5, faults="none", duration_ms=1_500))
    assert result.check("convergence").enabled
    assert not result.failed, result.summary()
    assert result.settle_ms == runner.convergence_bound_ms(runner.SIM_CONFIG,
                                                           runner.node_names(5))


def test_the_convergence_bound_is_the_settle_time_and_stays_short() -> None:
    """The bound (docs/simulator.md): client timeout, two reconnect intervals, a tree
    build and two anti-entropy rounds; 3,580 ms with 5 nodes and the sim's Config."""
    assert runner.convergence_bound_ms(runner.SIM_CONFIG, runner.node_names(5)) == 3_580
    longer = runner.SIM_CONFIG.with_options(anti_entropy_interval_ms=100)
    assert runner.convergence_bound_ms(longer, runner.node_names(5)) == 3_580 + 2 * 24 * 80


def test_checker_6_flags_a_deleted_key_that_comes_back() -> None:
    key: Key = ("b0", "k0")
    observations = Observations()
    observations.issue(b"v")
    stored = _clock(("n0@1", 1, (b"v",)))
    observations.on_synced("n0", "n0@1", [Write(0, b"k", m.encode_object(stored))])
    context = api.encode_context(dvvset.join(stored))
    put = Op(0, 0, "put", "b0", "k0", "n0", 100, value=b"v", response=api.DoneResponse())
    delete = Op(1, 1, "delete", "b0", "k0", "n0", 200, context=context,
                seen=frozenset({b"v"}), response=api.DoneResponse())
    final = FinalState({key: {"n2": stored}}, {key: ["n0", "n1", "n2"]}, {"n0@1"})
    check = checkers.check_deletes([put, delete], observations, final)
    assert not check.ok and "live again" in check.summary()
    assert checkers.deleted_keys([put, delete], observations) == [key]
    # Gone everywhere, or only tombstones left: fine.
    assert checkers.check_deletes([put, delete], observations, FinalState({}, {}, set())).ok
    # A delete whose context had not seen every stored version judges nothing.
    blind = Op(1, 1, "delete", "b0", "k0", "n0", 200, context=b"", response=api.DoneResponse())
    assert checkers.check_deletes([put, blind], observations, final).ok
    assert checkers.deleted_keys([put, blind], observations) == []


def test_a_busy_loop_in_a_node_is_reported_not_hung(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose deadline stays in the past after a tick would stop virtual time;
    the cluster spaces its ticks 1 ms apart and checker 5 reports it."""
    real = Node.next_deadline_ms

    def stuck_after_one_second(self: Node) -> int | None:
        deadline = real(self)
        if self.name == "n1" and self.now_ms >= 1_000:
            return 1_000
        return deadline

    monkeypatch.setattr(Node, "next_deadline_ms", stuck_after_one_second)
    result = run(SimOptions(seed=3, faults="none", duration_ms=1_200, settle_ms=100))
    check = result.check("queues")
    assert not check.ok
    assert any(text.startswith("n1 ") and "a busy loop" in text for text in check.violations), \
        check.summary()


def test_checker_4_flags_too_many_siblings() -> None:
    observations = Observations()
    values = tuple(f"v{i}".encode() for i in range(limits.SIBLINGS_PER_KEY_MAX + 1))
    for value in values:
        observations.issue(value)
    obj = _clock(("n0@1", len(values), values))
    observations.on_synced("n0", "n0@1", [Write(0, b"k", m.encode_object(obj))])
    check = checkers.check_siblings([], observations, FinalState({}, {}, {"n0@1"}))
    assert not check.ok and "live siblings" in check.summary()


def test_checker_5_flags_queues_past_their_bound_and_forgotten_requests() -> None:
    stats = NetworkStats(link_in_flight_max=LINK_IN_FLIGHT_MAX + 1)
    forgotten = Op(0, 0, "get", "b0", "k0", "n1", 100, unanswered=True)
    check = checkers.check_queues([forgotten], Observations(), stats,
                                  {"n2": "a deadline that passed unserved"})
    assert len(check.violations) == 3, check.summary()
    assert "never answered" in check.summary()
    assert checkers.check_queues([], Observations(), NetworkStats(), {}).ok


def test_an_exception_in_a_node_is_reported_and_crashes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A core exception out of Node.step ends that node's process, not the run."""
    real = Node._on_message

    def fail_on_a_pong(self: Node, sender: str, message: m.Message) -> None:
        if self.name == "n2" and isinstance(message, m.Pong) and self.now_ms >= 500:
            raise ValueError("injected")
        real(self, sender, message)

    monkeypatch.setattr(Node, "_on_message", fail_on_a_pong)
    result = run(SimOptions(seed=3, faults="none", duration_ms=1_000))
    check = result.check("queues")
    assert any(text.startswith("n2 has an exception from step(), ValueError: injected")
               for text in check.violations), check.summary()
    assert result.stats["crashes"] >= 1
