"""Section ``async``: shared_queue's asyncio API beside the same workloads with a sync consumer.

shared_queue only (``n/a`` for the others, which have no async API):
``wakeup_async`` is ``wakeup`` with the child awaiting ``q.get_async()`` inside
``asyncio.run``; ``single_1x1_async`` is ``single_1x1`` with the consumer awaiting
``get_async()`` (the producer stays a sync process).  The section shows the sync rows
too, and the report gives async / sync of each pair (``ASYNC_PAIRS``).

``async_loop_lag`` -- what waiting costs the event loop: in one process, 50 ``get_async``
wait 0.5 s on an empty queue and time out, while a ticker on the same loop sleeps 10 ms
over and over; the row is the median of how late each tick wakes, in microseconds (an idle
loop's own lateness included).  Lower is better.  (tests/test_async.py checks only that the
loop keeps running; how steady it stays is measured here.)
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import time
from collections.abc import Callable
from typing import Any

from ..common import CTX, OP_TIMEOUT, BenchError
from ..impls.base import Impl
from ..procs import Ending, children, queues, wait_barrier
from .base import Config, Workload, base_sq
from .small import single, wakeup


def _get_async(impl: Impl, q: Any) -> Callable[..., Any]:
    get_async = impl.ops(q).get_async
    if get_async is None:
        raise BenchError(f"{impl.label} has no get_async")
    return get_async


def _async_consumer(impl: Impl, endpoint, barrier, batch: int, ending: Ending) -> tuple[int, float]:
    """small._consumer with ``await get_async()`` in asyncio.run (single items only)."""
    if batch > 1:
        raise ValueError("the async consumer takes single items")
    q = impl.attach(endpoint)
    try:
        impl.bind_consumer(q)
        get_async = _get_async(impl, q)

        async def drain() -> tuple[int, float]:
            barrier.wait(OP_TIMEOUT)  # inside the loop: its start-up is not timed
            count = 0
            while (await get_async()) is not None:
                count += 1
            return count, time.perf_counter()

        return asyncio.run(drain())
    finally:
        ending.consumer_done()
        impl.detach(q)


def _async_wake_consumer(impl: Impl, endpoint, barrier, n: int) -> list[float]:
    """small._wake_consumer with ``await get_async()`` in asyncio.run."""
    q = impl.attach(endpoint)
    try:
        impl.bind_consumer(q)
        get_async = _get_async(impl, q)

        async def wake() -> list[float]:
            barrier.wait(OP_TIMEOUT)
            out = []
            for _ in range(n):
                sent = await get_async()
                out.append(time.perf_counter() - sent)
            return out

        return asyncio.run(wake())
    finally:
        impl.detach(q)


LAG_WAITERS = 50  # get_async calls waiting at once
LAG_WAIT = 0.5  # seconds each waits before it times out
LAG_TICK = 0.010  # the ticker's sleep


def _loop_lag_child(impl: Impl, endpoint, barrier) -> list[float]:
    """Lateness of each tick of a LAG_TICK ticker while LAG_WAITERS get_async wait and time out."""
    q = impl.attach(endpoint)
    try:
        get_async = _get_async(impl, q)

        async def scenario() -> list[float]:
            lags: list[float] = []
            stop = asyncio.Event()

            async def ticker() -> None:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    await asyncio.sleep(LAG_TICK)
                    lags.append(time.perf_counter() - t0 - LAG_TICK)

            barrier.wait(OP_TIMEOUT)
            ticking = asyncio.ensure_future(ticker())
            results = await asyncio.gather(
                *(get_async(timeout=LAG_WAIT) for _ in range(LAG_WAITERS)),
                return_exceptions=True,
            )
            stop.set()
            await ticking
            wrong = [r for r in results if not isinstance(r, queue.Empty)]
            if wrong:
                raise BenchError(f"get_async on an empty queue gave {wrong[0]!r}, not Empty")
            return lags

        return asyncio.run(scenario())
    finally:
        impl.detach(q)


def loop_lag(impl: Impl, cfg: Config) -> float:
    """Median us by which the event loop's ticks are late while get_async calls wait."""
    barrier = CTX.Barrier(2)
    with queues(impl, 1, cfg.capacity, cfg.item_size) as (h,):
        spec = (_loop_lag_child, (impl, h.endpoint, barrier))
        with children([spec], barrier) as collect:
            wait_barrier(barrier)
            (lags,) = collect()
    return statistics.median(lags) * 1e6


ROWS = [
    Workload(
        "wakeup_async",
        "wake-up latency, await get_async()",
        "us",
        False,
        lambda impl, cfg: wakeup(impl, cfg, consumer=_async_wake_consumer),
        base_sq,
    ),
    Workload(
        "single_1x1_async",
        "1p->1c small dicts, await get_async()",
        "items/s",
        True,
        single(1, 1, consumer=_async_consumer),
        base_sq,
    ),
    Workload(
        "async_loop_lag",
        f"event-loop tick lag, {LAG_WAITERS} get_async waiting",
        "us",
        False,
        loop_lag,
        base_sq,
    ),
]
SECTION = ["wakeup", "wakeup_async", "single_1x1", "single_1x1_async", "async_loop_lag"]
ASYNC_PAIRS = [("wakeup_async", "wakeup"), ("single_1x1_async", "single_1x1")]
