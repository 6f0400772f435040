"""The transfer ledger: line format, durability, rotation, several writers, failures."""
from __future__ import annotations

import datetime
import errno
import glob
import json
import multiprocessing
import os
import re
import threading
import time
from pathlib import Path

import pytest

from edge import ledger as ledger_mod
from edge.ledger import Ledger


def rec(led: Ledger, i: int, **extra) -> None:
    led.record(time=1795336819.5 + i, receipt=f"r{i}", key=f"blobs/{i}.bin", tenant="acme",
               status=206, bytes_sent=i * 10, **extra)


def all_files(path: Path) -> list[str]:
    """The rotated files, oldest first, then the current one."""
    rotated = sorted(f for f in glob.glob(f"{path}.*") if not f.endswith(".lock"))
    return [*rotated, str(path)] if path.exists() else rotated


def all_lines(path: Path) -> list[dict]:
    out = []
    for name in all_files(path):
        with open(name, encoding="utf-8") as f:
            data = f.read()
        assert data == "" or data.endswith("\n"), name
        out.extend(json.loads(line) for line in data.splitlines())
    return out


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "ledger.jsonl"


# -- lines --

def test_line_format(path):
    led = Ledger(str(path))
    led.record(time=1795336819.1234, receipt="pi_3NqLx2eZvKYlo2C", key="blobs/ab/cd.bin",
               tenant="acme", status=206, bytes_sent=1048576)
    led.record(time=1.0, receipt=None, key='we"ird\\ké\n', tenant=None, status=200, bytes_sent=0,
               range="0-", client="10.0.0.1", extra_num=1.5, nested={"a": [1]})
    led.flush()
    raw = path.read_bytes()
    lines = raw.decode("ascii").splitlines()           # ASCII: non-ASCII is escaped
    assert lines[0] == ('{"time":1795336819.123,"receipt":"pi_3NqLx2eZvKYlo2C","key":"blobs/ab/cd.bin",'
                        '"tenant":"acme","status":206,"bytes_sent":1048576}')
    second = json.loads(lines[1])
    assert second == {"time": 1.0, "receipt": None, "key": 'we"ird\\ké\n', "tenant": None,
                      "status": 200, "bytes_sent": 0, "range": "0-", "client": "10.0.0.1",
                      "extra_num": 1.5, "nested": {"a": [1]}}
    assert list(second)[:6] == ["time", "receipt", "key", "tenant", "status", "bytes_sent"]
    assert raw.count(b"\n") == 2
    led.close()


def test_nothing_written_before_flush_then_written_and_fsynced(path, monkeypatch):
    led = Ledger(str(path))
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        # What is fsynced is what the file holds at that moment.
        synced.append(os.fstat(fd).st_size if os.path.isfile(f"/proc/self/fd/{fd}") else -1)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    for i in range(5):
        rec(led, i)
    assert path.read_bytes() == b"" and led.pending_bytes > 0
    led.flush()
    size = path.stat().st_size
    assert size > 0 and synced == [size] and led.pending_bytes == 0
    assert [r["receipt"] for r in all_lines(path)] == [f"r{i}" for i in range(5)]
    led.flush()                                        # nothing buffered: no write, no fsync
    assert synced == [size]
    led.close()


def test_a_full_buffer_flushes_itself(path):
    led = Ledger(str(path), flush_bytes=1000)
    i = 0
    while path.stat().st_size == 0:
        rec(led, i)
        i += 1
        assert i < 100
    assert led.pending_bytes == 0
    assert 1000 <= path.stat().st_size < 1200
    led.close()


def test_close_flushes_and_reopen_appends(path):
    led = Ledger(str(path))
    rec(led, 1)
    led.close()
    led = Ledger(str(path))
    rec(led, 2)
    led.close()
    assert [r["receipt"] for r in all_lines(path)] == ["r1", "r2"]


def test_a_torn_last_line_is_ended_on_open(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"time":1,"receipt":"r0"}\n{"time":2,"rec')      # crash mid-write
    led = Ledger(str(path))
    rec(led, 1)
    led.flush()
    lines = path.read_text().splitlines()
    assert lines[1] == '{"time":2,"rec'
    assert json.loads(lines[2])["receipt"] == "r1"
    led.close()


# -- rotation --

def test_rotation_by_size_keeps_every_line_once_in_order(path):
    led = Ledger(str(path), rotate_bytes=2000)
    n = 0
    for _ in range(60):
        for _ in range(3):
            rec(led, n)
            n += 1
        led.flush()
    led.close()
    files = all_files(path)
    assert len(files) > 5 and led.rotations == len(files) - 1
    for name in files:
        assert os.path.getsize(name) <= 2000
        assert name == str(path) or re.fullmatch(re.escape(str(path)) + r"\.\d{8}T\d{6}\.\d{6}Z", name)
    assert [r["receipt"] for r in all_lines(path)] == [f"r{i}" for i in range(n)]


def test_a_flush_larger_than_rotate_bytes_goes_whole_to_a_fresh_file(path):
    led = Ledger(str(path), rotate_bytes=500)
    rec(led, 0)
    led.flush()
    for i in range(1, 20):
        rec(led, i)
    led.flush()
    led.close()
    files = all_files(path)
    assert len(files) == 2
    assert len(Path(files[1]).read_text().splitlines()) == 19       # not split
    assert [r["receipt"] for r in all_lines(path)] == [f"r{i}" for i in range(20)]


def test_rotation_never_overwrites(path, monkeypatch):
    fixed = datetime.datetime(2026, 11, 22, 8, 40, 19, 123456, tzinfo=datetime.UTC)

    class FrozenDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    monkeypatch.setattr(ledger_mod.datetime, "datetime", FrozenDatetime)
    led = Ledger(str(path), rotate_bytes=200)
    for i in range(4):
        rec(led, i)
        led.flush()                                     # each line fills a file: 3 rotations
    led.close()
    names = [os.path.basename(f) for f in all_files(path)]
    assert names == ["ledger.jsonl.20261122T084019.123456Z", "ledger.jsonl.20261122T084019.123457Z",
                     "ledger.jsonl.20261122T084019.123458Z", "ledger.jsonl"]
    assert [r["receipt"] for r in all_lines(path)] == ["r0", "r1", "r2", "r3"]


def test_a_writer_follows_another_writers_rotation(path):
    a = Ledger(str(path), rotate_bytes=300)
    b = Ledger(str(path), rotate_bytes=300)
    rec(a, 0)
    a.flush()
    rec(b, 1)
    b.flush()
    rec(a, 2)
    a.flush()                                           # a rotates: the file holds r0, r1
    rotated = all_files(path)[0]
    rec(b, 3)
    b.flush()                                           # b must write to the new file, not its old fd
    assert [json.loads(x)["receipt"] for x in Path(rotated).read_text().splitlines()] == ["r0", "r1"]
    assert [json.loads(x)["receipt"] for x in path.read_text().splitlines()] == ["r2", "r3"]
    a.close()
    b.close()


def test_a_deleted_file_is_recreated(path):
    led = Ledger(str(path))
    rec(led, 0)
    led.flush()
    path.unlink()
    rec(led, 1)
    led.flush()
    assert [r["receipt"] for r in all_lines(path)] == ["r1"]
    led.close()


# -- several processes, threads, fork --

def _writer(path: str, wid: int, n: int, rotate_bytes: int) -> None:
    led = Ledger(path, rotate_bytes=rotate_bytes, flush_bytes=1 << 30)
    for i in range(n):
        led.record(time=time.time(), receipt=f"w{wid}-{i}", key="k" * (i % 50), tenant=None,
                   status=200, bytes_sent=i, pad="x" * (i % 300))
        if i % 7 == wid % 7:
            led.flush()
    led.close()


@pytest.mark.parametrize("writers", [2, 4])
def test_processes_append_and_rotate_concurrently(path, writers):
    path.parent.mkdir(parents=True)
    n = 1500
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, n, 16 << 10)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    files = all_files(path)
    assert len(files) > 20                              # they rotated a lot, concurrently
    assert all(os.path.getsize(f) <= 16 << 10 for f in files)
    seen = [r["receipt"] for r in all_lines(path)]      # every line parses: none torn or interleaved
    assert len(seen) == writers * n
    assert set(seen) == {f"w{w}-{i}" for w in range(writers) for i in range(n)}
    for w in range(writers):                            # each writer's lines stay in its order
        mine = [s for s in seen if s.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(n)]


def test_fork_child_does_not_repeat_the_parents_lines(path):
    led = Ledger(str(path))
    rec(led, 0)                                         # buffered in the parent at fork time
    pid = os.fork()
    if pid == 0:                                        # pragma: no cover (child)
        try:
            rec(led, 1)
            led.flush()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    rec(led, 2)
    led.close()
    assert sorted(r["receipt"] for r in all_lines(path)) == ["r0", "r1", "r2"]


def test_flush_from_another_thread(path):
    led = Ledger(str(path), rotate_bytes=8 << 10)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            led.flush()

    t = threading.Thread(target=flusher)
    t.start()
    for i in range(3000):
        rec(led, i)
    stop.set()
    t.join()
    led.close()
    assert [r["receipt"] for r in all_lines(path)] == [f"r{i}" for i in range(3000)]


# -- failures --

def test_a_failed_write_is_undone_and_retried(path, monkeypatch, capsys):
    led = Ledger(str(path))
    rec(led, 0)
    led.flush()
    before = path.read_bytes()
    for i in range(1, 4):
        rec(led, i)
    real_write = os.write
    calls = {"n": 0}

    def disk_full(fd: int, data) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))       # half a line...
        raise OSError(errno.ENOSPC, "No space left on device")          # ...then the disk is full

    monkeypatch.setattr(os, "write", disk_full)
    led.flush()
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before                 # truncated back: no torn line
    assert led.errors == 1 and led.pending_bytes > 0
    assert "No space left on device" in capsys.readouterr().err
    rec(led, 4)
    led.flush()
    assert [r["receipt"] for r in all_lines(path)] == ["r0", "r1", "r2", "r3", "r4"]
    led.close()


# -- cost --

def test_record_cost(path):
    led = Ledger(str(path))
    n = 50000
    t0 = time.perf_counter()
    for _ in range(n):
        led.record(time=1795336819.123, receipt="pi_3NqLx2eZvKYlo2C", key="blobs/ab/cd.bin",
                   tenant="acme", status=206, bytes_sent=1048576)
    per = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    led.flush()
    flush_ms = (time.perf_counter() - t0) * 1e3
    print(f"\nledger record: {per:.1f} µs per call (flushes included); final flush {flush_ms:.1f} ms")
    assert per < 100
    led.close()
    assert len(all_lines(path)) == n
