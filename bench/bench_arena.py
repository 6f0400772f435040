"""Micro-benchmarks of the slab arena, both twins.

    python -m pytest bench/bench_arena.py --benchmark-only -p no:cacheprovider

Each timed call runs ``LOOPS`` iterations; ``extra_info["ns_per_op"]`` is the mean time of one
iteration (one alloc+free pair, or one pin+view+unpin triple) in nanoseconds.
"""

from __future__ import annotations

import pytest

import cext

LOOPS = 1000
PURES = [True] if cext.NO_EXTENSIONS else [False, True]
IDS = ["py"] if cext.NO_EXTENSIONS else ["c", "py"]


@pytest.fixture(params=PURES, ids=IDS)
def arena(request):
    a = cext.load("arena", pure=request.param).Arena(64 << 20)
    yield a
    a.close()


def _report(benchmark):
    benchmark.extra_info["ns_per_op"] = round(benchmark.stats.stats.mean / LOOPS * 1e9, 1)


def test_alloc_free_small(benchmark, arena):
    keep = arena.alloc(4000)  # keeps the class's page, so the loop measures the O(1) path

    def run():
        alloc, free = arena.alloc, arena.free
        for _ in range(LOOPS):
            free(alloc(4000))

    benchmark(run)
    _report(benchmark)
    arena.free(keep)


def test_alloc_free_block(benchmark, arena):
    def run():  # a full block takes a page from the pool and gives it back
        alloc, free = arena.alloc, arena.free
        for _ in range(LOOPS):
            free(alloc(1 << 20))

    benchmark(run)
    _report(benchmark)


def test_pin_view_unpin(benchmark, arena):
    off = arena.alloc(1 << 20)

    def run():
        pin, view, unpin = arena.pin, arena.view, arena.unpin
        for _ in range(LOOPS):
            pin(off)
            view(off, 65536)
            unpin(off)

    benchmark(run)
    _report(benchmark)
    arena.free(off)
