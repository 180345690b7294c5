"""Side-by-side benchmark: shared_queue vs multiprocessing.Queue vs faster-fifo vs pyzmq.

Run from the repository root::

    python benchmarks/bench.py                  # full run, 5 repeats, all sections
    python benchmarks/bench.py --quick          # fewer items, 3 repeats, < 90 s
    python benchmarks/bench.py --section arrays,async --quick
    python benchmarks/bench.py --repeats 7 --json out.json
    python benchmarks/bench.py --impl mp,ff     # only some of sq,mp,ff,zmq,nats
    python benchmarks/bench.py --workload pingpong,wakeup --no-ref
    python benchmarks/bench.py --variant KEY=A --variant KEY=B   # see impls/sharedqueue.py
    python benchmarks/bench.py --variant nosafety --section small
    python benchmarks/bench.py --section nats   # NatsQueue vs plain nats-py vs shared memory
    python benchmarks/plot.py out.json          # PNG bar charts into docs/img/

This file is only the entry point; the benchmark is the package ``sqbench/`` beside it
(start with its ``__init__.py``: a map of the modules, the method and the rules).
Each section's workloads are described in ``sqbench/workloads/<section>.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# `import sqbench` from here (also when run by runpy, as `python -m shared_queue bench`
# does), and `import shared_queue` from the checkout rather than an installed copy.
for _path in (_HERE, _HERE.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from sqbench.cli import main  # noqa: E402 - needs the path set above

if __name__ == "__main__":
    sys.exit(main())
