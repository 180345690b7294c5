"""The timing harness: every implementation measured in one run, interleaved, medians.

All implementations are measured in ONE run, interleaved (repeat 1 of every
implementation, then repeat 2, ...; every other repeat in reverse order) so
that slow drifts of a noisy machine hit all of them alike.  Every number in the
tables is the median over the repeats; time is taken with ``time.perf_counter``
(CLOCK_MONOTONIC on Linux, so it is comparable across processes).  A run that
fails is recorded as an error in its cell, and the run goes on.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .impls.base import Impl
from .workloads import Config, Workload
from .workloads.arrays import COPYTO

SHM_DIR = Path("/dev/shm")


@dataclass
class Cell:
    """The repeats of one (workload, column): values, or the error of each failed run."""

    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median, "values": self.values, "errors": self.errors}


@dataclass
class Measured:
    """What one run measured: ``results[workload key][column label]``, floors, wall time."""

    results: dict[str, dict[str, Cell]]
    floors: dict[str, Cell]  # workload key -> its floor (see Workload.floor)
    elapsed: float


def measure_all(
    workloads: list[Workload], impls: list[Impl], cfg: Config, repeats: int, floors: bool
) -> Measured:
    """Run every workload `repeats` times for each of its columns, interleaved."""
    t_start = time.perf_counter()
    results: dict[str, dict[str, Cell]] = {}
    for wl in workloads:
        results[wl.key] = {i.label: Cell() for i in impls if wl.wants(i)}
        if wl.ref is not None:
            results[wl.key][COPYTO] = Cell()
    floor_cells = {wl.key: Cell() for wl in workloads if floors and wl.floor is not None}

    def measure(what: str, cell: Cell, fn: Callable, *fn_args: Any) -> None:
        try:
            cell.values.append(fn(*fn_args))
            status = f"{cell.values[-1]:,.2f}"
        except Exception as e:
            cell.errors.append(f"{type(e).__name__}: {str(e) or repr(e)}")
            status = f"ERROR {type(e).__name__}"
        elapsed = time.perf_counter() - t_start
        print(f"[{elapsed:6.1f}s] {what}: {status}", file=sys.stderr, flush=True)

    for wl in workloads:
        cols = [i for i in impls if wl.wants(i)]
        for rep in range(repeats):
            # Interleaved: every impl once per repeat, every other repeat in reverse order.
            for impl in cols if rep % 2 == 0 else cols[::-1]:
                cell = results[wl.key][impl.label]
                measure(f"{wl.key} #{rep + 1} {impl.label}", cell, wl.run, impl, cfg)
            if wl.ref is not None:
                cell = results[wl.key][COPYTO]
                measure(f"{wl.key} #{rep + 1} {COPYTO}", cell, wl.ref, cfg)
            if wl.floor is not None and wl.key in floor_cells:
                measure(f"{wl.key} #{rep + 1} reference", floor_cells[wl.key], wl.floor, cfg)
    return Measured(results, floor_cells, time.perf_counter() - t_start)


def shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except OSError:
        return set()


def leaked_entries(before: set[str]) -> list[str]:
    """Entries of this run (names contain ``sqbench_<pid>_``) that appeared in /dev/shm."""
    marker = f"sqbench_{os.getpid()}_"  # in every queue/semaphore name this run made
    return sorted(e for e in shm_entries() - before if marker in e)
