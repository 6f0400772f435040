"""Pure-Python twin of cext/httphead.pyx: the scanner of simple request heads.

``scan(data, pos, end, max_url_length, max_headers)`` looks at one complete head
``data[pos:end]`` (``end`` just after its CRLF CRLF) and returns None unless it is *simple*:

    (GET|HEAD) SP /target SP HTTP/1.(0|1) CRLF
    *( token ":" *(HTAB / SP / VCHAR) CRLF )
    CRLF

with the target made of ``A-Za-z0-9-._~!$&'()*+,;=:@/?%``, at most ``max_url_length`` bytes,
at most ``max_headers`` field lines, no Upgrade, Content-Length or Transfer-Encoding field
and no Connection option other than close / keep-alive (those need llhttp's framing).
For a simple head it returns ``(method, target, minor, headers, fields, duplicate,
keep_alive, key)``: the lower-cased names with OWS-stripped values in order, the fields the
request path reads (``SINGLETONS`` first value, ``if-match`` / ``if-none-match`` joined
with ", "), the message name of the first repeated singleton (or None), whether the
connection persists, and the object key when the request needs no further checks: the
target without its "/" when it has no query, no escape, no empty or dot segment (no
"//", "/.", leading "." or trailing "/"), no repeated singleton, and a Host that is a valid
``uri-host [":" port]`` (``HOST``); else None and edge/http/request.py checks the request
in full. edge/http/request.py builds the Request from it.

``send_more(fd, buffers)`` writes the buffers to the socket ``fd`` in one ``sendmsg`` with
``MSG_MORE``, so the kernel holds a short head until the body that follows (a ``sendfile``)
fills the segment: see its docstring.
"""
from __future__ import annotations

import re

OWS = b" \t"
# Fields that must appear at most once: lower-cased name -> name for messages.
SINGLETONS = {
    b"host": "Host",
    b"range": "Range",
    b"if-range": "If-Range",
    b"if-modified-since": "If-Modified-Since",
    b"if-unmodified-since": "If-Unmodified-Since",
    b"authorization": "Authorization",
}
SINGLE, LIST, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING = range(5)
KINDS = {
    **dict.fromkeys(SINGLETONS, SINGLE),
    b"if-match": LIST,
    b"if-none-match": LIST,
    b"connection": CONNECTION,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
}
# uri-host [ ":" port ] (RFC 9112 §3.2, RFC 3986 §3.2.2): IP-literal or reg-name/IPv4.
HOST = re.compile(rb"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]*)"
                  rb"(?::[0-9]*)?")
SIMPLE_HEAD = re.compile(
    rb"(GET|HEAD) (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.([01])\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*)\r\n")


def scan(data: bytes, pos: int, end: int, max_url_length: int, max_headers: int):
    m = SIMPLE_HEAD.fullmatch(data, pos, end)
    if m is None:
        return None
    method, target, minor, block = m.groups()
    if len(target) > max_url_length:
        return None
    lines = block.split(b"\r\n")
    lines.pop()                     # block is empty or ends with CRLF
    if len(lines) > max_headers:
        return None
    headers: list[tuple[bytes, bytes]] = []
    fields: dict[bytes, bytes] = {}
    duplicate: str | None = None
    close = persist = False         # Connection: close / keep-alive seen
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.lower()
        value = value.strip(OWS)
        headers.append((name, value))
        kind = KINDS.get(name)
        if kind is None:
            if name == b"upgrade":
                return None
        elif kind == SINGLE:
            if name in fields:
                if duplicate is None:
                    duplicate = SINGLETONS[name]
            else:
                fields[name] = value
        elif kind == LIST:
            prior = fields.get(name)
            fields[name] = value if prior is None else prior + b", " + value
        elif kind == CONNECTION:
            for t in value.split(b","):
                t = t.strip(OWS).lower()
                if t == b"close":
                    close = True
                elif t == b"keep-alive":
                    persist = True
                elif t:
                    return None
        else:
            return None             # Content-Length, Transfer-Encoding: llhttp frames
    minor_n = 1 if minor == b"1" else 0
    host = fields.get(b"host")
    k = target[1:].decode("ascii")
    plain = (duplicate is None and host is not None and b"%" not in target and b"?" not in target
             and k[:1] not in ("/", ".") and k[-1:] != "/" and "//" not in k and "/." not in k
             and HOST.fullmatch(host) is not None)
    return (method, target, minor_n, headers, fields, duplicate,
            not close and (persist or minor_n == 1), k if plain else None)


def send_more(fd: int, buffers: list) -> int:
    """Write ``buffers`` (bytes-like, at most 64 of them) to the non-blocking socket ``fd``
    with one ``sendmsg(MSG_MORE | MSG_DONTWAIT | MSG_NOSIGNAL)`` and return how many bytes the
    kernel took (0 when its buffer is full). Other errors raise OSError, as ``os.sendfile``
    does. ``MSG_MORE`` holds the bytes back as TCP_CORK would until the next send without it
    (nginx's ``tcp_nopush``): a head and the start of a body share their first segment instead
    of the head going out alone. The caller must send again soon; the kernel pushes held
    bytes after 200 ms at the latest."""
    # Imported here, not at the top: the head scanner (edge/http's) stays free of I/O modules.
    import os
    import socket

    if len(buffers) > 64:
        buffers = buffers[:64]
    s = socket.socket(fileno=os.dup(fd))    # a duplicate: closing it leaves ``fd`` open
    try:
        return s.sendmsg(buffers, (), socket.MSG_MORE | socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
    except BlockingIOError:
        return 0
    finally:
        s.close()


class PlainHead:
    """The plain 200 hit head of one object version, around its Date (protocol.py ``_head``);
    compiled in cext/httphead.pyx so that the hit lane reads it as a C struct."""

    __slots__ = ("meta", "before", "after", "date", "head", "mrc", "sampled")

    def __init__(self, meta, before: bytes, after: bytes) -> None:
        self.meta = meta        # the version it describes: a new ObjectMeta means a new head
        self.before = before    # status line through "Date: "
        self.after = after      # the header fields after Date, through Cache-Status
        self.date = b""         # the Date of ``head``
        self.head = b""         # the whole head for HTTP/1.1 keep-alive at ``date``
        self.mrc = None         # the live curve ``sampled`` was asked of
        self.sampled = False    # whether that curve samples block 0 of this object

