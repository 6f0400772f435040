# C-level layout of the W-TinyLFU policy core (see wtlfu.pyx for the theory of operation).
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint64_t

from cext.sketch cimport CountMinSketch, Doorkeeper


@cython.final
cdef class TinyLFU:
    cdef CountMinSketch sketch        # 4-bit count-min sketch (aging every sketch.sample_size samples)
    cdef Doorkeeper door              # bloom filter in front of the sketch, cleared at each aging
    cdef readonly uint64_t width      # sketch columns (a power of two)
    cdef readonly int64_t entries     # the entry count it is sized for (grows on demand)
    cdef readonly int64_t width_factor   # sketch columns per entry (before rounding up)
    cdef readonly int64_t door_bits      # doorkeeper bits per entry
    cdef readonly int64_t sample_factor  # aging period: sample_factor * entries samples
    cdef int64_t last_samples         # sketch.samples after the previous record: a drop means it aged
    cdef readonly int64_t ticks       # requests recorded since construction: the policy's clock
    cdef int64_t age_tick             # ticks at the last aging (or sketch rebuild)
    cdef int64_t period_ticks         # ticks between the last two agings (0 before the first)
    cdef uint64_t rng                 # splitmix64 state of the hash-flooding jitter
    cdef uint64_t seed_value          # the seed, masked to uint64 (rebuilds reuse it)
    cdef object seed                  # the seed as given
    cdef readonly bint jitter         # admit a frequent loser with probability 1/128

    cdef void _build(self, int64_t entries) except *
    cdef void _record(self, uint64_t h) noexcept
    cdef void _aged(self) noexcept
    cdef int64_t _span(self) noexcept
    cdef int _frequency(self, uint64_t h) noexcept
    cdef bint _admit(self, uint64_t ch, uint64_t vh, int64_t idle, int64_t overdue) noexcept


@cython.final
cdef class WTinyLFU:
    # per-slot arrays (slots 0..3 are the sentinels of the four lists)
    cdef int64_t* prev                # previous slot in the slot's list (circular)
    cdef int64_t* next                # next slot in the slot's list (circular)
    cdef int64_t* weight              # bytes of the key
    cdef uint64_t* hashes             # hash(key) masked to uint64: the sketch's input
    cdef int64_t* stamp               # admission.ticks at the key's last request or admission
    cdef uint8_t* seg                 # WINDOW, PROBATION, PROTECTED, CANDIDATE or FREE
    cdef int64_t nslots               # allocated slots (array length)
    cdef int64_t free_head            # first free slot (chained through next[]), -1 if none
    cdef int64_t count[4]             # keys in each list
    cdef list keys                    # slot -> key (None when free)
    cdef dict slots                   # key -> slot
    cdef object evictable             # the evictable(key) predicate, or None: everything is
    cdef object last_admitted         # admit()'s last key: spared by evict()
    cdef readonly TinyLFU admission   # the admission filter (its own object)
    cdef readonly int64_t capacity    # bytes
    cdef readonly int64_t used        # bytes resident in all segments
    cdef readonly int64_t window_used
    cdef readonly int64_t protected_used
    cdef readonly int64_t window_max
    cdef readonly int64_t protected_max
    cdef readonly bint adaptive       # hill-climb the window size (Caffeine's climber)
    cdef readonly int64_t overdue     # discount overdue victims (idle x freq x overdue >= span); 0: off
    # ghost feedback on the protected share (ghost_gain 0: off)
    cdef readonly int64_t ghost_gain  # protected bytes moved per ghost hit, per byte of the arriving key
    cdef readonly double protected_share  # the configured protected share of main: the ceiling
    cdef uint64_t* ghost_tag          # 2 x slots: hash | 1 of a duel's loser (0: empty); refused, then evicted
    cdef int64_t* ghost_tick          # admission.ticks at that duel
    cdef list ghost_winner            # the duel's winner (the victim that stayed, the candidate that got in)
    cdef uint64_t ghost_mask          # slots per table - 1 (a power of two minus one)
    cdef int64_t ghost_entries        # admission.entries the tables were sized for
    # hill climber state
    cdef int64_t sample_hits
    cdef int64_t sample_misses
    cdef double prev_hit_rate
    cdef double step                  # bytes; the sign is the direction
    cdef readonly double climb_factor # requests per sample: climb_factor x expected entries
    cdef readonly int64_t adjustment  # bytes still to move: > 0 grows the window, < 0 shrinks it

    cdef void _size_ghosts(self) except *
    cdef void _ghost_put(self, int table, uint64_t h, object winner) except *
    cdef bint _ghost_take(self, int table, uint64_t h) except -1
    cdef void _ghost_arrival(self, uint64_t h, int64_t w) except *
    cdef void _grow(self) except *
    cdef int64_t _alloc(self, object key, uint64_t h, int64_t w) except -1
    cdef void _release(self, int64_t i) noexcept
    cdef void _move(self, int64_t i, int to) noexcept
    cdef void _after_request(self) noexcept
    cdef void _demote(self) noexcept
    cdef int64_t _find_victim(self, int64_t exclude) except -2
    cdef void _drop(self, int64_t i, list victims) except *
    cdef bint _evict_from_window(self, int64_t exclude, list victims) except -1
    cdef void _climb(self) noexcept
    cdef void _transfer(self) noexcept
