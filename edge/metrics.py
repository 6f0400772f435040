"""Metrics: plain counters in each worker, exposed in Prometheus text format.

The request path only bumps Python ints (no locks, no per-request writes to shared files).
Once a second each worker writes a snapshot of its counters and gauges to
``STATE_DIR/metrics/worker-N.json`` (write + rename, so readers never see half a file).
``/metrics`` sums the snapshots of all workers through a prometheus_client collector, so the
numbers are right across worker processes. A worker that restarts starts again from zero;
Prometheus' ``rate()`` treats that as the counter reset it is.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from origin_clients.pool import LATENCY_BUCKETS

if TYPE_CHECKING:
    from edge.server.app import App



def snapshot(app: App) -> dict[str, Any]:
    """Everything /metrics and /stats report about one worker, as plain JSON-able data."""
    storage = app.storage
    c = storage.counters
    arena = storage.arena.stats()
    origins = {}
    for r in getattr(storage.origin, "replicas", []):
        st = r.stats
        origins[r.name] = {
            "requests": st.requests, "failures": st.failures, "bytes": st.bytes,
            "hedges": st.hedges, "failovers": st.failovers_from,
            "latency_buckets": list(st.latency_buckets), "latency_sum": st.latency_sum,
            "latency_count": st.latency_count, "healthy": r.healthy(time.monotonic()),
        }
    return {
        "pid": os.getpid(),
        "requests": {f"{s}|{cs}": n for (s, cs), n in app.requests.items()},
        "bytes": dict(app.bytes_sent),
        "connections": len(app.connections),
        "blocks": storage.blocks,
        "fills": c.fills, "fill_failures": c.fill_failures, "transient_fills": c.transient_fills,
        "evictions": c.evictions, "block_hits": c.block_hits, "block_misses": c.block_misses,
        "origin_bytes": c.origin_bytes, "purges": c.purges, "stale_meta": c.stale_meta,
        "waiters": c.waiting,
        "arena": {
            "size": arena["size"], "used": arena["used_bytes"],
            "pinned_chunks": arena["pinned_chunks"],
            "classes": [{"chunk_size": k["chunk_size"], "used": k["chunks_used"] * k["chunk_size"],
                         "free": k["chunks_free"] * k["chunk_size"]} for k in arena["classes"]],
        },
        "origins": origins,
    }


def write_snapshot(directory: str, worker: int, snap: dict[str, Any]) -> None:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"worker-{worker}.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(snap, f)
    os.replace(tmp, path)


def read_snapshots(directory: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("worker-") and n.endswith(".json"))
    except FileNotFoundError:
        return out
    for n in names:
        try:
            with open(os.path.join(directory, n), encoding="utf-8") as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue   # a worker being replaced: its next snapshot will be there
    return out


class SnapshotCollector:
    """A prometheus_client collector over worker snapshots."""

    def __init__(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Any]:
        snaps = self.snapshots
        req = CounterMetricFamily("edge_requests", "Responses by status and cache status",
                                  labels=["status", "cache_status"])
        for k, v in _sum_dicts(s["requests"] for s in snaps).items():
            status, cs = k.split("|")
            req.add_metric([status, cs], v)
        yield req
        sent = CounterMetricFamily("edge_sent_bytes", "Body bytes sent, by cache status",
                                   labels=["cache_status"])
        for k, v in _sum_dicts(s["bytes"] for s in snaps).items():
            sent.add_metric([k], v)
        yield sent
        for name, doc in (("fills", "Block fills started"), ("fill_failures", "Block fills that failed"),
                          ("transient_fills", "Fills not stored in the arena"),
                          ("evictions", "Blocks evicted"), ("block_hits", "Block lookups that hit"),
                          ("block_misses", "Block lookups that missed"),
                          ("origin_bytes", "Bytes read from origins"), ("purges", "Objects purged"),
                          ("stale_meta", "Metadata served stale because origins were down")):
            m = CounterMetricFamily(f"edge_{name}", doc)
            m.add_metric([], sum(s[name] for s in snaps))
            yield m
        for name, doc in (("connections", "Open client connections"), ("blocks", "Cached blocks"),
                          ("waiters", "Readers waiting on a block being filled (single-flight)")):
            g = GaugeMetricFamily(f"edge_{name}", doc)
            g.add_metric([], sum(s[name] for s in snaps))
            yield g
        pinned = GaugeMetricFamily("edge_pinned_blocks", "Arena chunks pinned by responses")
        pinned.add_metric([], sum(s["arena"]["pinned_chunks"] for s in snaps))
        yield pinned
        arena = GaugeMetricFamily("edge_arena_bytes", "Arena bytes", labels=["state"])
        arena.add_metric(["size"], sum(s["arena"]["size"] for s in snaps))
        arena.add_metric(["used"], sum(s["arena"]["used"] for s in snaps))
        arena.add_metric(["free"], sum(s["arena"]["size"] - s["arena"]["used"] for s in snaps))
        yield arena
        cls = GaugeMetricFamily("edge_arena_class_bytes", "Arena bytes per slab class",
                                labels=["chunk_size", "state"])
        per: dict[int, list[int]] = {}
        for s in snaps:
            for k in s["arena"]["classes"]:
                u = per.setdefault(k["chunk_size"], [0, 0])
                u[0] += k["used"]
                u[1] += k["free"]
        for size, (used, free) in sorted(per.items()):
            cls.add_metric([str(size), "used"], used)
            cls.add_metric([str(size), "free"], free)
        yield cls
        fam = {n: CounterMetricFamily(f"edge_origin_{n}", d, labels=["origin"]) for n, d in (
            ("requests", "Requests to each origin"), ("failures", "Failed origin requests"),
            ("bytes", "Bytes read from each origin"), ("hedges", "Hedged requests sent"),
            ("failovers", "Reads continued on another replica"))}
        lat = HistogramMetricFamily("edge_origin_latency_seconds",
                                    "Time to first byte of origin reads", labels=["origin"])
        health = GaugeMetricFamily("edge_origin_healthy", "1 when the origin is in rotation",
                                   labels=["origin"])
        names = sorted({n for s in snaps for n in s["origins"]})
        for n in names:
            rows = [s["origins"][n] for s in snaps if n in s["origins"]]
            for k, m in fam.items():
                m.add_metric([n], sum(r[k] for r in rows))
            buckets = [sum(r["latency_buckets"][i] for r in rows) for i in range(len(LATENCY_BUCKETS) + 1)]
            cumulative, acc = [], 0
            for bound, cnt in zip([*map(str, LATENCY_BUCKETS), "+Inf"], buckets, strict=True):
                acc += cnt
                cumulative.append((bound, acc))
            lat.add_metric([n], cumulative, sum_value=sum(r["latency_sum"] for r in rows))
            health.add_metric([n], 1 if all(r["healthy"] for r in rows) else 0)
        yield from fam.values()
        yield lat
        yield health


def _sum_dicts(ds: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def render(snapshots: list[dict[str, Any]]) -> bytes:
    """The Prometheus text exposition of the summed snapshots."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshots))  # type: ignore[arg-type]
    return generate_latest(registry)
