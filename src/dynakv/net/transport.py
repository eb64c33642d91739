"""Internode transport: length-prefixed msgpack frames over persistent TCP connections.

Each node opens one outbound connection to each peer and sends everything on it;
what it receives comes in on the peers' outbound connections. A frame is a 4-byte
big-endian length and a codec-encoded payload. The first frame each way is a
handshake naming the protocol version, the cluster, the node and a digest of its
ring: a peer of another cluster, version or ring is refused with a logged reason.
Frames queued in one event-loop iteration go out in one write. A connection that
fails marks the peer down (the driver tells the core), and it is retried every
`reconnect_interval_ms` until it answers.

A node that is no longer a member here (removed from the cluster while it still runs)
has no outbound connection from this node, but still connects to it: a message for it
goes back on its own connection, whose sending side delivers what it receives. That
is how a removed node learns that it was removed (the state gossip answers its
digest with), instead of being dropped in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from dynakv.core import codec, limits
from dynakv.core import messages as m
from dynakv.core.errors import PeerProtocolError

log = logging.getLogger("dynakv.transport")

_LENGTH = struct.Struct(">I")
# However often sends ask for a connection, attempts are at least this far apart.
RECONNECT_MIN_INTERVAL_S = 0.05
PROTOCOL_NAME = "dynakv-internode"


@dataclass(frozen=True, slots=True)
class Handshake:
    cluster: str
    node: str
    ring_digest: str
    version: int = m.PROTOCOL_VERSION

    def to_wire(self) -> dict[str, Any]:
        return {"proto": PROTOCOL_NAME, "version": self.version, "cluster": self.cluster,
                "node": self.node, "ring": self.ring_digest}

    def check_peer(self, data: object) -> str:
        """The peer's node name if its handshake matches ours; else PeerProtocolError."""
        if not isinstance(data, dict) or data.get("proto") != PROTOCOL_NAME:
            raise PeerProtocolError("not a dynakv internode peer")
        if data.get("version") != self.version:
            raise PeerProtocolError(
                f"internode protocol version {data.get('version')} (ours is {self.version})")
        if data.get("cluster") != self.cluster:
            raise PeerProtocolError(f"peer is of cluster {data.get('cluster')!r}, "
                                    f"not {self.cluster!r}")
        return str(data.get("node"))


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


class FrameProtocol(asyncio.Protocol):
    """Splits a byte stream into frames; the first is the handshake."""

    def __init__(self, handshake: Handshake) -> None:
        self.handshake = handshake
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(frame(codec.encode(self.handshake.to_wire())))

    def send(self, payload: bytes) -> None:
        self._out.append(frame(payload))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None and not self.transport.is_closing() and self._out:
            self.transport.writelines(self._out)
        self._out = []

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > limits.FRAME_SIZE_MAX_BYTES:
                self._fail(f"frame of {length} bytes is above the limit")
                return
            if len(self._buffer) < 4 + length:
                return
            payload = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            try:
                if self.peer is None:
                    self.peer = self.handshake.check_peer(codec.decode(payload))
                    self.handshake_done()
                else:
                    self.frame_received(payload)
            except PeerProtocolError as error:
                self._fail(str(error))
                return

    def _fail(self, reason: str) -> None:
        log.warning("dropping connection with %s: %s", self.peer or "a peer", reason)
        if self.transport is not None:
            self.transport.close()

    def handshake_done(self) -> None:
        pass

    def frame_received(self, payload: bytes) -> None:
        pass


class InboundProtocol(FrameProtocol):
    def __init__(self, handshake: Handshake, deliver: Callable[[str, m.Message], None],
                 inbound: set[InboundProtocol]) -> None:
        super().__init__(handshake)
        self._deliver = deliver
        self._inbound = inbound
        inbound.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inbound.discard(self)

    def frame_received(self, payload: bytes) -> None:
        assert self.peer is not None
        message = codec.decode(payload)
        self._deliver(self.peer, message)


class OutboundProtocol(FrameProtocol):
    def __init__(self, handshake: Handshake, link: PeerLink) -> None:
        super().__init__(handshake)
        self._link = link

    def handshake_done(self) -> None:
        if self.peer != self._link.peer:
            self._fail(f"expected node {self._link.peer}, reached {self.peer}")
            return
        self._link.connected(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._link.disconnected(self)

    def frame_received(self, payload: bytes) -> None:
        """A message sent back on this connection: the peer has no outbound connection
        to this node (it is not a member there any more)."""
        assert self.peer is not None
        self._link.transport.deliver(self.peer, codec.decode(payload))


class PeerLink:
    """The outbound connection to one peer, reconnected until it answers."""

    def __init__(self, transport: Transport, peer: str, host: str, port: int) -> None:
        self.transport = transport
        self.peer = peer
        self.host = host
        self.port = port
        self.protocol: OutboundProtocol | None = None
        self.up = True  # the core starts assuming every peer is up
        self._handshaken = asyncio.Event()
        # Frames sent while not connected wait here, bounded, and go out once
        # connected; a send also cuts the wait before the next connection attempt
        # short (the core may know the peer is alive before this link does).
        self._backlog: list[bytes] = []
        self._backlog_bytes = 0
        self._backlog_since = 0.0  # loop time of the oldest frame in the backlog
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._connect_loop())

    async def _connect_loop(self) -> None:
        config = self.transport.config
        timeout_s = config.connect_timeout_ms / 1000
        while not self._closed and self.protocol is None:
            loop = asyncio.get_running_loop()
            self._handshaken.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    transport, _ = await loop.create_connection(
                        lambda: OutboundProtocol(self.transport.handshake, self),
                        self.host, self.port,
                    )
                    try:
                        await self._handshaken.wait()  # connected() sets it
                    except BaseException:
                        transport.close()
                        raise
                return
            except (OSError, TimeoutError) as error:
                log.debug("connect to %s failed: %s", self.peer, error)
            self._drop_stale_backlog()
            self._mark(False)
            self._wake.clear()
            await asyncio.sleep(RECONNECT_MIN_INTERVAL_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(config.reconnect_interval_ms / 1000):
                    await self._wake.wait()

    def connected(self, protocol: OutboundProtocol) -> None:
        self.protocol = protocol
        self._handshaken.set()
        backlog, self._backlog = self._backlog, []
        self._backlog_bytes = 0
        for payload in backlog:
            protocol.send(payload)
        self._mark(True)

    def disconnected(self, protocol: OutboundProtocol) -> None:
        if self.protocol is protocol:
            self.protocol = None
            self._mark(False)
            if not self._closed:
                self.start()

    def _drop_stale_backlog(self) -> None:
        """After a failed attempt, forget the backlog once its oldest frame is older than
        a request's timeout (whoever sent them has given up). Younger frames wait for
        the next attempt: a peer that restarts is often seen alive by the core (its
        probes arrive) a moment before this link reconnects, and the first request sent
        to it then must not be lost to an attempt that started before it listened."""
        age_s = asyncio.get_running_loop().time() - self._backlog_since
        if self._backlog and age_s > self.transport.config.request_timeout_ms / 1000:
            self._backlog = []
            self._backlog_bytes = 0

    def _mark(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            log.info("peer %s is %s", self.peer, "up" if up else "down")
            self.transport.on_peer_status(self.peer, up)

    def send(self, payload: bytes) -> bool:
        if self.protocol is None or self.protocol.transport is None:
            self._wake.set()
            if (len(self._backlog) >= limits.PEER_QUEUE_MAX_MESSAGES
                    or self._backlog_bytes + len(payload) > limits.FRAME_SIZE_MAX_BYTES):
                return False
            if not self._backlog:
                self._backlog_since = asyncio.get_running_loop().time()
            self._backlog.append(payload)
            self._backlog_bytes += len(payload)
            return True
        buffered = self.protocol.transport.get_write_buffer_size()
        if buffered > limits.FRAME_SIZE_MAX_BYTES:
            return False
        self.protocol.send(payload)
        return True

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()


class Transport:
    """All of a node's internode connections."""

    def __init__(
        self,
        config: Any,
        handshake: Handshake,
        peers: dict[str, tuple[str, int]],
        deliver: Callable[[str, m.Message], None],
        on_peer_status: Callable[[str, bool], None],
    ) -> None:
        self.config = config
        self.handshake = handshake
        self._deliver = deliver
        self.on_peer_status = on_peer_status
        self._links = {name: PeerLink(self, name, host, port)
                       for name, (host, port) in sorted(peers.items())}
        self._server: asyncio.Server | None = None
        self._inbound: set[InboundProtocol] = set()
        self._started = False

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: InboundProtocol(self.handshake, self._deliver, self._inbound), host, port,
            reuse_address=True,
        )
        for link in self._links.values():
            link.start()
        self._started = True

    def set_peers(self, peers: dict[str, str]) -> None:
        """Follow membership: open links to new members, close those of departed ones."""
        for name in [n for n in self._links if n not in peers]:
            self._links.pop(name).close()
        for name, address in sorted(peers.items()):
            link = self._links.get(name)
            if not address:
                continue  # unknown here: keep the link the node was started with, if any
            host, _, port = address.rpartition(":")
            if link is not None and (link.host, link.port) == (host, int(port)):
                continue
            if link is not None:
                link.close()
            self._links[name] = PeerLink(self, name, host, int(port))
            if self._started:
                self._links[name].start()

    def deliver(self, peer: str, message: m.Message) -> None:
        self._deliver(peer, message)

    def send(self, peer: str, message: m.Message) -> bool:
        link = self._links.get(peer)
        if link is not None:
            return link.send(codec.encode(message))
        # Not a member here: back on a connection it opened to this node, if any.
        inbound = next((p for p in self._inbound if p.peer == peer and p.transport is not None
                        and not p.transport.is_closing()), None)
        if inbound is None or inbound.transport is None or (
                inbound.transport.get_write_buffer_size() > limits.FRAME_SIZE_MAX_BYTES):
            log.warning("message for unknown peer %s dropped", peer)
            return False
        inbound.send(codec.encode(message))
        return True

    async def close(self) -> None:
        for link in self._links.values():
            link.close()
        if self._server is not None:
            self._server.close()
        for protocol in list(self._inbound):
            if protocol.transport is not None:
                protocol.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
