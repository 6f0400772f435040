"""Pure-Python twin of ``cext/wtlfu.pyx`` (selected by ``EDGE_NO_EXTENSIONS=1``).

Same API and the same decisions key for key (the same hashes, sketch values, victim order and
jitter draws); see wtlfu.pyx for the theory of operation. Layout differs where it is
invisible: each segment is an ``OrderedDict`` key -> weight (head = LRU end) instead of a
linked list over C arrays, the stamps are a dict, and the candidates of one ``admit`` are a
Python list.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from cext import _sketch_py

M64 = 0xFFFFFFFFFFFFFFFF
GOLDEN = 0x9E3779B97F4A7C15
MAX_SKIPS = 8
JITTER_FREQ = 6
WIDTH_PER_ENTRY = 8
DOOR_BITS_PER_ENTRY = 64
SAMPLES_PER_ENTRY = 5
MIN_ENTRIES = 16
DEFAULT_AVG_WEIGHT = 1 << 20
MAX_TRANSFER = 1000
CLIMB_PER_ENTRY = 10.0
STEP_PERCENT = 0.0625
STEP_DECAY = 0.98
RESTART_THRESHOLD = 0.05
DEFAULT_OVERDUE = 2
MAX_OVERDUE_SHIFT = 4
MAX_IDLE = 1 << 40
DEFAULT_GHOST_GAIN = 3
GHOST_SLOT_DIVISOR = 8
GHOST_SALT = 0x5BD1E9955BD1E995

WINDOW, PROBATION, PROTECTED = 0, 1, 2
GHOST_REFUSED, GHOST_EVICTED = 0, 1


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class TinyLFU:
    """TinyLFU admission: doorkeeper + count-min sketch with aging (see wtlfu.pyx)."""

    __slots__ = ("_age_tick", "_door", "_period_ticks", "_rng", "_seed", "_sketch", "door_bits",
                 "entries", "jitter", "sample_factor", "ticks", "width", "width_factor")

    def __init__(self, expected_entries: int, *, seed: int = 0, jitter: bool = True,
                 width_factor: int = WIDTH_PER_ENTRY, door_bits: int = DOOR_BITS_PER_ENTRY,
                 sample_factor: int = SAMPLES_PER_ENTRY) -> None:
        if width_factor < 1 or door_bits < 1 or sample_factor < 1:
            raise ValueError("width_factor, door_bits and sample_factor must be >= 1")
        self.width_factor = width_factor
        self.door_bits = door_bits
        self.sample_factor = sample_factor
        self._seed = seed
        self._rng = seed & M64
        self.jitter = bool(jitter)
        self.ticks = 0
        self._build(expected_entries)

    def _build(self, entries: int) -> None:
        entries = max(MIN_ENTRIES, entries)
        self.entries = entries
        self._sketch = _sketch_py.CountMinSketch(entries * self.width_factor, 4, seed=self._seed,
                                                 sample_size=entries * self.sample_factor)
        self.width: int = self._sketch.width
        self._door = _sketch_py.Doorkeeper(entries * self.door_bits, seed=self._seed)
        self._age_tick = self.ticks          # a new sketch covers no history
        self._period_ticks = 0

    def _record(self, h: int) -> None:
        self.ticks += 1
        if self._door.put(h):
            sk = self._sketch
            before = sk.samples
            sk.increment(h)
            if sk.samples < before:      # the sketch aged: forget the one-timers too
                self._door.clear()
                self._aged()

    def _aged(self) -> None:
        self._period_ticks = self.ticks - self._age_tick
        self._age_tick = self.ticks

    def _frequency(self, h: int) -> int:
        return self._sketch.estimate(h) + (h in self._door)

    def _admit(self, ch: int, vh: int, idle: int = 0, overdue: int = 0) -> bool:
        cf = self._frequency(ch)
        vf = self._frequency(vh)
        if overdue > 0 and vf > 0 and idle > 0:
            span = self.span
            if span > 0:
                shift = min(idle, MAX_IDLE) * vf * overdue // span
                if shift > 0:
                    vf >>= min(shift, MAX_OVERDUE_SHIFT)
        if cf > vf:
            return True
        if self.jitter and cf >= JITTER_FREQ:
            self._rng = (self._rng + GOLDEN) & M64
            return (_mix64(self._rng) & 127) == 0
        return False

    @property
    def samples(self) -> int:
        """Sketch samples since the last aging."""
        return self._sketch.samples

    @property
    def sample_size(self) -> int:
        """The aging period in samples (SAMPLES_PER_ENTRY x entries by default)."""
        return self._sketch.sample_size

    @property
    def span(self) -> int:
        """Requests the counts cover: since the last aging, plus the period before it."""
        return self.ticks - self._age_tick + self._period_ticks

    def ensure_capacity(self, entries: int) -> None:
        """Grow the sketch if ``entries`` exceeds what it is sized for (history is dropped)."""
        if entries > self.entries:
            self._build(2 * entries)

    def record(self, key: Hashable) -> None:
        """Count one request for ``key``."""
        self._record(hash(key) & M64)

    def frequency(self, key: Hashable) -> int:
        """Estimated recent request count of ``key`` (0..16)."""
        return self._frequency(hash(key) & M64)

    def admit(self, candidate: Hashable, victim: Hashable, *, idle: int = 0,
              overdue: int = 0) -> bool:
        """True if ``candidate`` should replace ``victim``.

        ``idle``: requests since the victim's last request; with ``overdue`` > 0 an overdue
        victim's frequency is discounted first (see wtlfu.pyx).
        """
        if idle < 0 or overdue < 0:
            raise ValueError("idle and overdue must be >= 0")
        return self._admit(hash(candidate) & M64, hash(victim) & M64, idle, overdue)

    def reset(self) -> None:
        """Age now: halve the sketch and clear the doorkeeper."""
        self._sketch.reset()
        self._door.clear()
        self._aged()

    def __repr__(self) -> str:
        return (f"TinyLFU(entries={self.entries}, width={self.width}, "
                f"samples={self.samples}/{self.sample_size})")


class WTinyLFU:
    """Window TinyLFU over byte weights (see wtlfu.pyx)."""

    name = "wtinylfu"

    def __init__(
        self,
        capacity: int,
        *,
        evictable: Callable[[Hashable], bool] | None = None,
        window: float = 0.01,
        protected: float = 0.8,
        expected_entries: int | None = None,
        avg_weight: int = DEFAULT_AVG_WEIGHT,
        seed: int = 0,
        adaptive: bool = False,
        admission: TinyLFU | None = None,
        jitter: bool = True,
        climb_factor: float = CLIMB_PER_ENTRY,
        overdue: int = 0,
        ghost_gain: int = 0,
    ) -> None:
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
        self.last_admitted: Hashable | None = None
        self.adaptive = bool(adaptive)
        self.used = 0
        self.window_used = 0
        self.protected_used = 0
        self._segs: tuple[OrderedDict[Hashable, int], ...] = (OrderedDict(), OrderedDict(), OrderedDict())
        self._where: dict[Hashable, int] = {}      # key -> segment index
        self._stamp: dict[Hashable, int] = {}      # key -> admission.ticks at its last request
        self._sample_hits = 0
        self._sample_misses = 0
        self._prev_hit_rate = 0.0
        self._step = -STEP_PERCENT * capacity
        self.adjustment = 0
        if climb_factor <= 0:
            raise ValueError(f"climb_factor must be > 0, got {climb_factor}")
        self.climb_factor = float(climb_factor)
        if overdue < 0:
            raise ValueError(f"overdue must be >= 0, got {overdue}")
        self.overdue = int(overdue)
        if ghost_gain < 0:
            raise ValueError(f"ghost_gain must be >= 0, got {ghost_gain}")
        self.ghost_gain = int(ghost_gain)
        self._ghost_tag: list[int] = []          # REFUSED table, then EVICTED: hash | 1 of a loser
        self._ghost_tick: list[int] = []         # admission.ticks at that duel
        self._ghost_winner: list[Hashable] = []  # the duel's winner
        self._ghost_mask = 0
        self._ghost_entries = 0
        if self.ghost_gain:
            self._size_ghosts()

    # -- ghosts ---------------------------------------------------------------------------------

    def _size_ghosts(self) -> None:
        n = 16
        want = self.admission.entries // GHOST_SLOT_DIVISOR
        while n < want:
            n <<= 1
        self._ghost_tag = [0] * (2 * n)
        self._ghost_tick = [0] * (2 * n)
        self._ghost_winner = [None] * (2 * n)
        self._ghost_mask = n - 1
        self._ghost_entries = self.admission.entries

    def _ghost_slot(self, table: int, h: int) -> int:
        return (_mix64(h ^ GHOST_SALT) & self._ghost_mask) + table * (self._ghost_mask + 1)

    def _ghost_put(self, table: int, h: int, winner: Hashable) -> None:
        g = self._ghost_slot(table, h)
        self._ghost_tag[g] = h | 1
        self._ghost_tick[g] = self.admission.ticks
        self._ghost_winner[g] = winner

    def _ghost_take(self, table: int, h: int) -> bool:
        g = self._ghost_slot(table, h)
        if self._ghost_tag[g] != h | 1:
            return False
        self._ghost_tag[g] = 0
        winner = self._ghost_winner[g]
        self._ghost_winner[g] = None
        return winner not in self._where or self._stamp[winner] <= self._ghost_tick[g]

    def _ghost_arrival(self, h: int, w: int) -> None:
        if self._ghost_take(GHOST_REFUSED, h):
            self.protected_max = max(0, self.protected_max - self.ghost_gain * w)
        elif self._ghost_take(GHOST_EVICTED, h):
            ceiling = int(float(self.capacity - self.window_max) * self.protected_share)
            if self.protected_max < ceiling:
                self.protected_max = min(ceiling, self.protected_max + self.ghost_gain * w)

    # -- the policy interface ------------------------------------------------------------------

    def access(self, key: Hashable) -> bool:
        """Record a request for ``key``; True if it is resident (a hit)."""
        self.admission._record(hash(key) & M64)
        s = self._where.get(key)
        if s is None:
            self._sample_misses += 1
            if self.adaptive:
                self._after_request()
            return False
        self._stamp[key] = self.admission.ticks
        if s == PROBATION:
            w = self._segs[PROBATION].pop(key)
            self._segs[PROTECTED][key] = w
            self._where[key] = PROTECTED
            self.protected_used += w
            if self.protected_used > self.protected_max:
                self._demote()
        else:
            self._segs[s].move_to_end(key)
        self._sample_hits += 1
        if self.adaptive:
            self._after_request()
        return True

    def _after_request(self) -> None:
        if self._sample_hits + self._sample_misses >= self.climb_factor * self.admission.entries:
            self._climb()
        if self.adjustment != 0:
            self._transfer()

    def _demote(self) -> None:
        prot, prob, where = self._segs[PROTECTED], self._segs[PROBATION], self._where
        t = 0
        while self.protected_used > self.protected_max and prot:
            if t == MAX_TRANSFER:
                break                           # the rest waits for the next promotion
            t += 1
            k, w = prot.popitem(last=False)
            prob[k] = w
            where[k] = PROBATION
            self.protected_used -= w

    def admit(self, key: Hashable, weight: int) -> list[Hashable]:
        """Insert ``key`` of ``weight`` bytes; return the keys to evict (``key`` itself if refused)."""
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.last_admitted = key
        s = self._where.get(key)
        if s is not None:
            if weight > self.capacity:
                self.remove(key)
                return [key]
            seg = self._segs[s]
            delta = weight - seg[key]
            seg[key] = weight
            self._stamp[key] = self.admission.ticks
            seg.move_to_end(key)
            self.used += delta
            if s == WINDOW:
                self.window_used += delta
            elif s == PROTECTED:
                self.protected_used += delta
                self._demote()
        else:
            if weight > self.capacity:
                return [key]
            if self.ghost_gain:
                self._ghost_arrival(hash(key) & M64, weight)
            self._segs[WINDOW][key] = weight
            self._where[key] = WINDOW
            self._stamp[key] = self.admission.ticks
            self.window_used += weight
            self.used += weight
            if len(self._where) > self.admission.entries:
                self.admission.ensure_capacity(len(self._where))
                if self.ghost_gain and self.admission.entries != self._ghost_entries:
                    self._size_ghosts()
        victims: list[Hashable] = []
        searchable = True
        if self.window_used > self.window_max:
            searchable = self._evict_from_window(key, victims)
        if self.used > self.capacity:
            while searchable and self.used > self.capacity:
                found = self._find_victim(key)
                if found is None:
                    break
                self._drop(found, victims)
            if self.used > self.capacity and key in self._where:
                self.remove(key)
                victims.append(key)
        return victims

    def _evict_from_window(self, key: Hashable, victims: list[Hashable]) -> bool:
        win, prob, where = self._segs[WINDOW], self._segs[PROBATION], self._where
        candidates: list[tuple[Hashable, int]] = []
        while self.window_used > self.window_max and win:
            k, w = win.popitem(last=False)
            self.window_used -= w
            candidates.append((k, w))
            del where[k]
        adm, evictable, stamp, overdue = self.admission, self.evictable, self._stamp, self.overdue
        searchable = True
        for ck, cw in candidates:
            stays = True
            while searchable and self.used > self.capacity:
                v = self._find_victim(key)
                if v is None:
                    searchable = False
                    break
                if adm._admit(hash(ck) & M64, hash(v) & M64, adm.ticks - stamp[v], overdue):
                    if self.ghost_gain:
                        self._ghost_put(GHOST_EVICTED, hash(v) & M64, ck)
                    self._drop(v, victims)
                    continue
                if ck == key or evictable is None or evictable(ck):
                    if self.ghost_gain:
                        self._ghost_put(GHOST_REFUSED, hash(ck) & M64, v)
                    victims.append(ck)     # a pinned loser stays: it is being read
                    del stamp[ck]
                    self.used -= cw
                    stays = False
                break
            if stays:
                prob[ck] = cw
                where[ck] = PROBATION
        return searchable

    def _drop(self, k: Hashable, victims: list[Hashable]) -> None:
        s = self._where.pop(k)
        del self._stamp[k]
        w = self._segs[s].pop(k)
        self.used -= w
        if s == WINDOW:
            self.window_used -= w
        elif s == PROTECTED:
            self.protected_used -= w
        victims.append(k)

    def _find_victim(self, exclude: object) -> Hashable | None:
        evictable = self.evictable
        skips = 0
        for s in (PROBATION, PROTECTED, WINDOW):
            seg = self._segs[s]
            for _ in range(len(seg)):
                k = next(iter(seg))
                if k == exclude:
                    seg.move_to_end(k)
                    continue
                if evictable is None or evictable(k):
                    return k
                seg.move_to_end(k)
                skips += 1
                if skips >= MAX_SKIPS:
                    return None
        return None

    def evict(self, nbytes: int) -> list[Hashable]:
        """Evict at least ``nbytes`` of evictable keys if possible (bounded; may free less)."""
        victims: list[Hashable] = []
        target = self.used - nbytes
        ex = self.last_admitted if self.last_admitted in self._where else _NOTHING
        while self.used > target:
            v = self._find_victim(ex)
            if v is None:
                break
            self._drop(v, victims)
        return victims

    def remove(self, key: Hashable) -> None:
        """Forget ``key`` (purge, failed fill); a no-op if it is not resident."""
        s = self._where.pop(key, None)
        if s is None:
            return
        del self._stamp[key]
        w = self._segs[s].pop(key)
        self.used -= w
        if s == WINDOW:
            self.window_used -= w
        elif s == PROTECTED:
            self.protected_used -= w

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    # -- the hill climber ----------------------------------------------------------------------

    def _climb(self) -> None:
        requests = self._sample_hits + self._sample_misses
        hit_rate = self._sample_hits / requests
        change = hit_rate - self._prev_hit_rate
        amount = self._step if change >= 0 else -self._step
        if abs(change) >= RESTART_THRESHOLD:
            next_step = STEP_PERCENT * self.capacity * (1.0 if amount >= 0 else -1.0)
        else:
            next_step = STEP_DECAY * amount
        self._prev_hit_rate = hit_rate
        self._step = next_step
        self.adjustment = int(amount)
        self._sample_hits = self._sample_misses = 0

    def _transfer(self) -> None:
        win, prob, prot, where = (self._segs[WINDOW], self._segs[PROBATION],
                                  self._segs[PROTECTED], self._where)
        if self.adjustment > 0:
            if self.protected_max == 0:
                return
            quota = min(self.adjustment, self.protected_max)
            self.protected_max -= quota
            self.window_max += quota
            self._demote()
            for _ in range(MAX_TRANSFER):
                src = prob
                k = next(iter(prob), _NOTHING)
                if k is _NOTHING or quota < prob[k]:
                    src = prot
                    k = next(iter(prot), _NOTHING)
                if k is _NOTHING:
                    break
                w = src[k]
                if quota < w:
                    break
                quota -= w
                del src[k]
                if src is prot:
                    self.protected_used -= w
                win[k] = w
                where[k] = WINDOW
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
            for _ in range(MAX_TRANSFER):
                if not win:
                    break
                k = next(iter(win))
                w = win[k]
                if quota < w:
                    break
                quota -= w
                self.window_used -= w
                del win[k]
                prob[k] = w
                where[k] = PROBATION
            self.protected_max -= quota
            self.window_max += quota
            self.adjustment = -quota

    # -- introspection -------------------------------------------------------------------------

    @property
    def probation_used(self) -> int:
        return self.used - self.window_used - self.protected_used

    def segments(self) -> tuple[list[Hashable], list[Hashable], list[Hashable]]:
        """The keys of (window, probation, protected), each from its LRU end to its MRU end."""
        return (list(self._segs[WINDOW]), list(self._segs[PROBATION]), list(self._segs[PROTECTED]))

    def __repr__(self) -> str:
        return (f"WTinyLFU(capacity={self.capacity}, used={self.used}, len={len(self._where)}, "
                f"window={self.window_used}/{self.window_max}, "
                f"protected={self.protected_used}/{self.protected_max})")


class _Nothing:
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 0


_NOTHING: object = _Nothing()
