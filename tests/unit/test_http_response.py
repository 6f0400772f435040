"""Response planning and framing: exact heads, multipart bodies that parse back."""
from __future__ import annotations

import email.parser
import email.policy
import re

import pytest

from edge.http import (
    HTTPError,
    Plan,
    RangeNotSatisfiable,
    Request,
    error_response,
    frame_head,
    head_end,
    head_parts,
    plan,
)

OBJECT = bytes(range(256)) * 4 + b"tail"      # 1028 bytes
SIZE = len(OBJECT)
ETAG = b'"obj-1"'
LM = 784111777
LM_DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
DATE = b"Mon, 01 Jun 2026 12:00:00 GMT"
BOUNDARY = b"3d6b6a416f9b5"


def req(method: bytes = b"GET", **fields: bytes) -> Request:
    return Request(method, b"/k", "k", b"", 1, True, [], **fields)  # type: ignore[arg-type]


def make(r: Request, size: int = SIZE) -> Plan:
    return plan(r, size, ETAG, LM, boundary=BOUNDARY)


def body_of(p: Plan, obj: bytes = OBJECT) -> bytes:
    out = b"".join(part if isinstance(part, bytes) else obj[part[0]:part[1]] for part in p.parts)
    assert len(out) == p.content_length
    return out


def header(p: Plan, name: bytes) -> bytes | None:
    values = [v for n, v in p.headers if n.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


# -- frame_head -------------------------------------------------------------------------------

def test_frame_head_exact_bytes() -> None:
    head = frame_head(206, [(b"Content-Length", b"10"), (b"Content-Range", b"bytes 0-9/100")],
                      date=DATE, cache_status=b"edge; hit", keep_alive=True)
    assert head == (b"HTTP/1.1 206 Partial Content\r\n"
                    b"Date: Mon, 01 Jun 2026 12:00:00 GMT\r\n"
                    b"Content-Length: 10\r\n"
                    b"Content-Range: bytes 0-9/100\r\n"
                    b"Cache-Status: edge; hit\r\n"
                    b"\r\n")


@pytest.mark.parametrize("http_minor,keep_alive,connection", [
    (1, True, None),
    (1, False, b"close"),
    (0, True, b"keep-alive"),
    (0, False, None),
])
def test_frame_head_connection(http_minor: int, keep_alive: bool,
                               connection: bytes | None) -> None:
    head = frame_head(200, [], date=DATE, cache_status=b"edge; hit", keep_alive=keep_alive,
                      http_minor=http_minor)
    expected = b"HTTP/1.1 200 OK\r\nDate: " + DATE + b"\r\nCache-Status: edge; hit\r\n"
    if connection is not None:
        expected += b"Connection: " + connection + b"\r\n"
    assert head == expected + b"\r\n"


def test_frame_head_unknown_status() -> None:
    head = frame_head(599, [], date=DATE, cache_status=b"x", keep_alive=True)
    assert head.startswith(b"HTTP/1.1 599 \r\n")
    with pytest.raises(ValueError):
        frame_head(42, [], date=DATE, cache_status=b"x", keep_alive=True)


# -- error_response ---------------------------------------------------------------------------

def test_error_response_exact_bytes() -> None:
    err = HTTPError(405, "method POST not allowed", ((b"Allow", b"GET, HEAD"),))
    assert error_response(err, date=DATE) == (
        b"HTTP/1.1 405 Method Not Allowed\r\n"
        b"Date: Mon, 01 Jun 2026 12:00:00 GMT\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 48\r\n"
        b"Allow: GET, HEAD\r\n"
        b"Cache-Status: edge; fwd=bypass\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"405 Method Not Allowed: method POST not allowed\n")


def test_error_response_variants() -> None:
    err = RangeNotSatisfiable(SIZE)
    full = error_response(err, date=DATE, keep_alive=True, cache_status=b"edge; hit")
    head, _, body = full.partition(b"\r\n\r\n")
    assert body == b"416 Range Not Satisfiable: no satisfiable range\n"
    assert b"\r\nContent-Range: bytes */1028\r\n" in head
    assert b"Connection" not in head
    assert b"\r\nContent-Length: %d\r\n" % len(body) in head
    head_only = error_response(err, date=DATE, keep_alive=True, cache_status=b"edge; hit",
                               head_only=True)
    assert head_only == head + b"\r\n\r\n"
    http10 = error_response(err, date=DATE, keep_alive=True, http_minor=0)
    assert b"\r\nConnection: keep-alive\r\n" in http10
    assert b"\r\nConnection: close\r\n" in error_response(err, date=DATE, http_minor=0)


def test_error_response_non_ascii_detail() -> None:
    data = error_response(HTTPError(400, "bad key '\u00e9'"), date=DATE)
    assert data.endswith("400 Bad Request: bad key '\u00e9'\n".encode())


# -- plan: 200 / HEAD / 304 / 412 -------------------------------------------------------------

def test_plan_200() -> None:
    p = make(req())
    assert p.status == 200 and p.send_body
    assert p.headers == [(b"Content-Type", b"application/octet-stream"),
                         (b"Content-Length", b"1028"), (b"ETag", ETAG),
                         (b"Last-Modified", LM_DATE), (b"Accept-Ranges", b"bytes")]
    assert p.parts == [(0, SIZE)]
    assert body_of(p) == OBJECT


def test_plan_200_full_head_bytes() -> None:
    p = plan(req(), 5, ETAG, LM, boundary=BOUNDARY, content_type=b"video/mp4")
    head = frame_head(p.status, p.headers, date=DATE, cache_status=b"edge; hit",
                      keep_alive=True)
    assert head == (b"HTTP/1.1 200 OK\r\n"
                    b"Date: Mon, 01 Jun 2026 12:00:00 GMT\r\n"
                    b"Content-Type: video/mp4\r\n"
                    b"Content-Length: 5\r\n"
                    b'ETag: "obj-1"\r\n'
                    b"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                    b"Accept-Ranges: bytes\r\n"
                    b"Cache-Status: edge; hit\r\n"
                    b"\r\n")


def test_plan_empty_object() -> None:
    p = plan(req(range=b"bytes=0-10"), 0, ETAG, LM, boundary=BOUNDARY)
    assert (p.status, p.parts, p.content_length) == (200, [], 0)
    assert header(p, b"Content-Length") == b"0"


def test_plan_head_has_get_headers_and_no_body() -> None:
    get, head = make(req()), make(req(b"HEAD"))
    assert head.headers == get.headers
    assert head.status == 200 and not head.send_body
    assert head.content_length == SIZE


def test_plan_head_ignores_range() -> None:
    p = make(req(b"HEAD", range=b"bytes=0-9"))
    assert p.status == 200 and header(p, b"Content-Length") == b"1028" and not p.send_body


def test_plan_304() -> None:
    p = make(req(if_none_match=ETAG, range=b"bytes=0-9"))
    assert p.status == 304 and not p.send_body
    assert p.headers == [(b"ETag", ETAG), (b"Last-Modified", LM_DATE)]
    assert p.parts == [] and p.content_length == 0
    head = make(req(b"HEAD", if_modified_since=LM_DATE))
    assert head.status == 304 and not head.send_body


def test_plan_412() -> None:
    p = make(req(if_match=b'"other"', range=b"bytes=0-9"))
    assert p.status == 412
    assert p.headers == [(b"Content-Length", b"0")]
    assert p.parts == [] and p.content_length == 0


# -- plan: ranges -----------------------------------------------------------------------------

def test_plan_single_range() -> None:
    p = make(req(range=b"bytes=10-19"))
    assert p.status == 206 and p.send_body
    assert p.headers == [(b"Content-Type", b"application/octet-stream"),
                         (b"Content-Length", b"10"), (b"Content-Range", b"bytes 10-19/1028"),
                         (b"ETag", ETAG), (b"Last-Modified", LM_DATE),
                         (b"Accept-Ranges", b"bytes")]
    assert body_of(p) == OBJECT[10:20]


def test_plan_suffix_range() -> None:
    p = make(req(range=b"bytes=-4"))
    assert header(p, b"Content-Range") == b"bytes 1024-1027/1028"
    assert body_of(p) == b"tail"


def test_plan_invalid_range_is_200() -> None:
    assert make(req(range=b"bytes=9-1")).status == 200
    assert make(req(range=b"lines=1-2")).status == 200


def test_plan_unsatisfiable_range_raises_416() -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        make(req(range=b"bytes=5000-"))
    assert info.value.headers == ((b"Content-Range", b"bytes */1028"),)


def test_plan_preconditions_come_before_range() -> None:
    assert make(req(range=b"bytes=5000-", if_none_match=b"*")).status == 304


@pytest.mark.parametrize("if_range,status", [
    (ETAG, 206), (LM_DATE, 206), (b'"old"', 200), (b"W/" + ETAG, 200),
    (b"Sun, 06 Nov 1994 08:49:36 GMT", 200),
])
def test_plan_if_range(if_range: bytes, status: int) -> None:
    p = make(req(range=b"bytes=0-9", if_range=if_range))
    assert p.status == status
    if status == 200:
        assert body_of(p) == OBJECT


def test_plan_max_ranges() -> None:
    r = req(range=b"bytes=0-0,2-2,4-4")
    assert plan(r, SIZE, ETAG, LM, boundary=BOUNDARY, max_ranges=2).status == 200
    assert plan(r, SIZE, ETAG, LM, boundary=BOUNDARY, max_ranges=3).status == 206


def parse_multipart(content_type: bytes, body: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """Split a multipart/byteranges body by hand (RFC 2046 §5.1.1): (type, range, data)."""
    m = re.fullmatch(rb"multipart/byteranges; boundary=([A-Za-z0-9'+_\-.]+)", content_type)
    assert m is not None
    boundary = m.group(1)
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    inner = body[len(boundary) + 4:-(len(boundary) + 8)]
    parts = []
    for chunk in inner.split(b"\r\n--" + boundary + b"\r\n"):
        head, sep, data = chunk.partition(b"\r\n\r\n")
        assert sep
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        assert set(fields) == {b"Content-Type", b"Content-Range"}
        parts.append((fields[b"Content-Type"], fields[b"Content-Range"], data))
    return parts


def test_plan_multipart() -> None:
    p = plan(req(range=b"bytes=0-0,-4,100-199"), SIZE, ETAG, LM, boundary=BOUNDARY,
             content_type=b"application/x-blob")
    assert p.status == 206 and p.send_body
    content_type = header(p, b"Content-Type")
    assert content_type == b"multipart/byteranges; boundary=" + BOUNDARY
    assert header(p, b"Content-Range") is None
    body = body_of(p)
    assert header(p, b"Content-Length") == b"%d" % len(body)
    parts = parse_multipart(content_type, body)
    assert parts == [
        (b"application/x-blob", b"bytes 0-0/1028", OBJECT[0:1]),
        (b"application/x-blob", b"bytes 100-199/1028", OBJECT[100:200]),
        (b"application/x-blob", b"bytes 1024-1027/1028", OBJECT[1024:]),
    ]
    # literal parts and object ranges alternate; object bytes are never copied into the plan
    assert [type(x) for x in p.parts] == [bytes, tuple, bytes, tuple, bytes, tuple, bytes]


def test_plan_multipart_parses_with_the_email_package() -> None:
    p = make(req(range=b"bytes=1-2,10-20,500-"))
    content_type = header(p, b"Content-Type")
    assert content_type is not None
    raw = b"Content-Type: " + content_type + b"\r\nMIME-Version: 1.0\r\n\r\n" + body_of(p)
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert msg.is_multipart()
    got = [(part["Content-Range"], part.get_payload(decode=True)) for part in msg.iter_parts()]
    assert got == [("bytes 1-2/1028", OBJECT[1:3]), ("bytes 10-20/1028", OBJECT[10:21]),
                   ("bytes 500-1027/1028", OBJECT[500:])]


def test_plan_multipart_coalesced_to_one_range_is_single_206() -> None:
    p = make(req(range=b"bytes=0-9,10-19"))
    assert p.status == 206 and header(p, b"Content-Range") == b"bytes 0-19/1028"


@pytest.mark.parametrize("boundary", [b"", b"a b", b"x" * 71, b'a"b', b"a\r\nb"])
def test_plan_rejects_bad_boundaries(boundary: bytes) -> None:
    with pytest.raises(ValueError):
        plan(req(range=b"bytes=0-0,5-5"), SIZE, ETAG, LM, boundary=boundary)


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("http_minor", [0, 1])
@pytest.mark.parametrize("r", [req(), req(b"HEAD"), req(range=b"bytes=5-9"), req(if_match=b'"x"')])
def test_head_parts_frame_the_same_head(r: Request, keep_alive: bool, http_minor: int) -> None:
    p = make(r)
    before, after = head_parts(p.status, p.headers, cache_status=b"edge; hit")
    assert before + DATE + after + head_end(keep_alive, http_minor) == frame_head(
        p.status, p.headers, date=DATE, cache_status=b"edge; hit", keep_alive=keep_alive,
        http_minor=http_minor)


def test_boundary_function_is_called_only_for_multipart() -> None:
    calls = []

    def boundary() -> bytes:
        calls.append(1)
        return BOUNDARY

    for r in (req(), req(range=b"bytes=0-9"), req(b"HEAD", range=b"bytes=0-1,5-6")):
        plan(r, SIZE, ETAG, LM, boundary=boundary)
    assert calls == []
    p = plan(req(range=b"bytes=0-1,5-6"), SIZE, ETAG, LM, boundary=boundary)
    assert calls == [1] and p == make(req(range=b"bytes=0-1,5-6"))
