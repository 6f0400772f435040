"""The glibc malloc settings of edge/server/app.py: trim_heap gives freed heap pages back."""
from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

SCRIPT = r"""
import ctypes, re
from edge.server.app import trim_heap

def heap_kib():
    inside, total = False, 0
    for line in open('/proc/self/smaps'):
        if re.match(r'^[0-9a-f]+-[0-9a-f]+ ', line):
            inside = line.rstrip().endswith('[heap]')
        elif inside and line.startswith('Anonymous:'):
            total += int(line.split()[1])
    return total

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-1, 1 << 30)          # M_TRIM_THRESHOLD: free() alone keeps every page
ptrs = [libc.malloc(8192) for _ in range(4000)]      # 32 MiB of the heap, touched
for p in ptrs:
    ctypes.memset(p, 1, 8192)
for p in ptrs[:-1]:                # the last one stays: the heap's top is in use
    libc.free(p)
before = heap_kib()
trim_heap()
print(before, heap_kib())
"""


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "malloc_trim")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(), reason="glibc only")
def test_trim_heap_returns_freed_pages():
    """Freed memory below a live block stays touched (so a fork would share it as copied-on-
    write pages) until trim_heap hands it back."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    before, after = map(int, out.split())
    assert before >= 30 * 1024, before            # the 32 MiB were on the heap, touched
    assert after < before - 24 * 1024, (before, after)


def test_trim_heap_never_fails(monkeypatch):
    from edge.server import app

    asked = []

    def missing(name=None):
        asked.append(name)
        raise OSError("no libc here")

    monkeypatch.setattr(app.ctypes, "CDLL", missing)
    app.trim_heap()                                # a non-glibc system: nothing to do, no error
    assert asked == [None]
