"""Eviction policy speed: nanoseconds per request on a Zipf trace, compiled vs pure sketch.

    pytest bench/bench_eviction.py --benchmark-columns=mean,stddev,rounds

Each ``test_*`` times whole trace replays; ``extra_info["ns_per_op"]`` (in the JSON report and
printed at the end) is the mean time divided by the number of requests. ``access_admit`` replays
the trace through ``eviction.sim.simulate`` (access, admit on a miss); ``hit`` calls only
``access`` on resident keys, the per-request cost of a hit. Target: < 1 us per access with the
compiled sketch.
"""
from __future__ import annotations

from typing import Any

import pytest

import cext
from eviction import POLICIES, make_policy, simulate, zipf_trace

N_REQUESTS = 100_000
CAPACITY = 8 << 20
TRACE = zipf_trace(N_REQUESTS, 10_000, seed=42)
RESULTS: dict[str, float] = {}

VARIANTS = [("lru", None), ("lfu", None), ("wtinylfu", "c"), ("wtinylfu", "py")]
IDS = ["lru", "lfu", "wtinylfu-compiled", "wtinylfu-pure"]


def _policy(name: str, sketch: str | None):
    kw: dict[str, Any] = {}
    if sketch is not None:
        if sketch == "c" and cext.NO_EXTENSIONS:
            pytest.skip("compiled extensions disabled")
        kw["sketch"] = cext.load("sketch", pure=sketch == "py")
    return make_policy(name, CAPACITY, **kw)


def _record(benchmark, label: str, n: int) -> None:
    ns = benchmark.stats.stats.mean / n * 1e9
    benchmark.extra_info["ns_per_op"] = round(ns, 1)
    RESULTS[label] = ns


@pytest.mark.parametrize(("name", "sketch"), VARIANTS, ids=IDS)
def test_access_admit(benchmark, name, sketch):
    benchmark.pedantic(
        simulate, setup=lambda: ((_policy(name, sketch), TRACE), {}), rounds=5, iterations=1
    )
    _record(benchmark, f"access+admit {name}{'-' + sketch if sketch else ''}", N_REQUESTS)


@pytest.mark.parametrize(("name", "sketch"), VARIANTS, ids=IDS)
def test_hit(benchmark, name, sketch):
    p = _policy(name, sketch)
    simulate(p, TRACE)
    hits = [k for k, _ in TRACE if k in p][:50_000]

    def run() -> None:
        access = p.access
        for k in hits:
            access(k)

    benchmark.pedantic(run, rounds=5, iterations=1)
    _record(benchmark, f"hit {name}{'-' + sketch if sketch else ''}", len(hits))


def teardown_module() -> None:
    print("\nns per request:")
    for label, ns in RESULTS.items():
        print(f"  {label:28} {ns:8.0f}")


assert set(POLICIES) == {"lru", "lfu", "wtinylfu"}, "add new policies to VARIANTS"
