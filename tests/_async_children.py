"""Sync producers run in child processes by test_async.py, to wake the parent's coroutines.

A module of its own, importable by name, so spawn children can unpickle the targets (see
``_children.py``). The children attach by name and use only the blocking sync API: the point is
that a plain process on the other side wakes async waiters. Failures propagate, so the child
exits non-zero and the parent sees it.
"""

from __future__ import annotations

from typing import Any

from _support import TIMEOUT, wait_blocked

from shared_queue import SharedMemoryQueue


def produce(name: str, producer: int, n: int, go: Any, pause_every: int) -> None:
    """After ``go``, put ``(producer, seq)`` for seq in 0..n-1.

    Every ``pause_every`` items the child waits until the parent's consumers have run dry and
    sleep on the queue again: the items after a pause must wake them, not find them busy.
    """
    with SharedMemoryQueue(name) as q:
        assert go.wait(TIMEOUT), "parent never said go"
        for seq in range(n):
            if pause_every and seq and seq % pause_every == 0:
                wait_blocked(q)
            q.put((producer, seq), timeout=TIMEOUT)
