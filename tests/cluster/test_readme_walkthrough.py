"""`dynakv dev` and the README's curl walkthrough, run exactly as written."""

from __future__ import annotations

import http.client as http_client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.cluster.harness import http, wait_until

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(nodes: int) -> int:
    rng = random.Random()
    for _ in range(200):
        # Below Linux's ephemeral range (32768+): a connection to a port no one listens
        # on could otherwise meet itself (TCP self-connect) while a node is down.
        base = rng.randrange(20000, 32000, 10)
        if all(port_free(base + 10 * i + offset) for i in range(nodes) for offset in (0, 1, 2)):
            return base
    raise RuntimeError("no free ports")


def stop_dev(dev: subprocess.Popen[bytes]) -> None:
    """SIGINT, as Ctrl-C would send; killed if it has not stopped within 30 s (its
    returncode is then None)."""
    dev.send_signal(signal.SIGINT)
    try:
        dev.wait(timeout=30)
    except subprocess.TimeoutExpired:
        dev.kill()


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"<!-- walkthrough:start -->(.*?)<!-- walkthrough:end -->", text, re.S)
    assert section, "README has no walkthrough section"
    blocks = re.findall(r"```bash\n(.*?)```", section.group(1), re.S)
    assert blocks
    return "\n".join(blocks)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_dev_cluster_and_readme_walkthrough(tmp_path: Path) -> None:
    base = free_base_port(3)
    data = tmp_path / "dev"
    dev = subprocess.Popen(
        [sys.executable, "-m", "dynakv", "dev", "--base-port", str(base), "--data", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    pids: set[int] = set()
    wait_until_quiet: list[int] = []
    try:
        urls = [f"http://127.0.0.1:{base + 10 * i}" for i in range(3)]
        wait_until(lambda: (data / "cluster.json").exists(), 30, "cluster.json")
        wait_until(lambda: all(_ping(url) for url in urls), 30, "three nodes answering")
        wait_until(lambda: all(_all_up(url) for url in urls), 30, "every node seeing the others")
        nodes = json.loads((data / "cluster.json").read_text())["nodes"]
        assert [node["http"] for node in nodes] == urls
        for node in nodes:
            pids.add(node["pid"])
            cmdline = Path(f"/proc/{node['pid']}/cmdline").read_bytes().split(b"\0")
            assert b"node" in cmdline and node["name"].encode() in cmdline
            assert Path(node["argv"][0]).is_absolute() and Path(node["data"]).is_absolute()
            assert node["peer"] == f"127.0.0.1:{int(node['http'].rsplit(':', 1)[1]) + 2}"

        env = {**os.environ, "DYNAKV_URL": urls[0], "DYNAKV_DATA": str(data)}
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], env=env,
                                capture_output=True, text=True, timeout=120)
        out = result.stdout
        assert result.returncode == 0, result.stdout + result.stderr
        assert out.startswith("OK")
        assert "300 Multiple Choices" in out and "multipart/mixed" in out
        assert "green" in out and "yellow" in out
        assert "green and yellow" in out
        assert "X-Riak-Deleted: true" in out
        keys = json.loads(out.strip().splitlines()[-1])["keys"]
        assert "apple" in keys and "pear" not in keys

        # dev2 was killed and restarted by hand: dev follows its new pid.
        wait_until(lambda: _ping(urls[1]), 30, "dev2 restarted")

        def new_pid() -> int | None:
            node = json.loads((data / "cluster.json").read_text())["nodes"][1]
            return int(node["pid"]) if node["pid"] not in pids else None

        wait_until(lambda: new_pid() is not None, 10, "cluster.json to show dev2's new pid")
        restarted = new_pid()
        assert restarted is not None
        pids.add(restarted)
    finally:
        stop_dev(dev)
        wait_until_quiet = [pid for pid in pids if alive(pid)]
        for pid in wait_until_quiet:  # never leave a node behind, whatever happened
            os.kill(pid, signal.SIGKILL)
    assert dev.returncode == 0
    assert not wait_until_quiet, f"Ctrl-C left nodes running: {wait_until_quiet}"


def _all_up(url: str) -> bool:
    members = http("GET", url + "/admin/status", timeout=5).json()["members"]
    return all(member["up"] for member in members)


def _ping(url: str) -> bool:
    try:
        return http("GET", url + "/ping", timeout=1).status == 200
    except (OSError, http_client.HTTPException):
        return False


def test_dev_add_joins_a_weighted_node_and_ctrl_c_stops_it_too(tmp_path: Path) -> None:
    base = free_base_port(4)
    data = tmp_path / "dev"
    dev = subprocess.Popen(
        [sys.executable, "-m", "dynakv", "dev", "--base-port", str(base), "--data", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    pids: list[int] = []
    try:
        urls = [f"http://127.0.0.1:{base + 10 * i}" for i in range(3)]
        wait_until(lambda: all(_ping(url) for url in urls), 30, "three nodes answering")
        wait_until(lambda: all(_all_up(url) for url in urls), 30, "every node seeing the others")
        added = subprocess.run([sys.executable, "-m", "dynakv", "dev", "add", "--data",
                                str(data), "--weight", "2"],
                               capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stdout + added.stderr
        nodes = json.loads((data / "cluster.json").read_text())["nodes"]
        assert [n["name"] for n in nodes] == ["dev1", "dev2", "dev3", "dev4"]
        pids = [int(n["pid"]) for n in nodes]
        for command in ("plan", "commit"):
            result = subprocess.run([sys.executable, "-m", "dynakv", "admin", command,
                                     "--node", urls[1]], capture_output=True, text=True,
                                    timeout=60)
            assert result.returncode == 0, result.stdout + result.stderr

        def weighted() -> bool:
            ring = http("GET", urls[2] + "/admin/ring").json()
            counts = Counter(entry["node"] for entry in ring["owners"])
            # Weight 2 of 5 would be 25.6 of 64 partitions, but with N = 3 a node owns at
            # most 64 // 3 = 21 (the claim's rule 1, distinct replicas, before weight).
            return counts["dev4"] == 21 and all(counts[f"dev{i}"] in (14, 15)
                                                for i in (1, 2, 3))

        wait_until(weighted, 30, "dev4 to own about twice the partitions of the others")
    finally:
        stop_dev(dev)
        left = [pid for pid in pids if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert not left, f"Ctrl-C left nodes running: {left}"


def test_sigint_stops_dev_even_when_it_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A process started in the background by a script inherits SIGINT ignored (and
    Python then leaves it so): dev still stops its nodes on SIGINT, as the nodes do."""
    base = free_base_port(1)
    data = tmp_path / "dev"
    dev = subprocess.Popen(
        [sys.executable, "-m", "dynakv", "dev", "--nodes", "1", "--base-port", str(base),
         "--data", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    pid = 0
    try:
        wait_until(lambda: _ping(f"http://127.0.0.1:{base}"), 30, "the node answering")
        pid = int(json.loads((data / "cluster.json").read_text())["nodes"][0]["pid"])
    finally:
        stop_dev(dev)
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert dev.returncode == 0
    assert not alive(pid)
