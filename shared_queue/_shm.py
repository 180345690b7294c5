"""Opening entries of /dev/shm safely: never blocking, never following a link, only our own.

Any local user can create anything in /dev/shm (issue 10, sections 2 and 3): a FIFO named like a
queue hangs a blocking ``open``; a symbolic link leads elsewhere; a segment another user made,
or one open to group or others, may hold pickles that run their code when unpickled. So an
entry is opened with ``O_NONBLOCK | O_NOFOLLOW`` and then checked through its descriptor
(``fstat``): a regular file, owned by the effective uid, with no permission bits for group or
others. Anything else is refused: ``IncompatibleQueueError`` for what is not a regular file,
``PermissionError`` (naming the owner and the mode) for whose it is.

There is no opt-in for sharing a queue with a group: a queue is one user's.

/dev/shm is sticky (mode 1777): once an entry is checked to be ours, no other user can rename
or replace it, so checking a semaphore's file by name just before ``sem_open`` is sound.
"""

from __future__ import annotations

import errno
import os
import stat

from ._errors import IncompatibleQueueError
from ._names import SHM_DIR, sem_file

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind(mode: int) -> str:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a special file"


def check_stat(
    st: os.stat_result, path: str, what: str = "queue segment", private: bool = True
) -> None:
    """Raise unless ``st`` is a regular file of the effective uid closed to group and others.

    Args:
        st: the entry's status (from ``fstat`` of an open descriptor, or ``lstat``).
        path: the entry's path, for the message.
        what: what the entry should be, for the message ("queue segment", "semaphore").
        private: also refuse permission bits for group or others. Only removing an entry
            (which does not read it) may do without.

    Raises:
        IncompatibleQueueError: not a regular file (a FIFO, directory, link, ...).
        PermissionError: owned by another user, or with permission bits for group or others.
    """
    if not stat.S_ISREG(st.st_mode):
        raise IncompatibleQueueError(f"{path} is {_kind(st.st_mode)}, not a {what}")
    euid = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != euid:
        raise PermissionError(
            f"{path} is owned by uid {st.st_uid} (mode 0o{mode:03o}), not by this process's "
            f"effective uid {euid}: refusing a {what} another user controls"
        )
    if private and mode & 0o077:
        raise PermissionError(
            f"{path} (owner uid {st.st_uid}) has mode 0o{mode:03o}, open to group or others: "
            f"refusing a {what} others may have written (chmod 600 it if it is yours)"
        )


def open_checked(path: str, *, write: bool = False, what: str = "queue segment") -> int:
    """Open a /dev/shm entry without blocking or following a link; check it is ours.

    Returns a descriptor (close-on-exec, blocking mode restored) of a regular file owned by the
    effective uid and closed to group and others.

    Raises:
        FileNotFoundError: there is no such entry.
        IncompatibleQueueError: it is not a regular file (a FIFO, directory, link, ...).
        PermissionError: owned by another user, open to group or others, or not openable.
    """
    flags = os.O_RDWR if write else os.O_RDONLY
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        # ELOOP (a link), EISDIR (a directory opened for writing), ENXIO (a socket), EACCES
        # (another user's 0600 file, for a non-root user): say what the entry is and whose.
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise exc from None
        check_stat(st, path, what)
        mode = stat.S_IMODE(st.st_mode)
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise PermissionError(
                f"{path} (owner uid {st.st_uid}, mode 0o{mode:03o}) cannot be opened: "
                f"{exc.strerror}"
            ) from None
        raise
    try:
        check_stat(os.fstat(fd), path, what)
        # O_NONBLOCK only guarded the open; a regular file ignores it, but leave no surprise.
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_semaphores(names: tuple[str, ...]) -> None:
    """Refuse semaphores (POSIX names) that are not regular files of ours, closed to others.

    A missing one is left for ``sem_open`` to report.

    Raises:
        IncompatibleQueueError: a semaphore's file is not a regular file.
        PermissionError: one is owned by another user or open to group or others.
    """
    for name in names:
        path = os.path.join(SHM_DIR, sem_file(name))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        check_stat(st, path, "semaphore")
