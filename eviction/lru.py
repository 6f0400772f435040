"""Least recently used, weighted: the baseline every other policy is measured against.

Theory of operation: one ``OrderedDict`` of key -> weight in recency order (head = least recent).
A hit moves the key to the tail (O(1)). ``admit`` appends the key at the tail and then looks for
victims from the head: a pinned key is moved aside to the tail (at most ``MAX_SKIPS`` in a row),
the key being admitted is never its own victim (nor ``evict``'s). The walk first only *selects*
victims; they are removed only when together they make enough room, so a refused admission
(returning ``[key]``) changes nothing but the pinned keys' positions.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from .base import NOTHING, Policy, check_weight, select_victims


class LRU(Policy):
    """Weighted LRU."""

    name = "lru"

    def __init__(
        self, capacity: int, *, evictable: Callable[[Hashable], bool] | None = None
    ) -> None:
        super().__init__(capacity, evictable=evictable)
        self._data: OrderedDict[Hashable, int] = OrderedDict()

    def access(self, key: Hashable) -> bool:
        try:
            self._data.move_to_end(key)
        except KeyError:
            return False
        return True

    def admit(self, key: Hashable, weight: int) -> list[Hashable]:
        check_weight(weight)
        data = self._data
        self._last_admitted = key
        old = data.pop(key, NOTHING)
        if old is not NOTHING:
            self.used -= old  # type: ignore[operator]
        if weight > self.capacity:
            return [key]
        data[key] = weight
        self.used += weight
        need = self.used - self.capacity
        if need <= 0:
            return []
        victims = self._select(need, key)
        if victims is None:
            del data[key]
            self.used -= weight
            return [key]
        for v in victims:
            self.used -= data.pop(v)
        return victims

    def evict(self, nbytes: int) -> list[Hashable]:
        if nbytes <= 0:
            return []
        data = self._data
        victims = self._select(nbytes, self._last_admitted, partial=True) or []
        for v in victims:
            self.used -= data.pop(v)
        return victims

    def _select(
        self, need: int, exclude: object, *, partial: bool = False
    ) -> list[Hashable] | None:
        """Pick victims worth ``need`` bytes from the LRU end; None if impossible (unless partial).

        Pinned keys met on the way are moved to the MRU end after the walk.
        """
        victims, pinned, need = select_victims(self._data.items(), need, exclude, self._evictable)
        for k in pinned:
            self._data.move_to_end(k)
        if need > 0 and not partial:
            return None
        return victims

    def remove(self, key: Hashable) -> None:
        w = self._data.pop(key, None)
        if w is not None:
            self.used -= w

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
