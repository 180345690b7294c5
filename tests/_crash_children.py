"""Child processes for tests/test_crash.py and the random-kill soak (benchmarks/soak.py).

Every target here is a module-level function so that ``spawn`` children can import it: tests/
has no ``__init__.py``, so pytest puts tests/ itself on ``sys.path`` and multiprocessing
passes the parent's ``sys.path`` to a spawned child (benchmarks/soak.py inserts it itself).

Crash points are made deterministic by test-only hooks that a child installs on itself before
it operates; the library has no hooks of its own. A hooked child reaches its crash point,
tells the parent (``("reached", hook, time.monotonic())`` on its pipe) and sleeps until the
parent SIGKILLs it. ``time.monotonic`` is CLOCK_MONOTONIC, comparable across processes.

The soak logic (``soak``) lives here too, once: the test runs a few rounds, the CLI many.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import random
import signal
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from _support import TIMEOUT, reporting

import shared_queue
from shared_queue import _core
from shared_queue import _layout as L

HANG = 60  # seconds a child sleeps at its crash point; the parent kills it long before

_TAIL, _HEAD = L.IDX["tail"], L.IDX["head"]


# -- items -------------------------------------------------------------------------------------
def make_item(seq: int, size: int = 64) -> tuple[int, bytes, int]:
    """Return the item ``seq``: (seq, payload, crc32(payload)), the payload derived from seq."""
    data = random.Random(seq).randbytes(size)
    return (seq, data, zlib.crc32(data))


def check_item(item: Any) -> int:
    """Return the item's seq; AssertionError if it is not an intact ``make_item`` item."""
    seq, data, crc = item
    if zlib.crc32(data) != crc or data != random.Random(seq).randbytes(len(data)):
        raise AssertionError(f"torn item {seq}: {len(data)} bytes fail their checksum")
    return int(seq)


class Bomb:
    """Pickles fine; unpickling it raises (loky's crash_cases: 'error while unpickling')."""

    def __reduce__(self) -> tuple[Callable[[str], Any], tuple[str]]:
        return _explode, ("Bomb unpickled",)


def _explode(msg: str) -> Any:
    raise ValueError(msg)


# -- hooks -------------------------------------------------------------------------------------
def _hang() -> None:
    time.sleep(HANG)
    os._exit(99)  # the parent did not kill us: it failed or died; go away quietly


def _notify_then(
    conn: Connection, hook: str, then: Callable[[], None] | None, kind: str = "reached"
) -> Callable[[], None]:
    fired = False

    def notify() -> None:
        nonlocal fired
        if fired:  # some hooks sit on a path taken more than once (e.g. each wait)
            return
        fired = True
        conn.send((kind, hook, time.monotonic()))
        if then is not None:
            then()

    return notify


def install(
    q: shared_queue.SharedMemoryQueue, side: str, hook: str, conn: Connection, batch: int = 1
) -> None:
    """Install ``hook`` on this process's handle ``q`` for a ``side`` ("put"/"get") operation.

    Hooks (the crash point is where the child stops; it is SIGKILLed there):
      block_wait      stop nothing: report when the op goes to sleep on its semaphore
      after_acquire   took a count of its own semaphore, before the lock
      mid_copy        holding the side's lock, ``batch // 2`` payloads and half of the next
                      copied, not committed (inside the real commit function)
      held_commit     committed (tail/head advanced), still holding the lock
      before_post     committed and unlocked, before posting the other side's semaphore
    """
    if hook == "block_wait":  # whichever semaphore the op sleeps on (put_batch: room)
        _core._on_wait(_notify_then(conn, hook, None))
    elif hook != "none":
        # A named point inside the compiled put or get; the callback reports, and the
        # process stops there (the core never returns from it) until it is killed.
        _core._crash_at(hook, side, batch // 2, _notify_then(conn, hook, None))


# -- child targets -------------------------------------------------------------------------------
def _do(q: shared_queue.SharedMemoryQueue, op: str, arg: Any, timeout: float | None) -> Any:
    if op == "put":
        q.put(arg, timeout=timeout)
        return None
    if op == "put_batch":
        q.put_batch(arg, timeout=timeout)
        return None
    if op == "get":
        return q.get(timeout=timeout)
    if op == "get_batch":
        return q.get_batch(arg, timeout=timeout)
    raise ValueError(f"unknown op {op!r}")


@reporting
def crash_op(conn: Connection, name: str, ri: float, op: str, arg: Any, hook: str) -> None:
    """Attach to ``name``, install ``hook`` and run one ``op``; the parent kills us in it."""
    q = shared_queue.SharedMemoryQueue(name, recovery_interval=ri)
    batch = len(arg) if op == "put_batch" else arg if op == "get_batch" else 1
    install(q, "put" if op.startswith("put") else "get", hook, conn, batch)
    result = _do(q, op, arg, TIMEOUT)
    conn.send(("done", op, result, time.monotonic()))  # the crash point was not reached
    _hang()


@reporting
def crash_create(conn: Connection, name: str, at: str) -> None:
    """Create the queue ``name`` but stop at ``os.<at>`` inside Segment.create."""
    real = getattr(os, at)

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if True:  # the first call is Segment.create's
            conn.send(("reached", at, time.monotonic()))
            _hang()
        return real(*args, **kwargs)

    setattr(os, at, hooked)  # os is this child's own module object
    shared_queue.SharedMemoryQueue(name, create=True, capacity=4, item_size=256)
    conn.send(("done", "create", None, time.monotonic()))
    _hang()


@reporting
def create_and_leave(conn: Connection, name: str, ri: float, seqs: list[int], how: str) -> None:
    """Create ``name``, put the items ``seqs``, then exit (``how="exit"``) or wait to be killed."""
    q = shared_queue.SharedMemoryQueue(
        name, create=True, capacity=8, item_size=256, recovery_interval=ri
    )
    for seq in seqs:
        q.put(make_item(seq))
    conn.send(("reached", "created", time.monotonic()))
    if how == "exit":
        q.close()
        return
    _hang()


@reporting
def survivor(conn: Connection, name: str, ri: float, ops: list[tuple[str, Any]]) -> None:
    """Run ``ops`` in order and report each; ``("waiting", op)`` when one goes to sleep."""
    q = shared_queue.SharedMemoryQueue(name, recovery_interval=ri)
    conn.send(("started", os.getpid(), time.monotonic()))
    for op, arg in ops:
        # Before each sleep of this op, whichever semaphore it sleeps on.
        _core._on_wait(_notify_then(conn, op, None, kind="waiting"))
        result = _do(q, op, arg, TIMEOUT)
        conn.send(("done", op, result, time.monotonic()))
    q.close()


@reporting
def put_then_report(conn: Connection, name: str, specs: list[tuple[Any, ...]]) -> None:
    """Put items built from ``specs`` and report each outcome: ("item", seq), ("bomb",)
    (unpickling raises) or ("lock",) (cannot be pickled: TypeError)."""
    q = shared_queue.SharedMemoryQueue(name)
    makers: dict[str, Callable[..., Any]] = {
        "item": make_item,
        "bomb": Bomb,
        "lock": threading.Lock,  # cannot be pickled
    }
    for kind, *args in specs:
        obj = makers[kind](*args)
        try:
            q.put_nowait(obj)
        except TypeError as exc:
            conn.send(("rejected", str(exc), time.monotonic()))
        else:
            conn.send(("done", "put", None, time.monotonic()))
    q.close()


# -- the random-kill soak ------------------------------------------------------------------------
ITEM_SIZE = 512
MAX_PUT_BATCH = 4
MAX_GET_BATCH = 4


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _log_line(fd: int, kind: str, seqs: list[int]) -> None:
    # One write() of a short line to a regular file: a SIGKILL cannot tear it.
    os.write(fd, f"{kind} {' '.join(map(str, seqs))}\n".encode())


def soak_producer(name: str, ri: float, uid: int, seed: int, log: str, stop: str) -> None:
    """Put items (put, put_nowait, put_batch) until ``stop`` exists, logging around each put.

    ``A seqs`` before a put, ``P seqs`` once it returned (committed), ``F seqs`` when it gave
    up on Full (nothing was put). Seqs are ``uid * 10**6 + k``.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        q = shared_queue.SharedMemoryQueue(name, recovery_interval=ri)
        rng = random.Random(seed)
        k = 0
        while not _exists(stop):
            n = rng.choice([1, 1, 1, 2, MAX_PUT_BATCH])
            seqs = [uid * 10**6 + k + i for i in range(n)]
            k += n
            items = [make_item(s, rng.randrange(0, 300)) for s in seqs]
            nowait = n == 1 and rng.random() < 0.2
            _log_line(fd, "A", seqs)
            while True:
                try:
                    if nowait:
                        q.put_nowait(items[0])
                    elif n == 1:
                        q.put(items[0], timeout=0.3)
                    else:
                        q.put_batch(items, timeout=0.3)
                except shared_queue.Full:
                    if nowait or _exists(stop):
                        _log_line(fd, "F", seqs)
                        break
                    continue
                _log_line(fd, "P", seqs)
                break
        q.close()
    except BaseException:
        os.write(fd, ("E " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
        raise
    finally:
        os.close(fd)


def soak_consumer(name: str, ri: float, uid: int, seed: int, log: str, stop: str) -> None:
    """Get items (single, batch) until ``stop`` exists; log ``C seqs`` after each get returns.

    A torn item is logged as ``X seq``, one that fails to unpickle as ``U``.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        q = shared_queue.SharedMemoryQueue(name, recovery_interval=ri)
        rng = random.Random(seed)
        while not _exists(stop):
            n = rng.choice([1, 1, 2, MAX_GET_BATCH])
            try:
                items = [q.get(timeout=0.3)] if n == 1 else q.get_batch(n, timeout=0.3)
            except shared_queue.Empty:
                continue
            except pickle.UnpicklingError:
                _log_line(fd, "U", [])
                continue
            good, bad = [], []
            for item in items:
                try:
                    good.append(check_item(item))
                except Exception:
                    bad.append(item[0] if isinstance(item, tuple) and item else -1)
            _log_line(fd, "C", good)
            if bad:
                _log_line(fd, "X", bad)
        q.close()
    except BaseException:
        os.write(fd, ("E " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
        raise
    finally:
        os.close(fd)


class SoakFailure(AssertionError):
    """A soak round broke a crash-tolerance requirement."""


def _require(cond: bool, msg: str) -> None:
    # Not ``assert``: the soak CLI must check under ``python -O`` too.
    if not cond:
        raise SoakFailure(msg)


def check_capacity(q: shared_queue.SharedMemoryQueue, base_seq: int) -> None:
    """Fill ``q`` (empty) to capacity with put_nowait, then drain it in order with get_nowait."""
    _require(q.qsize() == 0, f"queue not empty before the capacity check: qsize={q.qsize()}")
    seqs = list(range(base_seq, base_seq + q.capacity))
    for seq in seqs:
        q.put_nowait(make_item(seq, 16))
    try:
        q.put_nowait(make_item(base_seq - 1, 16))
    except shared_queue.Full:
        pass
    else:
        raise SoakFailure(f"a put beyond capacity={q.capacity} succeeded")
    got = [check_item(q.get_nowait()) for _ in seqs]
    _require(got == seqs, f"capacity check: got {got}, expected {seqs}")
    try:
        q.get_nowait()
    except shared_queue.Empty:
        pass
    else:
        raise SoakFailure("queue not empty after draining the capacity check")


@dataclass
class _Incarnation:
    role: str  # "P" or "C"
    uid: int
    proc: Any
    log: str
    killed: bool = False


@dataclass
class RoundResult:
    round: int
    start_method: str
    kills: dict[str, int] = field(default_factory=lambda: {"P": 0, "C": 0})
    committed: int = 0
    delivered: int = 0
    lost: int = 0  # committed, taken by a killed consumer
    unlogged: int = 0  # delivered, put by a producer killed before it logged the put
    seconds: float = 0.0


@contextlib.contextmanager
def _reaping(incs: list[_Incarnation]) -> Iterator[None]:
    try:
        yield
    finally:
        for inc in incs:
            if inc.proc.exitcode is None:
                inc.proc.kill()
            inc.proc.join(TIMEOUT)


def _kill(inc: _Incarnation) -> None:
    os.kill(inc.proc.pid, signal.SIGKILL)
    inc.proc.join(TIMEOUT)
    _require(inc.proc.exitcode == -signal.SIGKILL, f"{inc} did not die of SIGKILL")
    inc.killed = True


def _errors_of(inc: _Incarnation) -> str:
    try:
        with open(inc.log) as f:
            return " / ".join(line for line in f if line.startswith("E "))
    except FileNotFoundError:
        return "(no log)"


@dataclass
class _Probes:
    """The parent's own operations between kills: a get_nowait and a put_nowait each."""

    committed: set[int] = field(default_factory=set)
    delivered: list[int] = field(default_factory=list)
    next_seq: int = 0


def _probe(q: shared_queue.SharedMemoryQueue, probes: _Probes) -> None:
    # Right after a kill, new operations must not wait on anything the dead process held
    # (a lock the kernel dropped; a count that the header check makes up for).
    t0 = time.monotonic()
    with contextlib.suppress(shared_queue.Empty):
        probes.delivered.append(check_item(q.get_nowait()))
    seq = probes.next_seq
    probes.next_seq += 1
    try:
        q.put_nowait(make_item(seq, 100))
    except shared_queue.Full:
        pass
    else:
        probes.committed.add(seq)
    elapsed = time.monotonic() - t0
    _require(elapsed < 2.0, f"get_nowait + put_nowait took {elapsed:.2f} s after a kill")


def soak_round(
    ctx: Any,
    name: str,
    rnd: int,
    rng: random.Random,
    workdir: str,
    *,
    duration: float,
    ri: float,
    producers: int = 2,
    consumers: int = 2,
    capacity: int = 8,
) -> RoundResult:
    """Run producers and consumers on a fresh queue ``name``, SIGKILL and replace random
    ones at random instants for ``duration`` seconds, then stop them, drain and check."""
    started = time.monotonic()
    res = RoundResult(rnd, ctx.get_start_method())
    stop = os.path.join(workdir, f"stop-{rnd}")
    incs: list[_Incarnation] = []
    uids = iter(range(1, 10**6))  # uid 0: the parent's own probe items
    probes = _Probes()
    q = shared_queue.SharedMemoryQueue(
        name, create=True, capacity=capacity, item_size=ITEM_SIZE, recovery_interval=ri
    )

    def start(role: str) -> _Incarnation:
        uid = next(uids)
        log = os.path.join(workdir, f"r{rnd}-{role}{uid}.log")
        target = soak_producer if role == "P" else soak_consumer
        seed = rng.randrange(2**32)
        p = ctx.Process(target=target, args=(name, ri, uid, seed, log, stop), daemon=True)
        p.start()
        inc = _Incarnation(role, uid, p, log)
        incs.append(inc)
        return inc

    try:
        with _reaping(incs):
            slots = [start("P") for _ in range(producers)] + [start("C") for _ in range(consumers)]
            t_end = time.monotonic() + duration
            while time.monotonic() < t_end:
                time.sleep(rng.uniform(0.01, 0.25))
                i = rng.randrange(len(slots))
                victim = slots[i]
                _require(
                    victim.proc.exitcode is None,
                    f"{victim.role}{victim.uid} died by itself ({victim.proc.exitcode}): "
                    f"{_errors_of(victim)}",
                )
                _kill(victim)
                res.kills[victim.role] += 1
                slots[i] = start(victim.role)
                _probe(q, probes)
            with open(stop, "w"):
                pass
            # Survivors see the stop file within one timed wait (0.3 s); a deadlock (a lock
            # left held, a lost wake-up that recovery missed) keeps them here.
            for inc in slots:
                inc.proc.join(TIMEOUT)
                _require(
                    inc.proc.exitcode == 0,
                    f"{inc.role}{inc.uid} did not stop cleanly (exitcode {inc.proc.exitcode}, "
                    f"None = hung): {_errors_of(inc)}",
                )
        _check_round(q, incs, probes, res)
        check_capacity(q, base_seq=10**12)
    finally:
        q.close()
        with contextlib.suppress(FileNotFoundError):
            shared_queue.SharedMemoryQueue(name).unlink()
    res.seconds = time.monotonic() - started
    return res


def _check_round(
    q: shared_queue.SharedMemoryQueue,
    incs: list[_Incarnation],
    probes: _Probes,
    res: RoundResult,
) -> None:
    attempted: set[int] = set(probes.committed)
    committed: set[int] = set(probes.committed)
    in_flight: set[int] = set()  # attempted by a producer killed before it logged the outcome
    delivered: collections.Counter[int] = collections.Counter(probes.delivered)
    torn: list[int] = []
    unpicklable = 0
    for inc in incs:
        open_put: list[int] = []
        try:
            f = open(inc.log)  # noqa: SIM115
        except FileNotFoundError:  # a spawned child killed before it got going
            _require(inc.killed, f"{inc.role}{inc.uid} ran without writing its log")
            continue
        with f:
            for line in f:
                kind, *rest = line.split()
                _require(kind != "E", f"{inc.role}{inc.uid} failed: {line}")
                seqs = [int(s) for s in rest]
                if kind == "A":
                    attempted.update(seqs)
                    open_put = seqs
                elif kind == "P":
                    committed.update(seqs)
                    open_put = []
                elif kind == "F":
                    open_put = []
                elif kind == "C":
                    delivered.update(seqs)
                elif kind == "X":
                    torn.extend(seqs)
                elif kind == "U":
                    unpicklable += 1
        if open_put:
            _require(inc.killed, f"P{inc.uid} stopped inside a put of {open_put}")
            in_flight.update(open_put)
    t0 = time.monotonic()
    while True:
        try:
            item = q.get_nowait()
        except shared_queue.Empty:
            break
        except pickle.UnpicklingError:
            unpicklable += 1
            continue
        try:
            delivered[check_item(item)] += 1
        except AssertionError:
            torn.append(item[0])
    drain = time.monotonic() - t0
    _require(drain < 2.0, f"draining the survivors' queue took {drain:.2f} s")
    _require(not torn and not unpicklable, f"torn items {torn}, {unpicklable} unpicklable")
    dups = sorted(s for s, c in delivered.items() if c > 1)
    _require(not dups, f"delivered more than once: {dups[:20]}")
    got = set(delivered)
    _require(got <= attempted, f"delivered but never put: {sorted(got - attempted)[:20]}")
    unlogged = got - committed
    _require(
        unlogged <= in_flight,
        f"delivered, not committed, yet not in a killed producer's last put: "
        f"{sorted(unlogged - in_flight)[:20]}",
    )
    lost = committed - got
    bound = res.kills["C"] * MAX_GET_BATCH
    _require(
        len(lost) <= bound,
        f"{len(lost)} committed items never delivered ({sorted(lost)[:20]}), but the "
        f"{res.kills['C']} killed consumers can have taken at most {bound}",
    )
    _require(len(got) > 0, "no item was delivered in the whole round")
    res.committed, res.delivered = len(committed), len(got)
    res.lost, res.unlogged = len(lost), len(unlogged)


def soak(
    name: str,
    seed: int,
    rounds: int,
    workdir: str,
    *,
    duration: float = 3.0,
    ri: float = 0.2,
    start_methods: tuple[str, ...] = ("fork", "spawn"),
    report: Callable[[str], None] = print,
) -> list[RoundResult]:
    """Run ``rounds`` soak rounds on the queue ``name``; the choices follow from ``seed``.

    The kill instants are drawn from the seed, but where each one lands in a victim's code
    depends on scheduling: a seed reproduces the schedule, not the interleaving.
    """
    import multiprocessing

    rng = random.Random(seed)
    results = []
    for rnd in range(rounds):
        method = rng.choice(start_methods)
        sub = random.Random(rng.randrange(2**64))
        try:
            res = soak_round(
                multiprocessing.get_context(method),
                name,
                rnd,
                sub,
                workdir,
                duration=duration,
                ri=ri,
            )
        except SoakFailure as exc:
            raise SoakFailure(f"seed {seed}, round {rnd} ({method}): {exc}") from exc
        report(
            f"round {rnd:3d} {method:5s} kills P={res.kills['P']:2d} C={res.kills['C']:2d} "
            f"committed={res.committed:6d} delivered={res.delivered:6d} lost={res.lost} "
            f"unlogged={res.unlogged} {res.seconds:.1f}s"
        )
        results.append(res)
    return results


@reporting
def paused_put_batch(conn: Connection, name: str, ri: float, items: list[Any], go: Any) -> None:
    """put_batch on a full queue, pausing once right after its first check found no room
    (still under the producer lock, before it asks consumers to post ``room``)."""
    q = shared_queue.SharedMemoryQueue(name, recovery_interval=ri)

    def pause() -> None:
        conn.send(("reached", "no_room", time.monotonic()))
        go.wait(TIMEOUT)

    _core._crash_at("no_room", "put", 0, pause)  # a pause: the put goes on after it
    q.put_batch(items, timeout=TIMEOUT)
    conn.send(("done", "put_batch", None, time.monotonic()))
    q.close()
