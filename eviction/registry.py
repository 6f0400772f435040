"""The policies by name: what ``cache.eviction``, ``edge sim --policy`` and bench/ accept."""
from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

from .base import Policy
from .lfu import LFU
from .lru import LRU
from .wtinylfu import DEFAULT_GHOST_GAIN, DEFAULT_OVERDUE, WTinyLFU

POLICIES: dict[str, Callable[..., Policy]] = {
    "wtinylfu": functools.partial(WTinyLFU, adaptive=True, overdue=DEFAULT_OVERDUE,
                                  ghost_gain=DEFAULT_GHOST_GAIN),
    "wtinylfu-static": WTinyLFU,
    "lfu": LFU,
    "lru": LRU,
}
"""name -> factory ``(capacity, *, evictable=None, **kw) -> Policy``; the default first.

``wtinylfu`` is Caffeine's design (W-TinyLFU whose window is sized by the hill climber) with
overdue victims discounted at admission and the protected share steered by ghosts of
admission's losers (docs/eviction.md); ``wtinylfu-static`` is the
paper's policy as published: fixed 1% window, plain frequency duel (bench/RESULTS.md
compares them)."""
DEFAULT = "wtinylfu"
SIZED = frozenset({"wtinylfu", "wtinylfu-static"})
"""Policies whose sketch is sized in entries: they take the expected entry weight."""
BOUNDS = ("unbounded", "clairvoyant")
"""Not policies (they need the future): the simulator's bounds."""


def make_policy(
    name: str,
    capacity: int,
    *,
    evictable: Callable[[Hashable], bool] | None = None,
    block_size: int | None = None,
    **kw: Any,
) -> Policy:
    """Build the policy called ``name`` (see ``POLICIES``) over ``capacity`` bytes.

    ``block_size``, when given, is the typical entry weight: sketch-based policies size their
    sketch from ``capacity // block_size`` entries (it grows by itself if more keys fit).
    """
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown eviction policy {name!r} (valid: {', '.join(sorted(POLICIES))})"
        ) from None
    if block_size is not None and name in SIZED:
        kw.setdefault("avg_weight", block_size)
    return factory(capacity, evictable=evictable, **kw)
