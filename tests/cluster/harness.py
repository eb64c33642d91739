"""Real `dynakv node` processes on free 127.0.0.1 ports, always cleaned up."""

from __future__ import annotations

import functools
import http.client as http_client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 30.0
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+): a node restarted on its old
    port must not find it taken by some connection's ephemeral source port, and a
    connection to a down node's port must not meet itself (TCP self-connect). 10000 to
    19999, apart from the dev-cluster tests' 20000 to 32000."""
    rng = random.SystemRandom()
    for _ in range(1_000):
        port = rng.randrange(10_000, 20_000)
        if port in _HANDED_OUT:  # free now, but another node of this run may bind it later
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port in 10000-19999")


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30) -> HttpResult:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResult(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return HttpResult(error.code, dict(error.headers.items()), error.read())


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class NodeProcess:
    name: str
    http_port: int
    internode_port: int
    data: Path
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    pb_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pb_url(self) -> str:
        return f"pb://127.0.0.1:{self.pb_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ProcessCluster:
    def __init__(self, root: Path, size: int = 3, ring_size: int = 64,
                 extra_args: list[str] | None = None) -> None:
        self.root = root
        self.nodes = [
            NodeProcess(f"n{i}", free_port(), free_port(), root / f"n{i}")
            for i in range(1, size + 1)
        ]
        for node in self.nodes:
            node.argv = [
                sys.executable, "-m", "dynakv", "node", "--name", node.name,
                "--http", f"127.0.0.1:{node.http_port}",
                "--internode", f"127.0.0.1:{node.internode_port}",
                "--pb", f"127.0.0.1:{node.pb_port}",
                "--data", str(node.data), "--ring-size", str(ring_size), "--preset", "local",
                *(arg for other in self.nodes if other is not node
                  for arg in ("--peer", f"{other.name}=127.0.0.1:{other.internode_port}")),
                *(extra_args or []),
            ]

    def add_node(self, extra_args: list[str] | None = None) -> int:
        """A new node, started alone (no --peer): it founds a cluster of its own until it
        is joined to this one with `dynakv admin join`."""
        index = len(self.nodes) + 1
        node = NodeProcess(f"n{index}", free_port(), free_port(), self.root / f"n{index}")
        node.argv = [
            sys.executable, "-m", "dynakv", "node", "--name", node.name,
            "--http", f"127.0.0.1:{node.http_port}",
            "--internode", f"127.0.0.1:{node.internode_port}",
            "--pb", f"127.0.0.1:{node.pb_port}",
            "--data", str(node.data), "--preset", "local", *(extra_args or []),
        ]
        self.nodes.append(node)
        return len(self.nodes) - 1

    def start(self, index: int | None = None) -> None:
        for node in self.nodes if index is None else [self.nodes[index]]:
            node.data.mkdir(parents=True, exist_ok=True)
            with open(self.root / f"{node.name}.log", "ab") as log:
                node.process = subprocess.Popen(node.argv, stdout=log, stderr=subprocess.STDOUT)
        for node in self.nodes if index is None else [self.nodes[index]]:
            wait_until(functools.partial(self._ready, node), START_TIMEOUT_S,
                       f"{node.name} to answer /ping")
        wait_until(self.all_connected, START_TIMEOUT_S, "every node to see every peer up")

    def all_connected(self) -> bool:
        """Every running node sees every running member of its cluster up."""
        running = {node.name for node in self.nodes if node.alive()}
        for node in self.nodes:
            if node.name not in running:
                continue
            status = http("GET", node.url + "/admin/status", timeout=5).json()
            members = {member["name"] for member in status["members"]}
            up = {member["name"] for member in status["members"] if member["up"]}
            if not running & members <= up:
                return False
        return True

    def _ready(self, node: NodeProcess) -> bool:
        if not node.alive():
            raise AssertionError(f"{node.name} exited; log:\n{self.log(node)}")
        try:
            return http("GET", node.url + "/ping", timeout=1).status == 200
        except (OSError, http_client.HTTPException):
            return False

    def log(self, node: NodeProcess) -> str:
        path = self.root / f"{node.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self, index: int, signum: int = signal.SIGKILL) -> None:
        node = self.nodes[index]
        assert node.process is not None
        node.process.send_signal(signum)
        node.process.wait(timeout=20)

    def url(self, index: int) -> str:
        return self.nodes[index].url

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.kill(node.process.pid, signal.SIGKILL)
                    node.process.wait(timeout=5)

    # --- additions for the join/leave and failure-detection test (test_scaling.py) ---

    def send_signal(self, index: int, signum: int) -> None:
        """Send a signal and return at once (SIGSTOP, SIGCONT: the process lives on)."""
        node = self.nodes[index]
        assert node.process is not None
        node.process.send_signal(signum)

    def status(self, index: int, timeout: float = 5) -> dict[str, Any]:
        """GET /admin/status of one node."""
        reply = http("GET", self.url(index) + "/admin/status", timeout=timeout)
        result: dict[str, Any] = reply.json()
        return result

    def up_view(self, index: int) -> dict[str, bool]:
        """This node's view of who is up: member name -> up (from /admin/status)."""
        return {member["name"]: bool(member["up"]) for member in self.status(index)["members"]}


def dynakv_cli(*args: str, timeout: float = 60) -> str:
    """Run `dynakv ARGS` (as an operator would) and return its standard output."""
    result = subprocess.run([sys.executable, "-m", "dynakv", *args],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"dynakv {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout
