#!/usr/bin/env python3
"""Memory of the edge under many slow clients downloading large files.

    python bench/memory.py                       # 1,000 clients, 60 s, --workers 1 then 2
    python bench/memory.py --workers 1 --duration 20 --connections 200    # smoke run

What one run does (per --workers value):

* makes a tmpfs directory (/dev/shm, removed at exit) with --files files of --file-size
  (default 4 x 512 MiB: 2 GiB of origin, 8x the cache);
* starts the edge as our child: ``python -m edge serve --listen 127.0.0.1:PORT --origin DIR
  --cache-size 256MiB --workers N --arena-path anonymous`` (the arena is prefaulted at start,
  so it is in the RSS from the first sample);
* opens --connections client sockets with a small SO_RCVBUF (set before connect, so the TCP
  window stays small), each sending one GET: a share (--whole-share, 50%) download a whole file
  from byte 0 (they share blocks), the rest an open-ended range ``bytes=X-`` from a random
  block-aligned offset (each needs its own blocks, so the cache churns and evicts);
* while --duration lasts, a share of the clients (--stalled-share, 25%) read nothing, the
  others read --rate bytes per second each (4 KiB/s), in small slices every 0.25 s;
* every second samples the edge's process tree (supervisor and workers) from /proc:
  VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup), summed over the processes;
* prints the peak of both against the bound of the performance issue:
  ``cache.size + 64 MiB + 2 MiB per 100 connections`` (256 + 64 + 20 = 340 MiB for 1,000).

RSS or PSS? VmRSS counts every page a process maps that is resident, including pages it shares
with other processes: with --workers 2, the supervisor and the workers are forks of one Python
process and share the interpreter's and libraries' pages copy-on-write, so a sum of VmRSS counts
those pages once per process (an over-estimate of the memory used). PSS charges each shared page
1/n to each of the n processes mapping it, so the sum of PSS over the tree is the memory the tree
really holds (shared libraries mapped by other programs too are charged partly to them). The bound
is checked against both; PSS is the fair one, RSS the one an operator's `ps` shows per process.
With --workers N > 1 the arena is one shared region (a /dev/shm file, prefaulted by the
supervisor) that every process maps: the RSS sum counts it N + 1 times, PSS once.
Kernel socket buffers are not in either: they are the kernel's memory, not the process's.

Bounded: every client socket has a timeout, the whole run a deadline; the edge is stopped by its
PID (SIGTERM, SIGKILL after 15 s) in a finally block; all sockets are closed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB, MiB = 1 << 10, 1 << 20


def parse_size(s: str) -> int:
    s = s.strip()
    for unit, mult in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB), ("G", 1 << 30), ("M", MiB),
                       ("K", KiB)):
        if s.endswith(unit):
            return int(float(s[:-len(unit)]) * mult)
    return int(s)


def proc_tree(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(data[data.rfind(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def mem_of(pid: int) -> dict[str, int] | None:
    """VmRSS, RssAnon, RssFile, RssShmem (status) and Pss (smaps_rollup) of one process, bytes."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0]) * KiB
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "Pss":
                    out["Pss"] = int(v.split()[0]) * KiB
    except (OSError, ValueError):
        return None
    return out if "VmRSS" in out else None


def sample(root: int) -> dict:
    per = {}
    for pid in proc_tree(root):
        m = mem_of(pid)
        if m:
            per[pid] = m
    tot = {k: sum(m.get(k, 0) for m in per.values())
           for k in ("VmRSS", "Pss", "RssAnon", "RssFile", "RssShmem")}
    tot["procs"] = len(per)
    tot["per_process_rss"] = {pid: m["VmRSS"] for pid, m in per.items()}
    return tot


def edge_connections_count(port: int) -> int:
    """Established TCP connections to the edge's port (from /proc/net/tcp, server side)."""
    n = 0
    hexport = f"{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1].endswith(":" + hexport) and parts[3] == "01":
                    n += 1
    except OSError:
        return -1
    return n


class Run:
    def __init__(self, args: argparse.Namespace, origin: str, files: list[str], workers: int):
        self.a, self.origin, self.files, self.workers = args, origin, files, workers
        self.proc: subprocess.Popen | None = None
        self.socks: list[socket.socket] = []

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def start_edge(self, workdir: str) -> None:
        a = self.a
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ)
        env.pop("EDGE_NO_EXTENSIONS", None)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        d = os.path.join(workdir, f"edge-w{self.workers}")
        os.mkdir(d)
        self.cmd = [sys.executable, "-m", "edge", "serve", "--listen", f"127.0.0.1:{self.port}",
                    "--origin", self.origin, "--cache-size", a.cache_size, "--workers",
                    str(self.workers), "--arena-path", "anonymous"]
        self.errlog = os.path.join(d, "stderr.log")
        self.proc = subprocess.Popen(self.cmd, cwd=d, env=env, stdin=subprocess.DEVNULL,
                                     stdout=open(os.path.join(d, "stdout.log"), "wb"),
                                     stderr=open(self.errlog, "wb"), start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edge exited ({self.proc.returncode}): "
                                   + open(self.errlog, errors="replace").read()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(f"HEAD /{self.files[0]} HTTP/1.1\r\nHost: x\r\n"
                              "Connection: close\r\n\r\n".encode())
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        # every worker up: with N workers wait for N children
                        if self.workers == 1 or len(proc_tree(self.proc.pid)) > self.workers:
                            return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("edge did not answer within 60 s")

    def stop_edge(self) -> int | None:
        p = self.proc
        if p is None or p.poll() is not None:
            return p.returncode if p else None
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        return p.returncode

    def open_clients(self) -> dict:
        a = self.a
        rng = random.Random(a.seed)
        fails = 0
        kinds = {"whole": 0, "range": 0}
        for i in range(a.connections):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", self.port))
            except OSError:
                fails += 1
                s.close()
                continue
            name = self.files[i % len(self.files)]
            if rng.random() < a.whole_share:
                hdr = ""
                kinds["whole"] += 1
            else:
                blocks = a.file_size // MiB
                hdr = f"Range: bytes={rng.randrange(0, blocks) * MiB}-\r\n"
                kinds["range"] += 1
            s.sendall(f"GET /{name} HTTP/1.1\r\nHost: bench\r\n{hdr}\r\n".encode())
            s.setblocking(False)
            self.socks.append(s)
            if i % 100 == 99:
                time.sleep(0.05)  # let the accept backlog drain
        return {"opened": len(self.socks), "connect_failures": fails, **kinds}

    def run(self, workdir: str) -> dict:
        a = self.a
        self.start_edge(workdir)
        time.sleep(1.5)
        idle = sample(self.proc.pid)
        self.log(f"[workers={self.workers}] edge pid {self.proc.pid} on port {self.port}; idle: "
                 f"RSS {idle['VmRSS'] / MiB:.0f} MiB, PSS {idle['Pss'] / MiB:.0f} MiB in "
                 f"{idle['procs']} process(es)")
        t_open = time.monotonic()
        opened = self.open_clients()
        self.log(f"[workers={self.workers}] opened {opened['opened']} connections in "
                 f"{time.monotonic() - t_open:.1f}s ({opened['connect_failures']} failed; "
                 f"{opened['whole']} whole-file, {opened['range']} ranges from random offsets)")
        rng = random.Random(a.seed + 1)
        readers = [s for s in self.socks if rng.random() >= a.stalled_share]
        closed: set[int] = set()
        received = 0
        samples = []
        t0 = time.monotonic()
        next_sample = t0
        tick = 0.25
        per_tick = max(1, int(a.rate * tick))
        while time.monotonic() - t0 < a.duration:
            now = time.monotonic()
            if now >= next_sample:
                m = sample(self.proc.pid)
                m["t"] = round(now - t0, 1)
                m["server_conns"] = edge_connections_count(self.port)
                m["client_open"] = len(self.socks) - len(closed)
                m["received"] = received
                samples.append(m)
                if len(samples) % 10 == 1:
                    self.log(f"  t={m['t']:5.1f}s RSS {m['VmRSS'] / MiB:7.1f} MiB  PSS "
                             f"{m['Pss'] / MiB:7.1f} MiB  anon {m['RssAnon'] / MiB:7.1f} MiB  "
                             f"server conns {m['server_conns']}  client open "
                             f"{m['client_open']}  received {received / MiB:.0f} MiB")
                next_sample += 1.0
            for s in readers:
                fd = s.fileno()
                if fd in closed or fd < 0:
                    continue
                try:
                    data = s.recv(per_tick)
                    if not data:
                        closed.add(fd)
                    received += len(data)
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(fd)
            time.sleep(max(0.0, tick - (time.monotonic() - now)))
        if self.proc.poll() is not None:
            raise RuntimeError(f"edge died during the run (status {self.proc.returncode})")
        final = sample(self.proc.pid)
        for s in self.socks:
            s.close()
        self.socks = []
        time.sleep(2)
        after = sample(self.proc.pid)
        code = self.stop_edge()
        errs = [ln for ln in open(self.errlog, errors="replace").read().splitlines()
                if "ERROR" in ln or "Traceback" in ln]
        cache = parse_size(a.cache_size)
        n = opened["opened"]
        bound = cache + 64 * MiB + 2 * MiB * n / 100
        peak_rss = max(s["VmRSS"] for s in samples)
        peak_pss = max(s["Pss"] for s in samples)
        res = {
            "workers": self.workers, "connections": n, "opened": opened, "cache_size": cache,
            "bound": bound, "idle": {k: idle[k] for k in ("VmRSS", "Pss", "procs")},
            "peak_rss": peak_rss, "peak_pss": peak_pss,
            "peak_rss_t": next(s["t"] for s in samples if s["VmRSS"] == peak_rss),
            "peak_anon": max(s["RssAnon"] for s in samples),
            "final": {k: final[k] for k in ("VmRSS", "Pss", "RssAnon", "procs")},
            "after_close": {k: after[k] for k in ("VmRSS", "Pss")},
            "received": received,
            "server_conns_max": max(s["server_conns"] for s in samples),
            "server_conns_end": samples[-1]["server_conns"],
            "client_closed": len(closed), "edge_exit": code, "edge_log_errors": errs[:10],
            "rss_ok": peak_rss <= bound, "pss_ok": peak_pss <= bound,
            "samples": [{k: v for k, v in s.items() if k != "per_process_rss"} for s in samples],
            "per_process_rss_at_peak": next(s["per_process_rss"] for s in samples
                                            if s["VmRSS"] == peak_rss),
        }
        return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2", help="comma-separated --workers values (1,2)")
    p.add_argument("--cache-size", default="256MiB", help="edge --cache-size (256MiB)")
    p.add_argument("--connections", type=int, default=1000, help="slow clients (1000)")
    p.add_argument("--duration", type=float, default=60, help="seconds per run (60)")
    p.add_argument("--files", type=int, default=4, help="origin files (4)")
    p.add_argument("--file-size", default="512MiB", help="size of each origin file (512MiB)")
    p.add_argument("--rcvbuf", type=int, default=4096, help="client SO_RCVBUF (4096)")
    p.add_argument("--rate", type=int, default=4096,
                   help="bytes per second each reading client takes (4096)")
    p.add_argument("--stalled-share", type=float, default=0.25,
                   help="share of clients that read nothing (0.25)")
    p.add_argument("--whole-share", type=float, default=0.5,
                   help="share of clients downloading a whole file from byte 0; the others ask "
                        "for bytes=X- from a random offset (0.5)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    a.file_size = parse_size(a.file_size)
    workers = [int(x) for x in a.workers.split(",") if x.strip()]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.connections * 2 + 512  # ours, and the edge inherits it (its side of each socket)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard > 0 else want, hard))
    deadline = time.monotonic() + len(workers) * (a.duration + 120) + 120

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_term)
    signal.alarm(int(deadline - time.monotonic()))  # the whole thing is bounded
    workdir = tempfile.mkdtemp(prefix="edge-memory-", dir="/dev/shm")
    results, runs = [], []
    try:
        origin = os.path.join(workdir, "origin")
        os.mkdir(origin)
        chunk = os.urandom(16 * MiB)
        files = []
        for i in range(a.files):
            name = f"big{i}.bin"
            with open(os.path.join(origin, name), "wb") as f:
                for j in range(a.file_size // len(chunk)):
                    f.write(j.to_bytes(8, "little") + i.to_bytes(8, "little") + chunk[16:])
                f.write(chunk[:a.file_size % len(chunk)])
            files.append(name)
        print(f"origin: {a.files} x {a.file_size / MiB:.0f} MiB on tmpfs ({workdir})",
              file=sys.stderr)
        for w in workers:
            r = Run(a, origin, files, w)
            runs.append(r)
            try:
                results.append(r.run(workdir))
            finally:
                for s in r.socks:
                    s.close()
                r.stop_edge()
    finally:
        for r in runs:
            r.stop_edge()
        shutil.rmtree(workdir, ignore_errors=True)
        signal.alarm(0)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/memory.py" + "".join(" " + x for x in (sys.argv[1:] if argv is None
                                                                else argv))
    print()
    print(f"Command: `{cmd}`  ")
    print(f"Date: {date}; nproc {os.cpu_count()}; kernel {platform.release()}; Python "
          f"{platform.python_version()}  ")
    print(f"Clients: {a.connections} sockets, SO_RCVBUF {a.rcvbuf}, {a.whole_share:.0%} whole "
          f"files from 0, the rest `bytes=X-` from random offsets; {a.stalled_share:.0%} read "
          f"nothing, the others {a.rate} B/s each; {a.duration:g} s; origin {a.files} x "
          f"{a.file_size / MiB:.0f} MiB on tmpfs; edge `--cache-size {a.cache_size} "
          "--arena-path anonymous`.")
    print()
    print("| workers | connections (server side max / end) | idle RSS / PSS | peak RSS (sum) | "
          "peak PSS (sum) | bound | RSS within | PSS within |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in results:
        print(f"| {r['workers']} | {r['connections']} ({r['server_conns_max']} / "
              f"{r['server_conns_end']}) | {r['idle']['VmRSS'] / MiB:.0f} / "
              f"{r['idle']['Pss'] / MiB:.0f} MiB | {r['peak_rss'] / MiB:.1f} MiB | "
              f"{r['peak_pss'] / MiB:.1f} MiB | {r['bound'] / MiB:.0f} MiB | "
              f"{'yes' if r['rss_ok'] else 'NO'} ({(r['peak_rss'] - r['bound']) / MiB:+.1f}) | "
              f"{'yes' if r['pss_ok'] else 'NO'} ({(r['peak_pss'] - r['bound']) / MiB:+.1f}) |")
    for r in results:
        print(f"\nworkers={r['workers']}: peak RSS at t={r['peak_rss_t']}s, per process "
              + ", ".join(f"{pid}: {v / MiB:.0f} MiB" for pid, v in
                          r["per_process_rss_at_peak"].items())
              + f"; anon RSS peak {r['peak_anon'] / MiB:.0f} MiB; clients received "
              f"{r['received'] / MiB:.1f} MiB in all; {r['client_closed']} reading clients saw "
              f"the server close; after closing all: RSS {r['after_close']['VmRSS'] / MiB:.0f} "
              f"MiB; edge exit status {r['edge_exit']}"
              + (f"; edge logged errors: {r['edge_log_errors'][:2]}" if r["edge_log_errors"]
                 else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": cmd, "date": date, "args": vars(a), "results": results}, f,
                      indent=1, default=str)
    return 0 if all(r["pss_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
