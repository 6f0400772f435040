"""The takedown list: persisted, audited, safe under concurrent admin calls."""
from __future__ import annotations

import json
import os

import pytest

from edge.takedowns import Takedowns


def test_block_unblock_persist_and_audit(tmp_path):
    t = Takedowns(str(tmp_path))
    rec = t.block("a/b.bin", case_id="C-1", reason="court order", actor="alice", now=100.0)
    assert rec == {"key": "a/b.bin", "tenant": "", "case_id": "C-1", "reason": "court order",
                   "actor": "alice", "time": 100.0}
    t.block("x", case_id="C-2", reason="r", actor="bob", now=101.0)
    assert Takedowns(str(tmp_path)).entries.keys() == {("", "a/b.bin"), ("", "x")}   # survives a restart
    assert t.unblock("x", actor="carol", case_id="C-2", reason="appeal granted", now=102.0)
    assert not t.unblock("x", actor="carol")
    assert Takedowns(str(tmp_path)).entries.keys() == {("", "a/b.bin")}
    audit = [json.loads(x) for x in (tmp_path / "takedowns-audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["key"], a["actor"], a["case_id"]) for a in audit] == [
        ("block", "a/b.bin", "alice", "C-1"), ("block", "x", "bob", "C-2"),
        ("unblock", "x", "carol", "C-2")]
    assert audit[2]["reason"] == "appeal granted" and audit[2]["time"] == 102.0


def test_concurrent_writers_lose_nothing(tmp_path):
    pids = []
    for w in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                t = Takedowns(str(tmp_path))
                for i in range(25):
                    t.block(f"w{w}/k{i}", case_id=f"C{w}-{i}", reason="r", actor=f"w{w}")
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    t = Takedowns(str(tmp_path))
    assert len(t) == 100
    assert len((tmp_path / "takedowns-audit.jsonl").read_text().splitlines()) == 100


def test_a_corrupt_list_is_an_error_not_an_empty_list(tmp_path):
    (tmp_path / "takedowns.json").write_text('{"version": 99, "blocks": {}}')
    with pytest.raises(ValueError, match="version"):
        Takedowns(str(tmp_path))


def test_blocks_are_scoped_by_tenant(tmp_path):
    t = Takedowns(str(tmp_path))
    t.block("same.bin", tenant="acme", case_id="C-1", reason="r", actor="a")
    t.block("all.bin", case_id="C-2", reason="r", actor="a")
    assert set(t.for_tenant("acme")) == {"same.bin", "all.bin"}
    assert set(t.for_tenant("globex")) == {"all.bin"}          # acme's block is not globex's
    assert not t.unblock("same.bin", actor="a")                 # the every-tenant scope has no such block
    assert not t.unblock("same.bin", tenant="globex", actor="a")
    again = Takedowns(str(tmp_path))
    assert again.get("same.bin", "acme")["case_id"] == "C-1"
    assert again.unblock("same.bin", tenant="acme", actor="b")
    assert set(Takedowns(str(tmp_path)).for_tenant("acme")) == {"all.bin"}


def test_a_version_1_list_reads_as_blocks_of_every_tenant(tmp_path):
    rec = {"key": "k", "case_id": "C", "reason": "r", "actor": "a", "time": 1.0}
    (tmp_path / "takedowns.json").write_text(json.dumps({"version": 1, "blocks": {"k": rec}}))
    t = Takedowns(str(tmp_path))
    assert t.get("k")["case_id"] == "C" and set(t.for_tenant("any")) == {"k"}
    t.block("k2", case_id="C2", reason="r", actor="a")          # saved as version 2
    assert json.loads((tmp_path / "takedowns.json").read_text())["version"] == 2
    assert set(Takedowns(str(tmp_path)).for_tenant("x")) == {"k", "k2"}
