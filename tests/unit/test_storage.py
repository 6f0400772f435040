"""Storage (block map, single-flight fills, failures) against an in-process fake origin."""
from __future__ import annotations

import asyncio

import pytest

from edge.cache import FillError, Storage
from origin_clients import NotFound, ObjectInfo, Origin, OriginError, ValidatorMismatch

KiB = 1024
BS = 64 * KiB


class FakeOrigin(Origin):
    """Objects in memory; every read can be gated, broken or mangled by the test."""

    name = "fake"

    def __init__(self, objects: dict[str, bytes], chunk: int = 16 * KiB) -> None:
        self.objects = dict(objects)
        self.chunk = chunk
        self.stats = 0
        self.reads: list[tuple[str, int, int]] = []
        self.gate: asyncio.Event | None = None      # when set: each chunk waits for it
        self.fail_after: int | None = None          # raise after this many bytes
        self.mangle: str | None = None              # "short" | "long" | "mismatch"
        self.version = 1

    def info(self, key: str) -> ObjectInfo:
        return ObjectInfo(size=len(self.objects[key]), etag=f'"v{self.version}"'.encode(), last_modified=1000)

    async def stat(self, key: str) -> ObjectInfo:
        self.stats += 1
        await asyncio.sleep(0.01)
        if key not in self.objects:
            raise NotFound(self.name, key)
        return self.info(key)

    async def read(self, key, info, start, end):
        self.reads.append((key, start, end))
        if self.mangle == "mismatch" or info.etag != self.info(key).etag:
            raise ValidatorMismatch(self.name, "changed")
        data = self.objects[key][start:end]
        if self.mangle == "short":
            data = data[:-1]
        elif self.mangle == "long":
            data = data + b"x"
        sent = 0
        for i in range(0, len(data), self.chunk):
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_after is not None and sent >= self.fail_after:
                raise OriginError(self.name, "connection reset")
            piece = data[i:i + self.chunk]
            sent += len(piece)
            await asyncio.sleep(0)
            yield piece


@pytest.fixture
def make(twin):
    Arena = twin("arena").Arena
    made = []

    def factory(objects, size=16 * BS, **kw):
        origin = FakeOrigin(objects)
        arena = Arena(size, BS, min_chunk=1024)
        st = Storage(arena, origin, block_size=BS, **kw)
        made.append(arena)
        return st, origin, arena

    yield factory
    for a in made:
        try:
            a.close()
        except BufferError:
            pass


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def read_all(st: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    """Read a byte range the way the protocol does: pin, wait as bytes land, copy, release."""
    meta = await st.meta(key)
    end = meta.size if end is None else end
    out = bytearray()
    pos = start
    while pos < end:
        idx = pos // BS
        base = idx * BS
        b = st.pin_ready(meta, idx) or st.pin(meta, idx)
        try:
            stop = min(end - base, b.length)
            await st.wait(b, stop)
            out += st.view(b, pos - base, stop)
        finally:
            st.release(b)
        pos = base + stop
    return bytes(out)


DATA = bytes(range(256)) * (5 * BS // 256) + b"tail!"   # 5 blocks + 5 bytes


def test_read_fill_and_hit(make):
    st, origin, arena = make({"k": DATA})

    async def main():
        assert await read_all(st, "k") == DATA
        await st.settle()
        reads = len(origin.reads)
        assert reads == 6                       # 5 full blocks + the tail, block-aligned
        assert all(s % BS == 0 for _, s, _ in origin.reads)
        assert await read_all(st, "k", 100, 3 * BS + 7) == DATA[100:3 * BS + 7]
        assert len(origin.reads) == reads       # all hits now
        meta = st.meta_cached("k")
        assert st.is_cached(meta, 0, len(DATA)) is True
        assert origin.stats == 1
    run(main())
    assert arena.stats()["pinned_chunks"] == 0


def test_range_miss_fetches_only_missing_blocks(make):
    st, origin, _ = make({"k": DATA})

    async def main():
        assert await read_all(st, "k", 2 * BS + 5, 2 * BS + 10) == DATA[2 * BS + 5: 2 * BS + 10]
        assert origin.reads == [("k", 2 * BS, 3 * BS)]
        await st.settle()
        meta = st.meta_cached("k")
        assert st.is_cached(meta, 2 * BS, 3 * BS) is True
        assert st.is_cached(meta, 0, 3 * BS) is None
        assert st.is_cached(meta, 0, BS) is False
    run(main())


def test_single_flight_and_streaming_while_filling(make):
    st, origin, _ = make({"k": DATA})

    async def main():
        origin.gate = asyncio.Event()
        meta = await st.meta("k")
        blocks = [st.pin(meta, 0) for _ in range(20)]
        assert all(b is blocks[0] for b in blocks)
        assert len([r for r in origin.reads]) <= 1
        # nothing has landed: release the gate for one chunk's worth and see bytes arrive early
        waiter = asyncio.ensure_future(st.wait(blocks[0], 1))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        origin.gate.set()
        await waiter
        assert 0 < blocks[0].filled
        await st.wait(blocks[0], BS)
        assert blocks[0].ready
        assert len(origin.reads) == 1             # one origin read for 20 readers
        for b in blocks:
            st.release(b)
    run(main())


def test_concurrent_meta_lookups_single_flight(make):
    st, origin, _ = make({"k": DATA})

    async def main():
        metas = await asyncio.gather(*(st.meta("k") for _ in range(30)))
        assert all(m is metas[0] for m in metas)
        assert origin.stats == 1
        with pytest.raises(NotFound):
            await st.meta("missing")
        with pytest.raises(NotFound):
            await st.meta("missing")
        assert origin.stats == 2                  # "not found" is remembered briefly
    run(main())


@pytest.mark.parametrize("mode", ["fail", "short", "long", "mismatch"])
def test_failed_fill_is_never_a_hit(make, mode):
    st, origin, arena = make({"k": DATA})

    async def main():
        if mode == "fail":
            origin.fail_after = 16 * KiB
        else:
            origin.mangle = mode
        meta = await st.meta("k")
        with pytest.raises(FillError):
            await read_all(st, "k", 0, BS)
        assert st.is_cached(meta, 0, BS) is False
        assert st.blocks == 0
        assert arena.used_bytes == 0              # its memory came back
        assert (meta.oid, 0) not in st.policy
        origin.fail_after = None
        origin.mangle = None
        assert await read_all(st, "k", 0, BS) == DATA[:BS]   # next request refills cleanly
    run(main())


def test_fill_completes_when_client_goes_away(make):
    st, origin, _ = make({"k": DATA})

    async def main():
        origin.gate = asyncio.Event()
        meta = await st.meta("k")
        b = st.pin(meta, 1)

        async def client():
            await st.wait(b, BS)

        t = asyncio.ensure_future(client())
        await asyncio.sleep(0.01)
        t.cancel()
        st.release(b)
        origin.gate.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if st.is_cached(meta, BS, 2 * BS):
                break
        assert st.is_cached(meta, BS, 2 * BS) is True
        assert bytes(st.view(b, 0, 10)) == DATA[BS:BS + 10]
    run(main())


def test_pinned_blocks_survive_eviction_and_arena_stays_bounded(make):
    objects = {f"o{i}": bytes([i]) * (4 * BS) for i in range(10)}
    st, origin, arena = make(objects, size=8 * BS)

    async def main():
        meta0 = await st.meta("o0")
        b = st.pin(meta0, 0)
        await st.wait(b, BS)
        for _rnd in range(3):
            for i in range(1, 10):
                assert await read_all(st, f"o{i}") == objects[f"o{i}"]
                assert arena.used_bytes <= arena.size
        assert st.is_cached(meta0, 0, BS) is True     # pinned: never evicted
        assert bytes(st.view(b, 0, BS)) == objects["o0"][:BS]
        st.release(b)
        s = arena.stats()
        assert s["pinned_chunks"] == 0 and s["used_bytes"] <= 8 * BS
    run(main())


def test_new_version_never_mixes_with_old_blocks(make):
    st, origin, _ = make({"k": DATA}, meta_ttl=0.05)

    async def main():
        assert await read_all(st, "k", 0, BS) == DATA[:BS]
        origin.version = 2
        origin.objects["k"] = b"N" * len(DATA)
        await asyncio.sleep(0.1)                       # metadata expires
        got = await read_all(st, "k", 0, 2 * BS)
        assert got == b"N" * 2 * BS                    # no old block 0 stitched in
    run(main())


def test_mismatch_forgets_metadata(make):
    st, origin, _ = make({"k": DATA})

    async def main():
        await st.meta("k")
        origin.version = 2                             # the object changed behind our back
        with pytest.raises(FillError):
            await read_all(st, "k", 0, BS)
        assert st.meta_cached("k") is None
        assert await read_all(st, "k", 0, BS) == DATA[:BS]
    run(main())


def test_transient_blocks_are_bounded_and_refcounted(make):
    """With every arena block pinned, fills go to transient buffers, at most max_transient alive."""
    st, origin, arena = make({"k": DATA}, size=2 * BS, max_transient=1)

    async def main():
        meta = await st.meta("k")
        held = [st.pin(meta, 0), st.pin(meta, 1)]
        for b in held:
            await st.wait(b, BS)
        t1 = st.pin(meta, 2)                      # no room in the arena: transient
        assert t1.off < 0 and st.counters.transient_fills == 1
        await st.wait(t1, BS)
        assert bytes(st.view(t1, 0, BS)) == DATA[2 * BS:3 * BS]
        t2 = st.pin(meta, 3)
        await asyncio.sleep(0.05)
        assert t2.filled == 0                     # waits: t1 still holds the only transient slot
        assert t1.refs == 1                       # the fill's reference is gone, ours remains
        st.release(t1)
        assert t1.buf is None                     # freed with its last reference
        await st.wait(t2, BS)
        assert bytes(st.view(t2, 0, BS)) == DATA[3 * BS:4 * BS]
        assert not st.is_cached(meta, 2 * BS, 4 * BS)
        st.release(t2)
        for b in held:
            st.release(b)
        await st.settle()
        assert arena.stats()["pinned_chunks"] == 0
    run(main())


def test_cached_objects_survive_an_origin_outage(make):
    """Metadata expired and the origin down: what is cached is still served (stale-if-error)."""
    st, origin, _ = make({"k": DATA}, meta_ttl=0.05)

    async def main():
        assert await read_all(st, "k", 0, BS) == DATA[:BS]
        await st.settle()
        await asyncio.sleep(0.1)                      # metadata expires

        async def down(key):
            raise OriginError("fake", "connection refused")

        origin.stat = down
        assert await read_all(st, "k", 0, BS) == DATA[:BS]   # served from the cache
        assert st.counters.stale_meta == 1
        with pytest.raises(OriginError):
            await st.meta("other")                    # nothing known: the error stands
    run(main())


def test_prefetch_starts_fills_without_leaking_pins(make):
    st, origin, arena = make({"k": DATA})

    async def main():
        meta = await st.meta("k")
        for i in range(1, 4):
            st.prefetch(meta, i)
        st.prefetch(meta, 1)                          # already in flight: nothing new
        assert st.counters.prefetches == 3
        await st.settle()
        assert st.is_cached(meta, BS, 4 * BS) is True
        assert sorted(s for _, s, _ in origin.reads) == [BS, 2 * BS, 3 * BS]
        assert arena.stats()["pinned_chunks"] == 0
        assert await read_all(st, "k", BS, 4 * BS) == DATA[BS:4 * BS]
        assert len(origin.reads) == 3                 # the reader found them cached
    run(main())


def test_cold_object_costs_one_origin_request_to_first_byte(make):
    """Metadata and the first block come from one stat_read; refreshes are plain stats."""
    st, origin, _ = make({"k": DATA}, meta_ttl=0.05)
    calls = []
    real_read = origin.read

    async def stat_read(key, start, end):
        calls.append(("stat_read", start))
        info = origin.info(key)
        return info, real_read(key, info, start, min(end, info.size))

    origin.stat_read = stat_read

    async def main():
        meta = await st.meta("k", first_block=2)
        assert calls == [("stat_read", 2 * BS)] and origin.stats == 0
        assert await read_all(st, "k", 2 * BS, 3 * BS) == DATA[2 * BS:3 * BS]
        assert origin.reads == [("k", 2 * BS, 3 * BS)]        # the block came from that request
        await st.settle()
        assert st.is_cached(meta, 2 * BS, 3 * BS) is True
        await asyncio.sleep(0.1)                             # metadata expires: a plain stat now
        await st.meta("k", first_block=0)
        assert calls == [("stat_read", 2 * BS)] and origin.stats == 1
    run(main())


def test_purge_drops_metadata_and_blocks(make):
    st, origin, arena = make({"a/1": DATA, "a/2": DATA[:BS], "b": DATA[:10]})

    async def main():
        for k in ("a/1", "a/2", "b"):
            await read_all(st, k)
        await st.settle()
        meta = st.meta_cached("a/1")
        pinned = st.pin_ready(meta, 0)
        assert st.purge("a/1") == 6                       # 5 full blocks + the tail
        assert st.meta_cached("a/1") is None and st.is_cached(meta, 0, len(DATA)) is False
        assert bytes(st.view(pinned, 0, 5)) == DATA[:5]   # a reader keeps its bytes...
        st.release(pinned)                                # ...until it lets go
        assert st.purge_prefix("a/") == (1, 1)
        assert st.meta_cached("b") is not None
        reads = len(origin.reads)
        stats = origin.stats
        assert await read_all(st, "a/1", 0, 100) == DATA[:100]
        assert origin.stats == stats + 1 and len(origin.reads) == reads + 1   # fetched fresh
        await st.settle()
        assert arena.stats()["pinned_chunks"] == 0
    run(main())


def test_tenants_share_one_arena_with_their_own_index_and_share(twin, tmp_path):
    """Two storages over one arena (white-label tenants): the same key is two objects, each
    policy stays within its capacity, and a warm restart gives each block back to its tenant
    only (a tenant that is gone loses its blocks)."""
    from edge.cache import restore_index, save_index

    Arena = twin("arena").Arena
    path = str(tmp_path / "arena.bin")
    layout = {"test": 1}
    a_data, b_data = DATA, bytes(reversed(DATA))[:3 * BS]
    objects_b = {"k": b_data, **{f"f{i}": bytes([i]) * BS for i in range(12)}}

    def pair(arena):
        a = Storage(arena, FakeOrigin({"k": a_data}), block_size=BS, capacity=8 * BS, name="a")
        b = Storage(arena, FakeOrigin(objects_b), block_size=BS, capacity=8 * BS, shared_with=a,
                    name="b")
        return a, b

    arena = Arena(16 * BS, BS, min_chunk=1024, path=path)
    a, b = pair(arena)
    assert b._fill_slots is a._fill_slots and b._transient_room is a._transient_room

    async def fill():
        assert await read_all(a, "k") == a_data
        assert await read_all(b, "k") == b_data
        for i in range(12):                    # b alone asks for more than its share
            for _ in range(2):
                await read_all(b, f"f{i}")
        await a.settle()
        await b.settle()
        assert await read_all(a, "k") == a_data     # b's churn never evicted a's blocks
        assert a.is_cached(a.meta_cached("k"), 0, len(a_data)) is True
        assert b.policy.used <= 8 * BS and a.policy.used <= 8 * BS
        return a.blocks, b.blocks

    a_blocks, b_blocks = run(fill())
    assert save_index(str(tmp_path / "index.bin"), layout, {"a": a, "b": b}) == a_blocks + b_blocks
    arena.close()

    arena = Arena(16 * BS, BS, min_chunk=1024, path=path)
    a2, b2 = pair(arena)
    a2.origin.objects.clear()                  # every byte must come from the arena now
    kept, dropped = restore_index(str(tmp_path / "index.bin"), layout, {"a": a2, "b": b2})
    assert (kept, dropped) == (a_blocks + b_blocks, 0)
    assert run(read_all(a2, "k")) == a_data and a2.origin.reads == []
    assert b2.meta_cached("k").size == len(b_data)
    run(a2.settle())
    run(b2.settle())
    assert save_index(str(tmp_path / "index.bin"), layout, {"a": a2, "b": b2}) == kept
    arena.close()

    arena = Arena(16 * BS, BS, min_chunk=1024, path=path)      # tenant b was removed
    a3 = Storage(arena, FakeOrigin({}), block_size=BS, name="a")
    kept, dropped = restore_index(str(tmp_path / "index.bin"), layout, {"a": a3})
    assert (kept, dropped) == (a_blocks, b_blocks)
    tail = arena.chunk_size(arena.class_for(len(a_data) % BS))
    assert arena.stats()["used_bytes"] == (a_blocks - 1) * BS + tail     # b's chunks were freed
    arena.close()


def test_immutable_metadata_is_a_bounded_plain_dict():
    from edge.cache.storage import FifoDict

    d = FifoDict(3)
    for k in "abcd":
        d[k] = k.upper()
    assert list(d) == ["b", "c", "d"]          # the oldest went
    d["c"] = "C2"                               # replacing is not inserting
    assert list(d.items()) == [("b", "B"), ("c", "C2"), ("d", "D")]
    d.pop("b")
    d["e"] = "E"
    assert len(d) == 3 and d.get("a") is None


def test_metadata_ttl_chooses_the_cache(make):
    st, _, _ = make({"k": DATA})
    assert type(st._meta).__name__ == "TTLCache"               # meta_ttl 30 s by default here
    st2, _, _ = make({"k": DATA}, meta_ttl=None)
    assert type(st2._meta).__name__ == "FifoDict"
    run(read_all(st2, "k"))
    assert st2.meta_cached("k") is not None


class _NoReserve:
    """An arena whose memory cannot be re-reserved after zero-copy punches (a full tmpfs)."""

    def __init__(self, arena):
        self._arena = arena

    def __getattr__(self, name):
        return getattr(self._arena, name)

    def alloc(self, nbytes):
        raise OSError(28, "cannot re-reserve 65536 bytes at arena offset 0 after a zero-copy "
                          "punch: No space left on device")


def test_memory_that_cannot_be_reserved_serves_the_block_uncached(make, caplog):
    st, origin, arena = make({"k": DATA})
    st.arena = _NoReserve(arena)

    async def main():
        assert await read_all(st, "k") == DATA
        await st.settle()
        assert st.blocks == 0 and st.counters.transient_fills == 6
        assert st.counters.alloc_failures == 6

    run(main())
    assert "served uncached" in caplog.text and "No space left" in caplog.text
