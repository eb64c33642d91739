"""The asyncio client: over Riak's PB protocol (`pb://HOST:PORT`, the default), on
pipelined connections (client/pb_transport.py), or over the HTTP API (`http://`), on
an aiohttp ClientSession (connection pooling, keep-alive).

    async with AsyncClient("pb://127.0.0.1:8087") as client:
        obj = await client.get("users", "alice")
        await client.put("users", "alice", b"new", context=obj.context)

Any number of tasks may share one AsyncClient. It runs the same sans-I/O operations
as the blocking Client (client/protocol.py, client/pb_protocol.py).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from dynakv.client import pb_protocol, protocol
from dynakv.client.model import ConnectionFailed, Object
from dynakv.client.pb_protocol import PbCall, PbReply
from dynakv.client.pb_transport import AsyncPbPool, pb_address
from dynakv.client.protocol import DEFAULT_TYPE, Call, NewContent, Operations, Reply, Resolver
from dynakv.client.sync import DEFAULT_URL, Quorum

T = TypeVar("T")


class AsyncClient:
    """An asyncio client of one dynakv (or Riak) node: PB (pb://) or HTTP (http://).
    Over PB it keeps up to `connections` pipelined connections."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = 60.0,
                 connections: int = 4) -> None:
        address = pb_address(url)
        self._ops: Operations = pb_protocol if address else protocol
        self._pool = (AsyncPbPool(url, *address, max(1, connections), timeout_s)
                      if address else None)
        parts = urlsplit(url)
        if address is None and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(f"expected a pb://, http:// or https:// URL, not {url!r}")
        self.url = url
        self._base = url.rstrip("/")
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- objects ----------------------------------------------------------------------

    async def get(self, bucket: str, key: str, *, bucket_type: str = DEFAULT_TYPE,
                  r: Quorum | None = None, pr: Quorum | None = None,
                  notfound_ok: bool | None = None, basic_quorum: bool | None = None,
                  timeout_ms: int | None = None) -> Object:
        """The key's siblings and context; `exists` is False if it is not found."""
        params = {"r": r, "pr": pr, "notfound_ok": notfound_ok,
                  "basic_quorum": basic_quorum, "timeout": timeout_ms}
        return await self._run(self._ops.get(bucket_type, bucket, key, params))

    async def put(self, bucket: str, key: str, value: bytes | str, *,
                  bucket_type: str = DEFAULT_TYPE, context: bytes | None = None,
                  content_type: str | None = None, w: Quorum | None = None,
                  dw: Quorum | None = None, pw: Quorum | None = None,
                  return_body: bool = False, usermeta: Mapping[str, str] | None = None,
                  timeout_ms: int | None = None) -> Object | None:
        """Store `value`; see Client.put."""
        params = {"w": w, "dw": dw, "pw": pw, "returnbody": return_body or None,
                  "timeout": timeout_ms}
        content = NewContent(value, content_type, usermeta)
        return await self._run(self._ops.put(bucket_type, bucket, key, content, context, params))

    async def delete(self, bucket: str, key: str, *, bucket_type: str = DEFAULT_TYPE,
                     context: bytes | None = None, rw: Quorum | None = None,
                     w: Quorum | None = None, dw: Quorum | None = None,
                     pw: Quorum | None = None, timeout_ms: int | None = None) -> None:
        params = {"rw": rw, "w": w, "dw": dw, "pw": pw, "timeout": timeout_ms}
        await self._run(self._ops.delete(bucket_type, bucket, key, context, params))

    async def resolve(self, bucket: str, key: str, resolver: Resolver, *,
                      bucket_type: str = DEFAULT_TYPE, content_type: str | None = None
                      ) -> Object:
        """Read; if there are siblings, store resolver(siblings) with the read's context
        and return the object as stored."""
        operation = self._ops.resolve(bucket_type, bucket, key, resolver, content_type, {})
        return await self._run(operation)

    # --- buckets and the node --------------------------------------------------------

    async def get_bucket_props(self, bucket: str, *, bucket_type: str = DEFAULT_TYPE
                               ) -> dict[str, Any]:
        return await self._run(self._ops.get_bucket_props(bucket_type, bucket))

    async def set_bucket_props(self, bucket: str, props: Mapping[str, Any], *,
                               bucket_type: str = DEFAULT_TYPE) -> None:
        await self._run(self._ops.set_bucket_props(bucket_type, bucket, props))

    async def reset_bucket_props(self, bucket: str, *, bucket_type: str = DEFAULT_TYPE
                                 ) -> None:
        await self._run(self._ops.reset_bucket_props(bucket_type, bucket))

    async def list_keys(self, bucket: str, *, bucket_type: str = DEFAULT_TYPE,
                        timeout_ms: int | None = None) -> list[str]:
        return await self._run(self._ops.list_keys(bucket_type, bucket, timeout_ms))

    async def list_buckets(self, *, bucket_type: str = DEFAULT_TYPE,
                           timeout_ms: int | None = None) -> list[str]:
        return await self._run(self._ops.list_buckets(bucket_type, timeout_ms))

    async def ping(self) -> bool:
        return await self._run(self._ops.ping())

    async def stats(self) -> dict[str, Any]:
        return await self._run(self._ops.stats())

    # --- transport --------------------------------------------------------------------

    async def _run(self, operation: Generator[Any, Any, T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._send(call))
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            operation.close()

    async def _send(self, call: Call | PbCall) -> Reply | PbReply:
        if isinstance(call, PbCall):
            assert self._pool is not None
            return await self._pool.request(call)
        url = URL(self._base + call.path, encoded=True)
        body = call.body if call.body or call.method in ("PUT", "POST") else None
        try:
            async with self._client_session().request(
                call.method, url, headers=list(call.headers), data=body,
                skip_auto_headers=("Accept-Encoding", "Content-Type"),
            ) as response:
                content = await response.read()
                headers = tuple(
                    (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
                    for name, value in response.raw_headers
                )
                return Reply(response.status, headers, content)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ConnectionFailed(f"{self.url}: {error!r}") from error

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                auto_decompress=False,  # a value stored gzip'd comes back as stored
            )
        return self._session
