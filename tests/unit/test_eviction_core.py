"""The compiled W-TinyLFU core against its pure-Python twin, and the hill climber.

The twins must make the same decision at every step: same hits, same victims in the same
order, same segments, under random operations with pinned keys, weight changes, removals,
explicit evictions and the climber moving the window.
"""
from __future__ import annotations

import random
from collections.abc import Hashable

import pytest

import cext


def _ops(seed: int, n: int) -> list[tuple]:
    rng = random.Random(seed)
    ops: list[tuple] = []
    for _ in range(n):
        r = rng.random()
        k = int(rng.paretovariate(0.8)) % 600
        if r < 0.04:
            ops.append(("pin", frozenset(rng.sample(range(600), rng.randrange(0, 30)))))
        elif r < 0.06:
            ops.append(("remove", k))
        elif r < 0.08:
            ops.append(("evict", rng.randrange(1, 500)))
        else:
            ops.append(("get", k, rng.choice((1, 3, 8, 40, 120, 700)), rng.random() < 0.03))
    return ops


def _run(core, ops: list[tuple], **kw) -> list:
    pinned: set[Hashable] = set()
    p = core.WTinyLFU(4000, evictable=lambda k: k not in pinned, **kw)
    out: list = []
    for op in ops:
        if op[0] == "pin":
            pinned = set(op[1])
        elif op[0] == "remove":
            p.remove(op[1])
        elif op[0] == "evict":
            out.append(("e", p.evict(op[1])))
        else:
            _, k, w, readmit = op
            hit = p.access(k)
            out.append(hit)
            if not hit or readmit:
                out.append(p.admit(k, w))
        assert p.used <= p.capacity
        assert 0 <= p.window_used and 0 <= p.protected_used <= p.used
    out.append((p.segments(), p.used, p.window_used, p.protected_used, p.window_max,
                p.protected_max, len(p)))
    return out


@pytest.mark.skipif(cext.NO_EXTENSIONS, reason="compiled extensions disabled")
@pytest.mark.parametrize("kw", [{}, {"adaptive": True, "climb_factor": 0.5, "expected_entries": 40},
                                {"window": 0.3, "protected": 0.5, "expected_entries": 16},
                                {"window": 0.0, "jitter": False}])
def test_twins_decide_the_same(kw):
    ops = _ops(11, 12_000)
    c = _run(cext.load("wtlfu", pure=False), ops, **kw)
    py = _run(cext.load("wtlfu", pure=True), ops, **kw)
    assert len(c) == len(py)
    for i, (a, b) in enumerate(zip(c, py, strict=True)):
        assert a == b, (i, a, b)


def test_climber_first_step_shrinks_the_window(twin):
    # capacity 1000: window 10, protected int(990 * .8) = 792; step -6.25% = -62.5 bytes.
    core = twin("wtlfu")
    p = core.WTinyLFU(1000, adaptive=True, expected_entries=16, climb_factor=1)
    for k in range(10):
        assert p.admit(k, 1) == []                       # the window holds all ten
    assert (p.window_max, p.window_used) == (10, 10)
    for k in range(100, 116):                            # 16 misses: one sample of 16 requests
        assert not p.access(k)
    # hit ratio 0 vs 0: unchanged counts as better, so the (negative) step is taken: shrink by
    # 62 bytes, at most to 1: 9 keys move from the window's LRU end to probation
    assert (p.window_max, p.protected_max, p.adjustment) == (1, 801, 0)
    window, probation, protected = p.segments()
    assert window == [9] and probation == list(range(9)) and protected == []


def test_climber_grows_the_window_when_hits_drop(twin):
    core = twin("wtlfu")
    p = core.WTinyLFU(1000, adaptive=True, expected_entries=16, climb_factor=1)
    for k in range(10):
        p.admit(k, 1)
    for k in range(16):                                  # sample 1: all hits (ratio 1)
        assert p.access(k % 10)
    w1 = p.window_max                                    # shrank (first step is negative)
    for k in range(100, 116):                            # sample 2: all misses (ratio 0): reverse
        p.access(k)
    assert p.window_max > w1


def test_window_transfer_is_bounded(twin):
    core = twin("wtlfu")
    n = 3 * core.MAX_TRANSFER
    p = core.WTinyLFU(100 * n, window=1.0, protected=0.0, adaptive=True,
                      expected_entries=16, climb_factor=1)
    for k in range(n):
        p.admit(k, 1)
    assert len(p.segments()[0]) == n
    for k in range(p.admission.entries):                 # one sample: the climber asks to shrink
        p.access(-1 - k)
    moved = len(p.segments()[1])
    assert moved == core.MAX_TRANSFER                    # one request moves at most this many
    p.access(-100)
    assert len(p.segments()[1]) == 2 * core.MAX_TRANSFER # the rest carries over


def test_validation(twin):
    core = twin("wtlfu")
    for kw in ({"window": 1.5}, {"protected": -0.1}, {"climb_factor": 0}):
        with pytest.raises(ValueError):
            core.WTinyLFU(10, **kw)
    with pytest.raises(ValueError):
        core.WTinyLFU(-1)
    with pytest.raises(ValueError):
        core.TinyLFU(16, width_factor=0)
    p = core.WTinyLFU(10)
    with pytest.raises(ValueError):
        p.admit("k", -1)
    assert "WTinyLFU(capacity=10" in repr(p) and "TinyLFU(entries=16" in repr(p.admission)


def test_jitter_admits_a_frequent_loser_rarely(twin):
    core = twin("wtlfu")
    adm = core.TinyLFU(1024, seed=3)
    for _ in range(8):
        adm.record("victim")
        adm.record("cand")
    wins = sum(adm.admit("cand", "victim") for _ in range(12_800))
    assert 50 < wins < 150                               # about 1/128 of 12800
    quiet = core.TinyLFU(1024, seed=3, jitter=False)
    for _ in range(8):
        quiet.record("victim")
        quiet.record("cand")
    assert not any(quiet.admit("cand", "victim") for _ in range(1000))
