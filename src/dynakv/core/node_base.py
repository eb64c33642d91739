"""What every part of a node shares (core/node.py's Node is made of NodeBase and the
roles in core/node_listing.py, node_membership.py and node_repair.py): its state, the
storage view (its own pending writes laid over the storage), bucket properties,
sending, replying and request deadlines, actor ids, and merging a peer's version of a
key into this replica."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from dynakv.config import Config
from dynakv.core import api, codec, dvvset, limits
from dynakv.core import membership as ms
from dynakv.core import messages as m
from dynakv.core.anti_entropy import AntiEntropy
from dynakv.core.buckets import BucketProps, apply_props
from dynakv.core.coordinator import ClientReplyTo, ListState, PeerReplyTo, ReplyTo, RequestState
from dynakv.core.detector import FailureDetector
from dynakv.core.errors import ClientError
from dynakv.core.handoff import Transfer
from dynakv.core.hints import HINTS_PARTITION, HintLedger, hint_key
from dynakv.core.merkle import object_hash
from dynakv.core.pipeline import Output
from dynakv.core.ring import Ring, Target, preference_list, primary_owners, split_key_bytes
from dynakv.core.storage import META_PARTITION, Storage, Write
from dynakv.core.tombstones import (
    REAPED_PARTITION,
    TOMBSTONES_PARTITION,
    Reaper,
    decode_reaped,
    reaped_memory_ms,
    tombstone_row,
)

T = TypeVar("T")


class Rng(Protocol):
    """What the core needs of the randomness its driver hands in (the standard Random, seeded
    by the simulator): the core draws none of its own."""

    def getrandbits(self, k: int, /) -> int: ...

    def choice(self, seq: Sequence[T], /) -> T: ...


BUCKET_META_PREFIX = b"bucket\x00"
EPOCH_META_KEY = b"epoch"
# The epoch in which this node may have sent dots to replicas before they were durable
# here (early replication); removed at a clean shutdown. Found equal to the stored
# epoch at start, it means a crash may have lost such dots: a new epoch begins.
EARLY_EPOCH_META_KEY = b"early_epoch"
CLUSTER_META_KEY = b"cluster"


def bucket_meta_key(bucket_type: str, bucket: str) -> bytes:
    return BUCKET_META_PREFIX + codec.encode([bucket_type, bucket])


def stored_hash(stored: bytes) -> bytes:
    """The Merkle hash of a stored object, of its current format's bytes."""
    return object_hash(m.canonical_object(stored))


class NodeBase:
    """A node's state (set by Node.__init__) and the operations every role uses."""

    name: str
    server_id: str
    ring: Ring
    peers: list[str]
    storage: Storage
    config: Config
    rng: Rng
    now_ms: int
    detector: FailureDetector
    hints: HintLedger
    epoch: int
    # The keys this epoch minted dots for (a local delete of one of them needs a new
    # epoch); None: unknown, any key (after a restart, or past the bound).
    _epoch_minted: set[tuple[int, bytes]] | None
    reaper: Reaper
    ae: AntiEntropy
    _keys_estimate: dict[int, int]
    _owned: list[int]
    _next_handoff_ms: int
    _next_gossip_ms: int
    _next_transfer_ms: int
    transfers: dict[int, Transfer]
    transfers_done: int
    _transfer_candidates: list[int]
    _transfer_scan_needed: bool
    _previous_ring: Ring | None
    _probe_sequence: int
    stats: dict[str, int]
    _pending: dict[tuple[int, bytes], tuple[int, bytes | None]]
    _write_seq: int
    _out_depends_seq: int  # the last pending write read since take_output
    # Early replication (Node._replicate): the epoch whose marker is durable (None: none
    # is), the pending marker write (sequence number, epoch), and the coordinator's
    # own copies not yet durable (sequence number, request id), oldest first.
    _early_epoch: int | None
    _early_marker: tuple[int, int] | None
    _awaiting_durable: deque[tuple[int, int]]
    _out: Output
    _requests: dict[int, RequestState]
    _client_streams: dict[int, int]  # client id -> listing request id
    _deadlines: list[tuple[int, int]]
    _next_request_id: int
    _bucket_props: dict[tuple[str, str], tuple[BucketProps, tuple[int, str]]]
    cluster: ms.ClusterState
    removed: bool  # this node has left the cluster (its own record says so)

    # --- driver helpers -------------------------------------------------------------

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

    # --- actor ids ------------------------------------------------------------------

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

    # --- merging a peer's version ---------------------------------------------------

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

    # --- keys' owners and hints -----------------------------------------------------

    def _key_primaries(self, partition: int, key: bytes) -> set[str]:
        bucket_type, bucket, _ = split_key_bytes(key)
        n_val = self.props_for(bucket_type, bucket).n_val
        return {t.node for t in primary_owners(self.ring, partition, n_val)}

    def _hinted(self, partition: int, key: bytes) -> bool:
        return any(self._read(HINTS_PARTITION, hint_key(peer, partition, key)) is not None
                   for peer in self.peers)
