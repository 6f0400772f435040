"""Replicas of the same content behind one Origin: order, retries, health, failover, hedging.

Theory of operation
-------------------
Replicas are tried in the configured order, healthy ones first. Each one keeps a count of
consecutive failures; at ``failure_threshold`` it is taken out of rotation for ``cooldown``
seconds (passive health), and an optional prober stats ``probe_key`` on every replica every
``probe_interval`` seconds (active health: any answer, even "not found", proves it is up). A
replica out of rotation is still tried, last, when nothing else is left.

* ``stat`` asks replicas in order; the first that has the object answers. "Not found" is the
  answer only when every replica says so (a replica may lag behind another); if some replica
  could not be asked, its error is. Failures move on to the next replica; after a round of
  all of them the pool sleeps ``backoff * 2**round`` with full jitter and tries again,
  ``retries`` more rounds at most.
* ``read`` streams ``[start, end)``. When a replica fails before or during the read, the next
  one continues *from the byte where the previous stopped*, with the same validator
  (If-Match on the same ETag), so the consumer sees one clean stream or an exception, never
  bytes of two versions. A replica that holds another version (ValidatorMismatch) or lacks
  the object is skipped; if every replica holds another version the mismatch is raised, so
  the cache forgets its metadata.
* Deadline: time without progress (no byte, no answer) is bounded by ``deadline`` across all
  attempts; when it runs out the pool raises OriginTimeout (the edge answers 504). Errors that
  asking again cannot fix (``retryable=False``) end the read at once.
* Hedging (``hedge_after > 0``): if a read has produced no byte after ``hedge_after`` seconds,
  the next replica is asked for the same range too; the first to deliver a byte wins and the
  other request is cancelled.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import NotFound, ObjectInfo, Origin, OriginError, OriginTimeout, ValidatorMismatch

log = logging.getLogger("edge.origin")

# Upper bounds (seconds) of the origin latency histogram buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ReplicaStats:
    """Counters per replica, for metrics and tests."""

    requests: int = 0
    failures: int = 0
    bytes: int = 0
    failovers_from: int = 0      # reads this replica started and another finished
    hedges: int = 0              # hedged requests sent to this replica
    # time to first byte, as a histogram over LATENCY_BUCKETS (last slot: above them all)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0


async def _next(it: AsyncIterator[bytes]) -> bytes:
    return await it.__anext__()


class Replica:
    """One origin in the pool, with its health."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.name = origin.name
        self.consecutive_failures = 0
        self.down_until = 0.0
        self.stats = ReplicaStats()

    def healthy(self, now: float) -> bool:
        return now >= self.down_until


class OriginPool(Origin):
    """An Origin made of replicas of the same content."""

    def __init__(
        self,
        origins: Sequence[Origin],
        *,
        retries: int = 2,
        backoff: float = 0.05,
        deadline: float = 10.0,
        failure_threshold: int = 3,
        cooldown: float = 10.0,
        probe_interval: float = 0.0,
        probe_key: str = "",
        hedge_after: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not origins:
            raise ValueError("an origin pool needs at least one origin")
        self.replicas = [Replica(o) for o in origins]
        self.name = "+".join(r.name for r in self.replicas) if len(origins) > 1 else origins[0].name
        self.retries = retries
        self.backoff = backoff
        self.deadline = deadline
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.probe_interval = probe_interval
        self.probe_key = probe_key
        self.hedge_after = hedge_after
        self._clock = clock
        self._rng = rng or random.Random()
        self._prober: asyncio.Task | None = None

    # -- health ---------------------------------------------------------------------------

    def order(self) -> list[Replica]:
        """Healthy replicas in configured order, then the others, soonest back first."""
        now = self._clock()
        up = [r for r in self.replicas if r.healthy(now)]
        down = sorted((r for r in self.replicas if not r.healthy(now)), key=lambda r: r.down_until)
        return up + down

    def _ok(self, r: Replica) -> None:
        if r.consecutive_failures >= self.failure_threshold:
            log.info("origin %r is back", r.name)
        r.consecutive_failures = 0
        r.down_until = 0.0

    def _failed(self, r: Replica, exc: BaseException) -> None:
        r.stats.failures += 1
        r.consecutive_failures += 1
        if r.consecutive_failures >= self.failure_threshold:
            if r.healthy(self._clock()):
                log.warning("origin %r out of rotation for %.0fs after %d failures: %s",
                            r.name, self.cooldown, r.consecutive_failures, exc)
            r.down_until = self._clock() + self.cooldown
        else:
            log.info("origin %r failed: %s", r.name, exc)

    def _pause(self, round_: int) -> float:
        """Full-jitter exponential backoff before round ``round_`` (1-based)."""
        return self._rng.uniform(0, self.backoff * (2 ** (round_ - 1)))

    # -- Origin interface -----------------------------------------------------------------

    async def _ask(self, key: str, attempt: Callable[[Replica, list[Replica]], Awaitable[tuple[Any, Replica]]]
                   ) -> tuple[Any, Replica]:
        """Run ``attempt(replica, the replicas after it)`` on replicas in order until one answers.

        "Not found" is the answer only when every replica says so (a replica may lag behind
        another), and a replica that said it is not asked again; if some replica could not be
        asked, its error is the answer. Rounds of retries with full-jitter backoff, bounded by
        the deadline (then OriginTimeout).
        """
        last: OriginError | None = None
        absent: set[Replica] = set()
        try:
            async with asyncio.timeout(self.deadline):
                for round_ in range(self.retries + 1):
                    order = [r for r in self.order() if r not in absent]
                    if not order:
                        break
                    if round_:
                        await asyncio.sleep(self._pause(round_))
                    for i, r in enumerate(order):
                        r.stats.requests += 1
                        try:
                            result, winner = await attempt(r, order[i + 1:])
                        except NotFound as exc:
                            self._ok(r)
                            absent.add(r)
                            if last is None or isinstance(last, NotFound):
                                last = exc
                            continue
                        except OriginError as exc:
                            self._failed(r, exc)
                            last = exc
                            if not exc.retryable and len(self.replicas) == 1:
                                raise
                            continue
                        self._ok(winner)
                        return result, winner
        except TimeoutError:
            raise OriginTimeout(self.name, f"no replica answered within {self.deadline:g}s"
                                + (f" (last error: {last.message})" if last else "")) from None
        assert last is not None
        raise last

    async def stat(self, key: str) -> ObjectInfo:
        async def attempt(r: Replica, rest: list[Replica]) -> tuple[ObjectInfo, Replica]:
            return await r.origin.stat(key), r

        info, _ = await self._ask(key, attempt)
        return info  # type: ignore[no-any-return]

    async def stat_read(self, key: str, start: int, end: int) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """``stat`` and the first bytes in one request where the replica can; same failover.

        Replicas are asked in order as for ``stat`` (hedged like ``read``); the bytes then
        come from the replica that answered, and if it fails mid-way the rest comes through
        ``read`` (every replica, the same validator), as a normal read would continue.
        """
        async def attempt(r: Replica, rest: list[Replica]) -> tuple[Any, Replica]:
            return await self._stat_read_first(key, start, end, r, rest)

        (info, it), r = await self._ask(key, attempt)
        return info, self._resume(key, info, min(start, info.size), min(end, info.size), it, r)

    async def _stat_read_first(
        self, key: str, start: int, end: int, r: Replica, rest: list[Replica],
    ) -> tuple[tuple[ObjectInfo, AsyncIterator[bytes]], Replica]:
        """``r.stat_read``, hedged on the next replica after ``hedge_after`` (see ``_first``)."""
        if self.hedge_after <= 0 or not rest:
            return await r.origin.stat_read(key, start, end), r
        loop = asyncio.get_running_loop()
        tasks: dict[asyncio.Task, Replica] = {loop.create_task(r.origin.stat_read(key, start, end)): r}
        try:
            done, _ = await asyncio.wait(set(tasks), timeout=self.hedge_after)
            if not done:
                h = rest[0]
                h.stats.requests += 1
                h.stats.hedges += 1
                log.info("hedging %r: %r is slow, asking %r too", key, r.name, h.name)
                tasks[loop.create_task(h.origin.stat_read(key, start, end))] = h
            pending = set(tasks)
            error: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for d in done:
                    if d.exception() is None:
                        winner = tasks.pop(d)
                        return d.result(), winner
                    error = d.exception()
                    if tasks[d] is not r and isinstance(error, OriginError) \
                            and not isinstance(error, (NotFound, ValidatorMismatch)):
                        self._failed(tasks[d], error)
            assert error is not None
            raise error
        finally:
            for task in tasks:            # the losers: cancel, and close what they opened
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                if task.done() and not task.cancelled() and task.exception() is None:
                    with contextlib.suppress(Exception):
                        await task.result()[1].aclose()  # type: ignore[attr-defined]

    async def _resume(self, key: str, info: ObjectInfo, start: int, end: int,
                      it: AsyncIterator[bytes], r: Replica) -> AsyncIterator[bytes]:
        """Yield ``it`` (bytes from ``start`` on); on failure, continue through ``read``."""
        loop = asyncio.get_running_loop()
        pos = start
        try:
            while pos < end:
                async with asyncio.timeout_at(loop.time() + self.deadline):
                    chunk = await it.__anext__()
                pos += len(chunk)
                r.stats.bytes += len(chunk)
                yield chunk
                chunk = b""            # hold no chunk while the next one is read
            return
        except StopAsyncIteration:
            self._failed(r, OriginError(r.name, f"short read of {key!r}"))
        except (OriginError, TimeoutError) as exc:
            if isinstance(exc, ValidatorMismatch):
                raise
            self._failed(r, exc if isinstance(exc, OriginError) else OriginError(r.name, "stalled"))
        finally:
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]
        r.stats.failovers_from += 1
        async for chunk in self._read(key, info, pos, end, avoid=r):
            yield chunk

    def read(self, key: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        return self._read(key, info, start, end)

    async def _read(self, key: str, info: ObjectInfo, start: int, end: int,
                    avoid: Replica | None = None) -> AsyncIterator[bytes]:
        """``read``; ``avoid`` (a replica that just failed) goes last in the first round."""
        loop = asyncio.get_running_loop()
        pos = start
        last: OriginError | None = None
        skip: set[Replica] = set()     # replicas holding another version, or nothing
        mismatches = 0
        tried = 0
        deadline_at = loop.time() + self.deadline
        for round_ in range(self.retries + 1):
            if round_:
                pause = self._pause(round_)
                if loop.time() + pause >= deadline_at:
                    break
                await asyncio.sleep(pause)
            order = [x for x in self.order() if x not in skip]
            if avoid is not None and round_ == 0 and avoid in order:
                order.remove(avoid)
                order.append(avoid)
            if not order:
                break
            i = 0
            while i < len(order):
                r = order[i]
                i += 1
                if loop.time() >= deadline_at:
                    break
                tried += 1
                began = pos
                it: AsyncIterator[bytes] | None = None
                try:
                    it, first, r = await self._first(key, info, pos, end, r, order[i:], deadline_at)
                    if first is None:      # an empty range
                        self._ok(r)
                        return
                    pos += len(first)
                    r.stats.bytes += len(first)
                    deadline_at = loop.time() + self.deadline
                    yield first
                    first = None           # the consumer has it: hold no chunk while reading on
                    while pos < end:
                        async with asyncio.timeout_at(deadline_at):
                            chunk = await it.__anext__()
                        pos += len(chunk)
                        r.stats.bytes += len(chunk)
                        deadline_at = loop.time() + self.deadline
                        yield chunk
                        chunk = b""
                    self._ok(r)
                    return
                except StopAsyncIteration:
                    short = OriginError(r.name, f"short read of {key!r}: {pos - start} of "
                                        f"{end - start} bytes")
                    self._failed(r, short)
                    last = short
                except ValidatorMismatch as exc:
                    mismatches += 1
                    skip.add(r)
                    last = exc
                except NotFound as exc:
                    skip.add(r)
                    last = exc
                except TimeoutError:
                    stalled = OriginError(r.name, f"no byte for {self.deadline:g}s")
                    self._failed(r, stalled)
                    last = stalled
                except OriginError as exc:
                    self._failed(r, exc)
                    last = exc
                    if not exc.retryable and len(self.replicas) == 1:
                        raise
                finally:
                    if it is not None:
                        with contextlib.suppress(Exception):
                            await it.aclose()  # type: ignore[attr-defined]
                if pos > began:
                    r.stats.failovers_from += 1
                    log.warning("origin %r failed at byte %d of %r; continuing on the next replica",
                                r.name, pos, key)
        if last is not None and mismatches and mismatches == tried:
            raise last
        if loop.time() >= deadline_at:
            raise OriginTimeout(self.name, f"no progress reading {key!r} for {self.deadline:g}s"
                                + (f" (last error: {last.message})" if last else ""))
        if last is None:
            last = OriginError(self.name, "no replica could be tried")
        raise last

    async def _first(
        self, key: str, info: ObjectInfo, pos: int, end: int, r: Replica, rest: list[Replica],
        deadline_at: float,
    ) -> tuple[AsyncIterator[bytes], bytes | None, Replica]:
        """Start a read on ``r`` and return (iterator, first chunk or None, winning replica).

        With hedging, a second replica from ``rest`` is asked too when ``r`` has not delivered
        a byte after ``hedge_after``; the loser is cancelled and closed.
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r.stats.requests += 1
        it = r.origin.read(key, info, pos, end).__aiter__()
        if pos >= end:
            return it, None, r
        if self.hedge_after <= 0 or not rest:
            try:
                async with asyncio.timeout_at(deadline_at):
                    first = await it.__anext__()
            except BaseException:
                with contextlib.suppress(Exception):
                    await it.aclose()  # type: ignore[attr-defined]
                raise
            self._sample(r, loop.time() - t0)
            return it, first, r
        tasks: dict[asyncio.Task, tuple[Replica, AsyncIterator[bytes]]] = {}
        t: asyncio.Task = loop.create_task(_next(it))
        tasks[t] = (r, it)
        try:
            done, _ = await asyncio.wait({t}, timeout=min(self.hedge_after, deadline_at - loop.time()))
            if not done and loop.time() < deadline_at:
                h = rest[0]
                h.stats.requests += 1
                h.stats.hedges += 1
                hit = h.origin.read(key, info, pos, end).__aiter__()
                ht: asyncio.Task = loop.create_task(_next(hit))
                tasks[ht] = (h, hit)
                log.info("hedging %r bytes %d-%d: %r is slow, asking %r too", key, pos, end - 1,
                         r.name, h.name)
            pending = set(tasks)
            errors: list[BaseException] = []
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=max(0.0, deadline_at - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise TimeoutError
                for d in done:
                    exc = d.exception()
                    if exc is None:
                        winner, wit = tasks.pop(d)
                        self._sample(winner, loop.time() - t0)
                        return wit, d.result(), winner
                    errors.append(exc)
                    loser, _ = tasks[d]
                    if loser is not r and isinstance(exc, OriginError) \
                            and not isinstance(exc, (NotFound, ValidatorMismatch)):
                        self._failed(loser, exc)   # the caller accounts for r itself
            raise errors[-1]
        finally:
            for task, (_, tit) in tasks.items():
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                with contextlib.suppress(Exception):
                    await tit.aclose()  # type: ignore[attr-defined]

    @staticmethod
    def _sample(r: Replica, seconds: float) -> None:
        st = r.stats
        st.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        st.latency_sum += seconds
        st.latency_count += 1

    # -- active health --------------------------------------------------------------------

    def start(self) -> None:
        """Start the prober (when ``probe_interval`` is set). Call inside the running loop."""
        if self.probe_interval > 0 and self._prober is None:
            self._prober = asyncio.get_running_loop().create_task(self._probe_loop())

    async def probe_once(self) -> None:
        """Stat ``probe_key`` on every replica; any answer, even "not found", means up."""
        for r in self.replicas:
            try:
                async with asyncio.timeout(min(self.deadline, max(self.probe_interval, 1.0))):
                    await r.origin.stat(self.probe_key or ".edge-probe")
                self._ok(r)
            except NotFound:
                self._ok(r)
            except (OriginError, TimeoutError) as exc:
                r.consecutive_failures = max(r.consecutive_failures, self.failure_threshold - 1)
                self._failed(r, exc)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            await self.probe_once()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(BaseException):
                await self._prober
        for r in self.replicas:
            await r.origin.close()
