"""Bare posix_ipc semaphores: no queue, no pickling -- the floors under the latency rows.

A design that wakes the other side with a semaphore cannot beat two processes waking each
other through bare semaphores. ``sem_pingpong`` measures a round trip that way (the ping-pong
row's floor); ``sem_wakeup`` a process blocked in ``sem_timedwait`` woken by a post from
another after the same ~2 ms idle as the wake-up rows (their floor).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import TYPE_CHECKING

from ..common import CTX, OP_TIMEOUT, unique_name
from ..procs import children, wait_barrier

if TYPE_CHECKING:
    from ..workloads.base import Config


def _sem_echo(name_a: str, name_b: str, barrier, n: int) -> None:
    import posix_ipc

    a, b = posix_ipc.Semaphore(name_a), posix_ipc.Semaphore(name_b)
    try:
        barrier.wait(OP_TIMEOUT)
        for _ in range(n):
            a.acquire(OP_TIMEOUT)
            b.release()
    finally:
        a.close()
        b.close()


def sem_pingpong(cfg: Config) -> float:
    """Reference: median us per round trip with two bare POSIX semaphores."""
    import posix_ipc

    n = cfg.warmup + cfg.rounds
    names = [f"/{unique_name('sqbench_sem')}" for _ in range(2)]
    sems = []
    try:
        for name in names:
            sems.append(posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=0))
        a, b = sems
        barrier = CTX.Barrier(2)
        with children([(_sem_echo, (*names, barrier, n))], barrier) as collect:
            wait_barrier(barrier)
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                a.release()
                b.acquire(OP_TIMEOUT)
                samples.append(time.perf_counter() - t)
            collect()
    finally:
        for s in sems:
            s.close()
        for name in names:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(name)
    return statistics.median(samples[cfg.warmup :]) * 1e6


def _sem_sleeper(name: str, barrier, n: int) -> list[float]:
    import posix_ipc

    sem = posix_ipc.Semaphore(name)
    try:
        barrier.wait(OP_TIMEOUT)
        woke = []
        for _ in range(n):
            sem.acquire(OP_TIMEOUT)
            woke.append(time.perf_counter())
        return woke
    finally:
        sem.close()


def sem_wakeup(cfg: Config) -> float:
    """Reference: median us from a post to the return of a process blocked on the semaphore."""
    import posix_ipc

    n = cfg.warmup + cfg.wake_samples
    name = f"/{unique_name('sqbench_sem')}"
    sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=0)
    try:
        barrier = CTX.Barrier(2)
        with children([(_sem_sleeper, (name, barrier, n))], barrier) as collect:
            wait_barrier(barrier)
            sent = []
            for _ in range(n):
                time.sleep(cfg.wake_sleep)  # as the wake-up rows: let the child block
                sent.append(time.perf_counter())
                sem.release()
            (woke,) = collect()
    finally:
        sem.close()
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(name)
    delays = [w - s for w, s in zip(woke, sent, strict=True)]
    return statistics.median(delays[cfg.warmup :]) * 1e6
