"""Gossiped cluster state: merge is a semilattice join, gossip converges fast, and
staged plans are applied by one claimant, in order."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv.core import membership as ms

RING_SIZE = 32


def founder() -> ms.ClusterState:
    return ms.new_cluster("c", "id1", ms.MemberInfo("n0", "h0:1"), RING_SIZE, 3)


def evolve(ops: list[tuple[int, int, int]]) -> list[ms.ClusterState]:
    """Four replicas of the state; each op stages on one, merges two, or commits."""
    replicas = [founder() for _ in range(4)]
    for kind, i, j in ops:
        a = replicas[i % 4]
        if kind == 0:
            replicas[i % 4] = ms.stage_join(a, ms.MemberInfo(f"n{j % 6 + 1}", f"h{j}:1",
                                                             weight=1 + j % 3))
        elif kind == 1:
            replicas[i % 4] = replicas[j % 4] = ms.merge(a, replicas[j % 4])
        elif kind == 2:
            names = [m.name for m in a.active() if m.status is ms.Status.VALID]
            if len(names) > 1:
                replicas[i % 4] = ms.stage_leave(a, names[j % len(names)])
        else:
            leader = ms.claimant(a)
            replicas[i % 4] = ms.commit(a, ms.plan(a), leader)
    return replicas


operations = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 20)),
                      max_size=25)


@settings(max_examples=80)
@given(operations)
def test_merge_is_commutative_associative_and_idempotent(ops: list[tuple[int, int, int]]) -> None:
    a, b, c, _ = evolve(ops)
    assert ms.merge(a, b) == ms.merge(b, a)
    assert ms.merge(ms.merge(a, b), c) == ms.merge(a, ms.merge(b, c))
    assert ms.merge(a, a) == a
    assert ms.digest(ms.merge(a, b)) == ms.digest(ms.merge(b, a))


@pytest.mark.parametrize("nodes", [10, 100, 1000])
def test_gossip_with_one_random_peer_per_round_converges_in_logarithmic_rounds(
    nodes: int,
) -> None:
    rng = random.Random(nodes)
    base = founder()
    states = [base] * nodes
    states[0] = ms.stage_join(base, ms.MemberInfo("joiner", "hj:1"))  # news at one node
    rounds = 0
    while len({ms.digest(s) for s in states}) > 1:
        rounds += 1
        for index in range(nodes):
            peer = rng.randrange(nodes)
            merged = ms.merge(states[index], states[peer])
            states[index] = states[peer] = merged
    # Push-pull gossip spreads news in about log2(n) + ln(n) rounds.
    assert rounds <= 2 * nodes.bit_length() + 2, rounds


def test_a_join_is_planned_then_committed_by_the_claimant() -> None:
    state = founder()
    state = ms.stage_join(state, ms.MemberInfo("n1", "h1:1"))
    state = ms.stage_join(state, ms.MemberInfo("n2", "h2:1", weight=2))
    proposed = ms.plan(state)
    counts = Counter(proposed.owners)
    assert counts == {"n0": 8, "n1": 8, "n2": 16}
    assert len(proposed.moves) == 24  # only what the new members take moves
    with pytest.raises(ValueError, match="claimant"):
        ms.commit(state, proposed, "n1")
    committed = ms.commit(state, proposed, ms.claimant(state))
    assert committed.ring.version == 2 and committed.ring.owners == proposed.owners
    assert {m.name: m.status for m in committed.members} == {
        "n0": ms.Status.VALID, "n1": ms.Status.VALID, "n2": ms.Status.VALID}


def test_two_commits_of_plans_made_on_two_nodes_cannot_make_two_rings() -> None:
    state = founder()
    left = ms.stage_join(state, ms.MemberInfo("n1", "h1:1"))
    right = ms.stage_join(state, ms.MemberInfo("n2", "h2:1"))
    plan_left, plan_right = ms.plan(left), ms.plan(right)
    merged = ms.merge(left, right)
    first = ms.commit(merged, plan_left, ms.claimant(merged))
    with pytest.raises(ms.StalePlan):
        ms.commit(first, plan_right, ms.claimant(first))
    # Gossip of the committed ring wins everywhere.
    assert ms.merge(first, right).ring == first.ring == ms.merge(right, first).ring


def test_a_leave_hands_the_leavers_partitions_to_the_others() -> None:
    state = founder()
    for name in ("n1", "n2", "n3"):
        state = ms.stage_join(state, ms.MemberInfo(name, f"{name}:1"))
    state = ms.commit(state, ms.plan(state), "n0")
    state = ms.stage_leave(state, "n2")
    proposed = ms.plan(state)
    assert "n2" not in proposed.owners
    assert all(old == "n2" for _, old, _ in proposed.moves)
    committed = ms.commit(state, proposed, ms.claimant(state))
    leaver = committed.member("n2")
    # It stays a member (others keep talking to it) until it has handed its data off.
    assert leaver is not None and leaver.status is ms.Status.EXITING
    assert "n2" in {m.name for m in committed.active()}
    assert "n2" in ms.handing_off(committed)
    done = ms.handoff_done(committed, "n2")
    assert done.member("n2").status is ms.Status.REMOVED  # type: ignore[union-attr]
    assert "n2" not in {m.name for m in done.active()}
    assert ms.merge(committed, done) == ms.merge(done, committed) == done
    # A member staged for removal (admin remove of a dead node) is removed at once.
    removing = ms.stage_remove(state, "n2")
    assert ms.plan(removing).owners == proposed.owners
    removed = ms.commit(removing, ms.plan(removing), ms.claimant(state))
    assert removed.member("n2").status is ms.Status.REMOVED  # type: ignore[union-attr]
    assert removed.ring == committed.ring
    # So is a leaver that died while exiting; nothing moves, so the ring stays.
    dead = ms.stage_remove(committed, "n2")
    with pytest.raises(ValueError, match="exiting already"):
        ms.stage_leave(committed, "n2")
    gone = ms.commit(dead, ms.plan(dead), ms.claimant(dead))
    assert gone.member("n2").status is ms.Status.REMOVED  # type: ignore[union-attr]
    assert gone.ring == committed.ring


def test_states_of_two_clusters_never_merge() -> None:
    other = ms.new_cluster("c", "id2", ms.MemberInfo("x", "hx:1"), RING_SIZE, 3)
    with pytest.raises(ValueError, match="two clusters"):
        ms.merge(founder(), other)


def test_nodes_bootstrapped_with_one_member_list_agree() -> None:
    members = [ms.MemberInfo(f"n{i}", f"h{i}:1") for i in range(3)]
    owners = tuple(f"n{i % 3}" for i in range(RING_SIZE))
    a = ms.bootstrap("c", members, owners, 3)
    b = ms.bootstrap("c", list(reversed(members)), owners, 3)
    assert a == b and ms.claimant(a) == "n0"
