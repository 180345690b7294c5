"""``python -m shared_queue`` / ``shared-queue``: list, inspect, remove and clean up queues.

Exit codes: 0 success, 1 failure (no such queue, nothing to bench), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import _registry as R
from ._segment import base_name, describe


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"shared-queue: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shared-queue", description="Inspect and clean up shared_queue queues in /dev/shm."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("ls", help="list queues")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("stat", help="show a queue's metrics")
    _name_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--watch", action="store_true", help="refresh a live line until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, default=0, help="stop --watch after this many lines")
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("rm", help="unlink a queue and its semaphores")
    _name_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("gc", help="remove queues and leftovers that no live process uses")
    p.add_argument("--dry-run", action="store_true", help="only say what would go")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("bench", help="a short run of the benchmark (needs a source checkout)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="run the quick start")
    p.set_defaults(func=cmd_demo)
    return parser


def _name_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the queue's name")
    p.add_argument("--run-id", default="", help="the queue's run_id")


def _find(name: str, run_id: str) -> R.QueueInfo:
    info = R.inspect(base_name(name, run_id))
    if info is None:
        raise FileNotFoundError(f"no queue {describe(name, run_id)}")
    return info


def cmd_ls(args: argparse.Namespace) -> int:
    queues = R.find_queues()
    if args.json:
        rows = []
        for q in queues:
            row = q.as_dict()
            row["users"] = R.users(q.base)
            rows.append(row)
        print(json.dumps(rows, indent=2))
        return 0
    if not queues:
        print("no queues")
        return 0
    header = ("NAME", "RUN_ID", "MODE", "CAPACITY", "ITEM_SIZE", "ITEMS", "USED%", "CREATOR",
              "BYTES")  # fmt: skip
    rows_text = [
        (q.name, q.run_id or "-", q.mode, str(q.capacity), str(q.item_size), str(q.qsize),
         f"{q.utilization:.1f}", f"{q.creator_pid} {'alive' if q.creator_alive else 'dead'}",
         _human(q.bytes_used))
        for q in queues
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows_text]) for i in range(len(header))]
    for r in [header, *rows_text]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    info = _find(args.name, args.run_id)
    if not args.watch:
        if args.json:
            row = info.as_dict()
            row["users"] = R.users(info.base)
            print(json.dumps(row, indent=2))
        else:
            for key, value in info.as_dict().items():
                print(f"{key:>20}: {value}")
        return 0
    lines = 0
    prev = (time.monotonic(), info.header["puts"], info.header["gets"])
    while True:
        time.sleep(args.interval)
        info = _find(args.name, args.run_id)
        now = (time.monotonic(), info.header["puts"], info.header["gets"])
        dt = now[0] - prev[0]
        puts, gets = (now[1] - prev[1]) / dt, (now[2] - prev[2]) / dt
        prev = now
        bar = "#" * round(info.utilization / 5)
        line = (
            f"{info.name} [{bar:<20}] {info.qsize}/{info.capacity} "
            f"{info.utilization:5.1f}%  puts/s {puts:9.0f}  gets/s {gets:9.0f}"
        )
        if args.json:
            print(json.dumps({"queue_size": info.qsize, "puts_per_s": puts, "gets_per_s": gets}))
        elif sys.stdout.isatty():
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)
        lines += 1
        if args.count and lines >= args.count:
            if sys.stdout.isatty() and not args.json:
                print()
            return 0


def cmd_rm(args: argparse.Namespace) -> int:
    removed = R.remove(args.name, args.run_id)
    if not removed:
        raise FileNotFoundError(f"no queue {describe(args.name, args.run_id)}")
    if args.json:
        print(json.dumps({"removed": removed}))
    else:
        for entry in removed:
            print(f"removed /dev/shm/{entry}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    found = R.garbage()
    if not args.dry_run:
        R.remove_entries([entry for entry, _ in found])
    if args.json:
        print(json.dumps({"dry_run": args.dry_run,
                          "entries": [{"entry": e, "reason": r} for e, r in found]}))  # fmt: skip
    else:
        verb = "would remove" if args.dry_run else "removed"
        for entry, reason in found:
            print(f"{verb} /dev/shm/{entry}: {reason}")
        if not found:
            print("nothing to collect")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
    if not script.exists():
        print("shared-queue: bench runs benchmarks/bench.py of a source checkout", file=sys.stderr)
        return 1
    sys.argv = [str(script), "--quick"]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import main as demo

    demo()
    return 0


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
