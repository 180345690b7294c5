"""Semaphore waits for the asyncio layer, and liveness of the processes that hold slots.

The hot path (locks, counts, copies) is compiled (``_core``); what is here runs in Python:
the waiter threads of the async methods sleep on a queue's POSIX named semaphores
(``posix_ipc``) through ``wait``, and ``process_start_time``/``process_alive`` tell a live
process from a dead one whose pid was reused (the command line and the core use the same rule).
"""

from __future__ import annotations

import importlib
import signal
import threading
import time
from typing import Any, Final

import posix_ipc


def wait(sem: posix_ipc.Semaphore, timeout: float) -> bool:
    """Take one count of ``sem``, waiting at most ``timeout`` seconds; True if taken.

    ``timeout <= 0`` tries without waiting. In the main thread, signals that have a Python
    handler are held back during the wait and run as it returns: posix_ipc runs a handler
    itself when a signal interrupts the wait and drops any exception it raises except
    KeyboardInterrupt, so a handler that raises (SystemExit from a SIGTERM handler, a timeout
    alarm) would otherwise never end a blocked call. Such a handler therefore runs at most one
    wait slice (``recovery_interval``) late; Ctrl-C still interrupts at once.
    """
    if timeout <= 0:
        try:
            sem.acquire(0)
        except posix_ipc.BusyError:
            return False
        return True
    if threading.current_thread() is threading.main_thread():
        held = _signals_with_handlers()
        if held:
            old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
            try:
                return _wait(sem, timeout)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)  # held signals run now
    return _wait(sem, timeout)


def _wait(sem: posix_ipc.Semaphore, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sem.acquire(timeout)
        except posix_ipc.BusyError:
            return False
        except posix_ipc.SignalError:  # a signal without a Python handler: wait on
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return False
            continue
        return True


# The C module: its getsignal skips the enum conversions that make signal's cost ~1 us a call.
_raw_signal: Any
try:
    _raw_signal = importlib.import_module("_signal")
except ImportError:  # pragma: no cover - not CPython
    _raw_signal = signal

_SIGNALS: Final = tuple(range(1, signal.NSIG))


def _signals_with_handlers() -> list[int]:
    """Signals whose Python handler could raise (SIGINT's default KeyboardInterrupt aside).

    About 4 us for all of them, so it is asked afresh before every wait.
    """
    held = []
    for sig in _SIGNALS:
        try:
            handler = _raw_signal.getsignal(sig)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not signal.default_int_handler:
            held.append(sig)
    return held


def process_start_time(pid: int) -> int | None:
    """Return the start time of process ``pid`` in clock ticks since boot, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces; after it come
    # the state (field 3) and, 19 fields on, the start time (field 22).
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # exited, not yet reaped: as good as gone
        return None
    return int(fields[19])


def process_alive(pid: int, start_time: int) -> bool:
    """Return whether the process ``pid`` that started at ``start_time`` still runs.

    Comparing start times tells a reused pid from the original process.
    """
    return pid > 0 and process_start_time(pid) == start_time
