"""Typed errors: what a client or a peer did wrong, and what the cluster cannot do now.

h11's split: a ClientError is the caller's bad input (HTTP 4xx, nothing stored); a
PeerProtocolError is a peer's malformed message (logged, connection dropped);
Unavailable means the request was valid but the cluster could not serve it (503).
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    BAD_REQUEST = "bad_request"  # 400
    NOT_FOUND = "not_found"  # 404
    CONFLICT = "conflict"  # 409: too many siblings
    PRECONDITION_FAILED = "precondition_failed"  # 412
    TOO_LARGE = "too_large"  # 413
    UNAVAILABLE = "unavailable"  # 503: quorum refused before any replica was asked
    TIMEOUT = "timeout"  # 503: quorum not met in time; a write may or may not survive
    BUSY = "busy"  # 503: a bound in limits.py was reached
    STORAGE_FULL = "storage_full"  # 503: the disk is full


class DynakvError(Exception):
    """Base of dynakv's typed errors."""

    kind = ErrorKind.BAD_REQUEST

    def __init__(self, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        return str(self)


class ClientError(DynakvError):
    """A client's bad input: 4xx, nothing stored."""


class Unavailable(DynakvError):
    """A valid request the cluster cannot serve now: 503."""

    kind = ErrorKind.UNAVAILABLE


class StorageFull(DynakvError):
    """The disk is full: writes answer 503 until space is freed."""

    kind = ErrorKind.STORAGE_FULL


class PeerProtocolError(DynakvError):
    """A peer sent something malformed or of another protocol version."""
