"""Local failure detection: which peers this node believes are up.

Dynamo's failure detection is local: a node decides for itself that a peer is down
when the peer stops answering. Two sources feed this detector:
- the transport: a connection that fails marks the peer down at once, and one
  whose handshake completes counts as hearing from the peer;
- probes: every `probe_interval_ms` the node pings each peer; anything heard from
  a peer (a pong, or any other message) marks it up; a probe unanswered for
  `probe_timeout_ms` marks it down (this catches a paused or wedged process whose
  connections stay open). Down peers keep being probed until they answer.

So a killed peer is seen down as soon as its connections reset, and a silent one
within probe_interval_ms + probe_timeout_ms. The membership work may replace this
with gossip-fed phi accrual behind the same interface (is_up, up_peers, heard_from,
connection, probes_due, expire, next_deadline_ms).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class PeerHealth:
    up: bool = True  # peers start up: the first failure marks them down
    next_probe_ms: int = 0
    probe_sent_ms: int | None = None  # an unanswered probe was sent then


class FailureDetector:
    def __init__(self, peers: Iterable[str], probe_interval_ms: int, probe_timeout_ms: int,
                 now_ms: int) -> None:
        assert probe_interval_ms > 0 and probe_timeout_ms > 0
        self.probe_interval_ms = probe_interval_ms
        self.probe_timeout_ms = probe_timeout_ms
        self._peers = {peer: PeerHealth(next_probe_ms=now_ms) for peer in sorted(peers)}

    def set_peers(self, peers: Iterable[str], now_ms: int) -> None:
        """Follow membership: new peers start up (probed at once), gone ones are forgotten."""
        wanted = set(peers)
        for peer in list(self._peers):
            if peer not in wanted:
                del self._peers[peer]
        for peer in sorted(wanted - set(self._peers)):
            self._peers[peer] = PeerHealth(next_probe_ms=now_ms)
        self._peers = dict(sorted(self._peers.items()))

    def is_up(self, peer: str) -> bool:
        health = self._peers.get(peer)
        return health is not None and health.up

    def up_peers(self) -> set[str]:
        return {peer for peer, health in self._peers.items() if health.up}

    def down_peers(self) -> list[str]:
        return [peer for peer, health in self._peers.items() if not health.up]

    def heard_from(self, peer: str) -> bool:
        """Anything from `peer` shows it alive. True if it was down."""
        health = self._peers.get(peer)
        if health is None:
            return False
        health.probe_sent_ms = None
        was_down = not health.up
        health.up = True
        return was_down

    def connection(self, peer: str, up: bool) -> bool:
        """The transport opened (up) or lost (down) its connection. True if it changed."""
        if up:
            return self.heard_from(peer)
        health = self._peers.get(peer)
        if health is None or not health.up:
            return False
        health.up = False
        health.probe_sent_ms = None
        return True

    def probes_due(self, now_ms: int) -> list[str]:
        """Peers to ping now; each is pinged once per probe_interval_ms."""
        due = []
        for peer, health in self._peers.items():
            if now_ms >= health.next_probe_ms:
                due.append(peer)
                health.next_probe_ms = now_ms + self.probe_interval_ms
                if health.probe_sent_ms is None:
                    health.probe_sent_ms = now_ms
        return due

    def expire(self, now_ms: int) -> list[str]:
        """Peers whose probe went unanswered too long: marked down now."""
        newly_down = []
        for peer, health in self._peers.items():
            sent = health.probe_sent_ms
            if health.up and sent is not None and now_ms - sent >= self.probe_timeout_ms:
                health.up = False
                newly_down.append(peer)
        return newly_down

    def next_deadline_ms(self) -> int | None:
        deadlines = [health.next_probe_ms for health in self._peers.values()]
        deadlines += [health.probe_sent_ms + self.probe_timeout_ms
                      for health in self._peers.values()
                      if health.up and health.probe_sent_ms is not None]
        return min(deadlines) if deadlines else None
