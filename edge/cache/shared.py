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
  undone by ``release`` (``unpin``). Block objects are kept per (oid, index, generation) in
  local maps (``_index``: the blocks this worker's policy ranks; ``_seen``: others' it served
  lately) so readers of one block share one object; the generation never repeats, so a stale
  object is never handed out for a newer entry.
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
  block whose entry went away (its fill failed, or it was purged) fails its readers with
  FillError, like a local failed fill.
* Re-election: if the filling worker dies, the supervisor's ``recover_worker`` orphans each
  of its fills another worker reads (kept FILLING with what landed). A reader here sees
  ORPHANED, takes the fill over with ``take_fill`` (one winner across workers) and continues
  it with this worker's own fill task from the byte where it stopped (``_take_over``); every
  reader, here or elsewhere, goes on with correct bytes.
* Eviction: each worker runs the configured policy over the blocks it filled (admitted at
  its fills; a warm restart's blocks are spread over the workers by hash), with the tenant's
  share of the WHOLE arena as capacity, and counts in it every access it serves (``access``
  on every hit, whoever filled the block): SO_REUSEPORT spreads connections evenly, so each
  worker's sketch ranks like the whole traffic, and each block is ranked by exactly one
  policy (a block was once also admitted by every worker that served it: each hit could
  then evict, and the overlapping policies were never full, so the arena filled first and
  eviction fell to the clock sweep: a 0.54 hit ratio on bench/compare.py's Zipf mix against
  0.59 now and 0.68 with one worker, bench/RESULTS.md). A victim of the policy stays cached
  (``_soft``) until its memory is wanted: when ``begin_fill`` finds no room, those go first,
  oldest first (``evict`` by generation, refused while any worker pins it: retried later),
  then new victims of the policy (bounded rounds); a hit on one ranks it again.
  ``evict_sweep`` (a clock hand over the shared index, evicting unpinned READY blocks) runs
  when those free nothing, on every 16th round anyway, and first for a worker whose policy
  ranks far less than a fair share (just restarted): blocks no live policy tracks (a dead
  worker's) are reclaimed in bounded time, never leaked.
* Purge removes the shared entries whatever their state (``remove``): chunks still pinned are
  freed at their last unpin, so readers keep valid bytes.

Warm restart (several workers)
------------------------------
The block index lives in the region, the object metadata in each worker. At a clean stop
every worker writes its metadata (``save_worker_meta``, every tenant) before it detaches;
once all are gone the supervisor merges them and writes the READY blocks of the region with
their tenant (``save_shared_index``: the same file format, magic, version and checks as the
one-worker ``save_index``; a block whose object no worker knows is left out). At the next
start with the same layout the supervisor consumes that file first, creates the region
keeping the arena's bytes, ``adopt``s the blocks at their offsets and re-hashes each one
(xxh3-64) before any worker attaches (``restore_shared_index``); whatever is doubtful is
dropped. Each worker then loads the restored metadata and ranks the restored blocks
(``SharedStorage.restore``), so every worker serves them as hits.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, cast

import xxhash

from origin_clients import Origin, OriginError

from .storage import (
    EXTRA_EVICTION_TRIES,
    Block,
    FifoDict,
    FillError,
    ObjectMeta,
    Storage,
    meta_from_record,
    meta_record,
    read_index_file,
    write_index_file,
)

log = logging.getLogger("edge.cache")

GONE, FILLING, READY, ORPHANED = 0, 1, 2, 3   # entry states as cext/shm reports them
RECHECK = 0.05                        # seconds between re-checks of remotely filled blocks
SEEN_MAX = 4096                       # SharedBlocks of other workers' fills kept for sharing
SWEEP_PROBE = 256                     # index slots one evict_sweep looks at
SWEEP_EVERY = 16                      # eviction rounds per sweep when the policy freed room
RACE_TRIES = 3                        # begin_fill/lookup_pin races before going transient
SOFT_MAX = 1 << 16                    # policy victims kept cached until their memory is wanted
SOFT_TRIES = 32                       # of those, looked at per eviction round


class SharedBlock(Block):
    """A block of the shared index as this worker sees it."""

    __slots__ = ("gen", "local", "open", "orphan", "meta")

    def __init__(self, key: tuple, off: int, length: int, gen: int, local: bool = False) -> None:
        super().__init__(key, off, length)
        self.gen = gen          # entry generation (unique per insert; 0: none known)
        self.local = local      # filled by this worker (its fill task wakes the readers)
        self.open = local       # this worker's fill is still open in the shared index
        self.orphan = False     # its filling worker died: a reader here may take it over
        self.meta: ObjectMeta | None = None   # its object, for taking a fill over
        # ``refs`` counts this worker's pins through this object (the policy's evictable)


def _advance(block: SharedBlock, state: int, filled: int) -> bool:
    """Apply a remote fill's (state, filled) to ``block``; True if that is news."""
    if state == READY:
        if block.ready:
            return False
        block.filled = block.length
        block.ready = True
        return True
    if state == FILLING or state == ORPHANED:
        news = state == ORPHANED and not block.orphan
        block.orphan = state == ORPHANED
        if filled > block.filled:
            block.filled = filled
            news = True
        return news
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
        self.sendable = handle.sendable     # may a pinned chunk go out with sendfile (marks it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def view(self, off: int, length: int) -> memoryview:
        return cast(memoryview, self.handle.view(off, length))

    @property
    def fd(self) -> int:
        """The arena file's descriptor, for sendfile."""
        return cast(int, self.handle.fd)

    @property
    def zero_copy(self) -> bool:
        return cast(bool, self.handle.zero_copy)

    @zero_copy.setter
    def zero_copy(self, on: bool) -> None:
        self.handle.zero_copy = on

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
            if state != FILLING:        # done, gone, or orphaned: its readers take it from here
                del self.waits[k]
            if moved or b.ready or b.error is not None:
                Storage._wake(b)

    def stats(self) -> dict[str, Any]:
        """The shared arena's occupancy in the format of ``Arena.stats()`` (for metrics)."""
        s = self.handle.stats()
        return {"size": s["arena_size"], "used_bytes": s["used_bytes"],
                "pinned_chunks": s["pinned_chunks"], "entries": s["entries"],
                "punched_chunks": s.get("punched_chunks", 0),
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

    def __init__(self, arena: SharedArena, origin: Origin, *, workers: int | None = None,
                 **kw: Any) -> None:
        """As :class:`Storage` (same keywords), over ``arena``; ``capacity`` is this tenant's
        share of the whole shared arena: this worker's policy ranks the blocks this worker
        filled against all of it (``workers``, default the region's worker ids: how many
        policies share the restored blocks of a warm restart). The block index is the shared
        one: ``_index`` holds only the SharedBlocks this worker's policy tracks; ``_seen`` the
        others it served lately (one object per block for its readers)."""
        n = arena.handle.max_workers if workers is None else workers
        if type(n) is not int or n < 1:
            raise ValueError(f"workers must be a positive int (got {n!r})")
        super().__init__(arena, origin, **kw)
        self.shm = arena.handle
        self.workers = n
        self._seen: FifoDict = FifoDict(SEEN_MAX)      # bk -> SharedBlock of others' fills
        self._soft: dict[tuple, tuple[int, int]] = {}  # victims still cached: bk -> (weight, gen)
        self._rounds = 0                             # eviction rounds (see _make_room)

    def restore(self, metas: list[tuple[ObjectMeta, bool]], blocks: list[tuple[bytes, int, int]],
                fresh: bool = True) -> None:
        """Take what a warm restart brought back for this tenant (``Restored``): the objects'
        metadata, live ones as fresh (``fresh``: this worker's first start; a worker restarted
        later only remembers them, for stale-if-error and purges), and the restored blocks
        into this worker's policy while it has room (never evicting for them)."""
        for m, live in metas:
            self._stale[m.key] = m
            if fresh and live:
                self._meta[m.key] = m
        if not fresh:
            return
        policy, me, n = self.policy, self.shm.worker_id, self.workers
        for oid, idx, length in blocks:
            if (int.from_bytes(oid[:4], "little") + idx) % n != me:
                continue        # another worker's policy ranks this one
            weight = self._weight(length)
            if policy.used + weight > policy.capacity:
                break
            if policy.admit((oid, idx), weight):
                break           # the policy wanted victims after all: stop ranking here

    # -- hits -----------------------------------------------------------------------------

    def _pinned(self, bk: tuple, r: tuple[int, int, int, int, int]) -> SharedBlock:
        """The Block for a ``lookup_pin`` result (pinned once for the caller). The access
        counts in this worker's policy (its frequency sketch sees every block this worker
        serves); a block another worker filled is that worker's policy's to rank."""
        off, length, state, filled, gen = r
        b = cast("SharedBlock | None", self._index.get(bk))
        self.policy.access(bk)
        if b is None or b.gen != gen:
            if b is not None:                # ours was replaced (evicted, filled again elsewhere)
                self._untrack(b)
            b = cast("SharedBlock | None", self._seen.get(bk))
            if b is None or b.gen != gen:
                b = SharedBlock(bk, off, length, gen)
                self._seen[bk] = b
            if bk in self._soft and self._soft[bk][1] == gen:
                self._rescue(bk, b)
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

    def pin(self, meta: ObjectMeta, idx: int) -> Block:
        """As ``Storage.pin``; a block of another worker's fill also learns its object, so
        that a reader here can take the fill over should that worker die."""
        b = super().pin(meta, idx)
        if type(b) is SharedBlock and b.meta is None:
            b.meta = meta
        return b

    def _refresh(self, block: Block) -> bool:
        if not isinstance(block, SharedBlock) or block.local:
            return False
        moved = self.arena.watch(block)
        if block.orphan:
            return self._take_over(block)
        if block.error is not None:
            self._untrack(block)
        return moved

    def _take_over(self, block: SharedBlock) -> bool:
        """The worker filling ``block`` died while a reader here waits on it: try to become
        its filler (``take_fill``: one worker wins) and continue the fill from the bytes that
        landed, with this worker's own fill task, so every reader of it (in any worker) goes
        on with correct bytes. True: look again (it is ours now, or another reader's)."""
        block.orphan = False
        meta = block.meta
        if meta is None:                    # cannot happen through pin(); never guess
            block.error = FillError(OriginError(
                "shared cache", "the worker filling this block died"))
            return True
        oid, idx = block.key
        filled = self.shm.take_fill(oid, idx, block.gen)
        if filled is None:
            return True                     # another reader won: watch its progress
        block.local = block.open = True
        block.filled = filled
        block.refs += 1                     # take_fill's pin: the fill task's own
        self.arena.waits.pop(id(block), None)
        self._seen.pop(block.key, None)
        if self._admit(block.key, self._weight(block.length)):
            self._index[block.key] = block  # our fill now: our policy ranks it
        self.counters.fills += 1
        self.counters.extra["fills_taken_over"] = self.counters.extra.get("fills_taken_over", 0) + 1
        log.info("took over the fill of %r block %d at byte %d (its worker died)",
                 meta.key, idx, filled)
        self._spawn(self._fill(meta, idx, block))
        return True

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
            try:
                off = shm.begin_fill(oid, idx, length)
                tries = 0
                while off == -1 and tries < EXTRA_EVICTION_TRIES:
                    tries += 1
                    self._make_room(bk, weight)
                    off = shm.begin_fill(oid, idx, length)
            except OSError as exc:  # memory punched after a sendfile could not be re-reserved
                log.warning("cannot cache block %d of %s: %s; served uncached", idx, meta.key,
                            exc)
                off = -1
            if off is None:              # another worker indexed it first: join its fill
                r = shm.lookup_pin(oid, idx)
                if r is not None:
                    self.policy.remove(bk)   # admitted for a fill of ours that is not
                    joined = self._pinned(bk, r)
                    if joined.meta is None:
                        joined.meta = meta
                    return joined, False
                continue                 # ... and it went away already: try again
            if off < 0:
                self.counters.alloc_failures += 1
                break
            shm.repin(off)               # the caller's pin (begin_fill's is the fill's)
            block = SharedBlock(bk, off, length, shm.fill_gen(off), local=True)
            block.meta = meta
            block.refs = 2
            self._index[bk] = block
            return block, True
        self.policy.remove(bk)
        return None, True

    def _make_room(self, bk: tuple, weight: int) -> None:
        """One bounded round of eviction for a block of ``weight`` bytes (already admitted).

        The policy's earlier victims still cached go first (oldest first), then new victims
        of the policy. The clock sweep follows when those freed nothing (the arena is full of
        blocks this worker's policy does not rank: others', a dead worker's) and on every
        ``SWEEP_EVERY``-th round anyway, so blocks no live policy tracks are reclaimed within
        a bounded number of rounds (a small share of evictions that ignores the ranking). A
        worker whose policy ranks far less than a fair share of the arena (just restarted:
        the arena is full of blocks nobody ranks) sweeps first instead of evicting the few
        blocks it has."""
        self._rounds += 1
        policy = self.policy
        if policy.used + weight <= policy.capacity // (2 * self.workers) and self._sweep(weight):
            return              # far below a fair share (a restarted worker): others' go first
        freed = self._evict_soft(weight)
        if freed < weight:
            for victim in self.policy.evict(weight - freed):
                if victim != bk:
                    self._drop(victim)
            freed += self._evict_soft(weight - freed)
        if not freed or self._rounds % SWEEP_EVERY == 0:
            self._sweep(weight)

    def _evict_soft(self, weight: int) -> int:
        """Evict the policy's victims still cached, oldest first, until ``weight`` bytes are
        freed (bounded); a pinned one waits for a later round. Returns the bytes freed."""
        soft, shm = self._soft, self.shm
        freed = 0
        for v in list(soft)[:SOFT_TRIES]:
            if freed >= weight:
                break
            w, gen = soft.pop(v)
            done = shm.evict(v[0], v[1], gen)
            if done:
                self.counters.evictions += 1
                freed += w
            elif done is False:
                soft[v] = (w, gen)           # pinned (being sent): at the back of the queue
        return freed

    def _rescue(self, bk: tuple, b: SharedBlock) -> None:
        """A victim of this worker's policy, still cached, was hit: rank it again."""
        del self._soft[bk]
        if b.ready and self._admit(bk, self._weight(b.length)):
            self._seen.pop(bk, None)
            self._index[bk] = b

    def _sweep(self, weight: int) -> bool:
        swept = self.shm.evict_sweep(SWEEP_PROBE, weight)
        for v in swept:
            self.counters.evictions += 1
            self._soft.pop(v, None)
            if self._index.pop(v, None) is not None:
                self.policy.remove(v)
        return bool(swept)

    def _evictable(self, bk: Any) -> bool:
        b = self._index.get(bk)
        return b is None or b.error is not None or (b.ready and b.refs == 0)

    def _drop(self, bk: Any) -> bool:
        """A victim of the policy. A ready block stays cached, queued (``_soft``) until its
        memory is wanted (``_make_room``): while the arena has room, blocks this worker's
        share does not rank are still hits. Anything else leaves the shared index now if it
        can (a fill in progress cannot). True if memory was freed now."""
        b = self._index.pop(bk, None)
        if b is not None and b.ready and b.error is None and isinstance(b, SharedBlock):
            soft = self._soft
            soft[bk] = (self._weight(b.length), b.gen)
            if len(soft) > SOFT_MAX:             # bounded: the oldest goes for real
                old = next(iter(soft))
                if self.shm.evict(old[0], old[1], soft.pop(old)[1]):
                    self.counters.evictions += 1
            return False
        if self.shm.evict(bk[0], bk[1]):
            self.counters.evictions += 1
            return True
        return False

    def _untrack(self, block: Block) -> None:
        if self._index.get(block.key) is block:
            del self._index[block.key]
            self.policy.remove(block.key)

    def _purge_block(self, bk: tuple) -> bool:
        b = self._index.pop(bk, None)
        self._seen.pop(bk, None)
        if b is not None:
            self.policy.remove(bk)
        self._soft.pop(bk, None)
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


# -- warm restart ---------------------------------------------------------------------------

META_VERSION = 1


def save_worker_meta(path: str, storages: dict[str, Storage]) -> int:
    """Write one worker's object metadata, every tenant's, to ``path`` (atomically) for the
    supervisor to merge at a clean stop. A record is ``meta_record`` plus whether it was
    live (in the fresh-metadata cache, not only remembered for stale-if-error). Returns the
    number of objects written."""
    tenants: dict[str, list] = {}
    n = 0
    for name, st in storages.items():
        live = {m.oid: m for m in list(st._meta.values())}
        every = {m.oid: m for m in list(st._stale.values())}
        every.update(live)
        tenants[name] = [meta_record(m) + [m.oid in live] for m in every.values()]
        n += len(every)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": META_VERSION, "tenants": tenants}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def read_worker_metas(paths: list[str]) -> dict[str, dict[str, list]]:
    """Merge the workers' ``save_worker_meta`` files: tenant -> oid hex -> record (live if
    any worker had it live). A missing or unreadable file is logged and skipped: the blocks
    only it knew are then left out of the saved index (never served without metadata)."""
    merged: dict[str, dict[str, list]] = {}
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                doc = json.load(f)
            if doc.get("version") != META_VERSION:
                raise ValueError(f"version {doc.get('version')!r}")
            tenants = dict(doc["tenants"])
        except FileNotFoundError:
            log.warning("warm restart: no metadata from %s (that worker did not stop cleanly)", p)
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("warm restart: ignoring %s: %s", p, exc)
            continue
        for name, recs in tenants.items():
            into = merged.setdefault(str(name), {})
            for rec in recs:
                if not isinstance(rec, list) or len(rec) != 6 or not isinstance(rec[0], str):
                    continue
                old = into.get(rec[0])
                if old is None or (rec[5] and not old[5]):
                    into[rec[0]] = rec
    return merged


def save_shared_index(path: str, layout: dict[str, Any], region: Any, names: list[str],
                      metas: dict[str, dict[str, list]]) -> tuple[int, int]:
    """Write the READY blocks of the shared ``region`` (its workers gone) with the merged
    metadata of the tenants ``names`` to ``path``, in ``save_index``'s format; returns
    (blocks written, blocks left out because no worker knew their object)."""
    names = sorted(names)
    owner: dict[bytes, int] = {}
    objects: dict[str, list] = {}
    for no, name in enumerate(names):
        recs = list(metas.get(name, {}).values())
        objects[name] = recs
        for rec in recs:
            try:
                owner[bytes.fromhex(rec[0])] = no
            except ValueError:
                continue
    records = []
    unknown = 0
    for oid, idx, off, length, checksum in region.ready_entries():
        tenant = owner.get(oid)
        if tenant is None:
            unknown += 1
            continue
        records.append((oid, idx, off, length, checksum, tenant))
    write_index_file(path, layout, names, objects, records)
    return len(records), unknown


@dataclass
class Restored:
    """What a warm restart brought back, handed to every worker (inherited over fork)."""

    kept: int = 0
    dropped: int = 0
    metas: dict[str, list[tuple[ObjectMeta, bool]]] = field(default_factory=dict)  # (meta, live)
    blocks: dict[str, list[tuple[bytes, int, int]]] = field(default_factory=dict)  # oid, idx, len


def restore_shared_index(path: str, layout: dict[str, Any], region: Any, names: list[str],
                         block_size: int) -> Restored | None:
    """Re-index in ``region`` (just created with ``keep_arena``, no worker attached) the
    blocks ``save_shared_index`` wrote, fail-closed, for the tenants ``names``; None if
    there was no usable index (none, or another layout: logged).

    The file is consumed first. A block comes back only under the tenant that saved it, only
    with its object's metadata (the oid re-derived from tenant, key and ETag), only where
    ``adopt`` accepts its placement, and only if its bytes still hash to the recorded
    xxh3-64; anything else is dropped (counted)."""
    saved = read_index_file(path, layout)
    if saved is None:
        return None
    saved_names, objects, records = saved
    metas: dict[tuple[int, bytes], ObjectMeta] = {}
    live: dict[tuple[int, bytes], bool] = {}
    for no, name in enumerate(saved_names):
        if name not in names:
            continue                    # a tenant no longer configured: its blocks go
        for rec in objects.get(name, []):
            m = meta_from_record(rec, block_size, name) if isinstance(rec, list) else None
            if m is not None:
                metas[(no, m.oid)] = m
                live[(no, m.oid)] = bool(rec[5]) if len(rec) > 5 else True
    wanted = []
    seen: set[tuple[bytes, int]] = set()
    for oid, idx, off, length, checksum, no in records:
        m = metas.get((no, oid))
        if (m is not None and 0 <= idx < m.nblocks and m.block_len(idx) == length
                and (oid, idx) not in seen):        # a key twice: corruption, the first only
            seen.add((oid, idx))
            wanted.append((oid, idx, off, length, checksum, no))
    out = Restored(dropped=len(records) - len(wanted))
    refused = set(region.adopt([w[:5] for w in wanted]))
    with_blocks: set[tuple[int, bytes]] = set()
    for oid, idx, off, length, checksum, no in wanted:
        if (oid, idx) in refused:
            out.dropped += 1
            continue
        view = region.view(off, length)
        ok = xxhash.xxh3_64_intdigest(view) == checksum
        view.release()
        if not ok:
            region.remove(oid, idx)
            out.dropped += 1
            continue
        out.kept += 1
        out.blocks.setdefault(saved_names[no], []).append((oid, idx, length))
        with_blocks.add((no, oid))
    best: dict[tuple[int, str], tuple[tuple[bool, bool], ObjectMeta, bool]] = {}
    for k, m in metas.items():          # one version per key: with blocks first, then live
        rank = (k in with_blocks, live[k])
        cur = best.get((k[0], m.key))
        if cur is None or rank > cur[0]:
            best[(k[0], m.key)] = (rank, m, live[k])
    for (no, _), (_, m, is_live) in best.items():
        out.metas.setdefault(saved_names[no], []).append((m, is_live))
    return out
