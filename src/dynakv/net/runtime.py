"""The asyncio runtime: feeds events into the core and carries out its effects.

Persist, then send (etcd raft's Ready/Advance): after events are handled, the
node's Output goes into a core.pipeline.CommitPipeline. One commit task takes every
queued write, applies them in one storage transaction and one sync in a writer
thread (group commit: while a sync runs, the loop keeps handling events, whose
writes join the next transaction), tells the node they are durable, and then sends
the messages and replies the pipeline releases. An Output that depends on no pending
write (see core/pipeline.py) is sent at once, without waiting for a sync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from dynakv.core import api
from dynakv.core import messages as m
from dynakv.core.errors import ErrorKind, StorageFull
from dynakv.core.node import (
    ClientEvent,
    Event,
    MessageEvent,
    Node,
    PeerStatusEvent,
    StreamAckEvent,
    TickEvent,
)
from dynakv.core.pipeline import CommitPipeline, Output, Released
from dynakv.core.storage import Storage, Write
from dynakv.net.transport import Transport

log = logging.getLogger("dynakv.runtime")


def batch_scheduling() -> None:
    """Run the calling thread (the commit thread) as SCHED_BATCH: woken by the event
    loop's hand-off, it does not preempt the loop (it could only wait for the GIL that
    the loop holds); it runs once the loop blocks or lets the GIL go."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: the default policy
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Runtime:
    """Drives one Node; implements net.service.NodeService for the API front ends."""

    def __init__(self, node: Node, storage: Storage) -> None:
        self.node = node
        self.storage = storage
        self.transport: Transport | None = None
        self._client_ids = itertools.count(1)
        self._waiters: dict[int, asyncio.Future[api.Response]] = {}
        self._streams: dict[int, asyncio.Queue[api.Response]] = {}
        self._pipeline = CommitPipeline()
        self._wake = asyncio.Event()
        self._writer = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="dynakv-commit", initializer=batch_scheduling)
        self._commit_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._flush_scheduled = False
        self._trees_logged = -1
        self.commits = 0
        self.committed_writes = 0
        # From handing writes to the writer thread until the loop has them back, and
        # the part of it spent in the storage transaction and its sync.
        self.commit_seconds = 0.0
        self.write_seconds = 0.0
        self.dropped_messages = 0
        # Each member's (status, handoff version) as last logged: membership changes
        # are rare and decisive (a member removed is dropped by every peer), so each
        # change goes to the log with the ring version and this node's view of the member.
        self._members_logged: dict[str, tuple[str, int]] = {}

    @property
    def name(self) -> str:
        return self.node.name

    def start(self) -> None:
        self._commit_task = asyncio.get_running_loop().create_task(self._commit_loop())

    # --- events in ------------------------------------------------------------------

    def step(self, event: Event) -> None:
        self.node.step(event, wall_clock_ms())
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def deliver(self, sender: str, message: m.Message) -> None:
        self.step(MessageEvent(sender, message))

    def peer_status(self, peer: str, up: bool) -> None:
        self.step(PeerStatusEvent(peer, up))

    async def request(self, request: api.Request) -> api.Response:
        client_id = next(self._client_ids)
        future: asyncio.Future[api.Response] = asyncio.get_running_loop().create_future()
        self._waiters[client_id] = future
        try:
            self.step(ClientEvent(client_id, request))
            return await future
        finally:
            self._waiters.pop(client_id, None)

    async def stream(
        self, request: api.ListKeysRequest | api.ListBucketsRequest
    ) -> AsyncIterator[api.ChunkResponse | api.ErrorResponse]:
        client_id = next(self._client_ids)
        queue: asyncio.Queue[api.Response] = asyncio.Queue()
        self._streams[client_id] = queue
        try:
            self.step(ClientEvent(client_id, request))
            while True:
                response = await queue.get()
                if isinstance(response, api.ChunkResponse):
                    yield response
                    if response.done:
                        return
                    self.step(StreamAckEvent(client_id))
                elif isinstance(response, api.ErrorResponse):
                    yield response
                    return
                else:
                    raise AssertionError(f"unexpected stream response {response!r}")
        finally:
            self._streams.pop(client_id, None)

    def node_stats(self) -> dict[str, Any]:
        status = self.node.status()
        status["storage_commits"] = self.commits
        status["storage_committed_writes"] = self.committed_writes
        status["storage_commit_seconds"] = round(self.commit_seconds, 6)
        status["storage_write_seconds"] = round(self.write_seconds, 6)
        status["messages_dropped"] = self.dropped_messages
        # Riak's names for the same counters, read by Riak's tools.
        counters = status.get("counters", {})
        status["read_repairs_total"] = counters.get("read_repairs", 0)
        status["hinted_handoffs_total"] = status["hints"]["delivered"]
        return status

    # --- effects out ----------------------------------------------------------------

    def _log_progress(self) -> None:
        """Anti-entropy tree builds, in the log: every tenth of the way, and when done."""
        built, total = self.node.ae.trees_built, len(self.node.ae.trees) + len(
            self.node.ae.build_queue)
        if built == self._trees_logged or total == 0:
            return
        step = max(1, total // 10)
        if built % step == 0 or not self.node.ae.build_queue:
            done = len(self.node.ae.trees)
            log.info("anti-entropy: %d of %d partition trees built%s", done, total,
                     "" if self.node.ae.build_queue else " (ready)")
        self._trees_logged = built

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._log_progress()
        output = self.node.take_output()
        if not output.empty():
            self._send(output.early)
            self._release(self._pipeline.add(output), "")
            if self._pipeline.has_writes():
                self._wake.set()
        self._arm_timer()

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pipeline.has_writes():
                continue
            writes, seq = self._pipeline.take_writes()
            failed = ""
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._writer, self._timed_write, writes)
                self.commits += 1
                self.committed_writes += len(writes)
                self.commit_seconds += time.perf_counter() - started
            except StorageFull as error:
                failed = str(error)
            except Exception as error:  # a storage failure must not kill the node
                log.exception("storage write failed")
                failed = f"storage write failed: {error}"
            if not failed:
                self.node.on_durable(seq)
            else:
                self.node.on_write_failed(seq)
            self._release(self._pipeline.committed(seq, not failed), failed)
            self._flush()  # what on_durable produced: a coordinator's own copy counted

    def _timed_write(self, writes: list[Write]) -> None:
        started = time.perf_counter()
        self.storage.write(writes)
        self.write_seconds += time.perf_counter() - started

    def _release(self, released: list[Released], failed: str) -> None:
        for item in released:
            self._dispatch(item.output, failed if item.failed else "")

    def _dispatch(self, output: Output, failed: str) -> None:
        if output.membership_changed:
            self._log_members()
            if self.transport is not None:
                self.transport.set_peers(self.node.peer_addresses())
        if not failed:
            self._send(output.messages)
        for client_id, response in output.replies:
            if failed:
                response = api.ErrorResponse(ErrorKind.STORAGE_FULL, failed)
            self._answer(client_id, response)

    def _send(self, messages: list[tuple[str, m.Message]]) -> None:
        for peer, message in messages:
            if self.transport is None or not self.transport.send(peer, message):
                self.dropped_messages += 1

    def _answer(self, client_id: int, response: api.Response) -> None:
        future = self._waiters.get(client_id)
        if future is not None:
            if not future.done():
                future.set_result(response)
            return
        queue = self._streams.get(client_id)
        if queue is not None:
            queue.put_nowait(response)

    def _log_members(self) -> None:
        state = self.node.cluster
        for info in state.members:
            now = (info.status.value, info.handoff_version)
            before = self._members_logged.get(info.name)
            if before == now:
                continue
            self._members_logged[info.name] = now
            seen = ("self" if info.name == self.node.name
                    else "up" if self.node.detector.is_up(info.name) else "down here")
            log.info("member %s: %s (handoff done for ring %d; ring version %d, claimant "
                     "%s; %s)", info.name,
                     now[0] if before is None else f"{before[0]} -> {now[0]}",
                     info.handoff_version, state.ring.version, state.ring.claimant, seen)

    def _arm_timer(self) -> None:
        deadline = self.node.next_deadline_ms()
        if deadline is None or deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, (deadline - wall_clock_ms()) / 1000)
        self._timer_at = deadline
        self._timer = loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.step(TickEvent())

    # --- shutdown -------------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self._waiters) + len(self._streams)

    async def drain(self, timeout_s: float) -> None:
        """Wait for in-flight requests to answer and queued writes to be durable."""
        deadline = time.monotonic() + timeout_s
        while (self.in_flight() or not self._pipeline.idle()) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._commit_task is not None:
            self.node.prepare_shutdown()
            self._flush()
            while not self._pipeline.idle():
                await asyncio.sleep(0.01)
            self._commit_task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self._writer.shutdown(wait=True)
