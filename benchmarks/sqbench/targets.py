"""The speed targets of issue 11, checked against the medians of one run.

Every target is a ratio taken inside one run (the issue asks for ratios in the same run on
the 2-core machine): a shared_queue column against another column of the same row
(``mp.Queue``, ``pyzmq``, ``np.copyto``), against the bare-semaphore floor measured beside
the row (``Workload.floor``), or, for crash safety, ``1 - safe / nosafety``. A target is met
when the ratio of the medians is on the right side of its bound; ``repeats`` counts the
repeats whose own ratio is (repeats are paired by index: every column and the floor of a
repeat ran one after the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .harness import Cell, Measured
from .workloads import WL_BY_KEY
from .workloads.arrays import COPYTO
from .workloads.safety import NOSAFETY_LABEL, SAFE_LABEL

SQ, RAW, VIEW = "shared_queue", "shared_queue[raw]", "shared_queue[view]"
MP, ZMQ = "mp.Queue", "pyzmq"
FLOOR = "floor"  # `against` of a target taken against a row's bare-semaphore floor
COST = "cost"  # `against` of a crash-safety target


@dataclass(frozen=True)
class Target:
    """``column`` of row ``workload`` against ``against`` (a column, FLOOR or COST)."""

    text: str
    workload: str
    column: str
    against: str
    op: str  # ">=" or "<="
    bound: float
    floor_of: str = ""  # with FLOOR: the row whose floor it is ("" = this row)


TARGETS = [
    Target("small dicts 1p->1c single put/get >= 4x mp.Queue", "single_1x1", SQ, MP, ">=", 4),
    Target("small dicts 1p->1c single put/get >= 1.3x pyzmq", "single_1x1", SQ, ZMQ, ">=", 1.3),
    Target("batches of 100 >= 8x mp.Queue", "batch_1x1", SQ, MP, ">=", 8),
    Target("batches of 100 >= 2x pyzmq", "batch_1x1", SQ, ZMQ, ">=", 2),
    Target("small dicts 2p->2c >= 4x mp.Queue", "single_2x2", SQ, MP, ">=", 4),
    Target("small dicts 2p->2c >= pyzmq", "single_2x2", SQ, ZMQ, ">=", 1),
    Target("ping-pong round trip <= 2x bare semaphore ping-pong", "pingpong", SQ, FLOOR, "<=", 2),
    Target("blocked get woken by a put <= 2x bare semaphore wake-up", "wakeup", SQ, FLOOR, "<=", 2),
    Target(
        "async wake-up <= 3x bare semaphore wake-up", "wakeup_async", SQ, FLOOR, "<=", 3, "wakeup"
    ),
    Target("raw float32 64 KiB >= 3x pyzmq zero-copy", "array_64kib", RAW, ZMQ, ">=", 3),
    Target("raw float32 64 KiB >= 0.3 np.copyto", "array_64kib", RAW, COPYTO, ">=", 0.3),
    Target("raw float32 1 MiB >= 3x pyzmq zero-copy", "array_1mib", RAW, ZMQ, ">=", 3),
    Target("raw float32 1 MiB >= 0.5 np.copyto", "array_1mib", RAW, COPYTO, ">=", 0.5),
    Target("get_view 1 MiB >= 0.7 np.copyto", "array_1mib", VIEW, COPYTO, ">=", 0.7),
    Target("get_view 16 MiB >= 0.8 np.copyto", "array_16mib", VIEW, COPYTO, ">=", 0.8),
    Target("crash safety costs <= 5%, 1p->1c", "safety_single_1x1", SAFE_LABEL, COST, "<=", 0.05),
    Target("crash safety costs <= 5%, 2p->2c", "safety_single_2x2", SAFE_LABEL, COST, "<=", 0.05),
]

# The NATS backend against plain nats-py JetStream (workloads/nats.py), reported on their own.
# The targets are against `nats-py` (acks confirmed); the same bounds against
# `nats-py[ack]` (acks sent, not confirmed: what a NatsQueue get waits for) are shown beside.
NATSQ, NATSPY, NATSPY_ACK = "NatsQueue", "nats-py", "nats-py[ack]"
NATS_TARGETS = [
    t
    for floor in (NATSPY, NATSPY_ACK)
    for t in (
        Target(f"batches of 100 >= 0.7x {floor}", "nats_batch_1x1", NATSQ, floor, ">=", 0.7),
        Target(f"put + get round trip <= 1.3x {floor}", "nats_roundtrip", NATSQ, floor, "<=", 1.3),
        Target(f"raw float32 1 MiB >= 0.7x {floor}", "nats_array_1mib", NATSQ, floor, ">=", 0.7),
    )
]


def _value(t: Target, a: float, b: float) -> float:
    """The target's measure of column value `a` against the other value `b`."""
    return 1 - a / b if t.against == COST else a / b


def _met(t: Target, value: float) -> bool:
    return value >= t.bound if t.op == ">=" else value <= t.bound


def _cells(t: Target, measured: Measured) -> tuple[Cell | None, Cell | None]:
    row = measured.results.get(t.workload, {})
    if t.against == FLOOR:
        other = measured.floors.get(t.floor_of or t.workload)
    elif t.against == COST:
        other = row.get(NOSAFETY_LABEL)
    else:
        other = row.get(t.against)
    return row.get(t.column), other


def evaluate(measured: Measured, targets: list[Target] = TARGETS) -> list[dict[str, Any]]:
    """Each target of a row this run measured: the ratio of the medians and the verdict."""
    out: list[dict[str, Any]] = []
    for t in targets:
        if t.workload not in measured.results:
            continue
        mine, other = _cells(t, measured)
        rec: dict[str, Any] = {
            "target": t.text,
            "workload": t.workload,
            "column": t.column,
            "against": t.against,
            "op": t.op,
            "bound": t.bound,
            "unit": WL_BY_KEY[t.workload].unit,
            "mine": None if mine is None else mine.median,
            "other": None if other is None else other.median,
            "value": None,
            "met": None,
            "repeats_met": None,
            "repeats": None,
        }
        if mine is not None and other is not None and mine.median and other.median:
            rec["value"] = value = _value(t, mine.median, other.median)
            rec["met"] = _met(t, value)
            if not mine.errors and not other.errors and len(mine.values) == len(other.values):
                per_repeat = [
                    _value(t, a, b) for a, b in zip(mine.values, other.values, strict=True) if b
                ]
                rec["repeats"] = len(per_repeat)
                rec["repeats_met"] = sum(_met(t, v) for v in per_repeat)
        out.append(rec)
    return out


def _fmt_value(rec: dict[str, Any]) -> str:
    if rec["against"] == COST:
        return f"{rec['value']:+.1%}"
    return f"{rec['value']:.2f}x" if rec["value"] >= 1 else f"{rec['value']:.2f}"


def _fmt_abs(value: float, unit: str) -> str:
    if unit == "items/s":
        return f"{value / 1000:,.0f}k"
    if unit == "GB/s":
        return f"{value:.2f}"
    return f"{value:.1f}"


def _verdict(rec: dict[str, Any]) -> str:
    if rec["met"] is None:
        return "n/a"
    if rec["met"]:
        return "**met**"
    value, bound = rec["value"], rec["bound"]
    if rec["against"] == COST:
        return f"missed by {(value - bound) * 100:.1f} points"
    if rec["op"] == ">=":
        return f"missed ({value / bound:.0%} of the target)"
    return f"missed ({value / bound:.2f}x the bound)"


def render(records: list[dict[str, Any]], mine: str = "shared_queue") -> str:
    """The markdown table of the targets; ``mine`` heads the column of the measured side."""
    lines = [
        f"| target | {mine} | against | ratio | verdict | repeats met |",
        "|---|---|---|---|---|---|",
    ]
    for rec in records:
        unit = rec["unit"]
        if rec["value"] is None:
            lines.append(f"| {rec['target']} | n/a | n/a | n/a | n/a | |")
            continue
        against = {FLOOR: "floor", COST: "nosafety"}.get(rec["against"], rec["against"])
        mine = f"{_fmt_abs(rec['mine'], unit)} {unit}"
        other = f"{against} {_fmt_abs(rec['other'], unit)}"
        reps = "" if rec["repeats"] is None else f"{rec['repeats_met']}/{rec['repeats']}"
        lines.append(
            f"| {rec['target']} | {mine} | {other} | {_fmt_value(rec)} | {_verdict(rec)} | {reps} |"
        )
    return "\n".join(lines)
