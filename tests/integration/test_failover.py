"""Origins misbehaving under the real edge: faults never cached, failover, deadlines, hedging.

nginx (Debian's) is the real origin; tests/faultproxy.py sits in front of it to inject
faults; a port with nothing listening plays a dead replica.
"""
from __future__ import annotations

import hashlib
import http.client
import random
import socket
import time
from pathlib import Path

import pytest

from ..faultproxy import FaultProxy
from .servers import ACCESS_KEY, nginx, seaweed, start_nginx  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration
MiB = 1 << 20


def dead_url() -> str:
    """An origin URL where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def put(root: Path, name: str, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    (root / name).write_bytes(data)
    return data


def get(port: int, path: str, timeout: float = 30):
    """(status, headers, body, complete): complete is False when the body was cut short."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        try:
            body = r.read()
            complete = True
        except (http.client.IncompleteRead, ConnectionError) as exc:
            body = getattr(exc, "partial", b"")
            complete = False
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body, complete
    finally:
        c.close()


@pytest.fixture
def proxy(nginx):  # noqa: F811
    p = FaultProxy("127.0.0.1", nginx.port).start()
    yield p
    p.stop()


def conf(tmp_path: Path, text: str) -> str:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("mode,kw", [
    ("truncate", {"after": 300_000}),
    ("reset", {"after": 300_000}),
    ("overlong", {"extra": 5000}),
    ("etag", {}),
])
def test_bad_origin_responses_are_never_cached(edge_factory, nginx, proxy, tmp_path, mode, kw):  # noqa: F811
    data = put(nginx.root, f"{mode}.bin", 3 * MiB + 5, seed=len(mode))
    cfg = conf(tmp_path, '[origin_pool]\nretries = 1\nbackoff = "10ms"\n')
    e = edge_factory(proxy.url, "--cache-size", "16MiB", config=cfg)
    proxy.set(mode, **kw)
    status, h, body, complete = get(e.port, f"/{mode}.bin")
    if status == 200:
        assert not complete or body != data, "a faulty origin response was served as complete"
        assert data.startswith(body[: len(body) - 1]) or mode == "etag"
    else:
        assert status in (502, 504)
    assert proxy.faults >= 1
    proxy.set("pass")
    status, h, body, complete = get(e.port, f"/{mode}.bin")
    assert status == 200 and complete and body == data
    assert h["cache-status"] in ("edge; fwd=miss", "edge; fwd=partial")   # the failed fill was not a hit
    assert get(e.port, f"/{mode}.bin")[1]["cache-status"] == "edge; hit"


def test_a_transient_fault_is_retried(edge_factory, nginx, proxy, tmp_path):  # noqa: F811
    data = put(nginx.root, "retry.bin", 2 * MiB, seed=9)
    cfg = conf(tmp_path, '[origin_pool]\nbackoff = "10ms"\n')
    e = edge_factory(proxy.url, "--cache-size", "16MiB", config=cfg)
    proxy.set("reset", count=1, after=100_000)
    status, _, body, complete = get(e.port, "/retry.bin")
    assert status == 200 and complete and body == data
    assert proxy.faults == 1


def test_failover_mid_read_to_the_next_replica(edge_factory, nginx, proxy, tmp_path):  # noqa: F811
    data = put(nginx.root, "fo.bin", 6 * MiB + 77, seed=3)
    e = edge_factory([proxy.url, nginx.url], "--cache-size", "32MiB",
                     config=conf(tmp_path, '[origin_pool]\nretries = 0\nfailure_threshold = 100\n'))
    proxy.set("reset", after=200_000)          # replica 1 dies 200 KB into every block read
    status, _, body, complete = get(e.port, "/fo.bin")
    assert status == 200 and complete
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert proxy.faults >= 1


def test_dead_first_replica(edge_factory, nginx, tmp_path):  # noqa: F811
    data = put(nginx.root, "dead.bin", 3 * MiB, seed=4)
    e = edge_factory([dead_url(), nginx.url], "--cache-size", "16MiB")
    t0 = time.monotonic()
    for _ in range(3):
        status, _, body, complete = get(e.port, "/dead.bin")
        assert status == 200 and complete and body == data
    assert time.monotonic() - t0 < 10


def test_all_replicas_down_502_fast_and_cached_objects_still_served(edge_factory, nginx, proxy, tmp_path):  # noqa: F811
    cached = put(nginx.root, "cached.bin", 2 * MiB, seed=5)
    put(nginx.root, "cold.bin", 2 * MiB, seed=6)
    cfg = conf(tmp_path, '[cache]\nrevalidate_after = "500ms"\n'
                         '[origin_pool]\ndeadline = "3s"\nbackoff = "10ms"\n')
    e = edge_factory([proxy.url, dead_url()], "--cache-size", "16MiB", config=cfg)
    assert get(e.port, "/cached.bin")[2] == cached
    proxy.set("refuse")
    time.sleep(0.7)                             # metadata expired too
    t0 = time.monotonic()
    status, _, body, _ = get(e.port, "/cold.bin")
    assert status == 502 and time.monotonic() - t0 < 3
    assert b"origin" in body
    status, h, body, complete = get(e.port, "/cached.bin")
    assert status == 200 and complete and body == cached and h["cache-status"] == "edge; hit"


def test_hanging_origin_gives_504_within_the_deadline(edge_factory, nginx, proxy, tmp_path):  # noqa: F811
    put(nginx.root, "hang.bin", 1000)
    cfg = conf(tmp_path, '[origin_pool]\ndeadline = "2s"\n')
    e = edge_factory(proxy.url, "--cache-size", "16MiB", config=cfg)
    proxy.set("hang")
    t0 = time.monotonic()
    status, _, body, _ = get(e.port, "/hang.bin")
    took = time.monotonic() - t0
    assert status == 504, body
    assert 1.5 < took < 5


def test_hedging_answers_from_the_faster_replica(edge_factory, nginx, proxy, tmp_path):  # noqa: F811
    data = put(nginx.root, "hedge.bin", 500_000, seed=7)
    cfg = conf(tmp_path, '[origin_pool]\nhedge_after = "200ms"\n')
    e = edge_factory([proxy.url, nginx.url], "--cache-size", "16MiB", config=cfg)
    proxy.set("slow", delay=3.0)               # replica 1 answers block reads after 3 s
    t0 = time.monotonic()
    status, _, body, complete = get(e.port, "/hedge.bin")
    took = time.monotonic() - t0
    assert status == 200 and complete and body == data
    assert took < 2.0, f"hedging did not help: {took:.2f}s"
    assert proxy.faults >= 1


def test_origin_stopped_mid_test(edge_factory, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    a = put(root, "a.bin", 3 * MiB, seed=10)
    put(root, "b.bin", 3 * MiB, seed=11)
    server = start_nginx(tmp_path / "n2", root)
    try:
        cfg = conf(tmp_path, '[origin_pool]\ndeadline = "3s"\nbackoff = "10ms"\n')
        e = edge_factory(server.url, "--cache-size", "16MiB", config=cfg)
        assert get(e.port, "/a.bin")[2] == a
    finally:
        server.stop()
    status, h, body, complete = get(e.port, "/a.bin")
    assert status == 200 and complete and body == a and h["cache-status"] == "edge; hit"
    t0 = time.monotonic()
    assert get(e.port, "/b.bin")[0] == 502
    assert time.monotonic() - t0 < 3


def test_refused_s3_credentials_give_502_naming_origin_and_reason(edge_factory, seaweed, tmp_path):  # noqa: F811
    seaweed.put("secret.bin", b"x" * 1000)
    e = edge_factory(seaweed.origin_url(), "--cache-size", "16MiB",
                     env_extra={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    status, _, body, _ = get(e.port, "/secret.bin")
    assert status == 502
    text = body.decode()
    assert "origin0" in text and ("SignatureDoesNotMatch" in text or "InvalidAccessKeyId" in text), text
    assert "Traceback" not in e.stderr() and "origin0" in e.stderr()
