"""Where the time of one put and one get goes, in one process (the profile in docs/benchmarks.md).

    python benchmarks/hotpath.py               # wall time per operation, cold gets, cProfile
    python benchmarks/hotpath.py --callgrind   # instructions per operation (valgrind)

Wall time on a shared VM swings by tens of percent; instruction counts (``--callgrind``: every
case runs under ``valgrind --tool=callgrind`` twice, with 0 and with N iterations, and the
difference is divided by N; ``batch`` and ``raw64k`` run N/100 and N/10) do not, so they are
the figures to compare between builds.

Cases (small dict: the benchmark's ``{"id": 1, "name": "item", "vals": [1, 2, 3], "x": 1.5}``):

- ``queue``: ``put_nowait`` + ``get_nowait`` of the small dict;
- ``unsafe``: the same on a queue created with plain (non-robust) mutexes, the crash-safety
  baseline of the benchmark (``sqbench/impls/nosafety.py``): ``queue`` - ``unsafe`` is what
  crash safety costs per put + get, without the noise of a two-process run;
- ``blocking``: ``put(timeout=30)`` + ``get(timeout=30)``, the calls the benchmark makes;
- ``pickle``: ``pickle.loads(pickle.dumps(item, 5))``, the floor under the two above;
- ``batch``: ``put_batch`` + ``get_batch(100)`` of 100 small dicts, per item;
- ``raw64k``: ``put`` + ``get`` of a 64 KiB float32 array on a raw queue of 64 slots (as in
  the benchmark's 64 KiB row);
- ``loop``: the empty loop, to subtract.

``cold``: the median time of a ``get_nowait`` (an item already queued) right after a 2 ms
sleep, against a warm one, and the same for a bare semaphore ``release`` + ``acquire``:
what a wake-up pays for every instruction it runs after an idle spell on this machine.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pickle
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parent):  # sqbench, and shared_queue from this checkout
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

ITEM = {"id": 1, "name": "item", "vals": [1, 2, 3], "x": 1.5}
CASES = ("queue", "unsafe", "blocking", "pickle", "batch", "raw64k", "loop")
PER_ITEM = {"batch": 100}  # iterations move this many items
FEWER = {"batch": 100, "raw64k": 10}  # these cases run n / this many iterations


def _queue(raw: bool = False, item_size: int = 4096, unsafe: bool = False):
    from contextlib import nullcontext

    from sqbench.impls.nosafety import unsafe_locks

    from shared_queue import SharedMemoryQueue

    name = f"sqbench_hotpath_{os.getpid()}_{int(raw)}"
    capacity = 64 if raw else 1000
    with unsafe_locks() if unsafe else nullcontext():
        return SharedMemoryQueue(name, create=True, capacity=capacity, item_size=item_size, raw=raw)


def _body(case: str, q) -> Callable[[], None]:
    """One iteration of `case`."""
    if case in ("queue", "unsafe"):
        return lambda: (q.put_nowait(ITEM), q.get_nowait())
    if case == "blocking":
        return lambda: (q.put(ITEM, timeout=30), q.get(timeout=30))
    if case == "pickle":
        return lambda: pickle.loads(pickle.dumps(ITEM, 5))
    if case == "batch":
        items = [ITEM] * 100
        return lambda: (q.put_batch(items, timeout=30), q.get_batch(100, timeout=30))
    if case == "raw64k":
        import numpy as np

        arr = np.full(16384, 1.5, np.float32)
        return lambda: (q.put(arr, timeout=30), q.get(timeout=30))
    return lambda: None


def run_case(case: str, n: int) -> float:
    """Run `case` n times after a warm-up; return the seconds per iteration."""
    raw = case == "raw64k"
    q = _queue(raw, 65536 + 4096 if raw else 4096, unsafe=case == "unsafe")
    try:
        body = _body(case, q)
        for _ in range(200):
            body()
        t = time.perf_counter()
        for _ in range(n):
            body()
        return (time.perf_counter() - t) / max(n, 1)
    finally:
        q.close()
        q.unlink()


def callgrind(cases: list[str], n: int) -> None:
    """Instructions per iteration of each case: (Ir with n iterations - Ir with 0) / n."""
    print("| case | instructions per iteration (callgrind) | per item |")
    print("|---|---|---|")
    for case in cases:
        counts = []
        iters_n = max(1, n // FEWER.get(case, 1))
        for iters in (0, iters_n):
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run(
                    [
                        "valgrind",
                        "--tool=callgrind",
                        f"--callgrind-out-file={tmp}/cg.out",
                        sys.executable,
                        __file__,
                        "--child",
                        case,
                        str(iters),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=True,
                    # numpy's idle OpenBLAS threads would add their spinning to the count.
                    env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
                )
            found = re.search(r"Collected : (\d+)", out.stderr)
            if not found:
                raise SystemExit(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
            counts.append(int(found.group(1)))
        per = (counts[1] - counts[0]) / iters_n
        print(f"| {case} | {per:,.0f} | {per / PER_ITEM.get(case, 1):,.0f} |")


def cold(samples: int = 200, idle: float = 0.002) -> None:
    """Median us of a get_nowait and of a bare semaphore round, warm and after `idle` s."""
    import posix_ipc

    q = _queue()
    sem_name = f"/sqbench_hotpath_{os.getpid()}"
    try:
        sem = posix_ipc.Semaphore(sem_name, posix_ipc.O_CREX, initial_value=0)
    except BaseException:
        q.close()
        q.unlink()
        raise
    try:
        ops = {
            "get_nowait (item queued)": (lambda: q.put_nowait(ITEM), q.get_nowait),
            "semaphore release + acquire": (lambda: None, lambda: (sem.release(), sem.acquire())),
        }
        print("| operation | warm, us | after a 2 ms sleep, us |")
        print("|---|---|---|")
        for label, (prepare, op) in ops.items():
            times: dict[bool, list[float]] = {True: [], False: []}
            for i in range(samples * 2):
                sleepy = i % 2 == 1
                prepare()
                if sleepy:
                    time.sleep(idle)
                t = time.perf_counter()
                op()
                times[sleepy].append(time.perf_counter() - t)
            warm, slept = (statistics.median(times[k]) * 1e6 for k in (False, True))
            print(f"| {label} | {warm:.1f} | {slept:.1f} |")
    finally:
        try:
            sem.unlink()
            sem.close()
        finally:
            q.close()
            q.unlink()


def profile(n: int) -> None:
    """cProfile of `blocking`: the functions by their own time (profiling inflates all)."""
    q = _queue()
    try:
        body = _body("blocking", q)
        for _ in range(200):
            body()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            body()
        prof.disable()
    finally:
        q.close()
        q.unlink()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
    text = out.getvalue()
    print("```\n" + text[text.index("ncalls") - 3 :].rstrip() + "\n```")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--callgrind", action="store_true", help="instruction counts (valgrind)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    ap.add_argument("-n", type=int, default=20_000, help="iterations per case")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_case(args.child[0], int(args.child[1]))
        return 0
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(sorted(unknown))} (choose from {CASES})")
    if args.callgrind:
        callgrind(cases, args.n)
        return 0
    print("| case | us per iteration (median of 5) | per item |")
    print("|---|---|---|")
    for case in cases:
        iters = max(1, args.n // FEWER.get(case, 1))
        us = statistics.median(run_case(case, iters) for _ in range(5)) * 1e6
        print(f"| {case} | {us:.2f} | {us / PER_ITEM.get(case, 1):.2f} |")
    print()
    cold()
    print()
    profile(args.n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
