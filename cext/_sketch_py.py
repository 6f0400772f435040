"""Pure-Python twin of ``cext/sketch.pyx`` (selected by ``EDGE_NO_EXTENSIONS=1``).

Same API and the same values bit for bit (hashing, column choice, saturation, aging and the
sample count after aging); see sketch.pyx for the theory of operation. Layout differs where it
is invisible: one counter per byte of a ``bytearray`` (values still saturate at 15), halved in
one vectorised numpy pass; the doorkeeper's bits live in a ``bytearray`` too.
"""
from __future__ import annotations

import numpy as np

M64 = 0xFFFFFFFFFFFFFFFF
GOLDEN = 0x9E3779B97F4A7C15
DOOR_TWEAK = 0xD6E8FEB86659FD93
DOOR_PROBES = 4
MAX_DEPTH = 16


def _mix64(z: int) -> int:
    """splitmix64's finalizer on a uint64 (``z`` already masked)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _seed_salt(seed: int) -> int:
    return _mix64((((seed & M64) + 1) * GOLDEN) & M64)


def _pow2_at_least(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


class CountMinSketch:
    """Count-min sketch of ``depth`` rows x ``width`` 4-bit counters with periodic halving."""

    __slots__ = ("_mask", "_salt", "_samples", "_table", "_view", "depth", "sample_size", "width")

    def __init__(self, width: int, depth: int = 4, *, seed: int = 0,
                 sample_size: int | None = None) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be in 1..{MAX_DEPTH}, got {depth}")
        if width > (1 << 40):
            raise ValueError(f"width too large: {width}")
        self.width = _pow2_at_least(width)
        self.depth = depth
        if sample_size is not None and sample_size < 1:
            raise ValueError(f"sample_size must be >= 1, got {sample_size}")
        self.sample_size = 10 * self.width if sample_size is None else sample_size
        self._mask = self.width - 1
        self._salt = _seed_salt(seed)
        self._samples = 0
        self._table = bytearray(self.width * depth)      # row i, column c at i * width + c
        self._view = np.frombuffer(self._table, dtype=np.uint8)

    @property
    def samples(self) -> int:
        """Samples counted since the last aging."""
        return self._samples

    def increment(self, h: int) -> None:
        """Count one occurrence of the key with hash ``h`` (any int, masked to uint64)."""
        x = _mix64(((h & M64) + self._salt) & M64)
        step = (x >> 32) | 1
        mask, width, table = self._mask, self.width, self._table
        added = False
        for i in range(self.depth):
            idx = i * width + ((x + i * step) & mask)
            c = table[idx]
            if c != 15:
                table[idx] = c + 1
                added = True
        if added:
            self._samples += 1
            if self._samples >= self.sample_size:
                self.reset()

    def estimate(self, h: int) -> int:
        """The key's estimated count: the minimum of its counters (0..15)."""
        x = _mix64(((h & M64) + self._salt) & M64)
        step = (x >> 32) | 1
        mask, width, table = self._mask, self.width, self._table
        return min(table[i * width + ((x + i * step) & mask)] for i in range(self.depth))

    def reset(self) -> None:
        """Age the sketch: halve every counter (done automatically every sample_size samples)."""
        v = self._view
        odd = int(np.count_nonzero(v & 1))
        v >>= 1
        self._samples = max(0, (self._samples - odd // self.depth) // 2)

    def __repr__(self) -> str:
        return (f"CountMinSketch(width={self.width}, depth={self.depth}, "
                f"samples={self._samples}/{self.sample_size})")


class Doorkeeper:
    """Bloom filter with 4 probes per key; ``bits`` is rounded up to a power of two (>= 64)."""

    __slots__ = ("_bytes", "_mask", "_salt", "_view", "bits")

    def __init__(self, bits: int, *, seed: int = 0) -> None:
        if bits < 1:
            raise ValueError(f"bits must be >= 1, got {bits}")
        if bits > (1 << 44):
            raise ValueError(f"bits too large: {bits}")
        self.bits = _pow2_at_least(max(bits, 64))
        self._mask = self.bits - 1
        self._salt = _seed_salt(seed) ^ DOOR_TWEAK
        self._bytes = bytearray(self.bits >> 3)
        self._view = np.frombuffer(self._bytes, dtype=np.uint8)

    def put(self, h: int) -> bool:
        """Add the key with hash ``h``; True if it was (probably) already present."""
        x = _mix64(((h & M64) + self._salt) & M64)
        step = (x >> 32) | 1
        mask, data = self._mask, self._bytes
        present = True
        for i in range(DOOR_PROBES):
            b = (x + i * step) & mask
            byte, bit = b >> 3, 1 << (b & 7)
            if not data[byte] & bit:
                present = False
                data[byte] |= bit
        return present

    def __contains__(self, h: int) -> bool:
        x = _mix64(((h & M64) + self._salt) & M64)
        step = (x >> 32) | 1
        mask, data = self._mask, self._bytes
        for i in range(DOOR_PROBES):
            b = (x + i * step) & mask
            if not data[b >> 3] & (1 << (b & 7)):
                return False
        return True

    def clear(self) -> None:
        """Forget every key."""
        self._view.fill(0)

    def __repr__(self) -> str:
        return f"Doorkeeper(bits={self.bits})"
