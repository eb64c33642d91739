"""Bucket properties (Riak's names and defaults) and quorum resolution.

Properties are cluster metadata: set through any node, pushed to every node,
persisted by each, and read locally. Each carries a version (time, node) and the
newest wins everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dynakv.core import limits
from dynakv.core.errors import ClientError

Quorum = int | str  # an integer, or one of "one", "quorum", "all", "default"
QUORUM_NAMES = ("one", "quorum", "all", "default")


@dataclass(frozen=True, slots=True)
class BucketProps:
    n_val: int = 3
    r: Quorum = "quorum"
    w: Quorum = "quorum"
    dw: Quorum = "quorum"
    rw: Quorum = "quorum"
    pr: Quorum = 0
    pw: Quorum = 0
    notfound_ok: bool = True
    basic_quorum: bool = False
    allow_mult: bool = True
    last_write_wins: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dvv_enabled"] = True
        return data


PROP_NAMES = frozenset(field.name for field in fields(BucketProps))
QUORUM_PROPS = frozenset({"r", "w", "dw", "rw", "pr", "pw"})
BOOL_PROPS = frozenset({"notfound_ok", "basic_quorum", "allow_mult", "last_write_wins"})
# Riak properties we accept and report but that do not change behaviour here.
IGNORED_PROPS = frozenset(
    {"dvv_enabled", "name", "young_vclock", "old_vclock", "small_vclock", "big_vclock",
     "chash_keyfun", "linkfun", "precommit", "postcommit", "search", "backend"}
)


def parse_quorum(name: str, value: object) -> Quorum:
    """A quorum value from JSON or a query string: an int >= 0 or a quorum name."""
    if isinstance(value, bool):
        raise ClientError(f"{name} must be an integer or one of {', '.join(QUORUM_NAMES)}")
    if isinstance(value, int):
        if value < 0:
            raise ClientError(f"{name} must not be negative")
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in QUORUM_NAMES:
            return text
        if text.isascii() and text.isdigit() and len(text) <= 9:
            return int(text)
    raise ClientError(f"{name}={value!r}: expected an integer or one of {', '.join(QUORUM_NAMES)}")


def parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ClientError(f"{name}={value!r}: expected true or false")


def apply_props(base: BucketProps, changes: dict[str, Any]) -> BucketProps:
    """`base` with `changes` (a JSON object of Riak property names) applied and checked."""
    updates: dict[str, Any] = {}
    for name, value in changes.items():
        if name in IGNORED_PROPS:
            continue
        if name not in PROP_NAMES:
            raise ClientError(f"unknown bucket property {name!r}")
        if name == "n_val":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ClientError("n_val must be an integer")
            if not 1 <= value <= limits.N_VAL_MAX:
                raise ClientError(f"n_val must be between 1 and {limits.N_VAL_MAX}")
            updates[name] = value
        elif name in QUORUM_PROPS:
            updates[name] = parse_quorum(name, value)
        elif name in BOOL_PROPS:
            updates[name] = parse_bool(name, value)
    props = replace(base, **updates)
    for name in QUORUM_PROPS:
        quorum = getattr(props, name)
        if quorum != "default":
            resolve_quorum(name, quorum, props)
    return props


def resolve_quorum(name: str, value: Quorum | None, props: BucketProps) -> int:
    """The number a quorum value stands for under `props`; 400 if above n_val."""
    n = props.n_val
    if value is None or value == "default":
        value = getattr(props, name)
        if value == "default":
            value = "quorum"
    if value == "one":
        result = 1
    elif value == "quorum":
        result = n // 2 + 1
    elif value == "all":
        result = n
    elif isinstance(value, int):
        result = value
    else:
        raise ClientError(f"{name}={value!r}: expected an integer or one of {QUORUM_NAMES}")
    if result > n:
        raise ClientError(f"{name}={result} is above n_val={n}")
    return result
