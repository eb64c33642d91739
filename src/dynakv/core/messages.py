"""Internode messages: frozen, slotted dataclasses with fixed codec tags.

Every message a node sends to a peer is one of these; `Message` is their union and
the node dispatches on it with an exhaustive match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dynakv.core import api, codec, dvvset
from dynakv.core import membership as ms
from dynakv.core.errors import ErrorKind

PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class ReplicaPut:
    """Merge this object into your replica and acknowledge (request_id 0: no ack).
    With hint_for set you are a fallback: keep a hint for that owner too."""

    request_id: int
    partition: int
    key: bytes
    obj: api.Object
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
    request_id: int
    obj: api.Object | None


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
    codec.register(_tag, _cls)
codec.register_enum(1, ErrorKind)
codec.register_enum(2, ms.Status)


def encode_object(obj: api.Object) -> bytes:
    return codec.encode(obj)


def decode_object(data: bytes) -> api.Object:
    obj = codec.decode(data)
    assert isinstance(obj, dvvset.Clock)
    return obj
