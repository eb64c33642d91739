"""A node's listings of keys and buckets: each partition's keys from one replica
each, streamed a page at a time, each page fetched only after the previous one was sent on."""

from __future__ import annotations

from dynakv.core import api, limits
from dynakv.core import messages as m
from dynakv.core.coordinator import ClientReplyTo, ListState, live_siblings
from dynakv.core.errors import ErrorKind
from dynakv.core.node_base import NodeBase
from dynakv.core.ring import key_bytes, primary_owners, split_key_bytes


class Listings(NodeBase):
    """Listing keys and buckets (docs/http-api.md: Listings)."""

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
