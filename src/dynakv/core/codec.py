"""A compact, canonical msgpack encoding of dynakv's frozen dataclasses.

Used for internode messages and for stored objects. A dataclass is an ext value
(code 1) holding [tag, field values...]; tags are fixed numbers (below), so the
encoding does not depend on class names or on Python's hash order, and equal
values always encode to equal bytes (the Merkle trees rely on it): dicts, wherever
they are, are packed in key order. A class that is encoded often may instead have an
encoding of its own (`register_ext`, an ext value of its own code): stored objects
(core/messages.py) are one flat msgpack array, not an ext value per dataclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import msgpack

from dynakv.core.errors import PeerProtocolError

_DATACLASS_EXT = 1
_ENUM_EXT = 2

_by_tag: dict[int, type[Any]] = {}
_tag_of: dict[type[Any], int] = {}
_field_names: dict[type[Any], tuple[str, ...]] = {}
# Per class, the runtime types each field may hold (from its annotations): a peer's
# message whose fields have other types is refused at decoding (PeerProtocolError),
# so the node never handles a "ReplicaGet" whose partition is a string.
_field_types: dict[type[Any], tuple[tuple[type[Any], ...], ...]] = {}
_checks: dict[type[Any], Callable[[Any], None]] = {}
_enums: dict[int, type[Enum]] = {}
_enum_tag_of: dict[type[Enum], int] = {}
# Classes with an encoding of their own: class -> (ext code, to bytes); code -> from bytes.
_own_ext: dict[type[Any], tuple[int, Callable[[Any], bytes]]] = {}
_own_ext_decoders: dict[int, Callable[[bytes], Any]] = {}


def register(tag: int, cls: type[Any], check: Callable[[Any], None] | None = None) -> None:
    """Encode instances of dataclass `cls` as tag `tag`; `check`, if given, is called on
    each decoded instance and raises ValueError for one of the wrong shape."""
    assert dataclasses.is_dataclass(cls), cls
    if check is not None:
        _checks[cls] = check
    assert tag not in _by_tag or _by_tag[tag] is cls, f"tag {tag} taken"
    _by_tag[tag] = cls
    _tag_of[cls] = tag
    _field_names[cls] = tuple(field.name for field in dataclasses.fields(cls))
    hints = typing.get_type_hints(cls)
    _field_types[cls] = tuple(_runtime_types(hints[name]) for name in _field_names[cls])


def _runtime_types(hint: Any) -> tuple[type[Any], ...]:
    """The classes a decoded value of annotation `hint` may be (shallow: a tuple's
    items are not looked at; a nested dataclass checks its own fields)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(t for arg in typing.get_args(hint) for t in _runtime_types(arg))
    if origin is typing.Literal:
        return tuple({type(arg) for arg in typing.get_args(hint)})
    if hint is Any or isinstance(hint, TypeVar):
        return (object,)
    if hint is None or hint is type(None):
        return (type(None),)
    if hint is float:
        return (float, int)
    cls = origin if origin is not None else hint
    if cls in (list, tuple, frozenset, set, typing.Sequence):
        return (tuple,)  # msgpack arrays decode to tuples
    if isinstance(cls, type):
        return (cls,)
    return (object,)


def register_ext(code: int, cls: type[Any], encode: Callable[[Any], bytes],
                 decode: Callable[[bytes], Any]) -> None:
    """Encode `cls` as an ext value of `code` holding encode(value); `decode` turns the
    payload back (raising PeerProtocolError if it is malformed). Equal values must
    encode to equal bytes."""
    assert code not in (_DATACLASS_EXT, _ENUM_EXT), code
    assert _own_ext_decoders.get(code, decode) is decode, f"ext code {code} taken"
    _own_ext[cls] = (code, encode)
    _own_ext_decoders[code] = decode


def pack(value: Any) -> bytes:
    """msgpack of native values (no dataclasses; dicts in the order given)."""
    packed: bytes = _pack(value)
    return packed


def register_enum(tag: int, cls: type[Enum]) -> None:
    _enums[tag] = cls
    _enum_tag_of[cls] = tag


_NATIVE = (type(None), bool, int, float, str, bytes)
# One packer for every call: Packer.pack runs in C under the GIL and, with no `default`
# hook, calls no Python code, so calls from several threads cannot interleave. (A
# `default` hook per dataclass, each building a Packer and an ExtType, cost about ten
# times as much: msgpack hands the hook's ExtType back through a slow path.)
_packer = msgpack.Packer(autoreset=True)
_pack = _packer.pack


def _wire(value: Any) -> Any:
    """`value` with every dataclass and enum in it turned into its ExtType and every
    dict's keys sorted (msgpack packs dicts in insertion order), ready for one pack."""
    cls = type(value)
    if cls in _NATIVE:
        return value
    own = _own_ext.get(cls)
    if own is not None:
        return msgpack.ExtType(own[0], own[1](value))
    tag = _tag_of.get(cls)
    if tag is not None:
        return msgpack.ExtType(_DATACLASS_EXT, _pack(
            [tag, *[_wire(getattr(value, name)) for name in _field_names[cls]]]))
    if cls is tuple or cls is list:
        return [_wire(item) for item in value]
    if cls is dict:
        return {_wire(key): _wire(value[key]) for key in sorted(value)}
    enum_tag = _enum_tag_of.get(cls)
    if enum_tag is not None:
        return msgpack.ExtType(_ENUM_EXT, _pack([enum_tag, value.value]))
    if isinstance(value, _NATIVE):  # a subclass of a native type: packed as that type
        return value
    raise TypeError(f"cannot encode {cls.__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _DATACLASS_EXT:
        tag, *values = msgpack.unpackb(data, use_list=False, ext_hook=_ext_hook)
        cls = _by_tag[tag]
        for name, allowed, value in zip(_field_names[cls], _field_types[cls], values,
                                        strict=False):
            if not isinstance(value, allowed):
                raise PeerProtocolError(
                    f"{cls.__name__}.{name}: {type(value).__name__} is not "
                    f"{' | '.join(t.__name__ for t in allowed)}")
        decoded = cls(*values)
        check = _checks.get(cls)
        if check is not None:
            check(decoded)  # ValueError: decode() raises PeerProtocolError
        return decoded
    if code == _ENUM_EXT:
        enum_tag, value = msgpack.unpackb(data, use_list=False)
        return _enums[enum_tag](value)
    decoder = _own_ext_decoders.get(code)
    if decoder is not None:
        return decoder(data)
    raise PeerProtocolError(f"unknown msgpack extension {code}")


def encode(obj: Any) -> bytes:
    packed: bytes = _pack(_wire(obj))
    return packed


def decode(data: bytes) -> Any:
    """Decode; a malformed or unknown payload raises PeerProtocolError."""
    try:
        return msgpack.unpackb(data, use_list=False, ext_hook=_ext_hook, strict_map_key=False)
    except PeerProtocolError:
        raise
    except Exception as error:
        raise PeerProtocolError(f"malformed message: {error}") from error
