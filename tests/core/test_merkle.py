"""Merkle trees: the diff is the keyed difference, incremental upkeep equals a rebuild.

Trees are compared to plain dicts key -> object hash. Small shapes (few segments, a
small fanout) make keys share segments and inner nodes, where the bugs would hide;
the default shape is checked too. Object hashes are drawn from a small pool, so that
two sides often agree on a key and sometimes do not.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynakv.core import api, dvvset, limits, merkle, messages
from dynakv.core.merkle import DiffStats, MerkleTree

SHAPES = [(1, 2), (2, 2), (8, 2), (16, 4), (64, 4), (32, 32), (1024, 32)]

shapes = st.sampled_from(SHAPES)
keys = st.binary(max_size=6)
hashes = st.sampled_from([merkle.object_hash(bytes([byte])) for byte in range(4)])
contents = st.dictionaries(keys, hashes, max_size=40)
# An edit sets a key to a hash or removes it (None).
edits = st.lists(st.tuples(keys, st.none() | hashes), max_size=30)

Contents = dict[bytes, bytes]
Edit = tuple[bytes, bytes | None]


def apply(contents: Contents, edit_list: list[Edit]) -> Contents:
    result = dict(contents)
    for key, hash_value in edit_list:
        if hash_value is None:
            result.pop(key, None)
        else:
            result[key] = hash_value
    return result


def keyed_difference(a: Contents, b: Contents) -> set[bytes]:
    return {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}


def all_hashes(tree: MerkleTree) -> list[dict[int, bytes]]:
    return [tree.level(depth, range(tree.level_size(depth))) for depth in range(tree.depth + 1)]


# --- properties --------------------------------------------------------------------------


@given(shapes, contents, st.data())
def test_diff_yields_exactly_the_keys_that_differ(
    shape: tuple[int, int], a_contents: Contents, data: st.DataObject
) -> None:
    # Edit existing keys as well as new ones.
    existing = st.sampled_from(sorted(a_contents)) if a_contents else keys
    more_edits = data.draw(st.lists(st.tuples(existing | keys, st.none() | hashes), max_size=20))
    b_contents = apply(a_contents, more_edits)
    a = MerkleTree.from_items(a_contents.items(), *shape)
    b = MerkleTree.from_items(b_contents.items(), *shape)
    expected = keyed_difference(a_contents, b_contents)
    assert merkle.diff(a, b) == expected
    assert merkle.diff(b, a) == expected
    assert (a.root() == b.root()) == (not expected)


@given(shapes, contents, edits, st.lists(st.integers(0, 30), max_size=3))
def test_incremental_updates_equal_a_rebuild(
    shape: tuple[int, int], start: Contents, edit_list: list[Edit], peeks: list[int]
) -> None:
    tree = MerkleTree.from_items(start.items(), *shape)
    for step, (key, hash_value) in enumerate(edit_list):
        if step in peeks:
            tree.root()  # refresh part way: later edits dirty a refreshed tree
        tree.update(key, hash_value)
    final = apply(start, edit_list)
    rebuilt = MerkleTree.from_items(final.items(), *shape)
    assert tree.root() == rebuilt.root()
    assert all_hashes(tree) == all_hashes(rebuilt)
    assert tree.keys_count == len(final)
    assert dict(tree.items()) == final
    assert merkle.diff(tree, rebuilt) == set()


@given(shapes, contents, st.data())
def test_equal_contents_have_equal_roots_in_any_order(
    shape: tuple[int, int], items: Contents, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(list(items.items())))
    one = MerkleTree(*shape)
    for key, hash_value in items.items():
        one.update(key, hash_value)
    other = MerkleTree(*shape)
    for key, hash_value in shuffled:
        other.update(key, hash_value)
    assert one.root() == other.root() == MerkleTree.from_items(shuffled, *shape).root()


@given(shapes, contents, st.integers(0, 40))
def test_removing_everything_returns_to_the_empty_root(
    shape: tuple[int, int], items: Contents, refresh_after: int
) -> None:
    empty = MerkleTree(*shape)
    tree = MerkleTree.from_items(items.items(), *shape)
    if items:
        assert tree.root() != empty.root()
    for count, key in enumerate(sorted(items, reverse=True)):
        if count == refresh_after:
            tree.root()
        tree.update(key, None)
    assert tree.root() == empty.root()
    assert all_hashes(tree) == all_hashes(empty)
    assert tree.keys_count == 0
    assert all(tree.segment_items(segment) == {} for segment in range(tree.segments))


@given(shapes, contents, edits)
def test_the_descent_by_pieces_matches_diff(
    shape: tuple[int, int], a_contents: Contents, edit_list: list[Edit]
) -> None:
    """What a networked exchange does, one level per message, finds what diff finds."""
    local = MerkleTree.from_items(a_contents.items(), *shape)
    remote = MerkleTree.from_items(apply(a_contents, edit_list).items(), *shape)
    indexes: list[int] = [0]
    for depth in range(local.depth + 1):
        differing = merkle.differing_children(
            local.level(depth, indexes), remote.level(depth, indexes)
        )
        if depth < local.depth:
            indexes = [child for index in differing for child in local.children(depth, index)]
    found: set[bytes] = set()
    for segment in differing:
        found |= merkle.segment_diff(local.segment_items(segment), remote.segment_items(segment))
    assert found == merkle.diff(local, remote)


# --- the cost of a diff on a large tree ---------------------------------------------------


def test_a_few_changed_keys_among_100000_are_found_cheaply() -> None:
    items = [(b"key-%07d" % index, merkle.object_hash(b"value %d" % index))
             for index in range(100_000)]
    a = MerkleTree.from_items(items)
    b = a.copy()
    changed = {b"key-0000010", b"key-0050000", b"key-0099999"}
    for key in changed:
        b.update(key, merkle.object_hash(b"changed " + key))
    b.update(b"key-0012345", None)  # deleted on b
    b.update(b"key-new", merkle.object_hash(b"new"))  # written only on b
    changed |= {b"key-0012345", b"key-new"}
    # Not one key's object hash changed on these: no difference.
    b.update(b"key-0000020", merkle.object_hash(b"value 20"))

    found, stats = merkle.diff_with_stats(a, b)

    assert found == changed
    assert a.keys_count == 100_000 and b.keys_count == 100_000
    fanout, changed_count = a.fanout, len(changed)
    assert a.depth == 2
    assert stats.rounds == a.depth + 2
    # The root, then the children of at most 5 differing nodes per level.
    assert stats.node_hashes_compared <= 1 + fanout + changed_count * fanout
    assert stats.segments_compared <= changed_count
    # Each segment holds about 100,000 / 1024 keys: a small fraction is compared.
    assert stats.segment_items_remote <= changed_count * 200
    assert stats.remote_bytes < 100_000 * 16 // 20


def test_equal_trees_compare_with_one_hash() -> None:
    items = [(b"k%d" % index, merkle.object_hash(b"%d" % index)) for index in range(1000)]
    found, stats = merkle.diff_with_stats(MerkleTree.from_items(items),
                                          MerkleTree.from_items(reversed(items)))
    assert found == set()
    assert stats == DiffStats(rounds=1, node_hashes_compared=1, remote_bytes=16)


# --- shape, levels and formats -------------------------------------------------------------


def test_the_default_shape() -> None:
    tree = MerkleTree()
    assert tree.shape == (merkle.DEFAULT_SEGMENTS, merkle.DEFAULT_FANOUT) == (1024, 32)
    assert tree.depth == 2
    assert [tree.level_size(depth) for depth in range(3)] == [1, 32, 1024]
    assert tree.children(0, 0) == range(0, 32)
    assert tree.children(1, 31) == range(992, 1024)


def test_a_short_top_level() -> None:
    tree = MerkleTree(512, 32)
    assert [tree.level_size(depth) for depth in range(tree.depth + 1)] == [1, 16, 512]
    assert tree.children(0, 0) == range(16)
    single = MerkleTree(1, 2)
    assert single.depth == 0
    single.update(b"k", merkle.object_hash(b"v"))
    assert single.root() == merkle.segment_hash({b"k": merkle.object_hash(b"v")})


@pytest.mark.parametrize(("segments", "fanout"), [
    (0, 2), (3, 2), (1000, 32), (limits.MERKLE_SEGMENTS_MAX * 2, 32),
    (1024, 1), (1024, 3), (1024, limits.MERKLE_FANOUT_MAX * 2),
])
def test_bad_shapes_are_refused(segments: int, fanout: int) -> None:
    with pytest.raises(ValueError):
        MerkleTree(segments, fanout)


def test_out_of_range_nodes_and_bad_hashes_are_refused() -> None:
    tree = MerkleTree(16, 4)
    with pytest.raises(ValueError):
        tree.level(3, [0])
    with pytest.raises(ValueError):
        tree.level(1, [4])
    with pytest.raises(ValueError):
        tree.level(-1, [0])
    with pytest.raises(ValueError):
        tree.children(2, 0)  # segments have items, not children
    with pytest.raises(ValueError):
        tree.segment_items(16)
    with pytest.raises(ValueError):
        tree.update(b"k", b"short")
    with pytest.raises(ValueError):
        MerkleTree.from_items([(b"k", b"short")])
    with pytest.raises(ValueError):
        merkle.diff(MerkleTree(16, 4), MerkleTree(16, 2))


def test_updates_and_lookups() -> None:
    tree = MerkleTree(8, 2)
    first, second = merkle.object_hash(b"1"), merkle.object_hash(b"2")
    tree.update(b"a", first)
    tree.update(b"a", second)
    tree.update(b"b", first)
    tree.update(b"missing", None)
    assert tree.keys_count == 2
    assert tree.get(b"a") == second and tree.get(b"missing") is None
    assert tree.segment_items(tree.segment_of(b"a"))[b"a"] == second
    snapshot = tree.copy()
    tree.update(b"a", None)
    assert snapshot.get(b"a") == second and tree.get(b"a") is None
    assert merkle.diff(tree, snapshot) == {b"a"}


def test_object_hash_of_canonical_encodings() -> None:
    def stored(server_id: str, counter: int, *values: bytes) -> bytes:
        siblings = tuple(api.Content(value) for value in values)
        return messages.encode_object(dvvset.Clock((dvvset.Entry(server_id, counter, siblings),)))

    assert merkle.object_hash(stored("a", 2, b"x", b"y")) == merkle.object_hash(
        stored("a", 2, b"x", b"y")
    )
    assert merkle.object_hash(stored("a", 2, b"x", b"y")) != merkle.object_hash(
        stored("a", 3, b"z")
    )
    assert len(merkle.object_hash(b"")) == merkle.HASH_SIZE_BYTES


def test_the_hash_formats_are_pinned() -> None:
    """Every node of a cluster must hash alike: changing a format breaks mixed versions."""
    assert merkle.object_hash(b"dynakv").hex() == "58751296cfebf44558240089497ec11c"
    assert [merkle.segment_of(b"key-%d" % i, 1024) for i in range(4)] == [614, 745, 136, 684]
    assert MerkleTree().root().hex() == "78d08d425a1f421a7128bcc575eb5b16"
    tree = MerkleTree.from_items([(b"key-%d" % i, merkle.object_hash(b"%d" % i))
                                  for i in range(100)])
    assert tree.root().hex() == "784d67f4bc0864df1ac4fe46e26c8cbe"



def test_the_hash_formats_follow_the_documentation() -> None:
    def blake2b(data: bytes, person: bytes, size: int = 16) -> bytes:
        return hashlib.blake2b(data, digest_size=size, person=person).digest()

    assert merkle.object_hash(b"x") == blake2b(b"x", b"dynakv-object")
    for key in (b"", b"a", b"key-1", bytes(range(200))):
        expected = int.from_bytes(blake2b(key, b"dynakv-key", 4), "big") % 64
        assert merkle.segment_of(key, 64) == MerkleTree(64, 4).segment_of(key) == expected
    first, second = merkle.object_hash(b"1"), merkle.object_hash(b"2")
    assert merkle.segment_hash({b"bb": first, b"a": second}) == blake2b(
        b"\0\0\0\x01a" + second + b"\0\0\0\x02bb" + first, b"dynakv-segment"
    )
    tree = MerkleTree(2, 2)
    tree.update(b"a", first)
    segments = tree.level(1, [0, 1])
    assert tree.root() == blake2b(segments[0] + segments[1], b"dynakv-inner")
