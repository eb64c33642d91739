"""The checker's convergence poll against three fake nodes (in-process aiohttp servers
answering /admin/status, preflist and /admin/local like dynakv does)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.chaos.checker import (
    Layout,
    Op,
    OpType,
    Outcome,
    encode_set,
    final_check,
)

LAYOUT = Layout("default", "sets", ("set0",), "unique", n_val=3)
NAMES = ("a", "b", "c")


def sibling(value: bytes, dot: tuple[str, int]) -> dict[str, Any]:
    return {"value_base64": base64.b64encode(value).decode(), "dot": list(dot),
            "deleted": False}


class FakeCluster:
    """What each node holds for set0 (a list of siblings), changeable by the test."""

    def __init__(self) -> None:
        self.held: dict[str, list[dict[str, Any]]] = {name: [] for name in NAMES}
        self.fallback = False

    def app(self, name: str) -> web.Application:
        async def status(_request: web.Request) -> web.Response:
            return web.json_response({"node": name})

        async def preflist(_request: web.Request) -> web.Response:
            entries = [{"partition": 0, "node": node, "primary": True} for node in NAMES]
            if self.fallback:
                entries[2] = {"partition": 0, "node": "d", "primary": False}
            return web.json_response({"preflist": entries})

        async def local(_request: web.Request) -> web.Response:
            return web.json_response({"node": name, "siblings": self.held[name]})

        async def read(_request: web.Request) -> web.Response:
            values = [s["value_base64"] for s in self.held[name]]
            if not values:
                return web.Response(status=404)
            return web.Response(body=base64.b64decode(values[0]),
                                content_type="application/json")

        async def listing(_request: web.Request) -> web.Response:
            return web.json_response({"keys": []})

        app = web.Application()
        app.router.add_get("/admin/status", status)
        app.router.add_get("/types/default/buckets/sets/keys/set0/preflist", preflist)
        app.router.add_get("/admin/local/types/default/buckets/sets/keys/set0", local)
        app.router.add_get("/types/default/buckets/sets/keys/set0", read)
        app.router.add_get("/types/default/buckets/unique/keys", listing)
        return app


async def check(fake: FakeCluster, heal_after_s: float | None, timeout_s: float,
                change: Any = None) -> Any:
    servers = [TestServer(fake.app(name), host="127.0.0.1") for name in NAMES]
    for server in servers:
        await server.start_server()
    try:
        urls = [str(server.make_url("")).rstrip("/") for server in servers]
        history = [Op(0, OpType.SET_ADD, "set0", "e1", 0.0, 0.1, Outcome.OK, urls[0])]

        async def heal() -> None:
            assert heal_after_s is not None
            await asyncio.sleep(heal_after_s)
            change()

        task = asyncio.create_task(heal()) if heal_after_s is not None else None
        result = await final_check(urls, LAYOUT, history, heal_s=time.monotonic(),
                                   converge_timeout_s=timeout_s, read_timeout_s=1.0,
                                   request_timeout_s=1.0)
        if task is not None:
            await task
        return result
    finally:
        for server in servers:
            await server.close()


def full() -> list[dict[str, Any]]:
    return [sibling(encode_set({"e1"}), ("s1", 1))]


def test_converges_once_the_lagging_replica_catches_up() -> None:
    fake = FakeCluster()
    fake.held["a"] = fake.held["b"] = full()

    def catch_up() -> None:
        fake.held["c"] = full()

    result = asyncio.run(check(fake, 0.6, timeout_s=10.0, change=catch_up))
    assert result.converged and result.converge_s is not None
    assert 0.6 <= result.converge_s < 5.0
    assert result.diverging_at_heal == 1
    assert result.lost == 0 and result.ok, result.report()


def test_replicas_that_never_agree_are_reported() -> None:
    fake = FakeCluster()
    fake.held["a"] = fake.held["b"] = full()
    fake.held["c"] = [sibling(encode_set({"e1"}), ("s2", 7))]  # same value, another dot
    result = asyncio.run(check(fake, None, timeout_s=1.0))
    assert not result.converged and result.converge_s is None
    assert result.divergent and "sets/set0: replicas differ" in result.divergent[0]
    assert result.summary().endswith("converge_s=inf")


def test_a_fallback_in_the_preflist_is_not_converged() -> None:
    fake = FakeCluster()
    for name in NAMES:
        fake.held[name] = full()
    fake.fallback = True
    result = asyncio.run(check(fake, None, timeout_s=1.0))
    assert not result.converged
    assert "fallbacks" in result.divergent[0]


def test_final_reads_through_every_node_find_a_loss_on_one() -> None:
    fake = FakeCluster()
    fake.held["a"] = fake.held["b"] = full()
    result = asyncio.run(check(fake, None, timeout_s=0.5))
    assert result.lost == 1
    assert isinstance(result.lost_details[0].op, Op)
    assert "missing in the final read via" in result.lost_details[0].reason


def test_replicas_identical_at_the_first_poll_converge_at_zero() -> None:
    fake = FakeCluster()
    for name in NAMES:
        fake.held[name] = full()
    result = asyncio.run(check(fake, None, timeout_s=5.0))
    assert result.converged and result.converge_s == 0.0 and result.diverging_at_heal == 0
    assert result.first_poll_s > 0 and result.ok, result.report()
