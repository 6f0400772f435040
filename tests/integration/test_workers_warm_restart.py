"""Warm restart with several workers: a clean stop of the supervisor keeps the shared region's
verified blocks and every tenant's metadata; the next start with the same layout serves them
as hits from every worker without the origin. A changed layout (workers, cache size) or a
crash (kill -9 of the supervisor) starts cold; a corrupted block or a removed tenant's blocks
are dropped, never served."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from .conftest import make_files, start_edge

pytestmark = pytest.mark.integration
MiB = 1 << 20

ACME = {"a1.bin": 3 * MiB + 1, "a2.bin": 300_000, "same.bin": 200_000}
GLOBEX = {"same.bin": 500_000, "g1.bin": 2 * MiB + 3}
BLOCKS = 4 + 1 + 1 + 1 + 3           # 1 MiB blocks of the objects above


def raw_get(port: int, target: str, host: str) -> tuple[int, dict, bytes]:
    """One GET with that Host on a fresh connection (so the workers share the requests)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split()[1]), hdrs, body


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def snapshots(state: Path) -> dict[int, dict]:
    out = {}
    for p in (state / "metrics").glob("worker-*.json"):
        try:
            out[int(p.stem.split("-")[1])] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    return out


def wait_until(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class Site:
    """Two tenants' origins and an edge config over one kept arena file."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.arena = tmp / "arena.bin"
        self.conf = tmp / "edge.toml"
        self.empty = tmp / "empty"
        self.empty.mkdir()
        self.files = {"a.example": make_files(tmp / "acme", ACME, seed=1),
                      "g.example": make_files(tmp / "globex", GLOBEX, seed=2)}
        self.port = 0

    def write_conf(self, *, origins: bool = True, tenants: tuple[str, ...] = ("acme", "globex")) -> None:
        text = f'[server]\nstate_dir = "{self.state}"\n'
        for name in tenants:
            src = (self.tmp / name) if origins else self.empty
            text += (f'[[tenants]]\nname = "{name}"\nhosts = ["{name[0]}.example"]\n'
                     f'[[tenants.origins]]\nurl = "{src}"\n')
        self.conf.write_text(text)

    def start(self, *args: str, workers: int = 2, pure: bool = False, origins: bool = True,
              tenants: tuple[str, ...] = ("acme", "globex")):
        self.write_conf(origins=origins, tenants=tenants)
        listen = ("--listen", f"127.0.0.1:{self.port}") if self.port else ()
        e = start_edge(self.tmp, [], "--cache-size", "16MiB", "--workers", str(workers),
                       "--arena-path", str(self.arena), *listen, *args, config=str(self.conf),
                       pure=pure, timeout=60)
        self.port = e.port
        if workers > 1:
            wait_until(lambda: len(children(e.proc.pid)) == workers, what="the workers")
        return e

    def download_all(self, e, times: int = 3) -> list[str | None]:
        """Every object ``times`` times, byte-checked; returns the Cache-Status values."""
        seen = []
        for _ in range(times):
            for host, files in self.files.items():
                for name, data in files.items():
                    status, hdrs, body = raw_get(e.port, "/" + name, host)
                    assert status == 200 and body == data, (host, name, status)
                    seen.append(hdrs.get("cache-status"))
        return seen


def stop(e) -> str:
    assert e.stop(60) == 0
    text = e.stderr()
    assert "Traceback" not in text, text[-4000:]
    return text


def kill_supervisor(e) -> None:
    workers = children(e.proc.pid)
    os.kill(e.proc.pid, signal.SIGKILL)
    e.proc.wait(10)
    wait_until(lambda: not any(Path(f"/proc/{w}").exists()
                               and Path(f"/proc/{w}/stat").read_text().split(")")[-1].split()[0] != "Z"
                               for w in workers), what="the orphaned workers to stop")


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


@pytest.mark.parametrize("impl", ["c", "py"])
def test_a_clean_restart_serves_every_tenants_blocks_from_every_worker(site, impl):
    e = site.start(pure=impl == "py")
    site.download_all(e)
    log = stop(e)
    assert re.search(rf"saved {BLOCKS} blocks for a warm restart \(0 without metadata", log), log[-3000:]
    assert site.arena.exists() and Path(f"{site.arena}.ctl").exists()     # kept for the next start
    assert not list(site.state.glob("meta-*.json"))                        # merged, then removed
    # the same layout; the origins are now empty directories: anything not restored is a 404
    e2 = site.start(pure=impl == "py", origins=False)
    try:
        text = e2.stderr()
        assert re.search(rf"warm restart: {BLOCKS} blocks re-attached from {re.escape(str(site.arena))}, "
                         r"0 dropped", text), text[-3000:]
        deadline = time.monotonic() + 30
        while True:                  # until both workers have served every object as a hit
            statuses = site.download_all(e2, times=1)
            assert set(statuses) == {"edge; hit"}, statuses
            time.sleep(1.1)          # the snapshots are written once a second
            snaps = snapshots(site.state)
            if len(snaps) == 2 and all(s["requests"].get("200|hit", 0) >= 5 for s in snaps.values()):
                break
            assert time.monotonic() < deadline, {w: s["requests"] for w, s in snaps.items()}
        for s in snaps.values():
            assert s["fills"] == 0 and s["origin_bytes"] == 0 and s["block_misses"] == 0
        assert raw_get(e2.port, "/a1.bin", "g.example")[0] == 404     # tenants stay apart
    finally:
        stop(e2)


def test_a_changed_layout_starts_cold(site):
    e = site.start()
    site.download_all(e, times=1)
    stop(e)
    for args, workers in ((("--workers", "3"), 3), (("--cache-size", "32MiB"), 2)):
        e = site.start(*args, workers=workers)
        try:
            text = e.stderr()
            assert "the layout changed" in text and "starting cold" in text, text[-3000:]
            assert set(site.download_all(e, times=1)) == {"edge; fwd=miss"}
        finally:
            stop(e)
    # one worker on the same file: cold as well, and the shared control file goes
    e = site.start(workers=1)
    try:
        assert "the layout changed" in e.stderr()
        assert re.search(r"removed .*arena\.bin\.ctl", e.stderr())
        assert not Path(f"{site.arena}.ctl").exists()
        assert set(site.download_all(e, times=1)) == {"edge; fwd=miss"}
    finally:
        stop(e)
    # ... and back to two workers: the one-worker index does not describe a shared region
    e = site.start()
    try:
        assert "the layout changed" in e.stderr()
        assert set(site.download_all(e, times=1)) == {"edge; fwd=miss"}
    finally:
        stop(e)


def test_a_killed_supervisor_means_a_cold_start(site):
    e = site.start()
    site.download_all(e, times=1)
    stop(e)
    e = site.start()                 # warm: consumes the index
    assert "blocks re-attached" in e.stderr()
    assert set(site.download_all(e, times=1)) == {"edge; hit"}
    kill_supervisor(e)               # no clean stop: no index for the next start
    assert list(site.state.glob("index-*.bin")) == []
    e2 = site.start()
    try:
        text = e2.stderr()
        assert "blocks re-attached" not in text and "starting cold" in text, text[-3000:]
        assert set(site.download_all(e2, times=1)) == {"edge; fwd=miss"}   # correct bytes, refetched
        assert set(site.download_all(e2, times=1)) == {"edge; hit"}
    finally:
        stop(e2)


def test_a_corrupted_block_or_a_removed_tenant_is_dropped(site):
    e = site.start()
    site.download_all(e, times=1)
    stop(e)
    data = site.arena.read_bytes()
    a2 = site.files["a.example"]["a2.bin"]
    pos = data.find(a2[:64])
    assert pos >= 0
    with open(site.arena, "r+b") as f:         # flip one byte inside acme's a2.bin block
        f.seek(pos + 5000)
        f.write(bytes([data[pos + 5000] ^ 0xFF]))
    e = site.start()
    try:
        assert re.search(rf"warm restart: {BLOCKS - 1} blocks re-attached .*, 1 dropped", e.stderr())
        status, hdrs, body = raw_get(e.port, "/a2.bin", "a.example")
        assert body == a2 and hdrs["cache-status"] == "edge; fwd=miss"    # refetched, not served
        assert raw_get(e.port, "/a1.bin", "a.example")[1]["cache-status"] == "edge; hit"
    finally:
        stop(e)
    e = site.start(tenants=("globex",))       # acme is gone: its blocks go, globex's stay
    try:
        assert re.search(r"warm restart: 4 blocks re-attached .*, 6 dropped", e.stderr()), e.stderr()[-2000:]
        statuses = [raw_get(e.port, "/" + n, "g.example")[1]["cache-status"] for n in GLOBEX]
        assert statuses == ["edge; hit"] * len(GLOBEX)
    finally:
        stop(e)
