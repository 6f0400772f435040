"""The trace simulator: replays (key, weight) requests through a policy and counts hits.

One implementation serves the tests, ``edge sim`` and bench/. Each request is an ``access``;
on a miss the key is offered to ``admit`` (what the cache does after fetching it). The policy's
victims are not needed here: a simulator has no memory to free.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from .base import Policy


@dataclass(frozen=True)
class SimResult:
    """Request and byte counts of one simulation; ratios are derived."""

    hits: int
    misses: int
    bytes_hit: int
    bytes_missed: int

    @property
    def requests(self) -> int:
        return self.hits + self.misses

    @property
    def miss_ratio(self) -> float:
        return self.misses / self.requests if self.requests else 0.0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_miss_ratio(self) -> float:
        total = self.bytes_hit + self.bytes_missed
        return self.bytes_missed / total if total else 0.0

    def __str__(self) -> str:
        return (f"requests={self.requests} hits={self.hits} misses={self.misses} "
                f"hit_ratio={self.hit_ratio:.4f} byte_miss_ratio={self.byte_miss_ratio:.4f}")


def simulate(policy: Policy, trace: Iterable[tuple[Hashable, int]]) -> SimResult:
    """Replay ``trace`` through ``policy``: ``access`` each request, ``admit`` on a miss."""
    access, admit = policy.access, policy.admit
    hits = misses = bytes_hit = bytes_missed = 0
    for key, weight in trace:
        if access(key):
            hits += 1
            bytes_hit += weight
        else:
            misses += 1
            bytes_missed += weight
            admit(key, weight)
    return SimResult(hits, misses, bytes_hit, bytes_missed)


def zipf_trace(
    n_requests: int,
    n_keys: int,
    *,
    alpha: float = 0.9,
    sizes: tuple[int, ...] = (4096, 8192, 16384, 32768),
    seed: int = 42,
    offset: int = 0,
) -> list[tuple[int, int]]:
    """A synthetic trace: keys ``offset .. offset + n_keys - 1`` drawn with Zipf(``alpha``)
    popularity (key ``offset`` the most popular), each with a fixed size drawn from ``sizes``.

    Deterministic for a given seed (numpy's ``default_rng``); int keys hash the same in every
    process, so hit counts over these traces can be pinned.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_keys + 1, dtype=np.float64) ** alpha
    p /= p.sum()
    keys = rng.choice(n_keys, size=n_requests, p=p)
    weights = rng.choice(np.asarray(sizes, dtype=np.int64), size=n_keys)
    return [(k + offset, w) for k, w in zip(keys.tolist(), weights[keys].tolist(), strict=True)]
