"""W-TinyLFU, byte-weighted, with an optional hill-climbed window: the default policy's core.

Theory of operation (Einziger, Friedman & Manes, "TinyLFU", ACM ToS 2017; Caffeine's
BoundedLocalCache and its hill climber)
------------------------------------------------------------------------------------------
* ``TinyLFU`` is the admission filter, its own object: every request ``record``s the key's
  hash; a first occurrence only sets the doorkeeper's bits (a bloom filter), a repeat
  increments the count-min sketch (``cext.sketch``, 4-bit counters, width = expected entries
  ``WIDTH_PER_ENTRY`` x expected entries, rounded up to a power of two; 4 rows). When the
  sketch ages (halves every counter, every ``SAMPLES_PER_ENTRY`` x expected entries samples)
  the doorkeeper (``DOOR_BITS_PER_ENTRY`` bits per entry) is cleared. ``frequency`` = estimate + doorkeeper bit.
  ``admit(candidate, victim)`` is true when the candidate is strictly more frequent; a loser
  at least ``JITTER_FREQ`` frequent still gets in with probability 1/128 (splitmix64 seeded per
  instance), so colliding keys cannot pin a hot victim (hash flooding) and runs stay
  deterministic.
* The filter is also the policy's clock: ``ticks`` counts recorded requests, and ``span`` is
  how many requests its counts cover (since the last aging, plus the period before it, as a
  halved count keeps half of the previous period's weight: a key seen at rate r per request
  has a count near ``r x span``).
* **Overdue victims** (``overdue`` > 0; the default policy uses 2): a victim idle for
  ``idle`` requests with frequency ``f`` is overdue when ``idle x f x overdue >= span``: it has
  been silent for more than ``1/overdue`` of the gap its own count predicts (``span / f``).
  Its frequency is halved ``idle x f x overdue // span`` times, at most
  ``MAX_OVERDUE_SHIFT``, before the comparison: a recency weighting of the frequency, not a
  death test (a still-popular key is often that idle too), in integer arithmetic so the twins
  agree. A key whose popularity ended stops blocking newcomers long before the sketch's
  global aging would forget it.
* **Ghost feedback on the protected share** (``ghost_gain`` > 0; the default policy uses 3),
  in the manner of ARC's adaptation: two direct-mapped ghost tables (a slot per
  ``GHOST_SLOT_DIVISOR`` sketch entries, resized with the sketch; a colliding insert
  overwrites) remember the recent losers of admission duels, each with the duel's tick and
  the winner's key: the candidates refused, and the victims evicted. When a loser comes back
  (``admit`` of a new key matching its ghost) before the winner has been requested since the
  duel, the duel was lost the wrong way round. A refused candidate back first: admission was
  too strict, and protected shrinks by ``ghost_gain x weight`` bytes, so more of main is
  probation, whose victims are older and more often overdue. An evicted victim back first:
  protected grows back by as much, never above ``protected`` of main (the configured share is
  the ceiling). Under stationary popularity the winners are mostly requested first and little
  moves; under churn, refused newcomers keep coming back first and protected shrinks. O(1)
  per admission (a dict lookup for the winner on a ghost match).
* ``WTinyLFU`` keeps each key in a slot of parallel C arrays (prev/next links, weight, hash,
  segment) and four circular doubly linked lists with sentinels: the admission *window*
  (``window`` of the bytes), *probation* and *protected* (``protected`` of main's bytes), and
  the transient *candidates* of one ``admit``. A Python dict maps key -> slot. Head = LRU end.
  Each slot also keeps the tick of the key's last request (its ``stamp``) for the overdue test.
* A hit moves the key to its segment's MRU end; a hit in probation promotes it to protected,
  whose LRU overflow is demoted to probation's MRU end.
* A new key enters the window. The window's LRU overflow become candidates; while the cache is
  over capacity, the oldest candidate meets main's victim (probation's LRU end; protected's,
  then the window's when probation is empty): if TinyLFU prefers the candidate the victim is
  evicted and the candidate meets the next one (a heavy candidate must beat every victim it
  displaces, as Caffeine's weighted eviction does), otherwise the candidate is evicted. The
  victim's frequency is discounted first if it is overdue (above).
  Candidates left when there is room join probation's MRU end.
* Pinned keys (``evictable(key)`` false) are moved to their segment's MRU end, at most
  ``MAX_SKIPS`` per victim search; a pinned candidate that loses stays. If no room can be made
  the key being admitted is refused (returned among the victims).
* ``adaptive``: every sketch period (10 x expected entries) requests the hit ratio of the sample is compared
  with the previous one; the window grows or shrinks by a step (6.25% of the capacity, decaying
  by 0.98 per sample, reset when the hit ratio moves by 5 points) in the direction that
  helped. Moving keys between window and main is bounded (``MAX_TRANSFER`` per call), the
  rest carries over to the next request: no unbounded scan anywhere.

The pure-Python twin ``cext/_wtlfu_py.py`` makes the same decisions key for key.
"""
from cpython.long cimport PyLong_AsUnsignedLongLongMask
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject_Hash
from libc.math cimport fabs
from libc.stdint cimport int64_t, uint8_t, uint64_t

from cext.sketch cimport CountMinSketch, Doorkeeper

cdef extern from *:
    """
    #define WTLFU_GOLDEN 0x9E3779B97F4A7C15ULL
    """
    unsigned long long WTLFU_GOLDEN

MAX_SKIPS = 8
"""Pinned keys skipped per victim search before it gives up (memcached caps its walk too)."""
JITTER_FREQ = 6
"""Losing candidates at least this frequent are admitted with probability 1/128."""
WIDTH_PER_ENTRY = 8
"""Sketch columns per expected entry (x 4 rows: 32 counters, 16 bytes per entry)."""
DOOR_BITS_PER_ENTRY = 64
"""Doorkeeper bits per expected entry: it must hold every key seen between two agings."""
SAMPLES_PER_ENTRY = 5
"""The sketch ages (halves) every SAMPLES_PER_ENTRY x expected entries samples."""
MIN_ENTRIES = 16
DEFAULT_AVG_WEIGHT = 1 << 20
"""Entry weight assumed when sizing the sketch (the default block size); it grows on demand."""
MAX_TRANSFER = 1000
"""Keys moved between window and main per adjustment step (Caffeine's QUEUE_TRANSFER_THRESHOLD)."""
CLIMB_PER_ENTRY = 10.0
"""The climber samples CLIMB_PER_ENTRY x expected entries requests per step."""
STEP_PERCENT = 0.0625
STEP_DECAY = 0.98
RESTART_THRESHOLD = 0.05
DEFAULT_OVERDUE = 2
"""The default policy's ``overdue``: a victim silent for half the gap its count predicts is discounted."""
MAX_OVERDUE_SHIFT = 4
"""An overdue victim's frequency is halved at most this many times (15 -> 0)."""
MAX_IDLE = 1 << 40
"""Idle times are clamped here so ``idle x frequency x overdue`` fits in 64 bits."""
DEFAULT_GHOST_GAIN = 3
"""The default policy's ``ghost_gain``: bytes of protected moved per ghost hit, per byte of the key."""
GHOST_SLOT_DIVISOR = 8
"""Each ghost table has a slot per GHOST_SLOT_DIVISOR sketch entries (a power of two, >= 16)."""
GHOST_SALT = 0x5BD1E9955BD1E995
"""Mixed into a key's hash to pick its ghost slot (independent of the sketch's columns)."""

cdef int C_MAX_SKIPS = 8
cdef int C_JITTER_FREQ = 6
cdef int C_MAX_TRANSFER = 1000
cdef int64_t C_MAX_OVERDUE_SHIFT = 4
cdef int64_t C_MAX_IDLE = 1 << 40
cdef uint64_t C_GHOST_SALT = 0x5BD1E9955BD1E995ULL

cdef enum:
    GHOST_REFUSED = 0
    GHOST_EVICTED = 1

cdef enum:
    WINDOW = 0
    PROBATION = 1
    PROTECTED = 2
    CANDIDATE = 3
    FREE = 4
    NLISTS = 4


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef class TinyLFU:
    """TinyLFU admission: doorkeeper + count-min sketch with aging (see the module docstring)."""

    def __cinit__(self, expected_entries, *, seed=0, jitter=True, width_factor=WIDTH_PER_ENTRY,
                  door_bits=DOOR_BITS_PER_ENTRY, sample_factor=SAMPLES_PER_ENTRY):
        if width_factor < 1 or door_bits < 1 or sample_factor < 1:
            raise ValueError("width_factor, door_bits and sample_factor must be >= 1")
        self.width_factor = width_factor
        self.door_bits = door_bits
        self.sample_factor = sample_factor
        self.seed = seed
        self.seed_value = PyLong_AsUnsignedLongLongMask(seed)
        self.rng = self.seed_value
        self.jitter = jitter
        self.ticks = 0
        self._build(expected_entries)

    cdef void _build(self, int64_t entries) except *:
        if entries < MIN_ENTRIES:
            entries = MIN_ENTRIES
        self.entries = entries
        self.sketch = CountMinSketch(entries * self.width_factor, 4, seed=self.seed,
                                     sample_size=entries * self.sample_factor)
        self.width = self.sketch.width
        self.door = Doorkeeper(entries * self.door_bits, seed=self.seed)
        self.last_samples = 0
        self.age_tick = self.ticks          # a new sketch covers no history
        self.period_ticks = 0

    cdef void _record(self, uint64_t h) noexcept:
        self.ticks += 1
        if self.door._put(h):
            if self.sketch._increment(h):      # the sketch aged: forget the one-timers too
                self.door.clear()
                self._aged()
            self.last_samples = self.sketch._samples

    cdef void _aged(self) noexcept:
        self.period_ticks = self.ticks - self.age_tick
        self.age_tick = self.ticks

    cdef int64_t _span(self) noexcept:
        return self.ticks - self.age_tick + self.period_ticks

    cdef int _frequency(self, uint64_t h) noexcept:
        return self.sketch._estimate(h) + self.door._contains(h)

    cdef bint _admit(self, uint64_t ch, uint64_t vh, int64_t idle, int64_t overdue) noexcept:
        cdef int cf = self._frequency(ch)
        cdef int vf = self._frequency(vh)
        cdef int64_t span, shift
        if overdue > 0 and vf > 0 and idle > 0:
            span = self._span()
            if idle > C_MAX_IDLE:
                idle = C_MAX_IDLE
            if span > 0:
                shift = idle * vf * overdue // span
                if shift > 0:
                    vf >>= shift if shift < C_MAX_OVERDUE_SHIFT else C_MAX_OVERDUE_SHIFT
        if cf > vf:
            return True
        if self.jitter and cf >= C_JITTER_FREQ:
            self.rng += WTLFU_GOLDEN
            return (mix64(self.rng) & 127) == 0
        return False

    @property
    def samples(self) -> int:
        """Sketch samples since the last aging."""
        return self.sketch._samples

    @property
    def sample_size(self) -> int:
        """The aging period in samples (SAMPLES_PER_ENTRY x entries by default)."""
        return self.sketch.sample_size

    @property
    def span(self) -> int:
        """Requests the counts cover: since the last aging, plus the period before it."""
        return self._span()

    def ensure_capacity(self, entries) -> None:
        """Grow the sketch if ``entries`` exceeds what it is sized for (history is dropped)."""
        if entries > self.entries:
            self._build(2 * entries)

    def record(self, key) -> None:
        """Count one request for ``key``."""
        self._record(<uint64_t>PyObject_Hash(key))

    def frequency(self, key) -> int:
        """Estimated recent request count of ``key`` (0..16)."""
        return self._frequency(<uint64_t>PyObject_Hash(key))

    def admit(self, candidate, victim, *, idle=0, overdue=0) -> bool:
        """True if ``candidate`` should replace ``victim``.

        ``idle``: requests since the victim's last request; with ``overdue`` > 0 an overdue
        victim's frequency is discounted first (see the module docstring).
        """
        if idle < 0 or overdue < 0:
            raise ValueError("idle and overdue must be >= 0")
        return self._admit(<uint64_t>PyObject_Hash(candidate), <uint64_t>PyObject_Hash(victim),
                           min(idle, MAX_IDLE), overdue)

    def reset(self) -> None:
        """Age now: halve the sketch and clear the doorkeeper."""
        self.sketch.reset()
        self.door.clear()
        self._aged()
        self.last_samples = self.sketch._samples

    def __repr__(self):
        return (f"TinyLFU(entries={self.entries}, width={self.width}, "
                f"samples={self.samples}/{self.sample_size})")


cdef inline void unlink(int64_t* prev, int64_t* next, int64_t i) noexcept:
    cdef int64_t p = prev[i]
    cdef int64_t n = next[i]
    next[p] = n
    prev[n] = p


cdef inline void push_tail(int64_t* prev, int64_t* next, int64_t head, int64_t i) noexcept:
    cdef int64_t p = prev[head]
    next[p] = i
    prev[i] = p
    next[i] = head
    prev[head] = i


cdef void* _grown(void* p, size_t nbytes) except NULL:
    """``p`` reallocated to ``nbytes`` (MemoryError, and ``p`` left as it was, if that fails)."""
    cdef void* q = PyMem_Realloc(p, nbytes)
    if q == NULL:
        raise MemoryError()
    return q


cdef class WTinyLFU:
    """Window TinyLFU over byte weights (see the module docstring)."""

    name = "wtinylfu"

    def __cinit__(self, *args, **kwargs):
        self.prev = NULL
        self.next = NULL
        self.weight = NULL
        self.hashes = NULL
        self.stamp = NULL
        self.seg = NULL
        self.ghost_tag = NULL
        self.ghost_tick = NULL
        self.ghost_winner = []
        self.ghost_mask = 0
        self.ghost_entries = 0
        self.nslots = 0
        self.free_head = -1
        self.keys = []
        self.slots = {}
        self._grow()
        cdef int64_t i
        for i in range(NLISTS):
            self.prev[i] = i
            self.next[i] = i
            self.count[i] = 0
            self.seg[i] = i

    def __init__(
        self,
        capacity,
        *,
        evictable=None,
        window=0.01,
        protected=0.8,
        expected_entries=None,
        avg_weight=DEFAULT_AVG_WEIGHT,
        seed=0,
        adaptive=False,
        admission=None,
        jitter=True,
        climb_factor=CLIMB_PER_ENTRY,
        overdue=0,
        ghost_gain=0,
    ):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        if not 0.0 <= window <= 1.0:
            raise ValueError(f"window must be in [0, 1], got {window}")
        if not 0.0 <= protected <= 1.0:
            raise ValueError(f"protected must be in [0, 1], got {protected}")
        self.capacity = capacity
        main = int(capacity * (1.0 - window))
        self.window_max = capacity - main
        self.protected_max = int(main * protected)
        self.protected_share = protected
        if expected_entries is None:
            expected_entries = capacity // max(1, avg_weight)
        self.admission = admission if admission is not None else TinyLFU(
            expected_entries, seed=seed, jitter=jitter)
        self.evictable = evictable
        self.last_admitted = None
        self.adaptive = adaptive
        self.prev_hit_rate = 0.0
        self.step = -STEP_PERCENT * capacity
        self.adjustment = 0
        if climb_factor <= 0:
            raise ValueError(f"climb_factor must be > 0, got {climb_factor}")
        self.climb_factor = climb_factor
        if overdue < 0:
            raise ValueError(f"overdue must be >= 0, got {overdue}")
        self.overdue = overdue
        if ghost_gain < 0:
            raise ValueError(f"ghost_gain must be >= 0, got {ghost_gain}")
        self.ghost_gain = ghost_gain
        if ghost_gain:
            self._size_ghosts()

    def __dealloc__(self):
        PyMem_Free(self.prev)
        PyMem_Free(self.next)
        PyMem_Free(self.weight)
        PyMem_Free(self.hashes)
        PyMem_Free(self.stamp)
        PyMem_Free(self.seg)
        PyMem_Free(self.ghost_tag)
        PyMem_Free(self.ghost_tick)

    # -- slots --------------------------------------------------------------------------------

    cdef void _grow(self) except *:
        cdef int64_t old = self.nslots
        cdef int64_t n = 64 if old == 0 else 2 * old
        cdef int64_t i
        self.prev = <int64_t*>_grown(self.prev, n * sizeof(int64_t))
        self.next = <int64_t*>_grown(self.next, n * sizeof(int64_t))
        self.weight = <int64_t*>_grown(self.weight, n * sizeof(int64_t))
        self.hashes = <uint64_t*>_grown(self.hashes, n * sizeof(uint64_t))
        self.stamp = <int64_t*>_grown(self.stamp, n * sizeof(int64_t))
        self.seg = <uint8_t*>_grown(self.seg, n * sizeof(uint8_t))
        self.keys.extend([None] * (n - old))
        cdef int64_t first = old if old else NLISTS
        for i in range(first, n):       # chain the new slots onto the free list, lowest first
            self.seg[i] = FREE
            self.next[i] = i + 1 if i + 1 < n else self.free_head
        self.free_head = first
        self.nslots = n

    cdef int64_t _alloc(self, object key, uint64_t h, int64_t w) except -1:
        if self.free_head < 0:
            self._grow()
        cdef int64_t i = self.free_head
        self.free_head = self.next[i]
        self.weight[i] = w
        self.hashes[i] = h
        self.stamp[i] = self.admission.ticks
        self.keys[i] = key
        self.slots[key] = i
        return i

    cdef void _release(self, int64_t i) noexcept:
        self.seg[i] = FREE
        self.next[i] = self.free_head
        self.free_head = i

    cdef void _move(self, int64_t i, int to) noexcept:
        """Unlink slot i and append it at the MRU end of list ``to``."""
        unlink(self.prev, self.next, i)
        self.count[self.seg[i]] -= 1
        push_tail(self.prev, self.next, to, i)
        self.count[to] += 1
        self.seg[i] = to

    # -- ghosts ---------------------------------------------------------------------------------

    cdef void _size_ghosts(self) except *:
        """(Re)allocate the ghost tables for the sketch's current entries; they start empty."""
        cdef int64_t n = 16
        cdef int64_t want = self.admission.entries // GHOST_SLOT_DIVISOR
        while n < want:
            n <<= 1
        PyMem_Free(self.ghost_tag)
        PyMem_Free(self.ghost_tick)
        self.ghost_tag = NULL
        self.ghost_tick = NULL
        self.ghost_tag = <uint64_t*>PyMem_Calloc(2 * n, sizeof(uint64_t))
        self.ghost_tick = <int64_t*>PyMem_Calloc(2 * n, sizeof(int64_t))
        if self.ghost_tag == NULL or self.ghost_tick == NULL:
            raise MemoryError()
        self.ghost_winner = [None] * (2 * n)
        self.ghost_mask = <uint64_t>(n - 1)
        self.ghost_entries = self.admission.entries

    cdef void _ghost_put(self, int table, uint64_t h, object winner) except *:
        """Remember the loser ``h`` of a duel against ``winner`` (table REFUSED or EVICTED)."""
        cdef int64_t g = <int64_t>(mix64(h ^ C_GHOST_SALT) & self.ghost_mask)
        g += table * <int64_t>(self.ghost_mask + 1)
        self.ghost_tag[g] = h | 1
        self.ghost_tick[g] = self.admission.ticks
        self.ghost_winner[g] = winner

    cdef bint _ghost_take(self, int table, uint64_t h) except -1:
        """True if ``h`` lost a remembered duel whose winner has not been requested since."""
        cdef int64_t g = <int64_t>(mix64(h ^ C_GHOST_SALT) & self.ghost_mask)
        g += table * <int64_t>(self.ghost_mask + 1)
        if self.ghost_tag[g] != (h | 1):
            return False
        self.ghost_tag[g] = 0
        winner = self.ghost_winner[g]
        self.ghost_winner[g] = None
        o = self.slots.get(winner)
        return o is None or self.stamp[<int64_t>o] <= self.ghost_tick[g]

    cdef void _ghost_arrival(self, uint64_t h, int64_t w) except *:
        """A new key arrives: a duel lost the wrong way round moves the protected share."""
        cdef int64_t ceiling
        if self._ghost_take(GHOST_REFUSED, h):
            self.protected_max -= self.ghost_gain * w
            if self.protected_max < 0:
                self.protected_max = 0          # the overflow is demoted at the next promotion
        elif self._ghost_take(GHOST_EVICTED, h):
            ceiling = <int64_t>(<double>(self.capacity - self.window_max) * self.protected_share)
            if self.protected_max < ceiling:
                self.protected_max += self.ghost_gain * w
                if self.protected_max > ceiling:
                    self.protected_max = ceiling

    # -- the policy interface ------------------------------------------------------------------

    def access(self, key) -> bool:
        """Record a request for ``key``; True if it is resident (a hit)."""
        cdef uint64_t h = <uint64_t>PyObject_Hash(key)
        self.admission._record(h)
        o = self.slots.get(key)
        if o is None:
            self.sample_misses += 1
            if self.adaptive:
                self._after_request()
            return False
        cdef int64_t i = o
        cdef int s = self.seg[i]
        self.stamp[i] = self.admission.ticks
        if s == PROBATION:
            self._move(i, PROTECTED)
            self.protected_used += self.weight[i]
            if self.protected_used > self.protected_max:
                self._demote()
        else:
            self._move(i, s)
        self.sample_hits += 1
        if self.adaptive:
            self._after_request()
        return True

    cdef void _after_request(self) noexcept:
        if self.sample_hits + self.sample_misses >= self.climb_factor * self.admission.entries:
            self._climb()
        if self.adjustment != 0:
            self._transfer()

    cdef void _demote(self) noexcept:
        """Move protected's LRU overflow to probation's MRU end (at most MAX_TRANSFER keys)."""
        cdef int64_t i
        cdef int t = 0
        while self.protected_used > self.protected_max and self.count[PROTECTED] > 0:
            if t == C_MAX_TRANSFER:
                break                           # the rest waits for the next promotion
            t += 1
            i = self.next[PROTECTED]
            self._move(i, PROBATION)
            self.protected_used -= self.weight[i]

    def admit(self, key, weight) -> list:
        """Insert ``key`` of ``weight`` bytes; return the keys to evict (``key`` itself if refused)."""
        cdef int64_t w = weight
        if w < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.last_admitted = key
        cdef int64_t i, delta, v
        cdef uint64_t h
        cdef int s
        o = self.slots.get(key)
        if o is not None:
            i = o
            if w > self.capacity:
                self.remove(key)
                return [key]
            delta = w - self.weight[i]
            self.weight[i] = w
            self.stamp[i] = self.admission.ticks
            s = self.seg[i]
            self._move(i, s)
            self.used += delta
            if s == WINDOW:
                self.window_used += delta
            elif s == PROTECTED:
                self.protected_used += delta
                self._demote()
        else:
            if w > self.capacity:
                return [key]
            h = <uint64_t>PyObject_Hash(key)
            if self.ghost_gain:
                self._ghost_arrival(h, w)
            i = self._alloc(key, h, w)
            push_tail(self.prev, self.next, WINDOW, i)
            self.seg[i] = WINDOW
            self.count[WINDOW] += 1
            self.window_used += w
            self.used += w
            if len(self.slots) > self.admission.entries:
                self.admission.ensure_capacity(len(self.slots))
                if self.ghost_gain and self.admission.entries != self.ghost_entries:
                    self._size_ghosts()
        cdef list victims = []
        cdef bint searchable = True
        if self.window_used > self.window_max:
            searchable = self._evict_from_window(i, victims)
        if self.used > self.capacity:
            while searchable and self.used > self.capacity:   # plain eviction, no contest
                v = self._find_victim(i)
                if v < 0:
                    break
                self._drop(v, victims)
            if self.used > self.capacity and key in self.slots:
                self.remove(key)
                victims.append(key)
        return victims

    cdef bint _evict_from_window(self, int64_t exclude, list victims) except -1:
        """Move the window's overflow to probation; candidates compete while over capacity.

        False if a victim search gave up (only pinned keys were found).
        """
        cdef int64_t c, v, cw
        cdef bint searchable = True, stays
        while self.window_used > self.window_max and self.count[WINDOW] > 0:
            c = self.next[WINDOW]
            self._move(c, CANDIDATE)
            self.window_used -= self.weight[c]
        while self.count[CANDIDATE] > 0:
            c = self.next[CANDIDATE]
            cw = self.weight[c]
            stays = True
            while searchable and self.used > self.capacity:
                v = self._find_victim(exclude)
                if v < 0:
                    searchable = False
                    break
                if self.admission._admit(self.hashes[c], self.hashes[v],
                                         self.admission.ticks - self.stamp[v], self.overdue):
                    if self.ghost_gain:
                        self._ghost_put(GHOST_EVICTED, self.hashes[v], self.keys[c])
                    self._drop(v, victims)
                    continue
                if c == exclude or self.evictable is None or self.evictable(self.keys[c]):
                    if self.ghost_gain:
                        self._ghost_put(GHOST_REFUSED, self.hashes[c], self.keys[v])
                    self._drop(c, victims)   # a pinned loser stays: it is being read
                    stays = False
                break
            if stays:
                self._move(c, PROBATION)
        return searchable

    cdef void _drop(self, int64_t i, list victims) except *:
        cdef int s = self.seg[i]
        cdef int64_t w = self.weight[i]
        unlink(self.prev, self.next, i)
        self.count[s] -= 1
        self.used -= w
        if s == WINDOW:
            self.window_used -= w
        elif s == PROTECTED:
            self.protected_used -= w
        key = self.keys[i]
        victims.append(key)
        del self.slots[key]
        self.keys[i] = None
        self._release(i)

    cdef int64_t _find_victim(self, int64_t exclude) except -2:
        """Main's victim: probation's LRU end, then protected's, then the window's; -1 if none.

        Pinned keys are moved to their segment's MRU end; the search gives up after
        ``MAX_SKIPS`` of them. ``exclude`` (the slot being admitted) is never chosen.
        """
        cdef int skips = 0
        cdef int s
        cdef int lists[3]
        cdef int64_t n, k, j, t
        lists[0] = PROBATION
        lists[1] = PROTECTED
        lists[2] = WINDOW
        evictable = self.evictable
        for j in range(3):
            s = lists[j]
            n = self.count[s]
            for t in range(n):
                k = self.next[s]
                if k == exclude:
                    self._move(k, s)
                    continue
                if evictable is None or evictable(self.keys[k]):
                    return k
                self._move(k, s)
                skips += 1
                if skips >= C_MAX_SKIPS:
                    return -1
        return -1

    def evict(self, nbytes) -> list:
        """Evict at least ``nbytes`` of evictable keys if possible (bounded; may free less).

        The key admitted last is spared: storage evicts to make room for it.
        """
        cdef list victims = []
        cdef int64_t target = self.used - nbytes
        cdef int64_t ex = -1, v
        o = self.slots.get(self.last_admitted) if self.last_admitted is not None else None
        if o is not None:
            ex = o
        while self.used > target:
            v = self._find_victim(ex)
            if v < 0:
                break
            self._drop(v, victims)
        return victims

    def remove(self, key) -> None:
        """Forget ``key`` (purge, failed fill); a no-op if it is not resident."""
        o = self.slots.pop(key, None)
        if o is None:
            return
        cdef int64_t i = o
        cdef int s = self.seg[i]
        cdef int64_t w = self.weight[i]
        unlink(self.prev, self.next, i)
        self.count[s] -= 1
        self.used -= w
        if s == WINDOW:
            self.window_used -= w
        elif s == PROTECTED:
            self.protected_used -= w
        self.keys[i] = None
        self._release(i)

    def __contains__(self, key) -> bool:
        return key in self.slots

    def __len__(self) -> int:
        return len(self.slots)

    # -- the hill climber ----------------------------------------------------------------------

    cdef void _climb(self) noexcept:
        cdef int64_t requests = self.sample_hits + self.sample_misses
        cdef double hit_rate = <double>self.sample_hits / <double>requests
        cdef double change = hit_rate - self.prev_hit_rate
        cdef double amount = self.step if change >= 0 else -self.step
        cdef double next_step
        if fabs(change) >= RESTART_THRESHOLD:
            next_step = STEP_PERCENT * <double>self.capacity * (1.0 if amount >= 0 else -1.0)
        else:
            next_step = STEP_DECAY * amount
        self.prev_hit_rate = hit_rate
        self.step = next_step
        self.adjustment = <int64_t>amount
        self.sample_hits = 0
        self.sample_misses = 0

    cdef void _transfer(self) noexcept:
        """Apply (a bounded part of) the pending window adjustment."""
        cdef int64_t quota, c, w
        cdef int t
        cdef bint from_probation
        if self.adjustment > 0:
            if self.protected_max == 0:
                return
            quota = min(self.adjustment, self.protected_max)
            self.protected_max -= quota
            self.window_max += quota
            self._demote()
            for t in range(C_MAX_TRANSFER):
                c = self.next[PROBATION] if self.count[PROBATION] > 0 else -1
                from_probation = True
                if c < 0 or quota < self.weight[c]:
                    c = self.next[PROTECTED] if self.count[PROTECTED] > 0 else -1
                    from_probation = False
                if c < 0:
                    break
                w = self.weight[c]
                if quota < w:
                    break
                quota -= w
                if not from_probation:
                    self.protected_used -= w
                self._move(c, WINDOW)
                self.window_used += w
            self.protected_max += quota
            self.window_max -= quota
            self.adjustment = quota
        elif self.adjustment < 0:
            if self.window_max <= 1:
                return
            quota = min(-self.adjustment, max(0, self.window_max - 1))
            self.protected_max += quota
            self.window_max -= quota
            for t in range(C_MAX_TRANSFER):
                if self.count[WINDOW] == 0:
                    break
                c = self.next[WINDOW]
                w = self.weight[c]
                if quota < w:
                    break
                quota -= w
                self.window_used -= w
                self._move(c, PROBATION)
            self.protected_max -= quota
            self.window_max += quota
            self.adjustment = -quota

    # -- introspection -------------------------------------------------------------------------

    @property
    def probation_used(self) -> int:
        return self.used - self.window_used - self.protected_used

    def segments(self) -> tuple:
        """The keys of (window, probation, protected), each from its LRU end to its MRU end."""
        out = []
        cdef int64_t i
        for s in (WINDOW, PROBATION, PROTECTED):
            keys = []
            i = self.next[s]
            while i != s:
                keys.append(self.keys[i])
                i = self.next[i]
            out.append(keys)
        return tuple(out)

    def __repr__(self):
        return (f"WTinyLFU(capacity={self.capacity}, used={self.used}, len={len(self.slots)}, "
                f"window={self.window_used}/{self.window_max}, "
                f"protected={self.protected_used}/{self.protected_max})")
