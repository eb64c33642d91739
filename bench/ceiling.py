"""A bare quorum server: the ceiling a Python Dynamo-style store could reach here.

Run three (bench/services.py does): each serves the subset of Riak's HTTP API the load
generator uses (GET/PUT /buckets/B/keys/K, /ping) with aiohttp, as dynakv does, and
coordinates every request over N=3 replicas with R=W=2: a put stores locally and
succeeds when one of the two peers acknowledged; a get reads locally and answers when
one peer replied. Peers talk as dynakv's nodes do, msgpack frames (4-byte length)
over persistent connections on asyncio Protocols with uvloop, frames queued in one
event-loop iteration written at once. What it leaves out is what dynakv adds: no
versions, contexts or siblings, no storage (a dict), no ring, hints or failure handling.

    python bench/ceiling.py --name c1 --http 127.0.0.1:9001 --internode 127.0.0.1:9002 \
        --peer 127.0.0.1:9012 --peer 127.0.0.1:9022
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import struct
from typing import Any

import msgpack
from aiohttp import web

LENGTH = struct.Struct(">I")
PUT, PUT_ACK, GET, GET_REPLY = range(4)
TIMEOUT_S = 5.0
RECONNECT_S = 0.1


class Link(asyncio.Protocol):
    """One connection to or from a peer: frames in, frames out (batched per iteration)."""

    def __init__(self, node: QuorumNode) -> None:
        self.node = node
        self.transport: Any = None
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.unpacker = msgpack.Unpacker(raw=False)

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


def make_app(node: QuorumNode) -> web.Application:
    async def get(request: web.Request) -> web.Response:
        key = request.match_info["bucket"] + "/" + request.match_info["key"]
        await node.quorum(GET, key, None)
        value = node.data.get(key)
        if value is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=value, content_type="application/octet-stream")

    async def put(request: web.Request) -> web.Response:
        key = request.match_info["bucket"] + "/" + request.match_info["key"]
        value = await request.read()
        node.data[key] = value
        await node.quorum(PUT, key, value)
        return web.Response(status=204)

    async def ping(request: web.Request) -> web.Response:
        up = sum(link.transport is not None for link in node.links)
        ready = up == len(node.peer_addresses)
        return web.Response(text="OK" if ready else "starting", status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/buckets/{bucket}/keys/{key}", get)
    app.router.add_put("/buckets/{bucket}/keys/{key}", put)
    app.router.add_get("/ping", ping)
    return app


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(args: argparse.Namespace) -> None:
    node = QuorumNode([address(peer) for peer in args.peer])
    loop = asyncio.get_running_loop()
    host, port = address(args.internode)
    server = await loop.create_server(lambda: Link(node), host, port)
    runner = web.AppRunner(make_app(node), access_log=None)
    await runner.setup()
    http_host, http_port = address(args.http)
    await web.TCPSite(runner, http_host, http_port).start()
    await node.connect()
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--http", required=True, help="HOST:PORT of the HTTP API")
    parser.add_argument("--internode", required=True, help="HOST:PORT for peers")
    parser.add_argument("--peer", action="append", default=[], help="a peer's internode")
    args = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
