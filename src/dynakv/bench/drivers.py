"""One small adapter per protocol, so that one load generator drives every store.

A driver reads a key (answering its context and how many siblings it holds, 0 when
not found) and writes a key with a context (answering the new context, if the store
gives one). Contexts are dynakv's (and Riak's) opaque version vectors; Redis and etcd
have none and answer None. Each driver keeps its connections open for the whole run.

- http: dynakv's (Riak's) HTTP API over aiohttp, answers parsed by the Python client's
  own sans-I/O functions (dynakv.client.protocol).
- pb: dynakv's Protocol Buffers API through the Python client's PB transport.
- redis: redis-py's asyncio client (hiredis parser); with `wait_replicas` > 0 each
  write is SET then WAIT on the same connection (one pipeline), and a write that
  fewer replicas acknowledged is an error.
- etcd: etcd v3's gRPC gateway (JSON over HTTP): /v3/kv/range and /v3/kv/put.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp

PROTOCOLS = ("http", "pb", "redis", "etcd")
SCHEME_PROTOCOLS = {"redis": "redis", "etcd": "etcd", "pb": "pb"}
ACCEPT_SIBLINGS = "multipart/mixed, */*;q=0.5"
REQUEST_TIMEOUT_S = 30.0
# A replicated Redis write waits this long for its replicas before it counts as an error
# (WAIT 2 0 would wait forever; a benchmark must not hang on a dead replica).
REDIS_WAIT_TIMEOUT_MS = 5000


class BenchError(Exception):
    """A request the store refused or answered wrongly (counted, not fatal)."""


class Driver(Protocol):
    async def read(self, key: str) -> tuple[bytes | None, int]: ...

    async def write(self, key: str, value: bytes, context: bytes | None) -> bytes | None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Target:
    protocol: str
    url: str
    bucket: str = "bench"
    wait_replicas: int = 0


def protocol_of(url: str, protocol: str | None) -> str:
    """The protocol named, else the one the URL's scheme implies (http by default)."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    implied = SCHEME_PROTOCOLS.get(scheme)
    if protocol is None:
        return implied or "http"
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if implied is not None and implied != protocol:
        raise ValueError(f"{url}: a {scheme}:// URL with --protocol {protocol}")
    return protocol


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "tcp://" + url)
    if not parts.hostname:
        raise ValueError(f"expected HOST:PORT or a URL, not {url!r}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"{url}: invalid port") from None
    return parts.hostname, port


def make_driver(target: Target, connections: int) -> Driver:
    """A driver for `target`, allowed up to `connections` open connections."""
    if target.protocol == "http":
        return HttpDriver(target.url, target.bucket, connections)
    if target.protocol == "pb":
        return make_pb_driver(target, connections)
    if target.protocol == "redis":
        return RedisDriver(target.url, target.wait_replicas, connections)
    if target.protocol == "etcd":
        return EtcdDriver(target.url, target.bucket, connections)
    raise ValueError(f"unknown protocol {target.protocol!r}")


def make_pb_driver(target: Target, connections: int) -> Driver:
    return PbDriver(target.url, target.bucket, connections)


def session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


class HttpDriver:
    """dynakv's HTTP API (a Riak-compatible subset is all it needs)."""

    def __init__(self, url: str, bucket: str, connections: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// URL, not {url!r}")
        self.base = url.rstrip("/") + f"/buckets/{quote(bucket, safe='')}/keys/"
        self.bucket = bucket
        self.session = session(connections)

    async def read(self, key: str) -> tuple[bytes | None, int]:
        from dynakv.client import protocol

        async with self.session.get(self.base + key,
                                    headers={"Accept": ACCEPT_SIBLINGS}) as response:
            body = await response.read()
            if response.status == 404:
                return protocol.parse_context(response.headers.get("X-Riak-Vclock")), 0
            if response.status not in (200, 300):
                raise BenchError(f"read answered {response.status}")
            headers = tuple((name, value) for name, value in response.headers.items())
            obj = protocol.parse_object("default", self.bucket, key,
                                        protocol.Reply(response.status, headers, body))
            return obj.context, len(obj.siblings)

    async def write(self, key: str, value: bytes, context: bytes | None) -> bytes | None:
        from dynakv.client import protocol

        headers = {"Content-Type": "application/octet-stream"}
        if context:
            headers["X-Riak-Vclock"] = base64.b64encode(context).decode("ascii")
        async with self.session.put(self.base + key, data=value, headers=headers) as response:
            await response.read()
            if response.status not in (200, 201, 204):
                raise BenchError(f"write answered {response.status}")
            return protocol.parse_context(response.headers.get("X-Riak-Vclock"))

    async def close(self) -> None:
        await self.session.close()


class PbDriver:
    """dynakv's Protocol Buffers API through the Python client's PB transport: a pool of
    pipelined connections (one more opens only when every open one is busy)."""

    def __init__(self, url: str, bucket: str, connections: int) -> None:
        from dynakv.client.pb_transport import AsyncPbPool, pb_address

        address = pb_address(url if "://" in url else "pb://" + url)
        if address is None:
            raise ValueError(f"expected a pb://HOST:PORT URL, not {url!r}")
        self.pool = AsyncPbPool(url, *address, max(connections, 1), REQUEST_TIMEOUT_S)
        self.bucket = bucket

    async def exchange(self, operation: Any) -> tuple[Any, Any]:
        """Run a one-request client operation: its result and the raw reply."""
        try:
            reply = await self.pool.request(next(operation))
            try:
                operation.send(reply)  # raises the node's error, if it answered one
            except StopIteration as stop:
                return stop.value, reply
            raise BenchError("an operation that asked for more than one request")
        finally:
            operation.close()

    async def read(self, key: str) -> tuple[bytes | None, int]:
        from dynakv.client import pb_protocol

        obj, _ = await self.exchange(pb_protocol.get("default", self.bucket, key, {}))
        return obj.context, len(obj.siblings)

    async def write(self, key: str, value: bytes, context: bytes | None) -> bytes | None:
        from dynakv.client import pb_protocol
        from dynakv.client.protocol import NewContent
        from dynakv.proto import riak_pb2 as pb
        from dynakv.proto.frames import Code

        content = NewContent(value, "application/octet-stream")
        _, reply = await self.exchange(
            pb_protocol.put("default", self.bucket, key, content, context, {}))
        # The client keeps a put's context only with the body; dynakv sends it anyway.
        stored = pb_protocol.expect(reply, Code.PUT_RESP, pb.RpbPutResp)
        return stored.vclock or None

    async def close(self) -> None:
        await self.pool.close()


class RedisDriver:
    def __init__(self, url: str, wait_replicas: int, connections: int) -> None:
        try:
            import redis.asyncio
        except ImportError:
            raise ValueError("driving Redis needs the redis package "
                             "(pip install 'redis[hiredis]')") from None
        host, port = host_port(url, 6379)
        self.client: Any = redis.asyncio.Redis(host=host, port=port,
                                               max_connections=max(connections, 1))
        self.wait_replicas = wait_replicas

    async def read(self, key: str) -> tuple[bytes | None, int]:
        value = await self.client.get(key)
        return None, 0 if value is None else 1

    async def write(self, key: str, value: bytes, context: bytes | None) -> bytes | None:
        if not self.wait_replicas:
            await self.client.set(key, value)
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, value)
        pipe.execute_command("WAIT", self.wait_replicas, REDIS_WAIT_TIMEOUT_MS)
        _, acknowledged = await pipe.execute()
        if int(acknowledged) < self.wait_replicas:
            raise BenchError(f"WAIT: {acknowledged} of {self.wait_replicas} replicas")
        return None

    async def close(self) -> None:
        await self.client.aclose()


class EtcdDriver:
    """etcd v3 through its JSON gateway; keys are bucket/key."""

    def __init__(self, url: str, bucket: str, connections: int) -> None:
        host, port = host_port(url, 2379)
        self.base = f"http://{host}:{port}/v3/kv/"
        self.prefix = bucket + "/"
        self.session = session(connections)

    def _key(self, key: str) -> str:
        return base64.b64encode((self.prefix + key).encode()).decode("ascii")

    async def _post(self, path: str, document: dict[str, str]) -> Any:
        async with self.session.post(self.base + path, json=document) as response:
            answer = await response.json(content_type=None)
            if response.status != 200:
                raise BenchError(f"etcd {path} answered {response.status}: {answer}")
            return answer

    async def read(self, key: str) -> tuple[bytes | None, int]:
        answer = await self._post("range", {"key": self._key(key)})
        return None, len(answer.get("kvs", ()))

    async def write(self, key: str, value: bytes, context: bytes | None) -> bytes | None:
        await self._post("put", {"key": self._key(key),
                                 "value": base64.b64encode(value).decode("ascii")})
        return None

    async def close(self) -> None:
        await self.session.close()
