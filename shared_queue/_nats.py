"""NatsQueue: the queue's API over a NATS JetStream stream, for workers on several hosts.

One queue is one work-queue stream (``retention=workqueue``, ``max_msgs=capacity``,
``discard=new``) with one durable pull consumer that every handle shares. A put publishes
with a ``Nats-Msg-Id`` and waits for the stream's acknowledgement; a batch is one atomic
batch publish (all or none); a get pulls, acknowledges and only then returns. A put that found
the stream full waits on the room subject, where every get posts after its ack, and retries
each ``ROOM_RETRY`` seconds as a safety net. docs/beyond-one-host.md states the semantics.

The sync and async methods run the same coroutines (``_Io``): the sync ones on the process's
NATS loop thread (``_natsio``), the async ones on the caller's loop, each over a connection of
that loop. Items are encoded and decoded in the caller's thread, as ``_base.QueueBase`` does
for both backends.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _metrics, _natsio
from ._base import Items, QueueBase, _check_mode, _check_timeout, _positive_int, _typed_slots
from ._errors import Empty, Full, IncompatibleQueueError
from ._names import base_name, describe
from ._serialize import Parts, PickleCodec, RawCodec, descriptor, dtype_from_bytes, dtype_to_bytes

log = logging.getLogger("shared_queue.nats")

FORMAT = "1"  # the metadata version of a shared_queue stream
CONSUMER = "workers"  # the durable pull consumer every handle of a queue shares
HEADER_ROOM = 512  # bytes of a message that headers may take beside an item_size payload
MAX_BATCH = 1000  # the server's limit on one atomic batch publish
ROOM_RETRY = 1.0  # a blocked put retries this often even without a room signal (seconds)
LINGER = 2.0  # the longest one pull request waits on the server (seconds)
GRACE = 0.5  # the least time a request waits for its answer (seconds)
STALE = 5.0  # an item left in a handle's inbox longer than this is handed back (seconds)
RECENT = 10.0  # confirmed acks sent again after a fail-over, if confirmed this lately (s)
DUPLICATE_WINDOW = 120  # how long the server remembers a message id (seconds)
DEFAULTS: dict[str, float] = {"connect_timeout": 5.0, "io_timeout": 15.0, "ack_wait": 30.0}

# JetStream API error codes this module acts on.
_MAX_MSGS = 10077  # "maximum messages exceeded": the stream is full
_MSG_SIZE = 10054  # "message size exceeds maximum allowed"
_BATCH_DUP = 10201  # "atomic publish batch contains duplicate message id": stored already
_IN_USE = 10058  # "stream name already in use with a different configuration"
_NOT_FOUND = 10059  # "stream not found"
_NO_CONSUMER = 10014  # "consumer not found"
_UNAVAILABLE = 10008  # "JetStream system temporarily unavailable" (e.g. during an election)
_BATCH_RETRY = (10176, 10210)  # "incomplete batch" (cut by a reconnect), "too many batches"


def stream_name(name: str, run_id: str) -> str:
    """Return the stream of queue ``name`` in namespace ``run_id``; the name rules of
    ``_names.base_name`` apply, and every other character is escaped, so distinct queues
    get distinct streams."""
    base = base_name(name, run_id)
    out = "".join(
        c if c.isascii() and (c.isalnum() or c == "-") else "".join(f"_{b:02x}" for b in c.encode())
        for c in base
    )
    if len(out) > 200:
        out = out[:175] + "-" + hashlib.sha256(out.encode()).hexdigest()[:24]
    return out


class _NoAnswer(Exception):
    """The server did not answer a request in time (a fail-over, or the server is gone), or
    nothing serves the subject (``no_responders``: a fail-over, or the stream was deleted)."""

    def __init__(self, no_responders: bool = False) -> None:
        super().__init__()
        self.no_responders = no_responders


class _ApiError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('description', 'error')} (err_code {error.get('err_code')})")
        self.code = error.get("err_code")


@dataclasses.dataclass
class _Spec:
    """What a handle's traffic (``_Io``) needs to know of its queue; no reference back to the
    handle, so that a handle dropped without close() can be collected (and then closed)."""

    label: str
    display: str
    stream: str
    capacity: int
    io_timeout: float
    connect_timeout: float

    @property
    def subject(self) -> str:
        return f"sq.{self.stream}"

    @property
    def room_subject(self) -> str:
        return f"sqroom.{self.stream}"


async def _api(nc: Any, subject: str, body: Any, timeout: float, label: str) -> dict[str, Any]:
    """Send a JetStream API request and return its decoded reply.

    Raises:
        ConnectionError: Nothing answers JetStream requests (no JetStream), or no answer
            came within ``timeout`` (it is sent again meanwhile, across a fail-over).
    """
    payload = b"" if body is None else json.dumps(body).encode()
    deadline = time.monotonic() + timeout
    while True:
        # In slices: a request sent to a server that dies is not answered by the one the
        # client reconnects to, so it is sent again.
        try:
            msg = await nc.request(f"$JS.API.{subject}", payload,
                                   timeout=_bounded(deadline, LINGER + GRACE))  # fmt: skip
        except _natsio.NoRespondersError:
            raise ConnectionError(
                f"queue {label}: nothing answers JetStream requests: the server has no "
                "JetStream (start nats-server with -js)"
            ) from None
        except _natsio.TRANSIENT:
            pass
        else:
            reply: dict[str, Any] = json.loads(msg.data)
            error = reply.get("error")
            if not (error and error.get("err_code") == _UNAVAILABLE):
                return reply
        if _passed(deadline):
            raise ConnectionError(f"queue {label}: JetStream did not answer within {timeout} s")
        await asyncio.sleep(min(0.1, max(_left(deadline), 0)))


def _reattach(url: str, name: str, run_id: str, options: dict[str, Any]) -> NatsQueue:
    return NatsQueue(url, name, run_id=run_id, **options)


class NatsQueue(QueueBase):
    """A FIFO queue of Python objects or arrays in a NATS JetStream stream, opened by name.

    The same API and rules as ``SharedMemoryQueue`` (except the zero-copy views), for
    processes on any host that reaches the servers. Get one with
    ``shared_queue.connect("nats://host:4222", name, ...)``.

    Args:
        url: ``nats://[user:password@]host:port[,host:port...][?replicas=3]``, the servers
            of one cluster (``tls://`` for TLS).
        name: The queue's name; handles with the same name and run_id share it.
        create: Create the queue's stream (FileExistsError if it exists); otherwise attach
            (FileNotFoundError if it does not exist).
        capacity: Most items the stream holds, used only when creating.
        item_size: Largest serialized item in bytes, used only when creating; it must fit
            the server's ``max_payload`` with room for headers.
        run_id: Namespace for the name.
        raw: Create a raw queue (as for ``SharedMemoryQueue``).
        dtype: With ``shape``, create a typed raw queue (as for ``SharedMemoryQueue``).
        shape: The shape of a typed raw queue's items.
        replicas: The stream's replication factor (1, or 3 in a 3-node cluster).
        connect_timeout: Seconds to wait for a server when connecting.
        io_timeout: Seconds a call waits for an unanswering server before ConnectionError.
        ack_wait: Seconds after which an item taken by a consumer that died before its ack
            is delivered again, used only when creating.
        **options: Passed to ``nats.connect`` (e.g. ``tls=ssl_context``, ``user_credentials``).

    Raises:
        ValueError: A bad URL, name, capacity or item_size, or an item_size the server
            cannot carry (the message names both numbers).
        FileExistsError, FileNotFoundError: As for ``SharedMemoryQueue``.
        ConnectionError: No server answered, or the server has no JetStream.
        IncompatibleQueueError: The stream exists but is not a shared_queue queue.
    """

    def __init__(
        self,
        url: str,
        name: str,
        create: bool = False,
        capacity: int = 1000,
        item_size: int = 4096,
        run_id: str = "",
        *,
        raw: bool = False,
        dtype: npt.DTypeLike | None = None,
        shape: tuple[int, ...] | int | None = None,
        replicas: int | None = None,
        connect_timeout: float | None = None,
        io_timeout: float | None = None,
        ack_wait: float | None = None,
        **options: Any,
    ) -> None:
        address = _natsio.parse_url(url)
        given = {"replicas": replicas, "connect_timeout": connect_timeout,
                 "io_timeout": io_timeout, "ack_wait": ack_wait}  # fmt: skip
        settings: dict[str, Any] = {**DEFAULTS, "replicas": 1, **dict(address.options)}
        settings.update({k: v for k, v in given.items() if v is not None})
        for key, most in (("connect_timeout", 3600), ("io_timeout", DUPLICATE_WINDOW),
                          ("ack_wait", 3600)):  # fmt: skip
            if not 0 < settings[key] <= most:  # NaN fails too
                raise ValueError(
                    f"{key} must be positive and at most {most} s, got {settings[key]}"
                    + (" (a put retried for longer could be stored twice: the server "
                       "remembers message ids for that long)" if key == "io_timeout" else "")
                )  # fmt: skip
        _positive_int("replicas", settings["replicas"], 5)
        self._url = url
        self._address = address
        self._name = name
        self._run_id = run_id
        self._stream = stream_name(name, run_id)
        self._label = f"{describe(name, run_id)} at {address.display}"
        self._settings = settings
        self._options = options
        self._spec = _Spec(self._label, address.display, self._stream, 0,  # capacity: _open
                           settings["io_timeout"], settings["connect_timeout"])  # fmt: skip
        self._ios_lock = threading.RLock()  # guards _io, _loop_ios, _pid across threads
        typed = _typed_slots(self._label, dtype, shape)
        if create:
            _positive_int("capacity", capacity, 2**31 - 1)
            if typed is not None:
                item_size = len(descriptor(*typed)) + typed[0].itemsize * int(np.prod(typed[1]))
            raw = raw or typed is not None
            _positive_int("item_size", item_size, 2**31 - 1)
        self._closed = False
        self._pid = os.getpid()
        self._io: _Io | None = None  # on the NATS loop, for the sync methods
        # For the async methods, per caller's loop: the task that made (or makes) its _Io.
        self._loop_ios: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[_Io]]
        self._loop_ios = weakref.WeakKeyDictionary()
        meta = _natsio.run(self._open(create, capacity, item_size, raw, typed))
        self._capacity = self._spec.capacity  # _open read it from the stream
        self._item_size = int(meta["item_size"])
        self._dtype = (
            dtype_from_bytes(base64.b64decode(meta["dtype"])) if meta.get("dtype") else None
        )
        self._shape = tuple(json.loads(meta["shape"])) if meta.get("shape") else None
        is_raw = meta.get("raw") == "1"
        if not create:
            try:
                _check_mode(self._label, (is_raw, self._dtype, self._shape), raw, typed)
            except BaseException:
                self.close()
                raise
        codec = RawCodec(self._label, self._dtype, self._shape) if is_raw else PickleCodec()
        limit = ((self._capacity, "capacity") if self._capacity <= MAX_BATCH
                 else (MAX_BATCH, "the server's atomic batch limit"))  # fmt: skip
        self._items = Items(self._label, self._item_size, codec, limit)

    # -- opening ----------------------------------------------------------------------------
    async def _open(
        self,
        create: bool,
        capacity: int,
        item_size: int,
        raw: bool,
        typed: tuple[np.dtype[Any], tuple[int, ...]] | None,
    ) -> dict[str, str]:
        nc = await _natsio.acquire(self._address, self._settings["connect_timeout"], self._options)
        try:
            if create:
                meta = await self._create(nc, capacity, item_size, raw, typed)
            else:
                meta = await self._attach(nc)
            self._spec.capacity = int(meta["capacity"])
            io = _Io(self._spec, nc)
            await io.start()
            self._io = io
            return meta
        except BaseException:
            await _natsio.release(nc, self._settings["connect_timeout"])
            raise

    async def _aio(self) -> _Io:
        """This handle's traffic on the running loop (made on its first async call there)."""
        self._live()
        loop = asyncio.get_running_loop()
        with self._ios_lock:
            made = self._loop_ios.get(loop)
            if made is None or (made.done() and made.result().nc.is_closed):
                made = self._loop_ios[loop] = loop.create_task(self._new_io())
        io = await asyncio.shield(made)  # concurrent first calls share one
        if self._closed:  # closed while it connected
            await io.stop()
            raise ValueError(f"queue {self._label}: this handle is closed")
        return io

    async def _new_io(self) -> _Io:
        nc = await _natsio.acquire(self._address, self._settings["connect_timeout"], self._options)
        io = _Io(self._spec, nc)
        try:
            await io.start()
        except BaseException:
            await _natsio.release(nc, self._settings["connect_timeout"])
            raise
        return io

    async def _api(
        self, nc: Any, subject: str, body: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        timeout = self._spec.io_timeout if timeout is None else timeout
        return await _api(nc, subject, body, timeout, self._label)

    async def _create(
        self,
        nc: Any,
        capacity: int,
        item_size: int,
        raw: bool,
        typed: tuple[np.dtype[Any], tuple[int, ...]] | None,
    ) -> dict[str, str]:
        version = str(getattr(nc, "_server_info", {}).get("version", "0"))
        if tuple(int(x) for x in version.split("-")[0].split(".")[:2]) < (2, 12):
            raise ValueError(
                f"queue {self._label} needs nats-server 2.12 or newer (atomic batch publish); "
                f"the server is {version}"
            )
        limit = nc.max_payload
        if item_size + HEADER_ROOM > limit:
            raise ValueError(
                f"item_size={item_size} of queue {self._label} plus {HEADER_ROOM} bytes of "
                f"headers exceeds the server's max_payload={limit}; raise max_payload in the "
                "server's configuration or choose a smaller item_size"
            )
        meta = {
            "shared_queue.format": FORMAT,
            "shared_queue.name": self._name,
            "shared_queue.run_id": self._run_id,
            "shared_queue.capacity": str(capacity),
            "shared_queue.item_size": str(item_size),
            "shared_queue.raw": "1" if raw else "0",
            "shared_queue.nonce": uuid.uuid4().hex,
        }
        if typed is not None:
            meta["shared_queue.dtype"] = base64.b64encode(dtype_to_bytes(typed[0])).decode()
            meta["shared_queue.shape"] = json.dumps(list(typed[1]))
        config = {
            "name": self._stream,
            "subjects": [self._spec.subject],
            "retention": "workqueue",
            "max_msgs": capacity,
            "discard": "new",
            "storage": "file",
            "num_replicas": self._settings["replicas"],
            "max_msg_size": item_size + HEADER_ROOM,
            "allow_atomic": True,
            "duplicate_window": DUPLICATE_WINDOW * 1_000_000_000,
            "description": f"shared_queue {describe(self._name, self._run_id)}",
            "metadata": meta,
        }
        reply = await self._api(nc, f"STREAM.CREATE.{self._stream}", config)
        error = reply.get("error")
        if (error and error.get("err_code") == _IN_USE) or (
            not error and reply["config"].get("metadata", {}).get("shared_queue.nonce") != meta[
                "shared_queue.nonce"]
        ):  # fmt: skip
            raise FileExistsError(
                f"queue {self._label} exists (stream {self._stream}); attach with create=False "
                "or remove it with unlink()"
            )
        if error:
            raise ValueError(f"queue {self._label}: the server refused the stream: "
                             f"{_ApiError(error)}")  # fmt: skip
        consumer = {
            "stream_name": self._stream,
            "config": {
                "durable_name": CONSUMER,
                "ack_policy": "explicit",
                "ack_wait": int(self._settings["ack_wait"] * 1e9),
                "max_ack_pending": -1,
                "max_waiting": 4096,
                "deliver_policy": "all",
            },
        }
        try:
            reply = await self._api(nc, f"CONSUMER.CREATE.{self._stream}.{CONSUMER}", consumer)
            if reply.get("error"):
                raise ValueError(f"queue {self._label}: the server refused the consumer: "
                                 f"{_ApiError(reply['error'])}")  # fmt: skip
        except BaseException:  # a stream without its consumer would be a queue nobody can get
            with contextlib.suppress(ConnectionError):
                await self._api(nc, f"STREAM.DELETE.{self._stream}", timeout=GRACE * 4)
            raise
        return _unprefix(meta)

    async def _attach(self, nc: Any) -> dict[str, str]:
        reply = await self._api(nc, f"STREAM.INFO.{self._stream}")
        error = reply.get("error")
        if error and error.get("err_code") == _NOT_FOUND:
            raise FileNotFoundError(f"queue {self._label} does not exist (no stream "
                                    f"{self._stream}); create it with create=True")  # fmt: skip
        if error:
            raise ConnectionError(f"queue {self._label}: {_ApiError(error)}")
        meta = _unprefix(reply["config"].get("metadata") or {})
        if meta.get("format") != FORMAT:
            raise IncompatibleQueueError(
                f"stream {self._stream} at {self._address.display} is not a queue of this "
                f"shared_queue version (format {meta.get('format')!r}, expected {FORMAT})"
            )
        return meta

    # -- the backend's transfer -------------------------------------------------------------
    def _check_open(self) -> None:
        self._live()

    def _live(self) -> _Io:
        io = self._io
        if self._closed or io is None:
            raise ValueError(f"queue {self._label}: this handle is closed")
        if self._pid != os.getpid() or io.nc.is_closed:
            # Inherited by fork (this process needs its own), or nats-py gave the connection
            # up for good: open anew.
            with self._ios_lock:
                if self._pid != os.getpid() or (self._io is not None and self._io.nc.is_closed):
                    self._pid = os.getpid()
                    self._io = None
                    self._loop_ios = weakref.WeakKeyDictionary()
                    _natsio.run(self._open(False, 0, 0, False, None))
            io = self._io
            if io is None:
                raise ValueError(f"queue {self._label}: this handle is closed")
        return io

    def _put(self, payloads: list[bytes | Parts], block: bool, timeout: float | None) -> None:
        io = self._live()
        _natsio.run(io.put([_flat(p) for p in payloads], block, _deadline(timeout, block)))

    def _take(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        io = self._live()
        pending = self._items.from_pending(max_items)
        if pending:
            return pending
        return self._payloads(_natsio.run(io.take(max_items, block, _deadline(timeout, block))))

    def _payloads(self, datas: list[bytes]) -> list[Any]:
        # The codecs build arrays on the buffer they get (raw items, and pickles framed with
        # out-of-band buffers, which start with a 0 byte): give them one they may keep and
        # write, as the shared-memory core does.
        if self._items.codec.raw:
            return [bytearray(d) for d in datas]
        return [bytearray(d) if d[:1] == b"\0" else d for d in datas]

    # -- async ------------------------------------------------------------------------------
    async def put_async(self, item: Any, timeout: float | None = None) -> None:
        """Put ``item``, waiting for room without blocking the event loop.

        A cancelled call may still have put its item (the server's answer was in flight).

        Raises:
            Full: No room freed up within ``timeout``.
            ValueError, TypeError: As for ``put``.
        """
        payload = _flat(self._dumps(item))
        await (await self._aio()).put([payload], True, _deadline(timeout, True))

    async def put_batch_async(self, items: Iterable[Any], timeout: float | None = None) -> None:
        """Put all ``items`` or none, waiting for room without blocking the event loop.

        Raises:
            Full: Room for the whole batch did not free up within ``timeout``.
            ValueError, TypeError: As for ``put_batch``.
        """
        payloads = self._batch_payloads(items)
        if payloads:
            datas = [_flat(p) for p in payloads]
            await (await self._aio()).put(datas, True, _deadline(timeout, True))

    async def get_async(self, timeout: float | None = None) -> Any:
        """Remove and return the item at the head, waiting without blocking the event loop.

        A cancelled call leaves its item in the queue (it is handed back to the server).

        Raises:
            Empty: No item arrived within ``timeout``.
            ValueError: The handle is closed.
        """
        return (await self.get_batch_async(1, timeout))[0]

    async def get_batch_async(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """Remove and return 1 to ``max_items`` items, waiting for the first without blocking.

        Raises:
            Empty: No item arrived within ``timeout``.
            ValueError: ``max_items`` is not positive, or the handle is closed.
        """
        _positive_int("max_items", max_items, 2**63 - 1)
        io = await self._aio()
        pending = self._items.from_pending(max_items)
        if pending:
            return self._decode(pending)
        datas = await io.take(max_items, True, _deadline(timeout, True))
        return self._decode(self._payloads(datas))

    # -- state ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The servers this handle talks to, without credentials."""
        return self._address.display

    @property
    def dtype(self) -> np.dtype[Any] | None:
        """The dtype of every item of a typed raw queue, else None."""
        return self._dtype

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of every item of a typed raw queue, else None."""
        return self._shape

    @property
    def closed(self) -> bool:
        """Whether this handle was closed."""
        return self._closed

    def qsize(self) -> int:
        """Return the number of items a get can take (approximate while others operate)."""
        return int(self._state()["queue_size"])

    def empty(self) -> bool:
        """Return whether a get_nowait would find no item (approximate while others operate)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Return whether a put_nowait would find no room (approximate while others operate)."""
        return bool(self._state()["stored"] >= self._capacity)

    def get_metrics(self) -> dict[str, Any]:
        """Return a snapshot of the queue's size and counters, keyed as for shared memory.

        The server keeps no byte counts, high-water mark or wait statistics for a stream:
        those keys are None (docs/beyond-one-host.md).
        """
        state = self._state()
        size = state["queue_size"]
        record: dict[str, Any] = dict.fromkeys(_metrics.KEYS)
        record.update(
            queue_size=size,
            queue_capacity=self._capacity,
            queue_utilization_percent=100.0 * size / self._capacity,
            queue_item_size_bytes=self._item_size,
            spare_slots=0,
            total_puts=state["puts"],
            total_gets=state["puts"] - state["stored"],
        )
        return record

    def _state(self) -> dict[str, int]:
        io = self._live()
        return _natsio.run(io.state())

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Release this handle and its share of the connection; the queue lives on.

        Calls waiting on this handle (in other threads, or coroutines) raise ValueError.
        Idempotent; it returns within seconds even when the server is gone.
        """
        self._close(wait=True)

    def _close(self, wait: bool) -> None:
        if self._closed:
            return
        self._closed = True
        with self._ios_lock:
            io, self._io = self._io, None
            loop_ios, self._loop_ios = list(self._loop_ios.items()), weakref.WeakKeyDictionary()
        if self._pid != os.getpid():
            return  # the connections are the parent's
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, made in loop_ios:
            if loop.is_closed():
                continue  # its connection ended with it
            if loop is running:  # close() called from a coroutine: finish in the background
                self._closing = loop.create_task(_stop_made(made))
            else:
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(_stop_made(made), loop)
        if io is None:
            return
        if not wait or _natsio.on_loop_thread():
            _natsio.submit(io.stop())
            return
        try:
            _natsio.run(io.stop())
        except (ConnectionError, RuntimeError) as exc:  # pragma: no cover - best effort
            log.info("queue %s: close: %s", self._label, exc)

    def unlink(self) -> None:
        """Delete the queue's stream and every item in it, once across all handles.

        Raises:
            FileNotFoundError: The queue was already unlinked.
        """
        if self._closed or self._pid != os.getpid():
            try:
                q = NatsQueue(self._url, self._name, run_id=self._run_id, **self._init_options())
            except FileNotFoundError:
                raise FileNotFoundError(f"queue {self._label} was already unlinked") from None
            with q:
                q.unlink()
            return
        io = self._live()
        reply = _natsio.run(self._api(io.nc, f"STREAM.DELETE.{self._stream}"))
        error = reply.get("error")
        if error and error.get("err_code") == _NOT_FOUND:
            raise FileNotFoundError(f"queue {self._label} was already unlinked")
        if error:
            raise ConnectionError(f"queue {self._label}: unlink: {_ApiError(error)}")

    def _init_options(self) -> dict[str, Any]:
        keep = {k: v for k, v in self._settings.items() if k != "replicas"}
        return {**keep, **self._options}

    def __reduce__(self) -> tuple[Callable[..., NatsQueue], tuple[Any, ...]]:
        return _reattach, (self._url, self._name, self._run_id, self._init_options())

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return (
            f"NatsQueue(url={self._address.display!r}, name={self._name!r}, "
            f"run_id={self._run_id!r}, capacity={self._capacity}, "
            f"item_size={self._item_size}{state})"
        )

    def __del__(self) -> None:
        # A handle dropped without close(): release it without waiting (a finalizer may run
        # on any thread, the NATS loop's included).
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):  # interpreter shutdown: best effort
                self._close(wait=False)


async def _stop_made(made: asyncio.Task[_Io]) -> None:
    try:
        io = await made
    except BaseException:  # it never connected: nothing to stop
        return
    await io.stop()


def _unprefix(meta: dict[str, str]) -> dict[str, str]:
    return {
        k.removeprefix("shared_queue."): v for k, v in meta.items() if k.startswith("shared_queue.")
    }


def _flat(payload: bytes | Parts) -> bytes:
    return payload if payload.__class__ is bytes else b"".join(payload)  # type: ignore[arg-type]


def _deadline(timeout: float | None, block: bool) -> float | None:
    """Return the monotonic deadline of a call: now for nowait, None for no limit."""
    _check_timeout(timeout)
    if not block:
        return time.monotonic()
    return None if timeout is None else time.monotonic() + timeout


class _Io:
    """One handle's traffic on one event loop: publishing, pulling, acknowledging, waiting.

    It holds the queue's ``_Spec``, never the handle, so that a dropped handle is collected.
    """

    def __init__(self, spec: _Spec, nc: Any) -> None:
        self.spec = spec
        self.nc = nc
        self.label = spec.label
        self.io_timeout = spec.io_timeout
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{CONSUMER}"
        self.inbox = nc.new_inbox()
        self.ack_prefix = f"{self.inbox}.a"  # ack confirmations come to <inbox>.a<n>
        self.requests = 0
        self.id_prefix = uuid.uuid4().hex  # message and batch ids: this prefix and a count
        self.ids = 0
        self.sub: Any = None
        # What the server sent to the inbox (items and pull statuses), with when it came.
        self.inq: asyncio.Queue[tuple[Any, float]] = asyncio.Queue()
        self.lock = asyncio.Lock()  # one pull at a time per handle: replies share the inbox
        self.room: asyncio.Event | None = None
        self.room_sub: Any = None
        self.calls: set[asyncio.Task[Any]] = set()  # this handle's puts and gets in progress
        self.closed = False
        # Acks sent, not yet confirmed: reply subject -> (the item's message, first sent at).
        self.unconfirmed: dict[str, tuple[Any, float]] = {}
        self.sent_at: dict[str, float] = {}  # reply subject -> when that ack was sent
        self.settled = asyncio.Event()  # set while nothing is unconfirmed
        self.settled.set()
        self.acks = 0
        # Acks confirmed lately, (when, the item's ack subject): sent again after a fail-over.
        self.recent: collections.deque[tuple[float, str]] = collections.deque()
        self.troubled = False  # a request went unanswered since the last one that was answered
        self.checker: asyncio.Task[None] | None = None
        self.signal: asyncio.Task[None] | None = None

    async def start(self) -> None:
        inq, ack_prefix, confirmed = self.inq, self.ack_prefix, self._confirmed

        async def deliver(msg: Any) -> None:
            # Pulled items carry their stream subject; statuses and ack confirmations the
            # reply subject they answer.
            if msg.subject.startswith(ack_prefix):
                confirmed(msg.subject)
            else:
                inq.put_nowait((msg, time.monotonic()))

        self.sub = await self.nc.subscribe(f"{self.inbox}.*", cb=deliver)

    async def stop(self) -> None:
        """End this handle's calls in progress (they raise ValueError) and release it."""
        self.closed = True
        for task in self.calls:
            task.cancel()
        timeout = self.spec.connect_timeout
        try:
            await self.settle(timeout)
            if self.sub is not None:
                # Items delivered to this handle but never returned go back at once.
                await asyncio.sleep(0)  # let deliveries already read reach the inbox queue
                await self._nak(self._leftovers(1 << 30, at_close=True))
                await asyncio.wait_for(self.sub.unsubscribe(), timeout)
            if self.room_sub is not None:
                await asyncio.wait_for(self.room_sub.unsubscribe(), timeout)
        except _natsio.TRANSIENT:
            pass
        finally:
            if self.checker is not None:
                self.checker.cancel()
            await _natsio.release(self.nc, timeout)

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        # A put or get in progress: close() cancels it, and it raises ValueError.
        if self.closed:
            raise ValueError(f"queue {self.label}: this handle is closed")
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if self.closed:
                raise ValueError(f"queue {self.label}: this handle is closed") from None
            raise
        finally:
            self.calls.discard(task)

    def _unanswered(self, since: float) -> None:
        """After a request went unanswered: raise ConnectionError once io_timeout passed."""
        now = time.monotonic()
        if now - since >= self.io_timeout:
            raise ConnectionError(
                f"queue {self.label}: no answer from {self.spec.display} for "
                f"{now - since:.1f} s (io_timeout={self.io_timeout})"
            )

    # -- put --------------------------------------------------------------------------------
    def _next_id(self) -> str:
        self.ids += 1
        return f"{self.id_prefix}{self.ids}"

    async def put(self, datas: list[bytes], block: bool, deadline: float | None) -> None:
        with self._call():
            await self._put(datas, block, deadline)

    async def _put(self, datas: list[bytes], block: bool, deadline: float | None) -> None:
        msg_id = self._next_id()  # the same on every retry: stored once
        silent_since: float | None = None
        backoff = 0.05
        recheck = 3
        while True:
            if self.room is not None:
                self.room.clear()  # a signal from now on wakes the wait below
            sent = time.monotonic()
            try:
                if not self.nc.is_connected:  # reconnecting: don't pile copies in its buffer
                    raise _NoAnswer
                error = await self._publish(datas, msg_id, deadline)
            except _NoAnswer as exc:
                await self._check_exists(exc, deadline)
                silent_since = silent_since or sent
                self._unanswered(silent_since)
                if _passed(deadline):
                    raise Full(
                        f"queue {self.label}: no answer from the server in time (the item "
                        "may have been stored)"
                    ) from None
                await asyncio.sleep(min(backoff, _left(deadline)))
                backoff = min(backoff * 2, 0.5)
                continue
            silent_since = None
            if error is None:
                return
            if error.code == _MAX_MSGS:
                # The server removes an acknowledged item a moment after it confirms the ack:
                # a put right after gets (this handle's, or anyone's) may be refused while the
                # stream says there is room. Then it tries again, a few times at most.
                await self.settle(_bounded(deadline, GRACE))
                if recheck > 0 and await self._has_room(len(datas), deadline):
                    recheck -= 1
                    continue
                if not block or _passed(deadline):
                    raise Full(f"queue {self.label} is full (capacity={self.spec.capacity})")
                await self._wait_room(deadline)
                continue
            if error.code in _BATCH_RETRY:  # a batch cut by a reconnect, or too many at once
                await asyncio.sleep(min(backoff, max(_left(deadline), 0)))
                backoff = min(backoff * 2, 0.5)
                if _passed(deadline):
                    raise Full(f"queue {self.label}: the server did not take the batch in time")
                continue
            if error.code == _MSG_SIZE:
                raise ValueError(f"queue {self.label}: the server refused an item: {error}")
            raise ConnectionError(f"queue {self.label}: the server refused a put: {error}")

    async def _publish(
        self, datas: list[bytes], msg_id: str, deadline: float | None
    ) -> _ApiError | None:
        subject = self.spec.subject
        wait = _request_wait(deadline)
        try:
            if len(datas) == 1:
                msg = await self.nc.request(subject, datas[0], timeout=wait,
                                            headers={"Nats-Msg-Id": msg_id})  # fmt: skip
            else:
                batch = self._next_id()
                last = len(datas) - 1
                for i, data in enumerate(datas[:-1]):
                    await self.nc.publish(subject, data, headers={
                        "Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(i + 1)})  # fmt: skip
                # The commit's message id is the batch's: a retry of a stored batch is refused
                # whole (_BATCH_DUP), so nothing of it is stored twice.
                msg = await self.nc.request(subject, datas[last], timeout=wait, headers={
                    "Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(last + 1),
                    "Nats-Batch-Commit": "1", "Nats-Msg-Id": msg_id})  # fmt: skip
        except _natsio.NoRespondersError:
            raise _NoAnswer(no_responders=True) from None
        except _natsio.TRANSIENT:
            raise _NoAnswer from None
        reply = json.loads(msg.data)
        error = reply.get("error")
        if error is None or error.get("err_code") == _BATCH_DUP:  # a retry of a stored batch
            return None
        return _ApiError(error)

    async def _has_room(self, n: int, deadline: float | None) -> bool:
        """Whether the stream says it has room for ``n`` more items now."""
        try:
            reply = await _api(self.nc, f"STREAM.INFO.{self.spec.stream}", None,
                               _bounded(deadline, GRACE), self.label)  # fmt: skip
        except ConnectionError:
            return False
        state = reply.get("state")
        return state is not None and int(state["messages"]) + n <= self.spec.capacity

    async def _wait_room(self, deadline: float | None) -> None:
        try:
            if self.room is None:
                room = asyncio.Event()

                async def signal(_msg: Any) -> None:
                    room.set()

                self.room_sub = await self.nc.subscribe(self.spec.room_subject, cb=signal)
                self.room = room
                await self.nc.flush(timeout=_bounded(deadline, ROOM_RETRY))
                return  # retry at once: a get may have acked before the subscription was made
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.room.wait(), min(ROOM_RETRY, _left(deadline)))
        except _natsio.TRANSIENT:  # the retry that follows finds out what is wrong
            await asyncio.sleep(min(0.1, max(_left(deadline), 0)))

    # -- get --------------------------------------------------------------------------------
    async def take(self, n: int, block: bool, deadline: float | None) -> list[bytes]:
        with self._call():
            return await self._take(n, block, deadline)

    async def _take(self, n: int, block: bool, deadline: float | None) -> list[bytes]:
        # Concurrent gets of one handle pull one at a time (their replies share the inbox); a
        # get waits for its turn only until its deadline.
        if self.lock.locked():
            try:
                await asyncio.wait_for(self.lock.acquire(), None if deadline is None
                                       else max(_left(deadline), 0))  # fmt: skip
            except asyncio.TimeoutError:
                raise Empty(f"queue {self.label} is empty") from None
        else:
            await self.lock.acquire()  # free: taken at once
        try:
            msgs = await self._fetch(n, block, deadline)
            if not msgs:
                raise Empty(f"queue {self.label} is empty")
            try:
                await self._ack(msgs)
            except asyncio.CancelledError:
                await self._nak(msgs)
                raise
        finally:
            self.lock.release()
        return [m.data for m in msgs]

    async def _fetch(self, n: int, block: bool, deadline: float | None) -> list[Any]:
        msgs = self._leftovers(n)
        if msgs:
            return msgs
        silent_since: float | None = None
        first = True
        while True:
            sent = time.monotonic()
            try:
                if first or not block:
                    msgs = await self._pull(n, None, deadline)  # what is there now
                else:
                    linger = min(_left(deadline), LINGER)
                    if linger <= 0:
                        return []
                    msgs = await self._pull(1, linger, deadline)
                    if msgs and n > 1:
                        with contextlib.suppress(_NoAnswer):  # keep the one there is
                            msgs += await self._pull(n - 1, None, None, taken=msgs)
            except _NoAnswer as exc:
                self.troubled = True
                await self._check_exists(exc, deadline)
                silent_since = silent_since or sent
                self._unanswered(silent_since)
                if _passed(deadline):
                    return []
                await asyncio.sleep(min(0.1, _left(deadline)))
                continue
            silent_since = None
            if self.troubled:
                await self._ack_again()
            if msgs or not block or _passed(deadline):
                return msgs
            first = False

    def _leftovers(self, n: int, at_close: bool = False) -> list[Any]:
        # Items that arrived after an earlier pull was given up on are this handle's; one that
        # waited here long (the server may deliver it again after ack_wait) goes back instead.
        msgs: list[Any] = []
        stale: list[Any] = []
        now = time.monotonic()
        while len(msgs) < n and not self.inq.empty():
            msg, came = self.inq.get_nowait()
            if _status(msg):
                continue
            (stale if now - came > STALE and not at_close else msgs).append(msg)
        if stale:
            self._nak_soon(stale)
        return msgs

    async def _pull(
        self,
        n: int,
        linger: float | None,
        deadline: float | None,
        taken: list[Any] = (),  # type: ignore[assignment]
    ) -> list[Any]:
        """Ask for up to ``n`` items, waiting up to ``linger`` seconds for the first."""
        self.requests += 1
        reply = f"{self.inbox}.{self.requests}"
        request: dict[str, Any] = {"batch": n}
        if linger is None:
            request["no_wait"] = True
        else:
            request["expires"] = int(linger * 1e9)
        # The server answers a lingering request when it expires; a late answer is not lost:
        # its items wait in the inbox for this handle's next get (_leftovers).
        wait = min(max(_left(deadline), GRACE), (linger or 0) + GRACE)
        try:
            if not self.nc.is_connected:
                raise _NoAnswer
            await self.nc.publish(self.next_subject, json.dumps(request).encode(), reply=reply)
        except _natsio.TRANSIENT:
            raise _NoAnswer from None
        msgs: list[Any] = []
        end = time.monotonic() + wait
        try:
            while len(msgs) < n:
                try:
                    if self.inq.empty():
                        wait = max(end - time.monotonic(), 0.001)
                        msg, _ = await asyncio.wait_for(self.inq.get(), wait)
                    else:
                        msg, _ = self.inq.get_nowait()
                except _natsio.TIMEOUTS:
                    if msgs:
                        return msgs
                    raise _NoAnswer from None
                status = _status(msg)
                if not status:
                    msgs.append(msg)
                elif msg.subject == reply and status != "100":
                    # 404 no messages, 408 request expired: this request is over. 503:
                    # nothing serves the consumer; 409 (a leader change, too many waiting
                    # pulls) and others: retried after a pause, as for no answer.
                    if msgs or status in ("404", "408"):
                        break
                    log.info("queue %s: pull ended: %s", self.label, msg.headers)
                    raise _NoAnswer(no_responders=status == "503")
        except asyncio.CancelledError:
            self._nak_soon([*taken, *msgs])  # delivered to a call that is gone: back now
            raise
        return msgs

    async def _check_exists(self, exc: _NoAnswer, deadline: float | None) -> None:
        """After ``no_responders``: raise FileNotFoundError if the stream is gone."""
        if not exc.no_responders:
            return
        try:
            reply = await _api(self.nc, f"STREAM.INFO.{self.spec.stream}", None,
                               _bounded(deadline, LINGER), self.label)  # fmt: skip
        except ConnectionError:
            return  # no JetStream answer either: a fail-over; the caller retries
        error = reply.get("error")
        if error and error.get("err_code") == _NOT_FOUND:
            raise FileNotFoundError(f"queue {self.label} was unlinked")

    async def _ack(self, msgs: list[Any]) -> None:
        # The acks go out before the call returns (into the connection's buffer while it
        # reconnects); their confirmations come back to the inbox (deliver -> _confirmed).
        # Until then this handle's puts that find the queue full, and its size queries, wait
        # for them (settle), so it sees its own gets' room at once; an ack not confirmed
        # within LINGER is sent again (across a fail-over), so an item is taken once while
        # this process lives; close() waits for them.
        now = time.monotonic()
        for m in msgs:
            self.acks += 1
            reply = f"{self.ack_prefix}{self.acks}"
            self.unconfirmed[reply] = (m, now)
            self.sent_at[reply] = now
            with contextlib.suppress(*_natsio.TRANSIENT):  # if it fails, the checker re-sends
                await self.nc.publish(m.reply, b"+ACK", reply=reply)
        self.settled.clear()
        if self.checker is None or self.checker.done():
            self.checker = asyncio.ensure_future(self._check_acks())

    def _confirmed(self, reply: str) -> None:
        done = self.unconfirmed.pop(reply, None)
        if done is None:
            return
        self.sent_at.pop(reply, None)
        now = time.monotonic()
        self.recent.append((now, done[0].reply))
        while self.recent and now - self.recent[0][0] > RECENT:
            self.recent.popleft()
        if not self.unconfirmed:
            self.settled.set()
        if self.signal is None or self.signal.done():  # one room post per burst: puts retry
            self.signal = asyncio.ensure_future(self._signal_room())

    async def _signal_room(self) -> None:
        with contextlib.suppress(*_natsio.TRANSIENT):
            await self.nc.publish(self.spec.room_subject, b"")

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` for this handle's acks to be confirmed."""
        if not self.settled.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.settled.wait(), timeout)

    async def _check_acks(self) -> None:
        while self.unconfirmed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.settled.wait(), LINGER / 2)
            try:
                await self._resend_acks()
            except Exception as exc:  # this task must outlive any one error
                log.info("queue %s: re-sending acks: %r", self.label, exc)
        self.settled.set()

    async def _resend_acks(self) -> None:
        now = time.monotonic()
        for reply, (m, first) in list(self.unconfirmed.items()):
            if now - self.sent_at.get(reply, now) < LINGER or reply not in self.unconfirmed:
                continue
            del self.unconfirmed[reply]
            self.sent_at.pop(reply, None)
            if now - first >= self.io_timeout:
                log.warning("queue %s: an ack went unconfirmed for io_timeout=%s s; the "
                            "server may deliver its item again", self.label,
                            self.io_timeout)  # fmt: skip
                continue
            self.acks += 1
            again = f"{self.ack_prefix}{self.acks}"
            self.unconfirmed[again] = (m, first)
            self.sent_at[again] = now
            if self.nc.is_connected:
                with contextlib.suppress(*_natsio.TRANSIENT):
                    await self.nc.publish(m.reply, b"+ACK", reply=again)

    async def _ack_again(self) -> None:
        # The consumer answers again after going unanswered: it may have a new leader, which
        # need not know of acks its predecessor confirmed just before it died (they are
        # replicated after they are confirmed), and would deliver those items again after
        # ack_wait. So the acks confirmed lately are sent once more; for an item already gone
        # the server ignores them.
        self.troubled = False
        for _, subject in self.recent:
            with contextlib.suppress(*_natsio.TRANSIENT):
                await self.nc.publish(subject, b"+ACK")

    async def _nak(self, msgs: list[Any]) -> None:
        for m in msgs:
            with contextlib.suppress(Exception):  # best effort: ack_wait redelivers them anyway
                await self.nc.publish(m.reply, b"-NAK")

    def _nak_soon(self, msgs: list[Any]) -> None:
        if msgs:
            self.signal = asyncio.ensure_future(self._nak(msgs))

    # -- state ------------------------------------------------------------------------------
    async def state(self) -> dict[str, int]:
        spec = self.spec
        await self.settle(GRACE)  # this handle's gets count as done once their acks are
        stream, consumer = await asyncio.gather(
            _api(self.nc, f"STREAM.INFO.{spec.stream}", None, self.io_timeout, self.label),
            _api(
                self.nc,
                f"CONSUMER.INFO.{spec.stream}.{CONSUMER}",
                None,
                self.io_timeout,
                self.label,
            ),
        )
        for reply, what in ((stream, "was unlinked"), (consumer, "has lost its consumer")):
            error = reply.get("error")
            if error and error.get("err_code") in (_NOT_FOUND, _NO_CONSUMER):
                raise FileNotFoundError(f"queue {self.label} {what}")
            if error:
                raise ConnectionError(f"queue {self.label}: {_ApiError(error)}")
        stored = int(stream["state"]["messages"])
        # The items not yet delivered. Not `stored - num_ack_pending`: the server removes an
        # acknowledged item from the stream a moment after its consumer counts the ack, and
        # in between that said the item was still there.
        size = min(max(int(consumer.get("num_pending", 0)), 0), spec.capacity)
        return {"queue_size": size, "stored": stored, "puts": int(stream["state"]["last_seq"])}


def _status(msg: Any) -> str | None:
    headers = msg.headers
    if headers and not msg.data and "Status" in headers:
        return str(headers["Status"])
    return None


def _request_wait(deadline: float | None) -> float:
    # How long a request waits for its answer: until the call's deadline, but at least
    # GRACE (a nowait call's round trip) and at most LINGER + GRACE (then it is sent again).
    return min(max(_left(deadline), GRACE), LINGER + GRACE)


def _bounded(deadline: float | None, most: float) -> float:
    """At most ``most`` seconds, and no later than the deadline (but a round trip's 0.05 s)."""
    return max(min(_left(deadline), most), 0.05)


def _left(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.monotonic()


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
