"""Five hosts in Linux network namespaces, joined by a bridge, each running a real node.

A run makes, under a run-specific prefix `dkcXXXX` (4 hex digits):

- a bridge `dkcXXXX-br` in the root namespace, with the address 10.77.S.254/24 so that
  clients in the root namespace reach every host (S: a /24 no other interface uses);
- per host i (1..5) a namespace `dkcXXXX-n<i>` whose `eth0` (one end of a veth pair, the
  other end `dkcXXXX-v<i>` is a port of the bridge) has the address 10.77.S.<i>/24;
- in each namespace one nftables table of its own, `inet dynakv_chaos` (the nemesis
  writes its drop rules there, and only there; the machine's ruleset is never touched),
  and `ip dynakv_chaos_nat` for the delay proxy's redirections;
- one `dynakv node` process per namespace (`ip netns exec NS python -m dynakv node`),
  HTTP on ADDR:8098, PB on ADDR:8087, internode on ADDR:8100, its data directory and
  its log file under the run's folder.

Every run records itself in /run/dynakv-chaos/<prefix>.json (its pid, namespaces,
links, node pids); `cleanup_leftovers()` removes whatever a run whose process is gone
left behind, so a crashed run never blocks the next. `ChaosNet` is a context manager
and also tears down from atexit and on SIGTERM/SIGINT/SIGHUP.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from dynakv.devcluster import alive
from tests.cluster.harness import http

STATE_DIR = Path(os.environ.get("DYNAKV_CHAOS_STATE", "/run/dynakv-chaos"))
PREFIX_RE = re.compile(r"^dkc[0-9a-f]{4}$")
TABLE = "dynakv_chaos"
NAT_TABLE = "dynakv_chaos_nat"
HTTP_PORT = 8098
PB_PORT = 8087
INTERNODE_PORT = 8100
ROOT_HOST = 254
INSTALL_SCRIPT = Path(__file__).with_name("install-tools.sh")
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 30.0


class ChaosUnavailable(RuntimeError):
    """What this machine lacks for the namespace harness (the tests skip with it)."""


def run(*argv: str, check: bool = True, input_text: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, input=input_text,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def in_ns(ns: str, *argv: str, check: bool = True,
          input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, *argv, check=check, input_text=input_text)


# --- capabilities ---------------------------------------------------------------------

def ensure_tools() -> None:
    """Install iproute2 and nftables from Debian's packages if `ip` or `nft` is missing
    (tests/chaos/install-tools.sh; root only)."""
    if shutil.which("ip") and shutil.which("nft") and shutil.which("ss"):
        return
    if os.geteuid() != 0:
        return  # probe() names what is missing
    run("sh", str(INSTALL_SCRIPT), timeout=600)


def probe() -> list[str]:
    """What is missing for the harness, one plain phrase each; empty when all is there.

    Checks, in a throw-away namespace: root, the `ip`, `nft` and `ss` commands, network
    namespaces, a veth pair, a bridge, an nftables table with a filter chain, and
    nftables' `numgen random` (the packet-loss nemesis)."""
    if os.geteuid() != 0:
        return ["root (network namespaces, veth and nftables need CAP_NET_ADMIN; "
                f"running as uid {os.geteuid()})"]
    ensure_tools()
    missing = [f"the `{tool}` command (apt-get install {package})"
               for tool, package in (("ip", "iproute2"), ("nft", "nftables"),
                                     ("ss", "iproute2"))
               if shutil.which(tool) is None]
    if missing:
        return missing
    name = f"dkcp{secrets.token_hex(2)}"
    ns, bridge, veth = f"{name}-ns", f"{name}-br", f"{name}-v"
    steps: list[tuple[str, list[list[str]]]] = [
        ("network namespaces (ip netns add)", [["ip", "netns", "add", ns]]),
        ("veth pairs", [["ip", "link", "add", veth, "type", "veth", "peer", "name",
                         f"{name}-p"], ["ip", "link", "set", f"{name}-p", "netns", ns]]),
        ("Linux bridges", [["ip", "link", "add", bridge, "type", "bridge"],
                           ["ip", "link", "set", veth, "master", bridge]]),
        ("nftables (a table and a filter chain in a namespace)", [
            ["ip", "netns", "exec", ns, "nft", "add", "table", "inet", TABLE],
            ["ip", "netns", "exec", ns, "nft", "add chain inet " + TABLE +
             " output { type filter hook output priority 0 ; }"]]),
        ("nftables numgen random (packet loss)", [
            ["ip", "netns", "exec", ns, "nft", "add rule inet " + TABLE +
             " output ip daddr 10.0.0.1 numgen random mod 100 < 10 drop"]]),
        ("nftables nat (the delay proxy's redirection)", [
            ["ip", "netns", "exec", ns, "nft", "add", "table", "ip", NAT_TABLE],
            ["ip", "netns", "exec", ns, "nft", "add chain ip " + NAT_TABLE +
             " output { type nat hook output priority -100 ; }"]]),
    ]
    try:
        for what, commands in steps:
            for argv in commands:
                if run(*argv, check=False).returncode != 0:
                    return [what]
        return []
    finally:
        run("ip", "link", "del", bridge, check=False)
        run("ip", "link", "del", veth, check=False)
        run("ip", "netns", "del", ns, check=False)


def has_netem() -> bool:
    """Whether the kernel has the netem qdisc (tc ... netem delay); this machine's has not."""
    name = f"dkcq{secrets.token_hex(2)}"
    try:
        if run("ip", "netns", "add", name, check=False).returncode != 0:
            return False
        return in_ns(name, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                     check=False).returncode == 0
    finally:
        run("ip", "netns", "del", name, check=False)


def unavailable_reason() -> str | None:
    """None when the harness can run here; else why not (for pytest.skip)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    try:
        missing = probe()
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        return f"capability probe failed: {error}"
    if missing:
        return "chaos harness unavailable, missing: " + "; ".join(missing)
    return None


# --- leftovers --------------------------------------------------------------------------

def _remove_run(record: dict[str, Any]) -> None:
    for pid in record.get("node_pids", []):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    for pid in record.get("helper_pids", []):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    prefix = record["prefix"]
    for ns in _existing_namespaces():
        if ns.startswith(prefix + "-"):
            _kill_namespace_processes(ns)
            run("ip", "netns", "del", ns, check=False)
    for link in _existing_links():
        if link.startswith(prefix + "-"):
            run("ip", "link", "del", link, check=False)


def _kill_namespace_processes(ns: str) -> None:
    result = run("ip", "netns", "pids", ns, check=False)
    for word in result.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(word), signal.SIGKILL)


def _existing_namespaces() -> list[str]:
    result = run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _existing_links() -> list[str]:
    result = run("ip", "-o", "link", "show", check=False)
    names = []
    for line in result.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def cleanup_leftovers() -> list[str]:
    """Remove what earlier runs left whose owning process is gone; return their prefixes.
    Runs still alive (another test on this machine) are left alone."""
    removed = []
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    for path in sorted(STATE_DIR.glob("dkc*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {"prefix": path.stem, "owner_pid": -1}
        if not PREFIX_RE.match(str(record.get("prefix", ""))):
            continue
        if alive(int(record.get("owner_pid", -1))):
            continue
        _remove_run(record)
        path.unlink(missing_ok=True)
        removed.append(record["prefix"])
    # Namespaces or links of our naming with no record at all (a record lost midway).
    recorded = {p.stem for p in STATE_DIR.glob("dkc*.json")}
    orphans = {name.split("-")[0] for name in _existing_namespaces() + _existing_links()
               if PREFIX_RE.match(name.split("-")[0])} - recorded
    for prefix in sorted(orphans):
        _remove_run({"prefix": prefix})
        removed.append(prefix)
    return removed


def _free_subnet() -> int:
    used = set(re.findall(r"inet 10\.77\.(\d+)\.", run("ip", "-4", "addr", check=False).stdout))
    for third in range(0, 255):
        if str(third) not in used:
            return third
    raise ChaosUnavailable("no free 10.77.x.0/24 subnet")


# --- hosts and nodes ----------------------------------------------------------------------

@dataclass
class Host:
    index: int
    name: str  # the node's name: n1..n5
    ns: str
    address: str
    data: Path
    log_path: Path
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}"

    @property
    def internode(self) -> str:
        return f"{self.address}:{INTERNODE_PORT}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ChaosNet:
    """The namespaces, the bridge and a node per host. Use as a context manager."""

    def __init__(self, root: Path, size: int = 5, preset: str = "local",
                 ring_size: int = 64, extra_args: list[str] | None = None) -> None:
        self.root = root
        self.size = size
        self.preset = preset
        self.ring_size = ring_size
        self.extra_args = extra_args or []
        self.prefix = f"dkc{secrets.token_hex(2)}"
        self.bridge = f"{self.prefix}-br"
        self.subnet = -1
        self.hosts: list[Host] = []
        self.helper_pids: set[int] = set()
        self._up = False
        self._attached = False
        self._old_handlers: dict[int, Any] = {}

    @classmethod
    def attach(cls, prefix: str) -> ChaosNet:
        """The run `prefix` started by another process (`python -m tests.chaos.net up`),
        to apply network faults to it; its owner keeps the nodes and tears it down."""
        path = STATE_DIR / f"{prefix}.json"
        try:
            record = json.loads(path.read_text())
        except OSError:
            raise ChaosUnavailable(f"no running chaos net {prefix!r} (no {path})") from None
        net = cls(Path(record["root"]), size=len(record["hosts"]))
        net.prefix, net.subnet, net.bridge = record["prefix"], record["subnet"], record["bridge"]
        net.hosts = [Host(i, h["name"], h["ns"], h["address"], Path(record["root"]) / h["name"],
                          Path(h["log"])) for i, h in enumerate(record["hosts"], start=1)]
        net.helper_pids = set(record.get("helper_pids", []))
        net._attached = True
        return net

    # addresses
    @property
    def client_address(self) -> str:
        return f"10.77.{self.subnet}.{ROOT_HOST}"

    def urls(self) -> list[str]:
        return [host.url for host in self.hosts]

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host named {name!r}; hosts: {[h.name for h in self.hosts]}")

    # lifecycle
    def __enter__(self) -> ChaosNet:
        self.up()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.down()

    def up(self, start_nodes: bool = True) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise ChaosUnavailable(reason)
        cleanup_leftovers()
        self.subnet = _free_subnet()
        self.root.mkdir(parents=True, exist_ok=True)
        self._install_teardown()
        self._up = True
        self._record()
        try:
            self._make_network()
            self._record()
            if start_nodes:
                self.start_all()
        except BaseException:
            self.down()
            raise

    def _make_network(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.client_address}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for index in range(1, self.size + 1):
            ns = f"{self.prefix}-n{index}"
            outside, inside = f"{self.prefix}-v{index}", f"{self.prefix}-i{index}"
            address = f"10.77.{self.subnet}.{index}"
            run("ip", "netns", "add", ns)
            self.hosts.append(Host(index, f"n{index}", ns, address,
                                   self.root / f"n{index}", self.root / f"n{index}.log"))
            run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            run("ip", "link", "set", inside, "netns", ns)
            run("ip", "link", "set", outside, "master", self.bridge)
            run("ip", "link", "set", outside, "up")
            in_ns(ns, "ip", "link", "set", inside, "name", "eth0")
            in_ns(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            in_ns(ns, "ip", "link", "set", "eth0", "up")
            in_ns(ns, "ip", "link", "set", "lo", "up")
            in_ns(ns, "nft", "-f", "-", input_text=self.base_ruleset())
        for host in self.hosts:
            host.argv = self._node_argv(host)

    @staticmethod
    def base_ruleset(filter_rules: str = "", nat_rules: str = "") -> str:
        """Our two tables in one namespace, emptied and refilled in one nft transaction."""
        return (
            f"table inet {TABLE}\n"
            f"delete table inet {TABLE}\n"
            f"table ip {NAT_TABLE}\n"
            f"delete table ip {NAT_TABLE}\n"
            f"table inet {TABLE} {{\n"
            f"  chain input {{ type filter hook input priority 0; policy accept; }}\n"
            f"  chain output {{ type filter hook output priority 0; policy accept;\n"
            f"{filter_rules}  }}\n"
            f"}}\n"
            f"table ip {NAT_TABLE} {{\n"
            f"  chain output {{ type nat hook output priority -100; policy accept;\n"
            f"{nat_rules}  }}\n"
            f"}}\n"
        )

    def _node_argv(self, host: Host) -> list[str]:
        peers = [arg for other in self.hosts if other is not host
                 for arg in ("--peer", f"{other.name}={other.internode}")]
        return ["ip", "netns", "exec", host.ns, sys.executable, "-m", "dynakv", "node",
                "--name", host.name, "--http", f"{host.address}:{HTTP_PORT}",
                "--pb", f"{host.address}:{PB_PORT}", "--internode", host.internode,
                "--data", str(host.data), "--ring-size", str(self.ring_size),
                "--preset", self.preset, *peers, *self.extra_args]

    def down(self) -> None:
        """Stop every node and remove every namespace, link and record of this run."""
        if not self._up:
            return
        self._up = False
        for host in self.hosts:
            if host.process is not None and host.alive():
                with contextlib.suppress(ProcessLookupError):
                    host.process.send_signal(signal.SIGCONT)
                    host.process.send_signal(signal.SIGTERM)
        for host in self.hosts:
            if host.process is not None:
                try:
                    host.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    host.process.kill()
                    host.process.wait(timeout=5)
        for pid in list(self.helper_pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _remove_run({"prefix": self.prefix})
        (STATE_DIR / f"{self.prefix}.json").unlink(missing_ok=True)
        self._restore_handlers()

    def _record(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path = STATE_DIR / f"{self.prefix}.json"
        if self._attached:  # only the helpers change; the owner stays the owner
            record = json.loads(path.read_text())
            record["helper_pids"] = sorted(self.helper_pids)
            self._write_record(path, record)
            return
        record = {
            "prefix": self.prefix, "owner_pid": os.getpid(), "subnet": self.subnet,
            "root": str(self.root), "bridge": self.bridge,
            "hosts": [{"name": h.name, "ns": h.ns, "address": h.address, "url": h.url,
                       "log": str(h.log_path)} for h in self.hosts],
            "node_pids": [h.process.pid for h in self.hosts if h.process is not None],
            "helper_pids": sorted(self.helper_pids),
        }
        self._write_record(path, record)

    @staticmethod
    def _write_record(path: Path, record: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)

    def _install_teardown(self) -> None:
        atexit.register(self.down)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
        self._old_handlers = {}
        atexit.unregister(self.down)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.down()
        raise SystemExit(128 + signum)

    # nodes
    def start_all(self) -> None:
        for host in self.hosts:
            self.start(host.name, wait=False)
        for host in self.hosts:
            self.wait_ready(host)
        self.wait_connected()

    def start(self, name: str, wait: bool = True) -> None:
        host = self.host(name)
        if host.alive():
            raise RuntimeError(f"{name} is already running")
        host.data.mkdir(parents=True, exist_ok=True)
        with open(host.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            host.process = subprocess.Popen(host.argv, stdout=log, stderr=subprocess.STDOUT)
        host.paused = False
        self._record()
        if wait:
            self.wait_ready(host)

    def wait_ready(self, host: Host, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not host.alive():
                raise RuntimeError(f"{host.name} exited; log:\n{self.log_tail(host)}")
            with contextlib.suppress(OSError, ValueError):
                if http("GET", host.url + "/ping", timeout=1).status == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{host.name} did not answer /ping in {timeout_s} s; "
                           f"log:\n{self.log_tail(host)}")

    def up_views(self) -> dict[str, dict[str, bool]]:
        """Each running, unpaused node's view: member -> up."""
        views = {}
        for host in self.hosts:
            if not host.alive() or host.paused:
                continue
            status = http("GET", host.url + "/admin/status", timeout=5).json()
            views[host.name] = {m["name"]: bool(m["up"]) for m in status["members"]}
        return views

    def wait_connected(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Every running node sees every running node up."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            running = {h.name for h in self.hosts if h.alive() and not h.paused}
            try:
                last = views = self.up_views()
                if all(all(view.get(name, False) for name in running)
                       for view in views.values()):
                    return
            except (OSError, ValueError) as error:
                last = error
            time.sleep(0.2)
        raise TimeoutError(f"nodes did not all see each other up in {timeout_s} s: {last}")

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        host = self.host(name)
        assert host.process is not None, f"{name} was never started"
        host.process.send_signal(signum)
        if signum in (signal.SIGKILL, signal.SIGTERM):
            if host.paused:
                host.process.send_signal(signal.SIGCONT)
            host.process.wait(timeout=20)
            host.paused = False

    def pause(self, name: str) -> None:
        host = self.host(name)
        assert host.process is not None and host.alive(), f"{name} is not running"
        host.process.send_signal(signal.SIGSTOP)
        host.paused = True

    def resume(self, name: str) -> None:
        host = self.host(name)
        assert host.process is not None, f"{name} was never started"
        host.process.send_signal(signal.SIGCONT)
        host.paused = False

    def log_tail(self, host: Host, chars: int = 4000) -> str:
        if not host.log_path.exists():
            return ""
        return host.log_path.read_text(errors="replace")[-chars:]

    # network rules
    def set_rules(self, name: str, filter_rules: str = "", nat_rules: str = "") -> None:
        """Replace this host's nftables rules (its own tables only), atomically."""
        in_ns(self.host(name).ns, "nft", "-f", "-",
              input_text=self.base_ruleset(filter_rules, nat_rules))

    def list_rules(self, name: str) -> str:
        ns = self.host(name).ns
        return (in_ns(ns, "nft", "list", "table", "inet", TABLE).stdout
                + in_ns(ns, "nft", "list", "table", "ip", NAT_TABLE).stdout)

    def kill_connections(self, name: str, port: int = INTERNODE_PORT) -> None:
        """Destroy this host's TCP sockets to and from `port` (ss -K), so that peers
        reconnect and new rules (the delay proxy's redirections) apply to them."""
        ns = self.host(name).ns
        in_ns(ns, "ss", "-K", "dport", "=", str(port), check=False)
        in_ns(ns, "ss", "-K", "sport", "=", str(port), check=False)

    def record_helper(self, pid: int, alive: bool = True) -> None:
        if alive:
            self.helper_pids.add(pid)
        else:
            self.helper_pids.discard(pid)
        self._record()


@contextlib.contextmanager
def chaos_net(root: Path, **options: Any) -> Iterator[ChaosNet]:
    net = ChaosNet(root, **options)
    with net:
        yield net
