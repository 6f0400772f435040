"""The replica pool: order, retries, health, mid-read failover, deadline, hedging."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from origin_clients import (
    NotFound,
    ObjectInfo,
    Origin,
    OriginError,
    OriginRefused,
    OriginTimeout,
    ValidatorMismatch,
)
from origin_clients.pool import OriginPool

DATA = bytes(random.Random(0).randbytes(300_000))
INFO = ObjectInfo(size=len(DATA), etag=b'"v1"', last_modified=1)


class Replica(Origin):
    """A scripted replica: fails, stalls, or holds another version on demand."""

    def __init__(self, name: str, *, etag: bytes = b'"v1"', chunk: int = 32_768) -> None:
        self.name = name
        self.etag = etag
        self.chunk = chunk
        self.fail_after: int | None = None    # bytes delivered before a reset
        self.first_delay = 0.0
        self.hang = False
        self.stat_error: OriginError | None = None
        self.missing = False
        self.reads: list[tuple[int, int]] = []
        self.closed_early = 0

    async def stat(self, key):
        if self.hang:
            await asyncio.sleep(3600)
        if self.stat_error:
            raise self.stat_error
        if self.missing:
            raise NotFound(self.name, key)
        return ObjectInfo(size=len(DATA), etag=self.etag, last_modified=1)

    async def read(self, key, info, start, end):
        self.reads.append((start, end))
        if self.missing:
            raise NotFound(self.name, key)
        if info.etag != self.etag:
            raise ValidatorMismatch(self.name, "If-Match failed")
        if self.hang:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.first_delay)
        sent = 0
        pos = start
        try:
            while pos < end:
                if self.fail_after is not None and sent >= self.fail_after:
                    raise OriginError(self.name, "connection reset")
                n = min(self.chunk, end - pos)
                yield DATA[pos:pos + n]
                pos += n
                sent += n
        except GeneratorExit:
            self.closed_early += 1
            raise


def run(coro, timeout=10):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def collect(pool, start=0, end=None, info=INFO):
    end = len(DATA) if end is None else end
    out = bytearray()
    async for chunk in pool.read("k", info, start, end):
        out += chunk
    return bytes(out)


def test_read_fails_over_mid_stream_from_the_exact_byte():
    a, b = Replica("a"), Replica("b")
    a.fail_after = 100_000
    pool = OriginPool([a, b], backoff=0.001)
    got = run(collect(pool, 1000, 250_000))
    assert got == DATA[1000:250_000]
    assert a.reads == [(1000, 250_000)]
    # a delivered 4 chunks of 32 KiB (131072 bytes >= 100000) before failing
    assert b.reads == [(1000 + 131_072, 250_000)]
    assert pool.replicas[0].stats.failovers_from == 1


def test_stat_order_notfound_and_failover():
    a, b = Replica("a"), Replica("b")
    pool = OriginPool([a, b], backoff=0.001)
    a.stat_error = OriginError("a", "503")
    assert run(pool.stat("k")).etag == b'"v1"'
    a.stat_error = None
    a.missing = True                        # a lagging replica: the next one has it
    assert run(pool.stat("k")).size == len(DATA)
    b.missing = True
    with pytest.raises(NotFound):           # "not found" only when every replica says so
        run(pool.stat("k"))
    assert pool.replicas[0].stats.requests == 3   # and nobody is asked twice for it
    b.missing = False
    b.stat_error = OriginError("b", "down")
    with pytest.raises(OriginError, match="down"):   # unknown, not "not found"
        run(pool.stat("k"))


def test_retries_with_backoff_then_the_last_error():
    a = Replica("a")
    a.stat_error = OriginError("a", "503 slow down")
    pool = OriginPool([a], retries=3, backoff=0.01, rng=random.Random(1))
    t0 = time.monotonic()
    with pytest.raises(OriginError, match="503"):
        run(pool.stat("k"))
    assert pool.replicas[0].stats.requests == 4   # 1 + 3 retries
    assert time.monotonic() - t0 < 1.0


def test_refused_credentials_fail_over_to_a_replica_that_accepts():
    a, b = Replica("a"), Replica("b")
    a.stat_error = OriginRefused("a", "403 SignatureDoesNotMatch")
    pool = OriginPool([a, b])
    assert run(pool.stat("k")).size == len(DATA)
    only = OriginPool([Replica("c")])
    only.replicas[0].origin.stat_error = OriginError("c", "400 bad request", retryable=False)
    with pytest.raises(OriginError, match="bad request"):
        run(only.stat("k"))
    assert only.replicas[0].stats.requests == 1   # not retried


def test_passive_health_takes_a_replica_out_then_back():
    now = [1000.0]
    a, b = Replica("a"), Replica("b")
    pool = OriginPool([a, b], failure_threshold=2, cooldown=30, clock=lambda: now[0], backoff=0.001)
    a.stat_error = OriginError("a", "reset")
    run(pool.stat("k"))
    assert [r.name for r in pool.order()] == ["a", "b"]      # one failure: still first
    run(pool.stat("k"))
    assert [r.name for r in pool.order()] == ["b", "a"]      # out of rotation
    a.stat_error = None
    run(pool.stat("k"))
    assert pool.replicas[1].stats.requests == 3 and pool.replicas[0].stats.requests == 2
    now[0] += 31
    assert [r.name for r in pool.order()] == ["a", "b"]      # cooldown over
    run(pool.stat("k"))
    assert pool.replicas[0].consecutive_failures == 0


def test_active_probe_marks_replicas():
    a, b = Replica("a"), Replica("b")
    pool = OriginPool([a, b], failure_threshold=3, probe_interval=1, deadline=0.5)
    b.hang = True
    run(pool.probe_once())
    assert [r.name for r in pool.order()] == ["a", "b"]
    assert not pool.replicas[1].healthy(time.monotonic())
    b.hang = False
    b.missing = True                                          # "not found" still means up
    run(pool.probe_once())
    assert pool.replicas[1].healthy(time.monotonic())


def test_other_version_on_a_replica_is_skipped_and_all_mismatch_raises():
    a, b = Replica("a"), Replica("b", etag=b'"v2"')
    a.fail_after = 0
    pool = OriginPool([b, a], backoff=0.001, retries=1)
    a.fail_after = None
    assert run(collect(pool)) == DATA                         # b holds v2: skipped, a serves v1
    assert b.reads == [(0, len(DATA))]                        # and b is not asked again
    pool2 = OriginPool([Replica("x", etag=b'"v2"'), Replica("y", etag=b'"v3"')])
    with pytest.raises(ValidatorMismatch):
        run(collect(pool2))


def test_deadline_gives_origin_timeout():
    a, b = Replica("a"), Replica("b")
    a.hang = b.hang = True
    pool = OriginPool([a, b], deadline=0.3, backoff=0.001)
    t0 = time.monotonic()
    with pytest.raises(OriginTimeout):
        run(collect(pool))
    with pytest.raises(OriginTimeout):
        run(pool.stat("k"))
    assert time.monotonic() - t0 < 2.0


def test_all_replicas_down_fail_fast():
    a, b = Replica("a"), Replica("b")
    a.fail_after = b.fail_after = 0
    pool = OriginPool([a, b], retries=2, backoff=0.001, deadline=5)
    t0 = time.monotonic()
    with pytest.raises(OriginError, match="reset"):
        run(collect(pool))
    assert time.monotonic() - t0 < 1.0
    assert len(a.reads) == 3 and len(b.reads) == 3


def test_hedging_asks_a_second_replica_when_the_first_is_slow():
    a, b = Replica("a"), Replica("b")
    a.first_delay = 2.0
    pool = OriginPool([a, b], hedge_after=0.05)
    t0 = time.monotonic()
    assert run(collect(pool)) == DATA
    assert time.monotonic() - t0 < 1.0
    assert pool.replicas[1].stats.hedges == 1
    assert a.reads == [(0, len(DATA))] and b.reads == [(0, len(DATA))]
    # no hedge when the first answers in time
    c, d = Replica("c"), Replica("d")
    pool = OriginPool([c, d], hedge_after=0.5)
    assert run(collect(pool, 0, 1000)) == DATA[:1000]
    assert d.reads == []


def test_consumer_closing_early_closes_the_replica_read():
    a = Replica("a")
    pool = OriginPool([a])

    async def main():
        it = pool.read("k", INFO, 0, len(DATA)).__aiter__()
        await it.__anext__()
        await it.aclose()

    run(main())
    assert a.closed_early == 1


def test_stat_read_fails_over_for_the_rest_of_the_block():
    a, b = Replica("a"), Replica("b")
    a.fail_after = 64_000
    pool = OriginPool([a, b], backoff=0.001)

    async def main():
        info, it = await pool.stat_read("k", 10, 200_000)
        assert info.etag == b'"v1"'
        return b"".join([c async for c in it])

    assert run(main()) == DATA[10:200_000]
    assert a.reads == [(10, 200_000)] and b.reads[0][0] == 10 + 65_536
    assert pool.replicas[0].stats.failovers_from == 1


def test_stat_read_is_hedged():
    a, b = Replica("a"), Replica("b")
    pool = OriginPool([a, b], hedge_after=0.05)
    slow = asyncio.Event()

    async def slow_stat(key):
        await slow.wait()
        return INFO

    a.stat = slow_stat

    async def main():
        info, it = await pool.stat_read("k", 0, 1000)
        return b"".join([c async for c in it])

    t0 = time.monotonic()
    assert run(main()) == DATA[:1000]
    assert time.monotonic() - t0 < 1.0 and pool.replicas[1].stats.hedges == 1


def test_every_origin_kind_honours_max_connections(tmp_path):
    from origin_clients import make_origin

    f = make_origin("f", str(tmp_path), max_connections=3)
    assert f._pool._max_workers == 3                      # the file origin's I/O threads
    h = make_origin("h", "http://127.0.0.1:9/", max_connections=5)
    assert h.max_connections == 5                          # its connector's limit (test_origin_http)
