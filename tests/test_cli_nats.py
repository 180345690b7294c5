"""The command line against a NATS server: ``ls``, ``stat`` and ``rm`` with ``--url nats://``.

The server is the session's (``nats_url``), which other tests use too: every test lists only
its own run_id, and removes the queues it made. An unreachable server is a free port nobody
listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import nats
import pytest
from _natsserver import free_ports
from _support import run_cli, unique_name

import shared_queue
from shared_queue import _cli as cli
from shared_queue import _metrics
from shared_queue._nats import NatsQueue, stream_name

# The keys of the CLI's NATS record besides get_metrics()'s (docs/cli.md#the-record).
NATS_KEYS = {"name", "run_id", "url", "stream", "mode", "replicas", "bytes_used"}


@pytest.fixture
def run_id() -> str:
    """A run_id no other test uses: ``ls --run-id`` then sees this test's queues only."""
    return f"c{unique_name()}"


@pytest.fixture
def make(nats_url: str) -> Iterator[Callable[..., NatsQueue]]:
    """``make(name, **kwargs)``: create a queue on the session server; unlinked afterwards."""
    made: list[NatsQueue] = []

    def create(name: str, **kwargs: Any) -> NatsQueue:
        q = shared_queue.connect(nats_url, name, create=True, **kwargs)
        assert isinstance(q, NatsQueue)
        made.append(q)
        return q

    yield create
    for q in made:
        with contextlib.suppress(FileNotFoundError):
            q.unlink()
        q.close()


def table(out: str) -> list[dict[str, str]]:
    """Parse ``ls`` output: columns are separated by two or more spaces."""
    header, *rows = (re.split(r"\s{2,}", line) for line in out.splitlines())
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.fixture
def unreachable() -> str:
    """The URL of a port nothing listens on, with a short connect timeout."""
    (port,) = free_ports(1)
    return f"nats://127.0.0.1:{port}?connect_timeout=0.5"


# -- ls -------------------------------------------------------------------------------------


def test_ls_lists_the_queues_of_a_run_id(
    make: Callable[..., NatsQueue], nats_url: str, run_id: str
) -> None:
    jobs = make("jobs", run_id=run_id, capacity=10, item_size=256)
    jobs.put_batch(range(4))
    make("arrays", run_id=run_id, dtype="f4", shape=(3,), capacity=5)
    make("bytes", run_id=run_id, raw=True, capacity=7)
    r = run_cli("ls", "--url", nats_url, "--run-id", run_id)
    assert r.returncode == 0, r.stderr
    rows = {row["NAME"]: row for row in table(r.stdout)}
    assert set(rows) == {"jobs", "arrays", "bytes"}
    assert rows["jobs"] == {
        "NAME": "jobs", "RUN_ID": run_id, "MODE": "pickle", "CAPACITY": "10",
        "ITEM_SIZE": "256", "ITEMS": "4", "USED%": "40.0", "REPLICAS": "1",
        "BYTES": rows["jobs"]["BYTES"],
    }  # fmt: skip
    assert (rows["arrays"]["MODE"], rows["bytes"]["MODE"]) == ("typed", "raw")
    assert rows["bytes"]["ITEMS"] == "0"


def test_ls_json_records_are_get_metrics_plus_the_cli_keys(
    make: Callable[..., NatsQueue], nats_url: str, run_id: str
) -> None:
    q = make("jobs", run_id=run_id, capacity=10)
    q.put_batch(["a", "b", "c"])
    assert q.get(timeout=5) == "a"
    r = run_cli("ls", "--url", nats_url, "--run-id", run_id, "--json")
    assert r.returncode == 0, r.stderr
    (record,) = json.loads(r.stdout)
    assert set(record) == set(_metrics.KEYS) | NATS_KEYS
    assert {k: record[k] for k in _metrics.KEYS} == q.get_metrics()
    assert record["queue_size"] == 2 and record["total_puts"] == 3 and record["total_gets"] == 1
    assert (record["name"], record["run_id"], record["url"]) == ("jobs", run_id, nats_url)
    assert record["stream"] == stream_name("jobs", run_id)
    assert record["bytes_used"] > 0


def test_ls_without_queues_of_the_run_id(nats_url: str, run_id: str) -> None:
    r = run_cli("ls", "--url", nats_url, "--run-id", run_id)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"no queues at {nats_url} with run_id '{run_id}'\n"
    r = run_cli("ls", "--url", nats_url, "--run-id", run_id, "--json")
    assert (r.returncode, r.stdout) == (0, "[]\n")


def test_ls_and_rm_leave_a_stream_that_is_not_a_queue(nats_url: str, run_id: str) -> None:
    name = unique_name()
    stream = stream_name(name, run_id)  # named like a queue's stream, without the metadata

    async def admin(create: bool) -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            if create:
                await js.add_stream(name=stream, subjects=[f"foreign.{stream}"])
            else:
                await js.delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(admin(True))
    try:
        r = run_cli("ls", "--url", nats_url, "--run-id", run_id, "--json")
        assert (r.returncode, r.stdout) == (0, "[]\n")
        r = run_cli("rm", name, "--url", nats_url, "--run-id", run_id)
        assert r.returncode == 1
        assert r.stderr.startswith("shared-queue: ") and r.stderr.count("\n") == 1
        assert "not a queue" in r.stderr
    finally:
        asyncio.run(admin(False))  # it was still there to delete


# -- stat -----------------------------------------------------------------------------------


def test_stat_prints_the_record(make: Callable[..., NatsQueue], nats_url: str) -> None:
    name = unique_name()
    q = make(name, capacity=8, raw=True)
    q.put(b"x" * 100)
    r = run_cli("stat", name, "--url", nats_url, "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert {k: record[k] for k in _metrics.KEYS} == q.get_metrics()
    assert (record["mode"], record["queue_size"], record["queue_capacity"]) == ("raw", 1, 8)
    r = run_cli("stat", name, "--url", nats_url)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.strip("\n").split("\n"))
    assert {k.strip() for k in lines} == set(record)
    assert lines["queue_size".rjust(len(max(record, key=len)))] == "1"


def test_stat_watch_counts_lines(make: Callable[..., NatsQueue], nats_url: str) -> None:
    name = unique_name()
    make(name, capacity=4)
    r = run_cli("stat", name, "--url", nats_url, "--watch", "--json", "--interval", "0.05",
                "--count", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 and all(row["puts_per_s"] == 0 for row in rows)


def test_stat_of_a_missing_queue_names_the_run_id_that_has_it(
    make: Callable[..., NatsQueue], nats_url: str, run_id: str
) -> None:
    name = unique_name()
    make(name, run_id=run_id)
    r = run_cli("stat", name, "--url", nats_url)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"shared-queue: no queue '{name}' at {nats_url}; a queue '{name}' exists with run_id "
        f"'{run_id}' (use --run-id {run_id})\n"
    )


# -- rm -------------------------------------------------------------------------------------


def test_rm_deletes_the_stream(make: Callable[..., NatsQueue], nats_url: str, run_id: str) -> None:
    name = unique_name()
    q = make(name, run_id=run_id)
    q.put("gone with it")
    r = run_cli("rm", name, "--url", nats_url, "--run-id", run_id)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"removed stream {stream_name(name, run_id)} at {nats_url}\n"
    with pytest.raises(FileNotFoundError):
        shared_queue.connect(nats_url, name, run_id=run_id)
    r = run_cli("rm", name, "--url", nats_url, "--run-id", run_id, "--json")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"shared-queue: no queue '{name}' (run_id '{run_id}') at {nats_url}\n"


def test_rm_json(make: Callable[..., NatsQueue], nats_url: str) -> None:
    name = unique_name()
    make(name)
    r = run_cli("rm", name, "--url", nats_url, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"removed": [stream_name(name, "")]}


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["ls"], ["ls", "--json"], ["stat", "q"], ["stat", "q", "--watch"], ["rm", "q"]]
)
def test_an_unreachable_server_is_one_line_and_exit_status_3(
    args: list[str], unreachable: str
) -> None:
    r = run_cli(*args, "--url", unreachable)
    assert r.returncode == cli.EXIT_UNREACHABLE == 3
    assert r.stdout == ""
    assert re.fullmatch(
        r"shared-queue: no NATS server of nats://127\.0\.0\.1:\d+ answered "
        r"\(connect_timeout=0\.5 s per server; \w+\)\n",
        r.stderr,
    ), r.stderr


def test_credentials_stay_out_of_messages(unreachable: str) -> None:
    url = unreachable.replace("nats://", "nats://me:s3cret@")
    r = run_cli("ls", "--url", url)
    assert r.returncode == 3
    assert "s3cret" not in r.stderr and "me:" not in r.stderr


@pytest.mark.parametrize(
    "url, message",
    [
        ("nats://127.0.0.1:99999", "bad server '127.0.0.1:99999'"),
        ("nats://127.0.0.1:4222?bogus=1", "unknown option 'bogus'"),
    ],
)
def test_a_malformed_url_is_exit_status_1(url: str, message: str) -> None:
    r = run_cli("ls", "--url", url)
    assert r.returncode == 1
    assert r.stderr.startswith("shared-queue: ") and message in r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("url", ["http://h:1", "nats://", "shm://x", "jobs"])
def test_a_url_of_no_backend_is_bad_usage(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["ls", "--url", url])
    assert info.value.code == 2
    assert "is not a queue URL" in capsys.readouterr().err


def test_shm_url_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    # --url shm:// is what ls, stat and rm do without --url: the /dev/shm queues.
    code = cli.main(["ls", "--url", "shm://", "--run-id", f"none{os.getpid()}"])
    assert (code, capsys.readouterr().out) == (0, f"no queues with run_id 'none{os.getpid()}'\n")
