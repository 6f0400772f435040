#!/usr/bin/env python3
"""Cold misses: the edge in front of a real origin vs reading the origin directly, same run.

    python bench/cold_miss.py                       # nginx origin, 1 GiB object, 3 rounds
    python bench/cold_miss.py --size 256MiB --rounds 5 --json out.json

Each round starts a fresh edge (so every byte is a miss), fetches one tiny other object
through it (connections up, code paths warm), then downloads the object with
curl directly from the origin and through the edge, alternating which goes first. It prints
time to first byte (TTFB) and throughput for both, and the ratios edge/origin. Streaming
while filling (and read-ahead) should keep both ratios near 1: the edge sends a block's
first bytes as they arrive instead of after the block or the object is complete.

The origin is Debian's nginx serving a tmpfs directory (sendfile on). Every process this
starts is stopped by PID in a finally block; servers bind 127.0.0.1 on free ports.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.config import parse_size  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp: Path, root: Path, rate: str = "") -> tuple[subprocess.Popen, int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("nginx is not installed: apt-get install -y nginx-light")
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off; master_process off; worker_processes 1; pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
    {f"limit_rate {rate};" if rate else ""}
    client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/px;
    default_type application/octet-stream;
    server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def start_edge(origin_url: str, cache: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "serve", "--listen", "127.0.0.1:0", "--origin", origin_url,
         "--cache-size", str(cache), "--arena-path", "anonymous", "--log-level", "warning",
         "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    line = proc.stdout.readline().decode()   # type: ignore[union-attr]
    m = re.search(r"serving http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        proc.kill()
        sys.exit(f"edge did not start: {line!r}")
    return proc, int(m.group(1))


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def curl(url: str, timeout: float) -> dict:
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "--max-time", str(timeout),
         "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}", url],
        capture_output=True, text=True, timeout=timeout + 10)
    code, ttfb, total, size = out.stdout.split()
    if code != "200":
        raise RuntimeError(f"{url}: HTTP {code} {out.stderr}")
    return {"ttfb_ms": float(ttfb) * 1000, "seconds": float(total), "bytes": int(size),
            "mb_s": int(size) / float(total) / 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB", help="object size (default 1GiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--origin-rate", default="", metavar="RATE",
                    help="nginx limit_rate per connection, e.g. 100m, to play a remote store "
                         "(default: unlimited loopback)")
    args = ap.parse_args(argv)
    size = parse_size(args.size, "--size")
    tmp = Path(tempfile.mkdtemp(prefix="edge-cold-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    procs: list[subprocess.Popen] = []
    try:
        root = tmp / "www"
        root.mkdir()
        with open(root / "blob.bin", "wb") as f:
            left = size
            while left:
                n = min(left, 64 << 20)
                f.write(os.urandom(n))
                left -= n
        (root / "warm.bin").write_bytes(os.urandom(1000))
        nginx, nport = start_nginx(tmp, root, args.origin_rate)
        procs.append(nginx)
        origin = f"http://127.0.0.1:{nport}/"
        curl(origin + "blob.bin", 600)            # page cache / tmpfs warm for the origin
        direct, edge = [], []
        for r in range(args.rounds):
            proc, eport = start_edge(origin, max(2 * size, 64 << 20))
            procs.append(proc)
            try:
                # A fresh process, but not a cold one: its first origin connection and lazy
                # imports are not what "a cold object" measures.
                curl(f"http://127.0.0.1:{eport}/warm.bin", 60)
                order = ["direct", "edge"] if r % 2 == 0 else ["edge", "direct"]
                for who in order:
                    if who == "direct":
                        direct.append(curl(origin + "blob.bin", 600))
                    else:
                        edge.append(curl(f"http://127.0.0.1:{eport}/blob.bin", 600))
            finally:
                stop(proc)
                procs.remove(proc)
            print(f"round {r + 1}: origin {direct[-1]['ttfb_ms']:.1f} ms / {direct[-1]['mb_s']:.0f} MB/s, "
                  f"edge (cold) {edge[-1]['ttfb_ms']:.1f} ms / {edge[-1]['mb_s']:.0f} MB/s", flush=True)
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("ttfb_ms", "mb_s")}
               for k, v in (("origin", direct), ("edge", edge))}
        ratio_tp = med["edge"]["mb_s"] / med["origin"]["mb_s"]
        ratio_ttfb = med["edge"]["ttfb_ms"] / med["origin"]["ttfb_ms"]
        rate = f"origin limited to {args.origin_rate}B/s per connection" if args.origin_rate \
            else "origin unlimited (loopback, tmpfs, sendfile)"
        print(f"\ncold {args.size} object, {args.rounds} rounds, {rate}; medians (curl, one connection):")
        print(f"| | TTFB ms | MB/s |\n|---|---|---|\n"
              f"| origin (nginx, direct) | {med['origin']['ttfb_ms']:.1f} | {med['origin']['mb_s']:.0f} |\n"
              f"| edge, cold miss | {med['edge']['ttfb_ms']:.1f} | {med['edge']['mb_s']:.0f} |\n"
              f"| ratio edge/origin | {ratio_ttfb:.2f} | {ratio_tp:.2f} |")
        if args.json:
            Path(args.json).write_text(json.dumps({"size": size, "rounds": args.rounds, "origin": direct,
                                                   "edge": edge, "median": med}, indent=2))
        return 0
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
