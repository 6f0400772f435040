"""Bounds that must hold however clients behave: memory, garbage input, dying workers."""
from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import make_files, sha256

pytestmark = pytest.mark.integration
MiB = 1 << 20


def rss(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024


def fetch(port: int, path: str, timeout: float = 60) -> bytes:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body[:200])
        return body
    finally:
        c.close()


def test_memory_stays_bounded_with_slow_clients(edge_factory, origin):
    """200 clients that read nothing, while others download files 3x larger than the cache."""
    files = make_files(origin, {f"f{i}.bin": 48 * MiB for i in range(3)}, seed=5)
    cache = 16 * MiB
    uncached = 32 * MiB
    e = edge_factory(origin, "--cache-size", str(cache), "--block-size", "1MiB")
    fetch(e.port, "/f0.bin")
    base = rss(e.proc.pid)
    slow = []
    try:
        for i in range(200):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", e.port))
            s.sendall(f"GET /f{i % 3}.bin HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            slow.append(s)
        for name in ("f1.bin", "f2.bin", "f0.bin"):     # downloads go on beside them
            assert sha256(fetch(e.port, "/" + name)) == sha256(files[name])
        time.sleep(1.0)
        peak = rss(e.proc.pid)
    finally:
        for s in slow:
            s.close()
    growth = peak - base
    bound = cache + uncached + 16 * MiB + 2 * MiB * len(slow) // 100
    print(f"\nRSS idle {base / MiB:.1f} MiB, with 200 slow clients {peak / MiB:.1f} MiB "
          f"(growth {growth / MiB:.1f} MiB, bound {bound / MiB:.0f} MiB)")
    assert growth <= bound
    assert sha256(fetch(e.port, "/f1.bin")) == sha256(files["f1.bin"])   # still healthy


def test_arbitrary_bytes_never_break_the_server(edge_factory, origin):
    """Random and mutated requests: a valid HTTP response or a closed connection, nothing else."""
    make_files(origin, {"a.bin": 5000})
    e = edge_factory(origin, "--cache-size", "4MiB", "--block-size", "1MiB")
    rnd = random.Random(1234)
    seeds = [
        b"GET /a.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-10,20-30\r\n\r\n",
        b"HEAD /a.bin HTTP/1.0\r\nIf-None-Match: \"x\", W/\"y\"\r\n\r\n",
        b"GET /a.bin?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ]
    statuses = set()
    for i in range(300):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(1, 6)):
            if not data:
                break
            op = rnd.randrange(4)
            pos = rnd.randrange(len(data))
            if op == 0:
                data[pos] = rnd.randrange(256)
            elif op == 1:
                del data[pos:pos + rnd.randrange(1, 8)]
            elif op == 2:
                data[pos:pos] = rnd.randbytes(rnd.randrange(1, 16))
            else:
                data = data[:pos]
        if i % 10 == 0 or not data:
            data = bytearray(rnd.randbytes(rnd.randrange(1, 400)))
        with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
            s.sendall(bytes(data))
            s.shutdown(socket.SHUT_WR)
            resp = b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                resp += c
        if resp:
            m = re.match(rb"HTTP/1\.1 (\d{3}) ", resp)
            assert m, (bytes(data), resp[:100])
            statuses.add(int(m.group(1)))
            assert b"Traceback" not in resp
    assert all(100 <= s < 500 or s in (501, 505) for s in statuses), statuses
    assert fetch(e.port, "/a.bin")                   # and it still serves


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def test_workers_share_the_port_and_are_restarted(edge_factory, origin):
    files = make_files(origin, {"w.bin": 3 * MiB})
    e = edge_factory(origin, "--cache-size", "8MiB", "--workers", "2")
    deadline = time.monotonic() + 10
    while len(children(e.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    kids = children(e.proc.pid)
    assert len(kids) == 2
    for _ in range(6):
        assert fetch(e.port, "/w.bin") == files["w.bin"]
    os.kill(kids[0], signal.SIGKILL)                 # a worker dies
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = children(e.proc.pid)
        if len(now) == 2 and kids[0] not in now:
            break
        time.sleep(0.05)
    assert len(children(e.proc.pid)) == 2 and kids[0] not in children(e.proc.pid)
    for _ in range(6):
        assert fetch(e.port, "/w.bin") == files["w.bin"]


def test_embedded_default_starts_and_creates_its_origin(tmp_path):
    """`edge serve` with only a port override: the embedded configs/edge.toml, ./origin created."""
    env = {k: v for k, v in os.environ.items() if k != "EDGE_NO_EXTENSIONS"}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "serve", "--listen", "127.0.0.1:0"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stdout.readline().decode()
        m = re.search(r"serving http://127\.0\.0\.1:(\d+)/ from local=\./origin; cache 256 MiB", line)
        assert m, line + proc.stderr.read1().decode()
        port = int(m.group(1))
        assert (tmp_path / "origin").is_dir()
        assert (tmp_path / "edge-state").is_dir()          # server.state_dir, created
        (tmp_path / "origin" / "hello.txt").write_bytes(b"hello\n")
        assert fetch(port, "/hello.txt") == b"hello\n"
        assert Path(f"/dev/shm/edge-{port}.arena").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    err = proc.stderr.read().decode()
    assert "created the empty origin directory" in err and "Traceback" not in err
    arena = Path(f"/dev/shm/edge-{port}.arena")
    ctl = Path(f"{arena}.ctl")          # the shared index of several workers (the default)
    try:   # the arena file stays for a warm restart, with its index in state_dir
        assert arena.exists() and (tmp_path / "edge-state" / f"index-{port}.bin").exists()
    finally:
        arena.unlink(missing_ok=True)
        ctl.unlink(missing_ok=True)


def test_slow_readers_stay_and_stalled_ones_are_dropped(edge_factory, origin, tmp_path):
    """send_timeout drops a client that takes no bytes, not one that reads slowly."""
    files = make_files(origin, {"s.bin": 16 * MiB})
    conf = tmp_path / "t.toml"
    conf.write_text('[server]\nsend_timeout = "1s"\n')
    e = edge_factory(origin, "--cache-size", "32MiB", config=str(conf))
    fetch(e.port, "/s.bin")

    def client() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", e.port))
        s.sendall(b"GET /s.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        return s

    slow, stalled = client(), client()
    got = b""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 4:                 # 4 s of ~64 KiB/s: four send_timeouts
        got += slow.recv(8192)
        time.sleep(0.1)
    slow.settimeout(5)
    assert slow.recv(8192)                           # still served
    stalled.settimeout(5)
    try:
        while stalled.recv(1 << 20):                 # its buffers drain, then it is cut
            pass
        dropped = True
    except ConnectionResetError:
        dropped = True
    except TimeoutError:
        dropped = False
    assert dropped
    head, _, body = got.partition(b"\r\n\r\n")
    assert files["s.bin"].startswith(body)
    slow.close()
    stalled.close()
