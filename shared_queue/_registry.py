"""What queues exist in /dev/shm, who uses them, and removing them: the CLI's ground truth.

Only entries that are provably the library's are ever touched: names as ``_names`` builds them
(a segment, a temporary segment, a semaphore), regular files owned by this user, and for a
segment a header with the magic. Entries are opened without blocking or following links
(``_shm.open_checked``), so a FIFO or a link named like a queue never hangs or misleads a scan.
Each entry named like ours but skipped is logged at INFO on this module's logger, one line
each: the CLI's ``--verbose`` shows them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _layout as L
from . import _metrics
from ._errors import IncompatibleQueueError
from ._names import SHM_DIR, base_name, parse_entry
from ._shm import check_stat, open_checked
from ._sync import process_alive

_log = logging.getLogger(__name__)


class _Skip(Exception):
    """An entry named like ours that is not read as a queue; the message says why."""


@dataclass
class QueueInfo:
    """One queue segment found in /dev/shm."""

    base: str
    name: str
    run_id: str
    capacity: int
    item_size: int
    mode: str  # pickle, raw or typed
    size: int
    bytes_used: int
    creator_pid: int
    creator_alive: bool
    nonce: int
    header: dict[str, Any]

    @property
    def qsize(self) -> int:
        """Items a get can return (approximate while others operate), as ``qsize()`` counts."""
        return _metrics.queue_size(self.header)

    def as_dict(self) -> dict[str, Any]:
        """The record ``stat --json`` prints: ``get_metrics()``'s keys plus the CLI's own.

        The CLI's own keys: name, run_id, base, mode, creator_pid, creator_alive, users,
        segment_bytes, bytes_used (docs/cli.md says what each means).
        """
        return {
            "name": self.name,
            "run_id": self.run_id,
            "base": self.base,
            "mode": self.mode,
            **_metrics.record(self.header),
            "creator_pid": self.creator_pid,
            "creator_alive": self.creator_alive,
            "users": users(self.base),
            "segment_bytes": self.size,
            "bytes_used": self.bytes_used,
        }


def read_header(path: str) -> dict[str, Any] | None:
    """Return the header fields of the segment at ``path``, or None if it is not a queue.

    Not a queue: gone, not a regular file of this user closed to others (see
    ``_shm.open_checked``), too short, or without the magic and layout version. Never blocks.
    """
    try:
        return _read_header(path)
    except _Skip as skip:
        if str(skip):
            _log.info("skipped: %s", skip)
        return None


def _read_header(path: str) -> dict[str, Any]:
    try:
        fd = open_checked(path)
    except FileNotFoundError:  # unlinked meanwhile: nothing to report
        raise _Skip("") from None
    except (PermissionError, IncompatibleQueueError) as exc:
        raise _Skip(str(exc)) from None
    except OSError as exc:
        raise _Skip(f"{path} cannot be opened: {exc.strerror}") from None
    try:
        raw = os.pread(fd, L.HEADER_SIZE, 0)
    except OSError as exc:
        raise _Skip(f"{path} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) < L.HEADER_SIZE:
        raise _Skip(f"{path} ({len(raw)} bytes) is not a shared_queue segment")
    h = np.frombuffer(raw, L.HEADER_DTYPE, count=1)[0]
    if int(h["magic"]) != L.MAGIC:
        raise _Skip(f"{path} is not a shared_queue segment")
    if int(h["version"]) != L.VERSION:
        raise _Skip(
            f"{path} has layout version {int(h['version'])}; this shared_queue reads "
            f"version {L.VERSION}"
        )
    out: dict[str, Any] = {}
    for name in L.HEADER_DTYPE.names or ():
        value = h[name]
        out[name] = value.decode(errors="replace") if isinstance(value, bytes) else value
    for name, value in out.items():
        if isinstance(value, np.integer):
            out[name] = int(value)
    return out


def find_queues() -> list[QueueInfo]:
    """Return every queue segment in /dev/shm, sorted by name; each queue once."""
    found = []
    for entry in sorted(os.listdir(SHM_DIR)):
        parsed = parse_entry(entry)
        if parsed is None or parsed.kind != "segment":
            continue
        info = inspect(entry)
        if info is not None:
            found.append(info)
    return found


def inspect(base: str) -> QueueInfo | None:
    """Return what the segment ``base`` in /dev/shm says about itself, None if not a queue.

    Also None for another name of a queue (a hard link, or a renamed file): the name its header
    gives must lead to ``base``, so a queue is never listed twice.
    """
    path = os.path.join(SHM_DIR, base)
    h = read_header(path)
    if h is None:
        return None
    try:
        st = os.lstat(path)
        check_stat(st, path)
    except (OSError, IncompatibleQueueError):  # unlinked or replaced meanwhile
        return None
    if not _named_by(base, h["name"], h["run_id"]):
        _log.info(
            "skipped: %s is another name of the queue '%s' (run_id '%s')",
            path, h["name"], h["run_id"],
        )  # fmt: skip
        return None
    flags = h["flags"]
    mode = "typed" if flags & L.FLAG_TYPED else "raw" if flags & L.FLAG_RAW else "pickle"
    return QueueInfo(
        base=base,
        name=h["name"],
        run_id=h["run_id"],
        capacity=h["capacity"],
        item_size=h["item_size"],
        mode=mode,
        size=st.st_size,
        bytes_used=st.st_blocks * 512,
        creator_pid=h["creator_pid"],
        creator_alive=process_alive(h["creator_pid"], h["creator_start"]),
        nonce=h["nonce"],
        header=h,
    )


def _named_by(base: str, name: str, run_id: str) -> bool:
    """Whether the queue ``name`` (run_id ``run_id``) read from a header has the file ``base``.

    True when the header cannot tell: the fields keep only NAME_FIELD bytes.
    """
    if max(len(name.encode()), len(run_id.encode())) >= L.NAME_FIELD:
        return True
    try:
        return base_name(name, run_id) == base
    except ValueError:  # a name this version refuses
        return False


def users(base: str) -> list[int]:
    """Return the pids of processes that hold the segment ``base`` open (or mapped)."""
    try:
        target = os.lstat(os.path.join(SHM_DIR, base))
    except FileNotFoundError:
        return []
    key = (target.st_dev, target.st_ino)
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if _opens(pid, key):
            pids.append(int(pid))
    return pids


def _opens(pid: str, key: tuple[int, int]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or not ours to look at
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            if (st.st_dev, st.st_ino) == key:
                return True
    return False


def remove(name: str, run_id: str = "") -> list[str]:
    """Remove the queue ``name`` and every leftover of its creations; return what went."""
    return _remove_base(base_name(name, run_id))


def _remove_base(base: str) -> list[str]:
    # The segment itself only if its header says it is a queue; leftovers by their names.
    path = os.path.join(SHM_DIR, base)
    ours = read_header(path) is not None
    if not ours and os.path.lexists(path):
        return []  # a segment this user may not read: its semaphores may be in use too
    removed = []
    for entry in os.listdir(SHM_DIR):
        parsed = parse_entry(entry)
        if (
            parsed is not None
            and parsed.base == base
            and (parsed.kind != "segment" or ours)
            and _unlink(entry)
        ):
            removed.append(entry)
    return sorted(removed)


def _leftover(entry: str) -> os.stat_result | None:
    """The status of a temporary file or semaphore ``entry`` if it is a file of this user.

    Its mode does not matter: it is only ever removed, never read.
    """
    path = os.path.join(SHM_DIR, entry)
    try:
        st = os.lstat(path)
        check_stat(st, path, "file of shared_queue", private=False)
    except FileNotFoundError:
        return None
    except (PermissionError, IncompatibleQueueError) as exc:
        _log.info("skipped: %s", exc)
        return None
    return st


def _unlink(entry: str) -> bool:
    """Remove ``entry`` if it is a file of this user; whether it went."""
    if _leftover(entry) is None:
        return False
    try:
        os.unlink(os.path.join(SHM_DIR, entry))
    except FileNotFoundError:
        return False
    return True


def garbage(min_age: float = 10.0) -> list[tuple[str, str]]:
    """Return (entry, reason) for what no live process uses: dead queues and leftovers.

    Leftovers (temporary files, semaphores of no queue) younger than ``min_age`` seconds are
    spared: they may belong to a creation in progress.
    """
    entries = sorted(os.listdir(SHM_DIR))
    live_nonces: dict[str, int] = {}
    out = []
    for info in find_queues():
        live_nonces[info.base] = info.nonce
        if not info.creator_alive and not users(info.base):
            out.append((info.base, "queue whose creator is dead and that no process has open"))
    collected = {entry for entry, _ in out}
    # A semaphore whose segment exists but could not be read (another user's, a FIFO, ...)
    # is spared: nothing says which creation the segment is of.
    segments = {p.base for p in map(parse_entry, entries) if p and p.kind == "segment"}
    now = time.time()
    for entry in entries:
        parsed = parse_entry(entry)
        if parsed is None or parsed.kind == "segment":
            continue
        st = _leftover(entry)
        if st is None or now - st.st_ctime < min_age:
            continue
        if parsed.kind == "temp":
            if not users(entry):
                out.append((entry, "temporary file of a creation that did not finish"))
        elif parsed.base not in collected and (
            parsed.base not in segments
            or (parsed.base in live_nonces and live_nonces[parsed.base] != parsed.nonce)
        ):
            out.append((entry, "semaphore of no existing queue"))
    return out


def remove_entries(entries: list[str]) -> None:
    """Unlink what ``garbage`` named: a queue goes with its semaphores and leftovers."""
    for entry in entries:
        parsed = parse_entry(entry)
        if parsed is not None and parsed.kind == "segment":
            _remove_base(entry)
        else:
            _unlink(entry)
