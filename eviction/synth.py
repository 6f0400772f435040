"""Synthetic traces with a pinned seed: Zipf popularity, churn, one-hit wonders, scans, CDN sizes.

Every generator returns an object-level :class:`~eviction.traces.Trace` whose requests are byte
ranges, so :func:`~eviction.traces.to_blocks` yields block-level accesses as the edge sees them:

* **Sizes** (``cdn_sizes``): a CDN-like mixture, 55% small objects (log-normal around 24 KiB,
  < 1 MiB), 33% medium (around 6 MiB, up to 64 MiB), 12% large (around 256 MiB, up to 4 GiB).
* **Ranges** (``ranges``): objects up to ``WHOLE_MAX`` are fetched whole; larger ones as one
  range per request (a player's chunk, a download manager's segment, a resumed download):
  half start at byte 0, half at a uniform byte offset, with a log-normal length around 2 MiB
  (64 KiB .. 32 MiB), clamped to the object.
* **Popularity**: ``zipf`` draws objects i.i.d. with P(rank r) ~ 1 / r^alpha. ``churn`` keeps a
  Zipf ranking for an epoch (``epochs`` per trace) and between epochs hands a random
  ``turnover / epochs`` share of the ranks to brand-new objects (new uploads replace old ones,
  anywhere in the ranking). ``onehit`` sends a ``onehit`` share of the requests to objects
  never requested again. ``scan`` interleaves ``scan_bursts`` bursts of sequential passes over
  cold objects of up to 16 MiB never requested before, each read whole (a crawler, a backup).
  ``cdn`` is the mix the edge expects: churn, one-hit wonders and scans together.

Deterministic for a given seed (numpy ``default_rng``).
"""
from __future__ import annotations

import numpy as np

from .traces import Trace

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
WHOLE_MAX = 4 * MiB
"""Objects up to this size are requested whole."""
SCAN_MAX = 16 * MiB
"""Objects read by a scan are at most this large (each is read whole)."""
KINDS = ("zipf", "churn", "onehit", "scan", "cdn")
DAY = 86400.0


def cdn_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` object sizes from the CDN-like mixture (see the module docstring)."""
    kind = rng.choice(3, size=n, p=[0.55, 0.33, 0.12])
    small = np.clip(rng.lognormal(np.log(24 * KiB), 1.3, n), 200, MiB - 1)
    medium = np.clip(rng.lognormal(np.log(6 * MiB), 0.9, n), MiB, 64 * MiB)
    large = np.clip(rng.lognormal(np.log(256 * MiB), 0.9, n), 64 * MiB, 4 * GiB)
    return np.choose(kind, [small, medium, large]).astype(np.int64)


def ranges(rng: np.random.Generator, size: np.ndarray, *, from_start: float = 0.5,
           median: int = 2 * MiB) -> tuple[np.ndarray, np.ndarray]:
    """Byte ranges ``[start, end)`` of one request per entry of ``size``."""
    n = len(size)
    whole = size <= WHOLE_MAX
    start = np.where(rng.random(n) < from_start, 0, (rng.random(n) * size).astype(np.int64))
    length = np.clip(rng.lognormal(np.log(median), 1.0, n), 64 * KiB, 32 * MiB).astype(np.int64)
    start = np.where(whole, 0, start)
    end = np.where(whole, size, np.minimum(size, start + length))
    return start.astype(np.int64), end.astype(np.int64)


def zipf_ranks(rng: np.random.Generator, n: int, n_objects: int, alpha: float) -> np.ndarray:
    """``n`` ranks in ``0 .. n_objects - 1`` with P(r) ~ 1 / (r + 1)^alpha."""
    p = 1.0 / np.arange(1, n_objects + 1, dtype=np.float64) ** alpha
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n)), n_objects - 1).astype(np.int64)


def _assemble(rng: np.random.Generator, obj: np.ndarray, n_total: int, duration: float,
              scan_mask: np.ndarray | None = None) -> Trace:
    """Sizes per object id, ranges per request, evenly spaced timestamps."""
    sizes = cdn_sizes(rng, n_total)
    size = sizes[obj]
    start, end = ranges(rng, size)
    if scan_mask is not None and scan_mask.any():
        size[scan_mask] = np.minimum(size[scan_mask], SCAN_MAX)   # a pass reads whole objects
        start[scan_mask] = 0
        end[scan_mask] = size[scan_mask]
    time = np.arange(len(obj), dtype=np.float64) * (duration / max(1, len(obj)))
    return Trace(time, obj.astype(np.int64), size, start, end)


def generate(kind: str, n_requests: int, *, seed: int = 42, n_objects: int | None = None,
             alpha: float = 0.9, onehit: float = 0.25, scan: float = 0.1, scan_bursts: int = 5,
             turnover: float = 1.0, epochs: int = 20, duration: float = DAY) -> Trace:
    """A synthetic trace of ``kind`` (one of ``KINDS``); see the module docstring."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic trace {kind!r} (valid: {', '.join(KINDS)})")
    rng = np.random.default_rng(seed)
    n = n_requests
    n_obj = n_objects or max(100, n // 10)
    drift = kind in ("churn", "cdn")
    ranks = zipf_ranks(rng, n, n_obj, alpha)
    if drift:
        # popularity churn: the ranking holds for an epoch; between epochs a random
        # turnover / epochs share of the ranks is handed to brand-new objects
        mapping = np.arange(n_obj, dtype=np.int64)
        total = n_obj
        obj = np.empty(n, dtype=np.int64)
        per_epoch = int(n_obj * turnover / epochs)
        for e in range(epochs):
            lo, hi = e * n // epochs, (e + 1) * n // epochs
            obj[lo:hi] = mapping[ranks[lo:hi]]
            swap = rng.choice(n_obj, size=per_epoch, replace=False)
            mapping[swap] = total + np.arange(per_epoch)
            total += per_epoch
    else:
        obj = ranks
        total = n_obj
    scan_mask = None
    if kind in ("onehit", "cdn"):
        one = rng.random(n) < onehit
        obj = np.where(one, total + np.arange(n), obj)   # a fresh object per one-hit request
        total += n
    if kind in ("scan", "cdn"):
        scan_mask = np.zeros(n, dtype=bool)
        frac = scan if kind == "cdn" else 2 * scan
        per_burst = int(n * frac / max(1, scan_bursts))
        for b in range(scan_bursts):
            lo = int((b + 0.5) * n / scan_bursts) - per_burst // 2
            idx = np.arange(max(0, lo), min(n, lo + per_burst))
            scan_mask[idx] = True
            # one sequential pass over cold objects never requested before, each read whole
            obj[idx] = total + np.arange(len(idx))
            total += len(idx)
    return _assemble(rng, obj, total, duration, scan_mask)
