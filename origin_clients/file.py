"""The local-directory origin: objects are files below a root directory.

Keys never escape the root: the resolved real path must stay inside the real root (symlinks
included), otherwise the object does not exist. Resolving a path costs an lstat per path
component (``os.path.realpath``), a third of a small miss's CPU, so resolutions are
remembered for ``RESOLVE_TTL`` seconds (cachetools): a symlink an operator changes below the
root takes effect within that time. File I/O runs in a small thread pool so a slow
disk never stalls the event loop. The entity-tag is (mtime in ns, size), so a file replaced or
rewritten gets a new validator; a read re-checks it before and after.
"""
from __future__ import annotations

import asyncio
import os
import stat as statmod
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import cachetools

from .base import NotFound, ObjectInfo, Origin, OriginError, ValidatorMismatch

READ_CHUNK = 256 * 1024
RESOLVE_TTL = 10.0          # seconds a key's resolved path is remembered


def _etag(st: os.stat_result) -> bytes:
    # Size and mtime only (like nginx's "mtime-size"): replica directories copied with their
    # mtimes preserved (rsync -t, cp -p) share validators, so a read can fail over between them.
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'.encode()


class _Fd:
    """An open file of a read; closed by the read, or when a read never started is dropped."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def take(self) -> _Fd:
        """A new owner of the file, this one empty: the executor's finished future keeps its
        result alive for a while, and must not keep the file open with it."""
        fd, self.fd = self.fd, -1
        return _Fd(fd)

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
            got, self.first = await asyncio.get_running_loop().run_in_executor(
                o._pool, o._open_read, self.key, self.info, min(READ_CHUNK, self.end - self.pos),
                self.pos)
            self.fd = got.take()
        fd = self.fd
        if self.pos >= self.end or fd.fd < 0:
            fd.close()
            raise StopAsyncIteration
        try:
            data, self.first = self.first, None
            if not data:
                n = min(READ_CHUNK, self.end - self.pos)
                data = await asyncio.get_running_loop().run_in_executor(o._pool, o._pread, fd, n, self.pos)
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
        self._resolved_lock = threading.Lock()      # the pool's threads share the cache

    def _path(self, key: str) -> str:
        if not key or "\0" in key:
            raise NotFound(self.name, f"no object {key!r}")
        with self._resolved_lock:
            path = self._resolved.get(key)
        if path is None:
            path = os.path.realpath(os.path.join(self.root, key))
            with self._resolved_lock:
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
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._stat, key)

    def _open(self, key: str, info: ObjectInfo) -> _Fd:
        fd = self._open_file(key, ValidatorMismatch)
        if _etag(os.fstat(fd.fd)) != info.etag:
            fd.close()
            raise ValidatorMismatch(self.name, f"{key!r} changed (If-Match {info.etag.decode()} failed)")
        return fd

    def _open_read(self, key: str, info: ObjectInfo, n: int, off: int) -> tuple[_Fd, bytes]:
        """In a pool thread: open (checking the validator) and read the first chunk."""
        fd = self._open(key, info)
        try:
            return fd, self._pread(fd, n, off)
        except BaseException:
            fd.close()
            raise

    def _pread(self, fd: _Fd, n: int, off: int) -> bytes:
        try:
            return os.pread(fd.fd, n, off)
        except OSError as exc:
            raise OriginError(self.name, f"read: {exc.strerror}") from None

    def read(self, key: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        return _Chunks(self, None, key, info, start, end, None)     # opens at the first chunk

    def _open_stat_first(self, key: str, start: int, end: int) -> tuple[_Fd, ObjectInfo, bytes, int, int]:
        """In a pool thread: resolve, open, fstat and read the first chunk (one hop, not four)."""
        fd = self._open_file(key, NotFound)
        try:
            info = self._info(key, os.fstat(fd.fd))
            a, b = min(start, info.size), min(end, info.size)
            first = self._pread(fd, min(READ_CHUNK, b - a), a) if b > a else b""
        except BaseException:
            fd.close()
            raise
        return fd, info, first, a, b

    async def stat_read(self, key: str, start: int, end: int) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """Metadata and the bytes ``[start, min(end, size))`` from one open file: the cold
        miss of a small object costs one trip to the pool's threads, not four."""
        got, info, first, a, b = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._open_stat_first, key, start, end)
        return info, _Chunks(self, got.take(), key, info, a, b, first)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
