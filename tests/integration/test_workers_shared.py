"""Two workers over one shared arena (cext/shm): correct bytes under concurrent downloads of files
larger than the cache, one origin fetch per block whichever worker serves it, a worker
SIGKILLed mid-download recovered by the supervisor with no pins left behind, and the fill of a
worker killed mid-block taken over by the other worker's readers."""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from ..faultproxy import FaultProxy
from .conftest import make_files
from .servers import nginx  # noqa: F401 - fixture

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def get(port: int, path: str, rng: tuple[int, int] | None = None, timeout: float = 30) -> bytes:
    """One GET on a new connection (so SO_REUSEPORT spreads them over the workers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {} if rng is None else {"Range": f"bytes={rng[0]}-{rng[1] - 1}"}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        assert r.status == (200 if rng is None else 206), (r.status, body[:200])
        assert len(body) == int(r.headers["Content-Length"])
        return body
    finally:
        conn.close()


def metric(aport: int, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", aport, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def snapshots(tmp: Path) -> dict[int, dict]:
    """The workers' metrics snapshots (state_dir/metrics/worker-N.json, once a second)."""
    out = {}
    for p in (tmp / "edge-state" / "metrics").glob("worker-*.json"):
        try:
            out[int(p.stem.split("-")[1])] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    return out


def start(edge_factory, origin, impl, *args):
    aport = free_port()
    e = edge_factory(origin, "--cache-size", "8MiB", "--workers", "2", "--admin-listen",
                     f"127.0.0.1:{aport}", *args, pure=impl == "py")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if len(children(e.proc.pid)) == 2:
                metric(aport, "edge_connections")
                break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        pytest.fail("the workers did not come up")
    return e, aport


def wait_until(cond, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_one_origin_fetch_per_block_whichever_worker_serves_it(edge_factory, origin, tmp_path, impl):
    files = make_files(origin, {"hot.bin": 3 * MiB + 5})
    e, aport = start(edge_factory, origin, impl)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(get(e.port, "/hot.bin")))
               for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 12 and all(r == files["hot.bin"] for r in results)
    for _ in range(40):                      # until both workers have served it (hits)
        assert get(e.port, "/hot.bin", (MiB - 3, 2 * MiB + 3)) == files["hot.bin"][MiB - 3:2 * MiB + 3]
        snaps = snapshots(tmp_path)
        if len(snaps) == 2 and all(sum(s["requests"].values()) > 0 for s in snaps.values()):
            break
        time.sleep(0.05)
    wait_until(lambda: len(snapshots(tmp_path)) == 2
               and all(sum(s["requests"].values()) > 0 for s in snapshots(tmp_path).values()),
               what="both workers to serve")
    time.sleep(1.2)                          # the other worker's snapshot is a second old
    assert metric(aport, "edge_origin_bytes_total") == len(files["hot.bin"])   # each block once
    assert metric(aport, "edge_blocks") == 4
    assert metric(aport, "edge_arena_bytes{state=\"size\"}") == 8 * MiB        # reported once


def _downloader(port, files, seed, stop, errors, done, cut):
    rnd = random.Random(seed)
    names = sorted(files)
    while not stop.is_set():
        name = rnd.choice(names)
        data = files[name]
        if rnd.random() < 0.5:
            rng = None
        else:
            a = rnd.randrange(len(data))
            rng = (a, min(len(data), a + rnd.randrange(1, 3 * MiB)))
        try:
            body = get(port, f"/{name}", rng)
        except (OSError, http.client.HTTPException, AssertionError):
            cut.append(name)                 # a connection of the killed worker: cut, not wrong
            continue
        want = data if rng is None else data[rng[0]:rng[1]]
        if body != want:
            errors.append((name, rng))
        done.append(name)


def test_concurrent_downloads_larger_than_the_cache_and_a_worker_killed(edge_factory, origin,
                                                                        tmp_path, impl):
    files = make_files(origin, {f"f{i}.bin": 5 * MiB + 1000 * i for i in range(4)}, seed=3)
    e, aport = start(edge_factory, origin, impl)
    stop = threading.Event()
    errors: list = []
    done: list = []
    cut: list = []
    threads = [threading.Thread(target=_downloader, args=(e.port, files, s, stop, errors, done, cut))
               for s in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(done) >= 6, 60, "downloads")
        wait_until(lambda: 1 in snapshots(tmp_path), what="worker 1's snapshot")
        victim = snapshots(tmp_path)[1]["pid"]
        assert victim in children(e.proc.pid)        # one of ours, never anything else
        before = len(done)
        os.kill(victim, signal.SIGKILL)              # mid-download
        wait_until(lambda: len(children(e.proc.pid)) == 2 and victim not in children(e.proc.pid),
                   what="the supervisor to restart the worker")
        wait_until(lambda: len(done) >= before + 8, 60, "downloads after the restart")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []                              # every completed download was byte-exact
    assert "released" in e.stderr() and "worker 1" in e.stderr()
    # once idle, the shared region holds no pins at all: the dead worker's were released
    wait_until(lambda: metric(aport, "edge_pinned_blocks") == 0, what="no pins")
    assert metric(aport, "edge_arena_bytes{state=\"used\"}") <= 8 * MiB
    for name, data in files.items():                 # and it serves correct bytes afterwards
        assert get(e.port, f"/{name}") == data
    assert get(e.port, "/f1.bin", (3 * MiB - 7, 4 * MiB + 9)) == files["f1.bin"][3 * MiB - 7:4 * MiB + 9]


def test_workers_stop_when_the_supervisor_is_killed(tmp_path, origin, impl):
    """SIGKILL of the supervisor (no chance to stop its workers): the workers get SIGTERM from
    the kernel (PR_SET_PDEATHSIG) and stop, instead of serving on alone."""
    from .conftest import start_edge

    e, _ = start(lambda *a, **kw: start_edge(tmp_path, *a, **kw), origin, impl)
    workers = children(e.proc.pid)
    assert len(workers) == 2
    os.kill(e.proc.pid, signal.SIGKILL)
    e.proc.wait(10)
    for leftover in Path("/dev/shm").glob(f"edge-{e.port}-{e.proc.pid}.shared*"):
        leftover.unlink()              # a killed supervisor cannot remove its region

    def gone(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        return state == "Z"            # exited; reaped by init in its own time

    wait_until(lambda: all(gone(w) for w in workers), timeout=20, what="workers to stop")


def test_a_killed_filler_is_taken_over(edge_factory, nginx, tmp_path, impl):  # noqa: F811
    """A block filling slowly from the origin; its filling worker is SIGKILLed half-way.
    The downloads the other worker serves do not fail: one of its readers takes the fill
    over from the byte where it stopped, and they complete with the right bytes."""
    data = make_files(nginx.root, {f"slow-{impl}.bin": MiB - 1000}, seed=9)[f"slow-{impl}.bin"]
    proxy = FaultProxy("127.0.0.1", nginx.port).start()
    try:
        proxy.set("slow", delay=2.0)           # 2 s to the head, then 64 KiB per 0.2 s
        e, aport = start(edge_factory, proxy.url, impl)
        results: dict[int, bytes | None] = {}

        def download(n: int) -> None:
            try:
                results[n] = get(e.port, f"/slow-{impl}.bin", timeout=60)
            except (OSError, http.client.HTTPException, AssertionError):
                results[n] = None            # a connection of the killed worker: cut

        threads: list[threading.Thread] = []
        filler = other = None
        deadline = time.monotonic() + 15
        while filler is None or other is None:   # until the other worker has readers waiting
            assert time.monotonic() < deadline, snapshots(tmp_path)
            for _ in range(4):
                t = threading.Thread(target=download, args=(len(threads),))
                threads.append(t)
                t.start()
            time.sleep(1.2)
            snaps = snapshots(tmp_path)
            fillers = [w for w, s in snaps.items() if s["fills"] >= 1]
            if len(fillers) == 1 and len(snaps) == 2:
                w = 1 - fillers[0]
                if snaps[w]["waiters"] >= 1:
                    filler, other = snaps[fillers[0]]["pid"], w
        assert filler in children(e.proc.pid)
        os.kill(filler, signal.SIGKILL)          # mid-block: its bytes stop landing
        for t in threads:
            t.join(90)
        done = [r for r in results.values() if r is not None]
        assert done and all(r == data for r in done)   # the other worker's readers: complete
        wait_until(lambda: "took over the fill of" in e.stderr(), what="the takeover")
        log = e.stderr()
        assert log.count("took over the fill of") == 1        # exactly one new filler
        assert re.search(r"handed 1 over to their readers", log), log[-3000:]
        assert get(e.port, f"/slow-{impl}.bin") == data      # and a verified hit afterwards
        wait_until(lambda: metric(aport, "edge_pinned_blocks") == 0, what="no pins")
    finally:
        proxy.stop()
