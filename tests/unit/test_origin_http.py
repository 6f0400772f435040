"""HTTPOrigin against an in-process aiohttp.web origin that can be told to misbehave."""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from origin_clients import make_origin
from origin_clients.base import NotFound, ObjectInfo, OriginError, OriginRefused, ValidatorMismatch
from origin_clients.http import HTTPOrigin, is_synthetic, synthetic_etag

LM = 1_700_000_000
DATA = random.Random(7).randbytes(3 * 1024 * 1024 + 123)


@dataclass
class Obj:
    data: bytes
    etag: str | None = '"v1"'
    last_modified: int | None = LM


@dataclass
class Store:
    """The fake origin's objects, its log of requests and an optional override per request."""

    objects: dict[str, Obj] = field(default_factory=dict)
    requests: list[web.Request] = field(default_factory=list)
    override: Callable[[web.Request], Awaitable[web.StreamResponse | None]] | None = None


STORE = web.AppKey("store", Store)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    if not value.startswith("bytes="):
        return None
    a, _, b = value[6:].partition("-")
    start, end = int(a), min(int(b), size - 1)
    return (start, end) if start <= end < size else None


async def handler(request: web.Request) -> web.StreamResponse:
    store: Store = request.app[STORE]
    store.requests.append(request)
    if store.override is not None:
        resp = await store.override(request)
        if resp is not None:
            return resp
    key = request.path.removeprefix("/prefix/")
    obj = store.objects.get(key)
    if obj is None:
        return web.Response(status=404, text="no such thing")
    headers = {"Accept-Ranges": "bytes"}
    if obj.etag:
        headers["ETag"] = obj.etag
    if obj.last_modified is not None:
        headers["Last-Modified"] = email.utils.formatdate(obj.last_modified, usegmt=True)
    if "If-Match" in request.headers and request.headers["If-Match"] != obj.etag:
        return web.Response(status=412)
    ius = request.headers.get("If-Unmodified-Since")
    if ius and obj.last_modified is not None and \
            obj.last_modified > email.utils.parsedate_to_datetime(ius).timestamp():
        return web.Response(status=412)
    size = len(obj.data)
    rng = request.headers.get("Range")
    if rng:
        r = _parse_range(rng, size)
        if r is None:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        headers["Content-Range"] = f"bytes {r[0]}-{r[1]}/{size}"
        body = obj.data[r[0]:r[1] + 1]
        status = 206
    else:
        body, status = obj.data, 200
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, headers=headers, body=body)


@contextlib.asynccontextmanager
async def serve(store: Store):
    app = web.Application()
    app[STORE] = store
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/prefix"
    finally:
        await runner.cleanup()


def run(test: Callable[[Store, HTTPOrigin], Awaitable[None]], *, objects: dict[str, Obj] | None = None,
        read_timeout: float = 5.0, max_connections: int = 8) -> Store:
    """Run ``test(store, origin)`` against a fresh fake origin; returns the store to inspect."""
    store = Store(objects=dict(objects or {"blob": Obj(DATA)}))

    async def main() -> None:
        async with serve(store) as url:
            origin = HTTPOrigin(url, name="web", max_connections=max_connections,
                                connect_timeout=1.0, read_timeout=read_timeout)
            try:
                await test(store, origin)
            finally:
                await origin.close()

    asyncio.run(main())
    return store


async def collect(origin: HTTPOrigin, key: str, info: ObjectInfo, start: int, end: int) -> bytes:
    return b"".join([c async for c in origin.read(key, info, start, end)])


def rst(request: web.Request) -> None:
    """Reset the client's connection (RST, not FIN)."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# -- stat ---------------------------------------------------------------------------------------

def test_stat_strong_etag():
    async def t(store, origin):
        info = await origin.stat("blob")
        assert info == ObjectInfo(size=len(DATA), etag=b'"v1"', last_modified=LM)
        assert store.requests[-1].method == "HEAD"
        assert store.requests[-1].headers["Accept-Encoding"] == "identity"
    run(t)


@pytest.mark.parametrize("etag", [None, 'W/"weak"', "unquoted"])
def test_stat_without_strong_etag_synthesizes_a_validator(etag):
    async def t(store, origin):
        info = await origin.stat("blob")
        assert info.etag == synthetic_etag(LM, len(DATA)) == f'"lm-{LM:x}-{len(DATA):x}"'.encode()
        assert is_synthetic(info.etag)
        assert await collect(origin, "blob", info, 0, 1000) == DATA[:1000]
        sent = store.requests[-1].headers
        assert "If-Match" not in sent
        assert sent["If-Unmodified-Since"] == email.utils.formatdate(LM, usegmt=True)
        store.objects["blob"] = Obj(DATA, etag=etag, last_modified=LM + 5)   # rewritten
        with pytest.raises(ValidatorMismatch):
            await collect(origin, "blob", info, 0, 1000)
    run(t, objects={"blob": Obj(DATA, etag=etag)})


def test_stat_without_any_validator_is_refused():
    async def t(store, origin):
        with pytest.raises(OriginError, match="neither a strong ETag nor Last-Modified") as e:
            await origin.stat("blob")
        assert not e.value.retryable
    run(t, objects={"blob": Obj(DATA, etag=None, last_modified=None)})


@pytest.mark.parametrize("status,kind,retryable", [
    (404, NotFound, False), (410, NotFound, False), (401, OriginRefused, True),
    (403, OriginRefused, True), (500, OriginError, True), (503, OriginError, True),
    (429, OriginError, True), (400, OriginError, False), (301, OriginError, False),
])
def test_stat_status_mapping(status, kind, retryable):
    async def override(request):
        return web.Response(status=status, headers={"Location": "http://elsewhere/"})

    async def t(store, origin):
        store.override = override
        with pytest.raises(OriginError) as e:
            await origin.stat("blob")
        assert type(e.value) is kind
        assert e.value.retryable is retryable
        assert e.value.origin == "web" and str(status) in str(e.value) and "'blob'" in str(e.value)
    run(t)


def test_stat_missing_key():
    async def t(store, origin):
        with pytest.raises(NotFound):
            await origin.stat("nope")
    run(t)


# -- read: happy paths ----------------------------------------------------------------------------

def test_read_blocks_and_whole_object():
    async def t(store, origin):
        info = await origin.stat("blob")
        mib = 1 << 20
        for start in range(0, len(DATA), mib):
            end = min(start + mib, len(DATA))
            assert await collect(origin, "blob", info, start, end) == DATA[start:end]
            sent = store.requests[-1].headers
            assert sent["Range"] == f"bytes={start}-{end - 1}"
            assert sent["If-Match"] == '"v1"'
        assert await collect(origin, "blob", info, 5, 6) == DATA[5:6]
        assert await collect(origin, "blob", info, 0, len(DATA)) == DATA
        assert await collect(origin, "blob", info, 7, 7) == b""
        with pytest.raises(ValueError):
            await collect(origin, "blob", info, 0, len(DATA) + 1)
    run(t)


def test_200_accepted_for_the_whole_object_only():
    async def full(request):
        obj = request.app[STORE].objects["blob"]
        return web.Response(body=obj.data, headers={"ETag": '"v1"'})

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = full
        assert await collect(origin, "blob", info, 0, len(DATA)) == DATA
        with pytest.raises(OriginError, match="ignored the Range"):
            await collect(origin, "blob", info, 0, 1000)
        with pytest.raises(OriginError, match="ignored the Range"):
            await collect(origin, "blob", info, 10, len(DATA))
    run(t)


def test_concurrent_block_reads_share_a_small_pool():
    async def t(store, origin):
        info = await origin.stat("blob")
        step = 100_000
        ranges = [(s, min(s + step, len(DATA))) for s in range(0, len(DATA), step)]
        got = await asyncio.gather(*(collect(origin, "blob", info, s, e) for s, e in ranges))
        assert b"".join(got) == DATA
    run(t, max_connections=2)


def test_body_is_streamed_not_buffered():
    async def slow(request):
        resp = web.StreamResponse(status=206, headers={
            "Content-Range": f"bytes 0-{2 * 65536 - 1}/{len(DATA)}", "ETag": '"v1"',
            "Content-Length": str(2 * 65536)})
        await resp.prepare(request)
        await resp.write(DATA[:65536])
        await asyncio.sleep(0.5)
        await resp.write(DATA[65536:2 * 65536])
        return resp

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = slow
        t0 = time.monotonic()
        it = origin.read("blob", info, 0, 2 * 65536)
        first = await it.__anext__()
        assert time.monotonic() - t0 < 0.4 and first == DATA[:len(first)]
        rest = b"".join([c async for c in it])
        assert first + rest == DATA[:2 * 65536]
    run(t)


def test_content_encoding_is_not_decoded():
    packed = gzip.compress(b"hello " * 1000)

    async def t(store, origin):
        async def gz(request):
            if request.method == "HEAD":
                return None
            return web.Response(status=206, body=packed, headers={
                "Content-Encoding": "gzip", "ETag": '"v1"',
                "Content-Range": f"bytes 0-{len(packed) - 1}/{len(packed)}"})
        info = await origin.stat("gz")
        store.override = gz
        assert await collect(origin, "gz", info, 0, len(packed)) == packed
        assert store.requests[-1].headers["Accept-Encoding"] == "identity"
    run(t, objects={"gz": Obj(packed)})


@pytest.mark.parametrize("key,raw", [
    ("a b/c+d%e/é.bin", "/prefix/a%20b/c%2Bd%25e/%C3%A9.bin"),
    ("dir/sub/file~1_x-y.z", "/prefix/dir/sub/file~1_x-y.z"),
    ("q?x#y&z=;", "/prefix/q%3Fx%23y%26z%3D%3B"),
])
def test_odd_keys_are_encoded_once_per_segment(key, raw):
    async def t(store, origin):
        info = await origin.stat(key)
        assert store.requests[-1].raw_path == raw
        assert await collect(origin, key, info, 1, 11) == DATA[1:11]
        assert store.requests[-1].raw_path == raw
    run(t, objects={key: Obj(DATA)})


def test_make_origin_builds_an_http_origin():
    o = make_origin("h", "http://127.0.0.1:1/some/prefix", max_connections=3, read_timeout=2)
    assert isinstance(o, HTTPOrigin) and o.name == "h" and o.base == "http://127.0.0.1:1/some/prefix/"
    assert o.max_connections == 3 and o.read_timeout == 2
    assert o.url("x y") == "http://127.0.0.1:1/some/prefix/x%20y"


# -- read: the origin changed ---------------------------------------------------------------------

def test_if_match_412_is_a_validator_mismatch():
    async def t(store, origin):
        info = await origin.stat("blob")
        store.objects["blob"] = Obj(DATA[::-1], etag='"v2"')
        with pytest.raises(ValidatorMismatch, match="412"):
            await collect(origin, "blob", info, 0, 100)
    run(t)


def test_changed_etag_in_response_is_a_mismatch_even_if_if_match_is_ignored():
    async def ignores_if_match(request):
        return web.Response(status=206, body=DATA[:100], headers={
            "ETag": '"v2"', "Content-Range": f"bytes 0-99/{len(DATA)}"})

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = ignores_if_match
        with pytest.raises(ValidatorMismatch, match='"v2"'):
            await collect(origin, "blob", info, 0, 100)
    run(t)


def test_size_change_in_content_range_is_a_mismatch():
    async def grown(request):
        return web.Response(status=206, body=DATA[:100], headers={
            "Content-Range": f"bytes 0-99/{len(DATA) + 1}"})

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = grown
        with pytest.raises(ValidatorMismatch, match="now"):
            await collect(origin, "blob", info, 0, 100)
    run(t)


def test_416_is_a_mismatch():
    async def t(store, origin):
        info = await origin.stat("blob")
        store.objects["blob"] = Obj(DATA[:10])
        with pytest.raises(ValidatorMismatch, match="416"):
            await collect(origin, "blob", info, 1000, 2000)
    run(t)


# -- read: broken responses -----------------------------------------------------------------------

@pytest.mark.parametrize("content_range", [
    "bytes 1-100/{size}", "bytes 0-98/{size}", "bytes 0-99/*", "bytes */{size}", None, "bytes=0-99/{size}",
])
def test_wrong_content_range_is_refused(content_range):
    async def wrong(request):
        headers = {"ETag": '"v1"'}
        if content_range:
            headers["Content-Range"] = content_range.format(size=len(DATA))
        return web.Response(status=206, body=DATA[:100], headers=headers)

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = wrong
        with pytest.raises(OriginError) as e:
            await collect(origin, "blob", info, 0, 100)
        assert type(e.value) is OriginError and "Content-Range" in str(e.value)
    run(t)


def test_short_body_is_an_error():
    async def short(request):
        resp = web.StreamResponse(status=206, headers={
            "Content-Range": f"bytes 0-9999/{len(DATA)}", "ETag": '"v1"', "Content-Length": "10000"})
        await resp.prepare(request)
        await resp.write(DATA[:4000])
        await asyncio.sleep(0.05)
        request.transport.close()   # type: ignore[union-attr]
        return resp

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = short
        got = bytearray()
        with pytest.raises(OriginError) as e:
            async for chunk in origin.read("blob", info, 0, 10000):
                got += chunk
        assert type(e.value) is OriginError and e.value.retryable
        assert bytes(got) == DATA[:len(got)] and len(got) < 10000
        assert e.value.__class__.__module__ == "origin_clients.base"
    run(t)


def test_short_chunked_body_is_an_error():
    async def short(request):
        resp = web.StreamResponse(status=206, headers={
            "Content-Range": f"bytes 0-9999/{len(DATA)}", "ETag": '"v1"'})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(DATA[:4000])
        await resp.write_eof()
        return resp

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = short
        with pytest.raises(OriginError, match="short body, 4000 of 10000"):
            await collect(origin, "blob", info, 0, 10000)
    run(t)


def test_over_long_body_is_an_error_and_no_extra_byte_is_yielded():
    async def long(request):
        resp = web.StreamResponse(status=206, headers={
            "Content-Range": f"bytes 0-9999/{len(DATA)}", "ETag": '"v1"'})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(DATA[:6000])
        await resp.write(DATA[6000:12000])
        await resp.write_eof()
        return resp

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = long
        got = bytearray()
        with pytest.raises(OriginError, match="over-long"):
            async for chunk in origin.read("blob", info, 0, 10000):
                got += chunk
        assert len(got) <= 10000
    run(t)


def test_wrong_content_length_is_an_error():
    async def long(request):
        return web.Response(status=206, body=DATA[:200], headers={
            "Content-Range": f"bytes 0-99/{len(DATA)}", "ETag": '"v1"'})

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = long
        with pytest.raises(OriginError, match="Content-Length '200', expected 100"):
            await collect(origin, "blob", info, 0, 100)
    run(t)


def test_connection_reset_mid_body_is_an_origin_error():
    async def reset(request):
        resp = web.StreamResponse(status=206, headers={
            "Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}", "ETag": '"v1"',
            "Content-Length": str(len(DATA))})
        await resp.prepare(request)
        await resp.write(DATA[:300_000])
        await asyncio.sleep(0.05)
        rst(request)
        return resp

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = reset
        with pytest.raises(OriginError) as e:
            await collect(origin, "blob", info, 0, len(DATA))
        assert type(e.value) is OriginError and e.value.retryable
        assert "GET 'blob'" in str(e.value)
    run(t)


def test_reset_before_the_response_is_an_origin_error():
    async def reset(request):
        rst(request)
        await asyncio.sleep(0.1)
        return web.Response()

    async def t(store, origin):
        store.override = reset
        with pytest.raises(OriginError) as e:
            await origin.stat("blob")
        assert type(e.value) is OriginError and e.value.retryable
    run(t)


def test_slow_origin_times_out_quickly():
    async def stall(request):
        resp = web.StreamResponse(status=206, headers={
            "Content-Range": f"bytes 0-9999/{len(DATA)}", "ETag": '"v1"', "Content-Length": "10000"})
        await resp.prepare(request)
        await resp.write(DATA[:1000])
        await asyncio.sleep(10)
        return resp

    async def t(store, origin):
        info = await origin.stat("blob")
        store.override = stall
        t0 = time.monotonic()
        with pytest.raises(OriginError, match="nothing received for 0.3s") as e:
            await collect(origin, "blob", info, 0, 10000)
        assert time.monotonic() - t0 < 2 and e.value.retryable

        async def no_answer(request):
            await asyncio.sleep(10)
        store.override = no_answer
        t0 = time.monotonic()
        with pytest.raises(OriginError, match="nothing received"):
            await origin.stat("blob")
        assert time.monotonic() - t0 < 2
    run(t, read_timeout=0.3)


def test_connection_refused_is_an_origin_error():
    async def main():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        origin = HTTPOrigin(f"http://127.0.0.1:{port}/", name="gone", connect_timeout=1)
        try:
            with pytest.raises(OriginError, match="cannot connect") as e:
                await origin.stat("x")
            assert e.value.retryable and e.value.origin == "gone"
        finally:
            await origin.close()
    asyncio.run(main())


def test_consumer_stopping_early_releases_the_connection():
    async def t(store, origin):
        info = await origin.stat("blob")
        for _ in range(3):      # one connection in the pool: a leak would hang the next read
            it = origin.read("blob", info, 0, len(DATA))
            await it.__anext__()
            await it.aclose()   # type: ignore[attr-defined]
        got = await asyncio.wait_for(collect(origin, "blob", info, 0, 1000), 3)
        assert got == DATA[:1000]
        connector = origin._session.connector   # type: ignore[union-attr]
        assert len(connector._acquired) == 0    # type: ignore[union-attr]
    run(t, max_connections=1)


def test_errors_release_the_connection():
    async def t(store, origin):
        info = await origin.stat("blob")
        for _ in range(3):
            with pytest.raises(NotFound):
                await origin.stat("nope")
        info2 = ObjectInfo(size=info.size, etag=b'"other"', last_modified=LM)
        for _ in range(3):
            with pytest.raises(ValidatorMismatch):
                await collect(origin, "blob", info2, 0, 10)
        assert await asyncio.wait_for(collect(origin, "blob", info, 0, 10), 3) == DATA[:10]
    run(t, max_connections=1)


# -- stat_read: metadata and the first block in one request ----------------------------------

def test_stat_read_one_request_for_info_and_bytes():
    async def test(store: Store, origin: HTTPOrigin) -> None:
        info, it = await origin.stat_read("blob", 1 << 20, 2 << 20)
        assert info.size == len(DATA) and info.etag == b'"v1"' and info.last_modified == LM
        assert b"".join([c async for c in it]) == DATA[1 << 20:2 << 20]
        assert [r.method for r in store.requests] == ["GET"]
        assert "If-Match" not in store.requests[0].headers
        # the last, short block: clamped to the object
        info, it = await origin.stat_read("blob", 3 << 20, 4 << 20)
        assert b"".join([c async for c in it]) == DATA[3 << 20:]
    run(test)


def test_stat_read_small_object_and_past_the_end():
    async def test(store: Store, origin: HTTPOrigin) -> None:
        info, it = await origin.stat_read("small", 0, 1 << 20)
        assert info.size == 10 and b"".join([c async for c in it]) == b"0123456789"
        store.requests.clear()
        info, it = await origin.stat_read("small", 1 << 20, 2 << 20)   # 416: falls back to HEAD
        assert info.size == 10 and [c async for c in it] == []
        assert [r.method for r in store.requests] == ["GET", "HEAD"]
    run(test, objects={"small": Obj(b"0123456789")})


def test_stat_read_origin_ignoring_range_reads_only_what_it_needs():
    async def ignore_range(request: web.Request) -> web.StreamResponse | None:
        return web.Response(status=200, body=DATA, headers={"ETag": '"v1"'})

    async def test(store: Store, origin: HTTPOrigin) -> None:
        store.override = ignore_range
        info, it = await origin.stat_read("blob", 0, 1 << 20)
        assert info.size == len(DATA)
        assert b"".join([c async for c in it]) == DATA[:1 << 20]
    run(test)


def test_stat_read_missing_and_refused():
    async def test(store: Store, origin: HTTPOrigin) -> None:
        with pytest.raises(NotFound):
            await origin.stat_read("nope", 0, 100)
        store.override = lambda r: _respond(403)
        with pytest.raises(OriginRefused):
            await origin.stat_read("blob", 0, 100)
    run(test)


async def _respond(status: int) -> web.StreamResponse:
    return web.Response(status=status)
