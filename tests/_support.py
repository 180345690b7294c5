"""What the test files share: the deadlock bound, queue cleanup, draining, start methods,
waiting for a blocked call, and child processes with a report pipe.

One module for these facts (issue 10, section 7); ``conftest.py`` holds only fixtures built on
them. Child-target modules (``_children.py`` and the like) import it as well, so it imports
pytest only inside the functions that need it: a spawned child does not pay for pytest.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import os
import platform
import queue
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TypeVar

from shared_queue import Empty, SharedMemoryQueue
from shared_queue._names import SHM_DIR, base_name, queue_of

T = TypeVar("T")

TIMEOUT = 40  # seconds; only reached on a deadlock


# -- queues ---------------------------------------------------------------------------------

_counter = itertools.count()


def session_mark() -> str:
    """What every name from ``unique_name`` in this process contains: ``t<pid>-``."""
    return f"t{os.getpid()}-"


def unique_name() -> str:
    """A queue name no other test or concurrent run of the suite uses."""
    return f"{session_mark()}{next(_counter)}"


def session_files() -> set[str]:
    """The /dev/shm entries of queues named by ``unique_name`` in this process.

    Only this session's (they carry its pid), so concurrent runs do not interfere.
    """
    mark = session_mark()
    return {f for f in os.listdir(SHM_DIR) if mark in f}


def queue_files(name: str, run_id: str = "") -> list[str]:
    """The /dev/shm entries of a queue: its segment, temporary segments and semaphores."""
    base = base_name(name, run_id)
    return sorted(entry for entry in os.listdir(SHM_DIR) if queue_of(entry) == base)


def remove_queue(name: str, run_id: str = "") -> None:
    """Remove the segment and semaphores of a queue, whatever state they are in."""
    for entry in queue_files(name, run_id):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, entry))


def drain(q: SharedMemoryQueue, check: Callable[[Any], T] | None = None) -> list[Any]:
    """Everything in the queue now, by ``get_nowait``; each item passed through ``check``."""
    out: list[Any] = []
    while True:
        try:
            item = q.get_nowait()
        except Empty:
            return out
        out.append(item if check is None else check(item))


# -- waiting for a blocked call -------------------------------------------------------------

# glibc keeps a POSIX semaphore (also one in /dev/shm/sem.*) as a 64-bit word: the value in the
# low 32 bits and the number of threads inside sem_wait/sem_timedwait in the high 32 (struct
# new_sem with __HAVE_64B_ATOMICS, since glibc 2.21). A waiter adds itself before it sleeps,
# so a count > 0 shows, from any process, a call that found the semaphore at 0 and waits.
_GLIBC_SEM = platform.libc_ver()[0] == "glibc" and sys.maxsize > 2**32 and sys.byteorder == "little"
_SETTLE = 0.3  # elsewhere: how long to let a call fall asleep (no waiter count to read)


def sem_waiters(name: str, run_id: str = "") -> int:
    """How many threads, in all processes, sleep in a semaphore wait of the queue ``name``.

    Read from glibc's semaphore word. A waiter killed inside the wait leaves its count behind,
    so this is for queues whose waiters are not killed.
    """
    total = 0
    for entry in queue_files(name, run_id):
        if entry.startswith("sem."):
            path = os.path.join(SHM_DIR, entry)
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
                (word,) = struct.unpack("<Q", f.read(8))
                total += word >> 32
    return total


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Return once ``condition()`` holds; fail the test if it does not within ``timeout``.

    Checks every millisecond: for states that nothing announces (a thread asleep in the
    kernel), where a wake-up cannot be awaited.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            import pytest

            pytest.fail(f"not {what} within {timeout} s")
        time.sleep(0.001)


def wait_blocked(q: SharedMemoryQueue, waiters: int = 1, timeout: float = TIMEOUT) -> None:
    """Return once at least ``waiters`` threads sleep in a semaphore wait of ``q``'s queue.

    That is, once blocked calls (of any handle, any process) have reached their wait. Where
    glibc's count cannot be read, it waits a fixed settle time instead.
    """
    if not _GLIBC_SEM:
        time.sleep(_SETTLE)
        return
    wait_until(
        lambda: sem_waiters(q.name, q.run_id) >= waiters,
        f"{waiters} waiter(s) asleep on queue {q.name!r}",
        timeout,
    )


async def wait_blocked_async(
    q: SharedMemoryQueue, waiters: int = 1, timeout: float = TIMEOUT
) -> None:
    """``wait_blocked`` for a coroutine: the event loop runs on while it checks.

    Coroutines wait through one thread per semaphore per handle, so this counts those threads.
    It adds no thread of its own (tests count them).
    """
    import asyncio

    if not _GLIBC_SEM:
        await asyncio.sleep(_SETTLE)
        return
    deadline = time.monotonic() + timeout
    while sem_waiters(q.name, q.run_id) < waiters:
        if time.monotonic() >= deadline:
            import pytest

            pytest.fail(f"not {waiters} waiter(s) asleep on queue {q.name!r} within {timeout} s")
        await asyncio.sleep(0.001)


# -- start methods --------------------------------------------------------------------------


def ctx_fixture(*methods: str) -> Any:
    """A ``ctx`` fixture: a multiprocessing context per start method, each test run under each.

    In a test module: ``ctx = ctx_fixture("fork", "spawn")``.
    """
    import pytest

    @pytest.fixture(params=methods)
    def ctx(request: pytest.FixtureRequest) -> BaseContext:
        """A multiprocessing context per start method."""
        context: BaseContext = multiprocessing.get_context(request.param)
        return context

    return ctx


# -- child processes ------------------------------------------------------------------------


def reporting(fn: Callable[..., None]) -> Callable[..., None]:
    """Make a child target send its traceback to the parent instead of leaving it to time out.

    The target's first argument is the write end of its report pipe (see ``Child``).
    """

    @functools.wraps(fn)  # keeps the qualified name, so spawn pickles it by reference
    def run(conn: Connection, *args: Any) -> None:
        try:
            fn(conn, *args)
        except BaseException:
            conn.send(("error", traceback.format_exc()))
            raise

    return run


class Child:
    """A child process and the read end of its report pipe."""

    def __init__(self, proc: Any, conn: Connection) -> None:
        self.proc, self.conn = proc, conn

    def expect(self, *kinds: str, timeout: float = TIMEOUT) -> tuple[Any, ...]:
        """Return the child's next report, which must be one of ``kinds``."""
        import pytest

        if not self.conn.poll(timeout):
            pytest.fail(f"child {self.proc.pid}: no {kinds} within {timeout} s")
        try:
            msg = self.conn.recv()
        except EOFError:
            self.proc.join(TIMEOUT)
            pytest.fail(f"child died (exitcode {self.proc.exitcode}) before reporting {kinds}")
        if msg[0] == "error":
            pytest.fail(f"child {self.proc.pid} failed:\n{msg[1]}")
        assert msg[0] in kinds, f"expected {kinds}, child reported {msg}"
        return tuple(msg)

    def quiet(self, seconds: float) -> None:
        """Assert that the child reports nothing for ``seconds``: it is blocked."""
        assert not self.conn.poll(seconds), f"appeared not to block: {self.conn.recv()}"

    def kill(self) -> float:
        """SIGKILL the child, reap it, and return the time it was dead by."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(TIMEOUT)
        assert self.proc.exitcode == -signal.SIGKILL
        return time.monotonic()

    def finish(self) -> None:
        """Wait for the child to exit, and check it exited 0."""
        self.proc.join(TIMEOUT)
        assert self.proc.exitcode == 0


@contextlib.contextmanager
def running(
    ctx: BaseContext, *targets: tuple[Callable[..., Any], tuple[Any, ...]]
) -> Iterator[list[multiprocessing.process.BaseProcess]]:
    """Start a process per ``(target, args)``; on exit join each, kill it if alive, check exit 0.

    After a failure in the body the children get a short grace period instead of TIMEOUT: they
    may be blocked on the queue for good.
    """
    procs = [ctx.Process(target=t, args=a, daemon=True) for t, a in targets]  # type: ignore[attr-defined]
    ok = False
    try:
        for p in procs:
            p.start()
        yield procs
        ok = True
    finally:
        deadline = time.monotonic() + (TIMEOUT if ok else 5)
        for p in procs:
            if p.pid is None:
                continue  # never started
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(TIMEOUT)
    codes = [p.exitcode for p in procs]
    assert codes == [0] * len(procs), f"a child failed, exit codes {codes} (see its stderr)"


def recv(
    call: Callable[..., T],
    procs: list[multiprocessing.process.BaseProcess],
    timeout: float = TIMEOUT,
) -> T:
    """Return ``call(timeout=...)`` (a get, or a put); fail at once if a child died with an error.

    Tries in short slices only to notice a dead child early; the bound is ``timeout``.
    """
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(timeout=0.2)
        except (queue.Empty, queue.Full):
            failed = [(p.name, p.exitcode) for p in procs if p.exitcode not in (None, 0)]
            if failed:
                pytest.fail(f"child failed before reporting: {failed} (see its stderr)")
            if time.monotonic() >= deadline:
                pytest.fail(f"no progress with a child within {timeout} s")


# -- the command line -----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent  # the source checkout


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m shared_queue ARGS`` from the checkout; a hang fails after TIMEOUT."""
    return subprocess.run(
        [sys.executable, "-m", "shared_queue", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
