"""Request coordination state: the put and get state machines of one request.

Pure bookkeeping: what has been asked, what has answered, and whether the quorum
is met, can no longer be met, or is still open. The node (core/node.py) creates
these, feeds them replies, and turns their outcomes into replies and messages.

Quorum rules, as in Riak:
- put: answer after W acknowledgements (the coordinator's own stored write counts
  as one), DW of them durable (every acknowledgement here is durable, since a
  node persists before it answers), and PW of them from primary owners;
- get: answer after R successful replies, PR of them from primaries; a notfound
  counts as a success when notfound_ok is set; with notfound_ok unset and
  basic_quorum set, a majority of notfounds answers notfound early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dynakv.core import api, dvvset
from dynakv.core import messages as m
from dynakv.core.anti_entropy import Exchange
from dynakv.core.errors import PeerProtocolError
from dynakv.core.tombstones import ReapState


class Outcome(Enum):
    PENDING = "pending"
    SUCCESS = "success"
    NOT_FOUND = "not_found"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ClientReplyTo:
    client_id: int


@dataclass(frozen=True, slots=True)
class PeerReplyTo:
    node: str
    request_id: int


ReplyTo = ClientReplyTo | PeerReplyTo


@dataclass(slots=True)
class PutState:
    reply_to: ReplyTo
    deadline_ms: int
    partition: int
    key: bytes
    obj: api.Object
    data: bytes  # obj as stored, sent to the replicas
    w: int
    dw: int
    pw: int
    return_body: bool
    primaries: frozenset[str]
    waiting: set[str]
    acks: int = 0
    primary_acks: int = 0
    failed: list[str] = field(default_factory=list)
    done: bool = False

    def ack(self, node: str) -> None:
        if node in self.waiting:
            self.waiting.discard(node)
            self.acks += 1
            if node in self.primaries:
                self.primary_acks += 1

    def fail(self, node: str, reason: str) -> None:
        if node in self.waiting:
            self.waiting.discard(node)
            self.failed.append(f"{node}: {reason}")

    def outcome(self) -> Outcome:
        needed = max(self.w, self.dw)
        if self.acks >= needed and self.primary_acks >= self.pw:
            return Outcome.SUCCESS
        possible = self.acks + len(self.waiting)
        possible_primary = self.primary_acks + len(self.waiting & self.primaries)
        if possible < needed or possible_primary < self.pw:
            return Outcome.FAILED
        return Outcome.PENDING

    def failure_message(self) -> str:
        needed = max(self.w, self.dw)
        text = (
            f"w={self.w} dw={self.dw} pw={self.pw} not met: {self.acks} of {needed} "
            f"acknowledgements ({self.primary_acks} from primaries)"
        )
        if self.failed:
            text += "; " + ", ".join(self.failed)
        return text + "; the write may or may not survive (indeterminate)"


@dataclass(slots=True)
class GetState:
    reply_to: ReplyTo
    deadline_ms: int
    partition: int
    key: bytes
    r: int
    pr: int
    notfound_ok: bool
    basic_quorum: bool
    single_value: bool  # allow_mult false or last_write_wins: resolve to one sibling
    asked: tuple[str, ...]
    primaries: frozenset[str]
    hint_for: dict[str, str] = field(default_factory=dict)  # fallback -> owner it stands in for
    # Previous owners still handing the partition off (asked as well, not counted
    # towards r or pr): a not-found answer waits for them, a value they hold is merged.
    sources: frozenset[str] = frozenset()
    # node -> its copy as stored (encode_object), None for not found or failed.
    replies: dict[str, bytes | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    failed_nodes: set[str] = field(default_factory=set)
    done: bool = False
    # Each distinct copy decoded once: replicas that agree answer the same bytes.
    decoded: dict[bytes, api.Object] = field(default_factory=dict)
    _merged: tuple[int, api.Object | None, bytes | None] | None = None

    def __post_init__(self) -> None:
        self.asked = self.asked + tuple(sorted(self.sources - set(self.asked)))

    def reply(self, node: str, data: bytes | None) -> None:
        """`node`'s copy; one that does not decode counts as that node failing."""
        if node not in self.asked or node in self.replies:
            return
        if data is not None and data not in self.decoded:
            try:
                self.decoded[data] = m.decode_object(data)
            except PeerProtocolError as error:
                self.fail(node, f"malformed object: {error}")
                return
        self.replies[node] = data

    def fail(self, node: str, reason: str) -> None:
        if node in self.asked and node not in self.replies:
            self.errors.append(f"{node}: {reason}")
            self.replies[node] = None
            self.failed_nodes.add(node)

    def _counts(self) -> tuple[int, int, int, int]:
        found = notfound = ok_primary = 0
        for node, obj in self.replies.items():
            if node in self.failed_nodes or node in self.sources:
                continue
            if obj is None:
                notfound += 1
                if self.notfound_ok and node in self.primaries:
                    ok_primary += 1
            else:
                found += 1
                if node in self.primaries:
                    ok_primary += 1
        return found, notfound, ok_primary, len(self.failed_nodes)

    def outcome(self) -> Outcome:
        found, notfound, ok_primary, failed = self._counts()
        successes = found + (notfound if self.notfound_ok else 0)
        if successes >= self.r and ok_primary >= self.pr:
            if found or self._found_on_a_source():
                return Outcome.SUCCESS
            if any(source not in self.replies for source in self.sources):
                return Outcome.PENDING  # a previous owner may still hold it
            return Outcome.NOT_FOUND
        waiting = len(self.asked) - len(self.replies) - sum(
            1 for source in self.sources if source not in self.replies)
        unanswered_primaries = len(self.primaries - set(self.replies))
        if successes + waiting < self.r or ok_primary + unanswered_primaries < self.pr:
            if failed == 0 and found == 0:
                return Outcome.NOT_FOUND
            return Outcome.FAILED
        # basic_quorum only answers a certain notfound earlier.
        majority = (len(self.asked) - len(self.sources)) // 2 + 1
        if not self.notfound_ok and self.basic_quorum and found == 0 and notfound >= majority:
            return Outcome.NOT_FOUND
        return Outcome.PENDING

    def _found_on_a_source(self) -> bool:
        return any(self.replies.get(source) is not None for source in self.sources
                   if source not in self.failed_nodes)

    def merged(self) -> api.Object | None:
        """The merge of every copy found so far."""
        return self._merge()[1]

    def merged_data(self) -> bytes | None:
        """merged() as stored: a replica that answered these bytes is up to date."""
        return self._merge()[2]

    def _merge(self) -> tuple[int, api.Object | None, bytes | None]:
        # Replies only grow: the merge is taken again only after another one came.
        if self._merged is None or self._merged[0] != len(self.replies):
            found = sorted({data for data in self.replies.values() if data is not None})
            if not found:
                self._merged = (len(self.replies), None, None)
            elif len(found) == 1:
                self._merged = (len(self.replies), self.decoded[found[0]], found[0])
            else:
                obj = dvvset.sync_all(self.decoded[data] for data in found)
                self._merged = (len(self.replies), obj, m.encode_object(obj))
        return self._merged

    def failure_message(self) -> str:
        found, notfound, ok_primary, _failed = self._counts()
        successes = found + (notfound if self.notfound_ok else 0)
        text = (
            f"r={self.r} pr={self.pr} not met: {successes} of {self.r} replies "
            f"({ok_primary} from primaries)"
        )
        if self.errors:
            text += "; " + ", ".join(self.errors)
        return text


@dataclass(slots=True)
class ForwardState:
    """A write this node forwarded to a coordinator on the key's preference list."""

    reply_to: ReplyTo
    deadline_ms: int
    coordinator: str
    done: bool = False


@dataclass(slots=True)
class ListState:
    """A streamed key or bucket listing over a coverage plan of the partitions."""

    reply_to: ClientReplyTo
    deadline_ms: int
    bucket_type: str
    bucket: str  # "" lists bucket names
    n_val: int
    todo: list[int]  # partitions not started
    # partition -> (node asked, start of the page)
    in_flight: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    ready: list[tuple[int, bytes | None]] = field(default_factory=list)  # pages to continue
    unacked: int = 0
    seen_buckets: set[str] = field(default_factory=set)
    tried: dict[int, set[str]] = field(default_factory=dict)
    done: bool = False


@dataclass(slots=True)
class HandoffState:
    """One hinted object on its way from this fallback to its owner."""

    deadline_ms: int
    target: str
    row: bytes  # the hint's storage key
    partition: int
    key: bytes
    data: bytes  # the copy sent, as stored


@dataclass(slots=True)
class GatherState:
    """A cluster-wide status query (admin transfers): the members still to answer."""

    reply_to: ReplyTo
    deadline_ms: int
    waiting: set[str]
    missing: list[str] = field(default_factory=list)  # members down or not answering
    transfers: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)

    def response(self) -> api.StatusResponse:
        return api.StatusResponse({
            "transfers": sorted(self.transfers, key=lambda t: (t["partition"], t["from"])),
            "pending": dict(sorted(self.pending.items())),
            "done": dict(sorted(self.done.items())),
            "nodes_missing": sorted(self.missing),
        })


RequestState = (
    PutState | GetState | ForwardState | ListState | HandoffState | Exchange | ReapState
    | GatherState
)


def live_siblings(obj: api.Object) -> tuple[api.Content, ...]:
    return tuple(value for value in dvvset.values(obj) if not value.deleted)


def resolve_single(obj: api.Object) -> api.Object:
    """One sibling left, newest first (allow_mult false or last_write_wins)."""
    return dvvset.last_write_wins(obj, api.newer)
