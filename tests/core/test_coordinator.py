"""The put and get quorum state machines."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv.core import api, dvvset
from dynakv.core import messages as m
from dynakv.core.coordinator import (
    ClientReplyTo,
    GetState,
    Outcome,
    PutState,
    live_siblings,
    resolve_single,
)


def put_state(w: int, nodes: Iterable[str] = ("a", "b", "c"), primaries: Iterable[str] = (
        "a", "b", "c"), dw: int = 0, pw: int = 0) -> PutState:
    return PutState(
        reply_to=ClientReplyTo(1), deadline_ms=1_000, partition=0, key=b"k",
        obj=dvvset.Clock(), data=b"", w=w, dw=dw, pw=pw, return_body=False,
        primaries=frozenset(primaries), waiting=set(nodes),
    )


def get_state(r: int, nodes: Iterable[str] = ("a", "b", "c"), primaries: Iterable[str] = (
        "a", "b", "c"), pr: int = 0, notfound_ok: bool = True,
        basic_quorum: bool = False) -> GetState:
    return GetState(
        reply_to=ClientReplyTo(1), deadline_ms=1_000, partition=0, key=b"k", r=r, pr=pr,
        notfound_ok=notfound_ok, basic_quorum=basic_quorum, single_value=False,
        asked=tuple(nodes), primaries=frozenset(primaries),
    )


def content(value: bytes, modified_ms: int = 0, deleted: bool = False) -> api.Content:
    return api.Content(value, last_modified_ms=modified_ms, deleted=deleted)


def written(value: bytes, server: str = "a", modified_ms: int = 0,
            deleted: bool = False) -> api.Object:
    return dvvset.update(dvvset.new((), content(value, modified_ms, deleted)), dvvset.Clock(),
                         server)


FOUND_OBJECT = written(b"v")
FOUND = m.encode_object(FOUND_OBJECT)  # a replica's reply: its copy as stored

# --- puts -------------------------------------------------------------------------------


def test_put_succeeds_when_w_acknowledge() -> None:
    state = put_state(w=2)
    assert state.outcome() is Outcome.PENDING
    state.ack("a")
    assert state.outcome() is Outcome.PENDING
    state.ack("b")
    assert state.outcome() is Outcome.SUCCESS


def test_put_fails_once_w_is_impossible() -> None:
    state = put_state(w=3)
    state.ack("a")
    state.fail("b", "disk full")
    assert state.outcome() is Outcome.FAILED
    assert "b: disk full" in state.failure_message()
    assert "indeterminate" in state.failure_message()


def test_put_needs_the_larger_of_w_and_dw() -> None:
    state = put_state(w=1, dw=2)
    state.ack("a")
    assert state.outcome() is Outcome.PENDING
    state.ack("c")
    assert state.outcome() is Outcome.SUCCESS


def test_duplicate_and_stray_acks_count_once() -> None:
    state = put_state(w=2)
    state.ack("a")
    state.ack("a")
    state.ack("stranger")
    assert state.acks == 1
    assert state.outcome() is Outcome.PENDING
    state.fail("a", "late failure after an ack is ignored")
    assert state.acks == 1 and state.failed == []


def test_pw_counts_only_primaries() -> None:
    state = put_state(w=2, pw=2, nodes=("a", "b", "fallback"), primaries=("a", "b"))
    state.ack("a")
    state.ack("fallback")
    assert state.acks == 2 and state.primary_acks == 1
    assert state.outcome() is Outcome.PENDING
    state.ack("b")
    assert state.outcome() is Outcome.SUCCESS


def test_pw_fails_when_a_primary_fails() -> None:
    state = put_state(w=1, pw=2, nodes=("a", "b", "fallback"), primaries=("a", "b"))
    state.ack("a")
    state.ack("fallback")
    state.fail("b", "timeout")
    assert state.outcome() is Outcome.FAILED


@st.composite
def put_runs(draw: st.DrawFn) -> tuple[PutState, list[tuple[str, bool]]]:
    nodes = [f"n{index}" for index in range(draw(st.integers(1, 5)))]
    primaries = draw(st.sets(st.sampled_from(nodes)))
    w = draw(st.integers(1, len(nodes)))
    dw = draw(st.integers(0, len(nodes)))
    pw = draw(st.integers(0, len(primaries)))
    answers = draw(st.permutations(nodes))
    oks = draw(st.lists(st.booleans(), min_size=len(nodes), max_size=len(nodes)))
    return (put_state(w, nodes, primaries, dw, pw),
            list(zip(answers, oks, strict=True)))


@settings(max_examples=100)
@given(put_runs())
def test_put_outcome_is_exact_and_final(run: tuple[PutState, list[tuple[str, bool]]]) -> None:
    state, answers = run
    acks: set[str] = set()
    decided: Outcome | None = None
    for node, ok in answers:
        if ok:
            state.ack(node)
            acks.add(node)
        else:
            state.fail(node, "error")
        outcome = state.outcome()
        met = (len(acks) >= max(state.w, state.dw)
               and len(acks & state.primaries) >= state.pw)
        assert (outcome is Outcome.SUCCESS) == met
        if decided is not None:
            assert outcome is decided, "a decided put never changes its mind"
        elif outcome is not Outcome.PENDING:
            decided = outcome
    assert state.outcome() is not Outcome.PENDING, "every replica answered"


# --- gets -------------------------------------------------------------------------------


def test_get_succeeds_after_r_replies() -> None:
    state = get_state(r=2)
    state.reply("a", FOUND)
    assert state.outcome() is Outcome.PENDING
    state.reply("b", None)
    assert state.outcome() is Outcome.SUCCESS  # notfound_ok: a notfound is a success
    assert state.merged() == FOUND_OBJECT


def test_get_notfound_ok_all_notfound_is_not_found() -> None:
    state = get_state(r=2)
    state.reply("a", None)
    state.reply("b", None)
    assert state.outcome() is Outcome.NOT_FOUND
    assert state.merged() is None


def test_get_without_notfound_ok_waits_for_a_value() -> None:
    state = get_state(r=1, notfound_ok=False)
    state.reply("a", None)
    state.reply("b", None)
    assert state.outcome() is Outcome.PENDING
    state.reply("c", FOUND)
    assert state.outcome() is Outcome.SUCCESS


def test_get_without_notfound_ok_all_notfound_is_not_found() -> None:
    state = get_state(r=1, notfound_ok=False)
    for node in ("a", "b", "c"):
        state.reply(node, None)
    assert state.outcome() is Outcome.NOT_FOUND


def test_get_without_notfound_ok_some_found_but_r_unmet_fails() -> None:
    state = get_state(r=2, notfound_ok=False)
    state.reply("a", FOUND)
    state.reply("b", None)
    assert state.outcome() is Outcome.PENDING
    state.reply("c", None)
    assert state.outcome() is Outcome.FAILED


def test_basic_quorum_answers_notfound_early() -> None:
    without = get_state(r=1, notfound_ok=False)
    early = get_state(r=1, notfound_ok=False, basic_quorum=True)
    for state in (without, early):
        state.reply("a", None)
        state.reply("b", None)
    assert without.outcome() is Outcome.PENDING
    assert early.outcome() is Outcome.NOT_FOUND


def test_basic_quorum_needs_a_majority_of_notfounds() -> None:
    state = get_state(r=1, notfound_ok=False, basic_quorum=True,
                      nodes=("a", "b", "c", "d", "e"))
    state.reply("a", None)
    state.reply("b", None)
    assert state.outcome() is Outcome.PENDING
    state.reply("c", None)
    assert state.outcome() is Outcome.NOT_FOUND


def test_basic_quorum_does_nothing_with_notfound_ok() -> None:
    state = get_state(r=3, notfound_ok=True, basic_quorum=True)
    state.reply("a", None)
    state.reply("b", None)
    assert state.outcome() is Outcome.PENDING


def test_get_fails_when_replicas_fail() -> None:
    state = get_state(r=2)
    state.reply("a", FOUND)
    state.fail("b", "timeout")
    assert state.outcome() is Outcome.PENDING
    state.fail("c", "connection lost")
    assert state.outcome() is Outcome.FAILED
    message = state.failure_message()
    assert "b: timeout" in message and "c: connection lost" in message


def test_failed_replies_are_not_notfounds() -> None:
    state = get_state(r=2)
    state.fail("a", "timeout")
    state.reply("a", FOUND)  # a late reply after the failure is ignored
    state.reply("b", None)
    assert state.outcome() is Outcome.PENDING
    state.fail("c", "timeout")
    assert state.outcome() is Outcome.FAILED


def test_pr_counts_only_primaries() -> None:
    state = get_state(r=2, pr=2, nodes=("a", "b", "fallback"), primaries=("a", "b"))
    state.reply("a", FOUND)
    state.reply("fallback", FOUND)
    assert state.outcome() is Outcome.PENDING
    state.reply("b", None)  # notfound_ok: a primary's notfound counts toward pr
    assert state.outcome() is Outcome.SUCCESS


def test_pr_fails_when_a_primary_fails() -> None:
    state = get_state(r=1, pr=2, nodes=("a", "b", "fallback"), primaries=("a", "b"))
    state.reply("a", FOUND)
    state.reply("fallback", FOUND)
    state.fail("b", "timeout")
    assert state.outcome() is Outcome.FAILED


def test_pr_without_notfound_ok_needs_primaries_with_values() -> None:
    state = get_state(r=1, pr=2, nodes=("a", "b", "fallback"), primaries=("a", "b"),
                      notfound_ok=False)
    state.reply("a", FOUND)
    state.reply("b", None)
    assert state.outcome() is not Outcome.SUCCESS


def test_replies_from_strangers_and_duplicates_are_ignored() -> None:
    state = get_state(r=2)
    state.reply("stranger", FOUND)
    state.reply("a", FOUND)
    state.reply("a", None)
    assert state.replies == {"a": FOUND}
    assert state.outcome() is Outcome.PENDING


def test_merged_syncs_the_found_replies() -> None:
    state = get_state(r=3)
    one, two = written(b"1", "a"), written(b"2", "b")
    state.reply("a", m.encode_object(one))
    assert state.merged() == one and state.merged_data() == m.encode_object(one)
    state.reply("b", m.encode_object(two))  # a new reply: merged again
    state.reply("c", None)
    merged = state.merged()
    assert merged is not None
    assert sorted(c.value for c in dvvset.values(merged)) == [b"1", b"2"]
    assert state.merged_data() == m.encode_object(merged)


def test_replicas_that_agree_are_decoded_once_and_not_merged() -> None:
    state = get_state(r=3)
    for node in ("a", "b", "c"):
        state.reply(node, FOUND)
    assert list(state.decoded) == [FOUND]
    assert state.merged() is state.decoded[FOUND]
    assert state.merged_data() is FOUND  # every replica answered it: no read repair


def test_a_malformed_reply_counts_as_that_replica_failing() -> None:
    state = get_state(r=2)
    state.reply("a", FOUND)
    state.reply("b", b"\x02\x93garbage")
    assert state.failed_nodes == {"b"} and "b: malformed object" in state.errors[0]
    assert state.outcome() is Outcome.PENDING
    state.reply("c", FOUND)
    assert state.outcome() is Outcome.SUCCESS and state.merged() == FOUND_OBJECT


@st.composite
def get_runs(draw: st.DrawFn) -> tuple[GetState, list[tuple[str, str]]]:
    nodes = [f"n{index}" for index in range(draw(st.integers(1, 5)))]
    primaries = draw(st.sets(st.sampled_from(nodes)))
    state = get_state(
        r=draw(st.integers(1, len(nodes))), nodes=nodes, primaries=primaries,
        pr=draw(st.integers(0, len(primaries))), notfound_ok=draw(st.booleans()),
        basic_quorum=draw(st.booleans()),
    )
    order = draw(st.permutations(nodes))
    kinds = draw(st.lists(st.sampled_from(["found", "notfound", "fail"]),
                          min_size=len(nodes), max_size=len(nodes)))
    return state, list(zip(order, kinds, strict=True))


@settings(max_examples=150)
@given(get_runs())
def test_get_outcome_properties(run: tuple[GetState, list[tuple[str, str]]]) -> None:
    state, answers = run
    found: set[str] = set()
    notfound: set[str] = set()
    decided = False
    for node, kind in answers:
        if kind == "found":
            state.reply(node, FOUND)
            found.add(node)
        elif kind == "notfound":
            state.reply(node, None)
            notfound.add(node)
        else:
            state.fail(node, "error")
        outcome = state.outcome()
        successes = found | (notfound if state.notfound_ok else set())
        if outcome is Outcome.SUCCESS:
            # r and pr are really met, and there is a value.
            assert found
            assert len(successes) >= state.r
            assert len(successes & state.primaries) >= state.pr
        if len(successes) >= state.r and len(successes & state.primaries) >= state.pr:
            assert outcome is (Outcome.SUCCESS if found else Outcome.NOT_FOUND)
        if outcome is Outcome.NOT_FOUND and not state.basic_quorum:
            assert not found
        if decided:
            assert outcome is not Outcome.PENDING, "a decided get stays decided"
        decided = outcome is not Outcome.PENDING
    assert state.outcome() is not Outcome.PENDING, "every replica answered"


# --- helpers ----------------------------------------------------------------------------


def test_live_siblings_hide_tombstones() -> None:
    obj = dvvset.sync(written(b"v", "a"), written(b"", "b", deleted=True))
    assert [c.value for c in live_siblings(obj)] == [b"v"]


def test_resolve_single_keeps_the_newest() -> None:
    obj = dvvset.sync(written(b"old", "a", modified_ms=5), written(b"new", "b",
                                                                   modified_ms=9))
    resolved = resolve_single(obj)
    assert [c.value for c in dvvset.values(resolved)] == [b"new"]
    assert dvvset.join(resolved) == dvvset.join(obj)


def test_basic_quorum_does_not_change_the_answer_once_everyone_replied() -> None:
    outcomes = []
    for basic_quorum in (False, True):
        state = get_state(r=2, notfound_ok=False, basic_quorum=basic_quorum)
        state.reply("a", FOUND)
        state.reply("b", None)
        state.reply("c", None)
        outcomes.append(state.outcome())
    # Actual: [FAILED, NOT_FOUND].
    assert outcomes == [Outcome.FAILED, Outcome.FAILED]
