"""Early replication (Node._replicate): a coordinator sends a write to the other
replicas while its own copy syncs, counts its copy once durable, and never mints a
dot twice: an epoch whose early sends a crash may have lost is never used again."""

from __future__ import annotations

import random

from dynakv.config import Config
from dynakv.core import api
from dynakv.core import messages as m
from dynakv.core.claim import Member, claim
from dynakv.core.node import ClientEvent, MessageEvent, Node
from dynakv.core.node_base import EARLY_EPOCH_META_KEY
from dynakv.core.pipeline import Output
from dynakv.core.ring import Ring
from dynakv.core.storage import META_PARTITION
from dynakv.storage.memory import MemoryStorage

NAMES = ["a", "b", "c"]


def make(storage: MemoryStorage, early: bool = True) -> Node:
    config = Config(ring_size=8, early_replication=early)
    ring = Ring(claim(8, [Member(n) for n in NAMES], 3))
    node = Node(name="a", server_id="a@1", ring=ring, peers=NAMES, storage=storage,
                config=config, rng=random.Random(1))
    durable(node, node.take_output())
    return node


def durable(node: Node, out: Output) -> None:
    if out.writes:
        assert isinstance(node.storage, MemoryStorage)
        node.storage.write(out.writes)
        node.on_durable(out.write_seq)


def put(node: Node, client_id: int, value: bytes) -> Output:
    node.step(ClientEvent(client_id, api.PutRequest("default", "b", "k", api.Content(value))),
              0)
    return node.take_output()


def replica_puts(messages: list[tuple[str, m.Message]]) -> list[m.ReplicaPut]:
    return [message for _, message in messages if isinstance(message, m.ReplicaPut)]


def test_the_first_write_of_an_epoch_goes_the_plain_way_and_durably_marks_the_epoch() -> None:
    a = make(MemoryStorage())
    first = put(a, 1, b"v1")
    assert not first.early and len(replica_puts(first.messages)) == 2
    assert any(w.partition == META_PARTITION and w.key == EARLY_EPOCH_META_KEY
               for w in first.writes)
    durable(a, first)
    second = put(a, 2, b"v2")
    assert not second.messages and len(replica_puts(second.early)) == 2
    assert not any(w.key == EARLY_EPOCH_META_KEY for w in second.writes)


def early_put_acked_by(*replicas: str) -> tuple[Node, Output]:
    """A second put (sent early) that `replicas` acknowledged; its sync not yet done."""
    a = make(MemoryStorage())
    durable(a, put(a, 1, b"v1"))
    out = put(a, 2, b"v2")
    request_id = replica_puts(out.early)[0].request_id
    for replica in replicas:
        a.step(MessageEvent(replica, m.ReplicaPutAck(request_id)), 0)
    return a, out


def test_the_coordinator_counts_its_own_copy_only_once_it_is_durable() -> None:
    a, out = early_put_acked_by("b")
    assert not a.take_output().replies  # w=2: b's copy, and its own is not durable yet
    durable(a, out)
    replies = a.take_output().replies
    assert [type(response) for _, response in replies] == [api.DoneResponse]


def test_two_remote_copies_satisfy_w_before_the_local_sync() -> None:
    a, _ = early_put_acked_by("b", "c")
    assert [type(response) for _, response in a.take_output().replies] == [api.DoneResponse]


def test_a_restart_after_early_sends_begins_a_new_epoch_and_a_clean_stop_does_not() -> None:
    storage = MemoryStorage()
    a = make(storage)
    durable(a, put(a, 1, b"v1"))
    put(a, 2, b"v2")  # sent early; the node crashes before this sync
    crashed = make(storage)
    assert crashed.epoch == a.epoch + 1
    third = put(crashed, 3, b"v3")
    assert not third.early  # the new epoch's marker is not durable yet
    durable(crashed, third)
    crashed.prepare_shutdown()
    durable(crashed, crashed.take_output())
    assert storage.get(META_PARTITION, EARLY_EPOCH_META_KEY) is None
    assert make(storage).epoch == crashed.epoch


def test_no_marker_and_no_new_epoch_when_nothing_was_sent_early() -> None:
    storage = MemoryStorage()
    a = make(storage, early=False)
    out = put(a, 1, b"v1")
    assert not out.early and not any(w.key == EARLY_EPOCH_META_KEY for w in out.writes)
    durable(a, out)
    assert make(storage, early=False).epoch == a.epoch


def test_a_failed_sync_after_early_sends_begins_a_new_epoch() -> None:
    a = make(MemoryStorage())
    durable(a, put(a, 1, b"v1"))
    out = put(a, 2, b"v2")
    assert out.early
    epoch = a.epoch
    a.on_write_failed(out.write_seq)
    after = a.take_output()
    assert a.epoch == epoch + 1
    assert any(w.partition == META_PARTITION for w in after.writes)
    assert not put(a, 3, b"v3").early


def test_a_local_delete_starts_a_new_epoch_only_for_a_key_the_epoch_minted() -> None:
    """kv679 needs a new epoch when a node forgets a key it minted dots for; a new epoch
    for every other delete would add an actor to every version vector written since."""
    a = make(MemoryStorage(), early=False)
    epoch = a.epoch
    a._delete_local(1, b"never-written-here")  # after a start: unknown, so a new epoch
    assert a.epoch == epoch + 1
    durable(a, put(a, 1, b"v1"))
    a._delete_local(1, b"another-key")  # nothing minted for it in this epoch
    assert a.epoch == epoch + 1
    minted = next(iter(a._epoch_minted or ()))
    a._delete_local(*minted)  # the key just written: its dots would be minted again
    assert a.epoch == epoch + 2
