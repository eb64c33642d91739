"""dynakv's Python client: `Client` (blocking) and `AsyncClient` (asyncio).

Both speak Riak KV's HTTP API, so they also work against Riak. A get answers an
Object with every sibling and the context; a put takes the context back; `resolve`
merges siblings with a function of yours and writes the result back.

AsyncClient is imported on first use, so `import dynakv` does not load aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dynakv.client.model import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    DynakvClientError,
    MultipleSiblings,
    NotFound,
    Object,
    PreconditionFailed,
    ServerError,
    Sibling,
    TooLarge,
    Unavailable,
)
from dynakv.client.sync import Client

if TYPE_CHECKING:
    from dynakv.client.aio import AsyncClient

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DynakvClientError",
    "MultipleSiblings",
    "NotFound",
    "Object",
    "PreconditionFailed",
    "ServerError",
    "Sibling",
    "TooLarge",
    "Unavailable",
]


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from dynakv.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
