"""Virtual time, the event queue, and the trace hash.

Everything in a simulation happens as an action scheduled at a virtual time in
integer milliseconds. Actions run in (time, sequence number) order: two actions
at the same time run in the order they were scheduled, so a run depends only on
its seed, never on wall-clock time or Python's per-process string hashing.

The trace hash is a SHA-256 over every event delivered to a node and every reply
delivered to a client (time, node, kind, encoding): two runs with the same seed
must produce the same hash, in one process or in two.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Callable

Action = Callable[[], object]  # whatever it returns is ignored


class Scheduler:
    """A heap of actions ordered by (time_ms, sequence number)."""

    def __init__(self) -> None:
        self.now_ms = 0
        self._heap: list[tuple[int, int, Action]] = []
        self._sequence = 0
        self.actions_run = 0

    def at(self, time_ms: int, action: Action) -> None:
        """Run `action` at virtual time `time_ms` (not in the past)."""
        assert time_ms >= self.now_ms, f"cannot schedule at {time_ms} < now {self.now_ms}"
        heapq.heappush(self._heap, (time_ms, self._sequence, action))
        self._sequence += 1

    def after(self, delay_ms: int, action: Action) -> None:
        self.at(self.now_ms + max(0, delay_ms), action)

    def run_until(self, end_ms: int) -> None:
        """Run every action due at or before `end_ms`; virtual time ends at `end_ms`."""
        heap = self._heap
        while heap and heap[0][0] <= end_ms:
            time_ms, _sequence, action = heapq.heappop(heap)
            self.now_ms = time_ms
            self.actions_run += 1
            action()
        self.now_ms = max(self.now_ms, end_ms)


class Trace:
    """A running SHA-256 of delivered events; optionally keeps the last lines for debugging."""

    def __init__(self, keep_lines: int = 0) -> None:
        self._hash = hashlib.sha256()
        self.events = 0
        self.lines: deque[str] = deque(maxlen=keep_lines or None)
        self._keep = keep_lines > 0

    def record(self, now_ms: int, node: str, kind: str, payload: bytes) -> None:
        header = f"{now_ms} {node} {kind} {len(payload)}\n".encode()
        self._hash.update(header)
        self._hash.update(payload)
        self.events += 1
        if self._keep:
            self.lines.append(f"{now_ms:>8} {node:<4} {kind:<8} {payload[:160]!r}")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
