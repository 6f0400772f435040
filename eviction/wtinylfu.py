"""W-TinyLFU (Caffeine's policy) over byte weights: the LFU-family default.

The policy core is compiled: ``cext/wtlfu.pyx`` (pure-Python twin ``cext/_wtlfu_py.py``,
selected by ``EDGE_NO_EXTENSIONS=1``) holds the theory of operation. This module picks the
implementation once, at import, and registers it as a :class:`~eviction.base.Policy`.

* ``WTinyLFU(capacity)``: a 1% admission window in front of a segmented main area
  (probation + 80% protected), TinyLFU admission (count-min sketch with aging and a
  doorkeeper) between them, as in Caffeine.
* ``WTinyLFU(capacity, adaptive=True)``: the same with Caffeine's hill climber sizing the
  window from the hit ratio of successive samples.
* ``overdue=DEFAULT_OVERDUE`` (the default policy, ``eviction.POLICIES["wtinylfu"]``): a
  probation victim silent for longer than its own count predicts has its frequency
  discounted before it meets a candidate, so keys whose popularity ended stop blocking
  newcomers.
* ``ghost_gain=DEFAULT_GHOST_GAIN`` (the default policy too): ghosts of refused candidates
  and evicted victims move the protected share (ARC-style feedback; ``protected`` is its
  ceiling).
"""
from __future__ import annotations

import cext

from .base import Policy

_core = cext.load("wtlfu")
WTinyLFU = _core.WTinyLFU
DEFAULT_AVG_WEIGHT: int = _core.DEFAULT_AVG_WEIGHT
DEFAULT_OVERDUE: int = _core.DEFAULT_OVERDUE
DEFAULT_GHOST_GAIN: int = _core.DEFAULT_GHOST_GAIN

Policy.register(WTinyLFU)   # only the twin in use: the other would import numpy for nothing

__all__ = ["DEFAULT_AVG_WEIGHT", "DEFAULT_GHOST_GAIN", "DEFAULT_OVERDUE", "WTinyLFU"]
