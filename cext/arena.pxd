# C-level layout of the slab arena (see the theory of operation at the top of arena.pyx).
from cpython.buffer cimport Py_buffer
from libc.stdint cimport int32_t, int64_t, uint8_t


cdef struct Loc:
    Py_ssize_t page      # page index of the chunk
    Py_ssize_t cls       # its slab class
    Py_ssize_t slot      # index into _pins/_state (page * _spp + chunk index in page)


cdef class Arena:
    # --- the mapping ---
    cdef object _mmap                # mmap.mmap owning the mapping (None once closed)
    cdef object _file                # FileIO holding the fd and its flock; None if anonymous
    cdef object _base                # memoryview of the whole mapping; view() slices it
    cdef Py_buffer _buf              # buffer held on _mmap for the lifetime: gives _mem
    cdef bint _has_buf               # _buf must be released
    cdef char* _mem                  # base address of the mapping; NULL once closed
    cdef object _path                # file path (str) or None for an anonymous mapping

    # --- geometry (fixed at construction) ---
    cdef Py_ssize_t _size            # mapping length in bytes, a multiple of _page_size
    cdef Py_ssize_t _page_size       # bytes per page (the cache block size)
    cdef Py_ssize_t _npages          # _size // _page_size
    cdef Py_ssize_t _spp             # chunk slots per page: chunks per page of class 0 (the most)
    cdef int _nclasses               # number of slab classes; the last has chunk == _page_size

    # --- per class, arrays of _nclasses (malloc'd) ---
    cdef Py_ssize_t* _sizes          # chunk size, a multiple of 64, strictly increasing
    cdef Py_ssize_t* _per_page       # chunks per page (_page_size // chunk size)
    cdef int64_t* _free_head         # offset of the first chunk on the free list, -1 if empty
    cdef Py_ssize_t* _bump_page      # page being carved (chunks handed out in order), -1 if none
    cdef Py_ssize_t* _cls_pages      # pages assigned to the class
    cdef Py_ssize_t* _cls_used       # chunks used or deferred
    cdef Py_ssize_t* _cls_pinned     # chunks with a pin count > 0

    # --- per page, arrays of _npages (malloc'd) ---
    cdef int32_t* _page_class        # slab class of the page, -1 while it is in the free pool
    cdef int32_t* _page_used         # chunks of the page used or deferred; 0 -> page released
    cdef int32_t* _page_carved       # chunks carved so far; chunks below this are used or listed
    cdef int32_t* _free_pages        # stack of free page indices, [0, _nfree_pages)
    cdef Py_ssize_t _nfree_pages     # depth of the _free_pages stack

    # --- per chunk slot, arrays of _npages * _spp (malloc'd) ---
    cdef int32_t* _pins              # pin count (0 for free chunks)
    cdef uint8_t* _state             # FREE, USED or DEFERRED (freed while pinned)
    cdef uint8_t* _sent              # 1: handed to sendfile since its alloc (punch on release)

    # --- zero copy ---
    cdef int _fd                     # descriptor of the mapped file (a memfd when anonymous)
    cdef bint _zero_copy             # sendable() may say yes
    cdef uint8_t* _holes             # per page: some chunk in it was punched, not re-reserved
    cdef Py_ssize_t _punched         # chunks punched out of the file on release
    cdef Py_ssize_t _punch_failures  # punches that failed (those chunks are never reused)

    # --- counters ---
    cdef Py_ssize_t _used_bytes      # sum of chunk sizes used or deferred
    cdef Py_ssize_t _pinned_chunks   # chunks with a pin count > 0
    cdef Py_ssize_t _deferred_chunks # chunks freed while pinned, awaiting their last unpin
    cdef Py_ssize_t _alloc_failures  # alloc() calls that returned -1

    cdef int _locate(self, Py_ssize_t off, Loc* loc) except -1
    cdef int _class_of(self, Py_ssize_t nbytes) except -1
    cdef void _release(self, Py_ssize_t off, Loc* loc) noexcept
    cdef int _reserve(self, Py_ssize_t off, Py_ssize_t n) except -1
    cdef void _release_page(self, Py_ssize_t page, Py_ssize_t cls) noexcept
