"""Micro-benchmarks of the request path of a cache hit, piece by piece and whole.

    python -m pytest bench/bench_http.py --benchmark-only -p no:cacheprovider \
        --benchmark-columns=mean,stddev,rounds

Each timed call runs ``LOOPS`` iterations; ``extra_info["ns_per_op"]`` is the mean time of one
iteration in nanoseconds. The pieces: ``RequestParser.feed`` of the head wrk sends, ``plan()``,
``frame_head()``, ``Storage.meta_cached``; the whole: ``HttpProtocol.data_received`` of that head
against a warmed 1 KiB (and 64 KiB) object, with a transport that only counts bytes. That last
number is the Python work per hit the server adds on top of the event loop and the syscalls
(``bench/compare.py`` measures those together with nginx's).
"""
from __future__ import annotations

import asyncio
import os

import pytest

import cext
from edge import config as edge_config
from edge.cache import Storage
from edge.http import Request, RequestParser, format_http_date, frame_head, plan
from edge.server.app import App
from edge.server.protocol import HttpProtocol
from origin_clients.file import FileOrigin

LOOPS = 1000
WRK_GET = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CURL_GET = (b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\n"
            b"Accept: */*\r\n\r\n")
RANGE_GET = (b"GET /64k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
             b"Range: bytes=1000-1999\r\n\r\n")
MULTI_GET = (b"GET /64k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
             b"Range: bytes=1000-1999,30000-30999\r\n\r\n")


def _report(benchmark):
    benchmark.extra_info["ns_per_op"] = round(benchmark.stats.stats.mean / LOOPS * 1e9, 1)


@pytest.mark.parametrize("head", [WRK_GET, CURL_GET, RANGE_GET], ids=["wrk", "curl", "range"])
def test_parser_feed(benchmark, head):
    parser = RequestParser()

    def run():
        feed = parser.feed
        for _ in range(LOOPS):
            feed(head)

    benchmark(run)
    _report(benchmark)
    (req,) = parser.feed(head)
    assert isinstance(req, Request) and req.key


@pytest.mark.parametrize("head", [WRK_GET, RANGE_GET], ids=["200", "206"])
def test_plan(benchmark, head):
    (req,) = RequestParser().feed(head)

    def run():
        for _ in range(LOOPS):
            plan(req, 65536, b'"abc-10000"', 1_700_000_000, boundary=b"b")

    benchmark(run)
    _report(benchmark)


def test_frame_head(benchmark):
    (req,) = RequestParser().feed(WRK_GET)
    p = plan(req, 1024, b'"abc-400"', 1_700_000_000, boundary=b"b")
    date = format_http_date(1_700_000_000)

    def run():
        for _ in range(LOOPS):
            frame_head(p.status, p.headers, date=date, cache_status=b"edge; hit",
                       keep_alive=True, http_minor=1)

    benchmark(run)
    _report(benchmark)


class CountingTransport:
    """What HttpProtocol needs of a transport; the kernel takes everything at once."""

    def __init__(self) -> None:
        self.nbytes = 0
        self.closed = False

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data):
        self.nbytes += len(data)

    def writelines(self, bufs):
        for b in bufs:
            self.nbytes += len(b)

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    abort = close

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A warmed App (compiled extensions unless EDGE_NO_EXTENSIONS) serving 1k.bin and 64k.bin."""
    root = tmp_path_factory.mktemp("origin")
    (root / "1k.bin").write_bytes(os.urandom(1024))
    (root / "64k.bin").write_bytes(os.urandom(65536))
    config = edge_config.build({}, overrides={"origins": [str(root)]})
    loop = asyncio.new_event_loop()
    arena = cext.load("arena").Arena(16 << 20, 1 << 20, path=None)
    origin = FileOrigin(str(root))

    async def setup():
        storage = Storage(arena, origin, block_size=1 << 20, meta_ttl=None)   # as the server's
        app = App(config, {"": storage})
        for key in ("1k.bin", "64k.bin"):
            meta = await storage.meta(key, 0)
            b = storage.pin(meta, 0)
            await storage.wait(b, b.length)
            storage.release(b)
        return app

    app = loop.run_until_complete(setup())
    yield app, loop
    loop.run_until_complete(app.storage.close())
    loop.close()


def _protocol(app):
    conn = HttpProtocol(app)
    conn.connection_made(CountingTransport())
    return conn


@pytest.mark.parametrize("head, body", [(WRK_GET, 1024), (CURL_GET, 1024),
                                        (WRK_GET.replace(b"1k", b"64k"), 65536),
                                        (RANGE_GET, 1000), (MULTI_GET, 2000)],
                         ids=["get1k", "get1k-curl", "get64k", "range1k-of-64k", "multirange"])
def test_hit(benchmark, served, head, body):
    """One whole hit: data_received of the head -> head + pinned view written, pins released."""
    app, _ = served
    conn = _protocol(app)

    def run():
        data_received = conn.data_received
        for _ in range(LOOPS):
            data_received(head)

    benchmark(run)
    _report(benchmark)
    assert not conn.busy and not conn.closing
    assert conn.transport.nbytes > LOOPS * body
