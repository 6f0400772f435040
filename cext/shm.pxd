# C-level layout of the shared cache control region (see the theory of operation in shm.pyx).
from cpython.buffer cimport Py_buffer
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t


cdef enum:
    # word indices of the control header (uint64_t words at byte 0 of the .ctl file)
    H_MAGIC = 0            # b"EDGESHM\x01" little-endian; a mismatch refuses attach
    H_VERSION = 1          # layout version (LAYOUT_VERSION)
    H_IMPL = 2             # 1 = compiled module, 2 = Python twin: one implementation per region
    H_CTL_SIZE = 3         # bytes of the .ctl file
    H_ARENA_SIZE = 4       # bytes of the arena file
    H_PAGE_SIZE = 5        # bytes per page (the cache block size)
    H_MIN_CHUNK = 6        # smallest chunk (class 0), a multiple of 64
    H_NCLASSES = 7         # slab classes; the last one is a whole page
    H_MAX_WORKERS = 8      # worker ids are 0..max_workers-1 (<= 62: one bit each in a chunk word)
    H_NPAGES = 9           # arena_size // page_size
    H_SPP = 10             # chunk slots per page (chunks per page of class 0)
    H_INDEX_CAP = 11       # index slots, a power of two
    H_NEXT_GEN = 12        # next entry generation (unique per insert, never reused; >= 2)
    H_NONCE = 13           # random per create(): names the workers' wake-up sockets
    H_NFREE_PAGES = 14     # depth of the free-page stack
    H_USED_BYTES = 15      # sum of chunk sizes allocated (indexed or deferred)
    H_LIVE = 16            # live index entries
    H_TOMBS = 17           # tombstoned index slots
    H_OFF_CLASSES = 18     # byte offsets of the sections below, 64-aligned
    H_OFF_WORKERS = 19
    H_OFF_PAGE_CLASS = 20
    H_OFF_PAGE_USED = 21
    H_OFF_PAGE_CARVED = 22
    H_OFF_FREE_PAGES = 23
    H_OFF_PAGE_HOLES = 24
    H_OFF_CWORD = 25
    H_OFF_CSTATE = 26
    H_OFF_SENT = 27
    H_OFF_INDEX = 28
    H_SWEEP_HAND = 29      # next index slot evict_sweep() looks at (a hint, taken modulo the capacity)
    H_COUNTERS = 32        # first of NCOUNTERS shared counters, updated under the mutex
    NCOUNTERS = 21
    HDR_MUTEX = 512        # byte offset of the robust pthread mutex (64 bytes reserved)
    HDR_SIZE = 1024        # bytes of header; the sections follow


cdef struct ClassInfo:
    int64_t size           # chunk size in bytes (multiple of 64); the last class is page_size
    int64_t per_page       # chunks per page
    int64_t free_head      # arena offset of the first free chunk (links live in the chunk), -1
    int64_t bump_page      # page being carved in order, -1 if none
    int64_t pages          # pages assigned to the class
    int64_t used           # chunks allocated (indexed or deferred)


cdef struct WorkerInfo:
    uint64_t pid           # pid of the attached process, 0 when detached or recovered
    uint64_t attaches      # how many times this worker id attached (restarts + 1)
    uint64_t recoveries    # recover_worker() runs for this id
    uint64_t pad[5]        # one cache line per worker


cdef struct Entry:
    # one index slot, one cache line. Written only under the mutex, seqlock-style: ``gen`` is
    # stored 0 before the other fields change and the new generation (release) after; readers
    # load gen (acquire), the fields, then gen again, and trust the fields only if it is unchanged.
    uint64_t gen           # 0 empty, 1 tombstone, >= 2 live: unique per insert
    uint8_t oid[16]        # object id (xxh3-128 of key + ETag)
    uint32_t idx           # block index within the object
    uint32_t length        # block length in bytes
    int64_t off            # arena offset of the block's chunk
    uint64_t fsw           # atomic: filled bytes (low 32) | state << 32 | owner worker << 40
                           # (owner ORPHAN = 0xFF: a FILLING entry whose owner died, waiting
                           # for a reader to take it over with take_fill)
    uint64_t checksum      # xxh3-64 of the block, set by finish_fill before state READY
    uint64_t waiters       # atomic: bit w = worker w wants a wake-up on the next progress


cdef class SharedCache:
    # --- control mapping (<path>.ctl) ---
    cdef object _ctl_mmap            # mmap.mmap of the control file
    cdef object _ctl_file            # FileIO holding the fd and a shared flock
    cdef Py_buffer _ctl_buf          # buffer held on _ctl_mmap: gives _ctl
    cdef bint _has_ctl_buf           # _ctl_buf must be released
    cdef char* _ctl                  # base address of the control mapping; NULL once closed
    cdef uint64_t* _h                # header words (H_*)
    cdef void* _mutex                # the robust process-shared mutex at HDR_MUTEX
    cdef ClassInfo* _cls             # per class, [_nclasses]
    cdef WorkerInfo* _workers        # per worker id, [_max_workers]
    cdef int32_t* _page_class        # per page: slab class, -1 while in the free pool
    cdef int32_t* _page_used         # per page: chunks allocated
    cdef int32_t* _page_carved       # per page: chunks carved so far (bump allocation)
    cdef int32_t* _free_pages        # stack of free page indices, [0, H_NFREE_PAGES)
    cdef uint8_t* _page_holes        # per page: 1 = chunks of it were punched out of the arena
                                     # file; memory handed out from it is re-reserved first
    cdef uint64_t* _cword            # per chunk slot: worker pin bits | DEFERRED | FREEING
    cdef uint8_t* _cstate            # per chunk slot: FREE or USED (written under the mutex)
    cdef uint8_t* _sent              # per chunk slot: 1 = handed to sendfile (set lock-free by a
                                     # pinning worker): punch it when it is really freed
    cdef Entry* _index               # the hash table, [_cap]

    # --- arena mapping (<path>) ---
    cdef object _arena_mmap          # mmap.mmap of the arena file
    cdef object _arena_file          # FileIO of the arena file
    cdef Py_buffer _arena_buf        # buffer held on _arena_mmap: gives _mem
    cdef bint _has_arena_buf         # _arena_buf must be released
    cdef char* _mem                  # base address of the arena mapping
    cdef object _base                # memoryview of the whole arena; view() slices it
    cdef object _path                # arena file path (str)
    cdef int _fd                     # the arena file's descriptor, -1 once closed

    # --- geometry, copied from the header at attach ---
    cdef int64_t _arena_size         # bytes
    cdef int64_t _page_size          # bytes per page
    cdef int64_t _npages             # pages
    cdef int64_t _spp                # chunk slots per page
    cdef int _nclasses               # slab classes
    cdef int _max_workers            # worker ids 0.._max_workers-1
    cdef uint64_t _cap               # index slots (power of two)

    # --- this handle (process-private) ---
    cdef int _wid                    # worker id, -1 for the supervisor's handle (no pins/fills)
    cdef uint64_t _bit               # 1 << _wid (0 for the supervisor)
    cdef uint32_t* _counts           # per chunk slot: pins this handle holds (calloc'd, lazy pages)
    cdef dict _fills                 # arena offset -> (oid, idx, gen) of fills this worker owns
    cdef object _sock                # bound wake-up socket (workers only), None otherwise
    cdef object _send                # unbound datagram socket used to wake other workers
    cdef list _names                 # wake-up socket name per worker id
    cdef uint64_t _hits              # lookup_pin() that returned an entry
    cdef uint64_t _misses            # lookup_pin() that returned None
    cdef uint64_t _races             # lookups retried because a slot changed under them
    cdef bint _zero_copy             # sendable() may say yes (off: it always says no)

    cdef int _lock(self) except -1
    cdef void _unlock(self) noexcept
    cdef int64_t _slot_of(self, int64_t off) noexcept nogil
    cdef int64_t _find(self, const uint8_t* oid, uint32_t idx) noexcept nogil
    cdef int _class_of(self, int64_t nbytes) noexcept nogil
    cdef int64_t _alloc(self, int cls) except -2
    cdef int _reserve(self, int64_t off, int64_t n) except -1
    cdef bint _punch(self, int64_t page, int64_t off, int64_t size, int64_t slot) noexcept nogil
    cdef void _release(self, int64_t off, int64_t slot) noexcept nogil
    cdef void _release_page(self, int64_t page, int cls) noexcept nogil
    cdef void _remove_entry(self, int64_t i) noexcept nogil
    cdef int _insert(self, const uint8_t* oid, uint32_t idx, uint32_t length, int64_t off,
                     uint64_t gen, uint64_t fsw, uint64_t checksum, uint64_t waiters) noexcept nogil
    cdef int _rebuild_index(self) except -1
    cdef int _repair(self) except -1
    cdef int _rebuild(self) except -1
    cdef int _unpin_slot(self, int64_t slot) except -1
    cdef int64_t _own_fill(self, object off) except -2
    cdef int64_t _slot_checked(self, object off) except -1
    cdef void _wake(self, uint64_t mask)
