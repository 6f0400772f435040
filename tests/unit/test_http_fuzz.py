"""Hypothesis: any bytes give Requests or one trailing HTTPError, however the stream is split."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.http import (
    HTTPError,
    Limits,
    RangeNotSatisfiable,
    Request,
    RequestParser,
    evaluate_preconditions,
    if_range_allows,
    parse_http_date,
    parse_range,
)
from edge.http.conditional import parse_etag_list

LIMITS = Limits(max_head_size=512, max_headers=8, max_url_length=128, max_body=64)
# EDGE_FUZZ_EXAMPLES=20000 for a longer run.
FUZZ = settings(max_examples=int(os.environ.get("EDGE_FUZZ_EXAMPLES", "400")),
                suppress_health_check=[HealthCheck.too_slow])

VALID = [
    b"GET /a/b?c=d HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1,5-\r\n\r\n",
    b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b'GET http://h/%2e%2e/k HTTP/1.1\r\nHost: h\r\nIf-None-Match: "a", W/"b"\r\n\r\n',
    b"\r\nGET /%C3%A9 HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
]


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Request | HTTPError]:
    parser = RequestParser(LIMITS)
    out: list[Request | HTTPError] = []
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        out += parser.feed(data[start:cut])
        start = cut
    return out


def check(out: list[Request | HTTPError]) -> None:
    for i, item in enumerate(out):
        assert isinstance(item, (Request, HTTPError))
        if isinstance(item, HTTPError):
            assert i == len(out) - 1, "an error ends the stream"
            assert item.status in (400, 413, 414, 431, 501, 505), item
        else:
            if i < len(out) - 1:
                assert item.keep_alive and item.error is None
            if item.error is None:
                segments = item.key.split("/")
                assert item.key == "" or all(s not in ("", ".", "..") for s in segments)
                assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in item.key)
            else:
                assert not item.keep_alive
                assert item.error.status in (400, 405)


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=8))
def test_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    whole = RequestParser(LIMITS).feed(data)
    check(whole)
    assert feed_in_pieces(data, cuts) == whole


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=4))))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup"]))
        piece = draw(st.sampled_from([b"\r\n", b" ", b"\x00", b":", b"%", b"/..", b"0",
                                      b"\r\n\r\n", b"Host: h\r\n", b"\xff", b"-", b","]))
        if op == "insert":
            data[pos:pos] = piece
        elif op == "delete":
            del data[pos:pos + draw(st.integers(min_value=1, max_value=8))]
        elif op == "replace":
            data[pos:pos + len(piece)] = piece
        else:
            data[pos:pos] = data[pos:pos + draw(st.integers(min_value=1, max_value=40))]
    return bytes(data)


@FUZZ
@given(mutated(), st.lists(st.integers(min_value=0), max_size=8))
def test_mutated_valid_requests(data: bytes, cuts: list[int]) -> None:
    whole = RequestParser(LIMITS).feed(data)
    check(whole)
    assert feed_in_pieces(data, cuts) == whole


@FUZZ
@given(st.lists(st.sampled_from(VALID[:4]), min_size=1, max_size=5),
       st.lists(st.integers(min_value=0), max_size=12))
def test_valid_pipelines_parse_completely(requests: list[bytes], cuts: list[int]) -> None:
    out = feed_in_pieces(b"".join(requests), cuts)
    # HTTP/1.0 without keep-alive ends the stream, so only a prefix may come back
    assert 1 <= len(out) <= len(requests)
    assert all(isinstance(r, Request) and r.error is None for r in out)


RANGE_ALPHABET = st.sampled_from([b"bytes", b"Bytes", b"=", b"-", b",", b" ", b"0", b"1", b"5",
                                  b"9", b"99999999999999999999", b"x", b"\t", b";"])


@FUZZ
@given(st.one_of(st.binary(max_size=40),
                 st.lists(RANGE_ALPHABET, max_size=20).map(b"".join),
                 st.lists(RANGE_ALPHABET, max_size=20).map(lambda p: b"bytes=" + b"".join(p))),
       st.integers(min_value=0, max_value=2000), st.integers(min_value=1, max_value=20))
def test_arbitrary_ranges(value: bytes, size: int, max_ranges: int) -> None:
    try:
        ranges = parse_range(value, size, max_ranges)
    except RangeNotSatisfiable as err:
        assert err.status == 416 and err.headers == ((b"Content-Range", b"bytes */%d" % size),)
        return
    if ranges is None:
        return
    assert ranges and len(ranges) <= max_ranges
    previous_end = -1
    for start, end in ranges:
        assert 0 <= start < end <= size
        assert start > previous_end, "sorted, and neither overlapping nor adjacent"
        previous_end = end


@FUZZ
@given(st.binary(max_size=60), st.binary(max_size=60), st.binary(max_size=40),
       st.sampled_from([b"GET", b"HEAD", b"PUT"]))
def test_arbitrary_validators(tags: bytes, date: bytes, if_range: bytes, method: bytes) -> None:
    parse_http_date(date)
    parse_etag_list(tags)
    r = Request(method, b"/k", "k", b"", 1, True, [], if_match=tags, if_none_match=tags,
                if_modified_since=date, if_unmodified_since=date)
    assert evaluate_preconditions(r, b'"e"', 0) in (None, 304, 412)
    assert if_range_allows(if_range, b'"e"', 0) in (True, False)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_tiny_feeds_of_a_big_head_stay_bounded(size: int) -> None:
    parser = RequestParser(LIMITS)
    data = b"GET / HTTP/1.1\r\nX: " + b"a" * 2000
    out: list[Request | HTTPError] = []
    for i in range(0, len(data), size):
        out += parser.feed(data[i:i + size])
    assert len(out) == 1 and isinstance(out[0], HTTPError) and out[0].status == 431
