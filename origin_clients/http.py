"""The plain-HTTP origin: objects are resources below a base URL, fetched with aiohttp.

Theory of operation
-------------------
``stat`` is a HEAD; ``read`` is a GET with ``Range: bytes=start-(end-1)`` conditioned on the
validator the HEAD returned, so blocks of two versions are never stitched together. Nothing an
origin answers is taken on trust: a 206 must carry exactly the Content-Range asked for, over
the stated size; a 200 is only taken for a whole-object read of exactly the stated length; an
ETag on the response must be the stated one; the body must be exactly ``end - start`` bytes.
Anything else raises, and bytes past ``end`` are never yielded.

Validators: a strong ETag is used as is (``If-Match``). An origin that gives none (or only a
weak one) gets a synthesized validator ``"lm-<last-modified hex>-<size hex>"`` and its reads
are conditioned with ``If-Unmodified-Since`` instead; the format itself is the mark, so an
``ObjectInfo`` needs no side table and survives being shared between workers. An origin with
neither a strong ETag nor Last-Modified cannot be read safely and is refused.

Connections: one ``aiohttp.ClientSession`` per origin, created lazily inside the running loop
(keep-alive pool of ``max_connections``, ``sock_connect``/``sock_read`` timeouts, no cookies,
no decompression: the cache stores bytes as the origin stores them, so ``Accept-Encoding:
identity`` is sent and ``Content-Encoding`` is left alone). Redirects are not followed. Every
aiohttp or socket failure becomes an :class:`OriginError`; a response is released on every
path, including a consumer that stops iterating early (the connection is then closed, not
reused, since its body was not drained).

:class:`~origin_clients.s3.S3Origin` subclasses this class: it changes how a URL is built,
signs requests and reads S3's XML error codes; the response validation is this one.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from .base import NotFound, ObjectInfo, Origin, OriginError, OriginRefused, ValidatorMismatch

READ_CHUNK = 256 * 1024
ERROR_BODY_LIMIT = 8 * 1024
USER_AGENT = "edge/0.1"

_SYNTHETIC = re.compile(rb'"lm-([0-9a-f]+)-([0-9a-f]+)"')
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e\x80-\U0010ffff]*"')
_DIGITS = re.compile(r"\d{1,19}")

# S3 error codes (and one-off HTTP statuses) by what they mean for the cache.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound"})
MISMATCH_CODES = frozenset({"PreconditionFailed", "InvalidRange"})
REFUSED_CODES = frozenset({
    "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "RequestTimeTooSkewed", "AuthorizationHeaderMalformed",
    "InvalidSecurity", "AccountProblem", "AllAccessDisabled", "MissingSecurityHeader",
})
RETRY_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                         "OperationAborted"})


def quote_key(key: str) -> str:
    """Percent-encode a key for a URL path, once, per segment: RFC 3986 unreserved and ``/`` stay."""
    return quote(key, safe="/")


def strong_etag(value: str | None) -> bytes | None:
    """The header value as a strong entity-tag (quotes included), or None if absent, weak or bad."""
    if value is None:
        return None
    value = value.strip()
    if not _STRONG_ETAG.fullmatch(value):
        return None
    return value.encode("utf-8", "surrogateescape")


def parse_http_date(value: str | None) -> int | None:
    """An HTTP-date as seconds since the epoch, or None."""
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def http_date(ts: int) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def synthetic_etag(last_modified: int, size: int) -> bytes:
    """The validator used for an origin that gives no strong ETag (see the module docstring)."""
    return f'"lm-{last_modified:x}-{size:x}"'.encode()


def is_synthetic(etag: bytes) -> bool:
    return _SYNTHETIC.fullmatch(etag) is not None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    return int(value) if _DIGITS.fullmatch(value) else -1


async def read_some(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to ``limit`` bytes of a (small, error) body; a broken body gives what arrived."""
    parts: list[bytes] = []
    n = 0
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
        while n < limit:
            chunk = await resp.content.read(limit - n)
            if not chunk:
                break
            parts.append(chunk)
            n += len(chunk)
    return b"".join(parts)


class HTTPOrigin(Origin):
    """Objects below ``url`` (``http(s)://host[:port]/prefix/``); the key is appended, encoded."""

    def __init__(self, url: str, *, name: str = "http", max_connections: int = 32,
                 connect_timeout: float = 3.0, read_timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an HTTP origin needs an http(s)://host/ URL, got {url!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.name = name
        self.base = url if url.endswith("/") else url + "/"
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- hooks that S3Origin overrides --------------------------------------------------------

    def url(self, key: str) -> str:
        """The request URL of ``key``, already percent-encoded (it is sent as is)."""
        return self.base + quote_key(key)

    def prepare_headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """The headers to send for a request (S3 signs them here)."""
        return headers

    async def explain(self, resp: aiohttp.ClientResponse) -> tuple[str | None, str]:
        """(S3-style error code or None, human detail) of an error response; reads its body."""
        text = (await read_some(resp, 200)).decode("utf-8", "replace")
        return None, " ".join(text.split())

    # -- the session ------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout,
                                              sock_read=self.read_timeout),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            with contextlib.suppress(RuntimeError):   # its loop is gone: nothing left to close
                await session.close()

    # -- requests -----------------------------------------------------------------------------

    def _transport_error(self, exc: BaseException, method: str, key: str) -> OriginError:
        what = f"{method} {key!r}"
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            msg = f"{what}: no connection within {self.connect_timeout:g}s"
        elif isinstance(exc, TimeoutError):
            msg = f"{what}: nothing received for {self.read_timeout:g}s"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            msg = f"{what}: cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc}"
        elif isinstance(exc, aiohttp.ServerDisconnectedError):
            msg = f"{what}: the server closed the connection"
        elif isinstance(exc, aiohttp.ClientPayloadError):
            msg = f"{what}: broken response body ({exc})"
        else:
            msg = f"{what}: {type(exc).__name__}: {exc}"
        return OriginError(self.name, msg)

    @contextlib.asynccontextmanager
    async def _request(self, method: str, key: str,
                       headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; aiohttp and socket errors, also from the body, become OriginError."""
        url = self.url(key)
        hdrs = self.prepare_headers(method, url, headers)
        hdrs["Accept-Encoding"] = "identity"
        try:
            async with self._client().request(method, URL(url, encoded=True), headers=hdrs,
                                              allow_redirects=False) as resp:
                yield resp
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._transport_error(exc, method, key) from None

    async def _error(self, resp: aiohttp.ClientResponse, method: str, key: str) -> OriginError:
        """The OriginError an unexpected status means (the body is read for S3's error code)."""
        code, detail = await self.explain(resp)
        status = resp.status
        what = f"{method} {key!r}: {status} {resp.reason or ''}".rstrip()
        if code:
            what += f" {code}"
        if detail:
            what += f": {detail}"
        if code == "NoSuchBucket":
            return OriginError(self.name, f"{what} (is the bucket name right?)")
        if code in NOT_FOUND_CODES or status in (404, 410) and code not in REFUSED_CODES:
            return NotFound(self.name, what)
        if code in MISMATCH_CODES or status in (412, 416):
            return ValidatorMismatch(self.name, f"{what} (the object changed since it was stated)")
        if code in REFUSED_CODES or status in (401, 403):
            return OriginRefused(self.name, f"{what} (credentials or signature refused)")
        if 300 <= status < 400:
            where = resp.headers.get("Location", "?")
            return OriginError(self.name, f"{what}: redirect to {where} not followed",
                               retryable=False)
        retryable = status >= 500 or status in (408, 429) or code in RETRY_CODES
        return OriginError(self.name, what, retryable=retryable)

    # -- the Origin interface -----------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo:
        async with self._request("HEAD", key, {}) as resp:
            if resp.status != 200:
                raise await self._error(resp, "HEAD", key)
            return self._info(resp, key)

    async def stat_read(self, key: str, start: int, end: int) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """One unconditioned ranged GET: the object's info and its bytes ``[start, min(end, size))``.

        The total size comes from Content-Range (206) or Content-Length (a 200 for ``start ==
        0``: only the first ``end`` bytes are read, then the connection is dropped). A 416
        (``start`` past the end) or a 200 for ``start > 0`` falls back to HEAD + conditioned GET.
        """
        gen = self._stat_read(key, start, end)
        first = await gen.__anext__()
        assert isinstance(first, ObjectInfo)
        return first, gen   # type: ignore[return-value]

    async def _stat_read(self, key: str, start: int, end: int) -> AsyncIterator[ObjectInfo | bytes]:
        fallback = False
        async with self._request("GET", key, {"Range": f"bytes={start}-{end - 1}"}) as resp:
            if resp.status == 416 or (resp.status == 200 and start > 0):
                fallback = True
            elif resp.status not in (200, 206):
                raise await self._error(resp, "GET", key)
            else:
                total = None
                if resp.status == 206:
                    m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
                    if m is None:
                        raise OriginError(self.name, f"GET {key!r}: 206 with a bad Content-Range "
                                                     f"{resp.headers.get('Content-Range')!r}")
                    total = int(m.group(3))
                info = self._info(resp, key, size=total)
                stop = min(end, info.size)
                if resp.status == 206:
                    self._check_read(resp, key, info, start, stop)
                yield info
                async for chunk in self._body(resp, key, start, stop, trim=resp.status == 200):
                    yield chunk
        if fallback:
            info = await self.stat(key)
            yield info
            if start < info.size:
                async for chunk in self.read(key, info, start, min(end, info.size)):
                    yield chunk

    def _info(self, resp: aiohttp.ClientResponse, key: str, size: int | None = None) -> ObjectInfo:
        if size is None:
            size = _int_header(resp.headers, "Content-Length")
        if size is None or size < 0:
            raise OriginError(self.name, f"HEAD {key!r}: no valid Content-Length "
                                         f"({resp.headers.get('Content-Length')!r})")
        last_modified = parse_http_date(resp.headers.get("Last-Modified"))
        etag = strong_etag(resp.headers.get("ETag"))
        if etag is None:
            if last_modified is None:
                raise OriginError(self.name, f"HEAD {key!r}: neither a strong ETag nor "
                                             "Last-Modified, so reads could not be conditioned",
                                  retryable=False)
            etag = synthetic_etag(last_modified, size)
        if last_modified is None:        # a strong ETag without a date: the response's Date
            last_modified = parse_http_date(resp.headers.get("Date")) or 0
        return ObjectInfo(size=size, etag=etag, last_modified=last_modified)

    def _conditions(self, info: ObjectInfo) -> dict[str, str]:
        if is_synthetic(info.etag):
            return {"If-Unmodified-Since": http_date(info.last_modified)}
        return {"If-Match": info.etag.decode("utf-8", "surrogateescape")}

    def _check_read(self, resp: aiohttp.ClientResponse, key: str, info: ObjectInfo,
                    start: int, end: int) -> None:
        """Raise unless ``resp`` (200 or 206) carries exactly bytes [start, end) of ``info``."""
        what = f"GET {key!r} bytes {start}-{end - 1}"
        headers = resp.headers
        if resp.status == 206:
            cr = headers.get("Content-Range", "")
            m = _CONTENT_RANGE.fullmatch(cr.strip())
            if m is None:
                raise OriginError(self.name, f"{what}: 206 with a bad Content-Range {cr!r}")
            first, last, total = (int(g) for g in m.groups())
            if total != info.size:
                raise ValidatorMismatch(self.name, f"{what}: the object is now {total} bytes, "
                                                   f"it was {info.size}")
            if (first, last) != (start, end - 1):
                raise OriginError(self.name, f"{what}: answered with Content-Range {cr!r}")
        elif start != 0 or end != info.size:
            raise OriginError(self.name, f"{what}: 200 with the whole object (the origin "
                                         "ignored the Range)")
        length = _int_header(headers, "Content-Length")
        if resp.status == 200 and length is None:
            raise OriginError(self.name, f"{what}: 200 without a Content-Length")
        if length is not None and length != end - start:
            if resp.status == 200:
                raise ValidatorMismatch(self.name, f"{what}: the object is now {length} bytes, "
                                                   f"it was {info.size}")
            raise OriginError(self.name, f"{what}: Content-Length {headers.get('Content-Length')!r}"
                                         f", expected {end - start}")
        if is_synthetic(info.etag):
            lm = parse_http_date(headers.get("Last-Modified"))
            if lm is not None and lm != info.last_modified:
                raise ValidatorMismatch(self.name, f"{what}: Last-Modified changed "
                                                   f"({headers.get('Last-Modified')})")
        else:
            etag = strong_etag(headers.get("ETag"))
            if etag is not None and etag != info.etag:
                raise ValidatorMismatch(self.name, f"{what}: ETag is now {etag.decode(errors='replace')}"
                                                   f", it was {info.etag.decode(errors='replace')}")

    async def read(self, key: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        if not 0 <= start <= end <= info.size:
            raise ValueError(f"bad range [{start}, {end}) of an object of {info.size} bytes")
        if start == end:
            return
        headers = {"Range": f"bytes={start}-{end - 1}", **self._conditions(info)}
        async with self._request("GET", key, headers) as resp:
            if resp.status not in (200, 206):
                raise await self._error(resp, "GET", key)
            self._check_read(resp, key, info, start, end)
            async for chunk in self._body(resp, key, start, end, trim=False):
                yield chunk

    async def _body(self, resp: aiohttp.ClientResponse, key: str, start: int, stop: int, *,
                    trim: bool) -> AsyncIterator[bytes]:
        """Exactly the bytes ``[start, stop)`` of ``resp``'s body (which starts at ``start``).

        A body longer than that is an error, unless ``trim`` (a 200 with the whole object when
        a prefix was asked for): then the rest is dropped with the connection. Shorter is an error.
        """
        pos = start
        async for chunk in resp.content.iter_chunked(READ_CHUNK):
            if pos + len(chunk) > stop:
                if not trim:
                    raise OriginError(self.name, f"GET {key!r} bytes {start}-{stop - 1}: "
                                                 f"over-long body (more than {stop - start} bytes)")
                chunk = chunk[: stop - pos]
                pos += len(chunk)
                if chunk:
                    yield chunk
                resp.close()            # do not reuse a connection mid-body
                break
            pos += len(chunk)
            yield chunk
            chunk = b""                 # hold no chunk while the next one arrives
        if pos != stop:
            raise OriginError(self.name, f"GET {key!r} bytes {start}-{stop - 1}: short body, "
                                         f"{pos - start} of {stop - start} bytes")

