"""The client's operations over Riak's PB protocol, sans I/O: the same operations as
client/protocol.py (same names, same arguments, same results), each a generator that
yields the request frames it needs (a PbCall) and is sent their replies (a PbReply).

Quorums travel as uint32s with Riak's symbolic values; the context is `vclock`;
siblings are the RpbContent of a reply. An RpbErrorResp raises the client error its
errcode names (dynakv sends the HTTP status; Riak sends 0: a ServerError).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from dynakv.client.model import JSON, BadRequest, Object, ServerError, Sibling, error_for
from dynakv.client.protocol import DEFAULT_TYPE, NewContent, QueryValue, Resolver
from dynakv.proto import riak_pb2 as pb
from dynakv.proto.frames import Code, encode_frame, quorum_from_wire, quorum_to_wire

T = TypeVar("T")
M = TypeVar("M", bound=Message)

QUORUM_PROPS = ("r", "w", "dw", "rw", "pr", "pw")
PLAIN_PROPS = ("n_val", "allow_mult", "last_write_wins", "basic_quorum", "notfound_ok")


@dataclass(frozen=True, slots=True)
class PbCall:
    """One request frame; `streamed` replies end with a message whose done is set."""

    frame: bytes
    streamed: bool = False


@dataclass(frozen=True, slots=True)
class PbReply:
    """The reply frames of one request, (code, payload) each."""

    frames: list[tuple[int, bytes]]


def reply_complete(call: PbCall, code: int, payload: bytes) -> bool:
    """Whether this frame is the last of `call`'s reply."""
    if not call.streamed or code == Code.ERROR_RESP:
        return True
    # RpbListKeysResp and RpbListBucketsResp both carry done as field 2.
    message = pb.RpbListKeysResp()
    message.ParseFromString(payload)
    return message.done


PbOperation = Generator[PbCall, PbReply, T]


def call(code: Code, message: Message | None = None, streamed: bool = False) -> PbCall:
    return PbCall(encode_frame(code, message.SerializeToString() if message else b""), streamed)


def expect_code(reply: PbReply, code: Code) -> bytes:
    """The single reply frame's payload, if it has the expected code."""
    received, payload = reply.frames[-1]
    if received == Code.ERROR_RESP:
        raise error_of(payload)
    if received != code:
        raise ServerError(f"the node answered message code {received}, not {code}")
    return payload


def expect(reply: PbReply, code: Code, cls: type[M]) -> M:
    """The single reply frame's message, if it has the expected code."""
    return parse(cls, expect_code(reply, code))


def parse(cls: type[M], payload: bytes) -> M:
    message = cls()
    try:
        message.ParseFromString(payload)
    except DecodeError as error:
        raise ServerError(f"the node sent a malformed {cls.__name__}: {error}") from None
    return message


def error_of(payload: bytes) -> Exception:
    error = parse(pb.RpbErrorResp, payload)
    return error_for(error.errcode, error.errmsg)


def wire_quorum(name: str, value: QueryValue) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{name}={value!r}: expected an integer or one/quorum/all/default", 400)
    try:
        return quorum_to_wire(int(value) if isinstance(value, str) and value.isdigit() else value)
    except ValueError as error:
        raise BadRequest(f"{name}={value!r}: {error}", 400) from None


def set_common(message: Any, bucket_type: str, params: Mapping[str, QueryValue],
               quorums: tuple[str, ...]) -> None:
    if bucket_type != DEFAULT_TYPE:
        message.type = bucket_type.encode()
    for name in quorums:
        number = wire_quorum(name, params.get(name))
        if number is not None:
            setattr(message, name, number)
    timeout = params.get("timeout")
    if timeout is not None:
        message.timeout = int(timeout)


def sibling(content: pb.RpbContent) -> Sibling:
    content_type = content.content_type.decode("utf-8", "replace") or "application/octet-stream"
    if content.charset:
        content_type += f"; charset={content.charset.decode('utf-8', 'replace')}"
    last_modified = None
    if content.HasField("last_mod"):
        seconds = content.last_mod + content.last_mod_usecs / 1_000_000
        last_modified = datetime.fromtimestamp(seconds, UTC)
    return Sibling(
        value=content.value,
        content_type=content_type,
        content_encoding=content.content_encoding.decode("utf-8", "replace"),
        vtag=content.vtag.decode("utf-8", "replace"),
        last_modified=last_modified,
        usermeta={pair.key.decode("utf-8", "replace"): pair.value.decode("utf-8", "replace")
                  for pair in content.usermeta},
        links=tuple((link.bucket.decode("utf-8", "replace"), link.key.decode("utf-8", "replace"),
                     link.tag.decode("utf-8", "replace")) for link in content.links),
        indexes=tuple((pair.key.decode("utf-8", "replace"), pair.value.decode("utf-8", "replace"))
                      for pair in content.indexes),
        deleted=content.deleted,
    )


def fill_content(out: pb.RpbContent, content: NewContent) -> None:
    out.value = content.body()
    content_type = dict(content.headers())["Content-Type"]
    media_type, _, parameters = content_type.partition(";")
    name, _, charset = parameters.strip().partition("=")
    if name.strip().lower() == "charset" and ";" not in charset:
        out.content_type = media_type.strip().encode()
        out.charset = charset.strip().strip('"').encode()
    else:
        out.content_type = content_type.encode()
    for key, value in (content.usermeta or {}).items():
        out.usermeta.add(key=key.encode(), value=value.encode())


# --- objects ------------------------------------------------------------------------


def get(bucket_type: str, bucket: str, key: str, params: Mapping[str, QueryValue]
        ) -> PbOperation[Object]:
    message = pb.RpbGetReq(bucket=bucket.encode(), key=key.encode(), deletedvclock=True)
    set_common(message, bucket_type, params, ("r", "pr"))
    for name in ("notfound_ok", "basic_quorum"):
        if params.get(name) is not None:
            setattr(message, name, bool(params[name]))
    reply = yield call(Code.GET_REQ, message)
    return object_of(bucket_type, bucket, key, expect(reply, Code.GET_RESP, pb.RpbGetResp))


def object_of(bucket_type: str, bucket: str, key: str,
              message: pb.RpbGetResp | pb.RpbPutResp) -> Object:
    siblings = tuple(sibling(content) for content in message.content)
    context = message.vclock or None
    return Object(bucket_type, bucket, key, siblings, context,
                  deleted=not siblings and context is not None)


def put(bucket_type: str, bucket: str, key: str, content: NewContent, context: bytes | None,
        params: Mapping[str, QueryValue]) -> PbOperation[Object | None]:
    """A write; with returnbody in params, the object as stored (else None)."""
    message = pb.RpbPutReq(bucket=bucket.encode(), key=key.encode())
    if context:
        message.vclock = context
    fill_content(message.content, content)
    set_common(message, bucket_type, params, ("w", "dw", "pw"))
    if params.get("returnbody"):
        message.return_body = True
    reply = yield call(Code.PUT_REQ, message)
    stored = expect(reply, Code.PUT_RESP, pb.RpbPutResp)
    if not params.get("returnbody"):
        return None
    return object_of(bucket_type, bucket, key, stored)


def delete(bucket_type: str, bucket: str, key: str, context: bytes | None,
           params: Mapping[str, QueryValue]) -> PbOperation[None]:
    message = pb.RpbDelReq(bucket=bucket.encode(), key=key.encode())
    if context:
        message.vclock = context
    set_common(message, bucket_type, params, ("rw", "w", "dw", "pw"))
    reply = yield call(Code.DEL_REQ, message)
    expect_code(reply, Code.DEL_RESP)


def resolve(bucket_type: str, bucket: str, key: str, resolver: Resolver,
            content_type: str | None, params: Mapping[str, QueryValue]) -> PbOperation[Object]:
    """Read; if there are siblings, write back `resolver(siblings)` with the context."""
    current = yield from get(bucket_type, bucket, key, params)
    if not current.has_siblings:
        return current
    value = resolver(list(current.siblings))
    content = NewContent(value, content_type or current.siblings[0].content_type)
    stored = yield from put(bucket_type, bucket, key, content, current.context,
                            {"returnbody": True})
    if stored is None:
        raise ServerError("the node did not return the resolved object")
    return stored


# --- buckets and the node --------------------------------------------------------


def get_bucket_props(bucket_type: str, bucket: str) -> PbOperation[JSON]:
    message = pb.RpbGetBucketReq(bucket=bucket.encode())
    if bucket_type != DEFAULT_TYPE:
        message.type = bucket_type.encode()
    reply = yield call(Code.GET_BUCKET_REQ, message)
    props = expect(reply, Code.GET_BUCKET_RESP, pb.RpbGetBucketResp).props
    result: JSON = {}
    for field, value in props.ListFields():
        result[field.name] = quorum_from_wire(value) if field.name in QUORUM_PROPS else value
    return result


def set_bucket_props(bucket_type: str, bucket: str, props: Mapping[str, Any]) -> PbOperation[None]:
    message = pb.RpbSetBucketReq(bucket=bucket.encode())
    if bucket_type != DEFAULT_TYPE:
        message.type = bucket_type.encode()
    for name, value in props.items():
        try:
            if name in QUORUM_PROPS:
                setattr(message.props, name, wire_quorum(name, value))
            elif name in PLAIN_PROPS:
                setattr(message.props, name, value)
            else:
                raise BadRequest(f"bucket property {name!r} cannot be set over PB", 400)
        except (TypeError, ValueError):
            raise BadRequest(f"bucket property {name}={value!r}: wrong type", 400) from None
    message.props.SetInParent()
    reply = yield call(Code.SET_BUCKET_REQ, message)
    expect_code(reply, Code.SET_BUCKET_RESP)


def reset_bucket_props(bucket_type: str, bucket: str) -> PbOperation[None]:
    message = pb.RpbResetBucketReq(bucket=bucket.encode())
    if bucket_type != DEFAULT_TYPE:
        message.type = bucket_type.encode()
    reply = yield call(Code.RESET_BUCKET_REQ, message)
    expect_code(reply, Code.RESET_BUCKET_RESP)


def listing(reply: PbReply, code: Code) -> list[str]:
    items: list[str] = []
    for received, payload in reply.frames:
        if received == Code.ERROR_RESP:
            raise error_of(payload)
        if received != code:
            raise ServerError(f"the node answered message code {received}, not {code}")
        if code == Code.LIST_KEYS_RESP:
            names = list(parse(pb.RpbListKeysResp, payload).keys)
        else:
            names = list(parse(pb.RpbListBucketsResp, payload).buckets)
        items.extend(name.decode("utf-8", "replace") for name in names)
    return items


def list_keys(bucket_type: str, bucket: str, timeout_ms: int | None) -> PbOperation[list[str]]:
    message = pb.RpbListKeysReq(bucket=bucket.encode())
    set_common(message, bucket_type, {"timeout": timeout_ms}, ())
    reply = yield call(Code.LIST_KEYS_REQ, message, streamed=True)
    return listing(reply, Code.LIST_KEYS_RESP)


def list_buckets(bucket_type: str, timeout_ms: int | None) -> PbOperation[list[str]]:
    message = pb.RpbListBucketsReq(stream=True)
    set_common(message, bucket_type, {"timeout": timeout_ms}, ())
    reply = yield call(Code.LIST_BUCKETS_REQ, message, streamed=True)
    return listing(reply, Code.LIST_BUCKETS_RESP)


def ping() -> PbOperation[bool]:
    reply = yield call(Code.PING_REQ)
    expect_code(reply, Code.PING_RESP)
    return True


def stats() -> PbOperation[JSON]:
    """dynakv's statistics (its own message code; Riak answers an error)."""
    reply = yield call(Code.DKV_GET_STATS_REQ)
    document = json.loads(expect(reply, Code.DKV_GET_STATS_RESP, pb.DkvGetStatsResp).json)
    if not isinstance(document, dict):
        raise ServerError("stats are not a JSON object")
    return document
