"""The chaos checker over synthetic histories: each anomaly it exists for is detected."""

from __future__ import annotations

import pytest

from tests.chaos.checker import (
    CheckResult,
    FinalRead,
    FinalState,
    Op,
    OpType,
    Outcome,
    ReplicaView,
    analyse,
    decode_set,
    diverging_keys,
    encode_set,
    fingerprint,
)

NODES = ("http://a", "http://b", "http://c")


def add(element: str, outcome: Outcome = Outcome.OK, key: str = "s0",
        start_s: float = 1.0) -> Op:
    return Op(0, OpType.SET_ADD, key, element, start_s, start_s + 0.1, outcome, NODES[0])


def put(key: str, value: str, outcome: Outcome = Outcome.OK) -> Op:
    return Op(1, OpType.PUT_UNIQUE, key, value, 1.0, 1.1, outcome, NODES[1])


def sets(values: dict[str, set[str]], nodes: tuple[str, ...] = NODES) -> list[FinalRead]:
    return [FinalRead(node, key, frozenset(elements))
            for key, elements in values.items() for node in nodes]


def uniques(values: dict[str, set[str]]) -> list[FinalRead]:
    return [FinalRead(node, key, frozenset(found))
            for key, found in values.items() for node in NODES]


def check(history: list[Op], final: FinalState, lww: bool = False) -> CheckResult:
    result = analyse(history, final, lww)
    result.converged, result.converge_s = True, 1.5
    return result


def test_every_acknowledged_write_present_is_ok() -> None:
    history = [add("e1"), add("e2"), put("u1", "v1"),
               Op(2, OpType.READ_SET, "s0", "", 2.0, 2.1, Outcome.OK, NODES[2], seen_count=2)]
    final = FinalState(sets({"s0": {"e1", "e2"}}), uniques({"u1": {"v1"}}),
                       frozenset({"u1"}))
    result = check(history, final)
    assert (result.attempted, result.acknowledged, result.reads) == (3, 3, 1)
    assert (result.lost, result.unexpected, result.failed_present) == (0, 0, 0)
    assert result.ok
    assert result.summary() == "acknowledged=3 lost=0 unexpected=0 converge_s=1.5"


def test_a_lost_acknowledged_set_element_is_detected_with_its_op() -> None:
    history = [add("e1"), add("e2")]
    result = check(history, FinalState(sets({"s0": {"e1"}})))
    assert result.lost == 1 and not result.ok
    [finding] = result.lost_details
    assert (finding.key, finding.value, finding.op) == ("s0", "e2", history[1])
    assert "lost=1" in result.summary()


def test_an_element_missing_through_one_node_only_is_lost() -> None:
    final = FinalState(sets({"s0": {"e1"}}, NODES[:2]) + sets({"s0": set()}, NODES[2:]))
    result = check([add("e1")], final)
    assert result.lost == 1
    assert NODES[2] in result.lost_details[0].reason


def test_a_lost_acknowledged_unique_key_is_detected() -> None:
    final = FinalState(unique_reads=uniques({"u1": {"v1"}, "u2": set()}))
    result = check([put("u1", "v1"), put("u2", "v2")], final)
    assert result.lost == 1 and result.lost_details[0].key == "u2"


def test_an_element_never_written_is_unexpected() -> None:
    result = check([add("e1")], FinalState(sets({"s0": {"e1", "ghost"}})))
    assert result.unexpected == 1 and not result.ok
    assert result.unexpected_details[0].value == "ghost"


def test_an_element_of_another_key_is_unexpected() -> None:
    history = [add("e1", key="s0"), add("e2", key="s1")]
    result = check(history, FinalState(sets({"s0": {"e1", "e2"}, "s1": {"e2"}})))
    assert result.unexpected == 1
    assert (result.unexpected_details[0].key, result.unexpected_details[0].value) == ("s0", "e2")


def test_a_corrupt_sibling_is_unexpected() -> None:
    final = FinalState([FinalRead(NODES[0], "s0", frozenset({"e1"}), ("garbage",))])
    assert check([add("e1")], final).unexpected == 1


def test_a_unique_key_with_a_foreign_value_or_never_written_is_unexpected() -> None:
    final = FinalState(unique_reads=uniques({"u1": {"v1", "other"}}),
                       listed_unique_keys=frozenset({"u1", "never"}))
    result = check([put("u1", "v1")], final)
    assert result.unexpected == len(NODES) + 1
    assert {finding.key for finding in result.unexpected_details} == {"u1", "never"}


def test_indeterminate_writes_may_or_may_not_be_present() -> None:
    history = [add("e1"), add("maybe1", Outcome.INFO), add("maybe2", Outcome.INFO),
               put("u1", "v1", Outcome.INFO), put("u2", "v2", Outcome.INFO)]
    final = FinalState(sets({"s0": {"e1", "maybe1"}}), uniques({"u1": {"v1"}, "u2": set()}))
    result = check(history, final)
    assert result.ok
    assert (result.indeterminate, result.indeterminate_present) == (4, 2)


def test_a_definitely_failed_write_that_is_present_fails_the_check() -> None:
    history = [add("e1"), add("refused", Outcome.FAIL), put("u1", "v1", Outcome.FAIL)]
    final = FinalState(sets({"s0": {"e1", "refused"}}), uniques({"u1": {"v1"}}))
    result = check(history, final)
    assert result.failed_present == 2 and not result.ok
    assert check(history, FinalState(sets({"s0": {"e1"}}), uniques({"u1": set()}))).ok


def test_a_read_of_a_value_never_written_or_not_yet_written_is_unexpected() -> None:
    history = [
        add("late", start_s=5.0),
        Op(2, OpType.READ_SET, "s0", "", 2.0, 2.1, Outcome.OK, NODES[0], seen=("late",)),
        Op(2, OpType.READ_SET, "s0", "", 2.0, 2.1, Outcome.OK, NODES[0], seen=("ghost",)),
        put("u1", "v1"),
        Op(3, OpType.READ_UNIQUE, "u1", "", 2.0, 2.1, Outcome.OK, NODES[0], seen=("v1",)),
        Op(3, OpType.READ_UNIQUE, "u1", "", 2.0, 2.1, Outcome.OK, NODES[0], seen=("v9",)),
        Op(3, OpType.READ_UNIQUE, "u1", "", 2.0, 2.1, Outcome.FAIL, NODES[0], seen=("x",)),
    ]
    final = FinalState(sets({"s0": {"late"}}), uniques({"u1": {"v1"}}))
    result = check(history, final)
    assert result.unexpected == 3
    assert sorted(finding.value for finding in result.unexpected_details) == [
        "ghost", "late", "v9"]


def test_last_write_wins_counts_lost_elements_without_failing() -> None:
    history = [add(f"e{index}") for index in range(10)]
    result = check(history, FinalState(sets({"s0": {"e9"}})), lww=True)
    assert result.lost == 9 and result.ok
    assert not check(history, FinalState(sets({"s0": {"e9"}}))).ok


def test_an_unreadable_final_read_fails_the_check_and_loses_nothing_by_itself() -> None:
    final = FinalState([FinalRead(NODES[0], "s0", None, error="TimeoutError")])
    result = check([add("e1")], final)
    assert (result.unreadable, result.lost) == (1, 0) and not result.ok


def test_not_converged_fails_and_prints_inf() -> None:
    result = analyse([add("e1")], FinalState(sets({"s0": {"e1"}})))
    assert not result.ok
    assert result.summary().endswith("converge_s=inf")


def test_two_writes_of_one_element_are_a_bad_history() -> None:
    with pytest.raises(ValueError, match="twice"):
        analyse([add("e1"), add("e1")], FinalState())


def test_diverging_keys() -> None:
    same = (("srv1", 3, "WyJhIl0=", False),)
    other = (("srv2", 1, "WyJiIl0=", False),)
    views = [ReplicaView("k1", node, same) for node in "abc"]
    views += [ReplicaView("k2", "a", same), ReplicaView("k2", "b", same),
              ReplicaView("k2", "c", other)]
    views += [ReplicaView("k3", "a", same), ReplicaView("k3", "b", same),
              ReplicaView("k3", "c", None)]
    views += [ReplicaView("k4", node, ()) for node in "abc"]
    diverging = diverging_keys(views, n_val=3)
    assert set(diverging) == {"k2", "k3"}
    assert "differ" in diverging["k2"] and "no answer: c" in diverging["k3"]


def test_fingerprint_ignores_sibling_order_and_sees_tombstones() -> None:
    first = {"value_base64": "YQ==", "dot": ["s1", 2], "deleted": False}
    second = {"value_base64": "Yg==", "dot": ["s2", 1], "deleted": False}
    assert fingerprint({"siblings": [first, second]}) == \
        fingerprint({"siblings": [second, first]})
    assert fingerprint({"siblings": [first]}) != \
        fingerprint({"siblings": [{**first, "deleted": True}]})
    assert fingerprint({"siblings": []}) == ()


def test_set_encoding_round_trips_and_rejects_other_values() -> None:
    assert decode_set(encode_set({"b", "a"})) == {"a", "b"}
    assert encode_set({"b", "a"}) == b'["a","b"]'
    for bad in (b"not json", b'{"a": 1}', b"[1, 2]"):
        with pytest.raises(ValueError):
            decode_set(bad)
