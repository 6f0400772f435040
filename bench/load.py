#!/usr/bin/env python3
"""Run bench/locustfile.py against a fresh edge on a generated catalogue, bounded in time.

    python bench/load.py                         # 300 files, 50 users, 60 s
    python bench/load.py --users 20 --time 20s --files 100     # smoke run

What it does: makes a catalogue of --files files (sizes log-uniform between --min-size and
--max-size, seeded) in a tmpfs directory and a manifest for the locustfile; starts the edge as our
child (``python -m edge serve --listen 127.0.0.1:PORT --origin DIR --cache-size 256MiB
--arena-path anonymous --admin-listen 127.0.0.1:APORT``, token in EDGE_ADMIN_TOKEN), smaller than
the catalogue so there are misses; runs ``locust -f bench/locustfile.py --headless -u USERS -r
RATE -t TIME --host http://127.0.0.1:PORT --only-summary`` with a timeout; prints locust's
summary and the edge's hit ratio from its own counters; stops the edge by its PID and removes the
directory. Exit status: locust's (1 when any request failed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB, MiB = 1 << 10, 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_seconds(t: str) -> float:
    m = re.fullmatch(r"(\d+)([smh]?)", t)
    if not m:
        raise SystemExit(f"--time: want e.g. 60s, 2m: {t!r}")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=300, help="catalogue files (300)")
    p.add_argument("--min-size", type=int, default=64 * KiB, help="smallest file, bytes (64 KiB)")
    p.add_argument("--max-size", type=int, default=16 * MiB, help="largest file, bytes (16 MiB)")
    p.add_argument("--zipf-s", default="1.0", help="Zipf exponent of popularity (1.0)")
    p.add_argument("--cache-size", default="256MiB", help="edge --cache-size (256MiB)")
    p.add_argument("--workers", type=int, default=1, help="edge --workers (1)")
    p.add_argument("--users", type=int, default=50, help="locust -u (50)")
    p.add_argument("--spawn-rate", type=int, default=10, help="locust -r (10)")
    p.add_argument("--time", default="60s", help="locust -t (60s)")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    secs = parse_seconds(a.time)
    if not shutil.which("locust"):
        print("load.py: locust not found: pip install locust", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="edge-load-", dir="/dev/shm")
    edge = None
    try:
        origin = os.path.join(workdir, "origin")
        os.makedirs(os.path.join(origin, "cat"))
        rng = random.Random(a.seed)
        blob = os.urandom(a.max_size + 4096)
        files, total = [], 0
        lo, hi = math.log(a.min_size), math.log(a.max_size)
        for i in range(1, a.files + 1):
            size = int(math.exp(rng.uniform(lo, hi)))
            name = f"cat/{i:05d}.bin"
            off = rng.randrange(0, 4096)
            with open(os.path.join(origin, name), "wb") as f:
                f.write(i.to_bytes(4, "little") + blob[off:off + size - 4])
            files.append(["/" + name, size])
            total += size
        manifest = os.path.join(workdir, "catalogue.json")
        with open(manifest, "w") as f:
            json.dump({"files": files}, f)
        print(f"catalogue: {a.files} files, {a.min_size / KiB:.0f} KiB-{a.max_size / MiB:.0f} "
              f"MiB log-uniform, {total / MiB:.0f} MiB in all; edge cache {a.cache_size}",
              flush=True)
        port, aport = free_port(), free_port()
        token = "load-" + os.urandom(8).hex()
        env = dict(os.environ)
        env.pop("EDGE_NO_EXTENSIONS", None)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
        env["EDGE_ADMIN_TOKEN"] = token
        edge_cmd = [sys.executable, "-m", "edge", "serve", "--listen", f"127.0.0.1:{port}",
                    "--origin", origin, "--cache-size", a.cache_size, "--workers",
                    str(a.workers), "--arena-path", "anonymous",
                    "--admin-listen", f"127.0.0.1:{aport}"]
        errlog = os.path.join(workdir, "edge.stderr")
        edge = subprocess.Popen(edge_cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=open(os.path.join(workdir, "edge.stdout"), "wb"),
                                stderr=open(errlog, "wb"), start_new_session=True)
        t0 = time.monotonic()
        while True:
            if edge.poll() is not None:
                print(open(errlog, errors="replace").read()[-2000:], file=sys.stderr)
                return 2
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{aport}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() - t0 > 60:
                    print("load.py: the edge did not come up in 60 s", file=sys.stderr)
                    return 2
                time.sleep(0.2)
        print(f"edge: pid {edge.pid}, http://127.0.0.1:{port}/, admin 127.0.0.1:{aport}",
              flush=True)
        lenv = dict(os.environ, EDGE_CATALOGUE=manifest, EDGE_ZIPF_S=a.zipf_s,
                    EDGE_ADMIN_URL=f"http://127.0.0.1:{aport}", EDGE_ADMIN_TOKEN=token)
        lcmd = ["locust", "-f", os.path.join(REPO, "bench", "locustfile.py"), "--headless",
                "-u", str(a.users), "-r", str(a.spawn_rate), "-t", a.time,
                "--host", f"http://127.0.0.1:{port}", "--only-summary", "--stop-timeout", "10"]
        print("running: " + " ".join(lcmd), flush=True)
        lp = subprocess.Popen(lcmd, env=lenv, cwd=workdir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
        try:
            out, _ = lp.communicate(timeout=secs + 90)
        except subprocess.TimeoutExpired:
            os.kill(lp.pid, signal.SIGTERM)
            try:
                out, _ = lp.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(lp.pid, signal.SIGKILL)
                out, _ = lp.communicate(timeout=10)
            print("load.py: locust did not stop in time: stopped", file=sys.stderr)
        text = out.decode(errors="replace")
        # locust's own log lines are noisy; keep the summary tables and our lines
        keep = [ln for ln in text.splitlines() if not re.search(
            r"\] (INFO|DEBUG)/locust\.(main|runners)", ln) or "EDGE" in ln]
        print("\n".join(keep))
        edge_errs = [ln for ln in open(errlog, errors="replace").read().splitlines()
                     if "ERROR" in ln or "Traceback" in ln]
        if edge_errs:
            print(f"edge logged {len(edge_errs)} error line(s), first: {edge_errs[0][:300]}")
        return lp.returncode or 0
    finally:
        if edge is not None and edge.poll() is None:
            os.kill(edge.pid, signal.SIGTERM)
            try:
                edge.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(edge.pid, signal.SIGKILL)
                edge.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
