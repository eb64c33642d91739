"""An in-memory NodeService for testing the HTTP API and the clients without a cluster.

It keeps, per key, the live siblings and a version number (the context is
b"v<version>"): a put whose context names the current version replaces every
sibling; a put without it (or with an older one) adds a sibling; a delete leaves a
tombstone (no siblings, a context). Time and vtags are deterministic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from dynakv.core import api
from dynakv.core.buckets import BucketProps, apply_props
from dynakv.core.errors import ClientError, ErrorKind

Key = tuple[str, str, str]
START_MS = 1_700_000_000_000
LIST_PAGE = 2


class FakeService:
    def __init__(self) -> None:
        self.objects: dict[Key, tuple[tuple[api.Content, ...], int]] = {}
        self.props: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[api.Request] = []
        self.fail_with: api.ErrorResponse | None = None
        self.raise_with: Exception | None = None
        self.list_error_after_pages: int | None = None
        self.clock_ms = START_MS
        self.vtags = 0

    @property
    def name(self) -> str:
        return "fake@127.0.0.1"

    # --- NodeService --------------------------------------------------------------

    async def request(self, request: api.Request) -> api.Response:
        self.requests.append(request)
        if self.raise_with is not None:
            raise self.raise_with
        if self.fail_with is not None:
            return self.fail_with
        try:
            return self._handle(request)
        except ClientError as error:
            return api.ErrorResponse(error.kind, error.message)

    async def stream(
        self, request: api.ListKeysRequest | api.ListBucketsRequest
    ) -> AsyncIterator[api.ChunkResponse | api.ErrorResponse]:
        self.requests.append(request)
        if self.fail_with is not None:
            yield self.fail_with
            return
        items = sorted(self._listing(request))
        pages = [items[i:i + LIST_PAGE] for i in range(0, len(items), LIST_PAGE)] or [[]]
        for number, page in enumerate(pages):
            if self.list_error_after_pages is not None and number >= self.list_error_after_pages:
                yield api.ErrorResponse(ErrorKind.TIMEOUT, "timeout: listing")
                return
            yield api.ChunkResponse(tuple(page), done=number == len(pages) - 1)

    def node_stats(self) -> dict[str, Any]:
        return {"node": self.name, "ring_size": 64, "requests_in_flight": 0}

    # --- requests -----------------------------------------------------------------

    def _handle(self, request: api.Request) -> api.Response:
        match request:
            case api.GetRequest():
                siblings, version = self.objects.get(self._key(request), ((), 0))
                return api.ObjectResponse(siblings, self._context(version))
            case api.PutRequest():
                return self._put(request)
            case api.DeleteRequest():
                key = self._key(request)
                _, version = self.objects.get(key, ((), 0))
                self.objects[key] = ((), version + 1)
                return api.DoneResponse()
            case api.GetBucketPropsRequest():
                props = BucketProps().to_json()
                props.update(self.props.get((request.bucket_type, request.bucket), {}))
                return api.PropsResponse(props)
            case api.SetBucketPropsRequest():
                apply_props(BucketProps(), request.props)
                bucket = (request.bucket_type, request.bucket)
                self.props[bucket] = {**self.props.get(bucket, {}), **request.props}
                return api.DoneResponse()
            case api.ResetBucketPropsRequest():
                self.props.pop((request.bucket_type, request.bucket), None)
                return api.DoneResponse()
            case api.PreflistRequest():
                return api.PreflistResponse(((0, "a@127.0.0.1", True), (1, "b@127.0.0.1", True),
                                             (2, "c@127.0.0.1", False)))
            case api.LocalGetRequest():
                siblings, version = self.objects.get(self._key(request), ((), 0))
                dots = tuple(("fake-server", number + 1) for number in range(len(siblings)))
                return api.LocalObjectResponse(self.name, 7, siblings, dots,
                                               self._context(version))
            case api.StatusRequest():
                return api.StatusResponse({"node": self.name, "ring_size": 64})
            case _:
                return api.ErrorResponse(ErrorKind.BAD_REQUEST, f"unsupported {request!r}")

    def _put(self, request: api.PutRequest) -> api.Response:
        key = self._key(request)
        siblings, version = self.objects.get(key, ((), 0))
        self.clock_ms += 1000
        self.vtags += 1
        content = replace(request.content, vtag=f"vtag{self.vtags}",
                          last_modified_ms=self.clock_ms)
        if request.context == self._context(version) or not siblings:
            siblings = (content,)
        else:
            siblings = (*siblings, content)
        self.objects[key] = (siblings, version + 1)
        if request.return_body:
            return api.ObjectResponse(siblings, self._context(version + 1))
        return api.DoneResponse(self._context(version + 1))

    def _listing(self, request: api.ListKeysRequest | api.ListBucketsRequest) -> set[str]:
        live = [key for key, (siblings, _) in self.objects.items() if siblings]
        if isinstance(request, api.ListKeysRequest):
            return {k for t, b, k in live if (t, b) == (request.bucket_type, request.bucket)}
        return {b for t, b, _ in live if t == request.bucket_type}

    @staticmethod
    def _key(request: api.GetRequest | api.PutRequest | api.DeleteRequest
             | api.LocalGetRequest) -> Key:
        return (request.bucket_type, request.bucket, request.key)

    @staticmethod
    def _context(version: int) -> bytes:
        return f"v{version}".encode() if version else b""
