# Stub for the compiled cext.wtlfu (same API as the twin cext/_wtlfu_py.py).
from collections.abc import Callable, Hashable

MAX_SKIPS: int
JITTER_FREQ: int
WIDTH_PER_ENTRY: int
DOOR_BITS_PER_ENTRY: int
SAMPLES_PER_ENTRY: int
MIN_ENTRIES: int
DEFAULT_AVG_WEIGHT: int
MAX_TRANSFER: int
CLIMB_PER_ENTRY: float
STEP_PERCENT: float
STEP_DECAY: float
RESTART_THRESHOLD: float
DEFAULT_OVERDUE: int
MAX_OVERDUE_SHIFT: int
MAX_IDLE: int
DEFAULT_GHOST_GAIN: int
GHOST_SLOT_DIVISOR: int
GHOST_SALT: int

class TinyLFU:
    width: int            # sketch columns (a power of two)
    entries: int          # the entry count it is sized for
    width_factor: int
    door_bits: int
    sample_factor: int
    jitter: bool
    ticks: int            # requests recorded: the policy's clock
    def __init__(self, expected_entries: int, *, seed: int = 0, jitter: bool = True,
                 width_factor: int = ..., door_bits: int = ..., sample_factor: int = ...) -> None: ...
    @property
    def samples(self) -> int: ...
    @property
    def sample_size(self) -> int: ...
    @property
    def span(self) -> int: ...
    def ensure_capacity(self, entries: int) -> None: ...
    def record(self, key: Hashable) -> None: ...
    def frequency(self, key: Hashable) -> int: ...
    def admit(self, candidate: Hashable, victim: Hashable, *, idle: int = 0,
              overdue: int = 0) -> bool: ...
    def reset(self) -> None: ...

class WTinyLFU:
    name: str
    capacity: int
    used: int
    window_used: int
    protected_used: int
    window_max: int
    protected_max: int
    adaptive: bool
    adjustment: int
    climb_factor: float
    overdue: int
    ghost_gain: int
    protected_share: float
    admission: TinyLFU
    def __init__(self, capacity: int, *, evictable: Callable[[Hashable], bool] | None = None,
                 window: float = 0.01, protected: float = 0.8, expected_entries: int | None = None,
                 avg_weight: int = ..., seed: int = 0, adaptive: bool = False,
                 admission: TinyLFU | None = None, jitter: bool = True,
                 climb_factor: float = ..., overdue: int = 0,
                 ghost_gain: int = 0) -> None: ...
    def access(self, key: Hashable) -> bool: ...
    def admit(self, key: Hashable, weight: int) -> list[Hashable]: ...
    def evict(self, nbytes: int) -> list[Hashable]: ...
    def remove(self, key: Hashable) -> None: ...
    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def probation_used(self) -> int: ...
    def segments(self) -> tuple[list[Hashable], list[Hashable], list[Hashable]]: ...
