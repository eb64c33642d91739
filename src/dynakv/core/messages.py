"""Internode messages: frozen, slotted dataclasses with fixed codec tags.

Every message a node sends to a peer is one of these; `Message` is their union and
the node dispatches on it with an exhaustive match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from dynakv.core import api, codec, dvvset
from dynakv.core import membership as ms
from dynakv.core.errors import ErrorKind, PeerProtocolError

# 2: objects inside messages are OBJECT_EXT flat arrays; 3: a replica's copy travels
# as its stored bytes (ReplicaPut.data, ReplicaGetReply.data); 4: a member's status may
# be "removing" (staged for removal without handoff, `admin remove`).
PROTOCOL_VERSION = 4


@dataclass(frozen=True, slots=True)
class ReplicaPut:
    """Merge this object into your replica and acknowledge (request_id 0: no ack).
    With hint_for set you are a fallback: keep a hint for that owner too. `data` is
    the object as stored (encode_object): the coordinator encodes it once for its own
    copy and every replica's, and a replica that holds these very bytes already has
    nothing to decode."""

    request_id: int
    partition: int
    key: bytes
    data: bytes
    hint_for: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaPutAck:
    request_id: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaGet:
    request_id: int
    partition: int
    key: bytes


@dataclass(frozen=True, slots=True)
class ReplicaGetReply:
    """The replica's copy as stored (encode_object), None if it has none: the replica
    sends its bytes without decoding them, and the coordinator decodes each distinct
    copy once (replicas that agree send the same bytes)."""

    request_id: int
    data: bytes | None


@dataclass(frozen=True, slots=True)
class Forward:
    """Coordinate this write for me (I am not on its preference list)."""

    request_id: int
    request: api.PutRequest | api.DeleteRequest


@dataclass(frozen=True, slots=True)
class ForwardReply:
    request_id: int
    response: api.Response


@dataclass(frozen=True, slots=True)
class ListPage:
    """Send me one page of a partition's keys (bucket set) or bucket names (bucket "")."""

    request_id: int
    partition: int
    bucket_type: str
    bucket: str
    start: bytes


@dataclass(frozen=True, slots=True)
class ListPageReply:
    request_id: int
    partition: int
    items: tuple[str, ...]
    next_start: bytes | None  # None: the partition is done


@dataclass(frozen=True, slots=True)
class BucketPropsUpdate:
    """Bucket properties (None: reset to defaults), newest version wins."""

    bucket_type: str
    bucket: str
    props: dict[str, Any] | None
    version: tuple[int, str]


@dataclass(frozen=True, slots=True)
class TransfersQuery:
    """Which ownership transfers are you sending? (admin transfers, cluster-wide)"""

    request_id: int


@dataclass(frozen=True, slots=True)
class TransfersReply:
    request_id: int
    transfers: tuple[dict[str, Any], ...] = field(hash=False)
    pending: int  # partitions waiting for a transfer slot
    done: int  # transfers finished since the node started


@dataclass(frozen=True, slots=True)
class Ping:
    """A failure-detector probe; answer with a Pong."""

    sequence: int


@dataclass(frozen=True, slots=True)
class Pong:
    sequence: int


@dataclass(frozen=True, slots=True)
class AeLevel:
    """Anti-entropy: your tree's hashes at `depth` for these node indexes."""

    request_id: int
    partition: int
    depth: int
    indexes: tuple[int, ...]
    shape: tuple[int, int]  # (segments, fanout): trees compare only if equal


@dataclass(frozen=True, slots=True)
class AeLevelReply:
    request_id: int
    hashes: tuple[tuple[int, bytes], ...]
    ready: bool  # False: no built tree of that shape here (yet)


@dataclass(frozen=True, slots=True)
class AeSegments:
    """Anti-entropy: the (key, object hash) items of these segments."""

    request_id: int
    partition: int
    segments: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AeSegmentsReply:
    request_id: int
    items: tuple[tuple[int, tuple[tuple[bytes, bytes], ...]], ...]
    ready: bool


@dataclass(frozen=True, slots=True)
class AeRepair:
    """Anti-entropy: merge my versions of these keys (None: I have none) and
    answer with yours, merged."""

    request_id: int
    partition: int
    objects: tuple[tuple[bytes, api.Object | None], ...]


@dataclass(frozen=True, slots=True)
class AeRepairReply:
    request_id: int
    objects: tuple[tuple[bytes, api.Object | None], ...]


@dataclass(frozen=True, slots=True)
class ReapCheck:
    """May this tombstone (object hash `digest`) be reaped? See core/tombstones.py."""

    request_id: int
    partition: int
    key: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class ReapVote:
    request_id: int
    ok: bool


@dataclass(frozen=True, slots=True)
class ReapDelete:
    """Delete this key if your object still has hash `digest`."""

    partition: int
    key: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class GossipDigest:
    """Gossip: my cluster state has this digest; send me yours if it differs."""

    digest: str


@dataclass(frozen=True, slots=True)
class GossipState:
    """Gossip: my cluster state (merge it; send back the merge if it differs)."""

    state: ms.ClusterState


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """To the claimant: apply this plan, made against ring version `base_version`."""

    request_id: int
    base_version: int
    owners: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommitResult:
    request_id: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class TransferBatch:
    """Ownership handoff: merge these objects of a partition you now own, then ack."""

    request_id: int
    partition: int
    objects: tuple[tuple[bytes, api.Object], ...]


@dataclass(frozen=True, slots=True)
class TransferAck:
    request_id: int


Message = (
    ReplicaPut
    | ReplicaPutAck
    | ReplicaGet
    | ReplicaGetReply
    | Forward
    | ForwardReply
    | ListPage
    | ListPageReply
    | BucketPropsUpdate
    | Ping
    | Pong
    | AeLevel
    | AeLevelReply
    | AeSegments
    | AeSegmentsReply
    | AeRepair
    | AeRepairReply
    | ReapCheck
    | ReapVote
    | ReapDelete
    | GossipDigest
    | GossipState
    | CommitPlan
    | CommitResult
    | TransferBatch
    | TransferAck
    | TransfersQuery
    | TransfersReply
)

for _tag, _cls in enumerate(
    (
        dvvset.Clock, dvvset.Entry, api.Content,
        api.GetRequest, api.PutRequest, api.DeleteRequest,
        api.ObjectResponse, api.DoneResponse, api.ErrorResponse,
        ReplicaPut, ReplicaPutAck, ReplicaGet, ReplicaGetReply, Forward, ForwardReply,
        ListPage, ListPageReply, BucketPropsUpdate, Ping, Pong,
        AeLevel, AeLevelReply, AeSegments, AeSegmentsReply, AeRepair, AeRepairReply,
        ReapCheck, ReapVote, ReapDelete,
        ms.MemberInfo, ms.RingInfo, ms.ClusterState, GossipDigest, GossipState,
        CommitPlan, CommitResult, TransferBatch, TransferAck, TransfersQuery, TransfersReply,
    ),
    start=1,
):
    codec.register(_tag, _cls, dvvset.check if _cls is dvvset.Clock else None)
codec.register_enum(1, ErrorKind)
codec.register_enum(2, ms.Status)


# --- stored objects -----------------------------------------------------------------
#
# An object (a DVVSet of Contents) is stored as one byte, OBJECT_FORMAT, then one
# msgpack array: [[server_id, counter, [[value, content_type, content_encoding,
# usermeta, links, indexes, last_modified_ms, vtag, deleted], ...]], ...]. Inside
# messages it is an ext value (OBJECT_EXT) holding the same array. Decoding it is one
# msgpack call and a constructor per dataclass; the generic codec's ext value per
# entry and per sibling cost 1.5 times as much to decode and six times as much to
# encode (bench/codec.py).
# Objects stored before this format (a generic-codec ext value, whose first byte is
# never OBJECT_FORMAT) are still read; their Merkle hashes are taken over their
# re-encoding (`canonical_object`), so replicas agree whatever format they hold.

OBJECT_FORMAT = 2
OBJECT_EXT = 3
_FORMAT_PREFIX = bytes([OBJECT_FORMAT])
_CONTENT_TYPES = (bytes, str, str, tuple, tuple, tuple, int, str, bool)


def _flat(obj: api.Object) -> bytes:
    return codec.pack([
        [entry.server_id, entry.counter, [
            [c.value, c.content_type, c.content_encoding, c.usermeta, c.links, c.indexes,
             c.last_modified_ms, c.vtag, c.deleted] for c in entry.values]]
        for entry in obj.entries])


def _content(fields: tuple[Any, ...]) -> api.Content:
    if len(fields) != len(_CONTENT_TYPES) or not all(map(isinstance, fields, _CONTENT_TYPES)):
        raise PeerProtocolError(f"malformed sibling: {fields!r:.200}")
    return api.Content(*fields)


def _unflat(data: bytes) -> api.Object:
    try:
        raw = msgpack.unpackb(data, use_list=False)
        entries = []
        for server_id, counter, values in raw:
            if type(server_id) is not str or type(counter) is not int or type(values) is not tuple:
                raise PeerProtocolError(f"malformed entry: {server_id!r:.100}")
            entries.append(dvvset.Entry(server_id, counter, tuple(map(_content, values))))
        clock: api.Object = dvvset.Clock(tuple(entries))
        dvvset.check(clock)
        return clock
    except PeerProtocolError:
        raise
    except Exception as error:  # wrong shapes, unsorted entries, not msgpack
        raise PeerProtocolError(f"malformed object: {error!r:.200}") from error


def encode_object(obj: api.Object) -> bytes:
    return _FORMAT_PREFIX + _flat(obj)


def decode_object(data: bytes) -> api.Object:
    if data[:1] == _FORMAT_PREFIX:
        return _unflat(data[1:])
    obj = codec.decode(data)  # stored before OBJECT_FORMAT
    if not isinstance(obj, dvvset.Clock):
        raise PeerProtocolError(f"not an object: {type(obj).__name__}")
    return obj


def canonical_object(data: bytes) -> bytes:
    """A stored object's bytes in the current format (what its Merkle hash is of)."""
    return data if data[:1] == _FORMAT_PREFIX else encode_object(decode_object(data))


codec.register_ext(OBJECT_EXT, dvvset.Clock, _flat, _unflat)
