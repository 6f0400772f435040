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
from .sim import Report, SimResult, simulate, zipf_trace
from .wtinylfu import WTinyLFU

__all__ = [
    "BOUNDS", "DEFAULT", "LFU", "LRU", "MAX_SKIPS", "POLICIES", "Policy", "Report", "SIZED",
    "SimResult", "TinyLFUAdmission", "WTinyLFU", "make_policy", "simulate", "zipf_trace",
]
