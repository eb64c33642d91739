"""The chaos workload: concurrent clients over the HTTP API, every operation in a history.

Three kinds of client (asyncio tasks over aiohttp, one event loop):

- set writers: each operation adds one unique element to one of a few set keys by
  read-modify-write: GET with `Accept: multipart/mixed` (every sibling and the
  X-Riak-Vclock context), the union of the siblings' elements plus the new one, PUT
  back with the context. A value is a JSON list of strings (checker.encode_set).
- unique writers: each operation PUTs a fresh key once, with a unique value.
- readers: GET a set key or a recently written unique key.

Each client talks to one node (picked at random, seeded) and moves to another after
an error, and now and then anyway. Requests carry a short client timeout, and a server
`timeout` below it, so nothing blocks for long when the nemesis partitions, kills or
pauses nodes; a stop event ends the run at once (operations in flight are recorded
as indeterminate).

Outcomes (checker.Outcome): only a 2xx acknowledges a write. A 4xx, a 503 saying
"nothing was written", or a set writer's failed read (so no put was sent) are definite
failures. Anything else (a timeout, a reset connection, a 503 after the fan-out, a
5xx) is indeterminate: under a sloppy quorum the write may be stored somewhere and
surface later. Even a refused connection is indeterminate: aiohttp retries an
idempotent request (PUT) on a new connection when a kept-alive one fails, so the first
attempt may have reached the node before it died (the checker caught such a "failed"
put present at the end).

Memory is linear in the number of operations (capped by `ops_max`): a set read keeps
only the elements it saw that no write had yet attempted (normally none).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field

import aiohttp

from tests.chaos.checker import (
    Layout,
    Op,
    OpType,
    Outcome,
    decode_set,
    encode_set,
    key_path,
    sibling_values,
)

RECENT_UNIQUE_MAX = 1_000  # unique keys the readers choose from
SWITCH_NODE_PROBABILITY = 0.05  # after a success: spread the load over the nodes
ERROR_PAUSE_S = (0.05, 0.2)  # after an error, before the next try (a uniform draw)
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)



@dataclass(frozen=True)
class WorkloadConfig:
    """What to run and where. `urls` are the nodes' HTTP base URLs."""

    urls: tuple[str, ...]
    seed: int = 0
    run_id: str = "chaos"  # names the buckets and keys: runs on one cluster do not mix
    bucket_type: str = "default"
    set_keys: int = 4
    set_writers: int = 4
    unique_writers: int = 2
    readers: int = 2
    duration_s: float = 20.0
    op_interval_s: float = 0.02  # a client's mean pause between operations
    request_timeout_s: float = 2.0  # per HTTP request; the server is given 3/4 of it
    lww: bool = False  # the set bucket gets last_write_wins: true (the contrast run)
    n_val: int = 3
    ops_max: int = 1_000_000  # the history's bound: the run stops there

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("the workload needs at least one node URL")
        if min(self.set_keys, self.set_writers + self.unique_writers) < 1:
            raise ValueError("the workload needs a set key and a writer")
        if self.request_timeout_s <= 0 or self.duration_s < 0 or self.op_interval_s < 0:
            raise ValueError("timeouts and durations must be positive")

    @property
    def layout(self) -> Layout:
        return Layout(self.bucket_type, f"{self.run_id}-sets",
                      tuple(f"set{index}" for index in range(self.set_keys)),
                      f"{self.run_id}-unique", self.n_val)


@dataclass
class _Client:
    process: int
    rng: random.Random
    node: int
    seq: int = 0

    def switch(self, nodes: int) -> None:
        if nodes > 1:
            self.node = (self.node + self.rng.randrange(1, nodes)) % nodes


Operation = Callable[["_Client", str, aiohttp.ClientSession, float], Coroutine[None, None, Op]]


@dataclass
class Workload:
    """One run's clients and their history (`history`, in completion order)."""

    config: WorkloadConfig
    history: list[Op] = field(default_factory=list)
    _attempted: set[tuple[str, str]] = field(default_factory=set)
    _recent_unique: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_UNIQUE_MAX))

    @property
    def layout(self) -> Layout:
        return self.config.layout

    async def setup(self, timeout_s: float = 30.0) -> None:
        """Set the set bucket's last_write_wins (true or false, explicitly) through any
        node, then wait until every node serves it. Raises TimeoutError."""
        layout = self.layout
        path = key_path(layout.bucket_type, layout.set_bucket, "").removesuffix("/keys/") + "/props"
        wanted = {"last_write_wins": self.config.lww, "allow_mult": not self.config.lww}
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            pending = list(self.config.urls)
            written = False
            while pending:
                url = pending[0]
                try:
                    if not written:
                        async with session.put(url + path, json={"props": wanted}) as reply:
                            written = reply.status == 204
                    else:
                        async with session.get(url + path) as reply:
                            props = (await reply.json())["props"] if reply.status == 200 else {}
                        if all(props.get(name) == value for name, value in wanted.items()):
                            pending.pop(0)
                            continue
                except TRANSPORT_ERRORS:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bucket props {wanted} not set on {pending}")
                await asyncio.sleep(0.1)

    async def run(self, stop: asyncio.Event | None = None) -> list[Op]:
        """Run the clients for `duration_s` or until `stop` is set; the history."""
        config = self.config
        stop = stop or asyncio.Event()
        master = random.Random(config.seed)
        kinds = ([self._set_add] * config.set_writers + [self._put_unique] * config.unique_writers
                 + [self._read] * config.readers)
        timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            clients = [
                _Client(process, random.Random(master.getrandbits(64)),
                        master.randrange(len(config.urls)))
                for process in range(len(kinds))
            ]
            tasks = [asyncio.create_task(self._loop(client, kind, session, stop))
                     for client, kind in zip(clients, kinds, strict=True)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), config.duration_s)
            stop.set()
            await asyncio.gather(*tasks)
        return self.history

    async def _loop(self, client: _Client, operation: Operation, session: aiohttp.ClientSession,
                    stop: asyncio.Event) -> None:
        config = self.config
        while not stop.is_set():
            if len(self.history) >= config.ops_max:
                stop.set()
                return
            url = config.urls[client.node]
            client.seq += 1
            started = time.monotonic()
            task = asyncio.create_task(operation(client, url, session, started))
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                task.cancel()  # the op's handler records it as indeterminate
                await asyncio.gather(task, return_exceptions=True)
                stopped.cancel()
                return
            stopped.cancel()
            op: Op = task.result()
            if op.outcome is Outcome.OK:
                if client.rng.random() < SWITCH_NODE_PROBABILITY:
                    client.switch(len(config.urls))
                pause = client.rng.uniform(0.5, 1.5) * config.op_interval_s
            else:
                client.switch(len(config.urls))
                pause = client.rng.uniform(*ERROR_PAUSE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    def _record(self, op: Op) -> Op:
        self.history.append(op)
        return op

    def _params(self) -> dict[str, str]:
        return {"timeout": str(max(1, int(self.config.request_timeout_s * 750)))}

    # --- the operations: each records exactly one Op, also when cancelled ---------------

    async def _set_add(self, client: _Client, url: str, session: aiohttp.ClientSession,
                       started: float) -> Op:
        layout = self.layout
        key = client.rng.choice(layout.set_keys)
        element = f"{self.config.run_id}-p{client.process}-{client.seq}"
        self._attempted.add((key, element))
        path = url + key_path(layout.bucket_type, layout.set_bucket, key)

        def done(outcome: Outcome, error: str = "") -> Op:
            return self._record(Op(client.process, OpType.SET_ADD, key, element, started,
                                   time.monotonic(), outcome, url, error))

        try:
            async with session.get(path, params=self._params(),
                                   headers={"Accept": "multipart/mixed"}) as reply:
                status, body = reply.status, await reply.read()
                headers = dict(reply.headers)
        except asyncio.CancelledError:
            done(Outcome.FAIL, "stopped while reading: no put was sent")
            raise
        except TRANSPORT_ERRORS as error:
            return done(Outcome.FAIL, f"read: {type(error).__name__}: no put was sent")
        if status not in (200, 300, 404):
            return done(Outcome.FAIL, f"read: {status}: no put was sent")
        try:
            elements: set[str] = set()
            for value in sibling_values(status, headers, body):
                elements |= decode_set(value)
        except Exception as error:  # a corrupt sibling: never propagate it
            return done(Outcome.FAIL, f"read: unreadable siblings ({error}): no put was sent")
        elements.add(element)
        put_headers = {"Content-Type": "application/json"}
        if headers.get("X-Riak-Vclock"):
            put_headers["X-Riak-Vclock"] = headers["X-Riak-Vclock"]
        return await self._write(path, put_headers, encode_set(elements), session, done)

    async def _put_unique(self, client: _Client, url: str, session: aiohttp.ClientSession,
                          started: float) -> Op:
        layout = self.layout
        key = f"{self.config.run_id}-p{client.process}-{client.seq}"
        value = f"{key}-{client.rng.getrandbits(32):08x}"
        self._recent_unique.append(key)
        path = url + key_path(layout.bucket_type, layout.unique_bucket, key)

        def done(outcome: Outcome, error: str = "") -> Op:
            return self._record(Op(client.process, OpType.PUT_UNIQUE, key, value, started,
                                   time.monotonic(), outcome, url, error))

        return await self._write(path, {"Content-Type": "text/plain"}, value.encode(),
                                 session, done)

    async def _write(self, path: str, headers: dict[str, str], body: bytes,
                     session: aiohttp.ClientSession, done: Callable[..., Op]) -> Op:
        try:
            async with session.put(path, params=self._params(), headers=headers,
                                   data=body) as reply:
                status, text = reply.status, await reply.read()
        except asyncio.CancelledError:
            done(Outcome.INFO, "stopped while writing")
            raise
        except TRANSPORT_ERRORS as error:
            return done(Outcome.INFO, f"{type(error).__name__}: {error}")
        reason = f"{status} {text[:120].decode('utf-8', 'replace').strip()}"
        if 200 <= status < 300:
            return done(Outcome.OK)
        if 400 <= status < 500 or (status == 503 and b"nothing was written" in text):
            return done(Outcome.FAIL, reason)
        return done(Outcome.INFO, reason)

    async def _read(self, client: _Client, url: str, session: aiohttp.ClientSession,
                    started: float) -> Op:
        layout = self.layout
        unique = bool(self._recent_unique) and client.rng.random() < 0.5
        if unique:
            key, bucket, kind = (client.rng.choice(self._recent_unique), layout.unique_bucket,
                                 OpType.READ_UNIQUE)
        else:
            key, bucket, kind = (client.rng.choice(layout.set_keys), layout.set_bucket,
                                 OpType.READ_SET)
        path = url + key_path(layout.bucket_type, bucket, key)

        def done(outcome: Outcome, error: str = "", seen: Sequence[str] = (),
                 count: int = 0) -> Op:
            return self._record(Op(client.process, kind, key, "", started, time.monotonic(),
                                   outcome, url, error, tuple(seen), count))

        try:
            async with session.get(path, params=self._params(),
                                   headers={"Accept": "multipart/mixed"}) as reply:
                status, body = reply.status, await reply.read()
                headers = dict(reply.headers)
        except asyncio.CancelledError:
            done(Outcome.INFO, "stopped")
            raise
        except TRANSPORT_ERRORS as error:
            return done(Outcome.FAIL, type(error).__name__)
        if status not in (200, 300, 404):
            return done(Outcome.FAIL, str(status))
        try:
            values = sibling_values(status, headers, body)
        except Exception as error:
            return done(Outcome.OK, f"unreadable siblings: {error}", ["<unreadable>"], 1)
        if unique:
            texts = sorted(value.decode("utf-8", "replace") for value in values)
            return done(Outcome.OK, "", texts, len(texts))
        seen: set[str] = set()
        corrupt = []
        for value in values:
            try:
                seen |= decode_set(value)
            except ValueError:
                corrupt.append(value[:100].decode("utf-8", "replace"))
        unknown = sorted(element for element in seen if (key, element) not in self._attempted)
        return done(Outcome.OK, "", unknown + corrupt, len(seen))


class WorkloadThread:
    """The workload on its own thread and event loop, for a synchronous runner:
    start(), then stop() (or wait out the duration) to get the history."""

    def __init__(self, config: WorkloadConfig, setup_timeout_s: float = 30.0) -> None:
        self.workload = Workload(config)
        self._setup_timeout_s = setup_timeout_s
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="chaos-workload", daemon=True)

    def start(self) -> None:
        """Set the bucket up, then start the clients; returns once they run (raises the
        setup's error)."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.workload.setup(self._setup_timeout_s)
        except BaseException as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        await self.workload.run(self._stop)

    def stop(self, timeout_s: float = 60.0) -> list[Op]:
        """End the run now (or once the duration is over) and return the history."""
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the workload did not stop within {timeout_s} s")
        return self.workload.history

    def join(self, timeout_s: float | None = None) -> list[Op]:
        """Wait for the run to end by its duration; the history."""
        self._thread.join(timeout_s)
        return self.workload.history
