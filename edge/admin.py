"""The admin API, on its own listen address (``[admin] listen``), served by worker 0.

``GET /metrics`` (Prometheus text) and ``GET /healthz`` are open; everything else needs
``Authorization: Bearer TOKEN`` (``[admin] token`` or ``EDGE_ADMIN_TOKEN``), compared in
constant time. With no token configured those endpoints answer 403: an admin API without a
token is not an open one.

- ``GET /stats``: a JSON summary (requests, hit ratio, bytes, arena, blocks, origins, and per
  tenant when there are [[tenants]]).
- ``POST /purge`` with ``{"key": "..."}`` or ``{"prefix": "..."}``: drop the objects; the next
  request fetches them fresh. Applied on every worker (edge/control.py). With tenants,
  ``"tenant": "NAME"`` limits it to that tenant (default: every tenant).
- ``GET /mrc``: the live miss-ratio curve (edge/livemrc.py) as JSON, ``?format=png`` as a
  plot marking the configured size; ``POST /mrc/reset`` starts it afresh.
- ``POST /reload``: re-read the config file (as SIGHUP does); a bad file is refused and the
  running config stays. The answer lists what was applied and what needs a restart.
- ``POST /blocks`` with ``{"key", "case_id", "reason"}`` (optional ``"actor"``, else the
  ``X-Edge-Actor`` header, else the caller's address): a reviewed takedown; ``DELETE
  /blocks/KEY`` reinstates; ``GET /blocks`` lists. See edge/takedowns.py. With tenants, an
  optional ``"tenant"`` (``?tenant=NAME`` on DELETE and GET) scopes a block to one tenant's
  key; a block without one applies to the key under every tenant.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge import metrics

if TYPE_CHECKING:
    from edge.livemrc import LiveMRC
    from edge.server.app import App

log = logging.getLogger("edge.admin")
APP_KEY = web.AppKey("edge_app", object)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, indent=1) + "\n",
                        content_type="application/json")


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}) + "\n",
                        content_type="application/json", headers=headers)


def _authorized(request: web.Request) -> web.Response | None:
    """None when the request carries the admin token, else the refusal to send."""
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    token = app.admin_token
    if not token:
        return _error(403, "no admin token is configured ([admin] token or EDGE_ADMIN_TOKEN)")
    got = request.headers.get("Authorization", "")
    scheme, _, value = got.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="edge"'})
    return None


async def get_metrics(request: web.Request) -> web.Response:
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    body = metrics.render(app.all_snapshots())
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def get_healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def get_stats(request: web.Request) -> web.Response:
    if (refused := _authorized(request)) is not None:
        return refused
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    snaps = app.all_snapshots()
    requests: dict[str, int] = {}
    for s in snaps:
        for k, v in s["requests"].items():
            cs = k.split("|")[1]
            requests[cs] = requests.get(cs, 0) + v
    total = sum(requests.values())
    sent = metrics._sum_dicts(s["bytes"] for s in snaps)
    return _json({
        "workers": len(snaps),
        "requests": requests,
        "hit_ratio": round(requests.get("hit", 0) / total, 4) if total else None,
        "bytes_sent": sent,
        "byte_hit_ratio": round(sent.get("hit", 0) / sum(sent.values()), 4) if sum(sent.values()) else None,
        "origin_bytes": sum(s["origin_bytes"] for s in snaps),
        "connections": sum(s["connections"] for s in snaps),
        "blocks": sum(s["blocks"] for s in snaps),
        "evictions": sum(s["evictions"] for s in snaps),
        "arena": {"size": sum(s["arena"]["size"] for s in snaps),
                  "used": sum(s["arena"]["used"] for s in snaps)},
        "origins": {n: {"healthy": all(s["origins"][n]["healthy"] for s in snaps if n in s["origins"]),
                        "requests": sum(s["origins"][n]["requests"] for s in snaps if n in s["origins"]),
                        "failures": sum(s["origins"][n]["failures"] for s in snaps if n in s["origins"])}
                    for n in sorted({n for s in snaps for n in s["origins"]})},
        **({"tenants": {n: {k: sum(s["tenants"][n][k] for s in snaps if n in s.get("tenants", {}))
                            for k in ("requests", "bytes", "blocks", "capacity", "used",
                                      "origin_bytes")}
                        for n in sorted({n for s in snaps for n in s.get("tenants", {})})}}
           if any(s.get("tenants") for s in snaps) else {}),
    })


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    return body


async def post_purge(request: web.Request) -> web.Response:
    if (refused := _authorized(request)) is not None:
        return refused
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    tenant = _tenant(app, body)
    if isinstance(tenant, web.Response):
        return tenant
    fields = {k: v for k, v in body.items() if k != "tenant"}
    unknown = set(fields) - {"key", "prefix"}
    if unknown or len(fields) != 1:
        return _error(400, 'expected exactly one of {"key": "..."} or {"prefix": "..."} '
                      '(and optionally "tenant")'
                      + (f"; unknown field(s): {', '.join(sorted(unknown))}" if unknown else ""))
    field, value = next(iter(fields.items()))
    if not isinstance(value, str) or (field == "key" and not value):
        return _error(400, f"{field}: expected a non-empty string")
    result = (app.purge(key=value, tenant=tenant or None) if field == "key"
              else app.purge(prefix=value, tenant=tenant or None))
    log.info("purge %s=%r tenant=%r: %s", field, value, tenant, result)
    return _json({"purged": {field: value, **({"tenant": tenant} if tenant else {}), **result}})


def _tenant(app: App, source: dict[str, Any]) -> str | web.Response:
    """The optional "tenant" an admin call names ("" = every tenant); 400 if it is unknown."""
    tenant = source.get("tenant", "")
    if not isinstance(tenant, str):
        return _error(400, "tenant: expected a string")
    if tenant and (app.single is not None or tenant not in app.tenants):
        known = ", ".join(sorted(t for t in app.tenants if t)) or "none: no [[tenants]] configured"
        return _error(400, f"tenant: unknown tenant {tenant!r} (known: {known})")
    return tenant


async def post_reload(request: web.Request) -> web.Response:
    if (refused := _authorized(request)) is not None:
        return refused
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    result = app.reload(broadcast=True)
    return _json(result, status=200 if result["ok"] else 400)


def _actor(request: web.Request, body: dict[str, Any]) -> str:
    """Who made a takedown change: the body's "actor", X-Edge-Actor, or the caller's address."""
    actor = body.get("actor") or request.headers.get("X-Edge-Actor")
    if isinstance(actor, str) and actor:
        return actor[:200]
    return f"admin@{request.remote or '?'}"


async def post_blocks(request: web.Request) -> web.Response:
    if (refused := _authorized(request)) is not None:
        return refused
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    unknown = set(body) - {"key", "case_id", "reason", "actor", "tenant"}
    if unknown:
        return _error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    for field in ("key", "case_id", "reason"):
        value = body.get(field)
        if not isinstance(value, str) or not value.strip():
            return _error(400, f"{field}: expected a non-empty string")
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    tenant = _tenant(app, body)
    if isinstance(tenant, web.Response):
        return tenant
    record = app.block(body["key"], case_id=body["case_id"], reason=body["reason"],
                       actor=_actor(request, body), tenant=tenant)
    log.warning("takedown: %r of %s blocked (case %s) by %s", body["key"],
                f"tenant {tenant!r}" if tenant else "every tenant", body["case_id"], record["actor"])
    return _json({"blocked": record}, status=201)


async def delete_block(request: web.Request) -> web.Response:
    if (refused := _authorized(request)) is not None:
        return refused
    key = request.match_info["key"]
    body: dict[str, Any] = {}
    if request.can_read_body:
        got = await _body(request)
        if isinstance(got, web.Response):
            return got
        body = got
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    tenant = _tenant(app, {"tenant": request.query.get("tenant", body.get("tenant", ""))})
    if isinstance(tenant, web.Response):
        return tenant
    actor = _actor(request, body)
    if not app.unblock(key, actor=actor, tenant=tenant, case_id=str(body.get("case_id", "")),
                       reason=str(body.get("reason", ""))):
        scope = f" for tenant {tenant!r}" if tenant else " for every tenant"
        return _error(404, f"{key!r} is not blocked{scope}")
    log.warning("takedown: %r reinstated by %s", key, actor)
    return _json({"unblocked": key, **({"tenant": tenant} if tenant else {})})


async def get_blocks(request: web.Request) -> web.Response:
    if (refused := _authorized(request)) is not None:
        return refused
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    tenant = request.query.get("tenant")
    blocks = [r for (t, _), r in sorted(app.takedowns.entries.items())
              if tenant is None or t in ("", tenant)]
    return _json({"blocks": blocks})


def _live_mrc(request: web.Request) -> tuple[App, LiveMRC] | web.Response:
    """The app and its live curve, or the answer that refuses the call (auth, or off)."""
    if (refused := _authorized(request)) is not None:
        return refused
    app: App = request.app[APP_KEY]  # type: ignore[assignment]
    if app.mrc is None:
        return _error(404, "the live miss-ratio curve is off (cache.mrc_sample_rate)")
    return app, app.mrc


async def get_mrc(request: web.Request) -> web.Response:
    got = _live_mrc(request)
    if isinstance(got, web.Response):
        return got
    app, mrc = got
    fmt = request.query.get("format", "json")
    if fmt == "json":
        return _json(mrc.report())
    if fmt != "png":
        return _error(400, f"format: expected json or png, got {fmt!r}")
    curve = mrc.curve()
    marker = app.config.cache_size

    def render() -> bytes:
        import tempfile

        from eviction.mrc import plot

        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            plot(curve, f.name, marker=marker, title=f"live {curve.policy} miss-ratio curve "
                 f"(SHARDS rate {curve.rate:.3g}, {curve.duration:.0f} s)")
            return f.read()

    try:
        png = await asyncio.get_running_loop().run_in_executor(None, render)
    except ImportError:
        return _error(501, "the PNG needs matplotlib (pip install matplotlib); ?format=json works")
    return web.Response(body=png, content_type="image/png")


async def post_mrc_reset(request: web.Request) -> web.Response:
    got = _live_mrc(request)
    if isinstance(got, web.Response):
        return got
    got[1].reset()
    return _json({"reset": True})


def make_admin_app(app: App) -> web.Application:
    a = web.Application(client_max_size=64 * 1024)
    a[APP_KEY] = app
    a.router.add_get("/metrics", get_metrics)
    a.router.add_get("/healthz", get_healthz)
    a.router.add_get("/stats", get_stats)
    a.router.add_post("/purge", post_purge)
    a.router.add_post("/reload", post_reload)
    a.router.add_get("/mrc", get_mrc)
    a.router.add_post("/mrc/reset", post_mrc_reset)
    a.router.add_post("/blocks", post_blocks)
    a.router.add_get("/blocks", get_blocks)
    a.router.add_delete("/blocks/{key:.+}", delete_block)
    return a
