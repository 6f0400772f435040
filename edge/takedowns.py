"""Takedowns: keys blocked after human review, answered 451 everywhere, surviving restarts.

Only the authenticated admin API changes this list (edge/admin.py); nothing in the request
path can. The list lives in ``STATE_DIR/takedowns.json`` (replaced atomically under an
``flock``, so concurrent admin calls never lose an entry); every change is appended to
``STATE_DIR/takedowns-audit.jsonl`` with the time, the action, the key, the case id, the
reason and who made it. Each worker loads the file at start; the worker that serves the admin
call applies a change at once, and the others reload the file within a second (the control
journal), purging the key from their cache.

A request for a blocked key gets ``451 Unavailable For Legal Reasons`` (RFC 7725) with
``Link: <POLICY_URL>; rel="blocked-by"`` and the case id in the body.

With white-label tenants a block names the tenant whose object it is (``tenant``); a block
without one ("") applies to that key under every tenant. Entries are keyed by
``(tenant, key)``. The file is ``{"version": 2, "blocks": [record, ...]}``; a version 1 file
(a dict of key -> record, from before tenants) is read as blocks of every tenant.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from typing import Any

VERSION = 2


class Takedowns:
    """The blocked keys of this edge (``entries``: (tenant, key) -> record; tenant "" is
    every tenant)."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "takedowns.json")
        self.audit_path = os.path.join(state_dir, "takedowns-audit.jsonl")
        self._lock_path = self.path + ".lock"
        os.makedirs(state_dir, exist_ok=True)
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        self.load()

    def load(self) -> None:
        """Read the persisted list (a missing file is an empty list; a corrupt one is an error)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            self.entries = {}
            return
        version, blocks = doc.get("version"), doc.get("blocks")
        if version == 1 and isinstance(blocks, dict):
            records = [{**r, "tenant": ""} for r in blocks.values()]
        elif version == VERSION and isinstance(blocks, list):
            records = blocks
        else:
            raise ValueError(f"{self.path}: not a takedown list of version 1 or {VERSION}")
        self.entries = {(str(r.get("tenant", "")), str(r["key"])): r for r in records}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.load()          # another process may have changed it meanwhile
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            blocks = [self.entries[k] for k in sorted(self.entries)]
            json.dump({"version": VERSION, "blocks": blocks}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _audit(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def block(self, key: str, *, case_id: str, reason: str, actor: str, tenant: str = "",
              now: float | None = None) -> dict[str, Any]:
        """Block ``key`` of ``tenant`` ("": of every tenant); returns its record. Blocking a
        blocked key updates its record."""
        now = time.time() if now is None else now
        record = {"key": key, "tenant": tenant, "case_id": case_id, "reason": reason,
                  "actor": actor, "time": now}
        with self._locked():
            self.entries[(tenant, key)] = record
            self._save()
            self._audit({"action": "block", **record})
        return record

    def unblock(self, key: str, *, actor: str, tenant: str = "", case_id: str = "", reason: str = "",
                now: float | None = None) -> bool:
        """Reinstate ``key`` (the block of exactly that ``tenant`` scope); False if it was not
        blocked."""
        now = time.time() if now is None else now
        with self._locked():
            if (tenant, key) not in self.entries:
                return False
            del self.entries[(tenant, key)]
            self._save()
            self._audit({"action": "unblock", "key": key, "tenant": tenant, "case_id": case_id,
                         "reason": reason, "actor": actor, "time": now})
        return True

    def get(self, key: str, tenant: str = "") -> dict[str, Any] | None:
        return self.entries.get((tenant, key))

    def for_tenant(self, tenant: str) -> dict[str, dict[str, Any]]:
        """key -> record of every block that applies to ``tenant`` (its own and every-tenant ones)."""
        return {k: r for (t, k), r in self.entries.items() if t == "" or t == tenant}

    def __len__(self) -> int:
        return len(self.entries)
