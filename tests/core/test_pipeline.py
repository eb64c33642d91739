"""Persist, then send, with dependencies (core/pipeline.py), and the node's side of it:
an Output records the pending writes it was built from."""

from __future__ import annotations

import random

import pytest

from dynakv.config import Config
from dynakv.core import api
from dynakv.core import messages as m
from dynakv.core.claim import Member, claim
from dynakv.core.node import ClientEvent, MessageEvent, Node, TickEvent
from dynakv.core.pipeline import CommitPipeline, Output, Released
from dynakv.core.ring import Ring
from dynakv.core.storage import Write
from dynakv.storage.memory import MemoryStorage


def output(seq: int, writes: int = 0, depends: int = 0, reply: int = 0) -> Output:
    return Output(writes=[Write(0, b"k%d" % i, b"v") for i in range(writes)], write_seq=seq,
                  depends_seq=depends,
                  replies=[(reply, api.DoneResponse())] if reply else [])


def ids(released: list[Released]) -> list[tuple[int, bool]]:
    return [(item.output.replies[0][0], item.failed) for item in released]


def test_an_output_that_depends_on_nothing_pending_leaves_at_once_even_during_a_sync() -> None:
    pipeline = CommitPipeline()
    assert pipeline.add(output(2, writes=2, reply=1)) == []
    writes, seq = pipeline.take_writes()
    assert (len(writes), seq) == (2, 2) and pipeline.committing()
    # A reply read from durable data (write_seq is the node's counter, not a dependency).
    assert ids(pipeline.add(output(2, reply=2))) == [(2, False)]
    assert ids(pipeline.committed(2, True)) == [(1, False)]
    assert pipeline.idle()


def test_a_read_of_a_pending_write_waits_for_that_write_and_others_overtake_it() -> None:
    pipeline = CommitPipeline()
    pipeline.add(output(1, writes=1, reply=1))
    pipeline.take_writes()  # seq 1 is syncing
    pipeline.add(output(2, writes=1, reply=2))  # seq 2 queued behind it
    assert pipeline.add(output(2, depends=1, reply=3)) == []
    assert pipeline.add(output(2, depends=2, reply=4)) == []
    assert ids(pipeline.committed(1, True)) == [(1, False), (3, False)]
    assert pipeline.held() == 2 and pipeline.has_writes()
    writes, seq = pipeline.take_writes()
    assert (len(writes), seq) == (1, 2)
    assert ids(pipeline.committed(2, True)) == [(2, False), (4, False)]
    assert pipeline.durable_seq == 2 and pipeline.idle()


def test_writes_queued_during_a_sync_form_the_next_group_commit() -> None:
    pipeline = CommitPipeline()
    pipeline.add(output(1, writes=1, reply=1))
    pipeline.take_writes()
    for seq in (3, 4, 6):
        pipeline.add(output(seq, writes=2 if seq == 3 else 1, reply=seq))
    pipeline.committed(1, True)
    writes, seq = pipeline.take_writes()
    assert (len(writes), seq) == (4, 6)
    with pytest.raises(AssertionError):
        pipeline.take_writes()  # one commit at a time


def test_a_failed_commit_fails_only_the_outputs_whose_writes_it_held() -> None:
    pipeline = CommitPipeline()
    pipeline.add(output(1, writes=1, reply=1))
    pipeline.take_writes()
    assert ids(pipeline.committed(1, True)) == [(1, False)]
    pipeline.add(output(2, writes=1, reply=2))
    pipeline.add(output(2, depends=2, reply=3))
    pipeline.take_writes()
    assert ids(pipeline.committed(2, False)) == [(2, True), (3, False)]


def test_writes_must_come_in_sequence() -> None:
    pipeline = CommitPipeline()
    pipeline.add(output(5, writes=1))
    with pytest.raises(AssertionError):
        pipeline.add(output(5, writes=1))


def node() -> Node:
    config = Config(ring_size=8, n_val=1)
    ring = Ring(claim(8, [Member("a")], 1))
    return Node(name="a", server_id="a@1", ring=ring, peers=["a"], storage=MemoryStorage(),
                config=config, rng=random.Random(1))


def test_a_node_marks_replies_built_from_its_pending_writes() -> None:
    a = node()
    a.take_output()
    a.step(ClientEvent(1, api.PutRequest("default", "b", "k", api.Content(b"v"))), 0)
    put = a.take_output()
    assert put.writes and put.replies and put.needs_seq == put.write_seq  # w=1: held with it
    # Read before the put is durable: the answer carries the value, so it waits for it.
    a.step(ClientEvent(2, api.GetRequest("default", "b", "k")), 0)
    dirty = a.take_output()
    assert not dirty.writes and dirty.depends_seq == put.write_seq
    a.storage.write(put.writes)
    a.on_durable(put.write_seq)
    a.step(ClientEvent(3, api.GetRequest("default", "b", "k")), 0)
    clean = a.take_output()
    assert clean.depends_seq == 0 and clean.needs_seq == 0
    assert isinstance(clean.replies[0][1], api.ObjectResponse)
    assert [c.value for c in clean.replies[0][1].siblings] == [b"v"]


def test_gossip_waits_for_the_cluster_state_it_tells_to_be_durable() -> None:
    """A change of the cluster state (here a staged leave; a claimant's commit alike) is
    written; gossip sent before that write is durable must wait for it, or a crash
    could leave the peers with a state this node never kept."""
    config = Config(ring_size=8)
    ring = Ring(claim(8, [Member(name) for name in "abc"], 3))
    a = Node(name="a", server_id="a@1", ring=ring, peers=list("abc"), storage=MemoryStorage(),
             config=config, rng=random.Random(1))
    for peer in "bc":
        a.step(MessageEvent(peer, m.Pong(0)), 0)
    a.step(TickEvent(), 0)  # its start: it marks its handoff done (a write)
    start = a.take_output()
    a.storage.write(start.writes)
    a.on_durable(start.write_seq)
    a.step(ClientEvent(1, api.LeaveRequest("c")), 0)
    staged = a.take_output()
    assert staged.writes and staged.needs_seq == staged.write_seq
    interval = a.config.gossip_interval_ms
    a.step(TickEvent(), interval)
    gossip = a.take_output()
    assert any(isinstance(message, m.GossipDigest) for _, message in gossip.messages)
    assert not gossip.writes and gossip.depends_seq == staged.write_seq
    a.step(MessageEvent("b", m.GossipDigest("another state")), interval)
    reply = a.take_output()
    assert [type(message) for _, message in reply.messages] == [m.GossipState]
    assert reply.depends_seq == staged.write_seq
    a.storage.write(staged.writes)
    a.on_durable(staged.write_seq)
    a.step(TickEvent(), 2 * interval)
    later = a.take_output()
    assert any(isinstance(message, m.GossipDigest) for _, message in later.messages)
    assert later.depends_seq == 0
