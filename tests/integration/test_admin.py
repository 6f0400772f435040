"""The admin API and signals of the real server: metrics, stats, purge, reload, auth."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from origin_clients.file import mount_of

from .conftest import make_files

pytestmark = pytest.mark.integration
TOKEN = "s3cret-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, path: str, *, method: str = "GET", token: str | None = TOKEN,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_admin(aport: int, timeout: float = 10) -> None:
    """Until the admin API answers /healthz (it starts with worker 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if call(aport, "/healthz", token=None)[0] == 200:
                return
        except urllib.error.URLError:
            time.sleep(0.1)


def get(port: int, path: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers["Cache-Status"], r.read()


def _nowait_works(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not in metrics"
    return float(m.group(1))


@pytest.fixture
def admin_edge(edge_factory, origin, tmp_path):
    files = make_files(origin, {"a/1.bin": 3 << 20, "a/2.bin": 1000, "b.bin": 5000})
    conf = tmp_path / "edge.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n[log]\nlevel = "info"\n')
    aport = free_port()
    e = edge_factory(origin, "--cache-size", "16MiB", "--admin-listen", f"127.0.0.1:{aport}",
                     config=str(conf), env_extra={"EDGE_ADMIN_TOKEN": TOKEN})
    return e, aport, files, conf


def test_health_metrics_and_auth(admin_edge, origin):
    e, aport, files, _ = admin_edge
    assert call(aport, "/healthz", token=None)[0] == 200
    for _ in range(3):
        assert get(e.port, "/a/1.bin")[2] == files["a/1.bin"]
    status, headers, body = call(aport, "/metrics", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert metric(text, "edge_sent_bytes_total", '{cache_status="hit"}') >= 2 * (3 << 20)
    assert metric(text, "edge_blocks") == 3
    assert metric(text, "edge_arena_bytes", '{state="size"}') == 16 << 20
    assert metric(text, "edge_origin_requests_total", '{origin="origin0"}') >= 1
    # reads that went to the directory origin's thread pool: none where the filesystem is
    # memory or answers RWF_NOWAIT (the files were just written: in the page cache), else
    # each 256 KiB chunk of a/1.bin's three 1 MiB blocks
    in_loop = (mount_of(str(origin))[0] in ("tmpfs", "ramfs")
               or _nowait_works(origin / "a" / "1.bin"))
    assert metric(text, "edge_origin_pool_reads_total", '{origin="origin0"}') == (0 if in_loop else 12)
    assert "edge_origin_latency_seconds_bucket" in text and "edge_arena_class_bytes" in text
    assert call(aport, "/stats", token=None)[0] == 401
    status, headers, _ = call(aport, "/stats", token="wrong")
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, _, body = call(aport, "/stats")
    stats = json.loads(body)
    assert status == 200 and stats["blocks"] == 3 and stats["hit_ratio"] > 0.5


def test_purge_key_and_prefix(admin_edge):
    e, aport, files, _ = admin_edge
    for k in ("a/1.bin", "a/2.bin", "b.bin"):
        get(e.port, "/" + k)
        assert get(e.port, "/" + k)[1] == "edge; hit"
    status, _, body = call(aport, "/purge", method="POST", body=b'{"key": "b.bin"}')
    assert status == 200 and json.loads(body)["purged"]["key"] == "b.bin"
    assert get(e.port, "/b.bin")[1] == "edge; fwd=miss"
    assert get(e.port, "/a/2.bin")[1] == "edge; hit"
    status, _, body = call(aport, "/purge", method="POST", body=b'{"prefix": "a/"}')
    assert status == 200 and json.loads(body)["purged"]["objects"] == 2
    assert get(e.port, "/a/1.bin")[1] == "edge; fwd=miss"
    assert get(e.port, "/a/1.bin")[2] == files["a/1.bin"]
    for bad in (b"not json", b"[1]", b"{}", b'{"key": ""}', b'{"key": "x", "prefix": "y"}',
                b'{"kee": "x"}'):
        status, _, body = call(aport, "/purge", method="POST", body=bad)
        assert status == 400 and b"error" in body, bad
    assert call(aport, "/purge", method="POST", token=None, body=b'{"key": "b.bin"}')[0] == 401


def test_reload_applies_refuses_and_reports(admin_edge, tmp_path, origin):
    e, aport, files, conf = admin_edge
    other = tmp_path / "other"
    other.mkdir()
    (other / "only-here.bin").write_bytes(b"new origin")
    text = conf.read_text()
    conf.write_text(text.replace('level = "info"', 'level = "debug"')
                    + f'[[origins]]\nurl = "{other}"\n[cache]\nblock_size = "2MiB"\nsize = "64MiB"\n')
    status, _, body = call(aport, "/reload", method="POST")
    result = json.loads(body)
    # --origin and --cache-size on the command line still override the file
    assert status == 200 and result["ok"] and "log.level" in result["applied"]
    assert result["needs_restart"] == ["block_size"] and "origins" not in result["applied"]
    conf.write_text(text + '[cache]\nsise = "1GiB"\n')
    status, _, body = call(aport, "/reload", method="POST")
    assert status == 400 and "cache.sise" in json.loads(body)["error"]
    assert get(e.port, "/b.bin")[0] == 200                       # still serving
    conf.write_text(text.replace('level = "info"', 'level = "debug"')
                    .replace("[server]\n", '[server]\nidle_timeout = "30s"\n'))
    os.kill(e.proc.pid, signal.SIGHUP)                             # SIGHUP reloads too
    deadline = time.monotonic() + 5
    while "config reloaded" not in e.stderr().split("cache.sise")[-1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "applied limits" in e.stderr().split("cache.sise")[-1]


def test_admin_without_token_is_closed(edge_factory, origin, tmp_path):
    make_files(origin, {"x.bin": 10})
    aport = free_port()
    e = edge_factory(origin, "--cache-size", "16MiB", "--admin-listen", f"127.0.0.1:{aport}",
                     env_extra={"EDGE_ADMIN_TOKEN": ""})
    assert call(aport, "/healthz", token=None)[0] == 200
    status, _, body = call(aport, "/purge", method="POST", token="", body=b'{"key": "x.bin"}')
    assert status == 403 and b"no admin token" in body
    assert get(e.port, "/x.bin")[0] == 200


def test_workers_share_purges_and_metrics(edge_factory, origin, tmp_path):
    files = make_files(origin, {"w.bin": 2 << 20})
    aport = free_port()
    conf = tmp_path / "w.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n')
    e = edge_factory(origin, "--cache-size", "16MiB", "--workers", "2", "--admin-listen",
                     f"127.0.0.1:{aport}", config=str(conf), env_extra={"EDGE_ADMIN_TOKEN": TOKEN})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:      # the supervisor's banner comes before the workers
        try:
            if call(aport, "/healthz", token=None)[0] == 200:
                break
        except urllib.error.URLError:
            time.sleep(0.1)
    n = 20
    for _ in range(n):
        assert get(e.port, "/w.bin")[2] == files["w.bin"]
    time.sleep(1.5)                                   # every worker has written a snapshot
    stats = json.loads(call(aport, "/stats")[2])
    assert stats["workers"] == 2 and sum(stats["requests"].values()) == n
    assert call(aport, "/purge", method="POST", body=b'{"key": "w.bin"}')[0] == 200
    time.sleep(1.5)                                   # the other worker applies the journal
    text = call(aport, "/metrics", token=None)[2].decode()
    assert metric(text, "edge_purges_total") == 2    # one per worker
    assert metric(text, "edge_blocks") == 0


def test_access_log_is_written_and_replayable(edge_factory, origin, tmp_path):
    import subprocess
    import sys

    files = make_files(origin, {"v.bin": 3 << 20, "s.bin": 100})
    log_path = tmp_path / "logs" / "access.log"
    conf = tmp_path / "a.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n[log]\naccess = "{log_path}"\n')
    aport = free_port()
    e = edge_factory(origin, "--cache-size", "16MiB", "--admin-listen", f"127.0.0.1:{aport}",
                     config=str(conf), env_extra={"EDGE_ADMIN_TOKEN": TOKEN})
    assert get(e.port, "/v.bin")[2] == files["v.bin"]
    req = urllib.request.Request(f"http://127.0.0.1:{e.port}/v.bin", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 206 and r.read() == files["v.bin"][10:20]
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{e.port}/s.bin",
                                                       method="HEAD"), timeout=10) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError):
        get(e.port, "/missing.bin")
    text = call(aport, "/metrics", token=None)[2].decode()
    assert metric(text, "edge_requests_total", '{cache_status="hit",status="206"}') == 1
    assert metric(text, "edge_requests_total", '{cache_status="miss",status="404"}') == 1
    assert e.stop() == 0
    lines = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert [(x["method"], x["key"], x["status"], x["cache_status"]) for x in lines] == [
        ("GET", "v.bin", 200, "miss"), ("GET", "v.bin", 206, "hit"), ("HEAD", "s.bin", 200, "miss"),
        ("GET", "missing.bin", 404, "miss")]
    assert lines[0]["bytes_sent"] == 3 << 20 and lines[0]["first_byte"] == 0
    assert lines[0]["last_byte"] == (3 << 20) - 1 and lines[0]["origin_ms"] is not None
    assert lines[1]["range"] == "bytes=10-19" and (lines[1]["first_byte"], lines[1]["last_byte"]) == (10, 19)
    assert lines[2]["last_byte"] is None and lines[0]["client"].startswith("127.0.0.1:")
    r = subprocess.run([sys.executable, "-m", "edge", "sim", "--trace", str(log_path), "--cache-size",
                        "8MiB", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[0]["policy"] == "wtinylfu" and 0 <= rows[0]["byte_miss_ratio"] <= 1


def test_sigterm_lets_inflight_downloads_finish(edge_factory, origin, tmp_path):
    """SIGTERM: stop accepting, finish what is in flight (bounded), save the index, exit 0."""
    files = make_files(origin, {"slow.bin": 32 << 20})
    arena = tmp_path / "arena"
    conf = tmp_path / "t.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n')
    e = edge_factory(origin, "--cache-size", "64MiB", "--arena-path", str(arena), config=str(conf))
    get(e.port, "/slow.bin")                                 # cached
    s = socket.create_connection(("127.0.0.1", e.port))
    s.sendall(b"GET /slow.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    got = s.recv(65536)                                      # the download has begun...
    e.proc.send_signal(signal.SIGTERM)                       # ...when the edge is told to stop
    time.sleep(0.3)
    with pytest.raises(OSError):                             # no new connections
        socket.create_connection(("127.0.0.1", e.port), timeout=2).close()
    s.settimeout(20)
    while True:                                              # the old one finishes, read slowly
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
        time.sleep(0.002)
    s.close()
    assert got.split(b"\r\n\r\n", 1)[1] == files["slow.bin"]
    assert e.proc.wait(30) == 0
    assert (tmp_path / "state" / f"index-{e.port}.bin").exists()


def test_reload_keeps_open_connections_and_the_cache(admin_edge):
    import http.client

    e, aport, files, conf = admin_edge
    conn = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10)
    conn.request("GET", "/b.bin")
    r = conn.getresponse()
    assert r.read() == files["b.bin"]
    assert call(aport, "/reload", method="POST")[0] == 200
    os.kill(e.proc.pid, signal.SIGHUP)
    time.sleep(0.3)
    conn.request("GET", "/b.bin")                            # the same keep-alive connection
    r = conn.getresponse()
    assert r.read() == files["b.bin"] and r.getheader("Cache-Status") == "edge; hit"
    conn.close()


def test_live_miss_ratio_curve(admin_edge):
    e, aport, files, conf = admin_edge
    conf.write_text(conf.read_text() + '[cache]\nmrc_sample_rate = 1.0\n')
    assert call(aport, "/reload", method="POST")[0] == 200     # applied live
    for _ in range(3):
        for name in files:
            assert get(e.port, "/" + name)[2] == files[name]
    status, _, body = call(aport, "/mrc")
    assert status == 200
    rep = json.loads(body)
    assert rep["sample_rate"] == 1.0 and rep["configured_size"] == 16 << 20
    assert rep["block_accesses"] == 3 * (3 + 1 + 1)            # 3 rounds of 5 blocks
    assert rep["sampled_block_accesses"] == rep["block_accesses"]
    big = rep["points"][-1]
    assert big["cache_size"] == 16 * (16 << 20)
    assert big["hit_ratio"] == pytest.approx(2 / 3)          # every block reused twice
    assert big["origin_bytes_per_day"] > 0
    status, headers, png = call(aport, "/mrc?format=png")
    assert status == 200 and headers["Content-Type"] == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert call(aport, "/mrc?format=svg")[0] == 400
    assert call(aport, "/mrc", token=None)[0] == 401
    assert call(aport, "/mrc/reset", method="POST")[0] == 200
    assert json.loads(call(aport, "/mrc")[2])["block_accesses"] == 0
    # a multipart response counts its ranges' blocks, not the span between them
    req = urllib.request.Request(f"http://127.0.0.1:{e.port}/a/1.bin",
                                 headers={"Range": "bytes=0-9,3145700-3145727"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 206 and r.headers["Content-Type"].startswith("multipart/byteranges")
        r.read()
    assert json.loads(call(aport, "/mrc")[2])["block_accesses"] == 2     # blocks 0 and 2, not 1
    conf.write_text(conf.read_text().replace("mrc_sample_rate = 1.0", 'mrc_sample_rate = "off"'))
    assert call(aport, "/reload", method="POST")[0] == 200
    status, _, body = call(aport, "/mrc")
    assert status == 404 and b"mrc_sample_rate" in body
