"""examples/cluster_pool.py runs against a real nats-server, prints what it promises, and
leaves no stream behind; without a server it says so in one line.

It runs as ``python examples/cluster_pool.py`` in a subprocess of its own session, killed with
its workers if it outlives TIMEOUT, as tests/test_examples.py runs the other examples (those
need no server, so that file does not run this one).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _natsserver import NatsServer, free_ports

pytest.importorskip("nats")

from shared_queue._nats import stream_name  # after the skip: it needs nats-py

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cluster_pool.py"
TIMEOUT = 120  # seconds; only reached if the example hangs (it takes a few)


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str, str, int]:
    """Run the example with ``args``; return its exit code, stdout, stderr and pid."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: its workers are killed with it
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{EXAMPLE.name} did not finish in {TIMEOUT} s\nstdout:\n{out}\nstderr:\n{err}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # workers it left running
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err, proc.pid


def _env(**extra: str) -> dict[str, str]:
    # Unbuffered output would interleave the lines of several processes (test_examples.py).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", *extra)}
    return {**env, **extra}


def _streams(server: NatsServer) -> set[str]:
    """The names of the streams on ``server`` (from its monitoring port)."""
    jsz = server.monitor("/jsz?accounts=true&streams=true")
    return {
        stream["name"]
        for account in jsz.get("account_details") or ()
        for stream in account.get("stream_detail") or ()
    }


def test_cluster_pool_example(nats_server: NatsServer, nats_url: str) -> None:
    code, out, err, pid = _run(["--url", nats_url], _env())
    assert code == 0, f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err, err

    per_worker = re.search(r"^tasks per worker: \{(.*)\}$", out, re.M)
    assert per_worker, out
    workers = re.findall(r"(\d+): (\d+)", per_worker[1])
    assert {int(w) for w, _ in workers} <= {0, 1, 2, 3}, out
    assert sum(int(c) for _, c in workers) == 100, out
    primes = sum(
        all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(1_000_003, 1_000_203, 2)
    )
    assert out.splitlines()[-1] == f"processed 100 tasks with 4 workers: {primes} primes"

    # The example names its queues under this run_id (checked below), so this finds its streams.
    run_id = f"cluster_pool_{pid}"
    left = _streams(nats_server) & {stream_name(q, run_id) for q in ("tasks", "results")}
    assert not left, f"the example left streams {sorted(left)} on the server"


def test_cluster_pool_example_without_a_server() -> None:
    # The URL comes from the environment; nothing listens on the port.
    url = f"nats://127.0.0.1:{free_ports(1)[0]}?connect_timeout=0.5"
    code, out, err, _ = _run([], _env(SHARED_QUEUE_NATS_URL=url))
    assert code == 1, f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert re.fullmatch(
        r"cluster_pool: no NATS server of nats://127\.0\.0\.1:\d+ answered "
        r"\(connect_timeout=0\.5 s per server; \w+\) \(start one with: nats-server -js\)\n",
        err,
    ), err
    assert out == ""


def test_run_id_matches_the_example() -> None:
    # Otherwise the check for leftover streams above would look for names the example never uses.
    assert 'run_id = f"cluster_pool_{os.getpid()}"' in EXAMPLE.read_text()
