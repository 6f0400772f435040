"""Bodies sent with sendfile from the arena: exact bytes, and safe when the arena reuses memory.

The hazard (tests/unit/test_arena_zerocopy.py shows it on a bare socket): after ``sendfile``
returns, the kernel still references the arena's pages until the client reads them, while the
arena may already have evicted the block and written another into the same memory. The arena
punches a sent chunk out of its file before reuse, so the client still gets the old bytes.
"""
from __future__ import annotations

import http.client
import socket
import time

import pytest

from .conftest import make_files
from .test_workers_shared import free_port, metric

KIB = 1024
BLOCK = 64 * KIB


def serve(edge_factory, origin, *args, **kw):
    """An edge with its admin API; returns (edge, a function reading a metric)."""
    aport = free_port()
    e = edge_factory(origin, "--admin-listen", f"127.0.0.1:{aport}", *args, **kw)
    deadline = time.monotonic() + 10
    while True:
        try:
            metric(aport, "edge_sendfile_bytes_total")
            return e, lambda name: metric(aport, name)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_for(metric, name: str, least: float, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while (v := metric(name)) < least:
        if time.monotonic() > deadline:
            pytest.fail(f"{name} stayed at {v}, below {least}")
        time.sleep(0.05)
    return v


def get(e, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


def read_response(f) -> tuple[bytes, bytes]:
    """Head and body of one Content-Length response from a socket's binary file."""
    lines = []
    while (line := f.readline()) not in (b"\r\n", b""):
        lines.append(line)
    assert lines, "connection closed before the head"
    length = next(int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length:"))
    body = f.read(length)
    assert len(body) == length, "connection closed mid-body"
    return b"".join(lines), body


def test_bytes_in_flight_survive_eviction_and_reuse(edge_factory, origin, tmp_path, impl):
    """A response the kernel holds unread keeps its bytes while its block is evicted and its
    memory refilled with another object."""
    names = [f"f{i}.bin" for i in range(12)]
    files = make_files(origin, {n: BLOCK for n in names})
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[server]\nsendfile_min = "64KiB"\n[cache]\neviction = "lru"\n')
    e, metric = serve(edge_factory, origin, "--cache-size", "512KiB", "--block-size", "64KiB",
                      config=str(cfg), pure=impl == "py")
    assert get(e, "/f0.bin")[1] == files["f0.bin"]          # cached
    slow = socket.create_connection(("127.0.0.1", e.port))
    try:
        slow.sendall(b"GET /f0.bin HTTP/1.1\r\nHost: x\r\n\r\n")    # a hit, not read yet
        wait_for(metric, "edge_sendfile_bytes_total", BLOCK)   # all of it: the kernel has it
        assert metric("edge_pinned_blocks") == 0
        for n in names[1:]:                 # 11 more blocks through an 8-block cache: f0 goes
            assert get(e, f"/{n}")[1] == files[n]
        assert metric("edge_arena_punched_chunks_total") >= 1
        assert metric("edge_evictions_total") >= 4
        head, body = read_response(slow.makefile("rb"))
    finally:
        slow.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert body == files["f0.bin"]


def test_sendfile_bodies_are_exact(edge_factory, origin, tmp_path, impl):
    files = make_files(origin, {"big.bin": 6 * 1024 * KIB + 123, "mid.bin": 300 * KIB,
                                "small.bin": 5000})
    e, metric = serve(edge_factory, origin, "--cache-size", "32MiB", "--block-size", "1MiB",
                      pure=impl == "py")
    big, mid = files["big.bin"], files["mid.bin"]
    for _ in range(2):                      # a miss (streamed), then hits
        assert get(e, "/big.bin")[1] == big
        assert get(e, "/mid.bin")[1] == mid
        assert get(e, "/small.bin")[1] == files["small.bin"]
    cases = [("bytes=0-1048575", big[:1 << 20]), ("bytes=1000000-3100000", big[1000000:3100001]),
             ("bytes=-70000", big[-70000:]), ("bytes=6000000-", big[6000000:]),
             ("bytes=100-200", big[100:201])]
    for rng, want in cases:
        status, body, _ = get(e, "/big.bin", {"Range": rng})
        assert (status, body) == (206, want), rng
    status, body, headers = get(e, "/big.bin", {"Range": "bytes=0-99999,2000000-2199999"})
    assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges")
    assert big[:100000] in body and big[2000000:2200000] in body
    sent = wait_for(metric, "edge_sendfile_bytes_total", 10 << 20)
    assert metric("edge_arena_punched_chunks_total") == 0     # nothing was evicted
    assert sent < 2 * (len(big) + len(mid)) + len(big)        # small bodies were copied


def test_a_slow_reader_gets_every_byte(edge_factory, origin, tmp_path, impl):
    """The kernel takes part of a piece: the rest goes through the transport, in order."""
    files = make_files(origin, {"big.bin": 5 * 1024 * KIB + 7})
    e = edge_factory(origin, "--cache-size", "32MiB", pure=impl == "py")
    assert get(e, "/big.bin")[1] == files["big.bin"]
    s = socket.create_connection(("127.0.0.1", e.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
    try:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=4000000-\r\n\r\n")
        time.sleep(0.2)
        f = s.makefile("rb")
        got = [read_response(f)[1] for _ in range(2)]
    finally:
        s.close()
    assert got == [files["big.bin"], files["big.bin"][4000000:]]


def test_sendfile_off_copies_everything(edge_factory, origin, tmp_path):
    files = make_files(origin, {"big.bin": 3 * 1024 * KIB})
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[server]\nsendfile_min = "off"\n')
    e, metric = serve(edge_factory, origin, "--cache-size", "32MiB", config=str(cfg))
    for _ in range(2):
        assert get(e, "/big.bin")[1] == files["big.bin"]
    assert metric("edge_sendfile_bytes_total") == 0
