"""Miss-ratio curves by SHARDS-style spatial sampling and miniature simulations.

Theory of operation (Waldspurger et al., "Efficient MRC Construction with SHARDS", FAST '15,
and "Cache Modeling and Optimization using Miniature Simulations", ATC '17): a block is in
the sample when the top 24 bits of its hash are below ``rate * 2**24``, so a block is always
in or always out, and the sample keeps every access of about ``rate`` of the blocks. For each
cache size ``S`` of the curve a *miniature* cache of ``S * rate`` bytes runs the real policy
(``make_policy``, the same code as the server) over the sampled accesses only; its block and
byte hit ratios estimate those of the full cache at ``S``. The sampled footprint rarely is
exactly ``rate`` of the whole, so the batch path scales the miniatures by the measured
fraction of footprint bytes instead of ``rate`` (the SHARDS adjustment, in bytes), and
estimates the *misses* from the sample (scaled by the sampled share of distinct blocks and of
their bytes), deriving the hit ratios from the full trace's exact totals: misses come from the
long tail of cold blocks and scale smoothly, whereas the sampled hit ratio swings with whether
the few hottest blocks happen to be sampled.

The block hash is ``mix64(xxh64(object key) + index * golden)``: stable across processes and
runs, so the server can sample its live traffic the same way (``ShardsMRC.offer``) and
``edge mrc`` can replay an access log. Miniatures smaller than ``MIN_BLOCKS`` blocks are
unreliable and reported as such (``reliable`` false).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from .shards import (
    DAY,
    GOLDEN,
    MIN_BLOCKS,
    MIN_SAMPLED_ACCESSES,
    SAMPLE_BITS,
    Point,
    ShardsMRC,
    block_hash_of,
    threshold,
)
from .traces import BlockTrace, Trace

__all__ = ["DAY", "GOLDEN", "MIN_BLOCKS", "MIN_SAMPLED_ACCESSES", "SAMPLE_BITS", "Curve", "Point",
           "ShardsMRC", "auto_rate", "block_hash", "block_hashes", "curve", "default_sizes",
           "key_hash", "plot", "sample_mask", "threshold"]


def key_hash(key: str) -> int:
    """The 64-bit hash of an object key (xxh64, seed 0)."""
    return xxhash.xxh64_intdigest(key.encode())


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def block_hash(key: str, index: int) -> int:
    """The sampling hash of block ``index`` of object ``key`` (what the server would use)."""
    return block_hash_of(key_hash(key), index)


def block_hashes(trace: Trace, bt: BlockTrace) -> np.ndarray:
    """The sampling hash of every block access of ``bt`` (expanded from ``trace``)."""
    n_obj = int(trace.obj.max()) + 1 if len(trace.obj) else 0
    oh = np.fromiter((key_hash(trace.name(o)) for o in range(n_obj)), dtype=np.uint64, count=n_obj)
    with np.errstate(over="ignore"):
        z = oh[bt.obj] + bt.index.astype(np.uint64) * np.uint64(GOLDEN)
        return _mix64(z)


def sample_mask(hashes: np.ndarray, rate: float) -> np.ndarray:
    """Which accesses SHARDS keeps at ``rate``."""
    return (hashes >> np.uint64(64 - SAMPLE_BITS)) < np.uint64(threshold(rate))


def auto_rate(n_accesses: int, rate: float) -> float:
    """``rate``, raised so that about ``MIN_SAMPLED_ACCESSES`` accesses are sampled."""
    if n_accesses <= 0:
        return 1.0
    return min(1.0, max(rate, MIN_SAMPLED_ACCESSES / n_accesses))


def default_sizes(footprint: int, points: int = 16, lo: float = 0.001, hi: float = 1.0) -> list[int]:
    """``points`` cache sizes from ``lo`` to ``hi`` of the footprint, log-spaced."""
    if footprint <= 0:
        return []
    shares = np.geomspace(lo, hi, points)
    return sorted({max(1, int(footprint * s)) for s in shares})


@dataclass
class Curve:
    """A miss-ratio curve and how it was made."""

    policy: str
    points: list[Point]
    rate: float                 # the sampling rate used
    scale: float                # sampled share of the footprint bytes (miniature scale)
    sampled_accesses: int
    accesses: int
    footprint: int
    duration: float
    block_size: int
    seconds: float = 0.0


def curve(trace: Trace, bt: BlockTrace, *, policy: str, sizes: Sequence[int], rate: float,
          hashes: np.ndarray | None = None, clock: Callable[[], float] | None = None) -> Curve:
    """The MRC of ``policy`` over ``bt`` at ``sizes``, from a SHARDS sample at ``rate``.

    ``clock`` (e.g. ``time.perf_counter``) times the run; nothing here reads a clock itself.
    """
    t0 = clock() if clock else 0.0
    if hashes is None:
        hashes = block_hashes(trace, bt)
    if rate >= 1.0:
        sample = bt
        scale = block_scale = 1.0
    else:
        sample = bt.select(sample_mask(hashes, rate))
        scale = sample.footprint / bt.footprint if bt.footprint else rate
        block_scale = sample.n_unique / bt.n_unique if bt.n_unique else rate
        if scale <= 0 or block_scale <= 0:
            scale = block_scale = rate
    m = ShardsMRC(policy, sizes, rate, block_size=bt.block_size, scale=scale)
    add = m.add
    for k, w in zip(sample.key.tolist(), sample.weight.tolist(), strict=True):
        add(k, w)
    pts = m.points(bt.duration or None, totals=(len(bt), int(bt.weight.sum())),
                   block_scale=block_scale)
    return Curve(policy, pts, rate, scale, len(sample), len(bt), bt.footprint, bt.duration,
                 bt.block_size, clock() - t0 if clock else 0.0)


def plot(c: Curve, path: str, *, marker: int | None = None, title: str = "") -> None:
    """Save the curve as a PNG: hit ratios and origin bytes per day against cache size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.array([p.cache_size for p in c.points], dtype=np.float64) / 2**30
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(8, 7))
    ax1.plot(xs, [p.hit_ratio for p in c.points], "o-", label="block hit ratio")
    ax1.plot(xs, [p.byte_hit_ratio for p in c.points], "s-", label="byte hit ratio")
    ax1.set_ylabel("hit ratio")
    ax1.set_ylim(0, 1)
    ax1.grid(True, which="both", alpha=0.3)
    per_day = c.duration > 0
    ys = [(p.origin_bytes_per_day if per_day else p.origin_bytes) or 0.0 for p in c.points]
    ax2.plot(xs, np.array(ys) / 2**30, "o-", color="tab:red")
    ax2.set_ylabel("origin GiB per day" if per_day else "origin GiB (whole trace)")
    ax2.set_xlabel("cache size (GiB)")
    ax2.set_xscale("log")
    ax2.grid(True, which="both", alpha=0.3)
    if marker:
        for ax in (ax1, ax2):
            ax.axvline(marker / 2**30, color="k", linestyle="--", linewidth=1)
        ax1.annotate(f"configured {marker / 2**30:.3g} GiB", (marker / 2**30, 0.95),
                     textcoords="offset points", xytext=(4, -10), fontsize=9)
    ax1.legend(loc="lower right")
    fig.suptitle(title or f"{c.policy}: miss-ratio curve (SHARDS rate {c.rate:.3g})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
