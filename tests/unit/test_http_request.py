"""RequestParser: framing, limits, pipelining, keys. Every input is fed three ways (h11 style)."""
from __future__ import annotations

import pytest

from edge.http import HTTPError, Limits, Request, RequestParser

DEFAULT = Limits()
TRAILER = b"GET /next HTTP/1.1\r\nHost: x\r\n"   # a following, unfinished request


def feed_whole(data: bytes, limits: Limits) -> tuple[list[Request | HTTPError], RequestParser]:
    p = RequestParser(limits)
    return p.feed(data), p


def feed_bytewise(data: bytes, limits: Limits) -> tuple[list[Request | HTTPError], RequestParser]:
    p = RequestParser(limits)
    out: list[Request | HTTPError] = []
    for i in range(len(data)):
        out += p.feed(data[i:i + 1])
    return out, p


def parse(data: bytes, limits: Limits = DEFAULT) -> list[Request | HTTPError]:
    """Parse ``data`` whole, byte by byte and followed by a partial request; all must agree."""
    whole, p1 = feed_whole(data, limits)
    bytewise, p2 = feed_bytewise(data, limits)
    trailing, p3 = feed_whole(data + TRAILER, limits)
    assert bytewise == whole
    assert trailing == whole
    assert p1.in_progress == p2.in_progress
    ended = bool(whole) and (isinstance(whole[-1], HTTPError) or not whole[-1].keep_alive)
    if not ended:
        assert p3.in_progress         # the trailing partial request is being read
    else:
        assert not p3.in_progress     # closed or failed: the rest is ignored
    return whole


def one(data: bytes, limits: Limits = DEFAULT) -> Request:
    out = parse(data, limits)
    assert len(out) == 1 and isinstance(out[0], Request), out
    return out[0]


def fatal(data: bytes, limits: Limits = DEFAULT) -> HTTPError:
    out = parse(data, limits)
    assert out and isinstance(out[-1], HTTPError), out
    return out[-1]


def bad_request(data: bytes) -> HTTPError:
    req = one(data)
    assert req.error is not None
    assert not req.keep_alive
    return req.error


def get(target: bytes, *headers: bytes, version: bytes = b"1.1", host: bool = True) -> bytes:
    lines = [b"GET " + target + b" HTTP/" + version]
    if host:
        lines.append(b"Host: example.com")
    lines.extend(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


# -- basics ----------------------------------------------------------------------------------

def test_simple_get() -> None:
    req = one(get(b"/bucket/file.bin?x=1&y", b"Range: bytes=0-99", b"Authorization: Bearer t"))
    assert req.method == b"GET"
    assert req.target == b"/bucket/file.bin?x=1&y"
    assert req.key == "bucket/file.bin"
    assert req.query == b"x=1&y"
    assert req.http_minor == 1 and req.keep_alive
    assert req.host == b"example.com"
    assert req.range == b"bytes=0-99"
    assert req.authorization == b"Bearer t"
    assert req.if_range is None and req.if_match is None and req.error is None
    assert req.headers == [(b"host", b"example.com"), (b"range", b"bytes=0-99"),
                           (b"authorization", b"Bearer t")]


def test_root_is_empty_key() -> None:
    req = one(get(b"/"))
    assert req.key == "" and req.query == b"" and req.error is None


def test_head_method_and_percent_decoding() -> None:
    req = one(b"HEAD /a%20b/%C3%A9t%C3%A9 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert req.method == b"HEAD"
    assert req.key == "a b/\u00e9t\u00e9"


def test_header_names_lowercased_values_trimmed() -> None:
    req = one(b"GET / HTTP/1.1\r\nHOST:   h  \t\r\nX-Thing:  a  b \r\nEmpty:\r\n\r\n")
    assert req.headers == [(b"host", b"h"), (b"x-thing", b"a  b"), (b"empty", b"")]
    assert req.host == b"h"


def test_conditional_fields_and_list_join() -> None:
    req = one(get(b"/k", b'If-Match: "a"', b'If-None-Match: "b", W/"c"', b'if-none-match: "d"',
                  b'If-Match: "e"', b"If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
                  b"If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT", b'If-Range: "a"'))
    assert req.if_match == b'"a", "e"'
    assert req.if_none_match == b'"b", W/"c", "d"'
    assert req.if_modified_since == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert req.if_unmodified_since == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert req.if_range == b'"a"'


def test_leading_empty_lines_are_ignored() -> None:
    req = one(b"\r\n\r\n\r\n" + get(b"/k"))
    assert req.key == "k"


# -- pipelining and connection management ---------------------------------------------------

def test_pipelining_three_requests() -> None:
    data = get(b"/a") + get(b"/b", b"Range: bytes=1-2") + b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n"
    out = parse(data)
    assert [r.key for r in out if isinstance(r, Request)] == ["a", "b", "c"]
    assert [r.method for r in out if isinstance(r, Request)] == [b"GET", b"GET", b"HEAD"]
    assert all(isinstance(r, Request) and r.keep_alive for r in out)


def test_requests_before_an_error_come_first() -> None:
    out = parse(get(b"/a") + get(b"/b") + b"GARBAGE\x00\r\n\r\n")
    assert [type(r) for r in out] == [Request, Request, HTTPError]
    assert isinstance(out[2], HTTPError) and out[2].status == 400


def test_parser_is_dead_after_an_error() -> None:
    p = RequestParser()
    out = p.feed(b"GET / HTTP/1.1\r\n\x01\r\n\r\n")
    assert len(out) == 1 and isinstance(out[0], HTTPError)
    assert p.feed(get(b"/a")) == []
    assert not p.in_progress


@pytest.mark.parametrize("version,connection,keep", [
    (b"1.1", None, True),
    (b"1.1", b"close", False),
    (b"1.1", b"Keep-Alive, Close", False),
    (b"1.1", b"keep-alive", True),
    (b"1.0", None, False),
    (b"1.0", b"keep-alive", True),
    (b"1.0", b"Keep-Alive", True),
    (b"1.0", b"foo, keep-alive", True),
    (b"1.0", b"keep-alive, close", False),
])
def test_keep_alive_rules(version: bytes, connection: bytes | None, keep: bool) -> None:
    headers = () if connection is None else (b"Connection: " + connection,)
    req = one(get(b"/k", *headers, version=version))
    assert req.keep_alive is keep
    assert req.http_minor == (1 if version == b"1.1" else 0)


def test_bytes_after_connection_close_are_ignored() -> None:
    p = RequestParser()
    out = p.feed(get(b"/a", b"Connection: close") + get(b"/b"))
    assert len(out) == 1 and isinstance(out[0], Request) and out[0].key == "a"
    assert p.feed(get(b"/c")) == []
    assert not p.in_progress


def test_http10_without_keep_alive_ends_the_stream() -> None:
    out = parse(get(b"/a", version=b"1.0") + get(b"/b", version=b"1.0"))
    assert len(out) == 1 and isinstance(out[0], Request) and out[0].key == "a"


def test_http10_without_host_is_fine() -> None:
    req = one(get(b"/a", version=b"1.0", host=False))
    assert req.error is None and req.host is None


def test_in_progress() -> None:
    p = RequestParser()
    assert not p.in_progress
    assert p.feed(b"G") == []
    assert p.in_progress
    assert len(p.feed(b"ET / HTTP/1.1\r\nHost: h\r\n\r\n")) == 1
    assert not p.in_progress
    assert p.feed(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n") == []
    assert p.in_progress                      # the body is still expected
    assert len(p.feed(b"ab")) == 1
    assert not p.in_progress


# -- versions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [b"2.0", b"0.9", b"3.0", b"9.1"])
def test_unsupported_versions_are_505(version: bytes) -> None:
    assert fatal(get(b"/", version=version)).status == 505


@pytest.mark.parametrize("version", [b"1.2", b"1.9"])
def test_higher_minor_version_is_processed_as_http11(version: bytes) -> None:
    req = one(get(b"/k", version=version))
    assert req.http_minor == 1 and req.keep_alive and req.error is None


@pytest.mark.parametrize("data", [
    b"GET / HTTP/11.1\r\nHost: h\r\n\r\n",
    b"GET / HTTX/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1\r\nHost: h\r\n\r\n",
])
def test_malformed_version_is_400(data: bytes) -> None:
    assert fatal(data).status == 400


# -- limits -----------------------------------------------------------------------------------

def test_head_size_limit_is_exact() -> None:
    limits = Limits(max_head_size=200)
    base = get(b"/k", b"X: ")
    filler = 200 - len(base)
    exact = get(b"/k", b"X: " + b"a" * filler)
    assert len(exact) == 200
    assert one(exact, limits).error is None
    err = fatal(get(b"/k", b"X: " + b"a" * (filler + 1)), limits)
    assert err.status == 431


def test_head_size_limit_without_terminator() -> None:
    err = fatal(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000, Limits())
    assert err.status == 431


def test_header_count_limit() -> None:
    limits = Limits(max_headers=5)
    assert one(get(b"/k", *[b"X-%d: v" % i for i in range(4)]), limits).error is None
    assert fatal(get(b"/k", *[b"X-%d: v" % i for i in range(5)]), limits).status == 431


def test_url_length_limit() -> None:
    limits = Limits(max_url_length=100)
    assert one(get(b"/" + b"a" * 99), limits).key == "a" * 99
    assert fatal(get(b"/" + b"a" * 100), limits).status == 414


def test_long_url_is_414_not_431() -> None:
    assert fatal(get(b"/" + b"a" * 20000)).status == 414


def test_small_content_length_body_is_discarded() -> None:
    out = parse(get(b"/a", b"Content-Length: 5") + b"hello" + get(b"/b"))
    assert [r.key for r in out if isinstance(r, Request)] == ["a", "b"]


def test_body_that_looks_like_a_request_is_not_parsed() -> None:
    body = get(b"/smuggled")
    out = parse(get(b"/a", b"Content-Length: %d" % len(body)) + body + get(b"/b"))
    assert [r.key for r in out if isinstance(r, Request)] == ["a", "b"]


def test_small_chunked_body_is_discarded() -> None:
    body = b"5\r\nhello\r\n4;ext=1\r\n\r\n\r\n\r\n0\r\nTrailer: x\r\n\r\n"
    out = parse(get(b"/a", b"Transfer-Encoding: chunked") + body + get(b"/b"))
    assert [r.key for r in out if isinstance(r, Request)] == ["a", "b"]
    assert isinstance(out[0], Request)
    assert (b"trailer", b"x") not in out[0].headers


def test_large_content_length_is_413_before_reading() -> None:
    limits = Limits(max_body=10)
    assert one(get(b"/a", b"Content-Length: 10") + b"x" * 10, limits).key == "a"
    assert fatal(get(b"/a", b"Content-Length: 11"), limits).status == 413
    assert fatal(get(b"/a", b"Content-Length: 9999999999999999999"), limits).status == 413
    assert fatal(get(b"/a", b"Content-Length: 99999999999999999999999"), limits).status == 400


def test_large_chunked_body_is_413() -> None:
    limits = Limits(max_body=10)
    ok = get(b"/a", b"Transfer-Encoding: chunked") + b"a\r\n0123456789\r\n0\r\n\r\n"
    assert one(ok, limits).key == "a"
    big = get(b"/a", b"Transfer-Encoding: chunked") + b"6\r\n012345\r\n6\r\n012345\r\n"
    assert fatal(big, limits).status == 413


def test_chunked_framing_overhead_is_bounded() -> None:
    limits = Limits(max_body=10, max_head_size=100)
    data = get(b"/a", b"Transfer-Encoding: chunked") + b"1;" + b"e" * 200
    assert fatal(data, limits).status == 413


# -- framing errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: h\n\n",                                          # bare LF
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",                      # obs-fold
    b"GET / HTTP/1.1\r\nBad Name: h\r\n\r\n",
    b"GET / HTTP/1.1\r\n: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /a\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",                               # raw non-ASCII
    b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",                            # TLS hello
    b"G\x00T / HTTP/1.1\r\n\r\n",
])
def test_malformed_streams_are_400(data: bytes) -> None:
    err = fatal(data)
    assert err.status == 400 and err.detail


@pytest.mark.parametrize("method", [b"FOO", b"get", b"BREW"])
def test_unknown_token_method_is_501(method: bytes) -> None:
    assert fatal(method + b" / HTTP/1.1\r\nHost: h\r\n\r\n").status == 501


def test_other_methods_are_returned_for_the_shell() -> None:
    req = one(b"DELETE /k HTTP/1.1\r\nHost: h\r\n\r\n")
    assert req.method == b"DELETE" and req.error is None
    req = one(b"POST /k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    assert req.method == b"POST" and req.key == "k"


# -- Host ------------------------------------------------------------------------------------

def test_missing_host_in_http11() -> None:
    err = bad_request(get(b"/k", host=False))
    assert (err.status, err.detail) == (400, "missing Host header")


@pytest.mark.parametrize("name", [b"Host", b"Range", b"If-Range", b"If-Modified-Since",
                                  b"If-Unmodified-Since", b"Authorization"])
def test_duplicate_singleton_headers(name: bytes) -> None:
    err = bad_request(get(b"/k", name + b": a", name.lower() + b": b"))
    assert (err.status, err.detail) == (400, f"duplicate {name.decode()} header")


def test_error_request_ends_the_connection() -> None:
    out = parse(get(b"/k", b"Host: other") + get(b"/b"))
    assert len(out) == 1 and isinstance(out[0], Request)
    assert out[0].error is not None and out[0].error.detail == "duplicate Host header"


@pytest.mark.parametrize("host", [b"example.com:8080", b"127.0.0.1", b"[::1]:80", b"", b"a-b.c_d"])
def test_valid_host_values(host: bytes) -> None:
    req = one(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert req.error is None and req.host == host


@pytest.mark.parametrize("host", [b"a b", b"a/b", b"a@b", b"h:port", b"[::1"])
def test_invalid_host_values(host: bytes) -> None:
    err = bad_request(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert (err.status, err.detail) == (400, "invalid Host header")


# -- request-target forms ---------------------------------------------------------------------

@pytest.mark.parametrize("target,key,query,host", [
    (b"http://origin.example/a/b?q=1", "a/b", b"q=1", b"origin.example"),
    (b"HTTPS://origin.example:443/a", "a", b"", b"origin.example:443"),
    (b"http://origin.example", "", b"", b"origin.example"),
    (b"http://origin.example?x", "", b"x", b"origin.example"),
])
def test_absolute_form_uses_its_path_and_authority(target: bytes, key: str, query: bytes,
                                                    host: bytes) -> None:
    req = one(get(target))
    assert req.error is None
    assert (req.key, req.query, req.host, req.target) == (key, query, host, target)


@pytest.mark.parametrize("target", [
    b"ftp://origin.example/a", b"http://user@origin.example/a", b"http:///a", b"http://:80/a",
])
def test_bad_absolute_form(target: bytes) -> None:
    assert bad_request(get(target)).status == 400


def test_asterisk_form() -> None:
    assert bad_request(get(b"*")).status == 400
    err = bad_request(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert err.status == 405 and (b"Allow", b"GET, HEAD") in err.headers


def test_connect_is_405_and_closes() -> None:
    out = parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03")
    assert len(out) == 1 and isinstance(out[0], Request)
    assert out[0].method == b"CONNECT" and not out[0].keep_alive
    assert out[0].error is not None and out[0].error.status == 405


def test_upgrade_is_a_normal_request_then_close() -> None:
    data = get(b"/k", b"Upgrade: websocket", b"Connection: Upgrade") + b"\x81\x85binary"
    out = parse(data)
    assert len(out) == 1 and isinstance(out[0], Request)
    assert out[0].key == "k" and out[0].error is None and not out[0].keep_alive


def test_upgrade_header_alone_is_ignored() -> None:
    out = parse(get(b"/k", b"Upgrade: websocket") + get(b"/b"))
    assert [r.key for r in out if isinstance(r, Request)] == ["k", "b"]


def test_fragment_is_rejected() -> None:
    assert bad_request(get(b"/a#frag")).detail == "fragment in request-target"


# -- keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,detail", [
    (b"/../etc/passwd", "'..' segment in path"),
    (b"/a/../b", "'..' segment in path"),
    (b"/a/..", "'..' segment in path"),
    (b"/..", "'..' segment in path"),
    (b"/%2e%2e/x", "'..' segment in path"),
    (b"/a/%2E./b", "'..' segment in path"),
    (b"/a/.%2e/b", "'..' segment in path"),
    (b"/a%2f..%2fb", "'..' segment in path"),
    (b"/a%2F%2E%2E", "'..' segment in path"),
    (b"/./a", "'.' segment in path"),
    (b"/a/./b", "'.' segment in path"),
    (b"/a/%2e", "'.' segment in path"),
    (b"/a//b", "empty path segment ('//')"),
    (b"//a", "empty path segment ('//')"),
    (b"/a%2f%2fb", "empty path segment ('//')"),
    (b"/a/", "empty path segment (trailing '/')"),
    (b"/a%2f", "empty path segment (trailing '/')"),
    (b"/a%00b", "control character in path"),
    (b"/a%0d%0aX:%20y", "control character in path"),
    (b"/a%7f", "control character in path"),
    (b"/a%c2%85", "control character in path"),
    (b"/a%ff", "path is not valid UTF-8"),
    (b"/a%c0%ae%c0%ae", "path is not valid UTF-8"),
    (b"/a%ed%a0%80", "path is not valid UTF-8"),
    (b"/a%zz", "malformed percent-escape in path"),
    (b"/a%2", "malformed percent-escape in path"),
    (b"/a%", "malformed percent-escape in path"),
])
def test_bad_keys(target: bytes, detail: str) -> None:
    err = bad_request(get(target))
    assert (err.status, err.detail) == (400, detail)


@pytest.mark.parametrize("target,key", [
    (b"/a.b/..c/...", "a.b/..c/..."),
    (b"/.hidden/x.", ".hidden/x."),
    (b"/a%25b", "a%b"),
    (b"/%E2%82%AC", "\u20ac"),
    (b"/a?b/../c", "a"),
    (b"/a+b", "a+b"),
])
def test_good_keys(target: bytes, key: str) -> None:
    req = one(get(target))
    assert req.error is None and req.key == key
