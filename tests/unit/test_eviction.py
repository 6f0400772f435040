"""Eviction policies: hand-derived traces, the interface contract, and pinned regression numbers.

Keys in exact-count tests are ints (or tuples of ints): their hash() is the same in every process,
so TinyLFU's sketch sees the same columns and the pinned numbers are reproducible.
"""
from __future__ import annotations

import ast
import pathlib
import random
from collections.abc import Hashable
from typing import Any

import pytest

import cext
import eviction
from eviction import (
    LFU,
    LRU,
    MAX_SKIPS,
    POLICIES,
    SIZED,
    SimResult,
    TinyLFUAdmission,
    WTinyLFU,
    make_policy,
    simulate,
    zipf_trace,
)

MiB = 1 << 20


def keys(s: str) -> list[tuple[int, int]]:
    """A unit-weight trace from letters: 'ab' -> [(ord('a'), 1), (ord('b'), 1)]."""
    return [(ord(c), 1) for c in s]


def new(name: str, capacity: int, **kw: Any) -> eviction.Policy:
    if name in SIZED:
        kw.setdefault("expected_entries", 1024)   # a roomy sketch: hand-derived counts are exact
    return make_policy(name, capacity, **kw)


# --- hand-derived traces ---------------------------------------------------------------------

TRACE = "abcadaebca"


def test_lru_hand_trace():
    # capacity 3, unit weights; LRU order shown oldest first
    # a- [a]  b- [ab]  c- [abc]  a+ [bca]  d- evict b [cad]  a+ [cda]  e- evict c [dae]
    # b- evict d [aeb]  c- evict a [ebc]  a- evict e [bca]          -> 2 hits, 8 misses
    assert simulate(LRU(3), keys(TRACE)) == SimResult(hits=2, misses=8, bytes_hit=2, bytes_missed=8)


def test_lfu_hand_trace():
    # capacity 3; buckets freq:[keys in LRU order]
    # a- b- c- 1:[abc]   a+ 1:[bc] 2:[a]   d- evict b (lowest, oldest) 1:[cd]   a+ 3:[a]
    # e- evict c 1:[de]  b- evict d 1:[eb]  c- evict e 1:[bc]  a+ 4:[a]  -> 3 hits, 7 misses
    assert simulate(LFU(3), keys(TRACE)) == SimResult(hits=3, misses=7, bytes_hit=3, bytes_missed=7)


def test_wtinylfu_hand_trace(twin):
    # capacity 3: window 3 - int(3 * .99) = 1, main 2, protected int(2 * .8) = 1.
    # F(x) = requests of x so far (doorkeeper 1 + sketch), exact in a roomy sketch.
    #  a- W[a]            b- W[b] a->P[a]          c- W[c] b->P[ab]
    #  a+ P->R: P[b] R[a] d- W[d], candidate c vs victim b: F 1 vs 1, c rejected
    #  a+ R[a]            e- W[e], d vs b: 1 vs 1, d rejected
    #  b+ P->R: R[ab] over 1: demote a, P[a] R[b]
    #  c- W[c], e vs a: 1 vs 3, e rejected
    #  a+ P->R: R[ba] -> demote b, P[b] R[a]                         -> 4 hits, 6 misses
    p = twin("wtlfu").WTinyLFU(3, expected_entries=1024)
    assert simulate(p, keys(TRACE)) == SimResult(hits=4, misses=6, bytes_hit=4, bytes_missed=6)
    assert p.segments() == ([ord("c")], [ord("b")], [ord("a")])


WEIGHTED = [("a", 4), ("b", 4), ("a", 4), ("c", 6), ("b", 4), ("a", 4), ("d", 2), ("a", 4)]


def test_lru_weighted_trace():
    # capacity 10: a- [a4] b- [a b]=8 a+ [b a] c6- needs 4: evict b [a c]=10
    # b- needs 4: evict a [c b]  a- needs 4: evict c(6) [b a]=8  d2- [b a d]=10  a+   -> 2 hits
    r = simulate(LRU(10), WEIGHTED)
    assert r == SimResult(hits=2, misses=6, bytes_hit=8, bytes_missed=24)


def test_lfu_weighted_trace():
    # capacity 10: a- b- 1:[a b]  a+ 1:[b] 2:[a]  c6- needs 4: evict b, 1:[c]
    # b- needs 4: evict c(6) 1:[b]  a+ 3:[a]  d2- 1:[b d]=10  a+                     -> 3 hits
    r = simulate(LFU(10), WEIGHTED)
    assert r == SimResult(hits=3, misses=5, bytes_hit=12, bytes_missed=20)


def _wtinylfu_with_probation(core: Any, freqs: dict[int, int]) -> Any:
    """Capacity 10 (window 1, protected 7); each key requested n times, then admitted (weight 2).

    A weight-2 key overflows the 1-byte window at once and enters probation without contest.
    """
    p = core.WTinyLFU(10, expected_entries=1024)
    for k, n in freqs.items():
        for _ in range(n):
            p.access(k)
        assert p.admit(k, 2) == []
    return p


def test_wtinylfu_weighted_candidate_must_beat_every_victim(twin):
    P, R, S, BIG = 1, 2, 3, 4
    p = _wtinylfu_with_probation(twin("wtlfu"), {P: 1, R: 5, S: 1})   # probation [P R S], used 6
    for _ in range(3):
        p.access(BIG)
    assert p.admission.frequency(BIG) == 3
    # BIG(8) needs 4 bytes: it beats P (3 > 1), then loses to R (3 <= 5) and is refused;
    # P stays evicted (Caffeine's weighted eviction is not all-or-nothing)
    assert p.admit(BIG, 8) == [P, BIG]
    assert p.used == 4 and BIG not in p and R in p and S in p


def test_wtinylfu_weighted_candidate_wins(twin):
    P, R, S, BIG = 1, 2, 3, 4
    p = _wtinylfu_with_probation(twin("wtlfu"), {P: 1, R: 5, S: 1})
    for _ in range(6):
        p.access(BIG)
    assert p.admit(BIG, 8) == [P, R]                          # 6 > 1, 6 > 5
    assert p.used == 10 and BIG in p and S in p


def test_wtinylfu_protects_frequent_keys_from_a_scan(twin):
    p = twin("wtlfu").WTinyLFU(100, expected_entries=1024)
    hot = list(range(50))
    for _ in range(3):
        simulate(p, [(k, 1) for k in hot])
    simulate(p, [(k, 1) for k in range(1000, 3000)])         # a one-pass scan
    assert sum(k in p for k in hot) == 50
    lru = LRU(100)
    for _ in range(3):
        simulate(lru, [(k, 1) for k in hot])
    simulate(lru, [(k, 1) for k in range(1000, 3000)])
    assert sum(k in lru for k in hot) == 0


# --- the interface contract --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(POLICIES))
def test_too_heavy_is_refused(name):
    p = new(name, 10)
    assert p.admit("x", 11) == ["x"]
    assert "x" not in p and p.used == 0 and len(p) == 0
    assert p.admit("y", 10) == []
    assert p.used == 10
    assert p.admit("y", 11) == ["y"]                           # a resident key grown too heavy
    assert "y" not in p and p.used == 0


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_readmit_updates_weight(name):
    p = new(name, 10)
    p.admit("a", 3)
    p.admit("b", 3)
    assert p.admit("a", 5) == [] and p.used == 8 and len(p) == 2
    victims = p.admit("a", 9)                                   # must push b out, never a itself
    assert victims == ["b"] and p.used == 9 and "a" in p
    with pytest.raises(ValueError):
        p.admit("c", -1)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_remove_and_evict(name):
    p = new(name, 10)
    for i in range(5):
        p.admit(i, 2)
    p.remove(2)
    p.remove("absent")
    assert 2 not in p and p.used == 8 and len(p) == 4
    assert p.evict(0) == []
    out = p.evict(3)
    assert sum(2 for _ in out) >= 3 and len(out) == 2
    assert p.used == 4 and all(k not in p for k in out)
    assert sorted(p.evict(100) + out) == [0, 1, 3]  # type: ignore[type-var]
    assert list(p.evict(1)) == [] and 4 in p and p.used == 2   # 4 was admitted last: spared
    p.admit(5, 2)
    assert p.evict(100) == [4] and p.used == 2 and len(p) == 1


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_evict_spares_the_key_admitted_last(name):
    # storage calls evict() when the arena is fragmented, to make room for the key it just admitted
    p = new(name, 10)
    for k in range(3):
        p.access(k)
        p.admit(k, 2)
    p.access(0)
    p.access(1)
    p.access("new")
    p.access("new")
    assert p.admit("new", 2) == []
    assert "new" not in p.evict(8) and "new" in p


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_all_pinned_cache_refuses_quickly(name):
    calls = 0

    def evictable(key):
        nonlocal calls
        calls += 1
        return False

    p = new(name, 1000, evictable=evictable)
    for i in range(1000):
        p.admit(i, 1)
    assert p.used == 1000 and calls == 0
    assert p.admit("new", 1) == ["new"]
    assert "new" not in p and p.used == 1000
    # one bounded victim search (W-TinyLFU: one, shared by the window and main phases)
    assert calls <= MAX_SKIPS
    calls = 0
    assert p.evict(5) == [] and calls <= MAX_SKIPS


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_pinned_keys_are_skipped_not_returned(name):
    pinned = {0, 1, 2}
    p = new(name, 10, evictable=lambda k: k not in pinned)
    for i in range(10):
        p.admit(i, 1)
    for i in (0, 1, 2, 100, 100, 100):
        p.access(i)                                             # 100 is popular: TinyLFU admits it
    victims = p.admit(100, 4)
    assert len(victims) == 4 and not set(victims) & pinned and 100 in p
    victims = p.evict(3)
    assert len(victims) == 3 and not set(victims) & pinned


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_random_ops_keep_the_invariants(name):
    rng = random.Random(7)
    cap = 5000
    pinned: set[Hashable] = set()
    p = new(name, cap, evictable=lambda k: k not in pinned)
    shadow: dict[Hashable, int] = {}      # what the caller believes is stored
    for _ in range(20_000):
        op = rng.random()
        k = int(rng.paretovariate(1.0)) % 800
        if op < 0.05:
            pinned = set(rng.sample(list(shadow), min(len(shadow), rng.randrange(0, 40))))
        elif op < 0.08:
            p.remove(k)
            shadow.pop(k, None)
        elif op < 0.10:
            out = p.evict(rng.randrange(1, 800))
            assert not set(out) & pinned and all(v in shadow for v in out)
            for v in out:
                del shadow[v]
        else:
            hit = p.access(k)
            assert hit == (k in shadow)
            if not hit or rng.random() < 0.05:
                w = rng.choice((0, 1, 7, 64, 300, 1200, 4000, 6000))
                out = p.admit(k, w)
                for v in out:
                    if v != k:
                        assert v not in pinned and v in shadow
                    shadow.pop(v, None)
                if k in out:
                    assert k not in p
                else:
                    assert k in p
                    shadow[k] = w
        assert p.used <= cap
        assert p.used == sum(shadow.values()) and len(p) == len(shadow)


def test_make_policy():
    assert eviction.DEFAULT == "wtinylfu" and list(POLICIES)[0] == eviction.DEFAULT
    assert isinstance(make_policy("lru", 5), LRU)
    p = make_policy("wtinylfu", 100, window=0.2, expected_entries=10)
    assert isinstance(p, WTinyLFU) and isinstance(p, eviction.Policy)
    assert p.window_max == 20 and p.adaptive                      # the default climbs
    assert not make_policy("wtinylfu-static", 100).adaptive
    # block_size sizes the sketch of the sketch-based policies only (in entries)
    assert make_policy("wtinylfu", 64 << 20, block_size=1 << 20).admission.entries == 64
    assert make_policy("wtinylfu", 64 << 20, block_size=1 << 16).admission.entries == 1024
    assert isinstance(make_policy("lru", 5, block_size=1), LRU)
    with pytest.raises(ValueError, match="lfu, lru, wtinylfu, wtinylfu-static"):
        make_policy("arc", 5)


def test_admission_reusable_and_ages(twin):
    hot, cold, other = (1, 1), (2, 2), (3, 3)     # int tuples: the same hash in every process
    TinyLFU = twin("wtlfu").TinyLFU
    adm = TinyLFU(1024, seed=1)
    for _ in range(5):
        adm.record(hot)
    adm.record(cold)
    assert adm.frequency(hot) == 5 and adm.frequency(cold) == 1 and adm.frequency(other) == 0
    assert adm.admit(hot, cold) and not adm.admit(cold, hot) and not adm.admit(other, other)
    adm.reset()                                   # sketch 4 -> 2, doorkeeper cleared
    assert adm.frequency(hot) == 2 and adm.frequency(cold) == 0
    small = TinyLFU(16, seed=1)                   # 16 entries: ages every 5 x 16 sketch samples
    assert (small.entries, small.width, small.sample_size) == (16, 128, 80)
    for i in range(400):
        small.record(i % 40)
        assert small.frequency(i % 40) <= 16
    assert small.samples < 80
    small.ensure_capacity(16)
    assert small.entries == 16
    small.ensure_capacity(17)                     # grows to twice the need, history dropped
    assert (small.entries, small.samples, small.frequency(0)) == (34, 0, 0)
    assert TinyLFUAdmission is cext.load("wtlfu").TinyLFU


def test_policies_are_sans_io():
    root = pathlib.Path(eviction.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in {"asyncio", "socket", "time", "datetime"}, (path, n)


# --- regression: seeded Zipf and a popularity shift -------------------------------------------

@pytest.fixture(scope="module")
def zipf():
    return zipf_trace(200_000, 10_000, seed=42)


# exact hits over zipf_trace(200_000, 10_000, seed=42) at 8 MiB (about 5% of the distinct bytes).
# LRU and LFU are unchanged since they were first pinned; W-TinyLFU was re-pinned when its
# core moved to cext/wtlfu.pyx with a sketch sized per entry (8 columns x 4 rows, 64 doorkeeper
# bits, aging every 5 x entries samples) and a splitmix64 jitter (was 112647 / 109350).
# The default "wtinylfu" was re-pinned again when it gained the overdue discount and the ghost
# feedback (was 114226 / 112834): on these flat traces of 4-32 KiB objects, counted in hits,
# it gives up 1.4% and 3.1% of the hits that buy it byte miss ratio on the block-level
# traces of bench/RESULTS.md. "wtinylfu-static" (both off) is unchanged.
PINNED_ZIPF = {"wtinylfu": 112671, "wtinylfu-static": 112466, "lfu": 110918, "lru": 93348}
PINNED_CHURN = {"wtinylfu": 109316, "wtinylfu-static": 110879, "lfu": 69608, "lru": 93539}


def test_zipf_regression(zipf, capsys):
    results = {name: simulate(make_policy(name, 8 * MiB), zipf) for name in POLICIES}
    with capsys.disabled():
        print("\nzipf 0.9, 10k keys, 200k requests, 8 MiB:")
        for name, r in results.items():
            print(f"  {name:9} {r}")
    assert {n: r.hits for n, r in results.items()} == PINNED_ZIPF
    hr = {n: r.hit_ratio for n, r in results.items()}
    assert hr["wtinylfu"] > hr["lru"]
    assert hr["wtinylfu"] >= hr["lfu"] - 0.005


def test_wtinylfu_zipf_same_with_both_core_twins(zipf, twin):
    core = twin("wtlfu")
    for adaptive in (False, True):
        p = core.WTinyLFU(8 * MiB, adaptive=adaptive, climb_factor=1)
        r = simulate(p, zipf[:50_000])
        assert r.hits == simulate(WTinyLFU(8 * MiB, adaptive=adaptive, climb_factor=1), zipf[:50_000]).hits
        assert r.hits == (27158 if adaptive else 27468)


def test_popularity_shift(capsys):
    churn = (zipf_trace(100_000, 10_000, seed=1)
             + zipf_trace(100_000, 10_000, seed=2, offset=10_000))   # a new set of hot keys
    results = {name: simulate(make_policy(name, 8 * MiB), churn) for name in POLICIES}
    with capsys.disabled():
        print("\npopularity shift at 100k requests, 8 MiB:")
        for name, r in results.items():
            print(f"  {name:9} {r}")
    assert {n: r.hits for n, r in results.items()} == PINNED_CHURN
    assert results["wtinylfu"].hit_ratio > results["lfu"].hit_ratio + 0.1
