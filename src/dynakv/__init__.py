"""dynakv: a Dynamo-style, leaderless, replicated key-value store.

`from dynakv import Client, AsyncClient` gives the Python clients; they are loaded on
first use, so importing dynakv (the simulator, the core) does not load aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dynakv.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "AsyncClient"):
        import dynakv.client

        return getattr(dynakv.client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
