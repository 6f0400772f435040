"""Metrics: plain counters in each worker, exposed in Prometheus text format.

The request path only bumps Python ints (no locks, no per-request writes to shared files).
Once a second each worker writes a snapshot of its counters and gauges to
``STATE_DIR/metrics/worker-N.json`` (write + rename, so readers never see half a file).
``/metrics`` sums the snapshots of all workers through a prometheus_client collector, so the
numbers are right across worker processes. A worker that restarts starts again from zero;
Prometheus' ``rate()`` treats that as the counter reset it is.

With several workers the arena and its block index are shared (one region): worker 0 reports
them (size, used, pinned chunks, blocks) and the others report zeros, so the sums stay the
machine's, not N times it.
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
    """Everything /metrics and /stats report about one worker, as plain JSON-able data.

    Storage counters are summed over the tenants; ``tenants`` has each one's own (only when
    the edge has [[tenants]]); an origin of a tenant is named ``TENANT/ORIGIN``.
    """
    storages = app.storages
    totals: dict[str, int] = {}
    fields = ("fills", "fill_failures", "transient_fills", "evictions", "block_hits", "block_misses",
              "origin_bytes", "purges", "stale_meta", "waiting")
    for st in storages.values():
        c = st.counters
        for f in fields:
            totals[f] = totals.get(f, 0) + getattr(c, f)
    shared = getattr(app.storage.arena, "shared", False)
    arena: dict[str, Any]
    if shared and app.worker != 0:     # the shared arena is reported once, by worker 0
        arena = {"size": 0, "used_bytes": 0, "pinned_chunks": 0, "classes": []}
    else:
        arena = app.storage.arena.stats()
    blocks = (arena.get("entries", 0) if shared
              else sum(st.blocks for st in storages.values()))
    origins = {}
    for name, st in storages.items():
        for r in getattr(st.origin, "replicas", []):
            s = r.stats
            origins[f"{name}/{r.name}" if name else r.name] = {
                "requests": s.requests, "failures": s.failures, "bytes": s.bytes,
                "hedges": s.hedges, "failovers": s.failovers_from,
                "latency_buckets": list(s.latency_buckets), "latency_sum": s.latency_sum,
                "latency_count": s.latency_count, "healthy": r.healthy(time.monotonic()),
                "pool_reads": getattr(r.origin, "pool_reads", 0),     # file origins only
            }
    tenants = {}
    if app.single is None:
        for name, t in app.tenants.items():
            st = t.storage
            tenants[name] = {"requests": t.requests, "bytes": t.bytes_sent, "blocks": st.blocks,
                             "capacity": st.capacity, "used": st.policy.used,
                             "block_hits": st.counters.block_hits,
                             "block_misses": st.counters.block_misses,
                             "origin_bytes": st.counters.origin_bytes}
    return {
        "pid": os.getpid(),
        "requests": {f"{s}|{cs}": n for (s, cs), n in app.requests.items()},
        "bytes": dict(app.bytes_sent),
        "sendfile_bytes": app.sendfile_bytes,
        "connections": len(app.connections),
        "blocks": blocks,
        "fills": totals["fills"], "fill_failures": totals["fill_failures"],
        "transient_fills": totals["transient_fills"],
        "evictions": totals["evictions"], "block_hits": totals["block_hits"],
        "block_misses": totals["block_misses"],
        "origin_bytes": totals["origin_bytes"], "purges": totals["purges"],
        "stale_meta": totals["stale_meta"],
        "waiters": totals["waiting"],
        "arena": {
            "shared": shared,
            "size": arena["size"], "used": arena["used_bytes"],
            "pinned_chunks": arena["pinned_chunks"],
            "punched_chunks": arena.get("punched_chunks", 0),
            "classes": [{"chunk_size": k["chunk_size"], "used": k["chunks_used"] * k["chunk_size"],
                         "free": k["chunks_free"] * k["chunk_size"]} for k in arena["classes"]],
        },
        "origins": origins,
        "tenants": tenants,
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
        zc = CounterMetricFamily("edge_sendfile_bytes", "Body bytes sent with sendfile from the "
                                 "arena (zero copy)")
        zc.add_metric([], sum(s.get("sendfile_bytes", 0) for s in snaps))
        yield zc
        punched = CounterMetricFamily("edge_arena_punched_chunks", "Arena chunks sent with "
                                      "sendfile and punched out of the arena file before reuse")
        punched.add_metric([], sum(s["arena"].get("punched_chunks", 0) for s in snaps))
        yield punched
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
            ("failovers", "Reads continued on another replica"),
            ("pool_reads", "File-origin reads that would wait for a disk, done in its thread pool "
                           "(the others are answered in the event loop from memory)"))}
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
        tenants = sorted({n for s in snaps for n in s.get("tenants", {})})
        if tenants:
            fams: dict[str, Any] = {k: (CounterMetricFamily if kind == "c" else GaugeMetricFamily)(
                        f"edge_tenant_{name}", doc, labels=["tenant"])
                    for k, name, kind, doc in (
                        ("requests", "requests", "c", "Responses per tenant"),
                        ("bytes", "sent_bytes", "c", "Body bytes sent per tenant"),
                        ("origin_bytes", "origin_bytes", "c", "Bytes read from each tenant's origins"),
                        ("block_hits", "block_hits", "c", "Block lookups that hit, per tenant"),
                        ("block_misses", "block_misses", "c", "Block lookups that missed, per tenant"),
                        ("blocks", "blocks", "g", "Cached blocks per tenant"),
                        ("used", "cache_bytes", "g", "Arena bytes each tenant's policy holds"),
                        ("capacity", "cache_share_bytes", "g", "Arena bytes reserved for each tenant"))}
            for n in tenants:
                rows = [s["tenants"][n] for s in snaps if n in s.get("tenants", {})]
                for k, m in fams.items():
                    m.add_metric([n], sum(r[k] for r in rows))
            yield from fams.values()


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
