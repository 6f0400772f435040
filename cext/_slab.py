"""The slab-class rule shared by the arenas (cext/arena.pyx, cext/shm.pyx and their twins).

Chunk sizes grow from ``min_chunk`` (rounded up to ``ALIGN``) by ``growth``, each a multiple
of ``ALIGN`` and at least ``ALIGN`` more than the last (a growth close to 1 must still end),
up to half a page; the last class is a whole page. Pure Python: it runs once per arena.
"""
from __future__ import annotations

ALIGN = 64          # every chunk size is a multiple of this (and so every chunk start)


def round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def class_sizes(page_size: int, min_chunk: int, growth: float) -> list[int]:
    """Chunk sizes of the slab classes of pages of ``page_size`` bytes."""
    sizes = []
    cs = round_up(min_chunk, ALIGN)
    while cs <= page_size // 2:
        sizes.append(cs)
        cs = max(cs + ALIGN, round_up(min(int(cs * growth), page_size), ALIGN))
    sizes.append(page_size)
    return sizes
