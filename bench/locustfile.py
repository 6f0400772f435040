"""Realistic users of the edge, for locust (``pip install locust``).

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8080

or ``python bench/load.py`` (starts an edge on a generated catalogue, runs this headless,
prints the result). Each user picks files with Zipf popularity over a catalogue and behaves like
one of:

* a download manager (aria2c -x8 -s8): the file cut into 8 ranges fetched in parallel over the
  user's connection pool (``segmented``);
* a resumed download: ``bytes=X-`` from a random offset to the end (``resume``);
* a player seeking: small ranges (16-256 KiB) at random offsets (``seek``);
* a plain whole-file download (``whole``).

Every response is checked: the status (200 for whole files, 206 for ranges), ``Content-Range``
(``bytes a-b/size``) and the body length; a mismatch is a locust failure. At the end
(``events.test_stop``) it reads the edge's own counters from the admin API (``GET /stats`` with
the bearer token) and prints the edge's hit ratio and byte hit ratio over the test (the
difference between the counters at test start and test stop).

Configuration (environment variables):

* ``EDGE_CATALOGUE``: a JSON manifest ``{"files": [["path", size], ...]}`` in popularity rank
  order (``bench/load.py`` writes one). Without it: ``EDGE_CATALOGUE_N`` files (default 200)
  named by ``EDGE_CATALOGUE_PATTERN`` (default ``/cat/{:05d}.bin``), sizes learnt with a HEAD.
* ``EDGE_ZIPF_S``: the Zipf exponent (default 1.0).
* ``EDGE_ADMIN_URL`` (default ``http://127.0.0.1:9090``) and ``EDGE_ADMIN_TOKEN``: the admin API.
* ``EDGE_WAIT_MAX``: seconds a user thinks between tasks, uniformly 0..max (default 0.5).
"""

from __future__ import annotations

import bisect
import json
import os
import random
import re
import time
import urllib.request

import gevent
from gevent.pool import Group
from locust import FastHttpUser, between, events, task

ZIPF_S = float(os.environ.get("EDGE_ZIPF_S", "1.0"))
ADMIN_URL = os.environ.get("EDGE_ADMIN_URL", "http://127.0.0.1:9090").rstrip("/")
ADMIN_TOKEN = os.environ.get("EDGE_ADMIN_TOKEN", "")
WAIT_MAX = float(os.environ.get("EDGE_WAIT_MAX", "0.5"))
SEGMENTS = 8
CR = re.compile(r"bytes (\d+)-(\d+)/(\d+)$")


def _load_catalogue() -> tuple[list[str], dict[str, int]]:
    path = os.environ.get("EDGE_CATALOGUE")
    if path:
        with open(path) as f:
            files = json.load(f)["files"]
        return [p for p, _ in files], {p: int(s) for p, s in files}
    n = int(os.environ.get("EDGE_CATALOGUE_N", "200"))
    pattern = os.environ.get("EDGE_CATALOGUE_PATTERN", "/cat/{:05d}.bin")
    return [pattern.format(i) for i in range(1, n + 1)], {}


PATHS, SIZES = _load_catalogue()
_w = [1.0 / (i ** ZIPF_S) for i in range(1, len(PATHS) + 1)]
_acc, CDF = 0.0, []
for _x in _w:
    _acc += _x
    CDF.append(_acc / sum(_w))


def zipf_pick(rng: random.Random) -> str:
    return PATHS[min(bisect.bisect_left(CDF, rng.random()), len(PATHS) - 1)]


def admin_stats() -> dict:
    req = urllib.request.Request(ADMIN_URL + "/stats",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


_stats_at_start: dict = {}


@events.test_start.add_listener
def _on_start(environment, **kw):
    global _stats_at_start
    try:
        _stats_at_start = admin_stats()
    except Exception as exc:  # noqa: BLE001
        print(f"edge counters: cannot read {ADMIN_URL}/stats at start: {exc}")


@events.test_stop.add_listener
def _on_stop(environment, **kw):
    time.sleep(1.5)  # the edge's workers write their counters once a second
    try:
        s1 = admin_stats()
    except Exception as exc:  # noqa: BLE001
        print(f"edge counters: cannot read {ADMIN_URL}/stats: {exc}")
        return
    s0 = _stats_at_start or {"requests": {}, "bytes_sent": {}, "origin_bytes": 0}
    req = {k: v - s0["requests"].get(k, 0) for k, v in s1["requests"].items()}
    sent = {k: v - s0["bytes_sent"].get(k, 0) for k, v in s1["bytes_sent"].items()}
    nreq, nbytes = sum(req.values()), sum(sent.values())
    hr = req.get("hit", 0) / nreq if nreq else float("nan")
    bhr = sent.get("hit", 0) / nbytes if nbytes else float("nan")
    origin = s1.get("origin_bytes", 0) - s0.get("origin_bytes", 0)
    summary = {"requests": req, "bytes_sent": sent, "hit_ratio": round(hr, 4),
               "byte_hit_ratio": round(bhr, 4), "origin_bytes": origin,
               "evictions": s1.get("evictions", 0) - s0.get("evictions", 0)}
    print(f"EDGE_STATS {json.dumps(summary)}")
    print(f"edge hit ratio over the test (its own counters): {hr:.3f} of {nreq} responses; "
          f"byte hit ratio {bhr:.3f} of {nbytes / 1e6:.1f} MB sent; origin read "
          f"{origin / 1e6:.1f} MB (since start: hit_ratio {s1.get('hit_ratio')}, "
          f"byte_hit_ratio {s1.get('byte_hit_ratio')})")


class EdgeUser(FastHttpUser):
    wait_time = between(0, WAIT_MAX)
    concurrency = SEGMENTS  # connections in the user's pool: aria2's -x8
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.rng = random.Random()

    # ------------------------------------------------------------------ helpers
    def size_of(self, path: str) -> int | None:
        if path not in SIZES:
            with self.client.request("HEAD", path, name="HEAD (size)", catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"HEAD {path}: {r.status_code}")
                    return None
                SIZES[path] = int(r.headers["Content-Length"])
        return SIZES[path]

    def get_range(self, path: str, size: int, a: int, b: int | None, name: str) -> None:
        """GET bytes=a-b (b None: a-), checking 206, Content-Range and the body length."""
        end = size - 1 if b is None else min(b, size - 1)
        spec = f"bytes={a}-" + ("" if b is None else str(b))
        with self.client.get(path, headers={"Range": spec}, name=name,
                             catch_response=True) as r:
            if r.status_code != 206:
                r.failure(f"{spec}: status {r.status_code}")
                return
            m = CR.match(r.headers.get("Content-Range", ""))
            if not m or (int(m.group(1)), int(m.group(2)), int(m.group(3))) != (a, end, size):
                r.failure(f"{spec}: Content-Range {r.headers.get('Content-Range')!r}, want "
                          f"bytes {a}-{end}/{size}")
                return
            if len(r.content or b"") != end - a + 1:
                r.failure(f"{spec}: {len(r.content or b'')} B body, want {end - a + 1}")

    # ------------------------------------------------------------------ behaviours
    @task(3)
    def segmented(self) -> None:
        """aria2c -x8 -s8: 8 ranges of one file in parallel."""
        path = zipf_pick(self.rng)
        size = self.size_of(path)
        if not size:
            return
        seg = -(-size // SEGMENTS)
        group = Group()
        for i in range(SEGMENTS):
            a = i * seg
            if a >= size:
                break
            group.spawn(self.get_range, path, size, a, min(a + seg, size) - 1, "segmented 1/8")
        group.join(timeout=120)
        group.kill(block=False)

    @task(2)
    def resume(self) -> None:
        """A resumed download: from a random offset to the end."""
        path = zipf_pick(self.rng)
        size = self.size_of(path)
        if size:
            self.get_range(path, size, self.rng.randrange(0, size), None, "resume bytes=X-")

    @task(4)
    def seek(self) -> None:
        """A player: a few small ranges at random offsets of one file."""
        path = zipf_pick(self.rng)
        size = self.size_of(path)
        if not size:
            return
        for _ in range(self.rng.randint(1, 4)):
            ln = self.rng.randint(16 << 10, 256 << 10)
            a = self.rng.randrange(0, max(1, size - ln))
            self.get_range(path, size, a, a + ln - 1, "seek (16-256 KiB)")
            gevent.sleep(self.rng.uniform(0, 0.2))

    @task(1)
    def whole(self) -> None:
        """A plain download of the whole file."""
        path = zipf_pick(self.rng)
        with self.client.get(path, name="whole file", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
            elif path in SIZES and len(r.content or b"") != SIZES[path]:
                r.failure(f"{len(r.content or b'')} B, want {SIZES[path]}")
