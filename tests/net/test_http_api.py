"""The HTTP API against an in-memory NodeService: Riak's wire format, status codes,
and that bad input never reaches the node."""

from __future__ import annotations

import asyncio
import base64
import email
import email.message
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dynakv.core import api, limits
from dynakv.core.errors import ErrorKind
from dynakv.net.http_api import make_app
from tests.net.fake_service import FakeService

Client = TestClient[web.Request, web.Application]
Scenario = Callable[[Client, FakeService], Awaitable[None]]


def run(scenario: Scenario) -> None:
    async def main() -> None:
        service = FakeService()
        async with TestClient(TestServer(make_app(service))) as client:
            await scenario(client, service)

    asyncio.run(main())


def puts(service: FakeService) -> list[api.PutRequest]:
    return [r for r in service.requests if isinstance(r, api.PutRequest)]


async def put(client: Client, path: str, body: bytes = b"value", **headers: str) -> Any:
    response = await client.put(path, data=body, headers=headers)
    assert response.status in (200, 204), await response.text()
    return response


# --- objects ------------------------------------------------------------------------


def test_put_get_round_trip_with_metadata() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.put(
            "/buckets/users/keys/alice",
            data=b'{"name": "Alice"}',
            headers=[
                ("Content-Type", "application/json"),
                ("X-Riak-Meta-Color", "blue"),
                ("Link", '</buckets/users/keys/bob>; riaktag="friend"'),
                ("X-Riak-Index-email_bin", "a@example.com, b@example.com"),
                ("X-Riak-Index-age_int", "42"),
            ],
        )
        assert response.status == 204
        assert base64.b64decode(response.headers["X-Riak-Vclock"]) == b"v1"
        stored = puts(service)[0]
        assert stored.content.usermeta == (("color", "blue"),)
        assert stored.content.links == (("users", "bob", "friend"),)
        assert stored.content.indexes == (("age_int", "42"), ("email_bin", "a@example.com"),
                                          ("email_bin", "b@example.com"))

        response = await client.get("/buckets/users/keys/alice")
        assert response.status == 200
        assert await response.read() == b'{"name": "Alice"}'
        headers = response.headers
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Riak-Meta-color"] == "blue"
        assert '</buckets/users/keys/bob>; riaktag="friend"' in headers["Link"]
        assert '</buckets/users>; rel="up"' in headers["Link"]
        assert headers["X-Riak-Index-email_bin"] == "a@example.com, b@example.com"
        assert headers["X-Riak-Index-age_int"] == "42"
        assert headers["ETag"] == '"vtag1"'
        assert headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:21 GMT"
        assert base64.b64decode(headers["X-Riak-Vclock"]) == b"v1"

    run(scenario)


def test_typed_paths_and_params_reach_the_node() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        await put(client, "/types/maps/buckets/b/keys/k?w=2&dw=one&pw=0&timeout=1500")
        response = await client.get(
            "/types/maps/buckets/b/keys/k?r=all&pr=quorum&notfound_ok=false&basic_quorum=true"
        )
        assert response.status == 200
        stored = puts(service)[0]
        assert (stored.bucket_type, stored.w, stored.dw, stored.pw, stored.timeout_ms) == (
            "maps", 2, "one", 0, 1500)
        get = service.requests[-1]
        assert get == api.GetRequest("maps", "b", "k", r="all", pr="quorum",
                                     notfound_ok=False, basic_quorum=True)

    run(scenario)


def test_names_are_percent_decoded_utf8() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        await put(client, "/buckets/b%2Fc/keys/caf%C3%A9%2Fx+y%2B")
        assert puts(service)[0].bucket == "b/c"
        assert puts(service)[0].key == "café/x y+"
        response = await client.get("/buckets/b/keys/%FF")
        assert response.status == 400
        assert "UTF-8" in await response.text()

    run(scenario)


def test_context_is_passed_back_and_siblings_answer_300() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        await put(client, "/buckets/b/keys/k", b"one", **{"Content-Type": "text/plain"})
        await put(client, "/buckets/b/keys/k", b"two")  # no context: a sibling
        response = await client.get("/buckets/b/keys/k")
        assert response.status == 300
        assert response.headers["Content-Type"].startswith("text/plain")
        assert await response.text() == "Siblings:\nvtag1\nvtag2\n"
        assert base64.b64decode(response.headers["X-Riak-Vclock"]) == b"v2"

        response = await client.get("/buckets/b/keys/k",
                                    headers={"Accept": "multipart/mixed, */*;q=0.9"})
        assert response.status == 300
        body = await response.read()
        message = email.message_from_bytes(
            f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode() + body)
        assert message.is_multipart()
        payload = message.get_payload()
        assert isinstance(payload, list)
        parts = [part for part in payload if isinstance(part, email.message.Message)]
        assert [part.get_payload(decode=True) for part in parts] == [b"one", b"two"]
        assert [part["Etag"] for part in parts] == ["vtag1", "vtag2"]
        assert parts[0]["Content-Type"] == "text/plain"
        assert parts[0]["Last-Modified"] == "Tue, 14 Nov 2023 22:13:21 GMT"

        context = response.headers["X-Riak-Vclock"]
        response = await client.put("/buckets/b/keys/k", data=b"merged",
                                    headers={"X-Riak-Vclock": context})
        assert response.status == 204
        assert puts(service)[-1].context == b"v2"
        response = await client.get("/buckets/b/keys/k")
        assert (response.status, await response.read()) == (200, b"merged")

    run(scenario)


def test_vtag_selects_one_sibling() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        await put(client, "/buckets/b/keys/k", b"one")
        await put(client, "/buckets/b/keys/k", b"two")
        response = await client.get("/buckets/b/keys/k?vtag=vtag2")
        assert (response.status, await response.read()) == (200, b"two")
        assert response.headers["ETag"] == '"vtag2"'
        assert "X-Riak-Vclock" in response.headers
        response = await client.get("/buckets/b/keys/k?vtag=nope")
        assert response.status == 404

    run(scenario)


def test_not_found_and_tombstone() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.get("/buckets/b/keys/missing")
        assert (response.status, await response.text()) == (404, "not found\n")
        assert "X-Riak-Vclock" not in response.headers

        await put(client, "/buckets/b/keys/k")
        response = await client.delete("/buckets/b/keys/k",
                                       headers={"X-Riak-Vclock": base64.b64encode(b"v1").decode()})
        assert response.status == 204
        delete = service.requests[-1]
        assert isinstance(delete, api.DeleteRequest) and delete.context == b"v1"
        response = await client.get("/buckets/b/keys/k")
        assert response.status == 404
        assert response.headers["X-Riak-Deleted"] == "true"
        assert base64.b64decode(response.headers["X-Riak-Vclock"]) == b"v2"

    run(scenario)


def test_delete_params() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.delete("/buckets/b/keys/k?rw=all&w=1&dw=0&pw=one&r=2&pr=1")
        assert response.status == 204
        assert service.requests[-1] == api.DeleteRequest("default", "b", "k", rw="all", w=1,
                                                         dw=0, pw="one")
        response = await client.delete("/buckets/b/keys/k?r=many")
        assert response.status == 400
        assert len(service.requests) == 1

    run(scenario)


def test_bad_input_is_400_and_nothing_is_stored() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        cases = [
            ("/buckets/b/keys/k?w=lots", {}, "w="),
            ("/buckets/b/keys/k?dw=-1", {}, "dw="),
            ("/buckets/b/keys/k?returnbody=maybe", {}, "returnbody"),
            ("/buckets/b/keys/k?timeout=soon", {}, "timeout"),
            ("/buckets/b/keys/k", {"X-Riak-Vclock": "not base64!"}, "X-Riak-Vclock"),
            ("/buckets/b/keys/k", {"X-Riak-Index-foo": "1"}, "_bin or _int"),
            ("/buckets/b/keys/k", {"X-Riak-Index-n_int": "x"}, "not an integer"),
            ("/buckets/b/keys/k", {"Link": '<elsewhere>; riaktag="t"'}, "Link"),
        ]
        for path, headers, fragment in cases:
            response = await client.put(path, data=b"v", headers=headers)
            assert response.status == 400, path
            assert response.headers["Content-Type"].startswith("text/plain")
            assert fragment in await response.text(), (path, await response.text())
        response = await client.get("/buckets/b/keys/k?r=lots")
        assert response.status == 400
        response = await client.get("/buckets/b/keys/k?notfound_ok=yes")
        assert response.status == 400
        assert service.requests == []

    run(scenario)


def test_oversize_value_is_413() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        body = b"x" * (limits.VALUE_SIZE_MAX_BYTES + 1)
        response = await client.put("/buckets/b/keys/k", data=body)
        assert response.status == 413
        assert str(limits.VALUE_SIZE_MAX_BYTES) in await response.text()
        assert service.requests == []

    run(scenario)


def test_content_encoding_is_stored_as_sent() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        body = gzip.compress(b"hello")
        await put(client, "/buckets/b/keys/k", body, **{"Content-Encoding": "gzip"})
        assert puts(service)[0].content.value == body
        response = await client.get("/buckets/b/keys/k", auto_decompress=False)
        assert response.headers["Content-Encoding"] == "gzip"
        assert await response.read() == body

    run(scenario)


def test_returnbody() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.put("/buckets/b/keys/k?returnbody=true", data=b"one",
                                    headers={"Content-Type": "text/plain"})
        assert (response.status, await response.read()) == (200, b"one")
        assert response.headers["Content-Type"] == "text/plain"
        assert base64.b64decode(response.headers["X-Riak-Vclock"]) == b"v1"
        response = await client.put("/buckets/b/keys/k?returnbody=true", data=b"two",
                                    headers={"Accept": "multipart/mixed"})
        assert response.status == 300
        assert response.headers["Content-Type"].startswith("multipart/mixed; boundary=")

    run(scenario)


def test_post_creates_a_key() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.post("/buckets/b/keys", data=b"new")
        assert response.status == 201
        location = response.headers["Location"]
        assert location.startswith("/buckets/b/keys/")
        assert "X-Riak-Vclock" in response.headers
        response = await client.get(location)
        assert (response.status, await response.read()) == (200, b"new")

        response = await client.post("/types/t/buckets/b/keys?returnbody=true", data=b"body")
        assert response.status == 201
        assert response.headers["Location"].startswith("/types/t/buckets/b/keys/")
        assert await response.read() == b"body"

        response = await client.post("/buckets/b/keys/given", data=b"v")  # POST with a key
        assert response.status == 204
        assert puts(service)[-1].key == "given"

    run(scenario)


def test_conditional_put() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.put("/buckets/b/keys/k", data=b"v", headers={"If-None-Match": "*"})
        assert response.status == 204
        response = await client.put("/buckets/b/keys/k", data=b"w", headers={"If-None-Match": "*"})
        assert response.status == 412
        assert "If-None-Match" in await response.text()
        response = await client.put("/buckets/b/keys/k", data=b"w",
                                    headers={"If-Match": '"other"'})
        assert response.status == 412
        long_ago = "Mon, 01 Jan 2001 00:00:00 GMT"
        response = await client.put("/buckets/b/keys/k", data=b"w",
                                    headers={"If-Unmodified-Since": long_ago})
        assert response.status == 412
        assert len(puts(service)) == 1
        response = await client.put("/buckets/b/keys/k", data=b"w",
                                    headers={"If-Match": '"vtag1"'})
        assert response.status == 204
        response = await client.put("/buckets/b/keys/new", data=b"w", headers={"If-Match": "*"})
        assert response.status == 412

    run(scenario)


def test_conditional_get() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        await put(client, "/buckets/b/keys/k")
        response = await client.get("/buckets/b/keys/k", headers={"If-None-Match": '"vtag1"'})
        assert response.status == 304
        response = await client.get("/buckets/b/keys/k", headers={"If-None-Match": '"vtag0"'})
        assert response.status == 200
        response = await client.get("/buckets/b/keys/k",
                                    headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
        assert response.status == 304
        response = await client.get("/buckets/b/keys/k",
                                    headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
        assert response.status == 200

    run(scenario)


def test_node_errors_map_to_statuses() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        expected = {ErrorKind.UNAVAILABLE: 503, ErrorKind.TIMEOUT: 503, ErrorKind.BUSY: 503,
                    ErrorKind.STORAGE_FULL: 503, ErrorKind.CONFLICT: 409,
                    ErrorKind.TOO_LARGE: 413, ErrorKind.BAD_REQUEST: 400,
                    ErrorKind.PRECONDITION_FAILED: 412, ErrorKind.NOT_FOUND: 404}
        for kind, status in expected.items():
            service.fail_with = api.ErrorResponse(kind, f"{kind.value} happened")
            response = await client.put("/buckets/b/keys/k", data=b"v")
            assert response.status == status
            assert await response.text() == f"{kind.value} happened\n"

    run(scenario)


def test_unexpected_exception_is_a_one_line_500() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        service.raise_with = RuntimeError("secret internals")
        response = await client.get("/buckets/b/keys/k")
        assert response.status == 500
        text = await response.text()
        assert text.count("\n") == 1 and "secret" not in text and "Traceback" not in text

    run(scenario)


# --- buckets ------------------------------------------------------------------------


def test_bucket_props() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.get("/buckets/b/props")
        props = (await response.json())["props"]
        assert props["name"] == "b" and props["n_val"] == 3 and props["allow_mult"] is True

        response = await client.put("/buckets/b/props", json={"props": {"n_val": 5}})
        assert response.status == 204
        response = await client.get("/buckets/b/props")
        assert (await response.json())["props"]["n_val"] == 5
        response = await client.get("/types/t/buckets/b/props")
        assert (await response.json())["props"]["n_val"] == 3

        for body in (b"{nope", b'{"n_val": 5}', b'{"props": 3}', b"[]"):
            response = await client.put("/buckets/b/props", data=body)
            assert response.status == 400, body
        response = await client.put("/buckets/b/props", json={"props": {"n_val": "x"}})
        assert response.status == 400
        assert "n_val" in await response.text()

        response = await client.delete("/buckets/b/props")
        assert response.status == 204
        response = await client.get("/buckets/b/props")
        assert (await response.json())["props"]["n_val"] == 3

    run(scenario)


def parse_stream(body: bytes) -> list[dict[str, Any]]:
    decoder, text, documents, index = json.JSONDecoder(), body.decode(), [], 0
    while index < len(text):
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def test_list_keys() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        for key in ("a", "b", "c", "d", "e"):
            await put(client, f"/buckets/b/keys/{key}")
        await put(client, "/buckets/other/keys/x")
        response = await client.get("/buckets/b/keys?keys=true")
        assert response.status == 200
        assert sorted((await response.json())["keys"]) == ["a", "b", "c", "d", "e"]

        response = await client.get("/buckets/b/keys?keys=stream")
        assert response.status == 200
        documents = parse_stream(await response.read())
        assert documents == [{"keys": ["a", "b"]}, {"keys": ["c", "d"]}, {"keys": ["e"]}]

        response = await client.get("/buckets/empty/keys?keys=stream")
        assert parse_stream(await response.read()) == [{"keys": []}]
        response = await client.get("/types/t/buckets/b/keys?keys=true")
        assert (await response.json())["keys"] == []
        for query in ("", "?keys=false", "?keys=maybe"):
            response = await client.get("/buckets/b/keys" + query)
            assert response.status == 400

    run(scenario)


def test_list_keys_errors() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        for key in ("a", "b", "c"):
            await put(client, f"/buckets/b/keys/{key}")
        service.list_error_after_pages = 1
        response = await client.get("/buckets/b/keys?keys=true")
        assert response.status == 503
        response = await client.get("/buckets/b/keys?keys=stream")
        assert response.status == 200
        documents = parse_stream(await response.read())
        assert documents == [{"keys": ["a", "b"]}, {"error": "timeout: listing"}]
        service.list_error_after_pages = 0
        response = await client.get("/buckets/b/keys?keys=stream")
        assert response.status == 503

    run(scenario)


def test_list_buckets() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        for bucket in ("x", "y", "z"):
            await put(client, f"/buckets/{bucket}/keys/k")
        await put(client, "/types/t/buckets/typed/keys/k")
        response = await client.get("/buckets?buckets=true")
        assert (await response.json()) == {"buckets": ["x", "y", "z"]}
        response = await client.get("/types/t/buckets?buckets=true")
        assert (await response.json()) == {"buckets": ["typed"]}
        response = await client.get("/buckets?buckets=stream")
        assert parse_stream(await response.read()) == [{"buckets": ["x", "y"]},
                                                       {"buckets": ["z"]}]
        response = await client.get("/buckets")
        assert response.status == 400

    run(scenario)


# --- node ---------------------------------------------------------------------------


def test_preflist() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        for path in ("/buckets/b/keys/k/preflist", "/types/t/buckets/b/keys/k/preflist"):
            response = await client.get(path)
            assert await response.json() == {"preflist": [
                {"partition": 0, "node": "a@127.0.0.1", "primary": True},
                {"partition": 1, "node": "b@127.0.0.1", "primary": True},
                {"partition": 2, "node": "c@127.0.0.1", "primary": False},
            ]}
        assert service.requests[-1] == api.PreflistRequest("t", "b", "k")

    run(scenario)


def test_ping_stats_and_resources() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.get("/ping")
        assert (response.status, await response.text()) == (200, "OK")
        await put(client, "/buckets/b/keys/k")
        await client.get("/buckets/b/keys/k")
        await client.get("/buckets/b/keys/k")
        await client.delete("/buckets/b/keys/k")
        stats = await (await client.get("/stats")).json()
        assert (stats["node_gets"], stats["node_puts"], stats["node_deletes"]) == (2, 1, 1)
        for suffix in ("mean", "median", "95", "99", "100"):
            assert stats[f"node_get_fsm_time_{suffix}"] >= 0
            assert stats[f"node_put_fsm_time_{suffix}"] >= 0
        assert stats["node_get_fsm_time_100"] >= stats["node_get_fsm_time_median"]
        assert stats["nodename"] == "fake@127.0.0.1"
        assert stats["ring_num_partitions"] == 64
        assert stats["riak_kv_version"] == "2.9.10"
        assert stats["sys_driver_version"] == "dynakv"
        assert "dynakv_version" in stats and stats["requests_in_flight"] == 0

        response = await client.get("/", headers={"Accept": "application/json"})
        resources = await response.json()
        assert resources["riak_kv_wm_buckets"] == "/buckets"
        assert resources["riak_kv_wm_ping"] == "/ping"
        assert resources["riak_kv_wm_stats"] == "/stats"
        assert resources["riak_kv_wm_bucket_type"] == "/types"
        assert 'rel="riak_kv_wm_ping"' in response.headers["Link"]
        response = await client.get("/", headers={"Accept": "text/html"})
        assert response.headers["Content-Type"].startswith("text/html")
        assert '<a href="/ping">riak_kv_wm_ping</a>' in await response.text()

    run(scenario)


def test_admin_endpoints() -> None:
    async def scenario(client: Client, service: FakeService) -> None:
        response = await client.get("/admin/status")
        assert await response.json() == {"node": "fake@127.0.0.1", "ring_size": 64}
        await put(client, "/types/t/buckets/b/keys/k", b"text")
        await put(client, "/types/t/buckets/b/keys/k", b"\xff\xfe")
        response = await client.get("/admin/local/types/t/buckets/b/keys/k")
        local = await response.json()
        assert local["node"] == "fake@127.0.0.1" and local["partition"] == 7
        assert base64.b64decode(local["context"]) == b"v2"
        first, second = local["siblings"]
        assert first["value"] == "text" and first["dot"] == ["fake-server", 1]
        assert second["value"] is None
        assert base64.b64decode(second["value_base64"]) == b"\xff\xfe"
        assert first["vtag"] == "vtag1" and first["deleted"] is False
        assert first["content_type"] == "application/octet-stream"
        assert first["last_modified_ms"] > 0

    run(scenario)
