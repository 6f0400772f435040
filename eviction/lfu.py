"""In-cache LFU, weighted, with O(1) frequency buckets (Shah, Mitra & Matani, 2010).

Theory of operation: resident keys live in buckets, one per distinct access count, kept in a
circular doubly linked list in increasing frequency order behind a sentinel. Each bucket is an
``OrderedDict`` key -> weight in the order keys reached that count, so ties are broken by LRU.
A hit moves the key to the tail of the next bucket (created if the count is new, unlinked when
emptied; a key alone in its bucket just renumbers it): O(1). A new key enters bucket 1.
Victims are taken from the head of the lowest bucket onward; pinned keys are moved to the tail
of their bucket (at most ``MAX_SKIPS`` in a row), and victims are removed only when together they
make enough room (a refusal changes nothing else).
Counts are forgotten on eviction ("in-cache" LFU), which is why old popularity lingers after a
shift: the weakness TinyLFU's aging sketch fixes.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

from .base import Policy, check_weight, select_victims


class _Bucket:
    """The keys with one access count, in LRU order; a node of the frequency list."""

    __slots__ = ("freq", "keys", "next", "prev")

    def __init__(self, freq: int) -> None:
        self.freq = freq
        self.keys: OrderedDict[Hashable, int] = OrderedDict()
        self.prev: _Bucket = self
        self.next: _Bucket = self


class LFU(Policy):
    """Weighted in-cache LFU, ties broken by LRU."""

    name = "lfu"

    def __init__(
        self, capacity: int, *, evictable: Callable[[Hashable], bool] | None = None
    ) -> None:
        super().__init__(capacity, evictable=evictable)
        self._head = _Bucket(0)                  # sentinel: head.next is the lowest frequency
        self._where: dict[Hashable, _Bucket] = {}

    def _bucket_after(self, b: _Bucket, freq: int) -> _Bucket:
        """The bucket for ``freq`` right after ``b``, linked in if it does not exist."""
        nxt = b.next
        if nxt.freq == freq and nxt is not self._head:
            return nxt
        n = _Bucket(freq)
        n.prev, n.next = b, nxt
        b.next = nxt.prev = n
        return n

    @staticmethod
    def _unlink(b: _Bucket) -> None:
        b.prev.next, b.next.prev = b.next, b.prev

    def access(self, key: Hashable) -> bool:
        b = self._where.get(key)
        if b is None:
            return False
        nxt = b.next
        if len(b.keys) == 1 and (nxt.freq != b.freq + 1 or nxt is self._head):
            b.freq += 1  # alone in its bucket and no bucket to join: renumber it in place
            return True
        w = b.keys.pop(key)
        n = self._bucket_after(b, b.freq + 1)
        n.keys[key] = w
        self._where[key] = n
        if not b.keys:
            self._unlink(b)
        return True

    def frequency(self, key: Hashable) -> int:
        """The access count of a resident key (0 if absent)."""
        b = self._where.get(key)
        return 0 if b is None else b.freq

    def admit(self, key: Hashable, weight: int) -> list[Hashable]:
        check_weight(weight)
        self._last_admitted = key
        b = self._where.get(key)
        if b is not None:
            if weight > self.capacity:
                self.remove(key)
                return [key]
            self.used += weight - b.keys[key]
            b.keys[key] = weight
        else:
            if weight > self.capacity:
                return [key]
            b = self._bucket_after(self._head, 1)
            b.keys[key] = weight
            self._where[key] = b
            self.used += weight
        need = self.used - self.capacity
        if need <= 0:
            return []
        victims = self._select(need, key)
        if victims is None:
            self.remove(key)
            return [key]
        for v in victims:
            self.remove(v)
        return victims

    def evict(self, nbytes: int) -> list[Hashable]:
        if nbytes <= 0:
            return []
        victims = self._select(nbytes, self._last_admitted, partial=True) or []
        for v in victims:
            self.remove(v)
        return victims

    def _by_frequency(self) -> Iterator[tuple[Hashable, int]]:
        """Every (key, weight), lowest frequency first, LRU first within a frequency."""
        head = self._head
        b = head.next
        while b is not head:
            yield from b.keys.items()
            b = b.next

    def _select(
        self, need: int, exclude: object, *, partial: bool = False
    ) -> list[Hashable] | None:
        """Pick victims worth ``need`` bytes, lowest frequency first; None if impossible.

        Pinned keys met on the way are moved to the tail of their bucket after the walk.
        """
        victims, pinned, need = select_victims(self._by_frequency(), need, exclude, self._evictable)
        for k in pinned:
            self._where[k].keys.move_to_end(k)
        if need > 0 and not partial:
            return None
        return victims

    def remove(self, key: Hashable) -> None:
        b = self._where.pop(key, None)
        if b is None:
            return
        self.used -= b.keys.pop(key)
        if not b.keys:
            self._unlink(b)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)
