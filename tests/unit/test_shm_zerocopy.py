"""Zero-copy from the shared arena (cext/shm.pyx and its twin cext/_shm_py.py): ``sendable``
marks a chunk handed to ``os.sendfile``; whoever really frees it punches it out of the arena
file first, so bytes still in flight in the kernel are never overwritten by the chunk's next
block; memory punched is re-reserved before it is handed out again.

The regions live on /dev/shm when there is one (tmpfs: what the server uses), each under a
name of its own, removed afterwards."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import socket
import time
import zlib

import pytest

import cext

from .test_shm import assert_same_layout

KIB = 1024
PAGE = 64 * KIB
LINKS = 16          # a free chunk's first 16 bytes hold its free-list links
READY = 2


@pytest.fixture
def shm(twin):
    return twin("shm")


@pytest.fixture
def path(tmp_path):
    if not os.path.isdir("/dev/shm"):
        yield str(tmp_path / "arena")
        return
    p = f"/dev/shm/edge-test-zc-{os.getpid()}-{tmp_path.name}"
    yield p
    for leftover in (p, p + ".ctl"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)


@pytest.fixture
def sup(shm, path):
    s = shm.SharedCache.create(path, 16 * PAGE, PAGE, max_workers=8, index_capacity=256)
    yield s
    s.close()


@pytest.fixture
def w(shm, path, sup):
    h = shm.SharedCache.attach(path, 0)
    h.zero_copy = True
    yield h
    h.close()


def oid_of(n: int) -> bytes:
    return hashlib.blake2b(b"%d" % n, digest_size=16).digest()


def pattern(n: int, length: int) -> bytes:
    seed = hashlib.sha256(b"zc-%d" % n).digest()
    return (seed * (length // 32 + 1))[:length]


def fill(h, oid, data, idx=0):
    """begin_fill + write + finish; returns the offset (still pinned once)."""
    off = h.begin_fill(oid, idx, len(data))
    assert isinstance(off, int) and off >= 0, off
    h.view(off, len(data))[:] = data
    assert h.advance_fill(off, len(data)) and h.finish_fill(off, zlib.crc32(data))
    return off


def on_file(h, off, n):
    """The arena file's bytes (a fresh read, whatever is mapped)."""
    return os.pread(h.fd, n, off)


def punched(h, off, n):
    """The chunk was punched: only the free-list links written since are not zeros."""
    return on_file(h, off, n)[LINKS:] == bytes(n - LINKS)


@contextlib.contextmanager
def broken_fd(h):
    """Make fallocate on the handle's arena fd fail (ESPIPE: a pipe takes its number for a
    while); the mapping and the file's lock stay as they are."""
    saved = os.dup(h.fd)
    r, wp = os.pipe()
    try:
        os.dup2(r, h.fd)
        yield
    finally:
        os.dup2(saved, h.fd)
        for fd in (saved, r, wp):
            os.close(fd)


# -- sendable ----------------------------------------------------------------------------------


def test_sendable_needs_zero_copy_and_whole_4k_pages(shm, path, sup):
    h = shm.SharedCache.attach(path, 1)
    assert h.zero_copy is False
    assert h.fd >= 0 and os.fstat(h.fd).st_size == 16 * PAGE
    assert os.path.samestat(os.fstat(h.fd), os.stat(path))
    whole = fill(h, oid_of(1), pattern(1, PAGE))
    odd = fill(h, oid_of(2), pattern(2, 5000))          # a 5056-byte chunk
    assert h.sendable(whole) is False                     # zero_copy off: never
    h.zero_copy = True
    assert h.sendable(whole) is True and h.sendable(whole) is True
    assert h.sendable(odd) is False                       # part of a 4 KiB page: never
    other = shm.SharedCache.attach(path, 2)               # the setting is per handle
    assert other.zero_copy is False
    assert other.lookup_pin(oid_of(1), 0)[0] == whole and other.sendable(whole) is False
    other.unpin(whole)
    with pytest.raises(ValueError, match=f"offset {whole + 64} is not the start"):
        h.sendable(whole + 64)
    with pytest.raises(ValueError, match="not pinned by worker 2"):
        other.sendable(odd)
    with pytest.raises(ValueError, match="supervisor"):
        sup.sendable(whole)
    st = sup.stats()
    assert (st["punched_chunks"], st["punch_failures"]) == (0, 0)
    sup.check()
    other.close()
    h.close()
    assert h.fd == -1 and h.zero_copy is True
    with pytest.raises(ValueError, match="closed"):
        h.sendable(whole)


# -- every free path punches a SENT chunk, and only a SENT one --------------------------------


def test_evicted_sent_chunk_is_punched_an_unsent_one_is_not(sup, w):
    a, b = pattern(1, PAGE), pattern(2, PAGE)
    off_a = fill(w, oid_of(1), a)
    off_b = fill(w, oid_of(2), b)
    assert w.sendable(off_a)
    w.unpin(off_a)
    w.unpin(off_b)
    assert sup.check()["ready"] == 2                        # a mark on a pinned chunk is fine
    assert sup.evict(oid_of(1), 0) and sup.evict(oid_of(2), 0)
    assert punched(sup, off_a, PAGE)
    assert on_file(sup, off_b, PAGE)[LINKS:] == b[LINKS:]  # not sent: not punched
    st = sup.stats()
    assert (st["punched_chunks"], st["punch_failures"], st["used_bytes"]) == (1, 0, 0)
    sup.check()


def test_deferred_free_at_last_unpin_punches(sup, w):
    data = pattern(3, PAGE)
    off = fill(w, oid_of(3), data)
    assert w.sendable(off)
    assert w.remove(oid_of(3), 0)                           # pinned: DEFERRED
    assert on_file(w, off, PAGE) == data                    # still in use: untouched
    assert sup.stats()["punched_chunks"] == 0
    assert w.unpin(off) == 0                                # the last pin frees it
    assert punched(w, off, PAGE)
    st = sup.stats()
    assert (st["punched_chunks"], st["deferred_frees"]) == (1, 1)
    sup.check()


def test_fail_fill_of_a_sent_chunk_punches(sup, w):
    data = pattern(4, PAGE)
    off = w.begin_fill(oid_of(4), 0, PAGE)
    w.view(off, PAGE // 2)[:] = data[:PAGE // 2]
    assert w.advance_fill(off, PAGE // 2)
    assert w.sendable(off)                                  # streamed while filling
    w.fail_fill(off)
    assert sup.stats()["punched_chunks"] == 0
    w.unpin(off)
    assert punched(w, off, PAGE)
    assert sup.stats()["punched_chunks"] == 1
    sup.check()


def test_evict_sweep_punches(sup, w):
    offs = [fill(w, oid_of(10 + k), pattern(10 + k, PAGE)) for k in range(3)]
    assert w.sendable(offs[1])
    for off in offs:
        w.unpin(off)
    assert len(sup.evict_sweep(256, 3 * PAGE)) == 3
    assert [punched(sup, off, PAGE) for off in offs] == [False, True, False]
    assert sup.stats()["punched_chunks"] == 1
    sup.check()


def _pin_send_and_die(mod, path, wfd):
    c = mod.SharedCache.attach(path, 1)
    c.zero_copy = True
    off = c.lookup_pin(oid_of(5), 0)[0]
    assert c.sendable(off)
    os.write(wfd, b"s")
    time.sleep(60)


def test_dead_workers_sent_chunk_is_punched_by_recover_worker(shm, path, sup, w):
    data = pattern(5, PAGE)
    off = fill(w, oid_of(5), data)
    w.unpin(off)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            _pin_send_and_die(shm, path, wfd)
        finally:
            os._exit(70)
    os.close(wfd)
    try:
        assert os.read(rfd, 1) == b"s"                      # pinned by worker 1, marked SENT
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(rfd)
    assert sup.remove(oid_of(5), 0)                         # the dead worker's pin: DEFERRED
    assert on_file(sup, off, PAGE) == data
    assert sup.recover_worker(1)["chunks"] == 1             # frees it: punched first
    assert punched(sup, off, PAGE)
    st = sup.stats()
    assert (st["punched_chunks"], st["deferred_frees"], st["used_bytes"]) == (1, 1, 0)
    sup.check()


# -- the point of it all: bytes in flight survive the chunk's reuse ----------------------------


def _sendfile_reuse_receive(sup, w, zero_copy):
    """Fill a chunk with A, sendfile it to a loopback peer that reads nothing yet, free it,
    take the same chunk for a block B; then read what the peer receives."""
    a, b = pattern(20, PAGE), pattern(21, PAGE)
    w.zero_copy = zero_copy
    off = fill(w, oid_of(20), a)
    assert w.sendable(off) is zero_copy
    lsock = socket.create_server(("127.0.0.1", 0))
    rx = socket.socket()
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the peer's window stays small
    rx.connect(lsock.getsockname())
    tx, _ = lsock.accept()
    lsock.close()
    try:
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)  # takes the whole chunk
        tx.setblocking(False)
        sent, deadline = 0, time.monotonic() + 10
        while sent < PAGE:
            try:
                sent += os.sendfile(tx.fileno(), w.fd, off + sent, PAGE - sent)
            except BlockingIOError:
                assert time.monotonic() < deadline, f"sendfile stuck at {sent} bytes"
                select.select([], [tx], [], 0.1)
        w.unpin(off)
        assert sup.evict(oid_of(20), 0)
        assert fill(w, oid_of(21), b) == off                # the same chunk, rewritten
        assert on_file(w, off, PAGE) == b
        w.unpin(off)
        tx.shutdown(socket.SHUT_WR)
        rx.settimeout(10)
        got = bytearray()
        while chunk := rx.recv(1 << 20):
            got += chunk
    finally:
        tx.close()
        rx.close()
    assert len(got) == PAGE
    sup.check()
    return bytes(got), a, b


def test_sendfile_in_flight_survives_reuse_of_the_chunk(sup, w):
    got, a, _ = _sendfile_reuse_receive(sup, w, True)
    assert got == a
    assert sup.stats()["punched_chunks"] == 1


def test_without_the_punch_reuse_corrupts_bytes_in_flight(sup, w):
    """The control: the same sendfile without ``sendable``'s mark, so no punch. The kernel
    still references the page-cache pages it was handed, and the peer receives the chunk's
    next block. Skipped where the kernel copied the bytes at sendfile time instead."""
    got, a, b = _sendfile_reuse_receive(sup, w, False)
    assert sup.stats()["punched_chunks"] == 0
    if got == a:
        pytest.skip("this kernel copied the bytes at sendfile time: no hazard to show")
    assert got == b


# -- memory punched is re-reserved before it is handed out -------------------------------------


def test_a_page_from_the_pool_is_re_reserved_whole(sup, w):
    full = os.fstat(w.fd).st_blocks
    off = fill(w, oid_of(30), pattern(30, PAGE))
    assert w.sendable(off)
    w.unpin(off)
    assert sup.evict(oid_of(30), 0)                         # the page goes back to the pool
    assert os.fstat(w.fd).st_blocks < full
    assert fill(w, oid_of(31), pattern(31, 3000)) == off    # the same page, another class
    assert os.fstat(w.fd).st_blocks == full
    w.unpin(off)
    sup.check()


def test_a_chunk_from_a_holed_page_in_use_is_re_reserved(shm, path):
    with shm.SharedCache.create(path, 4 * PAGE, PAGE, min_chunk=4096, growth=2.0,
                                max_workers=2, index_capacity=64) as sup, \
            shm.SharedCache.attach(path, 0) as h:
        h.zero_copy = True
        full = os.fstat(h.fd).st_blocks
        offs = [fill(h, oid_of(40 + k), pattern(40 + k, 16 * KIB)) for k in range(4)]
        assert len({off // PAGE for off in offs}) == 1      # one page of four 16 KiB chunks
        assert h.sendable(offs[2])
        for off in offs:
            h.unpin(off)
        assert sup.evict(oid_of(42), 0)                     # punched; its page stays in use
        assert punched(h, offs[2], 16 * KIB)
        assert os.fstat(h.fd).st_blocks < full
        assert fill(h, oid_of(50), pattern(50, 16 * KIB)) == offs[2]
        assert os.fstat(h.fd).st_blocks == full
        assert on_file(h, offs[2], 16 * KIB) == pattern(50, 16 * KIB)
        h.unpin(offs[2])
        sup.check()


def test_a_failed_re_reserve_raises_and_changes_nothing(sup, w):
    off = fill(w, oid_of(60), pattern(60, PAGE))
    assert w.sendable(off)
    w.unpin(off)
    assert sup.evict(oid_of(60), 0)
    before = sup.stats()
    with broken_fd(w):
        with pytest.raises(OSError) as info:
            w.begin_fill(oid_of(61), 0, PAGE)
    msg = str(info.value)
    assert f"cannot re-reserve {PAGE} bytes at arena offset {off}" in msg
    assert "the arena file's filesystem is full?" in msg
    after = sup.stats()
    for key in ("used_bytes", "pages_free", "entries", "fills_begun", "alloc_failures"):
        assert after[key] == before[key], key
    assert w.lookup_pin(oid_of(61), 0) is None
    sup.check()                                             # and the mutex was released
    assert fill(w, oid_of(61), pattern(61, PAGE)) == off    # the page was still free
    w.unpin(off)


def test_a_failed_punch_leaks_the_chunk_until_a_rebuild_punches_it(sup, w):
    data = pattern(70, PAGE)
    off = fill(w, oid_of(70), data)
    assert w.sendable(off)
    w.unpin(off)
    pages_free = sup.stats()["pages_free"]
    with broken_fd(sup):
        assert sup.evict(oid_of(70), 0)                     # unindexed all the same
    st = sup.stats()
    assert (st["punched_chunks"], st["punch_failures"]) == (0, 1)
    assert (st["used_bytes"], st["pages_free"]) == (PAGE, pages_free)   # never reused
    assert on_file(sup, off, PAGE) == data
    assert sup.check()["used_bytes"] == PAGE                # a leak, not an inconsistency
    assert w.lookup_pin(oid_of(70), 0) is None
    other = fill(w, oid_of(71), pattern(71, PAGE))
    assert other != off
    w.unpin(other)
    sup.adopt([])                                           # a rebuild retries the punch
    st = sup.stats()
    assert (st["punched_chunks"], st["used_bytes"]) == (1, PAGE)
    assert punched(sup, off, PAGE)
    sup.check()


def test_warm_restart_fills_the_holes_of_a_kept_arena(shm, path):
    sup = shm.SharedCache.create(path, 4 * PAGE, PAGE, max_workers=2, index_capacity=64)
    h = shm.SharedCache.attach(path, 0)
    h.zero_copy = True
    full = os.fstat(h.fd).st_blocks
    keep = fill(h, oid_of(80), pattern(80, PAGE))
    gone = fill(h, oid_of(81), pattern(81, PAGE))
    assert h.sendable(gone)
    h.unpin(keep)
    h.unpin(gone)
    assert sup.evict(oid_of(81), 0)
    saved = sup.ready_entries()
    h.close()
    sup.close()
    assert os.stat(path).st_blocks < full                   # the previous run's hole
    sup = shm.SharedCache.create(path, 4 * PAGE, PAGE, max_workers=2, index_capacity=64,
                                 keep_arena=True)
    try:
        assert os.stat(path).st_blocks == full              # filled at create
        assert sup.adopt(saved) == []
        h = shm.SharedCache.attach(path, 0)
        r = h.lookup_pin(oid_of(80), 0)
        assert r[2] == READY and bytes(h.view(r[0], PAGE)) == pattern(80, PAGE)
        h.unpin(r[0])
        h.close()
        sup.check()
    finally:
        sup.close()


@pytest.mark.skipif(cext.NO_EXTENSIONS, reason="needs both twins")
def test_twins_punch_to_one_layout(tmp_path):
    """The same sends and frees on both twins leave byte-identical files (but for the
    implementation word, the nonce and the mutex's owner bytes)."""
    files = []
    for pure in (False, True):
        mod = cext.load("shm", pure=pure)
        p = str(tmp_path / f"arena{int(pure)}")
        sup = mod.SharedCache.create(p, 8 * PAGE, PAGE, max_workers=4, index_capacity=64)
        h = mod.SharedCache.attach(p, 1)
        h.zero_copy = True
        offs = [fill(h, oid_of(k), pattern(k, n)) for k, n in enumerate([PAGE, 5000, PAGE, PAGE])]
        assert [h.sendable(o) for o in offs] == [True, False, True, True]
        for o in offs:
            h.unpin(o)
        assert sup.evict(oid_of(0), 0) and h.remove(oid_of(1), 0)
        h.lookup_pin(oid_of(2), 0)
        assert h.remove(oid_of(2), 0)                     # deferred: freed at close
        fill(h, oid_of(9), pattern(9, 3000))              # a page back from the pool
        h.close()
        sup.check()
        assert sup.stats()["punched_chunks"] == 2
        files.append((open(p + ".ctl", "rb").read(), open(p, "rb").read()))
        sup.close()
    assert_same_layout(files)
