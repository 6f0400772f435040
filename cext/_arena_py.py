"""Pure-Python twin of :mod:`cext.arena` (selected by ``EDGE_NO_EXTENSIONS=1``).

Same API, same behaviour, same offsets for the same call sequence: the free lists live inside the
mapping exactly as in the Cython module, so even the bytes of freed chunks match. See the theory
of operation at the top of ``cext/arena.pyx``.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from bisect import bisect_left
from collections.abc import Iterable
from operator import index as _index
from types import TracebackType
from typing import Any, Self, final

from ._slab import class_sizes

_FREE, _USED, _DEFERRED, _LEAKED = 0, 1, 2, 3  # chunk states
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2
_SYS_PAGE = 4096  # sendfile/punch granularity: a chunk must be whole pages of this size
_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
_fallocate.restype = ctypes.c_int
_PIN_MAX = 0x7FFFFFFF  # pin counts are int32 in the Cython twin
_NIL = -1  # end of a free list / no page


@final
class Arena:
    """A memory-mapped slab arena of exactly ``size`` bytes, addressed by offsets.

    The Cython twin keeps 5 bytes of metadata per ``min_chunk`` of arena; this twin keeps a list
    slot and a state byte (9 bytes) per ``min_chunk`` and four list slots per page.
    """

    def __init__(
        self,
        size: int,
        page_size: int = 1 << 20,
        *,
        path: str | None = None,
        min_chunk: int = 1024,
        growth: float = 1.25,
        prefault: bool = False,
    ) -> None:
        self._prefault = bool(prefault)
        self._closed = True  # until the mapping exists; close() is then a no-op
        self._file: Any = None
        self._fd = -1
        self._zero_copy = False
        self._punched = 0
        self._punch_failures = 0
        self._mmap: mmap.mmap | None = None
        self._base: memoryview | None = None
        self._q: memoryview | None = None
        if type(page_size) is not int or page_size <= 0 or page_size % 4096:
            raise ValueError(f"page_size must be a positive multiple of 4096 (got {page_size!r})")
        if type(size) is not int or size <= 0 or size % page_size:
            raise ValueError(
                f"size must be a positive multiple of page_size (got size={size!r}, "
                f"page_size={page_size})"
            )
        if type(min_chunk) is not int or not 64 <= min_chunk <= page_size:
            raise ValueError(f"min_chunk must be between 64 and page_size (got {min_chunk!r})")
        if not 1.0 < growth < float("inf"):
            raise ValueError(f"growth must be a finite number > 1.0 (got {growth!r})")
        if size // page_size > 0x7FFFFFFF:
            raise ValueError(f"size / page_size must be < 2**31 pages (got {size // page_size})")
        growth = float(growth)

        sizes = class_sizes(page_size, min_chunk, growth)

        self._size = size
        self._page_size = page_size
        self._path = path
        self._npages = size // page_size
        self._nclasses = len(sizes)
        self._sizes = sizes
        self._per_page = [page_size // c for c in sizes]
        self._spp = self._per_page[0]  # chunk slots per page (the most chunks a page can hold)

        self._map(size, path)
        self._closed = False

        n = self._nclasses
        self._free_head = [_NIL] * n  # per class: offset of the first free chunk
        self._bump_page = [_NIL] * n  # per class: page being carved, or -1
        self._cls_pages = [0] * n
        self._cls_used = [0] * n
        self._cls_pinned = [0] * n
        self._page_class = [_NIL] * self._npages
        self._page_used = [0] * self._npages
        self._page_carved = [0] * self._npages
        # stack of free pages; page 0 on top so a fresh arena fills from the start
        self._free_pages = list(range(self._npages - 1, -1, -1))
        self._pins = [0] * (self._npages * self._spp)
        self._state = bytearray(self._npages * self._spp)
        self._sent = bytearray(self._npages * self._spp)
        self._holes = bytearray(self._npages)
        self._used_bytes = 0
        self._pinned_chunks = 0
        self._deferred_chunks = 0
        self._alloc_failures = 0

    def _map(self, size: int, path: str | None) -> None:
        # prefault: MAP_POPULATE maps every page now (startup time) instead of on first touch
        # (a fault per 4 KiB during fills: first fills ran 4x slower without it).
        populate = mmap.MAP_POPULATE if self._prefault else 0
        self._file = _open_locked(path, size) if path is not None else _memfd(size)
        try:
            self._mmap = mmap.mmap(self._file.fileno(), size, flags=mmap.MAP_SHARED | populate)
        except BaseException:
            self._file.close()
            self._file = None
            raise
        self._fd = self._file.fileno()
        self._base = memoryview(self._mmap)
        self._q = self._base.cast("q")  # free-list links: prev at q[off>>3], next at q[(off>>3)+1]

    # -- configuration (valid after close) -------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def nclasses(self) -> int:
        return self._nclasses

    def chunk_size(self, cls: int) -> int:
        """The chunk size of slab class ``cls``."""
        if type(cls) is not int:
            cls = _index(cls)
        if not 0 <= cls < self._nclasses:
            raise ValueError(f"class {cls} out of range (0..{self._nclasses - 1})")
        return self._sizes[cls]

    def class_for(self, nbytes: int) -> int:
        """The smallest class whose chunks hold ``nbytes`` (0 < nbytes <= page_size)."""
        if type(nbytes) is not int:
            nbytes = _index(nbytes)
        if not 0 < nbytes <= self._page_size:
            raise ValueError(f"nbytes must be in 1..page_size={self._page_size} (got {nbytes})")
        return bisect_left(self._sizes, nbytes)

    # -- allocation ------------------------------------------------------------------------

    def alloc(self, nbytes: int) -> int:
        """Offset of a free chunk for ``nbytes``, or -1 if the class and the page pool are empty."""
        cls = self.class_for(nbytes)
        if self._closed:
            raise ValueError("arena is closed")
        off = self._free_head[cls]
        if off != _NIL:
            if self._holes[off // self._page_size]:
                self._reserve(off, self._sizes[cls])
            q = self._q
            assert q is not None
            nxt = q[(off >> 3) + 1]
            self._free_head[cls] = nxt
            if nxt != _NIL:
                q[nxt >> 3] = _NIL
            page = off // self._page_size
            idx = (off - page * self._page_size) // self._sizes[cls]
        else:
            page = self._bump_page[cls]
            if page == _NIL:
                if not self._free_pages:
                    self._alloc_failures += 1
                    return -1
                page = self._free_pages[-1]
                if self._holes[page]:       # a new class carves it: re-reserve it whole
                    self._reserve(page * self._page_size, self._page_size)
                    self._holes[page] = 0
                self._free_pages.pop()
                self._page_class[page] = cls
                self._page_carved[page] = 0
                self._cls_pages[cls] += 1
                self._bump_page[cls] = page
            idx = self._page_carved[page]
            if self._holes[page]:
                self._reserve(page * self._page_size + idx * self._sizes[cls], self._sizes[cls])
            self._page_carved[page] = idx + 1
            if idx + 1 == self._per_page[cls]:
                self._bump_page[cls] = _NIL
            off = page * self._page_size + idx * self._sizes[cls]
        self._state[page * self._spp + idx] = _USED
        self._page_used[page] += 1
        self._cls_used[cls] += 1
        self._used_bytes += self._sizes[cls]
        return off

    def adopt(self, chunks: Iterable[tuple[int, int]]) -> list[int]:
        """Re-attach a saved layout: mark each ``(offset, nbytes)`` used in this fresh arena.

        For a warm restart: the caller lists the chunks its saved index says hold blocks.
        Returns the offsets refused (out of range, not a chunk start of the class of
        ``nbytes``, a page already given to another class, or a chunk listed twice); those
        hold nothing. Every other chunk ends up free, pages with nothing in them in the pool.
        O(chunks + pages). ValueError if the arena is not fresh.
        """
        if self._closed:
            raise ValueError("arena is closed")
        if self._used_bytes or len(self._free_pages) != self._npages:
            raise ValueError("adopt() needs a fresh arena (nothing allocated yet)")
        rejected = []
        for off, nbytes in chunks:
            o = _index(off)
            n = _index(nbytes)
            if n <= 0 or n > self._page_size or not 0 <= o < self._size:
                rejected.append(off)
                continue
            cls = self.class_for(n)
            page, rel = divmod(o, self._page_size)
            cs = self._sizes[cls]
            idx = rel // cs
            if idx * cs != rel or idx >= self._per_page[cls]:
                rejected.append(off)
                continue
            if self._page_class[page] == _NIL:
                self._page_class[page] = cls
                self._cls_pages[cls] += 1
            elif self._page_class[page] != cls:
                rejected.append(off)
                continue
            slot = page * self._spp + idx
            if self._state[slot] != _FREE:
                rejected.append(off)
                continue
            self._state[slot] = _USED
            self._page_used[page] += 1
            self._cls_used[cls] += 1
            self._used_bytes += cs
        # Every page given to a class is carved whole; its free chunks go on the free list
        # (lowest offset first); untouched pages make the pool again (page 0 on top).
        q = self._q
        assert q is not None
        self._free_pages = []
        for p in range(self._npages - 1, -1, -1):
            cls = self._page_class[p]
            if cls == _NIL:
                self._free_pages.append(p)
                continue
            cs = self._sizes[cls]
            self._page_carved[p] = self._per_page[cls]
            for i in range(self._per_page[cls] - 1, -1, -1):
                if self._state[p * self._spp + i] == _FREE:
                    o = p * self._page_size + i * cs
                    head = self._free_head[cls]
                    q[o >> 3] = _NIL
                    q[(o >> 3) + 1] = head
                    if head != _NIL:
                        q[head >> 3] = o
                    self._free_head[cls] = o
        return rejected

    def free(self, off: int) -> None:
        """Free the chunk at ``off``; a pinned chunk is deferred until its last unpin."""
        page, cls, slot = self._locate(off)
        st = self._state[slot]
        if st != _USED:
            raise ValueError(_not_used(off, st))
        if self._pins[slot]:
            self._state[slot] = _DEFERRED
            self._deferred_chunks += 1
        else:
            self._release(off, page, cls, slot)

    def pin(self, off: int) -> int:
        """Pin the allocated chunk at ``off``; returns the new pin count."""
        _, cls, slot = self._locate(off)
        st = self._state[slot]
        if st != _USED:
            raise ValueError(_not_used(off, st))
        p = self._pins[slot]
        if p == 0:
            self._pinned_chunks += 1
            self._cls_pinned[cls] += 1
        elif p == _PIN_MAX:
            raise ValueError(f"pin count of chunk at offset {off} would overflow")
        self._pins[slot] = p + 1
        return p + 1

    def unpin(self, off: int) -> int:
        """Drop one pin; at zero a deferred free completes. Returns the new pin count."""
        page, cls, slot = self._locate(off)
        p = self._pins[slot] - 1
        if p < 0:
            raise ValueError(f"chunk at offset {off} is not pinned")
        self._pins[slot] = p
        if p == 0:
            self._pinned_chunks -= 1
            self._cls_pinned[cls] -= 1
            if self._state[slot] == _DEFERRED:
                self._deferred_chunks -= 1
                self._release(off, page, cls, slot)
        return p

    def pins(self, off: int) -> int:
        """The pin count of the allocated (or deferred) chunk at ``off``."""
        _, _, slot = self._locate(off)
        if self._state[slot] == _FREE:
            raise ValueError(_not_used(off, _FREE))
        return self._pins[slot]

    def chunk_of(self, off: int) -> int:
        """The chunk size of the allocated (or deferred) chunk at ``off``."""
        _, cls, slot = self._locate(off)
        if self._state[slot] == _FREE:
            raise ValueError(_not_used(off, _FREE))
        return self._sizes[cls]

    def view(self, off: int, length: int) -> memoryview:
        """A writable memoryview of ``[off, off+length)`` inside the chunk at ``off``; no copy."""
        _, cls, slot = self._locate(off)
        if self._state[slot] == _FREE:
            raise ValueError(_not_used(off, _FREE))
        if type(length) is not int:
            length = _index(length)
        if not 0 <= length <= self._sizes[cls]:
            raise ValueError(
                f"length {length} out of range for the chunk at offset {off} "
                f"(0..{self._sizes[cls]})"
            )
        assert self._base is not None
        return self._base[off : off + length]

    @property
    def fd(self) -> int:
        """The descriptor of the mapped file (a memfd when anonymous), for ``sendfile``; -1
        once closed."""
        return self._fd

    @property
    def zero_copy(self) -> bool:
        """Whether ``sendable`` may say yes (off by default; the owner turns it on where
        punching holes is safe: see edge.cache.zerocopy)."""
        return self._zero_copy

    @zero_copy.setter
    def zero_copy(self, on: bool) -> None:
        self._zero_copy = bool(on)

    def sendable(self, off: int) -> bool:
        """May the allocated chunk at ``off`` (pinned by the caller) go to a socket with
        ``sendfile`` from ``fd``? Yes when zero copy is on and the chunk is whole 4 KiB pages;
        the chunk is then marked, and its release punches it out of the file before reuse."""
        _, cls, slot = self._locate(off)
        if self._state[slot] == _FREE:
            raise ValueError(_not_used(off, _FREE))
        if not self._zero_copy or self._sizes[cls] % _SYS_PAGE:
            return False
        self._sent[slot] = 1
        return True

    # -- internals -------------------------------------------------------------------------

    def _locate(self, off: int) -> tuple[int, int, int]:
        """(page, class, slot) of the chunk starting at ``off``; ValueError if none starts there."""
        if self._closed:
            raise ValueError("arena is closed")
        if type(off) is not int:
            off = _index(off)
        if not 0 <= off < self._size:
            raise ValueError(f"offset {off} out of range (arena size {self._size})")
        page = off // self._page_size
        cls = self._page_class[page]
        if cls == _NIL:
            raise ValueError(f"offset {off} is not allocated (its page is free)")
        rel = off - page * self._page_size
        cs = self._sizes[cls]
        idx = rel // cs
        if idx * cs != rel or idx >= self._per_page[cls]:
            raise ValueError(f"offset {off} is not the start of a chunk (class {cls}, {cs} bytes)")
        return page, cls, page * self._spp + idx

    def _reserve(self, off: int, n: int) -> None:
        """Give ``[off, off+n)`` of a page with holes its file blocks back (before any write)."""
        if _fallocate(self._fd, 0, off, n) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot re-reserve {n} bytes at arena offset {off} after a "
                               f"zero-copy punch: {os.strerror(err)} (is the arena file's "
                               f"filesystem full?)")

    def _release(self, off: int, page: int, cls: int, slot: int) -> None:
        """Really free a used chunk: push it on its class free list, give back an empty page.
        A chunk handed to sendfile is punched out of the file first; if that fails it is never
        reused (counted in ``punch_failures``), since its pages may still be in flight."""
        if self._sent[slot]:
            self._sent[slot] = 0
            if _fallocate(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, off,
                          self._sizes[cls]) != 0:
                self._punch_failures += 1
                self._state[slot] = _LEAKED
                return
            self._punched += 1
            self._holes[page] = 1
        q = self._q
        assert q is not None
        head = self._free_head[cls]
        i = off >> 3
        q[i] = _NIL
        q[i + 1] = head
        if head != _NIL:
            q[head >> 3] = off
        self._free_head[cls] = off
        self._state[slot] = _FREE
        self._cls_used[cls] -= 1
        self._used_bytes -= self._sizes[cls]
        used = self._page_used[page] - 1
        self._page_used[page] = used
        if used == 0:
            self._release_page(page, cls)

    def _release_page(self, page: int, cls: int) -> None:
        """Unlink every carved chunk of an empty page and return it to the free-page pool."""
        q = self._q
        assert q is not None
        cs = self._sizes[cls]
        off = page * self._page_size
        for _ in range(self._page_carved[page]):
            i = off >> 3
            prev = q[i]
            nxt = q[i + 1]
            if prev == _NIL:
                self._free_head[cls] = nxt
            else:
                q[(prev >> 3) + 1] = nxt
            if nxt != _NIL:
                q[nxt >> 3] = prev
            off += cs
        if self._bump_page[cls] == page:
            self._bump_page[cls] = _NIL
        self._page_class[page] = _NIL
        self._page_carved[page] = 0
        self._cls_pages[cls] -= 1
        self._free_pages.append(page)

    # -- accounting ------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return self._used_bytes

    @property
    def free_pages(self) -> int:
        return len(self._free_pages)

    def stats(self) -> dict[str, Any]:
        """Counters and per-class occupancy (the same keys in both twins)."""
        return {
            "size": self._size,
            "page_size": self._page_size,
            "pages_total": self._npages,
            "pages_free": len(self._free_pages),
            "used_bytes": self._used_bytes,
            "pinned_chunks": self._pinned_chunks,
            "deferred_chunks": self._deferred_chunks,
            "alloc_failures": self._alloc_failures,
            "zero_copy": self._zero_copy,
            "punched_chunks": self._punched,
            "punch_failures": self._punch_failures,
            "classes": [
                {
                    "class": c,
                    "chunk_size": self._sizes[c],
                    "pages": self._cls_pages[c],
                    "chunks_used": self._cls_used[c],
                    "chunks_free": self._cls_pages[c] * self._per_page[c] - self._cls_used[c],
                    "pinned": self._cls_pinned[c],
                }
                for c in range(self._nclasses)
            ],
        }

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap and unlock (the file stays on disk). Idempotent.

        Views still alive keep the mapping alive: it is unmapped when the last one is released,
        never pulled out from under them.
        """
        if self._closed:
            return
        self._closed = True
        for mv in (self._q, self._base):
            if mv is not None:
                mv.release()
        self._q = self._base = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # views exported: the mmap object unmaps when the last view goes
            self._mmap = None
        self._fd = -1
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._used_bytes} used"
        return f"<Arena size={self._size} page_size={self._page_size} path={self._path!r} {state}>"


def _not_used(off: int, state: int) -> str:
    if state == _DEFERRED:
        return f"chunk at offset {off} is already freed (deferred until unpinned)"
    if state == _LEAKED:
        return f"chunk at offset {off} is out of use (its zero-copy punch failed)"
    return f"offset {off} is not allocated (double free?)"


def _memfd(size: int) -> Any:
    """An anonymous arena's file: a memfd of ``size`` bytes (pages come on first touch, as
    with an anonymous shared mapping), so it has a descriptor for ``sendfile``."""
    f = open(os.memfd_create("edge-arena", os.MFD_CLOEXEC), "r+b", buffering=0)
    try:
        os.ftruncate(f.fileno(), size)
    except BaseException:
        f.close()
        raise
    return f


def _open_locked(path: str, size: int) -> Any:
    """Open or create the arena file, lock it, size it and reserve its blocks.

    The lock comes before any resize so a second process can never truncate a live arena.
    ``posix_fallocate`` makes a too-small tmpfs fail here instead of with SIGBUS on first touch.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        created = True
    except FileExistsError:
        fd = os.open(path, os.O_RDWR)
        created = False
    f = open(fd, "r+b", buffering=0)  # noqa: SIM115 - returned: it holds the lock
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"arena file {path} is in use by another process") from None
        os.ftruncate(fd, size)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if created:
                os.unlink(path)
            raise OSError(
                exc.errno, f"cannot reserve {size} bytes for arena file {path}: {exc.strerror}"
            ) from exc
    except BaseException:
        f.close()
        raise
    return f
