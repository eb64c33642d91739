"""A node's part in membership (core/membership.py): adopting cluster states,
gossip, staging, plans and the claimant's commit; and the ownership handoff that
follows a commit (core/handoff.py): streaming partitions this node no longer owns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dynakv.core import api, codec
from dynakv.core import membership as ms
from dynakv.core import messages as m
from dynakv.core.coordinator import ForwardState, GatherState, ReplyTo
from dynakv.core.errors import ClientError, ErrorKind
from dynakv.core.handoff import TRANSFER_BATCH_KEYS, TRANSFERS_IN_FLIGHT_MAX, Transfer
from dynakv.core.node_base import CLUSTER_META_KEY, NodeBase
from dynakv.core.ring import Ring, primary_owners
from dynakv.core.storage import META_PARTITION


class Membership(NodeBase):
    """Membership and ownership handoff."""

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

    # --- ownership handoff (core/handoff.py) ----------------------------------------

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
