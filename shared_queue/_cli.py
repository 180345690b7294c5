"""``python -m shared_queue`` / ``shared-queue``: list, inspect, remove and clean up queues,
in /dev/shm or on a NATS server (``--url``), and bridge one queue into another.

Exit codes: 0 success, 1 failure (no such queue, nothing to bench), 2 bad usage, 3 no NATS
server answered, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

from . import _registry as R
from ._errors import IncompatibleQueueError
from ._names import base_name, describe, queue_of, run_id_prefix

if TYPE_CHECKING:
    from ._async import SharedMemoryQueue
    from ._nats import NatsQueue

#: The exit status when no NATS server answered (docs/cli.md#exit-status).
EXIT_UNREACHABLE = 3
_log = logging.getLogger("shared_queue.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    # bench hands what it does not know to benchmarks/bench.py; every other command refuses it.
    args, rest = parser.parse_known_args(argv)
    if rest and args.func is not cmd_bench:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        with _skip_notes(getattr(args, "verbose", False)):
            return int(args.func(args))
    except BrokenPipeError:  # stdout's reader went away (`| head`): not a NATS matter
        raise
    except ConnectionError as exc:  # no NATS server answered, or one without JetStream
        print(f"shared-queue: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (
        FileNotFoundError, FileExistsError, ValueError, TypeError, IncompatibleQueueError,
        ImportError,
    ) as exc:  # fmt: skip
        print(f"shared-queue: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shared-queue",
        description="Inspect and clean up shared_queue queues in /dev/shm or on a NATS server, "
        "and bridge one queue into another.",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("ls", help="list queues")
    p.add_argument("--json", action="store_true", help="print JSON")
    _run_id_filter(p, "list only the queues of this run_id")
    _url_arg(p)
    _verbose_arg(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("stat", help="show a queue's metrics")
    _name_args(p)
    _url_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--watch", action="store_true", help="refresh a live line until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, default=0, help="stop --watch after this many lines")
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("rm", help="unlink a queue (its semaphores, or its NATS stream)")
    _name_args(p)
    _url_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("gc", help="remove queues and leftovers that no live process uses")
    p.add_argument("--dry-run", action="store_true", help="only say what would go")
    p.add_argument("--json", action="store_true", help="print JSON")
    _run_id_filter(p, "collect only what belongs to this run_id")
    _verbose_arg(p)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser(
        "bench",
        help="run benchmarks/bench.py with its own flags, --quick if none (source checkout)",
        add_help=False,  # --help goes to bench.py too, after _BENCH_HELP
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "bridge",
        help="forward the items of one queue into another until Ctrl-C or SIGTERM",
        description="Forward the items of queue SRC into queue DST, in order and in batches, "
        "until Ctrl-C or SIGTERM (the batch in flight is finished first) or --idle-timeout. "
        "A queue is shm:NAME (shared memory on this host) or "
        "nats://HOST:PORT[,HOST:PORT...]/NAME (a NATS JetStream server or cluster).",
    )
    p.add_argument("src", type=_address_arg, metavar="SRC", help="the queue to take items from")
    p.add_argument("dst", type=_address_arg, metavar="DST", help="the queue to put them into")
    p.add_argument("--run-id", default="", metavar="ID", help="the run_id of both queues")
    p.add_argument("--src-run-id", metavar="ID", help="the run_id of SRC (default: --run-id)")
    p.add_argument("--dst-run-id", metavar="ID", help="the run_id of DST (default: --run-id)")
    p.add_argument(
        "--batch", type=_positive_int, default=100, metavar="N",
        help="most items moved at once (100)",
    )  # fmt: skip
    p.add_argument(
        "--idle-timeout", type=_positive_float, metavar="SECONDS",
        help="stop once no item came from SRC for this long (default: run until stopped)",
    )  # fmt: skip
    p.add_argument(
        "--create", action="store_true",
        help="create DST, if it does not exist, with the capacity, item size and mode of SRC",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser("demo", help="run the quick start")
    p.set_defaults(func=cmd_demo)
    return parser


def _url_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", type=_url_type, default="shm://",
        help="where the queues are: shm:// (this host's /dev/shm, the default) or "
        "nats://HOST:PORT[,HOST:PORT...] (a NATS JetStream server or cluster)",
    )  # fmt: skip


def _url_type(text: str) -> str:
    """A --url: shm://, or a nats:// or tls:// URL (checked further when it is used)."""
    scheme, sep, rest = text.partition("://")
    if scheme == "shm" and sep and not rest.strip("/"):
        return "shm://"
    if scheme in ("nats", "tls") and sep and rest:
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a queue URL: use shm:// or nats://HOST:PORT[,HOST:PORT...]"
    )


class _Address(NamedTuple):
    """A queue a bridge names: the URL ``connect`` takes, the name, and how to show it."""

    url: str
    name: str
    shown: str


def _address_arg(text: str) -> _Address:
    """A bridge's queue, ``shm:NAME`` or ``nats://HOST:PORT[,...]/NAME[?OPTIONS]``."""
    scheme, colon, rest = text.partition(":")
    if scheme == "shm" and colon and not rest.startswith("/") and rest:
        return _Address("shm://", rest, text)
    if scheme in ("nats", "tls") and rest.startswith("//"):
        servers, _, query = rest[2:].partition("?")
        hosts, slash, name = servers.rpartition("/")
        if slash and hosts and name:
            url = f"{scheme}://{hosts}" + (f"?{query}" if query else "")
            return _Address(url, unquote(name), f"{_display(url)}/{name}")
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a queue address: use shm:NAME or nats://HOST:PORT[,HOST:PORT...]/NAME"
    )


def _verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="say on stderr which entries named like a queue's were skipped, and why",
    )  # fmt: skip


@contextlib.contextmanager
def _skip_notes(enabled: bool) -> Iterator[None]:
    """While enabled, print the registry's one-line notes on skipped entries to stderr."""
    if not enabled:
        yield
        return
    with _logs_to_stderr((R.__name__, _log.name), logging.INFO):
        yield


@contextlib.contextmanager
def _logs_to_stderr(names: Sequence[str], level: int) -> Iterator[None]:
    """While inside, print the records of the loggers ``names`` at ``level`` and above to
    stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shared-queue: %(message)s"))
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(level)
    try:
        yield
    finally:
        for log, old in zip(loggers, levels, strict=True):
            log.removeHandler(handler)
            log.setLevel(old)


def _name_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the queue's name")
    p.add_argument("--run-id", default="", help="the queue's run_id")


def _run_id_filter(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--run-id", metavar="ID", help=what + " ('' for queues without one)")


def _in_namespace(entry: str, run_id: str | None) -> bool:
    """Whether the /dev/shm ``entry`` (segment, temporary file or semaphore) is of ``run_id``.

    None selects every namespace.
    """
    if run_id is None:
        return True
    # base_name() writes the run_id's length first, so this prefix belongs to one run_id only.
    base = queue_of(entry)
    return base is not None and base.startswith(run_id_prefix(run_id))


def _find(name: str, run_id: str) -> R.QueueInfo:
    info = R.inspect(base_name(name, run_id))
    if info is None:
        raise _not_found(name, run_id)
    return info


def _not_found(
    name: str, run_id: str, found: Sequence[tuple[str, str]] | None = None, where: str = ""
) -> FileNotFoundError:
    """The error for a missing queue, naming the run_ids that do have a queue ``name``.

    ``found``: the (name, run_id) of the queues that exist, those in /dev/shm if None;
    ``where``: where they are, for the message (" at nats://...").
    """
    message = f"no queue {describe(name, run_id)}{where}"
    if found is None:
        others = sorted(
            q.run_id
            for q in R.find_queues()
            if q.run_id != run_id and q.base == base_name(name, q.run_id)
        )
    else:
        others = sorted(r for n, r in found if n == name and r != run_id)
    if len(others) == 1 and others[0]:
        message += (
            f"; a queue '{name}' exists with run_id '{others[0]}'"
            f" (use --run-id {shlex.quote(others[0])})"
        )
    elif len(others) == 1:
        message += f"; a queue '{name}' exists without a run_id (leave out --run-id)"
    elif others:
        listed = ", ".join(f"'{r}'" for r in others)
        message += f"; queues '{name}' exist with run_ids {listed} (use --run-id ID)"
    return FileNotFoundError(message)


_Column = tuple[str, Callable[[dict[str, Any]], str]]
_COMMON: list[_Column] = [
    ("NAME", lambda r: str(r["name"])),
    ("RUN_ID", lambda r: str(r["run_id"] or "-")),
    ("MODE", lambda r: str(r["mode"])),
    ("CAPACITY", lambda r: str(r["queue_capacity"])),
]
_USAGE: list[_Column] = [
    ("ITEM_SIZE", lambda r: str(r["queue_item_size_bytes"])),
    ("ITEMS", lambda r: str(r["queue_size"])),
    ("USED%", lambda r: f"{r['queue_utilization_percent']:.1f}"),
]
_SHM_COLUMNS: list[_Column] = [
    *_COMMON,
    ("SPARE", lambda r: str(r["spare_slots"])),
    *_USAGE,
    ("CREATOR", lambda r: f"{r['creator_pid']} {'alive' if r['creator_alive'] else 'dead'}"),
    ("BYTES", lambda r: _human(r["bytes_used"])),
]
_NATS_COLUMNS: list[_Column] = [
    *_COMMON,
    *_USAGE,
    ("REPLICAS", lambda r: str(r["replicas"])),
    ("BYTES", lambda r: _human(r["bytes_used"])),
]


def cmd_ls(args: argparse.Namespace) -> int:
    where = ""
    if args.url == "shm://":
        rows = [q.as_dict() for q in R.find_queues() if _in_namespace(q.base, args.run_id)]
        columns = _SHM_COLUMNS
    else:
        with _Nats(args.url) as server:
            rows = server.records(args.run_id)
        columns = _NATS_COLUMNS
        where = f" at {server.display}"
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no queues" + where
              + ("" if args.run_id is None else f" with run_id '{args.run_id}'"))  # fmt: skip
        return 0
    table = [tuple(title for title, _ in columns)]
    table += [tuple(cell(r) for _, cell in columns) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    if args.url == "shm://":
        return _stat(args, lambda: _find(args.name, args.run_id).as_dict())
    with _Nats(args.url) as server, server.open(args.name, args.run_id) as q:
        return _stat(args, lambda: server.record(q))


def _stat(args: argparse.Namespace, fetch: Callable[[], dict[str, Any]]) -> int:
    row = fetch()
    if not args.watch:
        if args.json:
            print(json.dumps(row, indent=2))
        else:
            width = max(map(len, row))
            for key, value in row.items():
                print(f"{key:>{width}}: {value}")
        return 0
    lines = 0
    prev, prev_t = row, time.monotonic()
    while True:
        time.sleep(args.interval)
        row = fetch()
        now = time.monotonic()
        dt = now - prev_t
        row["puts_per_s"] = (row["total_puts"] - prev["total_puts"]) / dt
        row["gets_per_s"] = (row["total_gets"] - prev["total_gets"]) / dt
        prev, prev_t = row, now
        used = row["queue_utilization_percent"]
        line = (
            f"{row['name']} [{'#' * round(used / 5):<20}] "
            f"{row['queue_size']}/{row['queue_capacity']} {used:5.1f}%  "
            f"puts/s {row['puts_per_s']:9.0f}  gets/s {row['gets_per_s']:9.0f}"
        )
        if args.json:
            print(json.dumps(row), flush=True)
        elif sys.stdout.isatty():
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)
        lines += 1
        if args.count and lines >= args.count:
            if sys.stdout.isatty() and not args.json:
                print()
            return 0


def cmd_rm(args: argparse.Namespace) -> int:
    if args.url != "shm://":
        with _Nats(args.url) as server:
            stream = server.remove(args.name, args.run_id)
        if args.json:
            print(json.dumps({"removed": [stream]}))
        else:
            print(f"removed stream {stream} at {server.display}")
        return 0
    removed = R.remove(args.name, args.run_id)
    if not removed:
        raise _not_found(args.name, args.run_id)
    if args.json:
        print(json.dumps({"removed": removed}))
    else:
        for entry in removed:
            print(f"removed /dev/shm/{entry}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    found = [(entry, why) for entry, why in R.garbage() if _in_namespace(entry, args.run_id)]
    if not args.dry_run:
        R.remove_entries([entry for entry, _ in found])
    if args.json:
        print(json.dumps({"dry_run": args.dry_run,
                          "entries": [{"entry": e, "reason": r} for e, r in found]}))  # fmt: skip
    else:
        verb = "would remove" if args.dry_run else "removed"
        for entry, reason in found:
            print(f"{verb} /dev/shm/{entry}: {reason}")
        if not found:
            print("nothing to collect")
    return 0


_BENCH_HELP = """\
usage: shared-queue bench [BENCH.PY ARGUMENTS ...]

Run benchmarks/bench.py of a source checkout: every argument goes to it unchanged, so `bench`
takes exactly bench.py's flags (`bench --section arrays --quick` is `python benchmarks/bench.py
--section arrays --quick`). With no arguments it is a quick run, `bench.py --quick`; any
argument replaces that default. The exit status is bench.py's. bench.py's own help follows.
"""


def cmd_bench(args: argparse.Namespace) -> int:
    argv = args.rest or ["--quick"]
    if "-h" in argv or "--help" in argv:
        print(_BENCH_HELP, flush=True)
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
    if not script.exists():
        print("shared-queue: bench runs benchmarks/bench.py of a source checkout", file=sys.stderr)
        return 1
    # A process of its own, as `python benchmarks/bench.py` runs: the script's directory on
    # sys.path, its own exit status, and a Ctrl-C from the terminal reaches it directly.
    proc = subprocess.Popen([sys.executable, str(script), *argv])
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.wait()  # the terminal sent it SIGINT too: let it remove its queues
        raise
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import main as demo

    demo()
    return 0


def _display(url: str) -> str:
    """``url`` as messages show it: without credentials or options."""
    scheme, sep, rest = url.partition("://")
    rest = rest.partition("?")[0]
    return scheme + sep + rest.rpartition("@")[2]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


class _Nats:
    """The command line's session with the servers of a nats:// URL: one connection for its
    JetStream requests, which the queue handles it opens share.

    Raises:
        ImportError: nats-py is not installed (the message names the extra to install).
        ValueError: A malformed URL.
        ConnectionError: On entering: no server answered within connect_timeout.
    """

    def __init__(self, url: str) -> None:
        from . import _nats, _natsio

        self._nats = _nats
        self._io = _natsio
        self.url = url
        self.address = _natsio.parse_url(url)
        options = dict(self.address.options)
        self.connect_timeout = float(
            options.get("connect_timeout", _nats.DEFAULTS["connect_timeout"])
        )
        self.io_timeout = float(options.get("io_timeout", _nats.DEFAULTS["io_timeout"]))
        self.display = self.address.display
        self.nc: Any = None

    def __enter__(self) -> _Nats:
        self.nc = self._io.run(self._io.acquire(self.address, self.connect_timeout, {}))
        return self

    def __exit__(self, *exc_info: object) -> None:
        nc, self.nc = self.nc, None
        if nc is not None:
            self._io.run(self._io.release(nc, self.connect_timeout))

    def api(self, subject: str, body: Any = None) -> dict[str, Any]:
        """Return JetStream's answer to the request ``$JS.API.<subject>``."""
        io = self._io

        async def request() -> Any:
            payload = b"" if body is None else json.dumps(body).encode()
            try:
                return await self.nc.request(f"$JS.API.{subject}", payload, timeout=self.io_timeout)
            except io.NoRespondersError:
                raise ConnectionError(
                    f"the NATS server at {self.display} has no JetStream (start nats-server "
                    "with -js)"
                ) from None
            except io.TRANSIENT:
                raise ConnectionError(
                    f"JetStream at {self.display} did not answer within {self.io_timeout} s"
                ) from None

        reply: dict[str, Any] = json.loads(io.run(request()).data)
        return reply

    def streams(self) -> list[dict[str, Any]]:
        """The info of every stream of a shared_queue queue on the server, sorted by queue."""
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            reply = self.api("STREAM.LIST", {"offset": offset})
            error = reply.get("error")
            if error:
                raise ConnectionError(
                    f"JetStream at {self.display} refused to list streams: "
                    f"{error.get('description', error)}"
                )
            page = reply.get("streams") or []
            found += [s for s in page if "shared_queue.format" in _metadata(s)]
            offset += len(page)
            if not page or offset >= int(reply.get("total", 0)):
                return sorted(found, key=lambda s: _queue_of(s)[::-1])

    def open(self, name: str, run_id: str, explain: bool = True) -> NatsQueue:
        """Attach to the queue ``name``; FileNotFoundError names the run_ids it exists in."""
        try:
            return self._nats.NatsQueue(self.url, name, run_id=run_id)
        except FileNotFoundError:
            if not explain:
                raise
            found = [_queue_of(s) for s in self.streams()]
        raise _not_found(name, run_id, found, f" at {self.display}")

    def record(self, q: NatsQueue, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """The record ``stat`` prints: ``get_metrics()``'s keys plus the CLI's own."""
        stream = self._nats.stream_name(q.name, q.run_id)
        metrics = q.get_metrics()
        if info is None:
            info = self.api(f"STREAM.INFO.{stream}")
            if info.get("error"):
                raise FileNotFoundError(f"queue {describe(q.name, q.run_id)} was removed")
        return {
            "name": q.name,
            "run_id": q.run_id,
            "url": self.display,
            "stream": stream,
            "mode": "typed" if q.dtype is not None else "raw" if q.raw else "pickle",
            **metrics,
            "replicas": int(info["config"].get("num_replicas", 1)),
            "bytes_used": int(info["state"].get("bytes", 0)),
        }

    def records(self, run_id: str | None) -> list[dict[str, Any]]:
        """The record of every queue on the server (of ``run_id``, or all if None)."""
        rows = []
        for info in self.streams():
            name, rid = _queue_of(info)
            stream = info["config"]["name"]
            if run_id is not None and rid != run_id:
                continue
            try:
                if self._nats.stream_name(name, rid) != stream:
                    raise ValueError(f"its metadata names queue {describe(name, rid)}, whose "
                                     "stream has another name")  # fmt: skip
                with self.open(name, rid, explain=False) as q:
                    rows.append(self.record(q, info))
            except FileNotFoundError:  # removed meanwhile
                continue
            except (IncompatibleQueueError, ValueError, TypeError) as exc:
                _log.info("skipped: stream %s at %s: %s", stream, self.display, exc)
        return rows

    def remove(self, name: str, run_id: str) -> str:
        """Delete the stream of the queue ``name``; return the stream's name."""
        with self.open(name, run_id) as q:
            q.unlink()
        return self._nats.stream_name(name, run_id)


def _metadata(info: dict[str, Any]) -> dict[str, str]:
    return (info.get("config") or {}).get("metadata") or {}


def _queue_of(info: dict[str, Any]) -> tuple[str, str]:
    """The (name, run_id) a shared_queue stream's metadata gives."""
    meta = _metadata(info)
    return meta.get("shared_queue.name", ""), meta.get("shared_queue.run_id", "")


def cmd_bridge(args: argparse.Namespace) -> int:
    from ._bridge import bridge

    src_run_id = args.run_id if args.src_run_id is None else args.src_run_id
    dst_run_id = args.run_id if args.dst_run_id is None else args.dst_run_id
    # Ctrl-C and SIGTERM stop the bridge after the batch in flight (bridge() holds them
    # back while one is in flight, then hands them to these handlers).
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    saved = [signal.signal(sig, on_signal) for sig in signals]
    try:
        with contextlib.ExitStack() as stack:
            src = _open(args.src, src_run_id)
            stack.callback(src.close)
            dst = _open(args.dst, dst_run_id, src, args.create)
            stack.callback(dst.close)
            # The bridge's warnings (retries, a stop that waits for room) and the NATS
            # client's (connection lost) on stderr while it runs; not once it closes the
            # connection, which the client reports as lost too.
            with _logs_to_stderr(("shared_queue.bridge", "shared_queue.nats"), logging.WARNING):
                forwarded = bridge(
                    src, dst, batch=args.batch, stop=stop, idle_timeout=args.idle_timeout
                )
    finally:
        for sig, old in zip(signals, saved, strict=True):
            signal.signal(sig, old)
    if args.json:
        print(json.dumps({"forwarded": forwarded, "src": args.src.shown, "dst": args.dst.shown}))
    else:
        print(f"forwarded {forwarded} item(s) from {args.src.shown} to {args.dst.shown}")
    return 0


def _open(
    address: _Address,
    run_id: str,
    like: SharedMemoryQueue | NatsQueue | None = None,
    create: bool = False,
) -> SharedMemoryQueue | NatsQueue:
    """Attach to the queue at ``address``. A DST gives the SRC it bridges from as ``like``:
    with ``create``, a missing DST is created with the capacity, item size and mode of SRC."""
    from ._connect import connect

    try:
        return connect(address.url, address.name, run_id=run_id)
    except FileNotFoundError:
        if like is None or not create:
            where = "in shared memory" if address.url == "shm://" else f"at {_display(address.url)}"
            hint = "" if like is None else " (bridge --create creates DST like SRC)"
            raise FileNotFoundError(
                f"no queue {describe(address.name, run_id)} {where}{hint}"
            ) from None
    try:
        return connect(
            address.url, address.name, create=True, run_id=run_id, capacity=like.capacity,
            item_size=like.item_size, raw=like.raw, dtype=like.dtype, shape=like.shape,
        )  # fmt: skip
    except FileExistsError:  # created meanwhile
        return connect(address.url, address.name, run_id=run_id)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
