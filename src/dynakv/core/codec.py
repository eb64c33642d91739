"""A compact, canonical msgpack encoding of dynakv's frozen dataclasses.

Used for internode messages and for stored objects. A dataclass is an ext value
(code 1) holding [tag, field values...]; tags are fixed numbers (below), so the
encoding does not depend on class names or on Python's hash order, and equal
values always encode to equal bytes (the Merkle trees rely on it).
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import msgpack

from dynakv.core.errors import PeerProtocolError

_DATACLASS_EXT = 1
_ENUM_EXT = 2

_by_tag: dict[int, type[Any]] = {}
_tag_of: dict[type[Any], int] = {}
_field_names: dict[type[Any], tuple[str, ...]] = {}
_enums: dict[int, type[Enum]] = {}
_enum_tag_of: dict[type[Enum], int] = {}


def register(tag: int, cls: type[Any]) -> None:
    assert dataclasses.is_dataclass(cls), cls
    assert tag not in _by_tag or _by_tag[tag] is cls, f"tag {tag} taken"
    _by_tag[tag] = cls
    _tag_of[cls] = tag
    _field_names[cls] = tuple(field.name for field in dataclasses.fields(cls))


def register_enum(tag: int, cls: type[Enum]) -> None:
    _enums[tag] = cls
    _enum_tag_of[cls] = tag


def _canonical(value: Any) -> Any:
    """Dicts with sorted keys (msgpack packs dicts in insertion order)."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    return value


def _default(obj: Any) -> Any:
    cls = type(obj)
    tag = _tag_of.get(cls)
    if tag is not None:
        payload = [tag, *(_canonical(getattr(obj, name)) for name in _field_names[cls])]
        return msgpack.ExtType(_DATACLASS_EXT, msgpack.packb(payload, default=_default))
    enum_tag = _enum_tag_of.get(cls)
    if enum_tag is not None:
        return msgpack.ExtType(_ENUM_EXT, msgpack.packb([enum_tag, obj.value]))
    raise TypeError(f"cannot encode {cls.__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _DATACLASS_EXT:
        tag, *values = msgpack.unpackb(data, use_list=False, ext_hook=_ext_hook)
        return _by_tag[tag](*values)
    if code == _ENUM_EXT:
        enum_tag, value = msgpack.unpackb(data, use_list=False)
        return _enums[enum_tag](value)
    raise PeerProtocolError(f"unknown msgpack extension {code}")


def encode(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(_canonical(obj), default=_default)
    return packed


def decode(data: bytes) -> Any:
    """Decode; a malformed or unknown payload raises PeerProtocolError."""
    try:
        return msgpack.unpackb(data, use_list=False, ext_hook=_ext_hook, strict_map_key=False)
    except PeerProtocolError:
        raise
    except Exception as error:
        raise PeerProtocolError(f"malformed message: {error}") from error
