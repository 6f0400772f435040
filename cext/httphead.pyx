# cython: language_level=3, boundscheck=False, wraparound=False
"""The scanner of simple request heads, compiled: one pass over the bytes, no regex.

Same contract and same answers as the pure twin cext/_httphead_py.py (read its docstring);
tests/unit/test_httphead.py holds both to each other on generated and hand-made heads.
The request hot path calls it once per head (edge/http/request.py, ``_feed_simple``).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

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


cdef bint _valid_host(bytes host) noexcept:
    """``uri-host [":" port]`` as HOST in the twin: an IP-literal or a reg-name, then digits."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(host)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(host), i = 0
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


def scan(bytes data, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t max_url_length,
         Py_ssize_t max_headers):
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i, t0, nlines = 0, k0, k1, v0, v1, j
    cdef object method, target, name, value, kind_obj, prior, host, key
    cdef int minor, kind, conn = 0
    cdef char* w
    if pos < 0 or end > n or end - pos < 18:
        return None
    i = pos
    if s[i] == 71 and s[i + 1] == 69 and s[i + 2] == 84 and s[i + 3] == 32:          # "GET "
        method = _GET
        i += 4
    elif (s[i] == 72 and s[i + 1] == 69 and s[i + 2] == 65 and s[i + 3] == 68
          and s[i + 4] == 32):                                                         # "HEAD "
        method = _HEAD
        i += 5
    else:
        return None
    if s[i] != 47:                                                                     # "/"
        return None
    t0 = i
    while i < end and TARGET[s[i]]:
        i += 1
    if i - t0 > max_url_length or end - i < 13:
        return None
    # " HTTP/1.x\r\n"
    if not (s[i] == 32 and s[i + 1] == 72 and s[i + 2] == 84 and s[i + 3] == 84
            and s[i + 4] == 80 and s[i + 5] == 47 and s[i + 6] == 49 and s[i + 7] == 46
            and (s[i + 8] == 48 or s[i + 8] == 49) and s[i + 9] == 13 and s[i + 10] == 10):
        return None
    target = data[t0:i]
    minor = s[i + 8] - 48
    i += 11
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
        k0 = i
        while i < end and TCHAR[s[i]]:
            i += 1
        if i == k0 or i >= end or s[i] != 58:                                          # ":"
            return None
        k1 = i
        i += 1
        v0 = i
        while i < end and VCHAR[s[i]]:
            i += 1
        if i + 1 >= end or s[i] != 13 or s[i + 1] != 10:
            return None
        v1 = i
        i += 2
        nlines += 1
        if nlines > max_headers:
            return None
        name = PyBytes_FromStringAndSize(NULL, k1 - k0)
        w = PyBytes_AS_STRING(name)
        for j in range(k1 - k0):
            w[j] = <char>_lower(s[k0 + j])
        while v0 < v1 and _ows(s[v0]):
            v0 += 1
        while v1 > v0 and _ows(s[v1 - 1]):
            v1 -= 1
        value = data[v0:v1]
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
            j = _connection(s + v0, v1 - v0)
            if j < 0:
                return None
            conn |= j
        else:
            return None             # Content-Length, Transfer-Encoding: llhttp frames
    host = fields.get(b"host")
    key = None
    if (duplicate is None and host is not None and _plain_target(s + t0, len(target))
            and _valid_host(host)):
        key = target[1:].decode("ascii")
    return (method, target, minor, headers, fields, duplicate,
            not (conn & 1) and ((conn & 2) != 0 or minor == 1), key)
