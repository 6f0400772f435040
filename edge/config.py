"""Configuration: TOML file + command-line overrides, validated up front.

Every key has a default (documented in ``configs/edge.toml``, which a test keeps in step with
``DEFAULTS`` here). Any problem is a :class:`ConfigError` whose message names the key and what
is wrong, e.g. ``cache.size: expected a size like '512MiB' or a number of bytes, got 'lots'``;
the CLI prints it on one line and exits with status 2.
"""
from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from origin_clients import parse_origin_url


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted key."""


# The defaults, section by section: the single source of truth for key names and types.
DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "listen": "127.0.0.1:8080",
        "workers": "auto",
        "state_dir": "./edge-state",
        "header_timeout": "10s",
        "idle_timeout": "60s",
        "send_timeout": "60s",
        "shutdown_timeout": "30s",
        "max_head_size": "16KiB",
        "max_headers": 100,
        "max_url_length": 8192,
        "max_ranges": 16,
        "max_pipeline": 16,
        "sendfile_min": "256KiB",
    },
    "cache": {
        "size": "256MiB",
        "block_size": "1MiB",
        "min_chunk": "1KiB",
        "arena_path": "auto",
        "eviction": "wtinylfu",
        "revalidate_after": "off",
        "max_fills": 64,
        "uncached_memory": "16MiB",
        "readahead": 4,
        "prefault": True,
        "mrc_sample_rate": 0.01,
    },
    "origin_pool": {
        "retries": 2,
        "backoff": "50ms",
        "deadline": "10s",
        "failure_threshold": 3,
        "cooldown": "10s",
        "probe_interval": "off",
        "probe_key": "",
        "hedge_after": "off",
    },
    "admin": {
        "listen": "",
        "token": "",
    },
    "takedowns": {
        "policy_url": "",
    },
    "auth": {
        "secret": "",
        "skew": "30s",
    },
    "ledger": {
        "path": "",
        "rotate_size": "64MiB",
    },
    "log": {
        "level": "info",
        "file": "",
        "access": "",
    },
}
DEFAULT_ORIGINS: list[dict[str, str]] = [{"name": "local", "url": "./origin"}]
# Per-origin keys and their defaults (name defaults to originN, url is required).
ORIGIN_DEFAULTS: dict[str, Any] = {
    "access_key": "",
    "secret_key": "",
    "session_token": "",
    "max_connections": 32,
    "connect_timeout": "3s",
    "read_timeout": "10s",
}
ORIGIN_KEYS = {"name", "url", *ORIGIN_DEFAULTS}
# Keys of a [[tenants]] table (white-label domains: docs/operations.md, "Tenants").
TENANT_KEYS = ("name", "hosts", "origins", "secret", "cache_share")
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_HOST_IP6 = re.compile(r"^\[[0-9a-f:.]+\]$")
LOG_LEVELS = ("debug", "info", "warning", "error")

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_size(value: Any, key: str = "size") -> int:
    """``512MiB``, ``8GiB``, ``1.5GB``, ``4096`` (bytes) -> bytes. Raises ConfigError naming ``key``."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size like '512MiB' or a number of bytes, got {value!r}")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _UNITS:
            raise ConfigError(
                f"{key}: expected a size like '512MiB' or a number of bytes, got {value!r}"
            )
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    return n


def parse_duration(value: Any, key: str, *, allow_off: bool = False) -> float:
    """``30s``, ``250ms``, ``5m``, ``1h`` or a number of seconds -> seconds.

    With ``allow_off``, ``"off"`` (or 0) means disabled and gives 0.0.
    """
    if allow_off and (value == "off" or (not isinstance(value, bool) and value == 0)):
        return 0.0
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like '30s' or '250ms', got {value!r}")
    if isinstance(value, (int, float)):
        secs = float(value)
    else:
        m = _DURATION_RE.match(str(value))
        if not m:
            raise ConfigError(f"{key}: expected a duration like '30s' or '250ms', got {value!r}")
        secs = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if secs <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    return secs


def parse_listen(value: Any, key: str = "server.listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port)."""
    s = str(value)
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", s) or re.match(r"^([^:\[\]]*):(\d+)$", s)
    if not m:
        raise ConfigError(f"{key}: expected HOST:PORT like '127.0.0.1:8080', got {value!r}")
    port = int(m.group(2))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is out of range 0-65535")
    return (m.group(1) or "0.0.0.0", port)


def _int(value: Any, key: str, lo: int = 1, hi: int = 1 << 62) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{key}: must be between {lo} and {hi}, got {value}")
    return value


MAX_AUTO_WORKERS = 62        # cext/shm's MAX_WORKERS: what "auto" may pick at most


def _workers(value: Any, key: str) -> int:
    """``server.workers``: a count, or "auto": one per CPU this process may run on (its
    affinity mask: a container's or taskset's limit, not the machine's), at most
    ``MAX_AUTO_WORKERS``."""
    if value == "auto":
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, MAX_AUTO_WORKERS))
    if isinstance(value, str) and value.isdigit():
        value = int(value)             # --workers 4 on the command line
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f'{key}: expected an integer or "auto", got {value!r}')
    return _int(value, key, 1, 256)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _rate(value: Any, key: str) -> float:
    """A sampling rate in (0, 1], or "off" / 0 (disabled: 0.0)."""
    if value == "off" or (not isinstance(value, bool) and value == 0):
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{key}: expected a rate in (0, 1] like 0.01, or \"off\", got {value!r}")
    return float(value)


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class OriginSpec:
    name: str
    url: str
    access_key: str = ""
    secret_key: str = ""
    session_token: str = ""
    max_connections: int = 32
    connect_timeout: float = 3.0
    read_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """One white-label tenant: the Host names it answers, its own origins and token secret.

    ``secret``: None inherits ``[auth] secret`` ("" there too: no tokens); "" serves without
    tokens even when ``[auth] secret`` is set. ``cache_share``: bytes of the arena reserved
    for it (0: an equal part of what the explicit shares leave).
    """

    name: str
    hosts: tuple[str, ...]
    origins: tuple[OriginSpec, ...]
    secret: str | None = None
    cache_share: int = 0


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """How replicas are used: retries, deadline, passive/active health, hedging (0 = off)."""

    retries: int = 2
    backoff: float = 0.05
    deadline: float = 10.0
    failure_threshold: int = 3
    cooldown: float = 10.0
    probe_interval: float = 0.0
    probe_key: str = ""
    hedge_after: float = 0.0


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration (all sizes in bytes, durations in seconds)."""

    listen: tuple[str, int]
    workers: int
    state_dir: str
    header_timeout: float
    idle_timeout: float
    send_timeout: float
    shutdown_timeout: float
    max_head_size: int
    max_headers: int
    max_url_length: int
    max_ranges: int
    max_pipeline: int
    sendfile_min: int         # 0: never sendfile (bodies are copied into the socket)
    cache_size: int
    block_size: int
    min_chunk: int
    arena_path: str
    eviction: str
    revalidate_after: float   # 0.0: never (objects are immutable)
    max_fills: int
    uncached_memory: int
    readahead: int
    prefault: bool
    mrc_sample_rate: float    # 0.0: no live miss-ratio curve
    origins: tuple[OriginSpec, ...]
    pool: PoolSpec
    log_level: str
    log_file: str
    access_log: str
    admin_listen: tuple[str, int] | None
    admin_token: str
    takedown_policy_url: str
    auth_secret: str
    auth_skew: float
    ledger_path: str
    ledger_rotate: int
    tenants: tuple[TenantSpec, ...] = ()   # empty: one tenant, every Host, the [[origins]]
    source: str = "<defaults>"
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    overrides: dict = field(default_factory=dict, compare=False, repr=False)

    def all_origins(self) -> list[tuple[str, OriginSpec]]:
        """(config key prefix, spec) of every origin, tenants' included (for checks)."""
        if not self.tenants:
            return [(f"origins[{i}]", o) for i, o in enumerate(self.origins)]
        return [(f"tenants[{t}].origins[{i}]", o)
                for t, spec in enumerate(self.tenants) for i, o in enumerate(spec.origins)]

    def tenant_capacities(self) -> dict[str, int]:
        """Arena bytes each tenant's eviction policy manages (whole blocks; they sum to at
        most ``cache_size``): its ``cache_share``, or an equal part of the rest."""
        if not self.tenants:
            return {"": self.cache_size}
        fixed = sum(t.cache_share for t in self.tenants)
        rest = [t for t in self.tenants if not t.cache_share]
        each = (self.cache_size - fixed) // len(rest) if rest else 0
        bs = self.block_size
        return {t.name: ((t.cache_share or each) // bs) * bs for t in self.tenants}

    @property
    def listen_str(self) -> str:
        host, port = self.listen
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _origin_tables(body: Any, where: str) -> list[dict]:
    """The shape of an ``[[origins]]`` array (``where``: its dotted name)."""
    if not isinstance(body, list) or not body:
        raise ConfigError(f"{where}: expected one or more [[{where.split('[')[0]}]] tables")
    origins = []
    for i, o in enumerate(body):
        if not isinstance(o, dict):
            raise ConfigError(f"{where}[{i}]: expected a table with name and url")
        for k in o:
            if k not in ORIGIN_KEYS:
                raise ConfigError(
                    f"{where}[{i}].{k}: unknown key (known: {', '.join(sorted(ORIGIN_KEYS))})"
                )
        if "url" not in o:
            raise ConfigError(f"{where}[{i}].url: missing")
        origins.append({**o, "name": o.get("name", f"origin{i}")})
    return origins


def _merge(raw: dict[str, Any], source: str) -> tuple[dict[str, dict[str, Any]], list[dict]]:
    """Check the file's shape (known sections and keys only) and lay it over the defaults."""
    merged = copy.deepcopy(DEFAULTS)
    origins = copy.deepcopy(DEFAULT_ORIGINS)
    for section, body in raw.items():
        if section == "origins":
            origins = _origin_tables(body, "origins")
            continue
        if section == "tenants":
            continue            # checked by _tenants
        if section not in DEFAULTS:
            known = ", ".join(sorted([*DEFAULTS, "origins", "tenants"]))
            raise ConfigError(f"{section}: unknown section (known: {known})")
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a [{section}] table")
        for k, v in body.items():
            if k not in DEFAULTS[section]:
                known = ", ".join(sorted(DEFAULTS[section]))
                raise ConfigError(f"{section}.{k}: unknown key (known: {known})")
            merged[section][k] = v
    return merged, origins


def _origin_specs(origins: list[dict], where: str) -> tuple[OriginSpec, ...]:
    specs = []
    names: set[str] = set()
    for i, o in enumerate(origins):
        try:
            parse_origin_url(str(o["url"]))
        except ValueError as exc:
            raise ConfigError(f"{where}[{i}].url: {exc}") from None
        name = str(o["name"])
        if name in names:
            raise ConfigError(f"{where}[{i}].name: duplicate origin name {name!r}")
        names.add(name)
        opts = {**ORIGIN_DEFAULTS, **o}
        specs.append(OriginSpec(
            name=name,
            url=str(o["url"]),
            access_key=_str(opts["access_key"], f"{where}[{i}].access_key"),
            secret_key=_str(opts["secret_key"], f"{where}[{i}].secret_key"),
            session_token=_str(opts["session_token"], f"{where}[{i}].session_token"),
            max_connections=_int(opts["max_connections"], f"{where}[{i}].max_connections", 1, 4096),
            connect_timeout=parse_duration(opts["connect_timeout"], f"{where}[{i}].connect_timeout"),
            read_timeout=parse_duration(opts["read_timeout"], f"{where}[{i}].read_timeout"),
        ))
    return tuple(specs)


def normalize_host(host: str) -> str:
    """A Host header value as tenants match it: lower case, no port, no trailing dot."""
    h = host.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[:end + 1] if end > 0 else h
    h = h.rpartition(":")[0] if ":" in h else h
    return h.rstrip(".")


def _tenants(body: Any, cache_size: int, block_size: int) -> tuple[TenantSpec, ...]:
    """Validate the ``[[tenants]]`` array: names, hosts (unique across tenants), origins,
    secret and cache share."""
    if not isinstance(body, list) or not body:
        raise ConfigError("tenants: expected one or more [[tenants]] tables")
    out: list[TenantSpec] = []
    owner: dict[str, str] = {}          # host pattern -> tenant name
    for t, table in enumerate(body):
        where = f"tenants[{t}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table with name, hosts and [[tenants.origins]]")
        for k in table:
            if k not in TENANT_KEYS:
                raise ConfigError(f"{where}.{k}: unknown key (known: {', '.join(sorted(TENANT_KEYS))})")
        name = table.get("name")
        if not isinstance(name, str) or not _TENANT_NAME.match(name):
            raise ConfigError(f"{where}.name: expected a name of letters, digits, '_', '.' and '-' "
                              f"(at most 63), got {name!r}")
        if any(x.name == name for x in out):
            raise ConfigError(f"{where}.name: duplicate tenant name {name!r}")
        hosts = table.get("hosts")
        if not isinstance(hosts, list) or not hosts:
            raise ConfigError(f"{where}.hosts: expected a list of host names like "
                              f"[\"files.example.com\", \"*.example.com\"]")
        patterns = []
        for h in hosts:
            if not isinstance(h, str):
                raise ConfigError(f"{where}.hosts: expected strings, got {h!r}")
            p = h.strip().lower().rstrip(".")
            bare = p[2:] if p.startswith("*.") else p
            if p != "*" and not (_HOST_NAME.match(bare) or (bare == p and _HOST_IP6.match(p))):
                raise ConfigError(f"{where}.hosts: {h!r} is not a host name, '*.suffix' or '*' "
                                  f"(no port, no path)")
            if p in owner:
                raise ConfigError(f"{where}.hosts: {h!r} is already a host of tenant {owner[p]!r}")
            owner[p] = name
            patterns.append(p)
        if "origins" not in table:
            raise ConfigError(f"{where}.origins: missing (each tenant lists its [[tenants.origins]])")
        origins = _origin_specs(_origin_tables(table["origins"], f"{where}.origins"), f"{where}.origins")
        secret = table.get("secret")
        if secret is not None:
            secret = _str(secret, f"{where}.secret")
        share = 0
        if "cache_share" in table:
            v = table["cache_share"]
            if isinstance(v, str) and v.strip().endswith("%"):
                try:
                    pct = float(v.strip()[:-1])
                except ValueError:
                    pct = -1.0
                if not 0 < pct <= 100:
                    raise ConfigError(f"{where}.cache_share: expected a percentage in (0, 100] "
                                      f"or a size, got {v!r}")
                share = int(cache_size * pct / 100)
            else:
                share = parse_size(v, f"{where}.cache_share")
            if share < 2 * block_size:
                raise ConfigError(f"{where}.cache_share: must hold at least two blocks "
                                  f"({2 * block_size} bytes), got {v!r}")
        out.append(TenantSpec(name=name, hosts=tuple(patterns), origins=origins, secret=secret,
                              cache_share=share))
    fixed = sum(x.cache_share for x in out)
    rest = sum(1 for x in out if not x.cache_share)
    if fixed > cache_size:
        raise ConfigError(f"tenants: the cache shares add up to {fixed} bytes, more than "
                          f"cache.size ({cache_size})")
    if rest and (cache_size - fixed) // rest < 2 * block_size:
        raise ConfigError(f"tenants: the {rest} tenant(s) without cache_share would get less than "
                          f"two blocks each of what the shares leave")
    return tuple(out)


def build(raw: dict[str, Any], *, source: str = "<defaults>",
          overrides: dict[str, Any] | None = None) -> Config:
    """Validate ``raw`` (a parsed TOML document) with CLI ``overrides`` applied on top.

    ``overrides`` keys are dotted (``server.listen``, ``cache.size``) or ``origins`` (a list of URLs).
    """
    merged, origins = _merge(raw, source)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if dotted == "origins":
            origins = [{"name": f"origin{i}", "url": u} for i, u in enumerate(value)]
            continue
        section, _, k = dotted.partition(".")
        merged[section][k] = value
    s, c = merged["server"], merged["cache"]

    block_size = parse_size(c["block_size"], "cache.block_size")
    if block_size % 4096 or block_size < 64 * 1024 or block_size > 64 << 20:
        raise ConfigError(
            f"cache.block_size: must be a multiple of 4KiB between 64KiB and 64MiB, got {c['block_size']!r}"
        )
    size = parse_size(c["size"], "cache.size")
    if size < 2 * block_size:
        raise ConfigError(
            f"cache.size: must hold at least two blocks ({2 * block_size} bytes), got {c['size']!r}"
        )
    size -= size % block_size  # the arena is whole pages; round down, never above the budget
    min_chunk = parse_size(c["min_chunk"], "cache.min_chunk")
    if not 64 <= min_chunk <= block_size // 2:
        raise ConfigError(
            f"cache.min_chunk: must be between 64 bytes and half a block, got {c['min_chunk']!r}"
        )

    uncached = parse_size(c["uncached_memory"], "cache.uncached_memory")
    if uncached < block_size:
        raise ConfigError(
            f"cache.uncached_memory: must hold at least one block ({block_size} bytes), "
            f"got {c['uncached_memory']!r}"
        )

    from eviction import POLICIES  # local import: eviction is a sibling package, not a config concern

    eviction = str(c["eviction"]).lower()
    if eviction not in POLICIES:
        raise ConfigError(
            f"cache.eviction: unknown policy {c['eviction']!r} (known: {', '.join(sorted(POLICIES))})"
        )
    level = str(merged["log"]["level"]).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"log.level: expected one of {', '.join(LOG_LEVELS)}, got {merged['log']['level']!r}"
        )

    specs = _origin_specs(origins, "origins")
    op = merged["origin_pool"]
    pool = PoolSpec(
        retries=_int(op["retries"], "origin_pool.retries", 0, 100),
        backoff=parse_duration(op["backoff"], "origin_pool.backoff"),
        deadline=parse_duration(op["deadline"], "origin_pool.deadline"),
        failure_threshold=_int(op["failure_threshold"], "origin_pool.failure_threshold", 1, 1000),
        cooldown=parse_duration(op["cooldown"], "origin_pool.cooldown"),
        probe_interval=parse_duration(op["probe_interval"], "origin_pool.probe_interval", allow_off=True),
        probe_key=_str(op["probe_key"], "origin_pool.probe_key"),
        hedge_after=parse_duration(op["hedge_after"], "origin_pool.hedge_after", allow_off=True),
    )

    tenants: tuple[TenantSpec, ...] = ()
    if "tenants" in raw:
        if "origins" in raw or (overrides or {}).get("origins"):
            raise ConfigError("origins: with [[tenants]], every tenant lists its own "
                              "[[tenants.origins]]; remove the top-level [[origins]] (and --origin)")
        tenants = _tenants(raw["tenants"], size, block_size)
        specs = ()

    arena_path = str(c["arena_path"])
    arena_dir = os.path.dirname(os.path.abspath(arena_path))
    if arena_path not in ("auto", "anonymous") and not os.path.isdir(arena_dir):
        raise ConfigError(f"cache.arena_path: directory of {arena_path!r} does not exist")

    return Config(
        listen=parse_listen(s["listen"]),
        workers=_workers(s["workers"], "server.workers"),
        state_dir=str(s["state_dir"]),
        header_timeout=parse_duration(s["header_timeout"], "server.header_timeout"),
        idle_timeout=parse_duration(s["idle_timeout"], "server.idle_timeout"),
        send_timeout=parse_duration(s["send_timeout"], "server.send_timeout"),
        shutdown_timeout=parse_duration(s["shutdown_timeout"], "server.shutdown_timeout"),
        max_head_size=parse_size(s["max_head_size"], "server.max_head_size"),
        max_headers=_int(s["max_headers"], "server.max_headers", 1, 10000),
        max_url_length=_int(s["max_url_length"], "server.max_url_length", 16, 1 << 20),
        max_ranges=_int(s["max_ranges"], "server.max_ranges", 1, 1000),
        max_pipeline=_int(s["max_pipeline"], "server.max_pipeline", 1, 1024),
        sendfile_min=0 if s["sendfile_min"] == "off" else parse_size(s["sendfile_min"],
                                                                     "server.sendfile_min"),
        cache_size=size,
        block_size=block_size,
        min_chunk=min_chunk,
        arena_path=arena_path,
        eviction=eviction,
        revalidate_after=parse_duration(c["revalidate_after"], "cache.revalidate_after", allow_off=True),
        max_fills=_int(c["max_fills"], "cache.max_fills", 1, 4096),
        uncached_memory=uncached,
        readahead=_int(c["readahead"], "cache.readahead", 0, 64),
        prefault=_bool(c["prefault"], "cache.prefault"),
        mrc_sample_rate=_rate(c["mrc_sample_rate"], "cache.mrc_sample_rate"),
        origins=specs,
        pool=pool,
        log_level=level,
        log_file=_str(merged["log"]["file"], "log.file"),
        access_log=_str(merged["log"]["access"], "log.access"),
        admin_listen=(parse_listen(merged["admin"]["listen"], "admin.listen")
                      if merged["admin"]["listen"] else None),
        admin_token=_str(merged["admin"]["token"], "admin.token"),
        takedown_policy_url=_str(merged["takedowns"]["policy_url"], "takedowns.policy_url"),
        auth_secret=_str(merged["auth"]["secret"], "auth.secret"),
        auth_skew=parse_duration(merged["auth"]["skew"], "auth.skew", allow_off=True),
        ledger_path=_str(merged["ledger"]["path"], "ledger.path"),
        ledger_rotate=parse_size(merged["ledger"]["rotate_size"], "ledger.rotate_size"),
        tenants=tenants,
        source=source,
        raw=raw,
        overrides=dict(overrides or {}),
    )


def default_config_text() -> str:
    """The embedded configs/edge.toml (installed as package data ``edge.configs``)."""
    from importlib import resources

    try:
        return resources.files("edge.configs").joinpath("edge.toml").read_text()
    except (ModuleNotFoundError, FileNotFoundError):   # running from a checkout, not installed
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(here, "configs", "edge.toml"), encoding="utf-8") as f:
            return f.read()


def load(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate the TOML file at ``path`` (None: the embedded default)."""
    if path is None:
        text = default_config_text()
        source = "<embedded configs/edge.toml>"
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
        source = path
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return build(raw, source=source, overrides=overrides)


def check_origin_dirs(conf: Config, *, create: bool = False) -> list[str]:
    """Local-directory origins must exist (``create``: make them). Returns those created."""
    from origin_clients import parse_origin_url

    created = []
    for where, o in conf.all_origins():
        scheme, location = parse_origin_url(o.url)
        if scheme != "file":
            continue
        path = os.path.expanduser(location)
        if not os.path.isdir(path):
            if not create:
                raise ConfigError(f"{where}.url: directory {location!r} does not exist")
            os.makedirs(path, exist_ok=True)
            created.append(os.path.abspath(path))
    return created
