"""HTTPOrigin against a real nginx serving a directory (strong ETags, ranges, If-Match)."""
from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable

import pytest

from origin_clients import make_origin
from origin_clients.base import NotFound, ObjectInfo, OriginError, ValidatorMismatch
from origin_clients.http import HTTPOrigin

from .servers import Nginx, nginx  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

MIB = 1 << 20
KEYS = ["plain.bin", "with space/a b.bin", "plus+sign.bin", "per%cent.bin", "unicode/é漢字.bin",
        "nested/a/b/c/d.bin"]


def blob(key: str, size: int) -> bytes:
    return random.Random(key).randbytes(size)


def put(server: Nginx, key: str, data: bytes, mtime: int | None = None) -> None:
    path = server.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def nginx_etag(server: Nginx, key: str) -> bytes:
    st = os.stat(server.root / key)
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'.encode()


def run(server: Nginx, test: Callable[[HTTPOrigin], Awaitable[None]], url: str = "", **kw) -> None:
    async def main() -> None:
        origin = make_origin("nginx", server.url + url, **kw)
        assert isinstance(origin, HTTPOrigin)
        try:
            await test(origin)
        finally:
            await origin.close()
    asyncio.run(main())


async def collect(origin: HTTPOrigin, key: str, info: ObjectInfo, start: int, end: int) -> bytes:
    return b"".join([c async for c in origin.read(key, info, start, end)])


@pytest.fixture(scope="module")
def objects(nginx: Nginx) -> dict[str, bytes]:  # noqa: F811
    out = {}
    for i, key in enumerate(KEYS):
        out[key] = blob(key, 2 * MIB + 333 * i + 1)
        put(nginx, key, out[key], mtime=1_600_000_000 + i)
    return out


@pytest.mark.parametrize("key", KEYS)
def test_stat_gives_nginx_etag_and_reads_are_byte_exact(nginx, objects, key):  # noqa: F811
    data = objects[key]

    async def t(origin):
        info = await origin.stat(key)
        assert info.size == len(data)
        assert info.etag == nginx_etag(nginx, key)               # nginx's "mtime-size"
        assert info.last_modified == int(os.stat(nginx.root / key).st_mtime)
        for start in range(0, len(data), MIB):
            end = min(start + MIB, len(data))
            assert await collect(origin, key, info, start, end) == data[start:end]
        assert await collect(origin, key, info, len(data) - 1, len(data)) == data[-1:]
        assert await collect(origin, key, info, 0, len(data)) == data
    run(nginx, t)


def test_make_origin_and_a_base_path(nginx, objects):  # noqa: F811
    async def t(origin):
        assert origin.base == nginx.url + "nested/a/"
        info = await origin.stat("b/c/d.bin")
        assert await collect(origin, "b/c/d.bin", info, 10, 20) == objects["nested/a/b/c/d.bin"][10:20]
    run(nginx, t, url="nested/a", read_timeout=5)


def test_missing_is_not_found(nginx):  # noqa: F811
    async def t(origin):
        with pytest.raises(NotFound, match="404"):
            await origin.stat("no such/file.bin")
    run(nginx, t)


def test_if_match_is_honoured(nginx, objects):  # noqa: F811
    async def t(origin):
        info = await origin.stat("plain.bin")
        stale = ObjectInfo(info.size, b'"5f5e1000-1"', info.last_modified)
        with pytest.raises(ValidatorMismatch, match="412"):
            await collect(origin, "plain.bin", stale, 0, MIB)
    run(nginx, t)


def test_file_replaced_between_stat_and_read(nginx):  # noqa: F811
    put(nginx, "changing.bin", blob("v1", 3 * MIB), mtime=1_600_000_000)

    async def t(origin):
        info = await origin.stat("changing.bin")
        put(nginx, "changing.bin", blob("v2", 3 * MIB), mtime=1_600_000_100)
        with pytest.raises(ValidatorMismatch):
            await collect(origin, "changing.bin", info, MIB, 2 * MIB)
        put(nginx, "changing.bin", blob("v3", MIB), mtime=1_600_000_000)   # same mtime, shorter
        with pytest.raises(ValidatorMismatch):
            await collect(origin, "changing.bin", info, 2 * MIB, 3 * MIB)
    run(nginx, t)


def test_if_unmodified_since_when_there_is_no_etag(nginx, objects):  # noqa: F811
    """A synthesized validator is conditioned with If-Unmodified-Since, which nginx honours."""
    key = "plain.bin"
    st = os.stat(nginx.root / key)

    async def t(origin):
        lm = int(st.st_mtime)
        synth = ObjectInfo(st.st_size, f'"lm-{lm:x}-{st.st_size:x}"'.encode(), lm)
        assert await collect(origin, key, synth, 0, 1000) == objects[key][:1000]
        older = ObjectInfo(st.st_size, f'"lm-{lm - 10:x}-{st.st_size:x}"'.encode(), lm - 10)
        with pytest.raises(ValidatorMismatch):
            await collect(origin, key, older, 0, 1000)
    run(nginx, t)


def test_concurrent_block_reads(nginx):  # noqa: F811
    data = blob("concurrent", 16 * MIB + 17)
    put(nginx, "concurrent.bin", data)

    async def t(origin):
        info = await origin.stat("concurrent.bin")
        ranges = [(s, min(s + MIB, len(data))) for s in range(0, len(data), MIB)]
        got = await asyncio.gather(*(collect(origin, "concurrent.bin", info, s, e) for s, e in ranges))
        assert b"".join(got) == data
    run(nginx, t, max_connections=4)


def test_stopped_nginx_is_a_retryable_origin_error(tmp_path):
    from .servers import start_nginx

    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 10)
    server = start_nginx(tmp_path, root)

    async def t(origin):
        info = await origin.stat("f")
        server.stop()
        with pytest.raises(OriginError) as e:
            await collect(origin, "f", info, 0, 10)
        assert type(e.value) is OriginError and e.value.retryable
    try:
        run(server, t, connect_timeout=1)
    finally:
        server.stop()
