"""A dynakv node as a deterministic state machine (sans-I/O).

The driver feeds it events (a client request, a peer's message, a timer tick, a
peer seen up or down), each with `now_ms`; the node answers with effects gathered
in an Output: storage writes, messages to peers, replies to clients. The driver
must make the writes durable before it sends the messages and replies of the same
Output (persist, then send); until it reports them durable (`on_durable`), the
node reads its own writes from a pending set. `next_deadline_ms` says when the
driver must deliver the next Tick.

Every node runs the same code and can coordinate any request (symmetry); none is
special (decentralization).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from dynakv.config import Config
from dynakv.core import api, codec, dvvset, limits
from dynakv.core import membership as ms
from dynakv.core import messages as m
from dynakv.core.anti_entropy import AntiEntropy, Exchange, TreeBuild
from dynakv.core.buckets import BucketProps, apply_props, resolve_quorum
from dynakv.core.coordinator import (
    ClientReplyTo,
    ForwardState,
    GatherState,
    GetState,
    HandoffState,
    ListState,
    Outcome,
    PeerReplyTo,
    PutState,
    ReplyTo,
    RequestState,
    live_siblings,
    resolve_single,
)
from dynakv.core.detector import FailureDetector
from dynakv.core.errors import ClientError, DynakvError, ErrorKind, PeerProtocolError, Unavailable
from dynakv.core.handoff import TRANSFER_BATCH_KEYS, TRANSFERS_IN_FLIGHT_MAX, Transfer
from dynakv.core.hints import (
    HANDOFF_BATCH_MAX,
    HINTS_PARTITION,
    HintLedger,
    hint_key,
    parse_hint_key,
    target_prefix,
)
from dynakv.core.merkle import MerkleTree, differing_children, object_hash, segment_diff
from dynakv.core.pipeline import Output
from dynakv.core.ring import (
    Ring,
    Target,
    key_bytes,
    preference_list,
    primary_owners,
    split_key_bytes,
)
from dynakv.core.storage import META_PARTITION, Storage, Write
from dynakv.core.tombstones import (
    REAP_PAGE_KEYS,
    REAPED_PARTITION,
    TOMBSTONES_PARTITION,
    Reaper,
    ReapState,
    decode_reaped,
    encode_reaped,
    parse_tombstone_row,
    reaped_memory_ms,
    tombstone_row,
)

T = TypeVar("T")


class Rng(Protocol):
    """What the core needs of the randomness its driver hands in (the standard Random, seeded
    by the simulator): the core draws none of its own."""

    def getrandbits(self, k: int, /) -> int: ...

    def choice(self, seq: Sequence[T], /) -> T: ...


# --- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientEvent:
    client_id: int
    request: api.Request


@dataclass(frozen=True, slots=True)
class StreamAckEvent:
    """The driver passed the last streamed chunk of `client_id` to the client."""

    client_id: int


@dataclass(frozen=True, slots=True)
class MessageEvent:
    sender: str
    message: m.Message


@dataclass(frozen=True, slots=True)
class TickEvent:
    pass


@dataclass(frozen=True, slots=True)
class PeerStatusEvent:
    """The driver saw a peer's connection open (up) or fail (down)."""

    node: str
    up: bool


Event = ClientEvent | StreamAckEvent | MessageEvent | TickEvent | PeerStatusEvent


BUCKET_META_PREFIX = b"bucket\x00"
EPOCH_META_KEY = b"epoch"
# The epoch in which this node may have sent dots to replicas before they were durable
# here (early replication); removed at a clean shutdown. Found equal to the stored
# epoch at start, it means a crash may have lost such dots: a new epoch begins.
EARLY_EPOCH_META_KEY = b"early_epoch"
CLUSTER_META_KEY = b"cluster"


def bucket_meta_key(bucket_type: str, bucket: str) -> bytes:
    return BUCKET_META_PREFIX + codec.encode([bucket_type, bucket])


def _digest(stored: bytes) -> bytes:
    """The Merkle hash of a stored object, of its current format's bytes."""
    return object_hash(m.canonical_object(stored))


# Requests a node that has left the cluster (removed) refuses: what it would need its
# peers for. Its status, ring, transfers and bucket properties still answer.
_DATA_REQUESTS = (api.GetRequest, api.PutRequest, api.DeleteRequest, api.ListKeysRequest,
                  api.ListBucketsRequest, api.SetBucketPropsRequest,
                  api.ResetBucketPropsRequest)


class Node:
    def __init__(
        self,
        *,
        name: str,
        server_id: str,
        ring: Ring,
        peers: Sequence[str],
        storage: Storage,
        config: Config,
        rng: Rng,
        now_ms: int = 0,
        cluster: ms.ClusterState | None = None,
    ) -> None:
        """`cluster` is the state to start from when the data directory has none (a
        stored state wins); without it, the members are `peers` with `ring`."""
        self.name = name
        self.server_id = server_id
        self.ring = ring
        self.peers = sorted(set(peers) - {name})
        self.storage = storage
        self.config = config
        self.rng = rng
        self.now_ms = now_ms
        self.detector = FailureDetector(
            self.peers, config.probe_interval_ms, now_ms, threshold=config.phi_threshold,
            acceptable_pause_ms=config.phi_acceptable_pause_ms,
            min_std_deviation_ms=config.phi_min_std_deviation_ms)
        self.hints = HintLedger()
        stored_epoch = storage.get(META_PARTITION, EPOCH_META_KEY)
        self.epoch = 0 if stored_epoch is None else int(stored_epoch.decode())
        # The keys this epoch minted dots for (a local delete of one of them needs a new
        # epoch); None: unknown, any key (after a restart, or past the bound).
        self._epoch_minted: set[tuple[int, bytes]] | None = None
        self.reaper = Reaper(next_reap_ms=now_ms + config.tombstone_reap_interval_ms)
        self.ae = AntiEntropy(next_exchange_ms=now_ms,
                              next_rebuild_ms=now_ms + config.anti_entropy_rebuild_interval_ms)
        self._keys_estimate: dict[int, int] = {}
        self._owned = [p for p in range(ring.size)
                       if any(t.node == name for t in primary_owners(ring, p, config.n_val))]
        if config.anti_entropy_enabled:
            self.ae.build_queue = list(self._owned)
        self._next_handoff_ms = now_ms
        self._next_gossip_ms = now_ms
        self._next_transfer_ms = now_ms
        self.transfers: dict[int, Transfer] = {}
        self.transfers_done = 0
        self._transfer_candidates: list[int] = []
        self._transfer_scan_needed = True
        self._previous_ring: Ring | None = None
        self._probe_sequence = 0
        self.stats: dict[str, int] = {}
        self._pending: dict[tuple[int, bytes], tuple[int, bytes | None]] = {}
        self._write_seq = 0
        self._out_depends_seq = 0  # the last pending write read since take_output
        # Early replication (_replicate): the epoch whose marker is durable (None: none
        # is), the pending marker write (sequence number, epoch), and the coordinator's
        # own copies not yet durable (sequence number, request id), oldest first.
        self._early_epoch: int | None = None
        self._early_marker: tuple[int, int] | None = None
        self._awaiting_durable: deque[tuple[int, int]] = deque()
        self._out = Output()
        self._requests: dict[int, RequestState] = {}
        self._client_streams: dict[int, int] = {}  # client id -> listing request id
        self._deadlines: list[tuple[int, int]] = []
        # Random, so that a late reply to a request of this node's previous life
        # (before a restart) is never taken for the reply to a new request.
        self._next_request_id = rng.getrandbits(62) | 1
        self._bucket_props: dict[tuple[str, str], tuple[BucketProps, tuple[int, str]]] = {}
        self._load_bucket_props()
        self._load_hints()
        stored = storage.get(META_PARTITION, CLUSTER_META_KEY)
        if stored is not None:
            cluster = codec.decode(stored)
        if cluster is None:
            members = [ms.MemberInfo(n, "") for n in sorted({name, *peers})]
            cluster = ms.bootstrap(config.cluster_name, members, ring.owners, config.n_val)
        self.cluster = cluster
        self.removed = False  # this node has left the cluster (its own record says so)
        self._apply_cluster(cluster, persist=stored is None)
        marker = storage.get(META_PARTITION, EARLY_EPOCH_META_KEY)
        if marker is not None and int(marker.decode()) == self.epoch:
            # The last life sent dots early in this epoch and did not stop cleanly: dots
            # it sent may be missing here, and must never be minted again.
            self._new_epoch()

    # --- driver interface -----------------------------------------------------------

    def step(self, event: Event, now_ms: int) -> None:
        self.now_ms = max(self.now_ms, now_ms)
        match event:
            case ClientEvent(client_id, request):
                self._on_client(client_id, request)
            case StreamAckEvent(client_id):
                self._on_stream_ack(client_id)
            case MessageEvent(sender, message):
                if self.detector.heard_from(sender, self.now_ms):
                    self._peer_came_up(sender)
                self._on_message(sender, message)
            case TickEvent():
                self._expire()
                self._probe()
                self._handoff()
                self._anti_entropy()
                self._reap()
                self._gossip()
                self._transfer_step()
            case PeerStatusEvent(node, up):
                self._on_peer_status(node, up)

    def take_output(self) -> Output:
        """The effects since the last call; drivers release them through a
        core.pipeline.CommitPipeline (persist, then send)."""
        out, self._out = self._out, Output()
        out.write_seq = self._write_seq
        out.depends_seq, self._out_depends_seq = self._out_depends_seq, 0
        return out

    def on_durable(self, write_seq: int) -> None:
        """The driver made every write up to `write_seq` durable (it takes the Output
        this may produce: a coordinator's own copy now counts toward w)."""
        self._forget_pending(write_seq)
        if self._early_marker is not None and self._early_marker[0] <= write_seq:
            self._early_epoch = self._early_marker[1]
            self._early_marker = None
        self._settle_own_copies(write_seq, "")

    def on_write_failed(self, write_seq: int) -> None:
        """The driver could not persist writes up to `write_seq`: forget them. Dots
        sent early with them may live on elsewhere: new dots take a new epoch."""
        self._forget_pending(write_seq)
        if self._early_marker is not None and self._early_marker[0] <= write_seq:
            self._early_marker = None
        if self._early_epoch is not None:
            self._early_epoch = None
            self._new_epoch()
        self._settle_own_copies(write_seq, "its own copy could not be stored")

    def _settle_own_copies(self, write_seq: int, failure: str) -> None:
        """Count (or, with a failure, fail) this coordinator's own copies of early
        replicated writes up to `write_seq` toward their requests' w."""
        while self._awaiting_durable and self._awaiting_durable[0][0] <= write_seq:
            _, request_id = self._awaiting_durable.popleft()
            state = self._requests.get(request_id)
            if isinstance(state, PutState):
                if failure:
                    state.fail(self.name, failure)
                else:
                    state.ack(self.name)
                self._check_put(request_id, state)

    def prepare_shutdown(self) -> None:
        """Before a clean stop: no more early replication, and once every write so far is
        durable (the driver waits for it), the next start needs no new epoch."""
        self._early_epoch = None
        self._early_marker = None
        if self._read(META_PARTITION, EARLY_EPOCH_META_KEY) is not None:
            self._write(META_PARTITION, EARLY_EPOCH_META_KEY, None)

    def _forget_pending(self, write_seq: int) -> None:
        for key in [k for k, (seq, _) in self._pending.items() if seq <= write_seq]:
            del self._pending[key]

    def next_deadline_ms(self) -> int | None:
        while self._deadlines and self._deadlines[0][1] not in self._requests:
            heapq.heappop(self._deadlines)
        deadlines = [self._deadlines[0][0]] if self._deadlines else []
        probe = self.detector.next_deadline_ms()
        if probe is not None:
            deadlines.append(probe)
        if self.hints.counts:
            deadlines.append(self._next_handoff_ms)
        if self.transfers or self._transfer_candidates or self._transfer_scan_needed:
            deadlines.append(self._next_transfer_ms)
        if len(self.reaper.reaping) < limits.REAPS_IN_FLIGHT_MAX:
            deadlines.append(self.reaper.next_reap_ms)  # else a reap's end wakes it
        if self.peers:
            deadlines.append(self._next_gossip_ms)
        if self.config.anti_entropy_enabled:
            if self.ae.build_queue:
                deadlines.append(self.ae.next_build_ms)
            deadlines.append(min(self.ae.next_rebuild_ms,
                                 self.ae.next_exchange_ms if self.ae.trees else 1 << 62))
            catch_up = self.ae.catch_up_due()
            if catch_up is not None and self.ae.in_flight < limits.AE_EXCHANGES_IN_FLIGHT_MAX:
                deadlines.append(catch_up)  # else an exchange's end wakes it
        return min(deadlines) if deadlines else None

    @property
    def down(self) -> set[str]:
        """The peers this node believes down."""
        return set(self.detector.down_peers())

    def up_nodes(self) -> set[str]:
        return {self.name, *self.detector.up_peers()}

    # --- storage view ---------------------------------------------------------------

    def _read(self, partition: int, key: bytes) -> bytes | None:
        pending = self._pending.get((partition, key))
        if pending is not None:
            self._out_depends_seq = max(self._out_depends_seq, pending[0])
            return pending[1]
        return self.storage.get(partition, key)

    def _write(self, partition: int, key: bytes, value: bytes | None) -> None:
        if partition >= 0:
            digest = None if value is None else object_hash(value)
            for tree in self.ae.tree_for_update(partition):
                tree.update(key, digest)
        self._write_seq += 1
        self._pending[(partition, key)] = (self._write_seq, value)
        self._out.writes.append(Write(partition, key, value))

    def read_object(self, partition: int, key: bytes) -> api.Object | None:
        data = self._read(partition, key)
        return None if data is None else m.decode_object(data)

    def _read_stored(self, partition: int, key: bytes) -> bytes | None:
        """This replica's copy as stored, in the current format: what a peer is sent."""
        data = self._read(partition, key)
        return None if data is None else m.canonical_object(data)

    def _store_object(self, partition: int, key: bytes, obj: api.Object,
                      data: bytes | None = None) -> bytes:
        """Store `obj` (`data`: its encoding, if the caller has it); its bytes."""
        if data is None:
            data = m.encode_object(obj)
        self._write(partition, key, data)
        self._hand_off_stray(partition, key)
        row = tombstone_row(partition, key)
        values = dvvset.values(obj)
        if values and all(value.deleted for value in values):
            written = max(value.last_modified_ms for value in values)
            self._write(TOMBSTONES_PARTITION, row, written.to_bytes(8, "big"))
        elif self._read(TOMBSTONES_PARTITION, row) is not None:
            self._write(TOMBSTONES_PARTITION, row, None)
        return data

    def _hand_off_stray(self, partition: int, key: bytes) -> None:
        """A key stored in a partition owned elsewhere, that no hint covers (a write or a
        repair from a node whose ring is older than ours) is handed off like the rest,
        even when this partition's transfer has finished already."""
        if partition not in self._owned and partition not in self.transfers and (
                partition not in self._transfer_candidates) and not self._hinted(partition, key):
            self._transfer_candidates.append(partition)

    def _scan(self, partition: int, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Storage scan with this node's own pending writes laid over it."""
        pending: dict[bytes, bytes | None] = {}
        for (p, key), (seq, value) in self._pending.items():
            if p == partition and key >= start:
                pending[key] = value
                self._out_depends_seq = max(self._out_depends_seq, seq)
        if not pending:
            return self.storage.scan(partition, start, limit)
        # Pending deletes may hide stored keys: read that many more, so that a full
        # page still has `limit` keys up to its bound once they are taken out.
        wanted = limit + sum(1 for value in pending.values() if value is None)
        stored = self.storage.scan(partition, start, wanted)
        merged = {key: value for key, value in stored}
        bound = stored[-1][0] if len(stored) >= wanted else None
        for key, value in pending.items():
            if bound is not None and key > bound:
                continue
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return sorted(merged.items())[:limit]

    # --- bucket properties ----------------------------------------------------------

    def _load_bucket_props(self) -> None:
        for key, value in self.storage.scan(META_PARTITION, BUCKET_META_PREFIX, 1 << 30):
            if not key.startswith(BUCKET_META_PREFIX):
                break
            bucket_type, bucket = codec.decode(key[len(BUCKET_META_PREFIX):])
            props, version = codec.decode(value)
            base = BucketProps(n_val=self.config.n_val)
            self._bucket_props[(bucket_type, bucket)] = (
                apply_props(base, dict(props or {})),
                (int(version[0]), str(version[1])),
            )

    def props_for(self, bucket_type: str, bucket: str) -> BucketProps:
        found = self._bucket_props.get((bucket_type, bucket))
        return found[0] if found else BucketProps(n_val=self.config.n_val)

    def _set_bucket_props(
        self, bucket_type: str, bucket: str, props: dict[str, Any] | None,
        version: tuple[int, str],
    ) -> bool:
        current = self._bucket_props.get((bucket_type, bucket))
        if current is not None and current[1] >= version:
            return False
        base = BucketProps(n_val=self.config.n_val)
        self._bucket_props[(bucket_type, bucket)] = (apply_props(base, props or {}), version)
        self._write(
            META_PARTITION, bucket_meta_key(bucket_type, bucket), codec.encode([props, version])
        )
        return True

    def _bucket_props_version(self) -> tuple[int, str]:
        newest = max((v for _, v in self._bucket_props.values()), default=(0, ""))
        return (max(self.now_ms, newest[0] + 1), self.name)

    # --- helpers --------------------------------------------------------------------

    def _count(self, name: str, amount: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + amount

    def _send(self, node: str, message: m.Message) -> None:
        self._out.messages.append((node, message))

    def _send_gossip(self, node: str, message: m.GossipDigest | m.GossipState) -> None:
        """Send this node's cluster state (or its digest) once that state is durable here:
        a commit, a staged change or a merge reaches no peer before this node's disk, so
        a crash cannot leave the others with a ring this node, restarted, never made."""
        pending = self._pending.get((META_PARTITION, CLUSTER_META_KEY))
        if pending is not None:
            self._out_depends_seq = max(self._out_depends_seq, pending[0])
        self._send(node, message)

    def _reply(self, reply_to: ReplyTo, response: api.Response) -> None:
        if isinstance(response, api.ErrorResponse):
            self._count(f"errors_{response.kind.value}")
        match reply_to:
            case ClientReplyTo(client_id):
                self._out.replies.append((client_id, response))
            case PeerReplyTo(node, request_id):
                self._send(node, m.ForwardReply(request_id, response))

    def _new_request(self, state: RequestState) -> int:
        request_id = self._next_request_id
        self._next_request_id += 1
        self._requests[request_id] = state
        heapq.heappush(self._deadlines, (state.deadline_ms, request_id))
        return request_id

    def _finish(self, request_id: int) -> None:
        state = self._requests.pop(request_id, None)
        if isinstance(state, ListState):
            self._client_streams.pop(state.reply_to.client_id, None)

    def _deadline(self, timeout_ms: int | None) -> int:
        if timeout_ms is None:
            timeout_ms = self.config.request_timeout_ms
        if not 1 <= timeout_ms <= limits.REQUEST_TIMEOUT_MAX_MS:
            raise ClientError(f"timeout must be between 1 and {limits.REQUEST_TIMEOUT_MAX_MS} ms")
        return self.now_ms + timeout_ms

    def _vtag(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def _preference(self, partition: int, n_val: int) -> list[Target]:
        """The key's replicas: sloppy (up primaries, then fallbacks) with hinted
        handoff on; only the up primaries with it off."""
        targets = preference_list(self.ring, partition, n_val, self.up_nodes())
        if not self.config.hinted_handoff_enabled:
            targets = [target for target in targets if target.primary]
        return targets

    # --- client requests ------------------------------------------------------------

    def _on_client(self, client_id: int, request: api.Request) -> None:
        reply_to = ClientReplyTo(client_id)
        try:
            if len(self._requests) >= limits.REQUESTS_IN_FLIGHT_MAX:
                raise Unavailable("busy: too many requests in flight", ErrorKind.BUSY)
            self._handle_client(reply_to, request)
        except DynakvError as error:
            self._reply(reply_to, api.ErrorResponse(error.kind, error.message))

    def _handle_client(self, reply_to: ClientReplyTo, request: api.Request) -> None:
        if self.removed and isinstance(request, _DATA_REQUESTS):
            # Its peers no longer talk to it: a request it coordinated would time out.
            members = ", ".join(m.name for m in self.cluster.active())
            raise Unavailable(f"{self.name} has left the cluster; send requests to a member "
                              f"({members})")
        match request:
            case api.GetRequest():
                self._count("gets")
                self._start_get(reply_to, request)
            case api.PutRequest() | api.DeleteRequest():
                self._count("puts" if isinstance(request, api.PutRequest) else "deletes")
                self._start_write(reply_to, request, forwarded=False)
            case api.ListKeysRequest() | api.ListBucketsRequest():
                self._count("listings")
                self._start_listing(reply_to, request)
            case api.GetBucketPropsRequest(bucket_type, bucket):
                props = self.props_for(bucket_type, bucket)
                self._reply(reply_to, api.PropsResponse(props.to_json()))
            case api.SetBucketPropsRequest(bucket_type, bucket, props):
                self._change_bucket_props(reply_to, bucket_type, bucket, props)
            case api.ResetBucketPropsRequest(bucket_type, bucket):
                self._change_bucket_props(reply_to, bucket_type, bucket, None)
            case api.PreflistRequest(bucket_type, bucket, key):
                api.check_key(bucket_type, bucket, key)
                props = self.props_for(bucket_type, bucket)
                partition = self.ring.partition_of(bucket_type, bucket, key)
                targets = self._preference(partition, props.n_val)
                self._reply(
                    reply_to,
                    api.PreflistResponse(tuple((t.partition, t.node, t.primary) for t in targets)),
                )
            case api.LocalGetRequest(bucket_type, bucket, key):
                api.check_key(bucket_type, bucket, key)
                self._reply(reply_to, self._local_get(bucket_type, bucket, key))
            case api.StatusRequest():
                self._reply(reply_to, api.StatusResponse(self.status()))
            case api.ClusterTransfersRequest():
                self._gather_transfers(reply_to)
            case api.JoinRequest() | api.LeaveRequest() | api.PlanRequest() | \
                    api.CommitRequest() | api.RingRequest():
                self._membership_request(reply_to, request)

    def _change_bucket_props(
        self, reply_to: ReplyTo, bucket_type: str, bucket: str, props: dict[str, Any] | None
    ) -> None:
        api.check_name("bucket type", bucket_type, limits.BUCKET_NAME_SIZE_MAX_BYTES)
        api.check_name("bucket", bucket, limits.BUCKET_NAME_SIZE_MAX_BYTES)
        if props is not None:
            current = self._bucket_props.get((bucket_type, bucket))
            merged = dict(self._stored_props_json(bucket_type, bucket) if current else {})
            merged.update(props)
            apply_props(BucketProps(n_val=self.config.n_val), merged)  # 400 if invalid
            props = merged
        version = self._bucket_props_version()
        self._set_bucket_props(bucket_type, bucket, props, version)
        for peer in self.peers:
            self._send(peer, m.BucketPropsUpdate(bucket_type, bucket, props, version))
        self._reply(reply_to, api.DoneResponse())

    def _stored_props_json(self, bucket_type: str, bucket: str) -> dict[str, Any]:
        data = self._read(META_PARTITION, bucket_meta_key(bucket_type, bucket))
        if data is None:
            return {}
        props, _version = codec.decode(data)
        return dict(props or {})

    def _local_get(self, bucket_type: str, bucket: str, key: str) -> api.LocalObjectResponse:
        partition = self.ring.partition_of(bucket_type, bucket, key)
        obj = self.read_object(partition, key_bytes(bucket_type, bucket, key))
        if obj is None:
            return api.LocalObjectResponse(self.name, partition, (), (), b"")
        return api.LocalObjectResponse(
            self.name,
            partition,
            tuple(dvvset.values(obj)),
            tuple(dvvset.dots(obj)),
            api.encode_context(dvvset.join(obj)),
        )

    # --- writes ---------------------------------------------------------------------

    def _start_write(
        self, reply_to: ReplyTo, request: api.PutRequest | api.DeleteRequest, forwarded: bool
    ) -> None:
        api.check_key(request.bucket_type, request.bucket, request.key)
        if isinstance(request, api.PutRequest):
            api.check_content(request.content)
        props = self.props_for(request.bucket_type, request.bucket)
        if isinstance(request, api.DeleteRequest) and request.w is None:
            w = resolve_quorum("rw", request.rw, props)
        else:
            w = resolve_quorum("w", request.w, props)
        dw = resolve_quorum("dw", request.dw, props)
        pw = resolve_quorum("pw", request.pw, props)
        if w < 1:
            raise ClientError("w must be at least 1")
        context = api.decode_context(request.context)
        deadline = self._deadline(request.timeout_ms)
        partition = self.ring.partition_of(request.bucket_type, request.bucket, request.key)
        targets = self._preference(partition, props.n_val)
        primaries_up = sum(1 for t in targets if t.primary)
        if pw > primaries_up:
            raise Unavailable(
                f"pw={pw} unsatisfied: only {primaries_up} primary owner(s) up; nothing was written"
            )
        if max(w, dw) > len(targets):
            raise Unavailable(
                f"w={max(w, dw)} unsatisfied: only {len(targets)} replica(s) reachable; "
                "nothing was written"
            )
        primaries = [t.node for t in targets if t.primary]
        if self.name not in primaries and not forwarded and (
            primaries or self.name not in (t.node for t in targets)
        ):
            # A primary owner coordinates; a fallback only when no primary is up.
            coordinator = self.rng.choice(primaries or [t.node for t in targets])
            request_id = self._new_request(ForwardState(reply_to, deadline, coordinator))
            self._count("forwards")
            self._send(coordinator, m.Forward(request_id, request))
            return
        self._coordinate_write(reply_to, request, props, context, partition, targets,
                               (w, dw, pw), deadline)

    def _coordinate_write(
        self,
        reply_to: ReplyTo,
        request: api.PutRequest | api.DeleteRequest,
        props: BucketProps,
        context: dvvset.VersionVector,
        partition: int,
        targets: list[Target],
        quorums: tuple[int, int, int],
        deadline: int,
    ) -> None:
        key = key_bytes(request.bucket_type, request.bucket, request.key)
        local: api.Object = self.read_object(partition, key) or dvvset.Clock()
        if isinstance(request, api.PutRequest):
            content = replace(request.content, vtag=self._vtag(), last_modified_ms=self.now_ms)
        else:
            content = api.Content(b"", deleted=True, vtag=self._vtag(),
                                  last_modified_ms=self.now_ms)
            if not request.context:
                # A delete without a context removes what the coordinator has seen.
                context = dvvset.join(local)
        obj = dvvset.update(dvvset.new(context, content), local, self._actor(partition, key))
        if props.last_write_wins or not props.allow_mult:
            obj = resolve_single(obj)
        live = len(live_siblings(obj))
        if live > limits.SIBLINGS_PER_KEY_MAX:
            raise ClientError(
                f"too many siblings: this write would leave {live} (the limit is "
                f"{limits.SIBLINGS_PER_KEY_MAX}); read the key and write back with its context "
                "to resolve them",
                ErrorKind.CONFLICT,
            )
        mine = next((t for t in targets if t.node == self.name), None)
        if mine is not None and mine.hint_for and not self._add_hint(mine.hint_for, partition, key):
            raise Unavailable(f"this fallback holds the maximum of hints for {mine.hint_for}; "
                              "nothing was written")
        data = self._store_object(partition, key, obj)
        w, dw, pw = quorums
        primaries = frozenset(t.node for t in targets if t.primary)
        state = PutState(
            reply_to, deadline, partition, key, obj, data, w, dw, pw,
            isinstance(request, api.PutRequest) and request.return_body,
            primaries, {t.node for t in targets},
        )
        request_id = self._new_request(state)
        self._replicate(request_id, state, targets)
        self._check_put(request_id, state)

    def _replicate(self, request_id: int, state: PutState, targets: list[Target]) -> None:
        """Send a coordinated write to the other replicas, and count this node's copy.

        Early replication (config.early_replication): the copies go out at once, while
        this node's own copy syncs, and that copy counts toward w only once durable, so
        the two syncs overlap instead of following each other. Its danger is Riak's
        kv679: a crash before the local sync loses a dot that replicas already hold,
        and the restarted node would mint the same dot again for another value. So
        early sends happen only in an epoch whose marker (EARLY_EPOCH_META_KEY) is
        durable, and a start that finds the marker equal to the stored epoch (no clean
        shutdown since) begins a new epoch, as does a failed write. Until the marker
        is durable, writes go the plain way: persist, then send."""
        others = [t for t in targets if t.node != self.name]
        wanted = bool(others) and self.config.early_replication
        early = wanted and self._early_epoch == self.epoch
        marking = self._early_marker is not None and self._early_marker[1] == self.epoch
        if wanted and not early and not marking:
            self._write(META_PARTITION, EARLY_EPOCH_META_KEY, str(self.epoch).encode())
            self._early_marker = (self._write_seq, self.epoch)
        if early and self.name in state.waiting:
            self._awaiting_durable.append((self._write_seq, request_id))
        else:
            state.ack(self.name)
        queue = self._out.early if early else self._out.messages
        for target in others:
            queue.append((target.node,
                          m.ReplicaPut(request_id, state.partition, state.key, state.data,
                                       target.hint_for)))

    def _check_put(self, request_id: int, state: PutState) -> None:
        outcome = state.outcome()
        if outcome is Outcome.PENDING:
            return
        if outcome is Outcome.SUCCESS:
            if state.return_body:
                context = api.encode_context(dvvset.join(state.obj))
                response: api.Response = api.ObjectResponse(live_siblings(state.obj), context)
            else:
                # No context without the body: it would cover siblings the client was
                # never shown, and writing back with it would discard them.
                response = api.DoneResponse()
        else:
            response = api.ErrorResponse(ErrorKind.TIMEOUT, state.failure_message())
        self._reply(state.reply_to, response)
        self._finish(request_id)

    # --- reads ----------------------------------------------------------------------

    def _start_get(self, reply_to: ReplyTo, request: api.GetRequest) -> None:
        api.check_key(request.bucket_type, request.bucket, request.key)
        props = self.props_for(request.bucket_type, request.bucket)
        r = resolve_quorum("r", request.r, props)
        pr = resolve_quorum("pr", request.pr, props)
        if r < 1:
            raise ClientError("r must be at least 1")
        deadline = self._deadline(request.timeout_ms)
        partition = self.ring.partition_of(request.bucket_type, request.bucket, request.key)
        targets = self._preference(partition, props.n_val)
        primaries_up = sum(1 for t in targets if t.primary)
        if pr > primaries_up:
            raise Unavailable(f"pr={pr} unsatisfied: only {primaries_up} primary owner(s) up")
        if r > len(targets):
            raise Unavailable(f"r={r} unsatisfied: only {len(targets)} replica(s) reachable")
        key = key_bytes(request.bucket_type, request.bucket, request.key)
        state = GetState(
            reply_to, deadline, partition, key, r, pr,
            props.notfound_ok if request.notfound_ok is None else request.notfound_ok,
            props.basic_quorum if request.basic_quorum is None else request.basic_quorum,
            props.last_write_wins or not props.allow_mult,
            tuple(t.node for t in targets),
            frozenset(t.node for t in targets if t.primary),
            {t.node: t.hint_for for t in targets if t.hint_for},
            self._handoff_sources(partition, props.n_val, targets),
        )
        request_id = self._new_request(state)
        for node in state.asked:
            if node != self.name:
                self._send(node, m.ReplicaGet(request_id, partition, key))
        if self.name in state.asked:
            state.reply(self.name, self._read_stored(partition, key))
        self._check_get(request_id, state)

    def _handoff_sources(self, partition: int, n_val: int, targets: list[Target]
                         ) -> frozenset[str]:
        """Previous owners of the partition (before the last ring change) that are up
        and may still hold its keys: a read asks them too while they hand off, so that
        a key not yet streamed to its new owner is not answered as not found."""
        if self._previous_ring is None:
            return frozenset()
        busy = ms.handing_off(self.cluster)
        asked = {t.node for t in targets}
        return frozenset(
            t.node for t in primary_owners(self._previous_ring, partition, n_val)
            if t.node in busy and t.node not in asked and self.detector.is_up(t.node))

    def _check_get(self, request_id: int, state: GetState) -> None:
        if not state.done:
            outcome = state.outcome()
            if outcome is Outcome.PENDING:
                return
            self._answer_get(state, outcome)
        if len(state.replies) == len(state.asked):
            self._read_repair(state)
            self._finish(request_id)

    def _answer_get(self, state: GetState, outcome: Outcome) -> None:
        state.done = True
        if outcome is Outcome.FAILED:
            self._reply(state.reply_to, api.ErrorResponse(ErrorKind.TIMEOUT,
                                                          state.failure_message()))
            return
        merged = state.merged()
        if merged is None:
            self._reply(state.reply_to, api.ObjectResponse((), b""))
            return
        if state.single_value:
            merged = resolve_single(merged)
        self._reply(state.reply_to, api.ObjectResponse(
            live_siblings(merged), api.encode_context(dvvset.join(merged))))

    def _read_repair(self, state: GetState) -> None:
        """Send the merged version to every replica that answered with less."""
        merged = state.merged_data()
        if merged is None:
            return
        for node, data in sorted(state.replies.items()):
            if node in state.failed_nodes or node in state.sources or data == merged:
                continue
            self._count("read_repairs")
            hint_for = state.hint_for.get(node, "")
            if node == self.name:
                self._merge_replica(state.partition, state.key, merged, hint_for)
            else:
                self._send(node, m.ReplicaPut(0, state.partition, state.key, merged, hint_for))

    # --- listings -------------------------------------------------------------------

    def _start_listing(
        self, reply_to: ClientReplyTo, request: api.ListKeysRequest | api.ListBucketsRequest
    ) -> None:
        bucket = request.bucket if isinstance(request, api.ListKeysRequest) else ""
        api.check_name("bucket type", request.bucket_type, limits.BUCKET_NAME_SIZE_MAX_BYTES)
        if isinstance(request, api.ListKeysRequest):
            api.check_name("bucket", bucket, limits.BUCKET_NAME_SIZE_MAX_BYTES)
            n_val = self.props_for(request.bucket_type, bucket).n_val
        else:
            n_val = self.config.n_val
        state = ListState(
            reply_to, self._deadline(request.timeout_ms), request.bucket_type, bucket, n_val,
            list(range(self.ring.size)),
        )
        request_id = self._new_request(state)
        self._client_streams[reply_to.client_id] = request_id
        self._pump_listing(request_id, state)

    def _list_prefix(self, bucket_type: str, bucket: str) -> bytes:
        if not bucket:
            return b""
        return key_bytes(bucket_type, bucket, "")[:-1]

    def _list_request_page(
        self, request_id: int, state: ListState, partition: int, start: bytes
    ) -> None:
        owners = [t.node for t in primary_owners(self.ring, partition, state.n_val)]
        tried = state.tried.setdefault(partition, set())
        up = self.up_nodes()
        candidates = [n for n in owners if n in up and n not in tried]
        if not candidates:
            self._fail_listing(request_id, state,
                               f"partition {partition}: no replica could be listed")
            return
        node = self.name if self.name in candidates else candidates[0]
        state.in_flight[partition] = (node, start)
        if node == self.name:
            items, next_start = self.list_page(partition, state.bucket_type, state.bucket, start)
            self._accept_page(request_id, state, partition, items, next_start)
        else:
            self._send(node, m.ListPage(request_id, partition, state.bucket_type, state.bucket,
                                        start))

    def list_page(
        self, partition: int, bucket_type: str, bucket: str, start: bytes
    ) -> tuple[tuple[str, ...], bytes | None]:
        """One page of live keys (or bucket names, bucket "") of a partition here."""
        prefix = self._list_prefix(bucket_type, bucket)
        page = self._scan(partition, start, limits.LIST_KEYS_PAGE_MAX)
        items: list[str] = []
        for raw_key, value in page:
            if not raw_key.startswith(prefix):
                return tuple(items), None
            key_type, key_bucket, key = split_key_bytes(raw_key)
            if key_type != bucket_type or not live_siblings(m.decode_object(value)):
                continue
            if bucket:
                items.append(key)
            elif not items or items[-1] != key_bucket:
                items.append(key_bucket)
        if len(page) < limits.LIST_KEYS_PAGE_MAX:
            return tuple(items), None
        return tuple(items), page[-1][0] + b"\x00"

    def _accept_page(
        self, request_id: int, state: ListState, partition: int,
        items: tuple[str, ...], next_start: bytes | None,
    ) -> None:
        """A page arrived: stream its items; continue the partition after the ack."""
        if state.done or partition not in state.in_flight:
            return
        del state.in_flight[partition]
        if not state.bucket:
            fresh = [b for b in dict.fromkeys(items) if b not in state.seen_buckets]
            state.seen_buckets.update(fresh)
            if len(state.seen_buckets) > limits.LIST_BUCKETS_MAX:
                self._fail_listing(request_id, state,
                                   f"more than {limits.LIST_BUCKETS_MAX} buckets")
                return
            items = tuple(fresh)
        state.ready.append((partition, next_start))
        if items:
            state.unacked += 1
            self._reply(state.reply_to, api.ChunkResponse(items, False))

    def _pump_listing(self, request_id: int, state: ListState) -> None:
        """Ask for pages while the client has taken every chunk sent so far."""
        while not state.done and state.unacked == 0:
            if state.ready:
                partition, next_start = state.ready.pop(0)
                if next_start is not None:
                    self._list_request_page(request_id, state, partition, next_start)
            elif state.todo and len(state.in_flight) < limits.LIST_KEYS_PARTITIONS_IN_FLIGHT_MAX:
                partition = state.todo.pop(0)
                prefix = self._list_prefix(state.bucket_type, state.bucket)
                self._list_request_page(request_id, state, partition, prefix)
            else:
                break
        if not (state.done or state.todo or state.in_flight or state.ready):
            state.done = True
            self._reply(state.reply_to, api.ChunkResponse((), True))
            self._finish(request_id)

    def _on_stream_ack(self, client_id: int) -> None:
        request_id = self._client_streams.get(client_id)
        state = self._requests.get(request_id) if request_id is not None else None
        if isinstance(state, ListState) and request_id is not None:
            state.unacked = max(0, state.unacked - 1)
            self._pump_listing(request_id, state)

    def _fail_listing(self, request_id: int, state: ListState, reason: str) -> None:
        if not state.done:
            state.done = True
            self._reply(state.reply_to, api.ErrorResponse(ErrorKind.UNAVAILABLE,
                                                          f"listing failed: {reason}"))
            self._finish(request_id)

    # --- peer messages --------------------------------------------------------------

    def _on_message(self, sender: str, message: m.Message) -> None:
        match message:
            case m.ReplicaPut(request_id, partition, key, data, hint_for):
                self._count("replica_puts")
                error = self._merge_replica(partition, key, data, hint_for)
                if request_id:
                    self._send(sender, m.ReplicaPutAck(request_id, error))
            case m.ReplicaPutAck(request_id, error):
                state = self._requests.get(request_id)
                if isinstance(state, PutState):
                    if error:
                        state.fail(sender, error)
                    else:
                        state.ack(sender)
                    self._check_put(request_id, state)
                elif isinstance(state, HandoffState):
                    self._handoff_done(request_id, state, error)
            case m.ReplicaGet(request_id, partition, key):
                self._count("replica_gets")
                self._send(sender, m.ReplicaGetReply(request_id, self._read_stored(partition, key)))
            case m.ReplicaGetReply(request_id, data):
                state = self._requests.get(request_id)
                if isinstance(state, GetState):
                    state.reply(sender, data)
                    self._check_get(request_id, state)
            case m.Forward(request_id, request):
                reply_to = PeerReplyTo(sender, request_id)
                try:
                    self._start_write(reply_to, request, forwarded=True)
                except DynakvError as error:
                    self._reply(reply_to, api.ErrorResponse(error.kind, error.message))
            case m.ForwardReply(request_id, response):
                state = self._requests.get(request_id)
                if isinstance(state, ForwardState) and state.coordinator == sender:
                    self._reply(state.reply_to, response)
                    self._finish(request_id)
            case m.ListPage(request_id, partition, bucket_type, bucket, start):
                items, next_start = self.list_page(partition, bucket_type, bucket, start)
                self._send(sender, m.ListPageReply(request_id, partition, items, next_start))
            case m.ListPageReply(request_id, partition, items, next_start):
                state = self._requests.get(request_id)
                if isinstance(state, ListState):
                    in_flight = state.in_flight.get(partition)
                    if in_flight is not None and in_flight[0] == sender:
                        self._accept_page(request_id, state, partition, items, next_start)
                        self._pump_listing(request_id, state)
            case m.BucketPropsUpdate(bucket_type, bucket, props, version):
                self._set_bucket_props(bucket_type, bucket, props, version)
            case m.AeLevel() | m.AeSegments() | m.AeRepair():
                self._on_exchange_request(sender, message)
            case m.AeLevelReply() | m.AeSegmentsReply() | m.AeRepairReply():
                state = self._requests.get(message.request_id)
                if isinstance(state, Exchange) and state.partner == sender:
                    self._on_exchange_reply(message.request_id, state, message)
            case m.ReapCheck(request_id, partition, key, digest):
                self._send(sender, m.ReapVote(request_id, self._reap_vote(partition, key, digest)))
            case m.ReapVote(request_id, ok):
                state = self._requests.get(request_id)
                if isinstance(state, ReapState) and sender in state.waiting:
                    state.waiting.discard(sender)
                    state.refused = state.refused or not ok
                    self._check_reap(request_id, state)
            case m.ReapDelete(partition, key, digest):
                self._reap_delete(partition, key, digest)
            case m.GossipDigest(digest):
                if digest != ms.digest(self.cluster):
                    self._send_gossip(sender, m.GossipState(self.cluster))
            case m.GossipState(state):
                self._on_gossip_state(sender, state)
            case m.CommitPlan(request_id, base_version, owners):
                self._send(sender, m.CommitResult(request_id,
                                                  self._commit(base_version, owners)))
            case m.CommitResult(request_id, refused):
                state = self._requests.get(request_id)
                if isinstance(state, ForwardState) and state.coordinator == sender:
                    self._reply(state.reply_to, api.ErrorResponse(ErrorKind.PRECONDITION_FAILED,
                                                                  refused)
                                if refused else api.DoneResponse())
                    self._finish(request_id)
            case m.TransferBatch(request_id, partition, objects):
                for key, obj in objects:
                    self._merge_object(partition, key, obj)
                self._send(sender, m.TransferAck(request_id))
            case m.TransferAck(request_id):
                self._on_transfer_ack(sender, request_id)
            case m.TransfersQuery(request_id):
                self._send(sender, m.TransfersReply(
                    request_id, tuple(self.transfers_status()),
                    len(self._transfer_candidates), self.transfers_done))
            case m.TransfersReply(request_id, transfers, pending, done):
                state = self._requests.get(request_id)
                if isinstance(state, GatherState) and sender in state.waiting:
                    state.waiting.discard(sender)
                    self._add_transfers(state, sender, transfers, pending, done)
                    self._check_gather(request_id, state)
            case m.Ping(sequence):
                self._send(sender, m.Pong(sequence))
            case m.Pong():
                self.detector.heartbeat(sender, self.now_ms)  # a gap for phi accrual

    def _on_peer_status(self, node: str, up: bool) -> None:
        if self.detector.connection(node, up, self.now_ms):
            if up:
                self._peer_came_up(node)
            else:
                self._peer_went_down(node)

    def _peer_came_up(self, node: str) -> None:
        """Catch the peer up on bucket properties; hints go on the next handoff round."""
        for (bucket_type, bucket), (_props, version) in sorted(self._bucket_props.items()):
            stored = self._stored_props_json(bucket_type, bucket)
            self._send(node, m.BucketPropsUpdate(bucket_type, bucket, stored or None, version))
        self.hints.peer_up(node)
        self._next_handoff_ms = min(self._next_handoff_ms, self.now_ms)
        if self.config.anti_entropy_enabled:  # exchange every shared partition soon
            for partition in self._owned:
                if node in self._ae_partners(partition):
                    self.ae.catch_up[(partition, node)] = (self.now_ms, 0)

    def _peer_went_down(self, node: str) -> None:
        for pair in [pair for pair in self.ae.catch_up if pair[1] == node]:
            del self.ae.catch_up[pair]  # queued again when it comes back
        for request_id, state in list(self._requests.items()):
            self._peer_failed(request_id, state, node, "down")

    def _peer_failed(self, request_id: int, state: RequestState, node: str, reason: str) -> None:
        match state:
            case PutState():
                state.fail(node, reason)
                self._check_put(request_id, state)
            case GetState():
                state.fail(node, reason)
                self._check_get(request_id, state)
            case ForwardState(reply_to, _deadline, coordinator) if coordinator == node:
                self._reply(reply_to, api.ErrorResponse(
                    ErrorKind.TIMEOUT,
                    f"coordinator {node} went down; the write may or may not survive"))
                self._finish(request_id)
            case HandoffState() if state.target == node:
                self._handoff_done(request_id, state, "down")
            case Exchange() if state.partner == node:
                self._exchange_done(request_id, state, failed=True)
            case ReapState() if node in state.waiting:
                state.refused = True
                self._check_reap(request_id, state)
            case GatherState() if node in state.waiting:
                state.waiting.discard(node)
                state.missing.append(node)
                self._check_gather(request_id, state)
            case ListState():
                for partition, (peer, start) in list(state.in_flight.items()):
                    if peer == node:
                        state.tried.setdefault(partition, set()).add(node)
                        del state.in_flight[partition]
                        self._list_request_page(request_id, state, partition, start)
                self._pump_listing(request_id, state)

    # --- timers ---------------------------------------------------------------------

    def _expire(self) -> None:
        while self._deadlines and self._deadlines[0][0] <= self.now_ms:
            _deadline, request_id = heapq.heappop(self._deadlines)
            state = self._requests.get(request_id)
            if state is None:
                continue
            self._timeout(request_id, state)

    def _timeout(self, request_id: int, state: RequestState) -> None:
        match state:
            case PutState():
                self._reply(state.reply_to, api.ErrorResponse(
                    ErrorKind.TIMEOUT, "timeout: " + state.failure_message()))
            case GetState():
                if not state.done:
                    state.sources = frozenset()  # no longer wait for a slow previous owner
                    outcome = state.outcome()
                    if outcome in (Outcome.SUCCESS, Outcome.NOT_FOUND):
                        self._answer_get(state, outcome)
                    else:
                        state.done = True
                        self._reply(state.reply_to, api.ErrorResponse(
                            ErrorKind.TIMEOUT, "timeout: " + state.failure_message()))
            case ForwardState(reply_to, _deadline, coordinator):
                self._reply(reply_to, api.ErrorResponse(
                    ErrorKind.TIMEOUT,
                    f"timeout: coordinator {coordinator} did not answer in time; "
                    "the write may or may not survive"))
            case ListState():
                if not state.done:
                    state.done = True
                    self._reply(state.reply_to, api.ErrorResponse(
                        ErrorKind.TIMEOUT, "timeout: the listing did not finish in time"))
            case HandoffState():
                self._handoff_done(request_id, state, "timeout")
                return
            case Exchange():
                self._exchange_done(request_id, state, failed=True)
                return
            case ReapState():
                self.reaper.reaping.discard((state.partition, state.key))
                self.reaper.refused += 1
            case GatherState():
                state.missing += sorted(state.waiting)
                self._reply(state.reply_to, state.response())
        if isinstance(state, GetState):
            self._read_repair(state)
        self._finish(request_id)

    # --- membership -----------------------------------------------------------------

    def peer_addresses(self) -> dict[str, str]:
        """Internode addresses of the other members, for the driver's transport ("" for
        a member whose address this node does not know: the driver keeps what it has)."""
        return {m.name: m.address for m in self.cluster.active() if m.name != self.name}

    def _apply_cluster(self, state: ms.ClusterState, persist: bool) -> None:
        """Adopt a cluster state: ring, peers, failure detector, owned partitions."""
        self.cluster = state
        me = state.member(self.name)
        self.removed = me is not None and me.status is ms.Status.REMOVED
        if persist:
            self._write(META_PARTITION, CLUSTER_META_KEY, codec.encode(state))
        if state.ring.owners != self.ring.owners:
            self.ring = Ring(state.ring.owners)
            self._transfer_scan_needed = True
            # Transfers under way go to the old ring's owners (one may have left, and
            # would be waited for forever): the rescan starts them again for the new
            # owners; a late acknowledgement of a batch sent before is ignored.
            self.transfers.clear()
        if state.ring.previous != (self._previous_ring.owners if self._previous_ring else ()):
            self._previous_ring = Ring(state.ring.previous) if state.ring.previous else None
        peers = sorted(m.name for m in state.active() if m.name != self.name)
        if peers != self.peers:
            self.peers = peers
            self.detector.set_peers(peers, self.now_ms)
        self._out.membership_changed = True
        owned = [p for p in range(self.ring.size)
                 if any(t.node == self.name
                        for t in primary_owners(self.ring, p, self.config.n_val))]
        if owned != self._owned:
            self._owned = owned
            keep = set(owned)
            for partition in [p for p in self.ae.trees if p not in keep]:
                self._keys_estimate[partition] = self.ae.trees[partition].keys_count
                del self.ae.trees[partition]
            for partition in [p for p in self.ae.builds if p not in keep]:
                del self.ae.builds[partition]
            self.ae.build_queue = [p for p in self.ae.build_queue if p in keep]
            if self.config.anti_entropy_enabled:
                self.ae.build_queue += [p for p in owned
                                        if p not in self.ae.trees and p not in self.ae.build_queue]

    def _gossip(self) -> None:
        if self.now_ms < self._next_gossip_ms:
            return
        self._next_gossip_ms = self.now_ms + self.config.gossip_interval_ms
        up = sorted(self.detector.up_peers())
        if up:
            self._send_gossip(self.rng.choice(up), m.GossipDigest(ms.digest(self.cluster)))
        for info in self.cluster.members:
            # A joiner that has not taken the cluster's state yet cannot answer probes.
            if info.status is ms.Status.JOINING and not self.detector.is_up(info.name):
                self._send_gossip(info.name, m.GossipState(self.cluster))

    def _on_gossip_state(self, sender: str, state: ms.ClusterState) -> None:
        mine = self.cluster
        if (state.cluster_name, state.cluster_id) != (mine.cluster_name, mine.cluster_id):
            me = state.member(self.name)
            alone = [m.name for m in mine.active()] == [self.name]
            if alone and me is not None and me.status is not ms.Status.REMOVED:
                self._apply_cluster(state, persist=True)  # a cluster took us in: join it
                return
            member = mine.member(sender)
            if member is not None and member.status is not ms.Status.REMOVED and [
                    m.name for m in state.active()] == [sender]:
                # A member of ours still alone in a cluster of its own: the state its
                # join pushed was lost (it answers probes, so no push reaches it since).
                self._send_gossip(sender, m.GossipState(mine))
            return
        merged = ms.merge(mine, state)
        if merged != mine:
            self._apply_cluster(merged, persist=True)
        if ms.digest(merged) != ms.digest(state):
            self._send_gossip(sender, m.GossipState(merged))

    def _membership_request(self, reply_to: ReplyTo, request: api.Request) -> None:
        match request:
            case api.JoinRequest(name, address, weight, zone):
                if not name or not address or weight < 1:
                    raise ClientError("a join needs the node's name, internode address and "
                                      "a positive weight")
                known = self.cluster.member(name)
                if known is not None and known.status in (ms.Status.VALID, ms.Status.JOINING):
                    raise ClientError(f"{name} is already a member ({known.status.value})")
                joiner = ms.MemberInfo(name, address, weight, zone)
                self._apply_cluster(ms.stage_join(self.cluster, joiner), persist=True)
                # Push the state to the joiner now: until it has it, it cannot answer.
                self._send_gossip(name, m.GossipState(self.cluster))
                self._reply(reply_to, api.DoneResponse())
            case api.LeaveRequest(name, remove, force):
                if remove and not force and (name == self.name or self.detector.is_up(name)):
                    raise ClientError(
                        f"{name} is up as seen from {self.name}: a removal hands nothing "
                        "off (its replicas are rebuilt from the other copies); a live member "
                        "leaves with `dynakv admin leave` (force the removal to override)",
                        ErrorKind.PRECONDITION_FAILED)
                try:
                    stage = ms.stage_remove if remove else ms.stage_leave
                    state = stage(self.cluster, name)
                except ValueError as invalid:
                    raise ClientError(str(invalid)) from invalid
                self._apply_cluster(state, persist=True)
                self._reply(reply_to, api.DoneResponse())
            case api.PlanRequest():
                self._reply(reply_to, api.StatusResponse(self._plan_status()))
            case api.CommitRequest(base_version, owners):
                claimant = ms.claimant(self.cluster)
                if claimant == self.name:
                    refused = self._commit(base_version, owners)
                    if refused:
                        raise ClientError(refused, ErrorKind.PRECONDITION_FAILED)
                    self._reply(reply_to, api.DoneResponse())
                    return
                request_id = self._new_request(ForwardState(
                    reply_to, self.now_ms + self.config.request_timeout_ms, claimant))
                self._send(claimant, m.CommitPlan(request_id, base_version, owners))
            case api.RingRequest():
                self._reply(reply_to, api.StatusResponse({
                    "ring_size": self.ring.size,
                    "ring_version": self.cluster.ring.version,
                    "owners": [{"partition": p, "node": owner}
                               for p, owner in enumerate(self.ring.owners)],
                }))

    def _plan_status(self) -> dict[str, Any]:
        plan = ms.plan(self.cluster)
        keys = {p: tree.keys_count for p, tree in self.ae.trees.items()}
        return {
            "ring_version": plan.base_version,
            "claimant": ms.claimant(self.cluster),
            "staged": [{"name": m.name, "status": m.status.value, "weight": m.weight}
                       for m in self.cluster.members
                       if m.status in ms.STAGED],
            "owners": list(plan.owners),
            "moves": [{"partition": p, "from": old, "to": new,
                       "keys_here": keys.get(p)} for p, old, new in plan.moves],
        }

    def _commit(self, base_version: int, owners: Sequence[str]) -> str:
        """Apply a plan as the claimant; an error text, empty on success."""
        if ms.claimant(self.cluster) != self.name:
            return f"{self.name} is not the claimant; {ms.claimant(self.cluster)} is"
        if not any(m.status in ms.STAGED for m in self.cluster.members):
            return "nothing is staged: there is no plan to commit"
        if base_version == self.cluster.ring.version and (
                tuple(owners) != ms.plan(self.cluster).owners):
            return ("the plan does not match the changes staged at the claimant "
                    f"({self.name}): plan again")
        try:
            state = ms.commit(self.cluster, ms.Plan(base_version, tuple(owners), ()), self.name)
        except ms.StalePlan as error:
            return str(error)
        self._apply_cluster(state, persist=True)
        return ""

    # --- ownership handoff (core/handoff.py) ----------------------------------------------

    def _transfer_step(self) -> None:
        """Find partitions held here but owned elsewhere; stream a few of them."""
        if self.now_ms < self._next_transfer_ms:
            return
        self._next_transfer_ms = self.now_ms + self.config.handoff_interval_ms
        if self._transfer_scan_needed:
            self._transfer_scan_needed = False
            owned = set(self._owned)
            self._transfer_candidates = [
                p for p in range(self.ring.size)
                if p not in owned and p not in self.transfers and self._scan(p, b"", 1)]
        self._start_transfers()
        for transfer in list(self.transfers.values()):
            if transfer.waiting and self.now_ms < transfer.deadline_ms:
                continue
            transfer.waiting.clear()  # a batch not acknowledged in time is sent again
            self._transfer_next(transfer)
        self._note_handoff_done()

    def _start_transfers(self) -> list[Transfer]:
        """Start transfers of candidate partitions while there are free slots."""
        started = []
        while self._transfer_candidates and len(self.transfers) < TRANSFERS_IN_FLIGHT_MAX:
            partition = self._transfer_candidates.pop(0)
            targets = tuple(t.node for t in primary_owners(self.ring, partition,
                                                           self.config.n_val))
            transfer = Transfer(partition, targets, self._keys_estimate.get(partition),
                                self.now_ms)
            self.transfers[partition] = transfer
            started.append(transfer)
        return started

    def _note_handoff_done(self) -> None:
        """Nothing left to hand off under this ring: say so in this node's member record,
        so that reads stop asking it as a previous owner (gossip spreads it)."""
        if self.transfers or self._transfer_candidates or self._transfer_scan_needed:
            return
        state = ms.handoff_done(self.cluster, self.name)
        if state is not self.cluster:
            self._apply_cluster(state, persist=True)

    def _transfer_next(self, transfer: Transfer) -> None:
        if self.name in transfer.targets or any(
                not self.detector.is_up(target) for target in transfer.targets):
            return  # owned here again, or a target is down: wait
        page = self._scan(transfer.partition, b"", TRANSFER_BATCH_KEYS)
        if not page:
            del self.transfers[transfer.partition]
            self.transfers_done += 1
            for started in self._start_transfers():  # the freed slot goes on at once
                self._transfer_next(started)
            self._note_handoff_done()
            return
        transfer.batch = dict(page)
        transfer.request_id = self._next_request_id
        self._next_request_id += 1
        transfer.deadline_ms = self.now_ms + self.config.request_timeout_ms
        transfer.waiting = set(transfer.targets)
        objects = tuple((key, m.decode_object(value)) for key, value in page)
        for target in transfer.targets:
            self._send(target, m.TransferBatch(transfer.request_id, transfer.partition,
                                               objects))

    def _on_transfer_ack(self, sender: str, request_id: int) -> None:
        transfer = next((t for t in self.transfers.values() if t.request_id == request_id),
                        None)
        if transfer is None or sender not in transfer.waiting:
            return
        transfer.waiting.discard(sender)
        if transfer.waiting:
            return
        for key, value in transfer.batch.items():
            if self._read(transfer.partition, key) == value:  # unchanged since sent
                self._delete_local(transfer.partition, key)
                transfer.keys_done += 1
                transfer.bytes_done += len(key) + len(value)
        transfer.batch = {}
        self._transfer_next(transfer)

    def _gather_transfers(self, reply_to: ReplyTo) -> None:
        """Ask every member that is up for its transfers; answer with all of them."""
        up = self.detector.up_peers()
        state = GatherState(reply_to, self.now_ms + self.config.request_timeout_ms,
                            {peer for peer in self.peers if peer in up},
                            [peer for peer in self.peers if peer not in up])
        self._add_transfers(state, self.name, tuple(self.transfers_status()),
                            len(self._transfer_candidates), self.transfers_done)
        request_id = self._new_request(state)
        for peer in sorted(state.waiting):
            self._send(peer, m.TransfersQuery(request_id))
        self._check_gather(request_id, state)

    @staticmethod
    def _add_transfers(state: GatherState, node: str, transfers: tuple[dict[str, Any], ...],
                       pending: int, done: int) -> None:
        state.transfers += [dict(transfer) for transfer in transfers]
        state.pending[node] = pending
        state.done[node] = done

    def _check_gather(self, request_id: int, state: GatherState) -> None:
        if not state.waiting:
            self._reply(state.reply_to, state.response())
            self._finish(request_id)

    def transfers_status(self) -> list[dict[str, object]]:
        return [transfer.status(self.name, self.now_ms)
                for _, transfer in sorted(self.transfers.items())]

    # --- actor ids ----------------------------------------------------------------------

    def _actor(self, partition: int, key: bytes) -> str:
        """The id this node's new dots for `key` carry: its server id and its epoch.

        A node that deletes its local copy of a key (a fallback handing off, a reaped
        tombstone) could later coordinate that key again with no memory of the dots it
        minted for it, and mint one of them again (Riak's kv679 data loss). So a local
        delete of a key this epoch minted dots for starts a new epoch, durably, in the
        same batch: dots of the new epoch are fresh for every key. Only for such a key:
        a new epoch per deleted key would add an actor to every version vector written
        since (a long chaos run grew one key's context to 358 actors, 8 KB, past HTTP
        clients' header limit), so the epoch remembers its keys, up to a bound."""
        minted = self._epoch_minted
        if minted is not None:
            minted.add((partition, key))
            if len(minted) > limits.EPOCH_KEYS_TRACKED_MAX:
                self._epoch_minted = None  # too many to remember: any delete is one
        return self.server_id if self.epoch == 0 else f"{self.server_id}.{self.epoch}"

    def _new_epoch(self) -> None:
        """Dots minted from now on are fresh for every key (written durably before any
        of them leaves: the epoch write precedes them in the commit order)."""
        self.epoch += 1
        self._epoch_minted = set()
        self._write(META_PARTITION, EPOCH_META_KEY, str(self.epoch).encode())

    def _delete_local(self, partition: int, key: bytes) -> None:
        if self._epoch_minted is None or (partition, key) in self._epoch_minted:
            self._new_epoch()
        self._write(partition, key, None)
        self._write(TOMBSTONES_PARTITION, tombstone_row(partition, key), None)

    # --- replicas and hinted handoff ------------------------------------------------

    def _merge_replica(self, partition: int, key: bytes, data: bytes, hint_for: str) -> str:
        """Merge a copy (`data`, as stored) into this replica (as a fallback for
        `hint_for` if set). Returns an error text, empty on success."""
        if hint_for and not self._add_hint(hint_for, partition, key):
            return f"fallback {self.name} holds the maximum of hints for {hint_for}"
        stored = self._read(partition, key)
        if stored == data:
            return ""  # this very copy: nothing to decode or merge
        try:
            obj = m.decode_object(data)
        except PeerProtocolError as error:
            return f"malformed object: {error}"
        self._merge_into(partition, key, obj, stored, data)
        return ""

    def _load_hints(self) -> None:
        start = b""
        while True:
            page = self.storage.scan(HINTS_PARTITION, start, 10_000)
            for raw, _ in page:
                self.hints.add(parse_hint_key(raw)[0])
            if len(page) < 10_000:
                return
            start = page[-1][0] + b"\x00"

    def _add_hint(self, target: str, partition: int, key: bytes) -> bool:
        """Record that `target` must get this key; False past the per-target bound."""
        row = hint_key(target, partition, key)
        if self._read(HINTS_PARTITION, row) is not None:
            return True
        if self.hints.counts.get(target, 0) >= limits.HINTS_PER_TARGET_MAX:
            self.hints.refused += 1
            return False
        self._write(HINTS_PARTITION, row, b"\x01")
        self.hints.add(target)
        return True

    def _probe(self) -> None:
        for peer in self.detector.expire(self.now_ms):
            self._peer_went_down(peer)
        for peer in self.detector.probes_due(self.now_ms):
            self._probe_sequence += 1
            self._send(peer, m.Ping(self._probe_sequence))

    def _handoff(self) -> None:
        """Deliver hinted objects to owners that are up again, a batch at a time."""
        if self.now_ms < self._next_handoff_ms or not self.hints.counts:
            return
        self._next_handoff_ms = self.now_ms + self.config.handoff_interval_ms
        for target in sorted(self.hints.counts):
            if target not in self.peers:
                self._forget_hints(target)
                continue
            if not self.detector.is_up(target) or not self.hints.due(target, self.now_ms):
                continue
            prefix = target_prefix(target)
            self.hints.round_started(target)
            for row, _ in self._scan(HINTS_PARTITION, prefix, HANDOFF_BATCH_MAX):
                if not row.startswith(prefix):
                    break
                _, partition, key = parse_hint_key(row)
                data = self._read_stored(partition, key)
                if data is None:  # nothing left to hand off
                    self._write(HINTS_PARTITION, row, None)
                    self.hints.remove(target)
                    continue
                state = HandoffState(self.now_ms + self.config.request_timeout_ms, target, row,
                                     partition, key, data)
                request_id = self._new_request(state)
                self.hints.in_flight[target] = self.hints.in_flight.get(target, 0) + 1
                self._send(target, m.ReplicaPut(request_id, partition, key, data))

    def _forget_hints(self, target: str) -> None:
        """`target` left the cluster: its hints can never be delivered, so they go (a
        batch a round). The copies stay: ownership handoff (a rescan) streams those of
        partitions this node does not own to their current owners, like any key here."""
        prefix = target_prefix(target)
        rows = [row for row, _ in self._scan(HINTS_PARTITION, prefix, HANDOFF_BATCH_MAX)
                if row.startswith(prefix)]
        for row in rows:
            self._write(HINTS_PARTITION, row, None)
            self.hints.remove(target)
        if not rows:
            self.hints.counts.pop(target, None)
        self._transfer_scan_needed = True

    def _handoff_done(self, request_id: int, state: HandoffState, error: str) -> None:
        self._finish(request_id)
        target = state.target
        self.hints.in_flight[target] = max(0, self.hints.in_flight.get(target, 0) - 1)
        if error:
            self.hints.failed(target, self.now_ms)
            return
        self.hints.succeeded(target)
        if self._read_stored(state.partition, state.key) != state.data:
            return  # changed meanwhile: the hint stays, the next round sends the new version
        self._write(HINTS_PARTITION, state.row, None)
        self.hints.remove(target)
        self.hints.delivered += 1
        self._drop_fallback_copy(state.partition, state.key)

    def _drop_fallback_copy(self, partition: int, key: bytes) -> None:
        """A fallback that is not a primary owner drops its copy once no hint needs it."""
        bucket_type, bucket, _ = split_key_bytes(key)
        n_val = self.props_for(bucket_type, bucket).n_val
        if any(t.node == self.name for t in primary_owners(self.ring, partition, n_val)):
            return
        if any(self._read(HINTS_PARTITION, hint_key(peer, partition, key)) is not None
               for peer in self.peers):
            return
        self._delete_local(partition, key)

    # --- anti-entropy ---------------------------------------------------------------

    def _anti_entropy(self) -> None:
        if not self.config.anti_entropy_enabled:
            return
        if self.now_ms >= self.ae.next_rebuild_ms:
            self.ae.next_rebuild_ms = self.now_ms + self.config.anti_entropy_rebuild_interval_ms
            self.ae.build_queue += [p for p in self._owned if p not in self.ae.build_queue]
        if self.ae.build_queue and self.now_ms >= self.ae.next_build_ms:
            self.ae.next_build_ms = self.now_ms + self.config.anti_entropy_build_interval_ms
            self._build_step(self.ae.build_queue[0])
        while self.ae.in_flight < limits.AE_EXCHANGES_IN_FLIGHT_MAX and self._catch_up():
            pass
        if self.now_ms >= self.ae.next_exchange_ms:
            self.ae.next_exchange_ms = self.now_ms + self.config.anti_entropy_interval_ms
            if self.ae.in_flight < limits.AE_EXCHANGES_IN_FLIGHT_MAX:
                self._start_exchange()

    def _build_step(self, partition: int) -> None:
        """Hash one page of a partition's keys into the tree being built."""
        build = self.ae.builds.setdefault(partition, TreeBuild(MerkleTree()))
        page = self._scan(partition, build.next_start, limits.AE_BUILD_PAGE_KEYS)
        for key, value in page:
            build.tree.update(key, _digest(value))
        build.keys += len(page)
        if len(page) == limits.AE_BUILD_PAGE_KEYS:
            build.next_start = page[-1][0] + b"\x00"
            return
        del self.ae.builds[partition]
        self.ae.build_queue.remove(partition)
        self.ae.trees[partition] = build.tree
        self.ae.trees_built += 1

    def _catch_up(self) -> bool:
        """Start the catch-up exchange due first, if one is due; False if none is.
        A pair no longer shared, or whose partner is down, is dropped; one whose
        tree is still being built here waits."""
        due = self.ae.catch_up_due()
        if due is None or due > self.now_ms:
            return False
        pair = min(self.ae.catch_up, key=lambda p: (self.ae.catch_up[p], p))
        partition, partner = pair
        failures = self.ae.catch_up[pair][1]
        if (partition not in self._owned or partner not in self._ae_partners(partition)
                or not self.detector.is_up(partner)):
            del self.ae.catch_up[pair]
        elif partition not in self.ae.trees:  # this node's own tree: not a failure
            self.ae.catch_up[pair] = (self.now_ms + self._catch_up_retry_ms(0), failures)
        else:
            del self.ae.catch_up[pair]
            self._begin_exchange(partition, partner, catch_up_failures=failures)
        return True

    def _catch_up_retry_ms(self, failures: int) -> int:
        first = min(limits.AE_CATCH_UP_RETRY_MS, self.config.anti_entropy_interval_ms)
        return first << failures

    def _ae_partners(self, partition: int) -> list[str]:
        """The other primary owners of `partition` (at the default n_val): the nodes
        this one exchanges it with."""
        return [target.node for target in primary_owners(self.ring, partition, self.config.n_val)
                if target.node != self.name]

    def _start_exchange(self) -> None:
        """The next (partition, partner) pair, round robin, with the partner up."""
        pairs = [(partition, partner)
                 for partition in sorted(self.ae.trees)
                 for partner in self._ae_partners(partition)]
        up = self.detector.up_peers()
        for _ in range(len(pairs)):
            partition, partner = pairs[self.ae.cursor % len(pairs)]
            self.ae.cursor += 1
            if partner in up:
                break
        else:
            return
        self._begin_exchange(partition, partner, catch_up_failures=None)

    def _begin_exchange(self, partition: int, partner: str, catch_up_failures: int | None
                        ) -> None:
        tree = self.ae.trees[partition]
        exchange = Exchange(self.now_ms + self.config.request_timeout_ms, partition, partner,
                            tree, catch_up_failures=catch_up_failures)
        request_id = self._new_request(exchange)
        self.ae.in_flight += 1
        self._send(partner, m.AeLevel(request_id, partition, 0, (0,), tree.shape))

    def _on_exchange_request(
        self, sender: str, message: m.AeLevel | m.AeSegments | m.AeRepair
    ) -> None:
        tree = self.ae.trees.get(message.partition)
        match message:
            case m.AeLevel(request_id, partition, depth, indexes, shape):
                if tree is None or tree.shape != tuple(shape) or not 0 <= depth <= tree.depth:
                    self._send(sender, m.AeLevelReply(request_id, (), False))
                    return
                try:
                    hashes = tree.level(depth, indexes)
                except ValueError:
                    self._send(sender, m.AeLevelReply(request_id, (), False))
                    return
                self._send(sender, m.AeLevelReply(request_id, tuple(sorted(hashes.items())), True))
            case m.AeSegments(request_id, partition, segments):
                if tree is None or any(not 0 <= s < tree.segments for s in segments):
                    self._send(sender, m.AeSegmentsReply(request_id, (), False))
                    return
                items = tuple((segment, tuple(sorted(tree.segment_items(segment).items())))
                              for segment in segments)
                self._send(sender, m.AeSegmentsReply(request_id, items, True))
            case m.AeRepair(request_id, partition, objects):
                merged = []
                for key, obj in objects:
                    after, repaired = self._merge_object(partition, key, obj)
                    self.ae.keys_repaired += repaired  # this copy repaired
                    merged.append((key, after))
                self._send(sender, m.AeRepairReply(request_id, tuple(merged)))

    def _merge_object(self, partition: int, key: bytes, obj: api.Object | None
                      ) -> tuple[api.Object | None, bool]:
        """Merge a peer's version into this replica: the merged version, and whether
        this replica changed. A key reaped a moment ago merges with its remembered
        tombstone (core/tombstones.py): a version the tombstone covers is dropped, not
        stored."""
        return self._merge_into(partition, key, obj, self._read(partition, key))

    def _merge_into(self, partition: int, key: bytes, obj: api.Object | None,
                    stored: bytes | None, data: bytes | None = None
                    ) -> tuple[api.Object | None, bool]:
        """_merge_object, for a caller that has read this replica's copy (`stored`) and
        may have the peer version's encoding (`data`)."""
        local = None if stored is None else m.decode_object(stored)
        if obj is None:
            return local, False
        base = local if local is not None else self._reaped_tombstone(partition, key)
        merged = obj if base is None else dvvset.sync(base, obj)
        if local is None and merged == base:
            return None, False  # an old version of a key reaped since
        # Equal objects encode to equal bytes: comparing those is cheaper than the objects.
        encoded = data if merged is obj and data is not None else m.encode_object(merged)
        if stored is not None and encoded == m.canonical_object(stored):
            return merged, False
        self._store_object(partition, key, merged, encoded)
        return merged, True

    def _reaped_tombstone(self, partition: int, key: bytes) -> api.Object | None:
        raw = self._read(REAPED_PARTITION, tombstone_row(partition, key))
        if raw is None:
            return None
        reaped_at_ms, data = decode_reaped(raw)
        if self.now_ms - reaped_at_ms > reaped_memory_ms(self.config.request_timeout_ms):
            return None
        return m.decode_object(data)

    def _on_exchange_reply(
        self, request_id: int, ex: Exchange,
        message: m.AeLevelReply | m.AeSegmentsReply | m.AeRepairReply,
    ) -> None:
        if not _answers(ex.asked, message):
            self._exchange_done(request_id, ex, failed=True)
            return
        match message:
            case m.AeLevelReply(_, hashes, ready):
                if not ready:
                    self._exchange_done(request_id, ex, failed=True)
                    return
                remote = dict(hashes)
                local = ex.tree.level(ex.depth, sorted(remote))
                differing = differing_children(local, remote)
                if ex.depth == ex.tree.depth:
                    ex.segments = differing
                    self._exchange_next(request_id, ex)
                elif differing:
                    children = tuple(sorted(
                        child for index in differing
                        for child in ex.tree.children(ex.depth, index)))
                    ex.depth += 1
                    ex.asked = ("level", frozenset(children))
                    self._send(ex.partner, m.AeLevel(request_id, ex.partition, ex.depth,
                                                     children, ex.tree.shape))
                else:
                    self._exchange_done(request_id, ex, failed=False)
            case m.AeSegmentsReply(_, items, ready):
                if not ready:
                    self._exchange_done(request_id, ex, failed=True)
                    return
                for segment, remote_items in items:
                    keys = segment_diff(ex.tree.segment_items(segment), dict(remote_items))
                    ex.keys.extend(sorted(keys))
                self._exchange_next(request_id, ex)
            case m.AeRepairReply(_, objects):
                for key, obj in objects:
                    ex.keys_repaired += self._merge_object(ex.partition, key, obj)[1]
                self._exchange_next(request_id, ex)

    def _exchange_next(self, request_id: int, ex: Exchange) -> None:
        """Fetch the next differing segments, or repair the next keys, or finish."""
        if ex.segments:
            chunk = tuple(ex.segments[:limits.AE_SEGMENTS_PER_MESSAGE])
            del ex.segments[:limits.AE_SEGMENTS_PER_MESSAGE]
            ex.asked = ("segments", frozenset(chunk))
            self._send(ex.partner, m.AeSegments(request_id, ex.partition, chunk))
        elif ex.keys:
            batch = ex.keys[:limits.AE_REPAIR_KEYS_PER_MESSAGE]
            del ex.keys[:limits.AE_REPAIR_KEYS_PER_MESSAGE]
            objects = tuple((key, self.read_object(ex.partition, key)) for key in batch)
            ex.asked = ("repair", frozenset(batch))
            self._send(ex.partner, m.AeRepair(request_id, ex.partition, objects))
        else:
            self._exchange_done(request_id, ex, failed=False)

    def _exchange_done(self, request_id: int, ex: Exchange, failed: bool) -> None:
        self._finish(request_id)
        self.ae.in_flight = max(0, self.ae.in_flight - 1)
        if failed:
            self.ae.exchanges_failed += 1
            if ex.catch_up_failures is not None and self.detector.is_up(ex.partner):
                failures = ex.catch_up_failures + 1
                if failures >= limits.AE_CATCH_UP_FAILURES_MAX:
                    self.ae.catch_ups_given_up += 1  # left to the round
                else:
                    self.ae.catch_up.setdefault(
                        (ex.partition, ex.partner),
                        (self.now_ms + self._catch_up_retry_ms(failures - 1), failures))
            return
        self.ae.exchanges_done += 1
        self.ae.catch_ups_done += ex.catch_up_failures is not None
        self.ae.keys_repaired += ex.keys_repaired
        self.ae.last_exchange_ms[ex.partition] = self.now_ms

    # --- tombstone reaping ------------------------------------------------------------

    def _key_primaries(self, partition: int, key: bytes) -> set[str]:
        bucket_type, bucket, _ = split_key_bytes(key)
        n_val = self.props_for(bucket_type, bucket).n_val
        return {t.node for t in primary_owners(self.ring, partition, n_val)}

    def _hinted(self, partition: int, key: bytes) -> bool:
        return any(self._read(HINTS_PARTITION, hint_key(peer, partition, key)) is not None
                   for peer in self.peers)

    def _reap(self) -> None:
        """Walk the tombstones a page at a time, reaping those that qualify, at most
        REAPS_IN_FLIGHT_MAX at once; rest for the reap interval after a full pass."""
        if self.now_ms < self.reaper.next_reap_ms:
            return
        if self.reaper.cursor == b"":
            self._forget_reaped()
        if self.detector.down_peers():  # every member must vote
            self.reaper.next_reap_ms = self.now_ms + self.config.tombstone_reap_interval_ms
            return
        page = self._scan(TOMBSTONES_PARTITION, self.reaper.cursor, REAP_PAGE_KEYS)
        for row, written in page:
            if len(self.reaper.reaping) >= limits.REAPS_IN_FLIGHT_MAX:
                return  # go on from this row when a reap ends
            self.reaper.cursor = row + b"\x00"
            partition, key = parse_tombstone_row(row)
            if self.now_ms - int.from_bytes(written, "big") < self.config.tombstone_grace_ms:
                continue
            if self.name not in self._key_primaries(partition, key) or self._hinted(partition, key):
                continue
            data = self._read(partition, key)
            if data is None:
                self._write(TOMBSTONES_PARTITION, row, None)
                continue
            if (partition, key) in self.reaper.reaping:
                continue
            state = ReapState(self.now_ms + self.config.request_timeout_ms, partition, key,
                              _digest(data), set(self.peers))
            request_id = self._new_request(state)
            self.reaper.reaping.add((partition, key))
            for peer in self.peers:
                self._send(peer, m.ReapCheck(request_id, partition, key, state.digest))
            self._check_reap(request_id, state)
        if len(page) < REAP_PAGE_KEYS:  # a full pass: rest, then start over
            self.reaper.cursor = b""
            self.reaper.next_reap_ms = self.now_ms + self.config.tombstone_reap_interval_ms

    def _forget_reaped(self) -> None:
        """Drop remembered tombstones older than the memory (one page per pass)."""
        memory_ms = reaped_memory_ms(self.config.request_timeout_ms)
        page = self._scan(REAPED_PARTITION, self.reaper.reaped_cursor, REAP_PAGE_KEYS)
        for row, raw in page:
            if self.now_ms - decode_reaped(raw)[0] > memory_ms:
                self._write(REAPED_PARTITION, row, None)
        self.reaper.reaped_cursor = (page[-1][0] + b"\x00"
                                     if len(page) == REAP_PAGE_KEYS else b"")

    def _reap_vote(self, partition: int, key: bytes, digest: bytes) -> bool:
        """Yes only if no hint names the key here, and a primary holds the identical
        tombstone while any other node holds no copy."""
        if self._hinted(partition, key):
            return False
        data = self._read(partition, key)
        if self.name in self._key_primaries(partition, key):
            return data is not None and _digest(data) == digest
        return data is None

    def _check_reap(self, request_id: int, state: ReapState) -> None:
        if state.waiting and not state.refused:
            return
        self._finish(request_id)
        self.reaper.reaping.discard((state.partition, state.key))
        if state.refused:
            self.reaper.refused += 1
            return
        for node in sorted(self._key_primaries(state.partition, state.key)):
            if node == self.name:
                self._reap_delete(state.partition, state.key, state.digest)
            else:
                self._send(node, m.ReapDelete(state.partition, state.key, state.digest))

    def _reap_delete(self, partition: int, key: bytes, digest: bytes) -> None:
        data = self._read(partition, key)
        if data is not None and _digest(data) == digest:
            self._delete_local(partition, key)
            self._write(REAPED_PARTITION, tombstone_row(partition, key),
                        encode_reaped(self.now_ms, data))
            self.reaper.reaped += 1

    # --- status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        owned: dict[str, int] = {}
        for owner in self.ring.owners:
            owned[owner] = owned.get(owner, 0) + 1
        return {
            "node": self.name,
            "server_id": self.server_id,
            "epoch": self.epoch,
            "cluster_name": self.config.cluster_name,
            "cluster_id": self.cluster.cluster_id,
            "ring_version": self.cluster.ring.version,
            "claimant": ms.claimant(self.cluster)
            if any(m.status is ms.Status.VALID for m in self.cluster.members) else None,
            "ring_size": self.ring.size,
            "members": [
                {
                    "name": info.name,
                    "status": info.status.value,
                    "up": info.name == self.name or self.detector.is_up(info.name),
                    "partitions": owned.get(info.name, 0),
                    "weight": info.weight,
                    "zone": info.zone,
                    "address": info.address,
                }
                for info in self.cluster.members
            ],
            "requests_in_flight": len(self._requests),
            "hints": {
                "queued": dict(sorted(self.hints.counts.items())),
                "delivered": self.hints.delivered,
                "refused": self.hints.refused,
            },
            "hinted_handoff_enabled": self.config.hinted_handoff_enabled,
            "anti_entropy": self.ae.status(len(self._owned)),
            "transfers": self.transfers_status(),
            "transfers_pending": len(self._transfer_candidates),
            "transfers_done": self.transfers_done,
            "tombstones": {"reaped": self.reaper.reaped, "reap_refused": self.reaper.refused},
            "pending_writes": len(self._pending),
            "counters": dict(sorted(self.stats.items())),
        }


def _answers(asked: tuple[str, frozenset[int] | frozenset[bytes]],
             reply: m.AeLevelReply | m.AeSegmentsReply | m.AeRepairReply) -> bool:
    """Does an exchange reply answer the request the exchange last sent?"""
    kind, items = asked
    match reply:
        case m.AeLevelReply(_, hashes, _ready):
            return kind == "level" and all(index in items for index, _ in hashes)
        case m.AeSegmentsReply(_, segments, _ready):
            return kind == "segments" and all(segment in items for segment, _ in segments)
        case m.AeRepairReply(_, objects):
            return kind == "repair" and all(key in items for key, _ in objects)
