"""SharedStorage: several workers' storages over one shared region, in one process and one event
loop (each attached as its own worker id, with its own wake-up socket), against a fake origin."""
from __future__ import annotations

import asyncio

import pytest

from edge.cache import FillError, SharedArena, SharedStorage
from edge.cache import shared as shared_mod
from tests.unit.test_storage import BS, DATA, FakeOrigin, read_all

KiB = 1024


@pytest.fixture
def region(twin, tmp_path):
    """``factory(objects, size=..., workers=2, names=("",), **storage_kw)`` -> (supervisor
    handle, origin, [storage per worker]); with several names, one storage per (worker, name)
    and origins per name."""
    shm = twin("shm")
    path = str(tmp_path / "region")
    arenas: list[SharedArena] = []
    sups = []

    def factory(objects, size=16 * BS, workers=2, **kw):
        sup = shm.SharedCache.create(path, size, BS, min_chunk=1024, max_workers=4)
        sups.append(sup)
        origin = FakeOrigin(objects)
        stores = []
        for w in range(workers):
            arena = SharedArena(shm.SharedCache.attach(path, w))
            arenas.append(arena)
            stores.append(SharedStorage(arena, origin, block_size=BS, **kw))
        return sup, origin, stores

    factory.shm = shm
    factory.path = path
    factory.arenas = arenas
    yield factory
    for a in arenas:
        a.close()
    for s in sups:
        s.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 15))


def test_a_block_filled_by_one_worker_is_a_hit_for_another(region):
    sup, origin, (w0, w1) = region({"k": DATA})

    async def main():
        assert await read_all(w0, "k") == DATA
        await w0.settle()
        reads = len(origin.reads)
        assert reads == 6
        assert await read_all(w1, "k") == DATA
        assert await read_all(w1, "k", 100, 3 * BS + 7) == DATA[100:3 * BS + 7]
        assert len(origin.reads) == reads            # no second origin read
        assert w1.counters.fills == 0 and w1.counters.block_hits >= 6
        meta = w1.meta_cached("k")
        assert w1.is_cached(meta, 0, len(DATA)) is True
        a, b = w1.pin_ready(meta, 5), w1.pin_ready(meta, 5)   # the fast path's call
        assert a is b and a.refs == 2 and bytes(w1.view(a, 0, 5)) == DATA[5 * BS:]
        w1.release(a)
        w1.release(b)

    run(main())
    c = sup.check()
    assert (c["ready"], c["pinned_chunks"], c["filling"]) == (6, 0, 0)


def test_single_flight_across_workers_streams_and_wakes_by_datagram(region, monkeypatch):
    monkeypatch.setattr(shared_mod, "RECHECK", 30.0)   # no re-check timer: only wake-ups
    sup, origin, (w0, w1) = region({"k": DATA})
    wakes = []
    arena1 = region.arenas[1]
    orig = arena1._on_wake
    monkeypatch.setattr(arena1, "_on_wake", lambda: (wakes.append(1), orig()))

    async def main():
        origin.gate = asyncio.Event()
        t0 = asyncio.create_task(read_all(w0, "k", 0, BS))
        while sup.info(w0.meta_cached("k").oid if w0.meta_cached("k") else b"\0" * 16, 0) is None:
            await asyncio.sleep(0.005)
        t1 = asyncio.create_task(read_all(w1, "k", 0, BS))
        await asyncio.sleep(0.05)
        assert w1.counters.waiting == 1              # joined worker 0's fill, waiting
        for _ in range(3):                           # let chunks land one round at a time
            origin.gate.set()
            await asyncio.sleep(0)
            origin.gate.clear()
            await asyncio.sleep(0.02)
        origin.gate.set()
        assert await t0 == DATA[:BS] and await t1 == DATA[:BS]

    run(main())
    assert [r for r in origin.reads if r[1] == 0] == [("k", 0, BS)]   # one origin read
    assert w1.counters.fills == 0 and len(wakes) >= 2
    assert sup.check()["pinned_chunks"] == 0


def test_a_reader_that_sees_ready_wakes_the_readers_waiting_here(region, monkeypatch):
    """Worker 1 has a reader waiting on worker 0's fill; a second reader of worker 1 that
    finds the block READY first must wake it (regression: it hung when no wake-up came)."""
    monkeypatch.setattr(shared_mod, "RECHECK", 30.0)
    sup, origin, (w0, w1) = region({"k": DATA})
    monkeypatch.setattr(region.arenas[1], "_on_wake", region.arenas[1].handle.drain_wakeups)

    async def main():
        meta0, meta1 = await w0.meta("k"), await w1.meta("k")
        origin.gate = asyncio.Event()
        own = w0.pin(meta0, 0)                       # worker 0 fills block 0
        joined = w1.pin(meta1, 0)                    # worker 1 joins that fill
        assert not joined.local and not joined.ready
        waiter = asyncio.create_task(w1.wait(joined, BS))
        await asyncio.sleep(0.02)
        origin.gate.set()
        await w0.settle()
        second = w1.pin(meta1, 0)                    # sees READY: wakes the waiter
        await asyncio.wait_for(waiter, 5)
        assert second is joined and joined.ready
        for st, b in ((w0, own), (w1, joined), (w1, second)):
            st.release(b)

    run(main())
    assert sup.check()["pinned_chunks"] == 0

@pytest.mark.parametrize("mode", ["fail", "short", "long", "mismatch"])
def test_a_failed_fill_is_never_a_hit_and_fails_the_other_worker(region, monkeypatch, mode):
    sup, origin, (w0, w1) = region({"k": DATA})

    async def main():
        await w0.meta("k")
        await w1.meta("k")
        origin.gate = asyncio.Event()
        if mode == "fail":
            origin.fail_after = 20 * KiB
        else:
            origin.mangle = mode
        t0 = asyncio.create_task(read_all(w0, "k", 0, BS))
        await asyncio.sleep(0.02)
        t1 = asyncio.create_task(read_all(w1, "k", 0, BS))
        await asyncio.sleep(0.05)
        origin.gate.set()
        for t in (t0, t1):
            with pytest.raises(FillError):
                await t
        await w0.settle()
        meta = w1.meta_cached("k") or await w1.meta("k")
        assert w0.pin_ready(meta, 0) is None and w1.pin_ready(meta, 0) is None
        if mode != "mismatch":                      # (a mismatch fails before any wait)
            assert w1.counters.fills == 0           # it never filled: it joined and failed
        origin.gate = None
        origin.fail_after = origin.mangle = None
        w0.forget("k")
        w1.forget("k")
        assert await read_all(w1, "k") == DATA       # a later fill is clean

    run(main())
    c = sup.check()
    assert (c["filling"], c["pinned_chunks"], c["deferred"]) == (0, 0, 0)


def test_eviction_under_pressure_never_frees_a_pinned_block(region):
    objects = {f"o{i}": bytes([i]) * (2 * BS) for i in range(12)}
    sup, origin, (w0, w1) = region(objects, size=8 * BS)

    async def main():
        meta = await w0.meta("o0")
        held = w0.pin(meta, 0)
        await w0.wait(held, BS)
        other = w1.pin(await w1.meta("o0"), 1)
        await w1.wait(other, BS)
        for rnd in range(3):
            for i in range(1, 12):
                st = (w0, w1)[(i + rnd) % 2]
                assert await read_all(st, f"o{i}") == objects[f"o{i}"]
                stats = sup.stats()
                assert stats["used_bytes"] <= 8 * BS
        assert bytes(w0.view(held, 0, BS)) == objects["o0"][:BS]
        assert bytes(w1.view(other, 0, BS)) == objects["o0"][BS:]
        w0.release(held)
        w1.release(other)
        await w0.settle()
        await w1.settle()

    run(main())
    st = sup.stats()
    assert st["evictions"] > 0 and st["evict_busy"] >= 0
    c = sup.check()
    assert (c["pinned_chunks"], c["deferred"], c["filling"]) == (0, 0, 0)


def test_purge_removes_pinned_blocks_safely(region):
    sup, origin, (w0, w1) = region({"k": DATA})

    async def main():
        assert await read_all(w0, "k") == DATA
        meta1 = await w1.meta("k")
        held = w1.pin_ready(meta1, 0)
        assert held is not None
        assert w0.purge("k") == 6                     # every block, the pinned one too
        assert w1.pin_ready(meta1, 0) is None         # gone for new readers at once
        assert bytes(w1.view(held, 0, BS)) == DATA[:BS]   # the reader keeps its bytes
        assert sup.check()["deferred"] == 1
        w1.release(held)
        assert sup.check()["used_bytes"] == 0
        w1.forget("k")
        reads = len(origin.reads)
        assert await read_all(w1, "k") == DATA
        assert len(origin.reads) == reads + 6          # asked afresh

    run(main())


def test_two_tenants_same_key_are_distinct(region):
    sup, origin, (w0,) = region({}, workers=1)
    arena = region.arenas[0]
    a_origin = FakeOrigin({"k": b"A" * (BS + 10)})
    b_origin = FakeOrigin({"k": b"B" * (BS + 10)})
    ta = SharedStorage(arena, a_origin, block_size=BS, name="a", capacity=8 * BS, shared_with=w0)
    tb = SharedStorage(arena, b_origin, block_size=BS, name="b", capacity=8 * BS, shared_with=w0)

    async def main():
        assert await read_all(ta, "k") == b"A" * (BS + 10)
        assert await read_all(tb, "k") == b"B" * (BS + 10)
        assert await read_all(ta, "k") == b"A" * (BS + 10)
        assert ta.meta_cached("k").oid != tb.meta_cached("k").oid
        assert len(a_origin.reads) == len(b_origin.reads) == 2

    run(main())
    assert sup.check()["ready"] == 4


def test_the_sweep_reclaims_blocks_no_policy_tracks(region):
    objects = {f"o{i}": bytes([i]) * BS for i in range(16)}
    objects.update({f"x{i}": bytes([100 + i]) * BS for i in range(8)})
    sup, origin, (w0, w1) = region(objects, size=8 * BS)

    async def main():
        for i in range(8):                           # worker 1 fills the whole arena...
            assert await read_all(w1, f"x{i}") == objects[f"x{i}"]
        await w1.settle()
        return [w1.meta_cached(f"x{i}").oid for i in range(8)]

    orphans = run(main())
    region.arenas[1].close()                         # ... and dies: its policy is gone
    assert sup.check()["used_bytes"] == 8 * BS

    async def again():
        # worker 0's policy knows none of those: its own victims go first, and every
        # SWEEP_EVERY-th eviction round the clock sweep takes what nobody ranks
        for rnd in range(40):
            for i in range(16):
                assert await read_all(w0, f"o{i}") == objects[f"o{i}"]
            await w0.settle()
            if not [o for o in orphans if sup.info(o, 0) is not None]:
                return rnd
        return None

    rounds = run(again())
    assert rounds is not None                        # none leaked: reclaimed in bounded time
    assert sup.stats()["swept"] >= 1 and w0.counters.alloc_failures == 0   # never short of memory
    c = sup.check()
    assert c["ready"] == 8 and c["pinned_chunks"] == 0


@pytest.mark.parametrize("landed", [2, 4])
def test_a_dead_fillers_readers_elect_one_of_them_to_finish(region, monkeypatch, landed):
    """Worker 0 dies while filling a block that workers 1 and 2 read: exactly one of them
    takes the fill over from the byte where it stopped (one more origin read, of the rest
    only), and both readers complete with the right bytes. ``landed``: 16 KiB chunks that
    landed before the death (4: all of them, only the verification was missing)."""
    sup, origin, (w0, w1, w2) = region({"k": DATA}, workers=3)

    async def main():
        metas = [await w.meta("k") for w in (w0, w1, w2)]
        origin.gate = asyncio.Event()
        t0 = asyncio.create_task(read_all(w0, "k", 0, BS))
        while sup.info(metas[0].oid, 0) is None:
            await asyncio.sleep(0.005)
        if landed == 4:                              # every byte lands, then it dies unverified
            monkeypatch.setattr(w0, "_complete", lambda block, checksum: None)
        for _ in range(landed):                      # some chunks land, one at a time
            origin.gate.set()
            await asyncio.sleep(0)
            origin.gate.clear()
            await asyncio.sleep(0.01)
        t1 = asyncio.create_task(read_all(w1, "k", 0, BS))
        t2 = asyncio.create_task(read_all(w2, "k", 0, BS))
        await asyncio.sleep(0.05)
        assert w1.counters.waiting == w2.counters.waiting == 1
        assert sup.info(metas[0].oid, 0)["filled"] == landed * 16 * KiB
        # worker 0 dies: the supervisor recovers it; its tasks never run again
        assert sup.recover_worker(0)["orphaned"] == 1
        t0.cancel()
        for t in list(w0._tasks):
            t.cancel()
        origin.gate.set()
        assert await t1 == DATA[:BS] and await t2 == DATA[:BS]
        await w1.settle()
        await w2.settle()

    run(main())
    block0 = [r for r in origin.reads if r[1] < BS]
    if landed == 4:
        assert block0 == [("k", 0, BS)]              # nothing left to read: verified, done
    else:
        assert block0 == [("k", 0, BS), ("k", landed * 16 * KiB, BS)]   # the rest, once
    took = [w.counters.extra.get("fills_taken_over", 0) for w in (w1, w2)]
    assert sorted(took) == [0, 1] and sup.stats()["fills_taken_over"] == 1
    meta = w1.meta_cached("k")
    b = w2.pin_ready(meta, 0)                        # a verified hit from now on
    assert b is not None and bytes(w2.view(b, 0, BS)) == DATA[:BS]
    w2.release(b)
    c = sup.check()
    assert (c["filling"], c["pinned_chunks"], c["deferred"], c["ready"]) == (0, 0, 0, 1)


def test_an_orphan_nobody_reads_is_dropped_and_refilled(region):
    """Worker 0 dies filling a block nobody else reads: the fill is dropped (as before) and
    the next reader anywhere fills the block afresh."""
    sup, origin, (w0, w1) = region({"k": DATA})

    async def main():
        await w0.meta("k")
        origin.gate = asyncio.Event()
        t0 = asyncio.create_task(read_all(w0, "k", 0, BS))
        while sup.info(w0.meta_cached("k").oid, 0) is None:
            await asyncio.sleep(0.005)
        assert sup.recover_worker(0) == {"chunks": 1, "fills": 1, "orphaned": 0}
        t0.cancel()
        for t in list(w0._tasks):
            t.cancel()
        origin.gate.set()
        assert await read_all(w1, "k", 0, BS) == DATA[:BS]
        await w1.settle()

    run(main())
    assert w1.counters.fills == 1 and sup.stats()["fills_taken_over"] == 0
    assert sup.check()["filling"] == 0
