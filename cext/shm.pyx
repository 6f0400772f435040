# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The shared cache: one arena and one block index in shared memory for every worker process.

Theory of operation
-------------------
Files. The supervisor ``create()``s two files: the arena (``path``, exactly ``arena_size``
bytes, the blocks themselves) and the control region (``path + ".ctl"``: a versioned header,
the allocator state, per-chunk pin words and the index). Workers ``attach()`` both with
MAP_SHARED. Everything in them is an offset, never a pointer, so each process may map them
anywhere. A shared flock on the .ctl file marks it in use; ``create()`` needs it exclusively.

One robust mutex. Allocation (memcached-style slab classes, as in ``cext/arena.pyx``, with the
free lists stored inside the free chunks), frees, index inserts and removals, fill progress and
recovery run under ONE process-shared robust pthread mutex in the header: the miss path only.
If its holder dies (SIGKILL at any instant), the next locker gets EOWNERDEAD and runs
``_repair``: it does not try to know what was interrupted. It rebuilds everything derivable
from three facts -- the live index entries, the per-page class and the per-chunk USED byte --
dropping entries that are half-written or point at an unallocated or mismatched chunk, freeing
USED chunks that nothing references (an alloc whose insert never happened, an eviction that
never finished), then re-deriving the free lists, free-page stack and counters. Then
pthread_mutex_consistent.

The index is an open-addressing table (linear probing, tombstones, rebuilt in place when
tombstones fill it) of 64-byte entries keyed by (16-byte oid, uint32 block index). Entries are
written under the mutex seqlock-style with a generation that is unique per insert (a 64-bit
counter, never reused): readers load ``gen``, the fields, then ``gen`` again. A generation
seen twice means the fields belong to that one insert: no ABA.

Hit path, no lock. ``lookup_pin`` probes the table, reads an entry (off, length, gen), then
pins its chunk, then checks that the entry still has that generation; if not it unpins and
retries (a false miss at worst, never a wrong block). A pin is a bit per worker in the chunk's
64-bit word: bit ``w`` set means worker ``w`` holds at least one pin; the count of pins lives
in the worker's private memory, so a hot block already pinned by this worker costs no shared
write at all, and a dead worker's pins are exactly "bit w everywhere", whatever instant it died
at. Two flags share the word: FREEING (an evictor owns the chunk; set by CAS from exactly 0,
under the mutex) and DEFERRED (removed from the index while pinned: the chunk is freed by
whoever clears the last worker bit). A pin CAS refuses a word carrying either flag. So
``evict`` succeeds only on a chunk nobody pins, and a chunk is never reused while pinned.

Fills (single-flight across workers). ``begin_fill`` allocates a chunk, pins it for the caller
and inserts the entry FILLING with the caller as owner; another worker finds FILLING and may
stream ``[0, filled)``. Only the owner advances ``filled`` (and only forwards) and only an entry
filled to exactly its length can become READY, with its checksum. ``fail_fill`` (and
``recover_worker``, for a fill no other worker reads) removes a FILLING entry, never promotes
it: the chunk is DEFERRED until its readers unpin. State and filled share one atomic word, so a reader never sees READY with a
stale count.

Wake-ups. Each worker binds an AF_UNIX datagram socket in the abstract namespace, named from a
per-create nonce and its worker id; its event loop ``add_reader``s it (``wake_fd``). A worker
that waits on a FILLING entry sets its bit in the entry's ``waiters`` mask (``watch``, under
the mutex, reading the progress in the same critical section: no lost wake-up); whoever
advances, finishes, fails or drops the fill exchanges the mask for 0 and sends one byte to each
worker in it. Datagrams need no shared fds (a restarted worker rebinds its name), cost one
syscall, are dropped when nobody listens or a wake-up is already queued, and a bound name is
released by the kernel when its process dies -- so a second live process can never attach as
the same worker id.

Recovery. ``recover_worker(w)`` (the supervisor, after a worker died; also done by ``attach``
when the id's previous process did not detach) clears bit ``w`` from every chunk word, frees
the DEFERRED chunks that leaves unpinned, and deals with the FILLING entries ``w`` owned: one
that another worker pins or watches (a reader of it) is *orphaned* -- it stays indexed,
FILLING, with what landed so far, its owner set to ORPHAN (0xFF) and its watchers woken; the
others are removed. Readers see an orphan as state ORPHANED; one of them re-elects itself
with ``take_fill`` (under the mutex: exactly one wins) and continues the fill from ``filled``
(the bytes below it were published by the dead owner only after they landed). An orphan that
nobody pins or watches any more is removed by the next recovery or ``evict_sweep``. Only the
owner recorded in the entry may advance, finish or fail it. READY entries are untouched: a
READY block was verified before it was published.

Warm restart. ``create(keep_arena=True)`` keeps the bytes of an existing arena file of the
right size (the control file is always made anew: nothing in it is trusted after a stop), and
``adopt`` re-indexes blocks READY at the offsets a clean stop recorded (``ready_entries``).
The caller verifies their checksums before any worker attaches (edge/cache/shared.py).
A kept file may hold holes the previous run punched (below): ``create`` fallocates the whole
file again (cheap where nothing is missing), so the new control region flags no page as holed.

Zero-copy. A worker may send a block with ``os.sendfile`` straight from the arena file (``fd``)
instead of copying it into the socket. After sendfile returns, the kernel still references
those page-cache pages (a local receiver reads them later), but the allocator recycles chunks
in place: a freed chunk rewritten with new bytes would change data in flight. So
``sendable(off)``, asked while the caller pins the chunk and with ``zero_copy`` on, marks the
chunk SENT (one byte per chunk slot, stored lock-free: the free that reads it comes after the
last unpin, whose atomic orders the store before it), and whoever really frees a SENT chunk --
any free path: ``_release``, or ``_rebuild`` after a death -- first punches it out of the file
(fallocate PUNCH_HOLE|KEEP_SIZE), flagging its page as holed. The in-flight references keep
the old pages; the file gets fresh zero pages at the next touch. Only chunks made of whole
4 KiB pages are sendable: punching part of a page zeroes it in place, under its neighbours and
its own in-flight bytes. A failed punch leaves the chunk allocated (leaked, ``punch_failures``;
a later ``_rebuild`` tries again) rather than reused. The arena was fallocated at create so that a full tmpfs fails there, not
with SIGBUS at a write; memory handed out from a holed page is therefore re-reserved first
(fallocate mode 0: the whole page when it leaves the free-page pool, which clears its flag,
else just the chunk), and if that fails ``begin_fill`` raises OSError with the chunk still free.
A punch costs ~24 us per MiB and re-reserving a holed MiB ~450 us (a present one ~29 us): only
chunks actually sent are punched, and only memory in holed pages is re-reserved.

Limits: at most 62 worker ids (one bit each in the 64-bit chunk word); one handle per process
per worker id, used from one thread (its pin counts are private and unsynchronised).
"""
cimport cython
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EINTR, errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free as c_free, malloc
from libc.string cimport memcmp, memcpy, memset

import fcntl
import mmap
import os
import socket

from cext._shm_py import RegionBusy  # one class for both twins
from cext._slab import ALIGN, class_sizes, round_up  # class_sizes: also this module's API

cdef extern from "includes/shm_atomics.h" nogil:
    uint64_t shm_load_acq(const uint64_t* p)
    uint64_t shm_load_rlx(const uint64_t* p)
    uint64_t shm_load_sc(const uint64_t* p)
    void shm_store_rel(uint64_t* p, uint64_t v)
    void shm_store_rlx(uint64_t* p, uint64_t v)
    void shm_store_sc(uint64_t* p, uint64_t v)
    uint8_t shm_load8_rlx(const uint8_t* p)
    void shm_store8_rel(uint8_t* p, uint8_t v)
    int shm_cas(uint64_t* p, uint64_t expected, uint64_t desired)
    uint64_t shm_fetch_or(uint64_t* p, uint64_t v)
    uint64_t shm_fetch_and(uint64_t* p, uint64_t v)
    uint64_t shm_exchange(uint64_t* p, uint64_t v)
    void shm_fence_acq()
    void shm_fence_rel()
    int shm_mutex_init(void* m)
    int shm_mutex_lock(void* m)
    int shm_mutex_unlock(void* m)
    int shm_mutex_consistent(void* m)
    uint64_t shm_mix(uint64_t z)
    int SHM_EOWNERDEAD
    int SHM_ENOTRECOVERABLE

cdef extern from "fcntl.h" nogil:
    int fallocate(int fd, int mode, int64_t offset, int64_t length)

MAGIC = 0x01_4D_48_53_45_47_44_45   # b"EDGESHM\x01" read as a little-endian uint64
LAYOUT_VERSION = 3                     # 3: SENT marks, holed pages, punch counters
IMPL = 1                               # this region is driven by the compiled module
GONE, FILLING, READY, ORPHANED = 0, 1, 2, 3   # entry states as the API reports them
MAX_WORKERS = 62
COUNTERS = ("alloc_failures", "index_full", "lock_recoveries", "worker_recoveries",
            "evictions", "evict_busy", "fills_begun", "fills_finished", "fills_failed",
            "deferred_frees", "index_rebuilds", "pins_recovered", "fills_dropped", "repairs",
            "swept", "removed", "fills_orphaned", "fills_taken_over", "adopted",
            "punched_chunks", "punch_failures")

cdef enum:
    NIL = -1
    C_FREE = 0            # chunk state: free (listed, or not carved yet)
    C_USED = 1            # allocated: indexed, or DEFERRED until its last unpin
    G_EMPTY = 0           # entry generation of a never-used slot (ends a probe)
    G_TOMB = 1            # entry generation of a removed slot (a probe continues)
    S_FILLING = 1
    S_READY = 2
    S_ORPHANED = 3        # API only: an entry FILLING with owner ORPHAN
    ORPHAN = 0xFF         # owner of a FILLING entry whose owner died (fsw bits 40..47)
    RETRIES = 4           # lookup retries when a slot changes under the reader
    PUNCH_HOLE = 2 | 1    # fallocate mode FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    SEND_UNIT = 4096      # a sendable chunk is made of whole pages of this size (punchable)

# counters: index into the header words
cdef enum:
    K_ALLOC_FAILURES = H_COUNTERS
    K_INDEX_FULL
    K_LOCK_RECOVERIES
    K_WORKER_RECOVERIES
    K_EVICTIONS
    K_EVICT_BUSY
    K_FILLS_BEGUN
    K_FILLS_FINISHED
    K_FILLS_FAILED
    K_DEFERRED_FREES
    K_INDEX_REBUILDS
    K_PINS_RECOVERED
    K_FILLS_DROPPED
    K_REPAIRS
    K_SWEPT
    K_REMOVED
    K_FILLS_ORPHANED
    K_FILLS_TAKEN_OVER
    K_ADOPTED
    K_PUNCHED_CHUNKS
    K_PUNCH_FAILURES

cdef uint64_t DEFERRED = (<uint64_t>1) << 62   # chunk word: removed while pinned
cdef uint64_t FREEING = (<uint64_t>1) << 63    # chunk word: an evictor owns it (set from 0)
cdef uint64_t FLAGS = DEFERRED | FREEING
cdef uint64_t WORKERS_MASK = ~FLAGS


cdef inline int64_t* _links(char* mem, int64_t off) noexcept nogil:
    """The free-list links stored in a free chunk: [0] = prev offset, [1] = next offset."""
    return <int64_t*>(mem + off)


cdef inline uint64_t _hash(const uint8_t* oid, uint32_t idx) noexcept nogil:
    cdef uint64_t a
    memcpy(&a, oid, 8)
    return shm_mix(a ^ (<uint64_t>idx * 0x9E3779B97F4A7C15ULL))


cdef inline uint64_t _fsw(uint64_t filled, uint64_t state, uint64_t owner) noexcept nogil:
    return filled | (state << 32) | (owner << 40)


cdef inline int _state(uint64_t fsw) noexcept nogil:
    """The API state of an entry's fsw word: FILLING with owner ORPHAN reads ORPHANED."""
    cdef int st = (fsw >> 32) & 0xFF
    if st == S_FILLING and (fsw >> 40) & 0xFF == ORPHAN:
        return S_ORPHANED
    return st


def layout(arena_size, page_size, sizes, max_workers, index_capacity):
    """Byte offsets of the control sections and the control file size (both twins agree)."""
    npages = arena_size // page_size
    spp = page_size // sizes[0]
    nslots = npages * spp
    lay = {"npages": npages, "spp": spp, "cap": index_capacity}
    pos = HDR_SIZE
    for name, nbytes in (("classes", 48 * len(sizes)), ("workers", 64 * max_workers),
                         ("page_class", 4 * npages), ("page_used", 4 * npages),
                         ("page_carved", 4 * npages), ("free_pages", 4 * npages),
                         ("page_holes", npages), ("cword", 8 * nslots), ("cstate", nslots),
                         ("sent", nslots), ("index", 64 * index_capacity)):
        lay[name] = pos
        pos = round_up(pos + nbytes, ALIGN)
    lay["ctl_size"] = round_up(pos, 4096)
    return lay


def _check_params(arena_size, page_size, min_chunk, growth, max_workers, index_capacity):
    if type(page_size) is not int or page_size <= 0 or page_size % 4096 or page_size >= 1 << 32:
        raise ValueError(f"page_size must be a positive multiple of 4096 below 4 GiB "
                         f"(got {page_size!r})")
    if type(arena_size) is not int or arena_size <= 0 or arena_size % page_size:
        raise ValueError(f"arena_size must be a positive multiple of page_size "
                         f"(got arena_size={arena_size!r}, page_size={page_size})")
    if type(min_chunk) is not int or not 64 <= min_chunk <= page_size:
        raise ValueError(f"min_chunk must be between 64 and page_size (got {min_chunk!r})")
    if not 1.0 < growth < float("inf"):
        raise ValueError(f"growth must be a finite number > 1.0 (got {growth!r})")
    if arena_size // page_size > 0x7FFFFFFF:
        raise ValueError("arena_size / page_size must be < 2**31 pages")
    if type(max_workers) is not int or not 1 <= max_workers <= MAX_WORKERS:
        raise ValueError(f"max_workers must be in 1..{MAX_WORKERS} (got {max_workers!r})")
    if index_capacity is None:
        index_capacity = 1024
        while index_capacity < 16 * (arena_size // page_size):
            index_capacity *= 2
    if (type(index_capacity) is not int or index_capacity < 64
            or index_capacity & (index_capacity - 1)):
        raise ValueError(f"index_capacity must be a power of two >= 64 (got {index_capacity!r})")
    return index_capacity


def _open_file(path, size, create, keep=False):
    """Open (or create, sized and fallocated) the arena file, flocked: exclusively while it
    is being created (refused while a process uses it, e.g. a one-worker edge's private
    arena), shared once attached. ``keep``: an existing file of exactly ``size`` bytes keeps
    its bytes (a warm restart); anything else is zeroed. Either way a created file is
    fallocated whole: that also fills the holes a previous run punched in a kept file (see
    zero-copy in the theory of operation), so no page of it needs re-reserving later."""
    if create:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    else:
        fd = os.open(path, os.O_RDWR)
    f = open(fd, "r+b", buffering=0)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if create else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RegionBusy(f"arena file {path} is in use by another process") from None
        if create and not (keep and os.fstat(fd).st_size == size):
            os.ftruncate(fd, 0)      # a fresh create zeroes the region
            os.ftruncate(fd, size)
        if create:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                raise OSError(exc.errno,
                              f"cannot reserve {size} bytes for {path}: {exc.strerror}") from exc
        elif os.fstat(fd).st_size != size:
            raise RuntimeError(f"{path} has {os.fstat(fd).st_size} bytes, expected {size}")
    except BaseException:
        f.close()
        raise
    return f


def wake_name(nonce, worker_id):
    """Abstract AF_UNIX name of a worker's wake-up socket."""
    return b"\0edge-shm-%016x-%d" % (nonce, worker_id)


def _adoptable(entries):
    """``adopt``'s argument as a list of checked (oid, idx, offset, length, checksum)."""
    out = []
    for item in entries:
        oid, idx, off, length, checksum = item
        _oid(oid)
        for name, v in (("idx", idx), ("offset", off), ("length", length),
                        ("checksum", checksum)):
            if type(v) is not int:
                raise ValueError(f"adopt: {name} must be an int (got {v!r:.40})")
        if not 0 <= checksum < 1 << 64:
            raise ValueError(f"adopt: checksum out of range (got {checksum})")
        out.append((oid, idx, off, length, checksum))
    return out


cdef const uint8_t* _oid(object oid) except NULL:
    if type(oid) is not bytes or len(<bytes>oid) != 16:
        raise ValueError(f"oid must be 16 bytes (got {oid!r:.40})")
    return <const uint8_t*><char*>oid


@cython.final
cdef class SharedCache:
    """A handle on the shared arena + index: the supervisor's (create) or a worker's (attach)."""

    def __cinit__(self):
        self._ctl = NULL
        self._mem = NULL
        self._counts = NULL
        self._wid = -1
        self._fd = -1
        self._fills = {}
        self._names = []

    def __dealloc__(self):
        if self._has_ctl_buf:
            PyBuffer_Release(&self._ctl_buf)
        if self._has_arena_buf:
            PyBuffer_Release(&self._arena_buf)
        c_free(self._counts)

    def __init__(self):
        raise TypeError("use SharedCache.create() or SharedCache.attach()")

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def create(cls, path, arena_size, page_size=1 << 20, *, min_chunk=1024, growth=1.25,
               max_workers=16, index_capacity=None, prefault=False, keep_arena=False):
        """Create (or re-create, empty) the arena file ``path`` and its ``path.ctl``.

        Refused while any process has the region (or the arena file) in use. Returns the
        supervisor's handle (worker id -1: it may recover workers, adopt, read stats, not pin
        or fill). ``keep_arena``: an existing arena file of exactly ``arena_size`` bytes keeps
        its bytes for ``adopt`` (the index is empty all the same); it is fallocated whole
        again, filling any holes a previous run punched (zero-copy).
        """
        cdef SharedCache self = SharedCache.__new__(SharedCache)
        cdef Py_ssize_t i
        cdef uint64_t* h
        cap = _check_params(arena_size, page_size, min_chunk, growth, max_workers,
                            index_capacity)
        sizes = class_sizes(page_size, min_chunk, float(growth))
        lay = layout(arena_size, page_size, sizes, max_workers, cap)
        ctl = open(os.open(path + ".ctl", os.O_RDWR | os.O_CREAT, 0o600), "r+b", buffering=0)
        try:
            fcntl.flock(ctl.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            ctl.close()
            raise RegionBusy(f"shared cache {path} is attached by a live process") from None
        try:
            os.ftruncate(ctl.fileno(), 0)
            os.ftruncate(ctl.fileno(), lay["ctl_size"])
            os.posix_fallocate(ctl.fileno(), 0, lay["ctl_size"])
            self._ctl_file = ctl
            arena = _open_file(path, arena_size, True, keep_arena)
            self._arena_file = arena
            self._map(path, prefault)
            h = self._h
            h[H_VERSION] = LAYOUT_VERSION
            h[H_IMPL] = IMPL
            h[H_CTL_SIZE] = lay["ctl_size"]
            h[H_ARENA_SIZE] = arena_size
            h[H_PAGE_SIZE] = page_size
            h[H_MIN_CHUNK] = sizes[0]
            h[H_NCLASSES] = len(sizes)
            h[H_MAX_WORKERS] = max_workers
            h[H_NPAGES] = lay["npages"]
            h[H_SPP] = lay["spp"]
            h[H_INDEX_CAP] = cap
            h[H_NEXT_GEN] = 2
            h[H_NONCE] = int.from_bytes(os.urandom(8), "little")
            for i, name in enumerate(("classes", "workers", "page_class", "page_used",
                                      "page_carved", "free_pages", "page_holes", "cword",
                                      "cstate", "sent", "index")):
                h[H_OFF_CLASSES + i] = lay[name]
            self._bind_sections()
            for i in range(self._nclasses):
                self._cls[i].size = sizes[i]
                self._cls[i].per_page = page_size // sizes[i]
                self._cls[i].free_head = NIL
                self._cls[i].bump_page = NIL
            for i in range(self._npages):
                self._page_class[i] = NIL
                self._free_pages[i] = <int32_t>(self._npages - 1 - i)  # page 0 on top
            h[H_NFREE_PAGES] = self._npages
            rc = shm_mutex_init(<char*>self._ctl + HDR_MUTEX)
            if rc:
                raise OSError(rc, f"pthread_mutex_init: {os.strerror(rc)}")
            shm_fence_rel()
            h[H_MAGIC] = MAGIC          # last: a half-created region never attaches
            fcntl.flock(arena.fileno(), fcntl.LOCK_SH)
            fcntl.flock(ctl.fileno(), fcntl.LOCK_SH)
        except BaseException:
            self.close()
            raise
        self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._send.setblocking(False)
        return self

    @classmethod
    def attach(cls, path, worker_id):
        """Attach worker ``worker_id`` to an existing region (after fork, in the worker).

        If the id's previous process died without detaching, its pins and fills are
        recovered first. A second live process with the same id is refused.
        """
        cdef SharedCache self = SharedCache.__new__(SharedCache)
        ctl = open(os.open(path + ".ctl", os.O_RDWR), "r+b", buffering=0)
        try:
            fcntl.flock(ctl.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            ctl.close()
            raise RuntimeError(f"shared cache {path} is being created") from None
        self._ctl_file = ctl
        try:
            head = os.pread(ctl.fileno(), 8 * 5, 0)
            words = [int.from_bytes(head[i:i + 8], "little") for i in range(0, 40, 8)]
            if words[0] != MAGIC or words[1] != LAYOUT_VERSION:
                raise RuntimeError(f"{path}.ctl is not a shared cache region of layout "
                                   f"{LAYOUT_VERSION}")
            if words[2] != IMPL:
                raise RuntimeError(f"{path}.ctl is driven by the other twin (impl {words[2]})")
            if os.fstat(ctl.fileno()).st_size != words[3]:
                raise RuntimeError(f"{path}.ctl has the wrong size")
            self._arena_file = _open_file(path, words[4], False)
            self._map(path, False)
            self._bind_sections()
            if type(worker_id) is not int or not 0 <= worker_id < self._max_workers:
                raise ValueError(f"worker_id must be in 0..{self._max_workers - 1} "
                                 f"(got {worker_id!r})")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self._names[worker_id])
            except OSError:
                sock.close()
                raise RuntimeError(f"worker id {worker_id} is attached by a live process") \
                    from None
            sock.setblocking(False)
            self._sock = sock
            self._counts = <uint32_t*>calloc(<size_t>(self._npages * self._spp), sizeof(uint32_t))
            if self._counts == NULL:
                raise MemoryError("cannot allocate the pin counts")
            self._wid = worker_id
            self._bit = (<uint64_t>1) << worker_id
            self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._send.setblocking(False)
            if self._workers[worker_id].pid != 0:
                self._recover(worker_id)   # the previous process of this id died attached
            self._lock()
            self._workers[worker_id].pid = os.getpid()
            self._workers[worker_id].attaches += 1
            self._unlock()
        except BaseException:
            self.close()
            raise
        return self

    def _map(self, path, prefault):
        populate = mmap.MAP_POPULATE if prefault else 0
        self._path = path
        self._ctl_mmap = mmap.mmap(self._ctl_file.fileno(), 0, flags=mmap.MAP_SHARED)
        PyObject_GetBuffer(self._ctl_mmap, &self._ctl_buf, PyBUF_WRITABLE)
        self._has_ctl_buf = True
        self._ctl = <char*>self._ctl_buf.buf
        self._h = <uint64_t*>self._ctl
        self._mutex = <void*>(self._ctl + HDR_MUTEX)
        self._arena_mmap = mmap.mmap(self._arena_file.fileno(), 0,
                                     flags=mmap.MAP_SHARED | populate)
        PyObject_GetBuffer(self._arena_mmap, &self._arena_buf, PyBUF_WRITABLE)
        self._has_arena_buf = True
        self._mem = <char*>self._arena_buf.buf
        self._base = memoryview(self._arena_mmap)
        self._fd = self._arena_file.fileno()

    def _bind_sections(self):
        cdef uint64_t* h = self._h
        cdef char* c = self._ctl
        self._arena_size = h[H_ARENA_SIZE]
        self._page_size = h[H_PAGE_SIZE]
        self._npages = h[H_NPAGES]
        self._spp = h[H_SPP]
        self._nclasses = <int>h[H_NCLASSES]
        self._max_workers = <int>h[H_MAX_WORKERS]
        self._cap = h[H_INDEX_CAP]
        self._cls = <ClassInfo*>(c + h[H_OFF_CLASSES])
        self._workers = <WorkerInfo*>(c + h[H_OFF_WORKERS])
        self._page_class = <int32_t*>(c + h[H_OFF_PAGE_CLASS])
        self._page_used = <int32_t*>(c + h[H_OFF_PAGE_USED])
        self._page_carved = <int32_t*>(c + h[H_OFF_PAGE_CARVED])
        self._free_pages = <int32_t*>(c + h[H_OFF_FREE_PAGES])
        self._page_holes = <uint8_t*>(c + h[H_OFF_PAGE_HOLES])
        self._cword = <uint64_t*>(c + h[H_OFF_CWORD])
        self._cstate = <uint8_t*>(c + h[H_OFF_CSTATE])
        self._sent = <uint8_t*>(c + h[H_OFF_SENT])
        self._index = <Entry*>(c + h[H_OFF_INDEX])
        self._names = [wake_name(h[H_NONCE], w) for w in range(self._max_workers)]

    # -- properties ------------------------------------------------------------------------

    @property
    def path(self):
        return self._path

    @property
    def worker_id(self):
        return self._wid

    @property
    def arena_size(self):
        return self._arena_size

    @property
    def page_size(self):
        return self._page_size

    @property
    def max_workers(self):
        return self._max_workers

    @property
    def wake_fd(self):
        """The fd to ``loop.add_reader()``: readable after a watched fill progressed."""
        if self._sock is None:
            raise ValueError("only a worker handle has a wake-up socket")
        return self._sock.fileno()

    @property
    def fd(self):
        """The arena file's descriptor (``os.sendfile`` from it at a chunk's offset); -1 once
        closed."""
        return self._fd

    @property
    def zero_copy(self):
        """Whether ``sendable`` may say yes (this handle only; default False)."""
        return self._zero_copy

    @zero_copy.setter
    def zero_copy(self, on):
        self._zero_copy = bool(on)

    def chunk_size(self, nbytes):
        """The chunk size a block of ``nbytes`` occupies (its weight for the policy)."""
        self._check_open()
        n = nbytes
        if not 0 < n <= self._page_size:
            raise ValueError(f"nbytes must be in 1..page_size={self._page_size} (got {n})")
        return self._cls[self._class_of(n)].size

    # -- the mutex -------------------------------------------------------------------------

    cdef int _lock(self) except -1:
        cdef int rc
        with nogil:
            rc = shm_mutex_lock(self._mutex)
        if rc == SHM_EOWNERDEAD:
            # the holder died mid-section: rebuild what it may have half-written
            try:
                self._h[K_LOCK_RECOVERIES] += 1
                self._repair()
            except BaseException:
                shm_mutex_unlock(self._mutex)   # not consistent: the mutex turns unrecoverable
                raise
            shm_mutex_consistent(self._mutex)
        elif rc != 0:
            raise OSError(rc, f"shared cache mutex: {os.strerror(rc)}")
        return 0

    cdef void _unlock(self) noexcept:
        shm_mutex_unlock(self._mutex)

    def _debug_lock(self):
        """Take the mutex and keep it (tests: a process killed while holding it)."""
        self._check_open()
        self._lock()

    def _debug_unlock(self):
        self._unlock()

    def _debug_alloc(self, nbytes):
        """Allocate a chunk and index nothing: the state a death between alloc and insert
        leaves (tests of the EOWNERDEAD repair)."""
        self._check_open()
        self._lock()
        try:
            return self._alloc(self._class_of(nbytes))
        finally:
            self._unlock()

    # -- lookups (no lock) -----------------------------------------------------------------

    def lookup_pin(self, oid, idx):
        """Pin block (oid, idx) if indexed: ``(offset, length, state, filled, gen)`` or None.

        state is FILLING (stream ``[0, filled)``, then ``watch``) or READY. No lock is taken.
        The pin holds until ``unpin(offset)``.
        """
        cdef const uint8_t* o = _oid(oid)
        cdef uint32_t ix = idx
        cdef uint64_t h, g, w, fsw, j
        cdef uint64_t mask = self._cap - 1
        cdef Entry* e
        cdef int64_t off = 0, slot
        cdef uint32_t length = 0
        cdef int attempt, found
        cdef uint64_t n
        if self._bit == 0:
            self._check_worker()
        h = _hash(o, ix)
        for attempt in range(RETRIES):
            found = 0
            j = h & mask
            e = NULL
            for n in range(self._cap):
                e = &self._index[j]
                g = shm_load_acq(&e.gen)
                if g == G_EMPTY:
                    break
                if g != G_TOMB and e.idx == ix and memcmp(e.oid, o, 16) == 0:
                    off = e.off
                    length = e.length
                    shm_fence_acq()
                    found = 1 if shm_load_rlx(&e.gen) == g else 2
                    break
                j = (j + 1) & mask
            if found == 0:
                self._misses += 1
                return None
            if found == 2:
                self._races += 1
                continue
            slot = self._slot_of(off)
            if slot < 0:
                self._races += 1
                continue
            if self._counts[slot] == 0:
                while True:
                    w = shm_load_sc(&self._cword[slot])
                    if w & FLAGS:              # being evicted, or removed while pinned
                        self._misses += 1
                        return None
                    if shm_cas(&self._cword[slot], w, w | self._bit):
                        break
            self._counts[slot] += 1
            if shm_load_sc(&e.gen) != g:      # removed (and maybe reused) before our pin
                self._unpin_slot(slot)
                self._races += 1
                continue
            fsw = shm_load_acq(&e.fsw)
            self._hits += 1
            return (off, length, _state(fsw), fsw & 0xFFFFFFFF, g)
        self._misses += 1
        return None

    def status(self, oid, idx, gen):
        """``(state, filled)`` of the entry (oid, idx) of generation ``gen``; (GONE, 0) if it
        was removed (its fill failed or its owner died) or replaced. No lock."""
        cdef const uint8_t* o = _oid(oid)
        cdef uint32_t ix = idx
        cdef uint64_t gn = gen, g, fsw, j, n
        cdef uint64_t mask = self._cap - 1
        cdef Entry* e
        self._check_open()
        j = _hash(o, ix) & mask
        for n in range(self._cap):
            e = &self._index[j]
            g = shm_load_acq(&e.gen)
            if g == G_EMPTY:
                break
            if g == gn:
                fsw = shm_load_acq(&e.fsw)
                if shm_load_sc(&e.gen) == gn:
                    return (_state(fsw), fsw & 0xFFFFFFFF)
                break
            j = (j + 1) & mask
        # not seen: removed, or moved by an index rebuild racing with us -- ask under the lock
        self._lock()
        try:
            j = <uint64_t>self._find(o, ix)
            if <int64_t>j >= 0 and self._index[j].gen == gn:
                fsw = self._index[j].fsw
                return (_state(fsw), fsw & 0xFFFFFFFF)
        finally:
            self._unlock()
        return (GONE, 0)

    def unpin(self, off):
        """Drop one of this worker's pins on the chunk at ``off``; returns the pins left."""
        cdef int64_t slot = self._slot_checked(off)
        if self._counts[slot] == 0:
            raise ValueError(f"chunk at offset {off} is not pinned by worker {self._wid}")
        self._unpin_slot(slot)
        return self._counts[slot]

    def repin(self, off):
        """Add a pin on a chunk this worker already pins (e.g. a second reader of a block)."""
        cdef int64_t slot = self._slot_checked(off)
        if self._counts[slot] == 0:
            raise ValueError(f"chunk at offset {off} is not pinned by worker {self._wid}")
        self._counts[slot] += 1
        return self._counts[slot]

    def pins(self, off):
        """This worker's pin count on the chunk at ``off``."""
        cdef int64_t slot = self._slot_checked(off)
        return self._counts[slot]

    def view(self, off, length):
        """A writable memoryview of ``[off, off+length)``: a chunk this worker pins. No copy."""
        cdef int64_t slot = self._slot_checked(off)
        cdef int64_t o = off, n = length
        if self._bit and self._counts[slot] == 0:
            raise ValueError(f"chunk at offset {off} is not pinned by worker {self._wid}")
        if not 0 <= n <= self._cls[self._page_class[o // self._page_size]].size:
            raise ValueError(f"length {n} out of range for the chunk at offset {o}")
        return self._base[o:o + n]

    def sendable(self, off):
        """Whether the chunk at ``off`` (pinned by this worker) may be sent with
        ``os.sendfile(sock, fd, off, n)``: ``zero_copy`` is on and the chunk is made of whole
        4 KiB pages. If so the chunk is marked SENT, so that whoever really frees it later
        punches it out of the arena file first (the kernel may still read the sent pages).
        No lock: the mark is a byte store made while the pin holds the chunk."""
        cdef int64_t slot
        if self._bit == 0:
            self._check_worker()
        slot = self._slot_checked(off)
        if self._counts[slot] == 0:
            raise ValueError(f"chunk at offset {off} is not pinned by worker {self._wid}")
        if not self._zero_copy or self._cls[self._page_class[slot // self._spp]].size % SEND_UNIT:
            return False
        if shm_load8_rlx(&self._sent[slot]) == 0:   # a hot block: one shared write, once
            shm_store8_rel(&self._sent[slot], 1)
        return True

    cdef int _unpin_slot(self, int64_t slot) except -1:
        cdef uint64_t old
        cdef int64_t page
        self._counts[slot] -= 1
        if self._counts[slot]:
            return 0
        old = shm_fetch_and(&self._cword[slot], ~self._bit)
        if (old & ~self._bit) != DEFERRED:
            return 0
        # the last pin of a chunk removed from the index: free it (whoever gets here first)
        self._lock()
        if shm_load_sc(&self._cword[slot]) == DEFERRED and self._cstate[slot] == C_USED:
            shm_fetch_and(&self._cword[slot], ~DEFERRED)
            page = slot // self._spp
            self._release(page * self._page_size
                          + (slot - page * self._spp) * self._cls[self._page_class[page]].size,
                          slot)
            self._h[K_DEFERRED_FREES] += 1
        self._unlock()
        return 0

    # -- fills (under the mutex) -----------------------------------------------------------

    def begin_fill(self, oid, idx, length):
        """Start filling block (oid, idx) of ``length`` bytes: single-flight across workers.

        Returns the chunk offset (pinned once for the caller, indexed FILLING, owned by this
        worker), -1 if no memory or index room (evict, then retry), or None if the block is
        already indexed (filling elsewhere or ready): ``lookup_pin`` it.
        """
        cdef const uint8_t* o = _oid(oid)
        cdef uint32_t ix = idx
        cdef int64_t n = length, off, slot
        cdef int cls
        cdef uint64_t gen
        self._check_worker()
        if not 0 < n <= self._page_size:
            raise ValueError(f"length must be in 1..page_size={self._page_size} (got {n})")
        cls = self._class_of(n)
        self._lock()
        try:
            if self._find(o, ix) >= 0:
                return None
            if (self._h[H_LIVE] + self._h[H_TOMBS] + 1) * 4 > self._cap * 3:
                if self._h[H_TOMBS]:
                    self._rebuild_index()
                if (self._h[H_LIVE] + 1) * 4 > self._cap * 3:
                    self._h[K_INDEX_FULL] += 1
                    return -1
            off = self._alloc(cls)
            if off < 0:
                self._h[K_ALLOC_FAILURES] += 1
                return -1
            slot = self._slot_of(off)
            shm_fetch_or(&self._cword[slot], self._bit)
            self._counts[slot] += 1
            gen = self._h[H_NEXT_GEN]
            self._h[H_NEXT_GEN] = gen + 1
            self._insert(o, ix, <uint32_t>n, off, gen, _fsw(0, S_FILLING, self._wid), 0, 0)
            self._h[K_FILLS_BEGUN] += 1
        finally:
            self._unlock()
        self._fills[off] = (oid, idx, gen)
        return off

    def fill_gen(self, off):
        """The entry generation of this worker's open fill at ``off`` (what ``lookup_pin``
        and ``status`` report for it); ValueError once it was finished or failed."""
        f = self._fills.get(off)
        if f is None:
            raise ValueError(f"offset {off} is not a fill of worker {self._wid}")
        return f[2]

    cdef int64_t _own_fill(self, object off) except -2:
        """Index slot of this worker's fill at ``off``; -1 if its entry is gone."""
        cdef int64_t i
        cdef bytes oid
        f = self._fills.get(off)
        if f is None:
            raise ValueError(f"offset {off} is not a fill of worker {self._wid}")
        oid = f[0]
        i = self._find(<const uint8_t*><char*>oid, <uint32_t>f[1])
        if (i < 0 or self._index[i].gen != <uint64_t>f[2]
                or (self._index[i].fsw >> 40) & 0xFF != <uint64_t>self._wid):
            return -1     # gone, or no longer ours (recovered as dead, taken over)
        return i

    def advance_fill(self, off, filled):
        """Publish that ``[0, filled)`` of this worker's fill at ``off`` has landed; wake the
        watchers. Returns False if the entry is gone (recovered as dead)."""
        cdef Entry* e
        cdef int64_t i
        cdef uint64_t fsw, mask = 0, nf = filled
        self._check_worker()
        self._lock()
        try:
            i = self._own_fill(off)
            if i < 0:
                return False
            e = &self._index[i]
            fsw = e.fsw
            if not (fsw & 0xFFFFFFFF) <= nf <= e.length:
                raise ValueError(f"filled {nf} out of range ({fsw & 0xFFFFFFFF}..{e.length})")
            shm_store_rel(&e.fsw, _fsw(nf, S_FILLING, self._wid))
            mask = shm_exchange(&e.waiters, 0)
        finally:
            self._unlock()
        self._wake(mask)
        return True

    def finish_fill(self, off, checksum):
        """Make this worker's completely filled block READY with its xxh3-64 ``checksum``.

        Refused (ValueError) unless ``advance_fill`` reached the block's length: a partially
        filled block is never promoted. Returns False if the entry is gone. The caller keeps
        its pin (unpin when done).
        """
        cdef Entry* e
        cdef int64_t i
        cdef uint64_t mask = 0
        self._check_worker()
        self._lock()
        try:
            i = self._own_fill(off)
            if i < 0:
                self._fills.pop(off, None)
                return False
            e = &self._index[i]
            if (e.fsw & 0xFFFFFFFF) != e.length:
                raise ValueError(f"block at offset {off} is filled {e.fsw & 0xFFFFFFFF} of "
                                 f"{e.length} bytes")
            e.checksum = checksum
            shm_store_rel(&e.fsw, _fsw(e.length, S_READY, self._wid))
            mask = shm_exchange(&e.waiters, 0)
            self._h[K_FILLS_FINISHED] += 1
        finally:
            self._unlock()
        del self._fills[off]
        self._wake(mask)
        return True

    def fail_fill(self, off):
        """Remove this worker's fill at ``off`` from the index (never a hit); its chunk is
        freed at its last unpin, the caller's included. Watchers are woken and see GONE."""
        cdef Entry* e
        cdef int64_t i
        cdef uint64_t mask = 0
        cdef int64_t slot
        self._check_worker()
        self._lock()
        try:
            i = self._own_fill(off)
            if i >= 0:
                e = &self._index[i]
                slot = self._slot_of(e.off)
                shm_fetch_or(&self._cword[slot], DEFERRED)
                mask = shm_exchange(&e.waiters, 0)
                self._remove_entry(i)
                self._h[K_FILLS_FAILED] += 1
        finally:
            self._unlock()
        self._fills.pop(off, None)
        self._wake(mask)

    def watch(self, oid, idx, gen):
        """Ask for a wake-up on ``wake_fd`` at the next progress of entry (oid, idx, gen), and
        return its ``(state, filled)`` now (GONE if removed). Re-arm after every wake-up."""
        cdef const uint8_t* o = _oid(oid)
        cdef int64_t i
        cdef Entry* e
        self._check_worker()
        self._lock()
        try:
            i = self._find(o, <uint32_t>idx)
            if i < 0 or self._index[i].gen != <uint64_t>gen:
                return (GONE, 0)
            e = &self._index[i]
            if (e.fsw >> 32) & 0xFF == S_FILLING:
                shm_fetch_or(&e.waiters, self._bit)
            return (_state(e.fsw), e.fsw & 0xFFFFFFFF)
        finally:
            self._unlock()

    def take_fill(self, oid, idx, gen):
        """Take over the orphaned fill of entry (oid, idx, gen) -- its owner died while this
        worker read it -- and return the bytes already filled (continue from there); None if
        it is not (or no longer) an orphan: another reader took it, it finished or it went.

        Exactly one caller wins per orphan (under the mutex). The caller must pin the chunk
        (it is a reader of it); the winner gets one more pin, the fill's own, and owns the
        fill from then on like one of its ``begin_fill``s (same offset and generation).
        """
        cdef const uint8_t* o = _oid(oid)
        cdef int64_t i, slot
        cdef Entry* e
        cdef uint64_t fsw
        self._check_worker()
        self._lock()
        try:
            i = self._find(o, <uint32_t>idx)
            if i < 0 or self._index[i].gen != <uint64_t>gen:
                return None
            e = &self._index[i]
            fsw = e.fsw
            if _state(fsw) != S_ORPHANED:
                return None
            slot = self._slot_of(e.off)
            if self._counts[slot] == 0:
                raise ValueError(f"take_fill: worker {self._wid} does not pin the chunk at "
                                 f"offset {e.off} (pin it first: lookup_pin)")
            self._counts[slot] += 1
            shm_store_rel(&e.fsw, _fsw(fsw & 0xFFFFFFFF, S_FILLING, self._wid))
            self._h[K_FILLS_TAKEN_OVER] += 1
            off = e.off
            self._fills[off] = (oid, idx, gen)
            return fsw & 0xFFFFFFFF
        finally:
            self._unlock()

    def drain_wakeups(self):
        """Read every queued wake-up datagram; returns how many there were."""
        self._check_worker()
        n = 0
        while True:
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return n
            n += 1

    cdef void _wake(self, uint64_t mask):
        cdef int w
        if mask == 0:
            return
        for w in range(self._max_workers):
            if mask >> w & 1:
                try:
                    self._send.sendto(b"\1", self._names[w])
                except OSError:
                    pass   # nobody bound (the worker died) or a wake-up already queued

    def evict(self, oid, idx, gen=0):
        """Remove READY block (oid, idx) and free its chunk, only if no worker pins it (and,
        with ``gen``, only that generation of it). True if evicted; False if it is indexed
        but busy (pinned, or not READY); None if it is not indexed (or another generation)."""
        cdef const uint8_t* o = _oid(oid)
        cdef int64_t i, slot
        cdef uint64_t g = gen
        cdef Entry* e
        self._check_open()
        self._lock()
        try:
            i = self._find(o, <uint32_t>idx)
            if i < 0 or (g and self._index[i].gen != g):
                return None
            e = &self._index[i]
            slot = self._slot_of(e.off)
            if (e.fsw >> 32) & 0xFF != S_READY or not shm_cas(&self._cword[slot], 0, FREEING):
                self._h[K_EVICT_BUSY] += 1
                return False
            self._remove_entry(i)
            self._release(e.off, slot)
            self._h[K_EVICTIONS] += 1
            return True
        finally:
            self._unlock()

    def remove(self, oid, idx):
        """Remove block (oid, idx) whatever its state (purge); True if it was indexed.

        A chunk nobody pins is freed now; a pinned one is DEFERRED and freed at its last
        unpin, so its readers keep valid bytes. Watchers of a FILLING entry are woken and see
        GONE; its owner's later ``advance_fill``/``finish_fill`` report the entry gone.
        """
        cdef const uint8_t* o = _oid(oid)
        cdef int64_t i, slot, off
        cdef uint64_t old, mask = 0
        self._check_open()
        self._lock()
        try:
            i = self._find(o, <uint32_t>idx)
            if i >= 0:
                off = self._index[i].off
                slot = self._slot_of(off)
                mask = shm_exchange(&self._index[i].waiters, 0)
                self._remove_entry(i)
                # DEFERRED first: from here no new pin can be taken (a pin CAS refuses flags)
                old = shm_fetch_or(&self._cword[slot], DEFERRED)
                if old & WORKERS_MASK == 0:
                    self._release(off, slot)      # nobody pinned it: free now
                self._h[K_REMOVED] += 1
        finally:
            self._unlock()
        self._wake(mask)
        return i >= 0

    def evict_sweep(self, max_probe, nbytes=1):
        """Evict READY blocks no worker pins, walking the index from a persistent clock hand.

        The last resort when the policies' victims freed nothing (blocks no live worker's
        policy tracks, e.g. a dead worker's). Orphaned fills nobody pins or watches any more
        go too. Stops once the freed chunks add up to ``nbytes`` or after looking at
        ``max_probe`` index slots. Returns the evicted ``(oid, idx)`` pairs.
        """
        cdef uint64_t mask = self._cap - 1, hand, n, probe, i
        cdef int64_t freed = 0, want = nbytes, slot, off, cs
        cdef int st
        cdef Entry* e
        self._check_open()
        if max_probe < 0:
            raise ValueError(f"max_probe must be >= 0 (got {max_probe})")
        probe = min(<uint64_t>max_probe, self._cap)
        out = []
        self._lock()
        try:
            hand = self._h[H_SWEEP_HAND] & mask
            for n in range(probe):
                if freed >= want:
                    break
                i = hand
                hand = (hand + 1) & mask
                e = &self._index[i]
                if e.gen < 2:
                    continue
                st = _state(e.fsw)
                if st != S_READY and not (st == S_ORPHANED and shm_load_sc(&e.waiters) == 0):
                    continue
                off = e.off
                slot = self._slot_of(off)
                if slot < 0 or not shm_cas(&self._cword[slot], 0, FREEING):
                    continue                      # pinned (or being freed): skip it
                cs = self._cls[self._page_class[off // self._page_size]].size
                out.append((PyBytes_FromStringAndSize(<char*>e.oid, 16), e.idx))
                self._remove_entry(<int64_t>i)
                self._release(off, slot)
                freed += cs
                self._h[K_EVICTIONS] += 1
                self._h[K_SWEPT] += 1
            self._h[H_SWEEP_HAND] = hand
        finally:
            self._unlock()
        return out

    def info(self, oid, idx):
        """The entry of (oid, idx) as a dict, or None (diagnostics and tests)."""
        cdef const uint8_t* o = _oid(oid)
        cdef int64_t i
        cdef Entry* e
        self._check_open()
        self._lock()
        try:
            i = self._find(o, <uint32_t>idx)
            if i < 0:
                return None
            e = &self._index[i]
            return {"offset": e.off, "length": e.length, "state": _state(e.fsw),
                    "filled": e.fsw & 0xFFFFFFFF, "owner": (e.fsw >> 40) & 0xFF,
                    "gen": e.gen, "checksum": e.checksum,
                    "pinned_by": [w for w in range(self._max_workers)
                                  if self._cword[self._slot_of(e.off)] >> w & 1]}
        finally:
            self._unlock()

    # -- warm restart ----------------------------------------------------------------------

    def ready_entries(self):
        """Every READY entry as ``(oid, idx, offset, length, checksum)`` (what a clean stop
        saves for a warm restart; call it once the workers are gone)."""
        cdef uint64_t i
        cdef Entry* e
        self._check_open()
        out = []
        self._lock()
        try:
            for i in range(self._cap):
                e = &self._index[i]
                if e.gen >= 2 and (e.fsw >> 32) & 0xFF == S_READY:
                    out.append((PyBytes_FromStringAndSize(<char*>e.oid, 16), e.idx, e.off,
                                e.length, e.checksum))
        finally:
            self._unlock()
        return out

    def adopt(self, entries):
        """Index blocks READY at the offsets they occupy in the arena's bytes (a warm
        restart: ``create(keep_arena=True)``, then this, then verify the checksums and
        ``remove`` the blocks that fail, all before any worker attaches).

        ``entries``: ``(oid, idx, offset, length, checksum)`` tuples. One is refused when its
        length is out of range, its offset is not the start of a chunk of its size class
        within the arena, the page already holds another class, the chunk is in use, the key
        is indexed, or the index would pass 3/4 full. Returns the refused ``(oid, idx)``.
        """
        cdef int64_t off, page, rel, cs, j, slot, n
        cdef int cls, pc
        cdef uint32_t ix
        cdef uint64_t gen, ck
        cdef const uint8_t* o
        self._check_open()
        refused = []
        items = _adoptable(entries)    # malformed input raises here, before any change
        self._lock()
        try:
            for oid, idx, off_o, length, checksum in items:
                o = <const uint8_t*><char*>oid
                n = length
                if (not 0 <= idx <= 0xFFFFFFFF or not 0 < n <= self._page_size
                        or not 0 <= off_o < self._arena_size):
                    refused.append((oid, idx))
                    continue
                off = off_o
                ix = idx
                ck = checksum
                cls = self._class_of(n)
                cs = self._cls[cls].size
                page = off // self._page_size
                rel = off - page * self._page_size
                j = rel // cs
                pc = self._page_class[page]
                if (rel % cs or j >= self._cls[cls].per_page or (pc != NIL and pc != cls)
                        or self._find(o, ix) >= 0
                        or (self._h[H_LIVE] + self._h[H_TOMBS] + 1) * 4 > self._cap * 3):
                    refused.append((oid, idx))
                    continue
                slot = page * self._spp + j
                if self._cstate[slot] != C_FREE or shm_load_sc(&self._cword[slot]):
                    refused.append((oid, idx))
                    continue
                (<volatile int32_t*>self._page_class)[page] = cls
                self._cstate[slot] = C_USED
                gen = self._h[H_NEXT_GEN]
                self._h[H_NEXT_GEN] = gen + 1
                self._insert(o, ix, <uint32_t>n, off, gen, _fsw(n, S_READY, 0), ck, 0)
                self._h[K_ADOPTED] += 1
            # pages that changed hands: derive free lists, free pages and counters afresh
            self._rebuild()
        finally:
            self._unlock()
        return refused

    # -- recovery --------------------------------------------------------------------------

    def recover_worker(self, worker_id):
        """Release everything worker ``worker_id`` held: call it after that worker died.

        Clears its pin bit from every chunk (freeing chunks removed while it pinned them).
        Of the FILLING entries it owned, those another worker pins or watches are orphaned
        (kept, with what landed, for a reader to ``take_fill``), the others removed; orphans
        nobody pins or watches any more are removed too. Returns ``{"chunks": pins cleared,
        "fills": entries removed, "orphaned": entries orphaned}``.
        """
        self._check_open()
        if type(worker_id) is not int or not 0 <= worker_id < self._max_workers:
            raise ValueError(f"worker_id must be in 0..{self._max_workers - 1}")
        if worker_id == self._wid:
            raise ValueError("a worker cannot recover itself (close() releases its pins)")
        return self._recover(worker_id)

    def _recover(self, int w):
        cdef uint64_t bit = (<uint64_t>1) << w, g, fsw, old, owner, mask = 0
        cdef uint64_t i
        cdef int64_t slot, page, nslots = self._npages * self._spp
        cdef int64_t chunks = 0, fills = 0, orphaned = 0
        cdef Entry* e
        self._lock()
        try:
            for i in range(self._cap):
                e = &self._index[i]
                g = e.gen
                if g < 2:
                    continue
                fsw = e.fsw
                shm_fetch_and(&e.waiters, ~bit)
                if (fsw >> 32) & 0xFF != S_FILLING:
                    continue
                owner = (fsw >> 40) & 0xFF
                if owner != <uint64_t>w and owner != ORPHAN:
                    continue
                slot = self._slot_of(e.off)
                if (shm_load_sc(&self._cword[slot]) & WORKERS_MASK & ~bit
                        or shm_load_sc(&e.waiters)):
                    # a reader in another worker: keep what landed for it to take over
                    if owner == <uint64_t>w:
                        shm_store_rel(&e.fsw, _fsw(fsw & 0xFFFFFFFF, S_FILLING, ORPHAN))
                        mask |= shm_exchange(&e.waiters, 0)
                        orphaned += 1
                    continue
                shm_fetch_or(&self._cword[slot], DEFERRED)
                mask |= shm_exchange(&e.waiters, 0)
                self._remove_entry(i)
                fills += 1
            for slot in range(nslots):
                old = shm_load_rlx(&self._cword[slot])
                if not (old & bit or old == DEFERRED):
                    continue   # a plain load: no cache line dirtied for untouched chunks
                old = shm_fetch_and(&self._cword[slot], ~bit)
                if old & bit:
                    chunks += 1
                if (old & ~bit) == DEFERRED and self._cstate[slot] == C_USED:
                    shm_fetch_and(&self._cword[slot], ~DEFERRED)
                    page = slot // self._spp
                    self._release(page * self._page_size + (slot - page * self._spp)
                                  * self._cls[self._page_class[page]].size, slot)
                    self._h[K_DEFERRED_FREES] += 1
            self._workers[w].pid = 0
            self._workers[w].recoveries += 1
            self._h[K_WORKER_RECOVERIES] += 1
            self._h[K_PINS_RECOVERED] += chunks
            self._h[K_FILLS_DROPPED] += fills
            self._h[K_FILLS_ORPHANED] += orphaned
        finally:
            self._unlock()
        self._wake(mask)
        return {"chunks": chunks, "fills": fills, "orphaned": orphaned}

    cdef int _repair(self) except -1:
        """Rebuild index + allocator from the live entries and per-chunk USED bytes (EOWNERDEAD)."""
        self._h[K_REPAIRS] += 1
        return self._rebuild()

    cdef int _rebuild(self) except -1:
        """Keep the index entries that point at a USED chunk of the right class (once each),
        then derive the allocator (free lists, free pages, counters) from them, the page
        classes and the USED bytes (a SENT chunk freed here is punched first, as in
        ``_release``). Under the mutex."""
        cdef int64_t nslots = self._npages * self._spp, slot, p, j, s, used, off, nfree = 0
        cdef uint64_t i, g, w
        cdef Entry* e
        cdef int c
        cdef uint8_t* ref = <uint8_t*>calloc(<size_t>nslots + 1, 1)
        cdef uint64_t* drop = <uint64_t*>calloc(<size_t>self._cap, sizeof(uint64_t))
        if ref == NULL or drop == NULL:
            c_free(ref)
            c_free(drop)
            raise MemoryError("cannot allocate repair scratch")
        try:
            # 1. entries: keep those pointing at a USED chunk of the right class, once each
            for i in range(self._cap):
                e = &self._index[i]
                g = e.gen
                if g < 2:
                    continue
                slot = self._slot_of(e.off)
                if (slot < 0 or g >= self._h[H_NEXT_GEN] or e.length == 0
                        or e.length > <uint64_t>self._page_size
                        or self._cstate[slot] != C_USED or ref[slot]
                        or self._class_of(e.length) != self._page_class[e.off // self._page_size]
                        or self._cword[slot] & DEFERRED):
                    drop[i] = 1
                    continue
                ref[slot] = 1
            for i in range(self._cap):
                if drop[i]:
                    shm_store_rel(&self._index[i].gen, G_TOMB)
            self._recount_index()
            self._rebuild_index()      # also drops duplicate keys (first one wins)
            memset(ref, 0, <size_t>nslots)
            for i in range(self._cap):
                e = &self._index[i]
                if e.gen >= 2:
                    ref[self._slot_of(e.off)] = 1
            # 2. allocator: every page from scratch
            for c in range(self._nclasses):
                self._cls[c].free_head = NIL
                self._cls[c].bump_page = NIL
                self._cls[c].pages = 0
                self._cls[c].used = 0
            self._h[H_USED_BYTES] = 0
            for p in range(self._npages):
                c = self._page_class[p]
                used = 0
                if 0 <= c < self._nclasses:
                    for j in range(self._cls[c].per_page):
                        s = p * self._spp + j
                        w = shm_load_sc(&self._cword[s])
                        if self._cstate[s] == C_USED and (
                                ref[s] or (w & DEFERRED and w & WORKERS_MASK)):
                            used += 1
                            if w & FREEING:
                                shm_fetch_and(&self._cword[s], ~FREEING)
                        elif self._cstate[s] == C_USED and self._sent[s] and not self._punch(
                                p, p * self._page_size + j * self._cls[c].size,
                                self._cls[c].size, s):
                            used += 1             # its punch failed: it stays allocated
                        else:
                            self._cstate[s] = C_FREE
                            shm_fetch_and(&self._cword[s], ~FLAGS)
                for j in range((self._cls[c].per_page if 0 <= c < self._nclasses else 0),
                               self._spp):
                    s = p * self._spp + j
                    self._cstate[s] = C_FREE
                    shm_fetch_and(&self._cword[s], ~FLAGS)
                if used == 0:
                    self._page_class[p] = NIL
                    self._page_used[p] = 0
                    self._page_carved[p] = 0
                    self._free_pages[nfree] = <int32_t>p
                    nfree += 1
                    continue
                self._page_used[p] = <int32_t>used
                self._page_carved[p] = <int32_t>self._cls[c].per_page
                self._cls[c].pages += 1
                self._cls[c].used += used
                self._h[H_USED_BYTES] += used * self._cls[c].size
                for j in range(self._cls[c].per_page - 1, -1, -1):
                    s = p * self._spp + j
                    if self._cstate[s] == C_FREE:
                        off = p * self._page_size + j * self._cls[c].size
                        _links(self._mem, off)[0] = NIL
                        _links(self._mem, off)[1] = self._cls[c].free_head
                        if self._cls[c].free_head != NIL:
                            _links(self._mem, self._cls[c].free_head)[0] = off
                        self._cls[c].free_head = off
            self._h[H_NFREE_PAGES] = nfree
        finally:
            c_free(ref)
            c_free(drop)
        return 0

    def _recount_index(self):
        cdef uint64_t i, live = 0, tombs = 0, g
        for i in range(self._cap):
            g = self._index[i].gen
            if g >= 2:
                live += 1
            elif g == G_TOMB:
                tombs += 1
        self._h[H_LIVE] = live
        self._h[H_TOMBS] = tombs

    def check(self):
        """Verify every invariant of the region (under the mutex); raise RuntimeError listing
        the violations. Meant for quiescent moments (tests, after recovery). Returns counts."""
        cdef int64_t nslots = self._npages * self._spp, slot, p, j, s, used, carved, n
        cdef int64_t off, nxt, prev
        cdef uint64_t i, g, w, live = 0, tombs = 0, used_bytes = 0
        cdef int c
        cdef Entry* e
        bad = []
        keys = set()
        refs = set()
        filling = ready = deferred = pinned = 0
        self._check_open()
        self._lock()
        try:
            for i in range(self._cap):
                e = &self._index[i]
                g = e.gen
                if g == G_TOMB:
                    tombs += 1
                if g < 2:
                    continue
                live += 1
                k = (bytes((<char*>e.oid)[:16]), e.idx)
                if k in keys:
                    bad.append(f"duplicate key {k}")
                keys.add(k)
                slot = self._slot_of(e.off)
                if slot < 0 or self._cstate[slot] != C_USED:
                    bad.append(f"entry {k} points at an unallocated offset {e.off}")
                    continue
                if self._class_of(e.length) != self._page_class[e.off // self._page_size]:
                    bad.append(f"entry {k} of {e.length} bytes in the wrong class")
                if slot in refs:
                    bad.append(f"offset {e.off} indexed twice")
                refs.add(slot)
                if self._cword[slot] & FLAGS:
                    bad.append(f"entry {k} has chunk flags {self._cword[slot] >> 62}")
                if (e.fsw >> 32) & 0xFF == S_READY:
                    ready += 1
                    if (e.fsw & 0xFFFFFFFF) != e.length:
                        bad.append(f"READY entry {k} filled {e.fsw & 0xFFFFFFFF}/{e.length}")
                elif (e.fsw >> 32) & 0xFF == S_FILLING:
                    filling += 1
                else:
                    bad.append(f"entry {k} in state {(e.fsw >> 32) & 0xFF}")
                # every live entry must be reachable by a probe from its hash
                if self._find(e.oid, e.idx) != <int64_t>i:
                    bad.append(f"entry {k} unreachable")
            if live != self._h[H_LIVE] or tombs != self._h[H_TOMBS]:
                bad.append(f"index counts {self._h[H_LIVE]}/{self._h[H_TOMBS]} != {live}/{tombs}")
            free_pages = set()
            for j in range(<int64_t>self._h[H_NFREE_PAGES]):
                free_pages.add(self._free_pages[j])
            if len(free_pages) != <Py_ssize_t>self._h[H_NFREE_PAGES]:
                bad.append("a page is on the free-page stack twice")
            listed = [0] * self._nclasses
            for p in range(self._npages):
                c = self._page_class[p]
                if c == NIL:
                    if p not in free_pages:
                        bad.append(f"page {p} is neither assigned nor free")
                    for j in range(self._spp):
                        if self._cstate[p * self._spp + j] != C_FREE:
                            bad.append(f"page {p} is free but slot {j} is used")
                        if self._sent[p * self._spp + j]:
                            bad.append(f"page {p} is free but slot {j} is marked SENT")
                    continue
                if p in free_pages:
                    bad.append(f"page {p} is assigned and free")
                used = 0
                carved = self._page_carved[p]
                for j in range(self._spp):
                    s = p * self._spp + j
                    w = self._cword[s]
                    if w & WORKERS_MASK:
                        pinned += 1
                    if self._cstate[s] != C_USED:
                        if w & FLAGS:
                            bad.append(f"free slot {s} has flags")
                        if self._sent[s]:
                            bad.append(f"free slot {s} is marked SENT")
                        continue
                    used += 1
                    if j >= carved:
                        bad.append(f"slot {s} used beyond the carved part of page {p}")
                    if self._sent[s] and self._cls[c].size % SEND_UNIT:
                        bad.append(f"slot {s} is marked SENT but its chunk of "
                                   f"{self._cls[c].size} bytes is not whole 4 KiB pages")
                    if s not in refs:
                        if w & DEFERRED and w & WORKERS_MASK:
                            deferred += 1
                        elif not (w & FREEING and self._sent[s]):   # (else: a failed punch)
                            bad.append(f"chunk slot {s} is used but neither indexed nor "
                                       f"deferred-and-pinned (word {w:#x})")
                if used != self._page_used[p]:
                    bad.append(f"page {p} counts {self._page_used[p]} used, has {used}")
                listed[c] += carved - used
                used_bytes += used * self._cls[c].size
            for c in range(self._nclasses):
                n = 0
                prev = NIL
                off = self._cls[c].free_head
                while off != NIL and n <= nslots:
                    slot = self._slot_of(off)
                    if slot < 0 or self._cstate[slot] != C_FREE or \
                            self._page_class[off // self._page_size] != c:
                        bad.append(f"class {c} free list holds offset {off}")
                        break
                    if _links(self._mem, off)[0] != prev:
                        bad.append(f"class {c} free list back link broken at {off}")
                    prev = off
                    off = _links(self._mem, off)[1]
                    n += 1
                if n != listed[c]:
                    bad.append(f"class {c} free list has {n} chunks, pages say {listed[c]}")
            if used_bytes != self._h[H_USED_BYTES]:
                bad.append(f"used_bytes {self._h[H_USED_BYTES]} != {used_bytes}")
        finally:
            self._unlock()
        if bad:
            raise RuntimeError("shared cache inconsistent: " + "; ".join(bad[:10]))
        return {"entries": live, "filling": filling, "ready": ready, "deferred": deferred,
                "pinned_chunks": pinned, "used_bytes": used_bytes}

    # -- stats -----------------------------------------------------------------------------

    def stats(self):
        """Shared counters and occupancy (``pinned_chunks``: chunks any worker pins, a scan of
        the pin words), plus this handle's lookup counters."""
        cdef int c
        cdef uint64_t* h = self._h
        cdef int64_t s, pinned = 0
        cdef int64_t nslots = self._npages * self._spp
        self._check_open()
        for s in range(nslots):
            if shm_load_rlx(&self._cword[s]) & WORKERS_MASK:
                pinned += 1
        d = {name: h[H_COUNTERS + i] for i, name in enumerate(COUNTERS)}
        d.update({
            "pinned_chunks": pinned,
            "arena_size": self._arena_size,
            "page_size": self._page_size,
            "pages_total": self._npages,
            "pages_free": h[H_NFREE_PAGES],
            "used_bytes": h[H_USED_BYTES],
            "entries": h[H_LIVE],
            "tombstones": h[H_TOMBS],
            "index_capacity": self._cap,
            "workers": {w: {"pid": self._workers[w].pid, "attaches": self._workers[w].attaches,
                            "recoveries": self._workers[w].recoveries}
                        for w in range(self._max_workers) if self._workers[w].attaches},
            "classes": [{"class": c, "chunk_size": self._cls[c].size,
                         "pages": self._cls[c].pages, "chunks_used": self._cls[c].used}
                        for c in range(self._nclasses)],
            "lookup_hits": self._hits,
            "lookup_misses": self._misses,
            "lookup_races": self._races,
        })
        return d

    # -- internals (callers hold the mutex unless noted) -----------------------------------

    def _check_open(self):
        if self._ctl == NULL:
            raise ValueError("shared cache handle is closed")

    def _check_worker(self):
        self._check_open()
        if self._bit == 0:
            raise ValueError("the supervisor's handle cannot pin or fill (attach a worker)")

    cdef int64_t _slot_checked(self, object off) except -1:
        cdef int64_t slot
        self._check_open()
        slot = self._slot_of(off)
        if slot < 0:
            raise ValueError(f"offset {off} is not the start of an allocated chunk")
        return slot

    cdef int64_t _slot_of(self, int64_t off) noexcept nogil:
        """Chunk slot of the chunk starting at ``off``, -1 if none does (no lock needed: a
        stale answer is caught by the caller's generation check)."""
        cdef int64_t page, rel, cs, j
        cdef int32_t c
        if not 0 <= off < self._arena_size:
            return -1
        page = off // self._page_size
        c = (<volatile int32_t*>self._page_class)[page]
        if not 0 <= c < self._nclasses:
            return -1
        rel = off - page * self._page_size
        cs = self._cls[c].size
        j = rel // cs
        if j * cs != rel or j >= self._cls[c].per_page:
            return -1
        return page * self._spp + j

    cdef int64_t _find(self, const uint8_t* oid, uint32_t idx) noexcept nogil:
        cdef uint64_t mask = self._cap - 1, j = _hash(oid, idx) & mask, n, g
        cdef Entry* e
        for n in range(self._cap):
            e = &self._index[j]
            g = e.gen
            if g == G_EMPTY:
                return -1
            if g != G_TOMB and e.idx == idx and memcmp(e.oid, oid, 16) == 0:
                return <int64_t>j
            j = (j + 1) & mask
        return -1

    cdef int _insert(self, const uint8_t* oid, uint32_t idx, uint32_t length, int64_t off,
                     uint64_t gen, uint64_t fsw, uint64_t checksum,
                     uint64_t waiters) noexcept nogil:
        cdef uint64_t mask = self._cap - 1, j = _hash(oid, idx) & mask, n, g
        cdef Entry* e
        for n in range(self._cap):
            e = &self._index[j]
            g = e.gen
            if g < 2:
                # the slot stays empty/tombstone (readers skip it) until gen is published
                memcpy(e.oid, oid, 16)
                e.idx = idx
                e.length = length
                e.off = off
                e.checksum = checksum
                shm_store_rlx(&e.fsw, fsw)
                shm_store_rlx(&e.waiters, waiters)
                shm_fence_rel()
                shm_store_rel(&e.gen, gen)
                if g == G_TOMB:
                    self._h[H_TOMBS] -= 1
                self._h[H_LIVE] += 1
                return 0
            j = (j + 1) & mask
        return -1

    cdef void _remove_entry(self, int64_t i) noexcept nogil:
        shm_store_rel(&self._index[i].gen, G_TOMB)
        self._h[H_LIVE] -= 1
        self._h[H_TOMBS] += 1

    cdef int _rebuild_index(self) except -1:
        """Re-insert every live entry into a table without tombstones (readers racing with
        this see false misses, never wrong entries: generations are kept)."""
        cdef uint64_t i, n = 0
        cdef Entry* tmp = <Entry*>malloc(<size_t>self._h[H_LIVE] * sizeof(Entry) + sizeof(Entry))
        cdef Entry* e
        if tmp == NULL:
            raise MemoryError("cannot allocate the index rebuild buffer")
        for i in range(self._cap):
            e = &self._index[i]
            if e.gen >= 2 and n < self._h[H_LIVE]:
                memcpy(&tmp[n], e, sizeof(Entry))
                n += 1
        for i in range(self._cap):
            shm_store_rel(&self._index[i].gen, G_EMPTY)
        self._h[H_LIVE] = 0
        self._h[H_TOMBS] = 0
        for i in range(n):
            e = &tmp[i]
            if self._find(e.oid, e.idx) < 0:
                self._insert(e.oid, e.idx, e.length, e.off, e.gen, e.fsw, e.checksum, e.waiters)
        c_free(tmp)
        self._h[K_INDEX_REBUILDS] += 1
        return 0

    cdef int _class_of(self, int64_t nbytes) noexcept nogil:
        cdef int lo = 0, hi = self._nclasses - 1, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._cls[mid].size < nbytes:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef int64_t _alloc(self, int cls) except -2:
        """A chunk of class ``cls``, -1 if there is no memory. Memory from a holed page is
        re-reserved before anything changes: OSError if that fails, the allocator untouched."""
        cdef ClassInfo* k = &self._cls[cls]
        cdef int64_t off, nxt, page, j
        off = k.free_head
        if off != NIL:
            page = off // self._page_size
            if self._page_holes[page]:
                self._reserve(off, k.size)
            nxt = _links(self._mem, off)[1]
            k.free_head = nxt
            if nxt != NIL:
                _links(self._mem, nxt)[0] = NIL
            j = (off - page * self._page_size) // k.size
        else:
            page = k.bump_page
            if page == NIL:
                if self._h[H_NFREE_PAGES] == 0:
                    return -1
                page = self._free_pages[self._h[H_NFREE_PAGES] - 1]
                if self._page_holes[page]:
                    self._reserve(page * self._page_size, self._page_size)
                    self._page_holes[page] = 0
                self._h[H_NFREE_PAGES] -= 1
                self._page_carved[page] = 0
                self._page_used[page] = 0
                (<volatile int32_t*>self._page_class)[page] = cls
                k.pages += 1
                k.bump_page = page
            j = self._page_carved[page]
            off = page * self._page_size + j * k.size
            if self._page_holes[page]:
                self._reserve(off, k.size)
            self._page_carved[page] = <int32_t>(j + 1)
            if j + 1 == k.per_page:
                k.bump_page = NIL
        self._cstate[page * self._spp + j] = C_USED
        self._page_used[page] += 1
        k.used += 1
        self._h[H_USED_BYTES] += k.size
        return off

    cdef int _reserve(self, int64_t off, int64_t n) except -1:
        """Re-reserve ``[off, off+n)`` of the arena file (holes punched there): fallocate now
        rather than SIGBUS at the first write on a full filesystem."""
        cdef int rc
        with nogil:
            rc = fallocate(self._fd, 0, off, n)
            while rc != 0 and errno == EINTR:
                rc = fallocate(self._fd, 0, off, n)
            if rc != 0:
                rc = errno
        if rc != 0:
            raise OSError(rc, f"cannot re-reserve {n} bytes at arena offset {off} of "
                              f"{self._path}: {os.strerror(rc)} (the arena file's filesystem "
                              f"is full?)")
        return 0

    cdef bint _punch(self, int64_t page, int64_t off, int64_t size, int64_t slot) noexcept nogil:
        """Punch the SENT chunk at ``off`` out of the arena file before it is freed (the
        kernel may still read its pages: they stay its own, the file gets new ones). False if
        that failed: the chunk must stay allocated (leaked, FREEING: never pinned again)."""
        cdef int rc
        self._page_holes[page] = 1    # first: a death after the punch leaves the page flagged
        rc = fallocate(self._fd, PUNCH_HOLE, off, size)
        while rc != 0 and errno == EINTR:
            rc = fallocate(self._fd, PUNCH_HOLE, off, size)
        if rc != 0:
            self._h[K_PUNCH_FAILURES] += 1
            shm_fetch_or(&self._cword[slot], FREEING)
            return False
        self._sent[slot] = 0
        self._h[K_PUNCHED_CHUNKS] += 1
        return True

    cdef void _release(self, int64_t off, int64_t slot) noexcept nogil:
        """Free a USED chunk nobody pins: onto its class free list; an empty page to the pool.
        A SENT chunk is punched first (before a link is written into it); if that fails it
        stays allocated."""
        cdef int64_t page = off // self._page_size
        cdef int cls = self._page_class[page]
        cdef ClassInfo* k = &self._cls[cls]
        cdef int64_t head
        cdef int64_t* links = _links(self._mem, off)
        if self._sent[slot] and not self._punch(page, off, k.size, slot):
            return
        head = k.free_head
        links[0] = NIL
        links[1] = head
        if head != NIL:
            _links(self._mem, head)[0] = off
        k.free_head = off
        self._cstate[slot] = C_FREE
        shm_fetch_and(&self._cword[slot], ~FLAGS)
        k.used -= 1
        self._h[H_USED_BYTES] -= k.size
        self._page_used[page] -= 1
        if self._page_used[page] == 0:
            self._release_page(page, cls)

    cdef void _release_page(self, int64_t page, int cls) noexcept nogil:
        cdef ClassInfo* k = &self._cls[cls]
        cdef int64_t off = page * self._page_size, prev, nxt, i
        cdef int64_t* links
        for i in range(self._page_carved[page]):
            links = _links(self._mem, off)
            prev = links[0]
            nxt = links[1]
            if prev == NIL:
                k.free_head = nxt
            else:
                _links(self._mem, prev)[1] = nxt
            if nxt != NIL:
                _links(self._mem, nxt)[0] = prev
            off += k.size
        if k.bump_page == page:
            k.bump_page = NIL
        (<volatile int32_t*>self._page_class)[page] = NIL
        self._page_carved[page] = 0
        k.pages -= 1
        self._free_pages[self._h[H_NFREE_PAGES]] = <int32_t>page
        self._h[H_NFREE_PAGES] += 1

    # -- lifetime --------------------------------------------------------------------------

    def close(self):
        """Detach: a worker first releases its pins and drops its unfinished fills. Unmaps
        both files (views still alive keep the arena mapped until released). Idempotent."""
        if self._ctl != NULL and self._bit and self._h[H_MAGIC] == MAGIC:
            try:
                self._recover(self._wid)
            finally:
                self._bit = 0
        self._ctl = NULL
        self._mem = NULL
        self._h = NULL
        self._fd = -1
        if self._base is not None:
            self._base.release()
            self._base = None
        if self._has_ctl_buf:
            PyBuffer_Release(&self._ctl_buf)
            self._has_ctl_buf = False
        if self._has_arena_buf:
            PyBuffer_Release(&self._arena_buf)
            self._has_arena_buf = False
        for m in (self._ctl_mmap, self._arena_mmap):
            if m is not None:
                try:
                    m.close()
                except BufferError:
                    pass   # views exported: unmapped when the last one goes
        self._ctl_mmap = self._arena_mmap = None
        for f in (self._sock, self._send, self._arena_file, self._ctl_file):
            if f is not None:
                f.close()
        self._sock = self._send = self._arena_file = self._ctl_file = None
        c_free(self._counts)
        self._counts = NULL
        self._fills = {}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def __repr__(self):
        who = "supervisor" if self._wid < 0 else f"worker {self._wid}"
        return f"<SharedCache {self._path!r} {who}{' closed' if self._ctl == NULL else ''}>"
