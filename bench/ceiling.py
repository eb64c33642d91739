"""A bare quorum server: the ceiling a Python Dynamo-style store could reach here.

Run three (bench/services.py does): each serves the subset of Riak's APIs the load
generator uses, over the same transports as dynakv, and coordinates every request over
N=3 replicas with R=W=2: a put stores locally and succeeds when one of the two peers
acknowledged; a get reads locally and answers when one peer replied.

- HTTP (`--http`): GET/PUT /buckets/B/keys/K and /ping, with aiohttp, as dynakv does.
- Protocol Buffers (`--pb`): Riak's frames (a 4-byte big-endian length, a 1-byte
  message code, a protobuf message; the messages are dynakv.proto.riak_pb2's) on an
  asyncio Protocol: RpbPingReq, RpbGetReq and RpbPutReq (with or without a vclock,
  with or without return_body). Requests may be pipelined; each get or put runs as a
  task and the replies go out in the order the requests came, as in dynakv's PB API;
  past PB_REQUESTS_IN_FLIGHT_MAX requests in flight the connection stops being read.

Peers talk as dynakv's nodes do, msgpack frames (4-byte length) over persistent
connections on asyncio Protocols with uvloop, frames queued in one event-loop iteration
written at once. What it leaves out is what dynakv adds: no versions, contexts or
siblings, no storage (a dict), no ring, hints or failure handling. Since there are no
versions, the context it hands out (RpbGetResp/RpbPutResp `vclock`, HTTP's
X-Riak-Vclock) is CONTEXT_TOKEN, a constant opaque token about the size of a dynakv
context for three servers, so the clients carry the same bytes back and forth; the
context a put brings is ignored.

    python bench/ceiling.py --name c1 --http 127.0.0.1:9001 --pb 127.0.0.1:9003 \
        --internode 127.0.0.1:9002 --peer 127.0.0.1:9012 --peer 127.0.0.1:9022
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import struct
from collections import deque
from typing import Any

import msgpack
from aiohttp import web

from dynakv.proto import riak_pb2 as pb

LENGTH = struct.Struct(">I")
PUT, PUT_ACK, GET, GET_REPLY = range(4)
TIMEOUT_S = 5.0
RECONNECT_S = 0.1
# No versions here: every context handed out is this opaque constant (21 bytes, as
# dynakv's version byte plus a msgpack vector of three servers' entries is).
CONTEXT_TOKEN = b"\x01ceiling-no-versions!"
CONTEXT_HEADER = base64.b64encode(CONTEXT_TOKEN).decode("ascii")
# Riak's PB message codes (the subset served) and the bounds dynakv's PB API has.
ERROR_RESP, PING_REQ, PING_RESP, GET_REQ, GET_RESP, PUT_REQ, PUT_RESP = 0, 1, 2, 9, 10, 11, 12
PB_FRAME_SIZE_MAX_BYTES = 64 * 1024 * 1024
PB_REQUESTS_IN_FLIGHT_MAX = 128
OCTET_STREAM = b"application/octet-stream"


class Link(asyncio.Protocol):
    """One connection to or from a peer: frames in, frames out (batched per iteration)."""

    def __init__(self, node: QuorumNode) -> None:
        self.node = node
        self.transport: Any = None
        self.buffer = bytearray()
        self.out: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def send(self, message: list[Any]) -> None:
        payload = msgpack.packb(message)
        if not self.out:
            asyncio.get_running_loop().call_soon(self.flush)
        self.out.append(LENGTH.pack(len(payload)) + payload)

    def flush(self) -> None:
        if self.transport is not None and self.out:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        view = self.buffer
        offset = 0
        while len(view) - offset >= 4:
            (size,) = LENGTH.unpack_from(view, offset)
            if len(view) - offset - 4 < size:
                break
            message = msgpack.unpackb(view[offset + 4: offset + 4 + size], raw=False)
            offset += 4 + size
            self.node.receive(self, message)
        del self.buffer[:offset]


class QuorumNode:
    def __init__(self, peers: list[tuple[str, int]]) -> None:
        self.peer_addresses = peers
        self.links: list[Link] = []
        self.data: dict[str, bytes] = {}
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for host, port in self.peer_addresses:
            while True:
                try:
                    _, link = await loop.create_connection(lambda: Link(self), host, port)
                    break
                except OSError:
                    await asyncio.sleep(RECONNECT_S)
            self.links.append(link)

    def ready(self) -> bool:
        up = sum(link.transport is not None for link in self.links)
        return up == len(self.peer_addresses)

    def receive(self, link: Link, message: list[Any]) -> None:
        kind, request_id, key, value = message
        if kind == PUT:
            self.data[key] = value
            link.send([PUT_ACK, request_id, None, None])
        elif kind == GET:
            link.send([GET_REPLY, request_id, None, self.data.get(key)])
        else:
            future = self.pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(value)

    async def quorum(self, kind: int, key: str, value: bytes | None) -> None:
        """Send to every peer and wait for the first answer (R = W = 2 with ours)."""
        request_id = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        for link in self.links:
            link.send([kind, request_id, key, value])
        try:
            await asyncio.wait_for(future, TIMEOUT_S)
        finally:
            self.pending.pop(request_id, None)

    async def get(self, key: str) -> bytes | None:
        await self.quorum(GET, key, None)
        return self.data.get(key)

    async def put(self, key: str, value: bytes) -> None:
        self.data[key] = value
        await self.quorum(PUT, key, value)


# --- HTTP ---------------------------------------------------------------------------


def make_app(node: QuorumNode) -> web.Application:
    async def get(request: web.Request) -> web.Response:
        key = request.match_info["bucket"] + "/" + request.match_info["key"]
        value = await node.get(key)
        if value is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=value, content_type="application/octet-stream",
                            headers={"X-Riak-Vclock": CONTEXT_HEADER})

    async def put(request: web.Request) -> web.Response:
        key = request.match_info["bucket"] + "/" + request.match_info["key"]
        await node.put(key, await request.read())
        return web.Response(status=204, headers={"X-Riak-Vclock": CONTEXT_HEADER})

    async def ping(request: web.Request) -> web.Response:
        ready = node.ready()
        return web.Response(text="OK" if ready else "starting", status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/buckets/{bucket}/keys/{key}", get)
    app.router.add_put("/buckets/{bucket}/keys/{key}", put)
    app.router.add_get("/ping", ping)
    return app


# --- Protocol Buffers ---------------------------------------------------------------


def frame(code: int, payload: bytes = b"") -> bytes:
    return LENGTH.pack(len(payload) + 1) + bytes((code,)) + payload


def error_frame(status: int, message: str) -> bytes:
    error = pb.RpbErrorResp(errmsg=message.encode(), errcode=status)
    return frame(ERROR_RESP, error.SerializeToString())


PING_REPLY = frame(PING_RESP)


def object_key(message: pb.RpbGetReq | pb.RpbPutReq) -> str:
    return (message.bucket + b"/" + message.key).decode("utf-8", "surrogateescape")


async def pb_get(node: QuorumNode, payload: bytes) -> bytes:
    request = pb.RpbGetReq.FromString(payload)
    value = await node.get(object_key(request))
    reply = pb.RpbGetResp()
    if value is not None:
        reply.content.add(value=value, content_type=OCTET_STREAM)
        reply.vclock = CONTEXT_TOKEN
    return frame(GET_RESP, reply.SerializeToString())


async def pb_put(node: QuorumNode, payload: bytes) -> bytes:
    request = pb.RpbPutReq.FromString(payload)
    if not request.HasField("key"):
        return error_frame(400, "the ceiling needs a key")
    value = request.content.value
    await node.put(object_key(request), value)
    reply = pb.RpbPutResp(vclock=CONTEXT_TOKEN)
    if request.return_body:
        reply.content.add(value=value, content_type=request.content.content_type)
    return frame(PUT_RESP, reply.SerializeToString())


class Slot:
    """One request of a connection, in arrival order, and its reply once known."""

    __slots__ = ("reply", "task")

    def __init__(self) -> None:
        self.reply: bytes | None = None
        self.task: asyncio.Task[None] | None = None


class PbConnection(asyncio.Protocol):
    """One client connection: frames in, replies out in request order."""

    def __init__(self, node: QuorumNode) -> None:
        self.node = node
        self.transport: Any = None
        self.buffer = bytearray()
        self.slots: deque[Slot] = deque()
        self.reading_paused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for slot in self.slots:
            if slot.task is not None:
                slot.task.cancel()
        self.slots.clear()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        buffer = self.buffer
        offset = 0
        while len(buffer) - offset >= 4:
            (length,) = LENGTH.unpack_from(buffer, offset)
            if not 0 < length <= PB_FRAME_SIZE_MAX_BYTES:
                self.transport.write(error_frame(400, f"a frame of {length} bytes"))
                self.transport.close()
                return
            end = offset + 4 + length
            if len(buffer) < end:
                break
            self.start(buffer[offset + 4], bytes(buffer[offset + 5:end]))
            offset = end
        del buffer[:offset]
        self.write_finished()

    def start(self, code: int, payload: bytes) -> None:
        slot = Slot()
        self.slots.append(slot)
        if code == PING_REQ:
            slot.reply = PING_REPLY
        elif code in (GET_REQ, PUT_REQ):
            handler = pb_get if code == GET_REQ else pb_put
            slot.task = asyncio.get_running_loop().create_task(
                self.run(slot, handler(self.node, payload)))
        else:
            slot.reply = error_frame(400, f"message code {code} is not served by the ceiling")

    async def run(self, slot: Slot, answer: Any) -> None:
        try:
            slot.reply = await answer
        except TimeoutError:
            slot.reply = error_frame(503, "timeout: no peer answered")
        except Exception as error:
            slot.reply = error_frame(500, repr(error))
        slot.task = None
        self.write_finished()

    def write_finished(self) -> None:
        slots, transport = self.slots, self.transport
        if transport is None:
            return
        replies: list[bytes] = []
        while slots and (reply := slots[0].reply) is not None:
            slots.popleft()
            replies.append(reply)
        if replies:
            transport.write(replies[0] if len(replies) == 1 else b"".join(replies))
        pause = len(slots) >= PB_REQUESTS_IN_FLIGHT_MAX
        if pause != self.reading_paused and not transport.is_closing():
            (transport.pause_reading if pause else transport.resume_reading)()
            self.reading_paused = pause


# --- the process --------------------------------------------------------------------


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(args: argparse.Namespace) -> None:
    node = QuorumNode([address(peer) for peer in args.peer])
    loop = asyncio.get_running_loop()
    host, port = address(args.internode)
    servers = [await loop.create_server(lambda: Link(node), host, port)]
    if args.pb:
        pb_host, pb_port = address(args.pb)
        servers.append(await loop.create_server(lambda: PbConnection(node), pb_host, pb_port))
    runner = web.AppRunner(make_app(node), access_log=None)
    await runner.setup()
    if args.http:
        http_host, http_port = address(args.http)
        await web.TCPSite(runner, http_host, http_port).start()
    await node.connect()
    try:
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--http", help="HOST:PORT of the HTTP API")
    parser.add_argument("--pb", help="HOST:PORT of the Protocol Buffers API")
    parser.add_argument("--internode", required=True, help="HOST:PORT for peers")
    parser.add_argument("--peer", action="append", default=[], help="a peer's internode")
    args = parser.parse_args()
    if not args.http and not args.pb:
        parser.error("give --http, --pb or both")
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
