"""What the client hands back: an object's siblings and context, and the errors it raises.

A read answers every concurrent sibling plus an opaque context; a write that
passes that context back replaces exactly the siblings that were read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Sibling:
    """One value of a key with its metadata (usermeta names are lower-case)."""

    value: bytes
    content_type: str = DEFAULT_CONTENT_TYPE
    content_encoding: str = ""
    vtag: str = ""
    last_modified: datetime | None = None
    usermeta: dict[str, str] = field(default_factory=dict, hash=False)
    links: tuple[tuple[str, str, str], ...] = ()  # (bucket, key, tag)
    indexes: tuple[tuple[str, str], ...] = ()  # (field, term)
    deleted: bool = False

    @property
    def text(self) -> str:
        """The value decoded as UTF-8 (errors replaced)."""
        return self.value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Object:
    """A key as read: its live siblings and the context to write back.

    Not found: no siblings, `exists` False. Deleted (a tombstone): no siblings,
    `deleted` True, and a context (writing with it supersedes the delete).
    """

    bucket_type: str
    bucket: str
    key: str
    siblings: tuple[Sibling, ...] = ()
    context: bytes | None = None
    deleted: bool = False

    @property
    def exists(self) -> bool:
        return bool(self.siblings)

    @property
    def has_siblings(self) -> bool:
        return len(self.siblings) > 1

    @property
    def value(self) -> bytes:
        """The value, when there is exactly one sibling."""
        return self.sibling.value

    @property
    def sibling(self) -> Sibling:
        """The only sibling; NotFound if there is none, MultipleSiblings if several."""
        if not self.siblings:
            raise NotFound(f"{self.bucket}/{self.key} not found", 404)
        if len(self.siblings) > 1:
            raise MultipleSiblings(
                f"{self.bucket}/{self.key} has {len(self.siblings)} siblings; resolve them",
                300,
            )
        return self.siblings[0]


# --- errors -----------------------------------------------------------------------


class DynakvClientError(Exception):
    """Base of the client's errors: the HTTP status (0 if none) and the server's message."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class ConnectionFailed(DynakvClientError):
    """The node could not be reached, or the connection broke mid-request."""


class BadRequest(DynakvClientError):
    """400: the request was malformed; nothing was stored."""


class NotFound(DynakvClientError):
    """404 where an answer was required (a get answers an Object with exists False)."""


class MultipleSiblings(DynakvClientError):
    """A single value was asked for, but the object has siblings."""


class Conflict(DynakvClientError):
    """409: too many siblings; read, resolve and write back with the context."""


class PreconditionFailed(DynakvClientError):
    """412: a conditional write's condition did not hold."""


class TooLarge(DynakvClientError):
    """413: the value or its metadata is above the node's limits."""


class Unavailable(DynakvClientError):
    """503: the cluster could not serve the request now (quorum, timeout, busy, disk)."""


class ServerError(DynakvClientError):
    """Any other unexpected answer (5xx, or a status the client does not know)."""


ERRORS_BY_STATUS: dict[int, type[DynakvClientError]] = {
    400: BadRequest,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: TooLarge,
    503: Unavailable,
}


def error_for(status: int, body: bytes) -> DynakvClientError:
    message = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    cls = ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else ServerError
    return cls(message, status)


JSON = dict[str, Any]
