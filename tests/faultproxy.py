"""A fault-injecting HTTP proxy for tests: put it between the edge and a real origin.

Each client request is forwarded on a fresh upstream connection (``Connection: close``), so
the proxy sees where each response ends; the fault chosen by ``mode`` is applied to the next
``count`` GET responses (all of them when ``count`` is None), then requests pass untouched.

Modes: ``pass``; ``slow`` (wait ``delay`` s before the head and between body chunks);
``truncate`` (close cleanly after ``after`` body bytes); ``reset`` (TCP RST after ``after``
body bytes); ``overlong`` (announce and send ``extra`` bytes more than the origin did);
``etag`` (replace the ETag header); ``status`` (answer ``status`` without asking upstream);
``hang`` (accept the request and never answer); ``refuse`` (close the connection at once).
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.count: int | None = None
        self.after = 0
        self.extra = 1000
        self.delay = 1.0
        self.status = 503
        self.etag = b'"tampered"'
        self.requests: list[bytes] = []       # request lines seen
        self.faults = 0                       # faults injected
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def set(self, mode: str, count: int | None = None, **kw) -> None:
        """Arm a fault (thread-safe enough for tests: plain attribute writes)."""
        for k, v in kw.items():
            setattr(self, k, v)
        self.count = count
        self.mode = mode

    def start(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self._loop)
        self._server = fut.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown():
            assert self._server is not None
            self._server.close()
            for t in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                t.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _take_fault(self, method: bytes) -> str:
        if self.mode == "pass" or (method != b"GET" and self.mode not in ("refuse", "hang", "status")):
            return "pass"
        if self.count is not None:
            if self.count <= 0:
                return "pass"
            self.count -= 1
        self.faults += 1
        return self.mode

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line = head.split(b"\r\n", 1)[0]
                self.requests.append(line)
                mode = self._take_fault(line.split(b" ", 1)[0])
                if mode == "refuse":
                    return
                if mode == "hang":
                    await asyncio.sleep(3600)
                    return
                if mode == "status":
                    body = b"injected failure\n"
                    writer.write(b"HTTP/1.1 %d Injected\r\nContent-Length: %d\r\n\r\n%s"
                                 % (self.status, len(body), body))
                    await writer.drain()
                    continue
                if not await self._forward(head, mode, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _forward(self, head: bytes, mode: str, writer: asyncio.StreamWriter) -> bool:
        """Relay one exchange; False when the client connection must end."""
        lines = [ln for ln in head.rstrip(b"\r\n").split(b"\r\n")
                 if not ln.lower().startswith(b"connection:")]
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        try:
            up_w.write(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n")
            rhead = await up_r.readuntil(b"\r\n\r\n")
            hlines = rhead.rstrip(b"\r\n").split(b"\r\n")
            if mode == "etag":
                hlines = [b"ETag: " + self.etag if h.lower().startswith(b"etag:") else h for h in hlines]
            if mode == "overlong":
                hlines = [b"Content-Length: %d" % (int(h.split(b":")[1]) + self.extra)
                          if h.lower().startswith(b"content-length:") else h for h in hlines]
            if mode == "slow":
                await asyncio.sleep(self.delay)
            writer.write(b"\r\n".join(hlines) + b"\r\n\r\n")
            sent = 0
            while True:
                chunk = await up_r.read(65536)
                if not chunk:
                    break
                if mode in ("truncate", "reset") and sent + len(chunk) >= self.after:
                    writer.write(chunk[: self.after - sent])
                    await writer.drain()
                    if mode == "reset":
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort() if mode == "reset" else writer.close()
                    return False
                if mode == "slow":
                    await asyncio.sleep(self.delay / 10)
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
            if mode == "overlong":
                writer.write(b"X" * self.extra)
            await writer.drain()
            return True
        finally:
            up_w.close()
