"""DVVSet algebra, checked on clocks that real histories produce.

A history: a few servers, each holding one replica clock; clients read a replica (or
several, merged) to get a context, and later write through some server with it;
replicas push their clocks to each other. Values are unique integers, so each can be
traced to the write (and the dot) that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv.core import dvvset
from dynakv.core.dvvset import Clock, Entry, VersionVector

Dot = tuple[str, int]


@dataclass(frozen=True)
class Write:
    value: int
    context: VersionVector
    server: str
    dot: Dot


@dataclass
class History:
    servers: list[str]
    replicas: dict[str, Clock[int]]
    writes: list[Write] = field(default_factory=list)
    snapshots: list[Clock[int]] = field(default_factory=list)

    def everything(self) -> Clock[int]:
        return dvvset.sync_all(self.replicas.values())

    def dot_values(self) -> dict[Dot, int]:
        return {write.dot: write.value for write in self.writes}


Op = tuple[str, int, tuple[int, ...], bool]


@st.composite
def operations(draw: st.DrawFn, servers: int, clients: int) -> Op:
    kind = draw(st.sampled_from(["read", "write", "write", "sync"]))
    replica = draw(st.integers(0, servers - 1))
    if kind == "sync":
        return kind, replica, (draw(st.integers(0, servers - 1)),), False
    client = draw(st.integers(0, clients - 1))
    if kind == "read":
        # A quorum read: the merge of one or more replicas.
        more = draw(st.lists(st.integers(0, servers - 1), max_size=2))
        return kind, client, (replica, *more), False
    return kind, client, (replica,), draw(st.booleans())  # return_body


def run(servers: int, clients: int, ops: list[Op]) -> History:
    names = [f"s{index}" for index in range(servers)]
    history = History(names, {name: Clock() for name in names})
    contexts: dict[int, VersionVector] = {}
    for kind, who, where, return_body in ops:
        if kind == "sync":
            source, target = names[who], names[where[0]]
            history.replicas[target] = dvvset.sync(
                history.replicas[source], history.replicas[target]
            )
            history.snapshots.append(history.replicas[target])
        elif kind == "read":
            contexts[who] = dvvset.join(
                dvvset.sync_all(history.replicas[names[index]] for index in where)
            )
        else:
            server = names[where[0]]
            value = len(history.writes)
            context = contexts.get(who, ())
            before = history.replicas[server]
            after = dvvset.update(dvvset.new(context, value), before, server)
            counter = next(e.counter for e in after.entries if e.server_id == server)
            dot = (server, counter)
            assert dict(zip(dvvset.dots(after), dvvset.values(after), strict=True))[dot] == value
            assert dvvset.size(after) <= dvvset.size(before) + 1
            assert dvvset.descends(dvvset.join(after), dvvset.join(before))
            assert dvvset.descends(dvvset.join(after), context)
            history.writes.append(Write(value, context, server, dot))
            history.replicas[server] = after
            history.snapshots.append(after)
            if return_body:
                contexts[who] = dvvset.join(after)
    history.snapshots.extend(history.replicas.values())
    return history


@st.composite
def histories(draw: st.DrawFn, max_ops: int = 30) -> History:
    servers = draw(st.integers(1, 4))
    clients = draw(st.integers(1, 8))
    ops = draw(st.lists(operations(servers, clients), max_size=max_ops))
    return run(servers, clients, ops)


def covered(dot: Dot, context: VersionVector) -> bool:
    return dict(context).get(dot[0], 0) >= dot[1]


def check_well_formed(clock: Clock[int], history: History) -> None:
    assert dvvset.size(clock) == len(dvvset.values(clock)) == len(dvvset.dots(clock))
    assert len(dvvset.ids(clock)) <= len(history.servers)
    assert set(dvvset.ids(clock)) <= set(history.servers)
    for entry in clock.entries:
        assert entry.counter >= 1 and len(entry.values) <= entry.counter
    dvvset.check(clock)  # sorted, distinct ids: no longer checked on construction
    # Every (dot, value) is the one its write made.
    truth = history.dot_values()
    for dot, value in zip(dvvset.dots(clock), dvvset.values(clock), strict=True):
        assert truth[dot] == value


# --- the algebra ------------------------------------------------------------------------


@settings(max_examples=80)
@given(histories(), st.data())
def test_sync_is_commutative_associative_idempotent(history: History,
                                                     data: st.DataObject) -> None:
    pool = [*history.snapshots, Clock()]
    a, b, c = (data.draw(st.sampled_from(pool)) for _ in range(3))
    assert dvvset.sync(a, b) == dvvset.sync(b, a)
    assert dvvset.sync(dvvset.sync(a, b), c) == dvvset.sync(a, dvvset.sync(b, c))
    assert dvvset.sync(a, a) == a
    assert dvvset.sync(a, Clock()) == a
    merged = dvvset.sync(a, b)
    assert dvvset.descends(dvvset.join(merged), dvvset.join(a))
    assert dvvset.descends(dvvset.join(merged), dvvset.join(b))
    assert set(dvvset.values(merged)) <= set(dvvset.values(a)) | set(dvvset.values(b))


@settings(max_examples=60)
@given(histories())
def test_clocks_are_well_formed_and_bounded_by_servers(history: History) -> None:
    for clock in history.snapshots:
        check_well_formed(clock, history)
    # Eight clients or one: the clock has at most one entry per server.
    assert len(dvvset.ids(history.everything())) <= len(history.servers)


@settings(max_examples=100)
@given(histories(max_ops=40))
def test_siblings_are_exactly_the_writes_no_context_covered(history: History) -> None:
    everything = history.everything()
    check_well_formed(everything, history)
    live = {
        write.dot: write.value
        for write in history.writes
        if not any(covered(write.dot, later.context) for later in history.writes)
    }
    found = dict(zip(dvvset.dots(everything), dvvset.values(everything), strict=True))
    assert found == live
    assert dvvset.size(everything) == len(live) <= len(history.writes)


@settings(max_examples=60)
@given(histories(), st.data())
def test_a_write_that_saw_every_sibling_replaces_them(history: History,
                                                      data: st.DataObject) -> None:
    replica = data.draw(st.sampled_from([*history.snapshots, Clock()]))
    server = data.draw(st.sampled_from(history.servers))
    after = dvvset.update(dvvset.new(dvvset.join(replica), -1), replica, server)
    assert dvvset.values(after) == [-1]
    # Through any replica, with the context of a read of all of them.
    context = dvvset.join(history.everything())
    for name, clock in history.replicas.items():
        assert dvvset.values(dvvset.update(dvvset.new(context, -1), clock, name)) == [-1]


@settings(max_examples=60)
@given(histories(), st.data())
def test_concurrent_writes_with_one_context_through_one_server_both_survive(
    history: History, data: st.DataObject
) -> None:
    server = data.draw(st.sampled_from(history.servers))
    context = dvvset.join(data.draw(st.sampled_from([*history.snapshots, Clock()])))
    replica = history.replicas[server]
    first = dvvset.update(dvvset.new(context, -1), replica, server)
    second = dvvset.update(dvvset.new(context, -2), first, server)
    assert {-1, -2} <= set(dvvset.values(second))
    # And the stale context still removes what it covered, nothing else.
    kept = [v for d, v in zip(dvvset.dots(replica), dvvset.values(replica), strict=True)
            if not covered(d, context)]
    assert sorted(dvvset.values(second)) == sorted([-2, -1, *kept])


@settings(max_examples=60)
@given(st.lists(st.integers(0, 3), max_size=30))
def test_read_your_write_clients_never_make_siblings(coordinators: list[int]) -> None:
    names = ["s0", "s1", "s2", "s3"]
    replicas: dict[str, Clock[int]] = {name: Clock() for name in names}
    for value, index in enumerate(coordinators):
        context = dvvset.join(dvvset.sync_all(replicas.values()))
        server = names[index]
        replicas[server] = dvvset.update(dvvset.new(context, value), replicas[server], server)
        assert dvvset.values(dvvset.sync_all(replicas.values())) == [value]


# --- last write wins --------------------------------------------------------------------


@settings(max_examples=60)
@given(histories(), st.data())
def test_last_write_wins_keeps_the_newest_value(history: History,
                                                data: st.DataObject) -> None:
    clock = data.draw(st.sampled_from([*history.snapshots, Clock()]))
    resolved = dvvset.last_write_wins(clock, lambda a, b: a > b)
    if dvvset.values(clock):
        assert dvvset.values(resolved) == [max(dvvset.values(clock))]
    else:
        assert resolved == clock
    assert dvvset.join(resolved) == dvvset.join(clock)


def test_last_write_wins_ties_keep_the_first_in_entry_order() -> None:
    clock = Clock((Entry("a", 2, ("x", "y")), Entry("b", 1, ("z",))))
    resolved = dvvset.last_write_wins(clock, lambda a, b: False)
    assert resolved == Clock((Entry("a", 2, ("x",)), Entry("b", 1, ())))


def test_last_write_wins_moves_the_winner_to_its_entry_newest_dot() -> None:
    clock = Clock((Entry("a", 3, ("new", "old")),))
    resolved = dvvset.last_write_wins(clock, lambda a, b: a == "old")
    assert dvvset.dots(resolved) == [("a", 3)]
    assert dvvset.values(resolved) == ["old"]


# --- basics -----------------------------------------------------------------------------


def test_descends() -> None:
    assert dvvset.descends((), ())
    assert dvvset.descends((("a", 1),), ())
    assert not dvvset.descends((), (("a", 1),))
    assert dvvset.descends((("a", 2), ("b", 1)), (("a", 2),))
    assert dvvset.descends((("a", 2), ("b", 1)), (("a", 1), ("b", 1)))
    # Concurrent: neither descends.
    assert not dvvset.descends((("a", 2),), (("a", 1), ("b", 1)))
    assert not dvvset.descends((("a", 1), ("b", 1)), (("a", 2),))


def test_new_sorts_the_context() -> None:
    clock, value = dvvset.new((("b", 2), ("a", 1)), "v")
    assert value == "v"
    assert clock == Clock((Entry("a", 1, ()), Entry("b", 2, ())))


def test_update_example() -> None:
    first = dvvset.update(dvvset.new((), "v1"), Clock(), "a")
    assert first == Clock((Entry("a", 1, ("v1",)),))
    # A second client with no context: concurrent sibling on the same server.
    second = dvvset.update(dvvset.new((), "v2"), first, "a")
    assert second == Clock((Entry("a", 2, ("v2", "v1")),))
    assert dvvset.dots(second) == [("a", 2), ("a", 1)]
    # A client that read the first write replaces only it, through server b.
    third = dvvset.update(dvvset.new((("a", 1),), "v3"), second, "b")
    assert third == Clock((Entry("a", 2, ("v2",)), Entry("b", 1, ("v3",))))
    assert dvvset.join(third) == (("a", 2), ("b", 1))
    assert dvvset.ids(third) == ["a", "b"]


def test_check_refuses_clocks_of_the_wrong_shape() -> None:
    dvvset.check(Clock((Entry("a", 2, ("v2", "v1")), Entry("b", 1, ()))))
    with pytest.raises(ValueError, match="sorted"):
        dvvset.check(Clock((Entry("b", 1, ()), Entry("a", 1, ()))))
    with pytest.raises(ValueError, match="sorted"):
        dvvset.check(Clock((Entry("a", 1, ()), Entry("a", 2, ()))))
    with pytest.raises(ValueError, match="2 values but counter 1"):
        dvvset.check(Clock((Entry("a", 1, ("v2", "v1")),)))


# --- a CPython pitfall ------------------------------------------------------------------


def test_no_code_constructs_a_clock_through_a_subscripted_alias() -> None:
    """`Clock[X](...)`, `Entry[X](...)` and `api.Object(...)` raise TypeError on CPython
    3.11: typing sets __orig_class__ on the new instance, and the __setattr__ of a frozen,
    slotted dataclass then fails with "super(type, obj)" (it once broke dvvset.new with a
    non-empty context, and the first write of every key in node.py). Construct
    `Clock(...)` and `Entry(...)` and annotate the type instead."""
    import ast
    from pathlib import Path

    import dynakv

    offences = []
    for path in sorted(Path(dynakv.__file__).resolve().parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            target = func.value if isinstance(func, ast.Subscript) else None
            name = getattr(target, "id", getattr(target, "attr", None))
            api_object = (isinstance(func, ast.Attribute) and func.attr == "Object"
                          and getattr(func.value, "id", None) == "api")
            if name in ("Clock", "Entry") or api_object:
                offences.append(f"{path.name}:{node.lineno}")
    assert offences == []
