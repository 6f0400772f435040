"""TinyLFU admission, its own object: a frequency sketch that says whether a candidate may
displace a victim.

The filter is compiled with the policy core (``cext/wtlfu.pyx``, twin ``cext/_wtlfu_py.py``),
so the W-TinyLFU hot path calls it without Python overhead; any policy may use it through the
Python methods ``record(key)``, ``frequency(key)``, ``admit(candidate, victim, idle=0,
overdue=0)``, ``reset()`` and ``ensure_capacity(entries)``. Theory of operation (Einziger,
Friedman & Manes, 2017; Caffeine's FrequencySketch): every request is recorded; the doorkeeper
(a bloom filter) absorbs a key's first occurrence, repeats increment a 4-bit count-min sketch,
which halves every ``SAMPLES_PER_ENTRY x entries`` samples (the doorkeeper is cleared then). A
candidate is admitted when it is strictly more frequent than the victim, or, being at least
``JITTER_FREQ`` frequent, with probability 1/128 (against hash flooding; seeded, so runs are
deterministic). With ``overdue`` > 0 a victim idle for ``idle`` requests first has its
frequency halved ``idle x frequency x overdue // span`` times (at most 4): ``ticks`` and
``span`` make the filter the policy's clock (cext/wtlfu.pyx).
"""
from __future__ import annotations

import cext

_core = cext.load("wtlfu")
TinyLFUAdmission = _core.TinyLFU
JITTER_FREQ: int = _core.JITTER_FREQ

__all__ = ["JITTER_FREQ", "TinyLFUAdmission"]
