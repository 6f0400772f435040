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
                                {"window": 0.0, "jitter": False},
                                {"adaptive": True, "climb_factor": 0.5, "expected_entries": 40,
                                 "overdue": 2},
                                {"overdue": 1, "expected_entries": 16},
                                {"overdue": 8, "window": 0.2, "jitter": False},
                                {"adaptive": True, "climb_factor": 0.5, "expected_entries": 40,
                                 "overdue": 2, "ghost_gain": 3},
                                {"ghost_gain": 1, "expected_entries": 16, "window": 0.2},
                                {"ghost_gain": 8, "overdue": 2, "protected": 0.5}])
def test_twins_decide_the_same(kw):
    ops = _ops(11, 12_000)
    c = _run(cext.load("wtlfu", pure=False), ops, **kw)
    py = _run(cext.load("wtlfu", pure=True), ops, **kw)
    assert len(c) == len(py)
    for i, (a, b) in enumerate(zip(c, py, strict=True)):
        assert a == b, (i, a, b)


def test_overdue_and_ghosts_change_decisions(twin):
    # the random replay above must exercise both mechanisms, not only agree on them
    core = twin("wtlfu")
    ops = _ops(11, 12_000)
    plain = _run(core, ops, expected_entries=40)
    overdue = _run(core, ops, expected_entries=40, overdue=2)
    ghosts = _run(core, ops, expected_entries=40, ghost_gain=3)
    assert plain != overdue and plain != ghosts
    assert ghosts[-1][5] != plain[-1][5]                # the ghosts moved protected_max


def test_overdue_discount_by_hand(twin):
    core = twin("wtlfu")
    adm = core.TinyLFU(1024, jitter=False)
    V, C, NEW = 1, 2, 3
    for _ in range(4):
        adm.record(V)            # doorkeeper, then 3 sketch increments: F(V) = 4
    for _ in range(2):
        adm.record(C)            # F(C) = 2
    assert (adm.ticks, adm.span, adm.frequency(V), adm.frequency(C)) == (6, 6, 4, 2)
    assert not adm.admit(C, V)                                # 2 > 4: no
    # shift = idle x F(V) x overdue // span, at most 4; V's frequency is halved that many times
    assert not adm.admit(C, V, idle=1, overdue=1)             # 4 // 6 = 0: F(V) 4
    assert not adm.admit(C, V, idle=2, overdue=1)             # 8 // 6 = 1: F(V) 2, 2 > 2 no
    assert adm.admit(C, V, idle=3, overdue=1)                 # 12 // 6 = 2: F(V) 1
    assert adm.admit(C, V, idle=2, overdue=2)                 # 16 // 6 = 2
    assert not adm.admit(C, V, idle=3, overdue=0)             # overdue 0: the plain duel
    assert adm.admit(C, V, idle=10**15, overdue=2)            # shift capped at 4: F(V) 0
    assert not adm.admit(NEW, V, idle=10**15, overdue=2)      # a never-seen key never wins
    with pytest.raises(ValueError):
        adm.admit(C, V, idle=-1, overdue=1)
    adm.reset()                                               # an aging starts a new span
    assert (adm.ticks, adm.span) == (6, 6)
    adm.record(C)
    assert adm.span == 7


def test_overdue_victim_is_displaced(twin):
    # capacity 10: window 1, main 9. P (5 requests, weight 8) enters probation without contest;
    # C (3 requests, weight 4) needs 2 bytes: F(C) 3 vs F(P) 5.
    core = twin("wtlfu")
    P, C = 1, 2
    got = {}
    for overdue in (0, 2):
        p = core.WTinyLFU(10, expected_entries=1024, jitter=False, overdue=overdue)
        for _ in range(5):
            p.access(P)
        assert p.admit(P, 8) == []                            # P's stamp: tick 5
        for _ in range(3):
            p.access(C)                                       # ticks 6..8
        got[overdue] = p.admit(C, 4)
    # overdue 2: P idle 3 requests, span 8: shift 3 x 5 x 2 // 8 = 3, F(P) 5 >> 3 = 0 < 3
    assert got == {0: [C], 2: [P]}


def test_ghosts_steer_the_protected_share(twin):
    # capacity 10: window 1, main 9, protected ceiling int(9 x .8) = 7; ghost_gain 1.
    core = twin("wtlfu")
    V, C, D = 1, 2, 3
    p = core.WTinyLFU(10, expected_entries=1024, jitter=False, ghost_gain=1)
    for _ in range(3):
        p.access(V)
    assert p.admit(V, 9) == []                                # probation [V], F(V) 3
    assert p.protected_max == 7
    p.access(C)
    assert p.admit(C, 2) == [C]                               # F(C) 1 vs 3: refused, ghosted
    p.access(C)
    # C is back before its winner V was requested again: admission was too strict,
    # protected shrinks by 1 x 2 bytes; then C (F 2) is refused again
    assert p.admit(C, 2) == [C] and p.protected_max == 5
    assert p.access(V)                                        # V requested: F(V) 4
    p.access(C)
    assert p.admit(C, 2) == [C] and p.protected_max == 5      # V was requested first: no move
    for _ in range(5):
        p.access(D)
    assert p.admit(D, 2) == [V]                               # F(D) 5 beats F(V) 4: V ghosted
    p.access(V)
    # V is back before its winner D was requested: protected grows by 1 x 9, to the ceiling;
    # then V (F 5) does not beat D (F 5) and is refused
    assert p.admit(V, 9) == [V] and p.protected_max == 7


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
    for kw in ({"window": 1.5}, {"protected": -0.1}, {"climb_factor": 0}, {"overdue": -1},
               {"ghost_gain": -1}):
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
