"""Reviewed takedowns through the real server: 451 everywhere, purged, audited, persistent."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from .conftest import make_files
from .test_admin import TOKEN, call, free_port, wait_admin

pytestmark = pytest.mark.integration


def fetch(port: int, path: str, method: str = "GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def start(edge_factory, origin, tmp_path, *args):
    conf = tmp_path / "edge.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n'
                    '[takedowns]\npolicy_url = "https://files.example/takedown-policy"\n')
    aport = free_port()
    e = edge_factory(origin, "--cache-size", "16MiB", "--admin-listen", f"127.0.0.1:{aport}",
                     *args, config=str(conf), env_extra={"EDGE_ADMIN_TOKEN": TOKEN})
    wait_admin(aport)
    return e, aport


def block(aport, key, case="CASE-7", reason="reviewed: infringing"):
    return call(aport, "/blocks", method="POST",
                body=json.dumps({"key": key, "case_id": case, "reason": reason}).encode())


def test_block_answers_451_purges_and_reinstates(edge_factory, origin, tmp_path):
    files = make_files(origin, {"doc/x.bin": 5000, "y.bin": 100})
    e, aport = start(edge_factory, origin, tmp_path)
    assert fetch(e.port, "/doc/x.bin")[2] == files["doc/x.bin"]
    status, _, body = block(aport, "doc/x.bin")
    assert status == 201 and json.loads(body)["blocked"]["case_id"] == "CASE-7"
    for method in ("GET", "HEAD"):
        status, headers, body = fetch(e.port, "/doc/x.bin", method)
        assert status == 451
        assert headers["Link"] == '<https://files.example/takedown-policy>; rel="blocked-by"'
    assert b"CASE-7" in fetch(e.port, "/doc/x.bin")[2]
    assert fetch(e.port, "/y.bin")[0] == 200                 # others unaffected
    listed = json.loads(call(aport, "/blocks")[2])["blocks"]
    assert [b["key"] for b in listed] == ["doc/x.bin"]
    # only the authenticated admin API can block or reinstate
    assert call(aport, "/blocks", method="POST", token=None, body=b'{"key": "y.bin"}')[0] == 401
    assert call(aport, "/blocks/doc/x.bin", method="DELETE", token="nope")[0] == 401
    for bad in (b'{"key": "y.bin"}', b'{"key": "", "case_id": "c", "reason": "r"}', b"[]",
                b'{"key": "y", "case_id": "c", "reason": "r", "owner": "z"}'):
        assert call(aport, "/blocks", method="POST", body=bad)[0] == 400, bad
    assert call(aport, "/blocks/never.bin", method="DELETE")[0] == 404
    status, _, _ = call(aport, "/blocks/doc/x.bin", method="DELETE",
                        body=b'{"case_id": "CASE-7", "reason": "counter-notice accepted"}')
    assert status == 200
    status, headers, body = fetch(e.port, "/doc/x.bin")
    assert status == 200 and body == files["doc/x.bin"]
    assert headers["Cache-Status"] == "edge; fwd=miss"       # it had been purged
    audit = (tmp_path / "state" / "takedowns-audit.jsonl").read_text().splitlines()
    assert [json.loads(x)["action"] for x in audit] == ["block", "unblock"]
    assert json.loads(audit[1])["reason"] == "counter-notice accepted"


def test_blocks_survive_a_restart(edge_factory, origin, tmp_path):
    make_files(origin, {"z.bin": 100})
    e, aport = start(edge_factory, origin, tmp_path)
    assert block(aport, "z.bin")[0] == 201
    assert e.stop() == 0
    e2, _ = start(edge_factory, origin, tmp_path)
    assert fetch(e2.port, "/z.bin")[0] == 451


def test_every_worker_applies_a_block(edge_factory, origin, tmp_path):
    make_files(origin, {"w.bin": 1000})
    e, aport = start(edge_factory, origin, tmp_path, "--workers", "2")
    for _ in range(10):
        assert fetch(e.port, "/w.bin")[0] == 200              # cached on both workers (likely)
    assert block(aport, "w.bin")[0] == 201
    time.sleep(1.5)
    assert {fetch(e.port, "/w.bin")[0] for _ in range(20)} == {451}   # new connections, both workers
