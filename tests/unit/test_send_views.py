"""``HttpProtocol._send_views``: a head held back with ``send_more`` ahead of a sendfile'd view,
and every way the kernel can take less, still gives the client the exact bytes in order.

The protocol method runs against a real loopback TCP socket and a real file (standing in for
the arena's), with a transport that writes straight to that socket, so what the receiver
reads is what a client would; ``send_more`` is replaced to take less than it is given.
"""
from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest

from edge.cache import Block
from edge.server import protocol
from edge.server.protocol import HttpProtocol

from .test_httphead import loopback_pair

KIB = 1024


class Transport:
    """Writes synchronously to the socket and records each call."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.calls: list[int] = []

    def writelines(self, views) -> None:
        data = b"".join(bytes(v) for v in views)
        self.calls.append(len(data))
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


@pytest.fixture
def setup(tmp_path):
    tx, rx = loopback_pair()
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    content = os.urandom(512 * KIB)
    path = tmp_path / "arena"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    arena = SimpleNamespace(fd=fd, sendable=lambda off: True)
    aborted: list[bool] = []
    proto = SimpleNamespace(
        transport=Transport(tx), closing=False, sock_fd=tx.fileno(),
        app=SimpleNamespace(sendfile_min=64 * KIB, sendfile_bytes=0),
        _abort=lambda: aborted.append(True))
    yield proto, SimpleNamespace(arena=arena), content, rx, aborted
    os.close(fd)
    tx.close()
    rx.close()


def _views(content: bytes):
    """A head, a small view (copied), a large one (sendfile), another head-like piece and
    another large view: (views, spans, expected bytes)."""
    mv = memoryview(content)
    blk = Block(("k", 0), 0, len(content))
    head, sep = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b"\r\n--sep\r\n\r\n"
    views = [head, mv[0:1000], mv[4096:4096 + 200 * KIB], sep, mv[300 * KIB:500 * KIB]]
    # spans are (block, start in block) of the arena views; ``sep`` is not arena memory but
    # sits between arena views, so it has a span whose block has no arena offset
    transient = Block(("t", 0), -1, len(sep))
    spans = [(blk, 0), (blk, 4096), (transient, 0), (blk, 300 * KIB)]
    return views, spans, b"".join(bytes(v) for v in views)


def _read(rx: socket.socket, n: int) -> bytes:
    rx.settimeout(5)
    got = b""
    while len(got) < n:
        piece = rx.recv(n - len(got))
        assert piece, "closed early"
        got += piece
    return got


def test_head_goes_with_the_body_and_bodies_with_sendfile(setup):
    proto, storage, content, rx, aborted = setup
    views, spans, want = _views(content)
    HttpProtocol._send_views(proto, storage, views, spans, 1)
    assert _read(rx, len(want)) == want
    assert proto.app.sendfile_bytes == 400 * KIB         # both large views
    assert proto.transport.calls == []                   # nothing needed the transport
    assert not aborted


@pytest.mark.parametrize("takes", [0, 3, 40, 1003])
def test_send_more_taking_less_sends_the_rest_in_order(setup, monkeypatch, takes):
    proto, storage, content, rx, aborted = setup
    real = protocol._send_more
    calls = []

    def partial(fd, buffers):
        calls.append(sum(len(b) for b in buffers))
        # take ``takes`` bytes of what is offered: the head and the small view
        return real(fd, [b"".join(bytes(b) for b in buffers)[:takes]]) if takes else 0

    monkeypatch.setattr(protocol, "_send_more", partial)
    views, spans, want = _views(content)
    offered = len(views[0]) + 1000
    HttpProtocol._send_views(proto, storage, views, spans, 1)
    assert _read(rx, len(want)) == want
    assert calls == [offered]
    assert proto.app.sendfile_bytes == 0                 # the rest went through the transport
    assert proto.transport.calls == [len(want) - takes]
    assert not aborted


def test_a_gone_client_aborts(setup, monkeypatch):
    proto, storage, content, rx, aborted = setup

    def gone(fd, buffers):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(protocol, "_send_more", gone)
    views, spans, _ = _views(content)
    HttpProtocol._send_views(proto, storage, views, spans, 1)
    assert aborted == [True]
    assert proto.transport.calls == [] and proto.app.sendfile_bytes == 0
