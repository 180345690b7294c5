"""Single-process queue behaviour: the original API, blocking and timeouts, errors, lifecycle.

Threads stand in for other processes where a call must be shown to block and then complete.
Every wait is bounded: TIMEOUT is only reached on a deadlock.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import numpy as np
import posix_ipc
import pytest
from _support import TIMEOUT, drain, remove_queue, wait_blocked

from shared_queue import Empty, Full, IncompatibleQueueError, SharedMemoryQueue, _segment
from shared_queue import _layout as L
from shared_queue._segment import SHM_DIR, base_name

MakeQueue = Callable[..., SharedMemoryQueue]

IMMEDIATE = 0.1  # a call that must not wait returns within this (scheduling slack)
EARLY = 0.010  # a timed wait may end this much before its timeout (clock granularity)
LATE = 0.5  # ... and this much after it (scheduling slack on a loaded machine)
DELAY = 0.2  # how long a helper thread lets the blocked caller wait before unblocking it
PROTOCOL = 5  # the pickle protocol of the library's serializer


# -- helpers --------------------------------------------------------------------------------


def esc(name: str) -> str:
    return re.escape(name)


def path_of(name: str, run_id: str = "") -> str:
    return os.path.join(SHM_DIR, base_name(name, run_id))


def entries_of(name: str, run_id: str = "") -> list[str]:
    """Everything in /dev/shm that belongs to the queue: segment, temp files, semaphores."""
    base = base_name(name, run_id)
    return sorted(
        e for e in os.listdir(SHM_DIR) if e.startswith(base) or e.startswith(f"sem.{base}")
    )


def psize(item: Any) -> int:
    return len(pickle.dumps(item, protocol=PROTOCOL))


class Later:
    """Run ``fn`` in a thread once a call waits on ``q``'s queue and ``delay`` more seconds
    passed; ``join`` re-raises its exception.

    So the blocked call, started after this, provably waited at least ``delay``.
    """

    def __init__(self, q: SharedMemoryQueue, fn: Callable[[], Any], delay: float = DELAY) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                wait_blocked(q)
                time.sleep(delay)
                self.result = fn()
            except BaseException as exc:  # re-raised in join()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "helper thread deadlocked"
        if self.error is not None:
            raise self.error
        return self.result


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.monotonic()
    try:
        result = fn()
    except BaseException as exc:
        return time.monotonic() - t0, exc
    return time.monotonic() - t0, result


def bounded(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``timed(fn)`` in a thread joined within TIMEOUT: for calls that may block forever."""
    box: list[tuple[float, Any]] = []
    t = threading.Thread(target=lambda: box.append(timed(fn)), daemon=True)
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive(), "call deadlocked"
    return box[0]


def assert_blocked_for(elapsed: float, timeout: float) -> None:
    assert elapsed >= timeout - EARLY, f"returned after {elapsed:.3f}s: appeared not to block"
    assert elapsed < timeout + LATE, f"returned after {elapsed:.3f}s, timeout was {timeout}s"


def _explode(msg: str) -> None:
    raise RuntimeError(msg)


class Explodes:
    """Pickles fine; unpickling it raises RuntimeError('boom')."""

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _explode, ("boom",)


def bytes_item_of_size(size: int) -> bytes:
    """A bytes object whose pickle is exactly ``size`` bytes."""
    for n in range(size, -1, -1):
        if psize(b"x" * n) == size:
            return b"x" * n
    raise AssertionError(f"no bytes object pickles to {size} bytes")


def unpickle_msg(name: str) -> str:
    return (
        rf"^item of \d+ bytes from queue '{esc(name)}' could not be unpickled: "
        r"RuntimeError\('boom'\)$"
    )


@pytest.fixture
def extra_names(request: pytest.FixtureRequest) -> Iterator[list[tuple[str, str]]]:
    """(name, run_id) pairs a test creates outside ``qname``; removed afterwards."""
    names: list[tuple[str, str]] = []
    yield names
    for name, run_id in names:
        remove_queue(name, run_id)


# -- construction ---------------------------------------------------------------------------


def test_constructor_defaults(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue()
    assert (q.name, q.run_id, q.capacity, q.item_size) == (qname, "", 1000, 4096)
    assert not q.closed
    assert os.path.getsize(path_of(qname)) == L.segment_size(1000, 4096)


def test_positional_arguments_of_the_original_api(qname: str) -> None:
    # SharedMemoryQueue(name, create, capacity, item_size, run_id, lock)
    with SharedMemoryQueue(qname, True, 5, 64, "", None) as q:
        assert (q.capacity, q.item_size, q.run_id) == (5, 64, "")


def test_attach_reads_capacity_and_item_size_from_segment(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=7, item_size=100)
    for kwargs in ({}, {"capacity": 3, "item_size": 5}, {"capacity": 5000, "item_size": 1 << 20}):
        other = make_queue(create=False, **kwargs)
        assert (other.capacity, other.item_size) == (7, 100)
    q.put("hello")
    assert other.get_nowait() == "hello"


def test_lock_is_accepted_and_ignored(make_queue: MakeQueue) -> None:
    lock = threading.Lock()
    q = make_queue(capacity=2, item_size=64, lock=lock)
    other = make_queue(create=False, lock=object())
    q.put(1)
    other.put(2)
    assert not lock.locked()
    assert [other.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)] == [1, 2]


def test_missing_name_on_attach_raises_file_not_found(qname: str) -> None:
    pattern = rf"^no queue '{esc(qname)}' \({esc(path_of(qname))}\): create it with create=True$"
    with pytest.raises(FileNotFoundError, match=pattern):
        SharedMemoryQueue(qname)
    assert entries_of(qname) == []


def test_existing_name_on_create_raises_file_exists(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    before = entries_of(qname)
    assert len(before) == 4  # segment + three semaphores
    pattern = (
        rf"^queue '{esc(qname)}' already exists \({esc(path_of(qname))}\); .* "
        rf"`python -m shared_queue rm {esc(qname)}` .* `python -m shared_queue gc`$"
    )
    with pytest.raises(FileExistsError, match=pattern):
        make_queue(capacity=9, item_size=9)
    assert entries_of(qname) == before  # nothing added, nothing removed
    q.put("still works")
    assert q.get_nowait() == "still works"


BAD_SIZES = [
    (0, ValueError, r"must be between 1 and \d+, got 0$"),
    (-1, ValueError, r"must be between 1 and \d+, got -1$"),
    (True, TypeError, r"must be an int, not bool$"),
    (False, TypeError, r"must be an int, not bool$"),
    (1.5, TypeError, r"must be an int, not float$"),
    (64.0, TypeError, r"must be an int, not float$"),
    ("64", TypeError, r"must be an int, not str$"),
    (None, TypeError, r"must be an int, not NoneType$"),
]


@pytest.mark.parametrize("field", ["capacity", "item_size"])
@pytest.mark.parametrize(("value", "exc", "tail"), BAD_SIZES)
def test_bad_capacity_or_item_size_raise(
    make_queue: MakeQueue, qname: str, field: str, value: Any, exc: type, tail: str
) -> None:
    kwargs = {"capacity": 4, "item_size": 64, field: value}
    with pytest.raises(exc, match=rf"^{field} {tail}"):
        make_queue(**kwargs)
    assert entries_of(qname) == []


def test_too_large_capacity_or_item_size_raise(make_queue: MakeQueue, qname: str) -> None:
    with pytest.raises(ValueError, match=r"^capacity must be between 1 and 2147483647, got "):
        make_queue(capacity=2**31, item_size=64)
    # numpy's largest void field, less a slot's 64-byte head and rounding, is the real limit.
    for item_size in (2**32, 2**32 - 1, 2**31 - 1):
        with pytest.raises(ValueError, match=r"^item_size must be between 1 and 2147483519, got "):
            make_queue(capacity=1, item_size=item_size)
    assert entries_of(qname) == []


def test_bad_name_raises(qname: str) -> None:
    with pytest.raises(ValueError, match=r"^queue name must not be empty$"):
        SharedMemoryQueue("", create=True)
    with pytest.raises(ValueError, match=r"^queue name 'a/b' must not contain '/' or NUL$"):
        SharedMemoryQueue("a/b", create=True)
    with pytest.raises(TypeError, match=r"^queue name must be a str, not int$"):
        SharedMemoryQueue(5, create=True)  # type: ignore[arg-type]


def test_minimal_queue(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=1, item_size=1)
    with pytest.raises(ValueError, match=r"^item of \d+ bytes exceeds item_size=1 of queue"):
        q.put(None)  # even None pickles to more than 1 byte
    with pytest.raises(Empty):
        q.get_nowait()


def test_long_name_queue_works(extra_names: list[tuple[str, str]], qname: str) -> None:
    name = f"{qname}-" + "L" * 300
    extra_names.append((name, ""))
    with SharedMemoryQueue(name, create=True, capacity=2, item_size=64) as q:
        with SharedMemoryQueue(name) as other:
            q.put("long")
            assert other.get(timeout=TIMEOUT) == "long"
        q.unlink()
    assert entries_of(name) == []


def test_run_id_namespaces_queues(
    make_queue: MakeQueue, qname: str, extra_names: list[tuple[str, str]]
) -> None:
    extra_names.append((qname, "r1"))
    plain = make_queue(capacity=2, item_size=64)
    ns = make_queue(capacity=3, item_size=128, run_id="r1")
    assert ns.run_id == "r1"
    plain.put("plain")
    ns.put("namespaced")
    other = make_queue(create=False, run_id="r1")
    assert other.capacity == 3
    assert other.get_nowait() == "namespaced"
    assert plain.get_nowait() == "plain"
    with pytest.raises(
        FileNotFoundError, match=rf"^no queue '{esc(qname)}' \(run_id 'r2'\) \(.*\): create it"
    ):
        make_queue(create=False, run_id="r2")
    ns.unlink()


# -- put / get ------------------------------------------------------------------------------


ITEMS = [
    0,
    -1,
    2**100,
    1.5,
    "text",
    "ünïcødé",
    b"",
    b"\x00\xff" * 20,
    None,
    True,
    (1, (2, 3)),
    [1, [2, [3]]],
    {"a": 1, "b": [2, 3]},
    {1, 2, 3},
    frozenset({4}),
    Empty,
    ValueError("an exception"),
]


def test_put_get_fifo(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=len(ITEMS), item_size=256)
    for item in ITEMS:
        q.put(item)
    out = [q.get() for _ in ITEMS]
    for got, want in zip(out, ITEMS, strict=True):
        if isinstance(want, Exception):
            assert type(got) is type(want) and got.args == want.args
        else:
            assert got == want and type(got) is type(want)
    assert q.empty()


def test_numpy_array_round_trips(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=2, item_size=4096)
    a = np.arange(100, dtype=np.float64).reshape(10, 10)
    q.put(a)
    b = q.get_nowait()
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_nowait_variants(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    with pytest.raises(Empty, match=rf"^queue '{esc(qname)}' is empty$"):
        q.get_nowait()
    q.put_nowait("a")
    q.put_nowait("b")
    with pytest.raises(Full, match=rf"^queue '{esc(qname)}' is full \(capacity=2\)$"):
        q.put_nowait("c")
    assert q.get_nowait() == "a"
    q.put_nowait("c")
    assert [q.get_nowait(), q.get_nowait()] == ["b", "c"]
    with pytest.raises(Empty):
        q.get_nowait()


def test_fifo_across_wraparound_with_varying_sizes(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=3, item_size=512)
    expected = []
    got = []
    for i in range(50):
        item = bytes([i % 256]) * ((i * 37) % 400)  # long and short items share slots
        expected.append(item)
        q.put_nowait(item)
        if i >= 1:  # keep one or two items in the ring while it wraps
            got.append(q.get_nowait())
    got.extend(drain(q))
    assert got == expected


# -- put_batch / get_batch ------------------------------------------------------------------


def test_put_batch_puts_all_in_order(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=5, item_size=64)
    q.put_batch([1, 2])
    q.put_batch(x for x in (3, 4, 5))  # any iterable
    assert q.full()
    assert drain(q) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "kwargs", [{"block": False}, {"timeout": 0}, {"timeout": DELAY}], ids=["nowait", "t0", "timed"]
)
def test_put_batch_is_all_or_nothing(
    make_queue: MakeQueue, qname: str, kwargs: dict[str, Any]
) -> None:
    q = make_queue(capacity=5, item_size=64)
    q.put_batch(["a", "b", "c"])
    elapsed, exc = timed(lambda: q.put_batch(["x", "y", "z"], **kwargs))
    assert isinstance(exc, Full)
    assert re.match(rf"^queue '{esc(qname)}' is full \(capacity=5\)$", str(exc))
    if kwargs.get("timeout"):
        assert_blocked_for(elapsed, kwargs["timeout"])
    else:
        assert elapsed < IMMEDIATE
    assert q.qsize() == 3
    q.put_batch(["d", "e"], block=False)  # exactly the room left
    assert drain(q) == ["a", "b", "c", "d", "e"]
    assert q.get_metrics()["total_puts"] == 5


def test_put_batch_waits_for_room_for_the_whole_batch(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=4, item_size=64)
    other = make_queue(create=False)
    q.put_batch([1, 2, 3])
    # Room for one now; the consumer frees a second slot later.
    helper = Later(q, other.get)
    elapsed, exc = timed(lambda: q.put_batch([4, 5], timeout=TIMEOUT))
    assert exc is None
    assert elapsed >= DELAY - EARLY, "put_batch did not wait for room for the whole batch"
    assert helper.join() == 1
    assert drain(q) == [2, 3, 4, 5]


def test_put_batch_larger_than_capacity_raises_value_error(
    make_queue: MakeQueue, qname: str
) -> None:
    q = make_queue(capacity=5, item_size=64)
    pattern = rf"^batch of 6 items exceeds capacity=5 of queue '{esc(qname)}'$"
    for kwargs in ({}, {"block": False}, {"timeout": 1}):
        elapsed, exc = bounded(lambda kw=kwargs: q.put_batch(range(6), **kw))
        assert isinstance(exc, ValueError) and re.match(pattern, str(exc)), exc
        assert elapsed < IMMEDIATE
    assert q.empty()
    q.put_batch(range(5))
    assert drain(q) == [0, 1, 2, 3, 4]


def test_empty_batch_is_a_no_op_even_when_full(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.put_batch([])
    assert q.empty()
    q.put_batch([1, 2])
    for kwargs in ({}, {"block": False}, {"timeout": 5}):
        elapsed, exc = bounded(lambda kw=kwargs: q.put_batch([], **kw))
        assert exc is None and elapsed < IMMEDIATE
    assert q.get_metrics()["total_puts"] == 2
    assert drain(q) == [1, 2]


def test_put_batch_with_a_bad_item_puts_nothing(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=5, item_size=64)
    with pytest.raises(ValueError, match=r"^item of \d+ bytes exceeds item_size=64 of queue"):
        q.put_batch([1, b"x" * 100, 3])
    with pytest.raises(TypeError, match=r"^item of type lock cannot be pickled for queue"):
        q.put_batch([1, threading.Lock(), 3])
    assert q.empty()
    q.put_batch([1, 2, 3, 4, 5], block=False)  # all slots still available
    assert drain(q) == [1, 2, 3, 4, 5]


class Rewrites:
    """Pickling it replaces the contents of ``target`` (a list being put as a batch)."""

    def __init__(self, target: list[Any]) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        self.target[:] = list(range(1000))  # the list's storage moves
        return int, (7,)


def test_put_batch_of_a_list_that_pickling_changes_puts_the_items_it_was_given(
    make_queue: MakeQueue,
) -> None:
    q = make_queue(capacity=8, item_size=64)
    batch: list[Any] = [1]
    batch.append(Rewrites(batch))
    batch.append(3)
    q.put_batch(batch)
    assert drain(q) == [1, 7, 3]


class Counted:
    """Counts how often it is pickled, across instances (the class lives in this module)."""

    reduces = 0

    def __init__(self, arr: Any = None) -> None:
        self.arr = arr

    def __reduce__(self) -> tuple[Any, ...]:
        Counted.reduces += 1
        return Counted, (self.arr,)


@pytest.mark.parametrize("batch", [False, True])
def test_an_item_is_pickled_once(make_queue: MakeQueue, batch: bool) -> None:
    """Also when its arrays go out of band (the C pickler's result is framed, not redone)."""
    q = make_queue(capacity=4, item_size=1 << 16)
    for item in (Counted(), Counted(np.arange(1000.0))):
        Counted.reduces = 0
        q.put_batch([item]) if batch else q.put(item)
        assert Counted.reduces == 1
        got = q.get(timeout=TIMEOUT)
        assert isinstance(got, Counted)
        assert (got.arr is None) == (item.arr is None)
        if item.arr is not None:
            np.testing.assert_array_equal(got.arr, item.arr)


def test_get_batch_returns_between_one_and_max_items(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=8, item_size=64)
    q.put_batch(range(8))
    assert q.get_batch(3) == [0, 1, 2]
    assert q.get_batch(1) == [3]
    assert q.get_batch(100) == [4, 5, 6, 7]  # fewer than asked: what is there
    q.put(8)
    assert q.get_batch(5, block=False) == [8]
    with pytest.raises(Empty):
        q.get_batch(5, block=False)


def test_get_batch_waits_for_the_first_item(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=4, item_size=64)
    other = make_queue(create=False)
    helper = Later(q, lambda: other.put("late"))
    elapsed, got = timed(lambda: q.get_batch(4, timeout=TIMEOUT))
    helper.join()
    assert got == ["late"]
    assert elapsed >= DELAY - EARLY, "get_batch appeared not to block"


def test_get_batch_timeouts(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=4, item_size=64)
    for kwargs in ({"block": False}, {"timeout": 0}):
        elapsed, exc = timed(lambda kw=kwargs: q.get_batch(4, **kw))
        assert isinstance(exc, Empty) and elapsed < IMMEDIATE
    elapsed, exc = timed(lambda: q.get_batch(4, timeout=DELAY))
    assert isinstance(exc, Empty)
    assert re.match(rf"^queue '{esc(qname)}' is empty$", str(exc))
    assert_blocked_for(elapsed, DELAY)


@pytest.mark.parametrize(
    ("max_items", "exc", "pattern"),
    [
        (0, ValueError, r"^max_items must be between 1 and \d+, got 0$"),
        (-3, ValueError, r"^max_items must be between 1 and \d+, got -3$"),
        (True, TypeError, r"^max_items must be an int, not bool$"),
        (2.0, TypeError, r"^max_items must be an int, not float$"),
    ],
)
def test_get_batch_bad_max_items(
    make_queue: MakeQueue, max_items: Any, exc: type, pattern: str
) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.put(1)
    with pytest.raises(exc, match=pattern):
        q.get_batch(max_items)
    assert q.get_nowait() == 1  # nothing consumed


# -- block x timeout ------------------------------------------------------------------------

IMMEDIATE_MODES = {
    "block=False": {"block": False},
    "block=False,timeout=5": {"block": False, "timeout": 5},  # the timeout is ignored
    "timeout=0": {"timeout": 0},
    "block=True,timeout=0": {"block": True, "timeout": 0},
}


@pytest.mark.parametrize("mode", list(IMMEDIATE_MODES))
def test_put_on_full_raises_at_once(make_queue: MakeQueue, qname: str, mode: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.put_batch(["a", "b"])
    elapsed, exc = timed(lambda: q.put("c", **IMMEDIATE_MODES[mode]))
    assert isinstance(exc, Full), exc
    assert re.match(rf"^queue '{esc(qname)}' is full \(capacity=2\)$", str(exc))
    assert elapsed < IMMEDIATE
    assert drain(q) == ["a", "b"]


@pytest.mark.parametrize("mode", list(IMMEDIATE_MODES))
def test_get_on_empty_raises_at_once(make_queue: MakeQueue, qname: str, mode: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    elapsed, exc = timed(lambda: q.get(**IMMEDIATE_MODES[mode]))
    assert isinstance(exc, Empty), exc
    assert re.match(rf"^queue '{esc(qname)}' is empty$", str(exc))
    assert elapsed < IMMEDIATE


@pytest.mark.parametrize("block", [True, None], ids=["block=True", "block-default"])
def test_timed_put_waits_then_raises_full(make_queue: MakeQueue, block: bool | None) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.put_batch(["a", "b"])
    kwargs: dict[str, Any] = (
        {"timeout": DELAY} if block is None else {"block": True, "timeout": DELAY}
    )
    elapsed, exc = timed(lambda: q.put("c", **kwargs))
    assert isinstance(exc, Full), exc
    assert_blocked_for(elapsed, DELAY)
    # The timed-out put returned the counts it held: exactly one slot frees per get.
    assert q.get_nowait() == "a"
    q.put_nowait("c")
    with pytest.raises(Full):
        q.put_nowait("d")
    assert drain(q) == ["b", "c"]


@pytest.mark.parametrize("block", [True, None], ids=["block=True", "block-default"])
def test_timed_get_waits_then_raises_empty(make_queue: MakeQueue, block: bool | None) -> None:
    q = make_queue(capacity=2, item_size=64)
    kwargs: dict[str, Any] = (
        {"timeout": DELAY} if block is None else {"block": True, "timeout": DELAY}
    )
    elapsed, exc = timed(lambda: q.get(**kwargs))
    assert isinstance(exc, Empty), exc
    assert_blocked_for(elapsed, DELAY)
    q.put_nowait(1)
    assert q.get_nowait() == 1
    with pytest.raises(Empty):
        q.get_nowait()


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["forever", "long"])
def test_blocking_get_returns_when_an_item_arrives(
    make_queue: MakeQueue, timeout: float | None
) -> None:
    q = make_queue(capacity=2, item_size=64)
    other = make_queue(create=False)
    helper = Later(q, lambda: other.put("late"))
    elapsed, got = bounded(lambda: q.get(timeout=timeout))
    helper.join()
    assert got == "late"
    assert elapsed >= DELAY - EARLY, "get appeared not to block"
    assert elapsed < DELAY + 5, "get was not woken promptly by the put"


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["forever", "long"])
def test_blocking_put_returns_when_a_slot_frees(
    make_queue: MakeQueue, timeout: float | None
) -> None:
    q = make_queue(capacity=2, item_size=64)
    other = make_queue(create=False)
    q.put_batch(["a", "b"])
    helper = Later(q, other.get)
    elapsed, exc = bounded(lambda: q.put("c", timeout=timeout))
    assert exc is None
    assert helper.join() == "a"
    assert elapsed >= DELAY - EARLY, "put appeared not to block"
    assert elapsed < DELAY + 5, "put was not woken promptly by the get"
    assert drain(q) == ["b", "c"]


@pytest.mark.parametrize(
    "call",
    ["put", "get", "put_batch", "get_batch"],
)
@pytest.mark.parametrize("timeout", [-1, -0.001])
def test_negative_timeout_raises_value_error(
    make_queue: MakeQueue, call: str, timeout: float
) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.put("a")
    fn = {
        "put": lambda: q.put("b", timeout=timeout),
        "get": lambda: q.get(timeout=timeout),
        "put_batch": lambda: q.put_batch(["b"], timeout=timeout),
        "get_batch": lambda: q.get_batch(2, timeout=timeout),
    }[call]
    with pytest.raises(ValueError, match=r"^'timeout' must be a non-negative number$"):
        fn()
    # Nothing happened: one item in, one slot free.
    q.put_nowait("b")
    with pytest.raises(Full):
        q.put_nowait("c")
    assert drain(q) == ["a", "b"]


# -- item size ------------------------------------------------------------------------------


@pytest.mark.parametrize("item_size", [16, 64, 65, 200, 300, 4096])
def test_item_of_exactly_item_size_fits(make_queue: MakeQueue, item_size: int) -> None:
    q = make_queue(capacity=2, item_size=item_size)
    item = bytes_item_of_size(item_size)
    q.put(item)
    assert q.get_nowait() == item
    q.put_batch([item, item])
    assert q.get_batch(2) == [item, item]
    assert q.get_metrics()["bytes_in"] == 3 * item_size


@pytest.mark.parametrize("item_size", [16, 64, 65, 200, 300, 4096])
def test_item_one_byte_too_large_is_refused(
    make_queue: MakeQueue, qname: str, item_size: int
) -> None:
    q = make_queue(capacity=2, item_size=item_size)
    item = bytes_item_of_size(item_size + 1)
    pattern = (
        rf"^item of {item_size + 1} bytes exceeds item_size={item_size} of queue "
        rf"'{esc(qname)}' \(create it with a larger item_size\)$"
    )
    with pytest.raises(ValueError, match=pattern):
        q.put(item)
    with pytest.raises(ValueError, match=pattern):
        q.put_nowait(item)
    with pytest.raises(ValueError, match=pattern):
        q.put_batch([item])
    assert q.empty()
    assert q.get_metrics()["total_puts"] == 0


def test_too_large_item_is_refused_at_once_when_full(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.put_batch(["a", "b"])
    big = bytes_item_of_size(65)
    # A permanent error, not Full: raised at once even by a blocking put.
    for call in (
        lambda: q.put(big, timeout=2),
        lambda: q.put(big, block=True, timeout=2),
        lambda: q.put(big, block=False),
        lambda: q.put_batch([big], timeout=2),
    ):
        elapsed, exc = timed(call)
        assert type(exc) is ValueError, exc
        assert re.match(
            rf"^item of 65 bytes exceeds item_size=64 of queue '{esc(qname)}'", str(exc)
        )
        assert elapsed < IMMEDIATE
    # Usable, nothing lost, slots accounted for.
    assert q.get_nowait() == "a"
    q.put_nowait("c")
    assert drain(q) == ["b", "c"]
    m = q.get_metrics()
    assert (m["total_puts"], m["total_gets"]) == (3, 3)


# -- serialization --------------------------------------------------------------------------


def _gen() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize(
    ("make_item", "type_name"),
    [(threading.Lock, "lock"), (_gen, "generator")],
    ids=["lock", "generator"],
)
def test_unpicklable_item_raises_type_error(
    make_queue: MakeQueue, qname: str, make_item: Callable[[], Any], type_name: str
) -> None:
    q = make_queue(capacity=2, item_size=4096)
    q.put("before")
    with pytest.raises(
        TypeError, match=rf"^item of type {type_name} cannot be pickled for queue '{esc(qname)}': "
    ) as info:
        q.put(make_item())
    assert info.value.__cause__ is not None
    # Unchanged: one item in, and exactly one slot still free.
    assert q.qsize() == 1
    q.put_nowait("after")
    with pytest.raises(Full):
        q.put_nowait("extra")
    assert drain(q) == ["before", "after"]


def test_item_that_fails_to_unpickle_is_consumed(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=8, item_size=256)
    q.put_batch([1, Explodes(), 2, 3])
    assert q.get() == 1
    with pytest.raises(pickle.UnpicklingError, match=unpickle_msg(qname)) as info:
        q.get()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "boom"
    assert [q.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)] == [2, 3]
    with pytest.raises(Empty):
        q.get_nowait()
    assert q.get_metrics()["total_gets"] == 4


def test_unpickle_failure_in_get_batch(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=8, item_size=256)
    q.put_batch([1, 2, Explodes(), 3, 4])
    assert q.get_batch(10) == [1, 2]  # the items before the bad one
    with pytest.raises(pickle.UnpicklingError, match=unpickle_msg(qname)) as info:
        q.get_batch(10)  # the bad one, on the next get
    assert isinstance(info.value.__cause__, RuntimeError)
    assert q.get_batch(10) == [3, 4]  # then the rest, in order
    with pytest.raises(Empty):
        q.get_nowait()


def test_unpickle_failure_first_in_get_batch(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=8, item_size=256)
    q.put_batch([Explodes(), 1, Explodes(), 2])
    with pytest.raises(pickle.UnpicklingError, match=unpickle_msg(qname)):
        q.get_batch(10)
    assert q.get() == 1  # a plain get after a batch continues in order
    with pytest.raises(pickle.UnpicklingError, match=unpickle_msg(qname)):
        q.get()
    q.put(3)
    assert q.get_batch(10) == [2]  # what this handle already took comes first
    assert q.get_batch(10) == [3]


LAMBDA = lambda x: x * 2  # noqa: E731 - a module-level lambda cannot be pickled by reference


def test_cloudpickle_semantics(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=8, item_size=8192)
    k = 10

    def closure(x: int) -> int:
        return x + k

    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

        def double(self) -> int:
            return 2 * self.v

    q.put(lambda x: x + 1)
    q.put(LAMBDA)
    q.put(closure)
    q.put(Local(21))
    q.put(Local)
    q.put({"fn": lambda: "nested"})
    assert q.get_nowait()(1) == 2
    assert q.get_nowait()(4) == 8
    assert q.get_nowait()(5) == 15
    obj = q.get_nowait()
    assert type(obj).__name__ == "Local" and obj.v == 21 and obj.double() == 42
    assert q.get_nowait()(3).v == 3
    assert q.get_nowait()["fn"]() == "nested"


# -- closed handles -------------------------------------------------------------------------

CLOSED_OPS: dict[str, Callable[[SharedMemoryQueue], Any]] = {
    "put": lambda q: q.put(1, timeout=1),
    "put_nowait": lambda q: q.put_nowait(1),
    "put_batch": lambda q: q.put_batch([1, 2], timeout=1),
    "get": lambda q: q.get(timeout=1),
    "get_blocking": lambda q: q.get(),
    "get_nowait": lambda q: q.get_nowait(),
    "get_batch": lambda q: q.get_batch(2, timeout=1),
    "qsize": lambda q: q.qsize(),
    "empty": lambda q: q.empty(),
    "full": lambda q: q.full(),
    "get_metrics": lambda q: q.get_metrics(),
}


@pytest.mark.parametrize("op", list(CLOSED_OPS))
def test_use_after_close_raises_value_error(make_queue: MakeQueue, qname: str, op: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.put("x")
    q.close()
    elapsed, exc = bounded(lambda: CLOSED_OPS[op](q))
    assert type(exc) is ValueError, exc
    assert re.match(rf"^queue '{esc(qname)}': this handle is closed$", str(exc))
    assert elapsed < IMMEDIATE
    # The queue itself lives on.
    with SharedMemoryQueue(qname) as other:
        assert other.get_nowait() == "x"


def test_empty_put_batch_after_close_raises_value_error(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.close()
    with pytest.raises(ValueError, match=rf"^queue '{esc(qname)}': this handle is closed$"):
        q.put_batch([])


def test_get_after_close_raises_even_with_items_held_by_the_handle(
    make_queue: MakeQueue, qname: str
) -> None:
    q = make_queue(capacity=4, item_size=256)
    q.put_batch([1, Explodes(), 2])
    assert q.get_batch(10) == [1]  # the handle now holds the bad item and 2
    q.close()
    closed = rf"^queue '{esc(qname)}': this handle is closed$"
    with pytest.raises(ValueError, match=closed):
        q.get_nowait()
    with pytest.raises(ValueError, match=closed):
        q.get_batch(10)


def test_close_is_idempotent(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=2, item_size=64)
    assert not q.closed
    q.close()
    assert q.closed
    q.close()
    q.close()
    assert q.closed


def test_context_manager_closes(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    with q as entered:
        assert entered is q
        q.put(1)
    assert q.closed
    with pytest.raises(RuntimeError, match=r"^inside$"), SharedMemoryQueue(qname) as other:
        assert other.get_nowait() == 1
        raise RuntimeError("inside")
    assert other.closed
    assert os.path.exists(path_of(qname))  # closing never removes the queue


def test_unlink(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    other = make_queue(create=False)
    q.put("kept")
    q.unlink()
    assert entries_of(qname) == []  # segment and semaphores gone from /dev/shm
    with pytest.raises(FileNotFoundError, match=rf"^no queue '{esc(qname)}' \("):
        SharedMemoryQueue(qname)
    # Open handles keep working.
    assert other.get_nowait() == "kept"
    other.put("still")
    assert q.get(timeout=TIMEOUT) == "still"
    # Once across all handles.
    pattern = rf"^queue segment {esc(path_of(qname))} was already unlinked$"
    with pytest.raises(FileNotFoundError, match=pattern):
        q.unlink()
    with pytest.raises(FileNotFoundError, match=pattern):
        other.unlink()
    # The name is free for a new queue, which the old handles do not see or unlink.
    new = make_queue(capacity=3, item_size=64)
    new.put("new")
    with pytest.raises(FileNotFoundError):
        other.unlink()
    with pytest.raises(Empty):
        other.get_nowait()
    with SharedMemoryQueue(qname) as attached:
        assert attached.capacity == 3
    new.unlink()


def test_unlink_through_a_closed_handle(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.close()
    q.unlink()
    assert entries_of(qname) == []
    with pytest.raises(FileNotFoundError, match=rf"^no queue '{esc(qname)}' \("):
        q.unlink()


def test_repr(make_queue: MakeQueue, qname: str) -> None:
    q = make_queue(capacity=3, item_size=64)
    want = f"SharedMemoryQueue(name={qname!r}, run_id='', capacity=3, item_size=64"
    assert re.match(rf"^{esc(want)}\)$", repr(q))
    q.close()
    assert re.match(rf"^{esc(want)}, closed\)$", repr(q))


# -- pickling handles -----------------------------------------------------------------------


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_pickled_handle_reattaches(
    make_queue: MakeQueue, qname: str, dumps: Callable[[Any], bytes]
) -> None:
    q = make_queue(capacity=4, item_size=64)
    data = dumps(q)
    assert len(data) < 500  # the name, not the contents
    with pickle.loads(data) as copy:
        assert copy is not q
        assert (copy.name, copy.run_id, copy.capacity, copy.item_size) == (qname, "", 4, 64)
        q.put("from original")
        assert copy.get_nowait() == "from original"
        copy.put("from copy")
        assert q.get_nowait() == "from copy"


def test_pickled_handle_keeps_run_id(
    make_queue: MakeQueue, qname: str, extra_names: list[tuple[str, str]]
) -> None:
    extra_names.append((qname, "rx"))
    q = make_queue(capacity=2, item_size=64, run_id="rx")
    with pickle.loads(pickle.dumps(q)) as copy:
        assert copy.run_id == "rx"
        q.put(1)
        assert copy.get_nowait() == 1
    q.unlink()


def test_pickled_handle_of_unlinked_queue_fails_to_load(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=2, item_size=64)
    data = pickle.dumps(q)
    q.unlink()
    with pytest.raises(FileNotFoundError, match=r"^no queue "):
        pickle.loads(data)


def test_several_handles_in_one_process_share_the_queue(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=10, item_size=64)
    handles = [q, make_queue(create=False), pickle.loads(pickle.dumps(q))]
    try:
        for i in range(9):
            handles[i % 3].put(i)
        assert [h.qsize() for h in handles] == [9, 9, 9]
        got = [handles[(i + 1) % 3].get_nowait() for i in range(9)]
        assert got == list(range(9))
        assert all(h.empty() for h in handles)
    finally:
        handles[2].close()


# -- state and metrics ----------------------------------------------------------------------


def test_qsize_empty_full(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=3, item_size=64)
    states = [(q.qsize(), q.empty(), q.full())]
    for i in range(3):
        q.put(i)
        states.append((q.qsize(), q.empty(), q.full()))
    for _ in range(3):
        q.get()
        states.append((q.qsize(), q.empty(), q.full()))
    assert states == [
        (0, True, False),
        (1, False, False),
        (2, False, False),
        (3, False, True),
        (2, False, False),
        (1, False, False),
        (0, True, False),
    ]


METRIC_KEYS = {
    "queue_size",
    "queue_capacity",
    "queue_utilization_percent",
    "queue_item_size_bytes",
    "spare_slots",
    "total_puts",
    "total_gets",
    "bytes_in",
    "bytes_out",
    "high_water_mark",
    "put_waits",
    "put_wait_seconds",
    "get_waits",
    "get_wait_seconds",
}


def test_metrics_of_a_new_queue(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=4, item_size=256)
    assert q.get_metrics() == {
        "queue_size": 0,
        "queue_capacity": 4,
        "queue_utilization_percent": 0.0,
        "queue_item_size_bytes": 256,
        "spare_slots": 0,
        "total_puts": 0,
        "total_gets": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "high_water_mark": 0,
        "put_waits": 0,
        "put_wait_seconds": 0.0,
        "get_waits": 0,
        "get_wait_seconds": 0.0,
    }


def test_metrics_count_puts_gets_bytes_and_high_water(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=4, item_size=256)
    items = ["a", 12345, [1, 2, 3], {"k": "v" * 50}, b"z" * 100]
    sizes = [psize(x) for x in items]
    q.put(items[0])
    q.put_batch(items[1:3])
    m = q.get_metrics()
    assert set(m) == METRIC_KEYS
    assert m["queue_size"] == 3
    assert m["queue_capacity"] == 4
    assert m["queue_utilization_percent"] == pytest.approx(75.0)
    assert m["queue_item_size_bytes"] == 256
    assert (m["total_puts"], m["total_gets"]) == (3, 0)
    assert (m["bytes_in"], m["bytes_out"]) == (sum(sizes[:3]), 0)
    assert m["high_water_mark"] == 3
    assert q.get_batch(2) == items[:2]
    m = q.get_metrics()
    assert (m["queue_size"], m["total_gets"], m["bytes_out"]) == (1, 2, sum(sizes[:2]))
    assert m["high_water_mark"] == 3  # a mark, not the current size
    q.put_batch(items[3:])
    q.put(items[0])
    m = q.get_metrics()
    assert (m["queue_size"], m["high_water_mark"], m["total_puts"]) == (4, 4, 6)
    assert m["queue_utilization_percent"] == pytest.approx(100.0)
    assert m["bytes_in"] == sum(sizes) + sizes[0]
    # Shared by every handle: counters live in the segment.
    with SharedMemoryQueue(q.name) as other:
        assert other.get_metrics() == m
        assert drain(other) == [items[2], items[3], items[4], items[0]]
    m = q.get_metrics()
    assert (m["total_gets"], m["bytes_out"]) == (6, m["bytes_in"])
    assert (m["put_waits"], m["get_waits"]) == (0, 0)  # nothing ever waited
    assert (m["put_wait_seconds"], m["get_wait_seconds"]) == (0.0, 0.0)


def test_metrics_count_a_get_that_waited(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=2, item_size=64)
    other = make_queue(create=False)
    helper = Later(q, lambda: other.put("late"))
    assert q.get(timeout=TIMEOUT) == "late"
    helper.join()
    m = q.get_metrics()
    assert m["get_waits"] == 1
    assert DELAY - EARLY <= m["get_wait_seconds"] < DELAY + 5
    assert m["put_waits"] == 0


def test_metrics_count_a_put_that_waited(make_queue: MakeQueue) -> None:
    q = make_queue(capacity=1, item_size=64)
    other = make_queue(create=False)
    q.put("a")
    helper = Later(q, other.get)
    q.put("b", timeout=TIMEOUT)
    assert helper.join() == "a"
    m = q.get_metrics()
    assert m["put_waits"] == 1
    assert DELAY - EARLY <= m["put_wait_seconds"] < DELAY + 5
    assert m["get_waits"] == 0
    assert m["high_water_mark"] == 1


# -- threads --------------------------------------------------------------------------------

N_PRODUCERS = 4
N_CONSUMERS = 4
PER_PRODUCER = 5000  # 20k items in all


@pytest.mark.parametrize("handles", ["one-handle", "handle-per-thread"])
@pytest.mark.parametrize("api", ["single", "batch"])
def test_threads_exactly_once(make_queue: MakeQueue, handles: str, api: str) -> None:
    q = make_queue(capacity=64, item_size=64)
    n_threads = N_PRODUCERS + N_CONSUMERS
    if handles == "one-handle":
        hs = [q] * n_threads
    else:
        hs = [make_queue(create=False) for _ in range(n_threads)]
    received: list[list[tuple[int, int]]] = [[] for _ in range(N_CONSUMERS)]
    errors: list[BaseException] = []

    def produce(h: SharedMemoryQueue, p: int) -> None:
        try:
            if api == "single":
                for i in range(PER_PRODUCER):
                    h.put((p, i), timeout=TIMEOUT)
            else:
                for i in range(0, PER_PRODUCER, 10):
                    h.put_batch([(p, j) for j in range(i, i + 10)], timeout=TIMEOUT)
        except BaseException as exc:
            errors.append(exc)

    def consume(h: SharedMemoryQueue, c: int) -> None:
        out = received[c]
        try:
            while True:
                if api == "single":
                    got = [h.get(timeout=TIMEOUT)]
                else:
                    got = h.get_batch(16, timeout=TIMEOUT)
                if None in got:
                    # Sentinels come after every item. A batch may hold several: pass the
                    # extra ones on to the other consumers.
                    first = got.index(None)
                    assert all(x is None for x in got[first:])
                    out.extend(got[:first])
                    for _ in range(len(got) - first - 1):
                        h.put(None, timeout=TIMEOUT)
                    return
                out.extend(got)
        except BaseException as exc:
            errors.append(exc)

    producers = [
        threading.Thread(target=produce, args=(hs[p], p), daemon=True) for p in range(N_PRODUCERS)
    ]
    consumers = [
        threading.Thread(target=consume, args=(hs[N_PRODUCERS + c], c), daemon=True)
        for c in range(N_CONSUMERS)
    ]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(TIMEOUT)
        assert not t.is_alive(), "producer deadlocked"
    for _ in range(N_CONSUMERS):
        q.put(None, timeout=TIMEOUT)  # one stop sentinel per consumer, after all items
    for t in consumers:
        t.join(TIMEOUT)
        assert not t.is_alive(), "consumer deadlocked"
    assert errors == []
    assert drain(q) == []

    everything = sorted(x for out in received for x in out)
    assert everything == [(p, i) for p in range(N_PRODUCERS) for i in range(PER_PRODUCER)]
    # FIFO: each consumer saw each producer's items in order.
    for out in received:
        for p in range(N_PRODUCERS):
            seq = [i for (pp, i) in out if pp == p]
            assert seq == sorted(seq)
    m = q.get_metrics()
    assert m["total_puts"] == m["total_gets"] >= N_PRODUCERS * PER_PRODUCER + N_CONSUMERS
    assert m["bytes_in"] == m["bytes_out"]
    assert m["high_water_mark"] <= 64
    assert q.empty()


# -- failed creation and foreign files ------------------------------------------------------


def _fail_link(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.EIO, "injected link failure")


def _fail_ftruncate(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "injected ftruncate failure")


def _interrupt(*args: Any, **kwargs: Any) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("target", "fake", "exc"),
    [
        ("link", _fail_link, OSError),
        ("ftruncate", _fail_ftruncate, OSError),
        ("link", _interrupt, KeyboardInterrupt),
    ],
    ids=["link", "ftruncate", "link-interrupted"],
)
def test_failed_creation_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
    make_queue: MakeQueue,
    qname: str,
    target: str,
    fake: Callable[..., None],
    exc: type[BaseException],
) -> None:
    base = base_name(qname, "")
    with monkeypatch.context() as m:
        m.setattr(_segment.os, target, fake)
        with pytest.raises(exc):
            make_queue(capacity=4, item_size=64)
    leftovers = [e for e in os.listdir(SHM_DIR) if e.startswith((base, f"sem.{base}"))]
    assert leftovers == []
    # The name is free: a retry succeeds.
    q = make_queue(capacity=4, item_size=64)
    q.put(1)
    assert q.get_nowait() == 1


def test_failed_semaphore_creation_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, make_queue: MakeQueue, qname: str
) -> None:
    real = posix_ipc.Semaphore
    calls = []

    def second_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 2:
            raise posix_ipc.PermissionsError("injected semaphore failure")
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(_segment.posix_ipc, "Semaphore", second_fails)
        with pytest.raises(posix_ipc.PermissionsError, match=r"^injected"):
            make_queue(capacity=4, item_size=64)
    assert len(calls) == 2
    assert entries_of(qname) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"not a queue", b"\x00" * 4096, os.urandom(8192), b"Q" * 5000],
    ids=["empty", "short", "zeros", "random", "ascii"],
)
def test_attaching_to_a_foreign_file_raises_incompatible(qname: str, content: bytes) -> None:
    path = path_of(qname)
    # 0600 as a queue's own: a file open to others is refused before its content is read.
    with open(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "wb") as f:
        f.write(content)
    fds_before = len(os.listdir("/proc/self/fd"))
    if len(content) < L.HEADER_SIZE:
        pattern = rf"^{esc(path)} \({len(content)} bytes\) is not a shared_queue segment$"
    else:
        pattern = rf"^{esc(path)} is not a shared_queue segment$"
    for _ in range(3):
        with pytest.raises(IncompatibleQueueError, match=pattern):
            SharedMemoryQueue(qname)
    with pytest.raises(FileExistsError, match=r"already exists"):
        SharedMemoryQueue(qname, create=True, capacity=2, item_size=64)
    assert len(os.listdir("/proc/self/fd")) == fds_before  # no descriptor leaked
    with open(path, "rb") as f:
        assert f.read() == content  # left alone
    assert entries_of(qname) == [base_name(qname, "")]  # no semaphores made


def _patch_header(path: str, **fields: int) -> None:
    with open(path, "r+b") as f:
        buf = bytearray(f.read(L.HEADER_SIZE))
        h = np.ndarray((), L.HEADER_DTYPE, buffer=buf)
        for k, v in fields.items():
            h[k] = v
        del h
        f.seek(0)
        f.write(buf)


@pytest.mark.parametrize(
    "fields",
    [{"capacity": 1, "item_size": 2**63}, {"capacity": 0, "item_size": 0}],
    ids=["huge-item-size", "zero-capacity"],
)
def test_corrupt_header_sizes_raise_incompatible(
    make_queue: MakeQueue, qname: str, fields: dict[str, int]
) -> None:
    make_queue(capacity=2, item_size=64).close()
    _patch_header(path_of(qname), **fields)
    if fields["capacity"] == 0:
        os.truncate(path_of(qname), L.segment_size(0, 0))  # consistent with the header
    with pytest.raises(IncompatibleQueueError), SharedMemoryQueue(qname):
        pass


def test_other_layout_version_raises_incompatible(make_queue: MakeQueue, qname: str) -> None:
    make_queue(capacity=2, item_size=64).close()
    _patch_header(path_of(qname), version=99)
    pattern = (
        rf"^queue '{esc(qname)}' has layout version 99; this shared_queue reads version "
        rf"{L.VERSION}$"
    )
    with pytest.raises(IncompatibleQueueError, match=pattern):
        SharedMemoryQueue(qname)


def test_wrong_segment_size_raises_incompatible(make_queue: MakeQueue, qname: str) -> None:
    make_queue(capacity=2, item_size=64).close()
    size = L.segment_size(2, 64)
    os.truncate(path_of(qname), size + 64)
    pattern = (
        rf"^queue '{esc(qname)}' \(.*\) has an inconsistent header: file size {size + 64} "
        rf"\(the header's fields make it {size}\)$"
    )
    with pytest.raises(IncompatibleQueueError, match=pattern):
        SharedMemoryQueue(qname)


@pytest.mark.parametrize("call", ["put", "get", "put_batch", "get_batch"])
def test_nan_timeout_raises_value_error(make_queue: MakeQueue, call: str) -> None:
    q = make_queue(capacity=2, item_size=64)
    q.put("a")
    fn = {
        "put": lambda: q.put("b", timeout=float("nan")),
        "get": lambda: q.get(timeout=float("nan")),
        "put_batch": lambda: q.put_batch(["b"], timeout=float("nan")),
        "get_batch": lambda: q.get_batch(2, timeout=float("nan")),
    }[call]
    with pytest.raises(ValueError, match=r"^'timeout' must be a non-negative number$"):
        fn()
    assert q.qsize() == 1 and q.get_nowait() == "a"


def test_attach_with_a_contradicting_mode_raises(make_queue: MakeQueue, qname: str) -> None:
    import numpy as np

    make_queue(capacity=2, item_size=64)  # a pickle queue
    with pytest.raises(ValueError, match=rf"^queue '{esc(qname)}' is pickle, not raw "):
        SharedMemoryQueue(qname, raw=True)
    with pytest.raises(ValueError, match=rf"^queue '{esc(qname)}' is pickle, not typed "
                                         r"\(float32 of shape \(3,\)\)$"):  # fmt: skip
        SharedMemoryQueue(qname, dtype=np.float32, shape=3)
    q = SharedMemoryQueue(qname)  # no mode asked: the queue's own
    q.close()


def test_attach_to_a_typed_queue_checks_dtype_and_shape(make_queue: MakeQueue, qname: str) -> None:
    import numpy as np

    make_queue(capacity=2, dtype=np.int16, shape=(2, 3))
    pattern = (rf"^queue '{esc(qname)}' is typed \(int16 of shape \(2, 3\)\), "
               r"not typed \(int16 of shape \(3, 2\)\)$")  # fmt: skip
    with pytest.raises(ValueError, match=pattern):
        SharedMemoryQueue(qname, dtype=np.int16, shape=(3, 2))
    for ok in ({"raw": True}, {"dtype": np.int16, "shape": (2, 3)}, {}):
        q = SharedMemoryQueue(qname, **ok)  # type: ignore[arg-type]
        assert q.raw and q.shape == (2, 3)
        q.close()


@pytest.mark.parametrize("op", ["get", "put"])
def test_close_while_another_thread_waits(make_queue: MakeQueue, op: str) -> None:
    """A call blocked in this handle when another thread closes it raises the closed-handle
    ValueError promptly (it does not use the released mapping or semaphores)."""
    q = make_queue(capacity=1, item_size=64, recovery_interval=30.0)
    if op == "put":
        q.put("full")
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            q.get(timeout=TIMEOUT) if op == "get" else q.put("x", timeout=TIMEOUT)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    wait_blocked(q)
    q.close()
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    assert re.match(r"^queue '[^']+': this handle is closed$", str(errors[0]))
