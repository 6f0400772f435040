"""Traces: object-level requests, their readers and writers, and expansion to cache blocks.

A :class:`Trace` is a sequence of object requests, column-wise in numpy arrays: when (seconds),
which object (a dense id; ``names`` maps ids back to keys when the source had names), the
object's size and the byte range ``[start, end)`` asked for. Readers (behind one ``read``):

* CSV with a header ``timestamp,key,size`` and optionally ``range_start,range_end`` (inclusive
  byte offsets as in an HTTP Range; empty means the whole object);
* libCacheSim's ``oracleGeneral`` binary (24-byte little-endian records ``uint32 clock_time,
  uint64 obj_id, uint32 obj_size, int64 next_access_vtime``), each a whole-object request;
* the edge's access log (JSON lines; see docs/eviction.md): a line with a body
  (``last_byte`` not null) is a request for ``[first_byte, last_byte]`` of ``key``.

:func:`to_blocks` turns a trace into what the cache sees: a request for ``[a, b)`` at block
size ``B`` touches blocks ``a // B .. (b - 1) // B`` of its object, each weighing its length
(the object's last block is shorter). Block keys are dense ints, so the same trace replays the
same way in every process (``hash(int)`` is not randomised).
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

ORACLE_DTYPE = np.dtype([("time", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])
"""One record of libCacheSim's oracleGeneral format (24 bytes, packed)."""
FORMATS = ("csv", "oracle", "log")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file, line and problem."""


@dataclass
class Trace:
    """Object requests, one row per request (numpy arrays of equal length)."""

    time: np.ndarray        # float64 seconds
    obj: np.ndarray         # int64 dense object id
    size: np.ndarray        # int64 object size in bytes
    start: np.ndarray       # int64 first byte asked for
    end: np.ndarray         # int64 one past the last byte asked for (start < end <= size)
    names: list[str] | None = None   # object id -> key, when the source named objects

    def __len__(self) -> int:
        return len(self.obj)

    @property
    def duration(self) -> float:
        """Seconds between the first and the last request (0 for fewer than two)."""
        return float(self.time.max() - self.time.min()) if len(self.time) > 1 else 0.0

    def name(self, oid: int) -> str:
        return self.names[oid] if self.names is not None else f"obj{oid}"

    @classmethod
    def from_columns(cls, time: Iterable[float], obj: Iterable[int], size: Iterable[int],
                     start: Iterable[int] | None = None, end: Iterable[int] | None = None,
                     names: list[str] | None = None) -> Trace:
        """Build a trace; ``start``/``end`` default to the whole object."""
        t = np.asarray(list(time) if not isinstance(time, np.ndarray) else time, dtype=np.float64)
        o = np.asarray(list(obj) if not isinstance(obj, np.ndarray) else obj, dtype=np.int64)
        s = np.asarray(list(size) if not isinstance(size, np.ndarray) else size, dtype=np.int64)
        a = np.zeros_like(s) if start is None else np.asarray(start, dtype=np.int64)
        b = s.copy() if end is None else np.asarray(end, dtype=np.int64)
        return cls(t, o, s, a, b, names)


@dataclass
class BlockTrace:
    """A trace as the cache sees it: block accesses grouped by request."""

    key: np.ndarray          # int64 dense block id per block access
    weight: np.ndarray       # int64 block length in bytes per block access
    offsets: np.ndarray      # int64, len requests + 1: request r is key[offsets[r]:offsets[r+1]]
    req_bytes: np.ndarray    # int64 bytes each request asked for (end - start)
    time: np.ndarray         # float64 seconds per request
    block_size: int
    n_unique: int            # distinct blocks
    footprint: int           # bytes of the distinct blocks (the unbounded cache's size)
    first: np.ndarray        # bool per block access: the block's first access (compulsory miss)
    obj: np.ndarray          # int64 object id per block access
    index: np.ndarray        # int64 block index within its object per block access

    @property
    def requests(self) -> int:
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return len(self.key)

    @property
    def duration(self) -> float:
        return float(self.time.max() - self.time.min()) if len(self.time) > 1 else 0.0

    def select(self, mask: np.ndarray) -> BlockTrace:
        """The block accesses where ``mask`` is true, keeping request boundaries (SHARDS).

        Requests left without blocks disappear; ``req_bytes`` becomes the kept block bytes.
        """
        keep = np.flatnonzero(mask)
        req_of = np.repeat(np.arange(self.requests), np.diff(self.offsets))[keep]
        reqs, counts = np.unique(req_of, return_counts=True)
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        weight = self.weight[keep]
        key = self.key[keep]
        uniq, first_idx, inv = np.unique(key, return_index=True, return_inverse=True)
        first = np.zeros(len(key), dtype=bool)
        first[first_idx] = True
        req_bytes = np.add.reduceat(weight, offsets[:-1]) if len(weight) else np.zeros(0, np.int64)
        return BlockTrace(inv.astype(np.int64).reshape(-1), weight, offsets, req_bytes,
                          self.time[reqs], self.block_size, len(uniq),
                          int(weight[first_idx].sum()), first, self.obj[keep], self.index[keep])


def to_blocks(trace: Trace, block_size: int) -> BlockTrace:
    """Expand object requests into block accesses (see the module docstring)."""
    if block_size < 1:
        raise ValueError(f"block size must be >= 1, got {block_size}")
    B = block_size
    ok = trace.end > trace.start
    obj, size = trace.obj[ok], trace.size[ok]
    start, end = trace.start[ok], trace.end[ok]
    first_b = start // B
    nb = (end - 1) // B - first_b + 1
    offsets = np.concatenate(([0], np.cumsum(nb))).astype(np.int64)
    total = int(offsets[-1])
    rep = np.repeat(np.arange(len(obj)), nb)
    idx = first_b[rep] + (np.arange(total, dtype=np.int64) - offsets[:-1][rep])
    weight = np.minimum(B, np.maximum(size[rep], end[rep]) - idx * B).astype(np.int64)
    stride = int(idx.max()) + 1 if total else 1
    raw = obj[rep] * stride + idx
    uniq, first_idx, inv = np.unique(raw, return_index=True, return_inverse=True)
    first = np.zeros(total, dtype=bool)
    first[first_idx] = True
    return BlockTrace(
        key=inv.astype(np.int64).reshape(-1), weight=weight, offsets=offsets,
        req_bytes=(end - start).astype(np.int64), time=trace.time[ok], block_size=B,
        n_unique=len(uniq), footprint=int(weight[first_idx].sum()), first=first,
        obj=obj[rep], index=idx,
    )


# --- readers -------------------------------------------------------------------------------------

def detect_format(path: str) -> str:
    """``csv``, ``oracle`` or ``log``, from the extension, else from the first bytes."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        return "csv"
    if ext in (".jsonl", ".json", ".log", ".ndjson"):
        return "log"
    if ext in (".oraclegeneral", ".bin", ".oracle"):
        return "oracle"
    with open(path, "rb") as f:
        head = f.read(4096)
    text = head.lstrip()
    if text.startswith(b"{"):
        return "log"
    if text[:64].lower().startswith((b"timestamp", b"time,", b"key,")):
        return "csv"
    if os.path.getsize(path) % ORACLE_DTYPE.itemsize == 0:
        return "oracle"
    raise TraceError(f"{path}: cannot tell the trace format (use --format csv|oracle|log)")


def read(path: str, fmt: str = "auto") -> Trace:
    """Read a trace file in format ``fmt`` (``auto``: :func:`detect_format`)."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "csv":
        with open(path, newline="") as f:
            return read_csv(f, name=path)
    if fmt == "oracle":
        return read_oracle_general(path)
    if fmt == "log":
        with open(path) as f:
            return read_access_log(f, name=path)
    raise ValueError(f"unknown trace format {fmt!r} (valid: auto, {', '.join(FORMATS)})")


class _Names:
    """Dense ids for keys in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, key: str) -> int:
        i = self.ids.get(key)
        if i is None:
            i = self.ids[key] = len(self.names)
            self.names.append(key)
        return i


def read_csv(f: io.TextIOBase | Iterable[str], *, name: str = "<csv>") -> Trace:
    """CSV with a header naming at least ``timestamp,key,size`` (any order; extra columns
    ignored) and optionally ``range_start,range_end`` (inclusive; empty = whole object)."""
    rows = csv.reader(f)
    try:
        header = [h.strip().lower() for h in next(rows)]
    except StopIteration:
        raise TraceError(f"{name}: empty file") from None
    missing = {"timestamp", "key", "size"} - set(header)
    if missing:
        raise TraceError(f"{name}:1: header lacks {', '.join(sorted(missing))} "
                         f"(expected timestamp,key,size[,range_start,range_end])")
    ti, ki, si = header.index("timestamp"), header.index("key"), header.index("size")
    ri = header.index("range_start") if "range_start" in header else -1
    re_ = header.index("range_end") if "range_end" in header else -1
    ids = _Names()
    time: list[float] = []
    obj: list[int] = []
    size: list[int] = []
    start: list[int] = []
    end: list[int] = []
    for lineno, row in enumerate(rows, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        try:
            s = int(row[si])
            a, b = 0, s
            if ri >= 0 and row[ri].strip():
                a = int(row[ri])
                b = int(row[re_]) + 1 if re_ >= 0 and row[re_].strip() else s
            t = float(row[ti])
            k = row[ki]
        except (ValueError, IndexError) as exc:
            raise TraceError(f"{name}:{lineno}: bad row {row!r}: {exc}") from None
        if s < 0 or a < 0 or b < a:
            raise TraceError(f"{name}:{lineno}: bad size or range in {row!r}")
        b = min(b, s) if s else b
        if b <= a:
            continue
        time.append(t)
        obj.append(ids(k))
        size.append(max(s, b))
        start.append(a)
        end.append(b)
    return Trace.from_columns(time, obj, size, start, end, names=ids.names)


def read_oracle_general(path: str) -> Trace:
    """libCacheSim's oracleGeneral binary: whole-object requests (zero-size ones skipped)."""
    n = os.path.getsize(path)
    if n % ORACLE_DTYPE.itemsize:
        raise TraceError(f"{path}: size {n} is not a multiple of {ORACLE_DTYPE.itemsize} "
                         "(an oracleGeneral file? zstd-compressed ones must be decompressed first)")
    rec = np.fromfile(path, dtype=ORACLE_DTYPE)
    rec = rec[rec["size"] > 0]
    uniq, inv = np.unique(rec["id"], return_inverse=True)
    size = rec["size"].astype(np.int64)
    return Trace(rec["time"].astype(np.float64), inv.astype(np.int64).reshape(-1), size,
                 np.zeros(len(rec), np.int64), size.copy(), [str(u) for u in uniq.tolist()])


def write_oracle_general(path: str, time: np.ndarray, obj_id: np.ndarray, size: np.ndarray,
                         next_vtime: np.ndarray | None = None) -> None:
    """Write oracleGeneral records (``next_vtime`` defaults to -1: unknown)."""
    rec = np.zeros(len(obj_id), dtype=ORACLE_DTYPE)
    rec["time"] = np.asarray(time, dtype=np.float64).astype(np.uint32)
    rec["id"] = obj_id
    if np.any(np.asarray(size) > 0xFFFFFFFF):
        raise ValueError("oracleGeneral sizes are 32-bit: write blocks, or use coarser units")
    rec["size"] = size
    rec["next"] = -1 if next_vtime is None else next_vtime
    rec.tofile(path)


def write_csv(f: io.TextIOBase, trace: Trace) -> None:
    """Write ``trace`` as CSV with ranges (the reader's format)."""
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["timestamp", "key", "size", "range_start", "range_end"])
    for t, o, s, a, b in zip(trace.time.tolist(), trace.obj.tolist(), trace.size.tolist(),
                             trace.start.tolist(), trace.end.tolist(), strict=True):
        w.writerow([f"{t:.3f}", trace.name(o), s, a, b - 1])


def read_access_log(f: Iterable[str], *, name: str = "<log>") -> Trace:
    """The edge's access log (JSON lines). Lines without a body (``last_byte`` null: HEAD,
    304, errors) are skipped; an unknown ``size`` is taken as ``last_byte + 1``. With
    white-label tenants a line names its ``tenant``: the object is then ``TENANT NUL key``
    (the same key under two tenants is two objects, and the live curve hashes that name)."""
    ids = _Names()
    time: list[float] = []
    obj: list[int] = []
    size: list[int] = []
    start: list[int] = []
    end: list[int] = []
    for lineno, line in enumerate(f, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
            last = rec.get("last_byte")
            if last is None:
                continue
            first = int(rec.get("first_byte") or 0)
            last = int(last)
            s = rec.get("size")
            s = int(s) if s is not None else last + 1
            t = float(rec["time"])
            k = str(rec["key"])
            tenant = rec.get("tenant")
            if tenant:
                k = f"{tenant}\0{k}"
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TraceError(f"{name}:{lineno}: bad access log line: {exc}") from None
        if last < first or first < 0:
            continue
        o, sz = ids(k), max(s, last + 1)
        for a, b in _parts(rec.get("range"), sz, first, last):
            time.append(t)
            obj.append(o)
            size.append(sz)
            start.append(a)
            end.append(b + 1)
    return Trace.from_columns(time, obj, size, start, end, names=ids.names)


def _parts(spec: object, size: int, first: int, last: int) -> list[tuple[int, int]]:
    """The byte ranges (inclusive) a response sent: those of a multi-range ``Range`` header
    (``bytes=a-b,c-d``) inside ``[first, last]``, else ``[first, last]`` itself (a
    multipart body's span would count the bytes between its parts too)."""
    if not isinstance(spec, str) or "," not in spec or not spec.startswith("bytes="):
        return [(first, last)]
    out = []
    for part in spec[6:].split(","):
        a_s, sep, b_s = part.strip().partition("-")
        try:
            if not sep:
                raise ValueError(part)
            if a_s:
                a, b = int(a_s), (int(b_s) if b_s else size - 1)
            else:
                a, b = size - int(b_s), size - 1
        except ValueError:
            return [(first, last)]
        a, b = max(a, first), min(b, last)
        if a <= b:
            out.append((a, b))
    return out or [(first, last)]


def access_log_lines(trace: Trace, *, status: int = 206) -> Iterator[str]:
    """Render ``trace`` as access log lines (what the server writes; tests and demos use it)."""
    for t, o, s, a, b in zip(trace.time.tolist(), trace.obj.tolist(), trace.size.tolist(),
                             trace.start.tolist(), trace.end.tolist(), strict=True):
        whole = a == 0 and b == s
        yield json.dumps({
            "time": round(t, 3), "client": "127.0.0.1:50000", "method": "GET",
            "key": trace.name(o), "status": 200 if whole else status, "size": s,
            "range": None if whole else f"bytes={a}-{b - 1}", "first_byte": a, "last_byte": b - 1,
            "bytes_sent": b - a, "cache_status": "miss", "origin_ms": 0.0, "total_ms": 0.0,
        })
