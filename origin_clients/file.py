"""The local-directory origin: objects are files below a root directory.

Keys never escape the root: the resolved real path must stay inside the real root (symlinks
included), otherwise the object does not exist. File I/O runs in a small thread pool so a slow
disk never stalls the event loop. The entity-tag is (mtime in ns, size), so a file replaced or
rewritten gets a new validator; a read re-checks it before and after.
"""
from __future__ import annotations

import asyncio
import os
import stat as statmod
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from .base import NotFound, ObjectInfo, Origin, OriginError, ValidatorMismatch

READ_CHUNK = 256 * 1024


def _etag(st: os.stat_result) -> bytes:
    # Size and mtime only (like nginx's "mtime-size"): replica directories copied with their
    # mtimes preserved (rsync -t, cp -p) share validators, so a read can fail over between them.
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'.encode()


class FileOrigin(Origin):
    """Serve the files below ``root``."""

    def __init__(self, root: str, *, name: str = "file", threads: int = 8) -> None:
        self.name = name
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"origin directory {root!r} does not exist or is not a directory")
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"origin-{name}")

    def _path(self, key: str) -> str:
        if not key or "\0" in key:
            raise NotFound(self.name, f"no object {key!r}")
        path = os.path.realpath(os.path.join(self.root, key))
        if not path.startswith(self.root + os.sep):
            raise NotFound(self.name, f"no object {key!r}")
        return path

    def _stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFound(self.name, f"no object {key!r}") from None
        except NotADirectoryError:
            raise NotFound(self.name, f"no object {key!r}") from None
        except OSError as exc:
            raise OriginError(self.name, f"stat {key!r}: {exc.strerror}") from None
        if not statmod.S_ISREG(st.st_mode):
            raise NotFound(self.name, f"no object {key!r} (not a regular file)")
        return ObjectInfo(size=st.st_size, etag=_etag(st), last_modified=int(st.st_mtime))

    async def stat(self, key: str) -> ObjectInfo:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._stat, key)

    def _open(self, key: str, info: ObjectInfo) -> int:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ValidatorMismatch(self.name, f"{key!r} disappeared") from None
        except OSError as exc:
            raise OriginError(self.name, f"open {key!r}: {exc.strerror}") from None
        if _etag(os.fstat(fd)) != info.etag:
            os.close(fd)
            raise ValidatorMismatch(self.name, f"{key!r} changed (If-Match {info.etag.decode()} failed)")
        return fd

    def _pread(self, fd: int, n: int, off: int) -> bytes:
        try:
            return os.pread(fd, n, off)
        except OSError as exc:
            raise OriginError(self.name, f"read: {exc.strerror}") from None

    async def read(self, key: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fd = await loop.run_in_executor(self._pool, self._open, key, info)
        try:
            pos = start
            while pos < end:
                n = min(READ_CHUNK, end - pos)
                data = await loop.run_in_executor(self._pool, self._pread, fd, n, pos)
                if not data:
                    raise OriginError(self.name, f"short read of {key!r}: EOF at {pos}, expected {end}")
                pos += len(data)
                if pos == end and _etag(os.fstat(fd)) != info.etag:
                    raise ValidatorMismatch(self.name, f"{key!r} changed during the read")
                yield data
                data = b""     # the consumer copied it: hold no chunk while the next is read
        finally:
            os.close(fd)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
