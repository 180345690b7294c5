"""What every module of the benchmark shares: the process context, timeouts, names, errors."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import subprocess
from pathlib import Path

# Worker processes are forked: they inherit the queues' handles, the lock swap and the
# implementation objects, so nothing a child needs has to pickle.
CTX = mp.get_context("fork")
OP_TIMEOUT = 30.0  # seconds: any single blocking queue call
RUN_TIMEOUT = 120.0  # seconds: one workload run, children included
KIB, MIB = 1 << 10, 1 << 20
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
_names = itertools.count()


class BenchError(RuntimeError):
    """One run of one workload failed (child error, crash or timeout)."""


def unique_name(prefix: str) -> str:
    """``<prefix>_<pid>_<n>``: unique within the run, and findable in /dev/shm afterwards."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


def dist_version(dist: str) -> str:
    """Installed version of a distribution, or "" if unknown."""
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return ""


def git_rev() -> str:
    """``git <describe>`` of the checkout that is benchmarked."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return f"git {out.stdout.strip()}" if out.returncode == 0 else "uncommitted"
    except Exception:
        return ""
