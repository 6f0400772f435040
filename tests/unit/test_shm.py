"""The shared cache (cext/shm.pyx and its twin cext/_shm_py.py): one arena and one index for
every worker process. Single-process semantics, then real processes (os.fork): concurrent
fills, lookups, pins and evictions with every byte verified; SIGKILL at random instants and
while holding the mutex; cross-process wake-ups."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import select
import signal
import time
import zlib

import pytest

import cext

KIB = 1024
PAGE = 64 * KIB
GONE, FILLING, READY, ORPHANED = 0, 1, 2, 3


@pytest.fixture
def shm(twin):
    return twin("shm")


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "arena")


@pytest.fixture
def sup(shm, path):
    s = shm.SharedCache.create(path, 16 * PAGE, PAGE, max_workers=8, index_capacity=256)
    yield s
    s.close()


def oid_of(n: int) -> bytes:
    return hashlib.blake2b(b"%d" % n, digest_size=16).digest()


def pattern(oid: bytes, idx: int, length: int) -> bytes:
    seed = hashlib.sha256(oid + idx.to_bytes(4, "little")).digest()
    return (seed * (length // 32 + 1))[:length]


def fill(w, oid, idx, data, *, pieces=1, finish=True):
    """begin_fill + write + advance + finish; returns the offset (still pinned once)."""
    off = w.begin_fill(oid, idx, len(data))
    assert isinstance(off, int) and off >= 0, off
    v = w.view(off, len(data))
    step = -(-len(data) // pieces)
    for a in range(0, len(data), step):
        v[a:a + step] = data[a:a + step]
        assert w.advance_fill(off, min(a + step, len(data)))
    v.release()
    if finish:
        assert w.finish_fill(off, zlib.crc32(data))
    return off


# -- single process ----------------------------------------------------------------------------


def test_fill_hit_pin_evict(sup, path, shm):
    w = shm.SharedCache.attach(path, 0)
    oid = oid_of(1)
    assert w.lookup_pin(oid, 0) is None
    data = pattern(oid, 0, 5000)
    off = fill(w, oid, 0, data)
    assert w.begin_fill(oid, 0, 5000) is None          # already indexed
    off2, length, state, filled, gen = w.lookup_pin(oid, 0)
    assert (off2, length, state, filled) == (off, 5000, READY, 5000)
    assert w.pins(off) == 2
    assert bytes(w.view(off, length)) == data
    assert w.info(oid, 0)["checksum"] == zlib.crc32(data)
    assert w.info(oid, 0)["pinned_by"] == [0]
    assert sup.evict(oid, 0) is False                   # pinned: busy
    assert w.unpin(off) == 1 and w.unpin(off) == 0
    with pytest.raises(ValueError, match="not pinned"):
        w.unpin(off)
    assert sup.check()["ready"] == 1
    assert sup.evict(oid, 0, gen + 1) is None           # another generation: not that one
    assert sup.evict(oid, 0, gen) is True
    assert sup.evict(oid, 0) is None                    # not indexed
    assert w.lookup_pin(oid, 0) is None
    st = sup.stats()
    assert (st["used_bytes"], st["entries"], st["evictions"], st["evict_busy"]) == (0, 0, 1, 1)
    assert sup.check() == {"entries": 0, "filling": 0, "ready": 0, "deferred": 0,
                           "pinned_chunks": 0, "used_bytes": 0}
    w.close()


def test_single_flight_and_streaming(sup, path, shm):
    a = shm.SharedCache.attach(path, 0)
    b = shm.SharedCache.attach(path, 1)
    oid = oid_of(2)
    data = pattern(oid, 3, 40000)
    off = a.begin_fill(oid, 3, len(data))
    assert b.begin_fill(oid, 3, len(data)) is None      # single flight across workers
    boff, length, state, filled, gen = b.lookup_pin(oid, 3)
    assert (boff, length, state, filled) == (off, 40000, FILLING, 0)
    assert a.fill_gen(off) == gen
    with pytest.raises(ValueError, match="not a fill of worker 1"):
        b.fill_gen(off)
    assert a.info(oid, 3)["owner"] == 0
    a.view(off, 10000)[:] = data[:10000]
    a.advance_fill(off, 10000)
    assert b.status(oid, 3, gen) == (FILLING, 10000)
    assert bytes(b.view(boff, 10000)) == data[:10000]
    with pytest.raises(ValueError, match="out of range"):
        a.advance_fill(off, 5000)                         # never backwards
    with pytest.raises(ValueError, match="filled 10000 of 40000"):
        a.finish_fill(off, 0)                             # never a partial block
    with pytest.raises(ValueError, match="not a fill of worker 1"):
        b.advance_fill(off, 20000)                        # only the owner fills
    a.view(off, 40000)[10000:] = data[10000:]
    a.advance_fill(off, 40000)
    assert a.finish_fill(off, 7)
    assert b.status(oid, 3, gen) == (READY, 40000)
    assert bytes(b.view(boff, length)) == data
    a.unpin(off)
    b.unpin(boff)
    sup.check()
    a.close()
    b.close()


def test_fail_fill_is_never_a_hit_and_frees_at_last_unpin(sup, path, shm):
    a = shm.SharedCache.attach(path, 0)
    b = shm.SharedCache.attach(path, 1)
    oid = oid_of(3)
    off = a.begin_fill(oid, 0, PAGE)
    _, _, state, _, gen = b.lookup_pin(oid, 0)
    assert state == FILLING
    a.advance_fill(off, 100)
    a.fail_fill(off)
    assert b.status(oid, 0, gen) == (GONE, 0)
    assert a.lookup_pin(oid, 0) is None and b.lookup_pin(oid, 0) is None
    a.unpin(off)
    c = sup.check()
    assert (c["entries"], c["deferred"], c["used_bytes"]) == (0, 1, PAGE)  # b still reads it
    assert not a.begin_fill(oid_of(4), 0, PAGE) == off    # a pinned chunk is never reused
    b.unpin(off)
    st = sup.stats()
    assert (st["fills_failed"], st["deferred_frees"], st["used_bytes"]) == (1, 1, PAGE)
    a.close()   # drops a's unfinished fill of oid 4
    assert sup.check()["used_bytes"] == 0
    b.close()


def test_remove_frees_now_or_at_last_unpin(sup, path, shm):
    a = shm.SharedCache.attach(path, 0)
    b = shm.SharedCache.attach(path, 1)
    free = fill(a, oid_of(30), 0, pattern(oid_of(30), 0, 5000))
    a.unpin(free)
    assert sup.remove(oid_of(30), 0) and not sup.remove(oid_of(30), 0)
    assert sup.check()["used_bytes"] == 0                  # nobody pinned it: freed now
    held = fill(a, oid_of(31), 0, pattern(oid_of(31), 0, PAGE))
    assert b.lookup_pin(oid_of(31), 0)[0] == held
    assert sup.stats()["pinned_chunks"] == 1
    assert a.remove(oid_of(31), 0)                         # pinned by both: deferred
    assert a.lookup_pin(oid_of(31), 0) is None
    c = sup.check()
    assert (c["entries"], c["deferred"], c["used_bytes"]) == (0, 1, PAGE)
    assert bytes(b.view(held, PAGE)) == pattern(oid_of(31), 0, PAGE)  # readers keep their bytes
    a.unpin(held)
    assert sup.check()["deferred"] == 1
    b.unpin(held)                                           # the last unpin frees it
    assert sup.check()["used_bytes"] == 0
    # a FILLING entry: its watchers are woken and see GONE, its owner finds it gone
    off = a.begin_fill(oid_of(32), 0, 3000)
    gen = b.lookup_pin(oid_of(32), 0)[4]
    assert b.watch(oid_of(32), 0, gen) == (FILLING, 0)
    assert sup.remove(oid_of(32), 0)
    assert select.select([b.wake_fd], [], [], 2)[0] and b.drain_wakeups() == 1
    assert b.status(oid_of(32), 0, gen) == (GONE, 0)
    a.view(off, 3000)[:] = b"q" * 3000
    assert not a.advance_fill(off, 3000)
    assert not a.finish_fill(off, 1)                        # (and the fill is forgotten)
    a.unpin(off)
    b.unpin(off)
    st = sup.stats()
    assert (st["removed"], st["pinned_chunks"], st["used_bytes"]) == (3, 0, 0)
    assert sup.check()["entries"] == 0
    a.close()
    b.close()


def test_evict_sweep_reclaims_unpinned_ready_blocks(sup, path, shm):
    w = shm.SharedCache.attach(path, 0)
    offs = [fill(w, oid_of(40), i, pattern(oid_of(40), i, PAGE)) for i in range(16)]
    assert w.begin_fill(oid_of(41), 0, PAGE) == -1          # full, and nobody tracks them
    for o in offs[:12]:
        w.unpin(o)                                          # 12..15 stay pinned
    filling = None
    got = sup.evict_sweep(256, PAGE)                        # one page is enough
    assert len(got) == 1 and got[0][0] == oid_of(40)
    filling = w.begin_fill(oid_of(41), 0, PAGE)
    assert filling >= 0
    got2 = sup.evict_sweep(256, 3 * PAGE)                   # the hand moves on
    assert len(got2) == 3 and not set(got) & set(got2)
    rest = sup.evict_sweep(4)                               # bounded by max_probe
    assert len(rest) <= 4
    everything = sup.evict_sweep(10 ** 6, 1 << 40)          # never a pinned or filling block
    left = {i for i in range(16) if w.info(oid_of(40), i) is not None}
    assert left == {12, 13, 14, 15}
    assert w.info(oid_of(41), 0)["state"] == FILLING
    assert len(got) + len(got2) + len(rest) + len(everything) == 12
    st = sup.stats()
    assert st["swept"] == 12 and st["evictions"] == 12
    assert sup.evict_sweep(0) == []
    with pytest.raises(ValueError):
        sup.evict_sweep(-1)
    w.fail_fill(filling)
    w.close()
    assert sup.check() == {"entries": 4, "filling": 0, "ready": 4, "deferred": 0,
                           "pinned_chunks": 0, "used_bytes": 4 * PAGE}


def test_a_dead_owners_fill_is_taken_over_by_one_reader(sup, path, shm):
    """Re-election: the owner of a fill dies (recover_worker) while two other workers read
    it; the fill stays with what landed, exactly one reader takes it over and finishes it,
    the other keeps reading; the dead owner (were it a zombie) can no longer touch it."""
    w0, w1, w2 = (shm.SharedCache.attach(path, i) for i in range(3))
    oid = oid_of(60)
    data = pattern(oid, 0, 40000)
    off = w0.begin_fill(oid, 0, len(data))
    w0.view(off, 10000)[:] = data[:10000]
    assert w0.advance_fill(off, 10000)
    r1, r2 = w1.lookup_pin(oid, 0), w2.lookup_pin(oid, 0)
    gen = r1[4]
    assert r1[2:4] == r2[2:4] == (FILLING, 10000)
    assert w2.watch(oid, 0, gen) == (FILLING, 10000)
    assert sup.recover_worker(0) == {"chunks": 1, "fills": 0, "orphaned": 1}
    assert select.select([w2.wake_fd], [], [], 2)[0] and w2.drain_wakeups() == 1
    assert w1.status(oid, 0, gen) == w2.watch(oid, 0, gen) == (ORPHANED, 10000)
    assert w1.lookup_pin(oid, 0)[2] == ORPHANED
    w1.unpin(off)
    assert not w0.advance_fill(off, 20000)                 # the old owner's word is void
    w3 = shm.SharedCache.attach(path, 3)
    with pytest.raises(ValueError):                        # only a reader may take one over
        w3.take_fill(oid, 0, gen)
    w3.close()
    assert w1.take_fill(oid, 0, gen) == 10000
    assert w2.take_fill(oid, 0, gen) is None               # single-flight: one new owner
    assert w2.take_fill(oid, 0, gen + 1) is None
    assert w2.status(oid, 0, gen) == (FILLING, 10000)
    assert sup.info(oid, 0)["owner"] == 1
    assert w2.watch(oid, 0, gen) == (FILLING, 10000)
    w1.view(off, len(data))[10000:] = data[10000:]
    assert w1.advance_fill(off, len(data))
    assert select.select([w2.wake_fd], [], [], 2)[0]
    assert w1.finish_fill(off, 99)
    assert not w0.finish_fill(off, 1)
    assert w2.status(oid, 0, gen) == (READY, len(data))
    assert bytes(w2.view(off, len(data))) == data
    for w in (w1, w1, w2):
        w.unpin(off)
    w0.close()
    assert sup.check() == {"entries": 1, "filling": 0, "ready": 1, "deferred": 0,
                           "pinned_chunks": 0, "used_bytes": PAGE}
    w1.close()
    w2.close()


def test_an_unread_or_abandoned_orphan_is_dropped(sup, path, shm):
    w0, w1 = shm.SharedCache.attach(path, 0), shm.SharedCache.attach(path, 1)
    lone = w0.begin_fill(oid_of(70), 0, 5000)              # nobody else reads it
    read = w0.begin_fill(oid_of(71), 0, 5000)              # w1 reads it, then gives up
    r = w1.lookup_pin(oid_of(71), 0)
    assert sup.recover_worker(0) == {"chunks": 2, "fills": 1, "orphaned": 1}
    assert sup.info(oid_of(70), 0) is None
    assert w1.status(oid_of(71), 0, r[4]) == (ORPHANED, 0)
    assert w1.evict(oid_of(71), 0) is False                # never evicted as a block
    assert sup.evict_sweep(256, PAGE) == []                # still pinned by its reader
    w1.unpin(r[0])
    assert sup.evict_sweep(256, PAGE) == [(oid_of(71), 0)]  # abandoned: the sweep takes it
    assert sup.check()["used_bytes"] == 0
    # an abandoned orphan also goes at the next recovery of anyone
    w2 = shm.SharedCache.attach(path, 2)
    off = w2.begin_fill(oid_of(72), 0, 5000)
    r = w1.lookup_pin(oid_of(72), 0)
    assert sup.recover_worker(2)["orphaned"] == 1
    w1.unpin(r[0])
    assert sup.recover_worker(2) == {"chunks": 0, "fills": 1, "orphaned": 0}
    assert sup.check() == {"entries": 0, "filling": 0, "ready": 0, "deferred": 0,
                           "pinned_chunks": 0, "used_bytes": 0}
    for w in (w0, w1, w2):
        w.close()
    del lone, read, off


def test_adopt_a_kept_arena(shm, path):
    """Warm restart: blocks READY at their offsets in a kept arena file come back (checked
    placement, allocator derived from them); create() without keep_arena zeroes the file."""
    sup = shm.SharedCache.create(path, 16 * PAGE, PAGE, max_workers=4, index_capacity=256)
    w = shm.SharedCache.attach(path, 0)
    sizes = [PAGE, 5000, 5000, 100, PAGE // 2, 30000]
    blocks = {}
    for k, n in enumerate(sizes):
        data = pattern(oid_of(80), k, n)
        off = fill(w, oid_of(80), k, data)
        w.unpin(off)
        blocks[k] = data
    saved = sorted(sup.ready_entries(), key=lambda e: e[1])
    assert [(e[0], e[1], e[3], e[4]) for e in saved] == [
        (oid_of(80), k, n, zlib.crc32(blocks[k])) for k, n in enumerate(sizes)]
    w.close()
    sup.close()
    sup = shm.SharedCache.create(path, 16 * PAGE, PAGE, max_workers=4, index_capacity=256,
                                 keep_arena=True)
    assert sup.check()["entries"] == 0
    bad = [(oid_of(81), 0, saved[1][2] + 8, 5000, 1),      # not at a chunk start
           (oid_of(81), 1, saved[0][2], 5000, 1),          # a page of another class
           (oid_of(80), 1, saved[2][2], 5000, 1),          # the same key twice
           (oid_of(81), 2, saved[2][2], 5000, 1),          # a chunk already adopted
           (oid_of(81), 3, 16 * PAGE, 100, 1),             # beyond the arena
           (oid_of(81), 4, 0, PAGE + 1, 1)]                # longer than a page
    refused = sup.adopt(saved + bad)
    assert refused == [(e[0], e[1]) for e in bad]
    with pytest.raises(ValueError):
        sup.adopt([(oid_of(82), 0, 0, 100, -1)])
    c = sup.check()
    assert (c["ready"], c["used_bytes"]) == (6, sup.stats()["used_bytes"])
    assert sup.stats()["adopted"] == 6
    w = shm.SharedCache.attach(path, 1)
    for oid, k, off, n, ck in saved:
        r = w.lookup_pin(oid, k)
        assert r[:4] == (off, n, READY, n) and sup.info(oid, k)["checksum"] == ck
        assert bytes(w.view(off, n)) == blocks[k]
        w.unpin(off)
    # the allocator goes on around the adopted chunks
    new = [fill(w, oid_of(83), i, b"z" * 5000) for i in range(30)]
    assert not {o for o in new} & {e[2] for e in saved}
    for o in new:
        w.unpin(o)
    sup.check()
    w.close()
    sup.close()
    sup = shm.SharedCache.create(path, 16 * PAGE, PAGE, max_workers=4, index_capacity=256)
    assert open(path, "rb").read() == bytes(16 * PAGE)     # no keep_arena: zeroed
    sup.close()


def test_the_arena_file_is_locked_against_a_private_arena(shm, path, twin):
    sup = shm.SharedCache.create(path, 4 * PAGE, PAGE)
    arena = twin("arena")
    with pytest.raises(RuntimeError, match="in use"):
        arena.Arena(4 * PAGE, PAGE, path=path)
    sup.close()
    a = arena.Arena(4 * PAGE, PAGE, path=path)
    with pytest.raises(RuntimeError, match="in use"):
        shm.SharedCache.create(path, 4 * PAGE, PAGE)
    a.close()


def test_classes_exhaustion_and_eviction(sup, path, shm):
    w = shm.SharedCache.attach(path, 0)
    offs = [fill(w, oid_of(10), i, pattern(oid_of(10), i, PAGE)) for i in range(16)]
    assert len(set(offs)) == 16
    assert w.begin_fill(oid_of(10), 99, 100) == -1        # arena full
    assert sup.stats()["alloc_failures"] == 1
    for o in offs:
        w.unpin(o)
    assert sup.evict(oid_of(10), 5)
    small = fill(w, oid_of(11), 0, b"x" * 100)            # the freed page, now for class 0
    assert small == offs[5] and w.chunk_size(100) == 1024
    assert [fill(w, oid_of(11), i, b"y" * 1000) - small for i in range(1, 4)] == [1024, 2048, 3072]
    for i in range(16):
        if i != 5:
            lk = w.lookup_pin(oid_of(10), i)
            assert bytes(w.view(lk[0], lk[1])) == pattern(oid_of(10), i, PAGE)
            w.unpin(lk[0])
    assert sup.check()["entries"] == 19
    w.close()
    assert sup.check()["pinned_chunks"] == 0


def test_index_full_and_rebuild(shm, path):
    sup = shm.SharedCache.create(path, 64 * PAGE, PAGE, min_chunk=1024, index_capacity=64)
    w = shm.SharedCache.attach(path, 0)
    live = {}
    rng = random.Random(5)
    for _ in range(600):                                   # churn: tombstones pile up
        k = (oid_of(rng.randrange(100)), rng.randrange(3))
        if k in live:
            assert sup.evict(*k)
            del live[k]
            continue
        off = w.begin_fill(k[0], k[1], 900)
        if off == -1:
            assert len(live) + 1 > 48                      # 75% of 64
            victim = rng.choice(sorted(live))
            assert sup.evict(*victim)
            del live[victim]
            continue
        w.view(off, 900)[:] = pattern(k[0], k[1], 900)
        w.advance_fill(off, 900)
        w.finish_fill(off, 0)
        w.unpin(off)
        live[k] = off
    st = sup.stats()
    assert st["index_rebuilds"] > 0 and st["index_full"] > 0
    for k, off in live.items():
        lk = w.lookup_pin(*k)
        assert lk[0] == off and bytes(w.view(off, 900)) == pattern(k[0], k[1], 900)
        w.unpin(off)
    assert sup.check()["entries"] == len(live)
    w.close()
    sup.close()


def test_validation(shm, path, sup):
    S = shm.SharedCache
    with pytest.raises(TypeError):
        S()
    for bad in ({"arena_size": 3 * PAGE + 1}, {"page_size": 1000}, {"min_chunk": 32},
                {"growth": 1.0}, {"max_workers": 63}, {"index_capacity": 100}):
        kw = {"arena_size": 4 * PAGE, "page_size": PAGE, **bad}
        with pytest.raises(ValueError):
            S.create(path + "x", kw.pop("arena_size"), kw.pop("page_size"), **kw)
    with pytest.raises(RuntimeError, match="attached by a live process"):
        S.create(path, 4 * PAGE, PAGE)                      # sup holds it
    w = S.attach(path, 2)
    with pytest.raises(RuntimeError, match="worker id 2 is attached"):
        S.attach(path, 2)
    with pytest.raises(ValueError, match="worker_id"):
        S.attach(path, 8)
    for bad in (b"short", "x" * 16, None):
        with pytest.raises(ValueError, match="16 bytes"):
            w.lookup_pin(bad, 0)
    with pytest.raises(ValueError, match="supervisor"):
        sup.lookup_pin(oid_of(0), 0)
    with pytest.raises(ValueError, match="length"):
        w.begin_fill(oid_of(0), 0, PAGE + 1)
    with pytest.raises(ValueError, match="not the start"):
        w.unpin(123)
    with pytest.raises(ValueError, match="cannot recover itself"):
        w.recover_worker(2)
    other = cext.load("shm", pure=not shm.__name__.endswith("_py"))
    if other is not shm and not cext.NO_EXTENSIONS:
        with pytest.raises(RuntimeError, match="other twin"):
            other.SharedCache.attach(path, 3)
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.lookup_pin(oid_of(0), 0)


def test_wakeup_same_process(sup, path, shm):
    a = shm.SharedCache.attach(path, 0)
    b = shm.SharedCache.attach(path, 1)
    oid = oid_of(20)
    off = a.begin_fill(oid, 0, 3000)
    gen = b.lookup_pin(oid, 0)[4]
    assert b.watch(oid, 0, gen) == (FILLING, 0)
    assert select.select([b.wake_fd], [], [], 0)[0] == []
    a.advance_fill(off, 1000)
    assert select.select([b.wake_fd], [], [], 2)[0] == [b.wake_fd]
    assert b.drain_wakeups() == 1
    a.advance_fill(off, 2000)                               # not re-armed: no wake-up
    assert b.drain_wakeups() == 0
    assert b.watch(oid, 0, gen) == (FILLING, 2000)
    a.fail_fill(off)                                        # failure wakes too
    assert select.select([b.wake_fd], [], [], 2)[0] and b.drain_wakeups() == 1
    assert b.watch(oid, 0, gen) == (GONE, 0)
    a.close()
    b.close()


# -- processes ---------------------------------------------------------------------------------


def _fork(fn, *args):
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 70
        try:
            code = fn(*args) or 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _wait(pid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} hung")


KEYS = [(oid_of(100 + k // 4), k % 4, [300, 2000, 9000, PAGE // 2 + 1, PAGE][k % 5])
        for k in range(48)]
PATTERNS = [pattern(o, i, n) for o, i, n in KEYS]


def _stress(mod, path, wid, seconds, seed):
    """One worker: random lookups (every byte verified), fills, failures, held pins, evictions.
    Returns an exit code: 0 ok, 1 a wrong or torn block was seen."""
    c = mod.SharedCache.attach(path, wid)
    rng = random.Random(seed)
    held = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        k = rng.randrange(len(KEYS))
        oid, idx, length = KEYS[k]
        pat = PATTERNS[k]
        r = c.lookup_pin(oid, idx)
        if r is not None:
            off, ln, state, filled, gen = r
            v = c.view(off, ln)
            ok = ln == length and (v == pat if state == READY else v[:filled] == pat[:filled])
            v.release()
            if not ok:
                print(f"worker {wid}: WRONG BYTES key {k} state {state} filled {filled}")
                return 1
            if state == FILLING and rng.random() < 0.5:
                st, f2 = c.watch(oid, idx, gen)
                if st != GONE and f2 < filled:
                    print(f"worker {wid}: filled went backwards")
                    return 1
            if rng.random() < 0.3:
                held.append(off)
            else:
                c.unpin(off)
        else:
            off = c.begin_fill(oid, idx, length)
            if off is None:
                continue
            if off == -1:
                for _ in range(6):
                    c.evict(*KEYS[rng.randrange(len(KEYS))][:2])
                continue
            v = c.view(off, length)
            cut = rng.randrange(1, length + 1)
            v[:cut] = pat[:cut]
            c.advance_fill(off, cut)
            if rng.random() < 0.1:
                c.fail_fill(off)
            else:
                v[cut:] = pat[cut:]
                c.advance_fill(off, length)
                c.finish_fill(off, zlib.crc32(pat))
            v.release()
            c.unpin(off)
        if rng.random() < 0.2:
            c.evict(*KEYS[rng.randrange(len(KEYS))][:2])
        while len(held) > 8:
            c.unpin(held.pop(0))
    for off in held:
        c.unpin(off)
    c.close()
    return 0


def _verify_all(mod, path, wid):
    """Every indexed block is READY and byte-exact (run in the parent after recovery)."""
    c = mod.SharedCache.attach(path, wid)
    n = 0
    for k, (oid, idx, length) in enumerate(KEYS):
        r = c.lookup_pin(oid, idx)
        if r is None:
            continue
        off, ln, state, filled, _ = r
        assert state == READY and ln == filled == length
        assert c.view(off, ln) == PATTERNS[k], f"block {k} corrupt"
        assert c.info(oid, idx)["checksum"] == zlib.crc32(PATTERNS[k])
        c.unpin(off)
        n += 1
    c.close()
    return n


def _small_region(shm, path):
    # 24 pages of 64 KiB for 48 keys of up to a page: constant eviction pressure
    return shm.SharedCache.create(path, 24 * PAGE, PAGE, max_workers=8, index_capacity=128)


def test_processes_concurrent_no_torn_blocks(shm, path):
    sup = _small_region(shm, path)
    pids = [_fork(_stress, shm, path, w, 1.5, 1000 + w) for w in range(4)]
    codes = [_wait(p) for p in pids]
    assert codes == [0, 0, 0, 0]
    c = sup.check()
    assert (c["filling"], c["pinned_chunks"], c["deferred"]) == (0, 0, 0)
    st = sup.stats()
    assert st["fills_finished"] > 50 and st["evictions"] > 20, st
    assert _verify_all(shm, path, 7) == c["ready"]
    sup.close()


def test_sigkill_at_random_instants_then_recover(shm, path):
    sup = _small_region(shm, path)
    rng = random.Random(7)
    totals = {"chunks": 0, "fills": 0}
    for rnd in range(4):
        pids = {w: _fork(_stress, shm, path, w, 60.0, rnd * 10 + w) for w in range(3)}
        time.sleep(rng.uniform(0.15, 0.4))
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for w in pids:
            got = sup.recover_worker(w)
            totals["chunks"] += got["chunks"]
            totals["fills"] += got["fills"]
        c = sup.check()   # consistent: no leaked pin, no FILLING entry, nothing deferred
        assert (c["filling"], c["pinned_chunks"], c["deferred"]) == (0, 0, 0), c
        assert _verify_all(shm, path, 7) == c["ready"]
    assert totals["chunks"] > 0                               # they did die holding pins
    # restarted workers (same ids) run cleanly on the recovered region
    assert [_wait(_fork(_stress, shm, path, w, 0.3, 99 + w)) for w in range(3)] == [0, 0, 0]
    assert sup.check()["pinned_chunks"] == 0
    sup.close()


def _die_holding_pins_and_a_fill(mod, path, wfd):
    c = mod.SharedCache.attach(path, 1)
    off = c.begin_fill(oid_of(50), 0, 9000)
    c.view(off, 4000)[:] = pattern(oid_of(50), 0, 9000)[:4000]
    c.advance_fill(off, 4000)
    r = c.lookup_pin(oid_of(51), 0)
    c.repin(r[0])
    os.write(wfd, b"k")
    time.sleep(60)


def test_sigkill_holding_pins_and_filling(shm, path):
    sup = shm.SharedCache.create(path, 8 * PAGE, PAGE, max_workers=4)
    a = shm.SharedCache.attach(path, 0)
    off51 = fill(a, oid_of(51), 0, pattern(oid_of(51), 0, PAGE))
    a.unpin(off51)
    rfd, wfd = os.pipe()
    pid = _fork(_die_holding_pins_and_a_fill, shm, path, wfd)
    os.close(wfd)                                   # a child that fails early ends the read
    assert os.read(rfd, 1) == b"k"
    off50, _, state, filled, gen = a.lookup_pin(oid_of(50), 0)   # a reader of the dying fill
    assert (state, filled) == (FILLING, 4000)
    assert a.watch(oid_of(50), 0, gen) == (FILLING, 4000)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert not sup.evict(oid_of(51), 0)                       # the dead worker's pins block it
    assert sup.info(oid_of(51), 0)["pinned_by"] == [1]
    # a reads the dying fill: it is orphaned (kept with what landed), not dropped
    assert sup.recover_worker(1) == {"chunks": 2, "fills": 0, "orphaned": 1}
    assert a.status(oid_of(50), 0, gen) == (ORPHANED, 4000)   # never promoted
    assert sup.info(oid_of(50), 0)["owner"] == 0xFF
    assert select.select([a.wake_fd], [], [], 2)[0]           # the watcher was told
    a.drain_wakeups()
    assert a.take_fill(oid_of(50), 0, gen) == 4000            # re-elected: go on from 4000
    assert a.take_fill(oid_of(50), 0, gen) is None            # exactly once
    data = pattern(oid_of(50), 0, 9000)
    assert bytes(a.view(off50, 4000)) == data[:4000]          # what the dead owner published
    a.view(off50, 9000)[4000:] = data[4000:]
    assert a.advance_fill(off50, 9000) and a.finish_fill(off50, zlib.crc32(data))
    assert a.pins(off50) == 2                                 # the reader's and the fill's
    a.unpin(off50)
    a.unpin(off50)
    assert sup.evict(oid_of(51), 0)
    assert a.lookup_pin(oid_of(50), 0)[2:4] == (READY, 9000)
    a.unpin(off50)
    assert sup.evict(oid_of(50), 0)
    c = sup.check()
    assert c == {"entries": 0, "filling": 0, "ready": 0, "deferred": 0, "pinned_chunks": 0,
                 "used_bytes": 0}
    assert sup.stats()["fills_orphaned"] == 1 and sup.stats()["fills_taken_over"] == 1
    # the id can attach again; it recovers nothing more
    assert _wait(_fork(lambda: shm.SharedCache.attach(path, 1).close())) == 0
    a.close()
    sup.close()


def _die_holding_the_lock(mod, path, wfd, leak):
    c = mod.SharedCache.attach(path, 2)
    if leak:
        c._debug_alloc(5000)        # allocated, never indexed: what a death mid-fill leaves
    c._debug_lock()
    os.write(wfd, b"L")
    time.sleep(60)


@pytest.mark.parametrize("leak", [False, True])
def test_robust_mutex_owner_dies(shm, path, leak):
    sup = shm.SharedCache.create(path, 8 * PAGE, PAGE, max_workers=4)
    a = shm.SharedCache.attach(path, 0)
    keep = fill(a, oid_of(60), 0, pattern(oid_of(60), 0, 7000))
    rfd, wfd = os.pipe()
    pid = _fork(_die_holding_the_lock, shm, path, wfd, leak)
    os.close(wfd)
    assert os.read(rfd, 1) == b"L"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    off = fill(a, oid_of(61), 0, b"z" * 100)                  # the next locker recovers
    st = sup.stats()
    assert (st["lock_recoveries"], st["repairs"]) == (1, 1)
    c = sup.check()
    assert c["entries"] == 2 and c["used_bytes"] == a.chunk_size(7000) + a.chunk_size(100)  # leak freed
    lk = a.lookup_pin(oid_of(60), 0)
    assert lk[0] == keep and a.view(keep, 7000) == pattern(oid_of(60), 0, 7000)
    for o in (keep, keep, off):
        a.unpin(o)
    sup.recover_worker(2)
    assert sup.check()["pinned_chunks"] == 0
    a.close()
    sup.close()


def _slow_filler(mod, path, go_fd):
    c = mod.SharedCache.attach(path, 1)
    oid = oid_of(70)
    data = pattern(oid, 0, 60000)
    off = c.begin_fill(oid, 0, len(data))
    os.read(go_fd, 1)
    for end in range(10000, 60001, 10000):
        c.view(off, len(data))[end - 10000:end] = data[end - 10000:end]
        c.advance_fill(off, end)
        time.sleep(0.02)
    c.finish_fill(off, zlib.crc32(data))
    c.unpin(off)
    c.close()


def test_cross_process_wakeup_with_asyncio(shm, path, sup):
    a = shm.SharedCache.attach(path, 0)
    rfd, wfd = os.pipe()
    pid = _fork(_slow_filler, shm, path, rfd)
    oid = oid_of(70)
    deadline = time.monotonic() + 5
    while (r := a.lookup_pin(oid, 0)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    off, length, state, filled, gen = r
    data = pattern(oid, 0, length)

    async def stream():
        """Read the block as it lands, woken by the filler (no polling)."""
        loop = asyncio.get_running_loop()
        woke = asyncio.Event()
        loop.add_reader(a.wake_fd, lambda: (a.drain_wakeups(), woke.set()))
        got, wakeups = 0, 0
        try:
            os.write(wfd, b"g")
            while True:
                woke.clear()
                state, filled = a.watch(oid, 0, gen)
                assert a.view(off, filled) == data[:filled]
                got = filled
                if state != FILLING:
                    return state, got, wakeups
                await asyncio.wait_for(woke.wait(), 5)
                wakeups += 1
        finally:
            loop.remove_reader(a.wake_fd)

    state, got, wakeups = asyncio.run(stream())
    assert (state, got) == (READY, 60000) and 1 <= wakeups <= 7
    assert _wait(pid) == 0
    a.unpin(off)
    a.close()


def assert_same_layout(files: list[tuple[bytes, bytes]]) -> None:
    """The (control file, arena file) bytes the two twins left are the same, but for the
    words that differ by design (implementation, nonce) and the pthread mutex."""
    (c_ctl, c_arena), (py_ctl, py_arena) = files
    assert c_arena == py_arena
    mask = bytearray(len(c_ctl))
    for word in (2, 13):                       # impl, nonce
        mask[word * 8:word * 8 + 8] = b"\1" * 8
    mask[512:576] = b"\1" * 64                 # the pthread mutex
    diff = [i for i in range(len(c_ctl)) if c_ctl[i] != py_ctl[i] and not mask[i]]
    assert len(c_ctl) == len(py_ctl) and diff == []


@pytest.mark.skipif(cext.NO_EXTENSIONS, reason="needs both twins")
def test_twins_share_one_layout(tmp_path):
    """The same calls on both twins leave byte-identical files (but for the implementation
    word, the nonce and the mutex's owner bytes)."""
    files = []
    for pure in (False, True):
        mod = cext.load("shm", pure=pure)
        p = str(tmp_path / f"arena{int(pure)}")
        sup = mod.SharedCache.create(p, 8 * PAGE, PAGE, max_workers=4, index_capacity=64)
        w = mod.SharedCache.attach(p, 1)
        offs = [fill(w, oid_of(k), k % 3, pattern(oid_of(k), k % 3, n), pieces=2)
                for k, n in enumerate([100, 5000, PAGE, 30000, 1500, 1500, PAGE // 2])]
        for o in offs:
            w.unpin(o)
        assert sup.evict(oid_of(2), 2) and sup.evict(oid_of(4), 1)
        bad = w.begin_fill(oid_of(9), 0, 2000)
        w.fail_fill(bad)
        w.unpin(bad)
        keep = w.lookup_pin(oid_of(5), 2)
        assert w.remove(oid_of(3), 0) and len(sup.evict_sweep(64, 2 * PAGE)) >= 1
        w.close()
        sup.check()
        files.append((open(p + ".ctl", "rb").read(), open(p, "rb").read()))
        sup.close()
        assert keep is not None
    assert_same_layout(files)


@pytest.mark.skipif(cext.NO_EXTENSIONS, reason="needs both twins")
def test_twins_adopt_to_one_layout(tmp_path):
    """Adopting the same saved entries into a kept arena leaves byte-identical control
    files in both twins (the warm-restart path)."""
    files = []
    for pure in (False, True):
        mod = cext.load("shm", pure=pure)
        p = str(tmp_path / f"arena{int(pure)}")
        sup = mod.SharedCache.create(p, 8 * PAGE, PAGE, max_workers=4, index_capacity=64)
        w = mod.SharedCache.attach(p, 0)
        for k, n in enumerate([100, 5000, PAGE, 30000, 1500, 1500, PAGE // 2]):
            w.unpin(fill(w, oid_of(k), k % 3, pattern(oid_of(k), k % 3, n)))
        saved = sorted(sup.ready_entries())
        w.close()
        sup.close()
        sup = mod.SharedCache.create(p, 8 * PAGE, PAGE, max_workers=4, index_capacity=64,
                                     keep_arena=True)
        assert sup.adopt(saved + [(oid_of(99), 0, saved[0][2] + 64, 100, 0)]) == [(oid_of(99), 0)]
        sup.check()
        files.append((open(p + ".ctl", "rb").read(), open(p, "rb").read()))
        sup.close()
    assert_same_layout(files)
