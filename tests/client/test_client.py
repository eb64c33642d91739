"""The sync and async clients against the HTTP and PB APIs over a fake node, on real
sockets: every test of a transport runs once per protocol."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from dynakv.client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    MultipleSiblings,
    NotFound,
    Sibling,
    Unavailable,
)
from dynakv.client.protocol import split_multipart
from dynakv.core import api
from dynakv.core.errors import ErrorKind
from dynakv.net.http_api import multipart_body
from dynakv.net.pb_api import PbServer
from dynakv.net.stats import RequestStats
from tests.net.fake_service import FakeService


class ServerThread:
    """The HTTP and PB APIs on 127.0.0.1 (ephemeral ports), sharing their request
    statistics as a node's do, in a thread with its own loop."""

    def __init__(self, service: FakeService) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        stats = RequestStats()
        self.runner = web.AppRunner(make_app_for(service, stats))
        self.pb = PbServer(service, stats)

    def start(self) -> dict[str, str]:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> dict[str, str]:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        _, pb_port = await self.pb.start("127.0.0.1", 0)
        return {"http": f"http://127.0.0.1:{port}", "pb": f"pb://127.0.0.1:{pb_port}"}

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.pb.close(), self.loop).result(10)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def make_app_for(service: FakeService, stats: RequestStats) -> web.Application:
    from dynakv.net.http_api import make_app

    return make_app(service, stats)


@dataclass
class Served:
    url: str
    service: FakeService


@pytest.fixture(params=["http", "pb"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    service = FakeService()
    server = ServerThread(service)
    urls = server.start()
    try:
        yield Served(urls[request.param], service)
    finally:
        server.stop()


def concat(siblings: list[Sibling]) -> bytes:
    return b"+".join(sorted(sibling.value for sibling in siblings))


# --- sync ---------------------------------------------------------------------------


def test_sync_put_get_round_trip(served: Served) -> None:
    with Client(served.url) as client:
        assert client.put("users", "alice", "hello", usermeta={"Color": "blü"}) is None
        obj = client.get("users", "alice")
        assert obj.exists and not obj.deleted and not obj.has_siblings
        assert obj.value == b"hello"
        assert obj.sibling.content_type == "text/plain; charset=utf-8"
        assert obj.sibling.usermeta == {"color": "blü"}
        assert obj.sibling.vtag == "vtag1"
        assert obj.sibling.last_modified is not None
        assert obj.context == b"v1"

        client.put("users", "alice", b"\x00bin", context=obj.context, content_type="x/y", w=2)
        obj = client.get("users", "alice", r="all")
        assert obj.value == b"\x00bin" and obj.sibling.content_type == "x/y"
        put = served.service.requests[-2]
        assert isinstance(put, api.PutRequest) and put.w == 2 and put.context == b"v1"
        assert served.service.requests[-1] == api.GetRequest("default", "users", "alice",
                                                            r="all")


def test_sync_not_found_siblings_and_resolve(served: Served) -> None:
    with Client(served.url) as client:
        missing = client.get("b", "k")
        assert not missing.exists and not missing.deleted and missing.context is None
        with pytest.raises(NotFound):
            _ = missing.value

        tricky = b"line\r\n--not-a-boundary\r\n\r\nend\r"
        client.put("b", "k", b"one")
        client.put("b", "k", tricky)
        obj = client.get("b", "k")
        assert obj.has_siblings
        assert sorted(s.value for s in obj.siblings) == sorted([b"one", tricky])
        assert {s.vtag for s in obj.siblings} == {"vtag1", "vtag2"}
        with pytest.raises(MultipleSiblings):
            _ = obj.value

        resolved = client.resolve("b", "k", concat)
        assert resolved.value == b"+".join(sorted([b"one", tricky]))
        assert served.service.requests[-1].context == obj.context  # type: ignore[union-attr]
        assert client.get("b", "k").value == resolved.value
        assert client.resolve("b", "k", concat) == client.get("b", "k")  # nothing to do


def test_sync_return_body_and_delete(served: Served) -> None:
    with Client(served.url) as client:
        stored = client.put("b", "k", b"v", return_body=True)
        assert stored is not None and stored.value == b"v" and stored.context == b"v1"
        client.delete("b", "k", context=stored.context, rw="quorum")
        assert served.service.requests[-1] == api.DeleteRequest(
            "default", "b", "k", context=b"v1", rw="quorum")
        gone = client.get("b", "k")
        assert gone.deleted and not gone.exists and gone.context == b"v2"
        client.delete("b", "never-written")


def test_sync_names_and_bucket_types(served: Served) -> None:
    with Client(served.url) as client:
        name = "a/b c+d é%"
        client.put(name, name, b"v", bucket_type="my type")
        put = served.service.requests[-1]
        assert isinstance(put, api.PutRequest)
        assert (put.bucket_type, put.bucket, put.key) == ("my type", name, name)
        assert client.get(name, name, bucket_type="my type").value == b"v"
        assert client.list_keys(name, bucket_type="my type") == [name]
        assert client.list_buckets(bucket_type="my type") == [name]


def test_sync_buckets_and_node(served: Served) -> None:
    with Client(served.url) as client:
        assert client.ping() is True
        assert client.get_bucket_props("b")["n_val"] == 3
        client.set_bucket_props("b", {"n_val": 5, "allow_mult": False})
        assert client.get_bucket_props("b")["n_val"] == 5
        client.reset_bucket_props("b")
        assert client.get_bucket_props("b")["n_val"] == 3
        for key in ("x", "y", "z"):
            client.put("b", key, b"v")
        assert sorted(client.list_keys("b")) == ["x", "y", "z"]
        assert client.list_buckets() == ["b"]
        stats = client.stats()
        assert stats["node_puts"] == 3 and stats["nodename"] == "fake@127.0.0.1"


def test_sync_errors(served: Served) -> None:
    with Client(served.url) as client:
        with pytest.raises(BadRequest) as bad:
            client.get("b", "k", r="lots")
        assert bad.value.status == 400 and "r=" in bad.value.message
        with pytest.raises(BadRequest):
            client.set_bucket_props("b", {"n_val": "many"})
        served.service.fail_with = api.ErrorResponse(ErrorKind.UNAVAILABLE, "no quorum")
        with pytest.raises(Unavailable) as unavailable:
            client.put("b", "k", b"v")
        assert unavailable.value.status == 503 and unavailable.value.message == "no quorum"
        served.service.fail_with = api.ErrorResponse(ErrorKind.CONFLICT, "too many siblings")
        with pytest.raises(Conflict):
            client.put("b", "k", b"v")
        served.service.fail_with = None
        assert client.ping()  # the connection is still usable after errors


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_connection_failed() -> None:
    with Client(f"http://127.0.0.1:{unused_port()}", timeout_s=2) as client, \
            pytest.raises(ConnectionFailed):
        client.ping()

    async def main() -> None:
        async with AsyncClient(f"http://127.0.0.1:{unused_port()}", timeout_s=2) as client:
            with pytest.raises(ConnectionFailed):
                await client.ping()

    asyncio.run(main())
    with Client(f"pb://127.0.0.1:{unused_port()}", timeout_s=2) as client, \
            pytest.raises(ConnectionFailed):
        client.ping()

    async def main_pb() -> None:
        async with AsyncClient(f"pb://127.0.0.1:{unused_port()}", timeout_s=2) as client:
            with pytest.raises(ConnectionFailed):
                await client.ping()

    asyncio.run(main_pb())
    with pytest.raises(ValueError):
        Client("ftp://example.com")


def test_async_pb_request_times_out_on_a_silent_server() -> None:
    """A PB node that takes connections but stops answering: each request waiting on
    the connection fails once its own timeout has passed (one timer per connection,
    armed again for the next request waiting), and the connection is not reused."""
    from dynakv.client.pb_protocol import call
    from dynakv.client.pb_transport import AsyncPbConnection
    from dynakv.proto.frames import Code

    async def main() -> None:
        answered = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal answered
            while True:
                header = await reader.readexactly(5)
                await reader.readexactly(int.from_bytes(header[:4], "big") - 1)
                if answered == 0:  # the first ping only: RpbPingResp, code 2
                    answered += 1
                    writer.write(b"\x00\x00\x00\x01\x02")

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: AsyncPbConnection("pb://test"), "127.0.0.1", port)
        assert (await connection.request(call(Code.PING_REQ), 5.0)).frames
        started = loop.time()
        first = asyncio.ensure_future(connection.request(call(Code.PING_REQ), 0.2))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(connection.request(call(Code.PING_REQ), 5.0))
        with pytest.raises(ConnectionFailed, match=r"no reply within 0\.2 s"):
            await first
        assert 0.19 <= loop.time() - started < 2.0
        with pytest.raises(ConnectionFailed):  # failed with the connection, not 5 s later
            await second
        assert loop.time() - started < 2.0
        assert connection.closed
        with pytest.raises(ConnectionFailed, match="closed"):
            await connection.request(call(Code.PING_REQ), 5.0)
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_sync_client_reconnects(served: Served) -> None:
    with Client(served.url) as client:
        assert client.ping()
        if client._pb is not None:
            sock = client._pb.sock
        else:
            assert client._connection is not None and client._connection.sock is not None
            sock = client._connection.sock
        sock.shutdown(socket.SHUT_RDWR)  # as if the server closed it when idle
        assert client.ping()


# --- async --------------------------------------------------------------------------


def test_async_client(served: Served) -> None:
    async def main() -> None:
        async with AsyncClient(served.url) as client:
            assert await client.ping()
            missing = await client.get("b", "k")
            assert not missing.exists
            await client.put("b", "k", "one", usermeta={"who": "ä"})
            await client.put("b", "k", b"two\r\n")
            obj = await client.get("b", "k")
            assert sorted(s.value for s in obj.siblings) == [b"one", b"two\r\n"]
            assert {s.usermeta.get("who") for s in obj.siblings} == {"ä", None}
            resolved = await client.resolve("b", "k", concat)
            assert resolved.value == b"one+two\r\n" and resolved.context == b"v3"

            stored = await client.put("b", "k", b"v", context=resolved.context,
                                      return_body=True)
            assert stored is not None and stored.value == b"v"
            await client.delete("b", "k", context=stored.context)
            assert (await client.get("b", "k")).deleted

            await client.set_bucket_props("b", {"n_val": 4}, bucket_type="t")
            assert (await client.get_bucket_props("b", bucket_type="t"))["n_val"] == 4
            await client.reset_bucket_props("b", bucket_type="t")
            await client.put("b", "x", b"v")
            assert await client.list_keys("b") == ["x"]
            assert await client.list_buckets() == ["b"]
            assert (await client.stats())["node_puts"] == 5
            with pytest.raises(BadRequest):
                await client.put("b", "k", b"v", w="lots")

    asyncio.run(main())


# --- multipart parsing --------------------------------------------------------------


def test_split_multipart_is_byte_exact() -> None:
    values = [b"", b"\r\n", b"a\r", b"--b\r\n\r\n", bytes(range(256))]
    siblings = tuple(api.Content(value, vtag=f"t{i}") for i, value in enumerate(values))
    body = multipart_body(siblings, "/buckets/b", "BOUNDARY")
    parts = split_multipart(body, "BOUNDARY")
    assert [content for _, content in parts] == values
    etags = [value for headers, _ in parts for name, value in headers if name.lower() == "etag"]
    assert etags == ["t0", "t1", "t2", "t3", "t4"]
    # A part without headers, and a body without the leading CRLF.
    assert split_multipart(b"--X\r\n\r\nraw\r\n--X--\r\n", "X") == [((), b"raw")]
