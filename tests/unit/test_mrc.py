"""SHARDS sampling and miniature simulations: determinism, scaling, accuracy against exact runs."""
from __future__ import annotations

import numpy as np
import pytest

from eviction import mrc, synth
from eviction.traces import to_blocks

MiB = 1 << 20


def test_block_hash_is_stable_and_sampling_is_by_block():
    # pinned: the server must sample its live traffic with the very same function
    assert mrc.key_hash("videos/a.mp4") == __import__("xxhash").xxh64_intdigest(b"videos/a.mp4")
    assert mrc.block_hash("videos/a.mp4", 0) == 0x55C0AF695B922A51
    assert mrc.block_hash("k", 3) == mrc.block_hash("k", 3) != mrc.block_hash("k", 4)
    t = synth.generate("zipf", 20_000, seed=4)
    bt = to_blocks(t, MiB)
    h = mrc.block_hashes(t, bt)
    assert h[0] == np.uint64(mrc.block_hash(t.name(int(bt.obj[0])), int(bt.index[0])))
    m = mrc.sample_mask(h, 0.1)
    assert 0.06 < m.mean() < 0.14
    # a block is always in or always out
    inside = set(bt.key[m].tolist())
    assert not inside & set(bt.key[~m].tolist())
    assert mrc.threshold(1.0) == 1 << 24
    with pytest.raises(ValueError):
        mrc.threshold(0)


def test_auto_rate_and_sizes():
    assert mrc.auto_rate(10_000_000, 0.01) == 0.01
    assert mrc.auto_rate(1_000_000, 0.01) == 0.1
    assert mrc.auto_rate(50_000, 0.01) == 1.0
    sizes = mrc.default_sizes(1000 * MiB, 8)
    assert sizes[0] == MiB and sizes[-1] == 1000 * MiB and sizes == sorted(sizes)


def test_shards_matches_exact_simulation():
    t = synth.generate("cdn", 120_000, seed=6)
    bt = to_blocks(t, MiB)
    sizes = [int(bt.footprint * s) for s in (0.02, 0.05, 0.1, 0.3)]
    exact = mrc.curve(t, bt, policy="wtinylfu", sizes=sizes, rate=1.0)
    approx = mrc.curve(t, bt, policy="wtinylfu", sizes=sizes, rate=0.1)
    assert approx.sampled_accesses < 0.2 * exact.sampled_accesses
    assert 0.05 < approx.scale < 0.15
    for e, a in zip(exact.points, approx.points, strict=True):
        assert abs(e.hit_ratio - a.hit_ratio) < 0.02, (e, a)
        assert abs(e.byte_hit_ratio - a.byte_hit_ratio) < 0.02, (e, a)
        assert abs(a.origin_bytes / e.origin_bytes - 1) < 0.06
    # the exact curve is the simulator's number
    from eviction import sim
    r = sim.run("wtinylfu", bt, sizes[1])
    assert exact.points[1].byte_hit_ratio == pytest.approx(1 - r.byte_miss_ratio)
    assert exact.points[1].origin_bytes_per_day == pytest.approx(
        r.bytes_missed * 86400 / bt.duration)


def test_offer_samples_by_hash():
    m = mrc.ShardsMRC("lru", [10 * MiB, 20 * MiB], 0.5, block_size=MiB)
    out_hash = (1 << 64) - 1                              # top bits all ones: never sampled
    m.offer(out_hash, "a", MiB, now=1.0)
    assert m.accesses == 0
    for i in range(40):
        m.offer(0, i % 15, MiB, now=float(i))             # hash 0: always sampled
    pts = m.points()
    assert m.accesses == 40 and len(pts) == 2
    # 20 MiB x 0.5 = 10 blocks hold... nothing repeats within 10: 15 distinct in rotation
    assert pts[0].hit_ratio == 0 and not pts[0].reliable
    assert pts[1].origin_bytes_per_day == pytest.approx(pts[1].origin_bytes * 86400 / 39)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    t = synth.generate("zipf", 5000, seed=1)
    bt = to_blocks(t, MiB)
    c = mrc.curve(t, bt, policy="lru", sizes=mrc.default_sizes(bt.footprint, 5), rate=1.0)
    path = tmp_path / "m.png"
    mrc.plot(c, str(path), marker=bt.footprint // 10)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
