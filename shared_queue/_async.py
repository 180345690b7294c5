"""Waiting for a semaphore from asyncio without a thread per waiter and without polling.

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
import threading

import posix_ipc

from . import _sync


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
