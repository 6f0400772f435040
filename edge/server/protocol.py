"""The per-connection protocol shell: bytes in, bytes out.

All HTTP decisions live in the sans-IO ``edge.http`` package; this module only moves bytes,
keeps order, and owns the I/O-side concerns:

* Pipelining: parsed requests queue up and are answered strictly in order; reading pauses
  while more than ``max_pipeline`` wait.
* Hit fast path: when the object's metadata is cached and every block of the response is
  ready, the response is written synchronously from ``data_received`` (no task, no await).
  Otherwise one task per connection handles the request (origin lookups, fills, streaming).
* Zero-copy body: while the transport has nothing buffered, a piece of at least
  ``server.sendfile_min`` bytes from a chunk the arena calls ``sendable`` goes to the socket
  with ``sendfile`` from the arena's file (no copy at all: the arena punches such a chunk out
  of its file before reusing it, so in-flight pages keep their bytes). Everything else, and
  whatever the kernel did not take, goes out as pinned memoryviews through ``writelines``
  (the kernel copies them as the socket drains); the transport's write-buffer limits are
  (0, 0), so ``pause_writing`` fires whenever the kernel did not take everything and
  ``resume_writing`` exactly when the buffer is empty again. The pins of what was written
  are released at that moment, never earlier; error paths abort the transport (dropping its
  buffer) before releasing pins.
* Timeouts: a server-wide sweeper calls :meth:`HttpProtocol.check` once a second: a request
  head must arrive within ``header_timeout`` (408), an idle keep-alive connection is closed
  after ``idle_timeout``, and a client that takes no bytes for ``send_timeout`` is dropped.
* Nothing raised while handling a request reaches the client as a traceback: expected
  failures map to 4xx/5xx answers, anything else is logged and answered 500 (or the
  connection is aborted when the head already left).
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import socket
import termios
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote_to_bytes

import cext
from edge import tokens
from edge.cache import Block, FillError, ObjectMeta
from edge.http import (
    HTTPError,
    RangeNotSatisfiable,
    Request,
    RequestParser,
    error_response,
    frame_head,
    head_end,
    head_parts,
    plan,
)
from edge.tokens import Grant, TokenError
from origin_clients import NotFound, OriginError, OriginTimeout

if TYPE_CHECKING:
    from edge.cache import Storage
    from edge.server.app import App
    from edge.server.tenants import Tenant

log = logging.getLogger("edge.server")

FAST_PATH_MAX = 4 << 20     # responses up to this many body bytes may go out synchronously
WINDOW = 4 << 20            # bytes queued to the transport before waiting for it to drain
SMALL_COPY = 8 << 10        # plain hits up to this size go out as one copied buffer

# RFC 9211 Cache-Status values, and their short names in metrics and the access log
HIT = b"edge; hit"
MISS = b"edge; fwd=miss"
PARTIAL = b"edge; fwd=partial"
BYPASS = b"edge; fwd=bypass"

LABELS = {HIT: "hit", MISS: "miss", PARTIAL: "partial", BYPASS: "bypass"}

_METHOD_NOT_ALLOWED_HEADERS = ((b"Allow", b"GET, HEAD"),)

HEADS_MAX = 4096            # objects whose plain 200 head is kept (per tenant)


def _boundary() -> bytes:
    """A fresh multipart boundary (called by plan() only for multipart responses)."""
    return os.urandom(12).hex().encode()


_END_PLAIN = head_end(True, 1)

_PLAIN_GET = Request(b"GET", b"/", "", b"", 1, True, [])     # what a plain 200 head is planned for
_httphead = cext.load("httphead")
_send_more = _httphead.send_more
# The compiled hit lane (cext/httphead.pyx HitLane): answers the plain hits (and hits of byte
# ranges) the fast path would, straight from the bytes; None with the pure-Python twins.
_LANE = (None if cext.NO_EXTENSIONS or os.environ.get("EDGE_NO_HIT_LANE")
         else _httphead.HitLane(_END_PLAIN, SMALL_COPY, FAST_PATH_MAX, HIT,
                                head_parts(206, [], cache_status=HIT)[0],
                                lambda: _boundary()))     # looked up per call (tests fix it)


_FIRST_BYTE = re.compile(rb"\s*bytes\s*=\s*(\d+)\s*-")


def _first_block(req: Request, block_size: int) -> int | None:
    """The block a GET will most likely read first (a hint for a one-round-trip cold miss)."""
    if req.method != b"GET":
        return None
    if req.range is None:
        return 0
    m = _FIRST_BYTE.match(req.range)
    return int(m.group(1)) // block_size if m else None


PAID_SLACK = 8 << 20        # most bytes a token may be sent twice (socket buffers of cut downloads)
PAID_SNDBUF = 128 * 1024    # kernel send buffer of a paid response: stay close to the client


class BudgetExhausted(ConnectionError):
    """A paid response reached its token's byte budget: the connection is cut."""


def _kernel_unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes the kernel still holds unsent for this socket (TIOCOUTQ); 0 if unknown."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return int.from_bytes(buf, "little", signed=True)
    except (OSError, ValueError):
        return 0


def _span(parts: list) -> tuple[int | None, int | None]:
    """First and last (inclusive) object byte a body covers, for the access log."""
    ranges = [x for x in parts if not isinstance(x, bytes)]
    if not ranges or ranges[0][0] >= ranges[-1][1]:
        return None, None
    return ranges[0][0], ranges[-1][1] - 1


def _origin_error(exc: BaseException) -> HTTPError:
    """502 naming the origin and why, or 504 when no replica answered in time."""
    if isinstance(exc, OriginTimeout):
        return HTTPError(504, f"origin timeout: {exc}")
    return HTTPError(502, f"origin failed: {exc}")


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, app: App) -> None:
        self.app = app
        # Set by connection_made (uvloop's transport is not an asyncio.Transport subclass).
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = RequestParser(app.limits)
        self.tenant: Tenant | None = None    # who the current request is for (routed by Host)
        self.queue: deque[Request | HTTPError] = deque()
        self.busy = False             # a request is being handled by the task
        self.closing = False
        self.eof = False              # the client half-closed: close once answered
        self.reading_paused = False
        self.write_paused = False
        self.held: list[Block] = []   # pins of bytes still in the transport buffer
        self.drain_waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.last_activity = 0.0
        self.head_started = 0.0       # when the current unfinished request head began
        self.peer = ""                # "ip:port" of the client, for the access log
        self.body_sent = 0            # body bytes of the current streamed response queued so far
        self.undelivered = 0          # of those, bytes still unsent when the response was cut
        self.buffered_seen = 0        # transport buffer size at the last check (send progress)
        self.grant: Grant | None = None       # the current request's download token
        self.pay: tuple[str, int, int] | None = None   # paid response: (budget id, cap, slack)
        self.sock_fd = -1             # the socket, for sendfile (-1: none, never sendfile)

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.transport.set_write_buffer_limits(0, 0)
        if self.app.sendfile_min:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self.sock_fd = sock.fileno()
        self.last_activity = self.app.now
        self.app.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = self.app.now
        self.last_activity = now
        if _LANE is not None and not self.queue and not self.busy and not self.write_paused:
            try:
                used = _LANE.serve(self, data)      # plain hits, answered without a Request
            except Exception:   # a bug: as _run does, log it, answer 500 and close
                log.exception("internal error in the hit lane")
                self._send_error(HTTPError(500, "internal error"), None)
                return
            if used:
                if used == len(data):
                    return
                data = data[used:]
        was_in_progress = self.parser.in_progress
        items = self.parser.feed(data)
        if self.parser.in_progress and (items or not was_in_progress):
            self.head_started = now
        if items:
            self.queue.extend(items)
            if len(self.queue) > self.app.max_pipeline and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
            self._run()

    def eof_received(self) -> bool | None:
        # Half-close from the client: answer what was asked, then close.
        self.eof = True
        if not self.queue and not self.busy:
            self._close()
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        self.buffered_seen = self.transport.get_write_buffer_size()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.last_activity = self.app.now
        self._release_held()
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)
        self.drain_waiter = None
        if not self.busy:
            self._run()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.app.connections.discard(self)
        self.queue.clear()
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionResetError("client went away"))
            w.exception()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._release_held()   # the transport is gone: its buffer no longer references arena memory

    # -- scheduling -----------------------------------------------------------------------

    def _run(self) -> None:
        """Answer queued requests in order, synchronously while that is possible."""
        while self.queue and not self.busy and not self.write_paused and not self.closing:
            item = self.queue.popleft()
            if isinstance(item, HTTPError):
                self._send_error(item, None)
                return
            try:
                done = self._handle_fast(item)
            except Exception:   # never let a bug take the loop's callback down
                log.exception("internal error on %r", item.target)
                self._send_error(HTTPError(500, "internal error"), item)
                return
            if not done:
                self.busy = True
                self.task = asyncio.get_running_loop().create_task(self._handle(item))
                return
        if self.closing:
            return
        if self.eof and not self.queue and not self.busy and not self.write_paused:
            self._close()
        elif self.reading_paused and len(self.queue) <= self.app.max_pipeline // 2:
            self.reading_paused = False
            self.transport.resume_reading()

    def _close(self) -> None:
        if not self.closing:
            self.closing = True
            self.transport.close()  # flushes, then connection_lost

    def _abort(self) -> None:
        self.closing = True
        self.transport.abort()  # drops the buffer at once

    def _release_held(self) -> None:
        if self.held:
            storage = self.app.storage
            for b in self.held:
                storage.release(b)
            self.held.clear()

    # -- responses ------------------------------------------------------------------------

    def _send_error(self, err: HTTPError, req: Request | None,
                    cache_status: bytes = BYPASS) -> None:
        if req is None:
            self.tenant = None          # not a request of anyone's
        keep = (req is not None and req.keep_alive and req.error is None
                and err.status in (304, 404, 405, 412, 416, 451))
        data = error_response(
            err, date=self.app.date, cache_status=cache_status, keep_alive=keep,
            http_minor=req.http_minor if req is not None else 1,
            head_only=req is not None and req.method == b"HEAD",
        )
        self.transport.write(data)
        self._done(req, err.status, cache_status, len(data) - data.index(b"\r\n\r\n") - 4)
        if not keep:
            self._close()

    def _authorize(self, req: Request) -> Grant | None:
        """The request's valid token, or None after answering 403 with the reason."""
        token = None
        if req.query:
            for part in req.query.split(b"&"):
                if part.startswith(b"token="):
                    token = unquote_to_bytes(part[6:]).decode("latin-1")
                    break
        if token is None and req.authorization is not None:
            scheme, _, value = req.authorization.partition(b" ")
            if scheme.lower() == b"bearer":
                token = value.strip().decode("latin-1")
        try:
            if not token:
                raise TokenError(tokens.MISSING)
            assert self.tenant is not None and self.tenant.secret is not None
            return tokens.verify(token, self.tenant.secret, req.key, time.time(),
                                 self.app.config.auth_skew)
        except TokenError as exc:
            self._send_error(HTTPError(403, exc.reason), req)
            return None

    def _charge(self, start: int, end: int, batch: list) -> None:
        """Before queueing object bytes [start, end) (``batch``, counted in body_sent already)
        of a paid response: charge them to the token (edge/budget.py); cut the response when
        the token has had what it paid for."""
        assert self.pay is not None and self.app.budgets is not None
        budget_id, cap, slack = self.pay
        if not self.app.budgets.charge(budget_id, start, end, cap=cap, slack=slack):
            self.body_sent -= sum(len(v) for v in batch)     # this batch never left
            raise BudgetExhausted("the byte budget of this token is used up")

    def _send_451(self, req: Request, record: dict) -> None:
        """RFC 7725: the key was taken down after review."""
        url = self.app.config.takedown_policy_url
        headers = ((b"Link", f'<{url}>; rel="blocked-by"'.encode()),) if url else ()
        case = str(record.get("case_id", ""))
        self._send_error(HTTPError(451, f"taken down after review (case {case})", headers), req)

    def _done(self, req: Request | None, status: int, cache_status: bytes, nbytes: int,
              size: int | None = None, first: int | None = None, last: int | None = None,
              origin_ms: float | None = None, started: float | None = None,
              parts: list | None = None) -> None:
        """Account one finished response (``req`` None: an answer to no request; see
        ``_account``)."""
        if req is None:
            self._account(None, "", None, status, cache_status, nbytes)
        else:
            self._account(req.method, req.key, req.range, status, cache_status, nbytes, size,
                          first, last, origin_ms, started, parts)

    def _account(self, method: bytes | None, key: str, rng: bytes | None, status: int,
                 cache_status: bytes, nbytes: int, size: int | None = None,
                 first: int | None = None, last: int | None = None,
                 origin_ms: float | None = None, started: float | None = None,
                 parts: list | None = None) -> None:
        """Account one finished response to ``method`` ``key`` (None: to no request), Range
        ``rng``: metrics, the live curve, the ledger and the access log when they are on.
        ``parts``: the plan's body parts (a multipart body's ranges count one by one). The hit
        lane calls it when the ledger or the access log is on."""
        app = self.app
        label = LABELS[cache_status]
        app.count(status, label, nbytes)
        t = self.tenant
        if t is not None:
            t.requests += 1
            t.bytes_sent += nbytes
        if method is None:
            return
        mrc = app.mrc
        if mrc is not None and last is not None and size:
            tn = t.name if t is not None else ""
            if parts is not None and len(parts) > 1:       # multipart: not the span between
                for x in parts:
                    if not isinstance(x, bytes):
                        mrc.account(tn, key, x[0], x[1] - 1, size)
            else:
                mrc.account(tn, key, first, last, size)  # type: ignore[arg-type]
        if app.ledger is not None:
            grant = self.grant
            app.ledger.record(time=time.time(), receipt=grant.receipt if grant else None,
                              key=key, tenant=t.name if t is not None else None, status=status,
                              bytes_sent=nbytes, method=method.decode("latin-1"))
        if app.access_log is not None:
            app.log_access(method, key, rng, self.peer, status, label, nbytes, size, first, last,
                           origin_ms, started, t.name if t is not None else "")

    def _precheck(self, req: Request) -> bool:
        """Answer requests that need no object at all; True if answered."""
        if req.error is not None:
            self._send_error(req.error, req)
            return True
        if req.method != b"GET" and req.method != b"HEAD":
            self._send_error(HTTPError(405, f"method {req.method.decode('latin-1')} not allowed",
                                       _METHOD_NOT_ALLOWED_HEADERS), req)
            return True
        if not req.key:
            self._send_error(HTTPError(404, "no object key in the path"), req)
            return True
        return False

    def _plan(self, req: Request, meta: ObjectMeta):
        return plan(req, meta.size, meta.etag, meta.last_modified,
                    boundary=_boundary, max_ranges=self.app.max_ranges)

    def _write_head(self, req: Request, p, cache_status: bytes) -> None:
        head = frame_head(p.status, p.headers, date=self.app.date, cache_status=cache_status,
                          keep_alive=req.keep_alive, http_minor=req.http_minor)
        self.transport.write(head)

    def _finish(self, req: Request) -> None:
        if not req.keep_alive:
            self._close()

    def _head(self, req: Request, meta: ObjectMeta, heads: dict[str, Any]) -> bytes:
        """The head of the plain 200 hit (no Range, no preconditions) of ``meta``."""
        h = self._plain_head(req.key, meta, heads)
        date = self.app.date
        if req.keep_alive and req.http_minor:
            if h.date is not date:
                h.head = h.before + date + h.after + _END_PLAIN
                h.date = date
            return h.head
        return h.before + date + h.after + head_end(req.keep_alive, req.http_minor)

    @staticmethod
    def _plain_head(key: str, meta: ObjectMeta, heads: dict[str, Any]) -> Any:
        """The cached PlainHead of ``meta`` (built now if ``heads`` has none of this version)."""
        h = heads.get(key)
        if h is None or h.meta is not meta:
            p = plan(_PLAIN_GET, meta.size, meta.etag, meta.last_modified, boundary=b"")
            h = _httphead.PlainHead(meta, *head_parts(p.status, p.headers, cache_status=HIT))
            if len(heads) >= HEADS_MAX:
                heads.clear()
            heads[key] = h
        return h

    def _handle_fast(self, req: Request) -> bool:
        """Answer ``req`` synchronously if that needs no I/O; False to hand it to the task."""
        app = self.app
        tenant = self.tenant = app.single or app.route(req.host)
        self.grant = None                          # set below if this request carries a token
        if req.error is not None or (req.method != b"GET" and req.method != b"HEAD") \
                or not req.key:
            return self._precheck(req)
        if tenant is None:
            host = (req.host or b"").decode("latin-1")[:200]
            self._send_error(HTTPError(421, f"this edge serves no site named {host!r}"), req)
            return True
        if tenant.blocked and req.key in tenant.blocked:
            self._send_451(req, tenant.blocked[req.key])
            return True
        if tenant.secret is not None:
            self.grant = self._authorize(req)
            if self.grant is None:
                return True                        # 403 sent
            if req.method == b"GET":
                return False                       # paid bytes take the accounted path
        storage = tenant.storage
        meta = storage.meta_cached(req.key)
        if meta is None:
            return False
        if (req.range is None and req.if_match is None and req.if_none_match is None
                and req.if_modified_since is None and req.if_unmodified_since is None):
            return self._handle_plain(req, meta, tenant)
        if req.range is not None and _LANE is not None:
            self._plain_head(req.key, meta, tenant.heads)    # the lane's next ranges need it
        try:
            p = self._plan(req, meta)
        except RangeNotSatisfiable as err:
            self._send_error(err, req, HIT)
            return True
        if not p.send_body:
            self._write_head(req, p, HIT)
            self._done(req, p.status, HIT, 0, meta.size)
            self._finish(req)
            return True
        if p.content_length > FAST_PATH_MAX:
            return False
        out: list = [b""]           # the head goes first, once every block is pinned
        pinned: list[Block] = []
        for part in p.parts:
            if isinstance(part, bytes):
                out.append(part)
            elif not self._pin_views(storage, meta, part[0], part[1], out, pinned):
                return False
        out[0] = frame_head(p.status, p.headers, date=self.app.date, cache_status=HIT,
                            keep_alive=req.keep_alive, http_minor=req.http_minor)
        self._done(req, p.status, HIT, p.content_length, meta.size, *_span(p.parts), parts=p.parts)
        self._write_pinned(storage, out, pinned,
                           p.parts[0][0] if len(p.parts) == 1 else -1)
        self._finish(req)
        return True

    @staticmethod
    def _pin_views(storage: Storage, meta: ObjectMeta, start: int, end: int, out: list,
                   pinned: list[Block]) -> bool:
        """Append to ``out`` views of object bytes ``[start, end)`` from ready blocks, pinned
        into ``pinned``. False if a block is not ready: then every pin taken so far (all of
        ``pinned``) is released and the request takes the general path."""
        bs = storage.block_size
        pos = start
        while pos < end:
            idx = pos // bs
            b = storage.pin_ready(meta, idx)
            if b is None:
                for x in pinned:
                    storage.release(x)
                return False
            pinned.append(b)
            base = idx * bs
            stop = min(end, base + b.length)
            out.append(storage.view(b, pos - base, stop - base))
            pos = stop
        return True

    def _write_pinned(self, storage: Storage, out: list, pinned: list[Block],
                      start: int = -1) -> None:
        """Write ``out``; its pins are released once the kernel holds the bytes. With
        ``start`` (object byte of the body's start), ``out`` is a head and then one view per
        block of ``pinned``, and the body may go out with sendfile."""
        if start >= 0 and self.sock_fd >= 0 and (len(out) > 2
                                                  or len(out[1]) >= self.app.sendfile_min):
            bs = storage.block_size
            at = start - start // bs * bs
            spans = [(b, at if i == 0 else 0) for i, b in enumerate(pinned)]
            self._send_views(storage, out, spans, 1)
        else:
            self.transport.writelines(out)
        if self.transport.get_write_buffer_size():
            self.held.extend(pinned)
        else:
            for x in pinned:
                storage.release(x)

    def _send_views(self, storage: Storage, views: list, spans: list, first: int) -> None:
        """Write ``views`` in order; ``views[:first]`` are not arena memory (a head), and
        ``spans[k - first]`` is ``(block, start in block)`` of ``views[k]``. A view of at least
        ``sendfile_min`` bytes of a sendable chunk goes out with sendfile when the transport
        has nothing buffered; the views before it go out together just ahead of it with
        ``MSG_MORE`` (``send_more``), so that a head shares its segment with the body as with
        nginx's ``tcp_nopush``, and from the first piece the kernel does not take whole,
        everything goes to the transport. The caller keeps every pin until the buffer is
        empty."""
        transport = self.transport
        n = len(views)
        if self.closing or transport.is_closing():  # its descriptor may be gone, even reused
            transport.writelines(views)
            return
        least = self.app.sendfile_min
        arena = storage.arena
        fd = self.sock_fd
        k = 0                           # views[k:i] wait to be written together
        i = first
        while i < n:
            v = views[i]
            size = len(v)
            b, a = spans[i - first]
            if (size < least or b.off < 0 or transport.get_write_buffer_size()
                    or not arena.sendable(b.off)):
                i += 1                  # written with the views around it
                continue
            try:
                if k < i:
                    put = _send_more(fd, views[k:i])
                    while k < i and put >= len(views[k]):
                        put -= len(views[k])
                        k += 1
                    if k < i:           # the kernel's buffer is full: the rest to the transport
                        views[k] = views[k][put:]
                        break
                sent = os.sendfile(fd, arena.fd, b.off + a, size)
            except BlockingIOError:
                sent = 0
            except OSError:             # the client is gone: as a failed write would
                self._abort()
                return
            self.app.sendfile_bytes += sent
            if sent < size:
                views[i] = v[sent:]
                break
            i += 1
            k = i
        if k < n:
            transport.writelines(views[k:])

    def _handle_plain(self, req: Request, meta: ObjectMeta, tenant: Tenant) -> bool:
        """The 200 of a hit without Range or preconditions: the whole object, cached head."""
        size = meta.size
        head = self._head(req, meta, tenant.heads)
        if req.method == b"HEAD" or not size:     # no body; an empty object's GET is a hit
            self._done(req, 200, HIT, 0, size)
            self.transport.write(head)
            self._finish(req)
            return True
        if size > FAST_PATH_MAX:
            return False
        storage = tenant.storage
        if size <= SMALL_COPY:      # within block 0 (blocks are >= 64 KiB): one copied buffer
            data = storage.read_small(meta, head)
            if data is None:
                return False
            self._done(req, 200, HIT, size, size, 0, size - 1)
            self.transport.write(data)
            self._finish(req)
            return True
        out: list = [head]
        pinned: list[Block] = []
        if not self._pin_views(storage, meta, 0, size, out, pinned):
            return False
        self._done(req, 200, HIT, size, size, 0, size - 1)
        self._write_pinned(storage, out, pinned, 0)
        self._finish(req)
        return True

    async def _handle(self, req: Request) -> None:
        """The general path: origin lookups, fills, streaming. One at a time per connection."""
        head_sent = False
        started = time.monotonic()
        origin_ms: float | None = None
        status = BYPASS
        p = None
        meta = None
        self.body_sent = 0

        def cut() -> None:
            """Account a response cut short: what got out before the cut."""
            if p is not None and meta is not None:
                self._done(req, p.status, status, self.body_sent - self.undelivered, meta.size,
                           *_span(p.parts), origin_ms=origin_ms, started=started, parts=p.parts)

        try:
            assert self.tenant is not None      # routed by _handle_fast
            storage = self.tenant.storage
            meta_hit = storage.meta_cached(req.key) is not None
            try:
                meta = await storage.meta(req.key, _first_block(req, storage.block_size))
                if not meta_hit:
                    origin_ms = (time.monotonic() - started) * 1000
            except NotFound:
                self._send_error(HTTPError(404, "no such object"), req, MISS)
                return
            except OriginError as exc:
                log.warning("origin lookup of %r failed: %s", req.key, exc)
                self._send_error(_origin_error(exc), req, MISS)
                return
            try:
                p = self._plan(req, meta)
            except RangeNotSatisfiable as err:
                self._send_error(err, req, HIT if meta_hit else MISS)
                return
            if p.send_body:
                status = self._cache_status(storage, meta, p.parts)
            else:                       # HEAD, 304, 412: only the metadata was needed
                status = HIT if meta_hit else MISS
            if self.grant is not None and p.send_body and p.content_length:
                g = self.grant
                budgets = self.app.budgets
                assert budgets is not None
                cap = g.budget if g.budget is not None else meta.size
                pay = (g.budget_id, cap, min(PAID_SLACK, meta.size // 4))
                if not all(budgets.admits(pay[0], a, b, cap=pay[1], slack=pay[2])
                           for a, b in (x for x in p.parts if not isinstance(x, bytes))):
                    self._send_error(HTTPError(402, "the byte budget of this token is used up"), req,
                                     status)
                    return
                self.pay = pay
                sock = self.transport.get_extra_info("socket")
                if sock is not None:      # run little ahead of the client: less to forgive
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAID_SNDBUF)
            self._write_head(req, p, status)
            head_sent = True
            if p.send_body:
                for part in p.parts:
                    if isinstance(part, bytes):
                        self.transport.write(part)
                    else:
                        await self._stream(storage, meta, part[0], part[1])
                await self._drain()
                self._done(req, p.status, status, p.content_length, meta.size, *_span(p.parts),
                           origin_ms=origin_ms, started=started, parts=p.parts)
            else:
                self._done(req, p.status, status, 0, meta.size, origin_ms=origin_ms, started=started)
            self._finish(req)
        except asyncio.CancelledError:      # the client went away (or the server stops)
            self._abort_if_open()
            if head_sent:
                cut()
            raise
        except (FillError, ConnectionError) as exc:
            if not head_sent and isinstance(exc, FillError):
                self._send_error(_origin_error(exc.cause), req, MISS)
            else:
                log.info("response for %r aborted: %s", req.key, exc)
                self._abort_if_open()
                cut()
        except Exception:
            log.exception("internal error serving %r", req.key)
            if head_sent:
                self._abort_if_open()
                cut()
            else:
                self._send_error(HTTPError(500, "internal error"), req)
        finally:
            self.pay = None
            self.busy = False
            self.task = None
            self.grant = None
            self.tenant = None
            if not self.closing:
                self._run()

    @staticmethod
    def _cache_status(storage: Storage, meta: ObjectMeta, parts: list) -> bytes:
        """RFC 9211: hit when every byte is cached, miss when none is, partial otherwise."""
        seen = set()
        for part in parts:
            if not isinstance(part, bytes):
                seen.add(storage.is_cached(meta, part[0], part[1]))
        if seen == {True} or not seen:
            return HIT
        return MISS if seen == {False} else PARTIAL

    def _abort_if_open(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.undelivered = self.transport.get_write_buffer_size() + _kernel_unsent(self.transport)
            self._abort()
        self.closing = True

    async def _drain(self) -> None:
        """Wait until the transport's buffer is empty (the kernel holds every byte)."""
        if not self.write_paused:
            return
        if self.closing:
            raise ConnectionResetError("connection closed")
        if self.drain_waiter is None:
            self.drain_waiter = asyncio.get_running_loop().create_future()
        await self.drain_waiter

    async def _stream(self, storage: Storage, meta: ObjectMeta, start: int, end: int) -> None:
        """Send object bytes ``[start, end)``: pinned views, filled blocks streamed as they land."""
        transport = self.transport
        assert transport is not None
        bs = storage.block_size
        out: list = []
        spans: list = []              # (block, start in block) of each view in out
        queued = 0
        pos = start
        cur: Block | None = None      # the block being read; joins self.held once fully queued
        readahead = self.app.readahead
        paid = self.pay is not None
        window = bs if paid else WINDOW   # a paid stream is charged block by block
        charged = start                   # object bytes before this were charged (paid only)
        last = (end - 1) // bs        # read-ahead stays inside the requested range
        try:
            while pos < end:
                idx = pos // bs
                base = idx * bs
                cur = storage.pin_ready(meta, idx) or storage.pin(meta, idx)
                if readahead:
                    for j in range(idx + 1, min(idx + readahead, last) + 1):
                        storage.prefetch(meta, j)
                a, stop = pos - base, min(end - base, cur.length)
                while a < stop:
                    if cur.ready:
                        c = stop
                    else:
                        if storage.available(cur) <= a:
                            if out:                   # first bytes go out before we wait
                                if paid:
                                    self._charge(charged, base + a, out)
                                    charged = base + a
                                self._emit(storage, out, spans)
                                out = []
                                spans = []
                            await storage.wait(cur, a + 1)
                        c = min(stop, storage.available(cur))
                    out.append(storage.view(cur, a, c))
                    spans.append((cur, a))
                    queued += c - a
                    self.body_sent += c - a
                    a = c
                self.held.append(cur)
                cur = None
                pos = base + stop
                if queued >= window or pos >= end:
                    if paid:
                        self._charge(charged, pos, out)
                        charged = pos
                    self._emit(storage, out, spans)
                    out = []
                    spans = []
                    queued = 0
                    if self.write_paused:
                        await self._drain()     # resume_writing releases what is held
                    else:
                        self._release_held()
        except BaseException:
            # The transport may still reference pinned memory: drop its buffer first.
            self._abort_if_open()
            self._release_held()
            raise
        finally:
            if cur is not None:
                storage.release(cur)

    def _emit(self, storage: Storage, views: list, spans: list) -> None:
        """Queue a streamed batch (pins are the caller's, in ``held``)."""
        if self.sock_fd >= 0:
            self._send_views(storage, views, spans, 0)
        else:
            self.transport.writelines(views)

    # -- timeouts -------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Called by the sweeper about once a second."""
        if self.closing or self.transport is None:
            return
        app = self.app
        if self.write_paused:
            # Progress is the transport's buffer shrinking: a slow reader is fine, a client
            # that takes no bytes at all for send_timeout is not.
            buffered = self.transport.get_write_buffer_size()
            if buffered < self.buffered_seen:
                self.last_activity = now
            self.buffered_seen = buffered
            if now - self.last_activity > app.send_timeout:
                log.info("client took no bytes for %.0fs: dropping", app.send_timeout)
                self._abort()
        elif self.parser.in_progress and not self.busy:
            if now - self.head_started > app.header_timeout:
                self.queue.clear()
                self._send_error(HTTPError(408, "request head not received in time"), None)
        elif not self.busy and not self.queue:
            if now - self.last_activity > app.idle_timeout:
                self._close()
