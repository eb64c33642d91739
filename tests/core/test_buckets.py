"""Bucket properties: quorum resolution and validation of changes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv.core import limits
from dynakv.core.buckets import (
    BOOL_PROPS,
    IGNORED_PROPS,
    QUORUM_PROPS,
    BucketProps,
    apply_props,
    parse_bool,
    parse_quorum,
    resolve_quorum,
)
from dynakv.core.errors import ClientError, ErrorKind

# --- resolve_quorum ---------------------------------------------------------------------


@pytest.mark.parametrize("n_val", [1, 2, 3, 4, 5, 16])
def test_named_quorums(n_val: int) -> None:
    props = BucketProps(n_val=n_val)
    assert resolve_quorum("r", "one", props) == 1
    assert resolve_quorum("r", "quorum", props) == n_val // 2 + 1
    assert resolve_quorum("r", "all", props) == n_val


def test_default_quorums_under_riak_defaults() -> None:
    props = BucketProps()
    for name in ("r", "w", "dw", "rw"):
        assert resolve_quorum(name, None, props) == 2
        assert resolve_quorum(name, "default", props) == 2
    assert resolve_quorum("pr", None, props) == 0
    assert resolve_quorum("pw", "default", props) == 0


def test_default_takes_the_bucket_property() -> None:
    props = BucketProps(n_val=5, r="all", w=1, pr="one")
    assert resolve_quorum("r", None, props) == 5
    assert resolve_quorum("r", "default", props) == 5
    assert resolve_quorum("w", "default", props) == 1
    assert resolve_quorum("pr", None, props) == 1
    # A request's own value wins over the bucket's.
    assert resolve_quorum("r", "one", props) == 1


def test_a_bucket_property_of_default_means_quorum() -> None:
    props = BucketProps(n_val=5, r="default")
    assert resolve_quorum("r", None, props) == 3
    assert resolve_quorum("r", "default", props) == 3


@settings(max_examples=100)
@given(st.integers(1, limits.N_VAL_MAX), st.integers(0, 40))
def test_integer_quorums(n_val: int, value: int) -> None:
    props = BucketProps(n_val=n_val)
    if value <= n_val:
        assert resolve_quorum("w", value, props) == value
    else:
        with pytest.raises(ClientError) as raised:
            resolve_quorum("w", value, props)
        assert raised.value.kind is ErrorKind.BAD_REQUEST
        assert "n_val" in str(raised.value)


def test_a_default_above_n_val_is_refused() -> None:
    with pytest.raises(ClientError):
        resolve_quorum("r", None, BucketProps(n_val=2, r=3))


def test_unknown_quorum_name_is_refused() -> None:
    with pytest.raises(ClientError):
        resolve_quorum("r", "most", BucketProps())


# --- parse_quorum, parse_bool -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [(0, 0), (3, 3), ("2", 2), (" 2 ", 2), ("ONE", "one"), ("Quorum", "quorum"),
     ("all", "all"), ("default", "default")],
)
def test_parse_quorum(raw: object, parsed: object) -> None:
    assert parse_quorum("r", raw) == parsed


@pytest.mark.parametrize("raw", [-1, "-1", True, False, 2.0, "2.5", "most", "", None, [2]])
def test_parse_quorum_refuses(raw: object) -> None:
    with pytest.raises(ClientError):
        parse_quorum("r", raw)


@pytest.mark.parametrize("raw", ["²", "9" * 5000], ids=["superscript", "5000 digits"])
def test_parse_quorum_refuses_digit_lookalikes(raw: str) -> None:
    with pytest.raises(ClientError):
        parse_quorum("r", raw)


@settings(max_examples=200)
@given(st.one_of(st.text(max_size=8), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_quorum_accepts_or_raises_client_error(raw: object) -> None:
    try:
        parsed = parse_quorum("r", raw)
    except ClientError:
        return
    assert parsed in ("one", "quorum", "all", "default") or (
        isinstance(parsed, int) and not isinstance(parsed, bool) and parsed >= 0
    )


@pytest.mark.parametrize(("raw", "parsed"),
                         [(True, True), (False, False), ("true", True), ("FALSE", False)])
def test_parse_bool(raw: object, parsed: bool) -> None:
    assert parse_bool("allow_mult", raw) is parsed


@pytest.mark.parametrize("raw", ["yes", "1", 1, 0, None, "", "truthy"])
def test_parse_bool_refuses(raw: object) -> None:
    with pytest.raises(ClientError):
        parse_bool("allow_mult", raw)


# --- apply_props ------------------------------------------------------------------------


def test_apply_props_applies_valid_changes() -> None:
    base = BucketProps()
    props = apply_props(base, {"n_val": 5, "r": "all", "w": "2", "pr": 1,
                               "allow_mult": "false", "last_write_wins": True})
    assert props == BucketProps(n_val=5, r="all", w=2, pr=1, allow_mult=False,
                                last_write_wins=True)
    assert base == BucketProps(), "the base is not changed"


def test_apply_props_ignores_riak_only_props() -> None:
    changes = {name: "anything" for name in IGNORED_PROPS}
    assert apply_props(BucketProps(), changes) == BucketProps()


@pytest.mark.parametrize(
    "changes",
    [
        {"no_such_prop": 1},
        {"n_val": 0},
        {"n_val": -1},
        {"n_val": limits.N_VAL_MAX + 1},
        {"n_val": "3"},
        {"n_val": True},
        {"n_val": 3.0},
        {"n_val": None},
        {"allow_mult": "yes"},
        {"notfound_ok": 1},
        {"basic_quorum": None},
        {"r": "most"},
        {"w": -1},
        {"r": 4},  # above the default n_val of 3
        {"n_val": 1, "w": 2},
        {"n_val": 2, "pr": "3"},
    ],
    ids=repr,
)
def test_apply_props_refuses(changes: dict[str, Any]) -> None:
    with pytest.raises(ClientError):
        apply_props(BucketProps(), changes)


def test_lowering_n_val_below_an_explicit_quorum_is_refused() -> None:
    with pytest.raises(ClientError):
        apply_props(BucketProps(r=3), {"n_val": 2})
    # A named quorum follows n_val.
    assert resolve_quorum("r", None, apply_props(BucketProps(r="all"), {"n_val": 2})) == 2


@st.composite
def valid_props(draw: st.DrawFn) -> BucketProps:
    n_val = draw(st.integers(1, limits.N_VAL_MAX))
    quorum = st.one_of(st.integers(0, n_val), st.sampled_from(["one", "quorum", "all",
                                                                 "default"]))
    changes: dict[str, Any] = {name: draw(quorum) for name in QUORUM_PROPS}
    changes.update({name: draw(st.booleans()) for name in BOOL_PROPS})
    return BucketProps(n_val=n_val, **changes)


@settings(max_examples=100)
@given(valid_props())
def test_props_round_trip_through_json(props: BucketProps) -> None:
    data = props.to_json()
    assert data["dvv_enabled"] is True
    assert apply_props(BucketProps(), data) == props
