"""Hinted handoff: replicas a fallback node keeps for a down owner.

Sloppy quorum sends a key's replicas to the first N healthy nodes; a fallback
(a node that is not one of the key's primary owners) stores the object as usual
and also a hint naming the owner it stands in for. Hints are durable: a row in
the storage port's HINTS_PARTITION, keyed by target, partition and key (the object
itself is the fallback's stored copy, so a hint is small and always delivers the
newest version the fallback holds).

Delivery: when the owner is up again, the fallback sends each hinted object to it
(at most `HANDOFF_BATCH_MAX` at a time per target; throttled by the handoff
interval), and removes a hint only after the owner has acknowledged the object,
and only if the object did not change meanwhile (else it is delivered again).
Once no hint names the key, a fallback that is not a primary owner drops its copy.
A round (one batch to one target) that fails backs off exponentially, up to
HANDOFF_BACKOFF_MAX_MS: the backoff doubles once per failed round, however many
deliveries of the round failed with it (they usually fail together, when the owner
goes down or the batch times out). When the detector sees the owner come back up,
its backoff is cleared, so a returning owner gets its hints on the next round.

Bound: at most limits.HINTS_PER_TARGET_MAX hints per target. Past it, the fallback
refuses to stand in for that target (the replica write fails, so it does not
count towards W); the owner is then repaired by read repair and anti-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HINTS_PARTITION = -2
HANDOFF_BATCH_MAX = 100
HANDOFF_BACKOFF_MIN_MS = 500
HANDOFF_BACKOFF_MAX_MS = 30_000


def target_prefix(target: str) -> bytes:
    return target.encode() + b"\x00"


def hint_key(target: str, partition: int, key: bytes) -> bytes:
    return target_prefix(target) + partition.to_bytes(4, "big") + key


def parse_hint_key(raw: bytes) -> tuple[str, int, bytes]:
    target, _, rest = raw.partition(b"\x00")
    return target.decode(), int.from_bytes(rest[:4], "big"), rest[4:]


@dataclass(slots=True)
class HintLedger:
    """Hints per target (counts; the hints themselves are in storage) and delivery pacing."""

    counts: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    refused: int = 0
    next_attempt_ms: dict[str, int] = field(default_factory=dict)
    backoff_ms: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)  # target -> deliveries in flight
    round_failed: set[str] = field(default_factory=set)  # targets whose current round failed

    def add(self, target: str) -> None:
        self.counts[target] = self.counts.get(target, 0) + 1

    def remove(self, target: str) -> None:
        left = self.counts.get(target, 0) - 1
        if left > 0:
            self.counts[target] = left
        else:
            self.counts.pop(target, None)

    def due(self, target: str, now_ms: int) -> bool:
        return (self.counts.get(target, 0) > 0 and not self.in_flight.get(target)
                and now_ms >= self.next_attempt_ms.get(target, 0))

    def round_started(self, target: str) -> None:
        self.round_failed.discard(target)

    def succeeded(self, target: str) -> None:
        self.backoff_ms.pop(target, None)

    def peer_up(self, target: str) -> None:
        """The owner is reachable again: forget the backoff of its failed rounds."""
        self.backoff_ms.pop(target, None)
        self.next_attempt_ms.pop(target, None)

    def failed(self, target: str, now_ms: int) -> None:
        """A delivery to `target` failed: back off, once per round."""
        if target in self.round_failed:
            return
        self.round_failed.add(target)
        backoff = min(HANDOFF_BACKOFF_MAX_MS,
                      max(HANDOFF_BACKOFF_MIN_MS, 2 * self.backoff_ms.get(target, 0)))
        self.backoff_ms[target] = backoff
        self.next_attempt_ms[target] = now_ms + backoff
