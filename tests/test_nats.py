"""What only the NATS backend has: URLs, server limits, redelivery, a server that goes away.

The API both backends share is tested once, in test_contract.py; this file covers the rest
against real nats-server processes (the ``nats_server`` fixture, or one of the test's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("nats", reason="nats-py not installed: pip install -e '.[dev]'")

import nats
from _natsserver import NATS_CONFIG, NatsServer, free_ports
from _support import TIMEOUT, unique_name

import shared_queue
from shared_queue import Empty, Full, IncompatibleQueueError
from shared_queue._nats import CONSUMER, MAX_BATCH, NatsQueue, stream_name
from shared_queue._natsio import parse_url


@pytest.fixture
def make(nats_url: str) -> Iterator[Callable[..., NatsQueue]]:
    """Create NatsQueues with unique names on the session server; unlink them afterwards."""
    made: list[NatsQueue] = []

    def make(**kwargs: Any) -> NatsQueue:
        kwargs.setdefault("create", True)
        q = shared_queue.connect(nats_url, kwargs.pop("name", unique_name()), **kwargs)
        assert isinstance(q, NatsQueue)
        made.append(q)
        return q

    yield make
    for q in made:
        with contextlib.suppress(FileNotFoundError):
            q.unlink()
        q.close()


def _bounded(fn: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Run ``fn`` in a thread; fail the test if it has not returned within ``timeout``."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(_capture(fn)), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{fn} did not return within {timeout} s")
    kind, value = out[0]
    if kind == "raise":
        raise value
    return value


def _capture(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "return", fn()
    except BaseException as exc:
        return "raise", exc


# -- URLs and names ---------------------------------------------------------------------------


def test_url_forms() -> None:
    a = parse_url("nats://h1:4222,h2:4223?replicas=3&io_timeout=2.5")
    assert a.servers == ("h1:4222", "h2:4223")
    assert dict(a.options) == {"replicas": 3, "io_timeout": 2.5}
    assert parse_url("nats://localhost").servers == ("localhost:4222",)
    assert parse_url("tls://h:1").tls


def test_credentials_stay_out_of_messages_and_reprs() -> None:
    a = parse_url("nats://alice:s3cret@h:4222")
    assert (a.user, a.password) == ("alice", "s3cret")
    assert "s3cret" not in a.display and "s3cret" not in repr(a)
    assert a.server_urls() == ["nats://h:4222"]
    assert a.credentials() == {"user": "alice", "password": "s3cret"}
    with pytest.raises(ValueError) as info:
        parse_url("nats://alice:s3cret@h:99999")
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConnectionError) as conn:
        shared_queue.connect("nats://alice:s3cret@127.0.0.1:1", "x", connect_timeout=0.5)
    assert "s3cret" not in str(conn.value)


def test_credentials_in_the_url_reach_the_server_and_a_wrong_one_is_named(
    nats_binary: Path,
) -> None:
    """Any character survives percent-encoding in the URL; a refused password raises
    PermissionError, not a timeout that blames the network."""
    config = NATS_CONFIG + 'authorization { user: odd, password: "p@ss:w/rd?x" }\n'
    with NatsServer(config, binary=nats_binary) as server:
        port = server.url.rsplit(":", 1)[1]
        good = f"nats://odd:p%40ss%3Aw%2Frd%3Fx@127.0.0.1:{port}"
        with shared_queue.connect(good, unique_name(), create=True, capacity=2) as q:
            q.put("in")
            assert q.get(timeout=TIMEOUT) == "in"
            q.unlink()
        with pytest.raises(PermissionError, match="refused the credentials") as info:
            shared_queue.connect(f"nats://odd:wrong@127.0.0.1:{port}", "x", connect_timeout=1)
        assert "wrong" not in str(info.value)


@pytest.mark.parametrize(
    "url, match",
    [
        ("nats://", "bad server"),
        ("nats://h:notaport", "bad server"),
        ("nats://h:4222/jobs", "has a path"),
        ("nats://h:4222?colour=red", "unknown option 'colour'"),
        ("nats://h:4222?replicas=three", "is not int"),
        ("http://h:4222", "not a nats:// URL"),
    ],
)
def test_bad_urls_raise_value_error(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_url(url)


def test_replicas_refused_for_shared_memory() -> None:
    with pytest.raises(ValueError, match="replicas applies to nats"):
        shared_queue.connect("shm://", "x", replicas=3)


def test_stream_names_are_distinct_and_valid(make: Callable[..., NatsQueue]) -> None:
    names = ["a.b", "a_2eb", "a b", "a*b", "a>b", "ü", "x" * 300, "x" * 301]
    streams = {stream_name(n, "") for n in names} | {stream_name("b", "a-"), stream_name("-b", "a")}
    assert len(streams) == len(names) + 2
    assert all(len(s) <= 200 and s.replace("-", "").replace("_", "").isalnum() for s in streams)
    q = make(name="jobs.v1 ü*>", capacity=2, item_size=64)
    q.put("ok")
    assert q.get(timeout=TIMEOUT) == "ok"


def test_name_rules_match_shared_memory(nats_url: str) -> None:
    for bad in ("", "a/b", "a\0b"):
        with pytest.raises(ValueError):
            shared_queue.connect(nats_url, bad, create=True)
    with pytest.raises(TypeError):
        shared_queue.connect(nats_url, 3, create=True)  # type: ignore[arg-type]


# -- the server's limits ----------------------------------------------------------------------


def test_item_size_beyond_max_payload_is_refused_naming_both(nats_url: str) -> None:
    name = unique_name()
    with pytest.raises(ValueError, match=r"item_size=9000000 .* max_payload=8388608"):
        shared_queue.connect(nats_url, name, create=True, item_size=9_000_000)
    with pytest.raises(FileNotFoundError):  # nothing was left behind
        shared_queue.connect(nats_url, name)


def test_batch_beyond_the_servers_atomic_limit_names_it(make: Callable[..., NatsQueue]) -> None:
    q = make(capacity=5000, item_size=64)
    with pytest.raises(ValueError, match=f"{MAX_BATCH + 1} items exceeds .*atomic batch limit"):
        q.put_batch(range(MAX_BATCH + 1))
    q.put_batch(range(MAX_BATCH))
    assert q.qsize() == MAX_BATCH


def test_attach_to_a_foreign_stream_is_refused(nats_url: str) -> None:
    name = unique_name()
    stream = stream_name(name, "")

    async def add(delete: bool = False) -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            if delete:
                await js.delete_stream(stream)
            else:
                await js.add_stream(name=stream, subjects=[f"foreign.{stream}"])
        finally:
            await nc.close()

    asyncio.run(asyncio.wait_for(add(), TIMEOUT))
    try:
        with pytest.raises(IncompatibleQueueError, match="not a queue of this shared_queue"):
            shared_queue.connect(nats_url, name)
    finally:
        asyncio.run(asyncio.wait_for(add(delete=True), TIMEOUT))


def test_a_server_without_jetstream_gives_one_clear_error(nats_binary: Path) -> None:
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [str(nats_binary), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        with pytest.raises(ConnectionError, match="no JetStream"):
            shared_queue.connect(f"nats://127.0.0.1:{port}", "jobs", create=True)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


def _wait_port(port: int) -> None:
    for _ in range(int(TIMEOUT / 0.05)):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(5) == b"INFO ":
                    return
        except OSError:
            pass
        threading.Event().wait(0.05)  # a separate process announces nothing to await
    pytest.fail(f"no server on port {port}")


# -- delivery ---------------------------------------------------------------------------------


def test_an_item_whose_consumer_died_before_its_ack_is_delivered_again(
    make: Callable[..., NatsQueue], nats_url: str
) -> None:
    """At-least-once: a consumer that fetched an item and vanished without acking it (here a
    raw client that closes its connection) does not lose it; after ack_wait another gets it."""
    q = make(capacity=4, item_size=64, ack_wait=1.0)
    q.put("precious")

    async def fetch_and_vanish() -> bytes:
        nc = await nats.connect(nats_url)
        try:
            sub = await nc.jetstream().pull_subscribe_bind(CONSUMER, q._stream)
            (msg,) = await sub.fetch(1, timeout=5)
            return bytes(msg.data)
        finally:
            await nc.close()

    assert asyncio.run(asyncio.wait_for(fetch_and_vanish(), TIMEOUT))
    with pytest.raises(Empty):
        q.get_nowait()  # in flight with the vanished consumer
    assert q.get(timeout=TIMEOUT) == "precious"
    with pytest.raises(Empty):
        q.get(timeout=0.5)  # and only once more


def test_a_blocked_put_does_not_poll_the_server(
    make: Callable[..., NatsQueue], nats_server: NatsServer
) -> None:
    """A put waiting for room sends a retry per ROOM_RETRY (1 s) at most, not a stream of
    publishes: the server's count of messages received grows by a handful."""
    q = make(capacity=1, item_size=64)
    q.put(1)
    before = nats_server.monitor("/varz")["in_msgs"]
    with pytest.raises(Full):
        q.put(2, timeout=2.5)
    grown = nats_server.monitor("/varz")["in_msgs"] - before
    assert grown <= 10, f"{grown} messages reached the server while one put waited 2.5 s"


def test_a_blocked_put_is_woken_by_a_get_of_another_process(
    make: Callable[..., NatsQueue],
) -> None:
    q = make(capacity=1, item_size=64)
    q.put("first")
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_get_one_later, args=(q,), daemon=True)
    child.start()
    try:
        q.put("second", timeout=TIMEOUT)  # room comes from the child's get
        assert q.get(timeout=TIMEOUT) == "second"
    finally:
        child.join(TIMEOUT)
    assert child.exitcode == 0


def _get_one_later(q: NatsQueue) -> None:
    assert q.get(timeout=TIMEOUT) == "first"
    q.close()


# -- a server that goes away -------------------------------------------------------------------


@pytest.fixture
def own_server(nats_binary: Path) -> Iterator[NatsServer]:
    """A server of this test's own, which it may kill and restart."""
    with NatsServer(NATS_CONFIG, binary=nats_binary) as server:
        yield server


def test_close_and_calls_return_when_the_server_is_gone(
    own_server: NatsServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    q = shared_queue.connect(own_server.url, unique_name(), create=True, io_timeout=2)
    q.put("kept")
    own_server.kill()
    with pytest.raises((Empty, ConnectionError)):
        _bounded(lambda: q.get(timeout=1))
    with pytest.raises((Full, ConnectionError)):
        _bounded(lambda: q.put("x", timeout=1))
    with pytest.raises(ConnectionError, match="no answer"):
        _bounded(lambda: q.put("x"))  # no deadline: io_timeout ends it
    _bounded(q.close)
    assert q.closed
    assert "Traceback" not in capfd.readouterr().err  # the client's errors went to logging
    assert any(r.name == "shared_queue.nats" for r in caplog.records)


def test_a_restarted_server_keeps_the_items_and_the_handle_reconnects(
    own_server: NatsServer,
) -> None:
    q = shared_queue.connect(own_server.url, unique_name(), create=True, capacity=8)
    try:
        q.put_batch(["a", "b"])
        own_server.kill()
        own_server.restart()
        assert _bounded(lambda: q.get(timeout=TIMEOUT)) == "a"
        q.put("c", timeout=TIMEOUT)
        assert q.get_batch(5, timeout=TIMEOUT) == ["b", "c"]
    finally:
        q.unlink()
        q.close()


# -- the process side ---------------------------------------------------------------------------


def test_a_handle_inherited_by_fork_works_in_the_child(make: Callable[..., NatsQueue]) -> None:
    q = make(capacity=4, item_size=64)
    q.put("from parent")
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_echo, args=(q,), daemon=True)
    child.start()
    child.join(TIMEOUT)
    assert child.exitcode == 0
    assert q.get(timeout=TIMEOUT) == "from parent, via child"


def _echo(q: NatsQueue) -> None:
    q.put(q.get(timeout=TIMEOUT) + ", via child")
    q.close()


def test_without_nats_py_a_nats_url_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['nats'] = None\n"
        "import shared_queue\n"
        "try:\n"
        "    shared_queue.connect('nats://127.0.0.1:4222', 'jobs')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout
    assert "pip install 'shared-multiprocess-queue[nats]'" in out
    # and shared memory needs no nats-py at all
    env = {**os.environ, "PYTHONPATH": str(Path(shared_queue.__file__).parent.parent)}
    code = "import sys; sys.modules['nats'] = None\nimport shared_queue\nprint('ok')"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=TIMEOUT, check=True, env=env)  # fmt: skip
    assert ran.stdout.strip() == "ok"


def test_metrics_say_what_the_server_knows(make: Callable[..., NatsQueue]) -> None:
    q = make(capacity=10, item_size=64)
    q.put_batch([1, 2, 3])
    q.get()
    m = q.get_metrics()
    assert m["total_puts"] == 3 and m["total_gets"] == 1 and m["queue_size"] == 2
    assert json.dumps(m)  # plain JSON, like shared memory's record
    unknown = {"bytes_in", "bytes_out", "high_water_mark", "put_waits", "put_wait_seconds",
               "get_waits", "get_wait_seconds"}  # fmt: skip
    assert {k for k, v in m.items() if v is None} == unknown


# -- one handle, several callers ----------------------------------------------------------------


def test_items_reach_a_queue_whose_subject_looks_like_an_ack(
    make: Callable[..., NatsQueue],
) -> None:
    """Ack confirmations and items share a handle's inbox subscription; an item's subject
    (here full of "a") is never taken for a confirmation."""
    q = make(name="a" * 60, capacity=4, item_size=64)
    q.put("kept")
    assert q.get(timeout=TIMEOUT) == "kept"


def test_a_nowait_get_does_not_wait_for_a_blocked_get_of_the_same_handle(
    make: Callable[..., NatsQueue],
) -> None:
    q = make(capacity=4, item_size=64)
    blocked: list[Any] = []
    thread = threading.Thread(target=lambda: blocked.append(q.get(timeout=TIMEOUT)), daemon=True)
    thread.start()
    io = q._io
    assert io is not None
    for _ in range(int(TIMEOUT / 0.01)):  # until the first get holds the handle's pull
        if io.lock.locked():
            break
        threading.Event().wait(0.01)
    with pytest.raises(Empty):
        q.get_nowait()
    assert thread.is_alive()  # the nowait call returned while the blocked one still waits
    q.put("for the blocked one")
    thread.join(TIMEOUT)
    assert blocked == ["for the blocked one"]


def test_a_handle_dropped_without_close_is_collected_and_released(nats_url: str) -> None:
    import gc
    import weakref

    name = unique_name()
    keep = shared_queue.connect(nats_url, name, create=True, capacity=2)
    try:
        dropped = shared_queue.connect(nats_url, name)
        dropped.put("x")
        ref = weakref.ref(dropped)
        del dropped
        gc.collect()
        assert ref() is None
        assert keep.get(timeout=TIMEOUT) == "x"  # the queue is fine
    finally:
        keep.unlink()
        keep.close()


def test_close_ends_concurrent_first_async_calls(make: Callable[..., NatsQueue]) -> None:
    """Two first async calls on one loop share one connection setup; close() ends both."""
    q = make(capacity=4, item_size=64)

    async def main() -> list[Any]:
        calls = [asyncio.ensure_future(q.get_async()) for _ in range(2)]
        for _ in range(int(TIMEOUT / 0.01)):
            if len(q._loop_ios) == 1 and all(not c.done() for c in calls):
                made = next(iter(q._loop_ios.values()))
                if made.done() and made.result().lock.locked():
                    break
            await asyncio.sleep(0.01)
        q.close()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), TIMEOUT)

    results = asyncio.run(main())
    assert [type(r) for r in results] == [ValueError, ValueError]
