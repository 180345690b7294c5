"""Every script in examples/, and every whole program in the docs, runs, prints what it
promises, and leaves /dev/shm as it found it.

Each runs as ``python FILE`` in a subprocess of its own session, killed with its children if it
outlives TIMEOUT. A program names its queues under ``run_id = f"<word>_{os.getpid()}"``, so
concurrent runs never collide; the check for leftovers looks only at /dev/shm entries of that
run_id, and removes any it finds. The README's quick start is examples/quickstart.py, verbatim.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from shared_queue._names import SHM_DIR, parse_entry, run_id_prefix

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 120  # seconds; the programs take a few


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
    "quickstart": Example("quickstart_{pid}", _quickstart),
    "worker_pool": Example("worker_pool_{pid}", _worker_pool),
    "numpy_stream": Example("numpy_stream_{pid}", _numpy_stream),
    "events": Example("events_{pid}", _events),
    "batch_ingest": Example("batch_ingest_{pid}", _batch_ingest),
    "async_consumer": Example("async_demo_{pid}", _async_consumer),
}


ELSEWHERE = {"cluster_pool"}  # needs a nats-server: tests/test_cluster_pool_example.py


def test_every_example_is_tested() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted([*CASES, *ELSEWHERE])


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_id_matches_the_example(name: str) -> None:
    # Otherwise the leak check below would look at names the example never uses.
    fixed_part = CASES[name].run_id.split("{")[0]
    assert re.search(rf"\brun_id\b.*{re.escape(fixed_part)}", (EXAMPLES / f"{name}.py").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name: str) -> None:
    case = CASES[name]
    out = _run(EXAMPLES / f"{name}.py", case.run_id)
    case.check(out)


# -- code in the docs -----------------------------------------------------------------------


class Block(NamedTuple):
    doc: Path
    line: int  # of the opening fence
    heading: str  # the last "## " heading above it
    code: str


def _python_blocks(doc: Path) -> list[Block]:
    """The ```python blocks of a Markdown file (those at the start of a line)."""
    text = doc.read_text()
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```$", text, re.M | re.S):
        above = text[: m.start()]
        headings = re.findall(r"^## (.*)$", above, re.M)
        blocks.append(Block(doc, above.count("\n") + 1, headings[-1] if headings else "", m[1]))
    return blocks


def _programs() -> list[Block]:
    """The blocks that are whole programs: they end in a ``__main__`` guard. The others are
    fragments, shown for one call or one pattern."""
    return [b for d in DOCS for b in _python_blocks(d) if 'if __name__ == "__main__":' in b.code]


PROGRAMS = _programs()


def _block_id(block: Block) -> str:
    return f"{block.doc.relative_to(ROOT)}:{block.line}"


@pytest.mark.parametrize("doc", ["README.md", "docs/index.md"])
def test_quick_start_is_the_example(doc: str) -> None:
    """The Quick start shown is examples/quickstart.py, which test_example_runs runs."""
    shown = [b.code for b in _python_blocks(ROOT / doc) if b.heading == "Quick start"]
    assert shown == [(EXAMPLES / "quickstart.py").read_text()]


def test_docs_have_programs() -> None:
    # The rule that picks the programs must not silently pick none.
    found = {str(b.doc.relative_to(ROOT)) for b in PROGRAMS}
    assert {"README.md", "docs/index.md", "docs/guide.md"} <= found


@pytest.mark.parametrize("block", PROGRAMS, ids=_block_id)
def test_program_in_the_docs_runs(block: Block, tmp_path: Path) -> None:
    """A whole program shown in the docs runs to success, and cleans up after itself."""
    m = re.search(r'\brun_id = f"(\w+)_\{os\.getpid\(\)\}"', block.code)
    assert m, 'name the queues under run_id = f"<word>_{os.getpid()}", so runs do not collide'
    script = tmp_path / f"{block.doc.stem}_{block.line}.py"
    script.write_text(block.code)
    _run(script, m[1] + "_{pid}")


# -- running a program ----------------------------------------------------------------------


def _entries_of(run_id: str) -> set[str]:
    """The /dev/shm entries of the queues of namespace ``run_id``."""
    prefix = run_id_prefix(run_id)
    return {
        e
        for e in os.listdir(SHM_DIR)
        if (parsed := parse_entry(e)) is not None and parsed.base.startswith(prefix)
    }


def _run(script: Path, run_id: str) -> str:
    """Run ``script`` to completion within TIMEOUT; return its stdout.

    ``run_id`` is its queues' run_id, with ``{pid}`` for the script's process id; whatever
    the script leaves under it is removed, then reported as a failure.
    """
    # Unbuffered output (PYTHONUNBUFFERED, set on CI machines) writes a print's text and its
    # newline separately, so lines of the examples' several processes would interleave.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
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
        pytest.fail(f"{script.name} did not finish in {TIMEOUT} s\nstdout:\n{out}\nstderr:\n{err}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # workers it left running
            os.killpg(proc.pid, signal.SIGKILL)
        leaked = _entries_of(run_id.format(pid=proc.pid))
        for entry in leaked:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, entry))
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    assert not leaked, f"{script.name} left {sorted(leaked)} in {SHM_DIR}"
    return out
