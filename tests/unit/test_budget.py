"""Byte budgets shared by worker processes: reserve/refund semantics, concurrency, prune, cost."""
from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge.budget import BudgetStore


@pytest.fixture
def store(tmp_path: Path) -> BudgetStore:
    s = BudgetStore(str(tmp_path / "budgets.sqlite"))
    yield s
    s.close()


def test_reserve_up_to_the_budget_exactly(store):
    assert store.used("r") == 0
    assert store.reserve("r", 100, 60)
    assert store.reserve("r", 100, 40)                  # used + n == budget: granted
    assert store.used("r") == 100
    assert not store.reserve("r", 100, 1)               # refused, and nothing added
    assert store.used("r") == 100
    assert store.reserve("r", 100, 0)                   # nothing is always affordable


def test_refused_reservations_change_nothing(store):
    assert not store.reserve("r", 100, 101)             # larger than the whole budget
    assert store.used("r") == 0
    assert store.reserve("r", 100, 70)
    assert not store.reserve("r", 100, 31)
    assert store.reserve("r", 100, 30)
    assert store.used("r") == 100


def test_refund(store):
    assert store.reserve("r", 100, 100)
    store.refund("r", 30)                               # reserved, not delivered
    assert store.used("r") == 70
    assert store.reserve("r", 100, 30)
    store.refund("r", 1000)                             # never below 0
    assert store.used("r") == 0
    store.refund("unknown", 10)                         # no row, no effect
    assert store.used("unknown") == 0
    store.refund("r", 0)


def test_budget_ids_are_independent(store):
    assert store.reserve("a", 10, 10)
    assert store.reserve("b", 10, 10)
    assert not store.reserve("a", 10, 1)
    assert (store.used("a"), store.used("b")) == (10, 10)


def test_negative_amounts_are_errors(store):
    with pytest.raises(ValueError):
        store.reserve("r", 10, -1)
    with pytest.raises(ValueError):
        store.refund("r", -1)


def test_large_budgets(store):
    big = 2**63 - 1
    assert store.reserve("r", big, big - 1)
    assert store.reserve("r", big, 1)
    assert not store.reserve("r", big, 1)
    assert store.used("r") == big


def test_persistent_and_shared_between_instances(tmp_path):
    path = str(tmp_path / "b.sqlite")
    a, b = BudgetStore(path), BudgetStore(path)
    assert a.reserve("r", 100, 80)
    assert not b.reserve("r", 100, 30)
    assert b.reserve("r", 100, 20)
    a.close()
    b.close()
    c = BudgetStore(path)
    assert c.used("r") == 100
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.close()


def test_prune_forgets_only_old_budgets(store):
    store.reserve("old", 100, 10, now=1000.0)
    store.reserve("touched", 100, 10, now=1000.0)
    store.refund("touched", 5, now=5000.0)              # a refund counts as seen
    store.reserve("new", 100, 10, now=5000.0)
    assert store.prune(3600, now=5000.0) == 1
    assert (store.used("old"), store.used("touched"), store.used("new")) == (0, 5, 10)
    assert store.prune(3600, now=5000.0) == 0
    assert store.prune(0, now=5000.1) == 2


def _wal_frames(path: str) -> int:
    db = sqlite3.connect(path)
    frames = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    db.close()
    return frames


def test_checkpoint_keeps_the_wal_short(tmp_path):
    path = str(tmp_path / "b.sqlite")
    store = BudgetStore(path, checkpoint_every=10**9)
    for i in range(3000):
        store.reserve(f"r{i % 10}", 10**9, 1)
    grown = os.path.getsize(path + "-wal")
    store.checkpoint()
    for i in range(3000):                              # the WAL restarts from its beginning
        store.reserve(f"r{i % 10}", 10**9, 1)
    assert os.path.getsize(path + "-wal") == grown
    store.close()
    inline = BudgetStore(path, checkpoint_every=100)   # no one calls checkpoint(): done inline
    for _ in range(5000):
        inline.reserve("x", 10**9, 1)
    assert _wal_frames(path) <= 100
    assert inline.used("x") == 5000 and inline.used("r0") == 600
    inline.close()


# -- several processes and threads --

BUDGET = 1_000_000


def _reserver(path: str, seed: int, calls: int, out) -> None:
    store = BudgetStore(path)
    rng = random.Random(seed)
    granted = refunded = refused = 0
    for _ in range(calls):
        n = rng.randint(1, 20_000)
        if not store.reserve("receipt key", BUDGET, n):
            refused += 1
        else:
            granted += n
            if rng.random() < 0.2:                      # a client that went away early
                back = rng.randint(0, n)
                store.refund("receipt key", back)
                refunded += back
    store.close()
    out.put((granted, refunded, refused))


def test_concurrent_reservations_never_exceed_the_budget(tmp_path):
    path = str(tmp_path / "b.sqlite")
    BudgetStore(path).close()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_reserver, args=(path, seed, 200, out)) for seed in range(8)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    granted = sum(r[0] for r in results)
    refunded = sum(r[1] for r in results)
    used = BudgetStore(path).used("receipt key")
    assert used == granted - refunded                   # every grant and refund counted once
    assert used <= BUDGET
    # 1600 calls averaging 10 kB ask for ~16x the budget: most were refused.
    assert sum(r[2] for r in results) > 1000 and used > BUDGET // 2


def test_threads_share_one_store(store):
    granted = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        g = 0
        for _ in range(300):
            n = rng.randint(1, 5000)
            if store.reserve("t", 200_000, n):
                g += n
        granted.append(g)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == store.used("t") <= 200_000


def test_a_store_opened_before_fork_works_in_the_child(store):
    assert store.reserve("f", 100, 10)
    pid = os.fork()
    if pid == 0:                                        # pragma: no cover (child)
        code = 1
        try:
            code = 0 if store.reserve("f", 100, 20) and store.used("f") == 30 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.used("f") == 30
    assert store.reserve("f", 100, 70)


# -- cost --

def test_cost(store):
    n = 5000
    t0 = time.perf_counter()
    for i in range(n):
        store.reserve(f"r{i % 100}", 10**12, 4096)
    reserve = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n):
        store.refund(f"r{i % 100}", 1024)
    refund = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n):
        store.used(f"r{i % 100}")
    used = (time.perf_counter() - t0) / n * 1e6
    print(f"\nbudget: reserve {reserve:.1f} µs, refund {refund:.1f} µs, used {used:.1f} µs per call")
    assert reserve < 2000 and refund < 2000
