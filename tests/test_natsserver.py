"""The NATS test harness itself: real nats-servers serve JetStream, and the cluster fails over.

Checks ``_natsserver.py`` and the ``nats_server`` / ``nats_cluster`` fixtures with nats-py as
the client, independent of the shared_queue NATS backend.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("nats", reason="nats-py not installed: pip install -e '.[dev]'")

import nats
import nats.errors
from _natsserver import NatsCluster, NatsServer, NatsServerError
from nats.aio.client import Client
from nats.js import JetStreamContext

T = TypeVar("T")

TIMEOUT = 40  # seconds; bounds a test's client work, only reached on a hang
FAILOVER_TIMEOUT = 30  # seconds for a new stream leader to take publishes after a kill (~6-9 s)
MIB = 1024 * 1024

log = logging.getLogger(__name__)
_streams = itertools.count()


def stream_name() -> str:
    """A stream name no other test or concurrent run uses (the session server is shared)."""
    return f"sqharness_{os.getpid()}_{next(_streams)}"


def run(coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
    """Run ``coro`` on a new event loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# nats-py reports connection trouble through these; without them it logs tracebacks on its own.
async def _on_error(exc: Exception) -> None:
    log.info("nats-py error: %r", exc)  # expected while a node is down


async def _on_disconnected() -> None:
    log.info("nats-py disconnected")


async def _on_reconnected() -> None:
    log.info("nats-py reconnected")


async def _on_closed() -> None:
    log.info("nats-py connection closed")


async def connect(servers: str | list[str]) -> Client:
    """A nats-py connection whose callbacks log through ``logging``."""
    return await nats.connect(
        servers,
        error_cb=_on_error,
        disconnected_cb=_on_disconnected,
        reconnected_cb=_on_reconnected,
        closed_cb=_on_closed,
        connect_timeout=2,
    )


async def eventually(attempt: Callable[[], Awaitable[T | None]], what: str, timeout: float) -> T:
    """The first result of ``attempt()`` that is not None, retried while NATS errors or times
    out (as it does while a leader is being elected); fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = await attempt()
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            result, last = None, exc
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"not {what} within {timeout} s (last error: {last!r})")
        await asyncio.sleep(0.1)  # the interval of a bounded poll: an election announces nothing


# -- one server ------------------------------------------------------------------------------


def test_server_serves_jetstream(nats_url: str) -> None:
    """The session server answers the JetStream API; a stream takes a message and returns it."""

    async def main() -> None:
        name = stream_name()
        nc = await connect(nats_url)
        try:
            info = json.loads((await nc.request("$JS.API.INFO", b"", timeout=2)).data)
            assert info["type"] == "io.nats.jetstream.api.v1.account_info_response"
            js = nc.jetstream(timeout=2)
            await js.add_stream(name=name, subjects=[f"{name}.>"])
            ack = await js.publish(f"{name}.x", b"hello")
            assert (ack.stream, ack.seq) == (name, 1)
            msg = await js.get_msg(name, 1)
            assert (msg.subject, msg.data) == (f"{name}.x", b"hello")
            assert await js.delete_stream(name)
        finally:
            await nc.close()

    run(main())


def test_server_max_payload_is_8mib(nats_url: str) -> None:
    """The session server announces 8 MiB and stores and returns a message of exactly that."""

    async def main() -> None:
        name = stream_name()
        nc = await connect(nats_url)
        try:
            assert nc.max_payload == 8 * MIB
            js = nc.jetstream(timeout=10)
            await js.add_stream(name=name, subjects=[f"{name}.>"], allow_direct=True)
            payload = os.urandom(256) * (8 * MIB // 256)
            assert (await js.publish(f"{name}.big", payload)).seq == 1
            # Direct get: the message as stored, not base64 in a JSON reply.
            msg = await js.get_msg(name, 1, direct=True)
            assert msg.data == payload
            assert await js.delete_stream(name)
        finally:
            await nc.close()

    run(main())


def test_server_restart_keeps_store_stop_removes_it(nats_binary: Path) -> None:
    """kill() then restart(): same port, new pid, the stream's message still there; stop()
    ends the process, removes the directory, and may be called again."""
    server = NatsServer(binary=nats_binary).start()
    name = stream_name()

    async def write() -> None:
        nc = await connect(server.url)
        try:
            js = nc.jetstream(timeout=2)
            await js.add_stream(name=name, subjects=[f"{name}.>"])
            await js.publish(f"{name}.x", b"kept")
        finally:
            await nc.close()

    async def read() -> bytes | None:
        nc = await connect(server.url)
        try:
            return (await nc.jetstream(timeout=2).get_msg(name, 1)).data
        finally:
            await nc.close()

    try:
        run(write())
        first_pid, port, store = server.pid, server.port, server.store_dir
        server.kill()
        assert not server.running
        assert store.is_dir()
        server.restart()
        assert server.running and server.port == port and server.pid != first_pid
        assert run(read()) == b"kept"
        directory = server.dir
        assert directory is not None
    finally:
        server.stop()
    assert not server.running
    assert not directory.exists()
    server.stop()


def test_start_failure_raises_with_log_and_cleans_up(nats_binary: Path) -> None:
    """A server that cannot start raises NatsServerError with its log; nothing is left."""
    server = NatsServer("max_payload: {", binary=nats_binary)
    with pytest.raises(NatsServerError, match=r"^nats-server \S+ \(pid \d+\) exited with code \d+"):
        server.start(timeout=10)
    assert not server.running
    assert server.dir is None


# -- cluster ---------------------------------------------------------------------------------


def test_cluster_fails_over_after_leader_killed(nats_cluster: NatsCluster) -> None:
    """An R3 stream has a leader and two replicas on n1..n3; after SIGKILL of its leader another
    node leads and takes publishes within FAILOVER_TIMEOUT, with the earlier message kept."""
    cluster = nats_cluster
    assert len(cluster.servers) == 3
    assert cluster.meta_leader() in cluster.nodes

    async def leader_of(js: JetStreamContext, name: str, old: str | None = None) -> str | None:
        info = await js.stream_info(name)
        leader = info.cluster.leader if info.cluster is not None else None
        return leader if leader is not None and leader != old else None

    async def main() -> None:
        name = stream_name()
        nc = await connect(cluster.servers)
        try:
            js = nc.jetstream(timeout=2)
            await js.add_stream(name=name, subjects=[f"{name}.>"], num_replicas=3)
            leader = await eventually(lambda: leader_of(js, name), "a stream leader", 10)
            info = await js.stream_info(name)
            assert info.cluster is not None
            replicas = {peer.name for peer in info.cluster.replicas or ()}
            assert {leader, *replicas} == set(cluster.nodes)
            assert (await js.publish(f"{name}.x", b"before")).seq == 1

            killed = time.monotonic()
            deadline = killed + FAILOVER_TIMEOUT
            cluster.kill(leader)
            new = await eventually(
                lambda: leader_of(js, name, old=leader), "a new stream leader", FAILOVER_TIMEOUT
            )
            elected = time.monotonic()
            # A retried publish may have been stored already: the message id dedupes it.
            ack = await eventually(
                lambda: js.publish(f"{name}.x", b"after", headers={"Nats-Msg-Id": "after"}),
                "a publish after the failover",
                deadline - elected,
            )
            published = time.monotonic()
            log.info(
                "failover: %s killed, %s leads after %.2f s, publish ok after %.2f s",
                leader,
                new,
                elected - killed,
                published - killed,
            )
            assert new in set(cluster.nodes) - {leader}
            assert ack.seq == 2
            assert (await js.get_msg(name, 1)).data == b"before"
            assert (await js.get_msg(name, 2)).data == b"after"
        finally:
            await nc.close()

    run(main(), TIMEOUT + FAILOVER_TIMEOUT)
