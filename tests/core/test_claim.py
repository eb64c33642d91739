"""The claim: distinct nodes, then distinct zones, then weight, then least movement
(core/claim.py's order of precedence); determinism."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dynakv.core.claim import Member, claim, quotas, shares, violations, windows
from dynakv.core.ring import Ring, primary_owners

ring_sizes = st.integers(3, 9).map(lambda exponent: 1 << exponent)
n_vals = st.integers(1, 5)


@st.composite
def member_lists(draw: st.DrawFn, min_size: int = 1, max_size: int = 20,
                 zones: int = 0) -> list[Member]:
    count = draw(st.integers(min_size, max_size))
    weights = draw(st.lists(st.integers(1, 4), min_size=count, max_size=count))
    # Names that do not sort like their index, so tie-breaking by name is exercised.
    names = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=count,
                          max_size=count, unique=True))
    zone_names = draw(st.lists(st.sampled_from("pqrstu"[:zones] or [""]), min_size=count,
                               max_size=count))
    return [Member(name, weight, zone)
            for name, weight, zone in zip(names, weights, zone_names, strict=True)]


def caps_hold(ring_size: int, members: Sequence[Member], n_val: int) -> bool:
    """Do the quotas fit under rules 1 and 2's caps (so both rules can hold)?"""
    node_window, zone_window = windows(members, n_val)
    quota = quotas(ring_size, members, None, n_val)
    zone_totals = Counter[str]()
    for member in members:
        zone_totals[member.zone] += quota[member.name]
    return (max(quota.values()) <= ring_size // node_window
            and max(zone_totals.values()) <= ring_size // zone_window)


def zone_totals(owners: Sequence[str], members: Sequence[Member]) -> Counter[str]:
    zone_of = {member.name: member.zone for member in members}
    return Counter(zone_of[owner] for owner in owners)


def tight(ring_size: int, members: Sequence[Member], n_val: int) -> bool:
    """Does a node own exactly its cap? Then its layout is forced (it owns every W-th
    partition): the claim's greedy layout and swaps may leave a repeat at the wrap
    (a known limit, docs/architecture.md) and fixing it may move much of the ring."""
    node_window, _ = windows(members, n_val)
    owners = claim(ring_size, members, n_val)
    return node_window > 1 and max(Counter(owners).values()) >= ring_size // node_window


def moved(before: Sequence[str], after: Sequence[str]) -> list[int]:
    return [index for index, (old, new) in enumerate(zip(before, after, strict=True))
            if old != new]


def gains(before: Sequence[str], after: Sequence[str]) -> int:
    """The least movement any claim could make between these counts."""
    old, new = Counter(before), Counter(after)
    return sum(max(0, new[name] - old[name]) for name in new)


# --- rule 3: weight ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(ring_sizes, member_lists(zones=4), n_vals)
def test_quotas_are_within_one_of_the_fair_share(
    ring_size: int, members: list[Member], n_val: int
) -> None:
    quota = quotas(ring_size, members, None, n_val)
    fair = shares(ring_size, members, n_val)
    assert sum(quota.values()) == ring_size
    assert math.isclose(sum(fair.values()), ring_size)
    for member in members:
        assert math.floor(fair[member.name] + 1e-9) <= quota[member.name]
        assert quota[member.name] <= math.ceil(fair[member.name] - 1e-9)
    # A heavier node of a zone never gets less than a lighter one of the same zone.
    for a in members:
        for b in members:
            if a.zone == b.zone and a.weight > b.weight:
                assert fair[a.name] >= fair[b.name]


@settings(max_examples=100, deadline=None)
@given(ring_sizes, member_lists(), n_vals)
def test_shares_are_proportional_to_weight_when_no_cap_binds(
    ring_size: int, members: list[Member], n_val: int
) -> None:
    total = sum(member.weight for member in members)
    node_window, _ = windows(members, n_val)
    assume(all(ring_size * m.weight / total <= ring_size // node_window for m in members))
    owners = claim(ring_size, members, n_val)
    counts = Counter(owners)
    for member in members:
        assert abs(counts[member.name] - ring_size * member.weight / total) < 1, member


@settings(max_examples=80, deadline=None)
@given(ring_sizes, member_lists(zones=5), n_vals)
def test_claim_owns_the_quotas(ring_size: int, members: list[Member], n_val: int) -> None:
    owners = claim(ring_size, members, n_val)
    assert len(owners) == ring_size
    assert Counter(owners) == {name: count for name, count in
                               quotas(ring_size, members, None, n_val).items() if count}


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 8).map(lambda exponent: 1 << exponent), member_lists(zones=4), n_vals,
       st.data())
def test_claim_from_any_current_ring_owns_the_quotas(
    ring_size: int, members: list[Member], n_val: int, data: st.DataObject
) -> None:
    names = [member.name for member in members] + ["gone1", "gone2"]
    current = data.draw(st.lists(st.sampled_from(names), min_size=ring_size,
                                 max_size=ring_size))
    owners = claim(ring_size, members, n_val, current)
    held = Counter(owner for owner in current if owner != "gone1" and owner != "gone2")
    assert Counter(owners) == {name: count for name, count in
                               quotas(ring_size, members, held, n_val).items() if count}


# --- rules 1 and 2: distinct nodes, distinct zones --------------------------------------


def check_preference_lists(owners: Sequence[str], members: Sequence[Member],
                           n_val: int) -> None:
    """Every key's N primary replicas are the owners of N consecutive partitions: N
    distinct nodes, in distinct zones when there are at least N zones."""
    ring = Ring(tuple(owners))
    zone_of = {member.name: member.zone for member in members}
    zones = len(set(zone_of.values()))
    for partition in range(ring.size):
        primaries = primary_owners(ring, partition, n_val)
        if len(members) > n_val:
            assert [t.partition for t in primaries] == [
                (partition + step) % ring.size for step in range(n_val)]
        else:
            assert len(primaries) == len(members)
        if zones >= n_val:
            assert len({zone_of[t.node] for t in primaries}) == n_val


@settings(max_examples=150, deadline=None)
@given(ring_sizes, member_lists(), n_vals)
def test_preference_lists_are_distinct_nodes_whenever_the_caps_allow(
    ring_size: int, members: list[Member], n_val: int
) -> None:
    assume(caps_hold(ring_size, members, n_val))
    owners = claim(ring_size, members, n_val)
    assert violations(owners, members, n_val) == []
    check_preference_lists(owners, members, n_val)


@settings(max_examples=150, deadline=None)
@given(ring_sizes, member_lists(min_size=3, zones=5), st.integers(2, 4))
def test_preference_lists_span_distinct_zones_whenever_the_caps_allow(
    ring_size: int, members: list[Member], n_val: int
) -> None:
    assume(len({m.zone for m in members}) >= n_val and caps_hold(ring_size, members, n_val))
    owners = claim(ring_size, members, n_val)
    assert violations(owners, members, n_val) == []
    check_preference_lists(owners, members, n_val)


@pytest.mark.parametrize("nodes", [3, 5])
def test_too_few_laps_leave_one_repeat_at_the_wrap(nodes: int) -> None:
    # 64 partitions cannot be cut into laps of 3 distinct nodes (or zones): one window
    # must repeat, and only that one.
    members = [Member(f"n{i}", 1, f"z{i % 3}") for i in range(nodes)]
    owners = claim(64, members, 3)
    assert 0 < len(violations(owners, members, 3)) <= 2


def test_neighbours_distinct_where_the_quotas_allow() -> None:
    members = [Member("a", 1), Member("b", 1), Member("c", 2)]
    # Quotas a=2, b=2, c=4; "c a c b c a c b" has no equal neighbours on the circle.
    assert quotas(8, members, None, 2) == {"a": 2, "b": 2, "c": 4}
    owners = claim(8, members, 2)
    assert Counter(owners) == {"a": 2, "b": 2, "c": 4}
    assert violations(owners, members, 2) == []


def test_distinct_nodes_come_before_weight() -> None:
    # Three nodes for N = 2: a node owning more than every other partition would hold
    # two replicas of some key, so weight 8 buys at most half the ring.
    members = [Member("a", 8), Member("b", 1), Member("c", 1)]
    assert Counter(claim(8, members, 2)) == {"a": 4, "b": 2, "c": 2}
    # N nodes or fewer: every key is on all of them as long as each owns a partition.
    assert Counter(claim(8, [Member("a", 20), Member("b", 1)], 2)) == {"a": 7, "b": 1}
    # With N = 1 there is no neighbour rule and weight rules.
    assert Counter(claim(8, [Member("a", 3), Member("b", 1)], 1)) == {"a": 6, "b": 2}


def test_distinct_zones_come_before_weight() -> None:
    members = [Member("a", 4, "p"), Member("b", 1, "q"), Member("c", 1, "r"),
               Member("d", 1, "r")]
    owners = claim(64, members, 3)
    # Three zones for N = 3: each zone gets a third (64 = 21 + 21 + 22), whatever the weights.
    zone_totals = Counter({"p": 0, "q": 0, "r": 0})
    for owner in owners:
        zone_totals[{"a": "p", "b": "q", "c": "r", "d": "r"}[owner]] += 1
    assert sorted(zone_totals.values()) == [21, 21, 22]
    assert len(violations(owners, members, 3)) <= 2


# --- determinism ------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(ring_sizes, member_lists(zones=4), n_vals, st.randoms(use_true_random=False))
def test_claim_is_deterministic_and_ignores_member_order(
    ring_size: int, members: list[Member], n_val: int, rng: random.Random
) -> None:
    owners = claim(ring_size, members, n_val)
    shuffled = list(members)
    rng.shuffle(shuffled)
    # Every node computes the same ring, whatever order it learnt the members in.
    assert claim(ring_size, shuffled, n_val) == owners
    assert quotas(ring_size, shuffled, None, n_val) == quotas(ring_size, members, None, n_val)


@settings(max_examples=50, deadline=None)
@given(ring_sizes, member_lists(zones=4), n_vals)
def test_claim_of_an_unchanged_cluster_moves_nothing(
    ring_size: int, members: list[Member], n_val: int
) -> None:
    owners = claim(ring_size, members, n_val)
    assert claim(ring_size, members, n_val, owners) == owners


def test_claim_refuses_bad_members() -> None:
    with pytest.raises(ValueError):
        Member("a", 0)
    with pytest.raises(ValueError):
        quotas(8, [])
    with pytest.raises(ValueError):
        claim(8, [], 3)
    with pytest.raises(ValueError):
        claim(8, [Member("a"), Member("a")], 3)


def test_claim_example() -> None:
    members = [Member("a"), Member("b"), Member("c"), Member("d")]
    owners = claim(8, members, 3)
    assert Counter(owners) == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert violations(owners, members, 3) == []
    # Pinned: a change of the claim changes every new cluster's ring.
    assert owners == ("a", "c", "b", "d", "a", "b", "c", "d")


# --- rule 4: least movement -------------------------------------------------------------


# Movement is checked for N up to 3 (the default) and rings of 16 N partitions per node
# or more: with fewer, or wider windows and weights near the caps, the swaps that keep
# rules 1-2 can fail and the claim falls back to a fresh layout (rules 1-2 before rule
# 4), which moves most partitions (docs/architecture.md, "The claim").
def movement_bound(ideal: int) -> int:
    """On these small rings (8 to 512 partitions), at most 1.25 times the ideal, or one
    swap (two partitions) more; the sized test below holds realistic rings to 1.1."""
    return max(math.ceil(1.25 * ideal), ideal + 2)


@settings(max_examples=80, deadline=None)
@given(ring_sizes, member_lists(max_size=19, zones=4), st.integers(1, 3), st.integers(1, 4),
       st.sampled_from("pqrs"))
def test_a_join_moves_about_what_the_quotas_require(
    ring_size: int, members: list[Member], n_val: int, weight: int, zone: str
) -> None:
    before = claim(ring_size, members, n_val)
    grown = [*members, Member("joiner", weight, zone)]
    after = claim(ring_size, grown, n_val, before)
    old, new = Counter(before), Counter(after)
    assert new["joiner"] == quotas(ring_size, grown, old, n_val)["joiner"]
    # Tiny rings (a few partitions per node) can be too tight for the swaps that keep
    # rules 1-2 local; the sized test below covers realistic rings.
    assume(ring_size >= 4 * n_val * len(grown))
    assume(caps_hold(ring_size, grown, n_val) and not violations(before, members, n_val))
    assume(not tight(ring_size, grown, n_val))  # a node at its cap: see `tight`
    assert violations(after, grown, n_val) == []
    # When zone totals change under the zone rule, zones must re-interleave: that can
    # move several times the ideal (docs/scale.md measures it); rule 2 comes first.
    if ring_size >= 16 * n_val * len(members) and zone_totals(before, members) == zone_totals(
            after, grown):
        assert len(moved(before, after)) <= movement_bound(gains(before, after))


@settings(max_examples=80, deadline=None)
@given(ring_sizes, member_lists(min_size=2, zones=4), st.integers(1, 3), st.data())
def test_a_leave_moves_about_what_the_quotas_require(
    ring_size: int, members: list[Member], n_val: int, data: st.DataObject
) -> None:
    before = claim(ring_size, members, n_val)
    leaver = data.draw(st.sampled_from(members))
    rest = [member for member in members if member is not leaver]
    after = claim(ring_size, rest, n_val, before)
    assert leaver.name not in after
    assume(ring_size >= 4 * n_val * len(members))
    assume(caps_hold(ring_size, rest, n_val) and not violations(before, members, n_val))
    assume(not tight(ring_size, rest, n_val))  # a node at its cap: see `tight`
    assert violations(after, rest, n_val) == []
    # When zone totals change under the zone rule, zones must re-interleave: that can
    # move several times the ideal (docs/scale.md measures it); rule 2 comes first.
    if ring_size >= 16 * n_val * len(members) and zone_totals(before, members) == zone_totals(
            after, rest):
        assert len(moved(before, after)) <= movement_bound(gains(before, after))


@pytest.mark.parametrize(("nodes", "ring_size", "zones"),
                         [(10, 1024, 1), (32, 4096, 3), (100, 8192, 3), (100, 8192, 1)])
def test_joins_and_leaves_at_size_move_the_ideal_and_keep_the_rules(
    nodes: int, ring_size: int, zones: int
) -> None:
    rng = random.Random(nodes * zones)
    members = [Member(f"n{i:03d}", rng.choice([1, 1, 2, 4]), f"z{i % zones}")
               for i in range(nodes)]
    owners = claim(ring_size, members, 3)
    base = len(violations(owners, members, 3))
    assert base <= 4  # 2^k partitions in laps of 3: a repeat or two at the wrap at most
    joiner = Member("joiner", 2, "z1" if zones > 1 else "")
    grown = claim(ring_size, [*members, joiner], 3, owners)
    assert len(violations(grown, [*members, joiner], 3)) <= base
    ideal = gains(owners, grown)
    if zones == 1:  # with 3 zones for N = 3 the joiner's zone keeps its third
        assert abs(ideal - ring_size * 2 / (sum(m.weight for m in members) + 2)) <= 1
    assert len(moved(owners, grown)) <= math.ceil(1.1 * ideal)
    leaver = members[nodes // 2]
    shrunk = claim(ring_size, [m for m in members if m is not leaver], 3, owners)
    assert len(violations(shrunk, [m for m in members if m is not leaver], 3)) <= base
    assert len(moved(owners, shrunk)) <= math.ceil(1.1 * gains(owners, shrunk))
