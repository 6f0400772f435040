"""TinyLFU admission: a frequency sketch that decides whether a candidate may displace a victim.

Theory of operation (Einziger, Friedman & Manes, "TinyLFU", 2017; Caffeine's FrequencySketch):
every request ``record``s its key. The key's hash first meets the doorkeeper, a bloom filter: a
first occurrence only sets bits there; a repeat increments the count-min sketch (4-bit counters,
depth 4, width = expected entries rounded up to a power of two). Every ``10 * width`` samples the
sketch halves all its counters and the doorkeeper is cleared, so frequencies describe the recent
past. A key's frequency is its sketch estimate plus one if the doorkeeper holds it.
``admit(candidate, victim)`` is True when the candidate is strictly more frequent. As in Caffeine,
a candidate with frequency >= ``JITTER_FREQ`` that does not win is still admitted with
probability 1/128, from a PRNG seeded per instance, so an attacker cannot pin a hot victim by
colliding keys (hash flooding) and runs stay deterministic.
"""
from __future__ import annotations

import random
from collections.abc import Hashable
from types import ModuleType

import cext

JITTER_FREQ = 6
"""Candidates at least this frequent get the 1/128 random admission (Caffeine's threshold)."""
DOORKEEPER_BITS_PER_COUNTER = 8
"""Doorkeeper size relative to the sketch width (bits per column)."""
MIN_WIDTH = 16


class TinyLFUAdmission:
    """TinyLFU admission filter; reusable by any policy that has a candidate and a victim."""

    def __init__(
        self,
        expected_entries: int,
        *,
        seed: int = 0,
        jitter: bool = True,
        sketch: ModuleType | None = None,
    ) -> None:
        """``sketch`` is the cext sketch module to use (default: ``cext.load("sketch")``)."""
        self._mod = sketch if sketch is not None else cext.load("sketch")
        self._seed = seed
        self._jitter = jitter
        self._rng = random.Random(seed)
        self._build(expected_entries)

    def _build(self, entries: int) -> None:
        width = max(MIN_WIDTH, entries)
        self._sketch = self._mod.CountMinSketch(width, 4, seed=self._seed)
        self.width: int = self._sketch.width
        self._door = self._mod.Doorkeeper(self.width * DOORKEEPER_BITS_PER_COUNTER, seed=self._seed)
        self._samples = 0

    def ensure_capacity(self, entries: int) -> None:
        """Grow the sketch if ``entries`` exceeds its width (history is dropped, as in Caffeine)."""
        if entries > self.width:
            self._build(2 * entries)

    def record(self, key: Hashable) -> None:
        """Count one request for ``key``."""
        h = hash(key)
        if self._door.put(h):
            sk = self._sketch
            sk.increment(h)
            s = sk.samples
            if s < self._samples:  # the sketch aged: forget the one-timers too
                self._door.clear()
            self._samples = s

    def frequency(self, key: Hashable) -> int:
        """Estimated recent request count of ``key`` (0..16)."""
        h = hash(key)
        return self._sketch.estimate(h) + (h in self._door)

    def admit(self, candidate: Hashable, victim: Hashable) -> bool:
        """True if ``candidate`` should replace ``victim``."""
        cf = self.frequency(candidate)
        if cf > self.frequency(victim):
            return True
        if self._jitter and cf >= JITTER_FREQ:
            return self._rng.getrandbits(7) == 0
        return False

    def reset(self) -> None:
        """Age now: halve the sketch and clear the doorkeeper."""
        self._sketch.reset()
        self._door.clear()
        self._samples = self._sketch.samples
