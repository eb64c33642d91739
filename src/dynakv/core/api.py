"""What clients ask a node and what it answers: frozen dataclasses, independent of
the wire (the HTTP API and the clients translate to and from these).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from dynakv.core import dvvset, limits, ring
from dynakv.core.buckets import Quorum
from dynakv.core.errors import ClientError, ErrorKind

DEFAULT_TYPE = "default"


@dataclass(frozen=True, slots=True)
class Content:
    """One sibling: a value with its metadata. A tombstone has deleted=True."""

    value: bytes
    content_type: str = "application/octet-stream"
    content_encoding: str = ""
    usermeta: tuple[tuple[str, str], ...] = ()
    links: tuple[tuple[str, str, str], ...] = ()  # (bucket, key, tag)
    indexes: tuple[tuple[str, str], ...] = ()
    last_modified_ms: int = 0
    vtag: str = ""
    deleted: bool = False

    def metadata_size(self) -> int:
        return (
            sum(len(k) + len(v) for k, v in self.usermeta)
            + sum(len(b) + len(k) + len(t) for b, k, t in self.links)
            + sum(len(k) + len(v) for k, v in self.indexes)
            + len(self.content_type)
            + len(self.content_encoding)
        )


def newer(a: Content, b: Content) -> bool:
    """Last-write-wins order (only for buckets that ask for it): time, then vtag."""
    return (a.last_modified_ms, a.vtag) > (b.last_modified_ms, b.vtag)


Object = dvvset.Clock[Content]

# The context handed to clients: a version byte, then msgpack [[server_id, counter], ...].
CONTEXT_VERSION = 1


def encode_context(vector: dvvset.VersionVector) -> bytes:
    packed: bytes = msgpack.packb([list(pair) for pair in vector])
    return bytes([CONTEXT_VERSION]) + packed


def decode_context(data: bytes) -> dvvset.VersionVector:
    """A client's context back into a version vector; 400 if it is not one of ours."""
    if not data:
        return ()
    if data[0] != CONTEXT_VERSION:
        raise ClientError("malformed context (X-Riak-Vclock): unknown version")
    try:
        raw = msgpack.unpackb(data[1:])
        pairs = tuple((str(pair[0]), int(pair[1])) for pair in raw)
    except Exception as error:
        raise ClientError("malformed context (X-Riak-Vclock)") from error
    if any(counter < 1 or not server_id for server_id, counter in pairs):
        raise ClientError("malformed context (X-Riak-Vclock)")
    return tuple(sorted(dict(pairs).items()))


def check_name(what: str, name: str, size_max: int) -> None:
    if not name:
        raise ClientError(f"{what} must not be empty")
    if len(name.encode("utf-8", "surrogatepass")) > size_max:
        raise ClientError(f"{what} is longer than {size_max} bytes")


def check_key(bucket_type: str, bucket: str, key: str) -> None:
    check_name("bucket type", bucket_type, limits.BUCKET_NAME_SIZE_MAX_BYTES)
    check_name("bucket", bucket, limits.BUCKET_NAME_SIZE_MAX_BYTES)
    check_name("key", key, limits.KEY_SIZE_MAX_BYTES)
    size = len(ring.key_bytes(bucket_type, bucket, key))
    if size > limits.FULL_KEY_SIZE_MAX_BYTES:
        raise ClientError(
            f"bucket type, bucket and key together take {size} bytes encoded; the limit is "
            f"{limits.FULL_KEY_SIZE_MAX_BYTES}",
            ErrorKind.TOO_LARGE,
        )


def check_content(content: Content) -> None:
    if len(content.value) > limits.VALUE_SIZE_MAX_BYTES:
        raise ClientError(
            f"value of {len(content.value)} bytes is above the limit of "
            f"{limits.VALUE_SIZE_MAX_BYTES} bytes",
            ErrorKind.TOO_LARGE,
        )
    if content.metadata_size() > limits.METADATA_SIZE_MAX_BYTES:
        raise ClientError(
            f"metadata is above the limit of {limits.METADATA_SIZE_MAX_BYTES} bytes",
            ErrorKind.TOO_LARGE,
        )


# --- requests -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetRequest:
    bucket_type: str
    bucket: str
    key: str
    r: Quorum | None = None
    pr: Quorum | None = None
    notfound_ok: bool | None = None
    basic_quorum: bool | None = None
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PutRequest:
    bucket_type: str
    bucket: str
    key: str
    content: Content
    context: bytes = b""
    w: Quorum | None = None
    dw: Quorum | None = None
    pw: Quorum | None = None
    return_body: bool = False
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    bucket_type: str
    bucket: str
    key: str
    context: bytes = b""
    rw: Quorum | None = None
    w: Quorum | None = None
    dw: Quorum | None = None
    pw: Quorum | None = None
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ListKeysRequest:
    bucket_type: str
    bucket: str
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ListBucketsRequest:
    bucket_type: str
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class GetBucketPropsRequest:
    bucket_type: str
    bucket: str


@dataclass(frozen=True, slots=True)
class SetBucketPropsRequest:
    bucket_type: str
    bucket: str
    props: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class ResetBucketPropsRequest:
    bucket_type: str
    bucket: str


@dataclass(frozen=True, slots=True)
class PreflistRequest:
    bucket_type: str
    bucket: str
    key: str


@dataclass(frozen=True, slots=True)
class LocalGetRequest:
    bucket_type: str
    bucket: str
    key: str


@dataclass(frozen=True, slots=True)
class StatusRequest:
    pass


@dataclass(frozen=True, slots=True)
class ClusterTransfersRequest:
    """The ownership transfers of every member that answers (admin transfers)."""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """Stage the join of this node (asked of a member of the cluster to join)."""

    name: str
    address: str
    weight: int = 1
    zone: str = ""


@dataclass(frozen=True, slots=True)
class LeaveRequest:
    """Stage the departure of a member: a graceful leave (it hands its data off), or with
    `remove` the removal of a dead node (nothing handed off). A removal of a member the
    node asked sees up is refused unless `force`."""

    name: str
    remove: bool = False
    force: bool = False


@dataclass(frozen=True, slots=True)
class PlanRequest:
    pass


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """Commit the plan made against ring version `base_version`."""

    base_version: int
    owners: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RingRequest:
    pass


@dataclass(frozen=True, slots=True)
class StreamAck:
    """The driver has passed a streamed chunk on to the client: send the next."""


Request = (
    GetRequest
    | PutRequest
    | DeleteRequest
    | ListKeysRequest
    | ListBucketsRequest
    | GetBucketPropsRequest
    | SetBucketPropsRequest
    | ResetBucketPropsRequest
    | PreflistRequest
    | LocalGetRequest
    | StatusRequest
    | ClusterTransfersRequest
    | JoinRequest
    | LeaveRequest
    | PlanRequest
    | CommitRequest
    | RingRequest
)

# Requests a node may forward to a coordinator on the key's preference list.
CoordinatedRequest = PutRequest | DeleteRequest

# --- responses ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectResponse:
    """A get's (or a put's returnbody) answer: the live siblings and the context.

    No siblings and a non-empty context: the key is deleted (a tombstone).
    No siblings and an empty context: not found.
    """

    siblings: tuple[Content, ...]
    context: bytes

    @property
    def found(self) -> bool:
        return bool(self.siblings)

    @property
    def deleted(self) -> bool:
        return not self.siblings and bool(self.context)


@dataclass(frozen=True, slots=True)
class DoneResponse:
    """A write or delete succeeded (without returnbody)."""

    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ChunkResponse:
    """One piece of a streamed listing; the last one has done=True."""

    items: tuple[str, ...]
    done: bool


@dataclass(frozen=True, slots=True)
class PropsResponse:
    props: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class PreflistResponse:
    targets: tuple[tuple[int, str, bool], ...]  # (partition, node, primary)


@dataclass(frozen=True, slots=True)
class LocalObjectResponse:
    """What one node holds for a key, uncoordinated: every sibling, tombstones too."""

    node: str
    partition: int
    siblings: tuple[Content, ...]
    dots: tuple[tuple[str, int], ...]
    context: bytes


@dataclass(frozen=True, slots=True)
class StatusResponse:
    status: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    kind: ErrorKind
    message: str


Response = (
    ObjectResponse
    | DoneResponse
    | ChunkResponse
    | PropsResponse
    | PreflistResponse
    | LocalObjectResponse
    | StatusResponse
    | ErrorResponse
)
