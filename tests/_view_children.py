"""Child processes and shared workloads for tests/test_views.py (zero-copy views).

Module-level functions, so that ``spawn`` children can import them (tests/ is on ``sys.path``,
see tests/_crash_children.py). A child attaches to the queue by name and reports on its pipe
``(kind, ...)``; a traceback is reported as ``("error", text)`` instead of being left to time out.
A child that reaches a crash point reports ``("reached", ..., time.monotonic())`` and sleeps
until the parent SIGKILLs it.

The stress workload (``produce``/``consume``) is shared by the thread and process variants of
the test: items are ``uint64[16]`` arrays ``[p, k, payload(13), crc32]`` whose payload is derived
from ``(p, k)``, so any torn, stale or overwritten item fails ``check_item``.
"""

from __future__ import annotations

import math
import os
import random
import time
import zlib
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from _support import TIMEOUT, reporting

import shared_queue

HANG = 60  # seconds a child sleeps at its crash point; the parent kills it long before

WORDS = 16
DTYPE = np.dtype(np.uint64)
STOP = 2**32 - 1  # the producer id of the sentinels that end the consumers
POLL = 0.01  # how long a stress consumer's get waits before it looks at its kept views


# -- items ---------------------------------------------------------------------------------------
def _payload(p: int, k: int) -> np.ndarray[Any, Any]:
    return np.frombuffer(random.Random(p << 32 | k).randbytes(8 * (WORDS - 3)), DTYPE)


def fill_item(out: np.ndarray[Any, Any], p: int, k: int) -> None:
    """Write the item ``(p, k)`` into ``out`` (a ``uint64[16]`` array, e.g. a put_view)."""
    out[0] = p
    out[1] = k
    out[2 : WORDS - 1] = _payload(p, k)
    out[WORDS - 1] = zlib.crc32(out[: WORDS - 1].tobytes())


def make_item(p: int, k: int) -> np.ndarray[Any, Any]:
    """Return the item ``(p, k)`` as a new array."""
    arr = np.empty(WORDS, DTYPE)
    fill_item(arr, p, k)
    return arr


def check_item(arr: np.ndarray[Any, Any]) -> tuple[int, int]:
    """Return ``(p, k)`` of an intact item; AssertionError if it is torn or overwritten."""
    assert arr.dtype == DTYPE and arr.shape == (WORDS,), f"not an item: {arr.dtype} {arr.shape}"
    p, k = int(arr[0]), int(arr[1])
    crc = zlib.crc32(arr[: WORDS - 1].tobytes())
    if crc != int(arr[WORDS - 1]) or not np.array_equal(arr[2 : WORDS - 1], _payload(p, k)):
        raise AssertionError(f"torn item ({p}, {k}): its checksum or payload does not match")
    return p, k


# -- the stress workload ---------------------------------------------------------------------------
class _Discard(Exception):
    """Raised inside a put_view block to discard the item."""


def produce(q: shared_queue.SharedMemoryQueue, p: int, n: int, seed: int, hold: float) -> list[int]:
    """Put the items ``(p, 0..n-1)`` by put or put_view; return the ks that were discarded.

    A put_view block sometimes writes garbage first and sleeps up to ``hold`` seconds before it
    writes the item, so a consumer that saw an unpublished slot would get a torn item; one in
    ten put_views raises inside its block (the item is discarded and must never arrive).
    """
    rng = random.Random(seed)
    discarded = []
    for k in range(n):
        r = rng.random()
        if r < 0.35:
            q.put(make_item(p, k), timeout=TIMEOUT)
        elif not _put_view(q, rng, p, k, hold, discard=r > 0.9):
            discarded.append(k)
    return discarded


def _put_view(q: shared_queue.SharedMemoryQueue, rng: random.Random, p: int, k: int, hold: float,
              discard: bool) -> bool:  # fmt: skip
    # A function of its own so that the array is gone when it returns: a published array
    # pins its slot, and `freed` cannot pass a pinned slot, so a producer that kept its last
    # array while it waited for room in a later put would wait for itself.
    try:
        with q.put_view(timeout=TIMEOUT) as arr:
            if rng.random() < 0.3:
                arr[:] = 0xDEAD
                time.sleep(rng.uniform(0, hold))
            fill_item(arr, p, k)
            if discard:
                raise _Discard
    except _Discard:
        return False
    return True


def _take_view(
    q: shared_queue.SharedMemoryQueue, rng: random.Random, hold: float, keep: bool
) -> tuple[tuple[int, int], np.ndarray[Any, Any] | None]:
    # A function of its own so that the view ``arr`` is gone when it returns, unless a slice
    # of it is returned to be kept (which must keep the slot).
    with q.get_view(timeout=POLL) as arr:
        assert not arr.flags.writeable
        item = check_item(arr)
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, hold))
        assert check_item(arr) == item  # unchanged while held in the block
        kept = arr[1:] if keep and item[0] != STOP else None
    return item, kept


def consume(
    q: shared_queue.SharedMemoryQueue, seed: int, hold: float, max_kept: int = 2
) -> tuple[list[tuple[int, int]], int]:
    """Get items by get and get_view until a sentinel; return them in order, and how many
    views were kept past their block.

    A view kept past its block (as a slice ``arr[1:]``: an array derived from the view) is
    checked again when its random hold of up to ``4 * hold`` seconds ends; its slot must not
    have been reused meanwhile. Holds end by time, not after so many more gets: a kept view
    holds back the ring (``freed`` cannot pass it), so consumers that waited for more items
    while keeping views could starve each other. Gets therefore wait ``POLL`` at a time.
    """
    rng = random.Random(seed)
    got: list[tuple[int, int]] = []
    kept: list[tuple[np.ndarray[Any, Any], int, int, float]] = []  # (slice, p, k, until)
    n_kept = 0
    last = time.monotonic()
    while True:
        kept = _release_due(kept, time.monotonic())
        try:
            if rng.random() < 0.35:
                item = check_item(q.get(timeout=POLL))
            else:
                keep = len(kept) < max_kept and rng.random() < 0.4
                item, view = _take_view(q, rng, hold, keep)
                if view is not None:
                    kept.append((view, *item, time.monotonic() + rng.uniform(0, 4 * hold)))
                    n_kept += 1
                del view  # no reference may outlive its hold (see _release_due)
        except shared_queue.Empty:
            if time.monotonic() - last > TIMEOUT:
                raise AssertionError(f"no item for {TIMEOUT} s") from None
            continue
        last = time.monotonic()
        if item[0] == STOP:
            break
        got.append(item)
    _release_due(kept, math.inf)
    return got, n_kept


def _release_due(
    kept: list[tuple[np.ndarray[Any, Any], int, int, float]], now: float
) -> list[tuple[np.ndarray[Any, Any], int, int, float]]:
    # Check and drop the kept views whose hold ended; return the others. A function of its
    # own so that no loop variable keeps the last dropped view (and so its slot, and with it
    # every slot behind it) alive.
    for view, p, k, until in kept:
        if until <= now:
            _check_kept(view, p, k)
    return [x for x in kept if x[3] > now]


def _check_kept(view: np.ndarray[Any, Any], p: int, k: int) -> None:
    whole = np.concatenate((np.array([p], DTYPE), view))
    if check_item(whole) != (p, k):
        raise AssertionError(f"a kept view of ({p}, {k}) shows item {check_item(whole)}")


# -- child targets -------------------------------------------------------------------------------


def _hang() -> None:
    time.sleep(HANG)
    os._exit(99)  # the parent did not kill us: it failed or died; go away quietly


def _attach(name: str, ri: float) -> shared_queue.SharedMemoryQueue:
    return shared_queue.SharedMemoryQueue(name, recovery_interval=ri)


@reporting
def stress_producer(conn: Connection, name: str, ri: float, p: int, n: int, seed: int,
                    hold: float) -> None:  # fmt: skip
    q = _attach(name, ri)
    conn.send(("done", produce(q, p, n, seed, hold)))
    q.close()


@reporting
def stress_consumer(conn: Connection, name: str, ri: float, seed: int, hold: float) -> None:
    q = _attach(name, ri)
    conn.send(("done", *consume(q, seed, hold)))
    q.close()


@reporting
def hold_get_view(conn: Connection, name: str, ri: float, release: Any) -> None:
    """get_view one item, report its values, keep the array until ``release`` is set (or,
    with ``release=None``, until killed), then drop it and report."""
    q = _attach(name, ri)
    with q.get_view(timeout=TIMEOUT) as arr:
        pass
    conn.send(("reached", arr.tolist(), bool(arr.flags.writeable), time.monotonic()))
    if release is None:
        _hang()
    assert release.wait(TIMEOUT), "the parent never said release"
    values = arr.tolist()  # still the item it was
    del arr
    conn.send(("released", values))
    q.close()


@reporting
def put_view_then(conn: Connection, name: str, ri: float, value: int, then: str,
                  release: Any) -> None:  # fmt: skip
    """put_view an item of all ``value``, then:

    open      report inside the open block, after writing half the item; hang (killed there)
    pinned    publish, keep the read-only array, report, then hang (killed while pinning)
    hold      publish, keep the array until ``release`` is set, check it, drop it, report
    """
    q = _attach(name, ri)
    with q.put_view(timeout=TIMEOUT) as arr:
        half = arr.size // 2
        arr.reshape(-1)[:half] = value
        if then == "open":
            conn.send(("reached", "open", time.monotonic()))
            _hang()
        arr[...] = value
    conn.send(("reached", then, time.monotonic()))
    if then == "pinned":
        _hang()
    assert release.wait(TIMEOUT), "the parent never said release"
    values = arr.tolist()
    writeable = bool(arr.flags.writeable)
    del arr
    conn.send(("released", values, writeable))
    q.close()


# -- the plain loops of issue 10: the arrays stay bound after their blocks ------------------------
@reporting
def plain_put_view_loop(conn: Connection, name: str, ri: float, base: int, n: int) -> None:
    """put_view ``base .. base + n - 1`` with ``arr`` still bound between iterations."""
    q = _attach(name, ri)
    for k in range(n):
        with q.put_view(timeout=TIMEOUT) as arr:
            arr[...] = base + k
    conn.send(("done", int(arr.reshape(-1)[0])))
    q.close()


@reporting
def plain_get_view_loop(conn: Connection, name: str, ri: float) -> None:
    """get_view until a negative item, with ``frame`` still bound when the next get_view waits.

    Before each get_view, the previous (stale) frame must still show its own item, whatever
    passed through the queue since.
    """
    q = _attach(name, ri)
    got: list[int] = []
    frame = None
    last = 0
    stale_checks = 0
    while True:
        if frame is not None:
            assert int(frame.reshape(-1)[0]) == last and (frame == last).all(), (
                f"a kept frame of item {last} shows {frame.tolist()}"
            )
            stale_checks += 1
        with q.get_view(timeout=TIMEOUT) as frame:
            last = int(frame.reshape(-1)[0])
            assert (frame == last).all(), f"torn item: {frame.tolist()}"
        if last < 0:
            break
        got.append(last)
    conn.send(("done", got, stale_checks))
    q.close()
