"""The simulated internode network: delay, loss, duplication, reordering, partitions.

Every message is encoded with the production codec when sent and decoded when
delivered, as the TCP transport does, so the nodes share no objects. A link
(src -> dst) is FIFO like a TCP connection unless a message is picked to be
reordered, when it may overtake the messages before it. Per message, with the
current NetworkParams: dropped with probability `loss`, sent twice with
probability `duplicate`, delayed uniformly within [delay_min_ms, delay_max_ms].

A link can be slowed down (a congested link): its messages take a fixed extra delay.

Partitions cut directed links: a symmetric partition cuts both directions, a
one-way partition only src -> dst. A message on a cut link is dropped, whether it
was cut when the message was sent or while it was in flight (the connection
broke and its buffer with it). Delivery to a crashed node is dropped by the
cluster. `connected(a, b)` says whether a connection between a and b could open
now, which needs both directions (a TCP handshake goes both ways).

Bound (checked by checkers.check_queues): at most LINK_IN_FLIGHT_MAX messages in
flight per link, the production transport's per-peer queue limit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dynakv.core import limits
from dynakv.sim.scheduler import Scheduler

LINK_IN_FLIGHT_MAX = limits.PEER_QUEUE_MAX_MESSAGES

Link = tuple[str, str]


@dataclass(frozen=True, slots=True)
class NetworkParams:
    delay_min_ms: int = 1
    delay_max_ms: int = 5
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance a message ignores FIFO order on its link

    def __post_init__(self) -> None:
        assert 0 <= self.delay_min_ms <= self.delay_max_ms
        assert 0.0 <= self.loss < 1.0 and 0.0 <= self.duplicate < 1.0
        assert 0.0 <= self.reorder <= 1.0


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0  # dropped by random loss
    cut: int = 0  # dropped by a partition
    duplicated: int = 0
    message_bytes_max: int = 0
    link_in_flight_max: int = 0


Deliver = Callable[[str, str, bytes], None]


class Network:
    def __init__(self, scheduler: Scheduler, rng: random.Random, deliver: Deliver) -> None:
        self.scheduler = scheduler
        self.rng = rng
        self.params = NetworkParams()
        self.stats = NetworkStats()
        self._deliver = deliver
        self._cut: set[Link] = set()
        self._slow: dict[Link, int] = {}  # extra delay per link (a congested link)
        self._last_arrival_ms: dict[Link, int] = {}
        self._in_flight: dict[Link, int] = {}

    # --- partitions -------------------------------------------------------------------

    def cut(self, links: Iterable[Link]) -> None:
        self._cut.update(links)

    def restore(self, links: Iterable[Link]) -> None:
        self._cut.difference_update(links)

    def heal_all(self) -> None:
        self._cut.clear()
        self._slow.clear()

    def slow_down(self, links: Iterable[Link], extra_ms: int) -> None:
        """Messages sent on `links` from now on take `extra_ms` longer (0: back to normal)."""
        for link in links:
            if extra_ms:
                self._slow[link] = extra_ms
            else:
                self._slow.pop(link, None)

    def blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cut

    def connected(self, a: str, b: str) -> bool:
        return (a, b) not in self._cut and (b, a) not in self._cut

    def cut_links(self) -> list[Link]:
        return sorted(self._cut)

    # --- messages ---------------------------------------------------------------------

    def send(self, src: str, dst: str, payload: bytes) -> None:
        stats = self.stats
        stats.sent += 1
        stats.message_bytes_max = max(stats.message_bytes_max, len(payload))
        if self.blocked(src, dst):
            stats.cut += 1
            return
        params = self.params
        rng = self.rng
        if params.loss and rng.random() < params.loss:
            stats.lost += 1
            return
        copies = 2 if params.duplicate and rng.random() < params.duplicate else 1
        stats.duplicated += copies - 1
        link = (src, dst)
        for _ in range(copies):
            arrival = (self.scheduler.now_ms + self._slow.get(link, 0)
                       + rng.randint(params.delay_min_ms, params.delay_max_ms))
            if not (params.reorder and rng.random() < params.reorder):
                arrival = max(arrival, self._last_arrival_ms.get(link, 0))
                self._last_arrival_ms[link] = arrival
            in_flight = self._in_flight.get(link, 0) + 1
            self._in_flight[link] = in_flight
            stats.link_in_flight_max = max(stats.link_in_flight_max, in_flight)
            self.scheduler.at(arrival, lambda: self._arrive(link, payload))

    def _arrive(self, link: Link, payload: bytes) -> None:
        self._in_flight[link] -= 1
        if link in self._cut:
            self.stats.cut += 1
            return
        self.stats.delivered += 1
        self._deliver(link[0], link[1], payload)
