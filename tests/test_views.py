"""Zero-copy views: ``get_view`` and ``put_view`` on raw queues (issue "numpy raw mode ...
Zero-copy views").

``with q.get_view() as arr`` takes the item at the head and yields a read-only array viewing its
slot; the slot goes back to the producers when the array and every array derived from it are
gone. ``with q.put_view(shape, dtype) as arr`` yields a writable array in a free slot, published
when the block exits normally and discarded when it raises; afterwards the array is read-only and
pins its slot while it lives. What is checked here:

* round trips (values, dtype, shape, order; structured dtypes; bytes items as uint8), argument
  errors, Empty/Full with block and timeout, proven blocking and prompt wake-ups;
* a slot is never reused while a view of it lives: producers raise Full or block instead of
  taking it, the kept array still shows its own item after 3 x capacity more items, and its slot
  is reusable once the array (and what derives from it) is gone;
* slots are not reused in ring order: a kept view holds back nothing but its slot, and with a
  spare slot not even that; the plain loops (``with q.get_view() as frame`` with ``frame`` still
  bound while the next call waits) never deadlock at (capacity, consumers) = (1, 1), (2, 2),
  (3, 2) with the default spare slots;
* counts agree: a discarded put_view is not counted, discards never block, ``full()``/``empty()``
  match what put_nowait/get_nowait do;
* FIFO with every mix of put, put_view, get and get_view; a put_view item is queued when its
  block exits; exactly-once and FIFO under threads and processes (fork, spawn) that hold views
  for random lengths of time, every item checksummed;
* views across processes, and processes SIGKILLed while holding a get_view, inside an open
  put_view, or while a published put_view array pins its slot: survivors proceed within
  ``recovery_interval`` + margin and the queue fills to capacity and drains afterwards;
* closing a handle while views are alive.

Most tests use ``spare_slots=0`` (``typed``), where every kept array costs one slot of room, so
that holding is observable; the default (2 for raw queues) is tested where it matters.

Tests marked ``xfail(strict=True)`` with a reason starting "BUG:" would pin defects found while
writing these tests; they pass once the library is fixed (and then strict xfail fails, as a
reminder to drop the mark).
"""

from __future__ import annotations

import collections
import gc
import multiprocessing
import os
import queue
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import _view_children as vc
import numpy as np
import pytest
from _support import TIMEOUT, Child, ctx_fixture
from _support import drain as drain_all

import shared_queue
from shared_queue import SharedMemoryQueue

pytestmark = pytest.mark.timeout(60)

RI = 0.3  # recovery_interval of the crash tests
MARGIN = 0.6  # scheduling slack on top of recovery_interval (as tests/test_crash.py)
PROMPT = 0.9  # a wake-up by a semaphore post: faster than one default recovery tick (1 s)
NO_RECOVERY = 30.0  # recovery_interval where a prompt return must come from a post
QUIET = 0.5  # how long a call must stay blocked to count as blocked (> RI: survives a re-check)
TOLERANCE = 0.05  # allowed early return of a timed wait
SEED = int(os.environ.get("SHARED_QUEUE_VIEW_SEED") or 20240607)
SHAPE = (8,)


# -- helpers ---------------------------------------------------------------------------------------
def item(v: int) -> np.ndarray[Any, Any]:
    return np.full(SHAPE, v, np.int64)


def value(arr: np.ndarray[Any, Any]) -> int:
    """The value of an ``item``; AssertionError if the array is torn (not all one value)."""
    v = int(arr.reshape(-1)[0])
    assert (arr == v).all(), f"torn item: {arr.tolist()}"
    return v


def typed(
    make_queue: Any, capacity: int = 4, ri: float = RI, spare_slots: int = 0
) -> SharedMemoryQueue:
    """A typed queue; with no spare slots (unlike the default) every held view costs room."""
    q: SharedMemoryQueue = make_queue(
        capacity=capacity, dtype=np.int64, shape=SHAPE, recovery_interval=ri,
        spare_slots=spare_slots,
    )  # fmt: skip
    return q


def view_value(q: SharedMemoryQueue, **kwargs: Any) -> int:
    """get_view one item and return its value; the view is gone when this returns."""
    with q.get_view(**kwargs) as arr:
        return value(arr)


def put_view_value(q: SharedMemoryQueue, v: int, **kwargs: Any) -> None:
    """put_view an item of value ``v``; the array is gone when this returns."""
    with q.put_view(**kwargs) as arr:
        arr[...] = v


def drain(q: SharedMemoryQueue) -> list[int]:
    """Get everything there is now with get_nowait."""
    return drain_all(q, value)


def room(q: SharedMemoryQueue) -> int:
    """How many items put_nowait takes now (the queue must be empty); gets them back out."""
    assert q.qsize() == 0
    n = 0
    while n <= q.capacity:
        try:
            q.put_nowait(item(-1 - n))
        except shared_queue.Full:
            break
        n += 1
    assert drain(q) == [-1 - i for i in range(n)]
    return n


def assert_healthy(q: SharedMemoryQueue) -> None:
    """The (empty) queue fills to capacity and drains in order; its semaphores agree again."""
    assert q.qsize() == 0
    seqs = list(range(1000, 1000 + q.capacity))
    for seq in seqs:
        q.put_nowait(item(seq))
    with pytest.raises(shared_queue.Full):
        q.put_nowait(item(999))
    assert drain(q) == seqs
    with pytest.raises(shared_queue.Empty):
        q.get_nowait()
    seg = q._seg
    assert seg is not None
    assert (seg.free.value, seg.fill.value) == (q.capacity, 0)


class Bg:
    """Run ``fn(*args, **kwargs)`` in a daemon thread; record its result or error and end time."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.exc: BaseException | None = None
        self.t_done = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.exc = exc
        finally:
            self.t_done = time.monotonic()
            self.done.set()

    def quiet(self, seconds: float = QUIET) -> None:
        """Assert that the call is still running after ``seconds``: it is blocked."""
        assert not self.done.wait(seconds), f"appeared not to block: {self.result!r} {self.exc!r}"

    def join(self, timeout: float = TIMEOUT) -> Any:
        assert self.done.wait(timeout), f"{self.fn.__name__} did not return within {timeout} s"
        self.thread.join(timeout)
        if self.exc is not None:
            raise self.exc
        return self.result


# -- processes -------------------------------------------------------------------------------------
ctx = ctx_fixture("fork", "spawn")


# -- round trips -----------------------------------------------------------------------------------
POINT = np.dtype([("id", "<u4"), ("pos", "<f8", (3,)), ("tag", "S5"), ("ok", "?")])
ARRAYS = {
    "int32-2d": np.arange(12, dtype=np.int32).reshape(3, 4),
    "float64-fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "big-endian": np.arange(5, dtype=">i4"),
    "complex": np.array([1 + 2j, -3j], np.complex128),
    "bool": np.array([True, False, True]),
    "datetime": np.array(["2024-01-01", "2024-06-07"], "datetime64[ns]"),
    "structured": np.array(
        [(1, (0.5, 1.5, 2.5), b"ab", True), (2, (3, 4, 5), b"xyz", False)], POINT
    ),
    "0-d": np.array(3.25),
    "empty": np.zeros((0, 3), np.float32),
    "strided": np.arange(20, dtype=np.int16)[::3],
}


@pytest.mark.parametrize("arr", ARRAYS.values(), ids=ARRAYS.keys())
def test_get_view_round_trip(make_queue: Any, arr: np.ndarray[Any, Any]) -> None:
    q = make_queue(capacity=2, item_size=1024, raw=True)
    q.put(arr)
    with q.get_view() as view:
        assert view.dtype == arr.dtype
        assert view.shape == arr.shape
        np.testing.assert_array_equal(view, arr)
        if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous:
            assert view.flags.f_contiguous  # the memory order travels, as with get
        assert not view.flags.writeable
        assert not view.flags.owndata  # a view of the slot, not a copy
        if view.size:
            with pytest.raises(ValueError, match="read-only"):
                view[...] = view.reshape(-1)[0]
        assert q.qsize() == 0  # the item left the queue at once
    np.testing.assert_array_equal(view, arr)
    del view


@pytest.mark.parametrize("data", [b"payload \x00\xff", bytearray(b"ba"), memoryview(b"mv"), b""],
                         ids=["bytes", "bytearray", "memoryview", "empty"])  # fmt: skip
def test_get_view_of_bytes_items_is_uint8(make_queue: Any, data: Any) -> None:
    q = make_queue(capacity=2, item_size=256, raw=True)
    q.put(data)
    with q.get_view() as view:
        assert view.dtype == np.uint8
        assert view.shape == (len(bytes(data)),)
        assert view.tobytes() == bytes(data)
        assert not view.flags.writeable
    del view
    assert room(q) == 2


def test_put_view_round_trip(make_queue: Any) -> None:
    q = make_queue(capacity=4, item_size=1024, raw=True)
    with q.put_view((3, 4), np.float32) as arr:
        assert arr.flags.writeable
        assert (arr.shape, arr.dtype) == ((3, 4), np.float32)
        arr[...] = np.arange(12).reshape(3, 4)
    with q.put_view(5, POINT) as rec:  # an int shape; a structured dtype
        rec["id"] = np.arange(5)
        rec["pos"] = np.arange(15).reshape(5, 3)
        rec["tag"] = b"hello"
        rec["ok"] = [True, False, True, False, True]
    with q.put_view((), np.complex64) as scalar:
        scalar[()] = 1 - 1j
    got = q.get()  # a copy
    assert (got.shape, got.dtype) == ((3, 4), np.float32)
    np.testing.assert_array_equal(got, np.arange(12).reshape(3, 4))
    with q.get_view() as view:
        assert (view.shape, view.dtype) == ((5,), POINT)
        assert view["id"].tolist() == [0, 1, 2, 3, 4]
        np.testing.assert_array_equal(view["pos"], np.arange(15).reshape(5, 3))
        assert view["tag"].tolist() == [b"hello"] * 5
        assert view["ok"].tolist() == [True, False, True, False, True]
        np.testing.assert_array_equal(view, rec)
    assert q.get() == np.complex64(1 - 1j)
    del arr, rec, scalar, view
    gc.collect()
    assert room(q) == 4


def test_put_view_defaults_to_a_typed_queues_slots(make_queue: Any) -> None:
    q = make_queue(capacity=2, dtype=np.uint16, shape=(2, 3))
    with q.put_view() as arr:
        assert (arr.shape, arr.dtype) == ((2, 3), np.uint16)
        arr[...] = 7
    with q.put_view((2, 3), np.uint16) as same:  # naming the queue's own type is fine
        same[...] = 8
    assert q.get().tolist() == [[7] * 3] * 2
    assert q.get().tolist() == [[8] * 3] * 2


def test_put_view_argument_errors(make_queue: Any) -> None:
    typed_q = make_queue(capacity=2, dtype=np.int64, shape=SHAPE)
    with pytest.raises(ValueError, match=r"^put_view of float64 with shape \(8,\) does not match"):
        typed_q.put_view(dtype=np.float64).__enter__()
    with pytest.raises(ValueError, match=r"^put_view of int64 with shape \(4,\) does not match"):
        typed_q.put_view(shape=4).__enter__()
    with pytest.raises(ValueError, match="does not match"):
        typed_q.put_view((2, 4)).__enter__()
    assert room(typed_q) == 2  # nothing was claimed
    typed_q.unlink()
    typed_q.close()

    raw_q = make_queue(capacity=2, item_size=128, raw=True)
    with pytest.raises(ValueError, match=r"^put_view on untyped queue .* needs shape and dtype"):
        raw_q.put_view().__enter__()
    with pytest.raises(ValueError, match="needs both dtype and shape"):
        raw_q.put_view(shape=4).__enter__()
    with pytest.raises(ValueError, match="needs both dtype and shape"):
        raw_q.put_view(dtype=np.int8).__enter__()
    with pytest.raises(ValueError, match=r"^item of \d+ bytes exceeds item_size=128 .*"
                                         r"\(create it with a larger item_size\)$"):  # fmt: skip
        raw_q.put_view(100, np.int64).__enter__()
    assert room(raw_q) == 2


def test_views_need_a_raw_queue(make_queue: Any) -> None:
    q = make_queue(capacity=2, item_size=256)
    q.put("an object")
    with pytest.raises(TypeError, match=r"^get_view needs a raw queue; queue .* pickles its items"):
        q.get_view().__enter__()
    with pytest.raises(TypeError, match=r"^put_view needs a raw queue"):
        q.put_view(4, np.int8).__enter__()
    assert q.get_nowait() == "an object"  # get_view took nothing


def test_views_on_a_closed_handle(make_queue: Any) -> None:
    q = typed(make_queue)
    q.close()
    with pytest.raises(ValueError, match="this handle is closed"):
        q.get_view().__enter__()
    with pytest.raises(ValueError, match="this handle is closed"):
        q.put_view().__enter__()


# -- blocking --------------------------------------------------------------------------------------
def test_get_view_empty_and_timeout(make_queue: Any) -> None:
    q = typed(make_queue)
    with pytest.raises(shared_queue.Empty):
        q.get_view(block=False).__enter__()
    with pytest.raises(queue.Empty):  # the stdlib exception still catches it
        q.get_view(False).__enter__()
    t0 = time.monotonic()
    with pytest.raises(shared_queue.Empty, match="is empty"):
        q.get_view(timeout=0.2).__enter__()
    assert time.monotonic() - t0 >= 0.2 - TOLERANCE
    with pytest.raises(ValueError, match="non-negative"):
        q.get_view(timeout=-1).__enter__()


def test_put_view_full_and_timeout(make_queue: Any) -> None:
    q = typed(make_queue, capacity=2)
    q.put(item(1))
    put_view_value(q, 2)
    with pytest.raises(shared_queue.Full):
        q.put_view(block=False).__enter__()
    with pytest.raises(queue.Full):
        q.put_view(block=False).__enter__()
    t0 = time.monotonic()
    with pytest.raises(shared_queue.Full, match=r"is full \(capacity=2\)"):
        q.put_view(timeout=0.2).__enter__()
    assert time.monotonic() - t0 >= 0.2 - TOLERANCE
    assert drain(q) == [1, 2]  # the failed put_views left no trace


def test_get_view_blocks_until_an_item_arrives(make_queue: Any) -> None:
    q = typed(make_queue, ri=NO_RECOVERY)
    waiter = Bg(view_value, q, timeout=TIMEOUT)
    waiter.quiet()
    t_put = time.monotonic()
    put_view_value(q, 5)
    assert waiter.join() == 5
    assert waiter.t_done - t_put < PROMPT


def test_put_view_blocks_until_a_slot_frees(make_queue: Any) -> None:
    q = typed(make_queue, capacity=1, ri=NO_RECOVERY)
    q.put(item(1))
    waiter = Bg(put_view_value, q, 2, timeout=TIMEOUT)
    waiter.quiet()
    t_get = time.monotonic()
    assert value(q.get()) == 1
    waiter.join()
    assert waiter.t_done - t_get < PROMPT
    assert drain(q) == [2]


# -- a view keeps its slot -------------------------------------------------------------------------
def test_kept_get_view_keeps_its_slot(make_queue: Any) -> None:
    q = typed(make_queue, capacity=3)
    q.put(item(7))
    with q.get_view() as kept:
        pass
    assert value(kept) == 7
    # Producers fill the other slots, then would wrap onto the kept one: they do not.
    q.put_nowait(item(1))
    put_view_value(q, 2, block=False)
    with pytest.raises(shared_queue.Full):
        q.put_nowait(item(3))
    with pytest.raises(shared_queue.Full):
        q.put(item(3), timeout=0.1)
    with pytest.raises(shared_queue.Full):
        put_view_value(q, 3, timeout=0.1)
    assert value(kept) == 7
    assert drain(q) == [1, 2]
    assert room(q) < q.capacity  # still held
    assert value(kept) == 7
    del kept
    gc.collect()
    assert room(q) == q.capacity
    assert_healthy(q)


def test_derived_arrays_keep_the_slot(make_queue: Any) -> None:
    """The slot comes back only when every array derived from the view is gone too."""
    q = typed(make_queue, capacity=2)
    q.put(np.arange(8, dtype=np.int64))
    with q.get_view() as view:
        part = view[2:6]
        cast = view.view(np.uint8)  # a view of another dtype
        also = np.asarray(memoryview(view))  # through the buffer protocol
    del view
    gc.collect()
    assert room(q) < q.capacity
    assert part.tolist() == [2, 3, 4, 5]
    del part
    gc.collect()
    assert room(q) < q.capacity
    assert cast.view(np.int64).tolist() == list(range(8))
    del cast
    gc.collect()
    assert room(q) < q.capacity
    assert also.tolist() == list(range(8))
    del also
    gc.collect()
    assert room(q) == q.capacity
    assert_healthy(q)


@pytest.mark.parametrize("spare_slots", [0, 1, 2])
def test_kept_get_view_shows_its_own_item_after_other_traffic(
    make_queue: Any, spare_slots: int
) -> None:
    """3 x capacity items pass, by every kind of put and get, while a view is kept; with a
    spare slot the kept view costs no room, without one it costs its own slot only."""
    q = typed(make_queue, capacity=4, spare_slots=spare_slots)
    q.put(item(42))
    with q.get_view() as kept:
        pass
    for i in range(3 * q.capacity):
        if i % 2:
            q.put(item(i))
            assert view_value(q) == i
        else:
            put_view_value(q, i)
            assert value(q.get()) == i
        assert value(kept) == 42
    assert room(q) == (q.capacity if spare_slots else q.capacity - 1)
    assert value(kept) == 42
    del kept
    gc.collect()
    assert_healthy(q)


def test_dropping_a_view_wakes_a_blocked_put(make_queue: Any) -> None:
    """The slot comes back by a post, at once, not at the producer's next recovery check."""
    q = typed(make_queue, capacity=1, ri=NO_RECOVERY)
    q.put(item(1))
    with q.get_view() as kept:
        pass
    producer = Bg(q.put, item(2), True, TIMEOUT)
    producer.quiet()
    t_drop = time.monotonic()
    del kept
    gc.collect()
    producer.join()
    assert producer.t_done - t_drop < PROMPT
    assert drain(q) == [2]


def test_several_views_held_at_once(make_queue: Any) -> None:
    """Slots come back in any drop order, once every view is gone."""
    q = typed(make_queue, capacity=3)
    for v in (1, 2, 3):
        q.put(item(v))
    with q.get_view() as first, q.get_view() as second:
        pass
    assert (value(first), value(second)) == (1, 2)
    assert value(q.get()) == 3
    assert room(q) < q.capacity
    del second
    gc.collect()
    assert room(q) < q.capacity
    assert value(first) == 1
    del first
    gc.collect()
    assert room(q) == q.capacity
    assert_healthy(q)


@pytest.mark.parametrize("spare_slots", [0, 2])
@pytest.mark.parametrize("kind", ["get_view", "put_view"])
def test_a_kept_view_holds_back_nothing_but_its_slot(
    kind: str, spare_slots: int, make_queue: Any
) -> None:
    """Slots are not reused in ring order: the slots around a held one keep circulating, and
    with a spare slot the queue still takes its whole capacity (docs/design.md)."""
    q = typed(make_queue, capacity=4, spare_slots=spare_slots)
    if kind == "get_view":
        q.put(item(7))
        with q.get_view() as kept:
            pass
    else:
        with q.put_view() as kept:
            kept[...] = 7
        assert value(q.get()) == 7
    for rnd in range(3):
        n = q.capacity if spare_slots else q.capacity - 1
        for v in range(n):
            q.put_nowait(item(10 * rnd + v))
        assert q.full() and q.qsize() == n
        with pytest.raises(shared_queue.Full):
            q.put_nowait(item(99))
        assert drain(q) == [10 * rnd + v for v in range(n)]
        assert q.empty()
    assert value(kept) == 7
    del kept
    gc.collect()
    assert_healthy(q)


# -- put_view publish, pin, discard ----------------------------------------------------------------
def test_put_view_publishes_read_only_and_pins_its_slot(make_queue: Any) -> None:
    q = typed(make_queue, capacity=2)
    with q.put_view() as pinned:
        pinned[...] = np.arange(8)
        assert q.qsize() == 0  # not published yet
    assert q.qsize() == 1
    assert not pinned.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        pinned[0] = 99
    assert q.get().tolist() == list(range(8))  # a copy; the slot stays pinned
    q.put_nowait(item(1))
    with pytest.raises(shared_queue.Full):  # the next put would reuse the pinned slot
        put_view_value(q, 2, block=False)
    assert drain(q) == [1]
    assert room(q) < q.capacity
    assert pinned.tolist() == list(range(8))
    del pinned
    gc.collect()
    assert room(q) == q.capacity
    assert_healthy(q)


def test_put_view_array_and_get_view_of_the_same_slot(make_queue: Any) -> None:
    """A pin and a get_view on one slot: it comes back after both are gone, in either order."""
    q = typed(make_queue, capacity=2)
    for first_dropped in ("pinned", "view"):
        with q.put_view() as pinned:
            pinned[...] = 3
        with q.get_view() as view:
            pass
        assert np.shares_memory(pinned, view)
        assert value(view) == 3
        arrays = {"pinned": pinned, "view": view}
        del pinned, view
        arrays.pop(first_dropped)
        gc.collect()
        assert room(q) < q.capacity
        arrays.clear()
        gc.collect()
        assert room(q) == q.capacity
    assert_healthy(q)


def test_put_view_raising_discards_the_item(make_queue: Any) -> None:
    q = typed(make_queue, capacity=4)
    q.put(item(1))

    class Boom(Exception):
        pass

    def failing_put_view() -> None:
        with q.put_view() as arr:
            arr[...] = 666
            raise Boom("inside the block")

    with pytest.raises(Boom, match="inside the block"):
        failing_put_view()
    q.put(item(2))
    put_view_value(q, 3)
    assert [value(q.get(timeout=TIMEOUT)) for _ in range(3)] == [1, 2, 3]  # never 666
    for i in range(2 * q.capacity):  # discards at every slot position; the queue stays usable
        with pytest.raises(Boom):
            failing_put_view()
        put_view_value(q, i)
        got = value(q.get(timeout=TIMEOUT)) if i % 2 else view_value(q, timeout=TIMEOUT)
        assert got == i
    with pytest.raises(shared_queue.Empty):
        q.get(timeout=0.1)
    assert_healthy(q)


def test_put_view_raising_gives_back_its_ring_entry_at_once(make_queue: Any) -> None:
    """A discarded put_view is not an item: qsize does not count it, the ring entry it had
    reserved is free again at once, and its slot only while its array lives."""
    q = typed(make_queue, capacity=2)
    try:
        with q.put_view() as arr:
            arr[...] = 666
            raise RuntimeError("discard")
    except RuntimeError:
        pass
    assert not arr.flags.writeable
    assert q.qsize() == 0 and q.empty()
    q.put_nowait(item(1))
    assert q.full()  # no spare slot: the discarded array still views the other one ...
    with pytest.raises(shared_queue.Full):
        q.put_nowait(item(2))
    assert value(arr) == 666
    del arr
    gc.collect()
    assert not q.full()
    q.put_nowait(item(2))  # ... until it is gone
    assert q.full() and q.qsize() == 2
    assert drain(q) == [1, 2]
    assert_healthy(q)


@pytest.mark.parametrize("capacity", [1, 2])
def test_repeated_discards_never_block(make_queue: Any, capacity: int) -> None:
    """More discarded put_views than there are slots, each array kept until the next: no
    put_view waits, nothing is counted, the queue stays whole."""
    q = typed(make_queue, capacity=capacity, spare_slots=2)
    arr = None
    for i in range(5 * (q.capacity + 2)):
        try:
            with q.put_view(block=False) as arr:
                arr[...] = i
                raise RuntimeError("discard")
        except RuntimeError:
            pass
        assert q.qsize() == 0 and not q.full()
    assert arr is not None and value(arr) == 5 * (q.capacity + 2) - 1
    del arr
    gc.collect()
    assert_healthy(q)


def test_get_nowait_after_a_discarded_put_view(make_queue: Any) -> None:
    q = typed(make_queue, capacity=4)
    try:
        with q.put_view() as arr:
            raise RuntimeError("discard")
    except RuntimeError:
        pass
    del arr
    q.put(item(1))
    assert value(q.get_nowait()) == 1


def test_put_view_array_kept_after_a_raising_block(make_queue: Any) -> None:
    q = typed(make_queue, capacity=2)
    kept = None
    try:
        with q.put_view() as arr:
            kept = arr
            arr[...] = 666
            raise RuntimeError("discard")
    except RuntimeError:
        pass
    del arr
    assert kept is not None
    try:
        assert not kept.flags.writeable
        q.put(item(1), timeout=0.2)
        with pytest.raises(shared_queue.Full):  # the next put would reuse the kept array's slot
            q.put(item(2), timeout=0.2)
        assert value(kept) == 666
        assert drain(q) == [1]
    finally:
        del kept
        gc.collect()


def test_dropping_a_view_wakes_a_blocked_put_batch(make_queue: Any) -> None:
    q = typed(make_queue, capacity=2, ri=NO_RECOVERY)
    q.put_batch([item(1), item(2)])
    with q.get_view() as kept:
        pass
    assert value(q.get()) == 2
    batch = Bg(q.put_batch, [item(3), item(4)], True, 2.0)  # 2 s: bounds the failure
    batch.quiet()
    t_drop = time.monotonic()
    del kept
    gc.collect()
    batch.join()
    assert batch.t_done - t_drop < PROMPT
    assert drain(q) == [3, 4]


# -- FIFO ------------------------------------------------------------------------------------------
def test_fifo_with_every_mix_of_puts_and_gets(make_queue: Any) -> None:
    q = typed(make_queue, capacity=4)
    rng = random.Random(SEED)
    model: collections.deque[int] = collections.deque()
    nxt = 0
    for _ in range(400):  # wraps around the ring about a hundred times
        if len(model) < q.capacity and (not model or rng.random() < 0.5):
            if rng.random() < 0.5:
                q.put_nowait(item(nxt))
            else:
                put_view_value(q, nxt, block=False)
            model.append(nxt)
            nxt += 1
        else:
            got = value(q.get_nowait()) if rng.random() < 0.5 else view_value(q, block=False)
            assert got == model.popleft()
        assert q.qsize() == len(model)
    assert drain(q) == list(model)
    assert_healthy(q)


def test_open_put_view_holds_back_nothing(make_queue: Any) -> None:
    """Items put while a put_view is open flow past it; its item is queued when its block
    exits, and wakes a get that waits for it."""
    q = typed(make_queue, capacity=4, ri=NO_RECOVERY)
    q.put(item(1))
    with q.put_view() as arr:
        q.put(item(3))
        assert q.qsize() == 2
        assert view_value(q, block=False) == 1
        assert value(q.get_nowait()) == 3
        with pytest.raises(shared_queue.Empty):
            q.get_nowait()
        consumer = Bg(lambda: view_value(q, timeout=TIMEOUT))
        consumer.quiet()
        arr[...] = 2
        t_publish = time.monotonic()
    assert consumer.join() == 2
    assert consumer.t_done - t_publish < PROMPT
    del arr
    gc.collect()
    assert_healthy(q)


def test_open_put_views_count_against_capacity(make_queue: Any) -> None:
    """An open put_view has its ring entry reserved, so its exit never waits."""
    q = typed(make_queue, capacity=2, spare_slots=2)
    with q.put_view() as first:
        q.put(item(1))
        assert q.full() and q.qsize() == 1
        with pytest.raises(shared_queue.Full):
            q.put_nowait(item(2))
        first[...] = 0
    assert drain(q) == [1, 0]
    del first
    gc.collect()
    assert_healthy(q)


def test_nested_put_views_queue_in_exit_order(make_queue: Any) -> None:
    q = typed(make_queue, capacity=4)
    with q.put_view() as first:
        first[...] = 1
        q.put(item(2))
        with q.put_view() as third:
            third[...] = 3
        assert q.qsize() == 2  # 2 and 3 are queued; 1 is not, its block is open
    assert q.qsize() == 3
    assert [view_value(q), value(q.get()), view_value(q)] == [2, 3, 1]
    del first, third
    gc.collect()
    assert_healthy(q)


# -- exactly once, FIFO, never reused: many producers and consumers --------------------------------
def _verify_stress(n: int, discarded: dict[int, list[int]],
                   results: list[tuple[list[tuple[int, int]], int]]) -> None:  # fmt: skip
    expected = {(p, k) for p, ds in discarded.items() for k in range(n) if k not in ds}
    got = [x for seq, _ in results for x in seq]
    dupes = [x for x, c in collections.Counter(got).items() if c > 1]
    assert not dupes, f"delivered more than once: {dupes[:10]}"
    assert set(got) == expected, (
        f"lost {sorted(expected - set(got))[:10]}, unexpected {sorted(set(got) - expected)[:10]}"
    )
    for seq, _ in results:  # each consumer sees each producer's items in order
        for p in discarded:
            ks = [k for pp, k in seq if pp == p]
            assert ks == sorted(ks), f"producer {p}'s items out of order: {ks}"
    assert sum(len(ds) for ds in discarded.values()) > 0  # discards happened
    assert sum(kept for _, kept in results) > 0  # views were kept past their block


@pytest.mark.parametrize("how", ["threads", "fork", "spawn"])
def test_many_producers_and_consumers_holding_views(how: str, make_queue: Any, qname: str) -> None:
    n_prod, n_cons, n, hold = 3, 3, 200, 0.003
    if how == "spawn":
        n_prod, n_cons, n = 2, 2, 120
    seed = SEED + {"threads": 0, "fork": 1, "spawn": 2}[how]
    print(f"SHARED_QUEUE_VIEW_SEED={SEED}")
    q = make_queue(capacity=8, dtype=vc.DTYPE, shape=(vc.WORDS,), recovery_interval=RI)
    results: list[tuple[list[tuple[int, int]], int]] = []
    discarded: dict[int, list[int]] = {}
    if how == "threads":
        # Producers share one handle; each consumer has a handle of its own.
        producers = [Bg(vc.produce, q, p, n, seed * 100 + p, hold) for p in range(n_prod)]
        consumers = [
            Bg(vc.consume, make_queue(create=False, recovery_interval=RI), seed * 100 + 50 + c,
               hold)
            for c in range(n_cons)
        ]  # fmt: skip
        for p, producer in enumerate(producers):
            discarded[p] = producer.join()
        for c in range(n_cons):
            q.put(vc.make_item(vc.STOP, c))
        results = [consumer.join() for consumer in consumers]
    else:
        ctx = multiprocessing.get_context(how)
        procs: list[Child] = []
        try:
            for c in range(n_cons):
                r, w = ctx.Pipe(duplex=False)
                cargs = (w, qname, RI, seed * 100 + 50 + c, hold)
                proc = ctx.Process(target=vc.stress_consumer, args=cargs, daemon=True)
                proc.start()
                w.close()
                procs.append(Child(proc, r))
            for p in range(n_prod):
                r, w = ctx.Pipe(duplex=False)
                pargs = (w, qname, RI, p, n, seed * 100 + p, hold)
                proc = ctx.Process(target=vc.stress_producer, args=pargs, daemon=True)
                proc.start()
                w.close()
                procs.append(Child(proc, r))
            for p, child in enumerate(procs[n_cons:]):
                discarded[p] = child.expect("done")[1]
                child.finish()
            for c in range(n_cons):
                q.put(vc.make_item(vc.STOP, c))
            for child in procs[:n_cons]:
                _, got, kept = child.expect("done")
                results.append((got, kept))
                child.finish()
        finally:
            for child in procs:
                if child.proc.exitcode is None:
                    child.proc.kill()
                child.proc.join(TIMEOUT)
                child.conn.close()
    _verify_stress(n, discarded, results)
    with pytest.raises(shared_queue.Empty):
        q.get_nowait()
    for k in range(q.capacity):  # no slot is left held
        q.put_nowait(vc.make_item(0, k))
    with pytest.raises(shared_queue.Full):
        q.put_nowait(vc.make_item(1, 0))
    assert [vc.check_item(q.get_nowait()) for _ in range(q.capacity)] == [
        (0, k) for k in range(q.capacity)
    ]


# -- the plain loop never deadlocks (issue 10) ----------------------------------------------------
@pytest.mark.parametrize(("capacity", "consumers"), [(1, 1), (2, 2), (3, 2)])
def test_plain_view_loops_never_deadlock(
    make_queue: Any, qname: str, capacity: int, consumers: int, children: Callable[..., Child]
) -> None:
    """Producers and consumers that keep their last array bound while the next put_view or
    get_view waits (``with q.get_view() as frame:`` in a loop) run to the end with the
    default spare slots, every item exactly once, and no kept frame ever changes."""
    # NO_RECOVERY: every wake-up must come from a post; a lost one stalls past the timeout.
    ri = NO_RECOVERY
    q = make_queue(capacity=capacity, dtype=np.int64, shape=SHAPE, recovery_interval=ri)
    assert q._seg is not None and q._seg.spare_slots == 2
    n = 200
    producers = [children(vc.plain_put_view_loop, qname, ri, 10_000 * (p + 1), n)
                 for p in range(2)]  # fmt: skip
    takers = [children(vc.plain_get_view_loop, qname, ri) for _ in range(consumers)]
    for p, child in enumerate(producers):
        assert child.expect("done")[1] == 10_000 * (p + 1) + n - 1
        child.finish()
    for _ in takers:
        q.put(item(-1), timeout=TIMEOUT)  # one stop item each: a get_view takes one item
    got: list[int] = []
    for child in takers:
        _, values, stale_checks = child.expect("done")
        got += values
        assert stale_checks == len(values)
        child.finish()
    assert sorted(got) == [10_000 * (p + 1) + k for p in range(2) for k in range(n)]
    assert_healthy(q)


# -- across processes ------------------------------------------------------------------------------
def test_parent_put_view_child_get_view(
    make_queue: Any, qname: str, ctx: Any, children: Callable[..., Child]
) -> None:
    q = typed(make_queue, capacity=3)
    with q.put_view() as arr:
        arr[...] = np.arange(8) * 3
    del arr
    gc.collect()
    release = ctx.Event()
    child = children(vc.hold_get_view, qname, RI, release)
    _, values, writeable, _ = child.expect("reached")
    assert values == [i * 3 for i in range(8)]
    assert not writeable
    assert room(q) == 2  # the child's view holds a slot
    release.set()
    assert child.expect("released")[1] == values
    child.finish()
    assert room(q) == 3
    assert_healthy(q)


def test_child_put_view_parent_get_view(
    make_queue: Any, qname: str, ctx: Any, children: Callable[..., Child]
) -> None:
    q = typed(make_queue, capacity=3)
    release = ctx.Event()
    child = children(vc.put_view_then, qname, RI, 9, "hold", release)
    child.expect("reached")
    assert view_value(q) == 9
    assert room(q) == 2  # the child's published array pins its slot
    release.set()
    _, values, writeable = child.expect("released")
    assert values == [9] * 8
    assert not writeable
    child.finish()
    assert room(q) == 3
    assert_healthy(q)


# -- crashes ---------------------------------------------------------------------------------------
def _within_recovery(t_done: float, t_killed: float, what: str) -> None:
    elapsed = t_done - t_killed
    bound = RI + MARGIN
    assert elapsed < bound, f"{what} took {elapsed:.2f} s after the kill (bound {bound:.2f} s)"


def test_killed_holding_a_get_view(
    make_queue: Any, qname: str, children: Callable[..., Child]
) -> None:
    """Its slot comes back within recovery_interval; the item it held is gone."""
    q = typed(make_queue, capacity=2)
    q.put(item(1))
    q.put(item(2))
    child = children(vc.hold_get_view, qname, RI, None)
    assert child.expect("reached")[1] == [1] * 8
    producer = Bg(q.put, item(3), True, TIMEOUT)
    producer.quiet()  # the queue is full: 2 waits, 1's slot is held by a live process
    t_killed = child.kill()
    producer.join()
    _within_recovery(producer.t_done, t_killed, "the blocked put")
    assert drain(q) == [2, 3]
    assert_healthy(q)


def test_killed_inside_an_open_put_view(
    make_queue: Any, qname: str, children: Callable[..., Child]
) -> None:
    """Items flow past it meanwhile; its ring entry and slot come back within
    recovery_interval of the kill; its half item is never delivered."""
    q = typed(make_queue, capacity=2)
    child = children(vc.put_view_then, qname, RI, 666, "open", None)
    child.expect("reached")
    q.put(item(1))
    assert value(q.get_nowait()) == 1
    q.put(item(2))
    producer = Bg(q.put, item(3), True, TIMEOUT)
    producer.quiet()  # across a recovery check: a live writer keeps its entry
    t_killed = child.kill()
    producer.join()
    _within_recovery(producer.t_done, t_killed, "the blocked put")
    assert drain(q) == [2, 3]
    assert_healthy(q)


def test_killed_while_its_put_view_array_pins_the_slot(
    make_queue: Any, qname: str, children: Callable[..., Child]
) -> None:
    """Capacity comes back within recovery_interval of the kill."""
    q = typed(make_queue, capacity=2)
    child = children(vc.put_view_then, qname, RI, 5, "pinned", None)
    child.expect("reached")
    assert value(q.get(timeout=TIMEOUT)) == 5  # consumed; the slot stays pinned
    q.put(item(1))
    producer = Bg(q.put, item(2), True, TIMEOUT)
    producer.quiet()
    t_killed = child.kill()
    producer.join()
    _within_recovery(producer.t_done, t_killed, "the blocked put")
    assert drain(q) == [1, 2]
    assert_healthy(q)


# -- closing the handle while views live -----------------------------------------------------------
def _take_views(q: SharedMemoryQueue, kind: str) -> np.ndarray[Any, Any]:
    if kind == "get_view-array":
        q.put(np.arange(4, dtype=np.int64))
        with q.get_view() as arr:
            pass
    elif kind == "get_view-bytes":
        q.put(b"four")
        with q.get_view() as arr:
            pass
    else:
        with q.put_view(4, np.int64) as arr:
            arr[...] = 5
    return arr


@pytest.mark.parametrize(
    "kind",
    [
        "get_view-array",
        "get_view-bytes",
        "put_view-array",
    ],
)  # fmt: skip
def test_close_while_views_live(
    kind: str, make_queue: Any, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """close() does not raise; dropping the arrays later raises nothing; the slot comes back."""
    q = make_queue(capacity=2, item_size=256, raw=True, recovery_interval=RI)
    other = make_queue(create=False, recovery_interval=RI)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    arr = _take_views(q, kind)
    try:
        if kind == "put_view-array":
            assert other.get(timeout=TIMEOUT).tolist() == [5] * 4
        q.close()
    finally:
        # Drop the array here even if close() raised, so that what its finalizer raises
        # lands in this test's hook and not in a later test.
        del arr
        gc.collect()
        monkeypatch.undo()
    err = capfd.readouterr().err
    assert "Exception ignored" not in err
    assert not unraisable, [u.exc_value for u in unraisable]
    # The other handle gets the slot back when it looks for room.
    other.put_nowait(b"a")
    other.put_nowait(b"b")
    assert [other.get_nowait(), other.get_nowait()] == [b"a", b"b"]


_READ_AFTER_CLOSE = """
import gc, sys
import numpy as np
from shared_queue import SharedMemoryQueue
q = SharedMemoryQueue(sys.argv[1], create=True, capacity=4, item_size=256, raw=True)
q.unlink()
q.put(np.arange(4, dtype=np.int64))
with q.get_view() as got:
    pass
with q.put_view(4, np.int64) as put:
    put[...] = 7
q.close()
print(got.tolist(), put.tolist(), flush=True)
del got, put
gc.collect()
print("ok", flush=True)
"""


def test_views_stay_readable_after_close(qname: str) -> None:
    """A view outlives its handle: it still reads its item (in a child: a segfault is fatal)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_READ_AFTER_CLOSE), qname],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.splitlines() == ["[0, 1, 2, 3] [7, 7, 7, 7]", "ok"]
    assert "Exception ignored" not in proc.stderr


def test_close_inside_an_open_put_view(make_queue: Any, qname: str) -> None:
    """The array of an open put_view counts as a view from its claim: closing the handle in
    the block keeps the mapping, the block's writes land, and the item is queued."""
    q = typed(make_queue, capacity=2)
    other = make_queue(create=False)
    with q.put_view() as arr:
        q.close()
        arr[...] = 5
    assert value(other.get(timeout=TIMEOUT)) == 5
    del arr
    gc.collect()
    assert_healthy(other)


def test_a_slot_left_for_a_sweep_counts_when_a_put_reclaims(make_queue: Any) -> None:
    """A view released while another thread (here: this test, through ctypes) holds the
    consumer lock is left DONE for a sweep; the next put that finds the pool dry sweeps it and
    goes ahead, instead of raising Full."""
    import ctypes

    from shared_queue import _layout as L

    q = typed(make_queue, capacity=2)  # no spare slots
    q.put(item(1))
    q.put(item(2))
    with q.get_view() as kept:
        pass
    seg = q._seg
    assert seg is not None
    libc = ctypes.CDLL(None)
    base = ctypes.addressof(ctypes.c_char.from_buffer(seg.buf))
    mutex = ctypes.c_void_p(base + L.HEADER_DTYPE.fields["consumer_mutex"][1])  # type: ignore[index]
    assert libc.pthread_mutex_lock(mutex) == 0
    try:
        del kept
        gc.collect()  # the finalizer finds the lock busy: the slot waits for a sweep
    finally:
        assert libc.pthread_mutex_unlock(mutex) == 0
    assert seg.fields["sweep"] == 1 and not q.full()
    q.put_nowait(item(3))  # the pool looked dry: the put swept, and went in
    assert drain(q) == [2, 3]
    assert_healthy(q)
