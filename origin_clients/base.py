"""The one small interface the cache uses to reach storage providers.

An origin can *stat* an object (size and validators, or "not found") and *read* a byte range of
it, conditioned on the validator it stated, so that blocks of two versions of an object are never
stitched together: a read whose object changed raises :class:`ValidatorMismatch` instead of
returning bytes of the new version.
"""
from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the origin says about one version of an object."""

    size: int
    etag: bytes          # a strong entity-tag, quoted: b'"0f3c..."'
    last_modified: int   # seconds since the epoch


class OriginError(Exception):
    """The origin could not answer (down, refused, broken). ``origin`` names it.

    ``retryable`` says whether asking again (this replica later, or another) may help: a
    reset or a 503 is, a malformed request of ours is not. Credentials refused (401/403) are
    retryable on *another* replica, which may hold other credentials.
    """

    def __init__(self, origin: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"origin {origin!r}: {message}")
        self.origin = origin
        self.message = message
        self.retryable = retryable


class NotFound(OriginError):
    """The origin has no such object."""

    def __init__(self, origin: str, message: str) -> None:
        super().__init__(origin, message, retryable=False)


class ValidatorMismatch(OriginError):
    """The object changed since it was stated: its validator no longer matches."""

    def __init__(self, origin: str, message: str) -> None:
        super().__init__(origin, message, retryable=False)


class OriginTimeout(OriginError):
    """No replica answered within the deadline (the edge answers 504)."""


class OriginRefused(OriginError):
    """The origin refused our credentials or signature (401/403): a configuration problem."""


class Origin(abc.ABC):
    """An origin storage provider. Implementations must be safe to call concurrently."""

    name: str

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size and validators of ``key``; raises NotFound or OriginError."""

    @abc.abstractmethod
    def read(self, key: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield exactly the bytes ``[start, end)`` of the version ``info`` of ``key``, in order.

        Raises ValidatorMismatch if the object is no longer that version, OriginError on any
        failure, including a short read: a caller that got no exception got every byte.
        """

    async def stat_read(self, key: str, start: int, end: int) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """``stat`` and the bytes ``[start, min(end, size))`` of that version, at once.

        Stores that can answer both with one request (a ranged GET carries the size and the
        ETag) override this to save a round-trip on a cold object. This default stats, then reads.
        """
        info = await self.stat(key)
        return info, self.read(key, info, min(start, info.size), min(end, info.size))

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release pooled resources."""
