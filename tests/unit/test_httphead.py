"""The simple-head scanner: the compiled cext/httphead.pyx answers exactly as its pure twin."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cext

py = cext.load("httphead", pure=True)
try:
    c = cext.load("httphead", pure=False)
except ImportError:            # a pure-only environment: the twin is compared with itself
    c = py

CASES = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a/b.bin HTTP/1.1\r\nHost: x.example:8080\r\nRange: bytes=0-9\r\n\r\n",
    b"HEAD /k HTTP/1.0\r\n\r\n",
    b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /k HTTP/1.1\r\nConnection:  Close , \r\n\r\n",
    b"GET /k HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
    b"GET /k HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
    b"GET /k HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"GET /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /k HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /k HTTP/1.1\r\nIf-None-Match: \"a\"\r\nif-none-match:\t\"b\" \r\n\r\n",
    b"GET /k HTTP/1.1\r\nX-Empty:\r\n\r\n",
    b"GET /k?token=abc%20 HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n",
    b"POST /k HTTP/1.1\r\n\r\n",
    b"GET k HTTP/1.1\r\n\r\n",
    b"GET /k HTTP/1.2\r\n\r\n",
    b"GET /k HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET /k HTTP/1.1\r\n: x\r\n\r\n",
    b"GET /k HTTP/1.1\r\nA: \x01\r\n\r\n",
    b"GET /k HTTP/1.1\r\nA: b\n\r\n",
    b"GET /k#f HTTP/1.1\r\n\r\n",
    b"GET /k  HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /\r\n\r\n",
]


@pytest.mark.parametrize("head", CASES)
def test_twins_agree_on_hand_made_heads(head):
    assert c.scan(head, 0, len(head), 8192, 100) == py.scan(head, 0, len(head), 8192, 100)


def test_what_a_simple_head_gives():
    head = (b"junkGET /a%20b?x=1 HTTP/1.1\r\nHOST: h\r\nIf-Match: \"1\"\r\nIf-Match: \"2\"\r\n"
            b"Range: bytes=1-\r\nhost: again\r\n\r\n")
    got = c.scan(head, 4, len(head), 8192, 100)
    assert got == (b"GET", b"/a%20b?x=1", 1,
                   [(b"host", b"h"), (b"if-match", b'"1"'), (b"if-match", b'"2"'),
                    (b"range", b"bytes=1-"), (b"host", b"again")],
                   {b"host": b"h", b"if-match": b'"1", "2"', b"range": b"bytes=1-"}, "Host", True, None)
    assert c.scan(head, 4, len(head), 9, 100) is None            # target too long
    assert c.scan(head, 4, len(head), 8192, 4) is None           # too many field lines
    assert c.scan(head, 4, len(head) - 1, 8192, 100) is None     # not a whole head
    assert c.scan(head, 0, len(head), 8192, 100) is None


@pytest.mark.parametrize("target, host, key", [
    (b"/a/b.bin", b"x.example:8080", "a/b.bin"), (b"/", b"h", ""), (b"/k", b"[::1]:80", "k"),
    (b"/k", b"", "k"), (b"/k", b"h:", "k"), (b"/a%20b", b"h", None), (b"/k?x", b"h", None),
    (b"/.k", b"h", None), (b"//k", b"h", None), (b"/k/", b"h", None), (b"/a//b", b"h", None),
    (b"/a/.b", b"h", None), (b"/a./b", b"h", "a./b"), (b"/k", b"h:8x", None), (b"/k", b"[]", None),
    (b"/k", b"[::1", None), (b"/k", b"a@b", None), (b"/k", b"h%41", "k"),
])
def test_the_key_is_given_only_when_nothing_needs_checking(target, host, key):
    head = b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    assert c.scan(head, 0, len(head), 8192, 100)[7] == key
    assert py.scan(head, 0, len(head), 8192, 100)[7] == key


_name = st.sampled_from([b"Host", b"range", b"If-Match", b"if-none-match", b"Connection", b"X-A",
                         b"Upgrade", b"Content-Length", b"authorization", b"If-Range", b"A B", b""])
_value = st.one_of(
    st.sampled_from([b"close", b"keep-alive", b" Keep-Alive , close", b"upgrade", b"", b"  x  ",
                     b"bytes=0-1", b"\"e\"", b"a,,b"]),
    st.binary(max_size=12))


@settings(max_examples=600, deadline=None)
@given(method=st.sampled_from([b"GET", b"HEAD", b"PUT", b"get"]),
       target=st.one_of(st.sampled_from([b"/", b"/a/b", b"/k?t=1", b"x", b"/a b"]),
                        st.binary(max_size=10).map(lambda b: b"/" + b)),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]),
       fields=st.lists(st.tuples(_name, st.sampled_from([b": ", b":", b" :", b":\t"]), _value),
                       max_size=5),
       max_headers=st.integers(0, 6), max_url=st.integers(1, 20))
def test_twins_agree_on_generated_heads(method, target, version, fields, max_headers, max_url):
    head = method + b" " + target + b" " + version + b"\r\n"
    head += b"".join(n + sep + v + b"\r\n" for n, sep, v in fields) + b"\r\n"
    assert c.scan(head, 0, len(head), max_url, max_headers) == \
        py.scan(head, 0, len(head), max_url, max_headers)


# -- send_more: a head held back for the body that follows ------------------------------------

TWINS = [pytest.param(py, id="pure"), pytest.param(c, id="compiled")]


def loopback_pair():
    """A connected loopback TCP pair: (sender, non-blocking; receiver)."""
    import socket
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    rx = socket.create_connection(ls.getsockname())
    tx, _ = ls.accept()
    ls.close()
    tx.setblocking(False)
    return tx, rx


@pytest.fixture
def tcp_pair():
    """``loopback_pair`` with TCP_NODELAY on the sender, as uvloop sets it."""
    import socket
    tx, rx = loopback_pair()
    tx.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield tx, rx
    tx.close()
    rx.close()


def _recv_all(sock, n: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while len(got) < n:
        piece = sock.recv(n - len(got))
        if not piece:
            break
        got += piece
    return got


@pytest.mark.parametrize("m", TWINS)
def test_send_more_writes_every_kind_of_buffer_in_order(m, tcp_pair):
    tx, rx = tcp_pair
    bufs = [b"HTTP/1.1 200 OK\r\n\r\n", memoryview(b"..body..")[2:6], bytearray(b"tail")]
    assert m.send_more(tx.fileno(), bufs) == 19 + 4 + 4
    tx.send(b"!")                   # a send without MSG_MORE pushes what is held
    assert _recv_all(rx, 28) == b"HTTP/1.1 200 OK\r\n\r\nbodytail!"


@pytest.mark.parametrize("m", TWINS)
def test_send_more_holds_a_short_head_until_the_next_send(m, tcp_pair):
    import select
    import time
    tx, rx = tcp_pair
    t0 = time.monotonic()
    assert m.send_more(tx.fileno(), [b"head"]) == 4
    # Held (TCP_NODELAY alone would send it at once): nothing to read for a while...
    assert select.select([rx], [], [], 0.05)[0] == []
    # ...and the kernel sends it by itself after about 200 ms, never keeps it.
    assert select.select([rx], [], [], 3)[0] == [rx]
    assert time.monotonic() - t0 >= 0.1
    assert rx.recv(10) == b"head"
    # A head followed at once by its body: both arrive together, promptly.
    t0 = time.monotonic()
    assert m.send_more(tx.fileno(), [b"head"]) == 4
    tx.send(b"body")
    assert _recv_all(rx, 8) == b"headbody"
    assert time.monotonic() - t0 < 0.1


@pytest.mark.parametrize("m", TWINS)
def test_send_more_reports_a_full_buffer_and_a_gone_peer(m, tcp_pair):
    tx, rx = tcp_pair
    chunk = b"x" * 65536
    total = 0
    for _ in range(10_000):                 # the receiver reads nothing: the buffer fills
        put = m.send_more(tx.fileno(), [chunk])
        if put == 0:
            break
        total += put
    else:
        pytest.fail("the socket buffer never filled")
    assert total > 0
    rx.close()
    with pytest.raises(OSError):            # ECONNRESET or EPIPE, never a signal
        for _ in range(100):
            m.send_more(tx.fileno(), [chunk])
    with pytest.raises(OSError):
        m.send_more(-1, [b"x"])


@pytest.mark.parametrize("m", TWINS)
def test_send_more_takes_at_most_64_buffers(m, tcp_pair):
    tx, rx = tcp_pair
    assert m.send_more(tx.fileno(), [b"ab"] * 100) == 128   # the caller sends the rest
    assert m.send_more(tx.fileno(), []) == 0
    tx.send(b"!")
    assert _recv_all(rx, 129) == b"ab" * 64 + b"!"
