"""A NatsQueue on a real 3-node JetStream cluster survives SIGKILL of its stream's leader.

Two producers and two consumers (separate processes) run through the kill. Afterwards every put
that returned is found by a consumer, nothing is found twice (no consumer died, so nothing may
be delivered again), producers and consumers made progress after the kill, and nothing was
written to stderr: the client's errors went to ``logging``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="nats-py not installed: pip install -e '.[dev]'")

import nats
from _natsserver import NatsCluster
from _support import unique_name

import shared_queue
from shared_queue._nats import stream_name

PER_PRODUCER = 400
FAILOVER_BOUND = 60.0  # seconds for everything to finish after the kill; only reached on a hang


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # polling files another process writes: nothing to wait on


async def _leader(servers: list[str], stream: str) -> str:
    nc = await nats.connect(servers)
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None and info.cluster.leader is not None
        return info.cluster.leader
    finally:
        await nc.close()


def test_leader_killed_mid_run_loses_nothing_and_duplicates_nothing(
    nats_cluster: NatsCluster, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = nats_cluster.url
    name = unique_name()
    q = shared_queue.connect(url, name, create=True, replicas=3, capacity=10_000, item_size=256)
    ctx = multiprocessing.get_context("spawn")
    stop = tmp_path / "stop"
    puts = [tmp_path / f"put{k}" for k in range(2)]
    gets = [tmp_path / f"get{k}" for k in range(2)]
    procs = [
        ctx.Process(target=_producer, args=(url, name, f"p{k}", PER_PRODUCER, str(puts[k])))
        for k in range(2)
    ] + [ctx.Process(target=_consumer, args=(url, name, str(stop), str(gets[k]))) for k in range(2)]
    try:
        leader = asyncio.run(asyncio.wait_for(
            _leader(nats_cluster.servers, stream_name(name, "")), 20))  # fmt: skip
        for p in procs:
            p.start()

        def got() -> int:
            return sum(len(_lines(g)) for g in gets)

        def put() -> int:
            return sum(len(_lines(p)) for p in puts)

        _wait(lambda: got() >= 50, "50 items through the queue before the kill", 60)
        nats_cluster.kill(leader)
        at_kill_put, at_kill_got = put(), got()
        _wait(lambda: put() == 2 * PER_PRODUCER, "every put to return", FAILOVER_BOUND)
        _wait(lambda: got() >= 2 * PER_PRODUCER, "every item to be got", FAILOVER_BOUND)
        stop.touch()
        for p in procs:
            p.join(FAILOVER_BOUND)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    finally:
        stop.touch()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
        try:
            q.unlink()
        finally:
            q.close()

    assert at_kill_put < 2 * PER_PRODUCER and at_kill_got < 2 * PER_PRODUCER  # killed mid-run
    acked = {(f"p{k}", int(i)) for k in range(2) for i in _lines(puts[k])}
    received = Counter(tuple(line.split()) for g in gets for line in _lines(g))
    received_items = {(tag, int(i)) for tag, i in received}
    assert acked == {(f"p{k}", i) for k in range(2) for i in range(PER_PRODUCER)}
    assert received_items == acked, "an acknowledged put was lost"
    assert [item for item, n in received.items() if n > 1] == [], "an item was delivered twice"
    assert "Traceback" not in capfd.readouterr().err


# Spawned children import these by name from this module.
from _nats_children import consumer as _consumer  # noqa: E402
from _nats_children import producer as _producer  # noqa: E402
