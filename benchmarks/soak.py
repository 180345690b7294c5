"""Random-kill soak: producers and consumers SIGKILLed and replaced at random instants.

The same soak as ``tests/test_crash.py::test_random_kills`` (the logic lives once, in
``tests/_crash_children.py``), for long runs. Run from the repository root::

    python benchmarks/soak.py --rounds 200 --seed 12345
    python benchmarks/soak.py --rounds 20 --start-method spawn --duration 5

Each round creates a queue, runs producers and consumers (half the rounds under fork, half
under spawn unless ``--start-method`` says otherwise), SIGKILLs a random one every 10-250 ms
and starts a replacement, then stops them, drains the queue and checks: no duplicate, no torn
item, every committed item delivered except at most one batch per killed consumer, and the
queue still fills to capacity and drains. A seed reproduces the kill schedule; where each
kill lands in a victim's code depends on scheduling. Exit status 1 on the first failed round.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile

# The soak code sits with the tests; spawned children inherit this sys.path.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import _crash_children as cc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of kills per round")
    parser.add_argument(
        "--recovery-interval", type=float, default=0.2, help="the queue's recovery_interval"
    )
    parser.add_argument("--start-method", choices=["fork", "spawn", "mixed"], default="mixed")
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    methods = ("fork", "spawn") if args.start_method == "mixed" else (args.start_method,)
    print(f"soak: seed={seed} rounds={args.rounds} start methods={','.join(methods)}", flush=True)
    name = f"soak{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="shared_queue_soak-") as workdir:
        try:
            results = cc.soak(
                name,
                seed,
                args.rounds,
                workdir,
                duration=args.duration,
                ri=args.recovery_interval,
                start_methods=methods,
                report=lambda line: print(line, flush=True),
            )
        except cc.SoakFailure as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    kills = sum(r.kills["P"] + r.kills["C"] for r in results)
    delivered = sum(r.delivered for r in results)
    print(f"ok: {len(results)} rounds, {kills} kills, {delivered} items delivered, seed={seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
