"""Every script in examples/ runs, prints what it promises, and leaves /dev/shm as it found it.

Each example runs as ``python examples/NAME.py`` in a subprocess. Its queues live under a
run_id; the check for leftovers looks only at /dev/shm entries of that run_id (the queue
``sq<len>-<run_id>-<name>`` and its ``sem.`` semaphores), so queues that concurrent test runs
create meanwhile do not count.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from shared_queue._segment import SHM_DIR

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 120  # seconds; the examples take a few


class Example(NamedTuple):
    run_id: str  # the run_id of its queues; "{pid}" stands for the example's process id
    check: Callable[[str], None]  # asserts on its stdout


def _quickstart(out: str) -> None:
    lines = re.findall(r"^Worker (\d) processing: task_(\d+)$", out, re.M)
    assert len(lines) == 20, out
    assert sorted(int(task) for _, task in lines) == list(range(20))
    assert {int(w) for w, _ in lines} <= {0, 1, 2}
    assert out.splitlines()[-1] == "Final queue size: 0"


def _worker_pool(out: str) -> None:
    per_worker = re.search(r"^tasks per worker: \{(.*)\}$", out, re.M)
    assert per_worker, out
    counts = [int(c) for c in re.findall(r"\d+: (\d+)", per_worker[1])]
    assert sum(counts) == 100
    primes = sum(
        all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(1_000_003, 1_000_203, 2)
    )
    assert out.splitlines()[-1] == f"processed 100 tasks with 4 workers: {primes} primes"


def _numpy_stream(out: str) -> None:
    m = re.fullmatch(
        r"300 frames of 0\.92 MB through 2 workers in (\d+\.\d\d) s: (\d+) frames/s, "
        r"(\d+\.\d\d) GB/s",
        out.splitlines()[-1],
    )
    assert m, out
    assert float(m[1]) > 0 and int(m[2]) > 0 and float(m[3]) > 0


def _events(out: str) -> None:
    assert "billing: captured 20 payments" in out.splitlines()
    assert out.splitlines()[-1] == (
        "orders: sent 20 orders, 20 payments confirmed, 247.50 of 247.50 captured"
    )


def _batch_ingest(out: str) -> None:
    assert "readings per sensor: [20000, 20000, 20000, 20000]" in out.splitlines()
    m = re.fullmatch(
        r"ingested 80000 readings from 4 sensors in (\d+\.\d\d) s: (\d+) items/s",
        out.splitlines()[-1],
    )
    assert m, out
    assert int(m[2]) > 0


def _async_consumer(out: str) -> None:
    m = re.fullmatch(
        r"received 150 events; median latency (\d+) us; the loop kept beating "
        r"\((\d+) heartbeats\)",
        out.splitlines()[-1],
    )
    assert m, out
    assert int(m[2]) > 0, "the event loop ran other tasks while it waited"


CASES = {
    # quickstart.py uses a fixed run_id, as the original quick start does.
    "quickstart": Example("task_processor", _quickstart),
    "worker_pool": Example("worker_pool_{pid}", _worker_pool),
    "numpy_stream": Example("numpy_stream_{pid}", _numpy_stream),
    "events": Example("events_{pid}", _events),
    "batch_ingest": Example("batch_ingest_{pid}", _batch_ingest),
    "async_consumer": Example("async_demo_{pid}", _async_consumer),
}


def _entries_of(run_id: str) -> set[str]:
    # base_name(): "sq<len(run_id)>-<run_id>-<name>"; semaphores are "sem.<base>.<nonce>.<kind>".
    prefix = f"sq{len(run_id)}-{run_id}-"
    return {e for e in os.listdir(SHM_DIR) if e.startswith((prefix, "sem." + prefix))}


def test_every_example_is_tested() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_id_matches_the_example(name: str) -> None:
    # Otherwise the leak check below would look at names the example never uses.
    fixed_part = CASES[name].run_id.split("{")[0]
    assert re.search(rf"\brun_id\b.*{re.escape(fixed_part)}", (EXAMPLES / f"{name}.py").read_text())


@contextlib.contextmanager
def _exclusive(run_id: str) -> Iterator[None]:
    """Hold a lock that other test runs take before running an example of this fixed run_id.

    Two runs of quickstart.py at once collide on its queue's name (FileExistsError), and each
    would count the other's queue as a leftover. Waiting is bounded by the holder's TIMEOUT.
    """
    with open(Path(tempfile.gettempdir(), f"shared_queue-example-{run_id}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing f releases the lock


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name: str) -> None:
    case = CASES[name]
    fixed = "{pid}" not in case.run_id
    with _exclusive(case.run_id) if fixed else contextlib.nullcontext():
        _run(name, case, fixed)


def _run(name: str, case: Example, fixed: bool) -> None:
    before = _entries_of(case.run_id) if fixed else set()
    # Unbuffered output (PYTHONUNBUFFERED, set on CI machines) writes a print's text and its
    # newline separately, so lines of the examples' several processes would interleave.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=ROOT,
        env=env,
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
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    case.check(out)
    leaked = _entries_of(case.run_id.format(pid=proc.pid)) - before
    assert not leaked, f"{name}.py left {sorted(leaked)} in {SHM_DIR}"
