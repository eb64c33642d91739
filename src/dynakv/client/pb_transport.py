"""Carrying PB frames (client/pb_protocol.py) to a node: one blocking socket for the
Client, pipelined asyncio connections for the AsyncClient.

URLs of the PB transport are `pb://HOST:PORT` (port 8087, Riak's, when omitted).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import cast
from urllib.parse import urlsplit

from dynakv.client.model import ConnectionFailed
from dynakv.client.pb_protocol import PbCall, PbReply, reply_complete
from dynakv.proto.frames import FrameDecoder, FrameError

DEFAULT_PB_PORT = 8087
# A reply may hold many siblings of large values; above this a reply is refused
# (and the connection dropped) rather than buffered.
REPLY_FRAME_SIZE_MAX_BYTES = 1 << 30
RECEIVE_BYTES = 256 * 1024


def pb_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a pb:// URL; None for another scheme."""
    parts = urlsplit(url)
    if parts.scheme != "pb":
        return None
    if not parts.hostname:
        raise ValueError(f"expected pb://HOST:PORT, not {url!r}")
    return parts.hostname, parts.port or DEFAULT_PB_PORT


class PbSocket:
    """A blocking connection: one request at a time."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder(REPLY_FRAME_SIZE_MAX_BYTES)

    def exchange(self, call: PbCall) -> PbReply:
        self.sock.sendall(call.frame)
        frames: list[tuple[int, bytes]] = []
        while True:
            try:
                frame = self.decoder.next_frame()
            except FrameError as error:
                raise ConnectionResetError(str(error)) from None
            if frame is None:
                data = self.sock.recv(RECEIVE_BYTES)
                if not data:
                    raise ConnectionResetError("the node closed the connection")
                self.decoder.feed(data)
                continue
            frames.append(frame)
            if reply_complete(call, *frame):
                return PbReply(frames)

    def close(self) -> None:
        self.sock.close()


class Waiting:
    __slots__ = ("call", "deadline", "frames", "future", "timeout_s")

    def __init__(self, call: PbCall, future: asyncio.Future[PbReply], timeout_s: float,
                 now: float) -> None:
        self.call = call
        self.future = future
        self.timeout_s = timeout_s
        self.deadline = now + timeout_s  # on the loop's clock
        self.frames: list[tuple[int, bytes]] = []


class AsyncPbConnection(asyncio.Protocol):
    """A pipelined connection: requests are written at once, replies come in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.decoder = FrameDecoder(REPLY_FRAME_SIZE_MAX_BYTES)
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[Waiting] = deque()
        self.closed = False
        # One timer per connection, not per request (asyncio.wait_for per request was a
        # third of the load generator's time): armed for the earliest deadline of the
        # requests waiting when it was set, it fails the connection if one has passed
        # and is otherwise armed again for the earliest deadline now.
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        try:
            while (frame := self.decoder.next_frame()) is not None:
                if not self.waiting:
                    raise FrameError("a reply to no request")
                head = self.waiting[0]
                head.frames.append(frame)
                if reply_complete(head.call, *frame):
                    self.waiting.popleft()
                    if not head.future.done():
                        head.future.set_result(PbReply(head.frames))
        except Exception as error:  # a broken stream: nothing after it can be trusted
            self.fail(ConnectionFailed(f"{self.url}: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionFailed(f"{self.url}: connection lost ({exc!r})"))

    def fail(self, error: Exception) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()
        while self.waiting:
            future = self.waiting.popleft().future
            if not future.done():
                future.set_exception(error)

    async def request(self, call: PbCall, timeout_s: float) -> PbReply:
        if self.closed or self.transport is None:
            raise ConnectionFailed(f"{self.url}: connection closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PbReply] = loop.create_future()
        waiting = Waiting(call, future, timeout_s, loop.time())
        self.waiting.append(waiting)
        if self._timer is None or waiting.deadline < self._timer.when():
            self._arm(waiting.deadline)
        self.transport.write(call.frame)
        return await future

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._timer = None
        if not self.waiting:
            return
        now = asyncio.get_running_loop().time()
        late = next((w for w in self.waiting if w.deadline <= now), None)
        if late is not None:
            # Replies come in order: one that never came leaves the connection unusable.
            self.fail(ConnectionFailed(f"{self.url}: no reply within {late.timeout_s} s"))
        else:
            self._arm(min(w.deadline for w in self.waiting))


class AsyncPbPool:
    """Up to `size` pipelined connections to one node; a request goes to the least
    busy, and a new connection opens only when every open one is busy."""

    def __init__(self, url: str, host: str, port: int, size: int, timeout_s: float) -> None:
        assert size >= 1
        self.url, self.host, self.port = url, host, port
        self.size = size
        self.timeout_s = timeout_s
        self.connections: list[AsyncPbConnection] = []
        self.opening = 0

    async def request(self, call: PbCall) -> PbReply:
        connection = await self.connection()
        return await connection.request(call, self.timeout_s)

    async def connection(self) -> AsyncPbConnection:
        self.connections = [c for c in self.connections if not c.closed]
        best = min(self.connections, key=lambda c: len(c.waiting), default=None)
        if best is not None and (not best.waiting
                                 or len(self.connections) + self.opening >= self.size):
            return best
        self.opening += 1
        try:
            loop = asyncio.get_running_loop()
            _, connection = await asyncio.wait_for(loop.create_connection(
                lambda: AsyncPbConnection(self.url), self.host, self.port), self.timeout_s)
        except (OSError, TimeoutError) as error:
            raise ConnectionFailed(f"{self.url}: {error!r}") from error
        finally:
            self.opening -= 1
        self.connections.append(connection)
        return connection

    async def close(self) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.close()
        self.connections = []
