"""The slab arena (cext/arena.pyx and its twin cext/_arena_py.py): classes, bounds, pins, views."""

from __future__ import annotations

import itertools
import os
import random

import pytest

import cext

KIB = 1024
PAGE = 64 * KIB
# page_size=64 KiB, min_chunk=1024, growth=1.25: x1.25, truncated, rounded up to 64, <= 32 KiB
SIZES_64K = [
    1024,
    1280,
    1600,
    2048,
    2560,
    3200,
    4032,
    5056,
    6336,
    7936,
    9920,
    12416,
    15552,
    19456,
    24320,
    30400,
    65536,
]


@pytest.fixture
def Arena(twin):
    return twin("arena").Arena


def fill(arena, nbytes):
    """Allocate chunks of ``nbytes`` until the arena says no; return the offsets."""
    offs = []
    while (off := arena.alloc(nbytes)) != -1:
        offs.append(off)
    return offs


# -- construction and classes ----------------------------------------------------------------


def test_class_sizes(Arena):
    with Arena(4 * PAGE, PAGE) as a:
        assert a.nclasses == len(SIZES_64K)
        assert [a.chunk_size(c) for c in range(a.nclasses)] == SIZES_64K
        assert (a.size, a.page_size, a.path) == (4 * PAGE, PAGE, None)
        for bad in (-1, a.nclasses):
            with pytest.raises(ValueError, match="class"):
                a.chunk_size(bad)


def test_class_sizes_default_page():
    # the default 1 MiB block: classes stop at 512 KiB, then the full block
    for pure in [True] if cext.NO_EXTENSIONS else [True, False]:
        with cext.load("arena", pure=pure).Arena(1 << 20) as a:
            sizes = [a.chunk_size(c) for c in range(a.nclasses)]
            assert sizes[0] == 1024 and sizes[-1] == 1 << 20
            assert sizes[-2] <= 512 * KIB and all(s % 64 == 0 for s in sizes)
            assert sizes == sorted(set(sizes))


def test_class_for_boundaries(Arena):
    with Arena(4 * PAGE, PAGE) as a:
        assert a.class_for(1) == 0
        assert a.class_for(1024) == 0
        assert a.class_for(1025) == 1
        assert a.class_for(1280) == 1
        assert a.class_for(1281) == 2
        assert a.class_for(30400) == 15
        assert a.class_for(30401) == 16
        assert a.class_for(PAGE) == 16
        for i, cs in enumerate(SIZES_64K):
            assert a.class_for(cs) == i
            assert a.class_for(cs - 63) == (0 if i == 0 else i)
            if cs < PAGE:
                assert a.class_for(cs + 1) == i + 1
        for bad in (0, -1, PAGE + 1, 1 << 80):
            with pytest.raises(ValueError, match="nbytes"):
                a.class_for(bad)
            with pytest.raises(ValueError, match="nbytes"):
                a.alloc(bad)
        with pytest.raises(TypeError):
            a.class_for(1.5)


def test_min_chunk_rounding_and_single_class(Arena):
    with Arena(PAGE, PAGE, min_chunk=100, growth=2.0) as a:
        assert [a.chunk_size(c) for c in range(a.nclasses)] == [
            128,
            256,
            512,
            1024,
            2048,
            4096,
            8192,
            16384,
            32768,
            65536,
        ]
    with Arena(PAGE, PAGE, min_chunk=PAGE) as a:
        assert a.nclasses == 1 and a.chunk_size(0) == PAGE


def test_growth_extremes(Arena):
    with Arena(PAGE, PAGE, growth=1.0000001) as a:  # steps of 64: 1024, 1088, ... 32768, page
        assert a.nclasses == (32768 - 1024) // 64 + 2
        assert a.chunk_size(1) == 1088 and a.chunk_size(a.nclasses - 2) == 32768
    with Arena(PAGE, PAGE, growth=1e300) as a:
        assert [a.chunk_size(c) for c in range(a.nclasses)] == [1024, PAGE]


@pytest.mark.parametrize(
    "args, kwargs, param",
    [
        ((0,), {}, "size"),
        ((PAGE + 4096, PAGE), {}, "size"),
        ((-PAGE, PAGE), {}, "size"),
        ((PAGE, 1000), {}, "page_size"),
        ((PAGE, 0), {}, "page_size"),
        ((PAGE, PAGE), {"min_chunk": 63}, "min_chunk"),
        ((PAGE, PAGE), {"min_chunk": PAGE + 64}, "min_chunk"),
        ((PAGE, PAGE), {"growth": 1.0}, "growth"),
        ((PAGE, PAGE), {"growth": float("nan")}, "growth"),
        ((PAGE, PAGE), {"growth": float("inf")}, "growth"),
        ((PAGE << 31, PAGE), {}, "pages"),
    ],
)
def test_constructor_validation(Arena, args, kwargs, param):
    with pytest.raises(ValueError, match=param):
        Arena(*args, **kwargs)


# -- bounds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("nbytes", [1, 1000, 1281, 5000, 20000, 30401, PAGE])
def test_alloc_until_full_stays_in_bounds(Arena, nbytes):
    size = 8 * PAGE
    with Arena(size, PAGE) as a:
        offs = fill(a, nbytes)
        cs = a.chunk_size(a.class_for(nbytes))
        assert len(offs) == 8 * (PAGE // cs)
        assert len(set(offs)) == len(offs)
        assert all(0 <= off and off + cs <= size and off % 64 == 0 for off in offs)
        assert a.used_bytes == len(offs) * cs <= size
        assert a.free_pages == 0
        assert a.stats()["alloc_failures"] == 1
        assert a.alloc(nbytes) == -1
        assert a.stats()["alloc_failures"] == 2


def test_mixed_sizes_never_exceed_size(Arena):
    size = 16 * PAGE
    rng = random.Random(7)
    with Arena(size, PAGE) as a:
        live = {}
        for _ in range(3000):
            n = rng.choice([100, 1500, 3000, 9000, 25000, PAGE])
            off = a.alloc(n)
            if off != -1:
                live[off] = a.chunk_of(off)
            else:  # full: free a few chunks at random, as eviction would
                for victim in rng.sample(sorted(live), min(len(live), 5)):
                    a.free(victim)
                    del live[victim]
            assert sum(live.values()) == a.used_bytes <= size
        spans = sorted((off, off + cs) for off, cs in live.items())
        assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))
        assert spans[-1][1] <= size


def test_mapping_length_is_size(Arena):
    with Arena(3 * PAGE, PAGE) as a:
        off = a.alloc(PAGE)
        v = a.view(off, 1)
        assert len(v.obj) == 3 * PAGE  # the mmap object behind every view
        v.release()


def _file_arena_roundtrip(Arena, path):
    size = 4 * PAGE
    with Arena(size, PAGE, path=str(path)) as a:
        assert a.path == str(path)
        assert os.path.getsize(path) == size
        v = a.view(a.alloc(PAGE), 5)
        assert len(v.obj) == size
        v[:] = b"hello"
        v.release()
    assert os.path.getsize(path) == size  # kept on disk, unlocked
    with Arena(size, PAGE, path=str(path)) as b:  # MAP_SHARED: the bytes reached the file
        off = b.alloc(PAGE)
        assert off == 0 and bytes(b.view(off, 5)) == b"hello"
    with open(path, "rb") as f:
        assert f.read(5) == b"hello"


def test_file_size_on_disk(Arena, tmp_path):
    _file_arena_roundtrip(Arena, tmp_path / "arena")


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_file_size_on_dev_shm(Arena, tmp_path):
    path = f"/dev/shm/edge-test-arena-{os.getpid()}-{tmp_path.name}"
    try:
        _file_arena_roundtrip(Arena, path)
    finally:
        os.unlink(path)


def test_existing_file_is_resized(Arena, tmp_path):
    path = tmp_path / "arena"
    path.write_bytes(b"x" * (10 * PAGE + 7))
    with Arena(2 * PAGE, PAGE, path=str(path)):
        assert os.path.getsize(path) == 2 * PAGE


# -- files: lock and reservation -------------------------------------------------------------


def test_flock_second_arena_refused(Arena, tmp_path):
    path = str(tmp_path / "arena")
    with Arena(PAGE, PAGE, path=path):
        with pytest.raises(RuntimeError, match=f"arena file {path} is in use by another process"):
            Arena(PAGE, PAGE, path=path)
        assert os.path.getsize(path) == PAGE
    Arena(PAGE, PAGE, path=path).close()  # released by close()


def test_missing_directory_is_a_clear_oserror(Arena, tmp_path):
    path = str(tmp_path / "no-such-dir" / "arena")
    with pytest.raises(OSError) as info:
        Arena(PAGE, PAGE, path=path)
    assert path in str(info.value)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_fallocate_failure_names_the_path(Arena, tmp_path):
    st = os.statvfs("/dev/shm")
    total = st.f_blocks * st.f_frsize
    if total == 0:
        pytest.skip("/dev/shm has no size limit")
    # tmpfs refuses a reservation larger than the filesystem at once (no page is allocated)
    size = ((total >> 20) + 1024) << 20
    path = f"/dev/shm/edge-test-arena-big-{os.getpid()}-{tmp_path.name}"
    with pytest.raises(OSError) as info:
        Arena(size, 1 << 20, path=path)
    assert path in str(info.value) and "cannot reserve" in str(info.value)
    assert not os.path.exists(path)  # we created it, so we removed it


# -- pages -----------------------------------------------------------------------------------


def test_pages_return_and_serve_other_classes(Arena):
    with Arena(4 * PAGE, PAGE) as a:
        small = fill(a, 1000)
        assert len(small) == 4 * 64 and a.free_pages == 0
        assert a.alloc(PAGE) == -1
        for off in small:
            a.free(off)
        assert a.free_pages == 4 and a.used_bytes == 0
        big = fill(a, PAGE)
        assert sorted(big) == [0, PAGE, 2 * PAGE, 3 * PAGE]
        for off in big:
            a.free(off)
        assert a.free_pages == 4
        assert len(fill(a, 5000)) == 4 * (PAGE // 5056)


def test_page_stays_while_one_chunk_is_used(Arena):
    with Arena(2 * PAGE, PAGE) as a:
        offs = fill(a, 1000)
        keep = offs[70]  # on the second page
        for off in offs:
            if off != keep:
                a.free(off)
        assert a.free_pages == 1
        assert a.alloc(PAGE) == 0  # the first page went back
        assert a.alloc(PAGE) == -1
        assert len(fill(a, 1000)) == 63  # the second page still serves its class
        a.free(keep)
        assert a.alloc(1000) == keep  # LIFO free list


def test_alloc_free_cycle_reuses_same_chunk(Arena):
    with Arena(2 * PAGE, PAGE) as a:
        first = a.alloc(1000)
        for _ in range(100):
            a.free(first)
            assert a.free_pages == 2
            assert a.alloc(1000) == first


# -- pins ------------------------------------------------------------------------------------


def test_pinned_chunk_is_deferred_and_never_reused(Arena):
    with Arena(2 * PAGE, PAGE) as a:
        off = a.alloc(1000)
        other = a.alloc(1000)
        assert a.pin(off) == 1
        assert a.pin(off) == 2
        assert a.pins(off) == 2
        a.free(off)
        s = a.stats()
        assert (s["deferred_chunks"], s["pinned_chunks"]) == (1, 1)
        assert a.used_bytes == 2048  # a deferred chunk still counts
        assert a.pins(off) == 2 and a.chunk_of(off) == 1024
        assert len(a.view(off, 10)) == 10  # the pin holder can still read it
        with pytest.raises(ValueError, match="deferred"):
            a.pin(off)
        with pytest.raises(ValueError, match="deferred"):
            a.free(off)
        a.free(other)
        rest = fill(a, 1000) + fill(a, PAGE)
        assert off not in rest and other in rest
        assert a.used_bytes <= a.size
        assert a.unpin(off) == 1
        assert a.stats()["deferred_chunks"] == 1
        assert a.unpin(off) == 0  # completes the free
        s = a.stats()
        assert (s["deferred_chunks"], s["pinned_chunks"]) == (0, 0)
        with pytest.raises(ValueError, match="not allocated"):
            a.pins(off)
        with pytest.raises(ValueError, match="not pinned"):
            a.unpin(off)
        assert a.alloc(1000) == off  # now, and only now, reusable


def test_pinned_bytes_untouched_by_free(Arena):
    with Arena(PAGE, PAGE) as a:
        off = a.alloc(1000)
        a.view(off, 1024)[:] = b"\xab" * 1024
        a.pin(off)
        a.free(off)
        assert bytes(a.view(off, 1024)) == b"\xab" * 1024


def test_unpin_pin_errors(Arena):
    with Arena(PAGE, PAGE) as a:
        off = a.alloc(1000)
        with pytest.raises(ValueError, match="not pinned"):
            a.unpin(off)
        a.pin(off)
        assert a.unpin(off) == 0
        with pytest.raises(ValueError, match="not pinned"):
            a.unpin(off)
        a.free(off)
        with pytest.raises(ValueError):
            a.pin(off)  # free (and its page went back)
        keep = a.alloc(1000)
        off2 = a.alloc(1000)
        a.free(off2)
        with pytest.raises(ValueError, match="not allocated"):
            a.pin(off2)  # free chunk in a live page
        assert a.pins(keep) == 0


def test_free_errors(Arena):
    with Arena(2 * PAGE, PAGE) as a:
        off = a.alloc(1000)
        a.alloc(1000)
        for bad in (off + 1, off + 64, off + 1023, -1, -PAGE, 2 * PAGE, 10 * PAGE, 1 << 70):
            with pytest.raises(ValueError):
                a.free(bad)
        with pytest.raises(ValueError, match="page is free"):
            a.free(PAGE)  # second page is unassigned
        a.free(off)
        with pytest.raises(ValueError, match="double free"):
            a.free(off)
        with pytest.raises(TypeError):
            a.free(1.0)
        # the tail of a page past the last whole chunk is never a chunk
        big = a.alloc(30000)  # class 30400: two per page, 4736 bytes of tail
        assert big == PAGE
        with pytest.raises(ValueError, match="start of a chunk"):
            a.free(PAGE + 2 * 30400)
        assert a.chunk_of(big) == 30400


# -- views -----------------------------------------------------------------------------------


def test_views_land_at_their_offsets(Arena):
    size = 4 * PAGE
    with Arena(size, PAGE) as a:
        offs = fill(a, 1000)[:100] + fill(a, 3000)[:10] + fill(a, PAGE)
        offs = [o for o in offs]
        for i, off in enumerate(offs):
            cs = a.chunk_of(off)
            a.view(off, cs)[:] = bytes([i % 251 + 1]) * cs
        for i, off in enumerate(offs):
            cs = a.chunk_of(off)
            assert bytes(a.view(off, cs)) == bytes([i % 251 + 1]) * cs
        # and the same bytes through one view of the whole mapping
        whole = memoryview(a.view(offs[0], 1).obj)
        for i, off in enumerate(offs):
            assert whole[off] == i % 251 + 1 and whole[off + a.chunk_of(off) - 1] == i % 251 + 1
        whole.release()


def test_view_is_writable_slice_without_copy(Arena):
    with Arena(PAGE, PAGE) as a:
        off = a.alloc(2000)
        a.alloc(2000)
        v1 = a.view(off, 2048)
        v2 = a.view(off, 4)
        assert not v1.readonly and v1.nbytes == 2048 and v2.nbytes == 4
        v1[:4] = b"abcd"
        assert bytes(v2) == b"abcd"
        assert len(a.view(off, 0)) == 0


def test_view_length_and_offset_checks(Arena):
    with Arena(PAGE, PAGE) as a:
        off = a.alloc(1000)
        for bad in (-1, 1025, 1 << 70):
            with pytest.raises(ValueError, match="length"):
                a.view(off, bad)
        with pytest.raises(ValueError):
            a.view(off + 64, 10)
        with pytest.raises(ValueError):
            a.view(off + 1024, 10)  # not allocated
        a.free(off)
        with pytest.raises(ValueError):
            a.view(off, 10)


# -- stats -----------------------------------------------------------------------------------


def test_stats_after_scripted_sequence(Arena):
    with Arena(4 * PAGE, PAGE) as a:
        s1 = [a.alloc(1000) for _ in range(3)]  # class 0, page 0
        s2 = a.alloc(2000)  # class 3, page 1
        big = a.alloc(PAGE)  # class 16, page 2
        a.pin(s1[0])
        a.pin(s1[0])
        a.pin(big)
        a.free(s1[0])  # deferred
        a.free(s1[1])
        assert a.alloc(PAGE) == 3 * PAGE
        assert a.alloc(PAGE) == -1
        assert a.alloc(9000) == -1
        assert a.chunk_of(s2) == 2048
        s = a.stats()
        classes = s.pop("classes")
        assert s == {
            "size": 4 * PAGE,
            "page_size": PAGE,
            "pages_total": 4,
            "pages_free": 0,
            "used_bytes": 2 * 1024 + 2048 + 2 * PAGE,
            "pinned_chunks": 2,
            "deferred_chunks": 1,
            "alloc_failures": 2,
            "zero_copy": False,
            "punched_chunks": 0,
            "punch_failures": 0,
        }
        assert len(classes) == 17
        assert [c["class"] for c in classes] == list(range(17))
        assert [c["chunk_size"] for c in classes] == SIZES_64K
        nonempty = {c["class"]: c for c in classes if c["pages"]}
        assert nonempty == {
            0: {
                "class": 0,
                "chunk_size": 1024,
                "pages": 1,
                "chunks_used": 2,
                "chunks_free": 62,
                "pinned": 1,
            },
            3: {
                "class": 3,
                "chunk_size": 2048,
                "pages": 1,
                "chunks_used": 1,
                "chunks_free": 31,
                "pinned": 0,
            },
            16: {
                "class": 16,
                "chunk_size": PAGE,
                "pages": 2,
                "chunks_used": 2,
                "chunks_free": 0,
                "pinned": 1,
            },
        }
        assert all(
            c["chunks_used"] == c["chunks_free"] == c["pinned"] == 0
            for c in classes
            if not c["pages"]
        )
        a.unpin(s1[0])
        a.unpin(s1[0])
        a.unpin(big)
        a.free(big)
        a.free(s1[2])
        s = a.stats()
        assert (s["pages_free"], s["used_bytes"], s["pinned_chunks"], s["deferred_chunks"]) == (
            2,
            2048 + PAGE,
            0,
            0,
        )
        assert s["classes"][0]["pages"] == 0 and s["classes"][16]["pages"] == 1


# -- lifetime --------------------------------------------------------------------------------


def test_close_is_idempotent_and_final(Arena):
    a = Arena(PAGE, PAGE)
    off = a.alloc(1000)
    v = a.view(off, 4)
    a.close()
    a.close()
    for call in (
        lambda: a.alloc(1000),
        lambda: a.free(off),
        lambda: a.pin(off),
        lambda: a.unpin(off),
        lambda: a.pins(off),
        lambda: a.view(off, 1),
        lambda: a.chunk_of(off),
    ):
        with pytest.raises(ValueError, match="closed"):
            call()
    # configuration and counters stay readable; a view that outlived close stays valid
    assert a.size == PAGE and a.class_for(1000) == 0 and a.stats()["used_bytes"] == 1024
    v[:] = b"live"
    assert bytes(v) == b"live"
    v.release()


def test_context_manager_unlocks(Arena, tmp_path):
    path = str(tmp_path / "arena")
    with Arena(PAGE, PAGE, path=path) as a:
        assert a.alloc(1) == 0
    with Arena(PAGE, PAGE, path=path) as b:
        assert b.free_pages == 1


# -- randomized model test -------------------------------------------------------------------


class Model:
    """Reference model: which chunks are live, their pins, and each page's class and load."""

    def __init__(self, size, page_size, sizes):
        self.size, self.page_size, self.sizes = size, page_size, sizes
        self.live = {}  # off -> [chunk size, pins, deferred]
        self.page_class = {}  # page -> class
        self.page_load = {}  # page -> live chunks

    def class_for(self, n):
        return next(i for i, cs in enumerate(self.sizes) if cs >= n)

    def can_alloc(self, cls):
        per = self.page_size // self.sizes[cls]
        npages = self.size // self.page_size
        if len(self.page_class) < npages:
            return True
        return any(c == cls and self.page_load[p] < per for p, c in self.page_class.items())

    def check_alloc(self, off, cls):
        cs = self.sizes[cls]
        page, rel = divmod(off, self.page_size)
        assert off not in self.live
        assert rel % cs == 0 and rel + cs <= self.page_size
        assert self.page_class.get(page, cls) == cls
        for o, (s, _, _) in self.live.items():
            assert off + cs <= o or o + s <= off, "overlap"
        self.page_class[page] = cls
        self.page_load[page] = self.page_load.get(page, 0) + 1
        self.live[off] = [cs, 0, False]

    def release(self, off):
        page = off // self.page_size
        del self.live[off]
        self.page_load[page] -= 1
        if not self.page_load[page]:
            del self.page_load[page], self.page_class[page]


SIG = 16  # bytes of signature written at both ends of every live chunk


def _sig(off):
    return off.to_bytes(8, "little") * 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_ops_against_model_and_twin(seed):
    pures = [True] if cext.NO_EXTENSIONS else [True, False]
    size, page = 8 * PAGE, PAGE
    arenas = [
        cext.load("arena", pure=p).Arena(size, page, min_chunk=1024, growth=2.0) for p in pures
    ]
    sizes = [arenas[0].chunk_size(c) for c in range(arenas[0].nclasses)]
    assert sizes == [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    model = Model(size, page, sizes)
    rng = random.Random(seed)

    def each(method, *args):
        results = []
        for a in arenas:
            try:
                results.append(getattr(a, method)(*args))
            except ValueError:
                results.append(ValueError)
        assert all(r == results[0] for r in results), (method, args, results)
        return results[0]

    def check_sig(off):
        cs = model.live[off][0]
        for a in arenas:
            assert bytes(a.view(off, SIG)) == _sig(off)
            assert bytes(a.view(off, cs)[cs - SIG :]) == _sig(off)

    dead = []  # offsets freed at some point, for invalid-op probes
    seen = dict.fromkeys(["full", "deferred", "completed", "page_back", "probe"], 0)
    for _step in range(2000):
        op = rng.random()
        usable = [o for o, (_, _, d) in model.live.items() if not d]
        pinned = [o for o, (_, p, _) in model.live.items() if p]
        if op < 0.45:
            n = rng.choice([1, 700, 1024, 1500, 3000, 5000, 12000, 20000, 40000, page])
            cls = model.class_for(n)
            expect = model.can_alloc(cls)
            off = each("alloc", n)
            if not expect:
                assert off == -1
                seen["full"] += 1
            else:
                assert off != -1
                model.check_alloc(off, cls)
                cs = sizes[cls]
                for a in arenas:
                    v = a.view(off, cs)
                    v[:SIG] = _sig(off)
                    v[cs - SIG :] = _sig(off)
        elif op < 0.70 and usable:
            off = rng.choice(usable)
            check_sig(off)
            assert each("free", off) is None
            dead.append(off)
            if model.live[off][1]:
                model.live[off][2] = True
                seen["deferred"] += 1
            else:
                pages = len(model.page_class)
                model.release(off)
                seen["page_back"] += pages - len(model.page_class)
        elif op < 0.85 and usable:
            off = rng.choice(usable)
            model.live[off][1] += 1
            assert each("pin", off) == model.live[off][1]
        elif op < 0.97 and pinned:
            off = rng.choice(pinned)
            check_sig(off)  # a pinned (maybe deferred) chunk's bytes are never touched
            entry = model.live[off]
            entry[1] -= 1
            assert each("unpin", off) == entry[1]
            if entry[1] == 0 and entry[2]:
                model.release(off)
                seen["completed"] += 1
        elif dead:
            off = rng.choice(dead)
            if off not in model.live:
                assert each("free", off) is ValueError
                assert each("unpin", off) is ValueError
            elif model.live[off][2]:
                assert each("free", off) is ValueError
                assert each("pin", off) is ValueError
            assert each("free", off + 64) is ValueError
            seen["probe"] += 1

        used = sum(cs for cs, _, _ in model.live.values())
        st = each("stats")
        assert st["used_bytes"] == used <= size
        assert st["pinned_chunks"] == sum(1 for _, p, _ in model.live.values() if p)
        assert st["deferred_chunks"] == sum(1 for _, _, d in model.live.values() if d)
        assert st["pages_free"] == size // page - len(model.page_class)
        for c in st["classes"]:
            assert c["pages"] == sum(1 for k in model.page_class.values() if k == c["class"])
    for a in arenas:
        a.close()
    assert min(seen.values()) >= 10, seen  # the walk reached every interesting state


def _rss_shmem() -> int:
    import re as _re

    text = open("/proc/self/status").read()
    m = _re.search(r"RssShmem:\s+(\d+) kB", text)
    return int(m.group(1)) * 1024 if m else 0


def test_prefault_maps_every_page_up_front(twin):
    Arena = twin("arena").Arena
    size = 64 << 20
    before = _rss_shmem()
    a = Arena(size, 1 << 20, prefault=True)
    try:
        assert _rss_shmem() - before >= size * 0.9
    finally:
        a.close()
    b = Arena(size, 1 << 20)                       # default: pages come on first touch
    try:
        assert _rss_shmem() - before < size * 0.5
    finally:
        b.close()


def test_adopt_reattaches_a_saved_layout(twin, tmp_path):
    """Chunks written by one arena are adopted by the next one on the same file."""
    Arena = twin("arena").Arena
    path = str(tmp_path / "arena")
    a = Arena(8 << 16, 1 << 16, path=path, min_chunk=1024)
    saved = []
    for n in (1 << 16, 1000, 5000, 1 << 16, 1000):
        off = a.alloc(n)
        a.view(off, n)[:] = bytes([len(saved) + 1]) * n
        saved.append((off, n))
    a.free(saved[1][0])                    # not in the saved index: must come back free
    keep = [saved[0], saved[2], saved[3], saved[4]]
    a.close()
    b = Arena(8 << 16, 1 << 16, path=path, min_chunk=1024)
    # misaligned, another class on a taken page, out of range, listed twice
    bad = [(7, 1000), (saved[0][0], 1000), ((8 << 16) + 4096, 10), saved[2]]
    assert b.adopt(keep + bad) == [7, saved[0][0], (8 << 16) + 4096, saved[2][0]]
    for off, n in keep:
        assert bytes(b.view(off, n)) == bytes([saved.index((off, n)) + 1]) * n
    assert b.used_bytes == sum(b.chunk_of(off) for off, _ in keep)
    # everything else is allocatable, and never overlaps what was adopted
    taken = set()
    for n in (1000, 5000, 1 << 16):
        while (off := b.alloc(n)) >= 0:
            taken.add((off, b.chunk_of(off)))
    spans = sorted([(o, o + b.chunk_of(o)) for o, _ in keep] + [(o, o + c) for o, c in taken])
    assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:], strict=False))
    with pytest.raises(ValueError, match="fresh"):
        b.adopt([])
    b.close()
