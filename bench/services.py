"""The servers a benchmark run measures, each started fresh on 127.0.0.1 with its own
data directory under one temporary folder, and always stopped (a `with` block).

- dynakv: three `dynakv node` processes, N=3, R=W=2, LMDB durable (group commit).
- ceiling-pb, ceiling-http: three bench/ceiling.py processes (a bare quorum server, no
  versioning, no storage), driven over Riak's PB API or its HTTP API.
- redis-replicated: a Redis primary and two replicas; every Redis with appendonly yes
  and appendfsync everysec; writes are followed by WAIT 2 (the driver's job).
- redis: one Redis, same persistence settings (the ceiling of a C server here).
- etcd: three etcd v3 members (Debian's etcd-server).

Redis and etcd come from Debian's packages; `ensure_packages` installs them when their
commands are missing (the benchmark runs as root on the project's machines).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
DEBIAN_PACKAGES = {"redis-server": "redis-server", "etcd": "etcd-server",
                   "perf": "linux-perf"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_packages(commands: list[str]) -> None:
    """apt-get install the Debian packages whose commands are missing."""
    missing = [DEBIAN_PACKAGES[c] for c in commands if shutil.which(c) is None]
    if not missing:
        return
    print(f"installing {', '.join(missing)} from Debian's packages", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)


def wait_until(predicate: Callable[[], bool], what: str,
               processes: list[subprocess.Popen[bytes]], timeout_s: float = START_TIMEOUT_S
               ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: process {process.pid} exited "
                                   f"({process.returncode})")
        with contextlib.suppress(OSError, ValueError):
            if predicate():
                return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        body: bytes = response.read()
        return body


@dataclass
class Service:
    """Processes started for one target; `urls` is what the load generator drives."""

    name: str
    root: Path
    urls: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    argvs: list[list[str]] = field(default_factory=list)  # each process's command line
    bench_args: list[str] = field(default_factory=list)

    def spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.root / log_name, "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(process)
        self.argvs.append(argv)
        return process

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dynakv_cluster(root: Path, protocol: str = "http", node_args: tuple[str, ...] = ()
                   ) -> Service:
    """Three dynakv nodes (N=3, R=W=2 are the defaults; LMDB is durable); `node_args`
    go to every `dynakv node` (e.g. ("--early-replication", "off"))."""
    service = Service("dynakv", root / "dynakv")
    names = ["n1", "n2", "n3"]
    ports = {name: (free_port(), free_port(), free_port()) for name in names}
    service.root.mkdir(parents=True)
    try:
        for name in names:
            http_port, pb_port, internode_port = ports[name]
            argv = [sys.executable, "-m", "dynakv", "node", "--name", name,
                    "--http", f"127.0.0.1:{http_port}", "--pb", f"127.0.0.1:{pb_port}",
                    "--internode", f"127.0.0.1:{internode_port}",
                    "--data", str(service.root / name), "--preset", "local",
                    "--log-level", "warning", *node_args]
            for other in names:
                if other != name:
                    argv += ["--peer", f"{other}=127.0.0.1:{ports[other][2]}"]
            service.spawn(argv, f"{name}.log")
        for name in names:
            url = f"http://127.0.0.1:{ports[name][0]}"
            wait_until(functools.partial(pings, url), f"dynakv {name}", service.processes)
        wait_until(lambda: all_up([f"http://127.0.0.1:{ports[n][0]}" for n in names]),
                   "every dynakv node to see its peers", service.processes)
    except BaseException:
        service.stop()
        raise
    if protocol == "pb":
        service.urls = [f"pb://127.0.0.1:{ports[name][1]}" for name in names]
    else:
        service.urls = [f"http://127.0.0.1:{ports[name][0]}" for name in names]
    return service


def pings(url: str) -> bool:
    return http_get(url + "/ping") == b"OK"


def etcd_healthy(url: str) -> bool:
    return bool(json.loads(http_get(url)).get("health") == "true")


def all_up(urls: list[str]) -> bool:
    for url in urls:
        status = json.loads(http_get(url + "/admin/status"))
        if not all(member["up"] for member in status["members"]):
            return False
    return True


def ceiling_cluster(root: Path, protocol: str = "http",
                    port: Callable[[], int] = free_port) -> Service:
    """Three bare quorum servers (bench/ceiling.py): N=3, R=W=2, no versioning. Each
    serves both APIs; the load generator drives the one `protocol` names. `port` gives
    free ports (tests pass their own, which never hands one out twice)."""
    service = Service(f"ceiling-{protocol}", root / f"ceiling-{protocol}")
    service.root.mkdir(parents=True)
    names = ["c1", "c2", "c3"]
    ports = {name: (port(), port(), port()) for name in names}
    try:
        for name in names:
            http_port, pb_port, internode_port = ports[name]
            argv = [sys.executable, str(HERE / "ceiling.py"), "--name", name,
                    "--http", f"127.0.0.1:{http_port}", "--pb", f"127.0.0.1:{pb_port}",
                    "--internode", f"127.0.0.1:{internode_port}"]
            for other in names:
                if other != name:
                    argv += ["--peer", f"127.0.0.1:{ports[other][2]}"]
            service.spawn(argv, f"{name}.log")
        for name in names:
            url = f"http://127.0.0.1:{ports[name][0]}"
            wait_until(functools.partial(pings, url), f"ceiling {url}", service.processes)
    except BaseException:
        service.stop()
        raise
    if protocol == "pb":
        service.urls = [f"pb://127.0.0.1:{ports[name][1]}" for name in names]
    else:
        service.urls = [f"http://127.0.0.1:{ports[name][0]}" for name in names]
    return service


REDIS_PERSISTENCE = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]


def redis_cluster(root: Path, replicas: int) -> Service:
    """A Redis primary and `replicas` replicas; each write then WAITs for all replicas."""
    ensure_packages(["redis-server"])
    import redis

    name = "redis-replicated" if replicas else "redis"
    service = Service(name, root / name)
    service.root.mkdir(parents=True)
    ports = [free_port() for _ in range(replicas + 1)]
    try:
        for index, port in enumerate(ports):
            data = service.root / f"r{index}"
            data.mkdir()
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", str(data), "--daemonize", "no", "--protected-mode", "no",
                    *REDIS_PERSISTENCE]
            if index:
                argv += ["--replicaof", "127.0.0.1", str(ports[0])]
            service.spawn(argv, f"r{index}.log")
        primary = redis.Redis(host="127.0.0.1", port=ports[0])
        wait_until(lambda: bool(primary.ping()), "the Redis primary", service.processes)
        wait_until(lambda: int(primary.info("replication")["connected_slaves"]) == replicas
                   and all(replica_synced(port) for port in ports[1:]),
                   "the Redis replicas to sync", service.processes)
        primary.close()
    except BaseException:
        service.stop()
        raise
    service.urls = [f"redis://127.0.0.1:{ports[0]}"]
    service.bench_args = ["--wait-replicas", str(replicas)] if replicas else []
    return service


def replica_synced(port: int) -> bool:
    import redis

    with redis.Redis(host="127.0.0.1", port=port) as client:
        return bool(client.info("replication").get("master_link_status") == "up")


def etcd_cluster(root: Path, members: int = 3) -> Service:
    """Three etcd v3 members; the load generator spreads its clients over them."""
    ensure_packages(["etcd"])
    service = Service("etcd", root / "etcd")
    service.root.mkdir(parents=True)
    names = [f"e{index}" for index in range(1, members + 1)]
    ports = {name: (free_port(), free_port()) for name in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    try:
        for name in names:
            client, peer = ports[name]
            argv = ["etcd", "--name", name, "--data-dir", str(service.root / name),
                    "--listen-client-urls", f"http://127.0.0.1:{client}",
                    "--advertise-client-urls", f"http://127.0.0.1:{client}",
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", "dynakv-bench", "--logger", "zap",
                    "--log-level", "warn"]
            service.spawn(argv, f"{name}.log")
        service.urls = [f"etcd://127.0.0.1:{ports[name][0]}" for name in names]
        for name in names:
            url = f"http://127.0.0.1:{ports[name][0]}/health"
            wait_until(functools.partial(etcd_healthy, url), f"etcd {name}",
                       service.processes)
    except BaseException:
        service.stop()
        raise
    return service


STARTERS: dict[str, Callable[[Path], Service]] = {
    "dynakv-http": lambda root: dynakv_cluster(root, "http"),
    "dynakv-pb": lambda root: dynakv_cluster(root, "pb"),
    "ceiling-pb": lambda root: ceiling_cluster(root, "pb"),
    "ceiling-http": lambda root: ceiling_cluster(root, "http"),
    "ceiling": lambda root: ceiling_cluster(root, "http"),  # the old name of ceiling-http
    "redis-replicated": lambda root: redis_cluster(root, 2),
    "redis": lambda root: redis_cluster(root, 0),
    "etcd": etcd_cluster,
}
