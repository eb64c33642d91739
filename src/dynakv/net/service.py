"""What the client-facing APIs (HTTP now, the binary protocol later) need of a node.

The runtime (net/runtime.py) implements it; API front ends depend only on this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from dynakv.core import api


class NodeService(Protocol):
    @property
    def name(self) -> str: ...

    async def request(self, request: api.Request) -> api.Response:
        """Run one request through the core and return its single response.
        (For listings use `stream`.)"""
        ...

    def stream(
        self, request: api.ListKeysRequest | api.ListBucketsRequest
    ) -> AsyncIterator[api.ChunkResponse | api.ErrorResponse]:
        """The chunks of a listing, the last with done=True (or an ErrorResponse).
        The next page is fetched only once the caller has taken the previous one."""
        ...

    def node_stats(self) -> dict[str, Any]:
        """Node counters for /stats (the core's status plus the driver's)."""
        ...
