"""Persist, then send: which of a node's Outputs may leave it, and when.

Both drivers (net/runtime.py and sim/cluster.py) feed every Output the node produces
into a CommitPipeline. Its writes join the next group commit; its messages and replies
are held until every write the Output depends on is durable (etcd raft's
Ready/Advance), and then released. An Output depends on

- its own writes (`write_seq`, the sequence number of its last write), and
- the pending writes the node read while producing it (`depends_seq`): a reply or a
  message built from a value that is not yet durable must not leave before it is.

An Output that depends on nothing pending, such as the reply of a read of durable data
or a coordinator's answer once its replicas acknowledged, leaves at once, even while a
sync runs; it does not wait behind the writes of other requests. What is read from a
pending write leaves either in the Output that read it (held as above) or later, in
answer to a reply to a message of that Output, which could only arrive after the Output
was released. Released Outputs may overtake held ones; the core tolerates reordering
(the simulated network reorders too), and every writer's own Outputs stay in order.

Writes are committed in sequence order: `take_writes` hands out all queued writes at
once, `committed` says they are durable (or failed) and returns what may go now.
An Output's `early` messages are not held: the driver sends them before add().
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dynakv.core import api
from dynakv.core import messages as m
from dynakv.core.storage import Write


@dataclass(slots=True)
class Output:
    """Effects of the events since the last take_output: persist `writes`, then send."""

    writes: list[Write] = field(default_factory=list)
    write_seq: int = 0  # on_durable(write_seq) once the writes are durable
    # The last pending (not yet durable) write this Output's messages or replies were
    # built from; 0 if none. Its own writes count too: see `needs_seq`.
    depends_seq: int = 0
    messages: list[tuple[str, m.Message]] = field(default_factory=list)
    # Sent at once, before this Output's writes are durable: a coordinator's copies of a
    # write to its other replicas (see Node._replicate), safe by the early-send epochs.
    early: list[tuple[str, m.Message]] = field(default_factory=list)
    replies: list[tuple[int, api.Response]] = field(default_factory=list)
    # Membership changed: the driver refreshes its peer addresses (peer_addresses())
    # before it sends this Output's messages.
    membership_changed: bool = False

    def empty(self) -> bool:
        return not (self.writes or self.messages or self.early or self.replies
                    or self.membership_changed)

    @property
    def needs_seq(self) -> int:
        """Every write up to this one must be durable before this Output is sent."""
        return max(self.depends_seq, self.write_seq if self.writes else 0)


@dataclass(frozen=True, slots=True)
class Released:
    """An Output whose messages and replies may go now; `failed` if its own writes
    could not be made durable (its replies become errors, its messages are dropped)."""

    output: Output
    failed: bool


@dataclass(slots=True)
class CommitPipeline:
    """Group commit, and the Outputs held until what they depend on is durable."""

    durable_seq: int = 0
    _writes: list[Write] = field(default_factory=list)
    _writes_seq: int = 0  # sequence number of the last queued write
    _held: deque[Output] = field(default_factory=deque)
    _committing_seq: int = 0  # the last write of the commit in progress, 0 if none

    def add(self, output: Output) -> list[Released]:
        """Queue an Output; returns it at once if it depends on nothing pending."""
        if output.writes:
            assert output.write_seq > self._writes_seq, "writes out of sequence"
            self._writes.extend(output.writes)
            self._writes_seq = output.write_seq
        elif output.needs_seq <= self.durable_seq:
            return [Released(output, False)]
        self._held.append(output)
        return []

    def has_writes(self) -> bool:
        return bool(self._writes)

    def committing(self) -> bool:
        return self._committing_seq != 0

    def take_writes(self) -> tuple[list[Write], int]:
        """All queued writes, for one transaction, and the sequence number of the last."""
        assert not self.committing(), "one commit at a time"
        assert self._writes, "nothing to commit"
        writes, self._writes = self._writes, []
        self._committing_seq = self._writes_seq
        return writes, self._writes_seq

    def committed(self, seq: int, ok: bool) -> list[Released]:
        """The writes up to `seq` (from take_writes) are durable, or failed: release,
        in order, every held Output that no longer waits for anything."""
        assert seq == self._committing_seq, "committed() answers take_writes()"
        self._committing_seq = 0
        before = self.durable_seq
        self.durable_seq = max(before, seq)
        released: list[Released] = []
        still: deque[Output] = deque()
        for output in self._held:
            needs = output.needs_seq
            if needs <= self.durable_seq:
                released.append(Released(output, not ok and bool(output.writes)
                                          and needs > before))
            else:
                still.append(output)
        self._held = still
        return released

    def held(self) -> int:
        return len(self._held)

    def idle(self) -> bool:
        return not self._held and not self._writes and not self.committing()
