"""Three real nodes: a node whose data directory is deleted gets every key back by
anti-entropy alone (no client reads), within a bounded time."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.harness import ProcessCluster, http, wait_until

pytestmark = pytest.mark.cluster

KEYS = 20_000
REPAIR_DEADLINE_S = 150


async def write_keys(urls: list[str], count: int) -> None:
    semaphore = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            async with semaphore:
                url = f"{urls[i % len(urls)]}/buckets/ae/keys/key{i}?w=3"
                async with session.put(url, data=f"value{i}".encode(),
                                       headers={"Content-Type": "text/plain"}) as response:
                    assert response.status == 204, await response.text()

        await asyncio.gather(*(one(i) for i in range(count)))


def partition_keys(cluster: ProcessCluster, index: int) -> dict[str, int]:
    status = http("GET", f"{cluster.url(index)}/admin/status").json()
    keys: dict[str, int] = status["anti_entropy"]["partition_keys"]
    return keys


def test_a_wiped_node_is_rebuilt_by_anti_entropy(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, size=3)
    try:
        cluster.start()
        started = time.monotonic()
        asyncio.run(write_keys([cluster.url(i) for i in range(3)], KEYS))
        print(f"wrote {KEYS} keys (w=3) in {time.monotonic() - started:.1f} s")
        expected = partition_keys(cluster, 0)
        assert sum(expected.values()) == KEYS
        cluster.kill(2, signal.SIGTERM)
        shutil.rmtree(cluster.nodes[2].data)
        cluster.start(2)
        assert sum(partition_keys(cluster, 2).values()) < KEYS
        started = time.monotonic()
        wait_until(lambda: partition_keys(cluster, 2) == expected, REPAIR_DEADLINE_S,
                   "the wiped node's partitions to hold every key again")
        print(f"anti-entropy restored {KEYS} keys in {time.monotonic() - started:.1f} s")
        for i in random.Random(3).sample(range(KEYS), 50):
            local = http("GET", f"{cluster.url(2)}/admin/local/types/default/buckets/ae/"
                                f"keys/key{i}").json()
            assert [s["value"] for s in local["siblings"]] == [f"value{i}"]
    finally:
        cluster.stop()
