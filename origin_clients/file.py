"""The local-directory origin: objects are files below a root directory.

Keys never escape the root: the resolved real path must stay inside the real root (symlinks
included), otherwise the object does not exist. Resolving a path costs an lstat per path
component (``os.path.realpath``), a third of a small miss's CPU, so resolutions are
remembered for ``RESOLVE_TTL`` seconds (cachetools): a symlink an operator changes below the
root takes effect within that time. The entity-tag is (mtime in ns, size), so a file replaced
or rewritten gets a new validator; a read re-checks it before and after.

Where the I/O runs: opening and ``fstat`` run in the event loop (as nginx opens files in its
worker), and so does every read that cannot wait for a disk: any read of a file on the
root's filesystem when that is tmpfs or ramfs (memory), else a ``preadv`` with
``RWF_NOWAIT``, which takes what the page cache holds. Only a read that would wait goes to a
small thread pool, so a slow disk stalls no other client. A hop to the pool costs more
than the read itself when the file is in memory (the handoff, the loop's wake-up, two
futures): without it the Zipf mix of bench/compare.py serves about 30% more requests per
second (bench/RESULTS.md, session 5).
"""
from __future__ import annotations

import asyncio
import errno
import os
import stat as statmod
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import cachetools

from .base import NotFound, ObjectInfo, Origin, OriginError, ValidatorMismatch

READ_CHUNK = 256 * 1024
RESOLVE_TTL = 10.0          # seconds a key's resolved path is remembered


def _etag(st: os.stat_result) -> bytes:
    # Size and mtime only (like nginx's "mtime-size"): replica directories copied with their
    # mtimes preserved (rsync -t, cp -p) share validators, so a read can fail over between them.
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'.encode()


def mount_of(path: str, mounts: str = "/proc/self/mounts") -> tuple[str, str]:
    """(filesystem type, options) of the mount holding ``path``."""
    path = os.path.realpath(path)
    best, fstype, opts = "", "", ""
    with open(mounts) as f:
        for line in f:
            fields = line.split()
            if len(fields) < 4:
                continue
            point = fields[1].replace("\\040", " ")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fstype, opts = point, fields[2], fields[3]
    return fstype, opts


class _Fd:
    """An open file of a read; closed by the read, or when a read never started is dropped.
    ``memory``: the file is on a memory filesystem (a read never waits for a disk)."""

    __slots__ = ("fd", "memory")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.memory = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    __del__ = close


class _Chunks:
    """The bytes ``[start, end)`` of an open file, as an async iterator (``first``: already
    read from ``start``). The file is closed at the end, on any error, on ``aclose()`` and
    when the iterator is dropped, whether it was started or not."""

    def __init__(self, origin: FileOrigin, fd: _Fd | None, key: str, info: ObjectInfo, start: int,
                 end: int, first: bytes | None) -> None:
        self.origin = origin
        self.fd = fd
        self.key = key
        self.info = info
        self.pos = start
        self.end = end
        self.first = first

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        o = self.origin
        if self.fd is None:             # read(): open (and check the validator) first
            if self.pos >= self.end:
                raise StopAsyncIteration
            self.fd = o._open(self.key, self.info)
        fd = self.fd
        if self.pos >= self.end or fd.fd < 0:
            fd.close()
            raise StopAsyncIteration
        try:
            data, self.first = self.first, None
            if not data:
                data = await o._read(fd, min(READ_CHUNK, self.end - self.pos), self.pos)
                if not data:
                    raise OriginError(o.name, f"short read of {self.key!r}: EOF at {self.pos}, "
                                              f"expected {self.end}")
            self.pos += len(data)
            if self.pos == self.end:
                if _etag(os.fstat(fd.fd)) != self.info.etag:
                    raise ValidatorMismatch(o.name, f"{self.key!r} changed during the read")
                fd.close()
            return data
        except BaseException:
            fd.close()
            raise

    async def aclose(self) -> None:
        if self.fd is not None:
            self.fd.close()


class FileOrigin(Origin):
    """Serve the files below ``root``."""

    def __init__(self, root: str, *, name: str = "file", threads: int = 8) -> None:
        self.name = name
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"origin directory {root!r} does not exist or is not a directory")
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"origin-{name}")
        self._resolved: cachetools.TTLCache = cachetools.TTLCache(65536, RESOLVE_TTL)
        self.nowait = hasattr(os, "RWF_NOWAIT")     # False once the filesystem refuses it
        try:                    # the device of a memory filesystem at the root, or None
            memory = mount_of(self.root)[0] in ("tmpfs", "ramfs")
        except OSError:
            memory = False
        self._memory_dev = os.stat(self.root).st_dev if memory else None
        self.inline_reads = 0       # reads the page cache answered in the loop
        self.pool_reads = 0         # reads that went to the pool (would have waited)

    def _path(self, key: str) -> str:
        if not key or "\0" in key:
            raise NotFound(self.name, f"no object {key!r}")
        path = self._resolved.get(key)      # the event loop's thread only
        if path is None:
            path = os.path.realpath(os.path.join(self.root, key))
            self._resolved[key] = path
        if not path.startswith(self.root + os.sep):
            raise NotFound(self.name, f"no object {key!r}")
        return path

    def _stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(self.name, f"no object {key!r}") from None
        except OSError as exc:
            raise OriginError(self.name, f"stat {key!r}: {exc.strerror}") from None
        return self._info(key, st)

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        if not statmod.S_ISREG(st.st_mode):
            raise NotFound(self.name, f"no object {key!r} (not a regular file)")
        return ObjectInfo(size=st.st_size, etag=_etag(st), last_modified=int(st.st_mtime))

    def _open_file(self, key: str, missing: type[OriginError]) -> _Fd:
        """Open the file of ``key``; ``missing`` is raised if it is not there (NotFound for a
        new lookup, ValidatorMismatch for a version known to exist a moment ago)."""
        path = self._path(key)
        try:
            return _Fd(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except (FileNotFoundError, NotADirectoryError):
            raise missing(self.name, f"{key!r} disappeared" if missing is ValidatorMismatch
                          else f"no object {key!r}") from None
        except OSError as exc:
            raise OriginError(self.name, f"open {key!r}: {exc.strerror}") from None

    async def stat(self, key: str) -> ObjectInfo:
        return self._stat(key)

    def _open(self, key: str, info: ObjectInfo) -> _Fd:
        fd = self._open_file(key, ValidatorMismatch)
        st = os.fstat(fd.fd)
        fd.memory = st.st_dev == self._memory_dev
        if _etag(st) != info.etag:
            fd.close()
            raise ValidatorMismatch(self.name, f"{key!r} changed (If-Match {info.etag.decode()} failed)")
        return fd

    def _pread(self, fd: _Fd, n: int, off: int) -> bytes:
        try:
            return os.pread(fd.fd, n, off)
        except OSError as exc:
            raise OriginError(self.name, f"read: {exc.strerror}") from None

    def _read_cached(self, fd: _Fd, n: int, off: int) -> bytes | None:
        """Up to ``n`` bytes at ``off`` if that needs no disk (a memory filesystem, or what
        the page cache holds: ``RWF_NOWAIT``), else None. A partial answer is what was
        cached; b"" is the end."""
        if fd.memory:
            return self._pread(fd, n, off)
        if not self.nowait:
            return None
        buf = bytearray(n)
        try:
            got = os.preadv(fd.fd, [buf], off, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):   # this filesystem: never again
                self.nowait = False
                return None
            raise OriginError(self.name, f"read: {exc.strerror}") from None
        if got < n:
            del buf[got:]
        # A bytearray: the chunks' one consumer (Storage._fill) copies any bytes-like object.
        return cast(bytes, buf)

    async def _read(self, fd: _Fd, n: int, off: int) -> bytes:
        """Up to ``n`` bytes at ``off``: in the loop from the page cache, else in the pool."""
        data = self._read_cached(fd, n, off)
        if data is not None:
            self.inline_reads += 1
            return data
        self.pool_reads += 1
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._pread, fd, n, off)

    def read(self, key: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        return _Chunks(self, None, key, info, start, end, None)     # opens at the first chunk

    async def stat_read(self, key: str, start: int, end: int) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """Metadata and the bytes ``[start, min(end, size))`` from one open file: resolve,
        open, fstat and the first chunk (from the page cache when it holds it)."""
        fd = self._open_file(key, NotFound)
        try:
            st = os.fstat(fd.fd)
            fd.memory = st.st_dev == self._memory_dev
            info = self._info(key, st)
            a, b = min(start, info.size), min(end, info.size)
            first = await self._read(fd, min(READ_CHUNK, b - a), a) if b > a else b""
        except BaseException:
            fd.close()
            raise
        return info, _Chunks(self, fd, key, info, a, b, first)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
