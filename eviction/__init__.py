"""Eviction policies: they decide victims and never touch memory (storage frees the victims).

``make_policy(name, capacity, evictable=...)`` builds one of ``POLICIES``; the default is
W-TinyLFU (``DEFAULT``). ``sim`` replays traces through any of them, with the unbounded and
clairvoyant bounds (``bounds``); ``traces`` reads and writes trace files and expands requests
to blocks; ``synth`` generates seeded synthetic traces; ``mrc`` builds miss-ratio curves.
"""
from __future__ import annotations

from .admission import TinyLFUAdmission
from .base import MAX_SKIPS, Policy
from .lfu import LFU
from .lru import LRU
from .registry import BOUNDS, DEFAULT, POLICIES, SIZED, make_policy
from .wtinylfu import WTinyLFU

_SIM_NAMES = ("Report", "SimResult", "simulate", "zipf_trace")


def __getattr__(name: str) -> object:
    """The simulator's names, imported on first use: the server never needs them (nor numpy)."""
    if name in _SIM_NAMES:
        from . import sim

        return getattr(sim, name)
    raise AttributeError(f"module 'eviction' has no attribute {name!r}")

__all__ = [
    "BOUNDS", "DEFAULT", "LFU", "LRU", "MAX_SKIPS", "POLICIES", "Policy", "Report", "SIZED",
    "SimResult", "TinyLFUAdmission", "WTinyLFU", "make_policy", "simulate", "zipf_trace",
]
