"""The command line, ``python -m shared_queue``: ls, stat, rm, gc, bench, demo, and exit codes.

Most commands run as a subprocess, as a user runs them; some run in-process through
``_cli.main`` where monkeypatching or capsys is handier.

``gc`` collects *every* dead queue in /dev/shm, including those of other test runs that may be
going on at the same time. So a real ``gc`` only ever runs in-process, with
``_registry.garbage`` narrowed to this session's entries (``gc_ours``); subprocesses run
``gc --dry-run`` only. ``gc_ours`` also drops the 10 s grace for young leftovers
(``garbage(min_age=0)``) rather than sleeping through it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import posix_ipc
import pytest
from _support import ROOT, TIMEOUT, remove_queue, run_cli, session_mark

from shared_queue import SharedMemoryQueue, _metrics
from shared_queue import _cli as cli
from shared_queue import _layout as L
from shared_queue import _registry as R
from shared_queue._names import SHM_DIR, base_name

MARK = session_mark()  # in every name this session makes
DEAD = "queue whose creator is dead and that no process has open"
RUN_ID = f"r{os.getpid()}"
OTHER_RUN_ID = f"r{os.getpid()}x"  # starts like RUN_ID: a namespace must not match a prefix
# The keys of the CLI's record besides get_metrics()'s (docs/cli.md#the-record).
CLI_KEYS = {
    "name", "run_id", "base", "mode", "creator_pid", "creator_alive", "users", "segment_bytes",
    "bytes_used",
}  # fmt: skip
RATES = {"puts_per_s", "gets_per_s"}  # stat --watch --json adds these

# A creator that is killed later: it makes a queue, leaves an item in it and waits.
_CREATOR = """
import sys, time
from shared_queue import SharedMemoryQueue
q = SharedMemoryQueue(sys.argv[1], create=True, capacity=4, item_size=64, run_id=sys.argv[2])
q.put("left behind")
print("ready", flush=True)
time.sleep(60)
"""


# -- helpers -----------------------------------------------------------------------------------
def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def entries(base: str) -> set[str]:
    """The /dev/shm entries of queue ``base``: its segment, temp files and semaphores."""
    return {
        e
        for e in os.listdir(SHM_DIR)
        if e == base or e.startswith((base + ".creating-", f"sem.{base}."))
    }


def sems(base: str) -> set[str]:
    return {e for e in entries(base) if e.startswith("sem.")}


def table(out: str) -> list[dict[str, str]]:
    """Parse ``ls`` output: columns are separated by two or more spaces."""
    header, *rows = (re.split(r"\s{2,}", line) for line in out.splitlines())
    return [dict(zip(header, row, strict=True)) for row in rows]


def ours(found: list[tuple[str, str]]) -> dict[str, str]:
    """The part of a garbage() answer that this session made."""
    return {entry: reason for entry, reason in found if MARK in entry}


def start_creator(name: str, run_id: str = "") -> subprocess.Popen[str]:
    """Start a process that creates the queue and keeps it; return once it did."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CREATOR, name, run_id], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the child prints or exits
    if line != "ready\n":
        proc.kill()
        reap(proc)
        pytest.fail(f"creator of {name!r} did not start: {line!r}")
    return proc


def reap(proc: subprocess.Popen[str]) -> None:
    proc.wait(TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process and reap it."""
    proc.kill()
    reap(proc)


@pytest.fixture
def new_queue(qname: str) -> Iterator[Callable[..., SharedMemoryQueue]]:
    """Factory for queues named ``qname + suffix``; closed and removed afterwards."""
    made: list[SharedMemoryQueue] = []

    def new(suffix: str = "", run_id: str = "", **kwargs: Any) -> SharedMemoryQueue:
        q = SharedMemoryQueue(qname + suffix, create=True, run_id=run_id, **kwargs)
        made.append(q)
        return q

    yield new
    for q in made:
        q.close()
        remove_queue(q.name, q.run_id)


@pytest.fixture
def dead_queue(qname: str) -> Iterator[str]:
    """A queue ``qname`` (run_id RUN_ID) whose creator was SIGKILLed; return its base name.

    The test process never opens it.
    """
    kill(start_creator(qname, RUN_ID))
    yield base_name(qname, RUN_ID)
    remove_queue(qname, RUN_ID)


@pytest.fixture
def gc_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI's gc see only this session's entries, and no grace for young leftovers."""
    real = R.garbage

    def garbage(min_age: float = 10.0) -> list[tuple[str, str]]:
        return [(e, r) for e, r in real(min_age=0) if MARK in e]

    monkeypatch.setattr(R, "garbage", garbage)


# -- the record (shared_queue._metrics) --------------------------------------------------------
HEADER = {
    "capacity": 8, "item_size": 128, "spare_slots": 2, "head": 10, "tail": 13, "puts": 13,
    "gets": 10, "bytes_in": 1300, "bytes_out": 1000, "high_water": 5, "put_waits": 1,
    "put_wait_ns": 1_500_000_000, "get_waits": 2, "get_wait_ns": 250_000_000,
}  # fmt: skip


def test_record_from_header_fields() -> None:
    record = _metrics.record(HEADER)
    assert list(record) == list(_metrics.KEYS)
    assert record == {
        "queue_size": 3,
        "queue_capacity": 8,
        "queue_utilization_percent": 37.5,
        "queue_item_size_bytes": 128,
        "spare_slots": 2,
        "total_puts": 13,
        "total_gets": 10,
        "bytes_in": 1300,
        "bytes_out": 1000,
        "high_water_mark": 5,
        "put_waits": 1,
        "put_wait_seconds": 1.5,
        "get_waits": 2,
        "get_wait_seconds": 0.25,
    }


@pytest.mark.parametrize(
    ("head", "tail", "size"),
    [(5, 5, 0), (5, 9, 4), (0, 8, 8), (0, 100, 8), (9, 5, 0)],
    ids=["empty", "some", "full", "clamped to capacity", "clamped to 0"],
)
def test_queue_size_is_tail_minus_head_within_0_and_capacity(
    head: int, tail: int, size: int
) -> None:
    h = {**HEADER, "head": head, "tail": tail}
    assert _metrics.queue_size(h) == size == _metrics.record(h)["queue_size"]


def test_header_view_reads_the_live_header_by_name() -> None:
    hdr = memoryview(bytearray(L.HEADER_SIZE)).cast("Q")
    try:
        for i, index in enumerate(L.IDX.values()):
            hdr[index] = 1000 + i
        view = _metrics.HeaderView(hdr)
        assert len(view) == len(L.IDX)
        assert dict(view) == {name: 1000 + i for i, name in enumerate(L.IDX)}
        hdr[L.IDX["tail"]] = 7
        assert view["tail"] == 7  # read at lookup, not copied
        with pytest.raises(KeyError):
            view["name"]  # not an 8-byte field
    finally:
        hdr.release()


# -- ls ----------------------------------------------------------------------------------------
@pytest.fixture
def three_modes(new_queue: Callable[..., SharedMemoryQueue]) -> list[SharedMemoryQueue]:
    """A pickle queue 3/10 full, a raw queue 1/4 full (3 spare slots) and a full typed queue
    (1 spare slot)."""
    pickled = new_queue("-pickle", run_id=RUN_ID, capacity=10, item_size=256, spare_slots=0)
    for i in range(3):
        pickled.put(i)
    raw = new_queue("-raw", raw=True, capacity=4, item_size=1024, spare_slots=3)
    raw.put(b"abc")
    typed = new_queue("-typed", capacity=5, dtype=np.float32, shape=(2, 3), spare_slots=1)
    for _ in range(5):
        typed.put(np.zeros((2, 3), np.float32))
    return [pickled, raw, typed]


def test_ls_table(three_modes: list[SharedMemoryQueue]) -> None:
    r = run_cli("ls")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == [
        "NAME", "RUN_ID", "MODE", "CAPACITY", "SPARE", "ITEM_SIZE", "ITEMS", "USED%", "CREATOR",
        "BYTES",
    ]  # fmt: skip
    rows = {row["NAME"]: row for row in table(r.stdout)}
    pickled, raw, typed = three_modes
    expected = [
        (pickled, RUN_ID, "pickle", "0", "256", "3", "30.0"),
        (raw, "-", "raw", "3", "1024", "1", "25.0"),
        (typed, "-", "typed", "1", str(typed.item_size), "5", "100.0"),
    ]
    for q, run_id, mode, spare, item_size, items, used in expected:
        row = rows[q.name]
        assert row["RUN_ID"] == run_id
        assert row["MODE"] == mode
        assert row["CAPACITY"] == str(q.capacity)
        assert row["SPARE"] == spare
        assert row["ITEM_SIZE"] == item_size
        assert row["ITEMS"] == items
        assert row["USED%"] == used
        assert row["CREATOR"] == f"{os.getpid()} alive"
        assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB|GiB)", row["BYTES"])


def test_ls_json(three_modes: list[SharedMemoryQueue], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, "ls", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    spares = [0, 3, 1]
    for q, mode, size, spare in zip(three_modes, ["pickle", "raw", "typed"], [3, 1, 5], spares,
                                    strict=True):  # fmt: skip
        row = rows[q.name]
        base = base_name(q.name, q.run_id)
        assert set(row) == set(_metrics.KEYS) | CLI_KEYS
        assert row["base"] == base
        assert row["run_id"] == q.run_id
        assert row["mode"] == mode
        assert row["queue_capacity"] == q.capacity
        assert row["queue_item_size_bytes"] == q.item_size
        assert row["spare_slots"] == spare
        assert row["queue_size"] == size == q.qsize()
        assert row["queue_utilization_percent"] == 100 * size / q.capacity
        assert row["total_puts"] == size
        assert row["segment_bytes"] == os.stat(os.path.join(SHM_DIR, base)).st_size
        assert row["creator_pid"] == os.getpid()
        assert row["creator_alive"] is True
        assert row["users"] == [os.getpid()]


def test_ls_selects_a_run_id(
    new_queue: Callable[..., SharedMemoryQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    mine = new_queue("-mine", run_id=RUN_ID)
    other = new_queue("-other", run_id=OTHER_RUN_ID)
    plain = new_queue("-plain")

    def listed(*args: str) -> set[str]:
        code, out, err = call(capsys, "ls", "--json", *args)
        assert (code, err) == (0, "")
        return {row["name"] for row in json.loads(out) if MARK in row["name"]}

    assert listed() == {mine.name, other.name, plain.name}
    assert listed("--run-id", RUN_ID) == {mine.name}
    assert listed("--run-id", OTHER_RUN_ID) == {other.name}
    assert listed("--run-id", "") == {plain.name}

    r = run_cli("ls", "--run-id", RUN_ID)
    assert r.returncode == 0, r.stderr
    assert [row["NAME"] for row in table(r.stdout)] == [mine.name]
    nobody = f"none{os.getpid()}"
    assert call(capsys, "ls", "--run-id", nobody) == (0, f"no queues with run_id '{nobody}'\n", "")
    assert call(capsys, "ls", "--json", "--run-id", nobody) == (0, "[]\n", "")


def test_ls_without_queues(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(R, "find_queues", list)
    assert call(capsys, "ls") == (0, "no queues\n", "")
    assert call(capsys, "ls", "--json") == (0, "[]\n", "")


def test_ls_survives_a_queue_unlinked_meanwhile(
    new_queue: Callable[..., SharedMemoryQueue],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    q = new_queue()
    real = R.read_header

    def read_then_unlink(path: str) -> dict[str, Any] | None:
        header = real(path)
        if path == os.path.join(SHM_DIR, base_name(q.name, "")):
            q.unlink()  # another process removes the queue right now
        return header

    monkeypatch.setattr(R, "read_header", read_then_unlink)
    code, out, err = call(capsys, "ls")
    assert (code, err) == (0, "")
    assert q.name not in out


# -- stat --------------------------------------------------------------------------------------
def test_stat_text_and_json(
    new_queue: Callable[..., SharedMemoryQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    q = new_queue(run_id=RUN_ID, capacity=8, item_size=128, spare_slots=2)
    for i in range(5):
        q.put(f"item {i}")
    q.get()
    q.get()
    metrics = q.get_metrics()
    assert metrics["bytes_in"] > metrics["bytes_out"] > 0

    r = run_cli("stat", q.name, "--run-id", RUN_ID)
    assert r.returncode == 0, r.stderr
    text = dict(line.strip().split(": ", 1) for line in r.stdout.splitlines())
    assert set(text) == set(_metrics.KEYS) | CLI_KEYS
    assert text["name"] == q.name
    assert text["run_id"] == RUN_ID
    assert text["mode"] == "pickle"
    assert (text["queue_capacity"], text["queue_item_size_bytes"]) == ("8", "128")
    assert text["spare_slots"] == "2"
    assert text["queue_size"] == "3"
    assert text["queue_utilization_percent"] == "37.5"
    assert (text["total_puts"], text["total_gets"], text["high_water_mark"]) == ("5", "2", "5")
    assert text["creator_pid"] == str(os.getpid())
    assert text["creator_alive"] == "True"

    code, out, _ = call(capsys, "stat", q.name, "--run-id", RUN_ID, "--json")
    assert code == 0
    row = json.loads(out)
    assert row["users"] == [os.getpid()]
    assert {k: row[k] for k in metrics} == metrics  # same names, same values
    assert metrics["queue_size"] == 3 and metrics["spare_slots"] == 2


def test_stat_of_a_missing_queue(qname: str) -> None:
    r = run_cli("stat", qname, "--run-id", "nope")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == f"shared-queue: no queue '{qname}' (run_id 'nope')\n"


def test_the_record_has_get_metrics_keys_everywhere(
    new_queue: Callable[..., SharedMemoryQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    """get_metrics(), stat --json, ls --json and stat --watch --json: one record."""
    q = new_queue(run_id=RUN_ID, capacity=4)
    q.put_batch(["a", "b", "c"])
    q.get()
    metrics = q.get_metrics()
    assert set(metrics) == set(_metrics.KEYS)

    code, out, _ = call(capsys, "stat", q.name, "--run-id", RUN_ID, "--json")
    assert code == 0
    stat = json.loads(out)
    code, out, _ = call(capsys, "ls", "--json", "--run-id", RUN_ID)
    assert code == 0
    (listed,) = [row for row in json.loads(out) if row["name"] == q.name]
    code, out, _ = call(
        capsys, "stat", q.name, "--run-id", RUN_ID, "--watch", "--json",
        "--count", "1", "--interval", "0.01",
    )  # fmt: skip
    assert code == 0
    watched = json.loads(out)

    assert set(stat) == set(metrics) | CLI_KEYS
    assert set(listed) == set(stat)
    assert set(watched) == set(stat) | RATES
    for row in (stat, listed, watched):  # the queue is idle: the same values too
        assert {k: row[k] for k in metrics} == metrics


def test_cli_size_is_qsize_with_views_open(
    new_queue: Callable[..., SharedMemoryQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    """An open put_view is not an item yet and a held get_view no longer one, for both."""
    q = new_queue(raw=True, capacity=4, item_size=256, spare_slots=2)
    q.put_batch([b"1", b"2", b"3"])

    def cli_size() -> int:
        code, out, _ = call(capsys, "stat", q.name, "--json")
        assert code == 0
        size: int = json.loads(out)["queue_size"]
        return size

    with q.put_view(8, np.uint8) as arr:
        arr[:] = 0
        assert cli_size() == q.qsize() == 3
    assert cli_size() == q.qsize() == 4
    with q.get_view() as held:
        assert cli_size() == q.qsize() == 3
    assert held.nbytes == 1  # still held after the block
    assert cli_size() == q.qsize() == 3


def test_stat_names_the_run_id_that_has_the_queue(
    new_queue: Callable[..., SharedMemoryQueue], qname: str
) -> None:
    new_queue(run_id=RUN_ID)
    r = run_cli("stat", qname)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"shared-queue: no queue '{qname}'; a queue '{qname}' exists with run_id '{RUN_ID}'"
        f" (use --run-id {RUN_ID})\n"
    )
    r = run_cli("stat", qname, "--run-id", RUN_ID)
    assert r.returncode == 0, r.stderr


def test_stat_names_every_run_id_that_has_the_queue(
    new_queue: Callable[..., SharedMemoryQueue], qname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    new_queue()
    assert call(capsys, "stat", qname, "--run-id", RUN_ID) == (1, "", (
        f"shared-queue: no queue '{qname}' (run_id '{RUN_ID}'); a queue '{qname}' exists"
        " without a run_id (leave out --run-id)\n"
    ))  # fmt: skip
    new_queue(run_id=OTHER_RUN_ID)
    new_queue(run_id=RUN_ID)
    assert call(capsys, "stat", qname, "--run-id", "nope") == (1, "", (
        f"shared-queue: no queue '{qname}' (run_id 'nope'); queues '{qname}' exist with run_ids"
        f" '', '{RUN_ID}', '{OTHER_RUN_ID}' (use --run-id ID)\n"
    ))  # fmt: skip


_WATCH_LINE = re.compile(
    r"(?P<name>\S+) \[#* *\] (?P<size>\d+)/(?P<cap>\d+) +[\d.]+%  "
    r"puts/s +(?P<puts>\d+)  gets/s +(?P<gets>\d+)"
)


def test_stat_watch_shows_activity(new_queue: Callable[..., SharedMemoryQueue]) -> None:
    q = new_queue(capacity=16)
    stop = threading.Event()
    errors: list[BaseException] = []

    def producer() -> None:  # a put and a get per round, all through the watch
        try:
            while not stop.is_set():
                q.put("tick", timeout=TIMEOUT)
                q.get(timeout=TIMEOUT)
        except BaseException as exc:  # reported by the test, not swallowed
            errors.append(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        r = run_cli("stat", q.name, "--watch", "--count", "2", "--interval", "0.1")
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive() and not errors, errors
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    for line in lines:
        m = _WATCH_LINE.fullmatch(line)
        assert m, line
        assert m["name"] == q.name and m["cap"] == "16"
        assert int(m["puts"]) > 0 and int(m["gets"]) > 0


def test_stat_watch_json_of_an_idle_queue(
    new_queue: Callable[..., SharedMemoryQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    q = new_queue(run_id=RUN_ID, capacity=4)
    q.put_batch([1, 2])
    code, out, _ = call(
        capsys, "stat", q.name, "--run-id", RUN_ID, "--watch", "--json",
        "--count", "2", "--interval", "0.05",
    )  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert set(row) == set(_metrics.KEYS) | CLI_KEYS | RATES
        assert (row["queue_size"], row["total_puts"], row["total_gets"]) == (2, 2, 0)
        assert (row["puts_per_s"], row["gets_per_s"]) == (0.0, 0.0)


# -- rm ----------------------------------------------------------------------------------------
def test_rm_removes_segment_and_semaphores(
    new_queue: Callable[..., SharedMemoryQueue], qname: str
) -> None:
    q = new_queue(run_id=RUN_ID)
    q.close()
    base = base_name(qname, RUN_ID)
    made = entries(base)
    assert len(made) == 4 and len(sems(base)) == 3

    r = run_cli("rm", qname, "--run-id", RUN_ID)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"removed /dev/shm/{e}" for e in made)
    assert entries(base) == set()
    with pytest.raises(FileNotFoundError):
        SharedMemoryQueue(qname, run_id=RUN_ID)


def test_rm_json_also_removes_leftovers_of_the_name(
    new_queue: Callable[..., SharedMemoryQueue], qname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    new_queue()
    base = base_name(qname, "")
    # What a creation killed midway leaves: semaphores of another nonce and a temp file.
    stale = posix_ipc.Semaphore(f"/{base}.{1:016x}.free", posix_ipc.O_CREX)
    stale.close()
    temp = os.path.join(SHM_DIR, f"{base}.creating-{2:016x}")
    Path(temp).write_bytes(b"")
    made = entries(base)
    assert len(made) == 6

    code, out, _ = call(capsys, "rm", qname, "--json")
    assert code == 0
    assert json.loads(out) == {"removed": sorted(made)}
    assert entries(base) == set()


def test_rm_of_a_missing_queue_fails_cleanly(qname: str) -> None:
    r = run_cli("rm", qname)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == f"shared-queue: no queue '{qname}'\n"


def test_rm_names_the_run_id_that_has_the_queue(
    new_queue: Callable[..., SharedMemoryQueue], qname: str
) -> None:
    q = new_queue(run_id=RUN_ID)
    made = entries(base_name(qname, RUN_ID))
    r = run_cli("rm", qname)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"shared-queue: no queue '{qname}'; a queue '{qname}' exists with run_id '{RUN_ID}'"
        f" (use --run-id {RUN_ID})\n"
    )
    assert entries(base_name(qname, RUN_ID)) == made  # nothing removed
    q.put("still there")
    assert q.get(timeout=TIMEOUT) == "still there"


def test_rm_leaves_a_foreign_file_of_a_queue_name(
    qname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(SHM_DIR, base_name(qname, ""))
    path.write_bytes(os.urandom(8192))
    try:
        code, _, err = call(capsys, "rm", qname)
        assert path.exists(), "rm removed a file that is not a queue"
        assert code == 1 and err.startswith("shared-queue: ")
    finally:
        path.unlink(missing_ok=True)


# -- gc ----------------------------------------------------------------------------------------
def test_gc_dry_run_lists_a_dead_queue_and_removes_nothing(dead_queue: str, qname: str) -> None:
    made = entries(dead_queue)
    assert len(made) == 4

    r = run_cli("ls")
    rows = {row["NAME"]: row for row in table(r.stdout)}
    assert rows[qname]["RUN_ID"] == RUN_ID
    assert rows[qname]["CREATOR"].endswith(" dead")

    r = run_cli("gc", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"would remove /dev/shm/{dead_queue}: {DEAD}" in r.stdout.splitlines()
    assert [line for line in r.stdout.splitlines() if MARK in line] == [
        f"would remove /dev/shm/{dead_queue}: {DEAD}"
    ]
    assert entries(dead_queue) == made

    r = run_cli("gc", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["dry_run"] is True
    assert {"entry": dead_queue, "reason": DEAD} in report["entries"]
    assert entries(dead_queue) == made


@pytest.mark.usefixtures("gc_ours")
def test_gc_removes_a_dead_queue_and_its_semaphores(
    dead_queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(entries(dead_queue)) == 4
    code, out, _ = call(capsys, "gc")
    assert code == 0
    assert out == f"removed /dev/shm/{dead_queue}: {DEAD}\n"
    assert entries(dead_queue) == set()

    code, out, _ = call(capsys, "gc", "--json")
    assert (code, json.loads(out)) == (0, {"dry_run": False, "entries": []})


@pytest.mark.usefixtures("gc_ours")
def test_gc_spares_a_queue_whose_creator_lives(
    new_queue: Callable[..., SharedMemoryQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    q = new_queue(run_id=RUN_ID)
    q.close()  # nobody has it open: only the creator's life keeps it
    base = base_name(q.name, RUN_ID)
    made = entries(base)
    assert ours(R.garbage()) == {}
    assert call(capsys, "gc") == (0, "nothing to collect\n", "")
    assert entries(base) == made


@pytest.mark.usefixtures("gc_ours")
def test_gc_spares_a_dead_creators_queue_that_a_live_process_has_open(
    qname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    creator = start_creator(qname, RUN_ID)
    try:
        handle = SharedMemoryQueue(qname, run_id=RUN_ID)
    finally:
        kill(creator)
    base = base_name(qname, RUN_ID)
    try:
        made = entries(base)
        info = R.inspect(base)
        assert info is not None and not info.creator_alive
        assert R.users(base) == [os.getpid()]
        assert call(capsys, "gc") == (0, "nothing to collect\n", "")
        assert entries(base) == made
        assert handle.get(timeout=TIMEOUT) == "left behind"
        handle.close()
        # Once nobody has it open, it is garbage.
        code, out, _ = call(capsys, "gc")
        assert (code, out) == (0, f"removed /dev/shm/{base}: {DEAD}\n")
        assert entries(base) == set()
    finally:
        handle.close()
        remove_queue(qname, RUN_ID)


@pytest.mark.usefixtures("gc_ours")
def test_gc_removes_leftovers_and_spares_what_is_in_use(
    new_queue: Callable[..., SharedMemoryQueue], qname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    live = new_queue()
    live_base = base_name(live.name, "")
    live_sems = sems(live_base)
    gone_base = base_name(qname + "-gone", "")  # semaphores of a queue that no longer exists
    for kind in ("free", "fill", "room"):
        posix_ipc.Semaphore(f"/{gone_base}.{7:016x}.{kind}", posix_ipc.O_CREX).close()
    # A semaphore of an earlier creation of the live queue's name, with another nonce.
    posix_ipc.Semaphore(f"/{live_base}.{8:016x}.fill", posix_ipc.O_CREX).close()
    temp = f"{base_name(qname + '-tmp', '')}.creating-{9:016x}"
    Path(SHM_DIR, temp).write_bytes(b"half made")
    held = f"{base_name(qname + '-held', '')}.creating-{10:016x}"
    fd = os.open(os.path.join(SHM_DIR, held), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        orphans = {f"sem.{gone_base}.{7:016x}.{k}" for k in ("free", "fill", "room")}
        orphans.add(f"sem.{live_base}.{8:016x}.fill")
        expected = dict.fromkeys(orphans, "semaphore of no existing queue")
        expected[temp] = "temporary file of a creation that did not finish"

        code, out, _ = call(capsys, "gc", "--dry-run")
        assert code == 0
        assert sorted(out.splitlines()) == sorted(
            f"would remove /dev/shm/{e}: {r}" for e, r in expected.items()
        )
        code, out, _ = call(capsys, "gc")
        assert code == 0
        assert sorted(out.splitlines()) == sorted(
            f"removed /dev/shm/{e}: {r}" for e, r in expected.items()
        )
        assert entries(gone_base) == set()
        assert sems(live_base) == live_sems
        assert not Path(SHM_DIR, temp).exists()
        assert Path(SHM_DIR, held).exists()
        live.put("still works")
        assert live.get(timeout=TIMEOUT) == "still works"
    finally:
        os.close(fd)
        for entry in [held, temp, *orphans]:
            Path(SHM_DIR, entry).unlink(missing_ok=True)


@pytest.mark.usefixtures("gc_ours")
def test_gc_run_id_collects_only_that_namespace(
    qname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kill(start_creator(qname, RUN_ID))
    kill(start_creator(qname, OTHER_RUN_ID))
    kill(start_creator(qname, ""))
    mine, other, plain = (base_name(qname, r) for r in (RUN_ID, OTHER_RUN_ID, ""))
    # A semaphore of no queue, in RUN_ID's namespace.
    orphan_base = base_name(qname + "-gone", RUN_ID)
    posix_ipc.Semaphore(f"/{orphan_base}.{7:016x}.free", posix_ipc.O_CREX).close()
    orphan = f"sem.{orphan_base}.{7:016x}.free"
    try:
        made = {base: entries(base) for base in (mine, other, plain)}
        assert all(len(e) == 4 for e in made.values()), made

        r = run_cli("gc", "--dry-run", "--run-id", RUN_ID)  # the young orphan is spared here
        assert r.returncode == 0, r.stderr
        assert [line for line in r.stdout.splitlines() if MARK in line] == [
            f"would remove /dev/shm/{mine}: {DEAD}"
        ]

        code, out, _ = call(capsys, "gc", "--run-id", RUN_ID)
        assert code == 0
        assert sorted(out.splitlines()) == sorted([
            f"removed /dev/shm/{mine}: {DEAD}",
            f"removed /dev/shm/{orphan}: semaphore of no existing queue",
        ])  # fmt: skip
        assert entries(mine) == set() and entries(orphan_base) == set()
        assert entries(other) == made[other] and entries(plain) == made[plain]

        code, out, _ = call(capsys, "gc", "--json", "--run-id", "")
        assert (code, json.loads(out)) == (
            0, {"dry_run": False, "entries": [{"entry": plain, "reason": DEAD}]}
        )  # fmt: skip
        assert entries(plain) == set() and entries(other) == made[other]
        assert call(capsys, "gc", "--run-id", RUN_ID) == (0, "nothing to collect\n", "")
    finally:
        for run_id in (RUN_ID, OTHER_RUN_ID, ""):
            remove_queue(qname, run_id)
        remove_queue(qname + "-gone", RUN_ID)


def test_gc_spares_young_leftovers(qname: str) -> None:
    base = base_name(qname, "")
    posix_ipc.Semaphore(f"/{base}.{3:016x}.free", posix_ipc.O_CREX).close()
    temp = Path(SHM_DIR, f"{base}.creating-{4:016x}")
    temp.write_bytes(b"")
    try:
        assert len(ours(R.garbage(min_age=0))) == 2
        assert ours(R.garbage()) == {}  # younger than 10 s: maybe a creation in progress
    finally:
        remove_queue(qname)


@pytest.mark.usefixtures("gc_ours")
def test_gc_and_ls_never_touch_foreign_entries(
    qname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = {
        f"sqfoo-{qname}-x": os.urandom(5000),
        f"{qname}-other": b"not ours",
        f"sem.sq0--{qname}-x.notanonce.free": b"fake semaphore",
        f"sem.sq0--{qname}-x.{5:016x}.drain": b"fake semaphore",
        base_name(qname + "-junk", ""): os.urandom(8192),  # a queue's name, not a queue
        base_name(qname + "-short", ""): b"short",
        f"{base_name(qname, '')}.creating-nothex": b"",
    }
    for entry, data in foreign.items():
        Path(SHM_DIR, entry).write_bytes(data)
    try:
        r = run_cli("ls", "--json")
        assert r.returncode == 0, r.stderr
        assert not [row for row in json.loads(r.stdout) if qname in row["base"]]
        code, out, _ = call(capsys, "ls")
        assert code == 0 and qname not in out

        r = run_cli("gc", "--dry-run")
        assert r.returncode == 0, r.stderr
        assert qname not in r.stdout
        assert call(capsys, "gc") == (0, "nothing to collect\n", "")

        for entry, data in foreign.items():
            assert Path(SHM_DIR, entry).read_bytes() == data, entry
    finally:
        for entry in foreign:
            Path(SHM_DIR, entry).unlink(missing_ok=True)


def test_gc_collects_the_queue_of_a_zombie_creator(qname: str) -> None:
    creator = start_creator(qname, RUN_ID)
    try:
        creator.send_signal(signal.SIGKILL)
        # Wait for the death but leave the child unreaped: a zombie.
        os.waitid(os.P_PID, creator.pid, os.WEXITED | os.WNOWAIT)
        assert ours(R.garbage(min_age=0)) == {base_name(qname, RUN_ID): DEAD}
    finally:
        kill(creator)
        remove_queue(qname, RUN_ID)


# -- bench -------------------------------------------------------------------------------------
def test_bench_help_says_its_flags_are_bench_py_s() -> None:
    r = run_cli("bench", "--help")
    assert r.returncode == 0, r.stderr
    ours, _, theirs = r.stdout.partition("\nusage: bench.py")
    assert ours.startswith("usage: shared-queue bench [BENCH.PY ARGUMENTS ...]\n")
    assert "every argument goes to it unchanged" in ours
    assert "With no arguments it is a quick run, `bench.py --quick`" in ours
    for flag in ("--quick", "--section", "--repeats", "--json"):  # bench.py's own help
        assert flag in theirs, flag


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--quick", "--bogus"], 2, "bench.py: error: unrecognized arguments: --bogus"),
        (["--quick", "--section", "nope"], 1, "unknown --section 'nope'"),
    ],
)
def test_bench_passes_its_arguments_to_bench_py(args: list[str], code: int, message: str) -> None:
    """Errors that only bench.py can report, with its exit status: the flags reached it."""
    r = run_cli("bench", *args)
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_bench_without_arguments_is_a_quick_run(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    class Proc:  # what a run of bench.py would be, without running it
        def __init__(self, argv: list[str]) -> None:
            started.append(argv)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Proc)  # restored when the test ends
    script = str(ROOT / "benchmarks" / "bench.py")
    assert cli.main(["bench"]) == 0
    assert cli.main(["bench", "--section", "arrays"]) == 0
    assert started == [[sys.executable, script, "--quick"],
                       [sys.executable, script, "--section", "arrays"]]  # fmt: skip


# -- demo, usage -------------------------------------------------------------------------------
def test_demo() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared_queue", "demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    tasks = re.findall(r"^worker [0-2] processing task_(\d+)$", out, re.M)
    assert sorted(map(int, tasks)) == list(range(20))
    assert out.splitlines()[-1].startswith("final queue size: 0; metrics: {'queue_size': 0,")
    run_id = f"demo_{proc.pid}"
    prefix = f"sq{len(run_id)}-{run_id}-"
    assert not [e for e in os.listdir(SHM_DIR) if e.startswith((prefix, "sem." + prefix))]


def test_help_and_console_script() -> None:
    r = run_cli("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: shared-queue")
    script = Path(sys.executable).parent / "shared-queue"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    r = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    assert r.returncode == 0 and r.stdout.startswith("usage: shared-queue")


BAD_USAGE = [
    [],
    ["bogus"],
    ["stat"],
    ["rm"],
    ["ls", "--bogus"],
    ["ls", "extra"],
    ["ls", "--run-id"],
    ["stat", "q", "--quick"],
    ["gc", "extra"],
    ["gc", "--run-id"],
    ["stat", "q", "--interval", "soon"],
    ["stat", "q", "--count", "2.5"],
]


@pytest.mark.parametrize("args", BAD_USAGE, ids=" ".join)
def test_bad_usage_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        cli.main(args)
    assert exc_info.value.code == 2
    assert "usage: shared-queue" in capsys.readouterr().err


def test_bad_usage_exits_2_as_a_subprocess() -> None:
    r = run_cli("stat")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: shared-queue") and "Traceback" not in r.stderr


def test_a_bad_name_is_an_error_not_a_traceback() -> None:
    r = run_cli("stat", "a/b")
    assert r.returncode == 1
    assert r.stderr == "shared-queue: queue name 'a/b' must not contain '/' or NUL\n"
