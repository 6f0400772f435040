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
