"""``bridge()``: forward the items of one queue into another, e.g. shared memory to NATS.

A bridge takes a batch from ``src`` and puts it into ``dst``, over and over. What it took is
always put somewhere before it looks at anything else: into ``dst``, waiting for room as long
as that takes, or, when ``dst`` can never take it, back into ``src``. Ctrl-C and SIGTERM are
held back while a batch is in flight (in the main thread) and take effect once it landed.

When both queues encode items alike (both pickle, or both raw and ``dst`` untyped or of the
same dtype and shape), a batch travels as the bytes ``src`` stored: nothing is unpickled, so a
bridge needs none of the items' classes. Otherwise each item is decoded from ``src``'s form and
encoded in ``dst``'s, with ``dst``'s checks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from ._base import QueueBase, _positive_int
from ._connect import Queue
from ._errors import Empty, Full
from ._serialize import Parts

log = logging.getLogger("shared_queue.bridge")
log.addHandler(logging.NullHandler())  # silent unless the application configures logging

POLL = 0.25  # seconds a get waits for an item before the bridge looks at stop again
PUT_SLICE = 1.0  # seconds a put waits for room before the bridge looks again
MAX_BACKOFF = 1.0  # seconds between retries after a ConnectionError, at most


class _Flag(Protocol):
    def is_set(self) -> bool: ...


def bridge(
    src: Queue,
    dst: Queue,
    *,
    batch: int = 100,
    stop: _Flag | None = None,
    idle_timeout: float | None = None,
) -> int:
    """Forward items from ``src`` to ``dst`` until ``stop`` is set or ``src`` stays idle.

    Takes up to ``batch`` items from ``src`` at a time (whatever is there, waiting briefly
    for the first) and puts them into ``dst`` as one batch, in order. Either queue may be a
    ``SharedMemoryQueue`` or a ``NatsQueue``, in any mode; see the module docstring for when
    items are decoded on the way.

    Nothing is lost when a bridge is stopped: a batch taken from ``src`` is always put into
    ``dst`` before the bridge returns, waiting for room (however long that takes) and
    retrying across connection failures. While ``stop`` is set and ``dst`` stays unreachable,
    the batch goes back into ``src`` instead, so that the bridge can end. Called in the main
    thread, it holds Ctrl-C and SIGTERM back while it runs: one ends the bridge once the batch
    in flight landed, and is then delivered as it would have been (KeyboardInterrupt, the
    default SIGTERM exit, or the application's own handler). A bridge killed outright
    (SIGKILL, a crash) loses at most the batch in flight.

    Items that went back into ``src`` queue up behind what was put meanwhile. Across a NATS
    outage an item may arrive twice (a put whose acknowledgement was lost is retried).

    Args:
        src: The queue to take items from.
        dst: The queue to put them into.
        batch: The most items moved at once; lowered to what one ``put_batch`` of ``dst``
            (and, for giving a batch back, of ``src``) may hold.
        stop: A ``threading.Event`` (anything with ``is_set()``): set it to end the bridge
            after the batch in flight. Checked between batches, every 0.25 s while ``src``
            is empty.
        idle_timeout: End the bridge once no item came from ``src`` for this many seconds;
            None runs until ``stop``.

    Returns:
        The number of items put into ``dst``.

    Raises:
        ValueError, TypeError: ``dst`` refused an item (too large for its item_size, not an
            array of its dtype and shape, ...); the message names both queues. The refused
            item and those behind it in its batch were put back into ``src``; the ones
            before it were forwarded.
        pickle.UnpicklingError, ValueError: An item of ``src`` could not be decoded for a
            ``dst`` of another mode; it, too, went back into ``src``, as above.
        ValueError: A bad argument, ``src`` and ``dst`` are one queue, or a handle is closed.
    """
    for what, q in (("src", src), ("dst", dst)):
        if not isinstance(q, QueueBase):
            raise TypeError(
                f"{what} must be a shared_queue queue (SharedMemoryQueue or NatsQueue), "
                f"not {type(q).__name__}"
            )
    assert isinstance(src, QueueBase) and isinstance(dst, QueueBase)
    _positive_int("batch", batch, 2**31 - 1)
    if idle_timeout is not None and not (0 < idle_timeout < math.inf):  # NaN fails too
        raise ValueError(f"idle_timeout must be a positive number of seconds, got {idle_timeout}")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError(f"stop must be a threading.Event, not {type(stop).__name__}")
    if _identity(src) == _identity(dst):
        raise ValueError(f"bridge from queue {_where(src)} into itself")
    src._check_open()
    dst._check_open()
    return _Bridge(src, dst, batch, stop, idle_timeout).run()


def _identity(q: QueueBase) -> tuple[str, ...]:
    url = getattr(q, "url", None)  # NatsQueue: the servers, without credentials
    return ("shm", q.name, q.run_id) if url is None else ("nats", str(url), q.name, q.run_id)


def _where(q: QueueBase) -> str:
    """The queue as messages name it: its name, run_id and where it lives."""
    label = q._label
    return label if getattr(q, "url", None) is not None else f"{label} in shared memory"


def _passthrough(src: QueueBase, dst: QueueBase) -> bool:
    """Whether ``dst`` would encode every item of ``src`` into the bytes ``src`` stored."""
    if src.raw != dst.raw:
        return False
    if not src.raw:
        return True
    dst_dtype = getattr(dst, "dtype", None)
    if dst_dtype is None:
        return True
    src_dtype = getattr(src, "dtype", None)
    same_dtype = src_dtype is not None and src_dtype == dst_dtype  # None == dtype("f8") holds
    return bool(same_dtype and getattr(src, "shape", None) == getattr(dst, "shape", None))


def _part(payload: Any) -> bytes | Parts:
    # Payloads come out of a take as bytes or bytearray; a put takes bytes or Parts.
    return payload if payload.__class__ is bytes else Parts([payload], len(payload))


def _rewrap(exc: Exception, message: str) -> Exception:
    """An exception of ``exc``'s type (ValueError if that cannot be made) with ``message``."""
    try:
        return type(exc)(message)
    except Exception:  # a class that takes other arguments
        return ValueError(message)


class _Refused(Exception):
    """An item of the batch in flight that cannot go into dst."""

    def __init__(self, index: int, exc: Exception, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.exc = exc


class _Bridge:
    def __init__(
        self,
        src: QueueBase,
        dst: QueueBase,
        batch: int,
        stop: _Flag | None,
        idle_timeout: float | None,
    ) -> None:
        self.src = src
        self.dst = dst
        self.batch = min(batch, dst._batch_limit()[0], src._batch_limit()[0])
        self.stop = stop
        self.idle_timeout = idle_timeout
        self.caught: list[int] = []
        self.passthrough = _passthrough(src, dst)
        self.name = f"{_where(src)} -> {_where(dst)}"

    def stopping(self) -> bool:
        return bool(self.caught) or (self.stop is not None and self.stop.is_set())

    def run(self) -> int:
        forwarded = 0
        with _signals_deferred(self.caught):
            last = time.monotonic()
            backoff = 0.1
            while not self.stopping():
                wait = POLL
                if self.idle_timeout is not None:
                    left = last + self.idle_timeout - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(wait, left)
                try:
                    payloads = self.src._take(self.batch, True, wait)
                except Empty:
                    continue
                except ConnectionError as exc:
                    log.warning("bridge %s: get: %s; retrying", self.name, exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                backoff = 0.1
                last = time.monotonic()
                forwarded += self.forward(payloads)
        return forwarded

    def forward(self, payloads: list[Any]) -> int:
        """Put the batch ``payloads`` taken from src into dst; return how many went there."""
        out: list[bytes | Parts] = []
        refused = None
        for i, payload in enumerate(payloads):
            try:
                out.append(self.convert(i, payload))
            except _Refused as exc:
                refused = exc
                break
        landed = self.land(out, payloads[: len(out)]) if out else True
        if refused is None:
            return len(out) if landed else 0
        rest = payloads[refused.index :]
        self.give_back(rest)
        message = (
            f"bridge {self.name}: {refused}; it and the {len(rest) - 1} item(s) behind it "
            f"were put back into {_where(self.src)}"
        )
        raise _rewrap(refused.exc, message) from refused.exc

    def convert(self, index: int, payload: Any) -> bytes | Parts:
        """Return ``payload`` of src as dst stores it; raise _Refused if dst cannot take it."""
        dst = self.dst
        if self.passthrough:
            size = len(payload)
            if size > dst.item_size:
                exc = dst._too_large(size)
                raise _Refused(index, exc, str(exc))
            return _part(payload)
        try:
            item = self.src._codec.decode(payload)
        except Exception as exc:
            raise _Refused(index, exc, f"an item from {_where(self.src)} could not be "
                                       f"decoded: {exc}") from exc  # fmt: skip
        try:
            return dst._dumps(item)
        except (ValueError, TypeError) as exc:
            raise _Refused(index, exc, f"queue {_where(dst)} refused an item: {exc}") from exc

    def land(self, out: list[bytes | Parts], originals: list[Any]) -> bool:
        """Put ``out`` into dst, retrying until it is there; True once it is.

        False if the batch went back into src instead (``originals``, src's bytes): only
        while stopping with dst unreachable.
        """
        tries = 0
        noted = False
        backoff = 0.1
        while True:
            stopping = self.stopping()
            if stopping and tries and not noted:
                noted = True
                log.warning(
                    "bridge %s: stopping once the %d item(s) in flight are in %s (killing "
                    "the bridge now would lose them)", self.name, len(out), _where(self.dst),
                )  # fmt: skip
            tries += 1
            # In slices until stopping, then without a limit: a NATS put that gets no answer
            # raises Full at the end of a slice, and ConnectionError only after io_timeout.
            try:
                self.dst._put(out, True, None if stopping else PUT_SLICE)
                return True
            except Full:
                continue
            except ConnectionError as exc:
                log.warning("bridge %s: put: %s; retrying", self.name, exc)
            except Exception as exc:
                # Refused as a whole (the handle was closed, the server refused it): it goes
                # back to where it came from.
                self.give_back(originals)
                raise _rewrap(
                    exc,
                    f"bridge {self.name}: {exc}; the {len(out)} item(s) in flight were put "
                    f"back into {_where(self.src)}",
                ) from exc
            if self.stopping() and self.give_back(originals, retry=False):
                log.warning(
                    "bridge %s: the %d item(s) in flight went back into %s",
                    self.name, len(out), _where(self.src),
                )  # fmt: skip
                return False
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def give_back(self, originals: list[Any], retry: bool = True) -> bool:
        """Put ``originals`` back into src; True once they are there.

        With ``retry`` it waits for room and retries connection failures until they are;
        otherwise it tries once, briefly.
        """
        if not originals:
            return True
        payloads = [_part(p) for p in originals]
        backoff = 0.1
        while True:
            try:
                self.src._put(payloads, True, PUT_SLICE if retry else 0.05)
                return True
            except Full:
                pass
            except ConnectionError as exc:
                log.warning("bridge %s: putting items back: %s", self.name, exc)
                if retry:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception:
                log.error(
                    "bridge %s: %d item(s) taken from %s could be put neither into %s nor "
                    "back: they are lost", self.name, len(payloads), _where(self.src),
                    _where(self.dst),
                )  # fmt: skip
                raise
            if not retry:
                return False


_DEFERRED: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_deferred(caught: list[int]) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the body runs, noting them in ``caught``; then
    deliver each once, to the handler it had before.

    Only in the main thread (the only one Python runs signal handlers in); a signal that is
    ignored, or whose handler was not set from Python, is left alone.
    """
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def defer(signum: int, frame: Any) -> None:
            caught.append(signum)

        try:
            for sig in _DEFERRED:
                old = signal.getsignal(sig)
                if old is None or old == signal.SIG_IGN:
                    continue
                signal.signal(sig, defer)
                saved[sig] = old
        except ValueError:  # not the main interpreter: nothing deferred
            for sig, old in saved.items():
                signal.signal(sig, old)
            saved.clear()
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)
