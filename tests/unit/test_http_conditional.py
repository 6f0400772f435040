"""Conditional requests (RFC 9110 §13), entity-tag comparison (§8.8.3.2) and HTTP dates."""
from __future__ import annotations

import calendar
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http import (
    Request,
    evaluate_preconditions,
    format_http_date,
    if_range_allows,
    parse_http_date,
)
from edge.http.conditional import parse_etag_list

LM = 784111777                               # Sun, 06 Nov 1994 08:49:37 GMT
LM_DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = b"Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = b"Sun, 06 Nov 1994 08:49:38 GMT"
ETAG = b'"5f3a-1c"'


def req(method: bytes = b"GET", **fields: bytes) -> Request:
    return Request(method, b"/k", "k", b"", 1, True, [], **fields)  # type: ignore[arg-type]


# -- dates -------------------------------------------------------------------------------------

def test_format_rfc_example() -> None:
    assert format_http_date(LM) == LM_DATE
    assert format_http_date(LM + 0.999) == LM_DATE
    assert format_http_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"


@given(st.integers(min_value=-62135596800, max_value=253402300799))
def test_format_matches_the_stdlib(ts: int) -> None:
    if ts >= 0:
        assert format_http_date(ts) == email.utils.formatdate(ts, usegmt=True).encode()
    assert parse_http_date(format_http_date(ts)) == ts


@pytest.mark.parametrize("value", [
    b"Sun, 06 Nov 1994 08:49:37 GMT",        # IMF-fixdate
    b"Sunday, 06-Nov-94 08:49:37 GMT",       # obsolete RFC 850
    b"Sun Nov  6 08:49:37 1994",             # ANSI C asctime()
    b"  Sun, 06 Nov 1994 08:49:37 GMT ",
])
def test_parse_the_three_formats(value: bytes) -> None:
    assert parse_http_date(value) == LM


@pytest.mark.parametrize("value", [
    b"",
    b"Sun, 6 Nov 1994 08:49:37 GMT",
    b"Sun, 06 nov 1994 08:49:37 GMT",        # case-sensitive
    b"sun, 06 Nov 1994 08:49:37 GMT",
    b"Sun, 06 Nov 1994 08:49:37 UTC",
    b"Sun, 06 Nov 1994 08:49 GMT",
    b"Sun, 31 Nov 1994 08:49:37 GMT",        # no such day
    b"Tue, 29 Feb 2022 08:49:37 GMT",
    b"Sun, 06 Nov 1994 24:00:00 GMT",
    b"Sun, 06 Nov 1994 08:60:00 GMT",
    b"Sun, 06 Xyz 1994 08:49:37 GMT",
    b"Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
    b"784111777",
    b"Sunday, 06-Nov-1994 08:49:37 GMT",
    b"Sun Nov 6 08:49:37 1994",
    b"Sun, 06 Nov 1994 08:49:37 GMT\x00",
])
def test_parse_invalid_dates(value: bytes) -> None:
    assert parse_http_date(value) is None


def test_parse_leap_day_and_leap_second() -> None:
    assert parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT") == calendar.timegm(
        (2000, 2, 29, 0, 0, 0))
    assert parse_http_date(b"Sat, 31 Dec 2016 23:59:60 GMT") == calendar.timegm(
        (2017, 1, 1, 0, 0, 0))


def test_rfc850_two_digit_years() -> None:
    assert parse_http_date(b"Thursday, 01-Jan-70 00:00:00 GMT") == 0
    assert parse_http_date(b"Monday, 01-Jan-69 00:00:00 GMT") == calendar.timegm(
        (2069, 1, 1, 0, 0, 0))
    now = calendar.timegm((2026, 6, 1, 0, 0, 0))
    # 2076 is 50 years ahead: allowed; 2077 is more than 50 years ahead: 1977
    assert parse_http_date(b"Monday, 01-Jan-76 00:00:00 GMT", now) == calendar.timegm(
        (2076, 1, 1, 0, 0, 0))
    assert parse_http_date(b"Monday, 01-Jan-77 00:00:00 GMT", now) == calendar.timegm(
        (1977, 1, 1, 0, 0, 0))
    assert parse_http_date(b"Monday, 01-Jan-25 00:00:00 GMT", now) == calendar.timegm(
        (2025, 1, 1, 0, 0, 0))


# -- entity tags ---------------------------------------------------------------------------

def test_parse_etag_lists() -> None:
    assert parse_etag_list(b"*") == [(False, b"*")]
    assert parse_etag_list(b'"a"') == [(False, b'"a"')]
    assert parse_etag_list(b'W/"a", "b,c" ,, "",') == [(True, b'"a"'), (False, b'"b,c"'),
                                                       (False, b'""')]
    for garbage in (b"a", b'"a', b'"a" "b"', b'w/"a"', b'W/ "a"', b'*, "a"', b'"a b"',
                    b"", b" , ", b'"a"x'):
        assert parse_etag_list(garbage) is None, garbage


# RFC 9110 §8.8.3.2 table: ETag 1, ETag 2, strong comparison, weak comparison.
COMPARISON = [
    (b'W/"1"', b'W/"1"', False, True),
    (b'W/"1"', b'W/"2"', False, False),
    (b'W/"1"', b'"1"', False, True),
    (b'"1"', b'"1"', True, True),
]


@pytest.mark.parametrize("ours,theirs,strong,weak", COMPARISON)
def test_comparison_table(ours: bytes, theirs: bytes, strong: bool, weak: bool) -> None:
    # If-Match uses the strong comparison, If-None-Match the weak one.
    assert (evaluate_preconditions(req(if_match=theirs), ours, LM) is None) is strong
    assert (evaluate_preconditions(req(if_none_match=theirs), ours, LM) == 304) is weak
    # the comparison is symmetric
    assert (evaluate_preconditions(req(if_match=ours), theirs, LM) is None) is strong
    assert (evaluate_preconditions(req(if_none_match=ours), theirs, LM) == 304) is weak


# -- preconditions --------------------------------------------------------------------------

@pytest.mark.parametrize("fields,expected", [
    ({}, None),
    # If-Match
    ({"if_match": ETAG}, None),
    ({"if_match": b"*"}, None),
    ({"if_match": b'"other", ' + ETAG}, None),
    ({"if_match": b'"other"'}, 412),
    ({"if_match": b"W/" + ETAG}, 412),
    ({"if_match": b"5f3a-1c"}, 412),                           # unquoted: matches nothing
    # If-Unmodified-Since
    ({"if_unmodified_since": LM_DATE}, None),
    ({"if_unmodified_since": AFTER}, None),
    ({"if_unmodified_since": BEFORE}, 412),
    ({"if_unmodified_since": b"yesterday"}, None),             # invalid date: ignored
    ({"if_match": ETAG, "if_unmodified_since": BEFORE}, None), # ignored when If-Match present
    ({"if_match": b'"x"', "if_unmodified_since": AFTER}, 412),
    # If-None-Match
    ({"if_none_match": ETAG}, 304),
    ({"if_none_match": b"W/" + ETAG}, 304),
    ({"if_none_match": b"*"}, 304),
    ({"if_none_match": b'"a", "b"'}, None),
    ({"if_none_match": b"garbage"}, None),
    # If-Modified-Since
    ({"if_modified_since": LM_DATE}, 304),
    ({"if_modified_since": AFTER}, 304),
    ({"if_modified_since": BEFORE}, None),
    ({"if_modified_since": b"not a date"}, None),
    ({"if_modified_since": LM_DATE + b", " + LM_DATE}, None),  # more than one member
    # If-None-Match takes precedence over If-Modified-Since
    ({"if_none_match": b'"other"', "if_modified_since": AFTER}, None),
    ({"if_none_match": ETAG, "if_modified_since": BEFORE}, 304),
    # If-Match failure wins over If-None-Match
    ({"if_match": b'"other"', "if_none_match": ETAG}, 412),
    ({"if_unmodified_since": BEFORE, "if_none_match": ETAG}, 412),
    ({"if_match": ETAG, "if_none_match": ETAG}, 304),
])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_preconditions(fields: dict[str, bytes], expected: int | None, method: bytes) -> None:
    assert evaluate_preconditions(req(method, **fields), ETAG, LM) == expected


def test_preconditions_for_other_methods() -> None:
    assert evaluate_preconditions(req(b"DELETE", if_none_match=ETAG), ETAG, LM) == 412
    assert evaluate_preconditions(req(b"PUT", if_none_match=b"*"), ETAG, LM) == 412
    assert evaluate_preconditions(req(b"POST", if_modified_since=LM_DATE), ETAG, LM) is None


# -- If-Range -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,allowed", [
    (ETAG, True),
    (b" " + ETAG + b" ", True),
    (b'"other"', False),
    (b"W/" + ETAG, False),                   # weak tags never select ranges
    (LM_DATE, True),
    (b"Sunday, 06-Nov-94 08:49:37 GMT", True),
    (BEFORE, False),                         # a date must match exactly
    (AFTER, False),
    (b"garbage", False),
    (b"", False),
    (ETAG + b", " + ETAG, False),
    (b'"unterminated', False),
])
def test_if_range(value: bytes, allowed: bool) -> None:
    assert if_range_allows(value, ETAG, LM) is allowed


def test_if_range_with_a_weak_current_etag_never_matches() -> None:
    assert if_range_allows(b'"1"', b'W/"1"', LM) is False
