"""Three real nodes on ephemeral ports: quorum reads and writes, siblings, deletes,
a node killed with SIGKILL, and a restart on the same data directory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.cluster.harness import ProcessCluster, http, wait_until

pytestmark = pytest.mark.cluster

MULTIPART = {"Accept": "multipart/mixed"}


def key_url(cluster: ProcessCluster, index: int, key: str, query: str = "") -> str:
    return f"{cluster.url(index)}/types/default/buckets/skeleton/keys/{key}{query}"


def put(cluster: ProcessCluster, index: int, key: str, value: bytes,
        vclock: str | None = None, query: str = "?w=2") -> None:
    headers = {"Content-Type": "text/plain"}
    if vclock:
        headers["X-Riak-Vclock"] = vclock
    result = http("PUT", key_url(cluster, index, key, query), value, headers)
    assert result.status in (200, 204), (result.status, result.body)


def test_put_get_with_quorums(cluster: ProcessCluster) -> None:
    put(cluster, 0, "k1", b"hello")
    for index in range(3):
        result = http("GET", key_url(cluster, index, "k1", "?r=2"))
        assert result.status == 200
        assert result.body == b"hello"
        assert result.headers["Content-Type"].startswith("text/plain")
        assert result.headers.get("X-Riak-Vclock")


def test_concurrent_writers_make_siblings_and_a_merged_write_resolves_them(
    cluster: ProcessCluster,
) -> None:
    put(cluster, 0, "k2", b"base")
    vclock = http("GET", key_url(cluster, 1, "k2")).headers["X-Riak-Vclock"]
    put(cluster, 1, "k2", b"left", vclock)
    put(cluster, 2, "k2", b"right", vclock)
    result = http("GET", key_url(cluster, 0, "k2"), headers=MULTIPART)
    assert result.status == 300
    assert b"left" in result.body and b"right" in result.body and b"base" not in result.body
    listed = http("GET", key_url(cluster, 0, "k2"))
    assert listed.status == 300 and listed.body.startswith(b"Siblings:")
    put(cluster, 2, "k2", b"merged", result.headers["X-Riak-Vclock"])
    final = http("GET", key_url(cluster, 1, "k2"))
    assert (final.status, final.body) == (200, b"merged")


def test_delete_leaves_a_tombstone(cluster: ProcessCluster) -> None:
    put(cluster, 0, "k3", b"doomed")
    vclock = http("GET", key_url(cluster, 0, "k3")).headers["X-Riak-Vclock"]
    deleted = http("DELETE", key_url(cluster, 1, "k3"), headers={"X-Riak-Vclock": vclock})
    assert deleted.status == 204
    result = http("GET", key_url(cluster, 2, "k3"))
    assert result.status == 404
    assert result.headers.get("X-Riak-Deleted") == "true"
    assert result.headers.get("X-Riak-Vclock")


def test_node_killed_then_restarted_keeps_its_data(cluster: ProcessCluster) -> None:
    for i in range(20):
        put(cluster, i % 3, f"before-{i}", f"v{i}".encode(), query="?w=3")
    cluster.kill(2, signal.SIGKILL)
    # R=W=2 on N=3 still succeed with one node down, whichever node coordinates.
    for i in range(20):
        put(cluster, i % 2, f"during-{i}", f"d{i}".encode())
        result = http("GET", key_url(cluster, (i + 1) % 2, f"before-{i}", "?r=2"))
        assert (result.status, result.body) == (200, f"v{i}".encode())
    cluster.start(2)
    for i in range(20):
        local = http("GET", f"{cluster.url(2)}/admin/local/types/default/buckets/skeleton/"
                            f"keys/before-{i}")
        assert local.status == 200, local.body
        siblings = json.loads(local.body)["siblings"]
        assert [s["value"] for s in siblings] == [f"v{i}"]
    for i in range(20):
        result = http("GET", key_url(cluster, 2, f"during-{i}", "?r=2"))
        assert (result.status, result.body) == (200, f"d{i}".encode())


def test_a_crash_below_python_leaves_the_stacks_in_the_log(cluster: ProcessCluster) -> None:
    """faulthandler is on in every node: a fatal signal (as a segfault in an extension
    would raise) writes each thread's Python stack to the node's log, where a node once
    died in the chaos schedule leaving nothing."""
    cluster.kill(2, signal.SIGSEGV)
    log = cluster.log(cluster.nodes[2])
    assert "Fatal Python error: Segmentation fault" in log, log[-2000:]
    assert "dynakv/net/server.py" in log or "asyncio" in log or "uvloop" in log, log[-2000:]
    cluster.start(2)  # the fixture stops every node


def test_bucket_props_set_on_one_node_reach_every_node(cluster: ProcessCluster) -> None:
    body = json.dumps({"props": {"n_val": 2, "allow_mult": True}}).encode()
    result = http("PUT", f"{cluster.url(0)}/buckets/propsy/props", body,
                  {"Content-Type": "application/json"})
    assert result.status == 204, result.body

    def everywhere() -> bool:
        return all(
            http("GET", f"{cluster.url(i)}/buckets/propsy/props").json()["props"]["n_val"] == 2
            for i in range(3)
        )

    wait_until(everywhere, 10, "bucket props on every node")
    bad = http("GET", f"{cluster.url(1)}/buckets/propsy/keys/x?r=3")
    assert bad.status == 400  # r above the bucket's n_val of 2
    assert b"n_val" in bad.body


def dynakv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynakv", *args], capture_output=True,
                          text=True, timeout=60)


def test_command_line_get_put_delete_and_admin(cluster: ProcessCluster) -> None:
    url = cluster.url(0)
    put_result = dynakv("put", "--url", url, "cli", "k", "hello")
    assert put_result.returncode == 0, put_result.stderr
    got = dynakv("get", "--url", cluster.url(1), "--json", "cli", "k")
    assert got.returncode == 0, got.stderr
    data = json.loads(got.stdout)
    assert [s["value"] for s in data["siblings"]] == ["hello"] and data["context"]
    status = dynakv("admin", "status", "--node", url, "--json")
    assert json.loads(status.stdout)["ring_size"] == 64
    assert json.loads(status.stdout)["failure_detector"]["local_pauses"] >= 0
    human = dynakv("admin", "status", "--node", url)
    assert "n1" in human.stdout and "partitions" in human.stdout
    assert "check(s) skipped after a pause of this node" in human.stdout
    local = dynakv("admin", "local-get", "--node", cluster.url(2), "--json", "cli", "k")
    assert [s["value"] for s in json.loads(local.stdout)["siblings"]] == ["hello"]
    assert dynakv("delete", "--url", url, "cli", "k").returncode == 0
    missing = dynakv("get", "--url", url, "cli", "k")
    assert missing.returncode == 1 and "deleted" in missing.stderr
    unreachable = dynakv("admin", "status", "--node", "http://127.0.0.1:9")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
