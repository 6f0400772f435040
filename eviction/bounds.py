"""Bounds for reports: the unbounded cache and a clairvoyant policy (Belady with bypass).

* **Unbounded**: infinite capacity; only a block's first access misses (compulsory misses).
  No policy of any size does better.
* **Clairvoyant**: knows the future. Optimal replacement with variable sizes and bypass is
  NP-hard, so this is a heuristic, exact when all blocks weigh the same: on a miss the block is
  admitted only if room can be made by evicting residents whose next use is further away than
  its own, furthest first (Belady's MIN with bypass); otherwise it bypasses the cache and
  nothing is evicted. A block never used again is not admitted, and a resident hit for the
  last time leaves at once. With blocks of one size (objects larger than a block, all but
  their tails) this is close to exact; small objects and tails make it a strong heuristic,
  not a proof, so a policy may occasionally beat it by a hair on byte ratios.

Next uses are precomputed with numpy (a stable sort by key); the replay is a heap with lazy
deletion, O(log n) per access.
"""
from __future__ import annotations

import heapq

import numpy as np


def next_use(keys: np.ndarray) -> np.ndarray:
    """For each position, the position of the same key's next access, or ``len(keys)``."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    nxt = np.full(n, n, dtype=np.int64)
    same = sk[1:] == sk[:-1]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def unbounded_hits(first: np.ndarray) -> np.ndarray:
    """Hits of an infinite cache: every access but each block's first."""
    return ~first


def clairvoyant_hits(keys: np.ndarray, weights: np.ndarray, capacity: int) -> np.ndarray:
    """Hits (bool per access) of Belady with bypass at ``capacity`` bytes (see the module doc)."""
    n = len(keys)
    nxt = next_use(keys).tolist()
    ks = keys.tolist()
    ws = weights.tolist()
    hits = bytearray(n)
    cur: dict[int, int] = {}        # resident key -> its next use (the heap entry that is valid)
    wres: dict[int, int] = {}       # resident key -> weight
    heap: list[tuple[int, int]] = []  # (-next use, key), stale entries skipped lazily
    push, pop = heapq.heappush, heapq.heappop
    used = 0
    for i in range(n):
        k = ks[i]
        nu = nxt[i]
        if k in cur:
            hits[i] = 1
            if nu >= n:               # its last use: leave now
                del cur[k]
                used -= wres.pop(k)
            else:
                cur[k] = nu
                push(heap, (-nu, k))
            continue
        w = ws[i]
        if nu >= n or w > capacity:
            continue
        if used + w > capacity:
            taken: list[tuple[int, int]] = []
            freed = 0
            while used - freed + w > capacity:
                while heap and cur.get(heap[0][1]) != -heap[0][0]:
                    pop(heap)
                if not heap or -heap[0][0] <= nu:
                    break             # every resident is needed no later than this block
                item = pop(heap)
                taken.append(item)
                freed += wres[item[1]]
            if used - freed + w > capacity:
                for item in taken:    # bypass: put them back untouched
                    push(heap, item)
                continue
            for _, v in taken:
                del cur[v]
                used -= wres.pop(v)
        cur[k] = nu
        wres[k] = w
        used += w
        push(heap, (-nu, k))
    return np.frombuffer(bytes(hits), dtype=np.uint8).astype(bool)
