"""parse_range against RFC 9110 §14 (examples from §14.1.2 use a 10000-byte representation)."""
from __future__ import annotations

import pytest

from edge.http import HTTPError, RangeNotSatisfiable, parse_range


@pytest.mark.parametrize("value,size,expected", [
    # RFC 9110 §14.1.2 examples
    (b"bytes=0-499", 10000, [(0, 500)]),
    (b"bytes=500-999", 10000, [(500, 1000)]),
    (b"bytes=-500", 10000, [(9500, 10000)]),
    (b"bytes=9500-", 10000, [(9500, 10000)]),
    (b"bytes=0-0,-1", 10000, [(0, 1), (9999, 10000)]),
    (b"bytes=0-999,4500-5499,-1000", 10000, [(0, 1000), (4500, 5500), (9000, 10000)]),
    (b"bytes=500-600,601-999", 10000, [(500, 1000)]),          # adjacent: coalesced
    (b"bytes=500-700,601-999", 10000, [(500, 1000)]),          # overlapping: coalesced
    # ordering and coalescing
    (b"bytes=5000-5999,0-99", 10000, [(0, 100), (5000, 6000)]),
    (b"bytes=10-19,0-9,30-39", 10000, [(0, 20), (30, 40)]),
    (b"bytes=0-9,5-7", 10000, [(0, 10)]),                      # contained
    (b"bytes=100-,50-60", 10000, [(50, 61), (100, 10000)]),
    # clamping and suffixes
    (b"bytes=0-999999", 10, [(0, 10)]),
    (b"bytes=5-999999999999999999999999", 10, [(5, 10)]),
    (b"bytes=-500", 10, [(0, 10)]),
    (b"bytes=-99999999999999999999999", 10, [(0, 10)]),
    (b"bytes=0-", 10, [(0, 10)]),
    (b"bytes=9-", 10, [(9, 10)]),
    (b"bytes=9-9", 10, [(9, 10)]),
    # unsatisfiable members are dropped when another one is satisfiable
    (b"bytes=0-1,20-30", 10, [(0, 2)]),
    (b"bytes=-0,0-1", 10, [(0, 2)]),
    # list syntax: OWS, empty elements, unit case
    (b"bytes=0-1, 4-5", 10, [(0, 2), (4, 6)]),
    (b"bytes=0-1 ,\t4-5", 10, [(0, 2), (4, 6)]),
    (b"bytes=0-1,,4-5", 10, [(0, 2), (4, 6)]),
    (b"bytes=,0-1,", 10, [(0, 2)]),
    (b"bytes= 0-1", 10, [(0, 2)]),
    (b"Bytes=0-1", 10, [(0, 2)]),
    (b"BYTES=0-1", 10, [(0, 2)]),
    (b"bytes=007-008", 10, [(7, 9)]),
])
def test_satisfiable(value: bytes, size: int, expected: list[tuple[int, int]]) -> None:
    assert parse_range(value, size) == expected


@pytest.mark.parametrize("value,size", [
    (b"items=0-1", 10),                 # unknown unit
    (b"bytes 0-1", 10),                 # no "="
    (b"bytes =0-1", 10),
    (b"bytes=", 10),                    # no range-spec
    (b"bytes=,", 10),
    (b"bytes= , ", 10),
    (b"bytes=-", 10),
    (b"bytes=1-0", 10),                 # last-pos < first-pos: invalid, whole header ignored
    (b"bytes=0-1,5-2", 10),
    (b"bytes=a-b", 10),
    (b"bytes=0-1-2", 10),
    (b"bytes=+1-2", 10),
    (b"bytes=0x1-2", 10),
    (b"bytes=1 -2", 10),
    (b"bytes=0-1;x", 10),
    (b"bytes=\xd9\xa1-2", 10),          # non-ASCII digits
    (b"", 10),
    (b"bytes=0-1", 0),                  # empty representation: full (empty) 200
    (b"bytes=-5", 0),
    (b"bytes=0-", 0),
])
def test_ignored(value: bytes, size: int) -> None:
    assert parse_range(value, size) is None


def test_too_many_ranges_are_ignored() -> None:
    value = b"bytes=" + b",".join(b"%d-%d" % (i * 10, i * 10) for i in range(16))
    assert parse_range(value, 1000) is not None
    assert parse_range(value, 1000, max_ranges=15) is None
    value17 = value + b",900-900"
    assert parse_range(value17, 1000) is None


def test_empty_elements_do_not_count_toward_max_ranges() -> None:
    assert parse_range(b"bytes=0-0,,,,2-2", 10, max_ranges=2) == [(0, 1), (2, 3)]


@pytest.mark.parametrize("value,size", [
    (b"bytes=0-,0-", 100),              # twice the whole thing
    (b"bytes=0-,0-,0-,0-", 100),
    (b"bytes=0-60,40-99", 100),         # overlapping ranges that add up to more than the object
    (b"bytes=-100,0-0", 100),
])
def test_amplification_guard_sends_the_whole_object(value: bytes, size: int) -> None:
    assert parse_range(value, size) is None


def test_overlap_within_size_is_coalesced_not_ignored() -> None:
    assert parse_range(b"bytes=0-50,40-60", 100) == [(0, 61)]


@pytest.mark.parametrize("value,size", [
    (b"bytes=10-", 10),
    (b"bytes=10-20", 10),
    (b"bytes=-0", 10),
    (b"bytes=20-30,40-", 10),
    (b"bytes=99999999999999999999999-", 10),
])
def test_unsatisfiable(value: bytes, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(value, size)
    err = info.value
    assert isinstance(err, HTTPError)
    assert err.status == 416
    assert err.headers == ((b"Content-Range", b"bytes */%d" % size),)
