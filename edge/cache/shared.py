"""SharedStorage: the block cache of one worker over the arena and index all workers share.

Theory of operation
-------------------
``cext/shm`` holds one arena and one block index in shared memory (see its docstring); each
worker attaches as its own worker id and wraps its handle in one :class:`SharedArena`, over
which it builds one :class:`SharedStorage` per tenant. SharedStorage is :class:`Storage` with
the block index moved into shared memory; what stays per worker is what ``Storage`` keeps
besides: object metadata (TTLCache, single-flight stat, stale-if-error, not-found cache), the
transient blocks, fill slots, and the eviction policy.

* Hits: ``lookup_pin`` (no lock in the compiled module) pins the chunk for this worker and
  returns (offset, length, state, filled, generation). One shared pin per Block handed out,
  undone by ``release`` (``unpin``). Block objects are kept per (oid, index, generation) in a
  local map so readers of one block share one object; the generation never repeats, so a
  stale object is never handed out for a newer entry.
* Misses: ``begin_fill`` indexes the block FILLING, owned by this worker (single-flight across
  workers: another worker that misses the same block joins it). The fill task publishes
  progress with ``advance_fill`` as bytes land and makes the block READY with
  ``finish_fill(xxh3-64)`` only when it is exactly complete; any failure calls ``fail_fill``,
  so a failed, short, over-long or mismatched fill is never a hit, in any worker.
* Readers of another worker's fill stream ``[0, filled)`` and wait with ``watch`` (which arms
  one wake-up and reads the progress in one critical section: no lost wake-up). Wake-ups are
  datagrams on the worker's ``wake_fd``, read by the event loop (``add_reader``); every
  remotely waited block is then re-checked with ``status``, and also every ``RECHECK``
  seconds while any is waited on, so a lost datagram can delay a reader, never hang it. A
  block whose entry went away (its fill failed or its worker died) fails its readers with
  FillError, like a local failed fill.
* Eviction: each worker runs the configured policy over the blocks it sees (access on every
  hit; admitted when it fills a block or first sees one), with the tenant's share of the WHOLE
  arena as capacity: SO_REUSEPORT spreads connections evenly, so each worker's sample ranks
  blocks like the whole traffic. Victims leave the shared index with ``evict``, which refuses
  a block any worker pins; a refused victim is retried later (a few, bounded), never spun on.
  When ``begin_fill`` finds no room, the policy is asked for more victims (bounded rounds).
  ``evict_sweep`` (a clock hand over the shared index, evicting unpinned READY blocks) runs
  when those free nothing, first while this worker's policy is not even full (the arena is
  then full of blocks it does not track), and on every 16th round anyway: blocks no live
  policy tracks (a dead worker's) are reclaimed in bounded time, never leaked.
* Purge removes the shared entries whatever their state (``remove``): chunks still pinned are
  freed at their last unpin, so readers keep valid bytes.
"""
from __future__ import annotations

import asyncio
from typing import Any, cast

from origin_clients import Origin, OriginError

from .storage import EXTRA_EVICTION_TRIES, Block, FillError, ObjectMeta, Storage

GONE, FILLING, READY = 0, 1, 2        # entry states as cext/shm reports them
RECHECK = 0.05                        # seconds between re-checks of remotely filled blocks
SWEEP_PROBE = 256                     # index slots one evict_sweep looks at
SWEEP_EVERY = 16                      # eviction rounds per sweep when the policy freed room
RACE_TRIES = 3                        # begin_fill/lookup_pin races before going transient
EVICT_LATER = 64                      # refused victims remembered for a retry
EVICT_RETRIES = 8                     # of those, retried per eviction round


class SharedBlock(Block):
    """A block of the shared index as this worker sees it."""

    __slots__ = ("gen", "local", "open")

    def __init__(self, key: tuple, off: int, length: int, gen: int, local: bool = False) -> None:
        super().__init__(key, off, length)
        self.gen = gen          # entry generation (unique per insert; 0: none known)
        self.local = local      # filled by this worker (its fill task wakes the readers)
        self.open = local       # this worker's fill is still open in the shared index
        # ``refs`` counts this worker's pins through this object (the policy's evictable)


def _advance(block: SharedBlock, state: int, filled: int) -> bool:
    """Apply a remote fill's (state, filled) to ``block``; True if that is news."""
    if state == READY:
        if block.ready:
            return False
        block.filled = block.length
        block.ready = True
        return True
    if state == FILLING:
        if filled <= block.filled:
            return False
        block.filled = filled
        return True
    if block.error is not None or block.ready:
        return False
    block.error = FillError(OriginError(
        "shared cache", "the fill of this block was abandoned (it failed or its worker died)"))
    return True


class SharedArena:
    """One worker's view of the shared region: what Storage needs of an arena (``size``,
    ``page_size``, ``view``, ``stats``) plus the wake-ups of remote fills, for every tenant's
    storage of this worker."""

    shared = True

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.size: int = handle.arena_size
        self.page_size: int = handle.page_size
        self.path: str | None = handle.path
        self.waits: dict[int, SharedBlock] = {}     # id -> block a reader waits on remotely
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def view(self, off: int, length: int) -> memoryview:
        return cast(memoryview, self.handle.view(off, length))

    def watch(self, block: SharedBlock) -> bool:
        """Arm a wake-up for ``block``'s remote fill and read its progress; True if news."""
        oid, idx = block.key
        state, filled = self.handle.watch(oid, idx, block.gen)
        self.waits[id(block)] = block
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.handle.wake_fd, self._on_wake)
        if self._timer is None:
            self._timer = self._loop.call_later(RECHECK, self._on_timer)
        return _advance(block, state, filled)

    def _on_wake(self) -> None:
        self.handle.drain_wakeups()
        self._poll()

    def _on_timer(self) -> None:
        self._timer = None
        self._poll()
        if self.waits and self._loop is not None:
            self._timer = self._loop.call_later(RECHECK, self._on_timer)

    def _poll(self) -> None:
        """Re-check every block readers wait on; wake those that moved. A block nobody waits
        on any more is forgotten (a reader re-arms with ``watch`` before it sleeps again)."""
        status = self.handle.status
        for k, b in list(self.waits.items()):
            if not b.waiters:
                del self.waits[k]
                continue
            state, filled = status(b.key[0], b.key[1], b.gen)
            moved = _advance(b, state, filled)
            if state != FILLING:
                del self.waits[k]
            if moved or b.ready or b.error is not None:
                Storage._wake(b)

    def stats(self) -> dict[str, Any]:
        """The shared arena's occupancy in the format of ``Arena.stats()`` (for metrics)."""
        s = self.handle.stats()
        return {"size": s["arena_size"], "used_bytes": s["used_bytes"],
                "pinned_chunks": s["pinned_chunks"], "entries": s["entries"],
                "classes": [{"chunk_size": k["chunk_size"], "chunks_used": k["chunks_used"],
                             "chunks_free": k["pages"] * (self.page_size // k["chunk_size"])
                             - k["chunks_used"]} for k in s["classes"]]}

    def close(self) -> None:
        """Stop listening for wake-ups and detach (releases this worker's pins and fills)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.handle.wake_fd)
        self._loop = None
        self.handle.close()


class SharedStorage(Storage):
    """The block cache of one worker (one tenant) over the shared arena and index."""

    def __init__(self, arena: SharedArena, origin: Origin, **kw: Any) -> None:
        """As :class:`Storage` (same keywords), over ``arena``; ``capacity`` is this tenant's
        share of the whole shared arena. The block index is the shared one: ``_index`` holds
        only the SharedBlocks this worker's policy tracks."""
        super().__init__(arena, origin, **kw)
        self.shm = arena.handle
        self._evict_later: dict[tuple, None] = {}    # victims a pin kept from eviction
        self._rounds = 0                             # eviction rounds (see _make_room)

    # -- hits -----------------------------------------------------------------------------

    def _pinned(self, bk: tuple, r: tuple[int, int, int, int, int]) -> SharedBlock:
        """The Block for a ``lookup_pin`` result (pinned once for the caller)."""
        off, length, state, filled, gen = r
        b = cast("SharedBlock | None", self._index.get(bk))
        resident = self.policy.access(bk)
        if b is None or b.gen != gen:
            b = SharedBlock(bk, off, length, gen)
            if resident or self._admit(bk, self._weight(length)):
                self._index[bk] = b          # first seen here: this worker's policy ranks it
        if not b.local and _advance(b, state, filled):
            self._wake(b)                    # news for readers already waiting on it here
        b.refs += 1
        return b

    def pin_ready(self, meta: ObjectMeta, idx: int) -> Block | None:
        """Pin and return block ``idx`` if it is cached and ready; None otherwise (no I/O)."""
        r = self.shm.lookup_pin(meta.oid, idx)
        if r is None:
            return None
        if r[2] != READY:
            self.shm.unpin(r[0])
            return None
        self.counters.block_hits += 1
        return self._pinned((meta.oid, idx), r)

    def _pin_indexed(self, bk: tuple) -> Block | None:
        r = self.shm.lookup_pin(bk[0], bk[1])
        if r is None:
            return None
        if r[2] == READY:
            self.counters.block_hits += 1
        return self._pinned(bk, r)

    def _peek(self, bk: tuple) -> int | None:
        """The state of ``bk`` in the shared index, or None (a pin taken and dropped)."""
        r = self.shm.lookup_pin(bk[0], bk[1])
        if r is None:
            return None
        self.shm.unpin(r[0])
        return r[2]

    def _known(self, bk: tuple) -> bool:
        return bk in self._transient or self._peek(bk) is not None

    def _is_ready(self, bk: tuple) -> bool:
        return self._peek(bk) == READY

    def release(self, block: Block) -> None:
        """Undo one pin()."""
        if block.off >= 0:
            block.refs -= 1
            self.shm.unpin(block.off)
        else:
            self._unref(block)

    def _refresh(self, block: Block) -> bool:
        if not isinstance(block, SharedBlock) or block.local:
            return False
        moved = self.arena.watch(block)
        if block.error is not None:
            self._untrack(block)
        return moved

    # -- misses ---------------------------------------------------------------------------

    def _weight(self, length: int) -> int:
        return self.shm.chunk_size(length)

    def _claim(self, meta: ObjectMeta, idx: int, bk: tuple) -> tuple[Block | None, bool]:
        """Index a new FILLING block owned by this worker (pinned for the fill and the
        caller), or join the fill another worker started first (single-flight)."""
        length = meta.block_len(idx)
        weight = self._admit_miss(bk, length)
        if not weight:
            return None, True
        shm, oid = self.shm, meta.oid
        for _ in range(RACE_TRIES):
            off = shm.begin_fill(oid, idx, length)
            tries = 0
            while off == -1 and tries < EXTRA_EVICTION_TRIES:
                tries += 1
                self._make_room(bk, weight)
                off = shm.begin_fill(oid, idx, length)
            if off is None:              # another worker indexed it first: join its fill
                r = shm.lookup_pin(oid, idx)
                if r is not None:
                    return self._pinned(bk, r), False
                continue                 # ... and it went away already: try again
            if off < 0:
                self.counters.alloc_failures += 1
                break
            shm.repin(off)               # the caller's pin (begin_fill's is the fill's)
            block = SharedBlock(bk, off, length, shm.fill_gen(off), local=True)
            block.refs = 2
            self._index[bk] = block
            return block, True
        self.policy.remove(bk)
        return None, True

    def _make_room(self, bk: tuple, weight: int) -> None:
        """One bounded round of eviction for a block of ``weight`` bytes (already admitted).

        While this worker's policy has room for more, the arena is full of blocks it does not
        track (others', or a dead worker's that no live policy will evict): the clock sweep
        goes first. Otherwise the policy's victims go, and the sweep follows when they freed
        nothing, and on every ``SWEEP_EVERY``-th round anyway, so blocks no live policy
        tracks are reclaimed within a bounded number of rounds even when every policy is
        full (a small share of evictions that ignores the policy's ranking)."""
        policy = self.policy
        self._rounds += 1
        freed = False
        for v in list(self._evict_later)[:EVICT_RETRIES]:
            del self._evict_later[v]
            if v not in self._index and self.shm.evict(v[0], v[1]):
                self.counters.evictions += 1
                freed = True
        if policy.used + weight <= policy.capacity and self._sweep(weight):
            return
        for victim in policy.evict(weight):
            if victim != bk and self._drop(victim):
                freed = True
        if not freed or self._rounds % SWEEP_EVERY == 0:
            self._sweep(weight)

    def _sweep(self, weight: int) -> bool:
        swept = self.shm.evict_sweep(SWEEP_PROBE, weight)
        for v in swept:
            self.counters.evictions += 1
            if self._index.pop(v, None) is not None:
                self.policy.remove(v)
        return bool(swept)

    def _evictable(self, bk: Any) -> bool:
        b = self._index.get(bk)
        return b is None or b.error is not None or (b.ready and b.refs == 0)

    def _drop(self, bk: Any) -> bool:
        """Evict a victim of the policy from the shared index (refused while any worker
        pins it: then retried in a later round)."""
        b = self._index.pop(bk, None)
        if self.shm.evict(bk[0], bk[1]):
            self.counters.evictions += 1
            return True
        if b is not None and b.ready:
            self._evict_later[bk] = None
            if len(self._evict_later) > EVICT_LATER:
                del self._evict_later[next(iter(self._evict_later))]
        return False

    def _untrack(self, block: Block) -> None:
        if self._index.get(block.key) is block:
            del self._index[block.key]
            self.policy.remove(block.key)

    def _purge_block(self, bk: tuple) -> bool:
        b = self._index.pop(bk, None)
        if b is not None:
            self.policy.remove(bk)
        self._evict_later.pop(bk, None)
        return self.shm.remove(bk[0], bk[1])

    # -- this worker's fills --------------------------------------------------------------

    def _landed(self, block: Block) -> None:
        if isinstance(block, SharedBlock) and block.open:
            if not self.shm.advance_fill(block.off, block.filled):
                self._untrack(block)     # purged meanwhile: only our own readers go on
        self._wake(block)

    def _complete(self, block: Block, checksum: int) -> None:
        if isinstance(block, SharedBlock) and block.open:
            block.open = False
            if not self.shm.finish_fill(block.off, checksum):
                self._untrack(block)
        super()._complete(block, checksum)

    def _unindex(self, block: Block) -> None:
        self._untrack(block)
        if isinstance(block, SharedBlock) and block.open:
            block.open = False
            self.shm.fail_fill(block.off)   # freed at the last unpin, whoever holds it
