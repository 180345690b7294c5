"""Targets run in the child processes of test_contract.py, on either backend.

A module of its own, importable by name, because a spawn child unpickles its target by
reference (see ``_children.py``); it also spares every spawned child an import of pytest.
A target lets any failure propagate, so the child exits non-zero and ``_support.running``
reports it.
"""

from __future__ import annotations

import os
from typing import Any

from _support import TIMEOUT


def put_from_child(q: Any, n: int) -> None:
    """With the handle it was given (pickled, or inherited by fork): report what the handle
    says the queue is, put ``n`` items one by one and ``n`` more in one batch, then close it."""
    pid = os.getpid()
    q.put(("handle", q.name, q.run_id, q.capacity, q.item_size, q.raw), timeout=TIMEOUT)
    for i in range(n):
        q.put(("item", pid, i), timeout=TIMEOUT)
    q.put_batch([("item", pid, i) for i in range(n, 2 * n)], timeout=TIMEOUT)
    q.close()
