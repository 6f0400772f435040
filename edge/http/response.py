"""Response planning and framing (RFC 9110 §13-15, RFC 9112 §4-6).

:func:`plan` decides what a GET or HEAD for an object gets: 304/412 from the preconditions,
else 200, 206 or a multipart/byteranges 206. The body is described, not built: ``Plan.parts``
lists literal bytes (multipart delimiters and part heads) and ``(start, end_exclusive)`` ranges
of the object, so the shell can send pinned views without copying. :func:`frame_head` turns a
status and header list into the response head; :func:`error_response` builds a complete
plain-text error response.

Decisions:

* The status line always says HTTP/1.1, also to HTTP/1.0 clients (RFC 9110 §2.5).
* ``Plan.content_length`` always equals the total length of ``Plan.parts`` and the
  Content-Length field when there is one. For HEAD the parts of the GET are kept (so
  Content-Length is the GET's, RFC 9110 §9.3.2) and ``send_body`` is False.
* Range is ignored for HEAD (RFC 9110 §14.2: range handling is defined for GET only) and when
  If-Range does not match (§13.1.5). A single range, even the whole object, is answered 206.
* 304 carries ETag and Last-Modified and neither Content-Length nor a body (§15.4.5);
  412 carries ``Content-Length: 0``.
* Multipart (§14.6, RFC 2046 §5.1.1): ``--B CRLF`` part-head CRLF data, each following part
  introduced by ``CRLF --B CRLF``, closed by ``CRLF --B-- CRLF``; every part has Content-Type and
  Content-Range. The caller passes a fresh random boundary (this module reads no randomness),
  or a function returning one, called only when the plan is multipart; it must be 1-70
  characters from ``A-Za-z0-9'+_-.`` so it needs no quoting.
* Header names and values given to :func:`frame_head` are written as they are: they must not
  contain CR or LF (they come from this module or from server configuration, not from clients).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .conditional import evaluate_preconditions, format_http_date, if_range_allows
from .errors import HTTPError
from .ranges import parse_range
from .request import Request

__all__ = ["REASONS", "Plan", "error_response", "frame_head", "head_end", "head_parts", "plan"]

REASONS: dict[int, bytes] = {
    100: b"Continue", 101: b"Switching Protocols",
    200: b"OK", 201: b"Created", 202: b"Accepted", 203: b"Non-Authoritative Information",
    204: b"No Content", 205: b"Reset Content", 206: b"Partial Content",
    300: b"Multiple Choices", 301: b"Moved Permanently", 302: b"Found", 303: b"See Other",
    304: b"Not Modified", 305: b"Use Proxy", 307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 402: b"Payment Required", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 406: b"Not Acceptable",
    407: b"Proxy Authentication Required", 408: b"Request Timeout", 409: b"Conflict",
    410: b"Gone", 411: b"Length Required", 412: b"Precondition Failed",
    413: b"Content Too Large", 414: b"URI Too Long", 415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable", 417: b"Expectation Failed", 421: b"Misdirected Request",
    422: b"Unprocessable Content", 426: b"Upgrade Required", 428: b"Precondition Required",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}
"""Reason phrases of RFC 9110 §15 (and 6585 / 7725 for 428, 429, 431, 451)."""

_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\nDate: " % (code, reason) for code, reason in REASONS.items()
}

_BOUNDARY = re.compile(rb"[A-Za-z0-9'+_\-.]{1,70}")

_CONTENT_TYPE = b"Content-Type"
_CONTENT_LENGTH = b"Content-Length"
_CONTENT_RANGE = b"Content-Range"
_ETAG = b"ETag"
_LAST_MODIFIED = b"Last-Modified"
_ACCEPT_RANGES = (b"Accept-Ranges", b"bytes")
_TEXT_PLAIN = (b"Content-Type", b"text/plain; charset=utf-8")


@dataclass(slots=True)
class Plan:
    """What to send for one GET/HEAD: status, header fields and the body as parts.

    ``headers`` excludes Date, Connection and Cache-Status (added by :func:`frame_head`).
    ``parts`` are literal bytes or ``(start, end_exclusive)`` ranges of the object, in order;
    ``content_length`` is their total. ``send_body`` is False for HEAD and 304.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    parts: list[bytes | tuple[int, int]]
    content_length: int
    send_body: bool


def plan(req: Request, size: int, etag: bytes, last_modified: int, *,
         boundary: bytes | Callable[[], bytes], max_ranges: int = 16,
         content_type: bytes = b"application/octet-stream") -> Plan:
    """Plan the response to a GET or HEAD for an object of ``size`` bytes.

    Evaluates preconditions (304/412), then Range with If-Range (GET only), and returns a 200,
    206 or multipart/byteranges 206 plan. ``boundary`` (or ``boundary()`` when it is a
    function) is used only for multipart. Raises
    :class:`~edge.http.errors.RangeNotSatisfiable` (416) for an unsatisfiable Range; the
    caller answers it with :func:`error_response`. The caller has already answered other
    methods with 405.
    """
    lm = format_http_date(last_modified)
    if (req.if_match is not None or req.if_none_match is not None
            or req.if_modified_since is not None or req.if_unmodified_since is not None):
        status = evaluate_preconditions(req, etag, last_modified)
        if status == 304:
            return Plan(304, [(_ETAG, etag), (_LAST_MODIFIED, lm)], [], 0, False)
        if status is not None:
            return Plan(status, [(_CONTENT_LENGTH, b"0")], [], 0, True)
    send_body = req.method != b"HEAD"
    if (send_body and req.range is not None
            and (req.if_range is None or if_range_allows(req.if_range, etag, last_modified))):
        ranges = parse_range(req.range, size, max_ranges)
        if ranges is not None:
            if len(ranges) == 1:
                start, end = ranges[0]
                return Plan(206, [
                    (_CONTENT_TYPE, content_type),
                    (_CONTENT_LENGTH, b"%d" % (end - start)),
                    (_CONTENT_RANGE, b"bytes %d-%d/%d" % (start, end - 1, size)),
                    (_ETAG, etag), (_LAST_MODIFIED, lm), _ACCEPT_RANGES,
                ], [(start, end)], end - start, True)
            if not isinstance(boundary, bytes):
                boundary = boundary()
            return _multipart(ranges, size, etag, lm, boundary, content_type)
    parts: list[bytes | tuple[int, int]] = [(0, size)] if size else []
    return Plan(200, [
        (_CONTENT_TYPE, content_type),
        (_CONTENT_LENGTH, b"%d" % size),
        (_ETAG, etag), (_LAST_MODIFIED, lm), _ACCEPT_RANGES,
    ], parts, size, send_body)


def _multipart(ranges: list[tuple[int, int]], size: int, etag: bytes, lm: bytes,
               boundary: bytes, content_type: bytes) -> Plan:
    if _BOUNDARY.fullmatch(boundary) is None:
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    part_head = b"\r\nContent-Type: " + content_type + b"\r\nContent-Range: bytes "
    parts: list[bytes | tuple[int, int]] = []
    length = 0
    delimiter = b"--" + boundary
    for start, end in ranges:
        head = b"%s%s%d-%d/%d\r\n\r\n" % (delimiter, part_head, start, end - 1, size)
        parts.append(head)
        parts.append((start, end))
        length += len(head) + end - start
        delimiter = b"\r\n--" + boundary
    tail = b"\r\n--" + boundary + b"--\r\n"
    parts.append(tail)
    length += len(tail)
    return Plan(206, [
        (_CONTENT_TYPE, b"multipart/byteranges; boundary=" + boundary),
        (_CONTENT_LENGTH, b"%d" % length),
        (_ETAG, etag), (_LAST_MODIFIED, lm), _ACCEPT_RANGES,
    ], parts, length, True)


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"invalid status code {status}")
        line = b"HTTP/1.1 %d \r\nDate: " % status      # empty reason-phrase (RFC 9112 §4)
    return line


def _frame(status: int, headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...],
           date: bytes, cache_status: bytes, end: bytes) -> list[bytes]:
    out = [_status_line(status), date]
    for name, value in headers:
        out += (b"\r\n", name, b": ", value)
    out += (b"\r\nCache-Status: ", cache_status, end)
    return out


_END_PLAIN = b"\r\n\r\n"
_END_CLOSE = b"\r\nConnection: close\r\n\r\n"
_END_KEEP_ALIVE = b"\r\nConnection: keep-alive\r\n\r\n"


def head_end(keep_alive: bool, http_minor: int = 1) -> bytes:
    """The end of a response head: the Connection field when needed, then the empty line.

    Connection is written only when it differs from the version's default: ``close`` for an
    HTTP/1.1 client when not keeping the connection, ``keep-alive`` for an HTTP/1.0 client
    when keeping it.
    """
    if http_minor:
        return _END_PLAIN if keep_alive else _END_CLOSE
    return _END_KEEP_ALIVE if keep_alive else _END_PLAIN


def head_parts(status: int, headers: list[tuple[bytes, bytes]], *,
               cache_status: bytes) -> tuple[bytes, bytes]:
    """The response head around its Date and its end, for heads sent many times.

    ``frame_head(status, headers, date=D, cache_status=C, keep_alive=K, http_minor=M)``
    equals ``before + D + after + head_end(K, M)`` where ``before, after = head_parts(status,
    headers, cache_status=C)``.
    """
    out = _frame(status, headers, b"", cache_status, b"")
    return out[0], b"".join(out[1:])


def frame_head(status: int, headers: list[tuple[bytes, bytes]], *, date: bytes,
               cache_status: bytes, keep_alive: bool, http_minor: int = 1) -> bytes:
    """Serialize a response head: status line, Date, ``headers``, Cache-Status, Connection.

    ``date`` is an IMF-fixdate (see :func:`~edge.http.conditional.format_http_date`).
    Connection as :func:`head_end` says. The result ends with the empty line.
    """
    return b"".join(_frame(status, headers, date, cache_status, head_end(keep_alive, http_minor)))


def error_response(err: HTTPError, *, date: bytes, cache_status: bytes = b"edge; fwd=bypass",
                   keep_alive: bool = False, http_minor: int = 1,
                   head_only: bool = False) -> bytes:
    """A complete plain-text error response for ``err``.

    Head: status line, Date, ``Content-Type: text/plain; charset=utf-8``, Content-Length,
    ``err.headers`` (a 405 must carry ``Allow: GET, HEAD`` there, a 416 ``Content-Range``),
    Cache-Status and ``Connection: close`` unless ``keep_alive`` (then ``Connection:
    keep-alive`` for HTTP/1.0). Body: ``"<status> <reason>: <detail>\\n"``, left out when
    ``head_only`` (a HEAD request; Content-Length still gives the GET length).
    """
    reason = REASONS.get(err.status, b"").decode("ascii")
    body = f"{err.status} {reason}: {err.detail}\n".encode("utf-8", "replace")
    if not keep_alive:
        end = _END_CLOSE
    else:
        end = _END_PLAIN if http_minor else _END_KEEP_ALIVE
    out = _frame(err.status, [_TEXT_PLAIN, (_CONTENT_LENGTH, b"%d" % len(body)), *err.headers],
                 date, cache_status, end)
    if not head_only:
        out.append(body)
    return b"".join(out)
