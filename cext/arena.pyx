# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The slab arena: one mapping of exactly ``size`` bytes, memcached-style slab classes, offsets.

Theory of operation (memcached slabs.c, with page release):
  * One mmap (a locked, fallocated file or anonymous) is cut into pages of ``page_size`` bytes;
    getting memory is separate from slicing it, and everything is named by its offset.
  * Slab classes: chunk sizes grow from ``min_chunk`` by ``growth`` (multiples of 64) up to
    ``page_size // 2``; the last class is one whole page. A class takes a page from the free-page
    stack when it has no free chunk, and carves it by bumping (chunks are handed out in order).
  * Freed chunks go on their class's doubly-linked free list, stored in the chunks themselves
    (prev, next as int64 offsets). When a page's last chunk is freed its chunks are unlinked
    (O(chunks per page)) and the page goes back to the pool for any class.
  * A chunk handed to a response is pinned; freeing it while pinned only marks it DEFERRED (never
    listed, never reused, its bytes untouched) and the unpin to zero completes the free.
Metadata lives outside the mapping in malloc'd C arrays: 6 bytes per chunk slot (int32 pins, a
state byte, a sent byte; ``page_size // min_chunk`` slots per page, so at most 6 bytes per
``min_chunk`` of arena), 17 bytes per page and a few words per class. alloc/free/pin/unpin/view
are O(1) except for taking or releasing a page. The arena is not thread-safe; the GIL makes each
call atomic.

Zero copy. The mapping is always a file (the arena file, or a memfd when anonymous), so a
response can ``sendfile`` a chunk from ``fd`` instead of copying it into the socket. The kernel
keeps referencing sent pages after ``sendfile`` returns (a local receiver reads them later), and
a released chunk is rewritten in place, so ``sendable(off)`` marks the chunk and its release
punches it out of the file (FALLOC_FL_PUNCH_HOLE) before anything is written into it: in-flight
data keeps the old pages, the file gets fresh ones. Only chunks of whole 4 KiB pages qualify (a
punch zeroes a partial page in place). A page with holes is re-reserved (``fallocate``) before
memory from it is handed out, so a full tmpfs fails an ``alloc`` with OSError, never a write
with SIGBUS; that costs about what the page faults would (fresh zeroed pages), so only chunks
really sent are punched.
"""
cimport cython
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free as c_free
from libc.errno cimport errno
from posix.types cimport off_t

import fcntl
import mmap
import os

from cext._slab import class_sizes

cdef enum:
    NIL = -1              # end of a free list / no page
    PIN_MAX = 0x7FFFFFFF  # pin counts are int32

cdef extern from "fcntl.h" nogil:
    int fallocate(int fd, int mode, off_t offset, off_t length)

cdef enum:
    FALLOC_FL_KEEP_SIZE = 1
    FALLOC_FL_PUNCH_HOLE = 2
    SYS_PAGE = 4096       # sendfile/punch granularity: a chunk must be whole pages of this size

cdef enum:
    FREE = 0              # on its class free list, or not carved yet
    USED = 1              # allocated
    DEFERRED = 2          # freed while pinned: allocated until the last unpin
    LEAKED = 3            # sent, and its punch failed: never reused (its pages may be in flight)


cdef inline int64_t* _links(char* mem, int64_t off) noexcept nogil:
    """The free-list links stored in a free chunk: [0] = prev offset, [1] = next offset."""
    return <int64_t*>(mem + off)


cdef inline Py_ssize_t _index(object v, str what) except? -1:
    """operator.index(v), except that an int beyond Py_ssize_t is a ValueError (as in the twin)."""
    cdef Py_ssize_t r
    try:
        r = v
    except OverflowError:
        raise ValueError(f"{what} {v} out of range") from None
    return r


cdef str _not_used(Py_ssize_t off, int state):
    if state == DEFERRED:
        return f"chunk at offset {off} is already freed (deferred until unpinned)"
    if state == LEAKED:
        return f"chunk at offset {off} is out of use (its zero-copy punch failed)"
    return f"offset {off} is not allocated (double free?)"


cdef void* _calloc(Py_ssize_t n, size_t item) except NULL:
    cdef void* p = calloc(<size_t>(n if n > 0 else 1), item)
    if p == NULL:
        raise MemoryError(f"cannot allocate arena metadata ({n} x {item} bytes)")
    return p


@cython.final
cdef class Arena:
    """A memory-mapped slab arena of exactly ``size`` bytes, addressed by offsets.

    Metadata outside the mapping: 5 bytes per ``min_chunk`` of arena (int32 pin count and a
    state byte per chunk slot), 16 bytes per page, and a few words per slab class.
    """

    def __cinit__(self):
        self._mem = NULL
        self._has_buf = False
        self._mmap = None
        self._file = None
        self._base = None
        self._path = None
        self._fd = -1

    def __init__(self, size, page_size=1 << 20, *, path=None, min_chunk=1024, growth=1.25,
                 prefault=False):
        cdef Py_ssize_t i, cs
        if self._sizes != NULL:
            raise RuntimeError("Arena.__init__ called twice")
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

        # the mapping first: a failure there must not cost a large metadata allocation.
        # prefault: MAP_POPULATE maps every page now (startup time) instead of on first touch
        # (a fault per 4 KiB during fills: first fills ran 4x slower without it).
        populate = mmap.MAP_POPULATE if prefault else 0
        self._file = _open_locked(path, size) if path is not None else _memfd(size)
        try:
            self._mmap = mmap.mmap(self._file.fileno(), size, flags=mmap.MAP_SHARED | populate)
        except BaseException:
            self._file.close()
            self._file = None
            raise
        self._fd = self._file.fileno()
        PyObject_GetBuffer(self._mmap, &self._buf, PyBUF_WRITABLE)
        self._has_buf = True
        self._base = memoryview(self._mmap)
        self._mem = <char*>self._buf.buf

        n = self._nclasses
        self._sizes = <Py_ssize_t*>_calloc(n, sizeof(Py_ssize_t))
        self._per_page = <Py_ssize_t*>_calloc(n, sizeof(Py_ssize_t))
        self._free_head = <int64_t*>_calloc(n, sizeof(int64_t))
        self._bump_page = <Py_ssize_t*>_calloc(n, sizeof(Py_ssize_t))
        self._cls_pages = <Py_ssize_t*>_calloc(n, sizeof(Py_ssize_t))
        self._cls_used = <Py_ssize_t*>_calloc(n, sizeof(Py_ssize_t))
        self._cls_pinned = <Py_ssize_t*>_calloc(n, sizeof(Py_ssize_t))
        for i in range(n):
            cs = sizes[i]
            self._sizes[i] = cs
            self._per_page[i] = self._page_size // cs
            self._free_head[i] = NIL
            self._bump_page[i] = NIL
        self._spp = self._per_page[0]

        self._page_class = <int32_t*>_calloc(self._npages, sizeof(int32_t))
        self._page_used = <int32_t*>_calloc(self._npages, sizeof(int32_t))
        self._page_carved = <int32_t*>_calloc(self._npages, sizeof(int32_t))
        self._free_pages = <int32_t*>_calloc(self._npages, sizeof(int32_t))
        for i in range(self._npages):
            self._page_class[i] = NIL
            # stack of free pages; page 0 on top so a fresh arena fills from the start
            self._free_pages[i] = <int32_t>(self._npages - 1 - i)
        self._nfree_pages = self._npages

        self._pins = <int32_t*>_calloc(self._npages * self._spp, sizeof(int32_t))
        self._state = <uint8_t*>_calloc(self._npages * self._spp, sizeof(uint8_t))
        self._sent = <uint8_t*>_calloc(self._npages * self._spp, sizeof(uint8_t))
        self._holes = <uint8_t*>_calloc(self._npages, sizeof(uint8_t))

    def __dealloc__(self):
        c_free(self._sizes)
        c_free(self._per_page)
        c_free(self._free_head)
        c_free(self._bump_page)
        c_free(self._cls_pages)
        c_free(self._cls_used)
        c_free(self._cls_pinned)
        c_free(self._page_class)
        c_free(self._page_used)
        c_free(self._page_carved)
        c_free(self._free_pages)
        c_free(self._pins)
        c_free(self._state)
        c_free(self._sent)
        c_free(self._holes)
        if self._has_buf:
            PyBuffer_Release(&self._buf)
            self._has_buf = False
        self._mem = NULL

    # -- configuration (valid after close) -------------------------------------------------

    @property
    def size(self):
        return self._size

    @property
    def page_size(self):
        return self._page_size

    @property
    def path(self):
        return self._path

    @property
    def nclasses(self):
        return self._nclasses

    def chunk_size(self, cls):
        """The chunk size of slab class ``cls``."""
        cdef Py_ssize_t c = _index(cls, "class")
        if not 0 <= c < self._nclasses:
            raise ValueError(f"class {c} out of range (0..{self._nclasses - 1})")
        return self._sizes[c]

    def class_for(self, nbytes):
        """The smallest class whose chunks hold ``nbytes`` (0 < nbytes <= page_size)."""
        return self._class_of(_index(nbytes, "nbytes"))

    cdef int _class_of(self, Py_ssize_t nbytes) except -1:
        cdef int lo = 0, hi = self._nclasses - 1, mid
        if not 0 < nbytes <= self._page_size:
            raise ValueError(f"nbytes must be in 1..page_size={self._page_size} (got {nbytes})")
        while lo < hi:  # binary search: first class with chunk >= nbytes (the last always fits)
            mid = (lo + hi) >> 1
            if self._sizes[mid] < nbytes:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # -- allocation ------------------------------------------------------------------------

    def alloc(self, nbytes):
        """Offset of a free chunk for ``nbytes``, or -1 if the class and the page pool are empty."""
        cdef int cls = self._class_of(_index(nbytes, "nbytes"))
        cdef int64_t off, nxt
        cdef Py_ssize_t page, idx
        if self._mem == NULL:
            raise ValueError("arena is closed")
        off = self._free_head[cls]
        if off != NIL:
            page = off // self._page_size
            if self._holes[page]:
                self._reserve(off, self._sizes[cls])
            nxt = _links(self._mem, off)[1]
            self._free_head[cls] = nxt
            if nxt != NIL:
                _links(self._mem, nxt)[0] = NIL
            page = off // self._page_size
            idx = (off - page * self._page_size) // self._sizes[cls]
        else:
            page = self._bump_page[cls]
            if page == NIL:
                if self._nfree_pages == 0:
                    self._alloc_failures += 1
                    return -1
                page = self._free_pages[self._nfree_pages - 1]
                if self._holes[page]:       # a new class carves it: re-reserve it whole
                    self._reserve(page * self._page_size, self._page_size)
                    self._holes[page] = 0
                self._nfree_pages -= 1
                page = self._free_pages[self._nfree_pages]
                self._page_class[page] = cls
                self._page_carved[page] = 0
                self._cls_pages[cls] += 1
                self._bump_page[cls] = page
            idx = self._page_carved[page]
            if self._holes[page]:
                self._reserve(page * self._page_size + idx * self._sizes[cls], self._sizes[cls])
            self._page_carved[page] = <int32_t>(idx + 1)
            if idx + 1 == self._per_page[cls]:
                self._bump_page[cls] = NIL
            off = page * self._page_size + idx * self._sizes[cls]
        self._state[page * self._spp + idx] = USED
        self._page_used[page] += 1
        self._cls_used[cls] += 1
        self._used_bytes += self._sizes[cls]
        return off

    def adopt(self, chunks):
        """Re-attach a saved layout: mark each ``(offset, nbytes)`` used in this fresh arena.

        For a warm restart: the caller lists the chunks its saved index says hold blocks.
        Returns the offsets refused (out of range, not a chunk start of the class of
        ``nbytes``, a page already given to another class, or a chunk listed twice); those
        hold nothing. Every other chunk ends up free, pages with nothing in them in the pool.
        O(chunks + pages). ValueError if the arena is not fresh.
        """
        cdef Py_ssize_t o, n, page, rel, cs, idx, slot, p, i
        cdef int cls
        cdef int64_t* links
        if self._mem == NULL:
            raise ValueError("arena is closed")
        if self._used_bytes or self._nfree_pages != self._npages:
            raise ValueError("adopt() needs a fresh arena (nothing allocated yet)")
        rejected = []
        for off, nbytes in chunks:
            o = _index(off, "offset")
            n = _index(nbytes, "nbytes")
            if n <= 0 or n > self._page_size or not 0 <= o < self._size:
                rejected.append(off)
                continue
            cls = self._class_of(n)
            page = o // self._page_size
            rel = o - page * self._page_size
            cs = self._sizes[cls]
            idx = rel // cs
            if idx * cs != rel or idx >= self._per_page[cls]:
                rejected.append(off)
                continue
            if self._page_class[page] == NIL:
                self._page_class[page] = cls
                self._cls_pages[cls] += 1
            elif self._page_class[page] != cls:
                rejected.append(off)
                continue
            slot = page * self._spp + idx
            if self._state[slot] != FREE:
                rejected.append(off)
                continue
            self._state[slot] = USED
            self._page_used[page] += 1
            self._cls_used[cls] += 1
            self._used_bytes += cs
        # Every page given to a class is carved whole; its free chunks go on the free list
        # (lowest offset first); untouched pages make the pool again (page 0 on top).
        self._nfree_pages = 0
        for p in range(self._npages - 1, -1, -1):
            cls = self._page_class[p]
            if cls == NIL:
                self._free_pages[self._nfree_pages] = <int32_t>p
                self._nfree_pages += 1
                continue
            cs = self._sizes[cls]
            self._page_carved[p] = <int32_t>self._per_page[cls]
            for i in range(self._per_page[cls] - 1, -1, -1):
                if self._state[p * self._spp + i] == FREE:
                    o = p * self._page_size + i * cs
                    links = _links(self._mem, o)
                    links[0] = NIL
                    links[1] = self._free_head[cls]
                    if self._free_head[cls] != NIL:
                        _links(self._mem, self._free_head[cls])[0] = o
                    self._free_head[cls] = o
        return rejected

    def free(self, off):
        """Free the chunk at ``off``; a pinned chunk is deferred until its last unpin."""
        cdef Loc loc
        cdef Py_ssize_t o = _index(off, "offset")
        self._locate(o, &loc)
        cdef uint8_t st = self._state[loc.slot]
        if st != USED:
            raise ValueError(_not_used(o, st))
        if self._pins[loc.slot]:
            self._state[loc.slot] = DEFERRED
            self._deferred_chunks += 1
        else:
            self._release(o, &loc)

    def pin(self, off):
        """Pin the allocated chunk at ``off``; returns the new pin count."""
        cdef Loc loc
        cdef Py_ssize_t o = _index(off, "offset")
        self._locate(o, &loc)
        cdef uint8_t st = self._state[loc.slot]
        if st != USED:
            raise ValueError(_not_used(o, st))
        cdef int32_t p = self._pins[loc.slot]
        if p == 0:
            self._pinned_chunks += 1
            self._cls_pinned[loc.cls] += 1
        elif p == PIN_MAX:
            raise ValueError(f"pin count of chunk at offset {o} would overflow")
        self._pins[loc.slot] = p + 1
        return p + 1

    def unpin(self, off):
        """Drop one pin; at zero a deferred free completes. Returns the new pin count."""
        cdef Loc loc
        cdef Py_ssize_t o = _index(off, "offset")
        self._locate(o, &loc)
        cdef int32_t p = self._pins[loc.slot] - 1
        if p < 0:
            raise ValueError(f"chunk at offset {o} is not pinned")
        self._pins[loc.slot] = p
        if p == 0:
            self._pinned_chunks -= 1
            self._cls_pinned[loc.cls] -= 1
            if self._state[loc.slot] == DEFERRED:
                self._deferred_chunks -= 1
                self._release(o, &loc)
        return p

    def pins(self, off):
        """The pin count of the allocated (or deferred) chunk at ``off``."""
        cdef Loc loc
        cdef Py_ssize_t o = _index(off, "offset")
        self._locate(o, &loc)
        if self._state[loc.slot] == FREE:
            raise ValueError(_not_used(o, FREE))
        return self._pins[loc.slot]

    def chunk_of(self, off):
        """The chunk size of the allocated (or deferred) chunk at ``off``."""
        cdef Loc loc
        cdef Py_ssize_t o = _index(off, "offset")
        self._locate(o, &loc)
        if self._state[loc.slot] == FREE:
            raise ValueError(_not_used(o, FREE))
        return self._sizes[loc.cls]

    def view(self, off, length):
        """A writable memoryview of ``[off, off+length)`` inside the chunk at ``off``; no copy."""
        cdef Loc loc
        cdef Py_ssize_t o = _index(off, "offset")
        self._locate(o, &loc)
        if self._state[loc.slot] == FREE:
            raise ValueError(_not_used(o, FREE))
        cdef Py_ssize_t n = _index(length, "length")
        if not 0 <= n <= self._sizes[loc.cls]:
            raise ValueError(
                f"length {n} out of range for the chunk at offset {o} "
                f"(0..{self._sizes[loc.cls]})"
            )
        return self._base[o:o + n]

    @property
    def fd(self):
        """The descriptor of the mapped file (a memfd when anonymous), for ``sendfile``; -1
        once closed."""
        return self._fd

    @property
    def zero_copy(self):
        """Whether ``sendable`` may say yes (off by default; the owner turns it on where
        punching holes is safe: see edge.cache.zerocopy)."""
        return self._zero_copy

    @zero_copy.setter
    def zero_copy(self, on):
        self._zero_copy = bool(on)

    def sendable(self, off):
        """May the allocated chunk at ``off`` (pinned by the caller) go to a socket with
        ``sendfile`` from ``fd``? Yes when zero copy is on and the chunk is whole 4 KiB pages;
        the chunk is then marked, and its release punches it out of the file before reuse."""
        cdef Loc loc
        cdef Py_ssize_t o = _index(off, "offset")
        self._locate(o, &loc)
        if self._state[loc.slot] == FREE:
            raise ValueError(_not_used(o, FREE))
        if not self._zero_copy or self._sizes[loc.cls] % SYS_PAGE:
            return False
        self._sent[loc.slot] = 1
        return True

    # -- internals -------------------------------------------------------------------------

    cdef int _locate(self, Py_ssize_t off, Loc* loc) except -1:
        """Fill ``loc`` for the chunk starting at ``off``; ValueError if none starts there."""
        cdef Py_ssize_t page, rel, cs, idx, cls
        if self._mem == NULL:
            raise ValueError("arena is closed")
        if not 0 <= off < self._size:
            raise ValueError(f"offset {off} out of range (arena size {self._size})")
        page = off // self._page_size
        cls = self._page_class[page]
        if cls == NIL:
            raise ValueError(f"offset {off} is not allocated (its page is free)")
        rel = off - page * self._page_size
        cs = self._sizes[cls]
        idx = rel // cs
        if idx * cs != rel or idx >= self._per_page[cls]:
            raise ValueError(f"offset {off} is not the start of a chunk (class {cls}, {cs} bytes)")
        loc.page = page
        loc.cls = cls
        loc.slot = page * self._spp + idx
        return 0

    cdef int _reserve(self, Py_ssize_t off, Py_ssize_t n) except -1:
        """Give ``[off, off+n)`` of a page with holes its file blocks back (before any write)."""
        cdef int err
        if fallocate(self._fd, 0, off, n) != 0:
            err = errno
            raise OSError(err, f"cannot re-reserve {n} bytes at arena offset {off} after a "
                               f"zero-copy punch: {os.strerror(err)} (is the arena file's "
                               f"filesystem full?)")
        return 0

    cdef void _release(self, Py_ssize_t off, Loc* loc) noexcept:
        """Really free a used chunk: push it on its class free list, give back an empty page.
        A chunk handed to sendfile is punched out of the file first; if that fails it is never
        reused (counted in ``punch_failures``), since its pages may still be in flight."""
        cdef Py_ssize_t cls = loc.cls
        cdef int64_t head = self._free_head[cls]
        cdef int64_t* links
        if self._sent[loc.slot]:
            self._sent[loc.slot] = 0
            if fallocate(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                         self._sizes[cls]) != 0:
                self._punch_failures += 1
                self._state[loc.slot] = LEAKED
                return
            self._punched += 1
            self._holes[loc.page] = 1
        links = _links(self._mem, off)
        links[0] = NIL
        links[1] = head
        if head != NIL:
            _links(self._mem, head)[0] = off
        self._free_head[cls] = off
        self._state[loc.slot] = FREE
        self._cls_used[cls] -= 1
        self._used_bytes -= self._sizes[cls]
        self._page_used[loc.page] -= 1
        if self._page_used[loc.page] == 0:
            self._release_page(loc.page, cls)

    cdef void _release_page(self, Py_ssize_t page, Py_ssize_t cls) noexcept:
        """Unlink every carved chunk of an empty page and return it to the free-page pool."""
        cdef Py_ssize_t cs = self._sizes[cls], i
        cdef int64_t off = page * self._page_size, prev, nxt
        cdef int64_t* links
        for i in range(self._page_carved[page]):
            links = _links(self._mem, off)
            prev = links[0]
            nxt = links[1]
            if prev == NIL:
                self._free_head[cls] = nxt
            else:
                _links(self._mem, prev)[1] = nxt
            if nxt != NIL:
                _links(self._mem, nxt)[0] = prev
            off += cs
        if self._bump_page[cls] == page:
            self._bump_page[cls] = NIL
        self._page_class[page] = NIL
        self._page_carved[page] = 0
        self._cls_pages[cls] -= 1
        self._free_pages[self._nfree_pages] = <int32_t>page
        self._nfree_pages += 1

    # -- accounting ------------------------------------------------------------------------

    @property
    def used_bytes(self):
        return self._used_bytes

    @property
    def free_pages(self):
        return self._nfree_pages

    def stats(self):
        """Counters and per-class occupancy (the same keys in both twins)."""
        cdef Py_ssize_t c
        return {
            "size": self._size,
            "page_size": self._page_size,
            "pages_total": self._npages,
            "pages_free": self._nfree_pages,
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

    def close(self):
        """Unmap and unlock (the file stays on disk). Idempotent.

        Views still alive keep the mapping alive: it is unmapped when the last one is released,
        never pulled out from under them.
        """
        if self._mem == NULL:
            return
        self._mem = NULL
        if self._base is not None:
            self._base.release()
            self._base = None
        if self._has_buf:
            PyBuffer_Release(&self._buf)
            self._has_buf = False
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

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def __repr__(self):
        state = "closed" if self._mem == NULL else f"{self._used_bytes} used"
        return f"<Arena size={self._size} page_size={self._page_size} path={self._path!r} {state}>"


def _memfd(size):
    """An anonymous arena's file: a memfd of ``size`` bytes (pages come on first touch, as
    with an anonymous shared mapping), so it has a descriptor for ``sendfile``."""
    f = open(os.memfd_create("edge-arena", os.MFD_CLOEXEC), "r+b", buffering=0)
    try:
        os.ftruncate(f.fileno(), size)
    except BaseException:
        f.close()
        raise
    return f


def _open_locked(path, size):
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
    f = open(fd, "r+b", buffering=0)
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
