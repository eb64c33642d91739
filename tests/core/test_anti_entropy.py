"""Anti-entropy between replicas, in an in-process cluster: a wiped node rebuilt
without client reads, a few divergent keys found and repaired cheaply, deletes kept."""

from __future__ import annotations

import random

from dynakv.config import Config
from dynakv.core import api, codec, dvvset
from dynakv.core import messages as m
from dynakv.core.ring import key_bytes
from dynakv.core.storage import Write
from tests.core.instant import InstantCluster

AE_CONFIG = Config(ring_size=16, hinted_handoff_enabled=False, anti_entropy_interval_ms=100,
                   request_timeout_ms=2_000)


def put(cluster: InstantCluster, via: str, key: str, value: bytes, w: int = 2) -> None:
    response = cluster.request(via, api.PutRequest("default", "b", key, api.Content(value), w=w,
                                                   dw=min(w, 2)))
    assert isinstance(response, api.DoneResponse), response


def test_a_wiped_node_gets_every_key_back_without_reads() -> None:
    cluster = InstantCluster(["a", "b", "c"], config=AE_CONFIG)
    for i in range(300):
        put(cluster, "a", f"k{i}", f"v{i}".encode(), w=3)
    cluster.wipe("c")
    cluster.restart("c")
    assert cluster.local("c", "b", "k7") == []
    cluster.advance(20_000)
    for i in range(300):
        assert cluster.local("c", "b", f"k{i}") == [f"v{i}".encode()]
    status = cluster.nodes["c"].status()["anti_entropy"]
    assert status["trees_built"] == 16 and status["exchanges_done"] > 0


def test_a_deleted_key_stays_deleted_when_a_replica_missed_the_delete() -> None:
    cluster = InstantCluster(["a", "b", "c"], config=AE_CONFIG)
    put(cluster, "a", "gone", b"v", w=3)
    cluster.crash("c")
    deleted = cluster.request("a", api.DeleteRequest("default", "b", "gone"))
    assert isinstance(deleted, api.DoneResponse)
    cluster.restart("c")
    assert cluster.local("c", "b", "gone") == [b"v"]  # c missed the delete
    cluster.advance(10_000)
    for name in ("a", "b", "c"):
        assert cluster.local(name, "b", "gone") == []
    got = cluster.request("c", api.GetRequest("default", "b", "gone", r=3))
    assert isinstance(got, api.ObjectResponse) and got.deleted


def test_few_divergent_keys_among_many_converge_in_one_round_cheaply() -> None:
    """100,000 keys on three replicas, 5 made to differ on one: after one exchange per
    (partition, partner) they agree, and the exchange bytes are a small fraction."""
    names = ["a", "b", "c"]
    config = Config(ring_size=16, anti_entropy_interval_ms=50, request_timeout_ms=5_000)
    cluster = InstantCluster(names, config=config)
    rng = random.Random(7)
    writes: list[Write] = []
    data_bytes = 0
    changed: list[tuple[int, bytes]] = []
    for i in range(100_000):
        key = key_bytes("default", "b", f"key{i:06d}")
        partition = cluster.ring.partition_of("default", "b", f"key{i:06d}")
        content = api.Content(bytes(rng.getrandbits(8) for _ in range(20)))
        obj: api.Object = dvvset.update(dvvset.new((), content), dvvset.Clock(), "a@1")
        encoded = m.encode_object(obj)
        data_bytes += len(key) + len(encoded)
        writes.append(Write(partition, key, encoded))
        if i % 20_000 == 0:
            changed.append((partition, key))
    for name in names:
        cluster.storage[name].write(writes)
    for partition, key in changed:  # c gets a newer version of 5 keys
        old = m.decode_object(cluster.storage["c"].get(partition, key) or b"")
        newer = dvvset.update(dvvset.new(dvvset.join(old), api.Content(b"newer")), old, "c@1")
        cluster.storage["c"].write([Write(partition, key, m.encode_object(newer))])
    for name in names:  # restart on the prepared disks: trees are built from storage
        cluster.crash(name)
    for name in names:
        cluster.restart(name)
        cluster.nodes[name].ae.next_exchange_ms = 1 << 40  # hold exchanges back: build first
    while any(n.ae.build_queue for n in cluster.nodes.values()):
        cluster.advance(100)  # trees are built in the background, a page per step
    assert cluster.storage["a"].get(*changed[0]) != cluster.storage["c"].get(*changed[0])
    for node in cluster.nodes.values():
        node.ae.next_exchange_ms = cluster.now_ms
    sent_before = len(cluster.sent)
    # One round: every node runs one exchange per (partition, partner) pair.
    pairs = 16 * 2
    cluster.advance(pairs * config.anti_entropy_interval_ms + 100)
    exchange_bytes = sum(len(codec.encode(message))
                         for _, _, message in cluster.sent[sent_before:]
                         if type(message).__name__.startswith("Ae"))
    for partition, key in changed:
        for name in names:
            stored = m.decode_object(cluster.storage[name].get(partition, key) or b"")
            assert [v.value for v in dvvset.values(stored)] == [b"newer"]
    print(f"data {data_bytes} bytes, one anti-entropy round {exchange_bytes} bytes "
          f"({100 * exchange_bytes / data_bytes:.2f}%)")
    assert exchange_bytes < data_bytes / 20
    assert sum(n.ae.keys_repaired for n in cluster.nodes.values()) >= 5


CATCH_UP_CONFIG = Config(ring_size=16, hinted_handoff_enabled=False,
                         anti_entropy_interval_ms=3_600_000, request_timeout_ms=2_000)


def missing_on(cluster: InstantCluster, name: str, keys: int) -> list[int]:
    return [i for i in range(keys) if cluster.local(name, "b", f"k{i}") != [f"v{i}".encode()]]


def test_a_replica_back_from_a_crash_is_caught_up_at_once() -> None:
    """No hints and a round of an hour: only catch-up exchanges can repair c within
    seconds of its restart (its trees are built first; a's and b's tries until then
    fail and are retried)."""
    cluster = InstantCluster(["a", "b", "c"], config=CATCH_UP_CONFIG)
    cluster.advance(1_000)  # the first round's exchanges are done
    cluster.crash("c")
    for i in range(200):
        put(cluster, "a", f"k{i}", f"v{i}".encode())
    cluster.restart("c")
    assert len(missing_on(cluster, "c", 200)) == 200
    cluster.advance(5_000)
    assert missing_on(cluster, "c", 200) == []
    done = sum(cluster.nodes[n].ae.catch_ups_done for n in ("a", "b"))
    assert done == 2 * 16  # every partition c shares with a and with b, once
    assert all(not cluster.nodes[n].ae.catch_up for n in ("a", "b", "c"))


def test_replicas_apart_in_a_partition_are_caught_up_when_it_heals() -> None:
    """c is cut off until a and b's detectors mark it down; writes on both sides
    (w=1, no hints) reach only their side; after the heal both sides have all."""
    cluster = InstantCluster(["a", "b", "c"], config=CATCH_UP_CONFIG)
    cluster.advance(1_000)
    cut = {(x, y) for x in ("a", "b") for y in ("c",)}
    cluster.drop |= cut | {(y, x) for x, y in cut}
    cluster.advance(10_000)
    assert cluster.nodes["a"].down == {"c"} and cluster.nodes["c"].down == {"a", "b"}
    for i in range(100):
        put(cluster, "a", f"k{i}", f"v{i}".encode(), w=1)
    for i in range(100, 200):
        put(cluster, "c", f"k{i}", f"v{i}".encode(), w=1)
    assert len(missing_on(cluster, "c", 100)) == 100
    cluster.drop.clear()
    cluster.advance(5_000)  # probes answered: each side sees the other come back
    for name in ("a", "b", "c"):
        assert missing_on(cluster, name, 200) == [], name


def test_a_catch_up_is_dropped_when_its_partner_goes_down_again() -> None:
    cluster = InstantCluster(["a", "b", "c"], config=CATCH_UP_CONFIG)
    cluster.advance(1_000)
    cluster.crash("c")
    cluster.restart("c")
    assert cluster.nodes["a"].ae.catch_up  # queued (c is still building its trees)
    cluster.crash("c")
    assert not cluster.nodes["a"].ae.catch_up
    deadline = cluster.nodes["a"].next_deadline_ms()
    assert deadline is not None and deadline > cluster.now_ms  # no busy ticking


def test_catch_ups_with_a_partner_that_never_has_trees_back_off_then_give_up() -> None:
    """c comes back without trees and never builds them (as with anti-entropy off
    there): a's and b's catch-ups with it fail, are tried 8 times each over about two
    minutes, with doubling waits, then left to the round."""
    cluster = InstantCluster(["a", "b", "c"], config=CATCH_UP_CONFIG)
    cluster.advance(1_000)
    cluster.crash("c")
    cluster.restart("c")
    cluster.nodes["c"].ae.build_queue.clear()
    a = cluster.nodes["a"].ae
    cluster.advance(60_000)
    assert a.catch_up and a.catch_ups_given_up == 0
    failed_at_60s = a.exchanges_failed
    cluster.advance(90_000)
    assert not a.catch_up and a.catch_ups_given_up == 16  # every pair a shares with c
    assert a.exchanges_failed - failed_at_60s <= 2 * 16  # the waits doubled
    assert a.exchanges_failed <= 16 * 8 + 2  # + the round's first exchanges
    deadline = cluster.nodes["a"].next_deadline_ms()
    assert deadline is not None and deadline > cluster.now_ms
