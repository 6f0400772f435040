"""W-TinyLFU (Caffeine's policy) adapted to byte weights: the default policy.

Theory of operation (Einziger, Friedman & Manes, "TinyLFU", 2017; Caffeine's BoundedLocalCache):

* Three LRU segments share the capacity: the admission *window* (``window`` of the bytes, 1% by
  default) and the *main* area, a segmented LRU of *probation* and *protected* (``protected`` of
  main's bytes, 80%).
* Every request is ``record``ed by the TinyLFU admission filter (hits and misses alike).
* A hit in the window or protected moves the key to that segment's MRU end; a hit in probation
  promotes it to protected, whose LRU overflow is demoted to probation's MRU end. O(1) amortised.
* A new key enters the window. The window's LRU overflow become *candidates* for main. While the
  cache is over capacity, the oldest candidate competes with main's victim (probation's LRU end;
  protected's, then the window's when probation is empty): if TinyLFU says the candidate is more
  frequent the victim is evicted and the candidate goes on to the next victim (a heavy candidate
  must beat every victim it displaces, as Caffeine's weighted eviction does); otherwise the
  candidate is evicted. Candidates left when there is room join probation's MRU end.
* Pinned keys (``evictable`` False) are moved to their segment's MRU end, at most ``MAX_SKIPS``
  per victim search; a pinned candidate that loses stays (in probation). If no room can be made
  the key being admitted is refused, which restores ``used <= capacity``.
* The sketch is sized from ``expected_entries`` (default ``capacity // avg_weight``) and grows,
  dropping its history, when more keys than its width are resident.

Unlike LRU/LFU, an admission here is not all-or-nothing: victims that lost their contest stay
evicted even if the candidate later loses to another victim, exactly as in Caffeine.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from types import ModuleType

from .admission import TinyLFUAdmission
from .base import MAX_SKIPS, Policy, check_weight

DEFAULT_AVG_WEIGHT = 64 * 1024
"""Average entry weight assumed when sizing the sketch without ``expected_entries``."""


class WTinyLFU(Policy):
    """Window TinyLFU over byte weights."""

    name = "wtinylfu"

    def __init__(
        self,
        capacity: int,
        *,
        evictable: Callable[[Hashable], bool] | None = None,
        window: float = 0.01,
        protected: float = 0.8,
        expected_entries: int | None = None,
        avg_weight: int = DEFAULT_AVG_WEIGHT,
        seed: int = 0,
        sketch: ModuleType | None = None,
        admission: TinyLFUAdmission | None = None,
    ) -> None:
        super().__init__(capacity, evictable=evictable)
        if not 0.0 <= window <= 1.0:
            raise ValueError(f"window must be in [0, 1], got {window}")
        if not 0.0 <= protected <= 1.0:
            raise ValueError(f"protected must be in [0, 1], got {protected}")
        main = int(capacity * (1.0 - window))
        self.window_max = capacity - main
        self.protected_max = int(main * protected)
        if expected_entries is None:
            expected_entries = capacity // max(1, avg_weight)
        self.admission = admission or TinyLFUAdmission(expected_entries, seed=seed, sketch=sketch)
        self._window: OrderedDict[Hashable, int] = OrderedDict()
        self._probation: OrderedDict[Hashable, int] = OrderedDict()
        self._protected: OrderedDict[Hashable, int] = OrderedDict()
        self._seg: dict[Hashable, OrderedDict[Hashable, int]] = {}   # key -> its segment
        self.window_used = 0
        self.protected_used = 0

    @property
    def probation_used(self) -> int:
        return self.used - self.window_used - self.protected_used

    def access(self, key: Hashable) -> bool:
        self.admission.record(key)
        seg = self._seg.get(key)
        if seg is None:
            return False
        if seg is self._probation:
            w = seg.pop(key)
            self._protected[key] = w
            self._seg[key] = self._protected
            self.protected_used += w
            if self.protected_used > self.protected_max:
                self._demote()
        else:
            seg.move_to_end(key)
        return True

    def _demote(self) -> None:
        """Move protected's LRU overflow to probation's MRU end."""
        prot, prob, seg = self._protected, self._probation, self._seg
        while self.protected_used > self.protected_max and prot:
            k, w = prot.popitem(last=False)
            self.protected_used -= w
            prob[k] = w
            seg[k] = prob

    def admit(self, key: Hashable, weight: int) -> list[Hashable]:
        check_weight(weight)
        self._last_admitted = key
        seg = self._seg.get(key)
        if seg is not None:
            if weight > self.capacity:
                self.remove(key)
                return [key]
            delta = weight - seg[key]
            seg[key] = weight
            seg.move_to_end(key)
            self.used += delta
            if seg is self._window:
                self.window_used += delta
            elif seg is self._protected:
                self.protected_used += delta
                self._demote()
        else:
            if weight > self.capacity:
                return [key]
            self._window[key] = weight
            self._seg[key] = self._window
            self.window_used += weight
            self.used += weight
            if len(self._seg) > self.admission.width:
                self.admission.ensure_capacity(len(self._seg))
        victims: list[Hashable] = []
        searchable = True
        if self.window_used > self.window_max:
            searchable = self._evict_from_window(key, victims)
        if self.used > self.capacity:
            self._evict_from_main(key, victims, searchable)
        return victims

    def _evict_from_window(self, key: Hashable, victims: list[Hashable]) -> bool:
        """Move the window's overflow to probation; candidates compete while over capacity.

        False if a victim search gave up (only pinned keys were found).
        """
        win, prob, seg = self._window, self._probation, self._seg
        candidates: list[tuple[Hashable, int]] = []
        while self.window_used > self.window_max and win:
            k, w = win.popitem(last=False)
            self.window_used -= w
            candidates.append((k, w))
            del seg[k]
        admit, evictable = self.admission.admit, self._evictable
        searchable = True
        for ck, cw in candidates:
            stays = True
            while searchable and self.used > self.capacity:
                found = self._find_victim(key)
                if found is None:
                    searchable = False
                    break
                vk, vseg = found
                if admit(ck, vk):
                    self._drop(vk, vseg, victims)
                    continue
                if ck == key or evictable(ck):  # a pinned loser stays: it is being read
                    victims.append(ck)
                    self.used -= cw
                    stays = False
                break
            if stays:
                prob[ck] = cw
                seg[ck] = prob
        return searchable

    def _evict_from_main(self, key: Hashable, victims: list[Hashable], searchable: bool) -> None:
        """Plain eviction without contest; refuse ``key`` if no room can be made."""
        while searchable and self.used > self.capacity:
            found = self._find_victim(key)
            if found is None:
                break
            self._drop(found[0], found[1], victims)
        if self.used > self.capacity and key in self._seg:
            self.remove(key)
            victims.append(key)

    def _drop(self, k: Hashable, seg: OrderedDict[Hashable, int], victims: list[Hashable]) -> None:
        w = seg.pop(k)
        del self._seg[k]
        self.used -= w
        if seg is self._window:
            self.window_used -= w
        elif seg is self._protected:
            self.protected_used -= w
        victims.append(k)

    def _find_victim(
        self, exclude: object
    ) -> tuple[Hashable, OrderedDict[Hashable, int]] | None:
        """Main's victim: probation's LRU end, then protected's, then the window's.

        Pinned keys are moved to their segment's MRU end; the search gives up after
        ``MAX_SKIPS`` of them. ``exclude`` (the key being admitted) is never chosen.
        """
        evictable = self._evictable
        skips = 0
        for seg in (self._probation, self._protected, self._window):
            for _ in range(len(seg)):
                k = next(iter(seg))
                if k == exclude:
                    seg.move_to_end(k)
                    continue
                if evictable(k):
                    return k, seg
                seg.move_to_end(k)
                skips += 1
                if skips >= MAX_SKIPS:
                    return None
        return None

    def evict(self, nbytes: int) -> list[Hashable]:
        victims: list[Hashable] = []
        target = self.used - nbytes
        while self.used > target:
            found = self._find_victim(self._last_admitted)
            if found is None:
                break
            self._drop(found[0], found[1], victims)
        return victims

    def remove(self, key: Hashable) -> None:
        seg = self._seg.pop(key, None)
        if seg is None:
            return
        w = seg.pop(key)
        self.used -= w
        if seg is self._window:
            self.window_used -= w
        elif seg is self._protected:
            self.protected_used -= w

    def __contains__(self, key: object) -> bool:
        return key in self._seg

    def __len__(self) -> int:
        return len(self._seg)
