"""Smoke test of an installed shared_queue wheel, run from outside the source tree.

Run by .ci/wheel and by cibuildwheel's test-command (pyproject.toml), from a directory that holds
copies of tests/, pyproject.toml and this file but no ``shared_queue/``:

    python .ci/wheel_smoke.py [--tests TEST_FILE ...]

It fails (exit 1, naming the paths) unless ``shared_queue`` and its compiled core
``shared_queue._core`` are imported from this interpreter's site-packages: a checkout on
``sys.path`` or an editable install would otherwise pass unnoticed. Then it checks the version
against the installed metadata, puts and gets through a queue with a name no other run uses,
unlinks it and checks that /dev/shm holds nothing of it. With ``--tests``, it runs those test
files with pytest in this same process, so they use the very module checked here.
"""

from __future__ import annotations

import argparse
import glob
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path
from typing import NoReturn

DIST = "shared-multiprocess-queue"


def fail(message: str) -> NoReturn:
    """Stop the run with one line that says what is wrong."""
    sys.exit(f"wheel smoke test FAILED: {message}")


def check_origin() -> None:
    """Fail unless the package and its compiled core come from this interpreter's site-packages."""
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}

    def check(module: str, origin: str | None) -> None:
        where = Path(origin or "").resolve()
        if not any(where.is_relative_to(root) for root in site):
            fail(
                f"{module} would be imported from {where}, not from the installed wheel in "
                f"{' or '.join(map(str, sorted(site)))}: a source tree or an editable install "
                f"is on sys.path {sys.path}"
            )

    # Located before it is imported: importing a source tree's package may fail in other ways.
    spec = importlib.util.find_spec("shared_queue")
    if spec is None:
        fail("shared_queue is not installed")
    check("shared_queue", spec.origin)
    import shared_queue
    from shared_queue import _core as core

    check("shared_queue._core", core.__file__)
    if not isinstance(core.__loader__, importlib.machinery.ExtensionFileLoader):
        fail(f"shared_queue._core is not a compiled extension: {core.__file__}")
    installed = metadata.version(DIST)
    if shared_queue.__version__ != installed:
        fail(f"shared_queue.__version__ is {shared_queue.__version__}, {DIST} is {installed}")
    print(f"shared_queue {installed} from {Path(shared_queue.__file__ or '').parent}")
    print(f"compiled core: {core.__file__}")


def round_trip() -> None:
    """Create a queue with a unique name, put and get through it, unlink it, check /dev/shm."""
    import numpy as np

    from shared_queue import Empty, SharedMemoryQueue
    from shared_queue._names import SHM_DIR, base_name

    name, run_id = "smoke", f"wheel-{os.getpid()}-{time.monotonic_ns()}"
    q = SharedMemoryQueue(name, create=True, capacity=8, item_size=1024, run_id=run_id)
    try:
        other = SharedMemoryQueue(name, create=False, run_id=run_id)  # a second handle, by name
        try:
            items = [{"n": 1, "s": "x" * 100}, (2.5, None), lambda x: x + 1]
            for item in items[:2]:
                q.put(item, timeout=5)
            q.put(items[2], timeout=5)  # cloudpickle semantics: a lambda travels
            got = [other.get(timeout=5) for _ in items]
            if got[:2] != items[:2] or got[2](41) != 42:
                fail(f"put {items}, got {got}")
            q.put_batch([np.arange(5), "end"], timeout=5)
            batch = other.get_batch(10, timeout=5)
            if len(batch) != 2 or not np.array_equal(batch[0], np.arange(5)) or batch[1] != "end":
                fail(f"put_batch([arange(5), 'end']), get_batch gave {batch}")
            try:
                extra = other.get_nowait()
            except Empty:
                pass
            else:
                fail(f"get_nowait on an emptied queue returned {extra!r}")
        finally:
            other.close()
    finally:
        q.unlink()
        q.close()
    left = glob.glob(os.path.join(SHM_DIR, f"*{base_name(name, run_id)}*"))
    if left:
        fail(f"the queue left {left} behind after unlink()")
    print("round trip: put, get, put_batch, get_batch, unlink: ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", nargs="+", default=[], help="test files to run with pytest")
    args = parser.parse_args()
    check_origin()
    round_trip()
    if not args.tests:
        return 0
    import pytest

    return int(pytest.main(["-q", "-p", "no:cacheprovider", *args.tests]))


if __name__ == "__main__":
    sys.exit(main())
