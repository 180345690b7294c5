"""Sync producers run in child processes by test_async.py, to wake the parent's coroutines.

A module of its own, importable by name, so spawn children can unpickle the targets (see
``_children.py``). The children attach by name and use only the blocking sync API: the point is
that a plain process on the other side wakes async waiters. Failures propagate, so the child
exits non-zero and the parent sees it.
"""

from __future__ import annotations

import time
from typing import Any

from shared_queue import SharedMemoryQueue

WAIT = 40.0  # seconds; as conftest.TIMEOUT, only reached on a deadlock


def produce(name: str, producer: int, n: int, go: Any, pause_every: int) -> None:
    """After ``go``, put ``(producer, seq, perf_counter())`` for seq in 0..n-1.

    Every ``pause_every`` items the child pauses briefly, so the parent's consumers run dry and
    go back to waiting: the items after a pause must wake them, not find them busy.
    """
    with SharedMemoryQueue(name) as q:
        assert go.wait(WAIT), "parent never said go"
        for seq in range(n):
            if pause_every and seq and seq % pause_every == 0:
                time.sleep(0.02)
            q.put((producer, seq, time.perf_counter()), timeout=WAIT)


def stamp(name: str, ack_name: str, n: int) -> None:
    """Ping-pong ``n`` times: wait for the parent's ack, pause, put ``time.perf_counter()``.

    The pause lets the parent's coroutine get back into its await before the put, so each sample
    is the latency of a real wake-up (perf_counter is CLOCK_MONOTONIC, system-wide on Linux).
    """
    with SharedMemoryQueue(name) as q, SharedMemoryQueue(ack_name) as ack:
        for _ in range(n):
            ack.get(timeout=WAIT)
            time.sleep(0.002)
            q.put(time.perf_counter(), timeout=WAIT)
