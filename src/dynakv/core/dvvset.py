"""Dotted version vector sets (Almeida, Baquero, Goncalves, Preguica, Fonte).

A DVVSet keeps, per replica server id, an entry (id, counter, values): the i-th
value of that entry (newest first) carries the dot (id, counter - i). Every value
present is a sibling that no write has yet superseded. The clock part (ids and
counters) grows with the number of server ids that coordinated writes, never with
the number of clients; so two clients writing through one server with the same
stale context both survive as siblings, which per-server version vectors cannot
represent, and no client-id pruning can create false conflicts.

Server ids are a node's name plus an incarnation drawn when its data directory was
created: a node whose disk was wiped gets a new id and never reuses old dots
(Riak's kv679 data-loss bug).

The algebra (all pure, values opaque):
- `new(context, value)`: a client's write, with the version vector it read;
- `update(client_clock, replica_clock, server_id)`: the coordinator's event:
  discard the replica's values the context covers, add the value with a new dot;
- `sync(a, b)`: merge two replicas' sets (commutative, associative, idempotent);
- `join(clock)`: the version vector handed to clients as the context;
- `values(clock)`: the siblings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

VersionVector = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """One server id's counter and its live values, newest first."""

    server_id: str
    counter: int
    values: tuple[T, ...]


@dataclass(frozen=True, slots=True)
class Clock(Generic[T]):
    """A DVVSet: entries sorted by distinct server id, each holding no more values than
    its counter. The operations below keep that shape, so it is not checked on every
    construction (that was 2% of a node's time); a clock from outside, decoded from a
    peer's or the disk's bytes, is checked with `check`."""

    entries: tuple[Entry[T], ...] = ()


def check(clock: Clock[T]) -> None:
    """Raise ValueError unless `clock` has a DVVSet's shape (see Clock)."""
    previous = ""
    for index, entry in enumerate(clock.entries):
        if index and entry.server_id <= previous:
            raise ValueError("entries must be sorted by distinct server id")
        if len(entry.values) > entry.counter:
            raise ValueError(f"{entry.server_id}: {len(entry.values)} values but counter "
                             f"{entry.counter}")
        previous = entry.server_id


def new(context: VersionVector, value: T) -> tuple[Clock[T], T]:
    """A client's write: the clock of what it read (no values) and its new value."""
    entries: tuple[Entry[T], ...] = tuple(
        Entry(server_id, counter, ()) for server_id, counter in sorted(context)
    )
    return Clock(entries), value


def _merge(a: Entry[T], b: Entry[T]) -> Entry[T]:
    """Merge two entries of one server id: keep the values neither side saw superseded."""
    if a.counter < b.counter:
        a, b = b, a
    # a has the larger counter; a's oldest live dot is a.counter - len(a.values) + 1.
    if a.counter - len(a.values) >= b.counter - len(b.values):
        return a
    keep = a.counter - b.counter + len(b.values)
    return Entry(a.server_id, a.counter, a.values[:keep])


def sync(a: Clock[T], b: Clock[T]) -> Clock[T]:
    """Merge two DVVSets. Commutative, associative and idempotent."""
    merged: list[Entry[T]] = []
    left, right = list(a.entries), list(b.entries)
    i = j = 0
    while i < len(left) and j < len(right):
        x, y = left[i], right[j]
        if x.server_id < y.server_id:
            merged.append(x)
            i += 1
        elif x.server_id > y.server_id:
            merged.append(y)
            j += 1
        else:
            merged.append(_merge(x, y))
            i += 1
            j += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    return Clock(tuple(merged))


def sync_all(clocks: Iterable[Clock[T]]) -> Clock[T]:
    result: Clock[T] = Clock()
    for clock in clocks:
        result = sync(result, clock)
    return result


def _event(entries: Sequence[Entry[T]], server_id: str, value: T) -> tuple[Entry[T], ...]:
    """Add `value` with the next dot of `server_id`."""
    out: list[Entry[T]] = []
    placed = False
    for entry in entries:
        if not placed and entry.server_id == server_id:
            out.append(Entry(server_id, entry.counter + 1, (value, *entry.values)))
            placed = True
        elif not placed and entry.server_id > server_id:
            out.append(Entry(server_id, 1, (value,)))
            out.append(entry)
            placed = True
        else:
            out.append(entry)
    if not placed:
        out.append(Entry(server_id, 1, (value,)))
    return tuple(out)


def update(client: tuple[Clock[T], T], replica: Clock[T], server_id: str) -> Clock[T]:
    """The coordinator's event: the client's value supersedes whatever its context
    covered in the replica's clock, and gets a new dot from `server_id`."""
    context, value = client
    return Clock(_event(sync(context, replica).entries, server_id, value))


def join(clock: Clock[T]) -> VersionVector:
    """The version vector of everything this clock has seen: the client's context."""
    return tuple((entry.server_id, entry.counter) for entry in clock.entries)


def values(clock: Clock[T]) -> list[T]:
    """The siblings (every value no later write superseded), in a stable order."""
    return [value for entry in clock.entries for value in entry.values]


def size(clock: Clock[T]) -> int:
    return sum(len(entry.values) for entry in clock.entries)


def ids(clock: Clock[T]) -> list[str]:
    return [entry.server_id for entry in clock.entries]


def descends(a: VersionVector, b: VersionVector) -> bool:
    """Whether version vector `a` has seen everything `b` has."""
    seen = dict(a)
    return all(seen.get(server_id, 0) >= counter for server_id, counter in b)


def dots(clock: Clock[T]) -> list[tuple[str, int]]:
    """The dot of each sibling, in the order of `values`."""
    return [
        (entry.server_id, entry.counter - offset)
        for entry in clock.entries
        for offset in range(len(entry.values))
    ]


def last_write_wins(clock: Clock[T], newer: Callable[[T, T], bool]) -> Clock[T]:
    """The clock with one sibling left, the newest by `newer` (Riak's dvvset:lww).

    The winner takes its entry's newest dot; every dot stays seen. Loses the other
    concurrent writes by design: only for buckets with last_write_wins set.
    """
    winner: tuple[int, T] | None = None
    for index, entry in enumerate(clock.entries):
        for value in entry.values:
            if winner is None or newer(value, winner[1]):
                winner = (index, value)
    if winner is None:
        return clock
    return Clock(
        tuple(
            Entry(entry.server_id, entry.counter, (winner[1],) if index == winner[0] else ())
            for index, entry in enumerate(clock.entries)
        )
    )
