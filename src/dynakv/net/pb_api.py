"""The PB API: Riak KV's Protocol Buffers client protocol, over a NodeService.

Each frame (proto/frames.py) carries one request; it is decoded into an api.*
request, run through the node exactly as the HTTP API runs it (net/frontend.py
holds what both share), and answered with Riak's message: the context travels as
`vclock`, siblings as several RpbContent, quorums as uint32s with Riak's symbolic
values, and every failure as an RpbErrorResp whose errmsg says what went wrong and
whose errcode is the HTTP status the HTTP API would answer (Riak sends 0).

A connection is an asyncio Protocol. Requests may be pipelined: up to
limits.PB_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX run at once, and their replies go
out in the order the requests came. A listing streams only once it is the oldest
request of its connection, paced by the socket. Past the in-flight bound, or while
the client does not read its replies, the node stops reading the connection. A
malformed message or an unknown code answers an error and the connection goes on;
a frame that cannot be a frame (length 0, or above limits.PB_FRAME_SIZE_MAX_BYTES)
answers an error after the replies before it, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from google.protobuf.message import DecodeError, Message

from dynakv.core import api, limits
from dynakv.core.buckets import Quorum
from dynakv.core.errors import ClientError, DynakvError, ErrorKind
from dynakv.net.frontend import (
    RIAK_KV_VERSION,
    STATUS_BY_KIND,
    check_timeout_ms,
    current_object,
    expect,
    normalize_indexes,
    stats_document,
    timed_request,
)
from dynakv.net.service import NodeService
from dynakv.net.stats import RequestStats
from dynakv.proto import riak_pb2 as pb
from dynakv.proto.frames import (
    Code,
    FrameDecoder,
    FrameError,
    encode_frame,
    quorum_from_wire,
    quorum_to_wire,
)

log = logging.getLogger("dynakv.pb")

M = TypeVar("M", bound=Message)
DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHARSET_PARAMETER = re.compile(r';\s*charset\s*=\s*"?([^;"]*)"?', re.IGNORECASE)
PING_REPLY = encode_frame(Code.PING_RESP)
INTERNAL_ERROR = 500

# RpbBucketProps fields and the dynakv bucket property each stands for.
QUORUM_PROPS = ("r", "w", "dw", "rw", "pr", "pw")
PLAIN_PROPS = ("n_val", "allow_mult", "last_write_wins", "basic_quorum", "notfound_ok")
# Riak properties accepted and ignored, as the HTTP API ignores them.
IGNORED_PROPS = ("precommit", "has_precommit", "postcommit", "has_postcommit",
                 "chash_keyfun", "linkfun", "old_vclock", "young_vclock", "big_vclock",
                 "small_vclock", "backend", "search")


# --- messages in --------------------------------------------------------------------


def parse(cls: type[M], payload: bytes) -> M:
    message = cls()
    try:
        message.ParseFromString(payload)
    except DecodeError as error:
        raise ClientError(f"malformed {cls.__name__}: {error}") from None
    return message


def text(what: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError(f"{what} is not valid UTF-8 (dynakv names are text)") from None


def bucket_type_of(message: Any) -> str:
    if not message.HasField("type"):
        return api.DEFAULT_TYPE
    return text("bucket type", message.type)


def bucket_names(message: Any) -> tuple[str, str]:
    bucket_type, bucket = bucket_type_of(message), text("bucket", message.bucket)
    api.check_name("bucket type", bucket_type, limits.BUCKET_NAME_SIZE_MAX_BYTES)
    api.check_name("bucket", bucket, limits.BUCKET_NAME_SIZE_MAX_BYTES)
    return bucket_type, bucket


def quorum(message: Any, name: str) -> Quorum | None:
    return quorum_from_wire(getattr(message, name)) if message.HasField(name) else None


def flag(message: Any, name: str) -> bool | None:
    return bool(getattr(message, name)) if message.HasField(name) else None


def timeout(message: Any) -> int | None:
    return check_timeout_ms(message.timeout) if message.HasField("timeout") else None


def refuse_n_val(message: Any) -> None:
    if message.HasField("n_val"):
        raise ClientError("n_val per request is not supported; set the bucket's n_val")


def content_from_pb(content: pb.RpbContent) -> api.Content:
    """A sibling to store. The charset joins the content type as a parameter (as the
    HTTP API stores it); usermeta names are lower-cased (as HTTP headers are)."""
    content_type = text("content_type", content.content_type) or DEFAULT_CONTENT_TYPE
    if content.charset:
        content_type = f"{content_type}; charset={text('charset', content.charset)}"
    usermeta = tuple((text("usermeta name", pair.key).lower(), text("usermeta", pair.value))
                     for pair in content.usermeta)
    if any(not name for name, _ in usermeta):
        raise ClientError("usermeta entry without a name")
    links = tuple((text("link bucket", link.bucket), text("link key", link.key),
                   text("link tag", link.tag)) for link in content.links)
    indexes = normalize_indexes((text("index field", pair.key), text("index term", pair.value))
                                for pair in content.indexes)
    result = api.Content(
        value=content.value,
        content_type=content_type,
        content_encoding=text("content_encoding", content.content_encoding),
        usermeta=usermeta,
        links=links,
        indexes=indexes,
    )
    api.check_content(result)
    return result


def get_request(message: pb.RpbGetReq) -> api.GetRequest:
    refuse_n_val(message)
    bucket_type, bucket = bucket_names(message)
    key = text("key", message.key)
    api.check_key(bucket_type, bucket, key)
    return api.GetRequest(bucket_type, bucket, key, r=quorum(message, "r"),
                          pr=quorum(message, "pr"), notfound_ok=flag(message, "notfound_ok"),
                          basic_quorum=flag(message, "basic_quorum"),
                          timeout_ms=timeout(message))


def put_request(message: pb.RpbPutReq) -> api.PutRequest:
    """The put; without a key, under a new random one (as HTTP's POST)."""
    refuse_n_val(message)
    if message.asis:
        raise ClientError("asis is not supported (it is for Riak's own replication)")
    bucket_type, bucket = bucket_names(message)
    key = text("key", message.key) if message.HasField("key") else secrets.token_urlsafe(18)
    api.check_key(bucket_type, bucket, key)
    return api.PutRequest(bucket_type, bucket, key, content_from_pb(message.content),
                          context=message.vclock, w=quorum(message, "w"),
                          dw=quorum(message, "dw"), pw=quorum(message, "pw"),
                          return_body=message.return_body or message.return_head,
                          timeout_ms=timeout(message))


def delete_request(message: pb.RpbDelReq) -> api.DeleteRequest:
    """The delete; r and pr are accepted for Riak's clients (its read uses the
    bucket's defaults), as over HTTP."""
    refuse_n_val(message)
    bucket_type, bucket = bucket_names(message)
    key = text("key", message.key)
    api.check_key(bucket_type, bucket, key)
    quorum(message, "r")
    quorum(message, "pr")
    return api.DeleteRequest(bucket_type, bucket, key, context=message.vclock,
                             rw=quorum(message, "rw"), w=quorum(message, "w"),
                             dw=quorum(message, "dw"), pw=quorum(message, "pw"),
                             timeout_ms=timeout(message))


def props_from_pb(props: pb.RpbBucketProps) -> dict[str, Any]:
    """The properties a client set, by dynakv's (and Riak's HTTP) names."""
    changes: dict[str, Any] = {}
    for field, value in props.ListFields():
        if field.name in PLAIN_PROPS:
            changes[field.name] = value
        elif field.name in QUORUM_PROPS:
            changes[field.name] = quorum_from_wire(value)
        elif field.name not in IGNORED_PROPS and value:
            raise ClientError(f"bucket property {field.name} is not supported")
    return changes


# --- messages out -------------------------------------------------------------------


def split_charset(content_type: str) -> tuple[str, str]:
    """'text/plain; charset=utf-8' -> ('text/plain', 'utf-8'), as Riak's PB API
    carries them."""
    match = CHARSET_PARAMETER.search(content_type)
    if match is None:
        return content_type, ""
    rest = (content_type[:match.start()] + content_type[match.end():]).strip()
    return rest, match.group(1).strip()


def fill_content(out: pb.RpbContent, content: api.Content, head: bool = False) -> None:
    out.value = b"" if head else content.value
    content_type, charset = split_charset(content.content_type)
    out.content_type = content_type.encode()
    if charset:
        out.charset = charset.encode()
    if content.content_encoding:
        out.content_encoding = content.content_encoding.encode()
    if content.vtag:
        out.vtag = content.vtag.encode()
    if content.last_modified_ms:
        seconds, milliseconds = divmod(content.last_modified_ms, 1000)
        out.last_mod = seconds
        out.last_mod_usecs = milliseconds * 1000
    for name, value in content.usermeta:
        out.usermeta.add(key=name.encode(), value=value.encode())
    for bucket, key, tag in content.links:
        out.links.add(bucket=bucket.encode(), key=key.encode(), tag=tag.encode())
    for field, term in content.indexes:
        out.indexes.add(key=field.encode(), value=term.encode())
    if content.deleted:
        out.deleted = True


def props_to_pb(props: dict[str, Any]) -> pb.RpbBucketProps:
    out = pb.RpbBucketProps()
    for name in PLAIN_PROPS:
        if name in props:
            setattr(out, name, props[name])
    for name in QUORUM_PROPS:
        if name in props:
            setattr(out, name, quorum_to_wire(props[name]))
    return out


def error_frame(code: int, message: str) -> bytes:
    reply = pb.RpbErrorResp(errmsg=message.encode("utf-8", "replace"), errcode=code)
    return encode_frame(Code.ERROR_RESP, reply.SerializeToString())


def reply(code: Code, message: Message | None = None) -> bytes:
    return encode_frame(code, message.SerializeToString() if message is not None else b"")


# --- the API ------------------------------------------------------------------------

Handler = Callable[[bytes], Awaitable[bytes]]
Listing = Callable[[bytes], Awaitable[tuple[api.ListKeysRequest | api.ListBucketsRequest, bool]]]


class PbApi:
    """Answers one request frame at a time (connections are PbConnection)."""

    def __init__(self, service: NodeService, stats: RequestStats | None = None) -> None:
        self.service = service
        self.stats = stats if stats is not None else RequestStats()
        self.connections: set[PbConnection] = set()
        self.handlers: dict[int, Handler] = {
            Code.GET_CLIENT_ID_REQ: self.get_client_id,
            Code.SET_CLIENT_ID_REQ: self.set_client_id,
            Code.GET_SERVER_INFO_REQ: self.server_info,
            Code.GET_REQ: self.get,
            Code.PUT_REQ: self.put,
            Code.DEL_REQ: self.delete,
            Code.GET_BUCKET_REQ: self.get_bucket,
            Code.SET_BUCKET_REQ: self.set_bucket,
            Code.RESET_BUCKET_REQ: self.reset_bucket,
            Code.DKV_GET_STATS_REQ: self.get_stats,
        }
        self.listings: dict[int, Listing] = {
            Code.LIST_KEYS_REQ: self.list_keys_request,
            Code.LIST_BUCKETS_REQ: self.list_buckets_request,
        }

    async def answer(self, code: int, payload: bytes) -> bytes:
        """The reply frame to one request (an error frame if it failed)."""
        handler = self.handlers.get(code)
        try:
            if handler is None:
                raise ClientError(unknown_code_message(code))
            return await handler(payload)
        except DynakvError as error:
            return error_frame(STATUS_BY_KIND[error.kind], error.message)
        except Exception as error:
            log.exception("unexpected error answering PB message code %d", code)
            return error_frame(INTERNAL_ERROR,
                               f"internal error ({type(error).__name__}); see the node's log")

    async def stream(self, code: int, payload: bytes, write: Callable[[bytes], Awaitable[None]]
                     ) -> None:
        """Write the frames of a listing: Riak's list keys always streams (the last
        message has done); list buckets streams only if asked, else one message."""
        try:
            call, streamed = await self.listings[code](payload)
        except DynakvError as error:
            await write(error_frame(STATUS_BY_KIND[error.kind], error.message))
            return
        chunks = self.service.stream(call)
        reply_code = (Code.LIST_KEYS_RESP if isinstance(call, api.ListKeysRequest)
                      else Code.LIST_BUCKETS_RESP)
        collected: list[bytes] = []
        try:
            async for chunk in chunks:
                if isinstance(chunk, api.ErrorResponse):
                    await write(error_frame(STATUS_BY_KIND[chunk.kind], chunk.message))
                    return
                items = [item.encode() for item in chunk.items]
                if not streamed:
                    collected.extend(items)
                    continue
                if items or chunk.done:
                    await write(listing_frame(reply_code, items, chunk.done))
            if not streamed:
                await write(listing_frame(reply_code, collected, True))
        except ConnectionError:
            raise
        except Exception as error:
            log.exception("listing failed")
            await write(error_frame(INTERNAL_ERROR,
                                    f"internal error ({type(error).__name__}); see the node's log"))
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    # --- handlers ---------------------------------------------------------------------

    async def get_client_id(self, payload: bytes) -> bytes:
        return reply(Code.GET_CLIENT_ID_RESP, pb.RpbGetClientIdResp(client_id=b"dynakv"))

    async def set_client_id(self, payload: bytes) -> bytes:
        parse(pb.RpbSetClientIdReq, payload)  # accepted, unused: dynakv's clocks are per node
        return reply(Code.SET_CLIENT_ID_RESP)

    async def server_info(self, payload: bytes) -> bytes:
        info = pb.RpbGetServerInfoResp(node=self.service.name.encode(),
                                       server_version=RIAK_KV_VERSION.encode())
        return reply(Code.GET_SERVER_INFO_RESP, info)

    async def get(self, payload: bytes) -> bytes:
        message = parse(pb.RpbGetReq, payload)
        call = get_request(message)
        response = expect(await timed_request(self.service, self.stats, "get", call),
                          api.ObjectResponse)
        out = pb.RpbGetResp()
        if response.siblings:
            if message.HasField("if_modified") and message.if_modified == response.context:
                out.unchanged = True
            else:
                for content in response.siblings:
                    fill_content(out.content.add(), content, message.head)
                out.vclock = response.context
        elif response.context and message.deletedvclock:
            out.vclock = response.context  # a tombstone's context, asked for
        return reply(Code.GET_RESP, out)

    async def put(self, payload: bytes) -> bytes:
        message = parse(pb.RpbPutReq, payload)
        call = put_request(message)
        if message.if_none_match or message.if_not_modified:
            current = await current_object(self.service, call)
            if message.if_none_match and current.siblings:
                raise ClientError("match_found", ErrorKind.PRECONDITION_FAILED)
            if message.if_not_modified:
                if not current.siblings and not current.context:
                    raise ClientError("notfound", ErrorKind.NOT_FOUND)
                if current.context != call.context:
                    raise ClientError("modified", ErrorKind.PRECONDITION_FAILED)
        response = await timed_request(self.service, self.stats, "put", call)
        out = pb.RpbPutResp()
        if isinstance(response, api.DoneResponse):
            if response.context:
                out.vclock = response.context
        else:
            stored = expect(response, api.ObjectResponse)
            head = message.return_head and not message.return_body
            for content in stored.siblings:
                fill_content(out.content.add(), content, head)
            if stored.context:
                out.vclock = stored.context
        if not message.HasField("key"):
            out.key = call.key.encode()
        return reply(Code.PUT_RESP, out)

    async def delete(self, payload: bytes) -> bytes:
        call = delete_request(parse(pb.RpbDelReq, payload))
        response = await timed_request(self.service, self.stats, "delete", call)
        if not (isinstance(response, api.ErrorResponse) and response.kind is ErrorKind.NOT_FOUND):
            expect(response, api.DoneResponse)
        return reply(Code.DEL_RESP)

    async def get_bucket(self, payload: bytes) -> bytes:
        bucket_type, bucket = bucket_names(parse(pb.RpbGetBucketReq, payload))
        response = expect(await self.service.request(
            api.GetBucketPropsRequest(bucket_type, bucket)), api.PropsResponse)
        return reply(Code.GET_BUCKET_RESP, pb.RpbGetBucketResp(props=props_to_pb(response.props)))

    async def set_bucket(self, payload: bytes) -> bytes:
        message = parse(pb.RpbSetBucketReq, payload)
        bucket_type, bucket = bucket_names(message)
        call = api.SetBucketPropsRequest(bucket_type, bucket, props_from_pb(message.props))
        response = await self.service.request(call)
        if not isinstance(response, api.PropsResponse):
            expect(response, api.DoneResponse)
        return reply(Code.SET_BUCKET_RESP)

    async def reset_bucket(self, payload: bytes) -> bytes:
        bucket_type, bucket = bucket_names(parse(pb.RpbResetBucketReq, payload))
        response = await self.service.request(api.ResetBucketPropsRequest(bucket_type, bucket))
        if not isinstance(response, api.PropsResponse):
            expect(response, api.DoneResponse)
        return reply(Code.RESET_BUCKET_RESP)

    async def get_stats(self, payload: bytes) -> bytes:
        document = json.dumps(stats_document(self.service, self.stats), default=str)
        return reply(Code.DKV_GET_STATS_RESP, pb.DkvGetStatsResp(json=document.encode()))

    async def list_keys_request(self, payload: bytes
                                ) -> tuple[api.ListKeysRequest | api.ListBucketsRequest, bool]:
        message = parse(pb.RpbListKeysReq, payload)
        bucket_type, bucket = bucket_names(message)
        return api.ListKeysRequest(bucket_type, bucket, timeout_ms=timeout(message)), True

    async def list_buckets_request(self, payload: bytes
                                   ) -> tuple[api.ListKeysRequest | api.ListBucketsRequest, bool]:
        message = parse(pb.RpbListBucketsReq, payload)
        bucket_type = bucket_type_of(message)
        api.check_name("bucket type", bucket_type, limits.BUCKET_NAME_SIZE_MAX_BYTES)
        call = api.ListBucketsRequest(bucket_type, timeout_ms=timeout(message))
        return call, bool(message.stream)


def listing_frame(code: Code, items: list[bytes], done: bool) -> bytes:
    if code is Code.LIST_KEYS_RESP:
        return reply(code, pb.RpbListKeysResp(keys=items, done=done or None))
    return reply(code, pb.RpbListBucketsResp(buckets=items, done=done or None))


def unknown_code_message(code: int) -> str:
    try:
        name = Code(code).name
    except ValueError:
        return f"unknown message code {code}"
    return f"message code {code} ({name}) is not a request dynakv serves"


# --- connections --------------------------------------------------------------------


class Slot:
    """One request of a connection, in arrival order, and its reply once known."""

    __slots__ = ("done", "frames", "task", "turn")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self.turn: asyncio.Future[None] | None = None  # a listing waits to be the oldest


class PbConnection(asyncio.Protocol):
    """One client connection: frames in, replies out in request order."""

    def __init__(self, pb_api: PbApi,
                 in_flight_max: int = limits.PB_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
                 frame_size_max: int = limits.PB_FRAME_SIZE_MAX_BYTES) -> None:
        self.api = pb_api
        self.in_flight_max = in_flight_max
        self.decoder = FrameDecoder(frame_size_max)
        self.transport: asyncio.Transport | None = None
        self.slots: deque[Slot] = deque()
        self.closing = False  # take no more requests (the stream is broken)
        self.eof = False  # the client sends no more
        self.reading_paused = False
        self.writing_paused = False
        self.drained: asyncio.Future[None] | None = None

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.api.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.decoder.feed(data)
        self.advance()

    def eof_received(self) -> bool | None:
        # The client sent all it will send: answer what is pending, then close.
        self.eof = True
        self.advance()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.api.connections.discard(self)
        self.closing = True
        self.transport = None
        for slot in self.slots:
            if slot.task is not None:
                slot.task.cancel()
        self.slots.clear()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.update_reading()

    # --- requests and replies ---------------------------------------------------------

    def advance(self) -> None:
        """Write finished replies in order, then take buffered frames while there is
        room; repeat while requests answered at once free room."""
        while True:
            self.write_finished()
            if not self.take_frames():
                break
        if not self.slots and (self.closing or self.eof) and self.transport is not None:
            self.transport.close()
            return
        self.update_reading()

    def take_frames(self) -> int:
        taken = 0
        while not self.closing and len(self.slots) < self.in_flight_max:
            try:
                frame = self.decoder.next_frame()
            except FrameError as error:
                self.fail(str(error))
                break
            if frame is None:
                break
            self.start(*frame)
            taken += 1
        return taken

    def start(self, code: int, payload: bytes) -> None:
        slot = Slot()
        self.slots.append(slot)
        if code == Code.PING_REQ:
            slot.frames.append(PING_REPLY)
            slot.done = True
            return
        loop = asyncio.get_running_loop()
        if code in self.api.listings:
            slot.task = loop.create_task(self.run_listing(slot, code, payload))
        else:
            slot.task = loop.create_task(self.run(slot, code, payload))

    async def run(self, slot: Slot, code: int, payload: bytes) -> None:
        slot.frames.append(await self.api.answer(code, payload))
        self.finish(slot)

    async def run_listing(self, slot: Slot, code: int, payload: bytes) -> None:
        if self.slots and self.slots[0] is not slot:
            slot.turn = asyncio.get_running_loop().create_future()
            await slot.turn
        try:
            await self.api.stream(code, payload, self.write_now)
        except ConnectionError:
            return  # the client went away mid-listing
        self.finish(slot)

    async def write_now(self, frame: bytes) -> None:
        """Write a listing's frame (its request is the oldest), paced by the socket."""
        if self.transport is None:
            raise ConnectionResetError("the client went away")
        self.transport.write(frame)
        if self.writing_paused:
            self.drained = asyncio.get_running_loop().create_future()
            await self.drained

    def finish(self, slot: Slot) -> None:
        slot.done = True
        slot.task = None
        if self.transport is not None:
            self.advance()

    def write_finished(self) -> None:
        slots, transport = self.slots, self.transport
        if transport is None:
            return
        while slots and slots[0].done:
            frames = slots.popleft().frames
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if slots:
            turn = slots[0].turn
            if turn is not None and not turn.done():
                turn.set_result(None)

    def fail(self, message: str) -> None:
        """The stream is not frames: answer after the replies before it, then close."""
        log.info("closing a PB connection: %s", message)
        slot = Slot()
        slot.frames.append(error_frame(400, message))
        slot.done = True
        self.slots.append(slot)
        self.closing = True

    def update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        pause = self.closing or self.writing_paused or len(self.slots) >= self.in_flight_max
        if pause and not self.reading_paused:
            transport.pause_reading()
            self.reading_paused = True
        elif not pause and self.reading_paused:
            transport.resume_reading()
            self.reading_paused = False


class PbServer:
    """The PB API's listening socket."""

    def __init__(self, service: NodeService, stats: RequestStats | None = None) -> None:
        self.api = PbApi(service, stats)
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; the address bound (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: PbConnection(self.api), host, port,
                                               reuse_address=True)
        address = self.server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    def stop_listening(self) -> None:
        """Take no new connections (those open keep being served)."""
        if self.server is not None:
            self.server.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        self.stop_listening()
        for connection in list(self.api.connections):
            if connection.transport is not None:
                connection.transport.close()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None
