"""Zero copy from the slab arena: which chunks may be sent with sendfile, and why reuse is safe.

A chunk handed to ``sendfile`` is still referenced by the kernel after the call returns (a
local receiver reads it later), so its release must punch it out of the arena file before the
arena writes anything new there. The loopback test below shows both halves: without the punch
a receiver gets the new bytes (the hazard is real), with it the old ones.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

KIB = 1024
PAGE = 64 * KIB


@pytest.fixture
def Arena(twin):
    return twin("arena").Arena


@pytest.fixture
def shm_path():
    path = f"/dev/shm/edge-test-{uuid.uuid4().hex}.arena"
    yield path
    if os.path.exists(path):
        os.unlink(path)


def _write(arena, off, data):
    arena.view(off, len(data))[:] = data


def test_every_arena_has_a_file_descriptor(Arena, shm_path):
    anon = Arena(4 * PAGE, PAGE)
    assert anon.fd >= 0
    assert os.readlink(f"/proc/self/fd/{anon.fd}").startswith("/memfd:edge-arena")
    assert os.fstat(anon.fd).st_size == 4 * PAGE
    anon.close()
    assert anon.fd == -1
    with Arena(4 * PAGE, PAGE, path=shm_path) as filed:
        assert os.path.samefile(f"/proc/self/fd/{filed.fd}", shm_path)


def test_sendable_needs_zero_copy_and_whole_pages(Arena):
    with Arena(4 * PAGE, PAGE) as a:
        whole = a.alloc(PAGE)
        small = a.alloc(1000)                   # a 1024-byte chunk: not whole 4 KiB pages
        assert a.chunk_of(small) % 4096
        assert not a.sendable(whole)            # zero copy is off by default
        a.zero_copy = True
        assert a.zero_copy and a.stats()["zero_copy"]
        assert a.sendable(whole)
        assert not a.sendable(small)
        a.free(small)
        with pytest.raises(ValueError, match="not allocated"):
            a.sendable(small)
        with pytest.raises(ValueError, match="not the start of a chunk"):
            a.sendable(whole + 4096)


def test_a_sent_chunk_is_punched_on_release_and_only_then(Arena):
    with Arena(4 * PAGE, PAGE) as a:
        a.zero_copy = True
        sent, kept = a.alloc(PAGE), a.alloc(PAGE)
        for off in (sent, kept):
            _write(a, off, b"\xab" * PAGE)
        assert a.sendable(sent)
        a.pin(sent)
        a.free(sent)                            # deferred while pinned: nothing punched yet
        assert bytes(a.view(sent, PAGE)) == b"\xab" * PAGE
        assert a.stats()["punched_chunks"] == 0
        a.unpin(sent)                           # the real release punches
        assert a.stats()["punched_chunks"] == 1
        a.free(kept)                            # never sent: released as before, bytes kept
        assert a.stats()["punched_chunks"] == 1
        again = a.alloc(PAGE)                   # page stack: the last page freed comes back
        assert again == kept
        assert bytes(a.view(kept, PAGE)[16:]) == b"\xab" * (PAGE - 16)
        again = a.alloc(PAGE)
        assert again == sent
        assert bytes(a.view(sent, PAGE)[16:]) == bytes(PAGE - 16)  # fresh pages (but links)


def test_a_punched_page_is_reserved_again_before_reuse(Arena, shm_path):
    with Arena(4 * PAGE, PAGE, path=shm_path) as a:
        full = os.fstat(a.fd).st_blocks
        a.zero_copy = True
        offs = [a.alloc(PAGE) for _ in range(4)]
        for off in offs:
            _write(a, off, b"x" * PAGE)
            assert a.sendable(off)
        a.free(offs[1])
        # the punch gives the chunk's blocks back but one 4 KiB page (the free-list links)
        assert os.fstat(a.fd).st_blocks == full - (PAGE - 4096) // 512
        assert a.alloc(PAGE) == offs[1]         # taken from the pool: re-reserved whole
        assert os.fstat(a.fd).st_blocks == full
        # a page with a hole carved by a smaller class: each chunk is reserved as it goes out
        a.free(offs[2])
        chunks = []
        while (off := a.alloc(8 * KIB)) != -1:
            chunks.append(off)
            if len(chunks) == 2:
                break
        assert chunks[0] == offs[2]
        assert os.fstat(a.fd).st_blocks == full


def test_small_class_chunks_of_whole_pages_punch_only_themselves(Arena):
    with Arena(4 * PAGE, PAGE) as a:
        a.zero_copy = True
        cls = next(c for c in range(a.nclasses) if a.chunk_size(c) % 4096 == 0)
        cs = a.chunk_size(cls)
        first, second = a.alloc(cs), a.alloc(cs)
        assert second == first + cs
        _write(a, first, b"1" * cs)
        _write(a, second, b"2" * cs)
        assert a.sendable(first)
        a.free(first)
        assert bytes(a.view(second, cs)) == b"2" * cs        # the neighbour is untouched
        assert a.alloc(cs) == first
        assert bytes(a.view(first, cs)[16:]) == bytes(cs - 16)


def test_a_failed_punch_takes_the_chunk_out_of_use(Arena, shm_path):
    with Arena(4 * PAGE, PAGE, path=shm_path) as a:
        a.zero_copy = True
        off = a.alloc(PAGE)
        assert a.sendable(off)
        ro = os.open(shm_path, os.O_RDONLY)
        saved = os.dup(a.fd)
        os.dup2(ro, a.fd)                       # fallocate on a read-only descriptor: EBADF
        try:
            a.free(off)
        finally:
            os.dup2(saved, a.fd)
            os.close(saved)
            os.close(ro)
        st = a.stats()
        assert st["punch_failures"] == 1 and st["punched_chunks"] == 0
        assert st["used_bytes"] == PAGE         # never reused
        with pytest.raises(ValueError, match="zero-copy punch failed"):
            a.free(off)
        assert sorted(a.alloc(PAGE) for _ in range(3)) == [PAGE, 2 * PAGE, 3 * PAGE]
        assert a.alloc(PAGE) == -1


def _pair():
    """A loopback TCP connection whose receiver does not read yet."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    tx = socket.socket()
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * PAGE)
    tx.connect(srv.getsockname())
    rx, _ = srv.accept()
    srv.close()
    return tx, rx


def _send_then_reuse(a, zero_copy):
    """sendfile a chunk of A's to a receiver that is not reading, release the chunk, write B's
    into the same memory, then return what the receiver gets."""
    a.zero_copy = zero_copy
    off = a.alloc(PAGE)
    _write(a, off, b"A" * PAGE)
    a.pin(off)
    a.sendable(off)     # marks the chunk when zero copy is on; sendfile works either way
    tx, rx = _pair()
    try:
        sent = 0
        while sent < PAGE:
            sent += os.sendfile(tx.fileno(), a.fd, off + sent, PAGE - sent)
        a.unpin(off)
        a.free(off)
        assert a.alloc(PAGE) == off
        _write(a, off, b"B" * PAGE)
        tx.close()
        got = bytearray()
        while chunk := rx.recv(PAGE):
            got += chunk
        return bytes(got)
    finally:
        tx.close()
        rx.close()


def test_in_flight_bytes_survive_reuse_of_a_punched_chunk(Arena):
    with Arena(4 * PAGE, PAGE) as a:
        assert _send_then_reuse(a, zero_copy=True) == b"A" * PAGE


def test_without_the_punch_in_flight_bytes_change(Arena):
    """The hazard the punch exists for: the kernel sends the arena's pages, not a copy."""
    with Arena(4 * PAGE, PAGE) as a:
        got = _send_then_reuse(a, zero_copy=False)
        assert got != b"A" * PAGE and b"B" in got
