"""The NATS side of a process: one event-loop thread and the connections it serves.

nats-py is an asyncio client; the sync API of ``NatsQueue`` runs its coroutines on one daemon
thread per process (``run``), and its async API runs the same coroutines on the caller's own
loop, over a connection of that loop (no hop between threads). Handles that name the same
servers with the same options on the same loop share one connection, counted by reference.
A forked child inherits neither the thread nor usable connections, so both are forgotten at
fork and made anew on first use.

nats-py reports connection trouble through callbacks; here they log to the
``shared_queue.nats`` logger, never to stderr, and credentials never reach a log line.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

try:
    import nats
    import nats.errors
except ImportError as exc:  # pragma: no cover - exercised by test_nats_missing
    raise ImportError(
        "a nats:// queue needs the nats-py client: pip install 'shared-multiprocess-queue[nats]'"
    ) from exc

log = logging.getLogger("shared_queue.nats")
log.addHandler(logging.NullHandler())  # silent unless the application configures logging

NoRespondersError = nats.errors.NoRespondersError
#: A request that ended in one of these got no answer: the server may be failing over.
TIMEOUTS: tuple[type[BaseException], ...] = (asyncio.TimeoutError, nats.errors.TimeoutError)
#: What a request to the server may end in while the connection is down or being replaced:
#: every nats-py error (reconnecting, closed, buffer full while reconnecting, no responders,
#: flush timeouts...), timeouts and socket errors. Callers retry them up to io_timeout.
TRANSIENT: tuple[type[BaseException], ...] = (*TIMEOUTS, nats.errors.Error, OSError)

T = TypeVar("T")

#: Options a ``nats://`` URL may carry in its query, and their types.
URL_OPTIONS: dict[str, type] = {
    "replicas": int,
    "connect_timeout": float,
    "io_timeout": float,
    "ack_wait": float,
}


@dataclass(frozen=True)
class Address:
    """A parsed ``nats://`` URL: the servers of one cluster, credentials, and options."""

    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    tls: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def display(self) -> str:
        """The URL without credentials, for messages and logs."""
        scheme = "tls" if self.tls else "nats"
        return f"{scheme}://{','.join(self.servers)}"

    def server_urls(self) -> list[str]:
        """The URLs nats-py connects to (credentials go separately: ``credentials``)."""
        scheme = "tls" if self.tls else "nats"
        return [f"{scheme}://{s}" for s in self.servers]

    def credentials(self) -> dict[str, str]:
        """The URL's credentials as nats-py's connect options (any characters survive)."""
        if self.user is not None:
            return {"user": self.user, "password": self.password or ""}
        return {} if self.token is None else {"token": self.token}


def parse_url(url: str) -> Address:
    """Parse ``nats://[user:pass@]host:port[,host:port...][?replicas=3&...]``.

    Raises:
        ValueError: Not a nats:// or tls:// URL, no server, a bad port, or an unknown or
            malformed option (the message names it, never the credentials).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("nats", "tls"):
        raise ValueError(f"not a nats:// URL: {_redact(url)!r}")
    user = password = token = None
    cred = None
    if "@" in rest:  # credentials end at the last "@", whatever (unencoded) they contain
        cred, _, rest = rest.rpartition("@")
    rest, _, query = rest.partition("?")
    rest = rest.rstrip("/")
    if cred is not None:
        if ":" in cred:
            user, _, password = cred.partition(":")
            user, password = unquote(user), unquote(password)
        else:
            token = unquote(cred)
    if "/" in rest:
        raise ValueError(
            f"nats URL {_redact(url)!r} has a path; the queue name is a separate argument"
        )
    servers = []
    for part in rest.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon:
            host, port = part.strip(), "4222"
        try:
            number = int(port)
            if not host or not 0 < number < 65536:
                raise ValueError
            urlsplit(f"//{host}:{number}")  # rejects what a URL cannot hold
        except ValueError:
            raise ValueError(f"bad server {part!r} in nats URL {_redact(url)!r}") from None
        servers.append(f"{host}:{number}")
    options = []
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        kind = URL_OPTIONS.get(key)
        if kind is None:
            raise ValueError(
                f"unknown option {key!r} in nats URL {_redact(url)!r} "
                f"(known: {', '.join(URL_OPTIONS)})"
            )
        try:
            options.append((key, kind(value)))
        except ValueError:
            raise ValueError(f"option {key}={value!r} in nats URL is not {kind.__name__}") from None
    return Address(tuple(servers), user, password, token, scheme == "tls", tuple(options))


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:  # credentials end at the last "@", whatever they contain
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest


# -- the loop thread ----------------------------------------------------------------------------
class _Loop:
    """One asyncio loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="shared_queue-nats", daemon=True
        )
        self.thread.start()


_lock = threading.RLock()  # a finalizer that closes a handle may run while it is held
_loop: _Loop | None = None
_exiting = False  # set at interpreter exit, once the loop is stopped for good
_connections: dict[tuple[Any, ...], _Connection] = {}
_conn_lock = threading.Lock()  # held only for dict operations, never across an await


def _forget() -> None:
    # In a forked child: the parent's thread does not exist here and its sockets are shared
    # with the parent; start over without touching them.
    global _loop, _lock, _conn_lock
    _lock = threading.RLock()
    _loop = None
    _connections.clear()
    _conn_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget)


def _shutdown() -> None:
    # At exit: close the connections (what they still buffer, acks included, is sent), then
    # stop the loop, so that no task is left to die with the interpreter.
    global _exiting
    if _loop is None or on_loop_thread():
        return
    _exiting = True

    async def close_all() -> None:
        conns = [c for c in _connections.values() if c.loop is _loop.loop]
        await asyncio.gather(*(_close(c.nc, 2.0) for c in conns))

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(close_all(), _loop.loop).result(5.0)
    with contextlib.suppress(RuntimeError):
        _loop.loop.call_soon_threadsafe(_loop.loop.stop)
    _loop.thread.join(5.0)


atexit.register(_shutdown)


def loop() -> asyncio.AbstractEventLoop:
    """Return this process's NATS loop, starting its thread on first use."""
    global _loop
    with _lock:
        if _loop is None:
            _loop = _Loop()
        return _loop.loop


def on_loop_thread() -> bool:
    """Return whether the caller runs on the NATS loop's thread."""
    return _loop is not None and threading.current_thread() is _loop.thread


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the NATS loop and return its result (the sync API)."""
    if on_loop_thread() or _exiting:
        coro.close()
        raise RuntimeError(
            "the interpreter is exiting"
            if _exiting
            else "a NatsQueue's sync methods cannot be called from its own loop"
        )
    # A task made on the loop, and a plain lock the caller sleeps on until the task is done:
    # the least hand-off there is (run_coroutine_threadsafe adds a future and a condition).
    lp = loop()
    done = _thread.allocate_lock()
    done.acquire()
    box: list[asyncio.Task[T]] = []

    def start() -> None:
        task = lp.create_task(coro)
        box.append(task)
        task.add_done_callback(lambda _task: done.release())

    lp.call_soon_threadsafe(start)
    thread = _loop.thread if _loop is not None else None
    try:
        while not done.acquire(timeout=1.0):
            if thread is None or not thread.is_alive():
                raise RuntimeError("the NATS loop thread has died")
    except BaseException:  # KeyboardInterrupt, say: the call ends, on the loop too
        with contextlib.suppress(RuntimeError):
            lp.call_soon_threadsafe(lambda: box[0].cancel() if box else coro.close())
        raise
    return box[0].result()


def submit(coro: Coroutine[Any, Any, Any]) -> None:
    """Start ``coro`` on the NATS loop without waiting for it (if the loop still runs)."""
    if _exiting or _loop is None:
        coro.close()
        return
    try:
        asyncio.run_coroutine_threadsafe(coro, _loop.loop)
    except RuntimeError:  # the loop is closed
        coro.close()


# -- connections --------------------------------------------------------------------------------
class _Connection:
    """A nats-py client shared by the handles of one process that name the same servers
    and run on the same event loop."""

    def __init__(self, key: tuple[Any, ...], nc: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.nc = nc
        self.loop = loop
        self.refs = 0
        self.keeper: asyncio.Task[None] | None = None


async def _log_error(exc: Exception) -> None:
    log.warning("nats connection: %s", exc)


async def _log_disconnected() -> None:
    log.info("nats connection ended (reconnecting unless it was closed)")


async def _log_reconnected() -> None:
    log.info("nats connection re-established")


async def acquire(address: Address, connect_timeout: float, extra: dict[str, Any]) -> Any:
    """Return a connected nats-py client for ``address``, shared; pair with ``release``.

    Raises:
        ConnectionError: No server of ``address`` answered within ``connect_timeout``.
    """
    running = asyncio.get_running_loop()
    key = (address, tuple(sorted((k, repr(v)) for k, v in extra.items())), id(running))
    with _conn_lock:  # the connections of every loop of the process, in several threads
        for stale in [k for k, c in _connections.items() if c.loop.is_closed()]:
            del _connections[stale]  # left by a loop that has ended: nothing to close
        conn = _connections.get(key)
        if conn is not None and not conn.nc.is_closed:
            conn.refs += 1
            return conn.nc
    refused: list[bool] = []

    async def on_error(exc: Exception) -> None:
        if not refused and "authorization" in str(exc).lower():
            refused.append(True)
        await _log_error(exc)

    options: dict[str, Any] = {
        "servers": address.server_urls(),
        "connect_timeout": connect_timeout,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
        "allow_reconnect": True,
        "error_cb": on_error,
        "disconnected_cb": _log_disconnected,
        "reconnected_cb": _log_reconnected,
        **address.credentials(),
        **extra,  # the caller's options win
    }
    try:
        nc = await asyncio.wait_for(
            nats.connect(**options), timeout=connect_timeout * len(address.servers) + 1.0
        )
    except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
        if refused or "authorization" in str(exc).lower():
            raise PermissionError(
                f"the NATS servers of {address.display} refused the credentials "
                "(authorization violation)"
            ) from None
        raise ConnectionError(
            f"no NATS server of {address.display} answered (connect_timeout={connect_timeout} "
            f"s per server; {type(exc).__name__})"
        ) from None
    with _conn_lock:
        conn = _connections.get(key)
        if conn is None or conn.nc.is_closed:
            conn = _connections[key] = _Connection(key, nc, running)
            if _loop is None or running is not _loop.loop:
                conn.keeper = running.create_task(_keep(conn))
            spare = None
        else:  # another handle connected meanwhile: use that one
            spare = nc
        conn.refs += 1
    if spare is not None:
        await _close(spare, connect_timeout)
    return conn.nc


async def release(nc: Any, timeout: float) -> None:
    """Drop one reference to ``nc``; the last one closes it (within ``timeout``)."""
    with _conn_lock:
        found = next((c for c in _connections.values() if c.nc is nc), None)
        if found is not None:
            found.refs -= 1
            if found.refs > 0:
                return
            del _connections[found.key]
    if found is not None and found.keeper is not None:
        found.keeper.cancel()  # it closes the connection
        await asyncio.wait([found.keeper], timeout=timeout)
        return
    await _close(nc, timeout)


async def _keep(conn: _Connection) -> None:
    # Lives as long as a connection made on a caller's loop: when the loop ends (asyncio.run
    # cancels what is left on it), it closes the connection cleanly on that loop.
    try:
        await asyncio.Event().wait()
    finally:
        with _conn_lock:
            if _connections.get(conn.key) is conn:
                del _connections[conn.key]
        await _close(conn.nc, 2.0)


async def _close(nc: Any, timeout: float) -> None:
    try:
        await asyncio.wait_for(nc.close(), timeout)
    except Exception as exc:  # a dead server; nats-py may fail in several ways closing then
        log.info("nats connection closed without a clean goodbye: %r", exc)
        # nats-py stops its subscriptions' tasks only after a clean goodbye; left running,
        # they would die with the loop, noisily.
        for sub in list(getattr(nc, "_subs", {}).values()):
            task = getattr(sub, "_wait_for_msgs_task", None)
            if task is not None and not task.done():
                task.cancel()
