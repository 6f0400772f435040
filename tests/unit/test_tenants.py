"""Tenant configuration and Host routing (edge/config.py, edge/server/tenants.py)."""
from __future__ import annotations

import tomllib

import pytest

from edge import config as cfg
from edge.server.tenants import Router, Tenant

BASE = '''
[cache]
size = "64MiB"
[[tenants]]
name = "acme"
hosts = ["a.example", "*.acme.example", "[::1]"]
cache_share = "25%"
[[tenants.origins]]
url = "/tmp"
[[tenants]]
name = "globex"
hosts = ["G.Example.", "*.g.example", "*.deep.g.example"]
secret = "s"
[[tenants.origins]]
url = "/tmp"
[[tenants.origins]]
name = "replica"
url = "http://127.0.0.1:9/"
'''


def build(text: str) -> cfg.Config:
    return cfg.build(tomllib.loads(text))


def test_tenants_are_validated_and_shares_computed():
    c = build(BASE)
    acme, globex = c.tenants
    assert acme.hosts == ("a.example", "*.acme.example", "[::1]") and acme.secret is None
    assert globex.hosts == ("g.example", "*.g.example", "*.deep.g.example") and globex.secret == "s"
    assert [o.name for o in globex.origins] == ["origin0", "replica"]
    assert c.origins == ()
    assert c.tenant_capacities() == {"acme": 16 << 20, "globex": 48 << 20}
    assert [w for w, _ in c.all_origins()] == ["tenants[0].origins[0]", "tenants[1].origins[0]",
                                               "tenants[1].origins[1]"]
    sized = build(BASE.replace('"25%"', '"10MiB"'))
    assert sized.tenant_capacities() == {"acme": 10 << 20, "globex": 54 << 20}


@pytest.mark.parametrize("change, key", [
    (('"a.example", ', '"g.example", '), "tenants[1].hosts: 'G.Example.' is already a host of tenant 'acme'"),
    (('"25%"', '"0%"'), "tenants[0].cache_share"),
    (('"25%"', '"64MiB"'), "tenants: the 1 tenant(s) without cache_share"),
    (('"25%"', '"1KiB"'), "tenants[0].cache_share: must hold at least two blocks"),
    (('name = "globex"', 'name = "acme"'), "tenants[1].name: duplicate tenant name 'acme'"),
    (('name = "globex"', 'name = "no/slash"'), "tenants[1].name"),
    (('"a.example", ', '"a.example:8080", '), "tenants[0].hosts: 'a.example:8080' is not a host name"),
    (('"a.example", ', '"http://a.example/", '), "tenants[0].hosts"),
    (('hosts = ["a.example", "*.acme.example", "[::1]"]', 'hosts = []'), "tenants[0].hosts: expected a list"),
    (('cache_share = "25%"', 'colour = "red"'), "tenants[0].colour: unknown key"),
    (('url = "http://127.0.0.1:9/"', 'url = "gopher://x"'), "tenants[1].origins[1].url"),
    (('secret = "s"', 'secret = 5'), "tenants[1].secret: expected a string"),
])
def test_tenant_errors_name_the_key(change, key):
    with pytest.raises(cfg.ConfigError) as err:
        build(BASE.replace(*change))
    assert str(err.value).startswith(key), str(err.value)


def test_tenants_exclude_top_level_origins():
    with pytest.raises(cfg.ConfigError, match=r"^origins: with \[\[tenants\]\]"):
        build(BASE + '[[origins]]\nurl = "/tmp"\n')
    with pytest.raises(cfg.ConfigError, match=r"^origins: with \[\[tenants\]\]"):
        cfg.build(tomllib.loads(BASE), overrides={"origins": ["/tmp"]})
    with pytest.raises(cfg.ConfigError, match=r"^tenants\[0\]\.origins: missing"):
        build('[[tenants]]\nname = "x"\nhosts = ["x.example"]\n')


def test_a_missing_tenant_origin_directory_names_its_key(tmp_path):
    c = build(BASE.replace('url = "/tmp"', f'url = "{tmp_path}/nope"', 1))
    with pytest.raises(cfg.ConfigError, match=r"^tenants\[0\]\.origins\[0\]\.url: directory"):
        cfg.check_origin_dirs(c)


def router(text: str = BASE) -> tuple[Router, dict[str, Tenant]]:
    c = build(text)
    tenants = {t.name: Tenant(t.name, None, None) for t in c.tenants}   # type: ignore[arg-type]
    return Router(tenants, c.tenants), tenants


@pytest.mark.parametrize("host, name", [
    (b"a.example", "acme"), (b"A.EXAMPLE:8080", "acme"), (b"a.example.", "acme"),
    (b"x.acme.example", "acme"), (b"x.y.acme.example", "acme"), (b"acme.example", None),
    (b"[::1]:8080", "acme"), (b"g.example", "globex"), (b"z.g.example", "globex"),
    (b"q.deep.g.example", "globex"), (b"a.example.evil", None), (b"evil-a.example", None),
    (b"xg.example", None), (None, None), (b"", None),
])
def test_routing_by_host(host, name):
    r, tenants = router()
    got = r.route(host)
    assert (got.name if got else None) == name
    assert r.route(host) is got          # memoised


def test_a_star_tenant_takes_every_other_host():
    r, tenants = router(BASE.replace('"*.deep.g.example"', '"*"'))
    assert r.route(b"a.example").name == "acme"
    assert r.route(b"nobody.example").name == "globex"
    assert r.route(None).name == "globex"
