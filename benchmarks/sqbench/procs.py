"""Child-process plumbing: forked children with a start barrier, bounded collection, queues.

Robustness: every blocking call has a timeout, children are joined with a timeout and
killed if they straggle, and a child that fails aborts the barrier so no one waits for it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .common import CTX, OP_TIMEOUT, RUN_TIMEOUT, BenchError

if TYPE_CHECKING:
    from .impls.base import ArraySpec, Handle, Impl


def _child_main(conn, barrier, fn, args):
    """Run fn(*args) in a forked child and send ("ok", result) or ("err", tb)."""
    try:
        result = fn(*args)
        conn.send(("ok", result))
    except BaseException:
        with contextlib.suppress(Exception):
            barrier.abort()
        with contextlib.suppress(Exception):
            conn.send(("err", traceback.format_exc()))
    finally:
        conn.close()


@contextlib.contextmanager
def children(specs: list[tuple[Callable, tuple]], barrier: Any) -> Iterator[Callable[[], list]]:
    """Start one forked child per (fn, args); yield a collect() function.

    collect() waits (with RUN_TIMEOUT) for every child's result and returns
    them in order.  On exit, stragglers are killed.
    """
    procs, conns = [], []
    try:
        for fn, args in specs:
            recv, send = CTX.Pipe(duplex=False)
            p = CTX.Process(target=_child_main, args=(send, barrier, fn, args), daemon=True)
            p.start()
            send.close()
            procs.append(p)
            conns.append(recv)

        def collect() -> list:
            deadline = time.monotonic() + RUN_TIMEOUT
            results = []
            for p, c in zip(procs, conns, strict=True):
                if not c.poll(max(0.0, deadline - time.monotonic())):
                    raise BenchError(f"timeout waiting for child {p.name}")
                try:
                    status, payload = c.recv()
                except EOFError:
                    p.join(1)
                    raise BenchError(f"child {p.name} died (exitcode {p.exitcode})") from None
                if status != "ok":
                    raise BenchError(f"child {p.name} failed:\n{payload}")
                results.append(payload)
            return results

        yield collect
        grace = 5.0  # normal end: children are finishing (flushing, closing)
    except BaseException:
        grace = 0.5  # something failed: do not wait long for the others
        raise
    finally:
        with contextlib.suppress(Exception):
            barrier.abort()  # never leave anyone stuck at the barrier
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        for c in conns:
            c.close()


class Ending:
    """Producers stay attached until every consumer is done (after the clock has stopped).

    A socket library may drop messages still in flight when the sending side closes: pyzmq
    lost the tail of a producer's stream now and then (about 1 run in 20 of 2p->2c on the
    loaded 2-core machine) when the PUSH socket closed while the PULL side's receive pipe was
    at its high-water mark. Keeping every producer's handle open until the consumers have
    their items costs nothing measured and is harmless for the other implementations.
    """

    def __init__(self, producers: int, consumers: int):
        self.producers, self.consumers = producers, consumers
        self._sem = CTX.Semaphore(0)

    def consumer_done(self) -> None:
        """In a consumer, done or failed: let every producer go."""
        for _ in range(self.producers):
            self._sem.release()

    def wait_consumers(self) -> None:
        """In a producer that put everything: wait (bounded) until every consumer is done."""
        deadline = time.monotonic() + RUN_TIMEOUT
        for _ in range(self.consumers):
            if not self._sem.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return  # a consumer is stuck: its own error says why


def wait_barrier(barrier: Any) -> None:
    """The parent's wait at the start barrier; a child that failed first is a BenchError."""
    try:
        barrier.wait(OP_TIMEOUT)
    except threading.BrokenBarrierError:
        raise BenchError("a child failed before the start barrier") from None


@contextlib.contextmanager
def queues(
    impl: Impl,
    n: int,
    capacity: int,
    item_size: int,
    array: ArraySpec | None = None,
    peers: tuple[int, int] = (1, 1),
) -> Iterator[list[Handle]]:
    """Create n queues of impl, each for `peers` = (producers, consumers); destroy them on exit."""
    handles: list[Handle] = []
    with impl.active():
        try:
            for _ in range(n):
                handles.append(impl.create(capacity, item_size, array, peers))
            yield handles
        finally:
            for h in reversed(handles):
                try:
                    impl.destroy(h)
                except Exception as e:
                    print(f"warning: {impl.label}: cleanup failed: {e!r}", file=sys.stderr)
