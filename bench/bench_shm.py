"""Micro-benchmarks of the shared cache (cext/shm.pyx), both twins.

    python -m pytest bench/bench_shm.py --benchmark-only -p no:cacheprovider
    python bench/bench_shm.py            # plain timing, no pytest-benchmark needed

``ns_per_op`` is one lookup_pin + unpin pair (the hit path) in nanoseconds: a block this
worker does not pin yet (two shared CASes: set and clear its bit), a block it already pins
(no shared write), and the same while 3 other processes hammer the same block.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time

import cext

LOOPS = 20000
PAGE = 1 << 20


def _setup(mod, d, nkeys=64):
    path = os.path.join(d, "arena")
    sup = mod.SharedCache.create(path, 128 * PAGE, PAGE, max_workers=8)
    w = mod.SharedCache.attach(path, 0)
    oids = [os.urandom(16) for _ in range(nkeys)]
    for oid in oids:
        off = w.begin_fill(oid, 0, PAGE)
        w.advance_fill(off, PAGE)
        w.finish_fill(off, 0)
        w.unpin(off)
    return sup, w, path, oids


def _time(w, oids, loops, held=False):
    lookup, unpin = w.lookup_pin, w.unpin
    n = len(oids)
    if held:
        keep = [lookup(o, 0)[0] for o in oids]
    t = time.perf_counter_ns()
    for i in range(loops):
        unpin(lookup(oids[i % n], 0)[0])
    dt = time.perf_counter_ns() - t
    if held:
        for off in keep:
            unpin(off)
    return dt / loops


def _hammer(mod, path, wid, oid):
    c = mod.SharedCache.attach(path, wid)
    while True:
        c.unpin(c.lookup_pin(oid, 0)[0])


def run(pure: bool) -> dict[str, float]:
    mod = cext.load("shm", pure=pure)
    loops = LOOPS if not pure else LOOPS // 10
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        sup, w, path, oids = _setup(mod, d)
        _time(w, oids, loops)  # warm
        out = {
            "lookup_pin+unpin": _time(w, oids, loops),
            "lookup_pin+unpin (already pinned by this worker)": _time(w, oids, loops, held=True),
        }
        pids = []
        for wid in (1, 2, 3):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                try:
                    _hammer(mod, path, wid, oids[0])
                finally:
                    os._exit(0)
            pids.append(pid)
        time.sleep(0.2)
        out["lookup_pin+unpin, same block, 3 other processes hammering it"] = \
            _time(w, oids[:1], loops)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for wid in (1, 2, 3):
            sup.recover_worker(wid)
        sup.check()
        w.close()
        sup.close()
    return out


def test_lookup_pin_unpin(benchmark):
    mod = cext.load("shm", pure=cext.NO_EXTENSIONS)
    with tempfile.TemporaryDirectory() as d:
        sup, w, _, oids = _setup(mod, d)
        benchmark(_time, w, oids, 1000)
        benchmark.extra_info["ns_per_op"] = round(benchmark.stats.stats.mean / 1000 * 1e9, 1)
        w.close()
        sup.close()


if __name__ == "__main__":
    for pure in ([True] if cext.NO_EXTENSIONS else [False, True]):
        for name, ns in run(pure).items():
            print(f"{'py' if pure else 'c '}  {name:62s} {ns:9.0f} ns", file=sys.stdout)
