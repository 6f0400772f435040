"""The local-directory origin: keys never escape the root, validators, one-hop cold reads."""
from __future__ import annotations

import asyncio
import gc
import os

import pytest

from origin_clients import NotFound, ObjectInfo, ValidatorMismatch
from origin_clients.file import READ_CHUNK, FileOrigin


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def collect(it) -> bytes:
    return b"".join([c async for c in it])


def open_fds() -> set[str]:
    """What this process has open (sockets and pipes too), by target."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
        except FileNotFoundError:       # the listing's own descriptor
            pass
    return out


@pytest.fixture
def root(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "big.bin").write_bytes(os.urandom(3 * READ_CHUNK + 17))
    (tmp_path / "small.bin").write_bytes(b"hello")
    (tmp_path.parent / "secret.bin").write_bytes(b"outside")
    (tmp_path / "escape.bin").symlink_to(tmp_path.parent / "secret.bin")
    (tmp_path / "inside.bin").symlink_to(tmp_path / "small.bin")
    return tmp_path


def test_stat_read_is_stat_plus_read(root):
    o = FileOrigin(str(root))
    data = (root / "d" / "big.bin").read_bytes()

    async def main():
        info, it = await o.stat_read("d/big.bin", 100, 2 * READ_CHUNK + 5)
        assert info == await o.stat("d/big.bin")
        assert await collect(it) == data[100:2 * READ_CHUNK + 5]
        info, it = await o.stat_read("d/big.bin", 10, 1 << 40)          # clipped to the size
        assert await collect(it) == data[10:]
        info, it = await o.stat_read("small.bin", 0, 1 << 20)
        assert info.size == 5 and await collect(it) == b"hello"
        info, it = await o.stat_read("small.bin", 9, 20)                 # past the end: nothing
        assert await collect(it) == b""
        assert await collect(o.read("d/big.bin", await o.stat("d/big.bin"), 0, len(data))) == data
        await o.close()
    run(main())


def test_keys_never_escape_the_root(root):
    o = FileOrigin(str(root))

    async def main():
        for key in ("escape.bin", "../secret.bin", "nope.bin", "d", "small.bin/x", ""):
            with pytest.raises(NotFound):
                await o.stat_read(key, 0, 10)
            with pytest.raises(NotFound):
                await o.stat(key)
        info, it = await o.stat_read("inside.bin", 0, 10)               # a symlink within the root
        assert await collect(it) == b"hello"
        await o.close()
    run(main())


def test_a_changed_file_is_a_validator_mismatch(root):
    o = FileOrigin(str(root))

    async def main():
        info = await o.stat("small.bin")
        (root / "small.bin").write_bytes(b"HELLO!")
        with pytest.raises(ValidatorMismatch):
            await collect(o.read("small.bin", info, 0, 5))
        stale = ObjectInfo(size=info.size, etag=b'"old"', last_modified=0)
        with pytest.raises(ValidatorMismatch):
            await collect(o.read("small.bin", stale, 0, 5))
        await o.close()
    run(main())


def test_no_file_stays_open(root):
    o = FileOrigin(str(root))

    async def main():
        await collect((await o.stat_read("small.bin", 0, 5))[1])     # warm: pool threads, loop
        before = open_fds()
        for _ in range(20):
            _, it = await o.stat_read("d/big.bin", 0, 1 << 30)
            await it.aclose()                        # dropped before the first chunk
            _, it = await o.stat_read("d/big.bin", 0, 1 << 30)
            assert len(await it.__anext__()) == READ_CHUNK
            await it.aclose()                        # dropped midway
            _, it = await o.stat_read("d/big.bin", 0, 1 << 30)
            del it                                   # never iterated nor closed
        gc.collect()
        assert not {f for f in open_fds() - before if ".bin" in f}
        await o.close()
    run(main())


# -- where the I/O runs: in the loop unless a read would wait for a disk ------------------------

def read_all(o: FileOrigin, key: str) -> bytes:
    async def main():
        info, it = await o.stat_read(key, 0, 1 << 40)
        data = await collect(it)
        data += await collect(o.read(key, info, 0, 0))          # an empty read opens nothing
        assert await collect(o.read(key, info, 1, info.size)) == data[1:]
        await o.close()
        return data
    return run(main())


def test_a_memory_filesystem_is_read_in_the_loop(tmp_path):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    import shutil
    import tempfile
    d = tempfile.mkdtemp(dir="/dev/shm", prefix="edge-test-origin-")
    try:
        data = os.urandom(2 * READ_CHUNK + 3)
        with open(os.path.join(d, "f.bin"), "wb") as f:
            f.write(data)
        o = FileOrigin(d)
        assert read_all(o, "f.bin") == data
        assert o.inline_reads == 6 and o.pool_reads == 0        # 3 chunks, twice
    finally:
        shutil.rmtree(d)


def test_page_cached_bytes_are_read_in_the_loop_and_others_in_the_pool(tmp_path):
    if not hasattr(os, "RWF_NOWAIT") or not hasattr(os, "posix_fadvise"):
        pytest.skip("no RWF_NOWAIT")
    data = os.urandom(2 * READ_CHUNK)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    o = FileOrigin(str(tmp_path))
    if o._memory_dev is not None:
        pytest.skip("the test directory is on a memory filesystem")
    assert read_all(o, "f.bin") == data             # just written: in the page cache
    if not o.nowait:
        pytest.skip(f"this filesystem refuses RWF_NOWAIT ({tmp_path})")
    assert o.inline_reads == 4 and o.pool_reads == 0
    fd = os.open(path, os.O_RDONLY)                 # drop its pages: the reads must wait now
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    o = FileOrigin(str(tmp_path))
    assert read_all(o, "f.bin") == data
    assert o.pool_reads >= 1


def test_a_filesystem_refusing_nowait_is_read_in_the_pool(tmp_path, monkeypatch):
    import errno
    data = os.urandom(READ_CHUNK + 1)
    (tmp_path / "f.bin").write_bytes(data)
    o = FileOrigin(str(tmp_path))
    o._memory_dev = None                            # as on a disk
    calls = []

    def refuse(fd, buffers, offset, flags=0):
        calls.append(flags)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "preadv", refuse)
    assert read_all(o, "f.bin") == data
    assert calls == [os.RWF_NOWAIT] and o.nowait is False     # asked once, then never again
    assert o.inline_reads == 0 and o.pool_reads == 3
