"""White-label tenants: which tenant a request's Host belongs to, and what each one owns.

A tenant is a partner domain served by the same edge: its own Host names, origins, token
secret and eviction policy (a share of the one arena), its own metadata, block index and
cached response heads. Two tenants may store the same key: they are different objects in
different indexes, so nothing one tenant caches can ever answer the other's request.

Routing (``Router.route``), per request, before anything else is looked at:

1. the Host (or the authority of an absolute-form target) is lower-cased, its port and a
   trailing dot dropped (``config.normalize_host``);
2. an exact host name wins; then the longest ``*.suffix`` pattern that matches
   (``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not
   ``example.com``); then the tenant whose hosts include ``"*"``, if one does;
3. no match: ``None``, and the request is answered ``421 Misdirected Request``.

Results are memoised per raw Host value (bounded) so the hit path pays one dict lookup.
Without ``[[tenants]]`` in the config there is one tenant, named "", that serves every Host
from the top-level ``[[origins]]``; routing is skipped.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.config import TenantSpec, normalize_host

if TYPE_CHECKING:
    from edge.cache import Storage

ROUTE_CACHE_MAX = 4096      # distinct Host values remembered


class Tenant:
    """What one tenant owns in a worker."""

    __slots__ = ("name", "storage", "secret", "heads", "blocked", "requests", "bytes_sent")

    def __init__(self, name: str, storage: Storage, secret: bytes | None) -> None:
        self.name = name
        self.storage = storage
        self.secret = secret            # token secret (None: no token needed)
        self.heads: dict[str, Any] = {}  # key -> cached plain-hit head (protocol.py)
        self.blocked: dict[str, dict] = {}   # key -> takedown record that applies here
        self.requests = 0               # responses, for metrics
        self.bytes_sent = 0             # body bytes, for metrics


class Router:
    """Host -> Tenant, by the tenants' host patterns (see the module docstring)."""

    def __init__(self, tenants: dict[str, Tenant], specs: tuple[TenantSpec, ...]) -> None:
        self.exact: dict[str, Tenant] = {}
        self.suffixes: list[tuple[str, Tenant]] = []
        self.fallback: Tenant | None = None
        for spec in specs:
            t = tenants[spec.name]
            for h in spec.hosts:
                if h == "*":
                    self.fallback = t
                elif h.startswith("*."):
                    self.suffixes.append((h[1:], t))     # ".example.com"
                else:
                    self.exact[h] = t
        self.suffixes.sort(key=lambda x: -len(x[0]))
        self._cache: dict[bytes | None, Tenant | None] = {}

    def route(self, host: bytes | None) -> Tenant | None:
        cache = self._cache
        try:
            return cache[host]
        except KeyError:
            pass
        t = self._match(host)
        if len(cache) >= ROUTE_CACHE_MAX:
            cache.clear()
        cache[host] = t
        return t

    def _match(self, host: bytes | None) -> Tenant | None:
        if not host:
            return self.fallback
        h = normalize_host(host.decode("latin-1"))
        t = self.exact.get(h)
        if t is not None:
            return t
        for suffix, t in self.suffixes:
            if h.endswith(suffix) and len(h) > len(suffix):
                return t
        return self.fallback
