"""The names a queue has in /dev/shm: built here, and recognised here, nowhere else.

One queue ``name`` in namespace ``run_id`` owns these entries of ``SHM_DIR``:

- its segment ``<base>``, where ``base = sq<len(run_id)>-<run_id>-<name>`` (too long a base
  keeps a readable prefix and ends in ``-<24 hex>`` of a SHA-256 of the whole);
- while it is being created, a temporary segment ``<base>.creating-<16 hex nonce>``;
- three POSIX semaphores ``/<base>.<16 hex nonce>.(free|fill|room)``, which glibc keeps as the
  files ``sem.<base>.<16 hex nonce>.(free|fill|room)``.

The two suffixes are reserved: a name whose base would end in one of them is refused, so that an
entry's name alone tells which of the three it is (issue 10: a queue named
``jobs.creating-<16 hex>`` was taken for a temporary file, and ``gc`` removed its semaphores).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final, Literal

SHM_DIR: Final = "/dev/shm"
PREFIX: Final = "sq"
MAX_BASE: Final = 200  # leaves room for "sem." + ".<nonce>.free" within NAME_MAX (255)
SEM_KINDS: Final = ("free", "fill", "room")

_HEX16: Final = "[0-9a-f]{16}"
_BASE: Final = rf"{PREFIX}\d+-.*-.+"  # sq<n>-<run_id>-<name>; <name> is never empty
_TEMP_TAIL: Final = rf"\.creating-(?P<nonce>{_HEX16})"
_SEM_TAIL: Final = rf"\.(?P<nonce>{_HEX16})\.(?P<kind>{'|'.join(SEM_KINDS)})"
_SEGMENT_RE: Final = re.compile(_BASE, re.S)
_TEMP_RE: Final = re.compile(rf"(?P<base>{_BASE}){_TEMP_TAIL}", re.S)
_SEM_RE: Final = re.compile(rf"sem\.(?P<base>{_BASE}){_SEM_TAIL}", re.S)
# (suffix a base must not end in, what the package uses it for)
_RESERVED: Final = (
    (re.compile(rf"{_TEMP_TAIL}\Z"), "'.creating-<16 hex digits>' (temporary segments)"),
    (re.compile(rf"{_SEM_TAIL}\Z"), "'.<16 hex digits>.free', '.fill' or '.room' (semaphores)"),
)


def base_name(name: str, run_id: str) -> str:
    """Return the /dev/shm file name of the queue ``name`` in namespace ``run_id``.

    The run_id's length is part of the name, so ``("a-b", "")`` and ``("b", "a")`` differ.
    Names too long for POSIX limits keep a readable prefix and end in a hash of the whole.

    Raises:
        TypeError: ``name`` or ``run_id`` is not a str.
        ValueError: ``name`` is empty, either contains '/' or NUL, or the base would end in a
            suffix the package reserves for its temporary segments and semaphores.
    """
    for what, value in (("name", name), ("run_id", run_id)):
        if not isinstance(value, str):
            raise TypeError(f"queue {what} must be a str, not {type(value).__name__}")
        if "/" in value or "\0" in value:
            raise ValueError(f"queue {what} {value!r} must not contain '/' or NUL")
    if not name:
        raise ValueError("queue name must not be empty")
    base = f"{PREFIX}{len(run_id)}-{run_id}-{name}"
    # Checked before hashing, so whether a name is allowed does not depend on its length.
    for tail, use in _RESERVED:
        if tail.search(base):
            raise ValueError(
                f"queue name {name!r}{f' with run_id {run_id!r}' if run_id else ''} ends in "
                f"{use}, a suffix shared_queue reserves for its own entries in {SHM_DIR}; "
                "choose another name"
            )
    if len(base.encode()) > MAX_BASE:
        digest = hashlib.sha256(base.encode()).hexdigest()[:24]
        base = base.encode()[: MAX_BASE - 25].decode(errors="ignore") + "-" + digest
    return base


def run_id_prefix(run_id: str) -> str:
    """Return how the base of every queue of namespace ``run_id`` starts (if not hashed)."""
    return f"{PREFIX}{len(run_id)}-{run_id}-"


def describe(name: str, run_id: str) -> str:
    """Return the queue's name as messages show it."""
    return f"'{name}'" + (f" (run_id '{run_id}')" if run_id else "")


def temp_name(base: str, nonce: int) -> str:
    """Return the /dev/shm file name a segment is built under before it is published."""
    return f"{base}.creating-{nonce:016x}"


def sem_names(base: str, nonce: int) -> tuple[str, str, str]:
    """Return the POSIX names of the free, fill and room semaphores of one creation.

    free counts free slots; fill counts items; room wakes a put_batch waiting for room.
    """
    free, fill, room = (f"/{base}.{nonce:016x}.{kind}" for kind in SEM_KINDS)
    return free, fill, room


def sem_file(sem_name: str) -> str:
    """Return the /dev/shm file name under which glibc keeps the semaphore ``sem_name``."""
    return "sem." + sem_name.removeprefix("/")


@dataclass(frozen=True)
class Entry:
    """What the name of a /dev/shm entry says it is."""

    kind: Literal["segment", "temp", "semaphore"]
    base: str  # the base of the queue it belongs to
    nonce: int | None  # of the creation that made it; None for a segment (it is in the header)


def parse_entry(entry: str) -> Entry | None:
    """Return what the /dev/shm file name ``entry`` is of a queue, or None if none of ours.

    Only the name is read: whether the file really is a queue is for its header to say.
    """
    if m := _SEM_RE.fullmatch(entry):
        return Entry("semaphore", m["base"], int(m["nonce"], 16))
    if m := _TEMP_RE.fullmatch(entry):
        return Entry("temp", m["base"], int(m["nonce"], 16))
    if (
        _SEGMENT_RE.fullmatch(entry)
        and len(entry.encode()) <= MAX_BASE
        and not any(tail.search(entry) for tail, _ in _RESERVED)
    ):
        return Entry("segment", entry, None)
    return None


def queue_of(entry: str) -> str | None:
    """Return the base of the queue the /dev/shm file name ``entry`` belongs to, or None."""
    parsed = parse_entry(entry)
    return None if parsed is None else parsed.base
