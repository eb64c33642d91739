"""Sloppy quorum, hinted handoff, primary quorums, read repair and the failure
detector, with failures injected into an in-process cluster."""

from __future__ import annotations

import pytest

from dynakv.config import Config
from dynakv.core import api, limits
from dynakv.core import messages as m
from dynakv.core.errors import ErrorKind
from dynakv.core.hints import HANDOFF_BACKOFF_MIN_MS, HINTS_PARTITION, HintLedger
from dynakv.core.ring import Ring, preference_list
from tests.core.instant import InstantCluster

NAMES = ["a", "b", "c", "d", "e"]


def put(cluster: InstantCluster, via: str, key: str, value: bytes,
        **options: int) -> api.Response:
    request = api.PutRequest("default", "b", key, api.Content(value), **options)  # type: ignore[arg-type]
    return cluster.request(via, request)


def owners(cluster: InstantCluster, key: str) -> list[str]:
    partition = cluster.ring.partition_of("default", "b", key)
    return [t.node for t in preference_list(cluster.ring, partition, 3)]


def test_preference_list_skips_down_nodes_and_names_whom_fallbacks_stand_in_for() -> None:
    ring = Ring(("a", "b", "c", "d", "e", "a", "b", "c"))
    targets = preference_list(ring, 0, 3, up={"a", "c", "d", "e"})
    assert [(t.node, t.primary, t.hint_for) for t in targets] == [
        ("a", True, ""), ("c", True, ""), ("d", False, "b")]
    assert len(preference_list(ring, 0, 3, up={"a"})) == 1


def test_write_with_two_owners_down_goes_to_fallbacks_with_hints_then_hands_off() -> None:
    # Anti-entropy off: its catch-up exchange with the owner back up would repair the
    # owner from the primary before handoff could be seen doing it.
    cluster = InstantCluster(NAMES, config=Config(ring_size=16, anti_entropy_enabled=False))
    primary, *gone = owners(cluster, "k")
    for name in gone:
        cluster.crash(name)
    assert isinstance(put(cluster, primary, "k", b"v", w=2), api.DoneResponse)
    got = cluster.request(primary, api.GetRequest("default", "b", "k", r=2))
    assert isinstance(got, api.ObjectResponse) and [s.value for s in got.siblings] == [b"v"]
    holders = {name: dict(cluster.nodes[name].hints.counts) for name in NAMES
               if cluster.nodes[name].hints.counts}
    assert holders and all(set(counts) <= set(gone) for counts in holders.values())
    fallback = sorted(holders)[0]
    target = sorted(holders[fallback])[0]

    # The owner is back but cannot hear the fallback: the hint must stay.
    cluster.restart(target)
    cluster.drop.add((fallback, target))
    cluster.advance(5 * cluster.config.handoff_interval_ms)
    assert cluster.nodes[fallback].hints.counts.get(target) == 1
    assert cluster.local(target, "b", "k") == []

    cluster.drop.clear()
    cluster.advance(40_000)  # past the backoff
    assert cluster.local(target, "b", "k") == [b"v"]
    assert target not in cluster.nodes[fallback].hints.counts
    assert cluster.nodes[fallback].hints.delivered >= 1


def test_hints_survive_a_restart_of_the_fallback() -> None:
    cluster = InstantCluster(NAMES)
    primary, *gone = owners(cluster, "k")
    for name in gone:
        cluster.crash(name)
    assert isinstance(put(cluster, primary, "k", b"v", w=3), api.DoneResponse)
    fallbacks = [n for n in NAMES if cluster.nodes[n].hints.counts]
    for name in fallbacks:
        cluster.crash(name)
        cluster.restart(name)
        assert cluster.nodes[name].hints.counts  # reloaded from storage
    for name in gone:
        cluster.restart(name)
    cluster.advance(5_000)
    for name in gone:
        assert cluster.local(name, "b", "k") == [b"v"]
    for name in fallbacks:
        assert not cluster.nodes[name].hints.counts
        assert cluster.storage[name].scan(HINTS_PARTITION, b"", 10) == []
        assert cluster.local(name, "b", "k") == []  # its fallback copy is dropped


def test_primary_quorums_refuse_before_sending_anything() -> None:
    cluster = InstantCluster(NAMES)
    primary, second, _third = owners(cluster, "k")
    cluster.crash(second)
    sent_before = len(cluster.sent)
    refused = put(cluster, primary, "k", b"v", pw=3)
    assert isinstance(refused, api.ErrorResponse)
    assert refused.kind is ErrorKind.UNAVAILABLE and "pw=3" in refused.message
    assert not [s for s in cluster.sent[sent_before:] if not isinstance(s[2], m.Ping)]
    refused_read = cluster.request(primary, api.GetRequest("default", "b", "k", pr=3))
    assert isinstance(refused_read, api.ErrorResponse) and "pr=3" in refused_read.message
    assert isinstance(put(cluster, primary, "k", b"v", pw=2), api.DoneResponse)


def test_hints_past_the_bound_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "HINTS_PER_TARGET_MAX", 1)
    cluster = InstantCluster(["a", "b", "c", "d"], ring_size=8)
    cluster.crash("d")
    results = [put(cluster, "a", f"key{i}", b"v", w=3) for i in range(40)]
    refused = [r for r in results if isinstance(r, api.ErrorResponse)]
    assert refused, "with one hint allowed per target, some w=3 writes must fail"
    assert all(max(n.hints.counts.values(), default=0) <= 1 for n in cluster.nodes.values())
    assert sum(n.hints.refused for n in cluster.nodes.values()) >= 1


def test_read_repair_updates_a_replica_that_missed_a_write() -> None:
    cluster = InstantCluster(["a", "b", "c"], config=Config(ring_size=16,
                                                           hinted_handoff_enabled=False))
    cluster.crash("c")
    assert isinstance(put(cluster, "a", "k", b"v", w=2), api.DoneResponse)
    cluster.restart("c")
    assert cluster.local("c", "b", "k") == []
    got = cluster.request("b", api.GetRequest("default", "b", "k"))
    assert isinstance(got, api.ObjectResponse)
    assert cluster.local("c", "b", "k") == [b"v"]
    assert cluster.nodes["b"].stats["read_repairs"] == 1


def test_a_tombstone_is_read_repaired_like_a_value() -> None:
    cluster = InstantCluster(["a", "b", "c"], config=Config(ring_size=16,
                                                           hinted_handoff_enabled=False))
    assert isinstance(put(cluster, "a", "k", b"v", w=3), api.DoneResponse)
    cluster.crash("c")
    deleted = cluster.request("a", api.DeleteRequest("default", "b", "k"))
    assert isinstance(deleted, api.DoneResponse)
    cluster.restart("c")
    assert cluster.local("c", "b", "k") == [b"v"]
    got = cluster.request("b", api.GetRequest("default", "b", "k"))
    assert isinstance(got, api.ObjectResponse) and got.deleted
    assert cluster.local("c", "b", "k") == []


def test_a_silent_peer_is_marked_down_by_probes_and_up_when_heard() -> None:
    config = Config(ring_size=16, probe_interval_ms=100, phi_acceptable_pause_ms=100,
                    phi_min_std_deviation_ms=30)
    cluster = InstantCluster(["a", "b", "c"], config=config)
    cluster.drop.update({("c", "a"), ("c", "b")})  # c's messages vanish; no connection event
    cluster.advance(500)
    assert cluster.nodes["a"].down == {"c"} and cluster.nodes["b"].down == {"c"}
    cluster.drop.clear()
    cluster.advance(200)
    assert not cluster.nodes["a"].down and not cluster.nodes["b"].down


def test_a_failed_round_backs_off_once_and_an_owner_coming_up_clears_it() -> None:
    """Every delivery of a failed batch fails together: one backoff step per round, not
    per delivery; and the owner coming back up forgets the backoff."""
    ledger = HintLedger()
    for _ in range(100):
        ledger.add("n2")
    ledger.round_started("n2")
    for _ in range(100):  # the whole batch times out
        ledger.failed("n2", now_ms=1_000)
    assert ledger.backoff_ms["n2"] == HANDOFF_BACKOFF_MIN_MS
    assert not ledger.due("n2", 1_000 + HANDOFF_BACKOFF_MIN_MS - 1)
    assert ledger.due("n2", 1_000 + HANDOFF_BACKOFF_MIN_MS)
    ledger.round_started("n2")
    ledger.failed("n2", now_ms=2_000)
    ledger.failed("n2", now_ms=2_000)
    assert ledger.backoff_ms["n2"] == 2 * HANDOFF_BACKOFF_MIN_MS
    ledger.peer_up("n2")
    assert ledger.due("n2", 2_001)
