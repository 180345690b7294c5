"""Synchronisation: kernel-released byte locks, semaphore waits with deadlines, liveness.

Two kinds of primitive, chosen for what each survives (see docs/design.md#crash-behaviour):

* **Locks** are Linux open-file-description (OFD) byte-range locks on the segment's file. The
  kernel drops them when the holder's last descriptor closes, so a process killed inside a
  critical section never leaves the lock held. An OFD lock belongs to an open file
  description, not to a thread, so each thread (and each forked child) locks through a
  descriptor of its own.
* **Counts** are POSIX named semaphores (``posix_ipc``): blocked waiters sleep in
  ``sem_timedwait`` and wake as soon as the other side posts.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import os
import signal
import struct
import threading
import time
from typing import Any, Final

import posix_ipc

PRODUCER_LOCK: Final = 0  # byte offsets locked in the segment file
CONSUMER_LOCK: Final = 1

# struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+pad).
# OFD locks require l_pid == 0.
_FLOCK = "hhqqi4x"
LOCK_OPS: Final = {
    byte: (
        struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0),
        struct.pack(_FLOCK, fcntl.F_UNLCK, os.SEEK_SET, byte, 1, 0),
    )
    for byte in (PRODUCER_LOCK, CONSUMER_LOCK)
}
SETLKW: Final[int] = fcntl.F_OFD_SETLKW  # Linux-only constants
SETLK: Final[int] = fcntl.F_OFD_SETLK


_BACKOFF_FIRST: Final = 20e-6  # seconds; a lock is normally held for microseconds
_BACKOFF_MAX: Final = 2e-3


def lock(fd: int, op: bytes, deadline: float | None) -> bool:
    """Take the OFD lock ``op`` through ``fd`` by ``deadline`` (monotonic); True if taken.

    ``deadline=None`` waits as long as it takes, asleep in the kernel. With a deadline, a
    busy lock is retried with a backoff from 20 us to 2 ms, because Linux has no timed OFD
    lock: a holder that is stopped (SIGSTOP) or descheduled must not stretch the caller's
    timeout. An uncontended lock is one system call either way.
    """
    if _try_lock(fd, op):
        return True
    if deadline is None:
        fcntl.fcntl(fd, SETLKW, op)  # EINTR is retried by Python (PEP 475)
        return True
    pause = _BACKOFF_FIRST
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(2 * pause, _BACKOFF_MAX)
        if _try_lock(fd, op):
            return True


def _try_lock(fd: int, op: bytes) -> bool:
    try:
        fcntl.fcntl(fd, SETLK, op)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True


def unlock(fd: int, op: bytes) -> None:
    """Release an OFD lock taken with ``lock``."""
    fcntl.fcntl(fd, SETLK, op)


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
