"""The asyncio layer: put_async, get_async, put_batch_async, get_batch_async.

What is pinned here: the async methods share the sync core (same errors, same all-or-nothing
batches); waiting takes neither a thread per coroutine nor the event loop (no sleep-polling, the
loop keeps ticking); cancellation leaves the queue unchanged (a cancelled get returned its item
or left it queued, a put that raised CancelledError put nothing); timeouts; sync processes and
sync threads on the other side; close() waking the waiters.

pytest-asyncio is deliberately not used: each test drives its scenario with ``asyncio.run``,
bounded by ``asyncio.wait_for`` (and pytest-timeout around the whole test). A test that needs a
call to be waiting waits until it is (``blocked``), it does not sleep for it. Latency and
throughput are measured in ``benchmarks/``, not asserted here: a slow machine must not fail a
correct build.

Times are on ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

import _async_children
import pytest
from _support import TIMEOUT, ctx_fixture, drain, running, wait_blocked, wait_blocked_async

from shared_queue import Empty, Full, SharedMemoryQueue

pytestmark = pytest.mark.timeout(60)

MakeQueue = Callable[..., SharedMemoryQueue]
T = TypeVar("T")

EARLY = 0.010  # a timed wait may end this much before its timeout (clock granularity)
LATE = 0.5  # ... and this much after it (scheduling slack on a loaded machine)
IMMEDIATE = 0.1  # a call that must not wait returns within this
# A waiting coroutine returns within WAKE_BOUND of the operation that unblocks it. Generous, so
# load does not fail it; the recovery_interval of queues whose wake-ups are checked is far longer
# (NO_RECOVERY), so a return within it proves the semaphore post woke the waiter, not the
# periodic re-check.
WAKE_BOUND = 5.0
NO_RECOVERY = 30.0
CLOSE_BOUND = 2.0  # close() returns, and its waiters raise, within this
CLOSED = re.compile(r"^queue '[^']+': this handle is closed$")


# -- helpers --------------------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T], bound: float = TIMEOUT) -> T:
    """Run ``coro`` in a fresh event loop, failing (not hanging) after ``bound`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, bound))


def assert_counts_sane(q: SharedMemoryQueue) -> None:
    """The queue is empty and takes exactly ``capacity`` items, then gives them back in order."""
    assert drain(q) == []
    for i in range(q.capacity):
        q.put_nowait(("sane", i))
    with pytest.raises(Full):
        q.put_nowait("one too many")
    assert drain(q) == [("sane", i) for i in range(q.capacity)]
    with pytest.raises(Empty):
        q.get_nowait()


async def blocked(aw: Awaitable[T], q: SharedMemoryQueue, waiters: int = 1) -> asyncio.Future[T]:
    """Start ``aw`` as a task; return it once it waits, after checking that it did not complete.

    It waits once it ran up to its await (a loop iteration) and ``waiters`` threads sleep on
    ``q``'s semaphores: a handle's coroutines wait through one thread per semaphore.
    """
    task = asyncio.ensure_future(aw)
    await asyncio.sleep(0)  # the task runs up to its first await
    await wait_blocked_async(q, waiters)
    assert not task.done(), "appeared not to block"
    return task


async def timed(aw: Awaitable[T], bound: float = TIMEOUT) -> tuple[T, float]:
    """``(result, seconds it took)`` of ``aw``, bounded by ``bound``."""
    t0 = time.monotonic()
    result = await asyncio.wait_for(aw, bound)
    return result, time.monotonic() - t0


@pytest.fixture
def other(qname: str) -> Iterator[Callable[[], SharedMemoryQueue]]:
    """Factory for more handles of the test's queue (create it first); closed afterwards."""
    made: list[SharedMemoryQueue] = []

    def attach() -> SharedMemoryQueue:
        h = SharedMemoryQueue(qname, recovery_interval=NO_RECOVERY)
        made.append(h)
        return h

    yield attach
    for h in made:
        h.close()


# -- the sync core, reached through await ---------------------------------------------------


def test_put_async_get_async_round_trip_in_order(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=8)

    async def scenario() -> None:
        for i in range(20):  # more than the capacity, so the ring wraps
            await q.put_async(("item", i))
            assert await q.get_async() == ("item", i)
        await q.put_batch_async([1, 2, 3])
        await q.put_async(4)
        assert await q.get_batch_async(2) == [1, 2]
        assert await q.get_batch_async(10) == [3, 4]  # 1..max_items: what is there
        await q.put_batch_async([])  # an empty batch is a no-op
        assert q.empty()

    run(scenario())
    assert q.get_metrics()["total_puts"] == 24


def test_async_errors_are_the_sync_ones(make_queue: MakeQueue) -> None:
    """Too large, unpicklable, batch over capacity, bad max_items: refused before any wait."""
    q = make_queue(capacity=2, item_size=64)
    q.put_nowait("a")
    q.put_nowait("b")  # full: a put that waited would hang instead of raising

    async def scenario() -> None:
        with pytest.raises(ValueError, match=r"exceeds item_size=64 of queue"):
            await q.put_async(b"x" * 100)
        with pytest.raises(TypeError, match=r"cannot be pickled"):
            await q.put_async(threading.Lock())
        with pytest.raises(ValueError, match=r"^batch of 3 items exceeds capacity=2 of queue"):
            await q.put_batch_async([1, 2, 3])
        with pytest.raises(ValueError, match=r"max_items must be between 1 and"):
            await q.get_batch_async(0)

    run(scenario(), bound=5)
    assert drain(q) == ["a", "b"]


def test_get_async_waits_for_an_item(make_queue: MakeQueue, other: Any) -> None:
    q = make_queue(capacity=4, recovery_interval=NO_RECOVERY)
    producer = other()

    async def scenario() -> None:
        task = await blocked(q.get_async(), q)
        producer.put_nowait("late")
        assert await timed(task, WAKE_BOUND) == ("late", pytest.approx(0, abs=WAKE_BOUND))
        task = await blocked(q.get_batch_async(5), q)
        producer.put_batch([1, 2])
        items, _ = await timed(task, WAKE_BOUND)
        assert items in ([1], [1, 2])
        assert items + drain(q) == [1, 2]

    run(scenario())


def test_put_async_waits_for_a_slot(make_queue: MakeQueue, other: Any) -> None:
    q = make_queue(capacity=2, recovery_interval=NO_RECOVERY)
    consumer = other()
    q.put_nowait("a")
    q.put_nowait("b")

    async def scenario() -> None:
        task = await blocked(q.put_async("c"), q)
        assert consumer.get_nowait() == "a"
        await timed(task, WAKE_BOUND)
        assert drain(q) == ["b", "c"]

    run(scenario())


def test_put_batch_async_is_all_or_nothing(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=4)
    for i in range(3):
        q.put_nowait(i)

    async def scenario() -> None:
        with pytest.raises(Full):
            await q.put_batch_async(["x", "y"], timeout=0)
        t0 = time.monotonic()
        with pytest.raises(Full):
            await q.put_batch_async(["x", "y"], timeout=0.3)
        assert 0.3 - EARLY <= time.monotonic() - t0 <= 0.3 + LATE
        assert q.qsize() == 3  # not one of the two went in

    run(scenario(), bound=10)
    assert drain(q) == [0, 1, 2]


def test_put_batch_async_waits_for_room_for_the_whole_batch(make_queue: MakeQueue) -> None:
    """Waits while only part of the batch fits; completes once all of it does."""
    q = make_queue(capacity=4, recovery_interval=0.2)  # short: see the next test for why
    for i in range(4):
        q.put_nowait(i)

    async def scenario() -> None:
        task = await blocked(q.put_batch_async(["x", "y"]), q)
        assert q.get_nowait() == 0  # room for one of the two: keeps waiting
        await asyncio.sleep(0.5)
        assert not task.done(), "put part of a batch, or did not wait for room for all of it"
        assert q.get_nowait() == 1
        await asyncio.wait_for(task, 5)

    run(scenario())
    assert drain(q) == [2, 3, "x", "y"]


def test_put_batch_async_wakes_promptly_when_room_frees(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=4, recovery_interval=NO_RECOVERY)
    for i in range(4):
        q.put_nowait(i)

    async def scenario() -> None:
        task = await blocked(q.put_batch_async(["x", "y"]), q)
        assert q.get_nowait() == 0
        assert q.get_nowait() == 1
        try:
            await asyncio.wait_for(task, 2 * WAKE_BOUND)
        except asyncio.TimeoutError:
            pytest.fail("put_batch_async still waiting although the whole batch fits")

    run(scenario())
    assert drain(q) == [2, 3, "x", "y"]


# -- timeouts ---------------------------------------------------------------------------------


OPS: dict[str, Callable[[SharedMemoryQueue, float | None], Awaitable[Any]]] = {
    "get_async": lambda q, t: q.get_async(timeout=t),
    "get_batch_async": lambda q, t: q.get_batch_async(3, timeout=t),
    "put_async": lambda q, t: q.put_async("new", timeout=t),
    "put_batch_async": lambda q, t: q.put_batch_async(["new", "new"], timeout=t),
}


def blocked_queue(make_queue: MakeQueue, op: str) -> SharedMemoryQueue:
    """A queue on which ``op`` must wait: empty for gets, full for puts."""
    q = make_queue(capacity=3)
    if op.startswith("put"):
        for i in range(3):
            q.put_nowait(i)
    return q


@pytest.mark.parametrize("op", list(OPS))
def test_timeout_raises_after_the_timeout(make_queue: MakeQueue, op: str) -> None:
    q = blocked_queue(make_queue, op)
    expected = Full if op.startswith("put") else Empty

    async def scenario() -> float:
        t0 = time.monotonic()
        with pytest.raises(expected):
            await OPS[op](q, 0.3)
        return time.monotonic() - t0

    elapsed = run(scenario(), bound=10)
    assert 0.3 - EARLY <= elapsed <= 0.3 + LATE
    assert drain(q) == ([0, 1, 2] if op.startswith("put") else [])


@pytest.mark.parametrize("op", list(OPS))
def test_timeout_zero_is_an_immediate_try(make_queue: MakeQueue, op: str) -> None:
    q = blocked_queue(make_queue, op)
    expected = Full if op.startswith("put") else Empty

    async def scenario() -> None:
        t0 = time.monotonic()
        with pytest.raises(expected):
            await OPS[op](q, 0)
        assert time.monotonic() - t0 < IMMEDIATE
        # ... and succeeds when it can.
        if op.startswith("put"):
            drain(q)
        else:
            q.put_nowait("there")
        await OPS[op](q, 0)

    run(scenario(), bound=10)
    assert drain(q) == (["new"] if op == "put_async" else ["new", "new"] if "put" in op else [])


@pytest.mark.parametrize("op", list(OPS))
def test_negative_timeout_raises_value_error(make_queue: MakeQueue, op: str) -> None:
    q = blocked_queue(make_queue, op)
    before = q.qsize()

    async def scenario() -> None:
        with pytest.raises(ValueError, match=r"'timeout' must be a non-negative number"):
            await OPS[op](q, -1)

    run(scenario(), bound=5)
    assert q.qsize() == before


# -- how coroutines wait ----------------------------------------------------------------------


def test_200_awaiters_do_not_mean_200_threads(make_queue: MakeQueue, other: Any) -> None:
    """Getters wait on one thread per semaphore per handle, not one per coroutine."""
    q = make_queue(capacity=256, recovery_interval=NO_RECOVERY)
    peer = other()

    async def scenario() -> tuple[int, list[int]]:
        base = threading.active_count()
        getters = [asyncio.ensure_future(q.get_async()) for _ in range(200)]
        await asyncio.sleep(0)  # each getter runs up to its await
        await wait_blocked_async(q)
        assert not any(t.done() for t in getters)
        waiting = threading.active_count() - base
        peer.put_batch(range(200))
        got = await asyncio.wait_for(asyncio.gather(*getters), 10)
        # And 200 putters on a full queue.
        q.put_batch(range(256))
        putters = [asyncio.ensure_future(q.put_async(("p", i))) for i in range(200)]
        await asyncio.sleep(0)
        await wait_blocked_async(q)
        assert not any(t.done() for t in putters)
        assert threading.active_count() - base <= 2, threading.enumerate()
        assert [peer.get_nowait() for _ in range(200)] == list(range(200))
        await asyncio.wait_for(asyncio.gather(*putters), 10)
        return waiting, got

    waiting, got = run(scenario())
    assert waiting <= 1, "more than one waiter thread for 200 get_async"
    assert sorted(got) == list(range(200))
    left = drain(q)
    assert left[:56] == list(range(200, 256))
    assert sorted(left[56:]) == [("p", i) for i in range(200)]


def test_event_loop_keeps_running_while_awaiters_wait(make_queue: MakeQueue) -> None:
    """50 get_async wait 0.5 s each at the same time, not one after another, and the loop runs
    another task meanwhile. (How steady its beat stays is a benchmark, not a test.)"""
    q = make_queue(capacity=4)

    async def scenario() -> tuple[int, list[Any], float]:
        ticks_while_waiting = 0
        getters = [asyncio.ensure_future(q.get_async(timeout=0.5)) for _ in range(50)]

        async def ticker() -> None:
            nonlocal ticks_while_waiting
            while not all(g.done() for g in getters):
                await asyncio.sleep(0.010)
                ticks_while_waiting += not all(g.done() for g in getters)

        t0 = time.monotonic()
        ticking = asyncio.ensure_future(ticker())
        results = await asyncio.gather(*getters, return_exceptions=True)
        took = time.monotonic() - t0
        await ticking
        return ticks_while_waiting, results, took

    ticks, results, took = run(scenario(), bound=20)
    assert all(isinstance(r, Empty) for r in results), results
    assert ticks >= 1, "the loop ran nothing else while the getters waited"
    assert took < 50 * 0.5 / 2, f"50 timeouts of 0.5 s took {took:.1f} s: they did not overlap"


def test_waiting_costs_no_cpu(make_queue: MakeQueue) -> None:
    """No sleep-polling: 50 coroutines waiting 1 s burn next to no CPU, and wake on a post."""
    q = make_queue(capacity=64, recovery_interval=NO_RECOVERY)

    async def scenario() -> tuple[float, list[Any]]:
        getters = [asyncio.ensure_future(q.get_async()) for _ in range(50)]
        await asyncio.sleep(0)
        await wait_blocked_async(q)
        cpu0 = time.process_time()
        await asyncio.sleep(1.0)
        cpu = time.process_time() - cpu0
        assert not any(t.done() for t in getters)
        q.put_batch(range(50))
        got = await asyncio.wait_for(asyncio.gather(*getters), WAKE_BOUND)
        return cpu, got

    cpu, got = run(scenario())
    assert cpu < 0.1, f"{cpu:.3f} s of CPU while coroutines waited 1 s: polling?"
    assert sorted(got) == list(range(50))


# -- cancellation -----------------------------------------------------------------------------


def test_cancelled_waiting_get_leaves_the_item(make_queue: MakeQueue, other: Any) -> None:
    q = make_queue(capacity=4, recovery_interval=NO_RECOVERY)
    peer = other()

    async def scenario() -> None:
        task = await blocked(q.get_async(), q)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        peer.put_nowait("kept")
        # A later get_async, and the sync side, still see it: the cancelled waiter took nothing.
        assert await asyncio.wait_for(q.get_async(), WAKE_BOUND) == "kept"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(q.get_async(), 0.1)
        peer.put_nowait("again")
        assert peer.get_nowait() == "again"

    run(scenario())


def test_cancelled_waiting_put_puts_nothing(make_queue: MakeQueue, other: Any) -> None:
    q = make_queue(capacity=2, recovery_interval=NO_RECOVERY)
    peer = other()
    q.put_batch(["a", "b"])

    async def scenario() -> None:
        for aw in (q.put_async("never"), q.put_batch_async(["never", "never"])):
            task = await blocked(aw, q)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert peer.get_nowait() == "a"
        assert peer.get_nowait() == "b"
        await asyncio.sleep(0.1)
        assert q.empty(), "a cancelled put_async put its item"
        await asyncio.wait_for(q.put_async("c"), WAKE_BOUND)

    run(scenario())
    assert drain(q) == ["c"]


@pytest.mark.parametrize("side", ["get", "put"])
def test_cancel_racing_the_wake_up(make_queue: MakeQueue, other: Any, side: str) -> None:
    """Cancel at 0..4 loop iterations after the unblocking op: never lost, never duplicated."""
    q = make_queue(capacity=1, recovery_interval=NO_RECOVERY)
    peer = other()
    rng = random.Random(1234)

    async def scenario() -> collections.Counter[str]:
        outcomes: collections.Counter[str] = collections.Counter()
        for i in range(150):
            if side == "get":
                task = asyncio.ensure_future(q.get_async())
            else:
                peer.put_nowait(("old", i))
                task = asyncio.ensure_future(q.put_async(("new", i)))
            await asyncio.sleep(0.002)
            if side == "get":
                peer.put_nowait(("item", i))
            else:
                assert peer.get_nowait() == ("old", i)
            for _ in range(rng.randrange(5)):
                await asyncio.sleep(0)
            if rng.random() < 0.3:
                await asyncio.sleep(0.001)
            task.cancel()
            await asyncio.wait({task}, timeout=WAKE_BOUND)
            assert task.done(), "cancelled task did not finish"
            left = drain(peer)
            if task.cancelled():
                outcomes["cancelled"] += 1
                assert left == ([("item", i)] if side == "get" else []), (i, left)
            else:
                outcomes["completed"] += 1
                if side == "get":
                    assert (task.result(), left) == (("item", i), [])
                else:
                    assert left == [("new", i)]
        return outcomes

    outcomes = run(scenario())
    assert outcomes["cancelled"] + outcomes["completed"] == 150
    assert_counts_sane(q)


async def chaos(q: SharedMemoryQueue, seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    """100 consumers and 20 producers, every operation at risk of cancellation.

    Returns (items whose put completed, items whose put was cancelled or timed out, items gets
    returned). Every operation either completed, timed out or was cancelled; any other outcome
    is raised.
    """
    rng = random.Random(seed)
    put_done: list[Any] = []
    put_undone: list[Any] = []
    got: list[Any] = []
    inflight: set[asyncio.Future[Any]] = set()

    async def attempt(fn: Callable[..., Awaitable[Any]], *args: Any) -> asyncio.Future[Any]:
        # The operation starts inside its task, so a task cancelled before it first runs
        # leaves no never-awaited coroutine behind.
        async def op() -> Any:
            return await fn(*args)

        task = asyncio.ensure_future(op())
        inflight.add(task)
        try:
            await asyncio.wait({task})
        finally:
            inflight.discard(task)
        return task

    async def within(t: float, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await asyncio.wait_for(fn(*args), t)

    def small() -> float:
        return rng.uniform(0.0005, 0.02)

    async def producer(p: int) -> None:
        for s in range(40):
            roll = rng.random()
            if roll < 0.15:
                items: list[Any] = [(p, s, k) for k in range(rng.randint(2, 3))]
                task = await attempt(within, small(), q.put_batch_async, items)
            else:
                items = [(p, s, 0)]
                if roll < 0.45:
                    task = await attempt(within, small(), q.put_async, items[0])
                elif roll < 0.6:
                    task = await attempt(q.put_async, items[0], small())
                else:  # only the canceller stops it
                    task = await attempt(q.put_async, items[0])
            if task.cancelled() or isinstance(task.exception(), (asyncio.TimeoutError, Full)):
                put_undone.extend(items)
            elif task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            else:
                put_done.extend(items)

    stop = False

    async def consumer() -> None:
        while not stop:
            roll = rng.random()
            if roll < 0.3:
                task = await attempt(within, small(), q.get_async)
            elif roll < 0.45:
                task = await attempt(q.get_async, small())
            elif roll < 0.6:
                task = await attempt(within, small(), q.get_batch_async, rng.randint(1, 4))
            else:  # only the canceller stops it
                task = await attempt(q.get_async)
            if task.cancelled() or isinstance(task.exception(), (asyncio.TimeoutError, Empty)):
                continue
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            result = task.result()
            got.extend(result if isinstance(result, list) else [result])
            # Slower than the producers, so the queue is often full and puts wait too.
            await asyncio.sleep(rng.uniform(0.01, 0.08))

    async def canceller() -> None:
        while True:
            await asyncio.sleep(rng.uniform(0.0002, 0.002))
            if inflight:
                rng.choice(sorted(inflight, key=id)).cancel()

    chaos_task = asyncio.ensure_future(canceller())
    consumers = [asyncio.ensure_future(consumer()) for _ in range(100)]
    await asyncio.gather(*(producer(p) for p in range(20)))
    stop = True  # at once, so items are left for the drain
    while not all(c.done() for c in consumers):  # the last getters wait on an empty queue
        for task in list(inflight):
            task.cancel()
        await asyncio.sleep(0.01)
    await asyncio.gather(*consumers)  # re-raises a consumer's unexpected error
    chaos_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await chaos_task
    return put_done, put_undone, got


@pytest.mark.parametrize("seed", range(1, 9))
def test_random_cancellations_lose_and_duplicate_nothing(make_queue: MakeQueue, seed: int) -> None:
    """Outcomes only, whatever the timing: every operation ends (within the bound of ``run``),
    completed or without effect; every item whose put completed comes out exactly once, none
    whose put did not; and the queue's counts are intact after it."""
    q = make_queue(capacity=8)
    put_done, put_undone, got = run(chaos(q, seed))
    drained = drain(q)
    delivered = collections.Counter(got + drained)
    assert not set(put_undone) & set(delivered), "an item whose put was cancelled came out"
    dups = [item for item, n in delivered.items() if n > 1]
    assert not dups, f"duplicated: {dups[:5]}"
    lost = collections.Counter(put_done) - delivered
    assert not lost, f"lost: {sorted(lost)[:5]}"
    assert delivered == collections.Counter(put_done)
    assert_counts_sane(q)


# -- the other side: sync processes and sync threads -------------------------------------------


ctx = ctx_fixture("fork", "spawn")


def test_sync_producer_processes_wake_async_consumers(
    ctx: BaseContext, make_queue: MakeQueue
) -> None:
    """Two sync producer processes, 20 async consumers that run dry and wait again: every item
    exactly once. (How long an item waits for its consumer is a benchmark, not a test.)"""
    q = make_queue(capacity=16, recovery_interval=NO_RECOVERY)
    n = 150
    go = ctx.Event()
    targets = [(_async_children.produce, (q.name, p, n, go, 25)) for p in range(2)]
    with running(ctx, *targets) as procs:

        async def scenario() -> list[tuple[int, int]]:
            got: list[tuple[int, int]] = []
            done = asyncio.Event()

            async def consumer() -> None:
                while True:
                    got.append(await q.get_async())
                    if len(got) == 2 * n:
                        done.set()

            consumers = [asyncio.ensure_future(consumer()) for _ in range(20)]
            await asyncio.sleep(0)
            await wait_blocked_async(q)
            go.set()
            while not done.is_set():
                await asyncio.wait({asyncio.ensure_future(done.wait())}, timeout=0.2)
                failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not failed, f"a producer died: {failed}"
            for c in consumers:
                c.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            return got

        got = run(scenario())
    assert sorted(got) == [(p, s) for p in range(2) for s in range(n)]
    assert drain(q) == []


def test_sync_threads_and_coroutines_share_one_handle(make_queue: MakeQueue) -> None:
    """Threads put/get while coroutines put_async/get_async, all on one handle: exact count."""
    q = make_queue(capacity=16)
    n = 200
    got: list[Any] = []
    all_in = threading.Event()
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # reported by the test, not swallowed
                errors.append(exc)
                all_in.set()

        return body

    def sync_producer(k: int) -> None:
        for i in range(n):
            q.put(("thread", k, i), timeout=TIMEOUT)

    def sync_consumer() -> None:
        while not all_in.is_set():
            with contextlib.suppress(Empty):
                got.append(q.get(timeout=0.05))
                if len(got) >= 4 * n:
                    all_in.set()

    threads = [threading.Thread(target=guarded(lambda k=k: sync_producer(k))) for k in range(2)]
    threads.append(threading.Thread(target=guarded(sync_consumer)))

    async def scenario() -> None:
        async def producer(k: int) -> None:
            for i in range(n):
                if i % 10 == 9:
                    await q.put_batch_async([("coro", k, i)])
                else:
                    await q.put_async(("coro", k, i))

        async def consumer(j: int) -> None:
            while not all_in.is_set():
                try:
                    if j % 2:
                        got.extend(await q.get_batch_async(3, timeout=0.05))
                    else:
                        got.append(await q.get_async(timeout=0.05))
                except Empty:
                    continue
                if len(got) >= 4 * n:
                    all_in.set()

        for t in threads:
            t.start()
        await asyncio.gather(*(producer(k) for k in range(2)), *(consumer(j) for j in range(4)))

    try:
        run(scenario())
    finally:
        all_in.set()
        for t in threads:
            t.join(TIMEOUT)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    expected = [(who, k, i) for who in ("thread", "coro") for k in range(2) for i in range(n)]
    assert sorted(got) == sorted(expected)
    assert_counts_sane(q)


# -- close ------------------------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["loop", "thread"])
@pytest.mark.parametrize("op", list(OPS))
def test_close_wakes_waiters_with_value_error(
    make_queue: MakeQueue, other: Any, op: str, closer: str
) -> None:
    blocked_queue(make_queue, op)
    peer = other()
    handle = other()

    async def scenario() -> tuple[float, float]:
        waiters = [asyncio.ensure_future(OPS[op](handle, None)) for _ in range(10)]
        await asyncio.sleep(0)
        await wait_blocked_async(handle)
        assert not any(w.done() for w in waiters), "appeared not to block"
        t0 = time.monotonic()
        if closer == "loop":
            handle.close()
        else:
            await asyncio.get_running_loop().run_in_executor(None, handle.close)
        close_took = time.monotonic() - t0
        results = await asyncio.wait_for(
            asyncio.gather(*waiters, return_exceptions=True), CLOSE_BOUND
        )
        for r in results:
            assert isinstance(r, ValueError) and CLOSED.match(str(r)), repr(r)
        with pytest.raises(ValueError, match=CLOSED):
            await OPS[op](handle, None)
        return close_took, time.monotonic() - t0

    close_took, woke = run(scenario())
    assert close_took < CLOSE_BOUND, f"close() took {close_took:.2f} s"
    assert woke < CLOSE_BOUND, f"waiters raised {woke:.2f} s after close()"
    # The queue itself is untouched, and other handles carry on.
    assert drain(peer) == ([0, 1, 2] if op.startswith("put") else [])
    assert_counts_sane(peer)


def test_close_does_not_hang_when_others_wait_on_the_same_semaphore(
    make_queue: MakeQueue, qname: str
) -> None:
    q = make_queue(capacity=4)
    peer = SharedMemoryQueue(qname, recovery_interval=NO_RECOVERY)
    handle = SharedMemoryQueue(qname, recovery_interval=4.0)  # the hang lasts this long
    got: list[Any] = []
    sleeper = threading.Thread(target=lambda: got.append(peer.get(timeout=TIMEOUT)), daemon=True)
    sleeper.start()
    wait_blocked(q)  # the sleeper is first in the semaphore's queue of sleepers

    async def scenario() -> float:
        waiter = await blocked(handle.get_async(), handle, waiters=2)
        t0 = time.monotonic()
        handle.close()
        with pytest.raises(ValueError, match=CLOSED):
            await asyncio.wait_for(waiter, CLOSE_BOUND)
        return time.monotonic() - t0

    try:
        took = run(scenario())
    finally:
        handle.close()
        q.put_nowait("release the sleeper")
        sleeper.join(TIMEOUT)
        peer.close()
    assert got == ["release the sleeper"]
    assert took < CLOSE_BOUND, f"close() and the ValueError took {took:.2f} s"


@pytest.mark.parametrize("side", ["put", "get"])
def test_an_awaited_wait_counts_in_the_metrics(make_queue: Any, side: str) -> None:
    """put_async/get_async that had to wait count in put_waits/get_waits and their seconds,
    as a blocking put/get does, so back-pressure shows in an asyncio pipeline."""
    q: SharedMemoryQueue = make_queue(capacity=1, item_size=64)
    if side == "put":
        q.put("full")

    async def scenario() -> None:
        op = q.put_async("x", timeout=TIMEOUT) if side == "put" else q.get_async(TIMEOUT)
        task = asyncio.ensure_future(op)
        await wait_blocked_async(q)
        unblock = q.get if side == "put" else (lambda: q.put("y"))
        await asyncio.to_thread(unblock)
        await task

    run(scenario())
    metrics = q.get_metrics()
    waits, seconds = metrics[f"{side}_waits"], metrics[f"{side}_wait_seconds"]
    other = "get" if side == "put" else "put"
    assert (waits, metrics[f"{other}_waits"]) == (1, 0)
    assert seconds > 0
