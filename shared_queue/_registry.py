"""What queues exist in /dev/shm, who uses them, and removing them: the CLI's ground truth.

Only entries that are provably the library's are ever touched: a segment file whose name has
the ``sq<n>-`` form and whose header carries the magic; a temporary ``<base>.creating-<nonce>``
file of such a name; a semaphore ``sem.<base>.<16 hex>.(free|fill|room)``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from . import _layout as L
from ._segment import SHM_DIR, base_name
from ._sync import process_alive

_BASE: Final = re.compile(r"^sq\d+-")
_TEMP: Final = re.compile(r"^(?P<base>sq\d+-.*)\.creating-(?P<nonce>[0-9a-f]{16})$")
_SEM: Final = re.compile(r"^sem\.(?P<base>sq\d+-.*)\.(?P<nonce>[0-9a-f]{16})\.(free|fill|room)$")


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
        """Items in the queue (approximate while others operate)."""
        used: int = self.header["tail"] - self.header["head"]
        return max(0, min(self.capacity, used))

    @property
    def utilization(self) -> float:
        """Percent of the slots in use."""
        return 100.0 * self.qsize / self.capacity

    def as_dict(self) -> dict[str, Any]:
        """The info as plain JSON-ready values."""
        out = {k: v for k, v in self.__dict__.items() if k != "header"}
        out.update(queue_size=self.qsize, utilization_percent=round(self.utilization, 1))
        out["counters"] = {
            k: self.header[k]
            for k in ("puts", "gets", "bytes_in", "bytes_out", "high_water", "put_waits",
                      "get_waits")
        }  # fmt: skip
        return out


def read_header(path: str) -> dict[str, Any] | None:
    """Return the header fields of the segment at ``path``, or None if it is not a queue."""
    try:
        with open(path, "rb") as f:
            raw = f.read(L.HEADER_SIZE)
    except OSError:
        return None
    if len(raw) < L.HEADER_SIZE:
        return None
    h = np.frombuffer(raw, L.HEADER_DTYPE, count=1)[0]
    if int(h["magic"]) != L.MAGIC or int(h["version"]) != L.VERSION:
        return None
    out: dict[str, Any] = {}
    for name in L.HEADER_DTYPE.names or ():
        value = h[name]
        out[name] = value.decode(errors="replace") if isinstance(value, bytes) else value
    for name, value in out.items():
        if isinstance(value, np.integer):
            out[name] = int(value)
    return out


def find_queues() -> list[QueueInfo]:
    """Return every queue segment in /dev/shm, sorted by name."""
    found = []
    for entry in sorted(os.listdir(SHM_DIR)):
        if not _BASE.match(entry) or _TEMP.match(entry):
            continue
        info = inspect(entry)
        if info is not None:
            found.append(info)
    return found


def inspect(base: str) -> QueueInfo | None:
    """Return what the segment ``base`` in /dev/shm says about itself, None if not a queue."""
    path = os.path.join(SHM_DIR, base)
    h = read_header(path)
    if h is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:  # unlinked meanwhile
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


def users(base: str) -> list[int]:
    """Return the pids of processes that hold the segment ``base`` open (or mapped)."""
    try:
        target = os.stat(os.path.join(SHM_DIR, base))
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
    ours = read_header(os.path.join(SHM_DIR, base)) is not None
    removed = []
    for entry in os.listdir(SHM_DIR):
        temp, sem = _TEMP.match(entry), _SEM.match(entry)
        if (
            (entry == base and ours)
            or (temp and temp["base"] == base)
            or (sem and sem["base"] == base)
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, entry))
                removed.append(entry)
    return sorted(removed)


def garbage(min_age: float = 10.0) -> list[tuple[str, str]]:
    """Return (entry, reason) for what no live process uses: dead queues and leftovers.

    Leftovers (temporary files, semaphores of no queue) younger than ``min_age`` seconds are
    spared: they may belong to a creation in progress.
    """
    live_nonces: dict[str, int] = {}
    out = []
    for info in find_queues():
        live_nonces[info.base] = info.nonce
        if not info.creator_alive and not users(info.base):
            out.append((info.base, "queue whose creator is dead and that no process has open"))
    now = time.time()
    for entry in sorted(os.listdir(SHM_DIR)):
        temp, sem = _TEMP.match(entry), _SEM.match(entry)
        if not (temp or sem):
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - os.stat(os.path.join(SHM_DIR, entry)).st_ctime < min_age:
                continue
            if temp and not users(entry):
                out.append((entry, "temporary file of a creation that did not finish"))
            elif (
                sem
                and live_nonces.get(sem["base"]) != int(sem["nonce"], 16)
                and not any(e == sem["base"] for e, _ in out)
            ):
                out.append((entry, "semaphore of no existing queue"))
    return out


def remove_entries(entries: list[str]) -> None:
    """Unlink what ``garbage`` named: a queue goes with its semaphores and leftovers."""
    for entry in entries:
        if _BASE.match(entry) and not (_TEMP.match(entry) or _SEM.match(entry)):
            _remove_base(entry)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, entry))
