"""Shared fixtures: unique queue names, and a check that /dev/shm ends as it started."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shared_queue
from shared_queue._segment import SHM_DIR, base_name

TIMEOUT = 40  # seconds; only reached on a deadlock
_counter = itertools.count()


def _ours() -> set[str]:
    # Only names this session made (they carry its pid), so concurrent runs do not interfere.
    mark = f"t{os.getpid()}-"
    return {f for f in os.listdir(SHM_DIR) if mark in f}


@pytest.fixture(scope="session", autouse=True)
def shm_unchanged() -> Iterator[None]:
    """Fail the session if the suite leaves queue segments or semaphores in /dev/shm."""
    before = _ours()
    yield
    leaked = _ours() - before
    assert not leaked, f"tests leaked {sorted(leaked)} in {SHM_DIR}"


@pytest.fixture
def qname(request: pytest.FixtureRequest) -> Iterator[str]:
    """A queue name unique to this test; anything created under it is removed afterwards."""
    name = f"t{os.getpid()}-{next(_counter)}"
    yield name
    remove_queue(name)


def remove_queue(name: str, run_id: str = "") -> None:
    """Remove the segment and semaphores of a queue, whatever state they are in."""
    base = base_name(name, run_id)
    for entry in os.listdir(SHM_DIR):
        if (
            entry == base
            or entry.startswith(base + ".creating-")
            or (entry.startswith(f"sem.{base}.") and entry.count(".") == 3)
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, entry))


@pytest.fixture
def make_queue(qname: str) -> Iterator[object]:
    """Factory for queues created under this test's name; closes them afterwards."""
    made: list[shared_queue.SharedMemoryQueue] = []

    def make(**kwargs: object) -> shared_queue.SharedMemoryQueue:
        kwargs.setdefault("create", True)
        q = shared_queue.SharedMemoryQueue(qname, **kwargs)  # type: ignore[arg-type]
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


@pytest.fixture
def children(ctx: Any) -> Iterator[Callable[..., Any]]:
    """Start children with a report pipe (``_procs.Child``); kill and reap what is left.

    Uses the ``ctx`` fixture (a multiprocessing context) of the test module.
    """
    from _procs import Child

    started: list[Child] = []

    def start(target: Callable[..., None], *args: Any) -> Child:
        r, w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=target, args=(w, *args), daemon=True)
        proc.start()
        w.close()
        child = Child(proc, r)
        started.append(child)
        return child

    yield start
    for child in started:
        if child.proc.exitcode is None:
            child.proc.kill()
        child.proc.join(TIMEOUT)
        child.conn.close()
