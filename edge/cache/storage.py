"""Storage: object metadata and a block map over the arena, filled from the origin.

Theory of operation
-------------------
An object (one version of one key, identified by its strong ETag) is cut into fixed-size
blocks; block ``i`` covers bytes ``[i*B, min((i+1)*B, size))``. A block is cached under
``(oid, i)`` where ``oid`` is the xxh3-128 of (key, ETag), so two versions never share a block
(of (tenant, key, ETag) for a named tenant, so tenants never share one either).

* A request pins every block it hands to the socket (arena refcount) and releases it once the
  kernel holds the bytes; the eviction policy is told a pinned block is not evictable, and the
  arena defers freeing anything still pinned. Nothing pinned is ever reused.
* A missing block starts exactly one fill (single-flight): the block is allocated and indexed
  in state FILLING, and one task copies the origin's bytes into it. Readers of a filling block
  stream its bytes as they land, woken by futures (no polling). The fill is its own task, so it
  finishes even when the client that started it goes away.
* Only a fill that delivered exactly the block's length, with the validator unchanged, becomes
  READY (a hit). A failed, short, over-long or mismatched fill is removed from the index and the
  policy and its memory freed (deferred until its readers unpin): it never becomes a hit.
* When the policy does not admit a block (TinyLFU rejection, or no memory after a bounded
  number of extra evictions), the block is *transient*: filled into a private buffer, shared by
  the readers that want it while it lives, never indexed. Transient blocks are refcounted like
  arena pins (a slow client keeps one alive until the kernel took its bytes) and at most
  ``max_transient`` of them live at once; a fill that needs one waits for room before it takes
  one of the ``max_fills`` fill slots. Memory outside the arena is therefore bounded by
  ``max_transient * block_size``, however many clients there are.

Object metadata (size, ETag, Last-Modified) is kept in a cachetools TTLCache (``meta_ttl``;
None: objects are immutable, known metadata is never re-asked unless purged) and
looked up once at a time per key (single-flight too); "not found" is remembered briefly.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import cachetools
import xxhash

from eviction import make_policy
from origin_clients import NotFound, ObjectInfo, Origin, OriginError, ValidatorMismatch

log = logging.getLogger("edge.cache")

EXTRA_EVICTION_TRIES = 4   # bounded retries when the arena is fragmented
INDEX_MAGIC = b"EDGEIDX\x01"
INDEX_VERSION = 2
_RECORD = struct.Struct("<16sIQIQH")   # oid, block index, arena offset, length, xxh3-64, tenant no.
NEGATIVE_TTL = 2.0         # seconds a "not found" is remembered
META_MAX = 65536           # objects whose metadata is kept


class FifoDict(dict):
    """A dict of at most ``maxsize`` items that drops its oldest insertion beyond that.

    For metadata that never expires: lookups are plain ``dict.get`` (no bookkeeping on the
    hit path); an object pushed out is simply asked of the origin again.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and len(self) >= self.maxsize:
            del self[next(iter(self))]
        super().__setitem__(key, value)


async def _nothing() -> AsyncIterator[bytes]:
    """No bytes (a taken-over fill whose bytes had all landed)."""
    return
    yield b""


async def _aclose(it: AsyncIterator[bytes]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:   # closing a broken response: nothing left to learn from it
            pass


class FillError(Exception):
    """A block fill failed; readers of that block must abort their response."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ObjectMeta:
    """One version of an object as the cache sees it.

    ``ns`` (a tenant's name) namespaces the oid: xxh3-128 of ns NUL key NUL etag; the empty
    namespace keeps the plain key NUL etag (what warm-restart indexes of one tenant hold).
    """

    __slots__ = ("key", "info", "oid", "size", "etag", "last_modified", "nblocks", "block_size")

    def __init__(self, key: str, info: ObjectInfo, block_size: int, ns: bytes = b"") -> None:
        self.key = key
        self.info = info
        self.size = info.size
        self.etag = info.etag
        self.last_modified = info.last_modified
        self.block_size = block_size
        self.nblocks = (info.size + block_size - 1) // block_size
        name = key.encode("utf-8", "surrogateescape") + b"\0" + info.etag
        self.oid = xxhash.xxh3_128_digest(ns + b"\0" + name if ns else name)

    def block_len(self, idx: int) -> int:
        return min(self.block_size, self.size - idx * self.block_size)


class Block:
    """A cached or in-flight block. ``off`` is its arena offset (-1 when transient)."""

    __slots__ = ("key", "off", "length", "filled", "ready", "error", "waiters", "checksum", "buf",
                 "refs")

    def __init__(self, key: tuple, off: int, length: int) -> None:
        self.key = key
        self.off = off
        self.length = length
        self.filled = 0                 # bytes landed so far
        self.ready = False              # filled completely and verified
        self.error: FillError | None = None
        self.waiters: list[asyncio.Future] = []
        self.checksum = 0               # xxh3-64 of the block once ready
        self.buf: bytearray | None = None  # transient blocks only
        self.refs = 0                   # transient blocks only: readers + the fill


@dataclass
class Counters:
    """Plain counters; metrics export reads them."""

    block_hits: int = 0
    block_misses: int = 0
    fills: int = 0
    fill_failures: int = 0
    transient_fills: int = 0
    alloc_failures: int = 0
    evictions: int = 0
    origin_bytes: int = 0
    meta_lookups: int = 0
    stale_meta: int = 0
    prefetches: int = 0
    purges: int = 0
    waiting: int = 0          # a gauge: readers waiting on fills right now
    extra: dict[str, int] = field(default_factory=dict)


class Storage:
    """The block cache of one worker: arena + eviction policy + origin."""

    def __init__(
        self,
        arena: Any,
        origin: Origin,
        *,
        block_size: int,
        policy: str = "wtinylfu",
        meta_ttl: float | None = 30.0,
        max_fills: int = 64,
        max_transient: int = 16,
        capacity: int | None = None,
        shared_with: Storage | None = None,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``capacity``: the arena bytes this storage's policy manages (default: the whole
        arena). ``shared_with``: another Storage over the same arena whose fill slots and
        transient-memory bound this one shares (tenants: the bounds stay the machine's);
        then ``max_fills`` and ``max_transient`` are ignored. Any storage of such a group
        may release any block of the group (``release`` only touches the shared parts).
        """
        if block_size != arena.page_size:
            raise ValueError("block_size must equal the arena page size")
        if shared_with is not None and shared_with.arena is not arena:
            raise ValueError("shared_with must use the same arena")
        self.arena: Any = arena
        self.origin = origin
        self.block_size = block_size
        self.name = name
        self.ns = name.encode()          # namespaces this tenant's oids
        self.capacity = arena.size if capacity is None else min(capacity, arena.size)
        self.policy = make_policy(policy, self.capacity, evictable=self._evictable, block_size=block_size)
        self.counters = Counters()
        self._index: dict[tuple, Block] = {}
        self._transient: dict[tuple, Block] = {}
        ttl = float("inf") if meta_ttl is None else meta_ttl
        # Immutable objects (no meta_ttl): a bounded plain dict, whose get() is the hit path's
        # cheapest lookup; otherwise a TTLCache that forgets after meta_ttl.
        self._meta: Any = (FifoDict(META_MAX) if meta_ttl is None
                           else cachetools.TTLCache(META_MAX, ttl, timer=clock))
        self._missing: cachetools.TTLCache = cachetools.TTLCache(
            65536, min(NEGATIVE_TTL, ttl), timer=clock
        )
        # Last known metadata, served when the origin cannot be asked (stale-if-error).
        self._stale: cachetools.LRUCache = cachetools.LRUCache(65536)
        self._meta_inflight: dict[str, asyncio.Future] = {}
        self._fill_slots: asyncio.Semaphore
        self._transient_room: asyncio.Semaphore
        if shared_with is not None:
            self._fill_slots = shared_with._fill_slots
            self._transient_room = shared_with._transient_room
        else:
            self._fill_slots = asyncio.Semaphore(max_fills)
            self._transient_room = asyncio.Semaphore(max_transient)
        self._tasks: set[asyncio.Task] = set()

    # -- metadata -------------------------------------------------------------------------

    def meta_cached(self, key: str) -> ObjectMeta | None:
        """The cached metadata of ``key``, or None (no I/O)."""
        return self._meta.get(key)

    async def meta(self, key: str, first_block: int | None = None) -> ObjectMeta:
        """Metadata of ``key``, asking the origin at most once at a time. Raises NotFound/OriginError.

        ``first_block``: the block the caller will read first. For an object never seen
        before, the origin is then asked for metadata and that block in one request
        (``stat_read``), and the block's fill starts from that response: one round-trip to
        the first byte instead of two.
        """
        m = self._meta.get(key)
        if m is not None:
            return m
        if key in self._missing:
            raise NotFound(self.origin.name, f"no object {key!r}")
        fut = self._meta_inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._meta_inflight[key] = fut
        try:
            self.counters.meta_lookups += 1
            first: AsyncIterator[bytes] | None = None
            try:
                if first_block is not None and key not in self._stale:
                    start = first_block * self.block_size
                    info, first = await self.origin.stat_read(key, start, start + self.block_size)
                else:
                    info = await self.origin.stat(key)
            except NotFound:
                self._stale.pop(key, None)
                raise
            except OriginError as exc:
                m = self._stale.get(key)
                if m is None:
                    raise
                log.warning("origin unavailable for %r, serving what is cached: %s", key, exc)
                self.counters.stale_meta += 1
                fut.set_result(m)
                return m
            old = self._stale.get(key)
            m = (old if old is not None and old.info == info
                 else ObjectMeta(key, info, self.block_size, self.ns))
            self._meta[key] = m
            self._stale[key] = m
            if first is not None:
                self._adopt_first(m, first_block, first)   # type: ignore[arg-type]
            fut.set_result(m)
            return m
        except BaseException as exc:
            if isinstance(exc, NotFound):
                self._missing[key] = True
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            del self._meta_inflight[key]

    def _adopt_first(self, meta: ObjectMeta, idx: int, first: AsyncIterator[bytes]) -> None:
        """Fill block ``idx`` from an already open origin response (see ``meta``)."""
        bk = (meta.oid, idx)
        if idx >= meta.nblocks or self._known(bk):
            self._spawn(_aclose(first))          # not needed after all: let it go
            return
        self.counters.block_misses += 1
        self.release(self._start_fill(meta, idx, bk, source=first))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def purge(self, key: str) -> int:
        """Drop ``key``'s metadata and every cached block of its known versions.

        The next request asks the origin afresh. Blocks being sent stay valid for their
        readers (the arena frees them on the last unpin). Returns the blocks dropped.
        """
        metas = {m for m in (self._meta.get(key), self._stale.get(key)) if m is not None}
        self.forget(key)
        dropped = 0
        for m in metas:
            for idx in range(m.nblocks):
                if self._purge_block((m.oid, idx)):
                    dropped += 1
        self.counters.purges += 1
        return dropped

    def _purge_block(self, bk: tuple) -> bool:
        b = self._index.pop(bk, None)
        if b is None:
            return False
        self.policy.remove(bk)
        self.arena.free(b.off)
        return True

    def purge_prefix(self, prefix: str) -> tuple[int, int]:
        """``purge`` every object whose key starts with ``prefix``; (objects, blocks) dropped."""
        keys = {k for k in list(self._stale.keys()) + list(self._meta.keys()) if k.startswith(prefix)}
        return len(keys), sum(self.purge(k) for k in keys)

    def forget_all_meta(self) -> None:
        """Ask the origins again for every object (after the origins changed). Blocks stay:
        an unchanged object keeps its ETag, hence its blocks."""
        self._meta.clear()
        self._missing.clear()

    def forget(self, key: str) -> None:
        """Drop the metadata of ``key`` so the next request asks the origin again."""
        self._meta.pop(key, None)
        self._missing.pop(key, None)
        self._stale.pop(key, None)

    # -- blocks ---------------------------------------------------------------------------

    def _evictable(self, bk: Any) -> bool:
        b = self._index.get(bk)
        return b is None or (b.ready and self.arena.pins(b.off) == 0)

    def _known(self, bk: tuple) -> bool:
        """Indexed (ready or filling) or in flight as a transient block."""
        return bk in self._index or bk in self._transient

    def _is_ready(self, bk: tuple) -> bool:
        b = self._index.get(bk)
        return b is not None and b.ready

    def is_cached(self, meta: ObjectMeta, start: int, end: int) -> bool | None:
        """True if every block of ``[start, end)`` is ready, False if none is, None if some are."""
        if end <= start:
            return True
        bs = self.block_size
        first, last = start // bs, (end - 1) // bs
        ready, oid = self._is_ready, meta.oid
        n = 0
        for i in range(first, last + 1):
            if ready((oid, i)):
                n += 1
        if n == last - first + 1:
            return True
        return False if n == 0 else None

    def pin_ready(self, meta: ObjectMeta, idx: int) -> Block | None:
        """Pin and return block ``idx`` if it is cached and ready; None otherwise (no I/O)."""
        bk = (meta.oid, idx)
        b = self._index.get(bk)
        if b is None or not b.ready:
            return None
        self.arena.pin(b.off)
        self.policy.access(bk)
        self.counters.block_hits += 1
        return b

    def read_small(self, meta: ObjectMeta, prefix: bytes) -> bytes | None:
        """``prefix`` + the whole object, copied, if it lies in block 0 and that block is ready
        (a hit, counted as pin_ready counts it); None otherwise (no I/O). For small bodies
        one copied buffer is cheaper than a writev of the head and a pinned view."""
        b = self.pin_ready(meta, 0)
        if b is None:
            return None
        out = prefix + self.view(b, 0, meta.size)
        self.release(b)
        return out

    def pin(self, meta: ObjectMeta, idx: int) -> Block:
        """Pin block ``idx``: cached, being filled, or a fill started now (single-flight)."""
        bk = (meta.oid, idx)
        b = self._pin_indexed(bk)
        if b is not None:
            return b
        b = self._transient.get(bk)
        if b is not None:
            b.refs += 1
            return b
        self.counters.block_misses += 1
        return self._start_fill(meta, idx, bk)

    def _pin_indexed(self, bk: tuple) -> Block | None:
        """Pin the indexed block ``bk`` (ready or filling), or None (no I/O)."""
        b = self._index.get(bk)
        if b is not None:
            self.arena.pin(b.off)
            self.policy.access(bk)
            if b.ready:
                self.counters.block_hits += 1
        return b

    def prefetch(self, meta: ObjectMeta, idx: int) -> None:
        """Start filling block ``idx`` if it is neither cached nor in flight (read-ahead)."""
        bk = (meta.oid, idx)
        if self._known(bk):
            return
        self.counters.prefetches += 1
        b = self._start_fill(meta, idx, bk)
        self.release(b)   # _start_fill pins for a caller; read-ahead has none

    def release(self, block: Block) -> None:
        """Undo one pin()."""
        if block.off >= 0:
            self.arena.unpin(block.off)
        else:
            self._unref(block)

    def _unref(self, block: Block) -> None:
        block.refs -= 1
        if block.refs == 0 and block.buf is not None:
            block.buf = None
            self._transient_room.release()

    def view(self, block: Block, start: int, end: int) -> memoryview:
        """Bytes ``[start, end)`` of a pinned block (no copy)."""
        if block.off >= 0:
            if start == 0:                  # one view, not a slice of a view of the block
                return self.arena.view(block.off, end)
            return self.arena.view(block.off, block.length)[start:end]
        assert block.buf is not None
        return memoryview(block.buf)[start:end]

    @staticmethod
    def available(block: Block) -> int:
        """Bytes of ``block`` a reader may send now: all once verified, else all but the last.

        Holding back the last byte until the fill is verified (exact length, validator
        unchanged) means a response never completes with an unverified block.
        """
        if block.ready:
            return block.length
        return min(block.filled, block.length - 1)

    async def wait(self, block: Block, need: int) -> None:
        """Wait until ``available(block) >= need``. Raises FillError if the fill failed first."""
        if block.ready:
            return
        loop = asyncio.get_running_loop()
        self.counters.waiting += 1
        try:
            while self.available(block) < need:
                if block.error is not None:
                    raise block.error
                if self._refresh(block):
                    continue
                fut = loop.create_future()
                block.waiters.append(fut)
                await fut
        finally:
            self.counters.waiting -= 1

    def _refresh(self, block: Block) -> bool:
        """Before a reader sleeps on ``block``: True if it progressed meanwhile (a fill in
        this process wakes its readers itself: nothing to look at)."""
        return False

    def _drop(self, bk: Any) -> bool:
        """Evict a victim of the policy; True if it was indexed."""
        b = self._index.pop(bk, None)
        if b is None:
            return False
        self.counters.evictions += 1
        self.arena.free(b.off)   # deferred by the arena while pinned
        return True

    def _start_fill(self, meta: ObjectMeta, idx: int, bk: tuple,
                    source: AsyncIterator[bytes] | None = None) -> Block:
        block, new = self._claim(meta, idx, bk)
        if not new:                  # someone else's fill of it, joined (shared storage)
            assert block is not None
            if source is not None:
                self._spawn(_aclose(source))
            return block
        if block is None:
            block = Block(bk, -1, meta.block_len(idx))
            block.refs = 2           # the fill's and the caller's
            self._transient[bk] = block
            self.counters.transient_fills += 1
        self.counters.fills += 1
        self._spawn(self._fill(meta, idx, block, source))
        return block

    def _admit_miss(self, bk: tuple, length: int) -> int:
        """The policy's say on a missing block: its weight if admitted, 0 if not."""
        policy = self.policy
        if policy.access(bk):           # the request counts; a stale entry (not indexed) goes
            policy.remove(bk)
        weight = self._weight(length)
        return weight if self._admit(bk, weight) else 0

    def _weight(self, length: int) -> int:
        return self.arena.chunk_size(self.arena.class_for(length))

    def _admit(self, bk: tuple, weight: int) -> bool:
        """Admit ``bk`` to the policy and drop its victims; False if it was refused."""
        admitted = True
        for v in self.policy.admit(bk, weight):
            if v == bk:
                admitted = False
            else:
                self._drop(v)
        return admitted

    def _claim(self, meta: ObjectMeta, idx: int, bk: tuple) -> tuple[Block | None, bool]:
        """Index a new block for a fill, pinned for the fill and the caller: (block, True);
        (None, True) when it is not admitted or finds no memory (the fill is transient)."""
        length = meta.block_len(idx)
        weight = self._admit_miss(bk, length)
        if not weight:
            return None, True
        arena = self.arena
        try:
            off = arena.alloc(length)
            tries = 0
            while off < 0 and tries < EXTRA_EVICTION_TRIES:
                tries += 1
                for v in self.policy.evict(weight):
                    if v != bk:
                        self._drop(v)
                off = arena.alloc(length)
        except OSError as exc:      # memory punched after a sendfile could not be re-reserved
            log.warning("cannot cache block %d of %s: %s; served uncached", idx, meta.key, exc)
            off = -1
        if off < 0:
            self.counters.alloc_failures += 1
            self.policy.remove(bk)
            return None, True
        block = Block(bk, off, length)
        arena.pin(off)           # the fill's own pin
        arena.pin(off)           # the caller's pin
        self._index[bk] = block
        return block, True

    @staticmethod
    def _wake(block: Block) -> None:
        waiters, block.waiters = block.waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def _fill(self, meta: ObjectMeta, idx: int, block: Block,
                    source: AsyncIterator[bytes] | None = None) -> None:
        start = idx * self.block_size
        end = start + block.length
        view: memoryview | None = None
        try:
            if block.off < 0:
                await self._transient_room.acquire()   # before a fill slot: no slot waits on room
                block.buf = bytearray(block.length)
                if block.refs <= 1:        # every reader left while we waited: nothing to do
                    return                 # (finally gives the buffer and its room back)
            async with self._fill_slots:
                view = (self.arena.view(block.off, block.length) if block.off >= 0
                        else memoryview(block.buf))   # type: ignore[arg-type]
                # 0, or where the fill of a dead worker stopped (taken over: shared.py)
                pos = block.filled
                if source is None and pos < block.length:
                    source = self.origin.read(meta.key, meta.info, start + pos, end)
                async for chunk in source or _nothing():
                    n = len(chunk)
                    if pos + n > block.length:
                        raise OriginError(self.origin.name, f"over-long read of {meta.key!r}")
                    view[pos:pos + n] = chunk
                    chunk = b""    # copied: hold no origin chunk while the next one is read
                    pos += n
                    block.filled = pos
                    self.counters.origin_bytes += n
                    self._landed(block)
                if pos != block.length:
                    raise OriginError(
                        self.origin.name, f"short read of {meta.key!r}: {pos} of {block.length} bytes"
                    )
                self._complete(block, xxhash.xxh3_64_intdigest(view))
        except BaseException as exc:
            self._fail(meta, block, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            if source is not None:
                await _aclose(source)
            if view is not None:
                view.release()
            self._transient.pop(block.key, None)
            self.release(block)          # the fill's own pin
            self._wake(block)

    def _landed(self, block: Block) -> None:
        """More bytes of ``block`` landed (``block.filled``): wake its readers."""
        self._wake(block)

    def _complete(self, block: Block, checksum: int) -> None:
        """``block`` is filled exactly and verified: a hit from now on."""
        block.checksum = checksum
        block.ready = True

    def _fail(self, meta: ObjectMeta, block: Block, exc: BaseException) -> None:
        self.counters.fill_failures += 1
        block.error = FillError(exc)
        if isinstance(exc, ValidatorMismatch):
            self.forget(meta.key)
        if block.off >= 0:
            self._unindex(block)
        level = logging.WARNING if isinstance(exc, Exception) else logging.DEBUG
        log.log(level, "fill of %r block %d failed: %s", meta.key, block.key[1], exc)

    def _unindex(self, block: Block) -> None:
        """A failed fill's block leaves the index and the policy: never a hit."""
        if self._index.get(block.key) is block:
            del self._index[block.key]
            self.policy.remove(block.key)
            self.arena.free(block.off)   # deferred until readers (and the fill) unpin

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def blocks(self) -> int:
        return len(self._index)

    async def settle(self) -> None:
        """Wait until no fill is in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel fills in flight and wait for them."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# -- warm restart ---------------------------------------------------------------------------

def save_index(path: str, layout: dict[str, Any], storages: dict[str, Storage]) -> int:
    """Write the ready blocks of ``storages`` (tenant name -> storage, all over one arena)
    and their objects' metadata to ``path`` (atomically).

    Format: ``INDEX_MAGIC``, a 4-byte header length, a JSON header (layout, tenant names, and
    per tenant its objects), then one 42-byte record per block: oid, block index, offset,
    length, xxh3-64, tenant number. Returns the number of blocks written. Called at clean
    shutdown only, so its existence is the clean-shutdown flag.
    """
    names = sorted(storages)
    records = []
    objects: dict[str, list] = {}
    for no, name in enumerate(names):
        st = storages[name]
        metas = {m.oid: m for m in list(st._stale.values()) + list(st._meta.values())}
        for (oid, idx), b in st._index.items():
            if b.ready and oid in metas:
                records.append((oid, idx, b.off, b.length, b.checksum, no))
        objects[name] = [meta_record(m) for m in metas.values()]
    write_index_file(path, layout, names, objects, records)
    return len(records)


def meta_record(m: ObjectMeta) -> list:
    """An object's metadata as saved for a warm restart: [oid hex, key, size, ETag, mtime]."""
    return [m.oid.hex(), m.key, m.size, m.etag.decode("latin-1"), m.last_modified]


def meta_from_record(rec: list, block_size: int, tenant: str) -> ObjectMeta | None:
    """The ObjectMeta a ``meta_record`` describes, under ``tenant``; None if the record is
    malformed or its oid is not the one derived from (tenant, key, ETag) -- corruption, or
    an object of another tenant."""
    try:
        oid_hex, key, size, etag, lm = rec[:5]
        m = ObjectMeta(key, ObjectInfo(size=int(size), etag=etag.encode("latin-1"),
                                       last_modified=lm), block_size, tenant.encode())
    except (ValueError, TypeError, AttributeError, UnicodeError):
        return None
    return m if m.oid.hex() == oid_hex and m.size >= 0 else None


def write_index_file(path: str, layout: dict[str, Any], names: list[str],
                     objects: dict[str, list], records: list[tuple]) -> None:
    """Write a warm-restart index atomically (tmp file, fsync, rename): ``INDEX_MAGIC``, a
    4-byte header length, the JSON header (version, layout, tenant names, per tenant its
    ``meta_record``s), then one ``_RECORD`` per block (oid, block index, offset, length,
    xxh3-64, tenant number)."""
    header = json.dumps({"version": INDEX_VERSION, "layout": layout, "tenants": names,
                         "objects": objects}).encode()
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(INDEX_MAGIC + struct.pack("<I", len(header)) + header)
        f.write(b"".join(_RECORD.pack(*r) for r in records))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_index_file(path: str, layout: dict[str, Any]) -> tuple[list[str], dict, list] | None:
    """Consume (rename to PATH.used) and parse what ``write_index_file`` wrote: (tenant
    names, objects per tenant, block records), or None when there is none or it does not
    describe ``layout`` (another magic, version or layout, truncated: logged). Consuming it
    first means a crash from here on starts cold."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    os.replace(path, f"{path}.used")
    try:
        if data[:len(INDEX_MAGIC)] != INDEX_MAGIC:
            raise ValueError("not an edge index (magic)")
        (hlen,) = struct.unpack_from("<I", data, len(INDEX_MAGIC))
        start = len(INDEX_MAGIC) + 4
        header = json.loads(data[start:start + hlen])
        if header.get("version") != INDEX_VERSION:
            raise ValueError(f"index version {header.get('version')!r}, expected {INDEX_VERSION}")
        if header.get("layout") != layout:
            raise ValueError(f"the layout changed: {header.get('layout')} -> {layout}")
        body = data[start + hlen:]
        if len(body) % _RECORD.size:
            raise ValueError("truncated block records")
        names = [str(n) for n in header["tenants"]]
        objects = dict(header["objects"])
    except (ValueError, struct.error, KeyError, TypeError) as exc:
        log.warning("warm restart: ignoring %s: %s", path, exc)
        return None
    return names, objects, list(_RECORD.iter_unpack(body))


def restore_index(path: str, layout: dict[str, Any], storages: dict[str, Storage]) -> tuple[int, int]:
    """Re-attach what ``save_index`` wrote to the storages of the same tenant names, fail-closed;
    returns (blocks kept, dropped).

    The index file is consumed (renamed away) first, so a crash after this point starts
    cold. Anything doubtful is dropped, never served: another magic, version or layout
    drops everything; a block whose tenant is gone, whose chunk the arena refuses, whose
    object is unknown, or whose bytes no longer hash to the recorded xxh3-64 is dropped on
    its own. A block comes back only into the storage of the tenant that saved it.
    """
    saved = read_index_file(path, layout)
    if saved is None:
        return 0, 0
    names, objects, records = saved
    any_storage = next(iter(storages.values()))
    arena, block_size = any_storage.arena, any_storage.block_size
    metas: dict[tuple[int, bytes], ObjectMeta] = {}
    for no, name in enumerate(names):
        if name not in storages:
            continue                    # a tenant no longer configured: its blocks go
        for rec in objects.get(name, []):
            m = meta_from_record(rec, block_size, name)
            if m is not None:           # the oid is derived: a mismatch means corruption
                metas[(no, m.oid)] = m
    wanted = []
    for oid, idx, off, length, checksum, no in records:
        owner = metas.get((no, oid))
        if owner is not None and 0 <= idx < owner.nblocks and owner.block_len(idx) == length:
            wanted.append((oid, idx, off, length, checksum, no))
    refused = set(arena.adopt([(off, length) for _, _, off, length, _, _ in wanted]))
    kept = 0
    dropped = len(records) - len(wanted)
    for oid, idx, off, length, checksum, no in wanted:
        st = storages[names[no]]
        if off in refused:
            dropped += 1
            continue
        view = arena.view(off, length)
        ok = xxhash.xxh3_64_intdigest(view) == checksum
        view.release()
        bk = (oid, idx)
        if ok and bk not in st._index:
            if st._admit(bk, st._weight(length)):
                b = Block(bk, off, length)
                b.filled = length
                b.checksum = checksum
                b.ready = True
                st._index[bk] = b
                kept += 1
                continue
        arena.free(off)
        dropped += 1
    for (no, _), m in metas.items():
        st = storages[names[no]]
        st._meta[m.key] = m
        st._stale[m.key] = m
    return kept, dropped
