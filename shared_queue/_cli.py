"""``python -m shared_queue`` / ``shared-queue``: list, inspect, remove and clean up queues.

Exit codes: 0 success, 1 failure (no such queue, nothing to bench), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import _registry as R
from ._names import base_name, describe, queue_of, run_id_prefix


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    # bench hands what it does not know to benchmarks/bench.py; every other command refuses it.
    args, rest = parser.parse_known_args(argv)
    if rest and args.func is not cmd_bench:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        with _skip_notes(getattr(args, "verbose", False)):
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
    _run_id_filter(p, "list only the queues of this run_id")
    _verbose_arg(p)
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
    _run_id_filter(p, "collect only what belongs to this run_id")
    _verbose_arg(p)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser(
        "bench",
        help="run benchmarks/bench.py with its own flags, --quick if none (source checkout)",
        add_help=False,  # --help goes to bench.py too, after _BENCH_HELP
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="run the quick start")
    p.set_defaults(func=cmd_demo)
    return parser


def _verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="say on stderr which entries named like a queue's were skipped, and why",
    )  # fmt: skip


@contextlib.contextmanager
def _skip_notes(enabled: bool) -> Iterator[None]:
    """While enabled, print the registry's one-line notes on skipped entries to stderr."""
    if not enabled:
        yield
        return
    log = logging.getLogger(R.__name__)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shared-queue: %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _name_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the queue's name")
    p.add_argument("--run-id", default="", help="the queue's run_id")


def _run_id_filter(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--run-id", metavar="ID", help=what + " ('' for queues without one)")


def _in_namespace(entry: str, run_id: str | None) -> bool:
    """Whether the /dev/shm ``entry`` (segment, temporary file or semaphore) is of ``run_id``.

    None selects every namespace.
    """
    if run_id is None:
        return True
    # base_name() writes the run_id's length first, so this prefix belongs to one run_id only.
    base = queue_of(entry)
    return base is not None and base.startswith(run_id_prefix(run_id))


def _find(name: str, run_id: str) -> R.QueueInfo:
    info = R.inspect(base_name(name, run_id))
    if info is None:
        raise _not_found(name, run_id)
    return info


def _not_found(name: str, run_id: str) -> FileNotFoundError:
    """The error for a missing queue, naming the run_ids that do have a queue ``name``."""
    message = f"no queue {describe(name, run_id)}"
    others = sorted(
        q.run_id
        for q in R.find_queues()
        if q.run_id != run_id and q.base == base_name(name, q.run_id)
    )
    if len(others) == 1 and others[0]:
        message += (
            f"; a queue '{name}' exists with run_id '{others[0]}'"
            f" (use --run-id {shlex.quote(others[0])})"
        )
    elif len(others) == 1:
        message += f"; a queue '{name}' exists without a run_id (leave out --run-id)"
    elif others:
        listed = ", ".join(f"'{r}'" for r in others)
        message += f"; queues '{name}' exist with run_ids {listed} (use --run-id ID)"
    return FileNotFoundError(message)


def cmd_ls(args: argparse.Namespace) -> int:
    rows = [q.as_dict() for q in R.find_queues() if _in_namespace(q.base, args.run_id)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no queues" + ("" if args.run_id is None else f" with run_id '{args.run_id}'"))
        return 0
    header = ("NAME", "RUN_ID", "MODE", "CAPACITY", "SPARE", "ITEM_SIZE", "ITEMS", "USED%",
              "CREATOR", "BYTES")  # fmt: skip
    rows_text = [
        (r["name"], r["run_id"] or "-", r["mode"], str(r["queue_capacity"]),
         str(r["spare_slots"]), str(r["queue_item_size_bytes"]), str(r["queue_size"]),
         f"{r['queue_utilization_percent']:.1f}",
         f"{r['creator_pid']} {'alive' if r['creator_alive'] else 'dead'}",
         _human(r["bytes_used"]))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows_text]) for i in range(len(header))]
    for r in [header, *rows_text]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    row = _find(args.name, args.run_id).as_dict()
    if not args.watch:
        if args.json:
            print(json.dumps(row, indent=2))
        else:
            width = max(map(len, row))
            for key, value in row.items():
                print(f"{key:>{width}}: {value}")
        return 0
    lines = 0
    prev, prev_t = row, time.monotonic()
    while True:
        time.sleep(args.interval)
        row = _find(args.name, args.run_id).as_dict()
        now = time.monotonic()
        dt = now - prev_t
        row["puts_per_s"] = (row["total_puts"] - prev["total_puts"]) / dt
        row["gets_per_s"] = (row["total_gets"] - prev["total_gets"]) / dt
        prev, prev_t = row, now
        used = row["queue_utilization_percent"]
        line = (
            f"{row['name']} [{'#' * round(used / 5):<20}] "
            f"{row['queue_size']}/{row['queue_capacity']} {used:5.1f}%  "
            f"puts/s {row['puts_per_s']:9.0f}  gets/s {row['gets_per_s']:9.0f}"
        )
        if args.json:
            print(json.dumps(row), flush=True)
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
        raise _not_found(args.name, args.run_id)
    if args.json:
        print(json.dumps({"removed": removed}))
    else:
        for entry in removed:
            print(f"removed /dev/shm/{entry}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    found = [(entry, why) for entry, why in R.garbage() if _in_namespace(entry, args.run_id)]
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


_BENCH_HELP = """\
usage: shared-queue bench [BENCH.PY ARGUMENTS ...]

Run benchmarks/bench.py of a source checkout: every argument goes to it unchanged, so `bench`
takes exactly bench.py's flags (`bench --section arrays --quick` is `python benchmarks/bench.py
--section arrays --quick`). With no arguments it is a quick run, `bench.py --quick`; any
argument replaces that default. The exit status is bench.py's. bench.py's own help follows.
"""


def cmd_bench(args: argparse.Namespace) -> int:
    argv = args.rest or ["--quick"]
    if "-h" in argv or "--help" in argv:
        print(_BENCH_HELP, flush=True)
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
    if not script.exists():
        print("shared-queue: bench runs benchmarks/bench.py of a source checkout", file=sys.stderr)
        return 1
    # A process of its own, as `python benchmarks/bench.py` runs: the script's directory on
    # sys.path, its own exit status, and a Ctrl-C from the terminal reaches it directly.
    proc = subprocess.Popen([sys.executable, str(script), *argv])
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.wait()  # the terminal sent it SIGINT too: let it remove its queues
        raise
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


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
