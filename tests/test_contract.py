"""The ``shared_queue.Queue`` contract, run against every backend ``connect()`` opens.

Each test runs once per backend: ``shm`` (``SharedMemoryQueue``) and ``nats``
(``NatsQueue`` on the session's nats-server, ``nats_url``; skipped where the binary is
missing). The tests assert outcomes, never timings. Every blocking call has a bound:
``TIMEOUT`` for one that must succeed, ``SHORT`` for one that must run out. Where NATS
differs from shared memory by design (metrics the server does not keep, the atomic batch
limit), the test asserts the difference rather than skipping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pickle
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

import _contract_children
import cloudpickle
import numpy as np
import pytest
from _support import TIMEOUT, ctx_fixture, recv, remove_queue, running, unique_name, wait_blocked

import shared_queue
from shared_queue import Empty, Full, _metrics

T = TypeVar("T")

SHORT = 0.05  # the timeout of a call that must run out: Empty or Full
QUIET = 0.1  # how long a call must stay blocked, in a bounded join, before it is unblocked
BLOCKED = 5.0  # the timeout of a blocked call that something else must end first
NATS_NONE_METRICS = frozenset(
    {
        "bytes_in",
        "bytes_out",
        "high_water_mark",
        "put_waits",
        "put_wait_seconds",
        "get_waits",
        "get_wait_seconds",
    }
)  # what a NATS server keeps no count of: None in NatsQueue.get_metrics()

ctx = ctx_fixture("fork", "spawn", "forkserver")


# -- the backend fixture --------------------------------------------------------------------


@dataclass
class Backend:
    """One backend of ``connect()``: its URL, and a factory of queues with unique names.

    Every queue made is unlinked and every handle closed when the test ends.
    """

    kind: str  # "shm" or "nats"
    url: str
    run_id: str = field(default_factory=unique_name)
    handles: list[Any] = field(default_factory=list)

    def make(self, name: str | None = None, **kwargs: Any) -> Any:
        """``connect(url, name, create=True, run_id=<this test's>, **kwargs)``; ``name``
        defaults to a new unique one. Pass ``create=False`` to attach."""
        kwargs.setdefault("create", True)
        kwargs.setdefault("run_id", self.run_id)
        q = shared_queue.connect(self.url, unique_name() if name is None else name, **kwargs)
        self.handles.append(q)
        return q

    def attach(self, q: Any, **kwargs: Any) -> Any:
        """A second handle of the queue of ``q``, opened by name."""
        return self.make(q.name, create=False, run_id=q.run_id, **kwargs)

    def track(self, q: Any) -> Any:
        """Close ``q`` (a handle made otherwise, e.g. unpickled) when the test ends."""
        self.handles.append(q)
        return q

    def cleanup(self) -> None:
        seen: set[tuple[str, str]] = set()
        for q in self.handles:
            key = (q.name, q.run_id)
            if key not in seen:
                seen.add(key)
                with contextlib.suppress(FileNotFoundError):
                    q.unlink()
                if self.kind == "shm":
                    remove_queue(*key)
        for q in self.handles:
            q.close()


@pytest.fixture(params=["shm", "nats"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn; ``backend.make(name=None, **kwargs)`` creates a queue."""
    url = "shm://" if request.param == "shm" else request.getfixturevalue("nats_url")
    b = Backend(request.param, url)
    try:
        yield b
    finally:
        b.cleanup()


# -- helpers --------------------------------------------------------------------------------


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a new event loop, bounded by TIMEOUT."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


def drain(q: Any) -> list[Any]:
    """Everything in the queue now, by ``get_nowait``."""
    out: list[Any] = []
    while True:
        try:
            out.append(q.get_nowait())
        except Empty:
            return out


class InThread:
    """Run ``fn()`` in a daemon thread; ``result()`` joins it (bounded) and returns or raises."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._box: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                self._box.append((True, fn()))
            except BaseException as exc:  # re-raised in result()
                self._box.append((False, exc))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def assert_blocked(self, b: Backend, q: Any) -> None:
        """Assert the call has not returned: it waits (on shm, once it sleeps in a wait)."""
        if b.kind == "shm":
            wait_blocked(q)
        self.thread.join(QUIET)
        assert self.thread.is_alive(), f"returned instead of blocking: {self._box}"

    def result(self) -> Any:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "call deadlocked"
        ok, value = self._box[0]
        if not ok:
            raise value
        return value


def item_size_message(q: Any) -> str:
    """The start of the ValueError of an item larger than ``q``'s item_size."""
    return rf"exceeds item_size={q.item_size} of queue '{re.escape(q.name)}'"


# -- the protocol and FIFO order ------------------------------------------------------------


def test_handle_satisfies_the_protocol(backend: Backend) -> None:
    q = backend.make(capacity=7, item_size=512)
    assert isinstance(q, shared_queue.Queue)
    assert (q.capacity, q.item_size, q.raw, q.dtype, q.shape) == (7, 512, False, None, None)
    assert not q.closed
    assert q.run_id == backend.run_id


def test_fifo_single(backend: Backend) -> None:
    q = backend.make()
    items = [0, "one", (2, b"two"), {"three": [3.0]}, None]
    for item in items:
        q.put(item, timeout=TIMEOUT)
    assert [q.get(timeout=TIMEOUT) for _ in items] == items
    with pytest.raises(Empty):
        q.get_nowait()


def test_fifo_batch(backend: Backend) -> None:
    q = backend.make(capacity=20)
    q.put("a", timeout=TIMEOUT)
    q.put_batch(["b", "c", "d"], timeout=TIMEOUT)
    q.put_nowait("e")
    q.put_batch(iter(["f", "g"]), timeout=TIMEOUT)  # any iterable
    q.put_batch([], timeout=TIMEOUT)  # nothing: allowed, puts nothing
    assert q.get_batch(3, timeout=TIMEOUT) == ["a", "b", "c"]
    assert q.get(timeout=TIMEOUT) == "d"
    assert q.get_batch(10, timeout=TIMEOUT) == ["e", "f", "g"]
    assert q.qsize() == 0


def test_order_holds_across_handles(backend: Backend) -> None:
    q = backend.make()
    other = backend.attach(q)
    q.put(1, timeout=TIMEOUT)
    other.put_batch([2, 3], timeout=TIMEOUT)
    q.put(4, timeout=TIMEOUT)
    assert other.get(timeout=TIMEOUT) == 1
    assert q.get_batch(3, timeout=TIMEOUT) == [2, 3, 4]


# -- nowait, timeouts, Full and Empty -------------------------------------------------------


def test_nowait_empty_and_full(backend: Backend) -> None:
    q = backend.make(capacity=3)
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(block=False)
    for i in range(3):
        q.put_nowait(i)
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(Full):
        q.put(3, block=False)
    assert q.get_nowait() == 0
    q.put_nowait(3)  # the freed slot is usable at once
    assert drain(q) == [1, 2, 3]


def test_timeouts_run_out(backend: Backend) -> None:
    q = backend.make(capacity=2)
    with pytest.raises(Empty):
        q.get(timeout=SHORT)
    with pytest.raises(Empty):
        q.get(timeout=0)
    with pytest.raises(Empty):
        q.get_batch(3, timeout=SHORT)
    q.put_batch(["a", "b"], timeout=TIMEOUT)
    with pytest.raises(Full):
        q.put("c", timeout=SHORT)
    with pytest.raises(Full):
        q.put("c", timeout=0)
    with pytest.raises(Full):
        q.put_batch(["c"], timeout=SHORT)
    assert drain(q) == ["a", "b"]  # nothing of the failed puts was stored


def test_put_batch_is_all_or_none(backend: Backend) -> None:
    q = backend.make(capacity=5)
    q.put_batch(["a", "b", "c"], timeout=TIMEOUT)
    with pytest.raises(Full):
        q.put_batch(["x", "y", "z"], block=False)  # room for 2 of 3
    assert q.qsize() == 3
    with pytest.raises(Full):
        q.put_batch(["x", "y", "z"], timeout=SHORT)
    assert q.qsize() == 3
    assert not q.full()
    assert q.get_batch(10, timeout=TIMEOUT) == ["a", "b", "c"]
    with pytest.raises(Empty):
        q.get_nowait()  # not one of x, y, z was stored
    q.put_batch(["v", "w", "x", "y", "z"], block=False)  # exactly the capacity fits
    assert q.full()
    assert drain(q) == ["v", "w", "x", "y", "z"]


def test_batch_larger_than_capacity_is_refused(backend: Backend) -> None:
    q = backend.make(capacity=3)
    q.put("kept", timeout=TIMEOUT)
    with pytest.raises(ValueError, match="batch of 4 items exceeds capacity=3 of queue "):
        q.put_batch(range(4), timeout=TIMEOUT)
    assert q.qsize() == 1
    assert drain(q) == ["kept"]


def test_batch_limit_above_capacity_1000(backend: Backend) -> None:
    """By design a NATS batch is one atomic publish, which the server limits to 1000
    messages; shared memory's only limit is the capacity."""
    q = backend.make(capacity=1001, item_size=64)
    batch = list(range(1001))
    if backend.kind == "nats":
        with pytest.raises(ValueError, match="exceeds the server's atomic batch limit=1000"):
            q.put_batch(batch, timeout=TIMEOUT)
        assert q.qsize() == 0
        q.put_batch(batch[:1000], timeout=TIMEOUT)
        assert q.qsize() == 1000
    else:
        q.put_batch(batch, timeout=TIMEOUT)
        assert q.qsize() == 1001
        assert q.get_batch(1001, timeout=TIMEOUT) == batch


def test_get_batch_returns_one_to_max_items(backend: Backend) -> None:
    q = backend.make()
    q.put_batch(["a", "b", "c"], timeout=TIMEOUT)
    assert q.get_batch(2, timeout=TIMEOUT) == ["a", "b"]
    assert q.get_batch(5, timeout=TIMEOUT) == ["c"]  # fewer than asked: what there is
    with pytest.raises(Empty):
        q.get_batch(5, block=False)
    q.put("d", timeout=TIMEOUT)
    assert q.get_batch(1, block=False) == ["d"]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_items"):
            q.get_batch(bad, timeout=TIMEOUT)


def test_size_queries_agree_with_nowait(backend: Backend) -> None:
    q = backend.make(capacity=2)

    def state() -> tuple[int, bool, bool]:
        return q.qsize(), q.empty(), q.full()

    assert state() == (0, True, False)
    with pytest.raises(Empty):
        q.get_nowait()
    q.put_nowait("a")
    assert state() == (1, False, False)
    q.put_nowait("b")
    assert state() == (2, False, True)
    with pytest.raises(Full):
        q.put_nowait("c")
    assert q.get_nowait() == "a"
    assert state() == (1, False, False)
    q.put_nowait("c")
    assert state() == (2, False, True)
    assert q.get_batch(2, block=False) == ["b", "c"]
    assert state() == (0, True, False)


def test_taken_items_are_gone_when_the_get_returns(backend: Backend) -> None:
    """Once a get has returned its items, the queue no longer counts them and their slots
    take new items at once: qsize/empty/full and a put_nowait agree with it, every time.
    Repeated a few dozen times, since a lag between a get and the queue's state shows only
    in some rounds."""
    capacity = 4
    q = backend.make(capacity=capacity)
    for round_ in range(40):
        items = [(round_, i) for i in range(capacity)]
        q.put_batch(items, block=False)
        assert q.get_batch(capacity, block=False) == items
        assert (q.qsize(), q.empty(), q.full()) == (0, True, False), f"round {round_}"
        q.put_batch(items, block=False)  # raises Full if a slot is still held
        assert q.get_batch(capacity, block=False) == items


# -- metrics --------------------------------------------------------------------------------


def test_metrics_keys_and_counts(backend: Backend) -> None:
    q = backend.make(capacity=10, item_size=256)
    m = q.get_metrics()
    assert tuple(m) == _metrics.KEYS
    assert (m["queue_size"], m["total_puts"], m["total_gets"]) == (0, 0, 0)

    q.put("a", timeout=TIMEOUT)
    q.put_batch(["b", "c", "d", "e"], timeout=TIMEOUT)
    assert q.get(timeout=TIMEOUT) == "a"
    assert q.get_batch(1, timeout=TIMEOUT) == ["b"]
    m = backend.attach(q).get_metrics()  # the queue's counts, not the handle's
    assert tuple(m) == _metrics.KEYS
    assert m["queue_size"] == 3
    assert m["queue_capacity"] == 10
    assert m["queue_utilization_percent"] == pytest.approx(30.0)
    assert m["queue_item_size_bytes"] == 256
    assert m["spare_slots"] == 0
    assert m["total_puts"] == 5
    assert m["total_gets"] == 2
    if backend.kind == "nats":
        # By design: the server keeps no byte counts, high-water mark or wait statistics.
        assert {k for k, v in m.items() if v is None} == NATS_NONE_METRICS
    else:
        assert not any(v is None for v in m.values())
        assert m["bytes_in"] > m["bytes_out"] > 0
        assert m["high_water_mark"] == 5


# -- lifecycle ------------------------------------------------------------------------------


def test_close_is_idempotent_and_a_closed_handle_refuses(backend: Backend) -> None:
    q = backend.make()
    q.put("stays", timeout=TIMEOUT)
    q.close()
    q.close()
    assert q.closed
    assert "closed" in repr(q)
    calls: dict[str, Callable[[], Any]] = {
        "put": lambda: q.put(1, timeout=TIMEOUT),
        "put_nowait": lambda: q.put_nowait(1),
        "put_batch": lambda: q.put_batch([1], timeout=TIMEOUT),
        "put_batch_empty": lambda: q.put_batch([], timeout=TIMEOUT),
        "get": lambda: q.get(timeout=TIMEOUT),
        "get_nowait": lambda: q.get_nowait(),
        "get_batch": lambda: q.get_batch(2, timeout=TIMEOUT),
        "qsize": lambda: q.qsize(),
        "empty": lambda: q.empty(),
        "full": lambda: q.full(),
        "get_metrics": lambda: q.get_metrics(),
        "put_async": lambda: arun(q.put_async(1, timeout=TIMEOUT)),
        "put_batch_async": lambda: arun(q.put_batch_async([1], timeout=TIMEOUT)),
        "get_async": lambda: arun(q.get_async(timeout=TIMEOUT)),
        "get_batch_async": lambda: arun(q.get_batch_async(2, timeout=TIMEOUT)),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match="closed"):
            call()
            pytest.fail(f"{what} on a closed handle did not raise")
    # The queue lives on.
    again = backend.attach(q)
    assert again.get(timeout=TIMEOUT) == "stays"


def test_unlink(backend: Backend) -> None:
    q = backend.make()
    other = backend.attach(q)
    q.put("in the queue", timeout=TIMEOUT)
    q.unlink()
    with pytest.raises(FileNotFoundError):
        backend.attach(q)
    with pytest.raises(FileNotFoundError):
        q.unlink()
    with pytest.raises(FileNotFoundError):
        other.unlink()
    other.close()
    with pytest.raises(FileNotFoundError):
        other.unlink()  # from a closed handle too
    # The name is free again.
    fresh = backend.make(q.name)
    assert fresh.qsize() == 0  # a new queue: nothing of the old one
    fresh.put("new", timeout=TIMEOUT)
    assert fresh.get(timeout=TIMEOUT) == "new"


def test_open_handle_after_unlink(backend: Backend) -> None:
    """By design the backends differ here: a shared-memory handle that is open keeps its
    mapping and works on until closed; a NATS queue is its stream, which unlink deletes, so
    the open handle's calls raise FileNotFoundError."""
    q = backend.make()
    other = backend.attach(q)
    q.put("a", timeout=TIMEOUT)
    q.unlink()
    if backend.kind == "shm":
        assert other.get(timeout=TIMEOUT) == "a"
        other.put("b", timeout=TIMEOUT)
        assert q.get(timeout=TIMEOUT) == "b"
    else:
        calls: dict[str, Callable[[], Any]] = {
            "put": lambda: other.put("b", timeout=TIMEOUT),
            "get": lambda: other.get(timeout=TIMEOUT),
            "qsize": lambda: other.qsize(),
            "get_metrics": lambda: other.get_metrics(),
        }
        for what, call in calls.items():
            with pytest.raises(FileNotFoundError, match="unlinked"):
                call()
                pytest.fail(f"{what} after unlink did not raise")
    other.close()
    q.close()


def test_unlink_from_a_closed_handle(backend: Backend) -> None:
    q = backend.make()
    q.close()
    q.unlink()
    with pytest.raises(FileNotFoundError):
        backend.attach(q)


def test_create_twice_and_attach_missing(backend: Backend) -> None:
    q = backend.make(capacity=4)
    with pytest.raises(FileExistsError):
        backend.make(q.name, capacity=8)
    q.put("intact", timeout=TIMEOUT)  # the existing queue is untouched
    assert backend.attach(q).capacity == 4
    assert q.get(timeout=TIMEOUT) == "intact"
    with pytest.raises(FileNotFoundError):
        backend.make(create=False)
    with pytest.raises(FileNotFoundError):
        backend.make(q.name, create=False, run_id=q.run_id + "-other")


def test_context_manager(backend: Backend) -> None:
    q = backend.make()
    with q as entered:
        assert entered is q
        q.put("a", timeout=TIMEOUT)
    assert q.closed
    other = backend.attach(q)
    with pytest.raises(RuntimeError, match="inside"), other:
        raise RuntimeError("inside")
    assert other.closed
    assert backend.attach(q).get(timeout=TIMEOUT) == "a"


def test_attach_with_a_contradicting_mode_is_refused(backend: Backend) -> None:
    q = backend.make()  # pickle mode
    with pytest.raises(ValueError, match="is pickle, not raw"):
        backend.attach(q, raw=True)
    typed = backend.make(dtype="<f4", shape=(2,))
    with pytest.raises(ValueError, match="not typed"):
        backend.attach(typed, dtype="<f8", shape=(2,))


# -- pickling a handle ----------------------------------------------------------------------


def test_pickle_round_trip_in_process(backend: Backend) -> None:
    q = backend.make(capacity=5, item_size=1024)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = backend.track(pickle.loads(dumps(q)))
        assert copy is not q
        assert type(copy) is type(q)
        assert (copy.name, copy.run_id, copy.raw) == (q.name, q.run_id, False)
        assert (copy.capacity, copy.item_size) == (5, 1024)
        copy.put("via copy", timeout=TIMEOUT)
        assert q.get(timeout=TIMEOUT) == "via copy"
        copy.close()
        q.put("still open", timeout=TIMEOUT)  # closing the copy leaves q open
        assert q.get(timeout=TIMEOUT) == "still open"


def test_pickled_typed_handle_keeps_its_type(backend: Backend) -> None:
    q = backend.make(dtype="<i2", shape=(3,))
    copy = backend.track(pickle.loads(pickle.dumps(q)))
    assert (copy.raw, copy.dtype, copy.shape) == (True, np.dtype("<i2"), (3,))
    copy.put(np.array([1, -2, 3], "<i2"), timeout=TIMEOUT)
    got = q.get(timeout=TIMEOUT)
    assert got.dtype == np.dtype("<i2") and got.tolist() == [1, -2, 3]


def test_handle_passed_to_a_child(backend: Backend, ctx: BaseContext) -> None:
    """A handle given to a child process (pickled under spawn and forkserver, inherited under
    fork) puts items the parent gets, in order."""
    q = backend.make(capacity=20, item_size=512)
    q.put("before", timeout=TIMEOUT)  # the parent has used its handle: connections are open
    assert q.get(timeout=TIMEOUT) == "before"
    n = 3
    with running(ctx, (_contract_children.put_from_child, (q, n))) as procs:
        got = [recv(q.get, procs) for _ in range(2 * n + 1)]
    assert got[0] == ("handle", q.name, q.run_id, 20, 512, False)
    pids = {item[1] for item in got[1:]}
    assert len(pids) == 1 and os.getpid() not in pids
    assert [item[2] for item in got[1:]] == list(range(2 * n))
    assert q.qsize() == 0
    q.put("after", timeout=TIMEOUT)  # the parent's handle still works
    assert q.get(timeout=TIMEOUT) == "after"


# -- async ----------------------------------------------------------------------------------


def test_async_methods(backend: Backend) -> None:
    q = backend.make(capacity=4)

    async def main() -> None:
        await q.put_async("a", timeout=TIMEOUT)
        await q.put_batch_async(["b", "c"], timeout=TIMEOUT)
        assert await q.get_async(timeout=TIMEOUT) == "a"
        assert await q.get_batch_async(5, timeout=TIMEOUT) == ["b", "c"]
        with pytest.raises(Empty):
            await q.get_async(timeout=SHORT)
        with pytest.raises(Empty):
            await q.get_batch_async(2, timeout=SHORT)
        await q.put_batch_async(["w", "x", "y"], timeout=TIMEOUT)
        with pytest.raises(Full):
            await q.put_batch_async(["no", "room"], timeout=SHORT)  # room for 1 of 2
        await q.put_async("z", timeout=TIMEOUT)
        with pytest.raises(Full):
            await q.put_async("no room", timeout=SHORT)
        assert await q.get_batch_async(10, timeout=TIMEOUT) == ["w", "x", "y", "z"]
        with pytest.raises(ValueError, match="max_items"):
            await q.get_batch_async(0, timeout=TIMEOUT)

    arun(main())
    assert q.qsize() == 0


def test_async_get_is_woken_by_a_put(backend: Backend) -> None:
    q = backend.make()
    other = backend.attach(q)

    async def main() -> Any:
        task = asyncio.ensure_future(q.get_async(timeout=TIMEOUT))
        done, _ = await asyncio.wait({task}, timeout=QUIET)
        assert not done, "get_async returned on an empty queue"
        await asyncio.to_thread(other.put, "wake", timeout=TIMEOUT)
        return await task

    assert arun(main()) == "wake"
    assert q.qsize() == 0


# -- blocking calls unblocked by another handle ---------------------------------------------


def test_objects_holding_arrays_round_trip_in_pickle_mode(backend: Backend) -> None:
    """numpy arrays inside pickled objects travel as out-of-band buffers; they come back
    equal and writable."""
    q = backend.make(item_size=1 << 16)
    item = {"a": np.arange(1000.0), "b": [np.ones((3, 4), "i2")], "c": "text"}
    q.put(item, timeout=TIMEOUT)
    q.put_batch([np.arange(5), {"x": np.zeros(2)}], timeout=TIMEOUT)
    got = q.get(timeout=TIMEOUT)
    np.testing.assert_array_equal(got["a"], item["a"])
    np.testing.assert_array_equal(got["b"][0], item["b"][0])
    assert got["c"] == "text" and got["a"].flags.writeable
    first, second = q.get_batch(2, timeout=TIMEOUT)
    np.testing.assert_array_equal(first, np.arange(5))
    np.testing.assert_array_equal(second["x"], np.zeros(2))


def test_blocked_get_is_woken_by_a_put(backend: Backend) -> None:
    q = backend.make()
    other = backend.attach(q)
    call = InThread(lambda: q.get(timeout=TIMEOUT))
    call.assert_blocked(backend, q)
    other.put("wake", timeout=TIMEOUT)
    assert call.result() == "wake"
    assert other.qsize() == 0


def test_blocked_get_batch_is_woken_by_a_put_batch(backend: Backend) -> None:
    q = backend.make()
    other = backend.attach(q)
    call = InThread(lambda: q.get_batch(5, timeout=TIMEOUT))
    call.assert_blocked(backend, q)
    other.put_batch(["a", "b", "c"], timeout=TIMEOUT)
    got = call.result()
    assert 1 <= len(got) <= 3
    assert got + drain(other) == ["a", "b", "c"]


def test_blocked_put_completes_after_a_get(backend: Backend) -> None:
    q = backend.make(capacity=2)
    other = backend.attach(q)
    q.put_batch(["a", "b"], timeout=TIMEOUT)
    call = InThread(lambda: q.put("c", timeout=TIMEOUT))
    call.assert_blocked(backend, q)
    assert other.get(timeout=TIMEOUT) == "a"
    call.result()
    assert other.get_batch(2, timeout=TIMEOUT) == ["b", "c"]


def test_blocked_put_batch_waits_for_room_for_all(backend: Backend) -> None:
    q = backend.make(capacity=3)
    other = backend.attach(q)
    q.put_batch(["a", "b"], timeout=TIMEOUT)
    call = InThread(lambda: q.put_batch(["c", "d"], timeout=TIMEOUT))
    call.assert_blocked(backend, q)
    assert other.qsize() == 2  # nothing of the waiting batch was stored
    assert other.get(timeout=TIMEOUT) == "a"
    call.result()
    assert drain(other) == ["b", "c", "d"]


def test_close_ends_a_blocked_get(backend: Backend) -> None:
    """close() from another thread ends a get waiting on the same handle with ValueError,
    long before the get's own timeout."""
    q = backend.make()
    call = InThread(lambda: q.get(timeout=BLOCKED))
    call.assert_blocked(backend, q)
    q.close()
    with pytest.raises(ValueError, match="closed"):
        call.result()


def test_close_ends_a_waiting_get_async(backend: Backend) -> None:
    """close() ends the coroutines waiting in the handle's async methods with ValueError."""
    q = backend.make()

    async def main() -> None:
        task = asyncio.ensure_future(q.get_async(timeout=BLOCKED))
        done, _ = await asyncio.wait({task}, timeout=QUIET)
        assert not done, "get_async returned on an empty queue"
        q.close()
        with pytest.raises(ValueError, match="closed"):
            await task

    arun(main())


# -- what items can be ----------------------------------------------------------------------

RAW_ARRAYS = [
    pytest.param(lambda: np.arange(12, dtype="<i8").reshape(3, 4), id="int64-C"),
    pytest.param(lambda: np.arange(12, dtype=">i4").reshape(4, 3), id="big-endian-int32"),
    pytest.param(lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3)), id="float64-F"),
    pytest.param(lambda: np.arange(30, dtype="<u2")[::3], id="strided-uint16"),
    pytest.param(lambda: np.arange(24, dtype="f4").reshape(2, 3, 4).transpose(1, 0, 2), id="perm"),
    pytest.param(lambda: np.array(3.5, dtype="f4"), id="0-d"),
    pytest.param(lambda: np.zeros((0, 3), "c16"), id="empty-complex"),
    pytest.param(lambda: np.array([True, False, True]), id="bool"),
    pytest.param(lambda: np.array([b"ab", b"\0\xff"], "S4"), id="bytes-dtype"),
    pytest.param(
        lambda: np.array([(1, 2.5), (-3, 0.25)], dtype=[("a", "<i4"), ("b", "<f8")]),
        id="structured",
    ),
]


def assert_same_array(got: Any, want: np.ndarray[Any, Any]) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tolist() == want.tolist()
    if want.flags.f_contiguous and not want.flags.c_contiguous:
        assert got.flags.f_contiguous  # the memory order travels with the array


@pytest.mark.parametrize("make_array", RAW_ARRAYS)
def test_raw_arrays(backend: Backend, make_array: Callable[[], np.ndarray[Any, Any]]) -> None:
    q = backend.make(raw=True, capacity=4, item_size=1024)
    assert q.raw and q.dtype is None and q.shape is None
    want = make_array()
    q.put(want, timeout=TIMEOUT)
    assert_same_array(q.get(timeout=TIMEOUT), want)
    q.put_batch([want, want], timeout=TIMEOUT)
    got = q.get_batch(2, timeout=TIMEOUT)
    assert len(got) == 2
    for item in got:
        assert_same_array(item, want)


def test_raw_bytes(backend: Backend) -> None:
    q = backend.make(raw=True, capacity=4, item_size=1024)
    q.put_batch([b"abc\0def", bytearray(b"xyz"), memoryview(b"mv"), b""], timeout=TIMEOUT)
    got = q.get_batch(4, timeout=TIMEOUT)
    assert got == [b"abc\0def", b"xyz", b"mv", b""]
    assert all(type(item) is bytes for item in got)
    with pytest.raises(TypeError, match="takes numpy arrays and bytes-like objects"):
        q.put("a str", timeout=TIMEOUT)
    assert q.qsize() == 0


def test_typed_queue(backend: Backend) -> None:
    q = backend.make(dtype="<f4", shape=(2, 3), capacity=3)
    assert (q.raw, q.dtype, q.shape) == (True, np.dtype("<f4"), (2, 3))
    attached = backend.attach(q)
    assert (attached.raw, attached.dtype, attached.shape) == (True, np.dtype("<f4"), (2, 3))
    good = np.arange(6, dtype="<f4").reshape(2, 3)
    q.put(good, timeout=TIMEOUT)
    refused: list[tuple[Any, type[Exception]]] = [
        (good.astype("<f8"), ValueError),  # wrong dtype: nothing is cast
        (np.arange(6, dtype="<f4"), ValueError),  # wrong shape
        (good.tobytes(), TypeError),  # bytes, not an array
        ([[0.0] * 3] * 2, TypeError),  # not an array at all
    ]
    for item, error in refused:
        with pytest.raises(error):
            q.put(item, timeout=TIMEOUT)
        with pytest.raises(error):
            q.put_batch([good, item], timeout=TIMEOUT)  # the good one is not put either
        assert q.qsize() == 1
    # Still usable: the good item is there, and more go in and out.
    q.put(good * 2, timeout=TIMEOUT)
    first, second = attached.get_batch(2, timeout=TIMEOUT)
    assert_same_array(first, good)
    assert_same_array(second, good * 2)


def test_cloudpickle_lambdas_and_closures(backend: Backend) -> None:
    q = backend.make()
    other = backend.attach(q)
    k = 7

    def closure(x: int) -> int:
        return x * k

    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

    q.put_batch([lambda x: x + 1, closure, Local(5)], timeout=TIMEOUT)
    inc, mul, local = other.get_batch(3, timeout=TIMEOUT)
    assert inc(1) == 2
    assert mul(3) == 21
    assert local.v == 5 and type(local).__name__ == "Local"


# -- bad input ------------------------------------------------------------------------------


def test_oversize_item(backend: Backend) -> None:
    q = backend.make(capacity=4, item_size=256)
    big = b"x" * 1000
    with pytest.raises(ValueError, match=item_size_message(q)):
        q.put(big, timeout=TIMEOUT)
    with pytest.raises(ValueError, match=item_size_message(q)):
        q.put_nowait(big)
    with pytest.raises(ValueError, match=item_size_message(q)):
        q.put_batch(["small", big], timeout=TIMEOUT)
    with pytest.raises(ValueError, match=item_size_message(q)):
        arun(q.put_async(big, timeout=TIMEOUT))
    assert q.qsize() == 0  # nothing of it was stored, not even the small one
    q.put_batch(["a", "b", "c", "d"], timeout=TIMEOUT)  # and no slot was lost
    assert q.get_batch(4, timeout=TIMEOUT) == ["a", "b", "c", "d"]


def test_oversize_raw_item(backend: Backend) -> None:
    q = backend.make(raw=True, capacity=2, item_size=256)
    with pytest.raises(ValueError, match=item_size_message(q)):
        q.put(np.zeros(100, "f8"), timeout=TIMEOUT)
    q.put(np.zeros(4, "f8"), timeout=TIMEOUT)
    assert_same_array(q.get(timeout=TIMEOUT), np.zeros(4, "f8"))


def test_unpicklable_item(backend: Backend) -> None:
    q = backend.make(capacity=3)
    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot be pickled"):
        q.put(lock, timeout=TIMEOUT)
    with pytest.raises(TypeError, match="cannot be pickled"):
        q.put_batch([1, lock], timeout=TIMEOUT)
    with pytest.raises(TypeError, match="cannot be pickled"):
        arun(q.put_batch_async([1, lock], timeout=TIMEOUT))
    assert q.qsize() == 0
    q.put_batch([1, 2, 3], timeout=TIMEOUT)
    assert drain(q) == [1, 2, 3]


@pytest.mark.parametrize("name", ["", "a/b", "nul\0"])
def test_bad_name(backend: Backend, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        backend.make(name)
    with pytest.raises(ValueError, match="name"):
        backend.make(name, create=False)


@pytest.mark.parametrize("timeout", [math.nan, -1.0, -math.inf])
def test_bad_timeout(backend: Backend, timeout: float) -> None:
    q = backend.make(capacity=4)
    q.put("there", timeout=TIMEOUT)
    calls: dict[str, Callable[[], Any]] = {
        "put": lambda: q.put("x", timeout=timeout),
        "put_batch": lambda: q.put_batch(["x"], timeout=timeout),
        "get": lambda: q.get(timeout=timeout),
        "get_batch": lambda: q.get_batch(2, timeout=timeout),
        "put_async": lambda: arun(q.put_async("x", timeout=timeout)),
        "put_batch_async": lambda: arun(q.put_batch_async(["x"], timeout=timeout)),
        "get_async": lambda: arun(q.get_async(timeout=timeout)),
        "get_batch_async": lambda: arun(q.get_batch_async(2, timeout=timeout)),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match="timeout"):
            call()
            pytest.fail(f"{what}(timeout={timeout}) did not raise")
    assert drain(q) == ["there"]  # nothing put, nothing taken


# -- connect() and its URLs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379",
        "shm:/",
        "shm://x",
        "shm://host/path",
        "nats://",
        "nats://127.0.0.1:notaport",
        "nats://127.0.0.1:0",
        "nats://127.0.0.1:70000",
        "nats://:4222",
        "nats://127.0.0.1:4222/queue",
        "nats://127.0.0.1:4222?bogus=1",
        "nats://127.0.0.1:4222?io_timeout=soon",
        "nats:127.0.0.1:4222",
        "",
    ],
)
def test_connect_refuses_a_bad_url(url: str) -> None:
    with pytest.raises(ValueError):
        shared_queue.connect(url, unique_name(), create=True)


def test_connect_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="replicas"):
        shared_queue.connect("shm://", unique_name(), create=True, replicas=3)
    with pytest.raises(TypeError, match="url must be a str"):
        shared_queue.connect(None, unique_name())  # type: ignore[arg-type]
    options: list[dict[str, Any]] = [
        {"connect_timeout": 0.0},
        {"io_timeout": math.nan},
        {"ack_wait": -1.0},
    ]
    for option in options:
        with pytest.raises(ValueError, match=next(iter(option))):
            shared_queue.connect("nats://127.0.0.1:1", unique_name(), **option)


def test_connect_to_an_unreachable_server() -> None:
    """Nothing listens on port 1: ConnectionError, within a bound far below TIMEOUT."""
    call = InThread(
        lambda: shared_queue.connect("nats://127.0.0.1:1", unique_name(), connect_timeout=0.5)
    )
    call.thread.join(10)
    assert not call.thread.is_alive(), "connect did not give up within 10 s"
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1\b"):
        call.result()
