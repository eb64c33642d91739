"""Three runtimes with real transports on ephemeral ports, in one event loop."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from dynakv.config import Config
from dynakv.core import api
from dynakv.core.claim import Member, claim
from dynakv.core.errors import ErrorKind, PeerProtocolError, StorageFull
from dynakv.core.node import Node
from dynakv.core.ring import Ring
from dynakv.net.runtime import Runtime
from dynakv.net.transport import Handshake, Transport
from dynakv.storage.lmdb_engine import LmdbStorage

NAMES = ["a", "b", "c"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def three_nodes(tmp_path: Path) -> AsyncIterator[dict[str, Runtime]]:
    config = Config(ring_size=16, reconnect_interval_ms=50, connect_timeout_ms=500,
                    request_timeout_ms=3000)
    ring = Ring(claim(16, [Member(name) for name in NAMES], 3))
    ports = {name: free_port() for name in NAMES}
    runtimes: dict[str, Runtime] = {}
    for index, name in enumerate(NAMES):
        storage = LmdbStorage(tmp_path / name)
        node = Node(name=name, server_id=f"{name}@1", ring=ring, peers=NAMES, storage=storage,
                    config=config, rng=random.Random(index))
        runtime = Runtime(node, storage)
        runtime.transport = Transport(
            config, Handshake(config.cluster_name, name, ring.digest()),
            {peer: ("127.0.0.1", ports[peer]) for peer in NAMES if peer != name},
            runtime.deliver, runtime.peer_status)
        runtime.start()
        await runtime.transport.start("127.0.0.1", ports[name])
        runtimes[name] = runtime
    for _ in range(200):  # nodes started before their peers listened see them down at first
        if not any(runtime.node.down for runtime in runtimes.values()):
            break
        await asyncio.sleep(0.02)
    try:
        yield runtimes
    finally:
        for runtime in runtimes.values():
            assert runtime.transport is not None
            await runtime.transport.close()
            await runtime.close()
            runtime.storage.close()


def test_quorum_writes_reads_group_commit_and_listing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with three_nodes(tmp_path) as nodes:
            puts = [
                nodes[NAMES[i % 3]].request(
                    api.PutRequest("default", "b", f"k{i}", api.Content(f"v{i}".encode())))
                for i in range(200)
            ]
            results = await asyncio.gather(*puts)
            assert all(isinstance(r, api.DoneResponse) for r in results), results[:3]
            got = await nodes["b"].request(api.GetRequest("default", "b", "k7"))
            assert isinstance(got, api.ObjectResponse)
            assert [s.value for s in got.siblings] == [b"v7"]
            # Group commit: far fewer storage transactions than writes.
            for runtime in nodes.values():
                assert runtime.commits < runtime.committed_writes
                if sys.platform == "linux":  # the commit thread yields to the event loop
                    policy = runtime._writer.submit(os.sched_getscheduler, 0).result()
                    assert policy == os.SCHED_BATCH
            keys: list[str] = []
            async for chunk in nodes["c"].stream(api.ListKeysRequest("default", "b")):
                assert isinstance(chunk, api.ChunkResponse)
                keys.extend(chunk.items)
            assert sorted(keys) == sorted(f"k{i}" for i in range(200))

    asyncio.run(scenario())


def test_a_peer_going_down_is_seen_and_quorum_still_met(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with three_nodes(tmp_path) as nodes:
            transport = nodes["c"].transport
            assert transport is not None
            await transport.close()
            for _ in range(100):
                if "c" in nodes["a"].node.down:
                    break
                await asyncio.sleep(0.02)
            assert "c" in nodes["a"].node.down
            response = await nodes["a"].request(
                api.PutRequest("default", "b", "k", api.Content(b"v"), w=2))
            assert isinstance(response, api.DoneResponse), response
            response = await nodes["a"].request(
                api.PutRequest("default", "b", "k", api.Content(b"v"), w=3))
            assert isinstance(response, api.ErrorResponse)
            assert "w=3" in response.message

    asyncio.run(scenario())


class FullDisk:
    """A storage engine whose disk is full: every write fails."""

    def __init__(self, inner: LmdbStorage) -> None:
        self.inner = inner

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.inner.get(partition, key)

    def scan(self, partition: int, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        return self.inner.scan(partition, start, limit)

    def write(self, writes: object) -> None:
        raise StorageFull("storage full: No space left on device; free disk space")

    def close(self) -> None:
        self.inner.close()


def test_a_full_disk_answers_storage_full_and_stores_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = FullDisk(LmdbStorage(tmp_path / "full"))
        ring = Ring(claim(16, [Member("solo")], 1))
        node = Node(name="solo", server_id="solo@1", ring=ring, peers=[], storage=storage,
                    config=Config(ring_size=16, n_val=1), rng=random.Random(1))
        runtime = Runtime(node, storage)
        runtime.start()
        try:
            response = await runtime.request(
                api.PutRequest("default", "b", "k", api.Content(b"v")))
            assert isinstance(response, api.ErrorResponse)
            assert response.kind is ErrorKind.STORAGE_FULL and "free disk" in response.message
            got = await runtime.request(api.GetRequest("default", "b", "k"))
            assert isinstance(got, api.ObjectResponse) and not got.found
        finally:
            await runtime.close()
            storage.close()

    asyncio.run(scenario())


def test_handshake_refuses_another_cluster_or_version() -> None:
    ours = Handshake("dynakv", "a", "ring1")
    assert ours.check_peer(Handshake("dynakv", "b", "ring1").to_wire()) == "b"
    for other, reason in [(Handshake("other", "b", "ring1"), "cluster"),
                          (Handshake("dynakv", "b", "ring1", version=99), "version")]:
        with pytest.raises(PeerProtocolError, match=reason):
            ours.check_peer(other.to_wire())
    with pytest.raises(PeerProtocolError):
        ours.check_peer({"proto": "http"})


async def arrival(got: list[Any]) -> None:
    """Wait up to 2 s for something to arrive in `got`."""
    for _ in range(100):
        if got:
            return
        await asyncio.sleep(0.02)


def test_a_message_sent_before_a_peer_listens_arrives_once_it_does() -> None:
    """A restarted peer is often seen alive (its probes arrive) a moment before this
    node's link to it reconnects: a frame sent then waits through failed connection
    attempts and goes out on the next one (it was lost to them, seen as a flaky read
    repair in the real-process tests), unless it is older than a request's timeout."""
    from dynakv.core import messages as m

    async def scenario() -> None:
        config = Config(reconnect_interval_ms=50, connect_timeout_ms=200,
                        request_timeout_ms=5_000)
        port_a, port_b = free_port(), free_port()
        got: list[tuple[str, m.Message]] = []
        a = Transport(config, Handshake(config.cluster_name, "a", "r"),
                      {"b": ("127.0.0.1", port_b)}, lambda *_: None, lambda *_: None)
        await a.start("127.0.0.1", port_a)
        b = Transport(config, Handshake(config.cluster_name, "b", "r"),
                      {"a": ("127.0.0.1", port_a)}, lambda peer, msg: got.append((peer, msg)),
                      lambda *_: None)
        try:
            await asyncio.sleep(0.3)  # a few refused attempts: b does not listen yet
            assert a.send("b", m.Ping(7))
            await asyncio.sleep(0.3)  # more refused attempts with the frame waiting
            await b.start("127.0.0.1", port_b)
            await arrival(got)
            assert got == [("a", m.Ping(7))]
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_message_for_a_node_that_is_not_a_member_goes_back_on_its_connection() -> None:
    """b has no link to a (a was removed there) but a still connects to b: b's answer
    goes back on a's own connection, and a takes it. To a node that never connected,
    nothing can be sent."""
    from dynakv.core import messages as m

    async def scenario() -> None:
        config = Config(reconnect_interval_ms=50, connect_timeout_ms=200)
        port_a, port_b = free_port(), free_port()
        got_a: list[tuple[str, m.Message]] = []
        got_b: list[tuple[str, m.Message]] = []
        a = Transport(config, Handshake(config.cluster_name, "a", "r"),
                      {"b": ("127.0.0.1", port_b)}, lambda peer, msg: got_a.append((peer, msg)),
                      lambda *_: None)
        b = Transport(config, Handshake(config.cluster_name, "b", "r"), {},
                      lambda peer, msg: got_b.append((peer, msg)), lambda *_: None)
        await b.start("127.0.0.1", port_b)
        await a.start("127.0.0.1", port_a)
        try:
            assert not b.send("a", m.Pong(1))  # a has not connected yet
            assert a.send("b", m.Ping(2))
            await arrival(got_b)
            assert got_b == [("a", m.Ping(2))]
            assert b.send("a", m.Pong(2))
            assert not b.send("c", m.Pong(3))  # no link, no connection from it
            await arrival(got_a)
            assert got_a == [("b", m.Pong(2))]
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())
