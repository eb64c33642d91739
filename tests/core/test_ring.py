"""The ring: the documented key hash, partition arithmetic and preference lists."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv.core import limits
from dynakv.core.claim import Member, claim
from dynakv.core.ring import (
    HASH_BITS,
    Ring,
    Target,
    key_bytes,
    key_hash,
    partition_of_hash,
    preference_list,
    primary_owners,
    split_key_bytes,
)

names_text = st.text(min_size=0, max_size=20)
ring_sizes = st.integers(0, 16).map(lambda exponent: 1 << exponent)
hashes = st.integers(0, (1 << HASH_BITS) - 1)

# --- the key hash -----------------------------------------------------------------------


def test_key_bytes_pinned() -> None:
    # msgpack fixarray(3) of three fixstr: the documented canonical name encoding.
    assert key_bytes("default", "b", "k").hex() == "93a764656661756c74a162a16b"


def test_key_hash_pinned() -> None:
    # Pinned once: a change of the documented formula moves every key of every cluster.
    assert key_hash("default", "users", "alice") == 0x203FB68AE7288548C6E8FBFE2C5FEB9C80D67016
    assert key_hash("default", "b", "k") == 340798613384046573034982961295989563534035115562


def test_partition_of_pinned_key() -> None:
    # 0x203f... on a ring of 64 is partition 0x20 >> 2 = 8.
    ring = Ring(tuple(f"n{index % 4}" for index in range(64)))
    assert ring.partition_of("default", "users", "alice") == 8


@settings(max_examples=100)
@given(names_text, names_text, names_text)
def test_key_hash_is_the_documented_formula(bucket_type: str, bucket: str, key: str) -> None:
    packed = msgpack.packb([bucket_type, bucket, key])
    expected = int.from_bytes(hashlib.sha1(packed).digest(), "big")
    assert key_hash(bucket_type, bucket, key) == expected
    assert 0 <= key_hash(bucket_type, bucket, key) < 1 << HASH_BITS


@settings(max_examples=100)
@given(names_text, names_text, names_text)
def test_split_key_bytes_inverts_key_bytes(bucket_type: str, bucket: str, key: str) -> None:
    assert split_key_bytes(key_bytes(bucket_type, bucket, key)) == (bucket_type, bucket, key)


def test_key_bytes_distinguishes_the_split_of_a_name() -> None:
    assert key_hash("default", "ab", "c") != key_hash("default", "a", "bc")


# --- partitions -------------------------------------------------------------------------


@settings(max_examples=200)
@given(ring_sizes, hashes)
def test_partition_of_hash_bounds(ring_size: int, hash_value: int) -> None:
    partition = partition_of_hash(ring_size, hash_value)
    assert 0 <= partition < ring_size
    assert partition == hash_value * ring_size // (1 << HASH_BITS)


@pytest.mark.parametrize("ring_size", [1, 2, 8, 64, 1024, 1 << 16])
def test_partition_of_hash_extremes(ring_size: int) -> None:
    assert partition_of_hash(ring_size, 0) == 0
    assert partition_of_hash(ring_size, (1 << HASH_BITS) - 1) == ring_size - 1
    # Each partition is an equal, contiguous slice of the hash space.
    width = (1 << HASH_BITS) // ring_size
    assert partition_of_hash(ring_size, width - 1) == 0
    if ring_size > 1:
        assert partition_of_hash(ring_size, width) == 1


@settings(max_examples=100)
@given(ring_sizes, hashes, hashes)
def test_partition_of_hash_is_monotonic(ring_size: int, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert partition_of_hash(ring_size, low) <= partition_of_hash(ring_size, high)


@pytest.mark.parametrize("size", [0, 3, 6, 100, limits.RING_SIZE_MAX * 2])
def test_ring_refuses_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError):
        Ring(tuple("a" for _ in range(size)))


def test_ring_accessors() -> None:
    ring = Ring(("b", "a", "b", "c"))
    assert ring.size == 4
    assert ring.nodes() == ["a", "b", "c"]
    assert ring.partitions_of("b") == [0, 2]
    assert ring.partitions_of("z") == []


# --- preference lists -------------------------------------------------------------------


@st.composite
def claimed_rings(draw: st.DrawFn, equal_weights: bool = False) -> tuple[Ring, int]:
    """A ring claimed for random members, and a partition on it."""
    count = draw(st.integers(1, 12))
    weights = [1] * count if equal_weights else draw(
        st.lists(st.integers(1, 4), min_size=count, max_size=count)
    )
    members = [Member(f"node{index:02d}", weight) for index, weight in enumerate(weights)]
    ring_size = 1 << draw(st.integers(3, 8))
    n_val = draw(st.integers(1, 5))
    ring = Ring(claim(ring_size, members, n_val))
    partition = draw(st.integers(0, ring_size - 1))
    return ring, partition


def check_targets_name_owners(ring: Ring, targets: list[Target]) -> None:
    for target in targets:
        assert ring.owners[target.partition] == target.node


@settings(max_examples=100)
@given(claimed_rings(), st.integers(1, 5))
def test_primaries_are_distinct_owners_clockwise(ring_and_partition: tuple[Ring, int],
                                                 n: int) -> None:
    ring, partition = ring_and_partition
    targets = preference_list(ring, partition, n)
    nodes = [target.node for target in targets]
    assert len(nodes) == len(set(nodes)) == min(n, len(ring.nodes()))
    assert all(target.primary and not target.hint_for for target in targets)
    assert targets[0].partition == partition
    check_targets_name_owners(ring, targets)
    # Clockwise order: the distance from the key's partition strictly increases.
    distances = [(target.partition - partition) % ring.size for target in targets]
    assert distances == sorted(set(distances))
    # Nothing skipped: every partition walked before the last target is owned by a target.
    for distance in range(distances[-1] + 1):
        assert ring.owners[(partition + distance) % ring.size] in nodes


@settings(max_examples=100)
@given(claimed_rings(equal_weights=True), st.integers(1, 5))
def test_enough_nodes_give_n_distinct_replicas(ring_and_partition: tuple[Ring, int],
                                               n: int) -> None:
    ring, partition = ring_and_partition
    if len(ring.nodes()) < n:
        return
    targets = preference_list(ring, partition, n)
    assert len({target.node for target in targets}) == n


def test_heavy_weights_never_leave_fewer_replicas_than_members() -> None:
    # The claim's rule 1 (distinct nodes) comes before weight: a light node still owns a
    # partition, so three members always give three distinct replicas.
    members = [Member("a", 1), Member("b", 1), Member("c", 20)]
    ring = Ring(claim(8, members, 3))
    assert len(ring.nodes()) == 3
    assert all(len(preference_list(ring, p, 3)) == 3 for p in range(ring.size))


@st.composite
def rings_with_up(draw: st.DrawFn) -> tuple[Ring, int, int, frozenset[str]]:
    ring, partition = draw(claimed_rings())
    n = draw(st.integers(1, 5))
    nodes = ring.nodes()
    up = draw(st.sets(st.sampled_from(nodes))) if nodes else set()
    strangers = draw(st.sets(st.sampled_from(["stranger1", "stranger2"])))
    return ring, partition, n, frozenset(up | strangers)


@settings(max_examples=100)
@given(rings_with_up())
def test_sloppy_preference_list(case: tuple[Ring, int, int, frozenset[str]]) -> None:
    ring, partition, n, up = case
    primaries = primary_owners(ring, partition, n)
    primary_nodes = [target.node for target in primaries]
    targets = preference_list(ring, partition, n, up)
    nodes = [target.node for target in targets]

    assert len(nodes) == len(set(nodes)), "replicas are distinct nodes"
    assert all(node in up for node in nodes), "no down node is chosen"
    assert len(targets) == min(n, len(up & set(ring.nodes())))
    check_targets_name_owners(ring, targets)
    for target in targets:
        assert target.primary == (target.node in primary_nodes)
    # The up primaries come first, in their order; then the fallbacks.
    up_primaries = [target for target in primaries if target.node in up]
    assert targets[: len(up_primaries)] == up_primaries
    fallbacks = targets[len(up_primaries):]
    assert not any(target.primary for target in fallbacks)
    assert all(target.hint_for == "" for target in targets[: len(up_primaries)])
    # Each fallback stands in for (keeps the hint of) a distinct down primary, in order.
    down_primaries = [node for node in primary_nodes if node not in up]
    assert [target.hint_for for target in fallbacks] == down_primaries[: len(fallbacks)]
    # Fallbacks are the next distinct up nodes clockwise after the primaries.
    if fallbacks:
        start = primaries[-1].partition
        walk: list[str] = []
        for step in range(1, ring.size + 1):
            owner = ring.owners[(start + step) % ring.size]
            if owner in up and owner not in primary_nodes and owner not in walk:
                walk.append(owner)
        assert [target.node for target in fallbacks] == walk[: len(fallbacks)]


@settings(max_examples=100)
@given(claimed_rings(), st.integers(1, 5))
def test_everyone_up_is_the_primary_list(ring_and_partition: tuple[Ring, int], n: int) -> None:
    ring, partition = ring_and_partition
    assert preference_list(ring, partition, n, set(ring.nodes())) == preference_list(
        ring, partition, n
    )


def test_preference_list_example() -> None:
    ring = Ring(("a", "b", "c", "d", "a", "b", "c", "d"))
    assert preference_list(ring, 6, 3) == [
        Target(6, "c", True), Target(7, "d", True), Target(0, "a", True)
    ]
    # b is down: the next distinct up node clockwise after the primaries stands in.
    assert preference_list(ring, 0, 3, {"a", "c", "d"}) == [
        Target(0, "a", True), Target(2, "c", True), Target(3, "d", False, hint_for="b")
    ]
    assert preference_list(ring, 0, 3, {"d"}) == [Target(3, "d", False, hint_for="a")]
    assert preference_list(ring, 0, 3, set()) == []
