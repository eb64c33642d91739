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

Node is one class made of parts, each in its own module over the state and helpers
they share (core/node_base.py: the storage view, sending and replying, request
deadlines, actor ids, merging a peer's version): here the driver interface, client
requests, writes, reads, peer messages, timers, hinted handoff and status;
core/node_membership.py gossip, plans, commits and ownership handoff;
core/node_repair.py anti-entropy and tombstone reaping; core/node_listing.py listings.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from dynakv.config import Config
from dynakv.core import api, codec, dvvset, limits
from dynakv.core import membership as ms
from dynakv.core import messages as m
from dynakv.core.anti_entropy import AntiEntropy, Exchange
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
from dynakv.core.hints import (
    HANDOFF_BATCH_MAX,
    HINTS_PARTITION,
    HintLedger,
    hint_key,
    parse_hint_key,
    target_prefix,
)
from dynakv.core.node_base import (
    CLUSTER_META_KEY,
    EARLY_EPOCH_META_KEY,
    EPOCH_META_KEY,
    Rng,
    bucket_meta_key,
)
from dynakv.core.node_listing import Listings
from dynakv.core.node_membership import Membership
from dynakv.core.node_repair import Repair
from dynakv.core.pipeline import Output
from dynakv.core.ring import Ring, Target, key_bytes, primary_owners, split_key_bytes
from dynakv.core.storage import META_PARTITION, Storage
from dynakv.core.tombstones import Reaper, ReapState

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


# Requests a node that has left the cluster (removed) refuses: what it would need its
# peers for. Its status, ring, transfers and bucket properties still answer.
_DATA_REQUESTS = (api.GetRequest, api.PutRequest, api.DeleteRequest, api.ListKeysRequest,
                  api.ListBucketsRequest, api.SetBucketPropsRequest,
                  api.ResetBucketPropsRequest)


class Node(Membership, Repair, Listings):
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
        self._epoch_minted = None
        self.reaper = Reaper(next_reap_ms=now_ms + config.tombstone_reap_interval_ms)
        self.ae = AntiEntropy(next_exchange_ms=now_ms,
                              next_rebuild_ms=now_ms + config.anti_entropy_rebuild_interval_ms)
        self._keys_estimate = {}
        self._owned = [p for p in range(ring.size)
                       if any(t.node == name for t in primary_owners(ring, p, config.n_val))]
        if config.anti_entropy_enabled:
            self.ae.build_queue = list(self._owned)
        self._next_handoff_ms = now_ms
        self._next_gossip_ms = now_ms
        self._next_transfer_ms = now_ms
        self.transfers = {}
        self.transfers_done = 0
        self._transfer_candidates = []
        self._transfer_scan_needed = True
        self._previous_ring = None
        self._probe_sequence = 0
        self.stats = {}
        self._pending = {}
        self._write_seq = 0
        self._out_depends_seq = 0
        self._early_epoch = None
        self._early_marker = None
        self._awaiting_durable = deque()
        self._out = Output()
        self._requests = {}
        self._client_streams = {}
        self._deadlines = []
        # Random, so that a late reply to a request of this node's previous life
        # (before a restart) is never taken for the reply to a new request.
        self._next_request_id = rng.getrandbits(62) | 1
        self._bucket_props = {}
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
            # Checks that convicted nobody because this node itself had not run for a
            # while (core/detector.py): a starved or paused process shows here.
            "failure_detector": {"local_pauses": self.detector.local_pauses},
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
