# C-level layout of the TinyLFU frequency sketch (see sketch.pyx for the theory of operation).
from libc.stdint cimport int64_t, uint64_t


cdef class CountMinSketch:
    cdef uint64_t* table              # depth x width 4-bit counters, row-major, 16 per word (nibbles)
    cdef Py_ssize_t nwords            # words in table: ceil(depth * width / 16)
    cdef readonly uint64_t width      # counters per row, a power of two
    cdef readonly int depth           # rows (independent hash functions), 1..16
    cdef uint64_t mask                # width - 1: a column is (hash & mask)
    cdef uint64_t salt                # seed-derived constant added to the key hash before mixing
    cdef int64_t _samples             # increments counted since the last aging (the `samples` property)
    cdef readonly int64_t sample_size # the aging period (default 10 * width); reaching it halves every counter

    cdef bint _increment(self, uint64_t h) noexcept   # True if this increment triggered an aging
    cdef int _estimate(self, uint64_t h) noexcept
    cdef void _age(self) noexcept


cdef class Doorkeeper:
    cdef uint64_t* words              # the bloom filter's bit array, 64 bits per word
    cdef Py_ssize_t nwords            # bits / 64
    cdef readonly uint64_t bits       # bits in the filter, a power of two >= 64
    cdef uint64_t mask                # bits - 1
    cdef uint64_t salt                # seed-derived constant, different from a sketch's with the same seed

    cdef bint _put(self, uint64_t h) noexcept         # set the key's bits; True if all were already set
    cdef bint _contains(self, uint64_t h) noexcept
