"""Sans-IO HTTP/1.1 request reader: bytes in, :class:`Request` objects (or one HTTPError) out.

Theory of operation
-------------------
llhttp (through ``httptools.HttpRequestParser``) does the tokenising and the RFC 9112 framing
checks (request line, field syntax, Content-Length / Transfer-Encoding conflicts, chunked
syntax). It has no size limits and httptools buffers field names and values until a line ends,
so this class decides *how many bytes* llhttp sees at a time. Every ``feed_data`` slice ends at a
point where at most one message can complete, which keeps the bookkeeping exact:

    HEAD ──head done, no body──▶ (request complete) ──keep-alive──▶ HEAD
      │                                          └──close / error / upgrade──▶ CLOSED
      ├──head done, Content-Length──▶ BODY_LENGTH ──last byte──▶ (request complete)
      ├──head done, chunked─────────▶ BODY_CHUNKED ──"0" CRLF trailers CRLF──▶ (complete)
      ├──llhttp rejects the method──▶ METHOD ──16 bytes seen──▶ FAILED (400 or 501)
      └──malformed or over a limit (any state)──▶ FAILED

* HEAD: the next slice ends at the first CRLF CRLF (the end of a head: llhttp is strict about
  CRLF, so a head cannot contain one earlier) or at the head-size budget. A CRLF CRLF that only
  ends leading empty lines (RFC 9112 §2.2) starts the budget afresh. The last three bytes are
  carried over so that a terminator split between two ``feed`` calls is found.
* BODY_LENGTH: the slice is the rest of the Content-Length, never more.
* BODY_CHUNKED: the message can only end right after a CRLF CRLF (last-chunk line or trailer
  line, then the empty line), so slices end there; llhttp says whether it was the end.
  Content is never buffered: ``on_body`` only counts it against ``max_body``, and all bytes
  of the chunked body (framing included) against ``max_body + max_head_size``.
* METHOD: llhttp rejected the method. Whether that is an unknown method (a token followed by
  SP: 501) or garbage (400) is decided on the first 16 bytes of the head, waiting for them if
  needed, so the answer does not depend on how the stream was split.
* CLOSED: after a request with ``Connection: close``, an HTTP/1.0 request without keep-alive,
  an upgrade/CONNECT request, or a request whose head was well-formed but unusable
  (``Request.error``), further bytes are not HTTP we will answer (RFC 9112 §9.6): they are
  ignored and ``feed`` returns ``[]``.
* FAILED: the stream is malformed or a limit was hit; ``feed`` returned the HTTPError as the
  last item and every later call returns ``[]``. The shell answers the error and closes.
  (An unexpected exception, i.e. a bug, also ends here, as a 500 chained to its cause.)

Slices end at offsets fixed by the stream itself (a terminator, a length, a budget), never by
the read sizes, so llhttp stops at the same places and feeding a stream whole or byte by byte
gives equal results (the unit and Hypothesis tests check this).

Errors that break the framing end the stream (FAILED). Problems found in a head that parsed
(duplicate or missing Host, a bad key, an unusable request-target) are per request: the request
comes out with ``error`` set and ``keep_alive`` False, in order with the others.

RFC decisions
-------------
* Versions: HTTP/1.0 and 1.1. A higher 1.x minor version is processed as HTTP/1.1
  (RFC 9110 §2.5, ``http_minor`` is 1); any other major version is 505.
* Fields: names lower-cased, values with surrounding whitespace removed (RFC 9110 §5.5).
  Host, Range, If-Range, If-Modified-Since, If-Unmodified-Since and Authorization are singletons:
  two of them give 400. If-Match and If-None-Match lines are joined with ", " (§5.3).
* Host (RFC 9112 §3.2): required in HTTP/1.1, validated as ``uri-host [":" port]``; an
  absolute-form target's authority replaces it (§3.2.2).
* Request-target: origin-form, or absolute-form with an http/https scheme, a non-empty host
  and no userinfo (RFC 9110 §4.2.1, §4.2.4). A fragment ("#") is not part of any form -> 400.
  ``*`` is 405 for OPTIONS (the server-wide OPTIONS is not offered) and 400 otherwise;
  CONNECT is 405. Unknown methods that are valid tokens get 501 (RFC 9110 §9.1).
* Key: the path without its leading "/", percent-decoded as UTF-8. 400 for bad %-escapes,
  invalid UTF-8, control characters (C0, DEL, C1), "." or ".." segments and empty segments,
  all checked after decoding so "%2e%2e" and "%2f" cannot smuggle them in.
* Upgrade (with ``Connection: upgrade``) and CONNECT: the request is returned as a normal
  request and the connection closes after it (RFC 9110 §7.8 lets a server ignore Upgrade; what
  would follow is not HTTP/1.1 we parse).
* Bodies: requests here never need content. Content-Length above ``max_body`` is 413 before any
  content is read; chunked content is counted as it streams (framing bytes count against
  ``max_body + max_head_size``). An HTTP/1.0 request with Transfer-Encoding is 400
  (RFC 9112 §6.1: its framing is faulty).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httptools

import cext
from cext._httphead_py import CONNECTION as _CONNECTION
from cext._httphead_py import CONTENT_LENGTH as _CONTENT_LENGTH
from cext._httphead_py import HOST as _HOST
from cext._httphead_py import KINDS as _KINDS
from cext._httphead_py import LIST as _LIST
from cext._httphead_py import OWS as _OWS
from cext._httphead_py import SINGLE as _SINGLE
from cext._httphead_py import SINGLETONS as _SINGLETONS

from .errors import HTTPError
from .limits import Limits

# The simple-head scanner (compiled, or its pure twin with EDGE_NO_EXTENSIONS=1).
_scan = cext.load("httphead").scan

__all__ = ["Request", "RequestParser"]


@dataclass(slots=True)
class Request:
    """One parsed request head.

    ``key`` is the percent-decoded path without its leading "/" and without the query (""
    for "/"); ``query`` is the raw query string without "?". ``headers`` holds every field,
    names lower-cased, in order. The named header attributes are the field values, or None when
    absent. ``error`` is set when the head parsed but the request cannot be served (bad key,
    duplicate Host, ...): answer it in order, with ``Connection: close``.
    """

    method: bytes
    target: bytes
    key: str
    query: bytes
    http_minor: int
    keep_alive: bool
    headers: list[tuple[bytes, bytes]]
    host: bytes | None = None
    range: bytes | None = None
    if_range: bytes | None = None
    if_match: bytes | None = None
    if_none_match: bytes | None = None
    if_modified_since: bytes | None = None
    if_unmodified_since: bytes | None = None
    authorization: bytes | None = None
    error: HTTPError | None = None


# Parser states (see the module docstring).
_HEAD = 0
_BODY_LENGTH = 1
_BODY_CHUNKED = 2
_METHOD = 3         # llhttp rejected the method; reading up to _PREFIX bytes to pick 400 or 501
_CLOSED = 4
_FAILED = 5

_PREFIX = 16        # bytes of a head kept to classify a rejected method

_CRLFCRLF = b"\r\n\r\n"
_ALLOW = ((b"Allow", b"GET, HEAD"),)
_DEFAULT_LIMITS = Limits()

# RFC 9110 §5.6.2 token, for telling an unknown method (501) from garbage (400).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?]*)")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# Anything wrong with a decoded key, found with one search on the hot path.
_BAD_KEY = re.compile(r"[\x00-\x1f\x7f-\x9f]|^/|//|/$|(?:^|/)\.\.?(?:/|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DOT_SEGMENT = re.compile(r"(?:^|/)(\.\.?)(?:/|$)")


class RequestParser:
    """Incremental, pipelining-aware request reader for one connection.

    Feed it whatever the socket produced; it returns the requests completed by those bytes.
    It never buffers request content and never holds more than ``limits.max_head_size`` bytes of
    an unfinished head.
    """

    __slots__ = (
        "_began",
        "_body_left",
        "_body_len",
        "_cl",
        "_connection",
        "_done",
        "_duplicate",
        "_fatal",
        "_fields",
        "_head_len",
        "_headers",
        "_headers_done",
        "_limits",
        "_parser",
        "_prefix",
        "_raw_body",
        "_request",
        "_state",
        "_tail",
        "_te",
        "_upgrade",
        "_url",
        "_url_len",
    )

    def __init__(self, limits: Limits = _DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        # Accept any digit.digit version so that 505 / "process as 1.1" is our decision.
        self._parser.set_dangerous_leniencies(lenient_version=True)
        self._state = _HEAD
        self._tail = b""            # last <= 3 bytes given to llhttp, to find a split CRLF CRLF
        self._head_len = 0          # bytes of the current unfinished head given to llhttp
        self._prefix = b""          # first bytes of the current head (to classify a bad method)
        self._fatal: HTTPError | None = None   # error raised inside an llhttp callback
        self._body_left = 0         # BODY_LENGTH: content bytes still expected
        self._raw_body = 0          # BODY_CHUNKED: bytes given to llhttp, framing included
        self._reset_message()

    def _reset_message(self) -> None:
        self._began = False         # llhttp saw the start of a request line
        self._headers_done = False
        self._done: Request | None = None   # set by on_message_complete
        self._upgrade = False
        self._body_len = 0          # content bytes seen
        self._url: list[bytes] = []
        self._url_len = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._fields: dict[bytes, bytes] = {}
        self._duplicate: str | None = None
        self._connection: list[bytes] = []
        self._te = False
        self._cl: int | None = None
        self._request: Request | None = None

    @property
    def in_progress(self) -> bool:
        """True when bytes of an unfinished request have been received (header-read timeout)."""
        state = self._state
        if state == _HEAD:
            return self._head_len > 0 or self._began
        return state < _CLOSED

    def boundary_limits(self) -> Limits | None:
        """This parser's limits when it is between messages with nothing of the next head
        seen (the hit lane may then answer whole heads itself: edge/server/protocol.py);
        None otherwise."""
        if self._state == _HEAD and not self._head_len and not self._tail:
            return self._limits
        return None

    def feed(self, data: bytes) -> list[Request | HTTPError]:
        """Parse ``data`` and return every request it completes, in order (pipelining).

        If the stream is malformed or a limit is hit, the list ends with the HTTPError
        (400/413/414/431/501/505) after the requests completed before it, and the parser is
        dead: every later call returns ``[]``. After a request that ends the connection
        (``keep_alive`` False) later bytes are ignored the same way. Only :class:`Request` and
        :class:`HTTPError` objects come out; nothing is raised.
        """
        out: list[Request | HTTPError] = []
        if self._state >= _CLOSED or not data:
            return out
        try:
            if self._state == _HEAD and not self._head_len and not self._tail:
                pos = self._feed_simple(data, out)
                if pos:
                    if pos < len(data) and self._state == _HEAD:
                        self._feed(data[pos:], out)
                    return out
            self._feed(data, out)
        except HTTPError as err:
            self._state = _FAILED
            out.append(err)
        except Exception as exc:  # noqa: BLE001  (a bug: answer 500, keep the cause for the log)
            bug = HTTPError(500, "request parser failed")
            bug.__cause__ = exc
            self._state = _FAILED
            out.append(bug)
        return out

    # -- slicing the stream ----------------------------------------------------------------

    def _feed(self, data: bytes, out: list[Request | HTTPError]) -> None:
        view = memoryview(data)
        limits = self._limits
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if state == _HEAD:
                end, found, overflow = self._slice(data, pos, limits.max_head_size - self._head_len)
                if len(self._prefix) < _PREFIX:
                    self._prefix += data[pos:min(end, pos + _PREFIX - len(self._prefix))]
                self._execute(view[pos:end])
                self._head_len += end - pos
                self._carry(data, pos, end)
                pos = end
                if self._state == _METHOD:
                    continue
                if overflow:
                    raise HTTPError(431, "request head too large")
                if self._done is not None:
                    self._complete(out)
                elif self._headers_done:
                    self._tail = b""
                    self._state = _BODY_CHUNKED if self._te else _BODY_LENGTH
                    self._body_left = self._cl or 0
                    self._raw_body = 0
                elif found and not self._began:
                    self._head_len = 0       # only empty lines before a request line
                    self._prefix = b""
            elif state == _BODY_LENGTH:
                if self._body_left <= 0:     # cannot happen: llhttp ends a message at its length
                    raise RuntimeError("content-length body state without content left")
                end = min(n, pos + self._body_left)
                self._execute(view[pos:end])
                self._body_left -= end - pos
                pos = end
                if self._done is not None:
                    self._complete(out)
            elif state == _BODY_CHUNKED:
                budget = limits.max_body + limits.max_head_size - self._raw_body
                end, found, overflow = self._slice(data, pos, budget)
                self._execute(view[pos:end])
                self._raw_body += end - pos
                self._carry(data, pos, end)
                pos = end
                if overflow:
                    raise HTTPError(413, "request content too large")
                if self._done is not None:
                    self._complete(out)
            elif state == _METHOD:
                self._prefix += data[pos:pos + _PREFIX - len(self._prefix)]
                verdict = self._method_verdict()
                if verdict is not None:
                    raise verdict
                return
            else:
                return

    def _feed_simple(self, data: bytes, out: list[Request | HTTPError]) -> int:
        """Parse the whole simple heads at the start of ``data`` without llhttp; bytes used.

        Only called between messages (state HEAD, nothing of a head seen yet). A head is taken
        here when it is entirely in ``data``, is simple (``cext/_httphead_py.py``: GET or HEAD, an
        origin-form target of plain characters, HTTP/1.0 or 1.1), is within the limits
        and has no field that needs llhttp's framing (Content-Length, Transfer-Encoding,
        Upgrade, a Connection option other than close / keep-alive); everything else, and
        whatever follows, goes through llhttp. The Request is the one llhttp would give.
        """
        pos = 0
        limits = self._limits
        scan = _scan
        while True:
            end = data.find(_CRLFCRLF, pos) + 4
            if end < 4 or end - pos > limits.max_head_size:
                return pos
            r = scan(data, pos, end, limits.max_url_length, limits.max_headers)
            if r is None:
                return pos
            method, target, minor, headers, fields, duplicate, keep_alive, key = r
            # key: the target without its "/" when _check would have nothing to say (see
            # cext/_httphead_py.py); None: check the request in full.
            plain = key is not None
            host = fields.get(b"host")
            req = Request(method, target, key if plain else "", b"",
                          minor, keep_alive, headers, host,
                          fields.get(b"range"), fields.get(b"if-range"), fields.get(b"if-match"),
                          fields.get(b"if-none-match"), fields.get(b"if-modified-since"),
                          fields.get(b"if-unmodified-since"), fields.get(b"authorization"))
            if not plain:
                try:
                    self._check(req, duplicate)
                except HTTPError as err:
                    req.error = err
                    req.keep_alive = False
            out.append(req)
            pos = end
            if not req.keep_alive:
                self._state = _CLOSED
                return pos
            if pos == len(data):
                return pos

    def _slice(self, data: bytes, pos: int, budget: int) -> tuple[int, bool, bool]:
        """Where the next llhttp slice from ``pos`` ends: at the first CRLF CRLF or the budget.

        Returns ``(end, found, overflow)``: ``found`` when the slice ends with a CRLF CRLF,
        ``overflow`` when the stream goes on past the budget without one (a limit is hit).
        The same bytes reach llhttp however the stream was split.
        """
        n = len(data)
        limit = min(n, pos + max(budget, 0))
        stop = self._find_terminator(data, pos, limit)
        if stop >= 0:
            return stop, True, False
        return limit, False, n - pos > budget

    def _find_terminator(self, data: bytes, pos: int, limit: int) -> int:
        """End offset of the first CRLF CRLF in the stream within ``data[:limit]``, or -1.

        A terminator may begin in the carried-over tail of the previous slice.
        """
        tail = self._tail
        if tail:
            i = (tail + data[pos:pos + 3]).find(_CRLFCRLF)
            if i >= 0:
                end = pos + i + 4 - len(tail)
                return end if end <= limit else -1
        i = data.find(_CRLFCRLF, pos, limit)
        return -1 if i < 0 else i + 4

    def _carry(self, data: bytes, pos: int, end: int) -> None:
        if end - pos >= 3:
            self._tail = data[end - 3:end]
        else:
            self._tail = (self._tail + data[pos:end])[-3:]

    def _execute(self, chunk: memoryview) -> None:
        """Run llhttp over ``chunk``, turning all of its exceptions into HTTPError."""
        try:
            self._parser.feed_data(chunk)
        except httptools.HttpParserUpgrade:
            # Upgrade / CONNECT: llhttp stops after the head; on_message_complete has run.
            self._upgrade = True
        except httptools.HttpParserCallbackError as exc:
            fatal = self._fatal
            if fatal is None:               # not one of ours: a bug in a callback
                raise RuntimeError("request parser callback failed") from exc.__context__
            raise fatal from None
        except httptools.HttpParserInvalidMethodError:
            verdict = self._method_verdict()
            if verdict is not None:
                raise verdict from None
            self._state = _METHOD
        except httptools.HttpParserError as exc:
            raise HTTPError(400, _describe(exc)) from None

    def _method_verdict(self) -> HTTPError | None:
        """400 or 501 for a method llhttp rejected; None until the bytes seen can tell.

        A method that is a valid token followed by SP is merely unknown (501, RFC 9110 §9.1);
        anything else is garbage (400). The verdict depends only on the first _PREFIX bytes of
        the head, so it does not depend on how the stream was split.
        """
        prefix = self._prefix
        line = prefix.lstrip(b"\r\n")
        m = _TOKEN.match(line)
        k = m.end() if m is not None else 0
        if k == len(line) and len(prefix) < _PREFIX:
            return None
        if k > 0 and (k == len(line) or line[k] == 0x20):
            return HTTPError(501, "method not implemented")
        return HTTPError(400, "invalid method")

    def _complete(self, out: list[Request | HTTPError]) -> None:
        req = self._done
        assert req is not None
        if self._upgrade:
            req.keep_alive = False
        out.append(req)
        self._reset_message()
        self._tail = b""
        self._head_len = 0
        self._prefix = b""
        self._state = _HEAD if req.keep_alive else _CLOSED

    # -- llhttp callbacks ------------------------------------------------------------------
    # An HTTPError raised here is stashed in _fatal, because httptools wraps it.

    def on_message_begin(self) -> None:
        self._began = True

    def on_url(self, url: bytes) -> None:
        self._url_len += len(url)
        if self._url_len > self._limits.max_url_length:
            self._fatal = HTTPError(414, "request-target too long")
            raise self._fatal
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:
            return                          # a chunked trailer field: ignored
        headers = self._headers
        if len(headers) >= self._limits.max_headers:
            self._fatal = HTTPError(431, "too many header fields")
            raise self._fatal
        name = name.lower()
        value = value.rstrip(_OWS)
        headers.append((name, value))
        kind = _KINDS.get(name)
        if kind is None:
            return
        if kind == _SINGLE:
            if name in self._fields:
                if self._duplicate is None:
                    self._duplicate = _SINGLETONS[name]
            else:
                self._fields[name] = value
        elif kind == _LIST:
            prior = self._fields.get(name)
            self._fields[name] = value if prior is None else prior + b", " + value
        elif kind == _CONNECTION:
            self._connection.extend(t.strip(_OWS).lower() for t in value.split(b","))
        elif kind == _CONTENT_LENGTH:
            self._cl = int(value) if value.isdigit() and len(value) <= 18 else -1
        else:
            self._te = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        try:
            self._request = self._build()
        except HTTPError as err:
            self._fatal = err
            raise

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > self._limits.max_body:
            self._fatal = HTTPError(413, "request content too large")
            raise self._fatal

    def on_message_complete(self) -> None:
        self._done = self._request

    # -- building the Request --------------------------------------------------------------

    def _build(self) -> Request:
        """Check a complete head. Raises HTTPError for framing problems (fatal)."""
        parser = self._parser
        major, _, minor = parser.get_http_version().partition(".")
        if major != "1":
            raise HTTPError(505, f"HTTP/{major}.{minor} is not supported")
        http_minor = 0 if minor == "0" else 1
        if self._te and http_minor == 0:
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        cl = self._cl
        if cl is not None and (cl < 0 or cl > self._limits.max_body):
            raise HTTPError(413, "request content too large")
        method: bytes = parser.get_method()
        connection = self._connection
        if b"close" in connection:
            keep_alive = False
        else:
            keep_alive = http_minor == 1 or b"keep-alive" in connection
        target = b"".join(self._url)
        fields = self._fields
        req = Request(
            method, target, "", b"", http_minor, keep_alive, self._headers,
            fields.get(b"host"), fields.get(b"range"), fields.get(b"if-range"),
            fields.get(b"if-match"), fields.get(b"if-none-match"),
            fields.get(b"if-modified-since"), fields.get(b"if-unmodified-since"),
            fields.get(b"authorization"),
        )
        try:
            self._check(req, self._duplicate)
        except HTTPError as err:
            req.error = err
            req.keep_alive = False
        return req

    @staticmethod
    def _check(req: Request, duplicate: str | None) -> None:
        """Per-request checks of a well-framed head; fills key, query and host."""
        if duplicate is not None:
            raise HTTPError(400, f"duplicate {duplicate} header")
        if req.host is None:
            if req.http_minor == 1:
                raise HTTPError(400, "missing Host header")
        elif _HOST.fullmatch(req.host) is None:
            raise HTTPError(400, "invalid Host header")
        target = req.target
        if req.method == b"CONNECT":
            raise HTTPError(405, "method CONNECT not allowed", _ALLOW)
        if b"#" in target:
            raise HTTPError(400, "fragment in request-target")
        if target[:1] == b"/":
            path = target
        elif target == b"*":
            if req.method == b"OPTIONS":
                raise HTTPError(405, "server-wide OPTIONS not allowed", _ALLOW)
            raise HTTPError(400, "asterisk-form request-target is only for OPTIONS")
        else:
            m = _ABSOLUTE.match(target)
            if m is None:
                raise HTTPError(400, "request-target must start with '/'")
            if m.group(1).lower() not in (b"http", b"https"):
                raise HTTPError(400, "request-target scheme must be http or https")
            authority = m.group(2)
            if b"@" in authority:
                raise HTTPError(400, "userinfo in request-target")
            if not authority or authority[:1] == b":" or _HOST.fullmatch(authority) is None:
                raise HTTPError(400, "invalid authority in request-target")
            req.host = authority
            path = target[m.end():]
            if path[:1] != b"/":
                path = b"/" + path           # "http://h" and "http://h?q" mean path "/"
        path, _, req.query = path.partition(b"?")
        req.key = _decode_key(path)


def _decode_key(path: bytes) -> str:
    """Object key of an absolute path: percent-decoded UTF-8 without the leading "/"."""
    raw = path[1:]
    if b"%" in raw:
        if _BAD_ESCAPE.search(raw):
            raise HTTPError(400, "malformed percent-escape in path")
        raw = unquote_to_bytes(raw)
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "path is not valid UTF-8") from None
    # Printable ASCII without a leading "/" or ".", a trailing "/", "//" or "/." cannot match
    # _BAD_KEY: the common key skips the regex.
    plain = (key.isascii() and key.isprintable() and key[0] not in "/." and key[-1] != "/"
             and "//" not in key and "/." not in key) if key else True
    if not plain and _BAD_KEY.search(key):
        if _CONTROL.search(key):
            raise HTTPError(400, "control character in path")
        dots = _DOT_SEGMENT.search(key)
        if dots:
            raise HTTPError(400, f"'{dots.group(1)}' segment in path")
        if key.endswith("/"):
            raise HTTPError(400, "empty path segment (trailing '/')")
        raise HTTPError(400, "empty path segment ('//')")
    return key


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
