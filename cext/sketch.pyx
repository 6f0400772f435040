"""Count-min sketch with 4-bit counters and a doorkeeper bloom filter: TinyLFU's frequency memory.

Theory of operation
-------------------
``CountMinSketch`` keeps ``depth`` rows of ``width`` saturating 4-bit counters (0..15), packed
sixteen to a 64-bit word. A key's 64-bit hash (Python's ``hash()``, masked to uint64) is salted
and mixed with splitmix64's finalizer; the mixed value ``x`` yields one column per row by double
hashing: ``col_i = (x + i * ((x >> 32) | 1)) & (width - 1)``. ``increment`` bumps the key's counter
in every row (a saturated counter stays at 15); ``estimate`` is the minimum over the rows, so it
never under-counts below saturation. An increment that bumped at least one counter is a sample
(as in Caffeine's FrequencySketch); when ``samples`` reaches ``sample_size`` (default
``10 * width``; TinyLFU passes ten times its expected entries) every
counter is halved ("aging", ``reset()``), so the sketch forgets old popularity, and ``samples``
becomes ``(samples - odd // depth) // 2`` where ``odd`` counts the counters that lost a half to
truncation.

``Doorkeeper`` is a bloom filter (4 probes by the same double hashing, another salt) placed in
front of the sketch: a key's first occurrence only sets its bits, so one-hit wonders never reach
the counters. TinyLFU clears it at each aging.

The pure-Python twin ``cext/_sketch_py.py`` computes the same values bit for bit.
"""
from cpython.long cimport PyLong_AsUnsignedLongLongMask
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL
cdef uint64_t DOOR_TWEAK = 0xD6E8FEB86659FD93ULL
cdef uint64_t ONE_MASK = 0x1111111111111111ULL
cdef uint64_t RESET_MASK = 0x7777777777777777ULL
cdef int DOOR_PROBES = 4
cdef int MAX_DEPTH = 16


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    """splitmix64's finalizer: a bijection that spreads every input bit over the output."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t seed_salt(object seed) except? 0xFFFFFFFFFFFFFFFFULL:
    return mix64((PyLong_AsUnsignedLongLongMask(seed) + 1) * GOLDEN)


cdef inline int popcount64(uint64_t x) noexcept nogil:
    x = x - ((x >> 1) & 0x5555555555555555ULL)
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL
    return <int>((x * 0x0101010101010101ULL) >> 56)


cdef inline uint64_t pow2_at_least(uint64_t n) noexcept nogil:
    cdef uint64_t p = 1
    while p < n:
        p <<= 1
    return p


cdef class CountMinSketch:
    """Count-min sketch of ``depth`` rows x ``width`` 4-bit counters with periodic halving."""

    def __cinit__(self, width, depth=4, *, seed=0, sample_size=None):
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be in 1..{MAX_DEPTH}, got {depth}")
        if width > (1 << 40):
            raise ValueError(f"width too large: {width}")
        self.width = pow2_at_least(width)
        self.depth = depth
        self.mask = self.width - 1
        self.salt = seed_salt(seed)
        if sample_size is None:
            self.sample_size = 10 * <int64_t>self.width
        elif sample_size < 1:
            raise ValueError(f"sample_size must be >= 1, got {sample_size}")
        else:
            self.sample_size = sample_size
        self._samples = 0
        self.nwords = <Py_ssize_t>((self.width * <uint64_t>depth + 15) // 16)
        self.table = <uint64_t*>calloc(self.nwords, sizeof(uint64_t))
        if self.table == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.table)

    @property
    def samples(self) -> int:
        """Samples counted since the last aging."""
        return self._samples

    def increment(self, h) -> None:
        """Count one occurrence of the key with hash ``h`` (any int, masked to uint64)."""
        self._increment(PyLong_AsUnsignedLongLongMask(h))

    def estimate(self, h) -> int:
        """The key's estimated count: the minimum of its counters (0..15)."""
        return self._estimate(PyLong_AsUnsignedLongLongMask(h))

    def reset(self) -> None:
        """Age the sketch: halve every counter (done automatically every sample_size samples)."""
        self._age()

    def __repr__(self):
        return (f"CountMinSketch(width={self.width}, depth={self.depth}, "
                f"samples={self._samples}/{self.sample_size})")

    cdef bint _increment(self, uint64_t h) noexcept:
        cdef uint64_t x = mix64(h + self.salt)
        cdef uint64_t step = (x >> 32) | 1
        cdef uint64_t i, idx, shift, word
        cdef uint64_t* table = self.table
        cdef bint added = False
        for i in range(<uint64_t>self.depth):
            idx = i * self.width + ((x + i * step) & self.mask)
            shift = (idx & 15) << 2
            word = table[idx >> 4]
            if ((word >> shift) & 15) != 15:
                table[idx >> 4] = word + (<uint64_t>1 << shift)
                added = True
        if added:
            self._samples += 1
            if self._samples >= self.sample_size:
                self._age()
                return True
        return False

    cdef int _estimate(self, uint64_t h) noexcept:
        cdef uint64_t x = mix64(h + self.salt)
        cdef uint64_t step = (x >> 32) | 1
        cdef uint64_t i, idx, c
        cdef uint64_t lo = 15
        for i in range(<uint64_t>self.depth):
            idx = i * self.width + ((x + i * step) & self.mask)
            c = (self.table[idx >> 4] >> ((idx & 15) << 2)) & 15
            if c < lo:
                lo = c
        return <int>lo

    cdef void _age(self) noexcept:
        cdef Py_ssize_t i
        cdef int64_t odd = 0
        cdef uint64_t w
        for i in range(self.nwords):
            w = self.table[i]
            odd += popcount64(w & ONE_MASK)
            self.table[i] = (w >> 1) & RESET_MASK
        self._samples = (self._samples - odd // self.depth) // 2
        if self._samples < 0:
            self._samples = 0


cdef class Doorkeeper:
    """Bloom filter with 4 probes per key; ``bits`` is rounded up to a power of two (>= 64)."""

    def __cinit__(self, bits, *, seed=0):
        if bits < 1:
            raise ValueError(f"bits must be >= 1, got {bits}")
        if bits > (1 << 44):
            raise ValueError(f"bits too large: {bits}")
        self.bits = pow2_at_least(max(bits, 64))
        self.mask = self.bits - 1
        self.salt = seed_salt(seed) ^ DOOR_TWEAK
        self.nwords = <Py_ssize_t>(self.bits >> 6)
        self.words = <uint64_t*>calloc(self.nwords, sizeof(uint64_t))
        if self.words == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.words)

    def put(self, h) -> bool:
        """Add the key with hash ``h``; True if it was (probably) already present."""
        return self._put(PyLong_AsUnsignedLongLongMask(h))

    def __contains__(self, h) -> bool:
        return self._contains(PyLong_AsUnsignedLongLongMask(h))

    def clear(self) -> None:
        """Forget every key."""
        memset(self.words, 0, self.nwords * sizeof(uint64_t))

    def __repr__(self):
        return f"Doorkeeper(bits={self.bits})"

    cdef bint _put(self, uint64_t h) noexcept:
        cdef uint64_t x = mix64(h + self.salt)
        cdef uint64_t step = (x >> 32) | 1
        cdef uint64_t i, b, bit
        cdef bint present = True
        for i in range(<uint64_t>DOOR_PROBES):
            b = (x + i * step) & self.mask
            bit = <uint64_t>1 << (b & 63)
            if not (self.words[b >> 6] & bit):
                present = False
                self.words[b >> 6] |= bit
        return present

    cdef bint _contains(self, uint64_t h) noexcept:
        cdef uint64_t x = mix64(h + self.salt)
        cdef uint64_t step = (x >> 32) | 1
        cdef uint64_t i, b
        for i in range(<uint64_t>DOOR_PROBES):
            b = (x + i * step) & self.mask
            if not (self.words[b >> 6] & (<uint64_t>1 << (b & 63))):
                return False
        return True
