"""The claim: balance by weight, neighbour spread, minimal movement, determinism."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv.core.claim import Member, claim, quotas

ring_sizes = st.integers(3, 10).map(lambda exponent: 1 << exponent)
n_vals = st.integers(1, 5)


@st.composite
def member_lists(draw: st.DrawFn, min_size: int = 1, max_size: int = 20) -> list[Member]:
    count = draw(st.integers(min_size, max_size))
    weights = draw(st.lists(st.integers(1, 4), min_size=count, max_size=count))
    # Names that do not sort like their index, so tie-breaking by name is exercised.
    names = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=count,
                          max_size=count, unique=True))
    return [Member(name, weight) for name, weight in zip(names, weights, strict=True)]


def share(ring_size: int, members: Sequence[Member], name: str) -> float:
    total = sum(member.weight for member in members)
    weight = next(member.weight for member in members if member.name == name)
    return ring_size * weight / total


def check_balanced(owners: Sequence[str], ring_size: int, members: Sequence[Member]) -> None:
    assert len(owners) == ring_size
    counts = Counter(owners)
    assert set(counts) <= {member.name for member in members}
    for member in members:
        assert abs(counts[member.name] - share(ring_size, members, member.name)) < 1, member


def neighbour_clashes(owners: Sequence[str], n_val: int) -> list[tuple[int, int]]:
    """(i, d): partition i has the same owner as partition i + d, 0 < d < n_val (wrapping)."""
    size = len(owners)
    return [
        (index, offset)
        for index in range(size)
        for offset in range(1, n_val)
        if owners[index] == owners[(index + offset) % size]
    ]


def moved(before: Sequence[str], after: Sequence[str]) -> list[int]:
    return [index for index, (old, new) in enumerate(zip(before, after, strict=True))
            if old != new]


# --- balance ----------------------------------------------------------------------------


@settings(max_examples=100)
@given(ring_sizes, member_lists())
def test_quotas_are_within_one_of_the_share(ring_size: int, members: list[Member]) -> None:
    quota = quotas(ring_size, members)
    assert sum(quota.values()) == ring_size
    for member in members:
        exact = share(ring_size, members, member.name)
        assert math.floor(exact) <= quota[member.name] <= math.ceil(exact)


@settings(max_examples=80)
@given(ring_sizes, member_lists(), n_vals)
def test_claim_is_balanced_by_weight(ring_size: int, members: list[Member], n_val: int) -> None:
    owners = claim(ring_size, members, n_val)
    check_balanced(owners, ring_size, members)
    assert Counter(owners) == {name: count for name, count in
                               quotas(ring_size, members).items() if count}


@settings(max_examples=40)
@given(st.integers(3, 8).map(lambda exponent: 1 << exponent), member_lists(), n_vals,
       st.data())
def test_claim_from_any_current_ring_is_balanced(
    ring_size: int, members: list[Member], n_val: int, data: st.DataObject
) -> None:
    names = [member.name for member in members] + ["gone1", "gone2"]
    current = data.draw(st.lists(st.sampled_from(names), min_size=ring_size,
                                 max_size=ring_size))
    check_balanced(claim(ring_size, members, n_val, current), ring_size, members)


# --- determinism ------------------------------------------------------------------------


@settings(max_examples=50)
@given(ring_sizes, member_lists(), n_vals, st.randoms(use_true_random=False))
def test_claim_is_deterministic_and_ignores_member_order(
    ring_size: int, members: list[Member], n_val: int, rng: random.Random
) -> None:
    owners = claim(ring_size, members, n_val)
    assert claim(ring_size, list(members), n_val) == owners
    shuffled = list(members)
    rng.shuffle(shuffled)
    # Every node computes the same ring, whatever order it learnt the members in.
    assert claim(ring_size, shuffled, n_val) == owners
    assert quotas(ring_size, shuffled) == quotas(ring_size, members)


@settings(max_examples=50)
@given(ring_sizes, member_lists(), n_vals)
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


def test_claim_example() -> None:
    assert claim(8, [Member("a"), Member("b"), Member("c"), Member("d")], 3) == (
        "a", "b", "c", "d", "a", "b", "c", "d"
    )
    assert Counter(claim(8, [Member("a", 3), Member("b", 1)], 2)) == {"a": 6, "b": 2}


# --- minimal movement -------------------------------------------------------------------


@settings(max_examples=60)
@given(ring_sizes, member_lists(max_size=19), n_vals, st.integers(1, 4))
def test_adding_a_node_moves_only_what_the_quotas_require(
    ring_size: int, members: list[Member], n_val: int, weight: int
) -> None:
    before = claim(ring_size, members, n_val)
    joiner = Member("joiner", weight)
    after = claim(ring_size, [*members, joiner], n_val, before)
    check_balanced(after, ring_size, [*members, joiner])
    old, new = Counter(before), Counter(after)
    gains = {name: new[name] - old[name] for name in new if new[name] > old[name]}
    changed = moved(before, after)
    # Only the gains move: nothing is reshuffled among nodes that keep their count.
    assert len(changed) == sum(gains.values())
    assert all(after[index] in gains for index in changed)
    # The joiner takes its quota (given the current holdings); an old node gains at
    # most one, by rounding.
    assert new["joiner"] == quotas(ring_size, [*members, joiner], old)["joiner"]
    assert all(gain == 1 for name, gain in gains.items() if name != "joiner")
    assert len(changed) <= new["joiner"] + len(members)


@settings(max_examples=60)
@given(ring_sizes, member_lists(min_size=2), n_vals, st.data())
def test_removing_a_node_moves_its_partitions_and_what_rounding_requires(
    ring_size: int, members: list[Member], n_val: int, data: st.DataObject
) -> None:
    before = claim(ring_size, members, n_val)
    leaver = data.draw(st.sampled_from(members))
    rest = [member for member in members if member is not leaver]
    after = claim(ring_size, rest, n_val, before)
    check_balanced(after, ring_size, rest)
    assert leaver.name not in after
    old, new = Counter(before), Counter(after)
    changed = moved(before, after)
    losses = sum(max(0, old[member.name] - new[member.name]) for member in rest)
    assert len(changed) == old[leaver.name] + losses
    # Every moved partition belonged to the leaver or to a node above its new quota.
    for index in changed:
        assert before[index] == leaver.name or new[before[index]] < old[before[index]]
    # A remaining node loses at most one, by rounding.
    assert all(old[m.name] - new[m.name] <= 1 for m in rest)


def test_adding_a_node_never_moves_partitions_between_old_nodes() -> None:
    members = [Member("n0", 3), Member("n1", 1), Member("n2", 4), Member("n3", 3),
               Member("n4", 4)]
    before = claim(8, members, 3)
    assert before == ("n0", "n2", "n3", "n4", "n0", "n2", "n3", "n4")
    grown = [*members, Member("z", 1)]
    # The current counts (z: 0) are already within one of every new share, so the
    # minimal movement is none at all.
    check_balanced(before, 8, grown)
    after = claim(8, grown, 3, before)
    # Actual: partition 6 moves from n3 to n1, and z gets nothing.
    assert moved(before, after) == []


def test_removing_a_node_moves_only_its_partitions_when_rounding_allows() -> None:
    members = [Member("n0", 3), Member("n1", 4), Member("n2", 4), Member("n3", 1),
               Member("n4", 3), Member("n5", 2)]
    before = claim(8, members, 3)
    assert before == ("n1", "n2", "n0", "n1", "n2", "n3", "n4", "n5")
    rest = members[:5]
    # Giving n5's one partition (7) to n0 keeps everyone within one of the new share.
    minimal = (*before[:7], "n0")
    check_balanced(minimal, 8, rest)
    after = claim(8, rest, 3, before)
    # Actual: partitions 5 (n3 -> n0) and 7 (n5 -> n4) move: two instead of one.
    assert moved(before, after) == [7]


# --- neighbours -------------------------------------------------------------------------


@settings(max_examples=80)
@given(st.integers(1, 20), ring_sizes, n_vals)
def test_equal_weights_dividing_the_ring_never_share_neighbours(
    count: int, ring_size: int, n_val: int
) -> None:
    if ring_size % count or count < n_val:
        return
    members = [Member(f"node{index:02d}") for index in range(count)]
    assert neighbour_clashes(claim(ring_size, members, n_val), n_val) == []


@settings(max_examples=80)
@given(st.integers(1, 20), ring_sizes, n_vals)
def test_equal_weights_share_neighbours_only_at_the_wrap(
    count: int, ring_size: int, n_val: int
) -> None:
    if ring_size < count or count < n_val:
        return
    members = [Member(f"node{index:02d}") for index in range(count)]
    clashes = neighbour_clashes(claim(ring_size, members, n_val), n_val)
    # Only where the last lap meets partition 0 can the counts not be spread evenly.
    assert all(index >= ring_size - count - n_val for index, _ in clashes)
    assert len(clashes) <= (n_val - 1) ** 2


@settings(max_examples=50)
@given(member_lists(min_size=3), st.integers(5, 10).map(lambda exponent: 1 << exponent))
def test_weighted_neighbours_rarely_clash(members: list[Member], ring_size: int) -> None:
    n_val = 3
    quota = quotas(ring_size, members)
    if max(quota.values()) > ring_size // n_val or ring_size < 4 * len(members):
        return  # the quotas force clashes
    owners = claim(ring_size, members, n_val)
    windows = sum(
        1 for index in range(ring_size)
        if len({owners[(index + offset) % ring_size] for offset in range(n_val)}) < n_val
    )
    assert windows <= ring_size // 4


@pytest.mark.xfail(
    strict=True,
    reason="claim._pick is greedy and ignores the wrap-around: it can leave equal "
    "neighbours where the quotas allow none (claim.py rule 2)",
)
def test_neighbours_distinct_where_the_quotas_allow() -> None:
    members = [Member("a", 1), Member("b", 1), Member("c", 2)]
    # Quotas a=2, b=2, c=4; "c a c b c a c b" has no equal neighbours on the circle.
    possible = ("c", "a", "c", "b", "c", "a", "c", "b")
    assert Counter(possible) == quotas(8, members)
    assert neighbour_clashes(possible, 2) == []
    owners = claim(8, members, 2)
    # Actual: ("c", "a", "c", "b", "c", "a", "b", "c"): partitions 7 and 0 are both c.
    assert neighbour_clashes(owners, 2) == []
