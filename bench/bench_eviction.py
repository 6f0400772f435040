"""Eviction policy speed: nanoseconds per request, the compiled core against its pure twin.

    python -m pytest bench/bench_eviction.py --benchmark-columns=mean,stddev,rounds -p no:cacheprovider

Each ``test_*`` times whole replays; ``extra_info["ns_per_op"]`` (in the JSON report and
printed at the end) is the mean time divided by the number of requests.

* ``access_admit``: a 1 MiB-block trace (``synth.generate("cdn", ...)`` expanded to blocks,
  cache at 5% of the footprint) through ``eviction.sim.replay``: ``access`` every block,
  ``admit`` on a miss, as the server and the simulator do. The Python loop is included.
* ``hit``: ``access`` only, on resident keys: the per-request cost of a hit.
* ``access_admit_tuple``: the same with the keys the server uses, ``(oid, index)`` tuples.

Target: < 1 us per access on the compiled path, never an unbounded scan (victim searches
skip at most MAX_SKIPS pinned keys; window transfers move at most MAX_TRANSFER keys).
"""
from __future__ import annotations

from typing import Any

import pytest

import cext
from eviction import POLICIES, make_policy, sim, synth
from eviction.traces import to_blocks

BT = to_blocks(synth.generate("cdn", 100_000, seed=42), 1 << 20)
KEYS, WEIGHTS = BT.key.tolist(), BT.weight.tolist()
TUPLES = [(int(o), int(i)) for o, i in zip(BT.obj.tolist(), BT.index.tolist(), strict=True)]
CAPACITY = BT.footprint // 20
RESULTS: dict[str, float] = {}

VARIANTS = [("wtinylfu", "c"), ("wtinylfu", "py"), ("wtinylfu-static", "c"), ("lfu", None),
            ("lru", None)]
IDS = ["wtinylfu-compiled", "wtinylfu-pure", "wtinylfu-static-compiled", "lfu", "lru"]


def _policy(name: str, impl: str | None):
    if impl is None:
        return make_policy(name, CAPACITY, block_size=1 << 20)
    if impl == "c" and cext.NO_EXTENSIONS:
        pytest.skip("compiled extensions disabled")
    core = cext.load("wtlfu", pure=impl == "py")
    kw: dict[str, Any] = {"avg_weight": 1 << 20}
    if name == "wtinylfu":       # the registry's default, on the chosen twin
        kw.update(adaptive=True, overdue=core.DEFAULT_OVERDUE, ghost_gain=core.DEFAULT_GHOST_GAIN)
    return core.WTinyLFU(CAPACITY, **kw)


def _label(name: str, impl: str | None) -> str:
    return f"{name}{'-compiled' if impl == 'c' else '-pure' if impl == 'py' else ''}"


def _record(benchmark, label: str, n: int) -> None:
    ns = benchmark.stats.stats.mean / n * 1e9
    benchmark.extra_info["ns_per_op"] = round(ns, 1)
    RESULTS[label] = ns


@pytest.mark.parametrize(("name", "impl"), VARIANTS, ids=IDS)
def test_access_admit(benchmark, name, impl):
    benchmark.pedantic(sim.replay, setup=lambda: ((_policy(name, impl), KEYS, WEIGHTS), {}),
                       rounds=3, iterations=1)
    _record(benchmark, f"access+admit {_label(name, impl)}", len(KEYS))


@pytest.mark.parametrize(("name", "impl"), VARIANTS, ids=IDS)
def test_access_admit_tuple(benchmark, name, impl):
    benchmark.pedantic(sim.replay, setup=lambda: ((_policy(name, impl), TUPLES, WEIGHTS), {}),
                       rounds=3, iterations=1)
    _record(benchmark, f"access+admit (tuple keys) {_label(name, impl)}", len(TUPLES))


@pytest.mark.parametrize(("name", "impl"), VARIANTS, ids=IDS)
def test_hit(benchmark, name, impl):
    p = _policy(name, impl)
    sim.replay(p, KEYS, WEIGHTS)
    hits = [k for k in KEYS if k in p][:50_000]

    def run() -> None:
        access = p.access
        for k in hits:
            access(k)

    benchmark.pedantic(run, rounds=5, iterations=1)
    _record(benchmark, f"hit {_label(name, impl)}", len(hits))


def test_empty_loop(benchmark):
    """The Python loop alone (what the numbers above include besides the policy)."""
    def run() -> None:
        hits = bytearray(len(KEYS))
        for i, (k, w) in enumerate(zip(KEYS, WEIGHTS, strict=True)):
            if k < 0:
                hits[i] = w

    benchmark.pedantic(run, rounds=3, iterations=1)
    _record(benchmark, "python loop only", len(KEYS))


def teardown_module() -> None:
    print(f"\nns per request ({len(KEYS)} block accesses, cache {CAPACITY >> 20} MiB):")
    for label, ns in RESULTS.items():
        print(f"  {label:45} {ns:8.0f}")


assert set(POLICIES) == {"wtinylfu", "wtinylfu-static", "lfu", "lru"}, "add new policies to VARIANTS"
