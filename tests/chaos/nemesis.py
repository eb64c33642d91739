"""The nemesis: faults on a ChaosNet, and seeded schedules of them.

Network faults are nftables rules in each namespace's own table (`inet dynakv_chaos`,
chain `output`): a packet from host A to host B is dropped in A's namespace. They
only match the hosts' addresses, so clients in the root namespace always reach every
node (a partition cuts the nodes from each other, as between racks, not the clients).

- Partition(groups): every packet between two groups is dropped, both ways
  (majority/minority: two groups of 3 and 2).
- Bridge(left, right, bridge): left and right are cut from each other, the bridge host
  talks to both.
- OneWay(sources, targets): packets from sources to targets are dropped; the other way
  passes (TCP then half works: a SYN gets in, its SYN-ACK does not get out).
- Loss(percent): each internode packet is dropped with that chance
  (`numgen random mod 100 < P drop`).
- Delay(host, delay_ms): the kernel has no netem, so the host's internode connections,
  both ways, are redirected with nftables DNAT through a delaying TCP proxy
  (tests/chaos/delayproxy.py) in the root namespace, and their existing connections are
  destroyed (`ss -K`) so that they reconnect through it. With netem, tc would be used.
- Kill(host): SIGKILL; cleared by starting it again on its data directory.
- Pause(host): SIGSTOP; cleared by SIGCONT. Paused longer than the failure detector
  takes to notice.

Network faults are not meant to overlap with Delay (the drop rules match the hosts'
addresses, which DNAT to the proxy hides); schedules never overlap them.
`heal()` clears every fault. A schedule is a seeded list of windows
(start_s, duration_s, fault): the fault is applied at start_s and cleared after
duration_s.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tests.chaos.netns import INTERNODE_PORT, ChaosNet, has_netem


@dataclass(frozen=True)
class Partition:
    groups: tuple[tuple[str, ...], ...]

    def describe(self) -> str:
        return "partition " + " | ".join(",".join(group) for group in self.groups)


@dataclass(frozen=True)
class Bridge:
    left: tuple[str, ...]
    right: tuple[str, ...]
    bridge: str

    def describe(self) -> str:
        return f"bridge {','.join(self.left)} <{self.bridge}> {','.join(self.right)}"


@dataclass(frozen=True)
class OneWay:
    sources: tuple[str, ...]
    targets: tuple[str, ...]

    def describe(self) -> str:
        return f"one-way drop {','.join(self.sources)} -> {','.join(self.targets)}"


@dataclass(frozen=True)
class Loss:
    percent: int

    def describe(self) -> str:
        return f"loss {self.percent}%"


@dataclass(frozen=True)
class Delay:
    host: str
    delay_ms: int

    def describe(self) -> str:
        return f"delay {self.host} {self.delay_ms} ms each way"


@dataclass(frozen=True)
class Kill:
    host: str

    def describe(self) -> str:
        return f"kill -9 {self.host} (restart at the end of the window)"


@dataclass(frozen=True)
class Pause:
    host: str

    def describe(self) -> str:
        return f"SIGSTOP {self.host} (SIGCONT at the end of the window)"


Fault = Partition | Bridge | OneWay | Loss | Delay | Kill | Pause
NETWORK_FAULTS = (Partition, Bridge, OneWay, Loss)


@dataclass(frozen=True)
class Window:
    start_s: float
    duration_s: float
    fault: Fault
    until_heal: bool = False  # not cleared at its end: the heal clears it

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass
class Nemesis:
    net: ChaosNet
    drops: set[tuple[str, str]] = field(default_factory=set)
    loss: dict[tuple[str, str], int] = field(default_factory=dict)
    delays: dict[str, int] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    proxy: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)
    netem: bool | None = None

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.net.hosts]

    # --- applying and clearing -------------------------------------------------------

    def apply(self, fault: Fault) -> str:
        """Apply a fault; return what was done ("skipped: ..." if it cannot be)."""
        match fault:
            case Partition(groups):
                for a, b in _cross(groups):
                    self.drops |= {(a, b), (b, a)}
                self._write_rules()
            case Bridge(left, right, _):
                for a, b in _cross((left, right)):
                    self.drops |= {(a, b), (b, a)}
                self._write_rules()
            case OneWay(sources, targets):
                self.drops |= {(a, b) for a in sources for b in targets if a != b}
                self._write_rules()
            case Loss(percent):
                for a in self.names:
                    for b in self.names:
                        if a != b:
                            self.loss[(a, b)] = percent
                self._write_rules()
            case Delay(host, delay_ms):
                self.delays[host] = delay_ms
                self._update_delays(changed=host)
            case Kill(host):
                self.net.kill(host, signal.SIGKILL)
                self.killed.add(host)
            case Pause(host):
                self.net.pause(host)
                self.paused.add(host)
        note = fault.describe()
        if isinstance(fault, Delay):
            note += (" (through the delaying TCP proxy; the kernel has "
                     f"{'netem, unused' if self.netem else 'no netem'})")
        self.log.append(f"{time.strftime('%H:%M:%S')} apply {note}")
        return note

    def clear(self, fault: Fault) -> None:
        """Undo one fault (a partition's drops, a kill by a restart, a pause by SIGCONT)."""
        match fault:
            case Partition(groups):
                for a, b in _cross(groups):
                    self.drops -= {(a, b), (b, a)}
                self._write_rules()
            case Bridge(left, right, _):
                for a, b in _cross((left, right)):
                    self.drops -= {(a, b), (b, a)}
                self._write_rules()
            case OneWay(sources, targets):
                self.drops -= {(a, b) for a in sources for b in targets}
                self._write_rules()
            case Loss():
                self.loss.clear()
                self._write_rules()
            case Delay(host, _):
                self.delays.pop(host, None)
                self._update_delays(changed=host)
            case Kill(host):
                if host in self.killed:
                    self.net.start(host)
                    self.killed.discard(host)
            case Pause(host):
                if host in self.paused:
                    self.net.resume(host)
                    self.paused.discard(host)
        self.log.append(f"{time.strftime('%H:%M:%S')} clear {fault.describe()}")

    def heal_network(self) -> None:
        """Remove every drop, loss and delay rule and the delay proxy (processes are
        left as they are)."""
        delayed = bool(self.delays or self.net.helper_pids)
        self.drops.clear()
        self.loss.clear()
        self.delays.clear()
        self._stop_proxy()
        self._write_rules()
        if delayed:  # connections through the proxy: cut, so they reconnect directly
            for host in self.names:
                self.net.kill_connections(host)

    def heal(self) -> None:
        """Remove every fault: rules, delays, pauses; start killed nodes again."""
        self.drops.clear()
        self.loss.clear()
        delayed = list(self.delays)
        self.delays.clear()
        for host in delayed:
            self._update_delays(changed=host)
        self._write_rules()
        for host in sorted(self.paused):
            self.net.resume(host)
        self.paused.clear()
        for host in sorted(self.killed):
            self.net.start(host)
        self.killed.clear()
        self._stop_proxy()
        self.log.append(f"{time.strftime('%H:%M:%S')} heal")

    # --- rules -----------------------------------------------------------------------

    def _filter_rules(self, host: str) -> str:
        address = {h.name: h.address for h in self.net.hosts}
        lines = [f"    ip daddr {address[b]} counter drop comment \"drop {a}->{b}\"\n"
                 for a, b in sorted(self.drops) if a == host]
        lines += [f"    ip daddr {address[b]} numgen random mod 100 < {p} counter drop "
                  f"comment \"loss {a}->{b}\"\n"
                  for (a, b), p in sorted(self.loss.items()) if a == host and p > 0]
        return "".join(lines)

    def _nat_rules(self, host: str) -> str:
        """DNAT to the delay proxy: a delayed host's connections to everyone, everyone's
        connections to a delayed host."""
        lines = []
        for other in self.net.hosts:
            if other.name == host:
                continue
            if host in self.delays or other.name in self.delays:
                lines.append(f"    ip daddr {other.address} tcp dport {INTERNODE_PORT} "
                             f"dnat to {self.net.client_address}:{self._proxy_port(other.name)}"
                             f" comment \"delay {host}->{other.name}\"\n")
        return "".join(lines)

    def _write_rules(self) -> None:
        for host in self.names:
            self.net.set_rules(host, self._filter_rules(host), self._nat_rules(host))

    def _proxy_port(self, host: str) -> int:
        return 18100 + self.net.host(host).index

    def _update_delays(self, changed: str) -> None:
        self._stop_proxy()
        if self.delays:
            if self.netem is None:
                self.netem = has_netem()
            delay_ms = max(self.delays.values())
            routes = [f"{self._proxy_port(h.name)}={h.internode}" for h in self.net.hosts]
            with open(self.net.root / "delayproxy.log", "ab") as log:
                self.proxy = subprocess.Popen(
                    [sys.executable, "-m", "tests.chaos.delayproxy", "--listen",
                     self.net.client_address, "--delay-ms", str(delay_ms),
                     *(arg for route in routes for arg in ("--route", route))],
                    stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
            self.net.record_helper(self.proxy.pid)
            assert self.proxy.stdout is not None
            ready = self.proxy.stdout.readline().strip()
            if ready != "ready":
                raise RuntimeError(f"delay proxy did not start: {ready!r}")
        self._write_rules()
        # Existing connections keep their old path: cut them so they reconnect.
        for host in self.names:
            if host == changed or host not in self.killed | self.paused:
                self.net.kill_connections(host)

    def _stop_proxy(self) -> None:
        if self.proxy is not None:
            self.proxy.terminate()
            try:
                self.proxy.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait(timeout=5)
            self.net.record_helper(self.proxy.pid, alive=False)
            self.proxy = None
        for pid in sorted(self.net.helper_pids):  # a proxy started by another process
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            self.net.record_helper(pid, alive=False)

    def counters(self, host: str) -> str:
        """This host's rules with their packet counters (nft list table)."""
        return self.net.list_rules(host)


def _cross(groups: tuple[tuple[str, ...], ...]) -> list[tuple[str, str]]:
    pairs = []
    for i, group in enumerate(groups):
        for other in groups[i + 1:]:
            pairs += [(a, b) for a in group for b in other]
    return pairs


# --- schedules -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    name: str
    seed: int
    preset: str
    windows: tuple[Window, ...]
    warmup_s: float
    settle_s: float  # time after the last window's end before the heal

    @property
    def faults_end_s(self) -> float:
        return max((w.end_s for w in self.windows), default=0.0)

    def describe(self) -> list[str]:
        return [f"{w.start_s:6.1f}s +{w.duration_s:4.1f}s  {w.fault.describe()}"
                + ("  (until the heal)" if w.until_heal else "") for w in self.windows]


def _one_of_each(rng: random.Random, names: list[str]) -> list[Fault]:
    shuffled = rng.sample(names, len(names))
    majority, minority = tuple(sorted(shuffled[:3])), tuple(sorted(shuffled[3:]))
    bridge = rng.choice(names)
    rest = [n for n in names if n != bridge]
    rng.shuffle(rest)
    half = len(rest) // 2
    left, right = tuple(sorted(rest[:half])), tuple(sorted(rest[half:]))
    source = rng.choice(names)
    targets = tuple(sorted(rng.sample([n for n in names if n != source], 2)))
    return [
        Partition((majority, minority)),
        Bridge(left, right, bridge),
        OneWay((source,), targets),
        Loss(rng.choice([10, 20, 30])),
        Kill(rng.choice(names)),
        Pause(rng.choice(names)),
        Delay(rng.choice(names), rng.choice([100, 200, 300])),
    ]


def _final(rng: random.Random, names: list[str], at: float,
           duration_s: float) -> list[Window]:
    """The faults the heal ends: a majority/minority partition with a node of the
    minority killed inside it, so that the heal starts from divergent replicas (writes
    the minority missed, hints on fallbacks, a node down) and `converge_s` measures
    their repair."""
    shuffled = rng.sample(names, len(names))
    majority, minority = tuple(sorted(shuffled[:3])), tuple(sorted(shuffled[3:]))
    return [Window(at, duration_s, Partition((majority, minority)), until_heal=True),
            Window(at + duration_s / 3, duration_s * 2 / 3, Kill(rng.choice(minority)),
                   until_heal=True)]


def make_schedule(kind: str, seed: int, names: list[str] | None = None) -> Schedule:
    """`short`: each kind of fault once, in a seeded order, 8 s each with 3 s of calm
    between, then a partition with a kill inside it that lasts until the heal (about
    85 s of faults; preset local). `long`: three rounds, 15-25 s windows, where a kill
    or a pause may also fall inside a partition, then the same final partition for
    20 s (preset lan: the detector takes about 4 s, request timeouts are 10 s)."""
    names = names or [f"n{i}" for i in range(1, 6)]
    rng = random.Random(seed)
    windows: list[Window] = []
    if kind == "short":
        faults = _one_of_each(rng, names)
        rng.shuffle(faults)
        at = 0.0
        for fault in faults:
            windows.append(Window(at, 8.0, fault))
            at += 11.0
        windows += _final(rng, names, at, 9.0)
        return Schedule("short", seed, "local", tuple(windows), warmup_s=5.0, settle_s=0.0)
    if kind == "long":
        at = 0.0
        for _ in range(3):
            faults = _one_of_each(rng, names)
            rng.shuffle(faults)
            for fault in faults:
                duration = rng.uniform(15.0, 25.0)
                windows.append(Window(at, duration, fault))
                if isinstance(fault, Partition | Bridge) and rng.random() < 0.5:
                    # a process fault inside the network fault
                    victim = rng.choice(names)
                    inner: Fault = Kill(victim) if rng.random() < 0.5 else Pause(victim)
                    windows.append(Window(at + 3.0, duration - 6.0, inner))
                at += duration + rng.uniform(4.0, 8.0)
        windows += _final(rng, names, at, 21.0)
        return Schedule("long", seed, "lan", tuple(windows), warmup_s=10.0, settle_s=0.0)
    raise ValueError(f"unknown schedule {kind!r}; choose short or long")


def run_schedule(nemesis: Nemesis, schedule: Schedule, t0: float,
                 on_event: object = None) -> list[str]:
    """Apply and clear the schedule's windows at their times (t0 = time.monotonic() at
    the schedule's zero), until the last window's end. Returns the log of what was
    done. Does not heal: windows marked until_heal are still in force at the return."""
    events: list[tuple[float, int, Window]] = []
    for window in schedule.windows:
        events.append((window.start_s, 1, window))
        events.append((window.end_s, 0, window))  # for an until_heal window: only a wait
    events.sort(key=lambda e: (e[0], e[1]))
    done = []
    for at, is_start, window in events:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if is_start:
            note = nemesis.apply(window.fault)
            done.append(f"{time.monotonic() - t0:6.1f}s apply {note}")
        elif window.until_heal:
            continue
        else:
            nemesis.clear(window.fault)
            done.append(f"{time.monotonic() - t0:6.1f}s clear {window.fault.describe()}")
        if callable(on_event):
            on_event(done[-1])
    return done
