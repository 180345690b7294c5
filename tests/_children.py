"""Targets run in the child processes of test_multiprocess.py.

They live in a module of their own, importable by name, because spawn and forkserver children
unpickle a target by reference: pytest's default (prepend) import mode puts ``tests/`` on
``sys.path``, and spawn and forkserver hand the parent's ``sys.path`` to the child. A module
apart from the test module also spares every spawned child an import of pytest.

A child reports through ``out`` (a ``multiprocessing`` queue, independent of the code under
test) and lets any failure propagate, so it exits non-zero and the parent sees it.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from _support import TIMEOUT

from shared_queue import Empty, Full, SharedMemoryQueue


def _attach(q: SharedMemoryQueue | str) -> SharedMemoryQueue:
    return SharedMemoryQueue(q) if isinstance(q, str) else q


def echo(q: SharedMemoryQueue | str, out: Any, close: bool) -> None:
    """Take the parent's item, put a reply, report what this handle sees."""
    q = _attach(q)
    assert isinstance(q, SharedMemoryQueue)
    item = q.get(timeout=TIMEOUT)
    q.put(("reply", os.getpid(), item))
    out.put((q.name, q.run_id, q.capacity, q.item_size, item))
    if close:
        q.close()
    # Otherwise the handle is left open: the process exit must not remove the queue.


def handle_from_queue(carrier: SharedMemoryQueue, out: Any) -> None:
    """Get a handle of another queue out of ``carrier``, use it, send a new one back."""
    inner = carrier.get(timeout=TIMEOUT)
    assert isinstance(inner, SharedMemoryQueue), type(inner)
    item = inner.get(timeout=TIMEOUT)
    inner.put(("from child", item))
    own = SharedMemoryQueue(inner.name, run_id=inner.run_id)
    carrier.put(own)
    out.put((inner.name, inner.run_id, item))


def call(q_in: SharedMemoryQueue, q_out: SharedMemoryQueue, n: int) -> None:
    """Call ``n`` received ``(obj, method, args)``; send back the class name and result."""
    for _ in range(n):
        obj, method, args = q_in.get(timeout=TIMEOUT)
        q_out.put((type(obj).__name__, getattr(obj, method)(*args)))

    # And the other way round: objects only cloudpickle can send, made in this process.
    class Local:
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def tag(self, x: int) -> tuple[int, int]:
            return (self.pid, x)

    pid = os.getpid()
    q_out.put(Local(pid))
    q_out.put(lambda x: (pid, x * 2))


def produce(q: SharedMemoryQueue, producer: int, n: int, seed: int) -> None:
    """Put ``(producer, 0..n-1)`` in order, by single puts and batches of 1 to 8."""
    rng = random.Random(seed)
    seq = 0
    while seq < n:
        if rng.random() < 0.5:
            q.put((producer, seq), timeout=TIMEOUT)
            seq += 1
        else:
            stop = min(n, seq + rng.randint(1, 8))
            q.put_batch([(producer, s) for s in range(seq, stop)], timeout=TIMEOUT)
            seq = stop


def consume(q: SharedMemoryQueue, out: Any, seed: int) -> None:
    """Get by single gets and batches of up to 16 until a None; report the items in order.

    The parent puts one None per consumer after all producers finished, so the Nones come
    last; a batch that takes more than one puts the extra ones back for the others.
    """
    rng = random.Random(seed)
    got: list[tuple[int, int]] = []
    while True:
        if rng.random() < 0.5:
            items = [q.get(timeout=TIMEOUT)]
        else:
            items = q.get_batch(rng.randint(1, 16), timeout=TIMEOUT)
        if None in items:
            i = items.index(None)
            got.extend(items[:i])
            rest = items[i + 1 :]
            assert all(x is None for x in rest), rest
            if rest:
                q.put_batch(rest, timeout=TIMEOUT)
            break
        got.extend(items)
    out.put(got)


def blocked_get(q: SharedMemoryQueue, out: Any) -> None:
    """Report ready, then block in get; report the item and when the wait began and ended."""
    out.put("ready")
    t0 = time.monotonic()
    item = q.get(timeout=TIMEOUT)
    out.put((item, t0, time.monotonic()))


def blocked_put(q: SharedMemoryQueue, out: Any, items: list[Any], timeout: float) -> None:
    """Report ready, then block putting ``items`` (one put, or a batch if several).

    Reports ``(outcome, start, end)``, outcome "ok" or "full", on CLOCK_MONOTONIC, which is
    system-wide on Linux, so the parent can compare it with its own ``time.monotonic()``.
    """
    out.put("ready")
    t0 = time.monotonic()
    try:
        if len(items) == 1:
            q.put(items[0], timeout=timeout)
        else:
            q.put_batch(items, timeout=timeout)
    except Full:
        out.put(("full", t0, time.monotonic()))
    else:
        out.put(("ok", t0, time.monotonic()))


def timed_get(q: SharedMemoryQueue, out: Any, timeout: float) -> None:
    """Report how a timed get on an empty queue ended and how long it took."""
    t0 = time.monotonic()
    try:
        item = q.get(timeout=timeout)
    except Empty as exc:
        out.put(("empty", type(exc).__name__, time.monotonic() - t0))
    else:
        out.put(("item", item, time.monotonic() - t0))


def by_run_id(handle: SharedMemoryQueue, name: str, run_ids: list[str], out: Any) -> None:
    """Get one item from the queue ``name`` under each run_id; try one run_id not created."""
    seen = {handle.run_id: handle.get(timeout=TIMEOUT)}
    for run_id in run_ids:
        if run_id != handle.run_id:
            with SharedMemoryQueue(name, run_id=run_id) as q:
                seen[run_id] = q.get(timeout=TIMEOUT)
    try:
        SharedMemoryQueue(name, run_id="never-created")
    except FileNotFoundError:
        missing = True
    else:
        missing = False
    with SharedMemoryQueue(name, run_id=run_ids[-1]) as q:
        q.put(("reply", run_ids[-1]))
    out.put((seen, missing))


def many_handles(q: SharedMemoryQueue, rounds: int) -> None:
    """Use the passed handle and two more opened by name, interleaved; FIFO across all."""
    h1 = SharedMemoryQueue(q.name, run_id=q.run_id)
    h2 = SharedMemoryQueue(q.name, run_id=q.run_id)
    handles = [q, h1, h2]
    assert h1.get(timeout=TIMEOUT) == "from parent"
    for i in range(rounds):
        a, b, c = handles[i % 3], handles[(i + 1) % 3], handles[(i + 2) % 3]
        a.put(("single", i))
        b.put_batch([("batch", i, 0), ("batch", i, 1)])
        assert c.get(timeout=TIMEOUT) == ("single", i)
        assert a.get_batch(5, timeout=TIMEOUT) == [("batch", i, 0), ("batch", i, 1)]
    assert q.empty() and h1.empty() and h2.empty()
    h1.close()
    h2.put("h2 after h1 closed")
    assert q.get(timeout=TIMEOUT) == "h2 after h1 closed"
    h2.close()
    q.put("done")  # the passed handle outlives the other two; left open at exit


def threaded_producer(q: SharedMemoryQueue, proc: int, n: int) -> None:
    """Two threads put ``(proc, thread, 0..n-1)``: one on the shared handle, one on its own."""
    errors: list[BaseException] = []

    def run(thread: int, handle: SharedMemoryQueue) -> None:
        try:
            rng = random.Random(proc * 10 + thread)
            seq = 0
            while seq < n:
                if rng.random() < 0.5:
                    handle.put((proc, thread, seq), timeout=TIMEOUT)
                    seq += 1
                else:
                    stop = min(n, seq + rng.randint(1, 4))
                    handle.put_batch([(proc, thread, s) for s in range(seq, stop)], timeout=TIMEOUT)
                    seq = stop
        except BaseException as exc:
            errors.append(exc)
            raise

    own = SharedMemoryQueue(q.name, run_id=q.run_id)
    threads = [threading.Thread(target=run, args=(t, h)) for t, h in enumerate([q, own])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a producer thread hung"
    if errors:
        raise errors[0]
    own.close()
