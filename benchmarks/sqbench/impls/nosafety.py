"""The unsafe-mutex baseline: shared_queue with its crash-safe locks swapped out.

BENCHMARK-ONLY MONKEYPATCH -- "the same design without crash safety".

shared_queue takes a side's lock with
    _sync.lock(fd, LOCK_OPS[side][0], deadline)   and releases it with
    _sync.unlock(fd, LOCK_OPS[side][1])
(OFD byte locks).  LockSwap replaces those two module-level functions of
shared_queue._sync, in the benchmark process before the children are
forked (they inherit it), by a function that turns the same calls into
acquire/release of a named POSIX semaphore mutex per queue and side
(initial value 1; a holder killed inside the critical section would leave
it locked forever, which is exactly the crash safety that OFD locks buy).
Every other line of the put/get path runs unchanged.  Mode "shim" keeps the
real OFD locks but calls them through the identical Python shim, so that
"shim vs nosafety" isolates the lock mechanism from the shim's own cost.
Never use this outside the benchmark: it removes crash safety.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

# The bare words of --variant that select a lock swap, and the LockSwap mode each selects.
LOCK_VARIANTS = {"nosafety": "nosafety", "ofdshim": "shim"}
# The shared_queue column label tag of each mode.
LOCK_TAGS = {"shim": "ofd+shim", "nosafety": "nosafety"}

# fd -> {lock/unlock struct bytes: zero-argument callable}; one dict per process.
_LOCK_BY_FD: dict[int, dict[bytes, Callable[[], Any]]] = {}
# A forked child reopens its lock descriptors (shared_queue does that at fork), and a
# reused fd number must not find the parent's entry: start every child with an empty map.
os.register_at_fork(after_in_child=_LOCK_BY_FD.clear)


def swap_unavailable() -> str | None:
    """None if shared_queue still has the names LockSwap patches, else the reason."""
    import importlib

    sync = importlib.import_module("shared_queue._sync")
    if not all(callable(getattr(sync, f, None)) for f in ("lock", "unlock")) or not hasattr(
        sync, "LOCK_OPS"
    ):
        return "shared_queue._sync.lock / unlock / LOCK_OPS not found (lock swap)"
    return None


class LockSwap:
    """Benchmark-only: route shared_queue's OFD lock calls to semaphores or a shim."""

    def __init__(self, mode: str):
        if mode not in ("nosafety", "shim"):
            raise ValueError(mode)
        self.mode = mode
        self.sems: dict[str, tuple[Any, Any]] = {}  # queue name -> (producer, consumer) mutex
        self._real: tuple[Callable[..., Any], Callable[..., Any]] | None = None

    def add_queue(self, name: str) -> None:
        """In the parent, before the queue is used: create its two mutexes."""
        if self.mode != "nosafety":
            return
        import posix_ipc

        made = []
        try:
            for side in ("P", "C"):
                made.append(
                    posix_ipc.Semaphore(
                        f"/{name}.nosafety{side}", posix_ipc.O_CREX, mode=0o600, initial_value=1
                    )
                )
        except BaseException:
            for s in made:
                s.unlink()
                s.close()
            raise
        self.sems[name] = (made[0], made[1])

    def remove_queue(self, name: str) -> None:
        for s in self.sems.pop(name, ()):
            with contextlib.suppress(Exception):
                s.unlink()
            s.close()

    def _resolve(self, fd: int) -> dict[bytes, Callable[[], Any]]:
        """First call for this fd in this process: build its lock/unlock callables."""
        from shared_queue import _sync

        p_lock, p_unlock = _sync.LOCK_OPS[_sync.PRODUCER_LOCK]
        c_lock, c_unlock = _sync.LOCK_OPS[_sync.CONSUMER_LOCK]
        if self.mode == "shim":
            assert self._real is not None
            lock, unlock = self._real
            ops = {
                p_lock: partial(lock, fd, p_lock, None),
                p_unlock: partial(unlock, fd, p_unlock),
                c_lock: partial(lock, fd, c_lock, None),
                c_unlock: partial(unlock, fd, c_unlock),
            }
        else:
            path = os.readlink(f"/proc/self/fd/{fd}")  # /dev/shm/<prefix>-<queue name>
            names = [n for n in self.sems if path.endswith(f"-{n}")]
            if len(names) != 1:
                raise RuntimeError(f"nosafety: fd {fd} ({path}) is no queue of this run")
            prod, cons = self.sems[names[0]]
            ops = {
                p_lock: prod.acquire,
                p_unlock: prod.release,
                c_lock: cons.acquire,
                c_unlock: cons.release,
            }
        _LOCK_BY_FD[fd] = ops
        return ops

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Patch shared_queue._sync.lock/unlock for the duration (children inherit it by fork)."""
        import shared_queue._sync as sync

        self._real = real = (sync.lock, sync.unlock)
        by_fd, resolve = _LOCK_BY_FD, self._resolve
        by_fd.clear()

        def call(fd: int, op: bytes) -> None:  # same hot path in both modes
            try:
                fn = by_fd[fd][op]
            except KeyError:
                fn = resolve(fd)[op]
            fn()

        def lock(fd: int, op: bytes, deadline: float | None) -> bool:
            call(fd, op)
            return True

        sync.lock, sync.unlock = lock, call  # type: ignore[assignment]
        try:
            yield
        finally:
            sync.lock, sync.unlock = real  # type: ignore[assignment]
            by_fd.clear()
