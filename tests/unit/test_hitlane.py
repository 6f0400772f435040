"""The compiled hit lane (cext/httphead.pyx ``HitLane``) answers exactly as the general path.

Two connections of one warmed App get the same bytes: one with the lane, one without
(``protocol._LANE = None``). What each wrote, and what the App, its tenants and their storages
counted, must be equal; the lane must actually have answered the plain hits (the parser never
saw them) and declined everything else before any side effect.
"""
from __future__ import annotations

import asyncio
import json
import os
import tomllib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cext
from edge import config as cfg
from edge.http import RequestParser
from edge.server import protocol
from edge.server.app import App, make_storages
from edge.server.protocol import HttpProtocol

pytestmark = pytest.mark.skipif(cext.NO_EXTENSIONS or protocol._LANE is None,
                                reason="the hit lane is compiled only")

BLOCK = 64 << 10
SIZES = {"k1.bin": 1024, "empty.bin": 0, "k8.bin": 8 << 10, "k9.bin": (8 << 10) + 1,
         "multi.bin": 3 * BLOCK + 5, "huge.bin": (4 << 20) + 1, "a/b-c_d.~x": 77}


class Transport:
    """Records what is written. ``stall`` bytes of buffer: writes beyond it stay queued
    (pause_writing fires, as with uvloop's (0, 0) limits) until ``drain``."""

    def __init__(self, stall: bool = False) -> None:
        self.out = bytearray()
        self.closed = False
        self.stall = stall
        self.buffered = 0
        self.protocol: Any = None

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data) -> None:
        self.writelines([data])

    def writelines(self, bufs) -> None:
        for b in bufs:
            self.out += b
        if self.stall and not self.buffered:
            self.buffered = 1
            self.protocol.pause_writing()

    def drain(self) -> None:
        if self.buffered:
            self.buffered = 0
            self.protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 4242) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


CONFIG = '''
[cache]
size = "16MiB"
block_size = "64KiB"
min_chunk = "4KiB"
[[tenants]]
name = "acme"
hosts = ["a.example", "*.acme.example"]
[[tenants.origins]]
url = "ROOT"
[[tenants]]
name = "paid"
hosts = ["paid.example"]
secret = "s3cret"
[[tenants.origins]]
url = "ROOT"
[[tenants]]
name = "rest"
hosts = ["*"]
[[tenants.origins]]
url = "ROOT"
'''


@pytest.fixture(autouse=True)
def fixed_boundary(monkeypatch):
    """Multipart answers of both runs must be comparable byte for byte."""
    monkeypatch.setattr(protocol, "_boundary", lambda: b"3d6b6a416f9b5c2e1a7f0c4d")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One App of three tenants (one needs tokens) over one arena, every object warm in
    'acme' and 'rest', and 'gone.bin' taken down in 'acme'."""
    root = tmp_path_factory.mktemp("origin")
    for key, size in SIZES.items():
        os.makedirs(root / os.path.dirname(key), exist_ok=True)
        (root / key).write_bytes(os.urandom(size))
    (root / "gone.bin").write_bytes(b"x" * 100)
    (root / "cold.bin").write_bytes(b"c" * 100)
    config = cfg.build(tomllib.loads(CONFIG.replace("ROOT", str(root))),
                       overrides={"server.workers": 1})
    loop = asyncio.new_event_loop()
    arena = cext.load("arena").Arena(16 << 20, BLOCK, path=None, min_chunk=4096)

    async def setup():
        storages = make_storages(config, arena)
        for st_ in storages.values():
            st_.origin.start()
        app = App(config, storages)
        for name in ("acme", "rest"):
            storage = storages[name]
            for key in [*SIZES, "gone.bin"]:
                meta = await storage.meta(key, 0)
                for idx in range(-(-meta.size // BLOCK)):
                    b = storage.pin(meta, idx)
                    await storage.wait(b, b.length)
                    storage.release(b)
        app.tenants["acme"].blocked["gone.bin"] = {"case_id": "C-1"}
        return app

    app = loop.run_until_complete(setup())
    yield app, loop
    for st_ in app.storages.values():
        loop.run_until_complete(st_.close())
        loop.run_until_complete(st_.origin.close())
    loop.close()


def counters(app: App) -> dict:
    return {
        "requests": dict(app.requests), "bytes": dict(app.bytes_sent),
        "tenants": {n: (t.requests, t.bytes_sent) for n, t in app.tenants.items()},
        "storage": {n: (s.counters.block_hits, s.counters.block_misses, s.counters.meta_lookups)
                    for n, s in app.storages.items()},
    }


def delta(before: dict, after: dict) -> dict:
    def sub(a, b):
        if isinstance(a, dict):
            return {k: sub(a.get(k, 0 if not isinstance(v, (dict, tuple)) else v), v)
                    for k, v in b.items()}
        if isinstance(a, tuple):
            return tuple(y - x for x, y in zip(a, b, strict=True))
        return b - a
    return sub(before, after)


class CountingParser(RequestParser):
    """Counts the requests it parsed (the lane's hits never reach it)."""

    __slots__ = ("seen",)

    def __init__(self, limits) -> None:
        super().__init__(limits)
        self.seen = 0

    def feed(self, data: bytes) -> list:
        got = super().feed(data)
        self.seen += len(got)
        return got


def exchange(app: App, loop, chunks: list[bytes], lane: bool,
             stall: bool = False) -> tuple[bytes, dict, int]:
    """Feed ``chunks`` to a new connection; returns (bytes written, counter changes, heads the
    parser saw)."""
    saved = protocol._LANE
    protocol._LANE = saved if lane else None
    try:
        before = counters(app)
        conn = HttpProtocol(app)
        t = Transport(stall)
        t.protocol = conn
        conn.connection_made(t)
        conn.parser = parser = CountingParser(app.limits)

        async def run():
            for c in chunks:
                conn.data_received(c)
                for _ in range(200):
                    t.drain()
                    await asyncio.sleep(0)
                    if not conn.busy and not t.buffered:
                        break
                    await asyncio.sleep(0.001)
            conn.connection_lost(None)

        loop.run_until_complete(run())
        return bytes(t.out), delta(before, counters(app)), parser.seen
    finally:
        protocol._LANE = saved


def both(served, chunks: list[bytes], stall: bool = False) -> tuple[bytes, int, int]:
    """Run ``chunks`` with and without the lane, after a first run that warms what they ask
    for; assert equal results; return (bytes written, heads the parser saw with the lane,
    without it)."""
    app, loop = served
    exchange(app, loop, chunks, False, stall)
    fast, dfast, seen_fast = exchange(app, loop, chunks, True, stall)
    slow, dslow, seen_slow = exchange(app, loop, chunks, False, stall)
    assert fast == slow
    assert dfast == dslow
    return fast, seen_fast, seen_slow


def get(key: str, host: str = "a.example", extra: str = "", method: str = "GET",
        version: str = "1.1") -> bytes:
    return f"{method} /{key} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode()


def test_plain_hits_take_the_lane(served) -> None:
    heads = [get(k) for k in SIZES if k != "huge.bin"] + [get("k1.bin", method="HEAD")]
    # The first request of each object builds its cached head on the general path.
    both(served, heads)
    out, seen_fast, seen_slow = both(served, heads)
    assert seen_fast == 0 and seen_slow == len(heads)
    assert out.count(b"HTTP/1.1 200 OK\r\n") == len(heads)
    assert out.count(b"Cache-Status: edge; hit") == len(heads)


def test_pipelined_mix_keeps_order(served) -> None:
    both(served, [get("k1.bin"), get("multi.bin")])
    mix = (get("k1.bin") * 3 + get("multi.bin", extra='If-None-Match: "x"\r\n') + get("k1.bin")
           + get("cold.bin") + get("k8.bin") + get("k1.bin", method="HEAD"))
    out, seen_fast, seen_slow = both(served, [mix])
    assert seen_slow == 8 and seen_fast == 5        # the lane took the first three hits
    assert out.count(b"HTTP/1.1 200 OK") == 8
    # split anywhere, the bytes come out the same
    for cut in (1, 17, len(get("k1.bin")) + 3, len(mix) - 2):
        assert both(served, [mix[:cut], mix[cut:]])[0] == out


def test_stalled_socket_queues_the_rest(served) -> None:
    both(served, [get("multi.bin")])
    data = get("multi.bin") * 3 + get("k1.bin") * 2
    out, seen_fast, _ = both(served, [data], stall=True)
    assert out.count(b"200 OK") == 5 and seen_fast == 4    # the lane stopped when it stalled


@pytest.mark.parametrize("head", [
    get("k1.bin", version="1.0"),
    get("k1.bin", version="1.0", extra="Connection: keep-alive\r\n"),
    get("k1.bin", extra="Connection: close\r\n"),
    get("k1.bin", extra="Connection: keep-alive, close\r\n"),
    get("k1.bin", extra="Connection: upgrade\r\nUpgrade: h2c\r\n"),
    get("k1.bin", extra="Host: b.example\r\n"),
    get("k1.bin", host="a.example/x"),
    b"GET /k1.bin HTTP/1.1\r\n\r\n",
    get("k1.bin", extra="Range: bytes=0-9, 20-29\r\n"),
    get("k1.bin", extra="Range: bytes=0-9\r\nRange: bytes=0-9\r\n"),
    get("k1.bin", extra="Range: bytes=0-9\r\nIf-Range: \"x\"\r\n"),
    get("k1.bin", method="HEAD", extra="Range: bytes=0-9\r\n"),
    get("k1.bin", extra="Range: bytes=2000-\r\n"),
    get("k1.bin", extra="Range: bytes=9-0\r\n"),
    get("k1.bin", extra="Range: bytes=-0\r\n"),
    get("k1.bin", extra="Range: bytes= 0-9\r\n"),
    get("k1.bin", extra="Range: items=0-9\r\n"),
    get("k1.bin", extra="Range: bytes=0-1234567890123456789\r\n"),
    get("empty.bin", extra="Range: bytes=0-9\r\n"),
    get("huge.bin", extra="Range: bytes=0-\r\n"),
    get("k1.bin", extra='If-None-Match: "x"\r\n'),
    get("k1.bin", extra="If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
    get("k1.bin", extra="Authorization: Bearer x\r\n"),
    get("k1.bin", extra="Content-Length: 0\r\n"),
    get("k1.bin", extra="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
    get("k1.bin?x=1"),
    get("k1.bin", host="paid.example"),
    get("gone.bin"),
    get("huge.bin"),
    get("nosuch.bin"),
    get(""),
    get("./k1.bin"),
    get("k1.bin", method="POST"),
    b"GET /k1.bin HTTP/1.1\nHost: a.example\n\n",
    b"GET /k1.bin HTTP/1.1\r\nHost: a.example\r\n X: folded\r\n\r\n",
    b"GET /k1.bin HTTP/1.1\r\nHost : a.example\r\n\r\n",
    b"GET  /k1.bin HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"GET /k1.bin HTTP/1.1\r\nHost: a.example\r\nX: \x01\r\n\r\n",
])
def test_everything_else_is_declined_and_answered_alike(served, head) -> None:
    both(served, [get("k1.bin"), get("huge.bin")])
    _, seen_fast, seen_slow = both(served, [head])
    if seen_slow:
        assert seen_fast == seen_slow      # no head was taken by the lane


@pytest.mark.parametrize("head", [
    get("k1.bin", host=""),                     # an empty Host is valid: the "*" tenant
    get("k1.bin", host="[::1]:8080"),
    get("k1.bin", host="A.EXAMPLE"),
    get("k1.bin", extra="Connection: keep-alive\r\nX-Y: \t\r\n"),
    get("k1.bin", extra="X:  \t \r\n"),
    b"HEAD /k9.bin HTTP/1.1\r\nUser-Agent: x\r\nhOsT:   a.example \t\r\n\r\n",
])
def test_odd_but_plain_heads_take_the_lane(served, head) -> None:
    out, seen_fast, seen_slow = both(served, [head])
    assert (seen_fast, seen_slow) == (0, 1) and b" 200 OK" in out


RANGES = ["bytes=0-9", "BYTES=0-0", "bytes=5-", "bytes=-7", "bytes=-5000", "bytes=1000-5000",
          "bytes=0-1023", "bytes=1023-1023", "bytes=0-123456789012345678"]


@pytest.mark.parametrize("key", ["k1.bin", "k9.bin", "multi.bin"])
def test_one_byte_range_takes_the_lane(served, key) -> None:
    heads = [get(key, extra=f"Range: {r}\r\n") for r in RANGES]
    heads.append(get(key, extra=f"Range: bytes={SIZES[key] - 3}-{SIZES[key] + 70000}\r\n"))
    heads.append(get(key, extra=f"Range: bytes={BLOCK - 2}-{BLOCK + 1}\r\n"))   # two blocks
    out, seen_fast, seen_slow = both(served, heads)
    beyond = key != "multi.bin"         # its last range starts past its end: a 416
    assert seen_fast == beyond and seen_slow == len(heads)
    assert out.count(b"HTTP/1.1 206 Partial Content\r\n") == len(heads) - beyond


def test_ranges_alone_take_the_lane_from_the_second(served) -> None:
    """A download manager never sends a plain GET: its first range builds the cached head."""
    app, loop = served
    heads = app.tenants["acme"].heads
    heads.pop("k9.bin", None)
    ranges = [get("k9.bin", extra=f"Range: bytes={i}-{i + 99}\r\n") for i in (0, 100, 200)]
    _, _, seen = exchange(app, loop, ranges, True)
    assert seen == 1 and "k9.bin" in heads


def test_field_names_the_lane_declines_are_those_of_kinds(served) -> None:
    """Every field the request path reads (KINDS) but Host and Connection, and Upgrade, sends
    the head to the general path whatever its case; any other field is ignored."""
    from cext._httphead_py import KINDS
    both(served, [get("k1.bin")])
    for name in [*KINDS, b"upgrade"]:
        if name in (b"host", b"connection"):
            continue
        for spelled in (name.decode(), name.decode().upper(), name.decode().title()):
            value = "0" if name == b"content-length" else "1"    # no body to wait for
            head = get("k1.bin", extra=f"{spelled}: {value}\r\n")
            assert both(served, [head])[1] == 1, spelled
    for other in ("X-Range", "Ranges", "If-Rang", "Hosts", "Accept", "User-Agent", "Te"):
        assert both(served, [get("k1.bin", extra=f"{other}: 1\r\n")])[1] == 0, other


def test_tenants_are_routed_and_kept_apart(served) -> None:
    app, _ = served
    for host in ("a.example", "x.acme.example", "A.Example:8080", "other.example"):
        both(served, [get("k1.bin", host=host)])
    before = counters(app)
    out, seen, _ = both(served, [get("k1.bin", host="x.acme.example"), get("k1.bin", host="z.org")])
    assert seen == 0 and out.count(b"200 OK") == 2
    d = delta(before, counters(app))
    assert d["tenants"]["acme"][0] == 3 and d["tenants"]["rest"][0] == 3   # warm-up + both runs
    assert d["tenants"]["paid"] == (0, 0)


def test_no_tenant_for_the_host_is_a_421_either_way(served, monkeypatch) -> None:
    app, _ = served
    route = app.route
    monkeypatch.setattr(app, "route", lambda host: None if host == b"nowhere" else route(host))
    out, seen_fast, _ = both(served, [get("k1.bin", host="nowhere") + get("k1.bin")])
    assert seen_fast == 2 and out.startswith(b"HTTP/1.1 421 ") and out.count(b"HTTP/1.1 ") == 1


def test_access_log_and_ledger_lines_are_the_general_paths(served, tmp_path) -> None:
    from edge.accesslog import AccessLog
    from edge.ledger import Ledger
    app, loop = served
    heads = [get("k1.bin"), get("k1.bin", method="HEAD"), get("empty.bin"), get("multi.bin"),
             get("k1.bin", host="z.org"), get("multi.bin", extra="Range: bytes=1-2\r\n")]
    both(served, heads)
    lines = {}
    for lane in (True, False):
        app.access_log = AccessLog(str(tmp_path / f"access-{lane}.log"))
        app.ledger = Ledger(str(tmp_path / f"ledger-{lane}.jsonl"))
        try:
            _, _, seen = exchange(app, loop, heads, lane)
            assert seen == (0 if lane else 6)          # the lane took all six
        finally:
            app.access_log.close()
            app.ledger.close()
            app.access_log = app.ledger = None
        lines[lane] = [
            [json.loads(x) for x in (tmp_path / f"{what}-{lane}.{ext}").read_text().splitlines()]
            for what, ext in (("access", "log"), ("ledger", "jsonl"))]
    for got, want in zip(*lines.values(), strict=True):
        assert len(got) == len(want) == 6
        for a, b in zip(got, want, strict=True):
            a.pop("time", None), b.pop("time", None)
            assert a == b
    access = lines[True][0]
    assert [x["tenant"] for x in access] == ["acme"] * 4 + ["rest", "acme"]
    assert [x["bytes_sent"] for x in access][:4] == [1024, 0, 0, SIZES["multi.bin"]]


def test_a_bug_in_the_lane_is_a_500_and_a_closed_connection(served, monkeypatch, caplog) -> None:
    app, loop = served
    both(served, [get("k1.bin")])

    def broken(meta, prefix):
        raise ValueError("a bug")

    monkeypatch.setattr(app.tenants["acme"].storage, "read_small", broken)
    out, _, seen = exchange(app, loop, [get("k1.bin") + get("k8.bin")], True)
    assert out.startswith(b"HTTP/1.1 500 ") and out.count(b"HTTP/1.1 ") == 1 and seen == 0
    assert b"Traceback" not in out and b"a bug" not in out
    assert "internal error in the hit lane" in caplog.text


def test_a_new_version_is_not_served_from_the_old_head(served) -> None:
    app, loop = served
    storage = app.tenants["acme"].storage
    both(served, [get("a/b-c_d.~x")])
    old = storage.meta_cached("a/b-c_d.~x")
    new = type(old)(old.key, old.info, old.block_size, ns=b"acme")    # same blocks (oid)
    new.etag = b'"new"'
    assert new.oid == old.oid
    storage._meta["a/b-c_d.~x"] = new
    try:
        out, _, seen_fast = exchange(app, loop, [get("a/b-c_d.~x")], True)
        assert seen_fast == 1 and b'ETag: "new"' in out      # the lane left it to build
        out, seen_fast, _ = both(served, [get("a/b-c_d.~x")])
        assert seen_fast == 0 and b'ETag: "new"' in out
    finally:
        storage._meta["a/b-c_d.~x"] = old


_TCHAR = st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#"))
_FIELD = st.one_of(
    st.tuples(st.text(_TCHAR, min_size=1, max_size=12), st.text(st.sampled_from(list("ab 1\t,")),
                                                                max_size=8)),
    st.tuples(st.sampled_from(["Host", "host", "HOST", "Connection", "Range", "If-Match",
                               "Upgrade", "User-Agent"]),
              st.sampled_from(["a.example", " x.acme.example ", "keep-alive", "close",
                               "bytes=0-1", "*", "", "a.example:80", "[::1]"])),
    st.tuples(st.just("Range"), st.builds(
        lambda unit, a, b: f"{unit}={a}-{b}", st.sampled_from(["bytes", "Bytes", "bytes ", "x"]),
        st.sampled_from(["", "0", "1", "1023", "1024", "65535", "99999999", "007", " 3"]),
        st.sampled_from(["", "0", "2", "1023", "1024", "65536", "5000000", "9,1-2"]))),
    st.tuples(st.just("Range"), st.lists(      # lists: the lane's multipart or the general path
        st.tuples(st.sampled_from(["", "0", "1", "9", "10", "11", "100", "1023", "1024", "65535",
                                   "65536", "70000"]),
                  st.sampled_from(["", "0", "9", "10", "20", "1023", "1024", "65536", "70000"])),
        min_size=2, max_size=4).map(lambda rs: "bytes=" + ",".join(f"{a}-{b}" for a, b in rs))),
)
_HEAD = st.builds(
    lambda method, key, version, fields: (
        f"{method} /{key} HTTP/{version}\r\n"
        + "".join(f"{k}:{v}\r\n" for k, v in fields) + "\r\n").encode(),
    st.sampled_from(["GET", "GET", "HEAD", "PUT"]),
    st.sampled_from([*SIZES, "gone.bin", "nosuch.bin", "k1.bin?token=x", "k1.bin/", ""]),
    st.sampled_from(["1.1", "1.1", "1.0"]),
    st.lists(_FIELD, max_size=5),
)


@settings(max_examples=int(os.environ.get("EDGE_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(heads=st.lists(_HEAD, min_size=1, max_size=4), cut=st.integers(0, 400))
def test_generated_heads_answered_alike(served, heads, cut) -> None:
    data = b"".join(heads)
    both(served, [data[:cut], data[cut:]] if 0 < cut < len(data) else [data])


MULTI = ["bytes=0-9,20-29", "BYTES=0-0,2-2,4-4", "bytes=1-100,200-300,900-1000",
         "bytes=0-0,1023-1023", "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(16))]


@pytest.mark.parametrize("key", ["k1.bin", "k9.bin", "multi.bin"])
def test_several_byte_ranges_take_the_lane(served, key) -> None:
    """A multipart/byteranges 206 of ranges parse_range keeps as they are, from the lane, byte
    for byte as the fast path answers it (the same boundary in both runs)."""
    heads = [get(key, extra=f"Range: {r}\r\n") for r in MULTI]
    heads.append(get(key, extra=f"Range: bytes=0-9,{BLOCK - 2}-{BLOCK + 1}\r\n"))   # two blocks
    heads.append(get(key, extra=f"Range: bytes=3-4,{SIZES[key] - 1}-{SIZES[key] - 1}\r\n"))
    out, seen_fast, seen_slow = both(served, heads)
    beyond = key != "multi.bin"         # its two-block range lies past its end: a plain 206
    assert seen_fast == beyond and seen_slow == len(heads)
    assert out.count(b"Content-Type: multipart/byteranges; boundary=") == len(heads) - beyond
    assert out.count(b"\r\n--3d6b6a416f9b5c2e1a7f0c4d--\r\n") == len(heads) - beyond


@pytest.mark.parametrize("rng", [
    "bytes=0-9,5-20",                   # overlapping: merged by parse_range
    "bytes=0-9,10-20",                  # adjacent: merged
    "bytes=20-29,0-9",                  # unsorted: sorted
    "bytes=0-9,-5",                     # a suffix
    "bytes=0-9,500-",                   # an open end
    "bytes=0-9, 20-29",                 # whitespace
    "bytes=0-9,20-99999",               # past the end: clipped
    "bytes=0-9,,20-29",                 # an empty member
    "bytes=0-9,20-29,",
    "bytes=9-0,20-29",                  # invalid: ignored, a 200
    "bytes=2000-3000,4000-5000",        # unsatisfiable: 416
    "bytes=0-9,1024-1030",              # one of them unsatisfiable: a single part
    "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(17)),    # over max_ranges
    "bytes=0-9,20-123456789012345678901",
])
def test_other_range_lists_are_declined_and_answered_alike(served, rng) -> None:
    both(served, [get("k1.bin")])
    _, seen_fast, seen_slow = both(served, [get("k1.bin", extra=f"Range: {rng}\r\n")])
    assert seen_fast == seen_slow == 1


def test_a_multipart_hit_is_accounted_as_the_fast_path_does(served, tmp_path) -> None:
    """Counters (compared by ``both``), the live curve's per-part accounting, and the parts a
    block not ready makes the lane hand over with no pin left behind."""
    app, loop = served
    storage = app.tenants["acme"].storage
    head = get("multi.bin", extra=f"Range: bytes=0-9,{2 * BLOCK}-{2 * BLOCK + 9}\r\n")
    both(served, [head])
    pins = storage.arena.stats()["pinned_chunks"]
    meta = storage.meta_cached("multi.bin")
    block = storage.pin_ready(meta, 2)
    block.ready = False                 # as while it is refilled: the lane must decline
    try:
        out, _, seen = exchange(app, loop, [head], True)
    finally:
        block.ready = True
        storage.release(block)
    assert seen == 1 and b"multipart/byteranges" in out
    assert storage.arena.stats()["pinned_chunks"] == pins
