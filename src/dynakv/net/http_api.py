"""The HTTP API: Riak KV's HTTP interface for key/value work, over a NodeService.

Each handler turns one HTTP request into an api.* request, runs it through the
node (`service.request`, or `service.stream` for listings) and renders the answer
the way Riak does: X-Riak-Vclock carries the context (base64); several siblings
answer 300 Multiple Choices (multipart/mixed when the client accepts it, else a
list of vtags); a tombstone answers 404 with its context and X-Riak-Deleted.
Bad input (a quorum, a context, a header, a name) answers 400 before anything
reaches the node, so nothing is stored. Errors from the node map to a status by
their ErrorKind; anything unexpected is logged and answers a one-line 500.

Names in paths are percent-decoded UTF-8, and `+` stands for a space, as in Riak
(mochiweb's unquote): clients should send `%2B` for a plus sign and `%2F` for a
slash.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from dynakv.core import api, limits
from dynakv.core.buckets import Quorum, parse_bool, parse_quorum
from dynakv.core.errors import ClientError, DynakvError, ErrorKind
from dynakv.net.frontend import (
    STATUS_BY_KIND,
    check_timeout_ms,
    current_object,
    expect,
    normalize_indexes,
    stats_document,
    timed_request,
)
from dynakv.net.service import NodeService
from dynakv.net.stats import Operation, RequestStats

log = logging.getLogger("dynakv.http")

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MULTIPART_MIXED = "multipart/mixed"
META_PREFIX = "x-riak-meta-"
INDEX_PREFIX = "x-riak-index-"
CONDITIONAL_HEADERS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")

SERVICE: web.AppKey[NodeService] = web.AppKey("dynakv_service")
REQUEST_STATS: web.AppKey[RequestStats] = web.AppKey("dynakv_request_stats")

# What `GET /` lists, as Riak 2.9 does; clients (riak-python-client) read it to
# find the resources, riak_kv_wm_bucket_type to know that /types/ paths work.
RESOURCES: dict[str, str] = {
    "riak_kv_wm_bucket_type": "/types",
    "riak_kv_wm_buckets": "/buckets",
    "riak_kv_wm_keylist": "/buckets",
    "riak_kv_wm_object": "/buckets",
    "riak_kv_wm_ping": "/ping",
    "riak_kv_wm_preflist": "/buckets",
    "riak_kv_wm_props": "/buckets",
    "riak_kv_wm_stats": "/stats",
}

PATH_NAMES = {"type": "bucket type", "bucket": "bucket", "key": "key"}

# One element of a Link header: <url> and its parameters (quoted strings may hold commas).
LINK_ELEMENT = re.compile(r'<([^>]*)>((?:[^,"<]|"[^"]*")*)')
LINK_TAG = re.compile(r'riaktag\s*=\s*"([^"]*)"')
LINK_URL = re.compile(
    r"^/(?:(?:types/[^/]+/)?buckets/([^/]+)/keys/([^/]+)|riak/([^/]+)/([^/]+))/?$"
)


def make_app(service: NodeService, stats: RequestStats | None = None) -> web.Application:
    """The aiohttp application serving the HTTP API of `service` (counting requests in
    `stats`, which the node's other front ends may share)."""
    app = web.Application(
        client_max_size=limits.VALUE_SIZE_MAX_BYTES,
        middlewares=[error_middleware],
        # Values are stored as sent: a gzip body with Content-Encoding: gzip stays gzip.
        handler_args={"auto_decompress": False},
    )
    app[SERVICE] = service
    app[REQUEST_STATS] = stats if stats is not None else RequestStats()
    add_routes(app.router)
    return app


def add_routes(router: web.UrlDispatcher) -> None:
    for prefix in ("", "/types/{type}"):
        router.add_get(prefix + "/buckets", list_buckets)
        bucket = prefix + "/buckets/{bucket}"
        router.add_get(bucket + "/props", get_props)
        router.add_put(bucket + "/props", set_props)
        router.add_delete(bucket + "/props", reset_props)
        router.add_get(bucket + "/keys", list_keys)
        router.add_post(bucket + "/keys", create_object)
        key = bucket + "/keys/{key}"
        router.add_get(key, get_object)
        router.add_put(key, put_object)
        router.add_post(key, put_object)
        router.add_delete(key, delete_object)
        router.add_get(key + "/preflist", get_preflist)
        router.add_get("/admin/local" + key, get_local_object)
    router.add_get("/", get_resources)
    router.add_get("/ping", ping)
    router.add_get("/stats", get_stats)
    router.add_get("/admin/status", get_status)
    router.add_get("/admin/ring", get_ring)
    router.add_get("/admin/transfers", get_transfers)
    router.add_get("/admin/plan", get_plan)
    router.add_post("/admin/join", post_join)
    router.add_post("/admin/leave", post_leave)
    router.add_post("/admin/remove", post_remove)
    router.add_post("/admin/commit", post_commit)


# --- errors -----------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DynakvError as error:
        return error_reply(error.kind, error.message)
    except web.HTTPRequestEntityTooLarge:
        return error_reply(
            ErrorKind.TOO_LARGE,
            f"request body is above the limit of {limits.VALUE_SIZE_MAX_BYTES} bytes",
        )
    except web.HTTPException:
        raise
    except Exception as error:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return text_reply(500, f"internal error ({type(error).__name__}); see the node's log")


def text_reply(status: int, message: str, headers: Mapping[str, str] | None = None
               ) -> web.Response:
    text = message if message.endswith("\n") else message + "\n"
    return web.Response(status=status, text=text, content_type="text/plain", headers=headers)


def error_reply(kind: ErrorKind, message: str) -> web.Response:
    return text_reply(STATUS_BY_KIND[kind], message)


# --- requests in --------------------------------------------------------------------


def path_names(request: web.Request) -> dict[str, str]:
    """The {type}, {bucket} and {key} of the path, decoded strictly from the raw path
    (aiohttp leaves invalid UTF-8 percent-escapes undecoded; we answer 400)."""
    resource = request.match_info.route.resource
    assert resource is not None
    names: dict[str, str] = {}
    pattern = resource.canonical.split("/")
    raw = request.rel_url.raw_path.split("/")
    for part, raw_part in zip(pattern, raw, strict=False):
        if part.startswith("{") and part.endswith("}"):
            names[part[1:-1]] = decode_name(PATH_NAMES.get(part[1:-1], part), raw_part)
    return names


def decode_name(what: str, raw: str) -> str:
    try:
        return unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeError:
        raise ClientError(f"{what} is not valid UTF-8 once percent-decoded") from None


def bucket_names(request: web.Request) -> tuple[str, str]:
    names = path_names(request)
    bucket_type = names.get("type", api.DEFAULT_TYPE)
    api.check_name("bucket type", bucket_type, limits.BUCKET_NAME_SIZE_MAX_BYTES)
    api.check_name("bucket", names["bucket"], limits.BUCKET_NAME_SIZE_MAX_BYTES)
    return bucket_type, names["bucket"]


def object_names(request: web.Request) -> tuple[str, str, str]:
    names = path_names(request)
    bucket_type = names.get("type", api.DEFAULT_TYPE)
    api.check_key(bucket_type, names["bucket"], names["key"])
    return bucket_type, names["bucket"], names["key"]


def query_quorum(query: Mapping[str, str], name: str) -> Quorum | None:
    value = query.get(name)
    return None if value is None else parse_quorum(name, value)


def query_flag(query: Mapping[str, str], name: str) -> bool | None:
    value = query.get(name)
    return None if value is None else parse_bool(name, value)


def query_timeout(query: Mapping[str, str]) -> int | None:
    value = query.get("timeout")
    return None if value is None else check_timeout_ms(value)


def request_context(request: web.Request) -> bytes:
    value = request.headers.get("X-Riak-Vclock", "").strip()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("X-Riak-Vclock is not valid base64") from None


def request_content(request: web.Request, body: bytes) -> api.Content:
    headers = request.headers
    return api.Content(
        value=body,
        content_type=headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
        content_encoding=headers.get("Content-Encoding", ""),
        usermeta=parse_usermeta(headers.items()),
        links=parse_links(headers.getall("Link", [])),
        indexes=parse_indexes(headers.items()),
    )


def parse_usermeta(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """X-Riak-Meta-Name: value headers; names are kept lower-case (headers are
    case-insensitive, and Riak's clients lower-case them too)."""
    usermeta: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(META_PREFIX):
            if lower == META_PREFIX:
                raise ClientError("X-Riak-Meta- header without a name")
            usermeta.append((lower[len(META_PREFIX):], value))
    return tuple(usermeta)


def parse_indexes(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """X-Riak-Index-field_bin / _int headers, comma-separated terms; sorted, unique."""
    return normalize_indexes(
        (name[len(INDEX_PREFIX):], term)
        for name, value in headers if name.lower().startswith(INDEX_PREFIX)
        for term in value.split(",")
    )


def parse_links(values: Iterable[str]) -> tuple[tuple[str, str, str], ...]:
    """Riak links, `</buckets/B/keys/K>; riaktag="T"` (or `</riak/B/K>`), comma-separated;
    elements without a riaktag (Riak's rel="up") are ignored."""
    links: list[tuple[str, str, str]] = []
    for value in values:
        for element in LINK_ELEMENT.finditer(value):
            tag = LINK_TAG.search(element.group(2))
            if tag is None:
                continue
            url = LINK_URL.match(element.group(1).strip())
            if url is None:
                raise ClientError(
                    "invalid Link header: links must look like "
                    '</buckets/BUCKET/keys/KEY>; riaktag="TAG"'
                )
            bucket, key = (url.group(1), url.group(2)) if url.group(1) else url.group(3, 4)
            links.append((decode_name("link bucket", bucket), decode_name("link key", key),
                          decode_name("link tag", tag.group(1))))
    return tuple(links)


def parse_http_date(value: str | None) -> int | None:
    """Seconds since the epoch of an HTTP date; None if absent or invalid (RFC 9110
    says to ignore an invalid date in a condition)."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def etag_matches(header: str, vtags: set[str]) -> bool:
    """Whether an If-Match / If-None-Match value names one of `vtags` ("*": any)."""
    if header.strip() == "*":
        return bool(vtags)
    for tag in header.split(","):
        tag = tag.strip()
        tag = tag.removeprefix("W/").strip('"')
        if tag and tag in vtags:
            return True
    return False


# --- answers out --------------------------------------------------------------------


def encode_context(context: bytes) -> str:
    return base64.b64encode(context).decode("ascii")


def http_date(milliseconds: int) -> str:
    return format_datetime(datetime.fromtimestamp(milliseconds / 1000, UTC), usegmt=True)


def quote_name(name: str) -> str:
    return quote(name, safe="")


def bucket_path(bucket_type: str, bucket: str) -> str:
    if bucket_type == api.DEFAULT_TYPE:
        return f"/buckets/{quote_name(bucket)}"
    return f"/types/{quote_name(bucket_type)}/buckets/{quote_name(bucket)}"


def object_path(bucket_type: str, bucket: str, key: str) -> str:
    return f"{bucket_path(bucket_type, bucket)}/keys/{quote_name(key)}"


def render_links(content: api.Content, up: str) -> str:
    links = [f'<{up}>; rel="up"']
    for bucket, key, tag in content.links:
        links.append(f'<{object_path(api.DEFAULT_TYPE, bucket, key)}>; '
                     f'riaktag="{quote_name(tag)}"')
    return ", ".join(links)


def content_headers(content: api.Content, up: str, *, in_part: bool = False) -> CIMultiDict[str]:
    """The headers that describe one sibling (in a response, or in one multipart part,
    where Riak writes the Etag unquoted)."""
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Content-Type"] = content.content_type or DEFAULT_CONTENT_TYPE
    if content.content_encoding:
        headers["Content-Encoding"] = content.content_encoding
    headers["Link"] = render_links(content, up)
    if content.vtag:
        headers["ETag"] = content.vtag if in_part else f'"{content.vtag}"'
    if content.last_modified_ms:
        headers["Last-Modified"] = http_date(content.last_modified_ms)
    for name, value in content.usermeta:
        headers.add(f"X-Riak-Meta-{name}", value)
    terms: dict[str, list[str]] = {}
    for field, term in content.indexes:
        terms.setdefault(field, []).append(term)
    for field, values in terms.items():
        headers.add(f"X-Riak-Index-{field}", ", ".join(values))
    if content.deleted:
        headers["X-Riak-Deleted"] = "true"
    return headers


def not_found_reply(context: bytes) -> web.Response:
    """404; a tombstone (a context and no sibling) also carries its context."""
    if not context:
        return text_reply(404, "not found")
    headers = {"X-Riak-Vclock": encode_context(context), "X-Riak-Deleted": "true"}
    return text_reply(404, "not found", headers)


def object_reply(
    request: web.Request,
    response: api.ObjectResponse,
    up: str,
    *,
    status: int = 200,
    vtag: str | None = None,
    conditional: bool = False,
) -> web.Response:
    """A get's answer (or a put's with returnbody): one sibling, or 300 for several."""
    if not response.siblings:
        return not_found_reply(response.context)
    siblings = response.siblings
    if vtag is not None:
        siblings = tuple(content for content in siblings if content.vtag == vtag)
        if not siblings:
            return text_reply(404, f"no sibling with vtag {vtag!r}")
    if len(siblings) == 1:
        return single_reply(request, siblings[0], response.context, up, status, conditional)
    return siblings_reply(request, siblings, response.context, up)


def single_reply(
    request: web.Request,
    content: api.Content,
    context: bytes,
    up: str,
    status: int,
    conditional: bool,
) -> web.Response:
    headers = content_headers(content, up)
    headers["X-Riak-Vclock"] = encode_context(context)
    if conditional and not_modified(request, content):
        return web.Response(status=304, headers=headers)
    return web.Response(status=status, body=content.value, headers=headers)


def not_modified(request: web.Request, content: api.Content) -> bool:
    """A conditional GET's If-None-Match (else If-Modified-Since) says 304."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        return etag_matches(if_none_match, {content.vtag})
    since = parse_http_date(request.headers.get("If-Modified-Since"))
    return since is not None and content.last_modified_ms // 1000 <= since


def siblings_reply(
    request: web.Request, siblings: tuple[api.Content, ...], context: bytes, up: str
) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["X-Riak-Vclock"] = encode_context(context)
    if MULTIPART_MIXED in request.headers.get("Accept", "").lower():
        boundary = multipart_boundary(siblings)
        headers["Content-Type"] = f"{MULTIPART_MIXED}; boundary={boundary}"
        body = multipart_body(siblings, up, boundary)
    else:
        headers["Content-Type"] = "text/plain"
        body = ("Siblings:\n" + "".join(f"{content.vtag}\n" for content in siblings)).encode()
    return web.Response(status=300, body=body, headers=headers)


def multipart_boundary(siblings: Iterable[api.Content]) -> str:
    values = [content.value for content in siblings]
    while True:
        boundary = secrets.token_hex(16)
        if not any(boundary.encode() in value for value in values):
            return boundary


def multipart_body(siblings: Iterable[api.Content], up: str, boundary: str) -> bytes:
    """Riak's layout: CRLF--boundary CRLF headers CRLF value ... CRLF--boundary--CRLF."""
    parts: list[bytes] = []
    for content in siblings:
        headers = content_headers(content, up, in_part=True)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        parts.append(f"\r\n--{boundary}\r\n{head}\r\n".encode() + content.value)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts)


def json_reply(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
               ) -> web.Response:
    return web.json_response(data, status=status, headers=headers,
                             dumps=functools.partial(json.dumps, default=str))


# --- objects ------------------------------------------------------------------------


def service_of(request: web.Request) -> NodeService:
    return request.app[SERVICE]


async def timed_call(request: web.Request, operation: Operation, call: api.Request
                     ) -> api.Response:
    """Run `call` through the node, counting it and its latency for /stats."""
    return await timed_request(service_of(request), request.app[REQUEST_STATS], operation, call)


async def get_object(request: web.Request) -> web.Response:
    bucket_type, bucket, key = object_names(request)
    query = request.query
    get = api.GetRequest(
        bucket_type, bucket, key,
        r=query_quorum(query, "r"),
        pr=query_quorum(query, "pr"),
        notfound_ok=query_flag(query, "notfound_ok"),
        basic_quorum=query_flag(query, "basic_quorum"),
        timeout_ms=query_timeout(query),
    )
    response = expect(await timed_call(request, "get", get), api.ObjectResponse)
    return object_reply(request, response, bucket_path(bucket_type, bucket),
                        vtag=query.get("vtag"), conditional=True)


async def put_object(request: web.Request) -> web.Response:
    bucket_type, bucket, key = object_names(request)
    return await store_object(request, bucket_type, bucket, key, created=False)


async def create_object(request: web.Request) -> web.Response:
    """POST /buckets/B/keys: store under a new random key; 201 with its Location."""
    bucket_type, bucket = bucket_names(request)
    key = secrets.token_urlsafe(18)
    api.check_key(bucket_type, bucket, key)
    return await store_object(request, bucket_type, bucket, key, created=True)


async def store_object(
    request: web.Request, bucket_type: str, bucket: str, key: str, *, created: bool
) -> web.Response:
    put = await put_request(request, bucket_type, bucket, key)
    await check_preconditions(request, put)
    response = await timed_call(request, "put", put)
    up = bucket_path(bucket_type, bucket)
    reply: web.Response
    match response:
        case api.DoneResponse(context=context):
            reply = web.Response(status=201 if created else 204)
            if context:
                reply.headers["X-Riak-Vclock"] = encode_context(context)
        case api.ObjectResponse():
            reply = object_reply(request, response, up, status=201 if created else 200)
        case _:
            expect(response, api.DoneResponse)
            raise AssertionError("unreachable")
    if created:
        reply.headers["Location"] = object_path(bucket_type, bucket, key)
    return reply


async def put_request(
    request: web.Request, bucket_type: str, bucket: str, key: str
) -> api.PutRequest:
    query = request.query
    w, dw, pw = (query_quorum(query, name) for name in ("w", "dw", "pw"))
    return_body = query_flag(query, "returnbody") or False
    timeout_ms = query_timeout(query)
    context = request_context(request)
    content = request_content(request, await request.read())
    api.check_content(content)
    return api.PutRequest(bucket_type, bucket, key, content, context=context, w=w, dw=dw,
                          pw=pw, return_body=return_body, timeout_ms=timeout_ms)


async def check_preconditions(request: web.Request, put: api.PutRequest) -> None:
    """A conditional PUT reads the key first and answers 412 if the condition fails.
    Like Riak's, this is not atomic: two such writes may both pass."""
    if not any(name in request.headers for name in CONDITIONAL_HEADERS):
        return
    current = await current_object(service_of(request), put)
    failed = failed_precondition(request.headers, current.siblings)
    if failed is not None:
        raise ClientError(f"precondition failed: {failed}", ErrorKind.PRECONDITION_FAILED)


def failed_precondition(
    headers: Mapping[str, str], siblings: tuple[api.Content, ...]
) -> str | None:
    """The header whose condition fails against the key's live siblings, if any
    (RFC 9110's order: If-Match, else If-Unmodified-Since; If-None-Match, else
    If-Modified-Since)."""
    vtags = {content.vtag for content in siblings}
    modified_s = max((content.last_modified_ms for content in siblings), default=0) // 1000
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not etag_matches(if_match, vtags):
            return "If-Match"
    else:
        since = parse_http_date(headers.get("If-Unmodified-Since"))
        if since is not None and siblings and modified_s > since:
            return "If-Unmodified-Since"
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        return "If-None-Match" if etag_matches(if_none_match, vtags) else None
    since = parse_http_date(headers.get("If-Modified-Since"))
    if since is not None and siblings and modified_s <= since:
        return "If-Modified-Since"
    return None


async def delete_object(request: web.Request) -> web.Response:
    bucket_type, bucket, key = object_names(request)
    query = request.query
    # r and pr are accepted (and checked) for Riak's clients; the delete's own read
    # uses the bucket's defaults.
    query_quorum(query, "r")
    query_quorum(query, "pr")
    delete = api.DeleteRequest(
        bucket_type, bucket, key,
        context=request_context(request),
        rw=query_quorum(query, "rw"),
        w=query_quorum(query, "w"),
        dw=query_quorum(query, "dw"),
        pw=query_quorum(query, "pw"),
        timeout_ms=query_timeout(query),
    )
    expect(await timed_call(request, "delete", delete), api.DoneResponse)
    return web.Response(status=204)


async def get_preflist(request: web.Request) -> web.Response:
    bucket_type, bucket, key = object_names(request)
    call = api.PreflistRequest(bucket_type, bucket, key)
    response = expect(await service_of(request).request(call), api.PreflistResponse)
    preflist = [
        {"partition": partition, "node": node, "primary": primary}
        for partition, node, primary in response.targets
    ]
    return json_reply({"preflist": preflist})


# --- buckets ------------------------------------------------------------------------


async def get_props(request: web.Request) -> web.Response:
    bucket_type, bucket = bucket_names(request)
    call = api.GetBucketPropsRequest(bucket_type, bucket)
    response = expect(await service_of(request).request(call), api.PropsResponse)
    return json_reply({"props": {**response.props, "name": bucket}})


async def set_props(request: web.Request) -> web.Response:
    bucket_type, bucket = bucket_names(request)
    try:
        document = json.loads(await request.read())
    except (UnicodeDecodeError, ValueError):
        raise ClientError('expected a JSON object: {"props": {...}}') from None
    if not isinstance(document, dict) or not isinstance(document.get("props"), dict):
        raise ClientError('expected a JSON object with an object "props": {"props": {...}}')
    call = api.SetBucketPropsRequest(bucket_type, bucket, document["props"])
    response = await service_of(request).request(call)
    if not isinstance(response, api.PropsResponse):
        expect(response, api.DoneResponse)
    return web.Response(status=204)


async def reset_props(request: web.Request) -> web.Response:
    bucket_type, bucket = bucket_names(request)
    response = await service_of(request).request(api.ResetBucketPropsRequest(bucket_type, bucket))
    if not isinstance(response, api.PropsResponse):
        expect(response, api.DoneResponse)
    return web.Response(status=204)


def listing_mode(query: Mapping[str, str], name: str, example: str) -> bool:
    """True to stream, False for one JSON document; 400 for anything else."""
    value = query.get(name, "").lower()
    if value not in ("true", "stream"):
        raise ClientError(f"{name}=true or {name}=stream is required: GET {example}")
    return value == "stream"


async def list_keys(request: web.Request) -> web.StreamResponse:
    bucket_type, bucket = bucket_names(request)
    stream = listing_mode(request.query, "keys", "/buckets/BUCKET/keys?keys=true")
    call = api.ListKeysRequest(bucket_type, bucket, timeout_ms=query_timeout(request.query))
    return await listing_reply(request, call, "keys", stream)


async def list_buckets(request: web.Request) -> web.StreamResponse:
    bucket_type = path_names(request).get("type", api.DEFAULT_TYPE)
    api.check_name("bucket type", bucket_type, limits.BUCKET_NAME_SIZE_MAX_BYTES)
    stream = listing_mode(request.query, "buckets", "/buckets?buckets=true")
    call = api.ListBucketsRequest(bucket_type, timeout_ms=query_timeout(request.query))
    return await listing_reply(request, call, "buckets", stream)


async def listing_reply(
    request: web.Request,
    call: api.ListKeysRequest | api.ListBucketsRequest,
    field: str,
    stream: bool,
) -> web.StreamResponse:
    chunks = service_of(request).stream(call)
    try:
        if stream:
            return await stream_listing(request, chunks, field)
        items: list[str] = []
        async for chunk in chunks:
            items.extend(expect(chunk, api.ChunkResponse).items)
        return json_reply({field: items})
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def stream_listing(
    request: web.Request,
    chunks: AsyncIterator[api.ChunkResponse | api.ErrorResponse],
    field: str,
) -> web.StreamResponse:
    """Riak's keys=stream: chunked, one JSON object {"keys": [...]} per page. The first
    page is awaited before the status is sent, so an early error gets its status; a
    later one ends the stream with {"error": "..."}."""
    first = await anext(chunks, None)
    items = expect(first, api.ChunkResponse).items if first is not None else ()
    reply = web.StreamResponse(headers={"Content-Type": "application/json"})
    reply.enable_chunked_encoding()
    await reply.prepare(request)
    try:
        await reply.write(json.dumps({field: list(items)}).encode())
        async for chunk in chunks:
            if isinstance(chunk, api.ErrorResponse):
                await reply.write(json.dumps({"error": chunk.message}).encode())
                break
            if chunk.items:
                await reply.write(json.dumps({field: list(chunk.items)}).encode())
    except OSError:
        log.debug("listing client went away")
        return reply
    except Exception as error:
        log.exception("listing failed after the response started")
        await reply.write(json.dumps({"error": f"internal error ({type(error).__name__})"})
                          .encode())
    await reply.write_eof()
    return reply


# --- node ---------------------------------------------------------------------------


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", content_type="text/plain")


async def get_stats(request: web.Request) -> web.Response:
    return json_reply(stats_document(service_of(request), request.app[REQUEST_STATS]))


async def get_resources(request: web.Request) -> web.Response:
    """GET /: Riak's resource map, as JSON when asked for, else as an HTML list."""
    link = ", ".join(f'<{path}>; rel="{name}"' for name, path in RESOURCES.items())
    if "application/json" in request.headers.get("Accept", ""):
        return json_reply(RESOURCES, headers={"Link": link})
    items = "".join(f'<li><a href="{path}">{name}</a></li>' for name, path in RESOURCES.items())
    html = f"<html><body><ul>{items}</ul></body></html>"
    return web.Response(text=html, content_type="text/html", headers={"Link": link})


async def read_json_object(request: web.Request) -> dict[str, Any]:
    try:
        document = json.loads(await request.read())
    except (UnicodeDecodeError, ValueError):
        raise ClientError("expected a JSON object") from None
    if not isinstance(document, dict):
        raise ClientError("expected a JSON object")
    return document


async def status_call(request: web.Request, call: api.Request) -> web.Response:
    response = expect(await service_of(request).request(call), api.StatusResponse)
    return json_reply(response.status)


async def done_call(request: web.Request, call: api.Request) -> web.Response:
    expect(await service_of(request).request(call), api.DoneResponse)
    return web.Response(status=204)


async def get_ring(request: web.Request) -> web.Response:
    return await status_call(request, api.RingRequest())


async def get_plan(request: web.Request) -> web.Response:
    return await status_call(request, api.PlanRequest())


async def post_join(request: web.Request) -> web.Response:
    """Stage the join of the node described in the body (asked of a cluster member)."""
    body = await read_json_object(request)
    name, address = body.get("name"), body.get("address")
    weight, zone = body.get("weight", 1), body.get("zone", "")
    if not (isinstance(name, str) and isinstance(address, str) and isinstance(zone, str)
            and isinstance(weight, int) and not isinstance(weight, bool)):
        raise ClientError('expected {"name": str, "address": "host:port", "weight": int, '
                          '"zone": str}')
    return await done_call(request, api.JoinRequest(name, address, weight, zone))


async def post_leave(request: web.Request) -> web.Response:
    """Stage a member's graceful leave (it hands its data off)."""
    body = await read_json_object(request)
    node = body.get("node")
    if not isinstance(node, str):
        raise ClientError('expected {"node": name}')
    return await done_call(request, api.LeaveRequest(node))


async def post_remove(request: web.Request) -> web.Response:
    """Stage the removal of a dead member (nothing handed off); 412 if this node sees it
    up, unless "force"."""
    body = await read_json_object(request)
    node, force = body.get("node"), body.get("force", False)
    if not isinstance(node, str) or not isinstance(force, bool):
        raise ClientError('expected {"node": name, "force": false}')
    return await done_call(request, api.LeaveRequest(node, remove=True, force=force))


async def post_commit(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    version, owners = body.get("ring_version"), body.get("owners")
    if not (isinstance(version, int) and isinstance(owners, list)
            and all(isinstance(owner, str) for owner in owners)):
        raise ClientError('expected {"ring_version": int, "owners": [node, ...]} from a plan')
    return await done_call(request, api.CommitRequest(version, tuple(owners)))


async def get_status(request: web.Request) -> web.Response:
    response = expect(await service_of(request).request(api.StatusRequest()), api.StatusResponse)
    return json_reply(response.status)


async def get_transfers(request: web.Request) -> web.Response:
    """Every member's ownership transfers (the node asks the others)."""
    response = expect(await service_of(request).request(api.ClusterTransfersRequest()),
                      api.StatusResponse)
    return json_reply(response.status)


async def get_local_object(request: web.Request) -> web.Response:
    """What this node alone holds for a key, tombstones too (for `dynakv admin`)."""
    bucket_type, bucket, key = object_names(request)
    call = api.LocalGetRequest(bucket_type, bucket, key)
    response = expect(await service_of(request).request(call), api.LocalObjectResponse)
    siblings = [
        local_sibling(content, response.dots[index] if index < len(response.dots) else None)
        for index, content in enumerate(response.siblings)
    ]
    return json_reply({
        "node": response.node,
        "partition": response.partition,
        "context": encode_context(response.context),
        "siblings": siblings,
    })


def local_sibling(content: api.Content, dot: tuple[str, int] | None) -> dict[str, Any]:
    try:
        text: str | None = content.value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "value_base64": base64.b64encode(content.value).decode("ascii"),
        "value": text,
        "content_type": content.content_type,
        "vtag": content.vtag,
        "last_modified_ms": content.last_modified_ms,
        "deleted": content.deleted,
        "dot": list(dot) if dot is not None else None,
    }
