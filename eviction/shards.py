"""The numpy-free core of the miss-ratio curves: miniature caches fed sampled block accesses.

``ShardsMRC`` runs one miniature per cache size (SHARDS, see ``eviction/mrc.py`` for the
theory); ``Point`` is one point of a curve. ``eviction.mrc`` builds curves from traces with
numpy; the live server (``edge/livemrc.py``) feeds ``ShardsMRC`` directly, so it never
imports numpy.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .registry import make_policy

GOLDEN = 0x9E3779B97F4A7C15
SAMPLE_BITS = 24
MIN_SAMPLED_ACCESSES = 100_000
"""``auto_rate`` raises the sampling rate until about this many accesses are sampled."""
MIN_BLOCKS = 32
"""A miniature holding fewer blocks than this is flagged unreliable."""
DAY = 86400.0


M64 = 0xFFFFFFFFFFFFFFFF


def mix64(z: int) -> int:
    """splitmix64's finaliser on one 64-bit int (``eviction.mrc`` has the numpy version)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def block_hash_of(key_hash: int, index: int) -> int:
    """The sampling hash of block ``index`` of the object whose key hashes to ``key_hash``."""
    return mix64((key_hash + index * GOLDEN) & M64)


def threshold(rate: float) -> int:
    """Hashes whose top ``SAMPLE_BITS`` bits are below this are sampled."""
    if not 0 < rate <= 1:
        raise ValueError(f"sample rate must be in (0, 1], got {rate}")
    return int(round(rate * (1 << SAMPLE_BITS)))


@dataclass(frozen=True)
class Point:
    """One point of the curve, estimated from the sample and scaled to the full cache."""

    cache_size: int
    hit_ratio: float            # block hit ratio
    byte_hit_ratio: float
    origin_bytes: float         # bytes fetched from the origin over the trace (estimated)
    origin_bytes_per_day: float | None   # None when the trace has no duration
    reliable: bool              # the miniature held at least MIN_BLOCKS blocks

    @property
    def miss_ratio(self) -> float:
        return 1.0 - self.hit_ratio

    @property
    def byte_miss_ratio(self) -> float:
        return 1.0 - self.byte_hit_ratio

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(miss_ratio=self.miss_ratio, byte_miss_ratio=self.byte_miss_ratio)
        return d


class ShardsMRC:
    """Miniature caches at several sizes, fed the sampled block accesses one at a time.

    Sans-IO: ``offer`` takes the time as an argument. ``scale`` is the sampled share of the
    traffic (``rate`` unless the caller measured better).
    """

    def __init__(self, policy: str, sizes: Sequence[int], rate: float, *, block_size: int,
                 scale: float | None = None) -> None:
        self.policy = policy
        self.sizes = list(sizes)
        self.rate = rate
        self.scale = scale if scale is not None else rate
        self.block_size = block_size
        self.limit = threshold(rate)
        self._caches = [make_policy(policy, max(1, int(s * self.scale)), block_size=block_size)
                        for s in self.sizes]
        self._hits = [0] * len(self.sizes)
        self._hit_bytes = [0] * len(self.sizes)
        self.accesses = 0
        self.bytes = 0
        self.first_time: float | None = None
        self.last_time: float | None = None

    def sampled(self, h: int) -> bool:
        """Is the block with hash ``h`` in the sample?"""
        return (h >> (64 - SAMPLE_BITS)) < self.limit

    def offer(self, h: int, key: Hashable, weight: int, now: float | None = None) -> None:
        """One block access (hash ``h``, cache key, bytes); ignored unless sampled."""
        if (h >> (64 - SAMPLE_BITS)) >= self.limit:
            return
        self.add(key, weight, now)

    def add(self, key: Hashable, weight: int, now: float | None = None) -> None:
        """One sampled block access."""
        self.accesses += 1
        self.bytes += weight
        if now is not None:
            if self.first_time is None:
                self.first_time = now
            self.last_time = now
        hits, hit_bytes = self._hits, self._hit_bytes
        for i, p in enumerate(self._caches):
            if p.access(key):
                hits[i] += 1
                hit_bytes[i] += weight
            else:
                p.admit(key, weight)

    def points(self, duration: float | None = None, *, totals: tuple[int, int] | None = None,
               block_scale: float | None = None) -> list[Point]:
        """The curve so far; ``duration`` (seconds) defaults to the span of the times offered.

        With ``totals`` (the full traffic's block accesses and bytes, known when replaying a
        whole trace) the misses are estimated from the sample, scaled by ``block_scale`` (the
        sampled share of distinct blocks) and ``scale`` (of their bytes), and the hit ratios
        derived from the exact totals: misses come from the long tail of cold blocks and scale
        smoothly, while hits hinge on whether the few hottest blocks fell in the sample.
        """
        if duration is None and self.first_time is not None and self.last_time is not None:
            duration = self.last_time - self.first_time
        out = []
        for size, p, h, hb in zip(self.sizes, self._caches, self._hits, self._hit_bytes, strict=True):
            origin = (self.bytes - hb) / self.scale
            if totals is not None and totals[0] and totals[1]:
                misses = (self.accesses - h) / (block_scale or self.scale)
                hr = min(1.0, max(0.0, 1.0 - misses / totals[0]))
                bhr = min(1.0, max(0.0, 1.0 - origin / totals[1]))
            else:
                hr = h / self.accesses if self.accesses else 0.0
                bhr = hb / self.bytes if self.bytes else 0.0
            per_day = origin * DAY / duration if duration else None
            out.append(Point(size, hr, bhr, origin, per_day,
                             reliable=p.capacity >= MIN_BLOCKS * self.block_size))
        return out
