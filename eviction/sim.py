"""The trace simulator: replays block accesses through a policy and counts what missed.

One implementation serves the tests, ``edge sim``, ``edge mrc`` and bench/. Each block access
is an ``access``; on a miss the block is offered to ``admit`` with its weight (what the cache
does after fetching it from the origin). Victims are not needed: a simulator has no memory to
free. The policies are the very objects the server uses (``make_policy``).

Ratios (see docs/eviction.md):

* **miss ratio** (object, per request): a request is a hit only if every block it touches hit;
* **block miss ratio**: missed block accesses / block accesses;
* **byte miss ratio**: bytes fetched from the origin (the weights of the missed blocks) /
  bytes of the blocks requested (the weights of all block accesses).
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .base import Policy
from .bounds import clairvoyant_hits, unbounded_hits
from .registry import BOUNDS, DEFAULT, POLICIES, make_policy
from .traces import BlockTrace


@dataclass(frozen=True)
class SimResult:
    """Request and byte counts of one flat (key, weight) simulation; ratios are derived."""

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
    """Replay ``(key, weight)`` pairs through ``policy``: ``access`` each, ``admit`` on a miss."""
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


def replay(policy: Policy, keys: Sequence[Hashable], weights: Sequence[int]) -> np.ndarray:
    """Replay block accesses through ``policy``; a bool per access: did it hit?"""
    access, admit = policy.access, policy.admit
    hits = bytearray(len(keys))
    for i, (k, w) in enumerate(zip(keys, weights, strict=True)):
        if access(k):
            hits[i] = 1
        else:
            admit(k, w)
    return np.frombuffer(bytes(hits), dtype=np.uint8).astype(bool)


@dataclass(frozen=True)
class Report:
    """What one policy at one cache size did with one block trace."""

    policy: str
    cache_size: int
    requests: int
    request_misses: int
    blocks: int
    block_misses: int
    bytes: int              # bytes of the blocks requested
    bytes_missed: int       # bytes fetched from the origin
    range_bytes: int        # bytes the clients asked for
    seconds: float
    bound: bool = False

    @property
    def miss_ratio(self) -> float:
        return self.request_misses / self.requests if self.requests else 0.0

    @property
    def block_miss_ratio(self) -> float:
        return self.block_misses / self.blocks if self.blocks else 0.0

    @property
    def byte_miss_ratio(self) -> float:
        return self.bytes_missed / self.bytes if self.bytes else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["miss_ratio"] = self.miss_ratio
        d["block_miss_ratio"] = self.block_miss_ratio
        d["byte_miss_ratio"] = self.byte_miss_ratio
        d["origin_bytes"] = self.bytes_missed
        d["ns_per_block"] = round(self.seconds / self.blocks * 1e9, 1) if self.blocks else 0.0
        return d


def summarize(bt: BlockTrace, hits: np.ndarray, policy: str, cache_size: int,
              seconds: float = 0.0, *, bound: bool = False) -> Report:
    """Aggregate per-access hits into request, block and byte counts."""
    n = len(bt)
    if n:
        req_hit = np.logical_and.reduceat(hits, bt.offsets[:-1])
        req_misses = int(len(req_hit) - np.count_nonzero(req_hit))
    else:
        req_misses = 0
    miss = ~hits
    return Report(
        policy=policy, cache_size=int(cache_size), requests=bt.requests,
        request_misses=req_misses, blocks=n, block_misses=int(np.count_nonzero(miss)),
        bytes=int(bt.weight.sum()), bytes_missed=int(bt.weight[miss].sum()),
        range_bytes=int(bt.req_bytes.sum()), seconds=round(seconds, 4), bound=bound,
    )


def run(name: str, bt: BlockTrace, cache_size: int, *,
        clock: Callable[[], float] | None = None, **kw: Any) -> Report:
    """Simulate policy (or bound) ``name`` at ``cache_size`` bytes over ``bt``.

    ``clock`` (e.g. ``time.perf_counter``) times the run; the simulator reads no clock itself.
    """
    t0 = clock() if clock else 0.0
    if name == "unbounded":
        hits = unbounded_hits(bt.first)
    elif name == "clairvoyant":
        hits = clairvoyant_hits(bt.key, bt.weight, cache_size)
    else:
        policy = make_policy(name, cache_size, block_size=bt.block_size, **kw)
        hits = replay(policy, bt.key.tolist(), bt.weight.tolist())
    return summarize(bt, hits, name, cache_size, clock() - t0 if clock else 0.0,
                     bound=name in BOUNDS)


def policy_names(spec: str | None) -> list[str]:
    """``None`` or ``all``: every policy, the default first; else a comma-separated list."""
    if spec is None or spec == "all":
        return [DEFAULT] + [p for p in POLICIES if p != DEFAULT]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        if n not in POLICIES and n not in BOUNDS:
            raise ValueError(f"unknown policy {n!r} (valid: all, "
                             f"{', '.join([*POLICIES, *BOUNDS])})")
    return names


def run_all(bt: BlockTrace, cache_sizes: Sequence[int], policies: Sequence[str],
            *, bounds: bool = True, clock: Callable[[], float] | None = None) -> list[Report]:
    """Every policy at every size, then the bounds (clairvoyant, unbounded) per size."""
    out: list[Report] = []
    for size in cache_sizes:
        for name in policies:
            if name not in BOUNDS:
                out.append(run(name, bt, size, clock=clock))
        if bounds or "clairvoyant" in policies:
            out.append(run("clairvoyant", bt, size, clock=clock))
        if bounds or "unbounded" in policies:
            out.append(run("unbounded", bt, size, clock=clock))
    return out


def format_table(reports: Sequence[Report], *, footprint: int | None = None) -> str:
    """A plain-text table: policy x miss ratio x block miss ratio x byte miss ratio."""
    lines = [f"{'cache size':>12} {'% fp':>6}  {'policy':<20} {'miss ratio':>10} "
             f"{'block miss':>10} {'byte miss':>10} {'origin':>10} {'time s':>7}"]
    prev = None
    for r in reports:
        if prev is not None and r.cache_size != prev:
            lines.append("")
        prev = r.cache_size
        pct = f"{100 * r.cache_size / footprint:5.1f}%" if footprint else "     -"
        name = f"{r.policy} (bound)" if r.bound else r.policy
        lines.append(f"{human_bytes(r.cache_size):>12} {pct:>6}  {name:<20} {r.miss_ratio:>10.4f} "
                     f"{r.block_miss_ratio:>10.4f} {r.byte_miss_ratio:>10.4f} "
                     f"{human_bytes(r.bytes_missed):>10} {r.seconds:>7.2f}")
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    """1536 -> '1.5KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"  # pragma: no cover


def zipf_trace(
    n_requests: int,
    n_keys: int,
    *,
    alpha: float = 0.9,
    sizes: tuple[int, ...] = (4096, 8192, 16384, 32768),
    seed: int = 42,
    offset: int = 0,
) -> list[tuple[int, int]]:
    """A flat synthetic trace: keys ``offset .. offset + n_keys - 1`` drawn with Zipf(``alpha``)
    popularity (key ``offset`` the most popular), each with a fixed size drawn from ``sizes``.

    Deterministic for a given seed (numpy's ``default_rng``); int keys hash the same in every
    process, so hit counts over these traces can be pinned.
    """
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_keys + 1, dtype=np.float64) ** alpha
    p /= p.sum()
    keys = rng.choice(n_keys, size=n_requests, p=p)
    weights = rng.choice(np.asarray(sizes, dtype=np.int64), size=n_keys)
    return [(k + offset, w) for k, w in zip(keys.tolist(), weights[keys].tolist(), strict=True)]
