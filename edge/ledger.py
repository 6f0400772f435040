"""The transfer ledger: one JSON line per finished response, the input of the settlement job.

Design (docs/ledger.md is the contract):

- ``record()`` formats one line and appends it to an in-memory buffer (no I/O, ~2 µs).
- ``flush()`` writes the buffer with ONE ``write()`` on an ``O_APPEND`` descriptor and fsyncs,
  all under an exclusive ``flock`` on the sidecar ``PATH.lock`` shared by every process that
  appends to PATH. The server calls it every ``fsync_interval`` seconds and at shutdown; a
  buffer over ``flush_bytes`` is flushed by ``record()`` itself. A crash loses at most the
  lines of the last interval.
- Under that lock, before writing, the flusher checks that its descriptor is still PATH (same
  inode) and reopens it if another process rotated; then, if PATH would pass ``rotate_bytes``,
  renames it to ``PATH.<UTC time>`` (never over an existing file) and starts a new one. So no
  line is ever written to a rotated file, lines never interleave or split across files, and a
  rotated file has been fsynced whole before it got its name.
- A write that fails part-way (disk full) is truncated back, still under the lock, and the
  lines are kept for the next flush: a flush lands whole or not at all.

``flush()`` may run in another thread than ``record()`` (e.g. ``loop.run_in_executor``);
after ``os.fork`` the child drops the parent's buffer and descriptors (the parent owns them).
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import functools
import json
import os
import re
import sys
import threading
import weakref
from typing import Any

_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_PLAIN = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*')     # printable ASCII but " and \: as is


def _s(value: str | None) -> str:
    """A JSON string (ASCII-only output), or null."""
    if value is None:
        return "null"
    if _PLAIN.fullmatch(value):
        return f'"{value}"'
    return json.dumps(value)


def _after_fork(ref: weakref.ReferenceType[Ledger]) -> None:
    ledger = ref()
    if ledger is not None:
        ledger._after_fork()


def _rotated_name(path: str, when: datetime.datetime) -> str:
    """``PATH.20261122T084019.123456Z``: sorts by rotation time."""
    return f"{path}.{when.strftime('%Y%m%dT%H%M%S.%fZ')}"


class Ledger:
    """Append ledger lines to ``path``; several processes may share the path."""

    def __init__(self, path: str, *, rotate_bytes: int = 64 << 20, fsync_interval: float = 1.0,
                 flush_bytes: int = 1 << 20) -> None:
        self.path = os.path.abspath(path)
        self.lock_path = self.path + ".lock"
        self.rotate_bytes = rotate_bytes
        self.fsync_interval = fsync_interval     # how often the owner should call flush()
        self.flush_bytes = flush_bytes
        self.rotations = 0                       # files this instance renamed
        self.errors = 0                          # failed flushes (lines kept for the next one)
        self._buf: list[str] = []
        self._size = 0
        self._buf_lock = threading.Lock()        # record() vs flush() swapping the buffer
        self._io_lock = threading.Lock()         # one flush at a time in this process
        self._fd = -1
        self._lock_fd = -1
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._open()
        os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))

    # -- recording (hot path, no I/O) --

    def record(self, *, time: float, receipt: str | None, key: str, tenant: str | None,
               status: int, bytes_sent: int, **extra: Any) -> None:
        """Buffer one line for a finished response. ``extra`` fields must be JSON-serialisable."""
        line = (f'{{"time":{time:.3f},"receipt":{_s(receipt)},"key":{_s(key)},'
                f'"tenant":{_s(tenant)},"status":{int(status)},"bytes_sent":{int(bytes_sent)}')
        if extra:
            line += "," + json.dumps(extra, separators=(",", ":"))[1:] + "\n"
        else:
            line += "}\n"
        with self._buf_lock:
            self._buf.append(line)
            self._size += len(line)
            full = self._size >= self.flush_bytes
        if full:
            self.flush()

    @property
    def pending_bytes(self) -> int:
        """Characters buffered and not yet written (lines are ASCII: bytes)."""
        return self._size

    # -- flushing --

    def flush(self) -> None:
        """Write and fsync what is buffered. Never raises for I/O errors: they are reported on
        stderr, counted in ``errors``, and the lines are kept for the next flush."""
        with self._io_lock:
            with self._buf_lock:
                if not self._buf:
                    return
                data = "".join(self._buf).encode("ascii")
                self._buf.clear()
                self._size = 0
            try:
                self._append(data)
            except OSError as exc:
                self.errors += 1
                with self._buf_lock:                 # keep them, in order, ahead of newer lines
                    self._buf.insert(0, data.decode("ascii"))
                    self._size += len(data)
                print(f"edge: ledger {self.path}: {exc.strerror or exc}", file=sys.stderr)

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._follow()
            start = os.fstat(self._fd).st_size
            if start > 0 and start + len(data) > self.rotate_bytes:
                self._rotate()
                start = 0
            try:
                done = os.write(self._fd, data)
                while done < len(data):              # regular files: only on a signal or ENOSPC
                    n = os.write(self._fd, memoryview(data)[done:])
                    if n == 0:
                        raise OSError(errno.ENOSPC, "short write")
                    done += n
                os.fsync(self._fd)
            except OSError:
                os.ftruncate(self._fd, start)        # all or nothing; nobody wrote since: locked
                raise
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _follow(self) -> None:
        """Reopen PATH if it is no longer the file we hold (another process rotated it)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._reopen()
            return
        mine = os.fstat(self._fd)
        if (st.st_ino, st.st_dev) != (mine.st_ino, mine.st_dev):
            self._reopen()

    def _rotate(self) -> None:
        """Rename PATH to PATH.<UTC time> (a free name) and open a new PATH. Lock held."""
        when = datetime.datetime.now(datetime.UTC)
        dest = _rotated_name(self.path, when)
        while os.path.lexists(dest):                 # same microsecond, or the clock stepped back
            when += datetime.timedelta(microseconds=1)
            dest = _rotated_name(self.path, when)
        os.rename(self.path, dest)
        self.rotations += 1
        self._reopen()

    def _reopen(self) -> None:
        os.close(self._fd)
        self._fd = os.open(self.path, _FLAGS, 0o640)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        dfd = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _open(self) -> None:
        """Open PATH and the lock file; end a torn last line (a crash mid-write) with a newline,
        so that it stands alone as one unparseable line instead of spoiling the next one."""
        self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._fd = os.open(self.path, _FLAGS, 0o640)
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                os.write(self._fd, b"\n")
                os.fsync(self._fd)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _after_fork(self) -> None:
        """In a forked child: the parent owns the buffer and the descriptors (and the flock,
        which belongs to the open file description): start afresh."""
        self._buf_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._buf = []
        self._size = 0
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    def close(self) -> None:
        """Flush and close. The Ledger must not be used afterwards."""
        self.flush()
        with self._io_lock:
            for fd in (self._fd, self._lock_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._lock_fd = -1
