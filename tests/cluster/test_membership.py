"""Real processes: a node started alone joins a running cluster (admin join, plan,
commit); gossip spreads the new ring; anti-entropy fills its partitions; it leaves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.harness import ProcessCluster, http, wait_until

pytestmark = pytest.mark.cluster

KEYS = 300
DEADLINE_S = 60


def admin(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dynakv", "admin", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def staged(cluster: ProcessCluster, index: int, what: str) -> bool:
    plan = http("GET", f"{cluster.url(index)}/admin/plan").json()
    return any(change["status"] == what for change in plan["staged"])


def status(cluster: ProcessCluster, index: int) -> dict[str, object]:
    data: dict[str, object] = http("GET", f"{cluster.url(index)}/admin/status").json()
    return data


def member_statuses(data: dict[str, object]) -> dict[str, str]:
    """Each member's status in a node's /admin/status."""
    members = data["members"]
    assert isinstance(members, list)
    return {member["name"]: member["status"] for member in members}


def put_keys(cluster: ProcessCluster) -> None:
    """k0 to k{KEYS-1} = v0..., with w=3, through the first three nodes in turn."""
    for i in range(KEYS):
        url = f"{cluster.url(i % 3)}/buckets/m/keys/k{i}?w=3"
        assert http("PUT", url, f"v{i}".encode(), {"Content-Type": "text/plain"}).status == 204


def test_join_plan_commit_and_leave(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, size=3)
    try:
        cluster.start()
        put_keys(cluster)
        new = cluster.add_node()
        cluster.start(new)
        print(admin("join", cluster.url(0), "--node", cluster.url(new)))
        wait_until(lambda: all(staged(cluster, i, "joining") for i in range(3)), DEADLINE_S,
                   "gossip of the join to every node")
        plan = admin("plan", "--node", cluster.url(1))
        assert "joining" in plan and "n4" in plan, plan
        print(admin("commit", "--node", cluster.url(2)))  # forwarded to the claimant

        def everyone_has_ring(version: int, members: int) -> bool:
            for index in range(len(cluster.nodes)):
                data = status(cluster, index)
                valid = [m for m in data["members"]  # type: ignore[attr-defined]
                         if m["status"] == "valid"]
                if data["ring_version"] != version or len(valid) != members:
                    return False
            return True

        wait_until(lambda: everyone_has_ring(2, 4), DEADLINE_S, "the new ring everywhere")
        ring = http("GET", f"{cluster.url(new)}/admin/ring").json()
        owned = sum(1 for entry in ring["owners"] if entry["node"] == "n4")
        assert owned == 16  # 64 partitions over 4 equal nodes

        def partition_keys(index: int) -> dict[str, int]:
            anti_entropy = status(cluster, index)["anti_entropy"]
            assert isinstance(anti_entropy, dict)
            keys = anti_entropy["partition_keys"]
            assert isinstance(keys, dict)
            return keys

        def new_node_filled() -> bool:
            keys, first = partition_keys(new), partition_keys(0)
            return sum(keys.values()) > 0 and all(
                count == first[partition] for partition, count in keys.items()
                if partition in first)

        wait_until(new_node_filled, DEADLINE_S, "anti-entropy to fill the new node's partitions")
        for i in range(KEYS):
            got = http("GET", f"{cluster.url(new)}/buckets/m/keys/k{i}")
            assert (got.status, got.body) == (200, f"v{i}".encode())

        print(admin("leave", "--node", cluster.url(new)))
        wait_until(lambda: staged(cluster, 0, "leaving"), DEADLINE_S, "gossip of the leave")
        print(admin("commit", "--node", cluster.url(0)))
        wait_until(lambda: status(cluster, 0)["ring_version"] == 3, DEADLINE_S, "the leave")
        ring = http("GET", f"{cluster.url(0)}/admin/ring").json()
        assert all(entry["node"] != "n4" for entry in ring["owners"])
        for i in range(KEYS):
            got = http("GET", f"{cluster.url(i % 3)}/buckets/m/keys/k{i}?r=2")
            assert (got.status, got.body) == (200, f"v{i}".encode())
    finally:
        cluster.stop()


def test_a_dead_node_is_removed_and_its_replicas_rebuilt(tmp_path: Path) -> None:
    """`admin remove` of a killed node: refused while the node asked sees it up, staged
    once it is seen down, committed; the others own its partitions and anti-entropy
    gives them its replicas back from the other copies. Then a live one, forced: it
    learns that it was removed."""
    cluster = ProcessCluster(tmp_path, size=4)
    try:
        cluster.start()
        put_keys(cluster)
        live = subprocess.run([sys.executable, "-m", "dynakv", "admin", "remove", "n2",
                               "--node", cluster.url(0)], capture_output=True, text=True,
                              timeout=60)
        assert live.returncode != 0 and "n2 is up as seen from n1" in live.stderr, live
        cluster.kill(3)
        wait_until(lambda: not cluster.up_view(0)["n4"], DEADLINE_S, "n1 to see n4 down")
        print(admin("remove", "n4", "--node", cluster.url(0)))
        wait_until(lambda: staged(cluster, 1, "removing"), DEADLINE_S, "gossip of the removal")
        plan = admin("plan", "--node", cluster.url(1))
        assert "removing n4" in plan and "without handoff" in plan, plan
        print(plan)
        print(admin("commit", "--node", cluster.url(2)))  # forwarded to the claimant, n1

        def removed_everywhere() -> bool:
            for index in range(3):
                data = status(cluster, index)
                members = member_statuses(data)
                if data["ring_version"] != 2 or members.get("n4", "removed") != "removed":
                    return False
            return True

        wait_until(removed_everywhere, DEADLINE_S, "the removal everywhere")
        ring = http("GET", f"{cluster.url(0)}/admin/ring").json()
        assert all(entry["node"] != "n4" for entry in ring["owners"])

        def copies() -> int:
            total = 0
            for index in range(3):
                anti_entropy = status(cluster, index)["anti_entropy"]
                assert isinstance(anti_entropy, dict)
                total += sum(anti_entropy["partition_keys"].values())
            return total

        # Each key on its three owners again: n4's replicas rebuilt on the new owners.
        wait_until(lambda: copies() == 3 * KEYS, DEADLINE_S, "anti-entropy to rebuild replicas")
        for i in range(KEYS):
            got = http("GET", f"{cluster.url(i % 3)}/buckets/m/keys/k{i}?r=3")
            assert (got.status, got.body) == (200, f"v{i}".encode())

        # A live member removed anyway (--force) is told, though no member talks to it
        # any more: the state comes back on its own connections, and it stops serving.
        print(admin("remove", "n3", "--force", "--node", cluster.url(0)))
        wait_until(lambda: staged(cluster, 1, "removing"), DEADLINE_S, "gossip of the removal")
        print(admin("commit", "--node", cluster.url(1)))

        def told() -> bool:
            members = member_statuses(status(cluster, 2))
            got = http("GET", f"{cluster.url(2)}/buckets/m/keys/k0")
            return members["n3"] == "removed" and got.status == 503

        def held_by_n3() -> list[int]:
            return [i for i in range(0, KEYS, 10)
                    if http("GET", f"{cluster.url(2)}/admin/local/buckets/m/keys/k{i}"
                            ).json()["siblings"]]

        assert held_by_n3()
        wait_until(told, DEADLINE_S, "n3 to learn that it was removed")
        # It hands off what it held, as a leaver does (the others take transfers from it).
        wait_until(lambda: not held_by_n3(), DEADLINE_S, "n3 to hand its keys off")
        for i in range(KEYS):
            got = http("GET", f"{cluster.url(i % 2)}/buckets/m/keys/k{i}?r=2")
            assert (got.status, got.body) == (200, f"v{i}".encode())
    finally:
        cluster.stop()
