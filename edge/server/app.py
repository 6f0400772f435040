"""Wiring of one worker: arena + policy + origin + storage + listening socket, and the supervisor.

``serve(config)`` runs the edge in the foreground. With ``workers = 1`` the process itself is
the worker, over a private arena (a file by default, kept for a warm restart). With
``workers = N > 1`` a supervisor creates ONE shared region of ``cache.size`` (cext/shm: the
arena and the block index in shared memory), then forks N workers that accept on the same
port (SO_REUSEPORT); each attaches to the region as its worker id and serves every tenant
through SharedStorage (edge/cache/shared.py), so a block is stored once and any worker serves
it. When a worker dies the supervisor releases its pins, hands the fills other workers were
reading over to them and drops the rest (``recover_worker``), and starts it again.

Warm restart is the same with either: the arena file (``cache.arena_path``, by default
/dev/shm/edge-PORT.arena, one path for one worker or several; "anonymous" means none) stays
after a clean stop together with ``state_dir/index-PORT.bin``, which the next start with the
same layout consumes and verifies (edge/cache/storage.py, edge/cache/shared.py). With several
workers each one saves its object metadata at its stop and the supervisor, once they are all
gone, writes the index of the shared region; at start it re-indexes and re-hashes the blocks
before forking, and every worker loads the restored metadata.
"""
from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import fcntl
import gc
import glob
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import time
from typing import Any, cast

import cext
from edge import config as cfg
from edge import metrics
from edge.accesslog import AccessLog
from edge.budget import BudgetStore
from edge.cache import SharedArena, SharedStorage, Storage, restore_index, save_index, zerocopy
from edge.cache.shared import (
    Restored,
    read_worker_metas,
    restore_shared_index,
    save_shared_index,
    save_worker_meta,
)
from edge.config import Config, OriginSpec, PoolSpec, TenantSpec
from edge.control import Journal
from edge.http import Limits, format_http_date
from edge.ledger import Ledger
from edge.livemrc import LiveMRC
from edge.server.tenants import Router, Tenant
from edge.takedowns import Takedowns
from origin_clients import make_origin
from origin_clients.pool import OriginPool

log = logging.getLogger("edge")

# Keys a reload cannot change in a running process (reported, never half-applied).
RESTART_KEYS = ("listen", "workers", "state_dir", "cache_size", "block_size", "min_chunk",
                "arena_path", "eviction", "revalidate_after", "max_fills", "uncached_memory", "readahead",
                "prefault", "admin_listen", "log_file", "shutdown_timeout", "sendfile_min")
LIMIT_KEYS = ("max_head_size", "max_headers", "max_url_length", "max_ranges", "max_pipeline",
              "header_timeout", "idle_timeout", "send_timeout")


def arena_path_for(config: Config, port: int, workers: int) -> str | None:
    """Resolve ``cache.arena_path``: ``auto`` is /dev/shm/edge-PORT.arena (PORT as bound) when
    /dev/shm exists; None means an anonymous mapping (also for private per-worker arenas)."""
    p = config.arena_path
    if p == "anonymous" or workers > 1:
        return None
    if p == "auto":
        return f"/dev/shm/edge-{port}.arena" if os.path.isdir("/dev/shm") else None
    return p


def shared_path_for(config: Config, port: int) -> str:
    """Where the shared region of ``workers > 1`` lives (its control file is PATH.ctl): the
    arena file one worker would use (``arena_path_for``: /dev/shm/edge-PORT.arena for
    ``auto``, an explicit path as given), kept for a warm restart; where one worker would
    have an anonymous mapping (``anonymous``, or ``auto`` without /dev/shm), a name of this
    process's own under /dev/shm (or ``state_dir``), removed when the supervisor exits (a
    region shared by processes needs a file)."""
    kept = arena_path_for(config, port, 1)
    if kept is not None:
        return kept
    base = "/dev/shm" if os.path.isdir("/dev/shm") else config.state_dir
    return os.path.join(base, f"edge-{port}-{os.getpid()}.shared")


def shared_index_capacity(size: int, block_size: int, min_chunk: int) -> int:
    """Index slots of a shared region: room for a block per min_chunk of arena (every block
    a small object) at a 75% load, but never more than one 64-byte slot per 4 KiB of arena
    (the index stays within ~1.6% of the arena); a power of two, at least 16 per page."""
    want = max(16 * (size // block_size), size // min_chunk * 4 // 3)
    cap = 1024
    while cap < want and cap * 4096 < size:
        cap *= 2
    return cap


def index_path(config: Config, port: int) -> str:
    """Where the warm-restart index of the edge on ``port`` lives."""
    return os.path.join(config.state_dir, f"index-{port}.bin")


def arena_layout(config: Config, arena_path: str, size: int) -> dict[str, Any]:
    """What must not change for a saved index to describe the arena file (fail-closed)."""
    return {"arena_path": os.path.abspath(arena_path), "size": size,
            "block_size": config.block_size, "min_chunk": config.min_chunk}


def shared_layout(config: Config, path: str, size: int, workers: int) -> dict[str, Any]:
    """``arena_layout`` of a shared region, plus what makes it one: the number of workers
    and the index capacity (a one-worker index never matches it, nor the other way round)."""
    return {**arena_layout(config, path, size), "workers": workers,
            "index_capacity": shared_index_capacity(size, config.block_size, config.min_chunk)}


def meta_path(config: Config, port: int, worker: int) -> str:
    """Where worker ``worker`` of the edge on ``port`` leaves its object metadata at a clean
    stop, for its supervisor to merge into the warm-restart index."""
    return os.path.join(config.state_dir, f"meta-{port}-{worker}.json")


def make_pool(specs: tuple[OriginSpec, ...], p: PoolSpec) -> OriginPool:
    """Origins (one tenant's, or the top-level ones) as one pool of replicas."""
    origins = [
        make_origin(o.name, o.url, access_key=o.access_key or None, secret_key=o.secret_key or None,
                    session_token=o.session_token or None, max_connections=o.max_connections,
                    connect_timeout=o.connect_timeout, read_timeout=o.read_timeout)
        for o in specs
    ]
    return OriginPool(origins, retries=p.retries, backoff=p.backoff, deadline=p.deadline,
                      failure_threshold=p.failure_threshold, cooldown=p.cooldown,
                      probe_interval=p.probe_interval, probe_key=p.probe_key,
                      hedge_after=p.hedge_after)


def tenant_specs(config: Config) -> tuple[TenantSpec, ...]:
    """The configured tenants; without [[tenants]], one tenant "" for every Host."""
    return config.tenants or (TenantSpec(name="", hosts=("*",), origins=config.origins),)


def tenant_secret(config: Config, spec: TenantSpec) -> bytes | None:
    """The token secret of a tenant: its own, else [auth] secret; None when it has neither."""
    secret = config.auth_secret if spec.secret is None else spec.secret
    return secret.encode() if secret else None


def make_storages(config: Config, arena: Any) -> dict[str, Storage]:
    """One Storage per tenant over ``arena``, each with its share of it as its policy's
    capacity; fill slots and memory outside the arena are bounded for all of them together.
    Over a SharedArena (workers > 1) they are SharedStorages and the shares are of the whole
    shared arena (each worker's policy ranks the blocks it sees against all of it)."""
    cls = SharedStorage if isinstance(arena, SharedArena) else Storage
    shares = config.tenant_capacities()      # whole blocks, summing to at most cache.size
    storages: dict[str, Storage] = {}
    first: Storage | None = None
    for spec in tenant_specs(config):
        st = cls(arena, make_pool(spec.origins, config.pool), block_size=config.block_size,
                 policy=config.eviction, meta_ttl=config.revalidate_after or None,
                 # machine-wide bounds, split between the workers
                 max_fills=max(1, config.max_fills // config.workers),
                 max_transient=max(1, config.uncached_memory // config.block_size // config.workers),
                 capacity=shares[spec.name], shared_with=first, name=spec.name)
        first = first or st
        storages[spec.name] = st
    return storages


class App:
    """Everything the connections of one worker share."""

    def __init__(self, config: Config, storages: dict[str, Storage], *, worker: int = 0,
                 workers: int = 1) -> None:
        self.config = config
        self.storages = storages
        # Any storage releases any pinned block (they share the arena and the transient room).
        self.storage = next(iter(storages.values()))
        self.worker = worker
        self.workers = workers
        self.journal = Journal(os.path.join(config.state_dir, "control.jsonl"))
        self.takedowns = Takedowns(config.state_dir)
        self.tenants: dict[str, Tenant] = {}
        self.single: Tenant | None = None      # set when there are no [[tenants]]: no routing
        self.router: Router | None = None
        self._setup_tenants(config)
        # Paid downloads: with a secret every request needs a token; budgets are shared by all
        # workers (SQLite in state_dir); the ledger records every finished response.
        self.budgets = (BudgetStore(os.path.join(config.state_dir, "budgets.sqlite"))
                        if any(t.secret for t in self.tenants.values()) else None)
        self.ledger = (Ledger(config.ledger_path, rotate_bytes=config.ledger_rotate)
                       if config.ledger_path else None)
        self.metrics_dir = os.path.join(config.state_dir, "metrics")
        self._apply_limits(config)
        self.readahead = config.readahead
        arena = next(iter(storages.values())).arena
        # body pieces of at least this many bytes go out with sendfile (0: never)
        self.sendfile_min = config.sendfile_min if getattr(arena, "zero_copy", False) else 0
        self.sendfile_bytes = 0         # body bytes that went out with sendfile
        self.connections: set = set()
        self.now = time.monotonic()
        self.date = format_http_date(time.time())
        self.requests: dict[tuple[int, str], int] = {}   # (status, cache status) -> responses
        self.bytes_sent: dict[str, int] = {}             # cache status -> body bytes
        self.access_log: AccessLog | None = AccessLog(config.access_log) if config.access_log else None
        # The live miss-ratio curve (admin GET /mrc), fed by sampled responses (edge/livemrc.py).
        self.mrc = (LiveMRC(config.eviction, config.cache_size, config.block_size, config.mrc_sample_rate)
                    if config.mrc_sample_rate else None)

    def count(self, status: int, cache_status: str, nbytes: int) -> None:
        """Count one finished response (the per-request cost on the hit path)."""
        k = (status, cache_status)
        self.requests[k] = self.requests.get(k, 0) + 1
        self.bytes_sent[cache_status] = self.bytes_sent.get(cache_status, 0) + nbytes

    def log_access(self, method: bytes, key: str, rng: bytes | None, client: str, status: int,
                   cache_status: str, nbytes: int, size: int | None, first_byte: int | None,
                   last_byte: int | None, origin_ms: float | None, started: float | None,
                   tenant: str = "") -> None:
        """One access-log line of a response to ``method`` ``key`` with Range ``rng`` (only
        called when the access log is on)."""
        assert self.access_log is not None
        self.access_log.log(
            time=time.time(), client=client, method=method.decode("latin-1"), key=key,
            status=status, size=size,
            range=rng.decode("latin-1") if rng is not None else None,
            first_byte=first_byte, last_byte=last_byte, bytes_sent=nbytes,
            cache_status=cache_status, origin_ms=origin_ms,
            total_ms=(time.monotonic() - started) * 1000 if started is not None else None,
            tenant=tenant)

    def _apply_limits(self, config: Config) -> None:
        self.limits = Limits(
            max_head_size=config.max_head_size,
            max_headers=config.max_headers,
            max_url_length=config.max_url_length,
            max_ranges=config.max_ranges,
        )
        self.max_ranges = config.max_ranges
        self.max_pipeline = config.max_pipeline
        self.header_timeout = config.header_timeout
        self.idle_timeout = config.idle_timeout
        self.send_timeout = config.send_timeout

    def _setup_tenants(self, config: Config) -> None:
        """(Re)build the tenants' secrets, takedown views and the Host router from ``config``."""
        specs = tenant_specs(config)
        for spec in specs:
            t = self.tenants.get(spec.name)
            if t is None:
                t = self.tenants[spec.name] = Tenant(spec.name, self.storages[spec.name], None)
            t.secret = tenant_secret(config, spec)
            t.blocked = self.takedowns.for_tenant(spec.name)
        if config.tenants:
            self.router = Router(self.tenants, specs)
            self.single = None
        else:
            self.single = self.tenants[""]
            self.router = None

    def route(self, host: bytes | None) -> Tenant | None:
        """The tenant that serves ``host`` (None: no tenant does)."""
        if self.single is not None:
            return self.single
        assert self.router is not None
        return self.router.route(host)

    def _scope(self, tenant: str | None) -> list[Tenant]:
        """The tenants an admin command names: one, or every tenant for None/""."""
        if tenant:
            return [self.tenants[tenant]]
        return list(self.tenants.values())

    @property
    def admin_token(self) -> str:
        return os.environ.get("EDGE_ADMIN_TOKEN") or self.config.admin_token

    # -- operations -------------------------------------------------------------------------

    def all_snapshots(self) -> list[dict]:
        """This worker's metrics snapshot, live, plus the other workers' latest ones."""
        own = metrics.snapshot(self)
        if self.workers == 1:
            return [own]
        others = [x for x in metrics.read_snapshots(self.metrics_dir) if x.get("pid") != own["pid"]]
        return [own, *others]

    def purge(self, *, key: str | None = None, prefix: str | None = None, tenant: str | None = None,
              broadcast: bool = True) -> dict[str, int]:
        """Drop an object (or every object under a prefix) of ``tenant`` (None: of every
        tenant) here and, by the journal, everywhere."""
        result = {"objects": 1 if key is not None else 0, "blocks": 0}
        for t in self._scope(tenant):
            if key is not None:
                result["blocks"] += t.storage.purge(key)
            else:
                assert prefix is not None
                objects, blocks = t.storage.purge_prefix(prefix)
                result["objects"] += objects
                result["blocks"] += blocks
        cmd = {"op": "purge", "key": key, "prefix": prefix, "tenant": tenant}
        if broadcast and self.workers > 1:
            self.journal.append(cmd)
        return result

    def reload(self, *, broadcast: bool = False) -> dict:
        """Re-read the config: apply what can change live, report what needs a restart.

        A config that does not validate is refused whole; the running one stays.
        """
        old = self.config
        path = None if old.source.startswith("<") else old.source
        try:
            new = cfg.load(path, old.overrides)
            cfg.check_origin_dirs(new)
        except cfg.ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return {"ok": False, "error": str(exc)}
        restart = [k for k in RESTART_KEYS if getattr(new, k) != getattr(old, k)]
        if ([t.name for t in new.tenants] != [t.name for t in old.tenants]
                or new.tenant_capacities() != old.tenant_capacities()):
            restart.append("tenants")       # which tenants exist and their shares of the arena
        applied = []
        if "tenants" not in restart:
            old_origins = {t.name: t.origins for t in tenant_specs(old)}
            swapped = [t for t in tenant_specs(new)
                       if t.origins != old_origins[t.name] or new.pool != old.pool]
            for t in swapped:
                self._swap_origins(self.storages[t.name], t.origins, new.pool)
            if swapped:
                applied.append("origins")
            if (new.auth_secret != old.auth_secret or new.tenants != old.tenants):
                applied.append("tenants" if new.tenants != old.tenants else "auth.secret")
        if any(getattr(new, k) != getattr(old, k) for k in LIMIT_KEYS):
            self._apply_limits(new)
            applied.append("limits")
        if new.mrc_sample_rate != old.mrc_sample_rate:
            self.mrc = (LiveMRC(old.eviction, old.cache_size, old.block_size, new.mrc_sample_rate)
                        if new.mrc_sample_rate else None)
            applied.append("cache.mrc_sample_rate")
        if new.log_level != old.log_level:
            logging.getLogger().setLevel(getattr(logging, new.log_level.upper()))
            applied.append("log.level")
        if new.access_log != old.access_log:
            if self.access_log is not None:
                self.access_log.close()
            self.access_log = AccessLog(new.access_log) if new.access_log else None
            applied.append("log.access")
        elif self.access_log is not None:
            self.access_log.reopen()      # SIGHUP after logrotate
        if new.admin_token != old.admin_token:
            applied.append("admin.token")
        # restart-only values keep running as they are; the rest is the new config
        keep = {k: getattr(old, k) for k in restart}
        self.config = dataclasses.replace(new, **keep)
        self._setup_tenants(self.config)
        if self.budgets is None and any(t.secret for t in self.tenants.values()):
            self.budgets = BudgetStore(os.path.join(self.config.state_dir, "budgets.sqlite"))
        if broadcast and self.workers > 1:
            self.journal.append({"op": "reload"})
        log.info("config reloaded from %s: applied %s%s", new.source, ", ".join(applied) or "nothing",
                 f"; needs a restart: {', '.join(restart)}" if restart else "")
        return {"ok": True, "applied": applied, "needs_restart": restart}

    def _swap_origins(self, storage: Storage, specs: tuple[OriginSpec, ...], pool_spec: PoolSpec) -> None:
        old_pool = storage.origin
        pool = make_pool(specs, pool_spec)
        pool.start()
        storage.origin = pool
        storage.forget_all_meta()
        # fills in flight keep the old pool until they end; close it when they surely have
        asyncio.get_running_loop().call_later(
            max(60.0, pool_spec.deadline * 3),
            lambda: asyncio.ensure_future(old_pool.close()))

    def block(self, key: str, *, case_id: str, reason: str, actor: str, tenant: str = "") -> dict:
        """Take ``key`` of ``tenant`` ("": of every tenant) down, after review: persisted,
        audited, purged, 451 on every worker."""
        record = self.takedowns.block(key, case_id=case_id, reason=reason, actor=actor, tenant=tenant)
        self._takedowns_changed([(tenant, key)])
        return record

    def unblock(self, key: str, *, actor: str, tenant: str = "", case_id: str = "",
                reason: str = "") -> bool:
        done = self.takedowns.unblock(key, actor=actor, tenant=tenant, case_id=case_id, reason=reason)
        if done:
            self._takedowns_changed([])
        return done

    def _takedowns_changed(self, purge: list[tuple[str, str]], broadcast: bool = True) -> None:
        for t in self.tenants.values():
            t.blocked = self.takedowns.for_tenant(t.name)
        for tenant, key in purge:
            for t in self._scope(tenant):
                t.storage.purge(key)
                t.heads.pop(key, None)
        if broadcast and self.workers > 1:
            self.journal.append({"op": "takedowns", "purge": [list(x) for x in purge]})

    def apply_journal(self) -> None:
        for cmd in self.journal.poll():
            op = cmd.get("op")
            if op == "takedowns":
                self.takedowns.load()
                purge = [(str(t), str(k)) for t, k in cmd.get("purge", [])]
                self._takedowns_changed(purge, broadcast=False)
            elif op == "purge":
                self.purge(key=cmd.get("key"), prefix=cmd.get("prefix"), tenant=cmd.get("tenant"),
                           broadcast=False)
            elif op == "reload":
                self.reload()
            else:
                log.warning("control journal: unknown command %r", cmd)

    def tick(self) -> None:
        """Once a second: clock and Date, timeouts, logs, metrics snapshot, control journal."""
        self.now = time.monotonic()
        self.date = format_http_date(time.time())
        for conn in list(self.connections):
            conn.check(self.now)
        if self.access_log is not None:
            self.access_log.flush()
        loop = asyncio.get_running_loop()
        if self.ledger is not None and self.ledger.pending_bytes:
            loop.run_in_executor(None, self.ledger.flush)      # write + fsync off the loop
        if self.budgets is not None:
            loop.run_in_executor(None, self.budgets.checkpoint)
        if self.workers > 1:
            try:
                metrics.write_snapshot(self.metrics_dir, self.worker, metrics.snapshot(self))
            except OSError as exc:
                log.warning("cannot write the metrics snapshot: %s", exc)
            self.apply_journal()


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
                     ready: Any = None, shared: str | None = None, restored: Restored | None = None,
                     fresh: bool = True, save_meta: str | None = None) -> None:
    """Serve on ``sock`` until SIGTERM/SIGINT, then finish in-flight responses (bounded).

    ``shared``: the path of the supervisor's shared region, attached as worker ``worker``;
    None: a private arena of ``cache.size`` (one worker). With ``shared``: ``restored`` is
    what the supervisor's warm restart brought back (``fresh``: this is the worker's first
    start, not a restart after it died), and ``save_meta`` where to leave this worker's object
    metadata at a clean stop for the next warm restart (None: the region is not kept)."""
    from edge.server.protocol import HttpProtocol

    size = config.cache_size - config.cache_size % config.block_size
    port = sock.getsockname()[1]
    arena: Any
    if shared is not None:
        arena = SharedArena(cext.load("shm").SharedCache.attach(shared, worker))
        arena_path = None
    else:
        arena_path = arena_path_for(config, port, workers)
        if arena_path is not None:
            _remove_stale_ctl(arena_path)
        arena = cext.load("arena").Arena(size, config.block_size, path=arena_path,
                                         min_chunk=config.min_chunk, prefault=config.prefault)
    _enable_zero_copy(config, arena, arena_path if shared is None else shared, worker)
    storages = make_storages(config, arena)
    for st in storages.values():
        st.origin.start()       # type: ignore[attr-defined]  # an OriginPool
    if restored is not None:            # the supervisor re-attached these: know and rank them
        for name, st in storages.items():
            cast(SharedStorage, st).restore(restored.metas.get(name, []),
                                            restored.blocks.get(name, []), fresh)
    if arena_path is not None:          # warm restart: re-attach what the last clean stop saved
        t0 = time.monotonic()
        kept, dropped = restore_index(index_path(config, port), arena_layout(config, arena_path, size),
                                      storages)
        if kept or dropped:
            log.info("warm restart: %d blocks re-attached from %s, %d dropped, in %.2fs",
                     kept, arena_path, dropped, time.monotonic() - t0)
    app = App(config, storages, worker=worker, workers=workers)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(app), sock=sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    admin = None
    if worker == 0 and config.admin_listen is not None:
        from aiohttp import web

        from edge.admin import make_admin_app

        admin = web.AppRunner(make_admin_app(app), access_log=None, handle_signals=False)
        await admin.setup()
        host, port = config.admin_listen
        await web.TCPSite(admin, host, port, reuse_address=True).start()
        log.info("admin API on http://%s:%d/", host, port)
    if ready is not None:
        ready()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1.0)
            app.tick()

    tick_task = loop.create_task(ticker())
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
        if admin is not None:
            await admin.cleanup()
        if app.access_log is not None:
            app.access_log.close()
        if app.ledger is not None:
            app.ledger.close()
        if app.budgets is not None:
            app.budgets.close()
        for st in storages.values():
            await st.close()
            await st.origin.close()
        await asyncio.sleep(0)   # let aborted transports drop their buffers (arena views)
        if save_meta is not None:       # the supervisor merges it into the region's index
            try:
                n = save_worker_meta(save_meta, storages)
                log.debug("worker %d saved the metadata of %d objects", worker, n)
            except OSError as exc:
                log.warning("could not save worker %d's metadata for a warm restart: %s",
                            worker, exc)
        if arena_path is not None:      # the arena file stays: it is the next start's warm cache
            try:
                n = save_index(index_path(config, port), arena_layout(config, arena_path, size), storages)
                log.info("saved %d blocks for a warm restart", n)
            except OSError as exc:
                log.warning("could not save the index for a warm restart: %s", exc)
        try:
            arena.close()
        except BufferError:
            log.debug("arena still referenced at exit; the OS unmaps it")


def _enable_zero_copy(config: Config, arena: Any, path: str | None, worker: int) -> None:
    """Turn sendfile from the arena on, unless ``server.sendfile_min`` is off or punching
    holes in the arena's file would not be safe here (edge/cache/zerocopy.py)."""
    if not config.sendfile_min:
        return
    reason = zerocopy.unsafe_reason(path)
    if reason is None:
        arena.zero_copy = True
    elif worker == 0:
        log.warning("sendfile off, bodies are copied into sockets: %s", reason)


def _remove_stale_ctl(arena_path: str) -> None:
    """One worker over a file that several workers used before: their control file (the
    shared index, ~2% of the arena) is of no use any more; remove it, if it is one (its magic)
    and nobody has it open (a live shared region holds a shared flock on it)."""
    ctl = arena_path + ".ctl"
    try:
        fd = os.open(ctl, os.O_RDONLY)
    except OSError:
        return
    try:
        if os.pread(fd, 8, 0) != struct.pack("<Q", cext.load("shm").MAGIC):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        os.unlink(ctl)
        log.info("removed %s, the control file several workers left (one worker now)", ctl)
    finally:
        os.close(fd)


def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives every thread that mallocs an arena of its own (up to 8 per core); the origin
    reader threads' short-lived chunk buffers then leave memory spread over many of them. Cap
    them (M_ARENA_MAX), and keep large buffers out of the heap (M_MMAP_THRESHOLD), unless the
    MALLOC_* environment says otherwise (bench/RESULTS.md, memory)."""
    try:
        libc = ctypes.CDLL(None)
        if not os.environ.get("MALLOC_ARENA_MAX"):
            libc.mallopt(-8, n)              # M_ARENA_MAX; not glibc: nothing to do
        if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            # Buffers of 128 KiB and more (origin chunks, transient blocks) are mapped and
            # unmapped, not carved from the heap (glibc would raise this threshold to the
            # largest block freed so far, and the heap would keep that memory).
            libc.mallopt(-3, 128 * 1024)     # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def trim_heap() -> None:
    """Give the heap's free pages back to the kernel (glibc ``malloc_trim``): start-up
    (imports, config, the region's set-up) frees more than it keeps, and before a fork those
    pages would be copied into every worker's memory as touched."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: nothing to do
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
    if config.tenants:
        origins = "; ".join(f"tenant {t.name} ({', '.join(t.hosts)}): "
                            + ", ".join(f"{o.name}={o.url}" for o in t.origins) for t in config.tenants)
    else:
        origins = ", ".join(f"{o.name}={o.url}" for o in config.origins)
    admin = ""
    if config.admin_listen is not None:
        admin = f"; admin on http://{config.admin_listen[0]}:{config.admin_listen[1]}/"

    def banner() -> None:
        print(
            f"edge: serving http://{host if ':' not in host else '[' + host + ']'}:{actual_port}/ "
            f"from {origins}; cache {config.cache_size >> 20} MiB in {config.block_size >> 10} KiB "
            f"blocks, {workers} worker(s), {impl}{admin}",
            flush=True,
        )

    limit_malloc_arenas()
    Journal.reset(os.path.join(config.state_dir, "control.jsonl"))
    shutil.rmtree(os.path.join(config.state_dir, "metrics"), ignore_errors=True)
    if workers == 1:
        _run_loop(lambda: run_worker(config, sock, ready=banner))
        return 0
    banner()
    return _supervise(config, sock, workers)


def _supervise(config: Config, sock: socket.socket, workers: int) -> int:
    """Create the shared region (warm: from what the last clean stop saved), fork ``workers``
    processes on the shared socket, recover and restart any that dies until told to stop;
    then save the region's index for the next start, or remove the region if it is not kept."""
    shm = cext.load("shm")
    if workers > shm.MAX_WORKERS:
        raise RuntimeError(f"server.workers: at most {shm.MAX_WORKERS} workers share one cache "
                           f"(got {workers})")
    _preload(config)
    port = sock.getsockname()[1]
    path = shared_path_for(config, port)
    kept = arena_path_for(config, port, 1) is not None     # the arena file outlives us
    size = config.cache_size - config.cache_size % config.block_size
    layout = shared_layout(config, path, size, workers)
    ipath = index_path(config, port)
    names = [t.name for t in tenant_specs(config)]
    region = _create_region(shm, config, path, size, workers,
                            keep_arena=kept and os.path.exists(ipath))
    restored: Restored | None = None
    try:
        if kept:
            for p in glob.glob(os.path.join(glob.escape(config.state_dir), f"meta-{port}-*.json")):
                os.unlink(p)            # a previous run's leftovers: never merged into ours
            t0 = time.monotonic()
            try:
                restored = restore_shared_index(ipath, layout, region, names, config.block_size)
            except OSError as exc:
                log.warning("warm restart: cannot read %s: %s", ipath, exc)
            if restored is not None:
                log.info("warm restart: %d blocks re-attached from %s, %d dropped, in %.2fs",
                         restored.kept, path, restored.dropped, time.monotonic() - t0)
            elif os.path.exists(f"{ipath}.used"):
                log.info("warm restart: no usable index for %s (the last stop was not clean, "
                         "or the layout changed): starting cold", path)
        gc.freeze()    # what exists now is shared with every worker: keep the GC off its pages
        trim_heap()    # and what start-up freed is not handed to every worker as touched pages
        stopped = _run_workers(config, sock, workers, region, path, restored,
                               (lambda i: meta_path(config, port, i)) if kept else None)
        if kept and stopped:
            metas = read_worker_metas([meta_path(config, port, i) for i in range(workers)])
            try:
                n, unknown = save_shared_index(ipath, layout, region, names, metas)
                log.info("saved %d blocks for a warm restart (%d without metadata left out)",
                         n, unknown)
            except OSError as exc:
                log.warning("could not save the index for a warm restart: %s", exc)
            for i in range(workers):
                try:
                    os.unlink(meta_path(config, port, i))
                except FileNotFoundError:
                    pass
        return 0
    finally:
        region.close()
        if not kept:
            for f in (path, f"{path}.ctl"):
                try:
                    os.unlink(f)
                except FileNotFoundError:
                    pass


def _create_region(shm: Any, config: Config, path: str, size: int, workers: int, *,
                   keep_arena: bool) -> Any:
    """``SharedCache.create`` for the supervisor. The workers of a previous supervisor that
    died (kill -9) stop on their own (PR_SET_PDEATHSIG) within ``shutdown_timeout`` but hold
    the region until then: wait for them, bounded, instead of failing the start."""
    deadline = time.monotonic() + config.shutdown_timeout + 5.0
    waited = False
    while True:
        try:
            return shm.SharedCache.create(
                path, size, config.block_size, min_chunk=config.min_chunk, max_workers=workers,
                index_capacity=shared_index_capacity(size, config.block_size, config.min_chunk),
                prefault=config.prefault, keep_arena=keep_arena)
        except shm.RegionBusy as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cache.arena_path: {exc}") from None
            if not waited:
                log.warning("%s: waiting for it to be released (a previous edge stopping?)", exc)
                waited = True
            time.sleep(0.2)


def _die_with_parent(parent: int) -> None:
    """A worker gets SIGTERM (a clean stop) when its supervisor dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG), instead of serving on alone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:         # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _preload(config: Config) -> None:
    """Import what every worker will import, once, before forking: the pages are then shared
    by all workers (copy-on-write) instead of private to each (about -8 MiB PSS per worker)."""
    import uvloop  # noqa: F401

    import edge.server.protocol  # noqa: F401
    from origin_clients import parse_origin_url

    schemes = {parse_origin_url(o.url)[0] for _, o in config.all_origins()}
    if schemes & {"http", "https", "s3"} or config.admin_listen is not None:
        import aiohttp.web  # noqa: F401
    if "s3" in schemes:
        import origin_clients.s3  # noqa: F401


def _run_workers(config: Config, sock: socket.socket, workers: int, region: Any, path: str,
                 restored: Restored | None = None, save_meta: Any = None) -> bool:
    """Fork the workers and keep them running until SIGTERM/SIGINT; True once they all
    exited after that (a clean stop). ``restored`` goes to every worker (``fresh`` for the
    first start of each); ``save_meta(i)``: where worker ``i`` saves its metadata at its stop."""
    children: dict[int, int] = {}
    stopping = False
    started: set[int] = set()

    supervisor = os.getpid()

    def spawn(i: int) -> None:
        fresh = i not in started
        started.add(i)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent(supervisor)
                region.close()          # the supervisor's handle; the worker attaches its own
                _run_loop(lambda: run_worker(
                    config, sock, worker=i, workers=workers, shared=path, restored=restored,
                    fresh=fresh, save_meta=save_meta(i) if save_meta is not None else None))
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

    def on_hup(signum, frame) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
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
        try:        # a worker that died mid-response: its pins go, its fills are handed over
            got = region.recover_worker(i)
        except (OSError, RuntimeError) as exc:
            log.error("could not recover worker %d's share of the cache: %s", i, exc)
            got = {}
        if not stopping:
            log.warning("worker %d (pid %d) exited with status %d: restarting (released %d pinned "
                        "chunks, dropped %d fills, handed %d over to their readers)", i, pid,
                        status, got.get("chunks", 0), got.get("fills", 0), got.get("orphaned", 0))
            time.sleep(0.1)
            spawn(i)
        elif status:
            log.warning("worker %d (pid %d) exited with status %d while stopping", i, pid, status)
    return stopping


def configure_logging(level: str, path: str = "") -> None:
    """The edge's own log: standard error (""), standard output ("-"), or appended to ``path``."""
    handler: logging.Handler
    if path == "-":
        handler = logging.StreamHandler(sys.stdout)
    elif path:
        handler = logging.FileHandler(path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
