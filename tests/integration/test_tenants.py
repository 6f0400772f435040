"""White-label tenants through the real server: Host routing, one arena shared with keys that
never collide, per-tenant secrets, takedowns, purge, ledger, metrics and warm restart."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from edge import tokens

from .conftest import make_files
from .test_admin import TOKEN, call, free_port, metric, wait_admin

pytestmark = pytest.mark.integration
MiB = 1 << 20
SECRET = "acme-token-secret"


def raw_get(port: int, target: str, host: str | None, *, method: str = "GET",
            headers: dict[str, str] | None = None, http10: bool = False) -> tuple[int, dict, bytes]:
    """One request with exactly the Host we want (or none), on a fresh connection."""
    lines = [f"{method} {target} HTTP/1.{0 if http10 else 1}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()] + ["Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split()[1]), hdrs, body


@pytest.fixture
def two_tenants(edge_factory, tmp_path):
    """acme (a.example + *.acme.example, token secret, 25% share) and globex (g.example):
    both have an object named same.bin, with different bytes."""
    a_dir, g_dir = tmp_path / "acme", tmp_path / "globex"
    a = make_files(a_dir, {"same.bin": 300_000, "big.bin": 3 * MiB + 5, "only-acme.bin": 1000}, seed=1)
    g = make_files(g_dir, {"same.bin": 200_000, "big.bin": 2 * MiB + 1}, seed=2)
    for i in range(16):
        g.update(make_files(g_dir, {f"fill/{i}.bin": MiB}, seed=100 + i))
    conf = tmp_path / "edge.toml"
    conf.write_text(f'''
[server]
state_dir = "{tmp_path}/state"
[cache]
size = "16MiB"
[ledger]
path = "{tmp_path}/ledger.jsonl"
[log]
access = "{tmp_path}/access.log"

[[tenants]]
name = "acme"
hosts = ["a.example", "*.acme.example"]
secret = "{SECRET}"
cache_share = "25%"
[[tenants.origins]]
name = "acme-disk"
url = "{a_dir}"

[[tenants]]
name = "globex"
hosts = ["g.example"]
[[tenants.origins]]
url = "{g_dir}"
''')
    aport = free_port()
    e = edge_factory([], "--admin-listen", f"127.0.0.1:{aport}", config=str(conf),
                     env_extra={"EDGE_ADMIN_TOKEN": TOKEN})
    wait_admin(aport)
    return e, aport, a, g


_receipts = iter(range(1 << 30))


def tok(key: str, secret: str = SECRET, receipt: str | None = None) -> str:
    """A token for one download of ``key`` (a fresh receipt each time unless given)."""
    receipt = f"T-{next(_receipts)}" if receipt is None else receipt
    return tokens.mint(secret.encode(), key, int(time.time()) + 3600, None, receipt)


def test_same_key_two_tenants_never_collide(two_tenants):
    e, _, a, g = two_tenants
    for i in range(3):                     # miss, then hits through the cached-head fast path
        t = tok("same.bin", receipt=f"R-{i}")      # a paid token buys one download
        st, h, body = raw_get(e.port, f"/same.bin?token={t}", "a.example")
        assert st == 200 and body == a["same.bin"]
        st, h2, body = raw_get(e.port, "/same.bin", "g.example")
        assert st == 200 and body == g["same.bin"] and h2["content-length"] == "200000"
        assert h["etag"] != h2["etag"]
    assert h2["cache-status"] == "edge; hit"
    # HEAD and ranges answer from each tenant's own object too
    st, h, _ = raw_get(e.port, "/same.bin", "G.Example.:8080", method="HEAD")
    assert st == 200 and h["content-length"] == "200000"
    st, h, body = raw_get(e.port, f"/same.bin?token={tok('same.bin', receipt='R-9')}", "x.acme.example",
                          headers={"Range": "bytes=299990-"})
    assert st == 206 and body == a["same.bin"][299990:]
    # big objects (several blocks), both tenants, repeatedly
    for i in range(2):
        big = tok("big.bin", receipt=f"B-{i}")
        assert raw_get(e.port, f"/big.bin?token={big}", "a.example")[2] == a["big.bin"]
        assert raw_get(e.port, "/big.bin", "g.example")[2] == g["big.bin"]
    # a key only one tenant has is a 404 at the other, never the first one's bytes
    assert raw_get(e.port, "/only-acme.bin", "g.example")[0] == 404


def test_unknown_or_missing_host_is_misdirected(two_tenants):
    e, _, _, g = two_tenants
    for host in ("evil.example", "acme.example", "a.example.evil", "g.example.com"):
        st, h, body = raw_get(e.port, "/same.bin", host)
        assert st == 421, host
        assert g["same.bin"][:100] not in body and b"no site named" in body
    st, _, _ = raw_get(e.port, "/same.bin", None, http10=True)      # HTTP/1.0 without Host
    assert st == 421
    # an absolute-form target is routed by its authority (RFC 9112 3.2.2)
    st, _, body = raw_get(e.port, "http://g.example/same.bin", "g.example")
    assert st == 200 and body == g["same.bin"]


def test_each_tenant_has_its_own_secret(two_tenants):
    e, _, a, g = two_tenants
    assert raw_get(e.port, "/same.bin", "a.example")[0] == 403              # acme needs a token
    assert raw_get(e.port, "/same.bin", "g.example")[0] == 200              # globex does not
    forged = tok("same.bin", secret="someone-else")
    st, _, body = raw_get(e.port, f"/same.bin?token={forged}", "a.example")
    assert st == 403 and b"signature" in body
    st, _, body = raw_get(e.port, "/same.bin", "a.example",
                          headers={"Authorization": f"Bearer {tok('same.bin')}"})
    assert st == 200 and body == a["same.bin"]


def test_ledger_and_metrics_name_the_tenant(two_tenants, tmp_path):
    e, aport, a, g = two_tenants
    raw_get(e.port, f"/same.bin?token={tok('same.bin', receipt='R-1')}", "a.example")
    raw_get(e.port, "/same.bin", "g.example")
    raw_get(e.port, "/same.bin", "nobody.example")
    deadline = time.monotonic() + 5
    lines: list[dict] = []
    while time.monotonic() < deadline and len(lines) < 3:
        time.sleep(0.2)
        p = tmp_path / "ledger.jsonl"
        lines = [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []
    got = [(x["tenant"], x["key"], x["status"], x["bytes_sent"], x["receipt"]) for x in lines]
    assert ("acme", "same.bin", 200, 300_000, "R-1") in got
    assert ("globex", "same.bin", 200, 200_000, None) in got
    assert (None, "same.bin", 421, 0, None) in [(t, k, s, 0, r) for t, k, s, _, r in got if s == 421]
    _, _, text = call(aport, "/metrics", token=None)
    m = text.decode()
    assert metric(m, "edge_tenant_requests_total", '{tenant="acme"}') >= 1
    assert metric(m, "edge_tenant_sent_bytes_total", '{tenant="globex"}') >= 200_000
    assert metric(m, "edge_tenant_cache_share_bytes", '{tenant="acme"}') == 4 * MiB
    assert metric(m, "edge_tenant_cache_share_bytes", '{tenant="globex"}') == 12 * MiB
    assert 'origin="acme/acme-disk"' in m and 'origin="globex/origin0"' in m
    stats = json.loads(call(aport, "/stats")[2])
    assert stats["tenants"]["acme"]["capacity"] == 4 * MiB
    access = [json.loads(x) for x in (tmp_path / "access.log").read_text().splitlines()]
    assert {x.get("tenant") for x in access} >= {"acme", "globex"}


def test_a_tenant_only_evicts_within_its_share(two_tenants):
    e, aport, a, g = two_tenants
    assert raw_get(e.port, f"/same.bin?token={tok('same.bin')}", "a.example")[0] == 200
    for i in range(16):                 # 16 MiB of globex objects: more than globex's 12 MiB share
        for _ in range(2):
            assert raw_get(e.port, f"/fill/{i}.bin", "g.example")[2] == g[f"fill/{i}.bin"]
    st, h, body = raw_get(e.port, f"/same.bin?token={tok('same.bin')}", "a.example")
    assert st == 200 and body == a["same.bin"] and h["cache-status"] == "edge; hit"
    everything = json.loads(call(aport, "/stats")[2])
    stats = everything["tenants"]
    assert stats["globex"]["blocks"] <= 12                  # globex ran out of room...
    assert stats["globex"]["used"] <= stats["globex"]["capacity"] == 12 * MiB   # ...of its own
    assert stats["acme"]["used"] <= 4 * MiB


def test_takedown_and_purge_per_tenant(two_tenants):
    e, aport, a, g = two_tenants
    assert raw_get(e.port, f"/same.bin?token={tok('same.bin')}", "a.example")[0] == 200
    assert raw_get(e.port, "/same.bin", "g.example")[0] == 200
    body = {"key": "same.bin", "case_id": "C-9", "reason": "reviewed", "tenant": "acme"}
    st, _, out = call(aport, "/blocks", method="POST", body=json.dumps(body).encode())
    assert st == 201 and json.loads(out)["blocked"]["tenant"] == "acme"
    assert raw_get(e.port, f"/same.bin?token={tok('same.bin')}", "a.example")[0] == 451
    st, _, body_g = raw_get(e.port, "/same.bin", "g.example")         # globex's object is another file
    assert st == 200 and body_g == g["same.bin"]
    st, _, out = call(aport, "/blocks?tenant=globex")
    assert json.loads(out)["blocks"] == []
    assert call(aport, "/blocks/same.bin", method="DELETE")[0] == 404           # no every-tenant block
    st, _, out = call(aport, "/blocks", method="POST", body=json.dumps(
        {"key": "x", "case_id": "C", "reason": "r", "tenant": "initech"}).encode())
    assert st == 400 and b"unknown tenant 'initech'" in out
    assert call(aport, "/blocks/same.bin?tenant=acme", method="DELETE")[0] == 200
    assert raw_get(e.port, f"/same.bin?token={tok('same.bin')}", "a.example")[0] == 200
    # a block without a tenant applies under every tenant
    call(aport, "/blocks", method="POST",
         body=json.dumps({"key": "same.bin", "case_id": "C-10", "reason": "r"}).encode())
    assert raw_get(e.port, f"/same.bin?token={tok('same.bin')}", "a.example")[0] == 451
    assert raw_get(e.port, "/same.bin", "g.example")[0] == 451
    call(aport, "/blocks/same.bin", method="DELETE")
    # purge one tenant's object: the other's stays a hit
    raw_get(e.port, "/same.bin", "g.example")
    st, _, out = call(aport, "/purge", method="POST",
                      body=json.dumps({"key": "same.bin", "tenant": "acme"}).encode())
    assert st == 200 and json.loads(out)["purged"]["tenant"] == "acme"
    assert raw_get(e.port, "/same.bin", "g.example")[1]["cache-status"] == "edge; hit"
    again = raw_get(e.port, f"/same.bin?token={tok('same.bin')}", "a.example")
    assert again[1]["cache-status"] == "edge; fwd=miss"


def test_tenants_survive_a_warm_restart(edge_factory, tmp_path):
    a_dir, g_dir = tmp_path / "acme", tmp_path / "globex"
    a = make_files(a_dir, {"same.bin": 3 * MiB + 1}, seed=1)
    g = make_files(g_dir, {"same.bin": 2 * MiB + 3}, seed=2)
    conf = tmp_path / "edge.toml"
    arena = tmp_path / "arena.bin"

    def write_conf(g_url: Path) -> None:
        conf.write_text(f'''
[server]
state_dir = "{tmp_path}/state"
[cache]
size = "16MiB"
[[tenants]]
name = "acme"
hosts = ["a.example"]
[[tenants.origins]]
url = "{a_dir}"
[[tenants]]
name = "globex"
hosts = ["*"]
[[tenants.origins]]
url = "{g_url}"
''')

    write_conf(g_dir)
    e = edge_factory([], "--arena-path", str(arena), config=str(conf))
    assert raw_get(e.port, "/same.bin", "a.example")[2] == a["same.bin"]
    assert raw_get(e.port, "/same.bin", "anything.example")[2] == g["same.bin"]     # the "*" tenant
    port = e.port
    assert e.stop() == 0
    # the origins are emptied: every byte now comes from the re-attached arena
    empty_a, empty_g = tmp_path / "ea", tmp_path / "eg"
    empty_a.mkdir()
    empty_g.mkdir()
    a_dir.rename(tmp_path / "acme-gone")
    empty_a.rename(a_dir)
    write_conf(empty_g)
    e2 = edge_factory([], "--arena-path", str(arena), "--listen", f"127.0.0.1:{port}", config=str(conf))
    st, h, body = raw_get(e2.port, "/same.bin", "a.example")
    assert st == 200 and body == a["same.bin"] and h["cache-status"] == "edge; hit"
    st, h, body = raw_get(e2.port, "/same.bin", "g.example")
    assert st == 200 and body == g["same.bin"] and h["cache-status"] == "edge; hit"


def test_reload_applies_hosts_and_origins_and_defers_new_tenants(two_tenants, tmp_path):
    e, aport, a, g = two_tenants
    conf = tmp_path / "edge.toml"
    assert raw_get(e.port, "/same.bin", "g2.example")[0] == 421
    conf.write_text(conf.read_text().replace('hosts = ["g.example"]', 'hosts = ["g.example", "g2.example"]'))
    st, _, out = call(aport, "/reload", method="POST")
    assert st == 200 and "tenants" in json.loads(out)["applied"]
    st, _, body = raw_get(e.port, "/same.bin", "g2.example")
    assert st == 200 and body == g["same.bin"]
    # a new tenant changes the arena's shares: reported, not half-applied
    conf.write_text(conf.read_text() + f'''
[[tenants]]
name = "initech"
hosts = ["i.example"]
[[tenants.origins]]
url = "{tmp_path}"
''')
    st, _, out = call(aport, "/reload", method="POST")
    assert st == 200 and "tenants" in json.loads(out)["needs_restart"]
    assert raw_get(e.port, "/same.bin", "i.example")[0] == 421
    assert raw_get(e.port, "/same.bin", "g2.example")[0] == 200
    # a broken tenant table is refused whole, naming the key
    conf.write_text(conf.read_text().replace('name = "initech"', 'name = "acme"'))
    st, _, out = call(aport, "/reload", method="POST")
    assert st == 400 and "tenants[2].name: duplicate tenant name 'acme'" in json.loads(out)["error"]
