"""Tombstones are reaped only when every replica holds them, nothing is pending for
the key, and the grace time has passed; a deleted key never comes back."""

from __future__ import annotations

from dynakv.config import Config
from dynakv.core import api
from dynakv.core.ring import key_bytes, preference_list
from dynakv.core.tombstones import TOMBSTONES_PARTITION
from tests.core.instant import InstantCluster

GRACE_MS = 5_000
CONFIG = Config(ring_size=16, tombstone_grace_ms=GRACE_MS, tombstone_reap_interval_ms=200,
                anti_entropy_interval_ms=100, request_timeout_ms=2_000)


def stored(cluster: InstantCluster, name: str, key: str) -> bool:
    partition = cluster.ring.partition_of("default", "b", key)
    return cluster.storage[name].get(partition, key_bytes("default", "b", key)) is not None


def write_then_delete(cluster: InstantCluster, key: str, via: str = "a") -> None:
    put = cluster.request(via, api.PutRequest("default", "b", key, api.Content(b"old"), w=3))
    assert isinstance(put, api.DoneResponse)
    deleted = cluster.request(via, api.DeleteRequest("default", "b", key))
    assert isinstance(deleted, api.DoneResponse)


def test_a_tombstone_held_everywhere_is_reaped_after_the_grace_time() -> None:
    cluster = InstantCluster(["a", "b", "c"], config=CONFIG)
    write_then_delete(cluster, "k")
    cluster.advance(GRACE_MS // 2)
    assert all(stored(cluster, name, "k") for name in "abc")
    cluster.advance(GRACE_MS)
    assert not any(stored(cluster, name, "k") for name in "abc")
    assert all(cluster.storage[n].scan(TOMBSTONES_PARTITION, b"", 10) == [] for n in "abc")
    got = cluster.request("b", api.GetRequest("default", "b", "k", r=3))
    assert isinstance(got, api.ObjectResponse) and not got.found and not got.deleted


def test_no_reaping_while_a_replica_missed_the_delete_and_no_resurrection_after() -> None:
    cluster = InstantCluster(["a", "b", "c"], config=CONFIG.with_options(
        hinted_handoff_enabled=False))
    put = cluster.request("a", api.PutRequest("default", "b", "k", api.Content(b"old"), w=3))
    assert isinstance(put, api.DoneResponse)
    cluster.crash("c")
    assert isinstance(cluster.request("a", api.DeleteRequest("default", "b", "k")),
                      api.DoneResponse)
    cluster.advance(3 * GRACE_MS)
    assert stored(cluster, "a", "k") and stored(cluster, "b", "k")  # c is down: kept
    cluster.restart("c")
    assert cluster.local("c", "b", "k") == [b"old"]
    cluster.advance(3 * GRACE_MS)  # anti-entropy gives c the tombstone, then it is reaped
    assert not any(stored(cluster, name, "k") for name in "abc")
    for name in "abc":
        got = cluster.request(name, api.GetRequest("default", "b", "k", r=3))
        assert isinstance(got, api.ObjectResponse) and not got.found
    cluster.advance(3 * GRACE_MS)
    for name in "abc":  # and restarts bring nothing back
        cluster.crash(name)
        cluster.restart(name)
    cluster.advance(GRACE_MS)
    assert not any(stored(cluster, name, "k") for name in "abc")


def test_no_reaping_while_a_hint_for_the_key_is_pending() -> None:
    names = ["a", "b", "c", "d", "e"]
    cluster = InstantCluster(names, config=CONFIG)
    partition = cluster.ring.partition_of("default", "b", "k")
    owners = [t.node for t in preference_list(cluster.ring, partition, 3)]
    put = cluster.request(owners[0], api.PutRequest("default", "b", "k", api.Content(b"old"),
                                                    w=3))
    assert isinstance(put, api.DoneResponse)
    cluster.crash(owners[2])
    deleted = cluster.request(owners[0], api.DeleteRequest("default", "b", "k", w=3))
    assert isinstance(deleted, api.DoneResponse)
    fallback = next(n for n in names if cluster.nodes[n].hints.counts)
    cluster.restart(owners[2])
    cluster.drop.add((fallback, owners[2]))  # the hint cannot be delivered yet
    cluster.advance(3 * GRACE_MS)
    assert stored(cluster, owners[0], "k")  # a hint is pending: not reaped
    assert sum(n.reaper.reaped for n in cluster.nodes.values()) == 0
    cluster.drop.clear()
    cluster.advance(10 * GRACE_MS)
    assert not any(stored(cluster, name, "k") for name in names)
