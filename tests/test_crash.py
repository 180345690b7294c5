"""Crash tolerance: a process SIGKILLed anywhere never hangs the queue, loses or tears an item.

A crash table in the spirit of loky's ``crash_cases``, run under fork and spawn. Each crash
point is deterministic: the child installs a test-only hook on its own handle (see
tests/_crash_children.py), reports when it reached the point and is SIGKILLed there. Then:

* survivors' blocked and new operations complete within a bound: "prompt" ones (nothing to
  recover: the kernel dropped the dead child's lock, or a semaphore was posted) faster than one
  recovery tick of the default ``recovery_interval``; "recovery" ones (a count the dead child
  never posted) within ``recovery_interval`` + margin of the commit, never over 2 s by default;
* every committed item is delivered exactly once and intact, except what a killed consumer had
  already taken; nothing half written is ever delivered;
* no capacity is lost: the queue fills to capacity with ``put_nowait`` and drains with
  ``get_nowait``, and afterwards its semaphores agree with its header again.

``test_random_kills`` is the randomized soak (benchmarks/soak.py runs it for longer).
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import _crash_children as cc
import pytest
from _support import TIMEOUT, Child, ctx_fixture, remove_queue
from _support import drain as drain_all

import shared_queue
from shared_queue._queue import DEFAULT_RECOVERY_INTERVAL
from shared_queue._segment import SHM_DIR, base_name

METHODS = ["fork", "spawn"]
FAST_RI = 0.2  # recovery_interval for most cases; the default (1.0 s) for the rest
PROMPT = 0.9 * DEFAULT_RECOVERY_INTERVAL  # faster than one default recovery tick
MARGIN = 0.6  # scheduling slack on top of recovery_interval
REQUIRED = 2.0  # the requirement: survivors complete within 2 s with the default interval
QUIET = 0.3  # how long a survivor must stay blocked to count as blocked


# -- processes ---------------------------------------------------------------------------------
ctx = ctx_fixture(*METHODS)


# -- checks ------------------------------------------------------------------------------------
def item(seq: int) -> tuple[int, bytes, int]:
    # Seqs from 10 up make items big enough that half of one is a recognisable torn item.
    return cc.make_item(seq, 300 if seq >= 10 else 50)


def seqs_of(result: Any) -> list[int]:
    """The seqs in a get's (item) or get_batch's (list) result, each checked intact."""
    if isinstance(result, list):
        return [cc.check_item(x) for x in result]
    return [cc.check_item(result)]


def drain(q: shared_queue.SharedMemoryQueue) -> list[int]:
    """Get everything with get_nowait: every get finds its item at once, recovered or not."""
    return drain_all(q, cc.check_item)


def assert_healthy(q: shared_queue.SharedMemoryQueue) -> None:
    """Capacity intact, and the semaphore estimate agrees with the header again."""
    cc.check_capacity(q, base_seq=1000)
    seg = q._seg
    assert seg is not None
    assert (seg.free.value, seg.fill.value) == (q.capacity, 0)


# -- the crash table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One crash point and what the survivors must see.

    The crash child runs ``op(arg)`` with ``hook`` on a queue of ``capacity`` holding
    ``prefill``. The survivor runs ``survivor`` ops, started before the crash child and
    proven asleep on its semaphore (``when="before"``), or started after the child reached
    its crash point, and then proven blocked on the lock the child holds if ``on_lock``.
    ``after_kill`` is what the parent does once the child is dead. ``timing``: "prompt"
    (from the kill, under the default interval, faster than one recovery tick) or "recovery"
    (from the crash point, within recovery_interval + margin).
    """

    id: str
    capacity: int
    prefill: tuple[int, ...]
    op: str
    arg: Any
    hook: str
    survivor: tuple[tuple[str, Any], ...]
    when: str
    survivor_gets: tuple[int, ...]
    drained: tuple[int, ...]
    timing: str
    on_lock: bool = False
    after_kill: tuple[tuple[str, int], ...] = ()


def _items(*seqs: int) -> list[Any]:
    return [item(s) for s in seqs]


CASES = [
    # 1. blocked in get on an empty queue; the parent puts, a survivor gets it at once
    Case("get-blocked-empty", 4, (), "get", None, "block_wait",
         (("get", None),), "before", (1,), (), "prompt", after_kill=(("put", 1),)),
    # 2. blocked in put on a full queue; a get lets a surviving producer in at once
    Case("put-blocked-full", 2, (1, 2), "put", item(10), "block_wait",
         (("put", item(11)),), "before", (), (2, 11), "prompt", after_kill=(("get", 1),)),
    # 3. took a free count, killed before the lock: the count is recovered from the header
    Case("put-after-free-count", 2, (), "put", item(10), "after_acquire",
         (("put_batch", _items(11, 12)),), "after", (), (11, 12), "prompt"),
    # 4. holding the producer lock mid-copy: the kernel drops the lock, the half item is
    #    never delivered, the next put goes in at once
    Case("put-mid-copy", 2, (1,), "put", item(10), "mid_copy",
         (("put", item(11)),), "after", (), (1, 11), "prompt", on_lock=True),
    # committed, still holding the producer lock: the item counts, the lock is dropped
    Case("put-committed-lock-held", 4, (), "put", item(10), "held_commit",
         (("put", item(11)),), "after", (), (10, 11), "prompt", on_lock=True),
    # 5. committed, fill not posted: a consumer already asleep gets it within an interval
    Case("put-committed-fill-unposted", 4, (), "put", item(10), "before_post",
         (("get", None),), "before", (10,), (), "recovery"),
    # ... and a new get (the drain's get_nowait) finds it at once
    Case("put-committed-fill-unposted-new-get", 4, (1,), "put", item(10), "before_post",
         (), "after", (), (1, 10), "prompt"),
    # 6. holding the consumer lock mid-copy: the item goes to another consumer
    Case("get-mid-copy", 4, (1, 2), "get", None, "mid_copy",
         (("get", None),), "after", (1,), (2,), "prompt", on_lock=True),
    # committed, still holding the consumer lock: item 1 is gone with the child
    Case("get-committed-lock-held", 4, (1, 2), "get", None, "held_commit",
         (("get", None),), "after", (2,), (), "prompt", on_lock=True),
    # 7. committed, free not posted: item 1 is gone; a producer asleep on the full queue
    #    gets the slot within an interval
    Case("get-committed-free-unposted", 2, (1, 2), "get", None, "before_post",
         (("put", item(11)),), "before", (), (2, 11), "recovery"),
    # put_batch asleep on a full queue (on `room`), killed: another put_batch gets in as
    # soon as two gets made room for it
    Case("put-batch-blocked-full", 4, (1, 2, 3, 4), "put_batch", _items(10, 11), "block_wait",
         (("put_batch", _items(20, 21)),), "before", (), (3, 4, 20, 21), "prompt",
         after_kill=(("get", 1), ("get", 2))),
    # 8. mid-put_batch: half the batch written, not committed: none of it is delivered
    Case("put-batch-mid-copy", 4, (1,), "put_batch", _items(10, 11, 12), "mid_copy",
         (("put_batch", _items(20, 21, 22)),), "after", (), (1, 20, 21, 22), "prompt",
         on_lock=True),
    # mid-get_batch, not committed: the whole batch goes to another consumer
    Case("get-batch-mid-copy", 4, (1, 2, 3), "get_batch", 3, "mid_copy",
         (("get_batch", 3),), "after", (1, 2, 3), (), "prompt", on_lock=True),
    # put_batch committed, fill not posted: a consumer asleep in get_batch gets all of it
    Case("put-batch-committed-fill-unposted", 4, (), "put_batch", _items(10, 11, 12),
         "before_post", (("get_batch", 4),), "before", (10, 11, 12), (), "recovery"),
    # get_batch committed, free not posted: 1 and 2 are gone; a put_batch asleep gets in
    Case("get-batch-committed-free-unposted", 4, (1, 2, 3, 4), "get_batch", 2, "before_post",
         (("put_batch", _items(11, 12)),), "before", (), (3, 4, 11, 12), "recovery"),
]  # fmt: skip


def _params() -> Iterator[Any]:
    for case in CASES:
        ris = [FAST_RI]
        if case.timing == "prompt":
            ris = [DEFAULT_RECOVERY_INTERVAL]  # prompt must beat a tick of the default
        elif case.id in ("put-committed-fill-unposted", "get-committed-free-unposted"):
            ris = [FAST_RI, DEFAULT_RECOVERY_INTERVAL]
        for ri in ris:
            yield pytest.param(case, ri, id=f"{case.id}-ri{ri}")


@pytest.mark.parametrize(("case", "ri"), list(_params()))
def test_crash_table(
    case: Case, ri: float, qname: str, make_queue: Any, children: Callable[..., Child]
) -> None:
    q = make_queue(capacity=case.capacity, item_size=512, recovery_interval=ri)
    for seq in case.prefill:
        q.put_nowait(item(seq))

    survivor = None
    if case.survivor and case.when == "before":
        survivor = children(cc.survivor, qname, ri, list(case.survivor))
        survivor.expect("started")
        survivor.expect("waiting")  # asleep on its semaphore

    crasher = children(cc.crash_op, qname, ri, case.op, case.arg, case.hook)
    _, hook, t_reached = crasher.expect("reached")
    assert hook == case.hook

    if case.survivor and case.when == "after":
        survivor = children(cc.survivor, qname, ri, list(case.survivor))
        survivor.expect("started")
        if case.on_lock:
            survivor.quiet(QUIET)  # the dead-to-be child holds the lock

    t_killed = crasher.kill()
    for what, seq in case.after_kill:
        if what == "put":
            q.put_nowait(item(seq))
        else:
            assert cc.check_item(q.get_nowait()) == seq

    got: list[int] = []
    if survivor is not None:
        for op, _ in case.survivor:
            _, done_op, result, t_done = _next_done(survivor)
            assert done_op == op
            if op.startswith("get"):
                got += seqs_of(result)
            if case.timing == "prompt":
                elapsed = t_done - t_killed
                assert elapsed < PROMPT, f"survivor's {op} took {elapsed:.2f} s after the kill"
            else:
                elapsed = t_done - t_reached
                bound = ri + MARGIN
                assert elapsed < bound, (
                    f"survivor's {op} took {elapsed:.2f} s after the crash point "
                    f"(recovery_interval={ri}, bound {bound:.2f} s)"
                )
                assert elapsed < REQUIRED
        survivor.proc.join(TIMEOUT)
        assert survivor.proc.exitcode == 0

    assert got == list(case.survivor_gets)
    assert drain(q) == list(case.drained)
    assert_healthy(q)


def _next_done(child: Child) -> tuple[Any, ...]:
    # A survivor may report "waiting" for an op that sleeps before it completes.
    while True:
        msg = child.expect("done", "waiting")
        if msg[0] == "done":
            return msg


# -- creation ------------------------------------------------------------------------------------
def _leftovers(name: str) -> list[str]:
    base = base_name(name, "")
    return sorted(e for e in os.listdir(SHM_DIR) if base in e)


@pytest.mark.parametrize("at", ["ftruncate", "link"])
def test_creator_killed_while_creating(at: str, qname: str, children: Callable[..., Child]) -> None:
    """9. A creator killed mid-creation leaves nothing attachable; the name can be created."""
    creator = children(cc.crash_create, qname, at)
    creator.expect("reached")
    creator.kill()
    left = _leftovers(qname)
    print(f"killed at os.{at}: left {left}")
    assert base_name(qname, "") not in left  # nothing published under the name

    with pytest.raises(FileNotFoundError):
        shared_queue.SharedMemoryQueue(qname)

    # No cleanup first: the temporary file and semaphore names carry a random nonce.
    t0 = time.monotonic()
    q = shared_queue.SharedMemoryQueue(qname, create=True, capacity=4, item_size=256)
    try:
        other = shared_queue.SharedMemoryQueue(qname)
        q.put(item(1))
        assert cc.check_item(other.get(timeout=TIMEOUT)) == 1
        other.close()
        assert_healthy(q)
        q.unlink()
    finally:
        q.close()
    assert time.monotonic() - t0 < REQUIRED
    # What the dead creator made stays until removed; conftest.remove_queue removes it.
    print(f"after unlink: left {_leftovers(qname)}")
    remove_queue(qname)
    assert _leftovers(qname) == []


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_creator_gone(how: str, qname: str, children: Callable[..., Child]) -> None:
    """10. A queue whose creator exited or was killed is used, inspected and unlinked."""
    creator = children(cc.create_and_leave, qname, FAST_RI, [1, 2, 3], how)
    creator.expect("reached")
    if how == "kill":
        creator.kill()
    else:
        creator.proc.join(TIMEOUT)
        assert creator.proc.exitcode == 0

    t0 = time.monotonic()
    q = shared_queue.SharedMemoryQueue(qname, recovery_interval=FAST_RI)
    try:
        assert q.qsize() == 3
        metrics = q.get_metrics()
        assert (metrics["queue_size"], metrics["total_puts"], metrics["total_gets"]) == (3, 3, 0)
        assert [cc.check_item(q.get(timeout=TIMEOUT)) for _ in range(3)] == [1, 2, 3]
        assert_healthy(q)
        q.unlink()
    finally:
        q.close()
    assert time.monotonic() - t0 < REQUIRED
    with pytest.raises(FileNotFoundError):
        shared_queue.SharedMemoryQueue(qname)


# -- errors while pickling and unpickling (loky's crash_cases) ----------------------------------
def test_pickling_errors(make_queue: Any, qname: str, children: Callable[..., Child]) -> None:
    """An unpicklable item is refused before it holds a slot; an item that fails to unpickle
    is consumed and the next one follows."""
    q = make_queue(capacity=2, item_size=512, recovery_interval=FAST_RI)
    producer = children(cc.put_then_report, qname, [("lock",), ("bomb",), ("item", 1)])
    assert "cannot be pickled" in producer.expect("rejected")[1]
    producer.expect("done")
    producer.expect("done")
    producer.proc.join(TIMEOUT)
    assert producer.proc.exitcode == 0
    with pytest.raises(pickle.UnpicklingError, match="could not be unpickled"):
        q.get_nowait()
    assert drain(q) == [1]
    assert_healthy(q)


# -- randomized soak -------------------------------------------------------------------------------
def test_random_kills(qname: str, tmp_path: Any) -> None:
    """Producers and consumers SIGKILLed and replaced at random instants; see cc.soak."""
    seed = int(os.environ.get("SHARED_QUEUE_SOAK_SEED") or random.randrange(2**32))
    rounds = int(os.environ.get("SHARED_QUEUE_SOAK_ROUNDS") or 5)
    print(f"SHARED_QUEUE_SOAK_SEED={seed} SHARED_QUEUE_SOAK_ROUNDS={rounds}")
    results = cc.soak(qname, seed, rounds, str(tmp_path), duration=2.5)
    assert len(results) == rounds
    assert sum(r.kills["P"] + r.kills["C"] for r in results) > 0


# -- found while building the table ---------------------------------------------------------------
def test_put_batch_woken_by_gets_between_check_and_sleep(
    ctx: Any, make_queue: Any, qname: str, children: Callable[..., Child]
) -> None:
    """No crash needed: a put_batch asleep on a full queue must wake as soon as gets made
    room, like a single put does (its count stays in `free`), not a recovery tick later."""
    ri = DEFAULT_RECOVERY_INTERVAL
    q = make_queue(capacity=2, item_size=512, recovery_interval=ri)
    q.put_batch([item(1), item(2)])
    go = ctx.Event()
    batch = children(cc.paused_put_batch, qname, ri, _items(10, 11), go)
    batch.expect("reached")  # checked the header under the lock: no room
    assert [cc.check_item(q.get_nowait()) for _ in range(2)] == [1, 2]
    t_room = time.monotonic()
    go.set()
    _, _, _, t_done = _next_done(batch)
    elapsed = t_done - t_room
    assert drain(q) == [10, 11]
    assert elapsed < PROMPT, f"put_batch took {elapsed:.2f} s after the gets made room"


@pytest.mark.parametrize("side", ["put", "get"])
def test_stopped_lock_holder_does_not_stretch_a_timeout(
    side: str, qname: str, children: Callable[..., Child]
) -> None:
    """A lock holder that is alive but stopped (SIGSTOP) holds its lock; a timed put or get
    waiting for that lock still returns by its deadline, and a non-blocking one within one
    recovery_interval; once the holder is killed the queue works at once."""
    capacity = 2
    q = shared_queue.SharedMemoryQueue(qname, create=True, capacity=capacity, item_size=512,
                                       recovery_interval=FAST_RI)  # fmt: skip
    try:
        for seq in (1, 2):
            q.put(item(seq))
        if side == "put":
            assert cc.check_item(q.get()) == 1  # room for the holder's put and for ours
        holder = children(cc.crash_op, qname, FAST_RI, side, item(10) if side == "put" else None,
                          "mid_copy")  # fmt: skip
        holder.expect("reached")  # it holds the lock, mid-copy
        os.kill(holder.proc.pid, signal.SIGSTOP)
        timeout, tolerance = 0.5, 0.5  # tolerance: scheduling on a loaded 2-core machine
        op = (lambda: q.put(item(11), timeout=timeout)) if side == "put" else (
            lambda: q.get(timeout=timeout))  # fmt: skip
        full_or_empty = shared_queue.Full if side == "put" else shared_queue.Empty
        t0 = time.monotonic()
        with pytest.raises(full_or_empty):
            op()
        assert time.monotonic() - t0 < timeout + tolerance
        nowait = q.put_nowait if side == "put" else q.get_nowait
        t0 = time.monotonic()
        with pytest.raises(full_or_empty):
            nowait(*([item(12)] if side == "put" else []))  # type: ignore[operator]
        assert time.monotonic() - t0 < FAST_RI + tolerance
        holder.kill()
        if side == "put":
            q.put_nowait(item(11))
            assert drain(q) == [2, 11]
        else:
            assert drain(q) == [1, 2]
        assert_healthy(q)
    finally:
        q.close()
