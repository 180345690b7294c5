"""Child processes for the multi-process test files: start, report, bound, kill, reap."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

import pytest
from conftest import TIMEOUT


class Child:
    """A child process and the read end of its report pipe."""

    def __init__(self, proc: Any, conn: Connection) -> None:
        self.proc, self.conn = proc, conn

    def expect(self, *kinds: str, timeout: float = TIMEOUT) -> tuple[Any, ...]:
        """Return the child's next report, which must be one of ``kinds``."""
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
    assert [p.exitcode for p in procs] == [0] * len(procs), "a child failed (see its stderr)"
