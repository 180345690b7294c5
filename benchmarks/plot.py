"""Bar charts of a bench.py --json result: shared_queue against mp.Queue, faster-fifo, pyzmq.

    python benchmarks/plot.py out.json [--outdir docs/img]

Writes one PNG per section (``bench_<section>.png``) with, per workload, one bar per
(shared_queue column, other implementation) pair: the speed-up of shared_queue, i.e.
``sq / other`` for items/s and GB/s and ``other / sq`` for microseconds, so higher is
always better and 1 (dashed line) is parity. Workloads without the other implementation
(the async rows, the safety section) are left out; in the arrays rows only the raw and
get_view columns are drawn (the ones the targets name; the tables have them all).

``bench_targets.png`` draws the issue 11 targets of the run's ``targets`` record: each
target's ratio over its bound (inverted for "at most" targets), so that a bar at or above 1
is a target met. The crash-safety targets (a cost near 0, not a ratio) are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

OTHERS = ("mp.Queue", "faster-fifo", "pyzmq")
ARRAY_SKIP = ("shared_queue", "shared_queue[typed]")  # not drawn in the arrays rows


def speedups(result: dict, key: str = "") -> dict[str, float]:
    """{"sq label vs other": speed-up} of one workload's medians."""
    meds = {lbl: c["median"] for lbl, c in result["impls"].items() if c["median"]}
    skip = ARRAY_SKIP if key.startswith("array_") else ()
    out = {}
    for sq in (lbl for lbl in meds if lbl.startswith("shared_queue") and lbl not in skip):
        for other in OTHERS:
            if other in meds:
                r = meds[sq] / meds[other]
                out[f"{sq} vs {other}"] = r if result["higher_is_better"] else 1 / r
    return out


def plot_section(name: str, keys: list[str], data: dict, path: Path) -> bool:
    rows = {k: speedups(data["results"][k], k) for k in keys if k in data["results"]}
    rows = {k: v for k, v in rows.items() if v}
    if not rows:
        return False
    series = list(dict.fromkeys(s for v in rows.values() for s in v))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)) + 3.5, 4.5))
    for i, s in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, [v.get(s, 0.0) for v in rows.values()], width, label=s)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([data["results"][k]["title"] for k in rows], rotation=20, ha="right")
    ax.set_ylabel("speed-up of shared_queue (higher is better)")
    ax.set_title(
        f"{name}: {data['mode']} run, median of {data['repeats']}, {data['cpu_count']} CPUs"
    )
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_targets(data: dict, path: Path) -> bool:
    """Bars of each target's ratio over its bound (1 = just met); crash safety left out."""
    recs = [t for t in data.get("targets", []) if t["value"] and t["against"] != "cost"]
    if not recs:
        return False
    progress = [
        t["value"] / t["bound"] if t["op"] == ">=" else t["bound"] / t["value"] for t in recs
    ]
    fig, ax = plt.subplots(figsize=(10.0, 0.42 * len(recs) + 1.6))
    colors = ["tab:green" if t["met"] else "tab:red" for t in recs]
    ax.barh(range(len(recs)), progress, color=colors)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")  # a latency far under its bound and one far over it both stay legible
    ax.set_yticks(range(len(recs)))
    ax.set_yticklabels([t["target"] for t in recs], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("measured / target, log scale (>= 1: met)")
    ax.set_title(
        f"issue 11 targets: {data['mode']} run, median of {data['repeats']}, "
        f"{data['cpu_count']} CPUs"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", help="output of bench.py --json")
    default_out = Path(__file__).resolve().parent.parent / "docs" / "img"
    ap.add_argument("--outdir", type=Path, default=default_out)
    args = ap.parse_args(argv)
    data = json.loads(Path(args.json).read_text())
    args.outdir.mkdir(parents=True, exist_ok=True)
    sections = data.get("sections") or {"all": list(data["results"])}
    for name, keys in sections.items():
        path = args.outdir / f"bench_{name}.png"
        if plot_section(name, keys, data, path):
            print(f"wrote {path}")
    path = args.outdir / "bench_targets.png"
    if plot_targets(data, path):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
