"""The asyncio layer: ``SharedMemoryQueue``, the sync core (``_queue.QueueCore``) plus async
methods, and waiting for a semaphore from asyncio without a thread per waiter or polling.

The core knows nothing of asyncio: an async call is the core's non-blocking try, and in between
an await on the semaphore the core would have slept on. The await is the only suspension point,
so cancellation cannot split an operation.

One ``SemWaiter`` per semaphore per queue handle owns one daemon thread. While coroutines
wait, that thread sleeps in the semaphore's ``sem_timedwait``; each count it takes goes to the
oldest waiting coroutine (through its loop's ``call_soon_threadsafe``), and each
``recovery_interval`` without a count wakes every waiter to re-check the queue, as the sync path
does. A count whose coroutine was cancelled or timed out goes back to the semaphore, so a
cancelled waiter never swallows an item or a free slot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import posix_ipc

from . import _sync
from ._base import _check_timeout, _positive_int
from ._errors import Empty, Full
from ._queue import _BATCH, _ENCODED, _ITEMS, _WILL_WAIT, QueueCore
from ._serialize import Parts


class SemWaiter:
    """Hands counts of ``sem`` to coroutines that await ``wait()``.

    Args:
        sem: The semaphore whose counts are handed out.
        interval: The longest a waiter sleeps before it is told to re-check the queue.
        closed_message: The ValueError message waiters get when the handle closes.
    """

    def __init__(self, sem: posix_ipc.Semaphore, interval: float, closed_message: str) -> None:
        self._sem = sem
        self._interval = interval
        self._closed_message = closed_message
        self._cond = threading.Condition(threading.Lock())
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]]
        self._waiters = collections.deque()
        self._closed = False
        self._thread: threading.Thread | None = None

    async def wait(self, timeout: float | None) -> bool:
        """Wait for a count of the semaphore: True if one was taken for the caller.

        False means "re-check the queue": the interval passed, or ``timeout`` ran out.
        The caller owns a count it was given and must use or release it.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (loop, fut)
        with self._cond:
            if self._closed:
                raise ValueError(self._closed_message)
            self._waiters.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="shared_queue-async-waiter", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return False
        except asyncio.CancelledError:
            # wait_for may report a cancellation although the count was already handed over:
            # give it back, so the cancelled operation takes nothing.
            if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result():
                self._sem.release()
            raise
        finally:
            with self._cond, contextlib.suppress(ValueError):  # ValueError: already handed out
                self._waiters.remove(entry)

    def close(self) -> bool:
        """Fail every waiter with ValueError and stop the thread; True once it has stopped.

        False means the thread may still sit in a semaphore wait (it leaves at its next
        wake-up): the semaphore must then stay open, so the caller leaves it to the collector.
        """
        with self._cond:
            if self._closed:
                return self._thread is None or not self._thread.is_alive()
            self._closed = True
            waiters = list(self._waiters)
            self._waiters.clear()
            self._cond.notify()
            thread = self._thread
        for loop, fut in waiters:
            _call_soon(loop, _fail, fut, ValueError(self._closed_message))
        if thread is not None and thread.is_alive():
            # Wake the thread from its semaphore wait. The post may reach another process's
            # waiter instead, which then finds nothing and waits again (a spare count is
            # dropped by the next re-check); the thread ends at its next wake-up either way.
            self._sem.release()
            thread.join(0.1)
            return not thread.is_alive()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiters and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            got = _sync.wait(self._sem, self._interval)
            with self._cond:
                if self._closed:
                    if got:
                        self._sem.release()  # not ours to keep: a real item or close()'s post
                    return
                if got:
                    if self._waiters:
                        loop, fut = self._waiters.popleft()
                        if _call_soon(loop, self._deliver, fut):
                            continue
                    self._sem.release()  # nobody (left) to take it
                else:
                    for loop, fut in self._waiters:
                        _call_soon(loop, _recheck, fut)
                    self._waiters.clear()

    def _deliver(self, fut: asyncio.Future[bool]) -> None:
        # Runs in the waiter's event loop, so it cannot race with the waiter's cancellation.
        if fut.done():
            self._sem.release()  # cancelled or timed out meanwhile: the count goes back
        else:
            fut.set_result(True)


def _recheck(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


def _fail(fut: asyncio.Future[bool], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: object, *args: object) -> bool:
    try:
        loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]
    except RuntimeError:  # the loop was closed
        return False
    return True


class SharedMemoryQueue(QueueCore):
    __doc__ = QueueCore.__doc__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # One waiter thread per semaphore, made on the first async wait.
        self._waiters: dict[int, SemWaiter] = {}
        self._waiters_pid = os.getpid()
        self._waiters_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    async def put_async(self, item: Any, timeout: float | None = None) -> None:
        """Put ``item``, waiting for a free slot without blocking the event loop.

        A cancelled call either put the item or, when it raises CancelledError, did not.

        Raises:
            Full: No slot freed up within ``timeout``.
            ValueError, TypeError: As for ``put``; ValueError also if the handle closes.
        """
        await self._async(True, [self._dumps(item)], 1, timeout)

    async def put_batch_async(self, items: Iterable[Any], timeout: float | None = None) -> None:
        """Put all ``items`` or none, waiting for room without blocking the event loop.

        Raises:
            Full: Room for the whole batch did not free up within ``timeout``.
            ValueError, TypeError: As for ``put_batch``.
        """
        payloads = self._batch_payloads(items)
        if payloads:
            await self._async(True, payloads, len(payloads), timeout)

    async def get_async(self, timeout: float | None = None) -> Any:
        """Remove and return the item at the head, waiting without blocking the event loop.

        A cancelled call either returned its item or left it in the queue.

        Raises:
            Empty: No item arrived within ``timeout``.
            ValueError: The handle is closed (also while waiting).
        """
        return (await self._async(False, None, 1, timeout))[0]

    async def get_batch_async(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """Remove and return 1 to ``max_items`` items, waiting for the first without blocking.

        Raises:
            Empty: No item arrived within ``timeout``.
            ValueError: ``max_items`` is not positive, or the handle is closed.
        """
        _positive_int("max_items", max_items, 2**63 - 1)
        return await self._async(False, None, max_items, timeout)

    async def _async(
        self, put: bool, payloads: list[bytes | Parts] | None, n: int, timeout: float | None
    ) -> list[Any]:
        # The sync core, tried without blocking; in between, an await on the semaphore (or,
        # for a batch put, on `room`) that the handle's waiter thread takes counts from. The
        # await is the only suspension point, so cancellation cannot split an operation.
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        seg = self._segment()
        batch = put and n > 1
        since = 0  # when the first try failed: the wait counts in the metrics
        while True:
            if not put and self._items.pending:
                items = self._held(n)
                if items:
                    return items
            try:
                if put:
                    self._ring.put(payloads, _BATCH | _ENCODED | _WILL_WAIT, False, None, since)
                    return []
                return self._ring.get(n, _ITEMS, False, None, since)  # type: ignore[no-any-return]
            except (Full, Empty):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise
            since = since or time.monotonic_ns()
            # Look again before sleeping: what the try missed may be there by now, and a put
            # that waits for `room` must not miss a post made before it asked for one.
            ring = seg.ring
            if (ring.room() >= n and ring.pool_free() >= n) if put else ring.size() > 0:
                await asyncio.sleep(0)  # let others run; then try again
                continue
            # As in the core: a put that the pool was short for waits for `room`.
            on_room = put and (batch or ring.room() >= n)
            sem = seg.room if on_room else seg.free if put else seg.fill
            if await self._waiter(sem).wait(remaining) and not on_room:
                sem.release()  # the count this wake-up brought: the retry takes it again

    def _waiter(self, sem: posix_ipc.Semaphore) -> SemWaiter:
        with self._waiters_lock:
            if self._waiters_pid != os.getpid():  # a forked child starts without the threads
                self._waiters = {}
                self._waiters_pid = os.getpid()
            waiter = self._waiters.get(id(sem))
            if waiter is None:
                waiter = self._waiters[id(sem)] = SemWaiter(
                    sem, self._recovery_interval, f"queue {self._label}: this handle is closed"
                )
            return waiter

    def _stop_waiting(self) -> bool:
        # close(): fail this handle's waiting coroutines and stop its waiter threads; the
        # semaphores may be closed only once every thread has left its wait.
        with self._waiters_lock:
            waiters = list(self._waiters.values()) if self._waiters_pid == os.getpid() else []
            self._waiters = {}
        return all([waiter.close() for waiter in waiters])
