"""A tiny synchronous driver for core tests: messages are delivered at once, in
order, persist-then-send as the runtime does; nodes can be taken down and up."""

from __future__ import annotations

import random
from collections import deque

from dynakv.config import Config
from dynakv.core import api, messages
from dynakv.core.claim import Member, claim
from dynakv.core.node import (
    ClientEvent,
    MessageEvent,
    Node,
    PeerStatusEvent,
    StreamAckEvent,
    TickEvent,
)
from dynakv.core.ring import Ring
from dynakv.storage.memory import MemoryStorage


class InstantCluster:
    def __init__(self, names: list[str], ring_size: int = 16, config: Config | None = None) -> None:
        self.names = names
        self.config = config or Config(ring_size=ring_size)
        self.ring = Ring(claim(ring_size, [Member(n) for n in names], self.config.n_val))
        self.storage = {name: MemoryStorage() for name in names}
        self.incarnation = {name: 1 for name in names}
        self.now_ms = 0
        self.nodes = {name: self._make(name) for name in names}
        self.down: set[str] = set()
        self.drop: set[tuple[str, str]] = set()  # (sender, target) links that lose messages
        self.replies: dict[int, list[api.Response]] = {}
        self.sent: list[tuple[str, str, messages.Message]] = []
        self._client_ids = 0
        self._queue: deque[tuple[str, str, messages.Message]] = deque()

    def _make(self, name: str) -> Node:
        return Node(name=name, server_id=f"{name}@{self.incarnation[name]}", ring=self.ring,
                    peers=self.names,
                    storage=self.storage[name], config=self.config,
                    rng=random.Random(name), now_ms=self.now_ms)

    def _drain(self) -> None:
        progress = True
        while progress:
            progress = False
            for name in sorted(self.nodes):
                if name in self.down:
                    continue
                node = self.nodes[name]
                out = node.take_output()
                if out.writes:
                    self.storage[name].write(out.writes)
                    node.on_durable(out.write_seq)  # may produce more: another round
                    progress = True
                for target, message in [*out.early, *out.messages]:
                    self.sent.append((name, target, message))
                    self._queue.append((name, target, message))
                for client_id, response in out.replies:
                    self.replies.setdefault(client_id, []).append(response)
                    progress = True
            while self._queue:
                sender, target, message = self._queue.popleft()
                progress = True
                if (target not in self.down and sender not in self.down
                        and (sender, target) not in self.drop):
                    self.nodes[target].step(MessageEvent(sender, message), self.now_ms)

    def request(self, via: str, request: api.Request) -> api.Response:
        self._client_ids += 1
        client_id = self._client_ids
        self.nodes[via].step(ClientEvent(client_id, request), self.now_ms)
        self._drain()
        while isinstance(self.replies.get(client_id, [None])[-1], api.ChunkResponse):
            chunk = self.replies[client_id][-1]
            assert isinstance(chunk, api.ChunkResponse)
            if chunk.done:
                break
            self.nodes[via].step(StreamAckEvent(client_id), self.now_ms)
            self._drain()
        return self.replies[client_id][-1]

    def crash(self, name: str) -> None:
        """Stop `name` (its unsynced state is lost; storage here is always synced)."""
        self.down.add(name)
        for other in self.names:
            if other not in self.down:
                self.nodes[other].step(PeerStatusEvent(name, False), self.now_ms)
        self._drain()

    def wipe(self, name: str) -> None:
        """Crash `name` and lose its disk: it restarts empty, with a new incarnation."""
        self.crash(name)
        self.storage[name] = MemoryStorage()
        self.incarnation[name] += 1

    def restart(self, name: str) -> None:
        self.down.discard(name)
        self.nodes[name] = self._make(name)
        for other in self.names:
            if other != name and other not in self.down:
                self.nodes[other].step(PeerStatusEvent(name, True), self.now_ms)
                self.nodes[name].step(PeerStatusEvent(other, True), self.now_ms)
        self._drain()

    def advance(self, ms: int) -> None:
        """Move time on, ticking every node at each of its deadlines."""
        end = self.now_ms + ms
        while True:
            deadlines = []
            for name in sorted(self.nodes):
                deadline = self.nodes[name].next_deadline_ms()
                if name not in self.down and deadline is not None:
                    deadlines.append((deadline, name))
            if not deadlines:
                break
            when, name = min(deadlines)
            if when > end:
                break
            self.now_ms = max(self.now_ms, when)
            self.nodes[name].step(TickEvent(), self.now_ms)
            self._drain()
        self.now_ms = end

    def local(self, name: str, bucket: str, key: str) -> list[bytes]:
        self.nodes[name].step(
            ClientEvent(0, api.LocalGetRequest("default", bucket, key)), self.now_ms)
        out = self.nodes[name].take_output()
        reply = out.replies[-1][1]
        assert isinstance(reply, api.LocalObjectResponse)
        return [s.value for s in reply.siblings if not s.deleted]
