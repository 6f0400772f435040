"""Whether the arena may hand its chunks to ``sendfile`` on this machine.

Zero copy rests on one kernel behaviour (see the arena's theory of operation): punching a
chunk out of the arena file (FALLOC_FL_PUNCH_HOLE) takes its pages out of the file while
in-flight socket data keeps referencing them, so the arena can reuse the chunk at once. That
holds for the 4 KiB pages of tmpfs and memfd. It does not hold for huge (or multi-size) shmem
pages: punching part of a large folio zeroes that part in place, under the data in flight.
So sendfile is on only where the arena's pages are known to be 4 KiB: the file is on tmpfs
(or is the anonymous arena's memfd) and no huge-page setting can give it large folios.
"""
from __future__ import annotations

import glob

from origin_clients.file import mount_of

THP = "/sys/kernel/mm/transparent_hugepage"
LARGE = {"always", "within_size", "force"}      # settings that may give a file large folios


def _selected(path: str) -> str | None:
    """The bracketed choice of a sysfs setting such as ``always [never] deny``."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def _shmem_large_folios(root: str = THP) -> str | None:
    """The setting that lets shmem use pages larger than 4 KiB, or None if none does."""
    top = _selected(f"{root}/shmem_enabled")
    if top in LARGE:
        return f"{root}/shmem_enabled is {top}"
    for path in sorted(glob.glob(f"{root}/hugepages-*/shmem_enabled")):
        size = _selected(path)
        if size in LARGE or (size == "inherit" and top in LARGE):
            return f"{path} is {size}"
    return None


def unsafe_reason(arena_path: str | None, *, thp_root: str = THP,
                  mounts: str = "/proc/self/mounts") -> str | None:
    """Why sendfile from this arena would be unsafe, or None when it is safe.

    ``arena_path`` None: the anonymous arena (a memfd)."""
    large = _shmem_large_folios(thp_root)
    if large:
        return f"shmem may use huge pages ({large})"
    if arena_path is None:
        return None
    fstype, opts = mount_of(arena_path, mounts)
    if fstype != "tmpfs":
        return f"the arena file {arena_path} is on {fstype or 'an unknown filesystem'}, not tmpfs"
    for opt in opts.split(","):
        if opt.startswith("huge=") and opt[5:] in LARGE:
            return f"the tmpfs holding {arena_path} is mounted with {opt}"
    return None
