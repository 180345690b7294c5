"""Where the package meets /dev/shm (issue 10, sections 2, 3 and 7).

- Names: one module builds and recognises them; the suffixes of temporary segments and of
  semaphores are reserved, so ``gc`` never takes a live queue's entries for leftovers.
- Safe opening: whatever sits under a queue's name -- a FIFO, a symbolic link, a directory, an
  empty or truncated file, another user's file, a file open to others -- attach raises a
  documented error, and ``ls``, ``gc``, ``stat``, ``rm`` neither hang nor print a traceback,
  exit with the status docs/cli.md gives and leave the entry alone.
- Reserved memory: a queue larger than /dev/shm fails at creation, leaving nothing behind.

The suite runs as root in CI: "another user" is uid 65534 (files chowned to it, or a forked
child that becomes it); as a plain user the tests that need chown are skipped.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import multiprocessing
import os
import re
import shlex
import stat
import subprocess
import sys
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from _support import ROOT, TIMEOUT, queue_files, remove_queue, run_cli, session_mark

from shared_queue import IncompatibleQueueError, SharedMemoryQueue
from shared_queue import _cli as cli
from shared_queue import _registry as R
from shared_queue._names import (
    MAX_BASE,
    SHM_DIR,
    base_name,
    parse_entry,
    queue_of,
    sem_file,
    sem_names,
    temp_name,
)

OTHER_UID = 65534  # "nobody": another user
AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="making a file another user's needs root")
esc = re.escape


def path_of(name: str, run_id: str = "") -> str:
    return os.path.join(SHM_DIR, base_name(name, run_id))


def notes_on(path: str, stderr: str) -> list[str]:
    """The ``--verbose`` lines about ``path`` (other entries of /dev/shm may have theirs)."""
    return [
        line for line in stderr.splitlines() if line.startswith(f"shared-queue: skipped: {path} ")
    ]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def queue_bytes(name: str) -> bytes:
    """The bytes of a freshly made queue's segment (made and removed here)."""
    q = SharedMemoryQueue(name, create=True, capacity=2, item_size=64)
    try:
        return Path(path_of(name)).read_bytes()
    finally:
        q.close()
        q.unlink()


def write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    with open(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # whatever the umask


# -- names -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "run_id"),
    [
        ("jobs", ""),
        ("jobs", "run7"),
        ("a.b-c.d", "r.1"),
        ("jobs.creating-abc", ""),  # not 16 hex digits: an ordinary name
        ("jobs.0123456789abcdef.drain", ""),  # not a semaphore kind
        ("jobs.creating-0123456789abcde", ""),  # 15 hex digits
        ("n" * 400, ""),  # hashed
        ("x", "r" * 400),
        ("with space\nand newline", "é"),
    ],
)
def test_names_are_recognised_as_built(name: str, run_id: str) -> None:
    base = base_name(name, run_id)
    assert len(base.encode()) <= MAX_BASE
    seg = parse_entry(base)
    assert seg is not None and (seg.kind, seg.base, seg.nonce) == ("segment", base, None)
    nonce = 0x0123456789ABCDEF
    temp = parse_entry(temp_name(base, nonce))
    assert temp is not None and (temp.kind, temp.base, temp.nonce) == ("temp", base, nonce)
    for sem in sem_names(base, nonce):
        assert sem.startswith("/") and sem.count("/") == 1
        parsed = parse_entry(sem_file(sem))
        assert parsed is not None
        assert (parsed.kind, parsed.base, parsed.nonce) == ("semaphore", base, nonce)
    assert {
        queue_of(e) for e in [base, temp_name(base, 7), *map(sem_file, sem_names(base, 7))]
    } == {base}


@pytest.mark.parametrize(
    "entry",
    [
        "jobs",
        "sq-x-y",
        "sqa--x",
        "sq0--",
        "sem.sq0--x.notanonce.free",
        "sem.sq0--x.0123456789abcdef.drain",
        "sem.sq0--x.0123456789ABCDEF.free",  # nonces are written in lower case
        "sq0--x.creating-nothex",  # a segment name, as far as names go
        "sq0--" + "x" * 300,  # longer than any base
        "sq0--x.0123456789abcdef.free",  # a reserved ending: no queue has this base
    ],
)
def test_entries_not_of_a_queue_are_not_recognised(entry: str) -> None:
    parsed = parse_entry(entry)
    if entry == "sq0--x.creating-nothex":
        assert parsed is not None and parsed.kind == "segment"
    else:
        assert parsed is None, parsed


HEX = "0123456789abcdef"
TEMP_RULE = r"'\.creating-<16 hex digits>' \(temporary segments\)"
SEM_RULE = r"'\.<16 hex digits>\.free', '\.fill' or '\.room' \(semaphores\)"


@pytest.mark.parametrize(
    ("name", "run_id", "shown", "rule"),
    [
        (f"jobs.creating-{HEX}", "", f"'jobs.creating-{HEX}'", TEMP_RULE),
        (f"jobs.creating-{HEX}", "r1", f"'jobs.creating-{HEX}' with run_id 'r1'", TEMP_RULE),
        (HEX, "x.creating", f"'{HEX}' with run_id 'x.creating'", TEMP_RULE),  # run_id's part
        (f"jobs.{HEX}.free", "", f"'jobs.{HEX}.free'", SEM_RULE),
        (f"jobs.{HEX}.room", "", f"'jobs.{HEX}.room'", SEM_RULE),
        (f"{'n' * 300}.creating-{HEX}", "", None, TEMP_RULE),  # refused before hashing
    ],
)
def test_reserved_suffixes_are_refused(
    name: str, run_id: str, shown: str | None, rule: str
) -> None:
    shown_re = esc(shown) if shown is not None else rf"'{'n' * 300}\.creating-{HEX}'"
    pattern = (
        rf"^queue name {shown_re} ends in {rule}, a suffix shared_queue reserves for its own "
        r"entries in /dev/shm; choose another name$"
    )
    with pytest.raises(ValueError, match=pattern):
        base_name(name, run_id)


def test_a_queue_named_like_a_temporary_file_is_refused(qname: str) -> None:
    name = f"{qname}.creating-{HEX}"
    with pytest.raises(ValueError, match=r"reserves for its own entries"):
        SharedMemoryQueue(name, create=True, capacity=2, item_size=64)
    with pytest.raises(ValueError, match=r"reserves for its own entries"):
        SharedMemoryQueue(name)
    assert [e for e in os.listdir(SHM_DIR) if qname in e] == []  # nothing made
    r = run_cli("rm", name)
    assert (r.returncode, r.stdout) == (1, "")
    assert re.fullmatch(r"shared-queue: queue name .* choose another name\n", r.stderr)


def test_gc_never_takes_a_live_queues_entries_for_leftovers(qname: str) -> None:
    # Names close to the reserved forms, each a live queue (its creator, this process, lives).
    names = [f"{qname}.creating-abc", f"{qname}.{HEX[:15]}.free", f"{qname}.{HEX}.drain"]
    queues = [SharedMemoryQueue(n, create=True, capacity=2, item_size=64) for n in names]
    try:
        for q in queues:
            q.close()  # nobody has it open: only the creator's life keeps it
        made = {n: queue_files(n) for n in names}
        assert all(len(files) == 4 for files in made.values()), made
        found = {entry for entry, _ in R.garbage(min_age=0) if session_mark() in entry}
        assert found == set()
        assert {n: queue_files(n) for n in names} == made
    finally:
        for n in names:
            remove_queue(n)


def test_gc_spares_the_semaphores_of_a_segment_it_cannot_read(qname: str) -> None:
    q = SharedMemoryQueue(qname, create=True, capacity=2, item_size=64)
    try:
        os.chmod(path_of(qname), 0o666)  # no longer a queue ls and gc may read...
        assert R.inspect(base_name(qname, "")) is None
        sems = {e for e in queue_files(qname) if e.startswith("sem.")}
        assert len(sems) == 3
        found = {entry for entry, _ in R.garbage(min_age=0)}
        assert not found & sems  # ... but its semaphores may be in use: spared
        os.chmod(path_of(qname), 0o600)
        q.put("still works")
        assert q.get(timeout=TIMEOUT) == "still works"
    finally:
        q.close()


# -- entries that are not queues of ours, under a queue's name -----------------------------------
KINDS = [
    "fifo",
    "symlink-to-queue",
    "symlink-to-foreign-file",
    "directory",
    "empty",
    "truncated-header",
    "foreign-owner",
    "mode-0666",
]
ROOT_ONLY = {"symlink-to-foreign-file", "foreign-owner"}  # chown


def _notes_and_errors(kind: str, path: str, qname: str) -> tuple[str, type[Exception], str]:
    """(the --verbose note's end, the attach error, its message pattern) for ``kind``."""
    euid = os.geteuid()
    label = f"segment of queue '{esc(qname)}'"
    p = esc(path)
    what = {
        "fifo": "a FIFO",
        "directory": "a directory",
        "symlink-to-queue": "a symbolic link",
        "symlink-to-foreign-file": "a symbolic link",
    }
    if kind in what:
        note = f"is {what[kind]}, not a queue segment"
        return note, IncompatibleQueueError, rf"^{p} is {what[kind]}, not a {label}$"
    if kind in ("empty", "truncated-header"):
        size = 0 if kind == "empty" else 100
        note = rf"\({size} bytes\) is not a shared_queue segment"
        return note, IncompatibleQueueError, rf"^{p} {note}$"
    if kind == "foreign-owner":
        owner = (
            rf"is owned by uid {OTHER_UID} \(mode 0o600\), not by this process's "
            rf"effective uid {euid}"
        )
        return (
            rf"{owner}: refusing a queue segment another user controls",
            PermissionError,
            rf"^{p} {owner}: refusing a {label} another user controls$",
        )
    assert kind == "mode-0666"
    open_mode = rf"\(owner uid {euid}\) has mode 0o666, open to group or others"
    return (
        rf"{open_mode}: refusing a queue segment others may have written "
        r"\(chmod 600 it if it is yours\)",
        PermissionError,
        rf"^{p} {open_mode}: refusing a {label} others may have written "
        r"\(chmod 600 it if it is yours\)$",
    )


@pytest.fixture(params=KINDS)
def bad_entry(request: pytest.FixtureRequest, qname: str) -> Iterator[tuple[str, str]]:
    """(kind, path): something that is not a queue of ours, under the queue name ``qname``.

    Everything made for it is removed afterwards.
    """
    kind: str = request.param
    if kind in ROOT_ONLY and not AS_ROOT:
        pytest.skip("making a file another user's needs root")
    path = path_of(qname)
    made: list[str] = [path]  # removed in reverse order
    held: list[SharedMemoryQueue] = []
    try:
        if kind == "fifo":
            os.mkfifo(path, 0o600)
        elif kind == "directory":
            os.mkdir(path, 0o700)
        elif kind == "empty":
            write_private(path, b"")
        elif kind == "truncated-header":
            write_private(path, queue_bytes(qname + "-src")[:100])
        elif kind == "foreign-owner":
            write_private(path, queue_bytes(qname + "-src"))
            os.chown(path, OTHER_UID, OTHER_UID)
        elif kind == "mode-0666":
            write_private(path, queue_bytes(qname + "-src"), 0o666)
        elif kind == "symlink-to-queue":
            held.append(SharedMemoryQueue(qname + "-real", create=True, capacity=2, item_size=64))
            os.symlink(path_of(qname + "-real"), path)
        elif kind == "symlink-to-foreign-file":
            target = path_of(qname + "-foreign")
            write_private(target, queue_bytes(qname + "-src"))
            os.chown(target, OTHER_UID, OTHER_UID)
            made.insert(0, target)
            os.symlink(target, path)
        yield kind, path
    finally:
        for q in held:
            q.close()
            q.unlink()
        for p in reversed(made):
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(p) and not os.path.islink(p):
                    os.rmdir(p)
                else:
                    os.unlink(p)


def _identity(path: str) -> tuple[int, int, int, int]:
    st = os.lstat(path)
    return st.st_ino, st.st_mode, st.st_uid, st.st_size


def test_attach_refuses_what_is_not_a_queue_of_ours(bad_entry: tuple[str, str], qname: str) -> None:
    kind, path = bad_entry
    _, error, pattern = _notes_and_errors(kind, path, qname)
    before = _identity(path)
    fds = open_fds()
    for _ in range(2):
        with pytest.raises(error, match=pattern):
            SharedMemoryQueue(qname)
    assert open_fds() == fds  # no descriptor leaked
    with pytest.raises(FileExistsError, match=r"already exists"):
        SharedMemoryQueue(qname, create=True, capacity=2, item_size=64)
    assert _identity(path) == before  # left alone
    assert queue_files(qname) == [base_name(qname, "")]  # no semaphores made


def test_cli_skips_what_is_not_a_queue_of_ours(bad_entry: tuple[str, str], qname: str) -> None:
    kind, path = bad_entry
    note, _, _ = _notes_and_errors(kind, path, qname)
    base = base_name(qname, "")
    before = _identity(path)

    # ls: exit 0, the entry not listed; one note on stderr with --verbose, none without.
    r = run_cli("ls", "--json", "--verbose")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    bases = [row["base"] for row in json.loads(r.stdout)]
    assert base not in bases
    if kind == "symlink-to-queue":
        assert bases.count(base_name(qname + "-real", "")) == 1  # the queue, once
    [line] = notes_on(path, r.stderr)
    assert re.fullmatch(rf"shared-queue: skipped: {esc(path)} {note}", line), line
    r = run_cli("ls")
    assert (r.returncode, r.stderr) == (0, "")
    assert qname not in r.stdout.replace(qname + "-real", "")

    # gc: exit 0, the entry neither collected nor counted; one note with --verbose.
    r = run_cli("gc", "--dry-run", "--verbose")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert path not in r.stdout
    [line] = notes_on(path, r.stderr)
    assert re.fullmatch(rf"shared-queue: skipped: {esc(path)} {note}", line), line

    # stat and rm: exit 1, "no queue", one line; rm leaves the entry.
    for command in ("stat", "rm"):
        r = run_cli(command, qname)
        assert (r.returncode, r.stdout) == (1, ""), (command, r.stderr)
        assert r.stderr.startswith(f"shared-queue: no queue '{qname}'"), r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert _identity(path) == before


def test_gc_collects_nothing_of_what_is_not_a_queue_of_ours(
    bad_entry: tuple[str, str], qname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real gc (in-process, so it only ever sees this session's entries) leaves it alone."""
    _, path = bad_entry
    before = _identity(path)
    real = R.garbage
    with pytest.MonkeyPatch.context() as m:
        m.setattr(R, "garbage", lambda min_age=10.0: [g for g in real(0) if qname in g[0]])
        assert cli.main(["gc"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("nothing to collect\n", "")
    assert _identity(path) == before


def test_ls_lists_a_hard_linked_queue_once(qname: str, caplog: pytest.LogCaptureFixture) -> None:
    q = SharedMemoryQueue(qname, create=True, capacity=2, item_size=64)
    alias = path_of(qname + "-alias")
    os.link(path_of(qname), alias)
    try:
        with caplog.at_level("INFO", logger=R.__name__):
            found = [info.base for info in R.find_queues() if qname in info.base]
        assert found == [base_name(qname, "")]
        assert f"skipped: {alias} is another name of the queue '{qname}' (run_id '')" in [
            rec.getMessage() for rec in caplog.records
        ]
    finally:
        os.unlink(alias)
        q.close()


# -- semaphores ----------------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["foreign-owner", "mode-0666"])
def test_attach_refuses_a_semaphore_not_ours(qname: str, change: str) -> None:
    if change == "foreign-owner" and not AS_ROOT:
        pytest.skip("making a file another user's needs root")
    q = SharedMemoryQueue(qname, create=True, capacity=2, item_size=64)
    try:
        sem = next(e for e in queue_files(qname) if e.endswith(".fill"))
        sem_path = os.path.join(SHM_DIR, sem)
        euid = os.geteuid()
        if change == "foreign-owner":
            os.chown(sem_path, OTHER_UID, OTHER_UID)
            pattern = (
                rf"^{esc(sem_path)} is owned by uid {OTHER_UID} \(mode 0o600\), not by this "
                rf"process's effective uid {euid}: refusing a semaphore another user controls$"
            )
        else:
            os.chmod(sem_path, 0o666)
            pattern = (
                rf"^{esc(sem_path)} \(owner uid {euid}\) has mode 0o666, open to group or "
                r"others: refusing a semaphore others may have written \(chmod 600 it if it is "
                r"yours\)$"
            )
        fds = open_fds()
        with pytest.raises(PermissionError, match=pattern):
            SharedMemoryQueue(qname)
        assert open_fds() == fds
        q.put("the creator's handle still works")
        assert q.get(timeout=TIMEOUT) == "the creator's handle still works"
    finally:
        q.close()


# -- as another user: unreadable files, root's queues --------------------------------------------
def _as_other_user(conn: Connection, name: str, roots: str) -> None:
    """In a forked child that became uid OTHER_UID (or is already not root): the checks."""
    try:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
        uid = os.geteuid()
        path = path_of(name)
        q = SharedMemoryQueue(name, create=True, capacity=2, item_size=64)
        q.close()
        os.chmod(path, 0o000)
        unreadable = f"{path} (owner uid {uid}, mode 0o000) cannot be opened: Permission denied"
        with pytest.raises(PermissionError, match=f"^{esc(unreadable)}$"):
            SharedMemoryQueue(name)
        root_path = path_of(roots)
        theirs = (
            rf"^{esc(root_path)} is owned by uid 0 \(mode 0o600\), not by this process's "
            rf"effective uid {uid}: refusing a segment of queue '{esc(roots)}' another user "
            r"controls$"
        )
        with pytest.raises(PermissionError, match=theirs):
            SharedMemoryQueue(roots)
        for argv in (["ls", "--verbose"], ["gc", "--dry-run", "--verbose"]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                assert cli.main(argv) == 0, argv
            [line] = notes_on(path, err.getvalue())
            assert line == f"shared-queue: skipped: {unreadable}"
            [line] = notes_on(root_path, err.getvalue())
            assert "is owned by uid 0" in line
        for argv in (["stat", name], ["rm", name]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                assert cli.main(argv) == 1, argv
            assert err.getvalue().startswith(f"shared-queue: no queue '{name}'")
        assert len(queue_files(name)) == 4  # rm left the segment and its semaphores
        os.chmod(path, 0o600)
        SharedMemoryQueue(name).unlink()
        conn.send(("ok", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def test_as_another_user_unreadable_and_foreign_queues_are_refused(qname: str) -> None:
    """As root, a mode-000 file is readable anyway: the checks run in a child that is uid
    65534 (as a plain user, in a child of the same user)."""
    roots = SharedMemoryQueue(qname + "-root", create=True, capacity=2, item_size=64)
    name = qname + "-theirs"
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_as_other_user, args=(w, name, roots.name))
    try:
        child.start()
        w.close()
        assert r.poll(TIMEOUT), "the child did not report"
        status, tb = r.recv()
        assert status == "ok", tb
        child.join(TIMEOUT)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join(TIMEOUT)
        r.close()
        roots.close()
        roots.unlink()
        remove_queue(name)  # whatever the child left


# -- creation: reserved memory, taken names ------------------------------------------------------
def test_a_queue_larger_than_dev_shm_fails_at_creation(qname: str) -> None:
    st = os.statvfs(SHM_DIR)
    total = st.f_blocks * st.f_frsize
    if total == 0:
        pytest.skip("/dev/shm has no size limit: a too-large queue would first fill the RAM")
    # More than the whole tmpfs, so the kernel refuses at once (shmem_fallocate checks the
    # request against the size limit before allocating anything).
    item_size = 2**20
    capacity = total // item_size + 1024
    with pytest.raises(OSError) as info:
        SharedMemoryQueue(qname, create=True, capacity=capacity, item_size=item_size)
    assert type(info.value) is OSError and info.value.errno == errno.ENOSPC
    m = re.fullmatch(
        rf"queue '{esc(qname)}' needs (\d+) bytes \([\d.]+ GiB: capacity={capacity}, "
        rf"item_size={item_size}\) but /dev/shm has (\d+) bytes \([\d.]+ GiB\) free; free "
        r"memory there or create the queue with a smaller capacity or item_size",
        info.value.strerror,
    )
    assert m, info.value.strerror
    needed, free = int(m[1]), int(m[2])
    assert needed >= capacity * item_size > total >= free
    assert queue_files(qname) == []  # nothing left: no segment, temp file or semaphore


def test_a_created_queue_has_its_memory_reserved(qname: str) -> None:
    q = SharedMemoryQueue(qname, create=True, capacity=8, item_size=4096)
    try:
        st = os.stat(path_of(qname))
        assert st.st_blocks * 512 >= st.st_size  # allocated, not sparse
        assert stat.S_IMODE(st.st_mode) == 0o600
    finally:
        q.close()


@pytest.mark.parametrize(("suffix", "run_id"), [("", ""), (" two words", "run 1")])
def test_a_taken_name_says_how_to_free_it(qname: str, suffix: str, run_id: str) -> None:
    name = qname + suffix
    q = SharedMemoryQueue(name, create=True, capacity=2, item_size=64, run_id=run_id)
    try:
        rm = f"python -m shared_queue rm {shlex.quote(name)}"
        if run_id:
            rm += f" --run-id {shlex.quote(run_id)}"
        shown = f"'{name}'" + (f" (run_id '{run_id}')" if run_id else "")
        expected = (
            f"queue {shown} already exists ({path_of(name, run_id)}); if it is left over from "
            f"a run that ended, remove it with `{rm}` or every unused queue with "
            "`python -m shared_queue gc`"
        )
        with pytest.raises(FileExistsError) as info:
            SharedMemoryQueue(name, create=True, capacity=2, item_size=64, run_id=run_id)
        assert str(info.value) == expected
        # The command it names works.
        q.close()
        r = subprocess.run(
            [sys.executable, *shlex.split(rm.removeprefix("python"))],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert queue_files(name, run_id) == []
    finally:
        q.close()
        remove_queue(name, run_id)
