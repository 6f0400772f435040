"""Paid downloads through the real server: tokens, byte budgets across segments, the ledger."""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from .conftest import make_files, need

pytestmark = pytest.mark.integration
SECRET = "paid-downloads-secret"
MiB = 1 << 20


def mint(key: str, ttl: int = 3600, receipt: str = "", nbytes: int | None = None) -> str:
    cmd = [sys.executable, "-m", "edge", "token", "--secret", SECRET, "--key", key, "--ttl", str(ttl)]
    if receipt:
        cmd += ["--receipt", receipt]
    if nbytes is not None:
        cmd += ["--bytes", str(nbytes)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def fetch(port: int, path: str, headers: dict | None = None, method: str = "GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def paid(edge_factory, origin, tmp_path):
    files = make_files(origin, {"movie.bin": 6 * MiB + 11, "other.bin": 1000}, seed=9)
    ledger = tmp_path / "ledger" / "ledger.jsonl"
    conf = tmp_path / "edge.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n'
                    f'[auth]\nsecret = "{SECRET}"\n[ledger]\npath = "{ledger}"\n')
    e = edge_factory(origin, "--cache-size", "32MiB", config=str(conf))
    return e, files, ledger


def test_tokens_are_required_and_checked(paid):
    e, files, _ = paid
    assert fetch(e.port, "/other.bin") == (403, b"403 Forbidden: missing token\n")
    good = mint("other.bin", receipt="R0")
    assert fetch(e.port, f"/other.bin?token={good}") == (200, files["other.bin"])
    bearer = mint("other.bin", receipt="R0b")                    # each token pays for one download
    assert fetch(e.port, "/other.bin", {"Authorization": f"Bearer {bearer}"})[0] == 200
    assert fetch(e.port, "/other.bin", method="HEAD", headers={"Authorization": f"Bearer {good}"})[0] == 200
    tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    cases = {
        "garbage": ("not-a-token", b"malformed token"),
        "tampered": (tampered, b"bad signature"),
        "expired": (mint("other.bin", ttl=-3600), b"expired"),
        "other key": (mint("movie.bin"), b"another key"),
    }
    for what, (tok, reason) in cases.items():
        status, body = fetch(e.port, f"/other.bin?token={tok}")
        assert status == 403 and reason in body, (what, body)


def test_budget_allows_one_download_not_two(paid):
    e, files, _ = paid
    tok = mint("movie.bin", receipt="R1")
    status, body = fetch(e.port, f"/movie.bin?token={tok}")
    assert status == 200 and body == files["movie.bin"]
    status, body = fetch(e.port, f"/movie.bin?token={tok}")
    assert status == 402 and b"budget" in body


def test_parallel_segments_share_the_budget(paid, tmp_path):
    aria2c = need("aria2c")
    e, files, _ = paid
    tok = mint("movie.bin", receipt="R2")
    # Each connection at most 32 MiB/s, as over any real link: unthrottled on loopback, one
    # connection can take the whole file into aria2's auto-tuned receive buffer before aria2
    # starts the others, which then ask for bytes already sent (docs/tokens.md, the slack).
    r = subprocess.run([aria2c, "-x8", "-s8", "-k1M", "--max-download-limit=32M",
                        "--quiet=true", "--allow-overwrite=true",
                        "--file-allocation=none", "-d", str(tmp_path), "-o", "seg.bin",
                        f"http://127.0.0.1:{e.port}/movie.bin?token={tok}"], timeout=120)
    assert r.returncode == 0
    assert hashlib.sha256((tmp_path / "seg.bin").read_bytes()).digest() == \
        hashlib.sha256(files["movie.bin"]).digest()
    assert fetch(e.port, f"/movie.bin?token={tok}")[0] == 402          # not a second time


def test_interrupted_download_resumes_within_budget(paid):
    e, files, ledger = paid
    data = files["movie.bin"]
    tok = mint("movie.bin", receipt="R3")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", e.port))
    s.sendall(f"GET /movie.bin?token={tok} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = b""
    while len(got) < MiB:
        got += s.recv(65536)
    s.close()                                          # the download breaks
    head, _, body = got.partition(b"\r\n\r\n")
    time.sleep(0.5)
    have = len(body)
    status, rest = fetch(e.port, f"/movie.bin?token={tok}", {"Range": f"bytes={have}-"})
    assert status == 206 and body + rest == data     # resumed with the same token
    e.stop()
    lines = [json.loads(x) for x in ledger.read_text().splitlines()]
    mine = [x for x in lines if x["receipt"] == "R3"]
    assert len(mine) == 2 and mine[1]["status"] == 206 and mine[1]["bytes_sent"] == len(data) - have
    assert have <= mine[0]["bytes_sent"] < len(data)   # delivered, not requested
    assert all({"time", "receipt", "key", "tenant", "bytes_sent", "status"} <= set(x) for x in lines)
