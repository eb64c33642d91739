"""What the client-facing front ends (the HTTP API and the PB API) share, so both
give the same answers: checks of a client's options, the index normalization,
the reading of a node's answer, the conditional-write read, and /stats.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, TypeVar

from dynakv import __version__
from dynakv.core import api, limits
from dynakv.core.errors import ClientError, DynakvError, ErrorKind
from dynakv.net.service import NodeService
from dynakv.net.stats import Operation, RequestStats

# The Riak KV version dynakv answers to (Riak's clients choose features by it).
RIAK_KV_VERSION = "2.9.10"

# The HTTP status of each kind of error; the PB API sends the same number as errcode.
STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.PRECONDITION_FAILED: 412,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 503,
    ErrorKind.BUSY: 503,
    ErrorKind.STORAGE_FULL: 503,
}

R = TypeVar("R")


def expect(response: api.Response, expected: type[R]) -> R:
    """`response` if it is of the expected type; an ErrorResponse is raised as its error."""
    if isinstance(response, api.ErrorResponse):
        raise DynakvError(response.message, response.kind)
    if isinstance(response, expected):
        return response
    raise TypeError(f"the node answered {type(response).__name__}, not {expected.__name__}")


def check_timeout_ms(value: int | str) -> int:
    """A client's request timeout in milliseconds, from 1 to the limit."""
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= limits.REQUEST_TIMEOUT_MAX_MS:
        raise ClientError(
            f"timeout={value!r}: expected milliseconds, from 1 to {limits.REQUEST_TIMEOUT_MAX_MS}"
        )
    return int(text)


def normalize_indexes(entries: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Secondary index entries (field, term): field names lower-case and ending with
    _bin or _int, integer terms in canonical form; sorted, unique."""
    result: set[tuple[str, str]] = set()
    for name, raw_term in entries:
        field = name.lower()
        if len(field) <= 4 or not field.endswith(("_bin", "_int")):
            raise ClientError(f"index field {field!r} must end with _bin or _int")
        term = raw_term.strip()
        if term and field.endswith("_int"):
            try:
                term = str(int(term))
            except ValueError:
                raise ClientError(f"index {field}: {term!r} is not an integer") from None
        if term:
            result.add((field, term))
    return tuple(sorted(result))


async def timed_request(service: NodeService, stats: RequestStats, operation: Operation,
                        call: api.Request) -> api.Response:
    """Run `call` through the node, counting it and its latency for /stats."""
    started = time.perf_counter_ns()
    response = await service.request(call)
    stats.record(operation, (time.perf_counter_ns() - started) // 1000)
    return response


async def current_object(service: NodeService, put: api.PutRequest) -> api.ObjectResponse:
    """The key's object as it is now, read before a conditional write. Like Riak's,
    the condition is not atomic with the write: two such writes may both pass."""
    get = api.GetRequest(put.bucket_type, put.bucket, put.key, timeout_ms=put.timeout_ms)
    return expect(await service.request(get), api.ObjectResponse)


def stats_document(service: NodeService, stats: RequestStats) -> dict[str, Any]:
    """The node's statistics as GET /stats answers them, with Riak's names."""
    document = dict(service.node_stats())
    document.update(stats.to_json())
    document["nodename"] = service.name
    if "ring_size" in document:
        document["ring_num_partitions"] = document["ring_size"]
    document["riak_kv_version"] = RIAK_KV_VERSION
    document["sys_driver_version"] = "dynakv"
    document["dynakv_version"] = __version__
    return document
