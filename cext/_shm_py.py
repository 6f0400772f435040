"""Pure-Python twin of :mod:`cext.shm` (selected by ``EDGE_NO_EXTENSIONS=1``).

Same API, same files, same layout byte for byte (header words, class and page tables, chunk
words, 64-byte index entries, free-list links inside free chunks, the robust pthread mutex at
the same offset, driven through ctypes). The one difference: Python has no atomic
compare-and-swap on shared memory, so this twin takes the mutex on every call, the hit path
included. A region therefore belongs to one twin at a time (the header says which; ``attach``
refuses the other). See the theory of operation at the top of ``cext/shm.pyx``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import socket
from bisect import bisect_left
from types import TracebackType
from typing import Any, Self, final

from ._slab import ALIGN, class_sizes, round_up

MAGIC = 0x01_4D_48_53_45_47_44_45  # b"EDGESHM\x01" read as a little-endian uint64


class RegionBusy(RuntimeError):
    """The arena file or the region is held by another live process (both twins raise it)."""


LAYOUT_VERSION = 3  # 3: SENT marks, holed pages, punch counters
IMPL = 2  # this region is driven by the Python twin
GONE, FILLING, READY, ORPHANED = 0, 1, 2, 3
MAX_WORKERS = 62
COUNTERS = ("alloc_failures", "index_full", "lock_recoveries", "worker_recoveries",
            "evictions", "evict_busy", "fills_begun", "fills_finished", "fills_failed",
            "deferred_frees", "index_rebuilds", "pins_recovered", "fills_dropped", "repairs",
            "swept", "removed", "fills_orphaned", "fills_taken_over", "adopted",
            "punched_chunks", "punch_failures")

# header word indices (see cext/shm.pxd)
(H_MAGIC, H_VERSION, H_IMPL, H_CTL_SIZE, H_ARENA_SIZE, H_PAGE_SIZE, H_MIN_CHUNK, H_NCLASSES,
 H_MAX_WORKERS, H_NPAGES, H_SPP, H_INDEX_CAP, H_NEXT_GEN, H_NONCE, H_NFREE_PAGES, H_USED_BYTES,
 H_LIVE, H_TOMBS, H_OFF_CLASSES) = range(19)
H_SWEEP_HAND = 29
H_COUNTERS = 32
(K_ALLOC_FAILURES, K_INDEX_FULL, K_LOCK_RECOVERIES, K_WORKER_RECOVERIES, K_EVICTIONS,
 K_EVICT_BUSY, K_FILLS_BEGUN, K_FILLS_FINISHED, K_FILLS_FAILED, K_DEFERRED_FREES,
 K_INDEX_REBUILDS, K_PINS_RECOVERED, K_FILLS_DROPPED, K_REPAIRS, K_SWEPT,
 K_REMOVED, K_FILLS_ORPHANED, K_FILLS_TAKEN_OVER, K_ADOPTED, K_PUNCHED_CHUNKS,
 K_PUNCH_FAILURES) = range(H_COUNTERS, H_COUNTERS + 21)
HDR_MUTEX = 512
HDR_SIZE = 1024
SECTIONS = ("classes", "workers", "page_class", "page_used", "page_carved", "free_pages",
            "page_holes", "cword", "cstate", "sent", "index")

_NIL = -1
_C_FREE, _C_USED = 0, 1
_G_EMPTY, _G_TOMB = 0, 1
_M64 = (1 << 64) - 1
_DEFERRED = 1 << 62
_FREEING = 1 << 63
_FLAGS = _DEFERRED | _FREEING
_WORKERS_MASK = _M64 & ~_FLAGS
# class record fields (int64 each, 6 per class)
_CS, _CPP, _CHEAD, _CBUMP, _CPAGES, _CUSED = range(6)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
_PUNCH_HOLE = 2 | 1  # fallocate mode FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_SEND_UNIT = 4096    # a sendable chunk is made of whole pages of this size (punchable)


def _fallocate(fd: int, mode: int, off: int, n: int) -> int:
    """fallocate(2), retried on EINTR: 0 or the errno."""
    while _libc.fallocate(fd, mode, off, n) != 0:
        err = ctypes.get_errno()
        if err != errno.EINTR:
            return err
    return 0


def _mix(z: int) -> int:
    """splitmix64 finalizer (cext/includes/shm_atomics.h: shm_mix)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _hash(oid: bytes, idx: int) -> int:
    return _mix(int.from_bytes(oid[:8], "little") ^ ((idx * 0x9E3779B97F4A7C15) & _M64))


_ORPHAN = 0xFF  # owner of a FILLING entry whose owner died (waiting for take_fill)


def _fsw(filled: int, state: int, owner: int) -> int:
    return filled | (state << 32) | (owner << 40)


def _state(fsw: int) -> int:
    """The API state of an entry's fsw word: FILLING with owner ORPHAN reads ORPHANED."""
    st = (fsw >> 32) & 0xFF
    if st == FILLING and (fsw >> 40) & 0xFF == _ORPHAN:
        return ORPHANED
    return st


def layout(arena_size: int, page_size: int, sizes: list[int], max_workers: int,
           index_capacity: int) -> dict[str, int]:
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


def _check_params(arena_size: Any, page_size: Any, min_chunk: Any, growth: Any,
                  max_workers: Any, index_capacity: Any) -> int:
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


def _open_file(path: str, size: int, create: bool, keep: bool = False) -> Any:
    """Open (or create, sized and fallocated) the arena file, flocked (exclusively while
    created, shared once attached); ``keep``: an existing file of exactly ``size`` bytes keeps
    its bytes. A created file is fallocated whole, which also fills the holes a previous run
    punched in a kept one (zero-copy: see cext/shm.pyx)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if create else os.open(path, os.O_RDWR)
    f = open(fd, "r+b", buffering=0)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if create else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RegionBusy(f"arena file {path} is in use by another process") from None
        if create and not (keep and os.fstat(fd).st_size == size):
            os.ftruncate(fd, 0)  # a fresh create zeroes the region
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


def wake_name(nonce: int, worker_id: int) -> bytes:
    """Abstract AF_UNIX name of a worker's wake-up socket."""
    return b"\0edge-shm-%016x-%d" % (nonce, worker_id)


def _adoptable(entries: Any) -> list[tuple[bytes, int, int, int, int]]:
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


def _oid(oid: Any) -> bytes:
    if type(oid) is not bytes or len(oid) != 16:
        raise ValueError(f"oid must be 16 bytes (got {oid!r:.40})")
    return oid


@final
class SharedCache:
    """A handle on the shared arena + index: the supervisor's (create) or a worker's (attach)."""

    def __init__(self, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("use SharedCache.create() or SharedCache.attach()")
        self._open = False
        self._ctl_file: Any = None
        self._arena_file: Any = None
        self._ctl_mmap: mmap.mmap | None = None
        self._arena_mmap: mmap.mmap | None = None
        self._mutex: Any = None
        self._base: memoryview | None = None
        self._views: list[memoryview] = []
        self._sock: socket.socket | None = None
        self._send: socket.socket | None = None
        self._path: str | None = None
        self._wid = -1
        self._bit = 0
        self._counts: dict[int, int] = {}
        self._fills: dict[int, tuple[bytes, int, int]] = {}
        self._names: list[bytes] = []
        self._hits = self._misses = self._races = 0
        self._fd = -1
        self._zero_copy = False

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def create(cls, path: str, arena_size: int, page_size: int = 1 << 20, *,
               min_chunk: int = 1024, growth: float = 1.25, max_workers: int = 16,
               index_capacity: int | None = None, prefault: bool = False,
               keep_arena: bool = False) -> SharedCache:
        """Create (or re-create, empty) the arena file ``path`` and its ``path.ctl``;
        ``keep_arena``: an arena file of exactly ``arena_size`` bytes keeps its bytes (it is
        fallocated whole again, filling any holes a previous run punched)."""
        self = cls(_TOKEN)
        cap = _check_params(arena_size, page_size, min_chunk, growth, max_workers, index_capacity)
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
            self._arena_file = _open_file(path, arena_size, True, keep_arena)
            hq = memoryview(mmap.mmap(ctl.fileno(), HDR_SIZE)).cast("Q")  # header first
            try:
                hq[H_VERSION] = LAYOUT_VERSION
                hq[H_IMPL] = IMPL
                hq[H_CTL_SIZE] = lay["ctl_size"]
                hq[H_ARENA_SIZE] = arena_size
                hq[H_PAGE_SIZE] = page_size
                hq[H_MIN_CHUNK] = sizes[0]
                hq[H_NCLASSES] = len(sizes)
                hq[H_MAX_WORKERS] = max_workers
                hq[H_NPAGES] = lay["npages"]
                hq[H_SPP] = lay["spp"]
                hq[H_INDEX_CAP] = cap
                hq[H_NEXT_GEN] = 2
                hq[H_NONCE] = int.from_bytes(os.urandom(8), "little")
                for i, name in enumerate(SECTIONS):
                    hq[H_OFF_CLASSES + i] = lay[name]
            finally:
                m = hq.obj
                hq.release()
                m.close()  # type: ignore[attr-defined]
            self._map(path, prefault)
            for c, cs in enumerate(sizes):
                self._setc(c, _CS, cs)
                self._setc(c, _CPP, page_size // cs)
                self._setc(c, _CHEAD, _NIL)
                self._setc(c, _CBUMP, _NIL)
            self._sizes = list(sizes)
            for i in range(self._npages):
                self._page_class[i] = _NIL
                self._free_pages[i] = self._npages - 1 - i  # page 0 on top
            self._h[H_NFREE_PAGES] = self._npages
            attr = ctypes.create_string_buffer(64)
            rc = _libc.pthread_mutexattr_init(attr)
            rc = rc or _libc.pthread_mutexattr_setpshared(attr, _PTHREAD_PROCESS_SHARED)
            rc = rc or _libc.pthread_mutexattr_setrobust(attr, _PTHREAD_MUTEX_ROBUST)
            rc = rc or _libc.pthread_mutex_init(self._mutex, attr)
            _libc.pthread_mutexattr_destroy(attr)
            if rc:
                raise OSError(rc, f"pthread_mutex_init: {os.strerror(rc)}")
            self._h[H_MAGIC] = MAGIC  # last: a half-created region never attaches
            fcntl.flock(self._arena_file.fileno(), fcntl.LOCK_SH)
            fcntl.flock(ctl.fileno(), fcntl.LOCK_SH)
        except BaseException:
            self.close()
            raise
        self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._send.setblocking(False)
        return self

    @classmethod
    def attach(cls, path: str, worker_id: int) -> SharedCache:
        """Attach worker ``worker_id`` to an existing region (after fork, in the worker)."""
        self = cls(_TOKEN)
        ctl = open(os.open(path + ".ctl", os.O_RDWR), "r+b", buffering=0)
        try:
            fcntl.flock(ctl.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            ctl.close()
            raise RuntimeError(f"shared cache {path} is being created") from None
        self._ctl_file = ctl
        try:
            head = os.pread(ctl.fileno(), 40, 0)
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
            self._wid = worker_id
            self._bit = 1 << worker_id
            self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._send.setblocking(False)
            if self._wk[worker_id * 8] != 0:
                self._recover(worker_id)  # the previous process of this id died attached
            self._lock()
            self._wk[worker_id * 8] = os.getpid()
            self._wk[worker_id * 8 + 1] += 1
            self._unlock()
        except BaseException:
            self.close()
            raise
        return self

    def _map(self, path: str, prefault: bool) -> None:
        populate = mmap.MAP_POPULATE if prefault else 0
        self._path = path
        self._ctl_mmap = cm = mmap.mmap(self._ctl_file.fileno(), 0, flags=mmap.MAP_SHARED)
        self._arena_mmap = am = mmap.mmap(self._arena_file.fileno(), 0,
                                          flags=mmap.MAP_SHARED | populate)
        self._open = True
        ctl = memoryview(cm)
        self._views.append(ctl)
        h = ctl[:HDR_SIZE].cast("Q")
        self._h = h
        self._arena_size = h[H_ARENA_SIZE]
        self._page_size = h[H_PAGE_SIZE]
        self._npages = h[H_NPAGES]
        self._spp = h[H_SPP]
        self._nclasses = h[H_NCLASSES]
        self._max_workers = h[H_MAX_WORKERS]
        self._cap = h[H_INDEX_CAP]
        o = {name: h[H_OFF_CLASSES + i] for i, name in enumerate(SECTIONS)}
        nslots = self._npages * self._spp
        self._cls = ctl[o["classes"]:o["classes"] + 48 * self._nclasses].cast("q")
        self._wk = ctl[o["workers"]:o["workers"] + 64 * self._max_workers].cast("Q")
        n4 = 4 * self._npages
        self._page_class = ctl[o["page_class"]:o["page_class"] + n4].cast("i")
        self._page_used = ctl[o["page_used"]:o["page_used"] + n4].cast("i")
        self._page_carved = ctl[o["page_carved"]:o["page_carved"] + n4].cast("i")
        self._free_pages = ctl[o["free_pages"]:o["free_pages"] + n4].cast("i")
        self._page_holes = ctl[o["page_holes"]:o["page_holes"] + self._npages]
        self._cword = ctl[o["cword"]:o["cword"] + 8 * nslots].cast("Q")
        self._cstate = ctl[o["cstate"]:o["cstate"] + nslots]
        self._sent = ctl[o["sent"]:o["sent"] + nslots]
        self._ib = ctl[o["index"]:o["index"] + 64 * self._cap]       # entries as bytes
        self._iq = self._ib.cast("Q")                                # entries as words
        self._views += [h, self._cls, self._wk, self._page_class, self._page_used,
                        self._page_carved, self._free_pages, self._page_holes, self._cword,
                        self._cstate, self._sent, self._ib, self._iq]
        self._mutex = (ctypes.c_char * 64).from_buffer(cm, HDR_MUTEX)
        self._sizes = [self._cls[c * 6 + _CS] for c in range(self._nclasses)]
        self._base = memoryview(am)
        self._q = self._base.cast("q")  # free-list links: prev at q[off>>3], next at q[(off>>3)+1]
        self._names = [wake_name(h[H_NONCE], w) for w in range(self._max_workers)]
        self._fd = self._arena_file.fileno()

    def _setc(self, c: int, field: int, v: int) -> None:
        self._cls[c * 6 + field] = v

    def _getc(self, c: int, field: int) -> int:
        return self._cls[c * 6 + field]

    # -- properties ------------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def worker_id(self) -> int:
        return self._wid

    @property
    def arena_size(self) -> int:
        return self._arena_size

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def wake_fd(self) -> int:
        """The fd to ``loop.add_reader()``: readable after a watched fill progressed."""
        if self._sock is None:
            raise ValueError("only a worker handle has a wake-up socket")
        return self._sock.fileno()

    @property
    def fd(self) -> int:
        """The arena file's descriptor (``os.sendfile`` from it at a chunk's offset); -1 once
        closed."""
        return self._fd

    @property
    def zero_copy(self) -> bool:
        """Whether ``sendable`` may say yes (this handle only; default False)."""
        return self._zero_copy

    @zero_copy.setter
    def zero_copy(self, on: bool) -> None:
        self._zero_copy = bool(on)

    def chunk_size(self, nbytes: int) -> int:
        """The chunk size a block of ``nbytes`` occupies (its weight for the policy)."""
        self._check_open()
        if not 0 < nbytes <= self._page_size:
            raise ValueError(f"nbytes must be in 1..page_size={self._page_size} (got {nbytes})")
        return self._sizes[self._class_of(nbytes)]

    # -- the mutex -------------------------------------------------------------------------

    def _lock(self) -> None:
        rc = _libc.pthread_mutex_lock(self._mutex)
        if rc == errno.EOWNERDEAD:
            try:
                self._h[K_LOCK_RECOVERIES] += 1
                self._repair()
            except BaseException:
                _libc.pthread_mutex_unlock(self._mutex)
                raise
            _libc.pthread_mutex_consistent(self._mutex)
        elif rc != 0:
            raise OSError(rc, f"shared cache mutex: {os.strerror(rc)}")

    def _unlock(self) -> None:
        _libc.pthread_mutex_unlock(self._mutex)

    def _debug_lock(self) -> None:
        """Take the mutex and keep it (tests: a process killed while holding it)."""
        self._check_open()
        self._lock()

    def _debug_unlock(self) -> None:
        self._unlock()

    def _debug_alloc(self, nbytes: int) -> int:
        """Allocate a chunk and index nothing: the state a death between alloc and insert
        leaves (tests of the EOWNERDEAD repair)."""
        self._check_open()
        self._lock()
        try:
            return self._alloc(self._class_of(nbytes))
        finally:
            self._unlock()

    # -- entries ---------------------------------------------------------------------------

    def _entry(self, i: int) -> tuple[int, bytes, int, int, int, int]:
        """(gen, oid, idx, length, off, fsw) of index slot ``i``."""
        q = self._iq
        b = i * 8
        w3 = q[b + 3]
        off = q[b + 4]
        return (q[b], bytes(self._ib[i * 64 + 8:i * 64 + 24]), w3 & 0xFFFFFFFF, w3 >> 32,
                off - (1 << 64) if off >> 63 else off, q[b + 5])

    def _find(self, oid: bytes, idx: int) -> int:
        q, ib, mask = self._iq, self._ib, self._cap - 1
        j = _hash(oid, idx) & mask
        for _ in range(self._cap):
            g = q[j * 8]
            if g == _G_EMPTY:
                return -1
            if g != _G_TOMB and q[j * 8 + 3] & 0xFFFFFFFF == idx and ib[j * 64 + 8:j * 64 + 24] == oid:
                return j
            j = (j + 1) & mask
        return -1

    def _insert(self, oid: bytes, idx: int, length: int, off: int, gen: int, fsw: int,
                checksum: int, waiters: int) -> None:
        q, mask = self._iq, self._cap - 1
        j = _hash(oid, idx) & mask
        for _ in range(self._cap):
            g = q[j * 8]
            if g < 2:
                b = j * 8
                self._ib[j * 64 + 8:j * 64 + 24] = oid
                q[b + 3] = idx | (length << 32)
                q[b + 4] = off & _M64
                q[b + 5] = fsw
                q[b + 6] = checksum
                q[b + 7] = waiters
                q[b] = gen
                if g == _G_TOMB:
                    self._h[H_TOMBS] -= 1
                self._h[H_LIVE] += 1
                return
            j = (j + 1) & mask

    def _remove_entry(self, i: int) -> None:
        self._iq[i * 8] = _G_TOMB
        self._h[H_LIVE] -= 1
        self._h[H_TOMBS] += 1

    def _rebuild_index(self) -> None:
        q = self._iq
        keep = []
        for i in range(self._cap):
            if q[i * 8] >= 2:
                keep.append(bytes(self._ib[i * 64:i * 64 + 64]))
        for i in range(self._cap):
            q[i * 8] = _G_EMPTY
        self._h[H_LIVE] = 0
        self._h[H_TOMBS] = 0
        for raw in keep:
            w = memoryview(raw).cast("Q")
            oid = raw[8:24]
            idx = w[3] & 0xFFFFFFFF
            if self._find(oid, idx) < 0:
                off = w[4]
                self._insert(oid, idx, w[3] >> 32, off - (1 << 64) if off >> 63 else off,
                             w[0], w[5], w[6], w[7])
        self._h[K_INDEX_REBUILDS] += 1

    # -- lookups ---------------------------------------------------------------------------

    def lookup_pin(self, oid: bytes, idx: int) -> tuple[int, int, int, int, int] | None:
        """Pin block (oid, idx) if indexed: ``(offset, length, state, filled, gen)`` or None."""
        o = _oid(oid)
        self._check_worker()
        if not 0 <= idx <= 0xFFFFFFFF:
            raise OverflowError(f"block index {idx} out of range")
        self._lock()
        try:
            i = self._find(o, idx)
            if i < 0:
                self._misses += 1
                return None
            g, _, _, length, off, fsw = self._entry(i)
            slot = self._slot_of(off)
            if self._counts.get(slot, 0) == 0:
                w = self._cword[slot]
                if w & _FLAGS:
                    self._misses += 1
                    return None
                self._cword[slot] = w | self._bit
            self._counts[slot] = self._counts.get(slot, 0) + 1
            self._hits += 1
            return (off, length, _state(fsw), fsw & 0xFFFFFFFF, g)
        finally:
            self._unlock()

    def status(self, oid: bytes, idx: int, gen: int) -> tuple[int, int]:
        """``(state, filled)`` of the entry (oid, idx) of generation ``gen``; (GONE, 0) if it
        was removed or replaced."""
        o = _oid(oid)
        self._check_open()
        self._lock()
        try:
            i = self._find(o, idx)
            if i < 0 or self._iq[i * 8] != gen:
                return (GONE, 0)
            fsw = self._iq[i * 8 + 5]
            return (_state(fsw), fsw & 0xFFFFFFFF)
        finally:
            self._unlock()

    def unpin(self, off: int) -> int:
        """Drop one of this worker's pins on the chunk at ``off``; returns the pins left."""
        self._lock()
        try:
            slot = self._slot_checked(off)
            if self._counts.get(slot, 0) == 0:
                raise ValueError(f"chunk at offset {off} is not pinned by worker {self._wid}")
            return self._unpin_slot(slot)
        finally:
            self._unlock()

    def repin(self, off: int) -> int:
        """Add a pin on a chunk this worker already pins (e.g. a second reader of a block)."""
        self._lock()
        try:
            slot = self._slot_checked(off)
            if self._counts.get(slot, 0) == 0:
                raise ValueError(f"chunk at offset {off} is not pinned by worker {self._wid}")
            self._counts[slot] += 1
            return self._counts[slot]
        finally:
            self._unlock()

    def pins(self, off: int) -> int:
        """This worker's pin count on the chunk at ``off``."""
        self._lock()
        try:
            return self._counts.get(self._slot_checked(off), 0)
        finally:
            self._unlock()

    def view(self, off: int, length: int) -> memoryview:
        """A writable memoryview of ``[off, off+length)``: a chunk this worker pins. No copy."""
        self._lock()
        try:
            slot = self._slot_checked(off)
            if self._bit and self._counts.get(slot, 0) == 0:
                raise ValueError(f"chunk at offset {off} is not pinned by worker {self._wid}")
            if not 0 <= length <= self._sizes[self._page_class[off // self._page_size]]:
                raise ValueError(f"length {length} out of range for the chunk at offset {off}")
        finally:
            self._unlock()
        assert self._base is not None
        return self._base[off:off + length]

    def sendable(self, off: int) -> bool:
        """Whether the chunk at ``off`` (pinned by this worker) may be sent with
        ``os.sendfile(sock, fd, off, n)``: ``zero_copy`` is on and the chunk is made of whole
        4 KiB pages. If so it is marked SENT: whoever really frees it punches it first."""
        self._check_worker()
        self._lock()
        try:
            slot = self._slot_checked(off)
            if self._counts.get(slot, 0) == 0:
                raise ValueError(f"chunk at offset {off} is not pinned by worker {self._wid}")
            if (not self._zero_copy
                    or self._sizes[self._page_class[slot // self._spp]] % _SEND_UNIT):
                return False
            self._sent[slot] = 1
            return True
        finally:
            self._unlock()

    def _unpin_slot(self, slot: int) -> int:
        """Under the mutex."""
        c = self._counts[slot] - 1
        if c:
            self._counts[slot] = c
            return c
        del self._counts[slot]
        w = self._cword[slot] & ~self._bit
        self._cword[slot] = w
        if w == _DEFERRED and self._cstate[slot] == _C_USED:
            self._cword[slot] = 0
            self._release(self._off_of(slot), slot)
            self._h[K_DEFERRED_FREES] += 1
        return 0

    # -- fills -----------------------------------------------------------------------------

    def begin_fill(self, oid: bytes, idx: int, length: int) -> int | None:
        """Start filling block (oid, idx): the pinned chunk offset, -1 (no room) or None
        (already indexed: lookup_pin it)."""
        o = _oid(oid)
        self._check_worker()
        if not 0 < length <= self._page_size:
            raise ValueError(f"length must be in 1..page_size={self._page_size} (got {length})")
        if not 0 <= idx <= 0xFFFFFFFF:
            raise OverflowError(f"block index {idx} out of range")
        cls = self._class_of(length)
        h = self._h
        self._lock()
        try:
            if self._find(o, idx) >= 0:
                return None
            if (h[H_LIVE] + h[H_TOMBS] + 1) * 4 > self._cap * 3:
                if h[H_TOMBS]:
                    self._rebuild_index()
                if (h[H_LIVE] + 1) * 4 > self._cap * 3:
                    h[K_INDEX_FULL] += 1
                    return -1
            off = self._alloc(cls)
            if off < 0:
                h[K_ALLOC_FAILURES] += 1
                return -1
            slot = self._slot_of(off)
            self._cword[slot] |= self._bit
            self._counts[slot] = self._counts.get(slot, 0) + 1
            gen = h[H_NEXT_GEN]
            h[H_NEXT_GEN] = gen + 1
            self._insert(o, idx, length, off, gen, _fsw(0, FILLING, self._wid), 0, 0)
            h[K_FILLS_BEGUN] += 1
        finally:
            self._unlock()
        self._fills[off] = (o, idx, gen)
        return off

    def fill_gen(self, off: int) -> int:
        """The entry generation of this worker's open fill at ``off``."""
        f = self._fills.get(off)
        if f is None:
            raise ValueError(f"offset {off} is not a fill of worker {self._wid}")
        return f[2]

    def _own_fill(self, off: int) -> int:
        f = self._fills.get(off)
        if f is None:
            raise ValueError(f"offset {off} is not a fill of worker {self._wid}")
        i = self._find(f[0], f[1])
        if i < 0 or self._iq[i * 8] != f[2] or (self._iq[i * 8 + 5] >> 40) & 0xFF != self._wid:
            return -1  # gone, or no longer ours (recovered as dead, taken over)
        return i

    def advance_fill(self, off: int, filled: int) -> bool:
        """Publish that ``[0, filled)`` of this worker's fill at ``off`` has landed; wake the
        watchers. Returns False if the entry is gone."""
        self._check_worker()
        self._lock()
        try:
            i = self._own_fill(off)
            if i < 0:
                return False
            q = self._iq
            fsw = q[i * 8 + 5]
            length = q[i * 8 + 3] >> 32
            if not (fsw & 0xFFFFFFFF) <= filled <= length:
                raise ValueError(f"filled {filled} out of range ({fsw & 0xFFFFFFFF}..{length})")
            q[i * 8 + 5] = _fsw(filled, FILLING, self._wid)
            mask = q[i * 8 + 7]
            q[i * 8 + 7] = 0
        finally:
            self._unlock()
        self._wake(mask)
        return True

    def finish_fill(self, off: int, checksum: int) -> bool:
        """Make this worker's completely filled block READY with its xxh3-64 ``checksum``."""
        self._check_worker()
        self._lock()
        try:
            i = self._own_fill(off)
            if i < 0:
                self._fills.pop(off, None)
                return False
            q = self._iq
            length = q[i * 8 + 3] >> 32
            if q[i * 8 + 5] & 0xFFFFFFFF != length:
                raise ValueError(f"block at offset {off} is filled {q[i * 8 + 5] & 0xFFFFFFFF} "
                                 f"of {length} bytes")
            q[i * 8 + 6] = checksum
            q[i * 8 + 5] = _fsw(length, READY, self._wid)
            mask = q[i * 8 + 7]
            q[i * 8 + 7] = 0
            self._h[K_FILLS_FINISHED] += 1
        finally:
            self._unlock()
        del self._fills[off]
        self._wake(mask)
        return True

    def fail_fill(self, off: int) -> None:
        """Remove this worker's fill at ``off`` from the index (never a hit)."""
        self._check_worker()
        mask = 0
        self._lock()
        try:
            i = self._own_fill(off)
            if i >= 0:
                slot = self._slot_of(off)
                self._cword[slot] |= _DEFERRED
                mask = self._iq[i * 8 + 7]
                self._iq[i * 8 + 7] = 0
                self._remove_entry(i)
                self._h[K_FILLS_FAILED] += 1
        finally:
            self._unlock()
        self._fills.pop(off, None)
        self._wake(mask)

    def watch(self, oid: bytes, idx: int, gen: int) -> tuple[int, int]:
        """Ask for a wake-up at the next progress of entry (oid, idx, gen); its state now."""
        o = _oid(oid)
        self._check_worker()
        self._lock()
        try:
            i = self._find(o, idx)
            if i < 0 or self._iq[i * 8] != gen:
                return (GONE, 0)
            fsw = self._iq[i * 8 + 5]
            if (fsw >> 32) & 0xFF == FILLING:
                self._iq[i * 8 + 7] |= self._bit
            return (_state(fsw), fsw & 0xFFFFFFFF)
        finally:
            self._unlock()

    def take_fill(self, oid: bytes, idx: int, gen: int) -> int | None:
        """Take over the orphaned fill of entry (oid, idx, gen): the bytes already filled, or
        None if it is not (or no longer) an orphan. The caller must pin the chunk."""
        o = _oid(oid)
        self._check_worker()
        self._lock()
        try:
            i = self._find(o, idx)
            if i < 0 or self._iq[i * 8] != gen:
                return None
            fsw = self._iq[i * 8 + 5]
            if _state(fsw) != ORPHANED:
                return None
            off = self._entry(i)[4]
            slot = self._slot_of(off)
            if self._counts.get(slot, 0) == 0:
                raise ValueError(f"take_fill: worker {self._wid} does not pin the chunk at "
                                 f"offset {off} (pin it first: lookup_pin)")
            self._counts[slot] += 1
            self._iq[i * 8 + 5] = _fsw(fsw & 0xFFFFFFFF, FILLING, self._wid)
            self._h[K_FILLS_TAKEN_OVER] += 1
            self._fills[off] = (o, idx, gen)
            return fsw & 0xFFFFFFFF
        finally:
            self._unlock()

    def drain_wakeups(self) -> int:
        """Read every queued wake-up datagram; returns how many there were."""
        self._check_worker()
        assert self._sock is not None
        n = 0
        while True:
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return n
            n += 1

    def _wake(self, mask: int) -> None:
        if not mask:
            return
        assert self._send is not None
        for w in range(self._max_workers):
            if mask >> w & 1:
                try:
                    self._send.sendto(b"\1", self._names[w])
                except OSError:
                    pass  # nobody bound (the worker died) or a wake-up already queued

    def evict(self, oid: bytes, idx: int, gen: int = 0) -> bool | None:
        """Remove READY block (oid, idx) (of generation ``gen`` if given) only if no worker
        pins it: True; False if indexed but busy; None if not indexed."""
        o = _oid(oid)
        self._check_open()
        self._lock()
        try:
            i = self._find(o, idx)
            if i < 0 or (gen and self._iq[i * 8] != gen):
                return None
            _, _, _, _, off, fsw = self._entry(i)
            slot = self._slot_of(off)
            if (fsw >> 32) & 0xFF != READY or self._cword[slot] != 0:
                self._h[K_EVICT_BUSY] += 1
                return False
            self._cword[slot] = _FREEING
            self._remove_entry(i)
            self._release(off, slot)
            self._h[K_EVICTIONS] += 1
            return True
        finally:
            self._unlock()

    def remove(self, oid: bytes, idx: int) -> bool:
        """Remove block (oid, idx) whatever its state (purge); True if it was indexed. A
        pinned chunk is DEFERRED (freed at its last unpin); watchers see GONE."""
        o = _oid(oid)
        self._check_open()
        mask = 0
        self._lock()
        try:
            i = self._find(o, idx)
            if i >= 0:
                off = self._entry(i)[4]
                slot = self._slot_of(off)
                mask = self._iq[i * 8 + 7]
                self._iq[i * 8 + 7] = 0
                self._remove_entry(i)
                old = self._cword[slot]
                self._cword[slot] = old | _DEFERRED
                if not old & _WORKERS_MASK:
                    self._release(off, slot)  # nobody pinned it: free now
                self._h[K_REMOVED] += 1
        finally:
            self._unlock()
        self._wake(mask)
        return i >= 0

    def evict_sweep(self, max_probe: int, nbytes: int = 1) -> list[tuple[bytes, int]]:
        """Evict READY blocks no worker pins, walking the index from a persistent clock hand,
        until ``nbytes`` of chunks are freed or ``max_probe`` slots were looked at."""
        self._check_open()
        if max_probe < 0:
            raise ValueError(f"max_probe must be >= 0 (got {max_probe})")
        h, mask = self._h, self._cap - 1
        out: list[tuple[bytes, int]] = []
        freed = 0
        self._lock()
        try:
            hand = h[H_SWEEP_HAND] & mask
            for _ in range(min(max_probe, self._cap)):
                if freed >= nbytes:
                    break
                i = hand
                hand = (hand + 1) & mask
                g, oid, idx, _, off, fsw = self._entry(i)
                if g < 2:
                    continue
                st = _state(fsw)
                if st != READY and not (st == ORPHANED and self._iq[i * 8 + 7] == 0):
                    continue
                slot = self._slot_of(off)
                if slot < 0 or self._cword[slot] != 0:
                    continue  # pinned: skip it
                cs = self._sizes[self._page_class[off // self._page_size]]
                out.append((oid, idx))
                self._cword[slot] = _FREEING
                self._remove_entry(i)
                self._release(off, slot)
                freed += cs
                h[K_EVICTIONS] += 1
                h[K_SWEPT] += 1
            h[H_SWEEP_HAND] = hand
        finally:
            self._unlock()
        return out

    def info(self, oid: bytes, idx: int) -> dict[str, Any] | None:
        """The entry of (oid, idx) as a dict, or None (diagnostics and tests)."""
        o = _oid(oid)
        self._check_open()
        self._lock()
        try:
            i = self._find(o, idx)
            if i < 0:
                return None
            g, _, _, length, off, fsw = self._entry(i)
            w = self._cword[self._slot_of(off)]
            return {"offset": off, "length": length, "state": _state(fsw),
                    "filled": fsw & 0xFFFFFFFF, "owner": (fsw >> 40) & 0xFF, "gen": g,
                    "checksum": self._iq[i * 8 + 6],
                    "pinned_by": [k for k in range(self._max_workers) if w >> k & 1]}
        finally:
            self._unlock()

    # -- warm restart ----------------------------------------------------------------------

    def ready_entries(self) -> list[tuple[bytes, int, int, int, int]]:
        """Every READY entry as ``(oid, idx, offset, length, checksum)``."""
        self._check_open()
        out = []
        self._lock()
        try:
            for i in range(self._cap):
                g, oid, idx, length, off, fsw = self._entry(i)
                if g >= 2 and (fsw >> 32) & 0xFF == READY:
                    out.append((oid, idx, off, length, self._iq[i * 8 + 6]))
        finally:
            self._unlock()
        return out

    def adopt(self, entries: Any) -> list[tuple[bytes, int]]:
        """Index blocks READY at the offsets they occupy in a kept arena (warm restart);
        returns the refused ``(oid, idx)`` (see cext/shm.pyx)."""
        self._check_open()
        refused: list[tuple[bytes, int]] = []
        items = _adoptable(entries)  # malformed input raises here, before any change
        h = self._h
        self._lock()
        try:
            for o, idx, off, length, checksum in items:
                oid = o
                if (not 0 <= idx <= 0xFFFFFFFF or not 0 < length <= self._page_size
                        or not 0 <= off < self._arena_size):
                    refused.append((oid, idx))
                    continue
                cls = self._class_of(length)
                cs = self._sizes[cls]
                page = off // self._page_size
                rel = off - page * self._page_size
                j = rel // cs
                pc = self._page_class[page]
                if (rel % cs or j >= self._getc(cls, _CPP) or (pc != _NIL and pc != cls)
                        or self._find(o, idx) >= 0
                        or (h[H_LIVE] + h[H_TOMBS] + 1) * 4 > self._cap * 3):
                    refused.append((oid, idx))
                    continue
                slot = page * self._spp + j
                if self._cstate[slot] != _C_FREE or self._cword[slot]:
                    refused.append((oid, idx))
                    continue
                self._page_class[page] = cls
                self._cstate[slot] = _C_USED
                gen = h[H_NEXT_GEN]
                h[H_NEXT_GEN] = gen + 1
                self._insert(o, idx, length, off, gen, _fsw(length, READY, 0), checksum, 0)
                h[K_ADOPTED] += 1
            self._rebuild()
        finally:
            self._unlock()
        return refused

    # -- recovery --------------------------------------------------------------------------

    def recover_worker(self, worker_id: int) -> dict[str, int]:
        """Release everything worker ``worker_id`` held: call it after that worker died."""
        self._check_open()
        if type(worker_id) is not int or not 0 <= worker_id < self._max_workers:
            raise ValueError(f"worker_id must be in 0..{self._max_workers - 1}")
        if worker_id == self._wid:
            raise ValueError("a worker cannot recover itself (close() releases its pins)")
        return self._recover(worker_id)

    def _recover(self, w: int) -> dict[str, int]:
        bit = 1 << w
        mask = chunks = fills = orphaned = 0
        q, cword, cstate = self._iq, self._cword, self._cstate
        self._lock()
        try:
            for i in range(self._cap):
                if q[i * 8] < 2:
                    continue
                q[i * 8 + 7] &= ~bit
                fsw = q[i * 8 + 5]
                if (fsw >> 32) & 0xFF != FILLING:
                    continue
                owner = (fsw >> 40) & 0xFF
                if owner != w and owner != _ORPHAN:
                    continue
                slot = self._slot_of(self._entry(i)[4])
                if cword[slot] & _WORKERS_MASK & ~bit or q[i * 8 + 7]:
                    # a reader in another worker: keep what landed for it to take over
                    if owner == w:
                        q[i * 8 + 5] = _fsw(fsw & 0xFFFFFFFF, FILLING, _ORPHAN)
                        mask |= q[i * 8 + 7]
                        q[i * 8 + 7] = 0
                        orphaned += 1
                    continue
                cword[slot] |= _DEFERRED
                mask |= q[i * 8 + 7]
                q[i * 8 + 7] = 0
                self._remove_entry(i)
                fills += 1
            for slot in range(self._npages * self._spp):
                old = cword[slot]
                if not old:
                    continue
                if old & bit:
                    chunks += 1
                    cword[slot] = old & ~bit
                if old & ~bit == _DEFERRED and cstate[slot] == _C_USED:
                    cword[slot] = 0
                    self._release(self._off_of(slot), slot)
                    self._h[K_DEFERRED_FREES] += 1
            self._wk[w * 8] = 0
            self._wk[w * 8 + 2] += 1
            self._h[K_WORKER_RECOVERIES] += 1
            self._h[K_PINS_RECOVERED] += chunks
            self._h[K_FILLS_DROPPED] += fills
            self._h[K_FILLS_ORPHANED] += orphaned
        finally:
            self._unlock()
        self._wake(mask)
        return {"chunks": chunks, "fills": fills, "orphaned": orphaned}

    def _repair(self) -> None:
        """Rebuild index + allocator from the live entries and per-chunk USED bytes."""
        self._h[K_REPAIRS] += 1
        self._rebuild()

    def _rebuild(self) -> None:
        """Keep the entries that point at a USED chunk of the right class (once each), then
        derive the allocator from them, the page classes and the USED bytes (a SENT chunk
        freed here is punched first)."""
        h, q, cword, cstate = self._h, self._iq, self._cword, self._cstate
        ref: set[int] = set()
        for i in range(self._cap):
            g, _, _, length, off, _ = self._entry(i)
            if g < 2:
                continue
            slot = self._slot_of(off)
            if (slot < 0 or g >= h[H_NEXT_GEN] or not 0 < length <= self._page_size
                    or cstate[slot] != _C_USED or slot in ref
                    or self._class_of(length) != self._page_class[off // self._page_size]
                    or cword[slot] & _DEFERRED):
                q[i * 8] = _G_TOMB
                continue
            ref.add(slot)
        self._recount_index()
        self._rebuild_index()
        ref = {self._slot_of(self._entry(i)[4]) for i in range(self._cap) if q[i * 8] >= 2}
        for c in range(self._nclasses):
            self._setc(c, _CHEAD, _NIL)
            self._setc(c, _CBUMP, _NIL)
            self._setc(c, _CPAGES, 0)
            self._setc(c, _CUSED, 0)
        h[H_USED_BYTES] = 0
        nfree = 0
        for p in range(self._npages):
            c = self._page_class[p]
            used = 0
            per = self._getc(c, _CPP) if 0 <= c < self._nclasses else 0
            for j in range(self._spp):
                s = p * self._spp + j
                w = cword[s]
                if j < per and cstate[s] == _C_USED and (
                        s in ref or (w & _DEFERRED and w & _WORKERS_MASK)):
                    used += 1
                    if w & _FREEING:
                        cword[s] = w & ~_FREEING
                elif (j < per and cstate[s] == _C_USED and self._sent[s]
                        and not self._punch(p, p * self._page_size + j * self._sizes[c],
                                            self._sizes[c], s)):
                    used += 1  # its punch failed: it stays allocated
                else:
                    cstate[s] = _C_FREE
                    cword[s] = w & ~_FLAGS
            if used == 0:
                self._page_class[p] = _NIL
                self._page_used[p] = 0
                self._page_carved[p] = 0
                self._free_pages[nfree] = p
                nfree += 1
                continue
            cs = self._sizes[c]
            self._page_used[p] = used
            self._page_carved[p] = per
            self._setc(c, _CPAGES, self._getc(c, _CPAGES) + 1)
            self._setc(c, _CUSED, self._getc(c, _CUSED) + used)
            h[H_USED_BYTES] += used * cs
            for j in range(per - 1, -1, -1):
                if cstate[p * self._spp + j] == _C_FREE:
                    off = p * self._page_size + j * cs
                    head = self._getc(c, _CHEAD)
                    self._q[off >> 3] = _NIL
                    self._q[(off >> 3) + 1] = head
                    if head != _NIL:
                        self._q[head >> 3] = off
                    self._setc(c, _CHEAD, off)
        h[H_NFREE_PAGES] = nfree

    def _recount_index(self) -> None:
        live = tombs = 0
        for i in range(self._cap):
            g = self._iq[i * 8]
            if g >= 2:
                live += 1
            elif g == _G_TOMB:
                tombs += 1
        self._h[H_LIVE] = live
        self._h[H_TOMBS] = tombs

    def check(self) -> dict[str, int]:
        """Verify every invariant of the region (under the mutex); raise RuntimeError listing
        the violations. Meant for quiescent moments (tests, after recovery). Returns counts."""
        self._check_open()
        h, cword, cstate = self._h, self._cword, self._cstate
        bad: list[str] = []
        keys: set[tuple[bytes, int]] = set()
        refs: set[int] = set()
        filling = ready = deferred = pinned = live = tombs = used_bytes = 0
        self._lock()
        try:
            for i in range(self._cap):
                g, oid, idx, length, off, fsw = self._entry(i)
                if g == _G_TOMB:
                    tombs += 1
                if g < 2:
                    continue
                live += 1
                k = (oid, idx)
                if k in keys:
                    bad.append(f"duplicate key {k}")
                keys.add(k)
                slot = self._slot_of(off)
                if slot < 0 or cstate[slot] != _C_USED:
                    bad.append(f"entry {k} points at an unallocated offset {off}")
                    continue
                if self._class_of(length) != self._page_class[off // self._page_size]:
                    bad.append(f"entry {k} of {length} bytes in the wrong class")
                if slot in refs:
                    bad.append(f"offset {off} indexed twice")
                refs.add(slot)
                if cword[slot] & _FLAGS:
                    bad.append(f"entry {k} has chunk flags {cword[slot] >> 62}")
                state = (fsw >> 32) & 0xFF
                if state == READY:
                    ready += 1
                    if fsw & 0xFFFFFFFF != length:
                        bad.append(f"READY entry {k} filled {fsw & 0xFFFFFFFF}/{length}")
                elif state == FILLING:
                    filling += 1
                else:
                    bad.append(f"entry {k} in state {state}")
                if self._find(oid, idx) != i:
                    bad.append(f"entry {k} unreachable")
            if live != h[H_LIVE] or tombs != h[H_TOMBS]:
                bad.append(f"index counts {h[H_LIVE]}/{h[H_TOMBS]} != {live}/{tombs}")
            free_pages = {self._free_pages[j] for j in range(h[H_NFREE_PAGES])}
            if len(free_pages) != h[H_NFREE_PAGES]:
                bad.append("a page is on the free-page stack twice")
            listed = [0] * self._nclasses
            for p in range(self._npages):
                c = self._page_class[p]
                if c == _NIL:
                    if p not in free_pages:
                        bad.append(f"page {p} is neither assigned nor free")
                    for j in range(self._spp):
                        if cstate[p * self._spp + j] != _C_FREE:
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
                    w = cword[s]
                    if w & _WORKERS_MASK:
                        pinned += 1
                    if cstate[s] != _C_USED:
                        if w & _FLAGS:
                            bad.append(f"free slot {s} has flags")
                        if self._sent[s]:
                            bad.append(f"free slot {s} is marked SENT")
                        continue
                    used += 1
                    if j >= carved:
                        bad.append(f"slot {s} used beyond the carved part of page {p}")
                    if self._sent[s] and self._sizes[c] % _SEND_UNIT:
                        bad.append(f"slot {s} is marked SENT but its chunk of "
                                   f"{self._sizes[c]} bytes is not whole 4 KiB pages")
                    if s not in refs:
                        if w & _DEFERRED and w & _WORKERS_MASK:
                            deferred += 1
                        elif not (w & _FREEING and self._sent[s]):  # (else: a failed punch)
                            bad.append(f"chunk slot {s} is used but neither indexed nor "
                                       f"deferred-and-pinned (word {w:#x})")
                if used != self._page_used[p]:
                    bad.append(f"page {p} counts {self._page_used[p]} used, has {used}")
                listed[c] += carved - used
                used_bytes += used * self._sizes[c]
            nslots = self._npages * self._spp
            for c in range(self._nclasses):
                n = 0
                prev = _NIL
                off = self._getc(c, _CHEAD)
                while off != _NIL and n <= nslots:
                    slot = self._slot_of(off)
                    if (slot < 0 or cstate[slot] != _C_FREE
                            or self._page_class[off // self._page_size] != c):
                        bad.append(f"class {c} free list holds offset {off}")
                        break
                    if self._q[off >> 3] != prev:
                        bad.append(f"class {c} free list back link broken at {off}")
                    prev = off
                    off = self._q[(off >> 3) + 1]
                    n += 1
                if n != listed[c]:
                    bad.append(f"class {c} free list has {n} chunks, pages say {listed[c]}")
            if used_bytes != h[H_USED_BYTES]:
                bad.append(f"used_bytes {h[H_USED_BYTES]} != {used_bytes}")
        finally:
            self._unlock()
        if bad:
            raise RuntimeError("shared cache inconsistent: " + "; ".join(bad[:10]))
        return {"entries": live, "filling": filling, "ready": ready, "deferred": deferred,
                "pinned_chunks": pinned, "used_bytes": used_bytes}

    # -- stats -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Shared counters and occupancy (``pinned_chunks``: chunks any worker pins, a scan of
        the pin words), plus this handle's lookup counters."""
        self._check_open()
        h, wk = self._h, self._wk
        d: dict[str, Any] = {name: h[H_COUNTERS + i] for i, name in enumerate(COUNTERS)}
        d.update({
            "pinned_chunks": sum(1 for w in self._cword if w & _WORKERS_MASK),
            "arena_size": self._arena_size,
            "page_size": self._page_size,
            "pages_total": self._npages,
            "pages_free": h[H_NFREE_PAGES],
            "used_bytes": h[H_USED_BYTES],
            "entries": h[H_LIVE],
            "tombstones": h[H_TOMBS],
            "index_capacity": self._cap,
            "workers": {w: {"pid": wk[w * 8], "attaches": wk[w * 8 + 1],
                            "recoveries": wk[w * 8 + 2]}
                        for w in range(self._max_workers) if wk[w * 8 + 1]},
            "classes": [{"class": c, "chunk_size": self._sizes[c],
                         "pages": self._getc(c, _CPAGES), "chunks_used": self._getc(c, _CUSED)}
                        for c in range(self._nclasses)],
            "lookup_hits": self._hits,
            "lookup_misses": self._misses,
            "lookup_races": self._races,
        })
        return d

    # -- internals (callers hold the mutex) -------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError("shared cache handle is closed")

    def _check_worker(self) -> None:
        self._check_open()
        if self._bit == 0:
            raise ValueError("the supervisor's handle cannot pin or fill (attach a worker)")

    def _slot_checked(self, off: int) -> int:
        self._check_open()
        slot = self._slot_of(off)
        if slot < 0:
            raise ValueError(f"offset {off} is not the start of an allocated chunk")
        return slot

    def _slot_of(self, off: int) -> int:
        if not 0 <= off < self._arena_size:
            return -1
        page = off // self._page_size
        c = self._page_class[page]
        if not 0 <= c < self._nclasses:
            return -1
        rel = off - page * self._page_size
        cs = self._sizes[c]
        j = rel // cs
        if j * cs != rel or j >= self._getc(c, _CPP):
            return -1
        return page * self._spp + j

    def _off_of(self, slot: int) -> int:
        page = slot // self._spp
        return page * self._page_size + (slot - page * self._spp) * self._sizes[self._page_class[page]]

    def _class_of(self, nbytes: int) -> int:
        return bisect_left(self._sizes, nbytes)

    def _alloc(self, cls: int) -> int:
        """A chunk of class ``cls``, -1 if there is no memory. Memory from a holed page is
        re-reserved before anything changes: OSError if that fails, the allocator untouched."""
        q, h = self._q, self._h
        off = self._getc(cls, _CHEAD)
        cs = self._sizes[cls]
        if off != _NIL:
            page = off // self._page_size
            if self._page_holes[page]:
                self._reserve(off, cs)
            nxt = q[(off >> 3) + 1]
            self._setc(cls, _CHEAD, nxt)
            if nxt != _NIL:
                q[nxt >> 3] = _NIL
            j = (off - page * self._page_size) // cs
        else:
            page = self._getc(cls, _CBUMP)
            if page == _NIL:
                if h[H_NFREE_PAGES] == 0:
                    return -1
                page = self._free_pages[h[H_NFREE_PAGES] - 1]
                if self._page_holes[page]:
                    self._reserve(page * self._page_size, self._page_size)
                    self._page_holes[page] = 0
                h[H_NFREE_PAGES] -= 1
                self._page_carved[page] = 0
                self._page_used[page] = 0
                self._page_class[page] = cls
                self._setc(cls, _CPAGES, self._getc(cls, _CPAGES) + 1)
                self._setc(cls, _CBUMP, page)
            j = self._page_carved[page]
            off = page * self._page_size + j * cs
            if self._page_holes[page]:
                self._reserve(off, cs)
            self._page_carved[page] = j + 1
            if j + 1 == self._getc(cls, _CPP):
                self._setc(cls, _CBUMP, _NIL)
        self._cstate[page * self._spp + j] = _C_USED
        self._page_used[page] += 1
        self._setc(cls, _CUSED, self._getc(cls, _CUSED) + 1)
        h[H_USED_BYTES] += cs
        return off

    def _reserve(self, off: int, n: int) -> None:
        """Re-reserve ``[off, off+n)`` of the arena file (holes punched there): fallocate now
        rather than SIGBUS at the first write on a full filesystem."""
        err = _fallocate(self._fd, 0, off, n)
        if err:
            raise OSError(err, f"cannot re-reserve {n} bytes at arena offset {off} of "
                               f"{self._path}: {os.strerror(err)} (the arena file's filesystem "
                               f"is full?)")

    def _punch(self, page: int, off: int, size: int, slot: int) -> bool:
        """Punch the SENT chunk at ``off`` out of the arena file before it is freed (the
        kernel may still read its pages). False if that failed: the chunk must stay allocated
        (leaked, FREEING: never pinned again)."""
        self._page_holes[page] = 1  # first: a death after the punch leaves the page flagged
        if _fallocate(self._fd, _PUNCH_HOLE, off, size):
            self._h[K_PUNCH_FAILURES] += 1
            self._cword[slot] |= _FREEING
            return False
        self._sent[slot] = 0
        self._h[K_PUNCHED_CHUNKS] += 1
        return True

    def _release(self, off: int, slot: int) -> None:
        """Free a USED chunk nobody pins (a SENT one is punched first; if that fails it stays
        allocated)."""
        q = self._q
        page = off // self._page_size
        cls = self._page_class[page]
        if self._sent[slot] and not self._punch(page, off, self._sizes[cls], slot):
            return
        head = self._getc(cls, _CHEAD)
        q[off >> 3] = _NIL
        q[(off >> 3) + 1] = head
        if head != _NIL:
            q[head >> 3] = off
        self._setc(cls, _CHEAD, off)
        self._cstate[slot] = _C_FREE
        self._cword[slot] &= ~_FLAGS
        self._setc(cls, _CUSED, self._getc(cls, _CUSED) - 1)
        self._h[H_USED_BYTES] -= self._sizes[cls]
        self._page_used[page] -= 1
        if self._page_used[page] == 0:
            self._release_page(page, cls)

    def _release_page(self, page: int, cls: int) -> None:
        q = self._q
        cs = self._sizes[cls]
        off = page * self._page_size
        for _ in range(self._page_carved[page]):
            prev = q[off >> 3]
            nxt = q[(off >> 3) + 1]
            if prev == _NIL:
                self._setc(cls, _CHEAD, nxt)
            else:
                q[(prev >> 3) + 1] = nxt
            if nxt != _NIL:
                q[nxt >> 3] = prev
            off += cs
        if self._getc(cls, _CBUMP) == page:
            self._setc(cls, _CBUMP, _NIL)
        self._page_class[page] = _NIL
        self._page_carved[page] = 0
        self._setc(cls, _CPAGES, self._getc(cls, _CPAGES) - 1)
        self._free_pages[self._h[H_NFREE_PAGES]] = page
        self._h[H_NFREE_PAGES] += 1

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Detach: a worker first releases its pins and drops its unfinished fills. Unmaps
        both files (views still alive keep the arena mapped until released). Idempotent."""
        if self._open and self._bit and self._h[H_MAGIC] == MAGIC:
            try:
                self._recover(self._wid)
            finally:
                self._bit = 0
        self._open = False
        self._fd = -1
        self._mutex = None
        self._q = None  # type: ignore[assignment]
        for v in reversed(self._views):
            v.release()
        self._views = []
        if self._base is not None:
            self._base.release()
            self._base = None
        for m in (self._ctl_mmap, self._arena_mmap):
            if m is not None:
                try:
                    m.close()
                except BufferError:
                    pass  # views exported: unmapped when the last one goes
        self._ctl_mmap = self._arena_mmap = None
        for f in (self._sock, self._send, self._arena_file, self._ctl_file):
            if f is not None:
                f.close()
        self._sock = self._send = self._arena_file = self._ctl_file = None
        self._counts = {}
        self._fills = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        who = "supervisor" if self._wid < 0 else f"worker {self._wid}"
        return f"<SharedCache {self._path!r} {who}{'' if self._open else ' closed'}>"


_TOKEN = object()
