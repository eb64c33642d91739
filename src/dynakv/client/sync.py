"""The blocking client: one persistent connection, over Riak's PB protocol (a
`pb://HOST:PORT` URL, the default) or its HTTP API (`http://` or `https://`,
through http.client).

    with Client("pb://127.0.0.1:8087") as client:
        client.put("users", "alice", b"...")
        obj = client.get("users", "alice")        # every sibling and the context
        client.put("users", "alice", b"new", context=obj.context)

A Client may be shared between threads (requests take turns on its connection);
for parallel requests, use one Client per thread or the AsyncClient.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Generator, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dynakv.client import pb_protocol, protocol
from dynakv.client.model import ConnectionFailed, Object
from dynakv.client.pb_protocol import PbCall, PbReply
from dynakv.client.pb_transport import PbSocket, pb_address
from dynakv.client.protocol import (
    DEFAULT_TYPE,
    Call,
    NewContent,
    Operations,
    Reply,
    Resolver,
)

T = TypeVar("T")
Quorum = int | str
DEFAULT_URL = "pb://127.0.0.1:8087"
# Failures that mean a kept-alive connection was closed by the server meanwhile.
STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Client:
    """A blocking client of one dynakv (or Riak) node: PB (pb://) or HTTP (http://)."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = 60.0) -> None:
        self._pb_address = pb_address(url)
        self._ops: Operations = pb_protocol if self._pb_address else protocol
        self._pb: PbSocket | None = None
        parts = urlsplit(url)
        if self._pb_address is None and (parts.scheme not in ("http", "https")
                                         or not parts.hostname):
            raise ValueError(f"expected a pb://, http:// or https:// URL, not {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    # --- objects ----------------------------------------------------------------------

    def get(self, bucket: str, key: str, *, bucket_type: str = DEFAULT_TYPE,
            r: Quorum | None = None, pr: Quorum | None = None,
            notfound_ok: bool | None = None, basic_quorum: bool | None = None,
            timeout_ms: int | None = None) -> Object:
        """The key's siblings and context; `exists` is False if it is not found."""
        params = {"r": r, "pr": pr, "notfound_ok": notfound_ok,
                  "basic_quorum": basic_quorum, "timeout": timeout_ms}
        return self._run(self._ops.get(bucket_type, bucket, key, params))

    def put(self, bucket: str, key: str, value: bytes | str, *,
            bucket_type: str = DEFAULT_TYPE, context: bytes | None = None,
            content_type: str | None = None, w: Quorum | None = None,
            dw: Quorum | None = None, pw: Quorum | None = None, return_body: bool = False,
            usermeta: Mapping[str, str] | None = None,
            timeout_ms: int | None = None) -> Object | None:
        """Store `value` (str is sent as UTF-8 text/plain). Pass the context of a read
        to replace what was read; without one the write becomes a sibling of any
        value already there. With return_body, the object as stored."""
        params = {"w": w, "dw": dw, "pw": pw, "returnbody": return_body or None,
                  "timeout": timeout_ms}
        content = NewContent(value, content_type, usermeta)
        return self._run(self._ops.put(bucket_type, bucket, key, content, context, params))

    def delete(self, bucket: str, key: str, *, bucket_type: str = DEFAULT_TYPE,
               context: bytes | None = None, rw: Quorum | None = None,
               w: Quorum | None = None, dw: Quorum | None = None, pw: Quorum | None = None,
               timeout_ms: int | None = None) -> None:
        params = {"rw": rw, "w": w, "dw": dw, "pw": pw, "timeout": timeout_ms}
        self._run(self._ops.delete(bucket_type, bucket, key, context, params))

    def resolve(self, bucket: str, key: str, resolver: Resolver, *,
                bucket_type: str = DEFAULT_TYPE, content_type: str | None = None) -> Object:
        """Read; if there are siblings, store resolver(siblings) with the read's context
        and return the object as stored."""
        return self._run(self._ops.resolve(bucket_type, bucket, key, resolver, content_type, {}))

    # --- buckets and the node --------------------------------------------------------

    def get_bucket_props(self, bucket: str, *, bucket_type: str = DEFAULT_TYPE
                         ) -> dict[str, Any]:
        return self._run(self._ops.get_bucket_props(bucket_type, bucket))

    def set_bucket_props(self, bucket: str, props: Mapping[str, Any], *,
                         bucket_type: str = DEFAULT_TYPE) -> None:
        self._run(self._ops.set_bucket_props(bucket_type, bucket, props))

    def reset_bucket_props(self, bucket: str, *, bucket_type: str = DEFAULT_TYPE) -> None:
        self._run(self._ops.reset_bucket_props(bucket_type, bucket))

    def list_keys(self, bucket: str, *, bucket_type: str = DEFAULT_TYPE,
                  timeout_ms: int | None = None) -> list[str]:
        """Every key of a bucket (walks all the cluster's keys: not for production)."""
        return self._run(self._ops.list_keys(bucket_type, bucket, timeout_ms))

    def list_buckets(self, *, bucket_type: str = DEFAULT_TYPE,
                     timeout_ms: int | None = None) -> list[str]:
        return self._run(self._ops.list_buckets(bucket_type, timeout_ms))

    def ping(self) -> bool:
        return self._run(self._ops.ping())

    def stats(self) -> dict[str, Any]:
        return self._run(self._ops.stats())

    # --- transport --------------------------------------------------------------------

    def _run(self, operation: Generator[Any, Any, T]) -> T:
        return protocol.drive(operation, self._send)

    def _send(self, call: Call | PbCall) -> Reply | PbReply:
        if isinstance(call, PbCall):
            return self._send_pb(call)
        with self._lock:
            for attempt in range(2):
                reused = self._connection is not None
                try:
                    return self._exchange(self._connect(), call)
                except STALE_CONNECTION_ERRORS as error:
                    self._drop()
                    if reused and attempt == 0 and call.method != "POST":
                        continue
                    raise ConnectionFailed(f"{self.url}: {error!r}") from error
                except (OSError, http.client.HTTPException) as error:
                    self._drop()
                    raise ConnectionFailed(f"{self.url}: {error!r}") from error
            raise AssertionError("unreachable")

    def _send_pb(self, call: PbCall) -> PbReply:
        assert self._pb_address is not None
        with self._lock:
            for attempt in range(2):
                reused = self._pb is not None
                try:
                    if self._pb is None:
                        self._pb = PbSocket(*self._pb_address, self._timeout_s)
                    return self._pb.exchange(call)
                except STALE_CONNECTION_ERRORS as error:
                    self._drop()
                    if reused and attempt == 0:
                        continue
                    raise ConnectionFailed(f"{self.url}: {error!r}") from error
                except OSError as error:
                    self._drop()
                    raise ConnectionFailed(f"{self.url}: {error!r}") from error
            raise AssertionError("unreachable")

    def _exchange(self, connection: http.client.HTTPConnection, call: Call) -> Reply:
        connection.putrequest(call.method, self._prefix + call.path, skip_accept_encoding=True)
        for name, value in call.headers:
            connection.putheader(name, value.encode("utf-8"))
        if call.body or call.method in ("PUT", "POST"):
            connection.putheader("Content-Length", str(len(call.body)))
        connection.endheaders(call.body or None)
        response = connection.getresponse()
        body = response.read()
        # http.client decodes header bytes as latin-1; the node sends UTF-8.
        headers = tuple(
            (name, value.encode("latin-1", "replace").decode("utf-8", "replace"))
            for name, value in response.getheaders()
        )
        if response.will_close:
            self._drop()
        return Reply(response.status, headers, body)

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = cls(self._host, self._port, timeout=self._timeout_s)
        return self._connection

    def _drop(self) -> None:
        if self._pb is not None:
            self._pb.close()
            self._pb = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
