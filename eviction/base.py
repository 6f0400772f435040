"""The eviction policy interface: the policy decides victims, storage frees them.

A policy is sans-IO bookkeeping over keys and byte weights: it reads no clock, touches no
memory and imports neither asyncio nor socket. The cache calls ``access(key)`` on every request
(a hit only bumps a frequency or recency mark) and ``admit(key, weight)`` after a miss; ``admit``
returns the keys the caller must evict, and the key itself when it was not admitted. Keys that
storage has pinned (``evictable(key)`` is False) are skipped, at most ``MAX_SKIPS`` per victim
search, as memcached caps its eviction walk: a policy never scans without bound. ``evict`` never
returns the key admitted last: storage calls it to make room for that very key.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterable
from typing import ClassVar

MAX_SKIPS = 8
"""Pinned candidates skipped per victim search before the search gives up."""

NOTHING: object = object()
"""A sentinel equal to no key."""


def select_victims(candidates: Iterable[tuple[Hashable, int]], need: int, exclude: object,
                   evictable: Callable[[Hashable], bool]) -> tuple[list[Hashable], list[Hashable], int]:
    """Walk ``candidates`` ((key, weight), best victim first), taking evictable keys other than
    ``exclude`` until they weigh ``need``, and giving up after ``MAX_SKIPS`` pinned keys in a
    row. Returns (victims, pinned keys met, bytes still needed): the caller moves the pinned
    keys out of the way of the next walk."""
    victims: list[Hashable] = []
    pinned: list[Hashable] = []
    skips = 0
    for k, w in candidates:
        if k == exclude:
            continue
        if evictable(k):
            victims.append(k)
            skips = 0
            need -= w
            if need <= 0:
                break
        else:
            pinned.append(k)
            skips += 1
            if skips >= MAX_SKIPS:
                break
    return victims, pinned, need


def always_evictable(key: Hashable) -> bool:
    """The default ``evictable``: nothing is pinned."""
    return True


class Policy(abc.ABC):
    """An eviction policy over byte-weighted keys; see the module docstring for the contract."""

    name: ClassVar[str]

    def __init__(
        self, capacity: int, *, evictable: Callable[[Hashable], bool] | None = None
    ) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.used = 0
        self._evictable: Callable[[Hashable], bool] = evictable or always_evictable
        self._last_admitted: object = NOTHING   # spared by evict(); set by admit()

    @abc.abstractmethod
    def access(self, key: Hashable) -> bool:
        """Record a request for ``key``; True if it is resident (a hit)."""

    @abc.abstractmethod
    def admit(self, key: Hashable, weight: int) -> list[Hashable]:
        """Insert ``key`` of ``weight`` bytes; return the keys to evict (``key`` itself if refused).

        Admitting a resident key updates its weight. After the call ``used <= capacity``.
        """

    @abc.abstractmethod
    def evict(self, nbytes: int) -> list[Hashable]:
        """Evict at least ``nbytes`` of evictable keys if possible (bounded; may free less).

        The key admitted last is spared: storage evicts to make room for it.
        """

    @abc.abstractmethod
    def remove(self, key: Hashable) -> None:
        """Forget ``key`` (purge, failed fill); a no-op if it is not resident."""

    @abc.abstractmethod
    def __contains__(self, key: object) -> bool: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity}, used={self.used}, len={len(self)})"


def check_weight(weight: int) -> None:
    """Reject negative weights (a zero weight is allowed)."""
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
