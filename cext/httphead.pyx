# cython: language_level=3, boundscheck=False, wraparound=False
"""The scanner of simple request heads, compiled: one pass over the bytes, no regex.

Same contract and same answers as the pure twin cext/_httphead_py.py (read its docstring);
tests/unit/test_httphead.py holds both to each other on generated and hand-made heads.
The request hot path calls it once per head (edge/http/request.py, ``_feed_simple``).

``HitLane`` (compiled only) answers plain cache hits straight from a connection's bytes,
without building a Request: see its docstring and edge/server/protocol.py.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_SetFromErrno
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.errno cimport EAGAIN, EINTR, errno
from posix.uio cimport iovec

from cext._httphead_py import CONNECTION, KINDS, LIST, SINGLE, SINGLETONS

cdef bint TCHAR[256]
cdef bint TARGET[256]
cdef bint VCHAR[256]
cdef bint REGNAME[256]      # reg-name / IPv4 characters of a Host (pct-encoded allowed)
cdef bint IPLIT[256]        # characters inside an IP-literal's brackets


cdef void _init() noexcept:
    cdef int c
    for c in range(256):
        TCHAR[c] = (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122
                    or c in b"!#$%&'*+-.^_`|~")
        TARGET[c] = (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122
                     or c in b"-._~!$&'()*+,;=:@/?%")
        VCHAR[c] = c == 9 or 32 <= c <= 126
        REGNAME[c] = (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122
                      or c in b"-._~!$&'()*+,;=%")
        IPLIT[c] = (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122
                    or c in b":.-_~!$&'()*+,;=")


_init()

cdef object _GET = b"GET"
cdef object _HEAD = b"HEAD"
cdef object _UPGRADE = b"upgrade"
cdef dict _KINDS = KINDS
cdef dict _SINGLETONS = SINGLETONS
cdef int _SINGLE = SINGLE
cdef int _LIST = LIST
cdef int _CONNECTION = CONNECTION


cdef inline bint _ows(unsigned char c) noexcept:
    return c == 32 or c == 9


cdef inline unsigned char _lower(unsigned char c) noexcept:
    return c + 32 if 65 <= c <= 90 else c


cdef bint _same_ci(const unsigned char* p, Py_ssize_t n, const char* word) noexcept:
    """``p[:n]`` equals the lower-case ``word``, ignoring ASCII case."""
    cdef Py_ssize_t i = 0
    while i < n:
        if word[i] == 0 or _lower(p[i]) != <unsigned char>word[i]:
            return False
        i += 1
    return word[n] == 0


cdef int _connection(const unsigned char* p, Py_ssize_t n) noexcept:
    """Connection options: bit 1 close, bit 2 keep-alive; -1 for any other option."""
    cdef int out = 0
    cdef Py_ssize_t i = 0, a, b
    while i <= n:
        a = i
        while i < n and p[i] != 44:      # ","
            i += 1
        b = i
        while a < b and _ows(p[a]):
            a += 1
        while b > a and _ows(p[b - 1]):
            b -= 1
        if b > a:
            if _same_ci(p + a, b - a, b"close"):
                out |= 1
            elif _same_ci(p + a, b - a, b"keep-alive"):
                out |= 2
            else:
                return -1
        i += 1
    return out


cdef bint _valid_host(const unsigned char* p, Py_ssize_t n) noexcept:
    """``uri-host [":" port]`` as HOST in the twin: an IP-literal or a reg-name, then digits."""
    cdef Py_ssize_t i = 0
    if n and p[0] == 91:                                               # "["
        i = 1
        while i < n and IPLIT[p[i]]:
            i += 1
        if i == 1 or i >= n or p[i] != 93:                             # "]"
            return False
        i += 1
    else:
        while i < n and REGNAME[p[i]]:
            i += 1
    if i < n:
        if p[i] != 58:                                                 # ":"
            return False
        i += 1
        while i < n and 48 <= p[i] <= 57:
            i += 1
    return i == n


cdef bint _plain_target(const unsigned char* t, Py_ssize_t n) noexcept:
    """A target whose key (without the "/") needs no decoding or checking: no "%", no "?",
    no leading "." or "/", no trailing "/", no "//" and no "/."."""
    cdef Py_ssize_t i
    if n > 1 and (t[1] == 46 or t[1] == 47):
        return False
    if n > 1 and t[n - 1] == 47:
        return False
    for i in range(1, n):
        if t[i] == 37 or t[i] == 63:                                   # "%" "?"
            return False
        if t[i] == 47 and i + 1 < n and (t[i + 1] == 47 or t[i + 1] == 46):
            return False
    return True


cdef Py_ssize_t _request_line(const unsigned char* s, Py_ssize_t i, Py_ssize_t end,
                              Py_ssize_t max_url, Py_ssize_t* r) noexcept:
    """Read ``(GET|HEAD) SP /target SP HTTP/1.(0|1) CRLF`` (target characters ``TARGET``, at
    most ``max_url`` of them) at ``s[i:end]``: the index after it, or 0 if it is not there.
    ``r``: [1 for HEAD, target start, target end, minor version]. ``end - i`` >= 18."""
    if s[i] == 71 and s[i + 1] == 69 and s[i + 2] == 84 and s[i + 3] == 32:          # "GET "
        r[0] = 0
        i += 4
    elif (s[i] == 72 and s[i + 1] == 69 and s[i + 2] == 65 and s[i + 3] == 68
          and s[i + 4] == 32):                                                         # "HEAD "
        r[0] = 1
        i += 5
    else:
        return 0
    if s[i] != 47:                                                                     # "/"
        return 0
    r[1] = i
    while i < end and TARGET[s[i]]:
        i += 1
    if i - r[1] > max_url or end - i < 13:
        return 0
    # " HTTP/1.x\r\n"
    if not (s[i] == 32 and s[i + 1] == 72 and s[i + 2] == 84 and s[i + 3] == 84
            and s[i + 4] == 80 and s[i + 5] == 47 and s[i + 6] == 49 and s[i + 7] == 46
            and (s[i + 8] == 48 or s[i + 8] == 49) and s[i + 9] == 13 and s[i + 10] == 10):
        return 0
    r[2] = i
    r[3] = s[i + 8] - 48
    return i + 11


cdef Py_ssize_t _field_line(const unsigned char* s, Py_ssize_t i, Py_ssize_t end,
                            Py_ssize_t* r) noexcept:
    """Read ``token ":" *(HTAB / SP / VCHAR) CRLF`` at ``s[i:end]``: the index after it, or 0
    if it is not there. ``r``: [name start, name end, value start, value end], the value
    without its leading and trailing OWS."""
    cdef Py_ssize_t v0, v1
    r[0] = i
    while i < end and TCHAR[s[i]]:
        i += 1
    if i == r[0] or i >= end or s[i] != 58:                                            # ":"
        return 0
    r[1] = i
    i += 1
    v0 = i
    while i < end and VCHAR[s[i]]:
        i += 1
    if i + 1 >= end or s[i] != 13 or s[i + 1] != 10:
        return 0
    v1 = i
    while v0 < v1 and _ows(s[v0]):
        v0 += 1
    while v1 > v0 and _ows(s[v1 - 1]):
        v1 -= 1
    r[2] = v0
    r[3] = v1
    return i + 2


def scan(bytes data, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t max_url_length,
         Py_ssize_t max_headers):
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i, t0, nlines = 0, j
    cdef Py_ssize_t r[4]
    cdef object method, target, name, value, kind_obj, prior, host, key
    cdef int minor, kind, conn = 0
    cdef char* w
    if pos < 0 or end > n or end - pos < 18:
        return None
    i = _request_line(s, pos, end, max_url_length, r)
    if not i:
        return None
    method = _HEAD if r[0] else _GET
    t0 = r[1]
    target = data[t0:r[2]]
    minor = <int>r[3]
    cdef list headers = []
    cdef dict fields = {}
    duplicate = None
    while True:
        if i + 2 > end:
            return None
        if s[i] == 13:
            if s[i + 1] == 10 and i + 2 == end:
                break
            return None
        i = _field_line(s, i, end, r)
        if not i:
            return None
        nlines += 1
        if nlines > max_headers:
            return None
        name = PyBytes_FromStringAndSize(NULL, r[1] - r[0])
        w = PyBytes_AS_STRING(name)
        for j in range(r[1] - r[0]):
            w[j] = <char>_lower(s[r[0] + j])
        value = data[r[2]:r[3]]
        headers.append((name, value))
        kind_obj = _KINDS.get(name)
        if kind_obj is None:
            if name == _UPGRADE:
                return None
            continue
        kind = kind_obj
        if kind == _SINGLE:
            if name in fields:
                if duplicate is None:
                    duplicate = _SINGLETONS[name]
            else:
                fields[name] = value
        elif kind == _LIST:
            prior = fields.get(name)
            fields[name] = value if prior is None else prior + b", " + value
        elif kind == _CONNECTION:
            j = _connection(s + r[2], r[3] - r[2])
            if j < 0:
                return None
            conn |= j
        else:
            return None             # Content-Length, Transfer-Encoding: llhttp frames
    host = fields.get(b"host")
    key = None
    if (duplicate is None and host is not None and _plain_target(s + t0, len(target))
            and _valid_host(<const unsigned char*>PyBytes_AS_STRING(host),
                        PyBytes_GET_SIZE(host))):
        key = target[1:].decode("ascii")
    return (method, target, minor, headers, fields, duplicate,
            not (conn & 1) and ((conn & 2) != 0 or minor == 1), key)


# -- the hit lane -----------------------------------------------------------------------------

cdef enum:
    F_OTHER = 0         # a field the plain hit does not read
    F_HOST = 1
    F_CONNECTION = 2
    F_DECLINE = 3       # a field that changes the answer or the framing: the general path
    F_RANGE = 4


# The field names the lane reads or must not take, derived from KINDS (the names the request
# path reads) plus Upgrade: what the lane does with each. The bytes are kept alive in _LANE_NAMES.
cdef tuple _LANE_NAMES = tuple([*KINDS, _UPGRADE])
cdef const char* _LANE_NAME[16]
cdef Py_ssize_t _LANE_LEN[16]
cdef int _LANE_KIND[16]
cdef Py_ssize_t _LANE_N = len(_LANE_NAMES)


cdef void _init_lane_fields() except *:
    cdef Py_ssize_t i
    cdef bytes name
    cdef dict taken = {b"host": F_HOST, b"connection": F_CONNECTION, b"range": F_RANGE}
    if _LANE_N > 16:
        raise RuntimeError("cext.httphead: more lane field names than the table holds")
    for i in range(_LANE_N):
        name = _LANE_NAMES[i]
        _LANE_NAME[i] = PyBytes_AS_STRING(name)
        _LANE_LEN[i] = PyBytes_GET_SIZE(name)
        _LANE_KIND[i] = taken.get(name, F_DECLINE)


_init_lane_fields()


cdef int _lane_field(const unsigned char* p, Py_ssize_t n) noexcept:
    """How the hit lane treats a field name (any case): Host, Connection and Range it reads,
    every other name of KINDS and Upgrade make it decline, any other field it ignores."""
    cdef Py_ssize_t i
    for i in range(_LANE_N):
        if _LANE_LEN[i] == n and _same_ci(p, n, _LANE_NAME[i]):
            return _LANE_KIND[i]
    return F_OTHER


cdef Py_ssize_t _lane_head(const unsigned char* s, Py_ssize_t pos, Py_ssize_t n,
                           Py_ssize_t max_head, Py_ssize_t max_url, Py_ssize_t max_headers,
                           Py_ssize_t* out) noexcept:
    """Read one head at ``s[pos:n]`` that the lane may answer; its end, or 0 to decline.

    Taken: ``GET|HEAD /plain-target HTTP/1.1`` (a target ``_plain_target`` accepts, within
    ``max_url`` bytes, not "/"), field lines as ``scan`` takes them (at most ``max_headers``),
    exactly one valid Host, Connection options close / keep-alive only and no close, at most
    one Range and only on a GET, no field ``_lane_field`` declines, the whole head within
    ``max_head`` bytes and present in full. ``out``: [is_head, target start, target end, host
    start, host end, Range value start, Range value end (both 0: no Range)].
    """
    cdef Py_ssize_t i, lines = 0, limit = n
    cdef Py_ssize_t r[4]
    cdef int kind, conn = 0
    cdef bint host = False
    out[3] = out[4] = out[5] = out[6] = 0
    if limit - pos > max_head:
        limit = pos + max_head
    if limit - pos < 18:
        return 0
    i = _request_line(s, pos, limit, max_url, r)
    if (not i or r[3] != 1 or r[2] - r[1] < 2
            or not _plain_target(s + r[1], r[2] - r[1])):
        return 0
    out[0] = r[0]
    out[1] = r[1]
    out[2] = r[2]
    while True:
        if i + 2 > limit:
            return 0
        if s[i] == 13:
            if s[i + 1] == 10 and host and not (conn & 1):
                return i + 2
            return 0
        i = _field_line(s, i, limit, r)
        if not i:
            return 0
        lines += 1
        if lines > max_headers:
            return 0
        kind = _lane_field(s + r[0], r[1] - r[0])
        if kind == F_OTHER:
            continue
        if kind == F_DECLINE:
            return 0
        if kind == F_HOST:
            if host or not _valid_host(s + r[2], r[3] - r[2]):
                return 0                    # a repeated or bad Host is a 400: the general path
            host = True
            out[3] = r[2]
            out[4] = r[3]
        elif kind == F_RANGE:
            if out[6] or out[0]:
                return 0                    # a repeated Range is a 400; HEAD ignores Range
            out[5] = r[2]
            out[6] = r[3]
        else:
            kind = _connection(s + r[2], r[3] - r[2])
            if kind < 0:
                return 0
            conn |= kind


cdef Py_ssize_t _digits(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                        long long* value) noexcept:
    """Read ASCII digits at ``p[i:n]`` into ``value``; the index after them (``i``: none;
    -1: more than 18, beyond any size, left to the general path)."""
    cdef Py_ssize_t j = i
    cdef long long v = 0
    while j < n and 48 <= p[j] <= 57:
        if j - i == 18:
            return -1
        v = v * 10 + (p[j] - 48)
        j += 1
    value[0] = v
    return j


cdef bint _one_range(const unsigned char* p, Py_ssize_t n, long long size,
                     long long* start, long long* end) noexcept:
    """A Range value of one satisfiable byte range in its plain form (``bytes=F-L``,
    ``bytes=F-`` or ``bytes=-N``, unit in any case, no whitespace), into ``[start, end)`` as
    ``edge.http.ranges.parse_range`` computes it; False for anything else (the general path:
    lists, whitespace, invalid or unsatisfiable ranges, an empty object)."""
    cdef long long first, last
    cdef Py_ssize_t i, j
    if n < 8 or size <= 0 or not _same_ci(p, 5, b"bytes") or p[5] != 61:        # "="
        return False
    i = 6
    j = _digits(p, i, n, &first)
    if j < 0 or j >= n or p[j] != 45:                                               # "-"
        return False
    if j == i:                                          # a suffix: "-N"
        i = _digits(p, j + 1, n, &last)
        if i != n or i == j + 1 or last == 0:
            return False
        start[0] = size - last if last < size else 0
        end[0] = size
        return True
    i = _digits(p, j + 1, n, &last)
    if i != n:
        return False
    if first >= size:
        return False                                    # 416: the general path answers it
    if i == j + 1:                                      # "F-"
        end[0] = size
    elif last < first:
        return False                                    # invalid: ignored, a 200
    else:
        end[0] = last + 1 if last + 1 < size else size
    start[0] = first
    return True


cdef enum:
    LANE_RANGES = 16        # most ranges of a multi-range request the lane answers


cdef int _range_list(const unsigned char* p, Py_ssize_t n, long long size, Py_ssize_t max_ranges,
                     long long* starts, long long* ends) noexcept:
    """A Range value of 2 to ``min(max_ranges, LANE_RANGES)`` byte ranges ``F-L`` (unit in any
    case, no whitespace), in ascending order, none touching the next (``F`` > the previous
    ``L`` + 1), all within ``size``: into ``[starts[k], ends[k])``, exactly the ranges
    ``edge.http.ranges.parse_range`` returns for it, and their count; 0 for anything else
    (the general path: suffixes, open ends, overlaps, unsorted, clipped or invalid ranges)."""
    cdef long long first, last, prev = -2
    cdef Py_ssize_t i, j
    cdef int k = 0
    if n < 10 or size <= 0 or not _same_ci(p, 5, b"bytes") or p[5] != 61:      # "="
        return 0
    i = 6
    while True:
        j = _digits(p, i, n, &first)
        if j <= i or j >= n or p[j] != 45:                                          # "-"
            return 0
        i = _digits(p, j + 1, n, &last)
        if i <= j + 1 or last < first or last >= size or first <= prev + 1:
            return 0
        if k == LANE_RANGES or k >= max_ranges:
            return 0
        starts[k] = first
        ends[k] = last + 1
        k += 1
        prev = last
        if i == n:
            return k if k >= 2 else 0
        if p[i] != 44:                                                              # ","
            return 0
        i += 1


cdef extern from "<sys/socket.h>" nogil:
    struct msghdr:
        void* msg_name
        unsigned int msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    ssize_t sendmsg(int fd, const msghdr* msg, int flags)
    int MSG_MORE
    int MSG_DONTWAIT
    int MSG_NOSIGNAL


def send_more(int fd, list buffers):
    """Write ``buffers`` (bytes-like, at most 64 of them) to the non-blocking socket ``fd``
    with one ``sendmsg(MSG_MORE | MSG_DONTWAIT | MSG_NOSIGNAL)`` and return how many bytes the
    kernel took (0 when its buffer is full); other errors raise OSError. The twin's docstring
    (cext/_httphead_py.py) says why."""
    cdef Py_buffer views[64]
    cdef iovec iov[64]
    cdef msghdr msg
    cdef Py_ssize_t n = min(len(buffers), 64), got = 0, i
    cdef ssize_t sent
    try:
        while got < n:
            PyObject_GetBuffer(buffers[got], &views[got], PyBUF_SIMPLE)
            iov[got].iov_base = views[got].buf
            iov[got].iov_len = <size_t>views[got].len
            got += 1
        msg.msg_name = NULL
        msg.msg_namelen = 0
        msg.msg_iov = iov
        msg.msg_iovlen = <size_t>n
        msg.msg_control = NULL
        msg.msg_controllen = 0
        msg.msg_flags = 0
        while True:
            sent = sendmsg(fd, &msg, MSG_MORE | MSG_DONTWAIT | MSG_NOSIGNAL)
            if sent >= 0:
                return sent
            if errno == EAGAIN:             # EWOULDBLOCK on Linux
                return 0
            if errno != EINTR:
                PyErr_SetFromErrno(OSError)
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])


cdef class PlainHead:
    """The plain 200 hit head of one object version, around its Date (protocol.py ``_head``);
    the twin's docstring says what each field holds."""

    cdef public object meta, before, after, date, head, mrc
    cdef public bint sampled
    cdef bytes r_pre, r_tail          # ``after`` before and after its Content-Length line

    def __init__(self, meta, bytes before, bytes after):
        self.meta = meta
        self.before = before
        self.after = after
        self.date = b""
        self.head = b""
        self.mrc = None
        self.sampled = False
        self.r_pre = self.r_tail = None

    cdef bint _split(self):
        """``r_pre`` and ``r_tail``: ``after`` before and after its Content-Length line; False
        if it has none (never: plan puts one in every 200)."""
        cdef Py_ssize_t i, j
        if self.r_pre is None:
            after = <bytes>self.after
            i = after.find(b"\r\nContent-Length: ")
            j = after.find(b"\r\n", i + 2) if i >= 0 else -1
            if j < 0:
                return False
            self.r_pre = after[:i]
            self.r_tail = after[j:]
        return True

    cdef bytes content_type(self):
        """The Content-Type of this version's 200 (its first field), or None."""
        if not self._split() or not self.r_pre.startswith(b"\r\nContent-Type: "):
            return None
        return self.r_pre[16:]

    cdef bytes multi_head(self, bytes before, bytes date, bytes boundary, Py_ssize_t length,
                          bytes end_plain):
        """The multipart/byteranges 206 head ``plan`` and ``frame_head`` give a GET of several
        ranges of this version, ``length`` bytes of body: this 200 head's fields with
        Content-Type and Content-Length replaced (call ``content_type`` first)."""
        return b"".join((before, date, b"\r\nContent-Type: multipart/byteranges; boundary=",
                         boundary, b"\r\nContent-Length: %d" % length, self.r_tail, end_plain))

    cdef bytes range_head(self, bytes before, bytes date, long long start, long long end,
                          long long size, bytes end_plain):
        """The 206 head ``plan`` and ``frame_head`` give a GET of ``[start, end)`` of this
        version: ``before`` (206 status line through "Date: "), then this 200 head's fields with
        Content-Length changed and Content-Range after it; None if ``after`` has no
        Content-Length line (never: plan puts one in every 200)."""
        if not self._split():
            return None
        return b"".join((before, date, self.r_pre,
                         b"\r\nContent-Length: %d\r\nContent-Range: bytes %d-%d/%d"
                         % (end - start, start, end - 1, size),
                         self.r_tail, end_plain))


cdef void _answered(object proto, object app, object tenant, str key, bint logged,
                    bytes method, object rng, int status, bytes hit, Py_ssize_t nbytes,
                    Py_ssize_t size, Py_ssize_t first, Py_ssize_t last, PlainHead h) except *:
    """Account a hit the lane answered as ``HttpProtocol._account`` does (``first`` -1: no
    body bytes): through it when the ledger or the access log is on, else its counting and
    live-curve part here, with block 0's sampling remembered in ``h`` for a whole object
    within block 0."""
    if logged:
        proto._account(method, key, rng, status, hit, nbytes, size,
                       None if first < 0 else first, None if first < 0 else last)
        return
    cdef dict counts = app.requests     # App.count, inlined: (status, cache status) -> responses
    k = (status, "hit")
    counts[k] = counts.get(k, 0) + 1
    counts = app.bytes_sent
    counts["hit"] = counts.get("hit", 0) + nbytes
    tenant.requests += 1
    tenant.bytes_sent += nbytes
    mrc = app.mrc
    if mrc is None or first < 0 or not size:
        return
    if first == 0 and last == size - 1 and size <= mrc.block_size:
        if h.mrc is not mrc:
            h.sampled = mrc.block0(tenant.name, key)
            h.mrc = mrc
        mrc.account_block0(tenant.name, key, size, h.sampled)
    else:
        mrc.account(tenant.name, key, first, last, size)


cdef class HitLane:
    """Answers the plain cache hits at the start of a connection's bytes, compiled.

    ``serve(proto, data)`` is called by ``HttpProtocol.data_received`` when nothing of the
    connection is queued, busy or waiting for the socket, and the parser is between messages.
    It answers, one after the other, the whole heads at the start of ``data`` that are
    keep-alive HTTP/1.1 GET/HEAD hits with no precondition, no token and no takedown, whose
    tenant's cached 200 head the general path already built for this object version, and
    whose blocks are ready: the 200 of ``HttpProtocol._handle_plain``, the 206 of one byte
    range in its plain form (``_one_range``), or the multipart/byteranges 206 of a list of
    ranges ``parse_range`` keeps as they are (``_range_list``; its boundary from ``boundary()``,
    the fast path's), exactly as the general path answers them (bytes,
    counters, live curve, ledger and access log through ``proto._account``), and returns how
    many bytes of ``data`` it consumed. At the first head it does not take (or when the
    socket stops taking bytes) it stops without any side effect for that head: the bytes from
    there go through the parser and the general path. ``tests/unit/test_hitlane.py`` holds it
    to the general path byte for byte. Compiled only: with the pure-Python twins the general
    path answers everything.
    """

    cdef bytes end_plain, hit, before_206
    cdef Py_ssize_t small_copy, fast_max
    cdef object boundary

    def __init__(self, bytes end_plain, Py_ssize_t small_copy, Py_ssize_t fast_max, bytes hit,
                 bytes before_206, boundary):
        self.end_plain = end_plain      # the end of a keep-alive HTTP/1.1 head
        self.before_206 = before_206    # "HTTP/1.1 206 Partial Content\r\nDate: "
        self.boundary = boundary        # () -> a fresh multipart boundary, as the fast path's
        self.small_copy = small_copy    # bodies up to this size go out copied with the head
        self.fast_max = fast_max        # larger bodies are left to the general path
        self.hit = hit                  # the Cache-Status of a hit, for proto._account

    def serve(self, proto, bytes data):
        cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), pos = 0, end, size
        cdef Py_ssize_t f[7]
        cdef long long r0, r1
        cdef long long rstart[LANE_RANGES]
        cdef long long rend[LANE_RANGES]
        cdef int nr, k
        cdef Py_ssize_t length
        cdef Py_ssize_t max_head, max_url, max_headers
        cdef int status
        cdef PlainHead h
        cdef object app = proto.app
        cdef bint logged = app.ledger is not None or app.access_log is not None
        limits = proto.parser.boundary_limits()
        if limits is None:
            return 0
        max_head = limits.max_head_size
        max_url = limits.max_url_length
        max_headers = limits.max_headers
        single = app.single
        transport = proto.transport
        while pos < n:
            end = _lane_head(s, pos, n, max_head, max_url, max_headers, f)
            if end == 0:
                break
            tenant = single if single is not None else app.route(
                PyBytes_FromStringAndSize(<const char*>s + f[3], f[4] - f[3]))
            if tenant is None or tenant.secret is not None:
                break
            key = PyUnicode_DecodeASCII(<const char*>s + f[1] + 1, f[2] - f[1] - 1, NULL)
            blocked = tenant.blocked
            if blocked and key in blocked:
                break
            storage = tenant.storage
            meta = storage.meta_cached(key)
            if meta is None:
                break
            got = tenant.heads.get(key)
            if got is None:
                break
            h = <PlainHead?>got
            if h.meta is not meta:
                break
            size = meta.size
            if f[6] and not _one_range(s + f[5], f[6] - f[5], size, &r0, &r1):
                # several byte ranges of a GET: multipart/byteranges, as the fast path
                nr = _range_list(s + f[5], f[6] - f[5], size, app.max_ranges, rstart, rend)
                ctype = h.content_type() if nr else None
                if ctype is None:
                    break
                boundary = self.boundary()
                heads = []                      # each part's delimiter and fields
                parts = []                      # its object bytes [start, end)
                delimiter = b"--" + boundary
                length = 0
                for k in range(nr):
                    part = b"%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n" % (
                        delimiter, ctype, rstart[k], rend[k] - 1, size)
                    heads.append(part)
                    parts.append((rstart[k], rend[k]))
                    length += len(part) + (rend[k] - rstart[k])
                    delimiter = b"\r\n--" + boundary
                tail = b"\r\n--" + boundary + b"--\r\n"
                length += len(tail)
                if length > self.fast_max:
                    break
                views = [None]                  # the head, once every block is pinned
                pinned = []
                for k in range(nr):
                    views.append(heads[k])
                    if not proto._pin_views(storage, meta, rstart[k], rend[k], views, pinned):
                        break
                else:
                    views.append(tail)
                    views[0] = h.multi_head(self.before_206, app.date, boundary, length,
                                            self.end_plain)
                    proto.tenant = tenant
                    proto.grant = None
                    proto._account(_GET, key, data[f[5]:f[6]], 206, self.hit, length, size,
                                   rstart[0], rend[nr - 1] - 1, None, None, parts)
                    proto._write_pinned(storage, views, pinned, -1)
                    pos = end
                    if proto.write_paused or proto.closing:
                        break
                    continue
                break                           # a block is not ready (pins released)
            if f[6]:                            # one byte range of a GET
                head = h.range_head(self.before_206, app.date, r0, r1, size, self.end_plain)
                if head is None:
                    break
                status, rng = 206, data[f[5]:f[6]]
            else:
                date = app.date
                if h.date is not date:
                    h.head = h.before + date + h.after + self.end_plain
                    h.date = date
                head = h.head
                status, rng = 200, None
                r0, r1 = 0, (0 if f[0] else size)
            if r1 - r0 > self.fast_max:
                break
            proto.tenant = tenant       # what the general path sets for any head it gets
            proto.grant = None
            method = _HEAD if f[0] else _GET
            if r1 == r0:                        # HEAD, or an empty object
                _answered(proto, app, tenant, key, logged, method, rng, status, self.hit, 0,
                          size, -1, -1, h)
                transport.write(head)
            elif status == 200 and size <= self.small_copy:
                out = storage.read_small(meta, head)
                if out is None:
                    break
                _answered(proto, app, tenant, key, logged, method, rng, status, self.hit, size,
                          size, 0, size - 1, h)
                transport.write(out)
            else:
                out = [head]
                pinned = []
                if not proto._pin_views(storage, meta, r0, r1, out, pinned):
                    break
                _answered(proto, app, tenant, key, logged, method, rng, status, self.hit,
                          r1 - r0, size, r0, r1 - 1, h)
                proto._write_pinned(storage, out, pinned, r0)
            pos = end
            if proto.write_paused or proto.closing:
                break
        return pos
