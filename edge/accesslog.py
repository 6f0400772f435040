"""The access log: one JSON object per response, the format ``edge sim`` and ``edge mrc`` read.

Fields (docs/eviction.md): time, client, method, key, status, size, range, first_byte,
last_byte (inclusive; null without a body), bytes_sent, cache_status (hit, miss, partial,
bypass), origin_ms, total_ms, and ``tenant`` when the edge has white-label tenants (keys
are per tenant; ``edge sim`` keeps them apart).

Lines are built with a fixed template (only the free-text fields go through ``json.dumps``)
and buffered; the buffer is written when it passes ``flush_bytes`` and on ``flush()``, which
the server calls once a second and at shutdown, so a crash loses at most about a second.
``reopen()`` (SIGHUP / ``POST /reload``) lets logrotate move the file away.
"""
from __future__ import annotations

import json
import os
import sys
from typing import IO


def _s(value: str | None) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _n(value: float | int | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class AccessLog:
    """Append JSON lines to ``path`` (``"-"``: standard output)."""

    def __init__(self, path: str, *, flush_bytes: int = 64 * 1024) -> None:
        self.path = path
        self.flush_bytes = flush_bytes
        self._buf: list[str] = []
        self._size = 0
        self._f: IO[str] | None = None
        self._open()

    def _open(self) -> None:
        if self.path == "-":
            self._f = sys.stdout
        else:
            d = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(d, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115

    def log(self, *, time: float, client: str, method: str, key: str, status: int,
            size: int | None, range: str | None, first_byte: int | None, last_byte: int | None,
            bytes_sent: int, cache_status: str, origin_ms: float | None,
            total_ms: float | None, tenant: str = "") -> None:
        """Record one response."""
        tail = f', "tenant": {_s(tenant)}}}\n' if tenant else "}\n"
        line = (
            f'{{"time": {time:.3f}, "client": "{client}", "method": {_s(method)}, '
            f'"key": {_s(key)}, "status": {status}, "size": {_n(size)}, "range": {_s(range)}, '
            f'"first_byte": {_n(first_byte)}, "last_byte": {_n(last_byte)}, '
            f'"bytes_sent": {bytes_sent}, "cache_status": "{cache_status}", '
            f'"origin_ms": {_n(origin_ms)}, "total_ms": {_n(total_ms)}' + tail
        )
        self._buf.append(line)
        self._size += len(line)
        if self._size >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered (page cache; no fsync)."""
        if not self._buf or self._f is None:
            return
        data = "".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            self._f.write(data)
            self._f.flush()
        except OSError as exc:   # a full disk must not take the server down
            print(f"edge: access log {self.path}: {exc.strerror}", file=sys.stderr)

    def reopen(self) -> None:
        """Flush, close and open the path again (after logrotate moved the file)."""
        self.flush()
        if self._f is not None and self._f is not sys.stdout:
            self._f.close()
        self._open()

    def close(self) -> None:
        self.flush()
        if self._f is not None and self._f is not sys.stdout:
            self._f.close()
        self._f = None
