"""Eviction policies: they decide victims and never touch memory (storage frees the victims).

``make_policy(name, capacity, evictable=...)`` builds one of ``POLICIES``; the default is
W-TinyLFU. ``sim.simulate`` replays traces through any of them.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from .admission import TinyLFUAdmission
from .base import MAX_SKIPS, Policy
from .lfu import LFU
from .lru import LRU
from .sim import SimResult, simulate, zipf_trace
from .wtinylfu import WTinyLFU

POLICIES: dict[str, type[Policy]] = {"lru": LRU, "lfu": LFU, "wtinylfu": WTinyLFU}
DEFAULT = "wtinylfu"


def make_policy(
    name: str,
    capacity: int,
    *,
    evictable: Callable[[Hashable], bool] | None = None,
    **kw: Any,
) -> Policy:
    """Build the policy called ``name`` (see ``POLICIES``) over ``capacity`` bytes."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown eviction policy {name!r} (valid: {', '.join(sorted(POLICIES))})"
        ) from None
    return cls(capacity, evictable=evictable, **kw)


__all__ = [
    "DEFAULT", "LFU", "LRU", "MAX_SKIPS", "POLICIES", "Policy", "SimResult", "TinyLFUAdmission",
    "WTinyLFU", "make_policy", "simulate", "zipf_trace",
]
