"""A node's repair of its replicas in the background: Merkle-tree anti-entropy
exchanges with the other owners of each partition (core/anti_entropy.py), and
reaping tombstones once every primary holds them (core/tombstones.py)."""

from __future__ import annotations

from dynakv.core import limits
from dynakv.core import messages as m
from dynakv.core.anti_entropy import Exchange, TreeBuild
from dynakv.core.merkle import MerkleTree, differing_children, segment_diff
from dynakv.core.node_base import NodeBase, stored_hash
from dynakv.core.ring import primary_owners
from dynakv.core.tombstones import (
    REAP_PAGE_KEYS,
    REAPED_PARTITION,
    TOMBSTONES_PARTITION,
    ReapState,
    decode_reaped,
    encode_reaped,
    parse_tombstone_row,
    reaped_memory_ms,
    tombstone_row,
)


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


class Repair(NodeBase):
    """Anti-entropy and tombstone reaping."""

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
            build.tree.update(key, stored_hash(value))
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

    # --- tombstone reaping ----------------------------------------------------------

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
                              stored_hash(data), set(self.peers))
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
            return data is not None and stored_hash(data) == digest
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
        if data is not None and stored_hash(data) == digest:
            self._delete_local(partition, key)
            self._write(REAPED_PARTITION, tombstone_row(partition, key),
                        encode_reaped(self.now_ms, data))
            self.reaper.reaped += 1
