"""S3Origin against a real SeaweedFS (weed mini, S3 auth on), and the edge in front of it."""
from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
from collections.abc import Awaitable, Callable

import pytest
from boto3.s3.transfer import TransferConfig

from origin_clients import make_origin
from origin_clients.base import NotFound, ObjectInfo, OriginError, OriginRefused, ValidatorMismatch
from origin_clients.s3 import S3Origin

from .conftest import need, start_edge
from .servers import ACCESS_KEY, BUCKET, SECRET_KEY, Seaweed, seaweed  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

MIB = 1 << 20
KEYS = ["plain.bin", "with space/a b.bin", "plus+sign.bin", "per%cent.bin", "unicode/é漢字.bin",
        "nested/a/b/c/d.bin", "x~y=z&w;v@u:t,s!r'q(p)*.bin"]


def blob(key: str, size: int) -> bytes:
    return random.Random(key).randbytes(size)


def origin_for(server: Seaweed, *, prefix: str = "", **kw) -> S3Origin:
    kw.setdefault("access_key", ACCESS_KEY)
    kw.setdefault("secret_key", SECRET_KEY)
    return S3Origin(server.origin_url(prefix=prefix), name="weed", read_timeout=10, **kw)


def run(origin: S3Origin, test: Callable[[S3Origin], Awaitable[None]]) -> None:
    async def main() -> None:
        try:
            await test(origin)
        finally:
            await origin.close()
    asyncio.run(main())


async def collect(origin: S3Origin, key: str, info: ObjectInfo, start: int, end: int) -> bytes:
    return b"".join([c async for c in origin.read(key, info, start, end)])


@pytest.fixture(scope="module")
def objects(seaweed: Seaweed) -> dict[str, bytes]:  # noqa: F811
    out = {}
    for i, key in enumerate(KEYS):
        data = blob(key, 2 * MIB + 1000 * i + 7)
        seaweed.put(key, data)
        out[key] = data
    return out


def test_server_starts_quickly(seaweed: Seaweed):  # noqa: F811
    assert seaweed.startup_seconds < 30, seaweed.startup_seconds


@pytest.mark.parametrize("key", KEYS)
def test_odd_keys_stat_and_ranged_reads_are_byte_exact(seaweed, objects, key):  # noqa: F811
    data = objects[key]
    etag = '"' + hashlib.md5(data).hexdigest() + '"'

    async def t(origin):
        info = await origin.stat(key)
        assert info.size == len(data) and info.etag == etag.encode() and info.last_modified > 0
        for start in range(0, len(data), MIB):             # the cache's block reads
            end = min(start + MIB, len(data))
            assert await collect(origin, key, info, start, end) == data[start:end]
        assert await collect(origin, key, info, 12345, 12346) == data[12345:12346]
        assert await collect(origin, key, info, 0, len(data)) == data
    run(origin_for(seaweed), t)


def test_prefix_and_make_origin(seaweed, objects):  # noqa: F811
    origin = make_origin("weed-prefixed", seaweed.origin_url(prefix="nested/a"),
                         access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    data = objects["nested/a/b/c/d.bin"]

    async def t(o):
        info = await o.stat("b/c/d.bin")
        assert await collect(o, "b/c/d.bin", info, 100, 200_000) == data[100:200_000]
    run(origin, t)  # type: ignore[arg-type]


def test_concurrent_block_reads(seaweed):  # noqa: F811
    data = blob("concurrent", 12 * MIB + 5)
    seaweed.put("concurrent.bin", data)

    async def t(origin):
        info = await origin.stat("concurrent.bin")
        ranges = [(s, min(s + MIB, len(data))) for s in range(0, len(data), MIB)]
        got = await asyncio.gather(*(collect(origin, "concurrent.bin", info, s, e) for s, e in ranges))
        assert b"".join(got) == data
    run(origin_for(seaweed, max_connections=4), t)


def test_multipart_object_etag(seaweed):  # noqa: F811
    data = blob("multipart", 11 * MIB + 3)
    seaweed.client().upload_fileobj(
        __import__("io").BytesIO(data), BUCKET, "multi/part.bin",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, use_threads=False))

    async def t(origin):
        info = await origin.stat("multi/part.bin")
        assert info.size == len(data) and info.etag.endswith(b'-3"'), info.etag
        assert await collect(origin, "multi/part.bin", info, 5 * MIB - 10, 6 * MIB) == \
            data[5 * MIB - 10:6 * MIB]
    run(origin_for(seaweed), t)


def test_empty_object(seaweed):  # noqa: F811
    seaweed.put("empty.bin", b"")

    async def t(origin):
        info = await origin.stat("empty.bin")
        assert info.size == 0
        assert await collect(origin, "empty.bin", info, 0, 0) == b""
    run(origin_for(seaweed), t)


def test_missing_key_is_not_found(seaweed):  # noqa: F811
    async def t(origin):
        with pytest.raises(NotFound, match="404"):
            await origin.stat("no/such key.bin")
    run(origin_for(seaweed), t)


def test_wrong_secret_is_refused_naming_the_origin_and_the_s3_code(seaweed, objects):  # noqa: F811
    async def t(origin):
        with pytest.raises(OriginRefused) as e:
            await origin.stat("plain.bin")
        assert "origin 'weed'" in str(e.value) and "SignatureDoesNotMatch" in str(e.value)
        info = ObjectInfo(len(objects["plain.bin"]), b'"x"', 0)
        with pytest.raises(OriginRefused, match="SignatureDoesNotMatch"):
            await collect(origin, "plain.bin", info, 0, 10)
    run(origin_for(seaweed, secret_key="not-the-secret"), t)


def test_unknown_access_key_is_refused(seaweed, objects):  # noqa: F811
    async def t(origin):
        with pytest.raises(OriginRefused, match="InvalidAccessKeyId"):
            await origin.stat("plain.bin")
    run(origin_for(seaweed, access_key="AKIDNOTKNOWNHERE0000"), t)


def test_unsigned_requests_are_refused(seaweed, objects, monkeypatch):  # noqa: F811
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)

    async def t(origin):
        assert not origin.signed
        with pytest.raises(OriginRefused, match="AccessDenied"):
            await origin.stat("plain.bin")
    run(origin_for(seaweed, access_key=None, secret_key=None), t)


def test_credentials_from_the_environment(seaweed, objects, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)

    async def t(origin):
        assert (await origin.stat("plain.bin")).size == len(objects["plain.bin"])
    run(origin_for(seaweed, access_key=None, secret_key=None), t)


def test_object_overwritten_between_stat_and_read(seaweed):  # noqa: F811
    seaweed.put("changing.bin", blob("v1", 3 * MIB))

    async def t(origin):
        info = await origin.stat("changing.bin")
        assert await collect(origin, "changing.bin", info, 0, MIB) == blob("v1", 3 * MIB)[:MIB]
        seaweed.put("changing.bin", blob("v2", 3 * MIB))
        with pytest.raises(ValidatorMismatch) as e:
            await collect(origin, "changing.bin", info, MIB, 2 * MIB)
        assert "PreconditionFailed" in str(e.value) or "412" in str(e.value)
        seaweed.put("changing.bin", blob("v3", 2 * MIB))     # shrunk too
        with pytest.raises(ValidatorMismatch):
            await collect(origin, "changing.bin", info, 2 * MIB, 3 * MIB)
        fresh = await origin.stat("changing.bin")
        assert fresh.etag != info.etag and fresh.size == 2 * MIB
    run(origin_for(seaweed), t)


def test_nothing_listening_is_a_retryable_origin_error(seaweed):  # noqa: F811
    from .servers import free_ports

    (port,) = free_ports(1)
    origin = S3Origin(f"s3://{BUCKET}?endpoint=http://127.0.0.1:{port}", name="down",
                      access_key=ACCESS_KEY, secret_key=SECRET_KEY, connect_timeout=1)

    async def t(o):
        with pytest.raises(OriginError) as e:
            await o.stat("plain.bin")
        assert type(e.value) is OriginError and e.value.retryable and "cannot connect" in str(e.value)
    run(origin, t)


def test_edge_serves_a_40mib_object_from_seaweedfs_to_aria2c(seaweed, tmp_path, monkeypatch):  # noqa: F811
    """End to end: aria2c -x8 -s8 through ``edge serve --origin s3://...`` (credentials from env)."""
    aria2c = need("aria2c")
    data = blob("forty", 40 * MIB + 12345)
    seaweed.put("big/forty mib.bin", data)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    edge = start_edge(tmp_path, seaweed.origin_url(), "--cache-size", "128MiB")  # type: ignore[arg-type]
    try:
        out = tmp_path / "dl"
        res = subprocess.run([aria2c, "-x8", "-s8", "-k1M", "--allow-overwrite=true",
                              "--auto-file-renaming=false", "-d", str(out), "-o", "forty.bin",
                              f"{edge.url}/big/forty%20mib.bin"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:] + edge.stderr()[-3000:]
        got = (out / "forty.bin").read_bytes()
        assert len(got) == len(data)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        code = edge.stop()
        log = edge.stderr()
    assert "Traceback" not in log, log[-4000:]
    assert code == 0, log[-4000:]
