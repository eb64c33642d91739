"""The PB API over a fake node: framing, codec round trips, Riak's wire format as
documented, bad frames, pipelining and in-order replies."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from dynakv.core import api
from dynakv.core.errors import ErrorKind
from dynakv.net.pb_api import PbServer, content_from_pb, fill_content, split_charset
from dynakv.proto import riak_pb2 as pb
from dynakv.proto.frames import (
    Code,
    FrameDecoder,
    FrameError,
    encode_frame,
    quorum_from_wire,
    quorum_to_wire,
)
from tests.net.fake_service import FakeService

# --- frames and codec (no sockets) --------------------------------------------------


def test_frame_round_trip_byte_by_byte() -> None:
    frames = [encode_frame(Code.PING_REQ), encode_frame(Code.GET_REQ, b"\x0a\x01b\x12\x01k"),
              encode_frame(Code.PUT_REQ, bytes(range(256)) * 10)]
    decoder = FrameDecoder(100_000)
    out = []
    for byte in b"".join(frames):
        decoder.feed(bytes([byte]))
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == [(1, b""), (9, b"\x0a\x01b\x12\x01k"), (11, bytes(range(256)) * 10)]
    assert decoder.buffered() == 0


def test_documented_get_request_bytes() -> None:
    # Riak's docs: 00 00 00 07 09 0A 01 62 12 01 6B is RpbGetReq bucket "b", key "k".
    message = pb.RpbGetReq(bucket=b"b", key=b"k")
    assert encode_frame(Code.GET_REQ, message.SerializeToString()) == bytes.fromhex(
        "00000007090A016212016B")


def test_frame_bounds() -> None:
    decoder = FrameDecoder(10)
    decoder.feed(struct.pack(">I", 11))
    with pytest.raises(FrameError, match="above the limit"):
        decoder.next_frame()
    decoder = FrameDecoder(10)
    decoder.feed(struct.pack(">I", 0))
    with pytest.raises(FrameError, match="length 0"):
        decoder.next_frame()


def test_symbolic_quorums() -> None:
    assert quorum_from_wire(4294967294) == "one"
    assert quorum_from_wire(4294967293) == "quorum"
    assert quorum_from_wire(4294967292) == "all"
    assert quorum_from_wire(4294967291) == "default"
    assert quorum_from_wire(2) == 2
    for value in ("one", "quorum", "all", "default", 0, 3):
        assert quorum_from_wire(quorum_to_wire(value)) == value
    with pytest.raises(ValueError):
        quorum_to_wire("lots")


def test_content_round_trip() -> None:
    content = api.Content(b"\x00value", "text/plain; charset=utf-8", "gzip",
                          (("color", "blü"),), (("b", "k", "tag"),),
                          (("age_int", "42"), ("name_bin", "x")), 1_700_000_000_123, "vt")
    wire = pb.RpbContent()
    fill_content(wire, content)
    assert wire.content_type == b"text/plain" and wire.charset == b"utf-8"
    assert (wire.last_mod, wire.last_mod_usecs) == (1_700_000_000, 123_000)
    parsed = pb.RpbContent.FromString(wire.SerializeToString())
    back = content_from_pb(parsed)
    assert back.value == content.value and back.content_type == content.content_type
    assert (back.usermeta, back.links, back.indexes) == (
        content.usermeta, content.links, content.indexes)
    assert split_charset('text/html;charset="latin-1"; q=1') == ("text/html; q=1", "latin-1")


# --- over a socket ------------------------------------------------------------------


class Wire:
    """A raw PB connection to the API under test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, code: int, message: Any = None) -> None:
        payload = message.SerializeToString() if message is not None else b""
        self.writer.write(encode_frame(code, payload))

    async def receive(self) -> tuple[int, bytes]:
        (length,) = struct.unpack(">I", await asyncio.wait_for(self.reader.readexactly(4), 5))
        data = await asyncio.wait_for(self.reader.readexactly(length), 5)
        return data[0], data[1:]

    async def error(self) -> pb.RpbErrorResp:
        code, payload = await self.receive()
        assert code == Code.ERROR_RESP, code
        return pb.RpbErrorResp.FromString(payload)


def served(test: Callable[[Wire, FakeService], Awaitable[None]]) -> None:
    async def main() -> None:
        service = FakeService()
        server = PbServer(service)
        _, port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await test(Wire(reader, writer), service)
        finally:
            writer.close()
            await server.close()

    asyncio.run(main())


def test_get_put_delete_siblings_and_contexts() -> None:
    async def test(wire: Wire, service: FakeService) -> None:
        wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"k"))
        code, payload = await wire.receive()
        assert (code, payload) == (Code.GET_RESP, b"")  # not found: an empty message

        put = pb.RpbPutReq(bucket=b"b", key=b"k", w=4294967293, return_body=True,
                           type=b"t", content=pb.RpbContent(value=b"one", content_type=b"x/y"))
        put.content.usermeta.add(key=b"Who", value=b"me")
        wire.send(Code.PUT_REQ, put)
        code, payload = await wire.receive()
        stored = pb.RpbPutResp.FromString(payload)
        assert code == Code.PUT_RESP and stored.vclock == b"v1" and not stored.HasField("key")
        assert [c.value for c in stored.content] == [b"one"]
        assert stored.content[0].usermeta[0].key == b"who"
        request = service.requests[-1]
        assert isinstance(request, api.PutRequest)
        assert (request.bucket_type, request.w, request.content.content_type) == (
            "t", "quorum", "x/y")

        sibling = pb.RpbPutReq(bucket=b"b", key=b"k", type=b"t",
                               content=pb.RpbContent(value=b"two"))
        wire.send(Code.PUT_REQ, sibling)
        await wire.receive()
        wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"k", type=b"t", r=2))
        got = pb.RpbGetResp.FromString((await wire.receive())[1])
        assert sorted(c.value for c in got.content) == [b"one", b"two"] and got.vclock == b"v2"
        assert service.requests[-1] == api.GetRequest("t", "b", "k", r=2)

        wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"k", type=b"t",
                                             if_modified=b"v2"))
        assert pb.RpbGetResp.FromString((await wire.receive())[1]).unchanged

        wire.send(Code.DEL_REQ, pb.RpbDelReq(bucket=b"b", key=b"k", type=b"t", vclock=b"v2",
                                             rw=4294967294))
        assert (await wire.receive()) == (Code.DEL_RESP, b"")
        last: api.Request = service.requests[-1]  # not narrowed by the GetRequest above
        assert last == api.DeleteRequest("t", "b", "k", context=b"v2", rw="one")
        wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"k", type=b"t"))
        assert (await wire.receive()) == (Code.GET_RESP, b"")  # tombstone: not found...
        wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"k", type=b"t",
                                             deletedvclock=True))
        assert pb.RpbGetResp.FromString((await wire.receive())[1]).vclock == b"v3"  # ...or not

        wire.send(Code.PUT_REQ, pb.RpbPutReq(bucket=b"b", content=pb.RpbContent(value=b"v")))
        created = pb.RpbPutResp.FromString((await wire.receive())[1])
        assert len(created.key) == 24  # a key made by the node

    served(test)


def test_conditional_puts() -> None:
    async def test(wire: Wire, service: FakeService) -> None:
        content = pb.RpbContent(value=b"v")
        wire.send(Code.PUT_REQ, pb.RpbPutReq(bucket=b"b", key=b"k", content=content,
                                             if_not_modified=True))
        assert (await wire.error()).errmsg == b"notfound"
        wire.send(Code.PUT_REQ, pb.RpbPutReq(bucket=b"b", key=b"k", content=content,
                                             if_none_match=True))
        assert (await wire.receive())[0] == Code.PUT_RESP
        wire.send(Code.PUT_REQ, pb.RpbPutReq(bucket=b"b", key=b"k", content=content,
                                             if_none_match=True))
        error = await wire.error()
        assert (error.errmsg, error.errcode) == (b"match_found", 412)
        wire.send(Code.PUT_REQ, pb.RpbPutReq(bucket=b"b", key=b"k", content=content,
                                             vclock=b"v0", if_not_modified=True))
        assert (await wire.error()).errmsg == b"modified"
        wire.send(Code.PUT_REQ, pb.RpbPutReq(bucket=b"b", key=b"k", content=content,
                                             vclock=b"v1", if_not_modified=True))
        assert (await wire.receive())[0] == Code.PUT_RESP

    served(test)


def test_listings_buckets_props_and_node() -> None:
    async def test(wire: Wire, service: FakeService) -> None:
        for key in (b"a", b"b", b"c"):
            wire.send(Code.PUT_REQ, pb.RpbPutReq(bucket=b"bk", key=key,
                                                 content=pb.RpbContent(value=b"v")))
            await wire.receive()
        wire.send(Code.LIST_KEYS_REQ, pb.RpbListKeysReq(bucket=b"bk"))
        keys: list[bytes] = []
        while True:
            code, payload = await wire.receive()
            assert code == Code.LIST_KEYS_RESP
            page = pb.RpbListKeysResp.FromString(payload)
            keys.extend(page.keys)
            if page.done:
                break
        assert sorted(keys) == [b"a", b"b", b"c"]
        wire.send(Code.LIST_BUCKETS_REQ, pb.RpbListBucketsReq())  # not streamed: one message
        listed = pb.RpbListBucketsResp.FromString((await wire.receive())[1])
        assert list(listed.buckets) == [b"bk"] and listed.done

        props = pb.RpbBucketProps(n_val=5, allow_mult=False, r=4294967294)
        wire.send(Code.SET_BUCKET_REQ, pb.RpbSetBucketReq(bucket=b"bk", props=props))
        assert (await wire.receive()) == (Code.SET_BUCKET_RESP, b"")
        wire.send(Code.GET_BUCKET_REQ, pb.RpbGetBucketReq(bucket=b"bk"))
        got = pb.RpbGetBucketResp.FromString((await wire.receive())[1]).props
        assert (got.n_val, got.allow_mult, got.r, got.w) == (5, False, 4294967294, 4294967293)
        wire.send(Code.SET_BUCKET_REQ, pb.RpbSetBucketReq(
            bucket=b"bk", props=pb.RpbBucketProps(consistent=True)))
        assert b"consistent is not supported" in (await wire.error()).errmsg
        wire.send(Code.RESET_BUCKET_REQ, pb.RpbResetBucketReq(bucket=b"bk"))
        assert (await wire.receive()) == (Code.RESET_BUCKET_RESP, b"")

        wire.send(Code.GET_SERVER_INFO_REQ)
        code, payload = await wire.receive()
        info = pb.RpbGetServerInfoResp.FromString(payload)
        assert code == Code.GET_SERVER_INFO_RESP and info.node == b"fake@127.0.0.1"
        assert info.server_version.startswith(b"2.")  # what Riak's clients check features by
        wire.send(Code.PING_REQ)
        assert (await wire.receive()) == (Code.PING_RESP, b"")

    served(test)


def test_errors_keep_the_connection() -> None:
    async def test(wire: Wire, service: FakeService) -> None:
        wire.send(99)
        error = await wire.error()
        assert (error.errmsg, error.errcode) == (b"unknown message code 99", 400)
        wire.send(Code.GET_RESP)
        assert b"not a request" in (await wire.error()).errmsg
        wire.writer.write(encode_frame(Code.GET_REQ, b"\xff\xff\xff"))
        assert (await wire.error()).errmsg.startswith(b"malformed RpbGetReq")
        wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"\xff"))
        assert b"not valid UTF-8" in (await wire.error()).errmsg
        wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"k", r=7))
        service.fail_with = api.ErrorResponse(ErrorKind.UNAVAILABLE, "no quorum")
        error = await wire.error()
        assert (error.errmsg, error.errcode) == (b"no quorum", 503)
        service.fail_with = None
        service.raise_with = RuntimeError("boom")
        wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"k"))
        error = await wire.error()
        assert error.errcode == 500 and b"RuntimeError" in error.errmsg
        service.raise_with = None
        wire.send(Code.PING_REQ)
        assert (await wire.receive()) == (Code.PING_RESP, b"")

    served(test)


def test_oversize_and_empty_frames_close_after_earlier_replies() -> None:
    for bad in (struct.pack(">I", 1 << 30), struct.pack(">I", 0)):
        async def test(wire: Wire, service: FakeService, bad: bytes = bad) -> None:
            wire.send(Code.PING_REQ)
            wire.writer.write(bad)
            assert (await wire.receive()) == (Code.PING_RESP, b"")
            assert (await wire.error()).errcode == 400
            assert await asyncio.wait_for(wire.reader.read(), 5) == b""  # closed

        served(test)


class SlowService(FakeService):
    """Answers gets in reverse order of arrival, to show replies stay in order."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.in_flight = 0
        self.in_flight_max = 0

    async def request(self, request: api.Request) -> api.Response:
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            if isinstance(request, api.GetRequest) and request.key.startswith("slow"):
                await self.release.wait()
            return await super().request(request)
        finally:
            self.in_flight -= 1

    async def stream(self, request: api.ListKeysRequest | api.ListBucketsRequest
                     ) -> AsyncIterator[api.ChunkResponse | api.ErrorResponse]:
        async for chunk in super().stream(request):
            yield chunk


def test_pipelined_replies_in_order_and_bounded() -> None:
    async def main() -> None:
        service = SlowService()
        server = PbServer(service)
        _, port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        wire = Wire(reader, writer)
        try:
            wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"slow"))
            wire.send(Code.LIST_BUCKETS_REQ, pb.RpbListBucketsReq(stream=True))
            for index in range(300):
                wire.send(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=f"k{index}".encode()))
            wire.send(Code.PING_REQ)
            await writer.drain()
            await asyncio.sleep(0.2)
            # Bounded: behind the slow request, the connection stopped taking requests
            # at its limit (the rest wait in the socket).
            (connection,) = server.api.connections
            assert len(connection.slots) == 128 and connection.reading_paused
            service.release.set()
            codes = [(await wire.receive())[0] for _ in range(303)]
            assert codes == [Code.GET_RESP, Code.LIST_BUCKETS_RESP, *[Code.GET_RESP] * 300,
                             Code.PING_RESP]
        finally:
            writer.close()
            await server.close()

    asyncio.run(main())


def test_client_gone_mid_request() -> None:
    async def main() -> None:
        service = SlowService()
        server = PbServer(service)
        _, port = await server.start("127.0.0.1", 0)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(encode_frame(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"slow")
                                      .SerializeToString()))
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.1)
        service.release.set()
        await asyncio.sleep(0.05)
        assert not server.api.connections  # dropped, nothing left behind
        await server.close()

    asyncio.run(main())
