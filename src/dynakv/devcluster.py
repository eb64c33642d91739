"""`dynakv dev`: a local cluster of real node processes, in the foreground.

Node i (from 1) is named dev<i> and serves HTTP on base-port + 10(i-1) on
127.0.0.1, its PB API (Riak's Protocol Buffers protocol) on + 1 (listed in
cluster.json as `pb`, a port number), and its internode protocol on + 2. Its
data lives in DIR/dev<i> and is kept between runs. DIR/cluster.json (written
atomically, refreshed when a node restarted by hand writes a new pid) says, for
each node, its HTTP URL, internode address, pid, data directory, and `argv`: the
exact command that starts that node again alone. dev neither exits nor restarts
anything when a node dies; Ctrl-C stops every node of the cluster, also nodes
restarted by hand (found by the pid file each node keeps in its data directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from dynakv.storage.datadir import write_json_atomically

STOP_TIMEOUT_S = 15.0


def add_dev_parser(commands: Any) -> None:
    p = commands.add_parser("dev", help="run a local cluster in the foreground")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--base-port", type=int, default=8098, help="first node's HTTP port")
    p.add_argument("--data", default="dev-data", help="data folder (default ./dev-data)")
    p.add_argument("--ring-size", type=int, default=64, help="partitions (at creation)")
    p.set_defaults(run=run_dev)
    sub = p.add_subparsers(dest="dev_command")
    add = sub.add_parser("add", help="start one more node beside a running dev cluster and "
                         "stage its join")
    add.add_argument("--data", default="dev-data", help="the dev cluster's data folder")
    add.add_argument("--weight", type=int, default=1, help="its share of partitions")
    add.add_argument("--zone", default="", help="its failure zone")
    add.set_defaults(run=run_dev_add)


def node_argv(index: int, count: int, base_port: int, data: Path, ring_size: int) -> list[str]:
    def ports(i: int) -> tuple[int, int, int]:
        http = base_port + 10 * (i - 1)
        return http, http + 1, http + 2

    http, pb, internode = ports(index)
    argv = [
        sys.executable, "-m", "dynakv", "node",
        "--name", f"dev{index}",
        "--http", f"127.0.0.1:{http}",
        "--internode", f"127.0.0.1:{internode}",
        "--pb", f"127.0.0.1:{pb}",
        "--data", str(data / f"dev{index}"),
        "--ring-size", str(ring_size),
        "--preset", "local",
    ]
    for other in range(1, count + 1):
        if other != index:
            argv += ["--peer", f"dev{other}=127.0.0.1:{ports(other)[2]}"]
    return argv


def read_pid(data: Path) -> int | None:
    try:
        return int((data / "node.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class DevCluster:
    def __init__(self, args: argparse.Namespace) -> None:
        if not 1 <= args.nodes <= 64:
            raise ValueError("--nodes must be between 1 and 64")
        self.data = Path(args.data).resolve()
        self.nodes: list[dict[str, Any]] = []
        self.children: list[subprocess.Popen[bytes]] = []
        for index in range(1, args.nodes + 1):
            http = args.base_port + 10 * (index - 1)
            self.nodes.append({
                "name": f"dev{index}",
                "http": f"http://127.0.0.1:{http}",
                "pb": http + 1,
                "peer": f"127.0.0.1:{http + 2}",
                "data": str(self.data / f"dev{index}"),
                "argv": node_argv(index, args.nodes, args.base_port, self.data, args.ring_size),
                "pid": None,
            })

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            Path(node["data"]).mkdir(parents=True, exist_ok=True)
            with open(Path(node["data"]) / "node.log", "ab") as log:
                child = subprocess.Popen(node["argv"], stdout=log, stderr=subprocess.STDOUT)
            self.children.append(child)
            node["pid"] = child.pid
        self.write()

    def write(self) -> None:
        write_json_atomically(self.data / "cluster.json", {"nodes": self.nodes})

    def refresh(self) -> None:
        """Follow nodes restarted by hand: their pid files name the new process."""
        for child in self.children:
            child.poll()  # reap children that died, so they do not look alive
        changed = False
        known = {node["name"] for node in self.nodes}
        for node in read_cluster(self.data):  # nodes added by `dynakv dev add`
            if node["name"] not in known:
                self.nodes.append(node)
                changed = True
        for node in self.nodes:
            pid = read_pid(Path(node["data"]))
            if pid is not None and pid != node["pid"] and alive(pid):
                node["pid"] = pid
                changed = True
        if changed:
            self.write()

    def wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        pending = [node["http"] for node in self.nodes]
        while pending and time.monotonic() < deadline:
            pending = [url for url in pending if not ping(url)]
            time.sleep(0.1)
        return not pending

    def pids(self) -> set[int]:
        found = {child.pid for child in self.children if child.poll() is None}
        for node in self.nodes:
            pid = read_pid(Path(node["data"]))
            if pid is not None and alive(pid):
                found.add(pid)
        return found

    def stop(self) -> None:
        self.refresh()  # a node `dynakv dev add` started since the last second's refresh
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            for child in self.children:
                child.poll()
            time.sleep(0.05)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def read_cluster(data: Path) -> list[dict[str, Any]]:
    try:
        nodes: list[dict[str, Any]] = json.loads((data / "cluster.json").read_text())["nodes"]
    except (OSError, ValueError, KeyError):
        return []
    return nodes


def run_dev_add(args: argparse.Namespace) -> int:
    """Start dev<n+1> alone, record it in cluster.json, and stage its join."""
    data = Path(args.data).resolve()
    nodes = read_cluster(data)
    if not nodes:
        raise ValueError(f"{data / 'cluster.json'}: no dev cluster there (run `dynakv dev`)")
    if args.weight < 1:
        raise ValueError("--weight must be a positive integer")
    index = len(nodes) + 1
    base_port = int(nodes[0]["http"].rsplit(":", 1)[1])
    http = base_port + 10 * (index - 1)
    name = f"dev{index}"
    node_data = data / name
    argv = [sys.executable, "-m", "dynakv", "node", "--name", name,
            "--http", f"127.0.0.1:{http}", "--internode", f"127.0.0.1:{http + 2}",
            "--pb", f"127.0.0.1:{http + 1}",
            "--data", str(node_data), "--preset", "local", "--weight", str(args.weight)]
    if args.zone:
        argv += ["--zone", args.zone]
    node_data.mkdir(parents=True, exist_ok=True)
    with open(node_data / "node.log", "ab") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    url = f"http://127.0.0.1:{http}"
    nodes.append({"name": name, "http": url, "pb": http + 1, "peer": f"127.0.0.1:{http + 2}",
                  "data": str(node_data), "argv": argv, "pid": child.pid})
    write_json_atomically(data / "cluster.json", {"nodes": nodes})
    deadline = time.monotonic() + 30
    while not ping(url):
        if time.monotonic() > deadline or child.poll() is not None:
            raise ValueError(f"{name} did not start; see {node_data / 'node.log'}")
        time.sleep(0.1)
    body = json.dumps({"name": name, "address": f"127.0.0.1:{http + 2}",
                       "weight": args.weight, "zone": args.zone}).encode()
    request = urllib.request.Request(nodes[0]["http"] + "/admin/join", data=body,
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30):
        pass
    print(f"{name} started ({url}, pid {child.pid}) and its join is staged; "
          f"`dynakv admin plan` and `dynakv admin commit` apply it")
    return 0


def run_dev(args: argparse.Namespace) -> int:
    cluster = DevCluster(args)
    # Ctrl-C in a terminal reaches the nodes too (same process group); SIGTERM to
    # dev alone is turned into the same orderly stop. SIGINT is handled even when dev
    # was started with it ignored (a background job of a script inherits that), as
    # the nodes handle it: Ctrl-C or `kill -INT` always stops the cluster.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        cluster.start()  # interrupted midway, the nodes started so far are stopped too
        if not cluster.wait_ready(30):
            print("dynakv dev: some nodes did not answer within 30 s; see node.log in each "
                  "data directory", file=sys.stderr)
        print(f"dynakv dev: {len(cluster.nodes)} nodes, data in {cluster.data}")
        for node in cluster.nodes:
            print(f"  {node['name']}: {node['http']}  pb://127.0.0.1:{node['pb']}  "
                  f"(pid {node['pid']}, internode {node['peer']})")
        print(f"cluster.json: {cluster.data / 'cluster.json'}; Ctrl-C stops the cluster",
              flush=True)
        reported: set[str] = set()
        while True:
            time.sleep(1)
            cluster.refresh()
            for node in cluster.nodes:
                running = node["pid"] is not None and alive(int(node["pid"]))
                if not running and node["name"] not in reported:
                    print(f"dynakv dev: {node['name']} is not running (restart it with the "
                          "argv in cluster.json)", flush=True)
                    reported.add(node["name"])
                elif running:
                    reported.discard(node["name"])
    except KeyboardInterrupt:
        print("dynakv dev: stopping every node", flush=True)
    finally:
        cluster.stop()
    return 0
