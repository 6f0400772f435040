"""The live miss-ratio curve (edge/livemrc.py): the offline sampling, exact totals, accuracy."""
from __future__ import annotations

import pytest

from edge.livemrc import LiveMRC
from eviction import mrc, sim, synth
from eviction.shards import GOLDEN, M64, mix64
from eviction.traces import to_blocks

MiB = 1 << 20


def feed(m: LiveMRC, t, now: list[float], tenant: str = "") -> None:
    for i in range(len(t)):
        now[0] = float(t.time[i])
        m.account(tenant, t.name(int(t.obj[i])), int(t.start[i]), int(t.end[i]) - 1, int(t.size[i]))


def test_samples_the_blocks_edge_mrc_samples():
    assert mix64((mrc.key_hash("videos/a.mp4") + 0 * GOLDEN) & M64) == mrc.block_hash("videos/a.mp4", 0)
    t = synth.generate("cdn", 20_000, seed=3)
    bt = to_blocks(t, MiB)
    now = [0.0]
    m = LiveMRC("lru", 64 * MiB, MiB, 0.1, clock=lambda: now[0])
    seen = []
    m.replay = lambda: (seen.extend(b for b, _, _ in m.pending), m.pending.clear())  # type: ignore
    feed(m, t, now)
    m.replay()
    mask = mrc.sample_mask(mrc.block_hashes(t, bt), 0.1)
    expected = [(t.name(int(o)), int(ix)) for o, ix in zip(bt.obj[mask], bt.index[mask], strict=True)]
    assert [(k, ix) for _, k, ix in seen] == expected
    assert m.accesses == len(bt.key) and m.bytes == int(bt.weight.sum())


def test_the_live_curve_follows_exact_simulation():
    t = synth.generate("cdn", 120_000, seed=6)
    bt = to_blocks(t, MiB)
    cache = int(bt.footprint * 0.05) // MiB * MiB
    now = [0.0]
    m = LiveMRC("wtinylfu", cache, MiB, 0.1, clock=lambda: now[0])
    feed(m, t, now)
    rep = m.report()
    assert rep["configured_size"] == cache and len(rep["points"]) == 9
    assert rep["points"][4]["cache_size"] == cache
    assert rep["seconds"] == pytest.approx(bt.duration, rel=0.01)
    for p in rep["points"][2::2]:                  # 1/4, 1, 4 and 16 times the cache
        r = sim.run("wtinylfu", bt, p["cache_size"])
        assert abs(p["byte_hit_ratio"] - (1 - r.byte_miss_ratio)) < 0.03, p
        assert abs(p["hit_ratio"] - (1 - r.miss_ratio)) < 0.04, p
        per_day = r.bytes_missed * 86400 / bt.duration
        assert abs(p["origin_bytes_per_day"] / per_day - 1) < 0.05, p
    m.reset()
    assert m.report()["block_accesses"] == 0


def test_tenants_are_sampled_apart_and_bad_rates_refused():
    m = LiveMRC("lru", 16 * MiB, MiB, 1.0)
    m.account("acme", "k", 0, 99, 100)
    m.account("globex", "k", 0, 99, 100)
    m.account("acme", "k", 0, 99, 100)
    assert m.report()["points"][-1]["hit_ratio"] == pytest.approx(1 / 3)    # two objects, one reuse
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError):
            LiveMRC("lru", 16 * MiB, MiB, bad)


def test_block0_accounting_is_account_of_a_small_whole_object():
    """What the hit lane calls for a body within block 0 counts and samples as account()."""
    a = LiveMRC("wtinylfu", 64 << 20, 1 << 20, 0.5, clock=lambda: 7.0)
    b = LiveMRC("wtinylfu", 64 << 20, 1 << 20, 0.5, clock=lambda: 7.0)
    sampled = 0
    for i in range(400):
        tenant, key, size = ("t" if i % 3 else ""), f"k{i % 97}", 1 + i * 37 % 8192
        a.account(tenant, key, 0, size - 1, size)
        s0 = b.block0(tenant, key)
        sampled += s0
        b.account_block0(tenant, key, size, s0)
    assert 0 < sampled < 400
    assert (a.accesses, a.bytes, a.pending) == (b.accesses, b.bytes, b.pending)
