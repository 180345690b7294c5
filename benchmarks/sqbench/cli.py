"""The command line of ``benchmarks/bench.py``: choose what to run, run it, report it."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

from . import __doc__ as package_doc
from .harness import leaked_entries, measure_all, shm_entries
from .impls import IMPL_KEYS, build_impls
from .impls.nosafety import NOSAFETY
from .report import Run, json_payload, print_markdown
from .workloads import SECTIONS, WL_BY_KEY, WORKLOADS, Config


def parse_variant(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, raw = part.partition("=")
        if not sep and key.strip() == NOSAFETY:
            out[key.strip()] = True
            continue
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(
                f"bad --variant item {part!r}, want key=value or {NOSAFETY}"
            )
        try:
            out[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(package_doc or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer items, 3 repeats (< 90 s)")
    ap.add_argument("--repeats", type=int, help="repeats per workload (default 5, quick 3)")
    ap.add_argument("--json", metavar="PATH", help="also write raw results as JSON")
    ap.add_argument(
        "--impl",
        default=",".join(IMPL_KEYS),
        help=f"comma-separated subset of {','.join(IMPL_KEYS)} (default: all)",
    )
    ap.add_argument(
        "--section",
        default=",".join(SECTIONS),
        help="comma-separated subset of: " + ",".join(SECTIONS) + " (default: all)",
    )
    ap.add_argument(
        "--workload",
        help="comma-separated subset of the sections' workloads: "
        + ",".join(w.key for w in WORKLOADS),
    )
    ap.add_argument("--no-ref", action="store_true", help="skip the posix_ipc reference row")
    ap.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="K=V[,K=V]",
        help="shared_queue variant (repeatable, one column each); also: nosafety",
    )
    return ap.parse_args(argv)


def _non_empty(sec_keys: dict[str, list[str]]) -> dict[str, list[str]]:
    return {s: ks for s, ks in sec_keys.items() if ks}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    repeats = args.repeats or (3 if args.quick else 5)
    sections = [s.strip() for s in args.section.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            raise SystemExit(f"unknown --section {s!r} (choose from {', '.join(SECTIONS)})")
    wanted = set(filter(None, (args.workload or "").split(","))) or set(WL_BY_KEY)
    unknown = wanted - set(WL_BY_KEY)
    if unknown:
        raise SystemExit(f"unknown --workload {', '.join(sorted(unknown))}")
    sec_keys = _non_empty({s: [k for k in SECTIONS[s] if k in wanted] for s in sections})
    workloads = [WL_BY_KEY[k] for k in dict.fromkeys(k for ks in sec_keys.values() for k in ks)]
    if not workloads:
        raise SystemExit("no workload selected")

    all_impls = build_impls([k.strip() for k in args.impl.split(",") if k.strip()], args.variant)
    all_impls = [i for i in all_impls if any(w.wants(i) for w in workloads)]
    sec_keys = _non_empty(
        {
            s: [k for k in ks if WL_BY_KEY[k].ref or any(WL_BY_KEY[k].wants(i) for i in all_impls)]
            for s, ks in sec_keys.items()
        }
    )
    workloads = [w for w in workloads if any(w.key in ks for ks in sec_keys.values())]
    if not workloads:
        raise SystemExit("no workload has an implementation to run (see --impl)")
    impls, missing = [], {}
    for impl in all_impls:
        reason = impl.unavailable()
        if reason:
            missing[impl.label] = reason
            print(f"note: {impl.label} is n/a: {reason}", file=sys.stderr)
        else:
            impls.append(impl)

    for section, keys in list(sec_keys.items()):  # rows whose backend is missing (no NATS)
        lost = [k for k in keys if WL_BY_KEY[k].needs and not any(
            i.key == WL_BY_KEY[k].needs for i in impls)]  # fmt: skip
        if lost:
            print(f"note: skipped {', '.join(lost)} (no {WL_BY_KEY[lost[0]].needs} "
                  "implementation available)", file=sys.stderr)  # fmt: skip
            sec_keys[section] = [k for k in keys if k not in lost]
    sec_keys = _non_empty(sec_keys)
    workloads = [w for w in workloads if any(w.key in ks for ks in sec_keys.values())]
    if not workloads:
        raise SystemExit("no workload left to run (see the notes above)")

    versions: dict[str, str] = {}  # one entry per library; taken before the tree may change
    for impl in impls:
        base_label = impl.label.split("[")[0]
        if base_label not in versions:
            versions[base_label] = impl.version()
    shm_before = shm_entries()
    measured = measure_all(workloads, impls, cfg, repeats, floors=not args.no_ref)
    run = Run(
        quick=args.quick,
        repeats=repeats,
        cfg=cfg,
        sections=sec_keys,
        workloads=workloads,
        columns=all_impls,
        impls=impls,
        unavailable=missing,
        versions=versions,
        measured=measured,
        leaked=leaked_entries(shm_before),
    )
    print_markdown(run)
    if args.json:
        Path(args.json).write_text(json.dumps(json_payload(run), indent=2))
    return 0
