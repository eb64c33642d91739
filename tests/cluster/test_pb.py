"""Three real nodes through the PB API: the Python client over both transports,
siblings from concurrent writers on different nodes, contexts that resolve them, a
tombstone's context, quorums by name, and what one transport wrote read by the other."""

from __future__ import annotations

import asyncio

import pytest

from dynakv.client import AsyncClient, BadRequest, Client
from tests.cluster.harness import ProcessCluster

pytestmark = pytest.mark.cluster


def test_siblings_and_contexts_through_pb(cluster: ProcessCluster) -> None:
    clients = [Client(node.pb_url) for node in cluster.nodes]
    try:
        a, b, c = clients
        assert all(client.ping() for client in clients)
        a.put("pb", "k", "base", w="all")
        base = b.get("pb", "k", r=2)
        assert base.value == b"base" and base.context
        b.put("pb", "k", b"left", context=base.context, w=2)
        c.put("pb", "k", b"right", context=base.context, w=2)
        both = a.get("pb", "k", r="quorum")
        assert sorted(s.value for s in both.siblings) == [b"left", b"right"]

        merged = a.put("pb", "k", b"merged", context=both.context, w=2, return_body=True)
        assert merged is not None and merged.value == b"merged"
        for client in clients:
            assert client.get("pb", "k", r=2).value == b"merged"

        # The HTTP API sees the same object and context.
        with Client(cluster.nodes[1].url) as http:
            assert http.get("pb", "k").context == merged.context

        c.delete("pb", "k", context=merged.context)
        gone = b.get("pb", "k")
        assert not gone.exists and gone.deleted and gone.context
        c.put("pb", "k", b"again", context=gone.context)
        assert a.get("pb", "k", r="all").value == b"again"

        assert "k" in a.list_keys("pb")
        assert "pb" in b.list_buckets()
        with pytest.raises(BadRequest):
            a.get("pb", "k", r=9)  # above n_val
    finally:
        for client in clients:
            client.close()


def test_async_client_pipelines_over_pb(cluster: ProcessCluster) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.nodes[0].pb_url, connections=2) as client:
            async def writer(index: int) -> None:
                key = f"key{index}"
                await client.put("pipe", key, f"v{index}")
                current = await client.get("pipe", key)
                await client.put("pipe", key, f"w{index}", context=current.context)

            await asyncio.gather(*(writer(index) for index in range(100)))
            values = await asyncio.gather(*(client.get("pipe", f"key{index}")
                                            for index in range(100)))
            assert [obj.value for obj in values] == [f"w{i}".encode() for i in range(100)]
            assert sorted(await client.list_keys("pipe")) == sorted(f"key{i}"
                                                                    for i in range(100))

    asyncio.run(main())
