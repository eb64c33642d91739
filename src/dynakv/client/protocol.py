"""The client's operations, sans I/O: each is a generator that yields the HTTP requests
it needs (a Call) and is sent their answers (a Reply), then returns its result.

The sync Client and the AsyncClient only carry Calls over their connections, so both
speak exactly the same protocol (the h11 / sans-I/O pattern). Nothing here imports
the server's code: the client speaks Riak's HTTP API only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote_plus, urlencode

from dynakv.client.model import (
    DEFAULT_CONTENT_TYPE,
    JSON,
    Object,
    ServerError,
    Sibling,
    error_for,
)

T = TypeVar("T")
DEFAULT_TYPE = "default"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
ACCEPT_SIBLINGS = "multipart/mixed, */*;q=0.5"
Headers = tuple[tuple[str, str], ...]
Resolver = Callable[[list[Sibling]], bytes]
QueryValue = int | str | bool | None

LINK_ELEMENT = re.compile(r'<([^>]*)>((?:[^,"<]|"[^"]*")*)')
LINK_TAG = re.compile(r'riaktag\s*=\s*"([^"]*)"')
LINK_URL = re.compile(r"^/(?:(?:types/[^/]+/)?buckets/([^/]+)/keys/([^/]+)|riak/([^/]+)/([^/]+))")


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request: the path includes the query string."""

    method: str
    path: str
    headers: Headers = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP response; header names and values as received (values UTF-8)."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        lower = name.lower()
        return [value for key, value in self.headers if key.lower() == lower]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise ServerError(f"the node answered invalid JSON: {error}", self.status) from None


Operation = Generator[Call, Reply, T]


# --- paths --------------------------------------------------------------------------


def bucket_path(bucket_type: str, bucket: str) -> str:
    if bucket_type == DEFAULT_TYPE:
        return f"/buckets/{quote(bucket, safe='')}"
    return f"/types/{quote(bucket_type, safe='')}/buckets/{quote(bucket, safe='')}"


def object_path(bucket_type: str, bucket: str, key: str) -> str:
    return f"{bucket_path(bucket_type, bucket)}/keys/{quote(key, safe='')}"


def with_query(path: str, params: Mapping[str, QueryValue]) -> str:
    pairs = [
        (name, str(value).lower() if isinstance(value, bool) else str(value))
        for name, value in params.items()
        if value is not None
    ]
    return f"{path}?{urlencode(pairs)}" if pairs else path


def expect_status(reply: Reply, *statuses: int) -> Reply:
    if reply.status not in statuses:
        raise error_for(reply.status, reply.body)
    return reply


# --- objects ------------------------------------------------------------------------


def get(
    bucket_type: str, bucket: str, key: str, params: Mapping[str, QueryValue]
) -> Operation[Object]:
    path = with_query(object_path(bucket_type, bucket, key), params)
    reply = yield Call("GET", path, (("Accept", ACCEPT_SIBLINGS),))
    return parse_object(bucket_type, bucket, key, reply)


@dataclass(frozen=True, slots=True)
class NewContent:
    """What a put stores: the value and its metadata."""

    value: bytes | str
    content_type: str | None = None
    usermeta: Mapping[str, str] | None = None

    def headers(self) -> list[tuple[str, str]]:
        content_type = self.content_type or (
            TEXT_CONTENT_TYPE if isinstance(self.value, str) else DEFAULT_CONTENT_TYPE
        )
        headers = [("Content-Type", content_type)]
        for name, value in (self.usermeta or {}).items():
            headers.append((f"X-Riak-Meta-{name}", value))
        return headers

    def body(self) -> bytes:
        return self.value.encode("utf-8") if isinstance(self.value, str) else self.value


def put(
    bucket_type: str,
    bucket: str,
    key: str,
    content: NewContent,
    context: bytes | None,
    params: Mapping[str, QueryValue],
) -> Operation[Object | None]:
    """A write; with returnbody=true in params, the object as stored (else None)."""
    headers = content.headers()
    if context:
        headers.append(("X-Riak-Vclock", base64.b64encode(context).decode("ascii")))
    if params.get("returnbody"):
        headers.append(("Accept", ACCEPT_SIBLINGS))
    path = with_query(object_path(bucket_type, bucket, key), params)
    reply = yield Call("PUT", path, tuple(headers), content.body())
    if reply.status == 204:
        return None
    expect_status(reply, 200, 201, 300)
    return parse_object(bucket_type, bucket, key, reply)


def delete(
    bucket_type: str,
    bucket: str,
    key: str,
    context: bytes | None,
    params: Mapping[str, QueryValue],
) -> Operation[None]:
    """A delete; deleting a key that does not exist is not an error."""
    headers: Headers = ()
    if context:
        headers = (("X-Riak-Vclock", base64.b64encode(context).decode("ascii")),)
    path = with_query(object_path(bucket_type, bucket, key), params)
    reply = yield Call("DELETE", path, headers)
    expect_status(reply, 204, 404)


def resolve(
    bucket_type: str,
    bucket: str,
    key: str,
    resolver: Resolver,
    content_type: str | None,
    params: Mapping[str, QueryValue],
) -> Operation[Object]:
    """Read; if there are siblings, write back `resolver(siblings)` with the context
    and answer the object as stored (it may again have siblings if another write
    raced with this one)."""
    current = yield from get(bucket_type, bucket, key, params)
    if not current.has_siblings:
        return current
    value = resolver(list(current.siblings))
    content = NewContent(value, content_type or current.siblings[0].content_type)
    stored = yield from put(bucket_type, bucket, key, content, current.context,
                            {"returnbody": True})
    if stored is None:
        raise ServerError("the node did not return the resolved object", 204)
    return stored


def parse_object(bucket_type: str, bucket: str, key: str, reply: Reply) -> Object:
    context = parse_context(reply.header("X-Riak-Vclock"))
    if reply.status == 404:
        deleted = (reply.header("X-Riak-Deleted") or "").lower() == "true"
        return Object(bucket_type, bucket, key, (), context, deleted=deleted and bool(context))
    if reply.status in (200, 201):
        siblings: tuple[Sibling, ...] = (parse_sibling(reply.headers, reply.body),)
    elif reply.status == 300:
        siblings = parse_siblings(reply)
    else:
        raise error_for(reply.status, reply.body)
    return Object(bucket_type, bucket, key, siblings, context)


def parse_context(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ServerError(f"the node sent an invalid X-Riak-Vclock: {value!r}") from None


def parse_sibling(headers: Iterable[tuple[str, str]], body: bytes) -> Sibling:
    content_type, content_encoding, vtag = DEFAULT_CONTENT_TYPE, "", ""
    last_modified: datetime | None = None
    usermeta: dict[str, str] = {}
    links: list[tuple[str, str, str]] = []
    indexes: list[tuple[str, str]] = []
    deleted = False
    for name, value in headers:
        lower = name.lower()
        if lower == "content-type":
            content_type = value
        elif lower == "content-encoding":
            content_encoding = value
        elif lower == "etag":
            vtag = value.strip().removeprefix("W/").strip('"')
        elif lower == "last-modified":
            last_modified = parse_http_date(value)
        elif lower.startswith("x-riak-meta-"):
            usermeta[lower.removeprefix("x-riak-meta-")] = value
        elif lower.startswith("x-riak-index-"):
            field = lower.removeprefix("x-riak-index-")
            indexes.extend((field, term.strip()) for term in value.split(",") if term.strip())
        elif lower == "link":
            links.extend(parse_links(value))
        elif lower == "x-riak-deleted":
            deleted = value.strip().lower() == "true"
    return Sibling(body, content_type, content_encoding, vtag, last_modified, usermeta,
                   tuple(links), tuple(indexes), deleted)


def parse_http_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def parse_links(value: str) -> list[tuple[str, str, str]]:
    links = []
    for element in LINK_ELEMENT.finditer(value):
        tag = LINK_TAG.search(element.group(2))
        url = LINK_URL.match(element.group(1).strip())
        if tag is None or url is None:
            continue
        bucket, key = (url.group(1), url.group(2)) if url.group(1) else url.group(3, 4)
        links.append((unquote_plus(bucket), unquote_plus(key), unquote_plus(tag.group(1))))
    return links


def parse_siblings(reply: Reply) -> tuple[Sibling, ...]:
    content_type = reply.header("Content-Type") or ""
    message = Message()
    message["Content-Type"] = content_type
    boundary = message.get_param("boundary")
    if message.get_content_type() != "multipart/mixed" or not isinstance(boundary, str):
        raise ServerError(f"siblings answered as {content_type!r}, not multipart/mixed", 300)
    return tuple(parse_sibling(headers, body)
                 for headers, body in split_multipart(reply.body, boundary))


def split_multipart(body: bytes, boundary: str) -> list[tuple[Headers, bytes]]:
    """The parts of a multipart body, byte-exact (values may be binary): each part's
    headers and its content, without the CRLF that belongs to the next delimiter."""
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    data = body if body.startswith(b"\r\n") else b"\r\n" + body
    parts: list[tuple[Headers, bytes]] = []
    for piece in data.split(delimiter)[1:]:
        if piece.startswith(b"--"):
            break
        _padding, _, rest = piece.partition(b"\r\n")
        if rest.startswith(b"\r\n"):
            head, content = b"", rest[2:]
        else:
            head, _, content = rest.partition(b"\r\n\r\n")
        parts.append((parse_header_block(head), content))
    return parts


def parse_header_block(head: bytes) -> Headers:
    headers: list[tuple[str, str]] = []
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip(), value.strip()))
    return tuple(headers)


# --- buckets and the node --------------------------------------------------------


def get_bucket_props(bucket_type: str, bucket: str) -> Operation[JSON]:
    reply = yield Call("GET", bucket_path(bucket_type, bucket) + "/props")
    document = expect_status(reply, 200).json()
    props = document.get("props") if isinstance(document, dict) else None
    if not isinstance(props, dict):
        raise ServerError("bucket properties without a props object", reply.status)
    return props


def set_bucket_props(bucket_type: str, bucket: str, props: Mapping[str, Any]
                     ) -> Operation[None]:
    body = json.dumps({"props": dict(props)}).encode()
    path = bucket_path(bucket_type, bucket) + "/props"
    reply = yield Call("PUT", path, (("Content-Type", "application/json"),), body)
    expect_status(reply, 204, 200)


def reset_bucket_props(bucket_type: str, bucket: str) -> Operation[None]:
    reply = yield Call("DELETE", bucket_path(bucket_type, bucket) + "/props")
    expect_status(reply, 204, 200)


def list_keys(bucket_type: str, bucket: str, timeout_ms: int | None) -> Operation[list[str]]:
    path = with_query(bucket_path(bucket_type, bucket) + "/keys",
                      {"keys": "true", "timeout": timeout_ms})
    reply = yield Call("GET", path)
    return json_list(expect_status(reply, 200), "keys")


def list_buckets(bucket_type: str, timeout_ms: int | None) -> Operation[list[str]]:
    prefix = "" if bucket_type == DEFAULT_TYPE else f"/types/{quote(bucket_type, safe='')}"
    path = with_query(prefix + "/buckets", {"buckets": "true", "timeout": timeout_ms})
    reply = yield Call("GET", path)
    return json_list(expect_status(reply, 200), "buckets")


def json_list(reply: Reply, field: str) -> list[str]:
    document = reply.json()
    items = document.get(field) if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ServerError(f"the listing has no {field!r} list", reply.status)
    return [str(item) for item in items]


def ping() -> Operation[bool]:
    reply = yield Call("GET", "/ping")
    expect_status(reply, 200)
    return True


def stats() -> Operation[JSON]:
    reply = yield Call("GET", "/stats", (("Accept", "application/json"),))
    document = expect_status(reply, 200).json()
    if not isinstance(document, dict):
        raise ServerError("stats are not a JSON object", reply.status)
    return document


class Operations(Protocol):
    """The operations of a wire protocol: this module (HTTP) and client/pb_protocol.py
    (PB) both provide them, with the same arguments and results."""

    def get(self, bucket_type: str, bucket: str, key: str, params: Mapping[str, QueryValue]
            ) -> Generator[Any, Any, Object]: ...
    def put(self, bucket_type: str, bucket: str, key: str, content: NewContent,
            context: bytes | None, params: Mapping[str, QueryValue]
            ) -> Generator[Any, Any, Object | None]: ...
    def delete(self, bucket_type: str, bucket: str, key: str, context: bytes | None,
               params: Mapping[str, QueryValue]) -> Generator[Any, Any, None]: ...
    def resolve(self, bucket_type: str, bucket: str, key: str, resolver: Resolver,
                content_type: str | None, params: Mapping[str, QueryValue]
                ) -> Generator[Any, Any, Object]: ...
    def get_bucket_props(self, bucket_type: str, bucket: str) -> Generator[Any, Any, JSON]: ...
    def set_bucket_props(self, bucket_type: str, bucket: str, props: Mapping[str, Any]
                         ) -> Generator[Any, Any, None]: ...
    def reset_bucket_props(self, bucket_type: str, bucket: str
                           ) -> Generator[Any, Any, None]: ...
    def list_keys(self, bucket_type: str, bucket: str, timeout_ms: int | None
                  ) -> Generator[Any, Any, list[str]]: ...
    def list_buckets(self, bucket_type: str, timeout_ms: int | None
                     ) -> Generator[Any, Any, list[str]]: ...
    def ping(self) -> Generator[Any, Any, bool]: ...
    def stats(self) -> Generator[Any, Any, JSON]: ...


def drive(operation: Generator[Any, Any, T], send: Callable[[Any], Any]) -> T:
    """Run an operation to its result, carrying its calls with `send` (blocking)."""
    try:
        call = next(operation)
        while True:
            call = operation.send(send(call))
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        operation.close()

