"""A queue's named resources: the segment file in /dev/shm and its two semaphores.

Creation publishes a segment atomically: it is built under a temporary name
(``<name>.creating-<nonce>``), fully initialised, and only then hard-linked under its name
(``link`` fails if the name exists, which also settles concurrent creators). A creator killed
midway leaves no half-made segment under the queue's name for anyone to attach to; at most a
temporary file, which ``gc`` removes. The semaphore names carry a per-creation
random nonce, so the semaphores of a failed or earlier creation never alias a new queue's.

The segment is opened directly in /dev/shm rather than through
``multiprocessing.shared_memory``, whose resource tracker (before Python 3.13) unlinks a
segment when an attaching process exits (gh-82300).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
import shlex
import threading
import time
from typing import Any, Final

import numpy as np
import posix_ipc

from . import _core
from . import _layout as L
from ._base import Items
from ._errors import Empty, Full, IncompatibleQueueError
from ._metrics import HeaderView
from ._names import SHM_DIR, base_name, describe, temp_name
from ._names import sem_names as _sem_names
from ._serialize import PickleCodec, RawCodec, dtype_from_bytes, dtype_to_bytes
from ._shm import check_semaphores, open_checked
from ._sync import process_start_time

SEM_VALUE_MAX: Final = 2**31 - 1
# Segments up to this size are mapped with their page tables filled (MAP_POPULATE, Linux);
# larger ones fault their pages in on first use, so that attaching stays quick.
POPULATE_LIMIT: Final = 1 << 30
_MAP_POPULATE: Final = getattr(mmap, "MAP_POPULATE", 0)
# The kind of lock new segments get; the benchmark's crash-safety baseline sets LOCK_UNSAFE.
LOCK_KIND = L.LOCK_ROBUST
_LOCK_KINDS: Final = {L.LOCK_ROBUST: "robust", L.LOCK_UNSAFE: "unsafe (benchmark only)"}


def _exists_error(name: str, run_id: str, path: str) -> FileExistsError:
    """The error for a name that is taken, with the commands that free it (issue 10)."""
    rm = f"python -m shared_queue rm {shlex.quote(name)}"
    if run_id:
        rm += f" --run-id {shlex.quote(run_id)}"
    return FileExistsError(
        f"queue {describe(name, run_id)} already exists ({path}); if it is left over from a "
        f"run that ended, remove it with `{rm}` or every unused queue with "
        "`python -m shared_queue gc`"
    )


def _reserve(fd: int, size: int, name: str, run_id: str, capacity: int, item_size: int) -> None:
    """Allocate the segment's memory now; OSError(ENOSPC) naming the bytes if it does not fit."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG):
            raise
        st = os.statvfs(SHM_DIR)
        free = st.f_bavail * st.f_frsize
        raise OSError(
            errno.ENOSPC,
            f"queue {describe(name, run_id)} needs {size} bytes ({size / 2**30:.2f} GiB: "
            f"capacity={capacity}, item_size={item_size}) but {SHM_DIR} has {free} bytes "
            f"({free / 2**30:.2f} GiB) free; free memory there or create the queue with a "
            "smaller capacity or item_size",
        ) from exc


def _header_nonce(mm: mmap.mmap) -> int:
    """The header's nonce, read without exporting a buffer (so ``mm`` can still be closed)."""
    offset = L.HEADER_DTYPE.fields["nonce"][1]  # type: ignore[index]
    return int.from_bytes(mm[offset : offset + 8], "little")


class Segment:
    """The mapped segment of one queue handle, with numpy and integer views of it."""

    def __init__(
        self, fd: int, mm: mmap.mmap, path: str, base: str, label: str, recovery_interval: float
    ) -> None:
        self.path = path
        self.base = base
        self._fd = fd
        self._mm = mm
        self._identity = os.fstat(fd)
        # The semaphores first: if they are another user's, or the queue is being unlinked,
        # this fails before any view of the mapping exists, so the caller can still close it.
        self.nonce = _header_nonce(mm)
        names = _sem_names(base, self.nonce)
        check_semaphores(names)
        self.free, self.fill, self.room = (posix_ipc.Semaphore(n) for n in names)
        fields = np.ndarray((), L.HEADER_DTYPE, buffer=mm)
        self.header: np.ndarray[Any, Any] = fields
        self.capacity = int(fields["capacity"])
        self.item_size = int(fields["item_size"])
        self.spare_slots = int(fields["spare_slots"])
        self.pool = self.capacity + self.spare_slots  # slot records in the pool
        self.slot_size = int(fields["slot_size"])
        self.slots_offset = int(fields["slots_offset"])
        flags = int(fields["flags"])
        self.raw = bool(flags & L.FLAG_RAW)
        self.dtype: np.dtype[Any] | None = None
        self.shape: tuple[int, ...] | None = None
        if flags & L.FLAG_TYPED:
            self.dtype = dtype_from_bytes(fields["dtype"][()])
            self.shape = tuple(int(d) for d in fields["shape"][: int(fields["ndim"])])
        self.slots: np.ndarray[Any, Any] = np.ndarray(
            (self.pool,), L.slot_dtype(self.item_size), buffer=mm, offset=self.slots_offset
        )
        self.buf = memoryview(mm)
        self.hdr = self.buf[: L.HEADER_SIZE].cast("Q")
        self.fields = HeaderView(self.hdr)  # the header's 8-byte fields by name
        codec = RawCodec(label, self.dtype, self.shape) if self.raw else PickleCodec()
        self.items = Items(label, self.item_size, codec, (self.capacity, "capacity"))
        # The hot path: the compiled core over the same mapping and semaphores.
        errors = (Full, Empty, f"queue {label} is full (capacity={self.capacity})",
                  f"queue {label} is empty", f"queue {label}: this handle is closed")  # fmt: skip
        self.ring = _core.Ring(
            mm, L.core_layout(self.capacity, self.spare_slots, self.item_size), names,
            recovery_interval, self.raw, self.items.hooks(), errors,
        )  # fmt: skip
        self.closed = False
        self.views_out = 0
        self._views_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        run_id: str,
        capacity: int,
        item_size: int,
        raw: bool = False,
        typed: tuple[np.dtype[Any], tuple[int, ...]] | None = None,
        spare_slots: int = 0,
        recovery_interval: float = 1.0,
    ) -> Segment:
        """Create, initialise and publish a new segment.

        Its memory is reserved in /dev/shm now, so that a queue that does not fit fails here
        rather than killing a producer with SIGBUS on a later put.

        Raises:
            FileExistsError: the name is taken (the message says how to remove a leftover).
            OSError: errno ENOSPC, /dev/shm has less free memory than the queue needs.
        """
        base = base_name(name, run_id)
        path = os.path.join(SHM_DIR, base)
        if os.path.lexists(path):
            raise _exists_error(name, run_id, path)
        geometry = L.geometry(capacity, item_size, spare_slots)
        size = geometry["size"]
        nonce = secrets.randbits(64)
        made: list[posix_ipc.Semaphore] = []
        tmp_path = os.path.join(SHM_DIR, temp_name(base, nonce))
        fd = -1
        try:
            for sem_name, initial in zip(_sem_names(base, nonce), (capacity, 0, 0), strict=True):
                made.append(
                    posix_ipc.Semaphore(
                        sem_name, posix_ipc.O_CREX, mode=0o600, initial_value=initial
                    )
                )
            fd = os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
            os.ftruncate(fd, size)
            _reserve(fd, size, name, run_id, capacity, item_size)
            with mmap.mmap(fd, L.HEADER_SIZE) as mm:
                offsets = L.core_layout(capacity, spare_slots, item_size)
                _core.init_locks(
                    mm, offsets["header.producer_mutex"], offsets["header.consumer_mutex"],
                    LOCK_KIND == L.LOCK_ROBUST,
                )  # fmt: skip
                h = np.ndarray((), L.HEADER_DTYPE, buffer=mm)
                h["version"] = L.VERSION
                h["lock_kind"] = LOCK_KIND
                h["flags"] = (L.FLAG_RAW if raw else 0) | (L.FLAG_TYPED if typed else 0)
                if typed is not None:
                    text = dtype_to_bytes(typed[0])
                    if len(text) > L.DTYPE_FIELD:
                        raise ValueError(
                            f"dtype of queue {describe(name, run_id)} is too complex to store "
                            f"({len(text)} > {L.DTYPE_FIELD} bytes as text)"
                        )
                    h["dtype"] = text
                    h["ndim"] = len(typed[1])
                    h["shape"][: len(typed[1])] = typed[1]
                h["capacity"] = capacity
                h["item_size"] = item_size
                h["spare_slots"] = spare_slots
                for field in ("ring_offset", "slots_offset", "slot_size"):
                    h[field] = geometry[field]
                h["nonce"] = nonce
                h["creator_pid"] = os.getpid()
                h["creator_start"] = process_start_time(os.getpid()) or 0
                h["created_ns"] = time.time_ns()
                h["name"] = name.encode()[: L.NAME_FIELD]
                h["run_id"] = run_id.encode()[: L.NAME_FIELD]
                h["magic"] = L.MAGIC
                del h
            try:
                # link() publishes the finished segment atomically and fails if the name
                # exists, which settles concurrent creators.
                os.link(tmp_path, path)
            except FileExistsError:
                raise _exists_error(name, run_id, path) from None
        except BaseException:
            for sem in made:
                sem.unlink()
                sem.close()
            if fd >= 0:
                os.close(fd)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
        for sem in made:
            sem.close()
        try:
            return cls._map(fd, path, base, name, run_id, recovery_interval)
        except BaseException:
            os.unlink(path)
            for sem_name in _sem_names(base, nonce):
                posix_ipc.unlink_semaphore(sem_name)
            raise

    @classmethod
    def attach(cls, name: str, run_id: str, recovery_interval: float = 1.0) -> Segment:
        """Map the existing segment of a queue.

        Raises:
            FileNotFoundError: there is no such queue.
            IncompatibleQueueError: the name is a FIFO, directory, symbolic link or other
                non-file, or a file that is not a queue of this layout.
            PermissionError: the segment or a semaphore is another user's, or open to group
                or others.
        """
        base = base_name(name, run_id)
        path = os.path.join(SHM_DIR, base)
        try:
            fd = open_checked(path, write=True, what=f"segment of queue {describe(name, run_id)}")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no queue {describe(name, run_id)} ({path}): create it with create=True"
            ) from None
        return cls._map(fd, path, base, name, run_id, recovery_interval)

    @classmethod
    def _map(
        cls, fd: int, path: str, base: str, name: str, run_id: str, recovery_interval: float
    ) -> Segment:
        try:
            size = os.fstat(fd).st_size
            if size < L.HEADER_SIZE:
                raise IncompatibleQueueError(f"{path} ({size} bytes) is not a shared_queue segment")
            # Page tables filled at once (up to POPULATE_LIMIT): a first touch of each page of
            # a fresh mapping costs ~1 us here (a 16 MiB slot ~7 ms, docs/benchmarks.md), done
            # in one go about a quarter of that.
            populate = _MAP_POPULATE if size <= POPULATE_LIMIT else 0
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | populate)
            try:
                h = np.ndarray((), L.HEADER_DTYPE, buffer=mm)
                magic, version = int(h["magic"]), int(h["version"])
                fields = {f: int(h[f]) for f in L.IDX}
                del h
                if magic != L.MAGIC:
                    raise IncompatibleQueueError(f"{path} is not a shared_queue segment")
                if version != L.VERSION:
                    raise IncompatibleQueueError(
                        f"queue {describe(name, run_id)} has layout version {version}; "
                        f"this shared_queue reads version {L.VERSION}"
                    )
                problem = L.geometry_error(fields, size)
                if problem is not None:
                    raise IncompatibleQueueError(
                        f"queue {describe(name, run_id)} ({path}) has an inconsistent header: "
                        f"{problem}"
                    )
                kind = fields["lock_kind"]
                if kind not in _LOCK_KINDS or _core.MUTEX_SIZE > L.MUTEX_FIELD:
                    raise IncompatibleQueueError(
                        f"queue {describe(name, run_id)} uses lock kind {kind}, which this "
                        f"build cannot honour (it knows {sorted(_LOCK_KINDS)}, with "
                        f"{_core.MUTEX_SIZE}-byte mutexes)"
                    )
                try:
                    return cls(fd, mm, path, base, describe(name, run_id), recovery_interval)
                except (posix_ipc.ExistentialError, FileNotFoundError):
                    raise FileNotFoundError(
                        f"queue {describe(name, run_id)} is being unlinked"
                    ) from None
            except BaseException:
                mm.close()
                raise
        except BaseException:
            os.close(fd)
            raise

    def close(self, close_semaphores: bool = True) -> None:
        """Unmap the segment and close descriptors and semaphores of this handle.

        ``close_semaphores=False`` leaves them to be closed when collected, for a thread that
        may still be waiting on one. While arrays from views live, the mapping stays (their
        finalizers still mark their slots); the last one unmaps it.
        """
        self.ring.close()  # this handle's calls end; views' releases still work
        if close_semaphores:
            for sem in (self.free, self.fill, self.room):
                sem.close()
        with self._views_lock:
            self.closed = True
            if not self.views_out:
                self._unmap()
        os.close(self._fd)

    def view_opened(self) -> None:
        """Count an array that views a slot (see ``close``)."""
        with self._views_lock:
            self.views_out += 1

    def view_closed(self) -> None:
        """Uncount a view's array; after ``close``, the last one unmaps the segment."""
        with self._views_lock:
            self.views_out -= 1
            if self.closed and not self.views_out:
                self._unmap()

    def _unmap(self) -> None:
        self.ring.unmap()  # its export of the mapping first
        del self.header, self.slots
        for view in (self.hdr, self.buf):
            view.release()
        with contextlib.suppress(BufferError):  # a numpy view the caller made of a view
            self._mm.close()

    def unlink(self) -> None:
        """Remove the queue's name and semaphores; FileNotFoundError if already removed."""
        # Only remove the name if it still refers to this segment, not to a newer queue.
        try:
            same = os.path.samestat(os.stat(self.path), self._identity)
        except FileNotFoundError:
            same = False
        if not same:
            raise FileNotFoundError(f"queue segment {self.path} was already unlinked")
        os.unlink(self.path)
        for sem_name in _sem_names(self.base, self.nonce):
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(sem_name)
