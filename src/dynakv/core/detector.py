"""Local failure detection: which peers this node believes are up (phi accrual).

Dynamo's failure detection is local: a node decides for itself that a peer is down
when the peer stops answering it, and routes around it (sloppy quorum). That is the
question this detector answers: "can *I* talk to that peer now?". Each node keeps
its own view; nothing here is gossiped, so one bad link makes a peer down only for
the node at its end.

How: every `probe_interval_ms` the node pings each peer; each pong is a heartbeat.
The detector keeps the last `limits.PHI_WINDOW_SAMPLES` gaps between a peer's
heartbeats, and computes phi accrual (Hayashibara et al. 2004, as Akka does):

    phi(t) = -log10(1 - F(t - last_heard)),  F = the normal CDF with mean
             mean(gaps) + phi_acceptable_pause_ms and deviation
             max(stdev(gaps), phi_min_std_deviation_ms)

and marks the peer down once phi passes `phi_threshold` (8 by default, as Cassandra
and Akka: a 1e-8 chance that a live peer would be this late). Phi adapts to each
link: a peer whose pongs come like clockwork is suspected sooner than one on a
jittery link. A silent peer is seen down `detection_time_ms()` after it was last
heard from: mean gap + pause + 5.61 x deviation, so with the `lan` defaults
(1 s probes, 2 s pause, 200 ms minimum deviation) about 4.1 s, and with `local`
(250 ms, 500 ms, 50 ms) about 1.03 s.

Two more sources feed it:
- anything heard from a peer (a pong, any message, a completed handshake) shows it
  alive: a down peer is up again at once, and phi counts from that moment;
- the transport: a connection that fails (refused, reset) marks the peer down at
  once; a killed process is seen down as soon as its connections reset.

Why phi accrual and not SWIM's indirect probes: an indirect probe answers "is the
peer alive somewhere?", which matters to a membership protocol that removes dead
members; but Dynamo never removes a member on suspicion (an operator does, with
`admin remove`), and for routing a request what matters is whether this node can
reach the peer itself. Phi accrual gives that, adapts to the link, and needs no
extra messages beyond the probes.

Down peers keep being probed until they answer. The gap that ends a down period
is not recorded (it measures the outage, not the link).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from dynakv.core import limits


def phi(elapsed_ms: float, mean_ms: float, std_deviation_ms: float) -> float:
    """-log10 of the chance that a heartbeat with this gap distribution comes later
    than `elapsed_ms` after the last one."""
    assert std_deviation_ms > 0
    z = (elapsed_ms - mean_ms) / std_deviation_ms
    tail = 0.5 * math.erfc(z / math.sqrt(2))
    return math.inf if tail <= 0.0 else -math.log10(tail)


def threshold_z(threshold: float) -> float:
    """The number of deviations past the mean at which phi reaches `threshold`."""
    low, high = -10.0, 40.0
    for _ in range(100):  # bisection: phi grows with z
        middle = (low + high) / 2
        if phi(middle, 0.0, 1.0) < threshold:
            low = middle
        else:
            high = middle
    return high


@dataclass(slots=True)
class PeerHealth:
    up: bool = True  # peers start up: the first failure marks them down
    next_probe_ms: int = 0
    last_heard_ms: int = 0
    last_heartbeat_ms: int | None = None
    gaps_ms: deque[int] = field(
        default_factory=lambda: deque(maxlen=limits.PHI_WINDOW_SAMPLES))
    gaps_sum: int = 0
    gaps_square_sum: int = 0


class FailureDetector:
    def __init__(self, peers: Iterable[str], probe_interval_ms: int, now_ms: int, *,
                 threshold: float = 8.0, acceptable_pause_ms: int = 0,
                 min_std_deviation_ms: int = 100) -> None:
        assert probe_interval_ms > 0 and threshold > 0
        assert acceptable_pause_ms >= 0 and min_std_deviation_ms > 0
        self.probe_interval_ms = probe_interval_ms
        self.threshold = threshold
        self.acceptable_pause_ms = acceptable_pause_ms
        self.min_std_deviation_ms = min_std_deviation_ms
        self._z = threshold_z(threshold)
        self._peers = {peer: self._new_peer(now_ms) for peer in sorted(peers)}
        # next_deadline_ms, kept until something may have moved a deadline earlier. A
        # message from a peer that is up only moves its suspicion later, so the node,
        # which asks after every event, recomputes it only after a tick or a pong: an
        # early deadline costs one tick that finds nothing, and the tick recomputes.
        self._next_deadline: int | None = None
        self._stale = True
        # A node that did not run for longer than this between two checks (a stall, a
        # pause, a starved process) has not read what its peers sent meanwhile: it
        # convicts nobody at that check (Cassandra's max local pause). Checks come at
        # least once per probe interval while it runs.
        self.local_pause_ms = probe_interval_ms + acceptable_pause_ms
        self.local_pauses = 0  # checks skipped for a pause of this node
        self._last_check_ms: int | None = None

    def _new_peer(self, now_ms: int) -> PeerHealth:
        return PeerHealth(next_probe_ms=now_ms, last_heard_ms=now_ms)

    def set_peers(self, peers: Iterable[str], now_ms: int) -> None:
        """Follow membership: new peers start up (probed at once), gone ones are forgotten."""
        wanted = set(peers)
        for peer in list(self._peers):
            if peer not in wanted:
                del self._peers[peer]
        for peer in sorted(wanted - set(self._peers)):
            self._peers[peer] = self._new_peer(now_ms)
        self._peers = dict(sorted(self._peers.items()))
        self._stale = True

    def is_up(self, peer: str) -> bool:
        health = self._peers.get(peer)
        return health is not None and health.up

    def up_peers(self) -> set[str]:
        return {peer for peer, health in self._peers.items() if health.up}

    def down_peers(self) -> list[str]:
        return [peer for peer, health in self._peers.items() if not health.up]

    # --- what feeds it ------------------------------------------------------------

    def heard_from(self, peer: str, now_ms: int) -> bool:
        """Anything from `peer` shows it alive. True if it was down."""
        health = self._peers.get(peer)
        if health is None:
            return False
        health.last_heard_ms = max(health.last_heard_ms, now_ms)
        if health.up:
            return False
        health.up = True
        self._stale = True
        health.last_heartbeat_ms = None  # the outage is not a gap of the link
        return True

    def heartbeat(self, peer: str, now_ms: int) -> bool:
        """A pong: a heartbeat, whose gap to the previous one is recorded. True if
        the peer was down."""
        health = self._peers.get(peer)
        if health is None:
            return False
        was_down = self.heard_from(peer, now_ms)
        self._stale = True  # a new gap may move its suspicion earlier
        previous = health.last_heartbeat_ms
        if previous is not None and now_ms >= previous:
            gap = now_ms - previous
            if len(health.gaps_ms) == health.gaps_ms.maxlen:
                oldest = health.gaps_ms[0]
                health.gaps_sum -= oldest
                health.gaps_square_sum -= oldest * oldest
            health.gaps_ms.append(gap)
            health.gaps_sum += gap
            health.gaps_square_sum += gap * gap
        health.last_heartbeat_ms = now_ms
        return was_down

    def connection(self, peer: str, up: bool, now_ms: int) -> bool:
        """The transport opened (up) or lost (down) its connection. True if it changed."""
        if up:
            return self.heard_from(peer, now_ms)
        health = self._peers.get(peer)
        if health is None or not health.up:
            return False
        health.up = False
        self._stale = True
        return True

    # --- phi ------------------------------------------------------------------------

    def _distribution(self, health: PeerHealth) -> tuple[float, float]:
        """(mean, deviation) of the peer's heartbeat gaps; the probe interval (with a
        quarter of it as deviation) until two gaps are known."""
        count = len(health.gaps_ms)
        if count < 2:
            mean, deviation = float(self.probe_interval_ms), self.probe_interval_ms / 4
        else:
            mean = health.gaps_sum / count
            variance = max(0.0, health.gaps_square_sum / count - mean * mean)
            deviation = math.sqrt(variance)
        return mean + self.acceptable_pause_ms, max(deviation, float(self.min_std_deviation_ms))

    def phi(self, peer: str, now_ms: int) -> float:
        """The suspicion level of `peer` now (0 for an unknown peer)."""
        health = self._peers.get(peer)
        if health is None:
            return 0.0
        mean, deviation = self._distribution(health)
        return phi(now_ms - health.last_heard_ms, mean, deviation)

    def _suspect_at_ms(self, health: PeerHealth) -> int:
        mean, deviation = self._distribution(health)
        return health.last_heard_ms + math.ceil(mean + self._z * deviation)

    def detection_time_ms(self, peer: str | None = None) -> int:
        """How long after last hearing from a peer it is marked down (for `peer`'s
        history, or for a peer with steady gaps of probe_interval_ms)."""
        health = self._peers.get(peer) if peer is not None else None
        if health is None:
            health = PeerHealth()
            health.gaps_ms.extend([self.probe_interval_ms] * 2)
            health.gaps_sum = 2 * self.probe_interval_ms
            health.gaps_square_sum = 2 * self.probe_interval_ms ** 2
        return self._suspect_at_ms(health) - health.last_heard_ms

    # --- the node's timers ----------------------------------------------------------

    def probes_due(self, now_ms: int) -> list[str]:
        """Peers to ping now; each is pinged once per probe_interval_ms."""
        self._stale = True  # called on every tick
        due = []
        for peer, health in self._peers.items():
            if now_ms >= health.next_probe_ms:
                due.append(peer)
                health.next_probe_ms = now_ms + self.probe_interval_ms
        return due

    def expire(self, now_ms: int) -> list[str]:
        """Peers whose phi passed the threshold: marked down now. None right after a
        pause of this node itself (see local_pause_ms): the next check, once what came
        in meanwhile is read, convicts those still silent."""
        self._stale = True  # called on every tick
        last, self._last_check_ms = self._last_check_ms, now_ms
        if last is not None and now_ms - last > self.local_pause_ms:
            self.local_pauses += 1
            return []
        newly_down = []
        for peer, health in self._peers.items():
            if health.up and now_ms >= self._suspect_at_ms(health):
                health.up = False
                newly_down.append(peer)
        return newly_down

    def next_deadline_ms(self) -> int | None:
        """The next probe or suspicion due; possibly earlier than that (see __init__),
        never later."""
        if self._stale:
            deadlines = [health.next_probe_ms for health in self._peers.values()]
            deadlines += [self._suspect_at_ms(health)
                          for health in self._peers.values() if health.up]
            self._next_deadline = min(deadlines) if deadlines else None
            self._stale = False
        return self._next_deadline
