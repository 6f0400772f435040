#!/usr/bin/env python3
"""edge vs nginx vs Varnish, side by side, one command.

    python bench/compare.py                    # full run: 3 rounds x 10 s per scenario/server
    python bench/compare.py --quick            # smoke run (~2 minutes)
    python bench/compare.py --scenarios get1k,range1m --rounds 5 --json /tmp/cmp.json
    python bench/compare.py --workers 2        # 2 workers each, nothing pinned

What it does:

* makes a fresh directory under /dev/shm (removed at exit) holding 1k.bin (1 KiB),
  64k.bin (64 KiB), 1m.bin (1 MiB) and 256m.bin (256 MiB), all random bytes;
* starts nginx (``daemon off; master_process off; worker_processes 1``, sendfile, tcp_nopush,
  no access log), the edge (``python -m edge serve``, Cython extensions, anonymous arena
  large enough for everything) and Varnish (``varnishd -F``, ``-s malloc``, a VCL that caches
  everything for a day, backend = that nginx), all as children pinned to CPU 0 with
  ``taskset -c 0``; with ``--workers N`` nginx has N worker processes (and its master), the
  edge ``--workers N``, Varnish its default thread pools, and nothing is pinned (wrk neither);
* warms the edge and Varnish (every file fetched whole) and checks that probes are cache hits;
* checks that both servers return the same bytes as the file for a few ranges (sanity);
* runs ``taskset -c 1 wrk -t1 -cC -dDs --latency`` per scenario, alternating nginx, edge,
  nginx, edge ... for ``--rounds`` rounds, and reports the median per server and edge/nginx;
* flags every run with errors (wrk socket errors, non-2xx, short responses, error lines in the
  server's log, a dead server): flagged runs are listed and left out of the medians, never
  silently averaged in, and the exit status is 1;
* accounts CPU per run from /proc (server, wrk, every other process): a run during which other
  processes used CPU is NOISY (waited for, re-run within --noise-budget, left out of the
  medians when quiet runs exist); a run where wrk saturated its CPU but the server did not is
  CLIENT-BOUND (the server's number is a lower bound; the per-CPU-second rows still compare);
* prints a table and a Markdown block for bench/RESULTS.md (command, date, nproc, versions).

Scenarios (``--scenarios``, comma separated):

* ``get1k``   GET of the 1 KiB file (cache hits): requests/s
* ``range1m`` ``Range: bytes=a-(a+1MiB-1)`` at a random offset ``a`` of the 256 MiB file, a new
  ``a`` per request (wrk Lua script, seeded math.random): MB/s of body (1 MB = 10^6 bytes)
* ``get1m``   GET of the 1 MiB file (cache hits): MB/s of body. The same bytes every time, so
  they stay in the CPU caches: this is how fast one wrk thread can read 1 MiB responses at
  all here, the ceiling for every server in ``range1m`` (whose 256 MiB are read from memory)
* ``get64k``  GET of the 64 KiB file (cache hits): requests/s and MB/s of body
* ``multirange`` ``Range: bytes=a-(a+64KiB-1),b-(b+64KiB-1)`` with ``a`` random in the first half
  and ``b`` in the second half of the 256 MiB file (``multipart/byteranges``): requests/s and
  MB/s of range payload (2 x 64 KiB per response; multipart framing not counted). A server that
  answers it with anything but a 206 multipart (Varnish serves one range only and answers 200
  with the whole object) is reported as "not supported" and not run.
* ``zipf``    GET of ``/z/NNNNN.bin`` drawn from a Zipf(``--zipf-s``) distribution over a
  catalogue of ``--zipf-files`` files of 16-256 KiB; the edge and Varnish are restarted for this
  scenario with a cache of ``--zipf-cache-size`` (smaller than the catalogue), so the tail
  misses; nginx serves the files from tmpfs. MB/s here is all bytes wrk read (headers are
  < 0.3% of a response); the edge's hit ratio over the measured runs comes from its /stats.

Every run is bounded (wrk ``-d``, a timeout on each child), an overall ``--deadline`` stops the
whole thing, and every child is stopped by its PID in a ``finally`` block.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB, MiB = 1 << 10, 1 << 20

FILES = {"1k.bin": 1 * KiB, "64k.bin": 64 * KiB, "1m.bin": 1 * MiB, "256m.bin": 256 * MiB}
SERVER_ORDER = ("nginx", "edge", "varnish")
PEERS = ("nginx", "varnish")  # the edge's ratios are against these

# name -> (file, description, body bytes per response, range length or None, metrics shown)
SCENARIOS = {
    "get1k": ("1k.bin", "1 KiB GET hits", 1 * KiB, None, ("rps",)),
    "range1m": ("256m.bin", "1 MiB ranges, random offsets in 256 MiB", 1 * MiB, 1 * MiB, ("mbps",)),
    "get1m": ("1m.bin", "1 MiB GET hits, one hot object (wrk's ceiling)", 1 * MiB, None,
              ("mbps",)),
    "get64k": ("64k.bin", "64 KiB GET hits", 64 * KiB, None, ("rps", "mbps")),
    "multirange": ("256m.bin", "2-part multi-range, 2 x 64 KiB in 256 MiB", 128 * KiB, 64 * KiB,
                   ("rps", "mbps")),
    "zipf": ("", "Zipf mix with misses (16-256 KiB files)", 0, None, ("rps", "mbps")),
}
METRIC_UNIT = {"rps": "req/s", "mbps": "MB/s"}

# wrk's done() hook prints one machine-readable line; it costs nothing per request.
LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,"err_connect":%.0f,' ..
    '"err_read":%.0f,"err_write":%.0f,"err_status":%.0f,"err_timeout":%.0f,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%.0f,"lat_p90_us":%.0f,"lat_p99_us":%.0f,"lat_max_us":%.0f}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""

LUA_RANGE = r"""
math.randomseed(%(seed)d)
local size, len = %(size)d, %(len)d
request = function()
  local a = math.random(0, size - len)
  return wrk.format("GET", "%(path)s", {["Range"] = "bytes=" .. a .. "-" .. (a + len - 1)})
end
"""

LUA_MULTI = r"""
math.randomseed(%(seed)d)
local half, len = %(half)d, %(len)d
request = function()
  local a = math.random(0, half - len)
  local b = half + math.random(0, half - len)
  return wrk.format("GET", "%(path)s", {["Range"] = "bytes=" .. a .. "-" .. (a + len - 1) ..
                                         "," .. b .. "-" .. (b + len - 1)})
end
"""

LUA_ZIPF = r"""
math.randomseed(%(seed)d)
local n, s = %(n)d, %(s)f
local cdf, acc = {}, 0
for i = 1, n do acc = acc + 1 / i ^ s; cdf[i] = acc end
for i = 1, n do cdf[i] = cdf[i] / acc end
request = function()
  local u, lo, hi = math.random(), 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", string.format("/z/%%05d.bin", lo))
end
"""

VARNISH_VCL = """\
vcl 4.1;
backend default {{
    .host = "127.0.0.1";
    .port = "{port}";
}}
sub vcl_backend_response {{
    set beresp.ttl = 1d;
    set beresp.grace = 1h;
}}
"""

NGINX_CONF = """\
daemon off;
master_process {master};
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def varnish_size(size: str) -> str:
    """'64MiB', '1GiB', '1G', '512M', a plain number of bytes -> varnishd's BYTES ('65536k')."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?B)?\s*", size)
    if not m:
        raise ValueError(f"cannot read size {size!r}")
    mult = 1 << (10 * " KMGT".index(m.group(2).upper() or " "))
    return f"{int(float(m.group(1)) * mult) // 1024}k"


class Deadline(Exception):
    pass


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> dict[int, tuple[str, float, int]]:
    """pid -> (comm, CPU seconds of the process plus its reaped children), kernel threads left out.

    Summing over pids, ``after - before`` is the CPU time used in between (a process that exited
    and was reaped moves its whole time into its parent's cutime/cstime, which the subtraction of
    its own ``before`` time makes right)."""
    snap = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = data[data.rfind(")") + 2:].split()
        pid, ppid = int(name), int(rest[1])
        if pid == 2 or ppid == 2:  # kthreadd and kernel threads (softirq work of our own load)
            continue
        comm = data[data.find("(") + 1:data.rfind(")")]
        snap[pid] = (comm, sum(int(x) for x in rest[11:15]) / CLK_TCK, ppid)
    return snap


def tree(snaps: list[dict], root: int) -> set[int]:
    """``root`` and its descendants in any of the cpu_snapshot()s (workers, Varnish's child)."""
    kids: dict[int, set[int]] = {}
    for snap in snaps:
        for pid, (_, _, ppid) in snap.items():
            kids.setdefault(ppid, set()).add(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(kids.get(pid, ()))
    return out


def cpu_times() -> dict[str, tuple[int, int, int]]:
    """/proc/stat per CPU: name -> (busy, steal, total) in ticks."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *v = line.split()
            v = [int(x) for x in v[:8]] + [0] * (8 - len(v[:8]))
            user, nice, system, idle, iowait, irq, softirq, steal = v
            out[name[3:]] = (user + nice + system + irq + softirq, steal, sum(v))
    return out


def cpu_busy(t0: dict, t1: dict, cpus: str) -> tuple[float, float]:
    """(busy, steal) fraction of the CPUs in the list ``cpus`` ("0", "0,1", "2-3") between two
    cpu_times() readings."""
    sel = set()
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        sel.update(str(i) for i in range(int(lo), int(hi or lo) + 1))
    busy = steal = total = 0
    for c in sel & t0.keys() & t1.keys():
        busy += t1[c][0] - t0[c][0]
        steal += t1[c][1] - t0[c][1]
        total += t1[c][2] - t0[c][2]
    return (busy / total, steal / total) if total else (0.0, 0.0)


def cpu_used(before: dict, after: dict, pids: set[int] | None = None,
             exclude: set[int] = frozenset()) -> tuple[float, list[tuple[float, int, str]]]:
    """CPU seconds used between two snapshots by ``pids`` (all when None) minus ``exclude``;
    with the top users as (seconds, pid, comm)."""
    def keep(pid: int) -> bool:
        return pid not in exclude and (pids is None or pid in pids)
    total = sum(x[1] for pid, x in after.items() if keep(pid)) - sum(
        x[1] for pid, x in before.items() if keep(pid))
    delta = {pid: x[1] - before.get(pid, ("", 0.0, 0))[1] for pid, x in after.items()}
    for pid, (_, t, ppid) in before.items():  # a reaped child's old time is not its parent's
        if pid not in after and ppid in delta:
            delta[ppid] -= t
    top = sorted(((d, pid, after[pid][0]) for pid, d in delta.items() if keep(pid)),
                 reverse=True)[:3]
    return max(total, 0.0), [x for x in top if x[0] > 0]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t_end = time.monotonic() + args.deadline
        self.children: list[subprocess.Popen] = []
        self.workdir = ""
        self.notes: list[str] = []
        self.servers: list[str] = args.servers
        self.port: dict[str, int] = {}
        self.proc: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, list[str]] = {}
        self.noise_spent = 0.0  # seconds spent waiting for quiet and re-running noisy runs
        self.unsupported: dict[tuple[str, str], str] = {}  # (scenario, server) -> why not run
        self.zipf_files: list[tuple[str, int]] = []  # (name under www/, size), rank order
        self.zipf_stats: dict = {}
        self.starts = 0

    def pin(self, cpus: str) -> list[str]:
        """The taskset prefix, or nothing in --workers N > 1 mode (nothing pinned)."""
        return [] if self.args.unpinned else ["taskset", "-c", cpus]

    # ------------------------------------------------------------------ helpers
    def remaining(self, want: float | None = None) -> float:
        left = self.t_end - time.monotonic()
        if left <= 0:
            raise Deadline(f"overall deadline of {self.args.deadline:.0f}s reached")
        return left if want is None else min(want, left)

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.log("NOTE: " + msg)

    @staticmethod
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def get(self, port: int, path: str, headers: dict | None = None, timeout: float = 60):
        """One GET; returns (status, headers dict lower-cased, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.remaining(timeout))
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            conn.close()

    def wait_http(self, name: str, proc: subprocess.Popen, port: int, timeout: float = 30,
                  path: str = "/1k.bin") -> None:
        t0, last = time.monotonic(), None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode} during start")
            try:
                st, _, _ = self.get(port, path, timeout=5)
                if st == 200:
                    return
                if name == "varnish" and st == 503 and time.monotonic() - t0 < timeout:
                    time.sleep(0.2)  # its child may still be starting
                    continue
                raise RuntimeError(f"{name}: GET {path} answered {st}")
            except (ConnectionError, OSError, http.client.HTTPException) as exc:
                last = exc
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{name} did not answer GET {path} on port {port} within "
                                   f"{timeout:.0f}s (last error: {last!r})")
            self.remaining()
            time.sleep(0.1)

    def log_sizes(self) -> dict[str, int]:
        return {p: os.path.getsize(p) for ps in self.logs.values() for p in ps
                if os.path.exists(p)}

    def new_log_errors(self, server: str, sizes: dict[str, int]) -> list[str]:
        """Error-looking lines the server logged since ``sizes`` was taken."""
        bad = re.compile(r"\b(ERROR|CRITICAL|Traceback|Panic)\b|\[(error|crit|alert|emerg)\]"
                         r"|Child \(\d+\) (died|not responding)")
        out = []
        for path in self.logs.get(server, []):
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                f.seek(sizes.get(path, 0))
                text = f.read(1 << 20).decode(errors="replace")
            out += [ln.strip() for ln in text.splitlines() if bad.search(ln)]
        return out

    def stop(self, proc: subprocess.Popen, name: str) -> int | None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.note(f"{name} (pid {proc.pid}) ignored SIGTERM for 15s: SIGKILL")
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        return proc.returncode

    # ------------------------------------------------------------------ setup
    def make_files(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="edge-compare-", dir="/dev/shm")
        os.chmod(self.workdir, 0o755)
        self.www = os.path.join(self.workdir, "www")
        os.mkdir(self.www, 0o755)
        self.digest = {}
        for name, size in FILES.items():
            path = os.path.join(self.www, name)
            with open(path, "wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 16 * MiB))
                    f.write(chunk)
                    left -= len(chunk)
            os.chmod(path, 0o644)
        self.log(f"files in {self.www}: " + ", ".join(f"{n} ({s} B)" for n, s in FILES.items()))
        if "zipf" in self.args.scenarios:
            a = self.args
            rng = random.Random(a.seed + 3)
            os.mkdir(os.path.join(self.www, "z"), 0o755)
            blob = os.urandom(256 * KiB + 4096)
            for i in range(1, a.zipf_files + 1):
                size = rng.randrange(16 * KiB, 256 * KiB + 1)
                name = f"z/{i:05d}.bin"
                off = rng.randrange(0, 4096)
                with open(os.path.join(self.www, name), "wb") as f:  # distinct bytes per file
                    f.write(i.to_bytes(4, "little") + blob[off:off + size - 4])
                os.chmod(os.path.join(self.www, name), 0o644)
                self.zipf_files.append((name, size))
            w = [1 / (i ** a.zipf_s) for i in range(1, a.zipf_files + 1)]
            tot = sum(w)
            self.zipf_mean = sum(wi / tot * sz for wi, (_, sz) in zip(w, self.zipf_files, strict=True))
            cat = sum(sz for _, sz in self.zipf_files)
            self.log(f"zipf catalogue: {a.zipf_files} files, {cat / MiB:.0f} MiB, s={a.zipf_s}, "
                     f"mean response body {self.zipf_mean / KiB:.0f} KiB")
            self.zipf_catalogue_bytes = cat

    def body_len(self, scen: str) -> float:
        return self.zipf_mean if scen == "zipf" else SCENARIOS[scen][2]

    def file_size(self, name: str) -> int:
        return FILES.get(name) or os.path.getsize(os.path.join(self.www, name))

    def file_bytes(self, name: str, start: int, end_incl: int) -> bytes:
        with open(os.path.join(self.www, name), "rb") as f:
            f.seek(start)
            return f.read(end_incl - start + 1)

    def start_nginx(self) -> None:
        d = os.path.join(self.workdir, "nginx")
        os.mkdir(d)
        for attempt in range(5):
            port = self.free_port()
            conf = os.path.join(d, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(d=d, port=port, root=self.www,
                                          master="on" if self.args.workers > 1 else "off",
                                          workers=self.args.workers))
            errf = open(os.path.join(d, "stderr.log"), "ab")
            proc = subprocess.Popen(
                self.pin(self.args.server_cpu) + ["nginx", "-p", d + "/", "-c", conf,
                 "-e", os.path.join(d, "error.log")],
                stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, start_new_session=True)
            self.children.append(proc)
            try:
                self.wait_http("nginx", proc, port)
                self.proc["nginx"], self.port["nginx"] = proc, port
                self.logs["nginx"] = [os.path.join(d, "error.log"), os.path.join(d, "stderr.log")]
                self.log(f"nginx: pid {proc.pid}, http://127.0.0.1:{port}/")
                return
            except RuntimeError as exc:
                self.stop(proc, "nginx")
                err = open(os.path.join(d, "error.log"), errors="replace").read()[-2000:]
                if "Address already in use" in err and attempt < 4:
                    continue
                raise RuntimeError(f"{exc}\nnginx error.log tail:\n{err}") from None

    def start_edge(self, cache_size: str | None = None) -> None:
        self.starts += 1
        d = os.path.join(self.workdir, f"edge{self.starts}")
        os.mkdir(d)
        cache_size = cache_size or self.args.cache_size
        env = dict(os.environ)
        env.pop("EDGE_NO_EXTENSIONS", None)  # the compiled extensions, always
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.admin_token = "bench-" + os.urandom(8).hex()
        env["EDGE_ADMIN_TOKEN"] = self.admin_token
        self.admin_port = self.free_port()
        self.edge_cmd = [
            sys.executable, "-m", "edge", "serve", "--listen", "127.0.0.1:0",
            "--origin", self.www, "--cache-size", cache_size, "--block-size", "1MiB",
            "--arena-path", "anonymous", "--workers", str(self.args.workers),
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
        ]
        self.edge_stderr = os.path.join(d, "stderr.log")
        errf = open(self.edge_stderr, "ab")
        # cwd = a scratch dir so that the edge's state_dir (./edge-state) lands in it
        proc = subprocess.Popen(self.pin(self.args.server_cpu) + self.edge_cmd, cwd=d,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errf, start_new_session=True)
        self.children.append(proc)
        first: list[bytes] = []
        got = threading.Event()
        out_log = open(os.path.join(d, "stdout.log"), "ab")

        def drain() -> None:  # first line to us, the rest to a file (the pipe never fills)
            for i, line in enumerate(iter(proc.stdout.readline, b"")):
                if i == 0:
                    first.append(line)
                    got.set()
                out_log.write(line)
                out_log.flush()
            got.set()

        threading.Thread(target=drain, daemon=True).start()
        got.wait(self.remaining(60))
        line = first[0].decode(errors="replace").strip() if first else ""
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.stop(proc, "edge")
            err = open(self.edge_stderr, errors="replace").read()[-3000:]
            raise RuntimeError(f"edge did not print its port (status {proc.returncode}); "
                               f"stdout first line: {line!r}\nedge stderr tail:\n{err}")
        self.proc["edge"], self.port["edge"] = proc, int(m.group(1))
        self.logs["edge"] = [self.edge_stderr, os.path.join(d, "stdout.log")]
        try:
            self.wait_http("edge", proc, self.port["edge"])
        except RuntimeError as exc:
            with open(self.edge_stderr, errors="replace") as f:
                err = f.read()[-3000:]
            raise RuntimeError(f"{exc}\nedge stdout: {line}\nedge stderr tail:\n{err}") from None
        self.log(f"edge: pid {proc.pid}, {line}")

    def edge_stats(self) -> dict:
        """The edge's /stats (admin API, bearer token); {} when it does not answer."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
            conn.request("GET", "/stats", headers={"Authorization": f"Bearer {self.admin_token}"})
            r = conn.getresponse()
            body = r.read()
            conn.close()
            return json.loads(body) if r.status == 200 else {}
        except (OSError, http.client.HTTPException, ValueError):
            return {}

    def start_varnish(self, storage: str | None = None) -> None:
        """varnishd -F as our child (its manager; the cache child is the manager's child), a VCL
        that caches every 200/206 for a day, backend = our nginx, malloc storage."""
        self.starts += 1
        d = os.path.join(self.workdir, f"varnish{self.starts}")
        os.mkdir(d)
        vcl = os.path.join(d, "bench.vcl")
        with open(vcl, "w") as f:
            f.write(VARNISH_VCL.format(port=self.port["nginx"]))
        storage = storage or self.args.varnish_storage
        for attempt in range(5):
            port = self.free_port()
            errf = open(os.path.join(d, "stderr.log"), "ab")
            self.varnish_cmd = [
                "varnishd", "-F", "-j", "none", "-n", os.path.join(d, "n"), "-T", "none",
                "-a", f"127.0.0.1:{port}", "-f", vcl, "-s", f"malloc,{varnish_size(storage)}",
                "-p", "http_range_support=on", "-p", "default_keep=0",
            ]
            proc = subprocess.Popen(self.pin(self.args.server_cpu) + self.varnish_cmd, cwd=d,
                                    stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                    start_new_session=True)
            self.children.append(proc)
            try:
                self.wait_http("varnish", proc, port, timeout=60)
                self.proc["varnish"], self.port["varnish"] = proc, port
                self.logs["varnish"] = [os.path.join(d, "stderr.log")]
                self.varnish_dir = os.path.join(d, "n")
                self.log(f"varnish: pid {proc.pid}, http://127.0.0.1:{port}/ (-s malloc,{storage})")
                return
            except RuntimeError as exc:
                self.stop(proc, "varnish")
                err = open(os.path.join(d, "stderr.log"), errors="replace").read()[-2000:]
                if "in use" in err and attempt < 4:
                    continue
                raise RuntimeError(f"{exc}\nvarnishd output tail:\n{err}") from None

    def restart(self, server: str, cache: str) -> None:
        """A fresh edge or Varnish with another cache size (the zipf scenario)."""
        if server in self.proc:
            self.stop(self.proc[server], server)
        if server == "edge":
            self.start_edge(cache)
        else:
            self.start_varnish(cache)

    # ------------------------------------------------------------------ warm + sanity
    def fetch_check(self, server: str, name: str, size: int) -> None:
        st, h, body = self.get(self.port[server], "/" + name, timeout=120)
        if st != 200 or len(body) != size:
            raise RuntimeError(f"{server} warm-up GET /{name}: status {st}, "
                               f"{len(body)} B of {size}")
        if hashlib.sha256(body).digest() != hashlib.sha256(
                self.file_bytes(name, 0, size - 1)).digest():
            raise RuntimeError(f"{server} warm-up GET /{name}: body differs from the file")

    def warm_varnish(self) -> None:
        t0 = time.monotonic()
        for name, size in FILES.items():
            self.fetch_check("varnish", name, size)
        rng = random.Random(self.args.seed + 1)
        probes = [("/" + n, {}) for n in FILES]
        for _ in range(8):
            a = rng.randrange(0, FILES["256m.bin"] - MiB)
            probes.append(("/256m.bin", {"Range": f"bytes={a}-{a + MiB - 1}"}))
        misses = []
        for path, hdrs in probes:  # a hit has two transaction ids in X-Varnish
            st, h, _ = self.get(self.port["varnish"], path, hdrs)
            if len(h.get("x-varnish", "").split()) != 2:
                misses.append(f"{path} {hdrs} -> {st} X-Varnish: {h.get('x-varnish')!r}")
        if misses:
            self.note("varnish probes after warm-up were not all hits: " + "; ".join(misses))
        else:
            self.log(f"varnish warmed in {time.monotonic() - t0:.1f}s; {len(probes)} probes "
                     "are hits (X-Varnish has two ids)")

    def warm_edge(self) -> None:
        t0 = time.monotonic()
        # with N workers each has its own arena and the kernel spreads connections
        # (SO_REUSEPORT): fetch every file over enough new connections to reach every worker
        passes = 1 if self.args.workers == 1 else 6 * self.args.workers
        for name, size in FILES.items():
            for _ in range(passes if size <= 64 * KiB else 1):
                self.fetch_check("edge", name, size)
        if passes > 1:  # the big file: whole-object GETs until every probe hits (bounded)
            for _ in range(passes):
                st, h, _ = self.get(self.port["edge"], "/256m.bin")
        self.log(f"edge warmed in {time.monotonic() - t0:.1f}s")
        # every file again, and some ranges of the big one: all should be hits now
        rng = random.Random(self.args.seed + 1)
        probes = [("/" + n, {}) for n in FILES]
        for _ in range(8):
            a = rng.randrange(0, FILES["256m.bin"] - MiB)
            probes.append(("/256m.bin", {"Range": f"bytes={a}-{a + MiB - 1}"}))
        misses = []
        for path, hdrs in probes:
            st, h, _ = self.get(self.port["edge"], path, hdrs)
            cs = h.get("cache-status", "")
            if "hit" not in cs or "fwd=" in cs:
                misses.append(f"{path} {hdrs} -> {st} Cache-Status: {cs!r}")
        if misses:
            self.note("edge probes after warm-up were not all hits: " + "; ".join(misses))
        else:
            self.log(f"edge: {len(probes)} probes after warm-up are all 'Cache-Status: edge; hit'")

    def sanity(self) -> None:
        rng = random.Random(self.args.seed + 2)
        big = FILES["256m.bin"]
        cases = [("1k.bin", None), ("64k.bin", None), ("64k.bin", (1000, 40000)),
                 ("256m.bin", (0, MiB - 1)), ("256m.bin", (big - MiB, big - 1)),
                 ("256m.bin", (MiB - 100, 2 * MiB + 99))]
        for _ in range(6):
            a = rng.randrange(0, big - MiB)
            cases.append(("256m.bin", (a, a + MiB - 1)))
        for name, r in cases:
            want = (self.file_bytes(name, 0, FILES[name] - 1) if r is None
                    else self.file_bytes(name, r[0], r[1]))
            hdrs = {} if r is None else {"Range": f"bytes={r[0]}-{r[1]}"}
            got = {}
            for server in self.servers:
                port = self.port[server]
                st, h, body = self.get(port, "/" + name, hdrs)
                want_st = 200 if r is None else 206
                if st != want_st:
                    raise RuntimeError(f"sanity: {server} GET /{name} {hdrs}: status {st}, "
                                       f"want {want_st}")
                if r is not None and h.get("content-range") != f"bytes {r[0]}-{r[1]}/{FILES[name]}":
                    raise RuntimeError(f"sanity: {server} /{name} {hdrs}: Content-Range "
                                       f"{h.get('content-range')!r}")
                got[server] = body
            if any(b != want for b in got.values()):
                raise RuntimeError(f"sanity: /{name} {hdrs}: " + ", ".join(
                    f"{k} {'ok' if b == want else 'DIFFERS'}" for k, b in got.items())
                    + " (compared with the file)")
        self.log(f"sanity: {len(cases)} requests (whole files and ranges) give identical bytes "
                 f"from {', '.join(self.servers)} and the file")
        if "multirange" in self.args.scenarios:
            self.sanity_multirange(rng)
        if "zipf" in self.args.scenarios:
            picks = [self.zipf_files[0], self.zipf_files[1], self.zipf_files[-1]] + rng.sample(
                self.zipf_files, 3)
            for name, size in picks:
                for server in self.servers:
                    self.fetch_check(server, name, size)
            self.log(f"sanity: {len(picks)} zipf catalogue files identical from "
                     f"{', '.join(self.servers)}")

    def sanity_multirange(self, rng: random.Random) -> None:
        """2-part ranges must come back as 206 multipart/byteranges with the right parts; a
        server that answers otherwise (Varnish: 200, whole object) is marked unsupported."""
        big, ln = FILES["256m.bin"], 64 * KiB
        for _ in range(4):
            a = rng.randrange(0, big // 2 - ln)
            b = big // 2 + rng.randrange(0, big // 2 - ln)
            rngs = [(a, a + ln - 1), (b, b + ln - 1)]
            hdrs = {"Range": "bytes=" + ",".join(f"{x}-{y}" for x, y in rngs)}
            for server in self.servers:
                if ("multirange", server) in self.unsupported:
                    continue
                st, h, body = self.get(self.port[server], "/256m.bin", hdrs)
                ctype = h.get("content-type", "")
                m = re.search(r'boundary="?([^";]+)"?', ctype)
                if st != 206 or not ctype.startswith("multipart/byteranges") or not m:
                    why = (f"answers a 2-part Range with {st} {ctype!r}"
                           f" ({len(body)} B body)")
                    if st == 200 and len(body) == big:
                        why += ": the whole object"
                    self.unsupported[("multirange", server)] = why
                    self.note(f"multirange: {server} {why}; not run")
                    continue
                parts = body.split(b"--" + m.group(1).encode())
                got = []
                for part in parts[1:]:
                    if part.startswith(b"--"):
                        break
                    head, _, data = part.partition(b"\r\n\r\n")
                    cr = re.search(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", head, re.I)
                    if not cr:
                        raise RuntimeError(f"sanity: {server} multirange part without "
                                           f"Content-Range: {head[:200]!r}")
                    x, y = int(cr.group(1)), int(cr.group(2))
                    got.append((x, y))
                    if data[:y - x + 1] != self.file_bytes("256m.bin", x, y) or \
                            data[y - x + 1:] not in (b"\r\n", b""):
                        raise RuntimeError(f"sanity: {server} multirange part {x}-{y} differs")
                if got != rngs:
                    raise RuntimeError(f"sanity: {server} multirange parts {got}, want {rngs}")
        ok = [s for s in self.servers if ("multirange", s) not in self.unsupported]
        self.log(f"sanity: 2-part ranges give 206 multipart/byteranges with the right bytes from "
                 f"{', '.join(ok) or 'no server'}")

    # ------------------------------------------------------------------ wrk
    def write_lua(self) -> None:
        d = os.path.join(self.workdir, "lua")
        os.mkdir(d)
        self.lua = {}
        for scen, (fname, _, _, rlen, _) in SCENARIOS.items():
            path = os.path.join(d, scen + ".lua")
            body = LUA_DONE
            if scen == "multirange":
                body = LUA_MULTI % {"seed": self.args.seed, "half": FILES[fname] // 2,
                                    "len": rlen, "path": "/" + fname} + body
            elif scen == "zipf":
                body = LUA_ZIPF % {"seed": self.args.seed, "n": self.args.zipf_files,
                                   "s": self.args.zipf_s} + body
            elif rlen:
                body = LUA_RANGE % {"seed": self.args.seed, "size": FILES[fname], "len": rlen,
                                    "path": "/" + fname} + body
            with open(path, "w") as f:
                f.write(body)
            self.lua[scen] = path

    def wrk(self, scen: str, server: str, duration: float, record: bool = True) -> dict:
        fname = SCENARIOS[scen][0]
        body_len = self.body_len(scen)
        port, proc_srv = self.port[server], self.proc[server]
        url = f"http://127.0.0.1:{port}/{fname}"
        cmd = self.pin(self.args.client_cpu) + [
               "wrk", f"-t{self.args.wrk_threads}", f"-c{self.args.connections}",
               f"-d{duration:g}s", "--latency", "-s", self.lua[scen], url]
        if self.remaining() < duration + 5:  # do not start a run that cannot finish in time
            raise Deadline(f"overall deadline of {self.args.deadline:.0f}s: no time left for "
                           f"a {duration:g}s run")
        log0 = self.log_sizes()
        snap0, t0 = cpu_snapshot(), time.monotonic()
        stat0, ru0 = cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(proc)
        try:
            out, _ = proc.communicate(timeout=self.remaining(duration + 30))
            snap1, wall = cpu_snapshot(), time.monotonic() - t0
            stat1, ru1 = cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
        except subprocess.TimeoutExpired:
            self.stop(proc, "wrk")
            raise RuntimeError(f"wrk {scen}/{server} did not finish in {duration + 30:.0f}s") from None
        finally:
            if proc in self.children and proc.poll() is not None:
                self.children.remove(proc)
        text = out.decode(errors="replace")
        run = {"scenario": scen, "server": server, "cmd": " ".join(cmd), "rc": proc.returncode,
               "problems": []}
        # every server is a process tree (nginx master + workers, the edge's supervisor +
        # workers, varnishd's manager + cache child): account each tree as that server
        snaps = [snap0, snap1]
        trees = {k: tree(snaps, p.pid) for k, p in self.proc.items()}
        mine = {os.getpid()}.union(*trees.values())
        # CPU of everything else on the machine during the run, in CPUs (1.0 = one busy CPU)
        others, top = cpu_used(snap0, snap1, exclude=mine)
        run["foreign_cpu"] = others / wall
        run["foreign_top"] = [f"{comm}[{pid}] {t / wall:.0%}" for t, pid, comm in top]
        peers = set().union(*(t for k, t in trees.items() if k != server))
        run["idle_peer_cpu"] = cpu_used(snap0, snap1, pids=peers)[0] / wall if peers else 0.0
        run["server_cpu"] = cpu_used(snap0, snap1, pids=trees[server])[0] / wall
        # wrk is the only child reaped during the run: its CPU time is the RUSAGE_CHILDREN delta
        run["wrk_cpu"] = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall
        run["server_cpu_busy"], run["server_cpu_steal"] = cpu_busy(stat0, stat1,
                                                                   self.args.server_cpu)
        run["client_cpu_busy"], run["client_cpu_steal"] = cpu_busy(stat0, stat1,
                                                                   self.args.client_cpu)
        # the client's CPU saturated while the server's was not: wrk, not the server, was the
        # limit, and the number is a lower bound of what the server can do
        if self.args.unpinned:  # wrk's threads saturated while the CPUs had room left
            run["client_bound"] = (run["wrk_cpu"] > 0.95 * self.args.wrk_threads
                                   and run["server_cpu_busy"] < 0.90)
        else:
            run["client_bound"] = run["client_cpu_busy"] > 0.95 and run["server_cpu_busy"] < 0.90
        run["noisy"] = run["foreign_cpu"] > self.args.max_foreign
        m = re.search(r"^WRKJSON (\{.*\})$", text, re.MULTILINE)
        if m:
            run.update(json.loads(m.group(1)))
        else:
            run["problems"].append("no summary from wrk")
        m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
        run["non2xx"] = int(m.group(1)) if m else 0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        run["socket_errors_line"] = m.group(0) if m else ""
        p = run["problems"]
        if proc.returncode != 0:
            p.append(f"wrk exit status {proc.returncode}")
        if run["non2xx"]:
            p.append(f"{run['non2xx']} non-2xx/3xx responses")
        for k in ("err_connect", "err_read", "err_write", "err_timeout"):
            if run.get(k):
                p.append(f"{run[k]} {k[4:]} errors")
        reqs = run.get("requests", 0)
        if not reqs:
            p.append("no requests completed")
        elif run["bytes"] / reqs < body_len * (0.85 if scen == "zipf" else 1):
            p.append(f"short responses: {run['bytes'] / reqs:.0f} B/response read, body is "
                     f"{body_len:.0f} B" + (" on average" if scen == "zipf" else ""))
        errs = self.new_log_errors(server, log0)
        if errs:
            p.append(f"{server} logged {len(errs)} error line(s), first: {errs[0][:200]}")
            run["server_log_errors"] = errs[:20]
        if proc_srv.poll() is not None:
            p.append(f"{server} exited (status {proc_srv.returncode}) during the run")
        if reqs and run.get("duration_us"):
            secs = run["duration_us"] / 1e6
            run["rps"] = reqs / secs
            run["mbps"] = reqs * body_len / secs / 1e6  # body bytes only, 1 MB = 10^6 B
            if scen == "zipf":  # bodies of varying size: what wrk read (headers < 0.3%)
                run["mbps"] = run["bytes"] / secs / 1e6
            run["wire_mbps"] = run["bytes"] / secs / 1e6  # what wrk read, headers included
        if "rps" in run and run.get("server_cpu"):  # per CPU-second of the server process
            run["rps_per_cpu"] = run["rps"] / run["server_cpu"]
            run["mbps_per_cpu"] = run["mbps"] / run["server_cpu"]
        run["wrk_output"] = text
        if record and p:
            self.log(f"  !! {scen}/{server}: " + "; ".join(p))
        return run

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        a = self.args
        for tool in ("nginx", "wrk", "taskset") + (("varnishd",) if "varnish" in self.servers
                                                   else ()):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} not found (apt-get install -y nginx-light wrk "
                                   "varnish)")
        ncpu = os.cpu_count() or 1
        if ncpu < 2:
            self.note(f"only {ncpu} CPU: server and wrk share it")
        if os.environ.get("PYTHONOPTIMIZE"):
            self.note(f"PYTHONOPTIMIZE={os.environ['PYTHONOPTIMIZE']} is set: the edge runs "
                      "with assert statements stripped")
        self.make_files()
        self.write_lua()
        if "nginx" in self.servers:
            self.start_nginx()
        if "edge" in self.servers:
            self.start_edge()
            self.warm_edge()
        if "varnish" in self.servers:
            if "nginx" not in self.port:
                raise RuntimeError("varnish needs nginx as its backend: --servers nginx,varnish")
            self.start_varnish()
            self.warm_varnish()
        self.sanity()
        for server in self.servers:
            errs = self.new_log_errors(server, {})
            if errs:
                self.note(f"{server} logged {len(errs)} error line(s) before measuring, first: "
                          f"{errs[0][:200]}")
        self.env = self.environment()
        runs = []
        est = len(a.scenarios) * len(self.servers) * (a.warmup + a.rounds * a.duration)
        self.log(f"measuring: {len(a.scenarios)} scenarios x {a.rounds} rounds x "
                 f"{len(self.servers)} servers x "
                 f"{a.duration:g}s (about {est / 60:.1f} min)")
        for scen in a.scenarios:
            servers = [s for s in self.servers if (scen, s) not in self.unsupported]
            if scen == "zipf":  # a fresh edge and Varnish, with caches smaller than the catalogue
                for server in ("edge", "varnish"):
                    if server in self.servers:
                        self.restart(server, a.zipf_cache_size)
            if a.warmup > 0:  # untimed, unrecorded: connections, caches, branch predictors
                for server in servers:
                    w = self.wrk(scen, server, a.warmup, record=False)
                    if w["problems"]:
                        self.note(f"warm-up run {scen}/{server} had problems: "
                                  + "; ".join(w["problems"]))
            if scen == "zipf" and "edge" in servers:
                stats0 = self.edge_stats()
            for rnd in range(1, a.rounds + 1):
                for server in servers:
                    r = self.measured_run(scen, server, rnd)
                    runs.append(r)
                    self.log(f"  {scen:8s} round {rnd} {server:5s}: {r.get('rps', 0):10.0f} req/s"
                             f" {r.get('mbps', 0):9.1f} MB/s"
                             f"  p99 {r.get('lat_p99_us', 0) / 1e3:7.2f} ms"
                             f"  CPU: server {r['server_cpu']:.0%} wrk {r['wrk_cpu']:.0%}"
                             f" others {r['foreign_cpu']:.0%}"
                             + ("  CLIENT-BOUND" if r["client_bound"] else "")
                             + ("  NOISY" if r["noisy"] else "")
                             + ("  FLAGGED" if r["problems"] else ""))
            if scen == "zipf" and "edge" in servers:
                time.sleep(1.5)  # the workers write their counters once a second
                self.zipf_stats = self.zipf_hit_ratio(stats0, self.edge_stats())
                self.log(f"  zipf: edge counters over the measured runs: {self.zipf_stats}")
        self.results = self.summarize(runs)
        codes = {k: self.stop(self.proc[k], k) for k in reversed(self.servers)}
        if codes.get("edge", 0) != 0:
            self.note(f"edge exited with status {codes['edge']} on SIGTERM (expected 0)")
        self.report(runs, codes)
        return 1 if any(r["problems"] for r in runs) else 0

    def zipf_hit_ratio(self, s0: dict, s1: dict) -> dict:
        """Hit ratio and byte hit ratio of the edge between two /stats answers."""
        if not s0 or not s1:
            return {"error": "no /stats from the edge"}
        req = {k: v - s0["requests"].get(k, 0) for k, v in s1["requests"].items()}
        sent = {k: v - s0["bytes_sent"].get(k, 0) for k, v in s1["bytes_sent"].items()}
        nreq, nbytes = sum(req.values()), sum(sent.values())
        return {"requests": req,
                "hit_ratio": round(req.get("hit", 0) / nreq, 4) if nreq else None,
                "byte_hit_ratio": round(sent.get("hit", 0) / nbytes, 4) if nbytes else None,
                "origin_bytes": s1.get("origin_bytes", 0) - s0.get("origin_bytes", 0),
                "evictions": s1.get("evictions", 0) - s0.get("evictions", 0)}

    def wait_quiet(self) -> float:
        """Wait (within the noise budget) until other processes use < --max-foreign CPU over 1 s."""
        t_start = time.monotonic()
        while True:
            s0 = cpu_snapshot()
            time.sleep(1)
            s1 = cpu_snapshot()
            mine = {os.getpid()}.union(*(tree([s0, s1], p.pid) for p in self.proc.values()))
            used, top = cpu_used(s0, s1, exclude=mine)
            if used <= self.args.max_foreign:
                break
            waited = time.monotonic() - t_start
            if self.noise_spent + waited >= self.args.noise_budget or self.remaining() < 60:
                break
            if waited < 1.5 or int(waited) % 10 == 0:
                self.log(f"  waiting for a quiet machine: others use {used:.0%} CPU ("
                         + ", ".join(f"{c}[{p}] {t:.0%}" for t, p, c in top) + ")")
        waited = time.monotonic() - t_start - 1
        self.noise_spent += waited
        return used

    def measured_run(self, scen: str, server: str, rnd: int) -> dict:
        """One recorded run; a noisy one (others used CPU) is re-run while the budget lasts."""
        a = self.args
        attempts = []
        for attempt in range(a.retries + 1):
            if a.max_foreign < 1e9:
                self.wait_quiet()
            t0 = time.monotonic()
            r = self.wrk(scen, server, a.duration)
            attempts.append(r)
            if not r["noisy"] or attempt == a.retries:
                break
            self.noise_spent += time.monotonic() - t0
            if self.noise_spent >= a.noise_budget or self.remaining() < 3 * (a.duration + 5):
                break
            self.log(f"  {scen} round {rnd} {server}: others used {r['foreign_cpu']:.0%} CPU ("
                     + ", ".join(r["foreign_top"]) + "): re-running")
        r = attempts[-1]
        r["round"], r["attempts"] = rnd, len(attempts)
        r["discarded_noisy"] = [
            {k: x.get(k) for k in ("rps", "mbps", "foreign_cpu", "foreign_top")}
            for x in attempts[:-1]]
        return r

    def summarize(self, runs: list[dict]) -> list[dict]:
        rows = []
        for scen in self.args.scenarios:
            _, desc, _, _, metrics = SCENARIOS[scen]
            for metric in metrics + (metrics[0] + "_per_cpu", "lat_p99_us"):
                row = {"scenario": scen, "desc": desc, "metric": metric}
                for server in self.servers:
                    mine = [r for r in runs if r["scenario"] == scen and r["server"] == server]
                    ok = [r for r in mine if not r["problems"] and metric in r]
                    quiet = [r for r in ok if not r["noisy"]]
                    use = quiet or ok  # noisy runs count only when there is no quiet one
                    row[server] = statistics.median(r[metric] for r in use) if use else None
                    row[server + "_runs"] = [r.get(metric) for r in mine]
                    row[server + "_clean"] = f"{len(ok)}/{len(mine)}"
                    row[server + "_used"] = len(use)
                    row[server + "_noisy_used"] = 0 if quiet else len(ok)
                e = row.get("edge")
                for peer in PEERS:
                    n = row.get(peer)
                    row["ratio_" + peer] = e / n if (n and e is not None) else None
                row["ratio"] = row["ratio_nginx"]  # kept for older readers of the JSON
                rows.append(row)
        return rows

    def environment(self) -> dict:
        def cmd_out(cmd: list[str]) -> str:
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
                return (p.stdout + p.stderr).strip()
            except Exception as exc:  # noqa: BLE001
                return f"? ({exc})"

        env = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": cmd_out(["nproc"]),
            "cpu": next((ln.split(":", 1)[1].strip() for ln in
                         cmd_out(["lscpu"]).splitlines() if ln.startswith("Model name")), "?"),
            "kernel": platform.release(),
            "nginx": cmd_out(["nginx", "-v"]).replace("nginx version: ", ""),
            "wrk": cmd_out(["wrk", "-v"]).splitlines()[0].split(" Copyright")[0],
            "varnish": (cmd_out(["varnishd", "-V"]).splitlines() or ["?"])[0].split(" revision")[0]
            .replace("varnishd (", "").strip(),
            "python": platform.python_version(),
        }
        probe = ("import uvloop, httptools, cext; "
                 "print(uvloop.__version__, httptools.__version__, "
                 "cext.load('arena').__file__.rsplit('/', 1)[-1])")
        vers = cmd_out([sys.executable, "-c", probe]).split()
        env["uvloop"], env["httptools"], env["arena_module"] = (vers + ["?"] * 3)[:3]
        env["edge_git"] = cmd_out(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
        if "fatal" in env["edge_git"] or "?" in env["edge_git"]:
            env["edge_git"] = "(no commit yet: working tree)"
        return env

    @staticmethod
    def fmt(metric: str, v: float | None) -> str:
        if v is None:
            return "n/a"
        if metric in ("rps", "rps_per_cpu"):
            return f"{v:,.0f}"
        if metric in ("mbps", "mbps_per_cpu"):
            return f"{v:,.1f}"
        return f"{v / 1e3:.2f}"

    def report(self, runs: list[dict], codes: dict) -> None:
        a = self.args
        label = {"rps": "req/s", "mbps": "MB/s", "lat_p99_us": "p99 latency, ms",
                 "rps_per_cpu": "req per server CPU-second",
                 "mbps_per_cpu": "MB per server CPU-second"}
        table = []
        ratio_peers = [k for k in PEERS if k in self.servers] if "edge" in self.servers else []
        for row in self.results:
            flags = []
            if any(c.split("/")[0] != c.split("/")[1]
                   for c in (row[s + "_clean"] for s in self.servers)):
                flags.append("ERRORS, runs without: " + ", ".join(
                    f"{k} {row[k + '_clean']}" for k in self.servers))
            cb = [k for k in self.servers if any(
                r["client_bound"] for r in runs
                if r["scenario"] == row["scenario"] and r["server"] == k and not r["problems"])]
            if cb and row["metric"] in ("rps", "mbps"):
                flags.append("wrk-bound: " + ", ".join(cb) + " (lower bound)")
            noisy = [k for k in self.servers if row[k + "_noisy_used"]]
            if noisy:
                flags.append("NOISY: " + ", ".join(noisy) + " (only disturbed runs)")
            used = [f"{k} {row[k + '_used']}/{len(row[k + '_runs'])}" for k in self.servers
                    if row[k + "_used"] != len(row[k + "_runs"])]
            if used and not noisy:
                flags.append("median of " + ", ".join(used) + " quiet runs")
            if row["metric"] in ("rps", "mbps"):
                flags += [f"{k}: not supported ({self.unsupported[(row['scenario'], k)]})"
                          for k in self.servers if (row["scenario"], k) in self.unsupported]
            if row["scenario"] == "zipf" and row["metric"] == "rps" and self.zipf_stats:
                z = self.zipf_stats
                flags.append(f"edge hit ratio {z.get('hit_ratio')}, byte hit ratio "
                             f"{z.get('byte_hit_ratio')} over the measured runs")
            ratios = ["n/a" if row.get("ratio_" + k) is None else f"{row['ratio_' + k]:.2f}"
                      for k in ratio_peers]
            table.append((f"{row['desc']}: {label[row['metric']]}",
                          *[self.fmt(row["metric"], row.get(k)) for k in self.servers],
                          *ratios, "; ".join(flags)))
        cols = ["scenario", *self.servers, *[f"edge/{k}" for k in ratio_peers], "notes"]
        w0 = max(len(t[0]) for t in table + [("scenario",)])
        print()
        print(f"{'scenario':<{w0}}" + "".join(f"  {c:>12}" for c in cols[1:-1]) + "  notes")
        for t in table:
            print(f"{t[0]:<{w0}}" + "".join(f"  {c:>12}" for c in t[1:-1]) + f"  {t[-1]}")
        flagged = [r for r in runs if r["problems"]]
        noisy = [r for r in runs if r["noisy"]]
        print("\nCPU during each run (1.0 = one CPU): server process / wrk / other processes / "
              f"idle other server; busy (steal) of server CPU {a.server_cpu} and client CPU "
              f"{a.client_cpu}")
        for r in runs:
            print(f"   {r['scenario']:8s} r{r['round']} {r['server']:5s}: "
                  f"{r['server_cpu']:.2f} / {r['wrk_cpu']:.2f} / {r['foreign_cpu']:.2f} / "
                  f"{r['idle_peer_cpu']:.2f};  CPU{a.server_cpu} {r['server_cpu_busy']:.0%} "
                  f"({r['server_cpu_steal']:.0%}), CPU{a.client_cpu} {r['client_cpu_busy']:.0%} "
                  f"({r['client_cpu_steal']:.0%})"
                  + ("  CLIENT-BOUND" if r["client_bound"] else "")
                  + (f"  ({r['attempts']} attempts)" if r["attempts"] > 1 else "")
                  + (f"  NOISY: {', '.join(r['foreign_top'])}" if r["noisy"] else ""))
        if flagged:
            print(f"\n!! {len(flagged)} FLAGGED run(s), left out of the medians:")
            for r in flagged:
                print(f"   {r['scenario']} round {r['round']} {r['server']}: "
                      + "; ".join(r["problems"]))
        e = self.env
        md = []
        md.append(f"Command: `{self.command}`  ")
        md.append(f"Date: {e['date']}; nproc {e['nproc']} ({e['cpu']}); kernel {e['kernel']}  ")
        md.append(f"Versions: nginx {e['nginx']}, {e.get('varnish', 'no varnish')}, "
                  f"wrk {e['wrk']}, Python {e['python']}, "
                  f"uvloop {e['uvloop']}, httptools {e['httptools']}, edge {e['edge_git']} "
                  f"(compiled extensions: {e['arena_module']})  ")
        pin_c = "" if a.unpinned else f"taskset -c {a.client_cpu} "
        where = ("nothing pinned (servers and wrk unpinned on all CPUs)" if a.unpinned
                 else f"servers on CPU {a.server_cpu}, wrk on CPU {a.client_cpu}")
        md.append(f"Load: `{pin_c}wrk -t{a.wrk_threads} -c{a.connections} -d{a.duration:g}s "
                  f"--latency`, {a.rounds} rounds alternating {'/'.join(self.servers)}, median "
                  f"per server; MB/s counts body bytes (1 MB = 10^6 B). {where}. "
                  + (f"nginx (`master_process on; worker_processes {a.workers}`"
                     if a.workers > 1 else "nginx (1 process")
                  + ", sendfile, tcp_nopush), edge "
                  f"`--workers {a.workers} --cache-size {a.cache_size} --block-size 1MiB "
                  f"--arena-path anonymous`"
                  + (f" (the {a.workers} workers share one arena of {a.cache_size})"
                     if a.workers > 1 else "")
                  + (f", Varnish `-s malloc,{a.varnish_storage}` (default thread pools; VCL "
                     "`beresp.ttl = 1d`) in front of that nginx" if "varnish" in self.servers
                     else "")
                  + ", all warmed (hits)."
                  + (f" zipf: {a.zipf_files} files of 16-256 KiB "
                     f"({getattr(self, 'zipf_catalogue_bytes', 0) / MiB:.0f} MiB), Zipf s="
                     f"{a.zipf_s}, edge restarted with `--cache-size {a.zipf_cache_size}` and "
                     f"Varnish with `-s malloc,{a.zipf_cache_size}` (cold, then 2 s warm-up); "
                     "MB/s there is all bytes read." if "zipf" in a.scenarios else ""))
        md.append("")
        md.append("| " + " | ".join(cols) + " |")
        md.append("| --- |" + " ---: |" * (len(cols) - 2) + " --- |")
        for t in table:
            md.append("| " + " | ".join(t) + " |")
        md.append("")
        def per_run(s: str) -> str:
            m = SCENARIOS[s][4][-1] if s in ("multirange", "zipf") else SCENARIOS[s][4][0]
            return f"{s} {METRIC_UNIT[m]}: " + " / ".join(
                f"{r['server'][0]}{r['round']} {self.fmt(m, r.get(m))}"
                + ("!" if r["problems"] else "") + ("~" if r["noisy"] else "")
                for r in runs if r["scenario"] == s)

        md.append("Per run (n = nginx, e = edge, v = varnish; ! = errors, ~ = noisy): "
                  + "; ".join(per_run(s) for s in a.scenarios))
        md.append("")
        md.append("CPU per run, server process + wrk (1.0 = one CPU busy): " + ", ".join(
            f"{s}: " + " / ".join(f"{r['server'][0]}{r['round']} {r['server_cpu']:.2f}+"
                                  f"{r['wrk_cpu']:.2f}" + ("(client-bound)" if r["client_bound"]
                                                          else "")
                                  for r in runs if r["scenario"] == s) for s in a.scenarios)
                  + f". Runs where other processes used > {a.max_foreign:.0%} of a CPU: "
                  + (", ".join(f"{r['scenario']} r{r['round']} {r['server']} "
                               f"({r['foreign_cpu']:.0%})" for r in noisy) or "none")
                  + (f" (re-runs: {sum(r['attempts'] - 1 for r in runs)})"
                     if any(r["attempts"] > 1 for r in runs) else "") + ".")
        if flagged:
            md.append("")
            md.append(f"**{len(flagged)} flagged run(s), not in the medians:** " + "; ".join(
                f"{r['scenario']} r{r['round']} {r['server']}: " + ", ".join(r["problems"])
                for r in flagged))
        if self.notes:
            md.append("")
            md.extend(f"Note: {n}" for n in self.notes)
        print("\n----- Markdown for bench/RESULTS.md -----")
        print("\n".join(md))
        print("----- end -----")
        if a.json:
            out = {"command": self.command, "env": self.env, "args": vars(a),
                   "rows": self.results, "runs": runs, "notes": self.notes, "exit_codes": codes,
                   "zipf_edge_stats": self.zipf_stats,
                   "unsupported": {f"{k[0]}/{k[1]}": v for k, v in self.unsupported.items()},
                   "markdown": "\n".join(md)}
            with open(a.json, "w") as f:
                json.dump(out, f, indent=2, default=str)
            self.log(f"JSON written to {a.json}")

    def cleanup(self) -> None:
        for proc in reversed(self.children):
            try:
                self.stop(proc, " ".join(map(str, proc.args[:4])))
            except Exception as exc:  # noqa: BLE001
                self.log(f"cleanup: pid {proc.pid}: {exc}")
        if self.workdir and not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.workdir:
            self.log(f"kept {self.workdir}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=None,
                   help="whole seconds per wrk run (10; wrk takes whole seconds only)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--rounds", type=int, default=None, help="runs per server and scenario (3)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--warmup", type=int, default=None,
                   help="whole seconds of unrecorded wrk load per server before each scenario "
                        "(2; 0 = none)")
    p.add_argument("--json", metavar="FILE", help="write every run and the summary as JSON")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 s runs, 1 round, 1 s warm-up (explicit flags win)")
    p.add_argument("--deadline", type=float, default=None,
                   help="overall time limit in seconds (default: estimate x 1.5 + 180 + "
                        "--noise-budget)")
    p.add_argument("--cache-size", default=None,
                   help="edge --cache-size (512MiB, or 1GiB with --workers 2; the workers share "
                        "one arena)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes of each server (1). With N > 1: nginx "
                        "master_process on + N workers, edge --workers N, Varnish default "
                        "thread pools, and nothing is pinned (servers nor wrk)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (1)")
    p.add_argument("--varnish-storage", default="1G", help="varnishd -s malloc,SIZE (1G)")
    p.add_argument("--zipf-files", type=int, default=2000, help="zipf catalogue size (2000)")
    p.add_argument("--zipf-s", type=float, default=0.9, help="zipf exponent (0.9)")
    p.add_argument("--zipf-cache-size", default="64MiB",
                   help="edge --cache-size and Varnish malloc size in the zipf scenario (64MiB; "
                        "the default catalogue is ~265 MiB)")
    p.add_argument("--seed", type=int, default=12345, help="seed of the random ranges")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for the servers (0)")
    p.add_argument("--client-cpu", default="1", help="taskset CPU list for wrk (1)")
    p.add_argument("--max-foreign", type=float, default=0.05,
                   help="a run during which other processes used more than this many CPUs "
                        "(0.05 = 5%% of one) is NOISY: waited for, re-run, flagged (0.05)")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a noisy run (2)")
    p.add_argument("--noise-budget", type=float, default=240,
                   help="seconds in all to spend waiting for quiet and re-running (240)")
    p.add_argument("--servers", default="nginx,edge,varnish",
                   help="which servers to run (nginx,edge,varnish); Varnish needs nginx (its "
                        "backend); one alone is for debugging")
    p.add_argument("--keep", action="store_true", help="keep the /dev/shm work dir (debugging)")
    a = p.parse_args(argv)
    if a.duration is None:
        a.duration = 2 if a.quick else 10
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    if a.warmup is None:
        a.warmup = 1 if a.quick else 2
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    a.scenarios.sort(key=lambda s: s == "zipf")  # zipf last: it restarts edge and Varnish
    a.servers = [s for s in SERVER_ORDER if s in a.servers.split(",")]
    if not a.servers:
        p.error("--servers: a subset of nginx,edge,varnish")
    if a.workers < 1:
        p.error("--workers must be >= 1")
    a.unpinned = a.workers > 1
    if a.cache_size is None:
        a.cache_size = "512MiB" if a.workers == 1 else f"{512 * a.workers}MiB"
    bad = [s for s in a.scenarios if s not in SCENARIOS]
    if bad or not a.scenarios:
        p.error(f"unknown scenario(s) {bad}; choose from {', '.join(SCENARIOS)}")
    if a.duration <= 0 or a.rounds < 1 or a.connections < 1:
        p.error("--duration, --rounds and --connections must be positive")
    if a.deadline is None:
        est = len(a.scenarios) * len(a.servers) * (a.warmup + a.rounds * a.duration)
        a.deadline = est * 1.5 + 180 + a.noise_budget
    b = Bench(a)
    b.command = "python bench/compare.py" + "".join(
        " " + shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))

    def on_term(signum, frame):  # SIGTERM/SIGHUP -> unwind through the finally block
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        return b.run()
    except (Deadline, RuntimeError) as exc:
        print(f"compare.py: FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main())
