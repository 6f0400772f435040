"""The live miss-ratio curve: ``edge mrc`` on the server's own traffic, as it happens.

The same SHARDS spatial sampling as ``eviction/mrc.py`` (and so the same curve for the same
traffic): block ``i`` of object ``key`` is sampled when the top 24 bits of
``mix64(xxh64(key) + i * 0x9E3779B97F4A7C15)`` fall below ``rate * 2^24`` (with tenants the
hashed key is ``TENANT NUL key``). Every response with a body is accounted (``account``):
its block accesses and their bytes are counted, and the sampled ones are queued; they are
replayed in batches (``BATCH``) through miniature caches of ``size * rate`` bytes running
the configured policy, one per cache size (``eviction.shards.ShardsMRC``: no numpy in the
server). As offline, misses
are estimated from the sample and the hit ratios derived from the exact totals; origin
bytes per day are the estimated misses over the time since the curve started.

Sizes: ``cache.size`` times 1/16, 1/8, ... 16 (9 points), the configured size in the
middle. The curve is per worker process: ``GET /mrc`` on the admin API answers from worker
0, which sees about 1/N of the traffic with N workers (hit ratios are estimated as well;
origin bytes are that worker's share).

Cost on the hit path: for a one-block response a dict lookup and a few integer operations
(the key's hash and whether its block 0 is sampled are remembered); larger responses hash
each block they touch, which is small next to the bytes they send.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import xxhash

from eviction.shards import SAMPLE_BITS, ShardsMRC, block_hash_of, threshold

BATCH = 4096                # queued sampled block accesses replayed at once
MEMO_MAX = 1 << 16          # objects whose hash (and block-0 decision) is remembered
FACTORS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16)


class LiveMRC:
    """Miniature caches fed by the sampled objects of the live traffic."""

    def __init__(self, policy: str, cache_size: int, block_size: int, rate: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.limit = threshold(rate)             # ValueError unless 0 < rate <= 1
        self.policy = policy
        self.cache_size = cache_size
        self.block_size = block_size
        self.rate = rate
        self.sizes = sorted({max(block_size, int(cache_size * f) // block_size * block_size)
                             for f in FACTORS})
        self.clock = clock
        self._memo: dict[tuple[str, str], tuple[int, bool]] = {}
        self.pending: list[tuple[tuple[str, str, int], int, float]] = []
        self.reset()

    def reset(self) -> None:
        """Start a fresh curve (after a config change, or on request)."""
        self.shards = ShardsMRC(self.policy, self.sizes, self.rate, block_size=self.block_size)
        self.started = self.clock()
        self.pending.clear()
        self.accesses = 0           # every block access accounted (the exact totals)
        self.bytes = 0

    def _hash(self, tenant: str, key: str) -> tuple[int, bool]:
        name = f"{tenant}\0{key}" if tenant else key
        kh = xxhash.xxh64_intdigest(name.encode("utf-8", "surrogateescape"))
        got = (kh, (block_hash_of(kh, 0) >> (64 - SAMPLE_BITS)) < self.limit)
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[(tenant, key)] = got
        return got

    def account(self, tenant: str, key: str, first: int, last: int, size: int) -> None:
        """A response sent bytes ``[first, last]`` of an object of ``size`` bytes."""
        bs = self.block_size
        i0, i1 = first // bs, last // bs
        n = i1 - i0 + 1
        self.accesses += n
        tail = size - i1 * bs                  # length of the last block touched
        self.bytes += (n - 1) * bs + (tail if tail < bs else bs)
        kh, s0 = self._memo.get((tenant, key)) or self._hash(tenant, key)
        if n == 1 and i0 == 0:
            if s0:
                self._queue(tenant, key, 0, min(bs, size))
            return
        limit, shift = self.limit, 64 - SAMPLE_BITS
        for idx in range(i0, i1 + 1):
            if (block_hash_of(kh, idx) >> shift) < limit:
                self._queue(tenant, key, idx, min(bs, size - idx * bs))

    def block0(self, tenant: str, key: str) -> bool:
        """Whether block 0 of ``key`` is sampled: a caller may remember it for this curve."""
        return (self._memo.get((tenant, key)) or self._hash(tenant, key))[1]

    def account_block0(self, tenant: str, key: str, size: int, sampled: bool) -> None:
        """``account(tenant, key, 0, size - 1, size)`` of a whole object within block 0
        (``0 < size <= block_size``), ``sampled`` as :meth:`block0` said."""
        self.accesses += 1
        self.bytes += size
        if sampled:
            self._queue(tenant, key, 0, size)

    def _queue(self, tenant: str, key: str, idx: int, weight: int) -> None:
        self.pending.append(((tenant, key, idx), weight, self.clock()))
        if len(self.pending) >= BATCH:
            self.replay()

    def replay(self) -> None:
        """Feed the queued sampled block accesses to the miniatures."""
        add = self.shards.add
        for block, weight, now in self.pending:
            add(block, weight, now)
        self.pending.clear()

    def _points(self) -> tuple[list[Any], float]:
        self.replay()
        duration = max(0.0, self.clock() - self.started)
        sampled = self.shards.accesses
        if not sampled:
            return self.shards.points(duration if duration > 0 else None), duration
        # Misses scale with the sampled share of block accesses (measured), and of their bytes.
        return self.shards.points(duration if duration > 0 else None, totals=(self.accesses, self.bytes),
                                  block_scale=sampled / self.accesses), duration

    def report(self) -> dict[str, Any]:
        """The curve so far, as JSON-able data (``GET /mrc``)."""
        points, duration = self._points()
        return {
            "policy": self.policy,
            "sample_rate": self.rate,
            "configured_size": self.cache_size,
            "since": self.started,
            "seconds": round(duration, 3),
            "block_accesses": self.accesses,
            "sampled_block_accesses": self.shards.accesses,
            "points": [p.as_dict() for p in points],
        }

    def curve(self) -> Any:
        """The report as an ``eviction.mrc.Curve`` (for ``eviction.mrc.plot``)."""
        from eviction.mrc import Curve

        points, duration = self._points()
        return Curve(policy=self.policy, points=points, rate=self.rate, scale=self.rate,
                     sampled_accesses=self.shards.accesses, accesses=self.accesses, footprint=0,
                     duration=duration, block_size=self.block_size)
