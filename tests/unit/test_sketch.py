"""The count-min sketch and doorkeeper, against both twins (compiled and pure Python)."""
from __future__ import annotations

import random

import pytest

import cext


def test_saturates_at_15(twin):
    sk = twin("sketch").CountMinSketch(1024)
    for _ in range(40):
        sk.increment(12345)
    assert sk.estimate(12345) == 15
    assert sk.samples == 15  # increments that bump no counter are not samples (as in Caffeine)


def test_width_rounds_up_and_validates(twin):
    CMS = twin("sketch").CountMinSketch
    sk = CMS(1000, 4)
    assert (sk.width, sk.depth, sk.sample_size) == (1024, 4, 10240)
    assert CMS(1).width == 1
    for bad in ((0,), (16, 0), (16, 17)):
        with pytest.raises(ValueError):
            CMS(*bad)


def test_hash_is_masked_to_uint64(twin):
    sk = twin("sketch").CountMinSketch(64)
    sk.increment(-1)
    assert sk.estimate(2**64 - 1) == 1
    sk.increment(2**64 + 5)
    assert sk.estimate(5) == 1


def test_automatic_aging_halves_at_sample_size(twin):
    # one counter per row: every key shares it, so the arithmetic is exact
    sk = twin("sketch").CountMinSketch(1, 4)
    assert sk.sample_size == 10
    for _ in range(9):
        sk.increment(7)
    assert (sk.estimate(7), sk.samples) == (9, 9)
    sk.increment(7)               # 10th sample: every counter 10 -> 5, samples (10 - 0//4) // 2
    assert (sk.estimate(7), sk.samples) == (5, 5)


def test_reset_halves_and_corrects_samples(twin):
    sk = twin("sketch").CountMinSketch(1, 4)
    for _ in range(9):
        sk.increment(7)
    sk.reset()                    # 9 -> 4; four odd counters: samples (9 - 4//4) // 2 = 4
    assert (sk.estimate(7), sk.samples) == (4, 4)


def test_aging_halves_every_counter(twin):
    sk = twin("sketch").CountMinSketch(4096)
    keys = list(range(1000, 1200))
    for i, k in enumerate(keys):
        for _ in range(i % 15 + 1):
            sk.increment(k)
    before = [sk.estimate(k) for k in keys]
    sk.reset()
    assert [sk.estimate(k) for k in keys] == [b // 2 for b in before]


def test_estimate_never_undercounts(twin):
    sk = twin("sketch").CountMinSketch(1024)  # some collisions; sample_size 10240 not reached
    rng = random.Random(5)
    true: dict[int, int] = {}
    for _ in range(2000):
        k = hash((1, rng.randrange(600)))
        if true.get(k, 0) < 14:
            true[k] = true.get(k, 0) + 1
            sk.increment(k)
    assert 1900 < sk.samples <= 2000   # an increment whose counters all saturated is no sample
    assert all(sk.estimate(k) >= n for k, n in true.items())
    exact = sum(sk.estimate(k) == n for k, n in true.items())
    assert exact > len(true) // 2   # and it is mostly exact


def test_seed_changes_the_hash_functions(twin):
    mod = twin("sketch")
    a, b = mod.CountMinSketch(16, seed=1), mod.CountMinSketch(16, seed=2)
    for k in range(40):
        a.increment(k)
        b.increment(k)
    assert [a.estimate(k) for k in range(200)] != [b.estimate(k) for k in range(200)]


def test_doorkeeper(twin):
    dk = twin("sketch").Doorkeeper(1 << 16)
    assert dk.bits == 1 << 16
    inserted = [hash((2, i)) for i in range(4096)]      # 16 bits per key, 4 probes
    assert sum(dk.put(h) for h in inserted) < 20              # first puts: (almost) never present
    assert all(h in dk for h in inserted)                     # no false negatives
    assert all(dk.put(h) for h in inserted)
    probes = [hash((3, i)) for i in range(50_000)]
    fp = sum(h in dk for h in probes) / len(probes)
    assert fp < 0.01                                          # theory: (1 - e^(-4/16))^4 = 0.24%
    dk.clear()
    assert not any(h in dk for h in inserted)
    assert twin("sketch").Doorkeeper(1).bits == 64


@pytest.mark.skipif(cext.NO_EXTENSIONS, reason="compiled extensions disabled")
def test_twins_agree_bit_for_bit():
    c, py = cext.load("sketch", pure=False), cext.load("sketch", pure=True)
    rng = random.Random(2024)
    for width, depth, seed in ((1, 1, 0), (16, 4, 3), (64, 4, -9), (1000, 3, 2**70)):
        sc = c.CountMinSketch(width, depth, seed=seed)
        sp = py.CountMinSketch(width, depth, seed=seed)
        dc, dp = c.Doorkeeper(width * 8, seed=seed), py.Doorkeeper(width * 8, seed=seed)
        assert (sc.width, sc.depth, sc.sample_size) == (sp.width, sp.depth, sp.sample_size)
        for step in range(6000):
            r = rng.randrange(500)
            h = rng.choice((hash((4, r)), rng.getrandbits(64), -rng.getrandbits(63)))
            assert dc.put(h) == dp.put(h)
            sc.increment(h)
            sp.increment(h)
            assert sc.samples == sp.samples
            if step % 97 == 0:
                assert sc.estimate(h) == sp.estimate(h)
                assert (h + 1 in dc) == (h + 1 in dp)
            if step == 3000:
                sc.reset()
                sp.reset()
                dc.clear()
                dp.clear()
        probe = [hash((4, i)) for i in range(500)]
        assert [sc.estimate(h) for h in probe] == [sp.estimate(h) for h in probe]


def test_sample_size_can_be_set(twin):
    CMS = twin("sketch").CountMinSketch
    sk = CMS(64, 4, sample_size=3)
    assert (sk.width, sk.sample_size) == (64, 3)
    for _ in range(3):
        sk.increment(9)           # the 3rd sample ages: 3 -> 1, samples (3 - 4 // 4) // 2 = 1
    assert (sk.estimate(9), sk.samples) == (1, 1)
    with pytest.raises(ValueError):
        CMS(64, sample_size=0)
