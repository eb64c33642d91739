"""Simulated clients and the history of what they asked and were told.

Each client is a closed loop: it sends one request to a node (a random live node,
or one of the nodes it is pinned to), waits for the reply or gives up after its
timeout (the request is then indeterminate), thinks a little, and goes on. Every
put writes a value no other put writes, so the checkers can follow each write.

Roles:
- rmw:     read a key, then write a new value back with the read's context
           (read-modify-write: the write supersedes every sibling it read);
- blind:   write without a context (a sibling of whatever is there);
- reader:  read;
- deleter: read, then delete with the read's context when something was found
           (a delete without a context is never sent: it would remove whatever the
           coordinator had, which the client never saw, and the checker could not
           tell that from a loss);
- chain:   write again and again with the context of its own previous write,
           never reading (the stale-context writer of the DVVSet paper); it asks
           for the body (returnbody) so that it sees the siblings its next write
           supersedes.

Each write records the values its client was shown with the context it writes
back (`Op.seen`: the siblings of the read, or of the previous put's returnbody):
a write may supersede only what its client saw (checkers.py, checker 1).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dynakv.core import api
from dynakv.core.buckets import Quorum
from dynakv.sim.cluster import Cluster
from dynakv.sim.scheduler import Scheduler, Trace

Role = Literal["rmw", "blind", "reader", "deleter", "chain"]
OpKind = Literal["get", "put", "delete", "admin"]
BUCKET_TYPE = api.DEFAULT_TYPE
Key = tuple[str, str]  # (bucket, key)


@dataclass(frozen=True, slots=True)
class ClientSpec:
    role: Role
    nodes: tuple[str, ...] = ()  # the nodes it may talk to; empty: any live node
    w: Quorum | None = None
    keys: tuple[Key, ...] = ()  # the keys it uses; empty: the workload's keys
    return_body: bool | None = None  # None: at random (WorkloadParams.return_body)


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    clients: tuple[ClientSpec, ...]
    buckets: tuple[str, ...] = ("b0", "b1")
    keys_per_bucket: int = 5
    hot_keys: int = 2  # the first keys of the first bucket
    hot_fraction: float = 0.5
    think_min_ms: int = 0
    think_max_ms: int = 30
    client_delay_max_ms: int = 2
    return_body: float = 0.3
    start_ms: int = 100
    end_ms: int = 5_000


def default_clients(count: int) -> tuple[ClientSpec, ...]:
    roles: tuple[Role, ...] = ("rmw", "blind", "deleter", "chain", "rmw", "reader")
    return tuple(
        ClientSpec(role, return_body=True if role == "chain" else None)
        for role in (roles[index % len(roles)] for index in range(count))
    )


@dataclass(slots=True)
class Op:
    """One request and what came of it."""

    op_id: int
    client: int
    kind: OpKind
    bucket: str
    key: str
    node: str
    start_ms: int
    value: bytes = b""
    context: bytes = b""
    seen: frozenset[bytes] = frozenset()  # the values shown with `context`
    end_ms: int = -1
    response: api.Response | None = None
    timed_out: bool = False  # no reply: the node's connection broke, or it never answered
    unanswered: bool = False  # no reply from a node that stayed up: it should always answer
    quorum: Quorum | None = None  # a scripted request's r (get) or w (put, delete)

    @property
    def acked(self) -> bool:
        """A write the cluster acknowledged (a put or delete that succeeded)."""
        return self.kind in ("put", "delete") and isinstance(
            self.response, (api.DoneResponse, api.ObjectResponse)
        )

    @property
    def failed(self) -> bool:
        return self.timed_out or isinstance(self.response, api.ErrorResponse)

    def describe(self) -> str:
        what = f"{self.kind} {self.bucket}/{self.key}"
        if self.value:
            what += f" value={self.value.decode()}"
        return (f"op {self.op_id} (client {self.client} via {self.node} at "
                f"{self.start_ms}ms): {what}")


class Client:
    def __init__(self, index: int, spec: ClientSpec, keys: list[Key], rng: random.Random) -> None:
        self.index = index
        self.spec = spec
        self.keys = list(spec.keys) or keys
        self.rng = rng
        self.writes = 0
        # chain: the context of its own last write, and the values it was shown with it
        self.contexts: dict[Key, tuple[bytes, frozenset[bytes]]] = {}

    def new_value(self, key: Key) -> bytes:
        self.writes += 1
        return f"{key[0]}/{key[1]}#c{self.index}.{self.writes}".encode()


class Workload:
    def __init__(
        self,
        params: WorkloadParams,
        scheduler: Scheduler,
        cluster: Cluster,
        rng: random.Random,
        trace: Trace,
        issued: Callable[[bytes], None],
    ) -> None:
        self.params = params
        self.scheduler = scheduler
        self.cluster = cluster
        self.rng = rng
        self.trace = trace
        self.issued = issued
        self.history: list[Op] = []
        self.keys = self._keys()
        self.clients = [
            Client(index, spec, self.keys, random.Random(rng.getrandbits(64)))
            for index, spec in enumerate(params.clients)
        ]
        self._pending: dict[int, tuple[Client | None, Op]] = {}
        self._then_scripted: dict[int, Callable[[Op], None]] = {}  # op id -> callback
        self._next_client_id = 1
        # Nodes answer every request within request_timeout_ms (an error at worst);
        # the client waits a little longer before it calls the request unanswered.
        self.timeout_ms = cluster.config.request_timeout_ms + 1_000
        self.late_replies = 0
        self.touched: set[Key] = set()
        cluster.crash_listeners.append(self.node_crashed)

    def _keys(self) -> list[Key]:
        count = self.params.keys_per_bucket
        return [(bucket, f"k{index}") for bucket in self.params.buckets for index in range(count)]

    def start(self) -> None:
        for client in self.clients:
            first = self.params.start_ms + client.rng.randint(0, self.params.think_max_ms)
            self.scheduler.at(first, functools.partial(self._next, client))

    def touched_keys(self) -> list[Key]:
        return sorted(self.touched)

    # --- choosing what to do --------------------------------------------------------

    def _pick_key(self, client: Client) -> Key:
        params = self.params
        if not client.spec.keys and params.hot_keys and client.rng.random() < params.hot_fraction:
            return client.rng.choice(client.keys[: params.hot_keys])
        return client.rng.choice(client.keys)

    def _next(self, client: Client) -> None:
        if self.scheduler.now_ms >= self.params.end_ms:
            return
        key = self._pick_key(client)
        match client.spec.role:
            case "rmw" | "reader" | "deleter":
                self._send(client, "get", key)
            case "blind":
                self._send(client, "put", key, value=client.new_value(key))
            case "chain":
                context, seen = client.contexts.get(key, (b"", frozenset()))
                self._send(client, "put", key, value=client.new_value(key), context=context,
                           seen=seen)

    def _then(self, client: Client, op: Op) -> None:
        """The op is over: follow a read with its write, or think and start anew."""
        response = op.response
        key = (op.bucket, op.key)
        if op.kind == "get" and isinstance(response, api.ObjectResponse):
            seen = frozenset(content.value for content in response.siblings)
            if client.spec.role == "rmw":
                self._send(client, "put", key, value=client.new_value(key),
                           context=response.context, seen=seen)
                return
            if client.spec.role == "deleter" and response.found:
                self._send(client, "delete", key, context=response.context, seen=seen)
                return
        if op.kind == "put" and client.spec.role == "chain":
            if isinstance(response, api.ObjectResponse):
                shown = frozenset(content.value for content in response.siblings)
                client.contexts[key] = (response.context, shown)
            elif isinstance(response, api.DoneResponse):
                client.contexts[key] = (response.context, frozenset({op.value}))
        think = client.rng.randint(self.params.think_min_ms, self.params.think_max_ms)
        self.scheduler.after(think, functools.partial(self._next, client))

    # --- requests and replies -------------------------------------------------------

    def _request(self, client: Client | None, op: Op) -> api.Request:
        spec = client.spec if client is not None else ClientSpec(
            "blind", return_body=False, w=op.quorum)
        rng = client.rng if client is not None else self.rng
        match op.kind:
            case "get":
                return api.GetRequest(BUCKET_TYPE, op.bucket, op.key, r=op.quorum)
            case "put":
                return_body = spec.return_body
                if return_body is None:
                    return_body = rng.random() < self.params.return_body
                return api.PutRequest(
                    BUCKET_TYPE, op.bucket, op.key, api.Content(op.value, "text/plain"),
                    op.context, w=spec.w, return_body=return_body,
                )
            case "delete":
                return api.DeleteRequest(BUCKET_TYPE, op.bucket, op.key, op.context, w=spec.w)
            case "admin":
                raise AssertionError("admin requests go through admin()")

    def _send(self, client: Client, kind: OpKind, key: Key, value: bytes = b"",
              context: bytes = b"", seen: frozenset[bytes] = frozenset()) -> None:
        allowed = [n for n in client.spec.nodes or self.cluster.client_names
                   if self.cluster.alive(n)]
        if not allowed:  # nobody to talk to: try again later
            self.scheduler.after(self.params.think_max_ms + 10,
                                 functools.partial(self._next, client))
            return
        node = client.rng.choice(allowed)
        op = Op(len(self.history), client.index, kind, key[0], key[1], node,
                self.scheduler.now_ms, value, context, seen)
        self.history.append(op)
        self.touched.add(key)
        if value:
            self.issued(value)
        self._submit(client, op, node, self._request(client, op))

    def request(self, node: str, kind: OpKind, key: Key, value: bytes = b"",
                context: bytes = b"", seen: frozenset[bytes] = frozenset(),
                quorum: Quorum | None = None,
                then: Callable[[Op], None] | None = None) -> Op:
        """A scripted request on behalf of no client (scenarios and regression tests):
        tracked in the history and judged like any other. `quorum` is its r or w;
        `then` is called with the op once it is answered or given up."""
        op = Op(len(self.history), -1, kind, key[0], key[1], node, self.scheduler.now_ms,
                value, context, seen, quorum=quorum)
        if then is not None:
            self._then_scripted[op.op_id] = then
        self.history.append(op)
        self.touched.add(key)
        if value:
            self.issued(value)
        self._submit(None, op, node, self._request(None, op))
        return op

    def admin(self, node: str, request: api.Request,
              then: Callable[[Op], None] | None = None) -> Op:
        """Send an administrative request (bucket properties, membership) on no client's
        behalf; `then` is called with the op once it is answered or given up."""
        op = Op(len(self.history), -1, "admin", "", "", node, self.scheduler.now_ms)
        if then is not None:
            self._then_scripted[op.op_id] = then
        self.history.append(op)
        self._submit(None, op, node, request)
        return op

    def _submit(self, client: Client | None, op: Op, node: str, request: api.Request) -> None:
        client_id = self._next_client_id
        self._next_client_id += 1
        self._pending[client_id] = (client, op)
        delay = self.rng.randint(0, self.params.client_delay_max_ms)
        self.scheduler.after(delay, lambda: self._arrive(node, client_id, request))
        self.scheduler.after(self.timeout_ms, lambda: self._timeout(client_id))

    def _arrive(self, node: str, client_id: int, request: api.Request) -> None:
        if not self.cluster.submit(node, client_id, request):
            self._connection_failed(client_id)

    def node_crashed(self, node: str) -> None:
        """The connections of the clients waiting on `node` break: they give up."""
        for client_id, (_client, op) in sorted(self._pending.items()):
            if op.node == node:
                delay = self.rng.randint(0, self.params.client_delay_max_ms)
                self.scheduler.after(delay, functools.partial(self._connection_failed, client_id))

    def _connection_failed(self, client_id: int) -> None:
        self._give_up(client_id, unanswered=False)

    def _timeout(self, client_id: int) -> None:
        self._give_up(client_id, unanswered=True)

    def _give_up(self, client_id: int, unanswered: bool) -> None:
        entry = self._pending.pop(client_id, None)
        if entry is None:
            return
        client, op = entry
        op.timed_out = True
        op.unanswered = unanswered
        op.end_ms = self.scheduler.now_ms
        self._done(client, op)

    def _done(self, client: Client | None, op: Op) -> None:
        if client is not None:
            self._then(client, op)
            return
        then = self._then_scripted.pop(op.op_id, None)
        if then is not None:
            then(op)

    def on_reply(self, client_id: int, response: api.Response) -> None:
        """A node sent a reply (after persisting): it reaches the client shortly."""
        delay = self.rng.randint(0, self.params.client_delay_max_ms)
        self.scheduler.after(delay, lambda: self._receive(client_id, response))

    def _receive(self, client_id: int, response: api.Response) -> None:
        self.trace.record(self.scheduler.now_ms, f"c{client_id}", "reply",
                          repr(response).encode())
        entry = self._pending.pop(client_id, None)
        if entry is None:
            self.late_replies += 1
            return
        client, op = entry
        op.response = response
        op.end_ms = self.scheduler.now_ms
        self._done(client, op)
