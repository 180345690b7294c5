"""The report: one markdown table per section on stdout, and the same numbers as JSON.

Ratio columns are ``shared_queue / other`` of the medians: for items/s and GB/s a ratio
above 1 means shared_queue is faster; for microseconds a ratio below 1 means shared_queue
is faster.  ``±x%`` is half the min-max range over the repeats, relative to the median.
The bare-semaphore floors of the latency rows are printed under their section, and the
issue 11 targets (``targets.py``) as a table of their own at the end.
The JSON keys are what ``plot.py`` and ``docs/benchmarks.md`` read: keep them stable.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .harness import SHM_DIR, Cell, Measured
from .impls.base import Impl
from .impls.fasterfifo import FasterFifoImpl
from .impls.mpqueue import MpQueueImpl
from .impls.pyzmq import ZmqImpl
from .targets import NATS_TARGETS
from .targets import evaluate as evaluate_targets
from .targets import render as render_targets
from .workloads import WL_BY_KEY, Config, Workload
from .workloads import nats as nats_rows
from .workloads.aio import ASYNC_PAIRS
from .workloads.arrays import ARRAY_CAPACITY, ARRAY_HEADROOM, ARRAY_SIZES, COPYTO
from .workloads.base import size_label
from .workloads.safety import NOSAFETY_LABEL, SAFE_LABEL

MP, FF, ZMQ = MpQueueImpl.label, FasterFifoImpl.label, ZmqImpl.label
RATIO_AGAINST = (MP, FF, ZMQ, COPYTO)  # the columns each shared_queue column gets a ratio to
# Arrays: the pickle-mode and typed columns get no ratio columns (the table would be too
# wide); raw and get_view are the ones the targets name.
NO_ARRAY_RATIOS = ("shared_queue", "shared_queue[typed]")
# What each floor measures (Workload.floor; impls/posix_sem.py).
FLOOR_TEXT = {
    "pingpong": "bare posix_ipc semaphore ping-pong, per round trip",
    "wakeup": "bare posix_ipc semaphore wake-up (a post wakes a process blocked in the wait)",
}


@dataclass
class Run:
    """Everything the report shows about one run."""

    quick: bool
    repeats: int
    cfg: Config
    sections: dict[str, list[str]]  # section -> its workload keys in this run
    workloads: list[Workload]
    columns: list[Impl]  # every implementation selected, the unavailable ones too (n/a)
    impls: list[Impl]  # the ones measured
    unavailable: dict[str, str]  # label -> reason
    versions: dict[str, str]
    measured: Measured
    leaked: list[str]

    @property
    def sem_pingpong(self) -> Cell | None:
        """The bare-semaphore floor of the ping-pong row, if measured."""
        return self.measured.floors.get("pingpong")

    @property
    def targets(self) -> list[dict[str, Any]]:
        return evaluate_targets(self.measured)

    @property
    def nats_targets(self) -> list[dict[str, Any]]:
        return evaluate_targets(self.measured, NATS_TARGETS)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "error"
    if unit == "items/s":
        return f"{value:,.0f}"
    if unit == "GB/s":
        return f"{value:.2f}"
    return f"{value:.1f}"


def fmt_cell(cell: Cell | None, unit: str) -> str:
    if cell is None:
        return "n/a"
    text = fmt(cell.median, unit)
    if len(cell.values) > 1 and cell.median:
        spread = (max(cell.values) - min(cell.values)) / 2 / cell.median
        text += f" ±{spread:.0%}"
    if cell.errors and cell.values:
        text += f" ({len(cell.errors)} failed)"
    return text


def ratio(a: Cell | None, b: Cell | None) -> str:
    if a is None or b is None or a.median is None or b.median is None:
        return "n/a"
    return f"{a.median / b.median:.2f}"


def safety_cost(safe: Cell | None, nosafety: Cell | None) -> dict | None:
    """Share of throughput lost to crash safety: 1 - safe / nosafety (medians, and per repeat).

    Repeats are paired by index (interleaved runs) when neither cell has failures.
    """
    if safe is None or nosafety is None or not safe.median or not nosafety.median:
        return None
    paired = []
    if not safe.errors and not nosafety.errors:
        paired = [1 - a / b for a, b in zip(safe.values, nosafety.values, strict=False)]
    return {"cost": 1 - safe.median / nosafety.median, "per_repeat": paired}


def cost_vs_nosafety(row: dict[str, Cell], safe: str = SAFE_LABEL) -> dict | None:
    """safety_cost of column `safe` of a safety row against its nosafety column."""
    return safety_cost(row.get(safe), row.get(NOSAFETY_LABEL))


def fmt_cost(cost: dict | None) -> str:
    if cost is None:
        return "n/a"
    text = f"{cost['cost']:+.1%}"
    if len(cost["per_repeat"]) > 1:
        text += f" (per repeat {min(cost['per_repeat']):+.0%}..{max(cost['per_repeat']):+.0%})"
    return text


def section_columns(keys: list[str], impls: list[Impl]) -> list[str]:
    labels = [i.label for i in impls if any(WL_BY_KEY[k].wants(i) for k in keys)]
    if any(WL_BY_KEY[k].ref for k in keys):
        labels.append(COPYTO)
    return labels


def render(section: str, keys: list[str], results: dict, impls: list[Impl]) -> str:
    """Markdown table of one section; impls include unavailable ones (shown as n/a)."""
    labels = section_columns(keys, impls)
    sq_labels = [i.label for i in impls if i.key == "sq" and i.label in labels]
    extra: list[tuple[str, Callable[[dict], str]]] = []
    if section == "safety":
        if SAFE_LABEL in labels and NOSAFETY_LABEL in labels:
            extra.append(
                (f"cost: 1 - {SAFE_LABEL} / nosafety", lambda row: fmt_cost(cost_vs_nosafety(row)))
            )
    else:
        if section == "arrays":
            sq_labels = [s for s in sq_labels if s not in NO_ARRAY_RATIOS] or sq_labels
        others = [o for o in RATIO_AGAINST if o in labels]
        for o in others:
            for s in sq_labels:
                extra.append((f"{s} / {o}", lambda row, s=s, o=o: ratio(row.get(s), row.get(o))))
    head = ["workload", "unit", *labels] + [h for h, _ in extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        wl = WL_BY_KEY[key]
        row = results.get(key, {})
        unit = f"{wl.unit} ({'higher' if wl.higher_is_better else 'lower'} is better)"
        title = wl.title + (" [a]" if key == "batch_1x1" and {MP, ZMQ} & set(labels) else "")
        cells = [fmt_cell(row.get(lbl), wl.unit) for lbl in labels]
        lines.append("| " + " | ".join([title, unit, *cells, *(f(row) for _, f in extra)]) + " |")
    return "\n".join(lines)


def async_summary(results: dict, impls: list[Impl]) -> dict[str, dict[str, Any]]:
    """shared_queue async vs sync medians of the async section's row pairs."""
    out: dict[str, dict[str, Any]] = {}
    for akey, skey in ASYNC_PAIRS:
        for impl in impls:
            a = results.get(akey, {}).get(impl.label)
            s = results.get(skey, {}).get(impl.label)
            if a is None or s is None or not a.median or not s.median:
                continue
            out.setdefault(akey, {})[impl.label] = {
                "async": a.median,
                "sync": s.median,
                "async_over_sync": a.median / s.median,
            }
    return out


def print_markdown(run: Run) -> None:
    """The report on stdout: run facts, one table per section with its notes, errors."""
    cfg, results = run.cfg, run.measured.results
    sec_keys = run.sections
    floors_shown: set[str] = set()
    labels = [i.label for i in run.impls]
    print(f"# shared_queue benchmark ({'quick' if run.quick else 'full'})\n")
    print(
        f"- start method: **fork**; timer: time.perf_counter; median of {run.repeats} repeats "
        f"(implementations interleaved per repeat, alternating order); "
        f"wall time {run.measured.elapsed:.1f} s"
    )
    print(
        f"- python {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs; versions: "
        + ", ".join(f"{k} {v}" for k, v in run.versions.items() if v)
    )
    if {"small", "async", "safety"} & set(sec_keys):
        print(
            f"- small dicts: {cfg.items:,} items per throughput run; ping-pong round trips: "
            f"{cfg.rounds:,}; wake-up samples: {cfg.wake_samples} after ~"
            f"{cfg.wake_sleep * 1e3:.1f} ms sleeps; warm-up discarded: {cfg.warmup}; queue "
            f"capacity {cfg.capacity} x item_size {cfg.item_size} B ({MP} "
            f"maxsize={cfg.capacity}, {FF} {cfg.capacity * cfg.item_size:,} B)"
        )
    if "arrays" in sec_keys:
        print(
            "- arrays: float32, "
            + ", ".join(
                f"{size_label(n)} x {cfg.array_items(n):,} (capacity {ARRAY_CAPACITY[n]})"
                for n in ARRAY_SIZES
            )
            + f"; item_size = array bytes + {ARRAY_HEADROOM}; GB = 1e9 bytes"
        )
    if "nats" in sec_keys:
        print(f"- {nats_rows.describe(cfg)}")
    for section, keys in sec_keys.items():
        print(f"\n## {section}\n")
        if section == "nats":
            print(nats_rows.render(keys, results, fmt_cell, ratio))
            print(f"\n{nats_rows.NOTES}")
            continue
        print(render(section, keys, results, run.columns))
        for key in keys:
            floor = run.measured.floors.get(key)
            if floor is None or key in floors_shown:
                continue
            floors_shown.add(key)
            what = FLOOR_TEXT.get(key, "bare semaphores")
            print(
                f"\nFloor of {WL_BY_KEY[key].title!r}: {what} = **{fmt_cell(floor, 'us')} us** "
                "(no queue, no pickling)."
            )
            if floor.errors:
                print(f"\n**error** floor of {key}: {floor.errors[0]}")
        no_batch = [lbl for lbl in (MP, ZMQ) if lbl in labels]
        if section == "small" and no_batch and "batch_1x1" in keys:
            print(
                f"\n[a] {' and '.join(no_batch)} have no batch API: single put/get in the "
                "batch row."
            )
        if section == "arrays":
            print(
                "\n`shared_queue` here is pickle mode (the array travels as a protocol-5 "
                "out-of-band buffer); `[raw]` is raw=True; `[typed]` is dtype/shape slots and "
                "`[view]` a typed queue read with get_view (1 MiB and 16 MiB rows). "
                f"`{COPYTO}` is one in-process copy of the same size, in the parent; a queue "
                "copies every array twice (into the slot, out of it), get_view once."
            )
        if section == "async":
            print(f"\n{MP} and {FF} have no async API (n/a). Async vs sync:\n")
            for akey, per_impl in async_summary(results, run.impls).items():
                unit = WL_BY_KEY[akey].unit
                for label, s in per_impl.items():
                    print(
                        f"- {label}: {WL_BY_KEY[akey].title}: {fmt(s['async'], unit)} {unit} "
                        f"vs sync {fmt(s['sync'], unit)} {unit} (async / sync "
                        f"{s['async_over_sync']:.2f})"
                    )
        if section == "safety":
            print(
                "\nCost = 1 - items/s with crash safety / items/s without it: `shared_queue` "
                "as shipped (robust process-shared mutexes) against `[nosafety]`, the same "
                "code over plain process-shared mutexes (the benchmark-only switch "
                "`_segment.LOCK_KIND = LOCK_UNSAFE`, set when the queue is created); "
                "target <= 5%."
            )
    print(
        "\nRatios are shared_queue / other of the medians: > 1 is better for items/s and GB/s, "
        "< 1 is better for us. ±x% is half the min-max range over the repeats, relative to "
        "the median. n/a: not applicable or not available."
    )
    for label, reason in run.unavailable.items():
        print(f"- {label}: n/a ({reason})")
    targets = run.targets
    if targets:
        print("\n## Issue 11 targets\n")
        print(render_targets(targets))
        met = sum(1 for t in targets if t["met"])
        print(
            f"\n{met} of {len(targets)} targets met. Ratio: shared_queue / the other column "
            "of the medians (for a floor: shared_queue's latency / the floor's; for crash "
            "safety: the cost). Repeats met: repeats (paired by index) whose own ratio meets "
            "the target."
        )
    nats_targets = run.nats_targets
    if nats_targets:
        print("\n## NATS targets\n")
        print(render_targets(nats_targets, mine="NatsQueue"))
        for floor in dict.fromkeys(t["against"] for t in nats_targets):
            mine = [t for t in nats_targets if t["against"] == floor]
            met = sum(1 for t in mine if t["met"])
            print(f"\n{met} of {len(mine)} met against {floor}.", end="")
        print(
            " Ratio: NatsQueue / the floor of the medians; the issue's targets are the ones "
            "against nats-py (acks confirmed)."
        )
    for wl in run.workloads:
        for label, cell in results[wl.key].items():
            for err in dict.fromkeys(cell.errors):
                print(f"\n**error** {wl.key} / {label}:\n```\n{err.strip()}\n```")
    if run.leaked:
        print(f"\n**warning**: new entries left in {SHM_DIR}: {', '.join(run.leaked)}")


def json_payload(run: Run) -> dict[str, Any]:
    """The raw results: every repeat of every cell, as ``bench.py --json`` writes them."""
    results, ref = run.measured.results, run.sem_pingpong
    return {
        "mode": "quick" if run.quick else "full",
        "start_method": "fork",
        "repeats": run.repeats,
        "config": run.cfg.__dict__,
        "sections": run.sections,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": run.versions,
        "unavailable": run.unavailable,
        "elapsed_s": run.measured.elapsed,
        "leaked_shm": run.leaked,
        "results": {
            wl.key: {
                "title": wl.title,
                "unit": wl.unit,
                "higher_is_better": wl.higher_is_better,
                "reference": COPYTO if wl.ref is not None else None,
                "impls": {lbl: c.as_json() for lbl, c in results[wl.key].items()},
            }
            for wl in run.workloads
        },
        "reference_sem_pingpong_us": None if ref is None else ref.as_json(),
        "floors_us": {key: cell.as_json() for key, cell in run.measured.floors.items()},
        "async_vs_sync": async_summary(results, run.impls),
        "safety_cost": {
            key: {SAFE_LABEL: cost_vs_nosafety(results[key])}
            for key in run.sections.get("safety", [])
        },
        "targets": run.targets,
        "nats_targets": run.nats_targets,
    }
