"""``shared_queue.bridge`` and ``python -m shared_queue bridge``: shared memory <-> NATS.

What a bridge must keep: every item arrives, once and in order, and stopping it (the stop
event, Ctrl-C, SIGTERM) loses none -- each item put into the source is afterwards either in
the destination or still in the source. The NATS side is the session's nats-server
(``nats_url``); a test that kills a server starts one of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from _natsserver import NATS_CONFIG, NatsServer, free_ports
from _support import ROOT, TIMEOUT, remove_queue, run_cli, unique_name, wait_until

import shared_queue
from shared_queue import Empty, Full, bridge
from shared_queue import _cli as cli

Queue = Any  # a SharedMemoryQueue or a NatsQueue

SHM = "shm://"


@dataclass
class Point:
    """An item of a class the bridge's process cannot import (this module is not on its path)."""

    x: int
    y: int


@pytest.fixture
def make(nats_url: str) -> Iterator[Callable[..., Queue]]:
    """``make(url, **kwargs)``: create a queue under a fresh name at ``url`` ("shm://" or
    "nats"); every queue made is unlinked and closed afterwards."""
    made: list[Queue] = []

    def create(url: str, name: str | None = None, **kwargs: Any) -> Queue:
        q = shared_queue.connect(
            nats_url if url == "nats" else url, name or unique_name(), create=True, **kwargs
        )
        made.append(q)
        return q

    yield create
    for q in made:
        with contextlib.suppress(FileNotFoundError):
            q.unlink()
        q.close()


def take_all(q: Queue) -> list[Any]:
    """Every item in ``q`` now."""
    out: list[Any] = []
    while True:
        try:
            out += q.get_batch(100, block=False)
        except Empty:
            return out


def receive(q: Queue, n: int) -> list[Any]:
    """Get ``n`` items from ``q``, waiting for them; fail the test after TIMEOUT without one."""
    out: list[Any] = []
    while len(out) < n:
        try:
            out += q.get_batch(n - len(out), timeout=TIMEOUT)
        except Empty:
            pytest.fail(f"{len(out)} of {n} items arrived in {q.name!r} within {TIMEOUT} s")
    return out


class Producer:
    """A thread that puts 0, 1, 2, ... into ``q`` until stopped; ``put`` counts what went in."""

    def __init__(self, q: Queue, limit: int) -> None:
        self.q = q
        self.limit = limit
        self.put = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while self.put < self.limit and not self.halt.is_set():
                chunk = list(range(self.put, min(self.put + 10, self.limit)))
                try:
                    self.q.put_batch(chunk, timeout=0.2)
                except Full:
                    continue
                self.put += len(chunk)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> int:
        self.halt.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the producer did not stop"
        assert self.error is None, self.error
        return self.put


def assert_conserved(put: int, arrived: list[Any], left: list[Any]) -> None:
    """Each of 0..put-1 arrived in order, or is still in the source, and nothing twice."""
    assert arrived == list(range(len(arrived))), "items arrived out of order or twice"
    assert sorted(arrived + left) == list(range(put)), "items were lost or duplicated"


# -- the function ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src_url, dst_url", [(SHM, "nats"), ("nats", SHM)], ids=["shm-nats", "nats-shm"]
)
def test_items_arrive_complete_and_in_order(
    make: Callable[..., Queue], src_url: str, dst_url: str
) -> None:
    src = make(src_url, capacity=500)
    dst = make(dst_url, capacity=500)
    items = [{"n": i, "data": "x" * (i % 50)} for i in range(300)]
    src.put_batch(items[:150])
    src.put_batch(items[150:])
    assert bridge(src, dst, batch=64, idle_timeout=0.5) == 300
    assert take_all(dst) == items
    assert src.qsize() == 0


def test_batch_larger_than_dst_capacity_is_lowered(make: Callable[..., Queue]) -> None:
    src = make(SHM, capacity=100)
    dst = make("nats", capacity=3)
    src.put_batch(range(40))
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(bridge(src, dst, batch=100, idle_timeout=2.0)), daemon=True
    )
    thread.start()
    assert receive(dst, 40) == list(range(40))
    thread.join(TIMEOUT)
    assert result == [40]


def test_stop_event_ends_it_and_loses_nothing(make: Callable[..., Queue]) -> None:
    src = make(SHM, capacity=50)
    dst = make("nats", capacity=100)
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(bridge(src, dst, batch=20, stop=stop)), daemon=True
    )
    thread.start()
    producer = Producer(src, 3000)
    arrived = receive(dst, 200)
    stop.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the bridge did not stop"
    put = producer.stop()
    arrived += take_all(dst)
    assert result == [len(arrived)]
    assert_conserved(put, arrived, take_all(src))


def test_ctrl_c_in_the_main_thread_lands_the_batch_then_raises(
    make: Callable[..., Queue],
) -> None:
    src = make(SHM, capacity=50)
    dst = make("nats", capacity=100)
    producer = Producer(src, 3000)
    consumed: list[Any] = []

    def interrupt_once_flowing() -> None:
        consumed.extend(receive(dst, 200))
        os.kill(os.getpid(), signal.SIGINT)

    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
    interrupter = threading.Thread(target=interrupt_once_flowing, daemon=True)
    try:
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            bridge(src, dst, batch=20)  # no stop, no idle timeout: only the signal ends it
    finally:
        interrupter.join(TIMEOUT)
        signal.signal(signal.SIGINT, old)
    assert signal.getsignal(signal.SIGINT) is old
    put = producer.stop()
    assert_conserved(put, consumed + take_all(dst), take_all(src))


def test_raw_source_into_pickle_destination(make: Callable[..., Queue]) -> None:
    src = make("nats", raw=True, capacity=10, item_size=1024)
    dst = make(SHM, capacity=10)
    arrays = [np.arange(i, i + 5, dtype="f8") for i in range(3)]
    src.put_batch([*arrays, b"bytes too"])
    assert bridge(src, dst, idle_timeout=0.3) == 4
    got = take_all(dst)
    for want, have in zip(arrays, got[:3], strict=True):
        np.testing.assert_array_equal(have, want)
    assert got[3] == b"bytes too"


@pytest.mark.parametrize("src_raw", [True, False], ids=["raw-src", "pickle-src"])
def test_arrays_pickled_into_a_nats_destination(make: Callable[..., Queue], src_raw: bool) -> None:
    src = make(SHM, raw=src_raw, capacity=10, item_size=1024)
    dst = make("nats", capacity=10)
    src.put(np.arange(5.0))
    assert bridge(src, dst, idle_timeout=0.3) == 1
    np.testing.assert_array_equal(dst.get(timeout=TIMEOUT), np.arange(5.0))


def test_typed_source_into_typed_destination(make: Callable[..., Queue]) -> None:
    src = make("nats", dtype="i4", shape=(2, 3), capacity=10)
    dst = make(SHM, dtype="i4", shape=(2, 3), capacity=10)
    arrays = [np.full((2, 3), i, dtype="i4") for i in range(4)]
    src.put_batch(arrays)
    assert bridge(src, dst, idle_timeout=0.3) == 4
    for want, have in zip(arrays, take_all(dst), strict=True):
        np.testing.assert_array_equal(have, want)


def test_a_typed_destination_refuses_a_wrong_item_naming_both_queues(
    make: Callable[..., Queue],
) -> None:
    src = make(SHM, capacity=10)
    dst = make("nats", dtype="f4", shape=(3,), capacity=10)
    good = [np.zeros(3, "f4"), np.ones(3, "f4")]
    src.put_batch([*good, np.zeros(4, "f4"), np.full(3, 2, "f4")])
    with pytest.raises(ValueError) as info:
        bridge(src, dst, idle_timeout=0.3)
    message = str(info.value)
    assert repr(src.name) in message and repr(dst.name) in message
    assert "put back" in message
    got = take_all(dst)
    assert len(got) == 2 and all(np.array_equal(g, w) for g, w in zip(got, good, strict=True))
    left = take_all(src)  # the refused item and the one behind it, back in the source
    assert [a.shape for a in left] == [(4,), (3,)]


def test_an_item_too_large_for_the_destination_goes_back(make: Callable[..., Queue]) -> None:
    src = make(SHM, capacity=10, item_size=4096)
    dst = make("nats", capacity=10, item_size=200)
    src.put_batch(["small", "x" * 1000, "after"])
    with pytest.raises(ValueError, match="exceeds item_size=200"):
        bridge(src, dst, idle_timeout=0.3)
    assert take_all(dst) == ["small"]
    assert take_all(src) == ["x" * 1000, "after"]


def test_stopping_with_the_destination_down_puts_the_batch_back(
    make: Callable[..., Queue], nats_binary: Any
) -> None:
    src = make(SHM, capacity=20)
    with NatsServer(NATS_CONFIG, binary=nats_binary) as server:
        dst = shared_queue.connect(
            server.url, unique_name(), create=True, capacity=20, io_timeout=1.0,
            connect_timeout=1.0,
        )  # fmt: skip
        try:
            server.kill()
            src.put_batch(range(5))
            stop = threading.Event()
            result: list[int] = []
            thread = threading.Thread(
                target=lambda: result.append(bridge(src, dst, stop=stop)), daemon=True
            )
            thread.start()
            # The batch is taken once the source is empty; the bridge cannot land it.
            wait_until(lambda: src.qsize() == 0, "the batch taken by the bridge")
            stop.set()
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "the bridge did not stop"
            assert result == [0]
            assert take_all(src) == list(range(5))
        finally:
            dst.close()


def test_bad_arguments(make: Callable[..., Queue]) -> None:
    src = make(SHM, capacity=4)
    dst = make("nats", capacity=4)
    with pytest.raises(ValueError, match="into itself"):
        bridge(src, src)
    with pytest.raises(ValueError, match="batch"):
        bridge(src, dst, batch=0)
    with pytest.raises(TypeError, match="batch"):
        bridge(src, dst, batch=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        bridge(src, dst, idle_timeout=float("nan"))
    with pytest.raises(TypeError, match="src must be a shared_queue queue"):
        bridge([], dst)  # type: ignore[arg-type]
    other = shared_queue.connect(SHM, src.name)
    other.close()
    with pytest.raises(ValueError, match="closed"):
        bridge(other, dst)


# -- the command line ----------------------------------------------------------------------


def nats_address(nats_url: str, q: Queue) -> str:
    return f"{nats_url}/{q.name}"


def start_bridge(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared_queue", "bridge", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)
        pytest.fail(f"the bridge process did not end within {TIMEOUT} s")
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_bridge_stopped_by_a_signal_loses_nothing(
    make: Callable[..., Queue], nats_url: str, sig: signal.Signals
) -> None:
    src = make(SHM, capacity=50)
    dst = make("nats", capacity=100)
    proc = start_bridge(f"shm:{src.name}", nats_address(nats_url, dst), "--batch", "20")
    try:
        producer = Producer(src, 3000)
        arrived = receive(dst, 200)  # the bridge runs, and items keep coming
        proc.send_signal(sig)
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    put = producer.stop()
    arrived += take_all(dst)
    assert code == 0, err
    assert "Traceback" not in err
    assert out == (
        f"forwarded {len(arrived)} item(s) from shm:{src.name} to {nats_address(nats_url, dst)}\n"
    )
    assert_conserved(put, arrived, take_all(src))


def test_cli_bridge_forwards_pickles_it_cannot_unpickle(
    make: Callable[..., Queue], nats_url: str
) -> None:
    src = make(SHM, capacity=10)
    dst = make("nats", capacity=10)
    points = [Point(i, -i) for i in range(5)]
    src.put_batch(points)
    r = run_cli(
        "bridge", f"shm:{src.name}", nats_address(nats_url, dst), "--idle-timeout", "0.5",
        "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert take_all(dst) == points


def test_cli_bridge_nats_to_shm_with_run_ids_and_create(
    make: Callable[..., Queue], nats_url: str
) -> None:
    name = unique_name()
    src = make("nats", name, run_id="a", capacity=30, item_size=512)
    src.put_batch(range(25))
    try:
        r = run_cli(
            "bridge", nats_address(nats_url, src), f"shm:{name}", "--src-run-id", "a",
            "--dst-run-id", "b", "--idle-timeout", "0.5", "--create", "--json",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout == (
            f'{{"forwarded": 25, "src": "{nats_address(nats_url, src)}", "dst": "shm:{name}"}}\n'
        )
        with shared_queue.connect(SHM, name, run_id="b") as dst:
            assert (dst.capacity, dst.item_size) == (30, 512)
            assert take_all(dst) == list(range(25))
    finally:
        remove_queue(name, "b")


def test_cli_bridge_to_a_missing_queue(make: Callable[..., Queue], nats_url: str) -> None:
    src = make(SHM, capacity=4)
    missing = unique_name()
    r = run_cli("bridge", f"shm:{src.name}", f"{nats_url}/{missing}", "--idle-timeout", "1")
    assert r.returncode == 1
    assert r.stderr == (
        f"shared-queue: no queue '{missing}' at {nats_url} (bridge --create creates DST like SRC)\n"
    )


def test_cli_bridge_to_an_unreachable_server(make: Callable[..., Queue]) -> None:
    src = make(SHM, capacity=4)
    (port,) = free_ports(1)
    url = f"nats://127.0.0.1:{port}"
    r = run_cli("bridge", f"shm:{src.name}", f"{url}/q?connect_timeout=0.5")
    assert r.returncode == cli.EXIT_UNREACHABLE
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert url in r.stderr


@pytest.mark.parametrize(
    "text, url, name",
    [
        ("shm:jobs", "shm://", "jobs"),
        ("nats://h:4222/jobs", "nats://h:4222", "jobs"),
        ("nats://a:1,b:2/jobs?io_timeout=3", "nats://a:1,b:2?io_timeout=3", "jobs"),
        ("tls://u:p@h:4222/a%20b", "tls://u:p@h:4222", "a b"),
    ],
)
def test_cli_queue_addresses(text: str, url: str, name: str) -> None:
    address = cli._address_arg(text)
    assert (address.url, address.name) == (url, name)
    assert "p@" not in address.shown  # credentials are never shown


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "shm:x"],  # no scheme
        ["shm:", "shm:x"],  # no name
        ["shm://jobs", "shm:x"],
        ["shm:a", "nats://h:4222"],  # no name
        ["shm:a", "nats://h:4222/"],
        ["shm:a", "shm:b", "--batch", "0"],
        ["shm:a", "shm:b", "--idle-timeout", "-1"],
        ["shm:a"],
    ],
)
def test_cli_bridge_bad_usage_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["bridge", *args])
    assert info.value.code == 2
    assert "usage: shared-queue bridge" in capsys.readouterr().err
