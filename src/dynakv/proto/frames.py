"""Riak's PB framing: a 4-byte big-endian length, a 1-byte message code, then the
protobuf message; the length counts the code and the message.

`encode_frame` builds one frame; `FrameDecoder` cuts a byte stream into frames one at
a time, refusing a length above its bound before buffering it (so a peer cannot make
us hold more than one bounded frame, plus what one read brought in). Quorums travel
as uint32s, with Riak's symbolic values just below 2**32.
"""

from __future__ import annotations

import struct
from enum import IntEnum

HEADER = struct.Struct(">IB")
LENGTH = struct.Struct(">I")
UINT32_MAX = 0xFFFF_FFFF


class Code(IntEnum):
    """The message codes dynakv knows (Riak's registry; 240/241 are dynakv's own)."""

    ERROR_RESP = 0
    PING_REQ = 1
    PING_RESP = 2
    GET_CLIENT_ID_REQ = 3
    GET_CLIENT_ID_RESP = 4
    SET_CLIENT_ID_REQ = 5
    SET_CLIENT_ID_RESP = 6
    GET_SERVER_INFO_REQ = 7
    GET_SERVER_INFO_RESP = 8
    GET_REQ = 9
    GET_RESP = 10
    PUT_REQ = 11
    PUT_RESP = 12
    DEL_REQ = 13
    DEL_RESP = 14
    LIST_BUCKETS_REQ = 15
    LIST_BUCKETS_RESP = 16
    LIST_KEYS_REQ = 17
    LIST_KEYS_RESP = 18
    GET_BUCKET_REQ = 19
    GET_BUCKET_RESP = 20
    SET_BUCKET_REQ = 21
    SET_BUCKET_RESP = 22
    RESET_BUCKET_REQ = 29
    RESET_BUCKET_RESP = 30
    DKV_GET_STATS_REQ = 240
    DKV_GET_STATS_RESP = 241


# Riak's symbolic quorum values (docs: one is 4294967295-1, quorum -2, all -3, default -4).
QUORUM_BY_NUMBER: dict[int, str] = {
    UINT32_MAX - 1: "one",
    UINT32_MAX - 2: "quorum",
    UINT32_MAX - 3: "all",
    UINT32_MAX - 4: "default",
}
NUMBER_BY_QUORUM: dict[str, int] = {name: number for number, name in QUORUM_BY_NUMBER.items()}


def quorum_from_wire(number: int) -> int | str:
    """A uint32 quorum as dynakv names it: a symbolic name or the integer."""
    return QUORUM_BY_NUMBER.get(number, number)


def quorum_to_wire(value: int | str) -> int:
    """A quorum (an integer or a name) as the uint32 Riak's PB API carries."""
    if isinstance(value, str):
        try:
            return NUMBER_BY_QUORUM[value.strip().lower()]
        except KeyError:
            raise ValueError(f"quorum {value!r}: expected an integer or one of "
                             f"{', '.join(NUMBER_BY_QUORUM)}") from None
    if isinstance(value, bool) or not 0 <= value < UINT32_MAX - 4:
        raise ValueError(f"quorum {value!r}: expected a small non-negative integer")
    return value


def encode_frame(code: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload) + 1, code) + payload


class FrameError(Exception):
    """The byte stream is not (or no longer) a sequence of frames: close the connection."""


class FrameDecoder:
    """Cuts a byte stream into (code, payload) frames."""

    __slots__ = ("_buffer", "_start", "frame_size_max")

    def __init__(self, frame_size_max: int) -> None:
        assert frame_size_max >= 1
        self.frame_size_max = frame_size_max
        self._buffer = bytearray()
        self._start = 0

    def feed(self, data: bytes) -> None:
        if self._start:
            del self._buffer[:self._start]
            self._start = 0
        self._buffer += data

    def buffered(self) -> int:
        return len(self._buffer) - self._start

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next complete frame, or None until more bytes arrive. FrameError for
        a length of 0 (no message code) or above the bound."""
        buffer, start = self._buffer, self._start
        if len(buffer) - start < 4:
            return None
        (length,) = LENGTH.unpack_from(buffer, start)
        if length == 0:
            raise FrameError("a frame of length 0 (every frame needs a message code)")
        if length > self.frame_size_max:
            raise FrameError(f"a frame of {length} bytes is above the limit of "
                             f"{self.frame_size_max} bytes")
        end = start + 4 + length
        if len(buffer) < end:
            return None
        code = buffer[start + 4]
        payload = bytes(buffer[start + 5:end])
        if end == len(buffer):
            buffer.clear()
            self._start = 0
        else:
            self._start = end
        return code, payload
