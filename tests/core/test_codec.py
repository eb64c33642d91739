"""The codec (internode messages, stored objects) and the client context encoding."""

from __future__ import annotations

import contextlib
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv.core import api, codec, dvvset
from dynakv.core import membership as ms
from dynakv.core import messages as m
from dynakv.core.buckets import QUORUM_NAMES
from dynakv.core.errors import ClientError, ErrorKind, PeerProtocolError

# --- strategies -------------------------------------------------------------------------

small_text = st.text(max_size=12)
u63 = st.integers(0, (1 << 63) - 1)
pairs = st.tuples(small_text, small_text)

contents = st.builds(
    api.Content,
    value=st.binary(max_size=64),
    content_type=small_text,
    content_encoding=small_text,
    usermeta=st.lists(pairs, max_size=3).map(tuple),
    links=st.lists(st.tuples(small_text, small_text, small_text), max_size=3).map(tuple),
    indexes=st.lists(pairs, max_size=3).map(tuple),
    last_modified_ms=u63,
    vtag=small_text,
    deleted=st.booleans(),
)


@st.composite
def objects(draw: st.DrawFn) -> api.Object:
    """A Clock[Content]: sorted distinct server ids, siblings and tombstones."""
    ids = sorted(draw(st.sets(st.text(min_size=1, max_size=8), max_size=4)))
    entries = []
    for server_id in ids:
        values = tuple(draw(st.lists(contents, max_size=3)))
        counter = draw(st.integers(len(values) or 1, 1 << 40))
        entries.append(dvvset.Entry(server_id, counter, values))
    return dvvset.Clock(tuple(entries))


quorums = st.one_of(st.none(), st.integers(0, 16), st.sampled_from(QUORUM_NAMES))
timeouts = st.one_of(st.none(), st.integers(1, 600_000))
names = st.text(min_size=1, max_size=10)
contexts = st.binary(max_size=20)

put_requests = st.builds(
    api.PutRequest, bucket_type=names, bucket=names, key=names, content=contents,
    context=contexts, w=quorums, dw=quorums, pw=quorums, return_body=st.booleans(),
    timeout_ms=timeouts,
)
delete_requests = st.builds(
    api.DeleteRequest, bucket_type=names, bucket=names, key=names, context=contexts,
    rw=quorums, w=quorums, dw=quorums, pw=quorums, timeout_ms=timeouts,
)
responses = st.one_of(
    st.builds(api.ObjectResponse, siblings=st.lists(contents, max_size=3).map(tuple),
              context=contexts),
    st.builds(api.DoneResponse, context=contexts),
    st.builds(api.ErrorResponse, kind=st.sampled_from(ErrorKind), message=small_text),
)
props = st.dictionaries(
    st.sampled_from(["n_val", "r", "w", "allow_mult", "last_write_wins", "dw"]),
    st.one_of(st.integers(0, 16), st.booleans(), st.sampled_from(["quorum", "all"])),
)
request_ids = st.integers(0, (1 << 32) - 1)
partitions = st.integers(0, (1 << 16) - 1)
keys = st.binary(max_size=40)

# One strategy per message type; test_every_message_type_is_covered keeps it complete.
MESSAGE_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    m.ReplicaPut: st.builds(m.ReplicaPut, request_id=request_ids, partition=partitions,
                            key=keys, data=objects().map(m.encode_object),
                            hint_for=small_text),
    m.ReplicaPutAck: st.builds(m.ReplicaPutAck, request_id=request_ids, error=small_text),
    m.ReplicaGet: st.builds(m.ReplicaGet, request_id=request_ids, partition=partitions,
                            key=keys),
    m.ReplicaGetReply: st.builds(m.ReplicaGetReply, request_id=request_ids,
                                 data=st.one_of(st.none(), objects().map(m.encode_object))),
    m.Forward: st.builds(m.Forward, request_id=request_ids,
                         request=st.one_of(put_requests, delete_requests)),
    m.ForwardReply: st.builds(m.ForwardReply, request_id=request_ids, response=responses),
    m.ListPage: st.builds(m.ListPage, request_id=request_ids, partition=partitions,
                          bucket_type=small_text, bucket=small_text, start=keys),
    m.ListPageReply: st.builds(m.ListPageReply, request_id=request_ids, partition=partitions,
                               items=st.lists(small_text, max_size=5).map(tuple),
                               next_start=st.one_of(st.none(), keys)),
    m.BucketPropsUpdate: st.builds(m.BucketPropsUpdate, bucket_type=names, bucket=names,
                                   props=st.one_of(st.none(), props),
                                   version=st.tuples(u63, small_text)),
    m.Ping: st.builds(m.Ping, sequence=u63),
    m.Pong: st.builds(m.Pong, sequence=u63),
    m.AeLevel: st.builds(m.AeLevel, request_id=request_ids, partition=partitions,
                         depth=st.integers(0, 4),
                         indexes=st.lists(st.integers(0, 1023), max_size=5).map(tuple),
                         shape=st.tuples(st.integers(1, 1024), st.integers(2, 64))),
    m.AeLevelReply: st.builds(m.AeLevelReply, request_id=request_ids,
                              hashes=st.lists(st.tuples(st.integers(0, 1023),
                                                        st.binary(min_size=16, max_size=16)),
                                              max_size=4).map(tuple),
                              ready=st.booleans()),
    m.AeSegments: st.builds(m.AeSegments, request_id=request_ids, partition=partitions,
                            segments=st.lists(st.integers(0, 1023), max_size=5).map(tuple)),
    m.AeSegmentsReply: st.builds(
        m.AeSegmentsReply, request_id=request_ids,
        items=st.lists(st.tuples(st.integers(0, 1023),
                                 st.lists(st.tuples(keys, st.binary(min_size=16, max_size=16)),
                                          max_size=3).map(tuple)),
                       max_size=3).map(tuple),
        ready=st.booleans()),
    m.AeRepair: st.builds(m.AeRepair, request_id=request_ids, partition=partitions,
                          objects=st.lists(st.tuples(keys, st.one_of(st.none(), objects())),
                                           max_size=3).map(tuple)),
    m.ReapCheck: st.builds(m.ReapCheck, request_id=request_ids, partition=partitions, key=keys,
                           digest=st.binary(min_size=16, max_size=16)),
    m.ReapVote: st.builds(m.ReapVote, request_id=request_ids, ok=st.booleans()),
    m.ReapDelete: st.builds(m.ReapDelete, partition=partitions, key=keys,
                            digest=st.binary(min_size=16, max_size=16)),
    m.GossipDigest: st.builds(m.GossipDigest, digest=small_text),
    m.TransferBatch: st.builds(m.TransferBatch, request_id=request_ids, partition=partitions,
                               objects=st.lists(st.tuples(keys, objects()),
                                                max_size=3).map(tuple)),
    m.TransferAck: st.builds(m.TransferAck, request_id=request_ids),
    m.TransfersQuery: st.builds(m.TransfersQuery, request_id=request_ids),
    m.TransfersReply: st.builds(
        m.TransfersReply, request_id=request_ids,
        transfers=st.lists(st.fixed_dictionaries(
            {"partition": partitions, "from": small_text, "keys_done": u63}),
            max_size=2).map(tuple),
        pending=u63, done=u63),
    m.GossipState: st.builds(m.GossipState, state=st.builds(
        ms.ClusterState, cluster_name=small_text, cluster_id=small_text,
        n_val=st.integers(1, 5),
        members=st.lists(st.builds(ms.MemberInfo, name=small_text, address=small_text,
                                   weight=st.integers(1, 4), zone=small_text,
                                   status=st.sampled_from(ms.Status),
                                   version=st.integers(1, 100),
                                   handoff_version=st.integers(0, 100)),
                         max_size=3).map(tuple),
        ring=st.builds(ms.RingInfo, version=st.integers(1, 100),
                       owners=st.lists(small_text, max_size=4).map(tuple),
                       claimant=small_text,
                       previous=st.lists(small_text, max_size=4).map(tuple)))),
    m.CommitPlan: st.builds(m.CommitPlan, request_id=request_ids, base_version=u63,
                            owners=st.lists(small_text, max_size=4).map(tuple)),
    m.CommitResult: st.builds(m.CommitResult, request_id=request_ids, error=small_text),
    m.AeRepairReply: st.builds(m.AeRepairReply, request_id=request_ids,
                               objects=st.lists(st.tuples(keys, st.one_of(st.none(), objects())),
                                                max_size=3).map(tuple)),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())


def test_every_message_type_is_covered() -> None:
    assert set(MESSAGE_STRATEGIES) == set(typing.get_args(m.Message))


# --- round trips ------------------------------------------------------------------------


@settings(max_examples=60)
@given(objects())
def test_object_round_trip(obj: api.Object) -> None:
    data = m.encode_object(obj)
    back = m.decode_object(data)
    assert back == obj
    assert dvvset.values(back) == dvvset.values(obj)
    assert dvvset.dots(back) == dvvset.dots(obj)
    assert m.encode_object(back) == data
    assert codec.decode(codec.encode(obj)) == obj  # inside a message


@settings(max_examples=120)
@given(messages)
def test_message_round_trip(message: Any) -> None:
    data = codec.encode(message)
    back = codec.decode(data)
    assert type(back) is type(message)
    assert back == message
    # Canonical: the decoded (equal, distinct) value encodes to the same bytes.
    assert codec.encode(back) == data


def test_object_with_siblings_and_tombstone() -> None:
    alive = api.Content(b"v1", "text/plain", usermeta=(("color", "red"),),
                        links=(("b", "k", "tag"),), indexes=(("idx_bin", "x"),),
                        last_modified_ms=1_700_000_000_000, vtag="abc")
    tombstone = api.Content(b"", deleted=True, vtag="def", last_modified_ms=5)
    obj = dvvset.Clock((dvvset.Entry("a#1", 3, (alive, tombstone)),
                        dvvset.Entry("b#7", 1, (alive,))))
    back = m.decode_object(m.encode_object(obj))
    assert back == obj
    assert [content.deleted for content in dvvset.values(back)] == [False, True, False]


@settings(max_examples=60)
@given(messages)
def test_equal_values_encode_equal(message: Any) -> None:
    # Built separately: a deep copy through the constructor, field by field.
    twin = codec.decode(codec.encode(message))
    assert twin == message and twin is not message
    assert codec.encode(twin) == codec.encode(message)


def test_equal_dicts_encode_equal() -> None:
    one = m.BucketPropsUpdate("default", "b", {"n_val": 3, "allow_mult": True}, (1, "n1"))
    two = m.BucketPropsUpdate("default", "b", {"allow_mult": True, "n_val": 3}, (1, "n1"))
    assert one == two
    assert codec.encode(one) == codec.encode(two)


# The stored format: objects on disk and their Merkle hashes depend on these exact bytes
# (OBJECT_FORMAT 2, the flat array; they must not change).
STORED_OBJECT_HEX = (
    "029293a3612331039299c4027631aa746578742f706c61696ea09192a5636f6c6f72a37265649193a162"
    "a16ba37461679192a76964785f62696ea178cf0000018bcfe56800a3616263c299c400b86170706c6963"
    "6174696f6e2f6f637465742d73747265616da090909005a3646566c393a3622337019199c4027631aa74"
    "6578742f706c61696ea09192a5636f6c6f72a37265649193a162a16ba37461679192a76964785f62696e"
    "a178cf0000018bcfe56800a3616263c2"
)
# The same object as stored before OBJECT_FORMAT (the generic codec's ext values): data
# directories written then must still be read, and hash as the current format does.
LEGACY_OBJECT_HEX = (
    "c7cd01920192c777019402a36123310392c742019a03c4027631aa746578742f706c61696ea09192a563"
    "6f6c6f72a37265649193a162a16ba37461679192a76964785f62696ea178cf0000018bcfe56800a36162"
    "63c2c727019a03c400b86170706c69636174696f6e2f6f637465742d73747265616da090909005a36465"
    "66c3c74d019402a36223370191c742019a03c4027631aa746578742f706c61696ea09192a5636f6c6f72"
    "a37265649193a162a16ba37461679192a76964785f62696ea178cf0000018bcfe56800a3616263c2"
)


def stored_object_sample() -> api.Object:
    alive = api.Content(b"v1", "text/plain", usermeta=(("color", "red"),),
                        links=(("b", "k", "tag"),), indexes=(("idx_bin", "x"),),
                        last_modified_ms=1_700_000_000_000, vtag="abc")
    tombstone = api.Content(b"", deleted=True, vtag="def", last_modified_ms=5)
    return dvvset.Clock((dvvset.Entry("a#1", 3, (alive, tombstone)),
                         dvvset.Entry("b#7", 1, (alive,))))


def test_stored_object_bytes_are_unchanged() -> None:
    obj = stored_object_sample()
    assert m.encode_object(obj).hex() == STORED_OBJECT_HEX
    assert m.decode_object(bytes.fromhex(STORED_OBJECT_HEX)) == obj
    reply = m.ForwardReply(7, api.ErrorResponse(ErrorKind.BUSY, "x"))
    assert codec.encode(reply).hex() == "c71401930f07c70e019309c707029201a462757379a178"


def test_objects_stored_in_the_legacy_format_are_read_and_hash_as_the_current() -> None:
    legacy = bytes.fromhex(LEGACY_OBJECT_HEX)
    assert m.decode_object(legacy) == stored_object_sample()
    assert m.canonical_object(legacy).hex() == STORED_OBJECT_HEX
    current = bytes.fromhex(STORED_OBJECT_HEX)
    assert m.canonical_object(current) is current


def test_an_object_inside_a_message_is_its_flat_array() -> None:
    obj = stored_object_sample()
    message = m.AeRepair(5, 2, ((b"k", obj),))
    outer = msgpack.unpackb(codec.encode(message))
    inner = msgpack.unpackb(outer.data, use_list=False)[-1][0][1]
    assert isinstance(inner, msgpack.ExtType) and inner.code == m.OBJECT_EXT
    assert bytes([m.OBJECT_FORMAT]) + inner.data == m.encode_object(obj)
    assert codec.decode(codec.encode(message)) == message


def test_dicts_anywhere_encode_in_key_order() -> None:
    one = m.TransfersReply(1, ({"partition": 3, "from": "a"}, {"z": 1, "a": 2}), 0, 0)
    two = m.TransfersReply(1, ({"from": "a", "partition": 3}, {"a": 2, "z": 1}), 0, 0)
    assert codec.encode(one) == codec.encode(two)
    assert codec.decode(codec.encode(one)) == one


def test_unregistered_types_are_refused() -> None:
    with pytest.raises(TypeError):
        codec.encode(api.ChunkResponse(("a",), True))
    with pytest.raises(TypeError):
        codec.encode(object())


# --- malformed input --------------------------------------------------------------------


def ext(code: int, payload: Any) -> bytes:
    packed: bytes = msgpack.packb(msgpack.ExtType(code, msgpack.packb(payload)))
    return packed


def tag_of(sample: Any) -> int:
    """The codec tag of a sample's class, read off its encoding."""
    outer = msgpack.unpackb(codec.encode(sample))
    tag: int = msgpack.unpackb(outer.data)[0]
    return tag


CLOCK_TAG = msgpack.unpackb(msgpack.unpackb(bytes.fromhex(LEGACY_OBJECT_HEX)).data)[0]
ENTRY_TAG = tag_of(dvvset.Entry("a", 1, ()))
CONTENT_TAG = tag_of(api.Content(b""))
REPLICA_GET_TAG = tag_of(m.ReplicaGet(1, 2, b"k"))

MALFORMED = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "truncated array": b"\x93\x01",
    "trailing bytes": codec.encode(m.ReplicaGet(1, 2, b"k")) + b"\x00",
    "unknown extension": ext(9, [1]),
    "unknown tag": ext(1, [999, 1, 2]),
    "tag not a number": ext(1, [[1], 2]),
    "payload not a list": ext(1, 7),
    "empty payload": ext(1, []),
    "too few fields": ext(1, [REPLICA_GET_TAG, 1]),
    "too many fields": ext(1, [CONTENT_TAG, b"v", "t", "", (), (), (), 0, "", False, 1]),
    "unknown enum tag": ext(2, [9, "busy"]),
    "bad enum value": ext(2, [1, "no_such_kind"]),
    "unsorted clock": ext(1, [CLOCK_TAG, [
        msgpack.ExtType(1, msgpack.packb([ENTRY_TAG, "b", 1, []])),
        msgpack.ExtType(1, msgpack.packb([ENTRY_TAG, "a", 1, []])),
    ]]),
    "non-string map key": ext(1, [REPLICA_GET_TAG, 1, {1: 2}, b"k"]),
    "object not an array": ext(3, 7),
    "object entry not a triple": ext(3, [["a", 1]]),
    "object counter not a number": ext(3, [["a", "1", []]]),
    "object sibling too short": ext(3, [["a", 1, [[b"v", "t"]]]]),
    "object sibling value not bytes": ext(3, [["a", 1, [["v", "t", "", [], [], [], 0, "",
                                                        False]]]]),
    "object unsorted": ext(3, [["b", 1, []], ["a", 1, []]]),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bytes_raise_peer_protocol_error(data: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        codec.decode(data)


@settings(max_examples=60)
@given(messages, st.data())
def test_truncated_messages_raise_peer_protocol_error(message: Any, data: st.DataObject) -> None:
    encoded = codec.encode(message)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(PeerProtocolError):
        codec.decode(encoded[:cut])


@settings(max_examples=200)
@given(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda code, body: msgpack.packb(msgpack.ExtType(code, body)),
              st.integers(0, 3), st.binary(max_size=32)),
))
def test_garbage_decodes_or_raises_peer_protocol_error(data: bytes) -> None:
    with contextlib.suppress(PeerProtocolError):
        codec.decode(data)


def test_decode_object_of_a_non_object_fails() -> None:
    with pytest.raises(PeerProtocolError):
        m.decode_object(codec.encode(m.ReplicaGet(1, 2, b"k")))
    with pytest.raises(PeerProtocolError):
        m.decode_object(bytes([m.OBJECT_FORMAT]) + b"\xc1")


# --- the client context -----------------------------------------------------------------


@st.composite
def version_vectors(draw: st.DrawFn) -> dvvset.VersionVector:
    ids = sorted(draw(st.sets(st.text(min_size=1, max_size=12), max_size=5)))
    return tuple((server_id, draw(st.integers(1, (1 << 63) - 1))) for server_id in ids)


@settings(max_examples=150)
@given(version_vectors())
def test_context_round_trip(vector: dvvset.VersionVector) -> None:
    data = api.encode_context(vector)
    assert data[0] == api.CONTEXT_VERSION
    assert api.decode_context(data) == vector


@settings(max_examples=100)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=4), st.integers(1, 1 << 40)),
                max_size=6))
def test_context_decodes_sorted_with_distinct_ids(pairs: list[tuple[str, int]]) -> None:
    vector = api.decode_context(api.encode_context(tuple(pairs)))
    assert list(vector) == sorted(vector)
    assert {server_id for server_id, _ in vector} == {server_id for server_id, _ in pairs}
    assert len({server_id for server_id, _ in vector}) == len(vector)


def test_empty_context() -> None:
    assert api.decode_context(b"") == ()
    assert api.decode_context(api.encode_context(())) == ()


def test_context_of_a_written_clock() -> None:
    clock = dvvset.update(dvvset.new((), "v"), dvvset.Clock(), "node1#42")
    vector = dvvset.join(clock)
    assert api.decode_context(api.encode_context(vector)) == vector == (("node1#42", 1),)


GARBAGE_CONTEXTS = {
    "unknown version": b"\x02" + msgpack.packb([["a", 1]]),
    "riak vclock": b"k\xce\xa1",
    "reserved byte": b"\x01\xc1",
    "truncated": b"\x01\x92",
    "not a list": b"\x01" + msgpack.packb(5),
    "pair too short": b"\x01" + msgpack.packb([["a"]]),
    "counter not a number": b"\x01" + msgpack.packb([["a", "x"]]),
    "counter zero": b"\x01" + msgpack.packb([["a", 0]]),
    "counter negative": b"\x01" + msgpack.packb([["a", -3]]),
    "empty server id": b"\x01" + msgpack.packb([["", 1]]),
    "trailing bytes": api.encode_context((("a", 1),)) + b"\x00",
}


@pytest.mark.parametrize("data", GARBAGE_CONTEXTS.values(), ids=GARBAGE_CONTEXTS.keys())
def test_garbage_context_is_a_client_error(data: bytes) -> None:
    with pytest.raises(ClientError):
        api.decode_context(data)


@settings(max_examples=200)
@given(st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(lambda b: b"\x01" + b)))
def test_any_context_bytes_decode_to_a_vector_or_a_client_error(data: bytes) -> None:
    try:
        vector = api.decode_context(data)
    except ClientError:
        return
    assert list(vector) == sorted(dict(vector).items())
    assert all(isinstance(s, str) and s and isinstance(c, int) and c >= 1 for s, c in vector)


def test_wrongly_typed_fields_raise_peer_protocol_error() -> None:
    data = ext(1, [REPLICA_GET_TAG, "one", None, 5])
    with pytest.raises(PeerProtocolError):
        codec.decode(data)
