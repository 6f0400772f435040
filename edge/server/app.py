"""Wiring of one worker: arena + policy + origin + storage + listening socket, and the supervisor.

``serve(config)`` runs the edge in the foreground. With ``workers = 1`` the process itself is
the worker. With ``workers = N > 1`` a supervisor forks N workers that accept on the same port
(SO_REUSEPORT) and restarts any that dies; in this version each worker has a private arena of
``cache.size / N`` (sharing one arena across workers is the job of the shared-index work), so
the machine's total stays within ``cache.size``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import cext
from edge.cache import Storage
from edge.config import Config
from edge.http import Limits, format_http_date
from origin_clients import make_origin
from origin_clients.pool import OriginPool

log = logging.getLogger("edge")


def arena_path_for(config: Config, port: int, workers: int) -> tuple[str | None, bool]:
    """Resolve ``cache.arena_path`` -> (path or None for anonymous, whether we own the file).

    ``auto`` is /dev/shm/edge-PORT.arena (PORT as bound) when /dev/shm exists. Until warm
    restart re-attaches arenas, an ``auto`` file is removed at clean shutdown.
    """
    p = config.arena_path
    if p == "anonymous" or workers > 1:
        return None, False
    if p == "auto":
        if not os.path.isdir("/dev/shm"):
            return None, False
        return f"/dev/shm/edge-{port}.arena", True
    return p, False


def make_pool(config: Config) -> OriginPool:
    """The configured origins as one pool of replicas."""
    origins = [
        make_origin(o.name, o.url, access_key=o.access_key or None, secret_key=o.secret_key or None,
                    session_token=o.session_token or None, max_connections=o.max_connections,
                    connect_timeout=o.connect_timeout, read_timeout=o.read_timeout)
        for o in config.origins
    ]
    p = config.pool
    return OriginPool(origins, retries=p.retries, backoff=p.backoff, deadline=p.deadline,
                      failure_threshold=p.failure_threshold, cooldown=p.cooldown,
                      probe_interval=p.probe_interval, probe_key=p.probe_key,
                      hedge_after=p.hedge_after)


class App:
    """Everything the connections of one worker share."""

    def __init__(self, config: Config, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self.limits = Limits(
            max_head_size=config.max_head_size,
            max_headers=config.max_headers,
            max_url_length=config.max_url_length,
            max_ranges=config.max_ranges,
        )
        self.max_ranges = config.max_ranges
        self.max_pipeline = config.max_pipeline
        self.readahead = config.readahead
        self.header_timeout = config.header_timeout
        self.idle_timeout = config.idle_timeout
        self.send_timeout = config.send_timeout
        self.connections: set = set()
        self.now = time.monotonic()
        self.date = format_http_date(time.time())
        self.requests_hit = 0
        self.requests_miss = 0
        self.bytes_hit = 0
        self.bytes_miss = 0

    def stats_hit(self, nbytes: int) -> None:
        self.requests_hit += 1
        self.bytes_hit += nbytes

    def stats_miss(self, nbytes: int) -> None:
        self.requests_miss += 1
        self.bytes_miss += nbytes

    def tick(self) -> None:
        """Once a second: refresh the clock and Date, and let connections check their timeouts."""
        self.now = time.monotonic()
        self.date = format_http_date(time.time())
        for conn in list(self.connections):
            conn.check(self.now)


def _make_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def run_worker(config: Config, sock: socket.socket, *, worker: int = 0, workers: int = 1,
                     ready: Any = None) -> None:
    """Serve on ``sock`` until SIGTERM/SIGINT, then finish in-flight responses (bounded)."""
    from edge.server.protocol import HttpProtocol

    Arena = cext.load("arena").Arena
    size = config.cache_size // workers
    size -= size % config.block_size
    arena_path, own_file = arena_path_for(config, sock.getsockname()[1], workers)
    arena = Arena(size, config.block_size, path=arena_path, min_chunk=config.min_chunk,
                  prefault=config.prefault)
    origin = make_pool(config)
    origin.start()
    storage = Storage(arena, origin, block_size=config.block_size, policy=config.eviction,
                      meta_ttl=config.meta_ttl, max_fills=config.max_fills,
                      max_transient=max(1, config.uncached_memory // config.block_size))
    app = App(config, storage)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(app), sock=sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1.0)
            app.tick()

    tick_task = loop.create_task(ticker())
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        log.info("worker %d stopping: %d connections open", worker, len(app.connections))
        server.close()
        deadline = time.monotonic() + config.shutdown_timeout
        while app.connections and time.monotonic() < deadline:
            for c in list(app.connections):
                if not c.busy and not c.queue:
                    c._close()
            await asyncio.sleep(0.05)
        for c in list(app.connections):
            c._abort_if_open()
        tick_task.cancel()
        await storage.close()
        await origin.close()
        await asyncio.sleep(0)   # let aborted transports drop their buffers (arena views)
        try:
            arena.close()
        except BufferError:
            log.debug("arena still referenced at exit; the OS unmaps it")
        if own_file and arena_path is not None:
            try:
                os.unlink(arena_path)
            except OSError:
                pass


def _run_loop(coro_factory) -> None:
    import uvloop

    uvloop.run(coro_factory())


def serve(config: Config) -> int:
    """Run the edge in the foreground; returns the exit status."""
    host, port = config.listen
    workers = config.workers
    sock = _make_socket(host, port, reuse_port=workers > 1)
    actual_port = sock.getsockname()[1]
    impl = "pure-Python twins" if cext.NO_EXTENSIONS else "compiled extensions"
    origins = ", ".join(f"{o.name}={o.url}" for o in config.origins)
    print(
        f"edge: serving http://{host if ':' not in host else '[' + host + ']'}:{actual_port}/ "
        f"from {origins}; cache {config.cache_size >> 20} MiB in {config.block_size >> 10} KiB "
        f"blocks, {workers} worker(s), {impl}",
        flush=True,
    )
    if workers == 1:
        _run_loop(lambda: run_worker(config, sock))
        return 0
    return _supervise(config, sock, workers)


def _supervise(config: Config, sock: socket.socket, workers: int) -> int:
    """Fork ``workers`` processes on the shared socket; restart any that dies until told to stop."""
    children: dict[int, int] = {}
    stopping = False

    def spawn(i: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _run_loop(lambda: run_worker(config, sock, worker=i, workers=workers))
            except BaseException:
                log.exception("worker %d crashed", i)
                code = 1
            finally:
                os._exit(code)
        children[pid] = i

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(workers):
        spawn(i)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        i = children.pop(pid)
        if not stopping:
            log.warning("worker %d (pid %d) exited with status %d: restarting", i, pid, status)
            time.sleep(0.1)
            spawn(i)
    return 0


def configure_logging(level: str, path: str = "") -> None:
    """The edge's own log: standard error, or appended to ``path``."""
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
