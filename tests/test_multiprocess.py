"""The queue across processes, under each start method: fork, spawn and forkserver.

As CPython's ``_test_multiprocessing`` and loky do, every test runs once per start method. Child
targets live in ``_children.py`` so that spawn and forkserver children can import them. Every
child is joined with a bound and killed if still alive, and its exit code asserted; a child
reports through a ``multiprocessing`` queue, not through the code under test.

Times are on ``time.monotonic()`` (CLOCK_MONOTONIC, system-wide on Linux, so comparable between
processes).
"""

from __future__ import annotations

import glob
import os
import pickle
import queue
import time
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from multiprocessing.context import BaseContext
from typing import Any

import _children
import pytest
from _support import TIMEOUT, ctx_fixture, recv, remove_queue, running, wait_blocked

import shared_queue
from shared_queue import SharedMemoryQueue
from shared_queue._segment import SHM_DIR, base_name

pytestmark = pytest.mark.timeout(60)

DELAY = 0.5  # how long the parent checks that a blocked batch put stays blocked
# A blocked call returns within WAKE_BOUND of the operation that unblocks it. Generous, so load
# does not fail it; the recovery_interval of queues in the wake-up tests is far longer
# (NO_RECOVERY), so a return within it proves the semaphore post woke the waiter, not the
# periodic re-check.
WAKE_BOUND = 5.0
NO_RECOVERY = 30.0

ctx = ctx_fixture("fork", "spawn", "forkserver")


def scaled(ctx: BaseContext, n: int) -> int:
    """``n`` under fork; a third of it where children start slowly (spawn, forkserver)."""
    return n if ctx.get_start_method() == "fork" else max(1, n // 3)


@pytest.fixture
def new_queue(qname: str) -> Iterator[Callable[..., SharedMemoryQueue]]:
    """Factory for queues named ``qname + suffix`` (any run_id); closed and removed afterwards."""
    made: list[SharedMemoryQueue] = []

    def make(suffix: str = "", run_id: str = "", **kwargs: Any) -> SharedMemoryQueue:
        q = SharedMemoryQueue(qname + suffix, create=True, run_id=run_id, **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()
        remove_queue(q.name, q.run_id)


def shm_files(q: SharedMemoryQueue) -> list[str]:
    """The queue's files in /dev/shm: the segment and its two semaphores."""
    base = base_name(q.name, q.run_id)
    return sorted(glob.glob(os.path.join(SHM_DIR, base)) + glob.glob(f"{SHM_DIR}/sem.{base}.*"))


def assert_alive(q: SharedMemoryQueue, files: list[str]) -> None:
    """The queue still exists, and a new handle and ``q`` both still move items."""
    assert shm_files(q) == files
    assert len(files) == 4
    with SharedMemoryQueue(q.name, run_id=q.run_id) as again:
        q.put("still there")
        assert again.get(timeout=TIMEOUT) == "still there"
        again.put_batch([1, 2])
        assert q.get_batch(2, timeout=TIMEOUT) == [1, 2]
    assert q.empty()


# -- handles across processes -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["handle", "handle-closed", "name"])
def test_child_uses_queue_and_exit_leaves_it(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue], how: str
) -> None:
    """A child reaches the queue through a handle in its args, or by name; its exit keeps it.

    Two children in turn: the second attaches after the first exited, which fails if the
    first's exit unlinked the segment (the resource-tracker bug, gh-82300).
    """
    q = new_queue(capacity=8, item_size=256)
    files = shm_files(q)
    arg: SharedMemoryQueue | str = q.name if how == "name" else q
    out = ctx.Queue()
    for turn in range(2):
        q.put(("item", turn))
        with running(ctx, (_children.echo, (arg, out, how == "handle-closed"))) as procs:
            report = recv(out.get, procs)
        assert report == (q.name, "", 8, 256, ("item", turn))
        pid = procs[0].pid
        assert q.get(timeout=TIMEOUT) == ("reply", pid, ("item", turn))
        assert q.empty()
        assert shm_files(q) == files, f"child {turn}'s exit changed /dev/shm"
    assert_alive(q, files)


def test_handle_pickles_to_its_name(new_queue: Callable[..., SharedMemoryQueue]) -> None:
    """What a Process(args=(q,)) sends under spawn: a reference by name, not the memory."""
    q = new_queue(capacity=4)
    data = pickle.dumps(q)
    assert len(data) < 300
    with pickle.loads(data) as again:
        assert again is not q
        assert (again.name, again.capacity, again.item_size) == (q.name, 4, 4096)
        q.put("x")
        assert again.get_nowait() == "x"


def test_no_resource_tracker_registration(
    monkeypatch: pytest.MonkeyPatch, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """Creating, attaching and unpickling a handle register nothing with multiprocessing's
    resource tracker, which would unlink the segment when a process exits (gh-82300)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(resource_tracker, "register", lambda *args: calls.append(args))
    q = new_queue(capacity=2)
    with SharedMemoryQueue(q.name) as again, pickle.loads(pickle.dumps(q)) as copy:
        again.put("x")
        assert copy.get_nowait() == "x"
    assert calls == []


def test_handle_sent_through_another_queue(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """A handle put into queue A is usable by the child that gets it; and back again."""
    carrier = new_queue("-carrier", capacity=4)
    inner = new_queue("-inner", run_id="rid", capacity=4, item_size=128)
    carrier.put(inner)
    inner.put("for the child")
    out = ctx.Queue()
    with running(ctx, (_children.handle_from_queue, (carrier, out))) as procs:
        assert recv(out.get, procs) == (inner.name, "rid", "for the child")
        back = recv(carrier.get, procs)
    assert isinstance(back, SharedMemoryQueue) and back is not inner
    with back:
        assert (back.name, back.run_id, back.capacity, back.item_size) == (
            inner.name,
            "rid",
            4,
            128,
        )
        assert back.get(timeout=TIMEOUT) == ("from child", "for the child")
        back.put("via returned handle")
        assert inner.get_nowait() == "via returned handle"
    assert len(shm_files(inner)) == 4


# -- cloudpickle semantics ----------------------------------------------------------------


class ModuleLevel:
    """Pickled by reference as ``test_multiprocess.ModuleLevel``: a child must import it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def triple(self) -> int:
        return self.value * 3


def _dynamic_objects() -> list[tuple[object, str, tuple[Any, ...], tuple[str, Any]]]:
    """(object, method, args, expected report) for things plain pickle cannot send."""
    offset = 100

    def closure(x: int) -> int:
        return x + offset

    class InFunction:
        def __init__(self, value: int) -> None:
            self.value = value

        def describe(self, suffix: str) -> str:
            return f"{type(self).__name__}:{self.value}{suffix}"

    made_by_type = type("MadeByType", (), {"k": 4, "square": lambda self: self.k**2})
    return [
        (lambda x: x * 7, "__call__", (6,), ("function", 42)),
        (closure, "__call__", (1,), ("function", 101)),
        (
            InFunction(5),
            "describe",
            ("!",),
            ("InFunction", "InFunction:5!"),
        ),
        (made_by_type(), "square", (), ("MadeByType", 16)),
        (ModuleLevel(5), "triple", (), ("ModuleLevel", 15)),
    ]


def test_cloudpickle_objects_cross_processes(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """Lambdas, closures, local and type()-made classes go by value and work in the child;
    a module-level class goes by reference; the child's own lambda and class come back."""
    objects = _dynamic_objects()
    for obj, *_ in objects[:-1]:
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            pickle.dumps(obj)  # so these really need cloudpickle's by-value path
    to_child = new_queue("-in", capacity=8)
    from_child = new_queue("-out", capacity=8)
    for obj, method, args, _ in objects:
        to_child.put((obj, method, args))
    with running(ctx, (_children.call, (to_child, from_child, len(objects)))) as procs:
        reports = [recv(from_child.get, procs) for _ in objects]
        instance = recv(from_child.get, procs)
        func = recv(from_child.get, procs)
    assert reports == [expected for *_, expected in objects]
    pid = procs[0].pid
    # cloudpickle rebuilds a class by value under its __name__ (not its __qualname__).
    assert type(instance).__name__ == "Local"
    assert instance.tag(3) == (pid, 3)
    assert func(21) == (pid, 42)


# -- many producers, many consumers -------------------------------------------------------


def test_mpmc_exactly_once_in_order(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """3 producer and 3 consumer processes, singles and batches on both sides, a small ring:
    every item arrives exactly once, and each consumer sees each producer's items in order."""
    n = scaled(ctx, 3000)
    producers = consumers = 3
    q = new_queue(capacity=32, item_size=128)
    # Use the handle before forking: a forked child must then drop the inherited lock
    # descriptors (shared OFD locks would not exclude the children from each other).
    q.put("warm-up")
    assert q.get_nowait() == "warm-up"
    out = ctx.Queue()
    targets = [(_children.consume, (q, out, 100 + c)) for c in range(consumers)]
    targets += [(_children.produce, (q, p, n, p)) for p in range(producers)]
    with running(ctx, *targets) as procs:
        for p in procs[consumers:]:
            p.join(TIMEOUT)
        assert [p.exitcode for p in procs[consumers:]] == [0] * producers
        q.put_batch([None] * consumers)
        streams = [recv(out.get, procs) for _ in range(consumers)]
    everything = sorted(item for stream in streams for item in stream)
    assert everything == [(p, s) for p in range(producers) for s in range(n)]
    for stream in streams:
        for p in range(producers):
            seqs = [s for producer, s in stream if producer == p]
            assert seqs == sorted(seqs), f"producer {p}'s items out of order in a consumer"
    with pytest.raises(shared_queue.Empty):
        q.get_nowait()
    metrics = q.get_metrics()
    assert metrics["queue_size"] == 0
    assert metrics["total_puts"] == metrics["total_gets"]


def test_threads_in_two_processes(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """Two threads in each of two processes produce; the parent consumes and accounts."""
    n = scaled(ctx, 1500)
    q = new_queue(capacity=16, item_size=128)
    # Use the handle before forking: a forked child must then drop the inherited lock
    # descriptors (shared OFD locks would not exclude the children from each other).
    q.put("warm-up")
    assert q.get_nowait() == "warm-up"
    got: list[tuple[int, int, int]] = []
    with running(ctx, *[(_children.threaded_producer, (q, proc, n)) for proc in range(2)]) as procs:
        while len(got) < 4 * n:
            got.extend(recv(lambda timeout: q.get_batch(7, timeout=timeout), procs))
    assert sorted(got) == [(p, t, s) for p in range(2) for t in range(2) for s in range(n)]
    for p in range(2):
        for t in range(2):
            assert [s for pp, tt, s in got if (pp, tt) == (p, t)] == list(range(n))
    with pytest.raises(shared_queue.Empty):
        q.get_nowait()


# -- blocking across processes ------------------------------------------------------------


def test_get_blocked_in_child_woken_by_parent_put(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """A get in a child waits for the parent's put, and returns promptly after it."""
    q = new_queue(capacity=4, recovery_interval=NO_RECOVERY)
    out = ctx.Queue()
    with running(ctx, (_children.blocked_get, (q, out))) as procs:
        assert recv(out.get, procs) == "ready"
        wait_blocked(q)  # the child's get sleeps on the queue
        t_put = time.monotonic()
        q.put("wake up")
        item, _, t1 = recv(out.get, procs)
    assert item == "wake up"
    assert t_put <= t1 < t_put + WAKE_BOUND, f"get returned {t1 - t_put:.3f} s after the put"
    assert q.empty()


@pytest.mark.parametrize("items", [["c"], ["c", "d"]], ids=["put", "put_batch"])
def test_put_blocked_in_child_woken_by_parent_get(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue], items: list[str]
) -> None:
    """A put on a full queue waits for a get; a batch waits until the whole batch fits."""
    q = new_queue(capacity=2, recovery_interval=NO_RECOVERY)
    q.put_batch(["a", "b"])
    out = ctx.Queue()
    with running(ctx, (_children.blocked_put, (q, out, items, TIMEOUT))) as procs:
        assert recv(out.get, procs) == "ready"
        wait_blocked(q)  # the child's put sleeps on the queue
        assert q.get() == "a"
        if len(items) == 2:
            # One free slot is not room for the batch: the child must still be waiting.
            with pytest.raises(queue.Empty):
                out.get(timeout=DELAY)
            assert q.qsize() == 1
            assert q.get() == "b"
        t_get = time.monotonic()
        outcome, _, t1 = recv(out.get, procs)
    assert outcome == "ok"
    assert t1 < t_get + WAKE_BOUND, f"put returned {t1 - t_get:.3f} s after the get"
    rest = ["b", *items] if len(items) == 1 else items
    assert q.get_batch(5) == rest


def test_single_put_not_starved_by_waiting_batch(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """A batch of 2 waits, then a single put waits behind it; a get frees one slot: the
    single put fits and should return at once, without waiting for a recovery re-check."""
    # The single put's handle re-checks after 2.5 s: the bug shows as a wait that long. The
    # batch's handle does not re-check during the test, so it stays first in the semaphore's
    # (FIFO) wait queue, ahead of the single put that starts after it.
    q = new_queue(capacity=2, recovery_interval=2.5)
    q.put_batch(["a", "b"])
    with SharedMemoryQueue(q.name, recovery_interval=NO_RECOVERY) as q_batch:
        out_batch, out_single = ctx.Queue(), ctx.Queue()
        batch_child = (_children.blocked_put, (q_batch, out_batch, ["x", "y"], TIMEOUT))
        with running(ctx, batch_child) as batch:
            assert recv(out_batch.get, batch) == "ready"
            wait_blocked(q)  # the batch put sleeps on the queue ...
            with running(ctx, (_children.blocked_put, (q, out_single, ["z"], TIMEOUT))) as single:
                assert recv(out_single.get, single) == "ready"
                wait_blocked(q, 2)  # ... and then the single put too
                assert q.get() == "a"
                t_get = time.monotonic()
                outcome, _, t1 = recv(out_single.get, single)
            assert outcome == "ok"
            assert q.get_batch(2, timeout=TIMEOUT) == ["b", "z"]  # now the batch fits
            assert recv(out_batch.get, batch)[0] == "ok"
    assert q.get_batch(2, timeout=TIMEOUT) == ["x", "y"]
    assert t1 - t_get < 1.0, f"single put waited {t1 - t_get:.3f} s beside a free slot"


def test_timed_get_in_child_raises_empty(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """A timed get on an empty queue in a child raises Empty after about its timeout."""
    timeout = 0.5
    q = new_queue(capacity=4)
    out = ctx.Queue()
    with running(ctx, (_children.timed_get, (q, out, timeout))) as procs:
        outcome, exc_name, elapsed = recv(out.get, procs)
    assert (outcome, exc_name) == ("empty", "Empty")
    assert timeout - 0.01 <= elapsed < timeout + 1.0, f"timed get took {elapsed:.3f} s"


# -- names ---------------------------------------------------------------------------------


def test_run_id_namespaces_across_processes(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """One name under three run_ids is three queues, in the child as in the parent."""
    run_ids = ["", "ra", "rb"]
    queues = {r: new_queue(run_id=r, capacity=4) for r in run_ids}
    name = queues[""].name
    assert {q.name for q in queues.values()} == {name}
    for r, q in queues.items():
        q.put(f"item of {r!r}")
    out = ctx.Queue()
    with running(ctx, (_children.by_run_id, (queues["ra"], name, run_ids, out))) as procs:
        seen, missing = recv(out.get, procs)
    assert seen == {r: f"item of {r!r}" for r in run_ids}
    assert missing, "attaching a run_id nobody created should raise FileNotFoundError"
    assert queues["rb"].get_nowait() == ("reply", "rb")
    assert all(q.empty() for q in queues.values())


def test_several_handles_of_one_queue_in_a_child(
    ctx: BaseContext, new_queue: Callable[..., SharedMemoryQueue]
) -> None:
    """A child with the passed handle and two opened by name: one FIFO, closes independent."""
    q = new_queue(capacity=8, item_size=128)
    files = shm_files(q)
    q.put("from parent")
    with running(ctx, (_children.many_handles, (q, 60))):
        pass
    assert q.get(timeout=TIMEOUT) == "done"
    assert_alive(q, files)
