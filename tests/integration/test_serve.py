"""The real server, checked from outside over real sockets, against both twins."""
from __future__ import annotations

import http.client
import random
import socket
import time

import pytest

from .conftest import make_files, sha256

pytestmark = pytest.mark.integration

MiB = 1 << 20


def raw(port: int, data: bytes, *, timeout: float = 10.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                c = s.recv(1 << 16)
            except TimeoutError:
                break
            if not c:
                break
            chunks.append(c)
            if not read_until_close:
                break
        return b"".join(chunks)


def parse_responses(buf: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of HTTP/1.1 responses (Content-Length framed)."""
    out = []
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        assert sep, f"incomplete head: {buf[:200]!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.decode().lower()] = v.strip().decode()
        n = int(headers.get("content-length", "0")) if status not in (304,) else 0
        out.append((status, headers, rest[:n]))
        buf = rest[n:]
    return out


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


@pytest.fixture
def files(origin):
    return make_files(origin, {
        "small.bin": 1000,
        "dir/with space/ünï.bin": 5000,
        "big.bin": 5 * MiB + 123,
        "empty.bin": 0,
    })


def test_get_head_and_validators(edge_factory, origin, files, impl):
    e = edge_factory(origin, "--cache-size", "8MiB", "--block-size", "1MiB", pure=impl == "py")
    status, h, body = get(e.port, "/small.bin")
    assert status == 200 and body == files["small.bin"]
    assert h["content-length"] == "1000"
    assert h["accept-ranges"] == "bytes"
    assert h["cache-status"] == "edge; fwd=miss"
    assert h["etag"].startswith('"') and "last-modified" in h and "date" in h
    status, h2, body = get(e.port, "/small.bin")
    assert status == 200 and body == files["small.bin"] and h2["cache-status"] == "edge; hit"
    assert h2["etag"] == h["etag"]
    # HEAD: same headers, no body, Range ignored; the first asks the origin (miss)
    status, h3, body = get(e.port, "/big.bin", {"Range": "bytes=0-9"}, method="HEAD")
    assert status == 200 and body == b"" and h3["content-length"] == str(len(files["big.bin"]))
    assert h3["cache-status"] == "edge; fwd=miss"
    assert get(e.port, "/big.bin", method="HEAD")[1]["cache-status"] == "edge; hit"
    # conditionals
    assert get(e.port, "/small.bin", {"If-None-Match": h["etag"]})[0] == 304
    assert get(e.port, "/small.bin", {"If-None-Match": 'W/' + h["etag"]})[0] == 304
    assert get(e.port, "/small.bin", {"If-None-Match": '"other"'})[0] == 200
    assert get(e.port, "/small.bin", {"If-Match": '"other"'})[0] == 412
    assert get(e.port, "/small.bin", {"If-Modified-Since": h["last-modified"]})[0] == 304
    assert get(e.port, "/small.bin", {"If-Unmodified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"})[0] == 412
    # a key with a space and non-ASCII characters, percent-encoded
    status, _, body = get(e.port, "/dir/with%20space/%C3%BCn%C3%AF.bin")
    assert status == 200 and body == files["dir/with space/ünï.bin"]
    status, h, body = get(e.port, "/empty.bin")
    assert status == 200 and body == b"" and h["content-length"] == "0"


def test_ranges(edge_factory, origin, files, impl):
    e = edge_factory(origin, "--cache-size", "8MiB", pure=impl == "py")
    data = files["big.bin"]
    n = len(data)
    cases = {
        "bytes=0-99": (0, 100),
        "bytes=100-": (100, n),
        "bytes=-500": (n - 500, n),
        "bytes=1048570-1048580": (1048570, 1048581),   # crosses a block boundary
        f"bytes={n - 10}-{n + 1000}": (n - 10, n),        # last-byte clamping
        "bytes=0-0": (0, 1),
    }
    for rng, (a, b) in cases.items():
        status, h, body = get(e.port, "/big.bin", {"Range": rng})
        assert status == 206, rng
        assert h["content-range"] == f"bytes {a}-{b - 1}/{n}", rng
        assert body == data[a:b], rng
    status, h, body = get(e.port, "/big.bin", {"Range": f"bytes={n}-"})
    assert status == 416 and h["content-range"] == f"bytes */{n}"
    # syntactically invalid: ignored
    status, h, body = get(e.port, "/small.bin", {"Range": "bytes=5-1"})
    assert status == 200 and body == files["small.bin"]
    # multipart, with overlapping ranges coalesced
    status, h, body = get(e.port, "/big.bin", {"Range": "bytes=0-9,5-19,2000000-2000009"})
    assert status == 206
    ctype = h["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    parts = [p for p in body.split(b"--" + boundary) if p.strip(b"\r\n-")]
    assert len(parts) == 2
    got = []
    for p in parts:
        head, _, payload = p.partition(b"\r\n\r\n")
        cr = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-range")][0]
        a, b = cr.split(b" ")[-1].split(b"/")[0].split(b"-")
        got.append((int(a), int(b), payload[: int(b) - int(a) + 1]))
    assert [(a, b) for a, b, _ in got] == [(0, 19), (2000000, 2000009)]
    for a, b, payload in got:
        assert payload == data[a:b + 1]
    assert int(h["content-length"]) == len(body)
    # If-Range: strong ETag matches -> 206; otherwise the whole object
    etag = get(e.port, "/big.bin", method="HEAD")[1]["etag"]
    assert get(e.port, "/big.bin", {"Range": "bytes=0-9", "If-Range": etag})[0] == 206
    assert get(e.port, "/big.bin", {"Range": "bytes=0-9", "If-Range": '"nope"'})[0] == 200
    assert get(e.port, "/big.bin", {"Range": "bytes=0-9", "If-Range": "W/" + etag})[0] == 200
    # amplification guard: too many ranges -> whole object
    many = ",".join(f"{i}-{i}" for i in range(0, 400, 2))
    status, _, body = get(e.port, "/small.bin", {"Range": "bytes=" + many})
    assert status == 200 and body == files["small.bin"]


def test_errors_and_methods(edge_factory, origin, files, impl):
    e = edge_factory(origin, "--cache-size", "8MiB", pure=impl == "py")
    assert get(e.port, "/nope.bin")[0] == 404
    assert get(e.port, "/")[0] == 404
    status, h, body = get(e.port, "/small.bin", method="POST")
    assert status == 405 and h["allow"] == "GET, HEAD"
    for evil in ("/../etc/passwd", "/%2e%2e/etc/passwd", "/dir/%2E%2E/%2e%2e/x", "/a/./b"):
        resp = raw(e.port, f"GET {evil} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = int(resp.split(b" ", 2)[1])
        assert status in (400, 404), (evil, resp[:100])
    # garbage gets a 400 and a closed connection, never a traceback
    for junk in (b"\x00\x01\x02 garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET /small.bin HTTP/1.1\r\n\r\n",                       # no Host
                 b"GET /small.bin HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                 b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n"):
        resp = raw(e.port, junk)
        assert resp.startswith(b"HTTP/1.1 4") or resp.startswith(b"HTTP/1.1 505"), (junk[:40], resp[:200])
        assert b"Traceback" not in resp
    assert get(e.port, "/small.bin")[0] == 200   # still serving


def test_pipelining_keepalive_http10(edge_factory, origin, files, impl):
    e = edge_factory(origin, "--cache-size", "8MiB", pure=impl == "py")
    req = (b"GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n"
           b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
           b"HEAD /small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    resps = parse_responses(raw(e.port, req))
    assert [r[0] for r in resps] == [200, 206, 404, 200]
    assert resps[0][2] == files["small.bin"]
    assert resps[1][2] == files["big.bin"][10:20]
    # HTTP/1.0 without keep-alive: one response then close
    resp = raw(e.port, b"GET /small.bin HTTP/1.0\r\n\r\nGET /small.bin HTTP/1.0\r\n\r\n")
    assert len(parse_responses(resp)) == 1
    resp = raw(e.port, b"GET /small.bin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", read_until_close=False)
    assert b"keep-alive" in resp.lower()


def test_header_and_idle_timeouts(edge_factory, origin, files, tmp_path):
    conf = tmp_path / "t.toml"
    conf.write_text('[server]\nheader_timeout = "1s"\nidle_timeout = "2s"\n[cache]\nsize = "8MiB"\n')
    e = edge_factory(origin, config=str(conf))
    t0 = time.monotonic()
    resp = raw(e.port, b"GET /small.bin HTTP/1.1\r\nHost: x\r\n", timeout=10)  # never finishes the head
    assert resp.startswith(b"HTTP/1.1 408"), resp
    assert time.monotonic() - t0 < 5
    with socket.create_connection(("127.0.0.1", e.port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(10) == b""       # idle connection closed by the server
        assert 1 < time.monotonic() - t0 < 6


def test_bad_config_is_refused(tmp_path, origin):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "edge", "serve", *args],
                              capture_output=True, text=True, timeout=30, cwd=tmp_path)

    r = run("--cache-size", "lots", "--origin", str(origin))
    assert r.returncode == 2 and "cache.size" in r.stderr and "lots" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("--origin", str(tmp_path / "missing"))
    assert r.returncode == 2 and "origins[0].url" in r.stderr and "does not exist" in r.stderr
    conf = tmp_path / "bad.toml"
    conf.write_text('[cache]\nsise = "1GiB"\n')
    r = run("--config", str(conf))
    assert r.returncode == 2 and "cache.sise: unknown key" in r.stderr
    r = run("--listen", "nohost", "--origin", str(origin))
    assert r.returncode == 2 and "server.listen" in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--cache-size" in r.stdout and "--origin" in r.stdout


def test_concurrent_random_ranges_larger_than_cache(edge_factory, origin, impl):
    """50 clients read random ranges of files 4x larger than the cache; every byte is checked."""
    import asyncio

    files = make_files(origin, {f"f{i}.bin": 3 * MiB + 777 * i for i in range(4)}, seed=7)
    e = edge_factory(origin, "--cache-size", "3MiB", "--block-size", "256KiB", pure=impl == "py")
    names = sorted(files)

    async def client(i: int) -> int:
        rnd = random.Random(i)
        checked = 0
        reader, writer = await asyncio.open_connection("127.0.0.1", e.port)
        try:
            for _ in range(12):
                name = rnd.choice(names)
                data = files[name]
                a = rnd.randrange(len(data))
                b = min(len(data), a + rnd.choice([1, 100, 65536, 300000, 1 << 20]))
                writer.write(f"GET /{name} HTTP/1.1\r\nHost: x\r\nRange: bytes={a}-{b - 1}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 206"), head
                clen = int([ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0]
                           .split(b":")[1])
                body = await reader.readexactly(clen)
                assert body == data[a:b], (name, a, b)
                checked += len(body)
        finally:
            writer.close()
        return checked

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(50))), 120)

    total = sum(asyncio.run(main()))
    assert total > 50 * 12
    # the whole of each file, through a cache a quarter of its size
    for name in names:
        status, _, body = get(e.port, "/" + name)
        assert status == 200 and sha256(body) == sha256(files[name])
