"""Byte-range requests: parsing and evaluating the Range header (RFC 9110 §14).

``parse_range(value, size)`` turns a Range field value into the list of byte ranges to send, as
``(start, end_exclusive)`` pairs, sorted, with overlapping and adjacent ranges coalesced
(§14.2 lets a server coalesce; clients must accept parts in any order).

Decisions, all allowed by §14.2 ("a server MAY ignore the Range header field"):

* ``None`` means *ignore Range and send the whole representation with 200*. That is the answer
  for a syntactically invalid header (including an int-range whose last-pos is below its
  first-pos, §14.1.1), a range unit other than ``bytes`` (compared case-insensitively, §14.1),
  more than ``max_ranges`` range-specs, and a zero-length representation (nothing can be cut
  out of it; the empty 200 is the honest answer).
* Amplification guard: if the requested ranges, clamped to the representation but *before*
  coalescing, add up to more bytes than the representation has (``bytes=0-,0-,0-`` or many
  overlapping ranges, the "Apache killer" pattern), the header is ignored and the whole
  representation is sent once with 200. Coalescing alone would already bound the body; the guard
  keeps such requests from costing anything beyond a plain download.
* Unsatisfiable members of a range set are dropped when at least one member is satisfiable
  (§14.1.2). When none is, :class:`RangeNotSatisfiable` (416 with ``Content-Range: bytes */SIZE``)
  is raised (§15.5.17).
* A last-pos at or beyond the end is clamped to the last byte; a suffix longer than the
  representation selects all of it (§14.1.2).
* List syntax follows §5.6.1.2: empty elements are skipped (``bytes=0-1,,2-3``), optional
  whitespace around commas is allowed, at least one range-spec is required. Whitespace is also
  tolerated after ``=``; numbers are ASCII digits only.
"""
from __future__ import annotations

import re

from .errors import RangeNotSatisfiable

__all__ = ["parse_range"]

# int-range / suffix-range; anything else (other-range, junk) makes the whole header invalid.
_SPEC = re.compile(rb"([0-9]*)-([0-9]*)")
# Integers longer than this are beyond any size we can hold; avoid int() of huge digit strings.
_MAX_DIGITS = 18
_HUGE = 10 ** _MAX_DIGITS


def _num(digits: bytes) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


def parse_range(value: bytes, size: int, max_ranges: int = 16) -> list[tuple[int, int]] | None:
    """Evaluate a ``Range`` field value against a representation of ``size`` bytes.

    Returns the ranges to send as sorted, coalesced ``(start, end_exclusive)`` pairs within
    ``[0, size)``, or ``None`` when the header must be ignored (full 200; see the module docstring
    for when). Raises :class:`RangeNotSatisfiable` when the header is valid but selects nothing.
    """
    unit, eq, rest = value.partition(b"=")
    if not eq or unit.lower() != b"bytes":
        return None
    specs: list[tuple[bytes, bytes]] = []
    for element in rest.split(b","):
        element = element.strip(b" \t")
        if not element:
            continue
        m = _SPEC.fullmatch(element)
        if m is None:
            return None
        first, last = m.group(1), m.group(2)
        if not first and not last:
            return None                      # a lone "-"
        specs.append((first, last))
        if len(specs) > max_ranges:
            return None
    if not specs or size <= 0:
        return None

    ranges: list[tuple[int, int]] = []
    invalid = False
    for first, last in specs:
        if first:
            start = _num(first)
            if last:
                end = _num(last) + 1
                if end <= start:
                    invalid = True           # last-pos < first-pos: the whole header is invalid
                    break
            else:
                end = size
            if start >= size:
                continue                     # unsatisfiable member
            ranges.append((start, min(end, size)))
        else:
            length = _num(last)
            if length == 0:
                continue                     # "-0" selects nothing
            ranges.append((max(size - length, 0), size))
    if invalid:
        return None
    if not ranges:
        raise RangeNotSatisfiable(size)
    if sum(end - start for start, end in ranges) > size:
        return None                          # amplification guard: send the whole thing once

    ranges.sort()
    merged = [ranges[0]]
    for start, end in ranges[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:                # overlapping or adjacent
            if end > last_end:
                merged[-1] = (last_start, end)
        else:
            merged.append((start, end))
    return merged
