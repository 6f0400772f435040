"""Type stub of the shared cache (cext/shm.pyx); the twin is cext/_shm_py.py.

One arena and one block index in shared memory for every worker process. See the theory of
operation at the top of cext/shm.pyx.
"""

from types import TracebackType
from typing import Any, Final, Self, final

MAGIC: Final[int]
LAYOUT_VERSION: Final[int]       # 3
IMPL: Final[int]                 # 1 = compiled module, 2 = Python twin
GONE: Final[int]                 # 0: the entry was removed (fill failed, owner died) or replaced
FILLING: Final[int]              # 1: being filled by its owner; [0, filled) is readable
READY: Final[int]                # 2: complete and verified; a hit
ORPHANED: Final[int]             # 3: FILLING, but its owner died: a reader take_fill()s it
MAX_WORKERS: Final[int]          # 62
COUNTERS: Final[tuple[str, ...]]

class RegionBusy(RuntimeError): ...   # held by another live process

def class_sizes(page_size: int, min_chunk: int, growth: float) -> list[int]: ...
def layout(arena_size: int, page_size: int, sizes: list[int], max_workers: int,
           index_capacity: int) -> dict[str, int]: ...
def wake_name(nonce: int, worker_id: int) -> bytes: ...

# lookup_pin() result: (offset, length, state, filled, gen)
Pinned = tuple[int, int, int, int, int]

@final
class SharedCache:
    """A handle on the shared arena + index: the supervisor's (create) or a worker's (attach).

    A handle belongs to one process and one thread (its pin counts are private). Fork first,
    then attach in the child.
    """

    @classmethod
    def create(
        cls,
        path: str,
        arena_size: int,
        page_size: int = 1 << 20,
        *,
        min_chunk: int = 1024,
        growth: float = 1.25,
        max_workers: int = 16,
        index_capacity: int | None = None,   # power of two; default >= 16 per page, >= 1024
        prefault: bool = False,
        keep_arena: bool = False,
    ) -> SharedCache:
        """Create (or re-create, empty) ``path`` (the arena) and ``path + ".ctl"``; refused
        while any process has them in use. The handle has worker_id -1: recover, evict,
        adopt, stats, check; no pins, no fills. ``keep_arena``: an arena file of exactly
        ``arena_size`` bytes keeps its bytes (for ``adopt``); otherwise it is zeroed. Either
        way the file is fallocated whole (filling holes a previous run punched)."""
    @classmethod
    def attach(cls, path: str, worker_id: int) -> SharedCache:
        """Attach worker ``worker_id``; recovers the id's previous process if it died
        attached; refuses an id a live process holds."""
    @property
    def path(self) -> str | None: ...
    @property
    def worker_id(self) -> int: ...
    @property
    def arena_size(self) -> int: ...
    @property
    def page_size(self) -> int: ...
    @property
    def max_workers(self) -> int: ...
    @property
    def fd(self) -> int:
        """The arena file's descriptor (``os.sendfile`` from it); -1 once closed."""
    @property
    def zero_copy(self) -> bool:
        """Whether ``sendable`` may say yes (per handle; default False)."""
    @zero_copy.setter
    def zero_copy(self, on: bool) -> None: ...
    @property
    def wake_fd(self) -> int:
        """Readable after a watched fill progressed: ``loop.add_reader(wake_fd, ...)``."""
    def chunk_size(self, nbytes: int) -> int:
        """The chunk a block of ``nbytes`` occupies (its weight for the eviction policy)."""

    # hit path: no lock in the compiled module
    def lookup_pin(self, oid: bytes, idx: int) -> Pinned | None:
        """Pin block (oid, idx) if indexed; None on a miss."""
    def status(self, oid: bytes, idx: int, gen: int) -> tuple[int, int]:
        """(state, filled) of that entry generation; (GONE, 0) once removed."""
    def unpin(self, off: int) -> int:
        """Drop one of this worker's pins; returns the pins it still holds there."""
    def repin(self, off: int) -> int:
        """One more pin on a chunk this worker already pins."""
    def pins(self, off: int) -> int: ...
    def view(self, off: int, length: int) -> memoryview:
        """Writable view of a chunk this worker pins; no copy."""
    def sendable(self, off: int) -> bool:
        """True if the chunk at ``off`` (pinned by this worker) may be sent with
        ``os.sendfile(sock, fd, off, n)``: ``zero_copy`` is on and the chunk is whole 4 KiB
        pages. It is then marked SENT: whoever frees it punches it out of the file first."""

    # miss path: under the shared mutex
    def begin_fill(self, oid: bytes, idx: int, length: int) -> int | None:
        """Offset of a new FILLING block owned and pinned by this worker; -1 when there is no
        memory or index room (evict and retry); None when already indexed (lookup_pin it).
        OSError when memory punched by zero-copy cannot be re-reserved (filesystem full)."""
    def fill_gen(self, off: int) -> int:
        """The entry generation of this worker's open fill at ``off``."""
    def advance_fill(self, off: int, filled: int) -> bool:
        """Publish [0, filled) landed (forward only); wakes watchers. False if gone."""
    def finish_fill(self, off: int, checksum: int) -> bool:
        """READY with its checksum; ValueError unless filled == length. False if gone."""
    def fail_fill(self, off: int) -> None:
        """Remove the fill (never a hit); its chunk is freed at its last unpin."""
    def watch(self, oid: bytes, idx: int, gen: int) -> tuple[int, int]:
        """Arm one wake-up for the next progress; returns (state, filled) now."""
    def take_fill(self, oid: bytes, idx: int, gen: int) -> int | None:
        """Become the owner of that ORPHANED fill (the caller pins it): the bytes filled so
        far (continue from there, with one more pin: the fill's); None unless it is still an
        orphan (another reader took it, it finished, it went). One winner per orphan."""
    def drain_wakeups(self) -> int: ...
    def evict(self, oid: bytes, idx: int, gen: int = 0) -> bool | None:
        """Remove and free a READY block (of that generation, if ``gen``) only if no worker
        pins it: True; False if it is indexed but busy (pinned, not READY); None if it is
        not indexed (or is another generation)."""
    def remove(self, oid: bytes, idx: int) -> bool:
        """Remove (oid, idx) whatever its state (purge); a pinned chunk is freed at its last
        unpin; watchers of a FILLING entry see GONE. True if it was indexed."""
    def evict_sweep(self, max_probe: int, nbytes: int = 1) -> list[tuple[bytes, int]]:
        """Evict READY unpinned blocks from a persistent clock hand until ``nbytes`` of chunks
        are freed or ``max_probe`` index slots were looked at (the last resort for blocks no
        policy tracks); returns the evicted (oid, idx)."""
    def info(self, oid: bytes, idx: int) -> dict[str, Any] | None: ...
    def recover_worker(self, worker_id: int) -> dict[str, int]:
        """After a worker died: clear its pins ({"chunks": n}); its fills another worker
        reads become orphans ({"orphaned": k}), the others (and orphans nobody reads any
        more) are dropped ({"fills": m})."""
    def ready_entries(self) -> list[tuple[bytes, int, int, int, int]]:
        """Every READY block as (oid, idx, offset, length, checksum): what a clean stop saves."""
    def adopt(self, entries: list[tuple[bytes, int, int, int, int]]) -> list[tuple[bytes, int]]:
        """Index READY blocks at their offsets in a kept arena (warm restart, before any
        worker attaches); returns the refused (oid, idx). Verify checksums afterwards."""
    def check(self) -> dict[str, int]:
        """Verify every invariant (quiescent moments); RuntimeError listing violations."""
    def stats(self) -> dict[str, Any]:
        """Shared counters (COUNTERS, e.g. punched_chunks, punch_failures), occupancy, and
        this handle's lookup counters."""
    def close(self) -> None:
        """Detach (a worker releases its pins and fills first); idempotent."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
