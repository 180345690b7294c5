"""pyzmq PUSH/PULL over ``ipc://``: a socket library in the comparison (see ``ZmqImpl``)."""

from __future__ import annotations

import contextlib
import os
import pickle
from dataclasses import dataclass
from typing import Any

from ..common import CTX, OP_TIMEOUT, dist_version, unique_name
from .base import Handle, Impl, Ops, not_importable


@dataclass(frozen=True)
class _Endpoint:
    """What a forked child needs to reach one "queue": the consumers' addresses and counts."""

    paths: tuple[str, ...]  # one ipc socket file per consumer process
    producers: int
    hwm: int  # SNDHWM and RCVHWM of every socket, in messages: the queue's capacity
    arrays: bool  # items are numpy arrays (header frame + zero-copy buffer frame)
    claim: Any  # CTX.Value: the next consumer index, claimed by each consumer's bind


class ZmqImpl(Impl):
    """pyzmq PUSH/PULL over ipc://, on every row with one queue between processes.

    Each consumer process binds a PULL socket of its own before the start barrier (the
    consumer is bound first, so no producer waits out a reconnect interval); each producer
    connects a PUSH socket to it after the barrier. With one consumer that is one PUSH/PULL
    pair per producer. With several, a producer holds one PUSH socket per consumer and deals
    its items round-robin over them, then sends every consumer an end marker; a consumer's
    ``get`` returns the end marker (None) once it has one from every producer. (One PUSH
    socket connected to every consumer would deal round-robin too, but it skips a consumer
    whose pipe is full, so the end markers could not be guaranteed to reach everyone; and two
    PULL sockets cannot share one ipc address: a second bind takes the file over, which is
    how an earlier version of this harness lost messages.)

    Every socket's high-water mark is the queue's capacity. Small items are pickled
    (protocol 5) and sent as one frame, the fastest pyzmq path for small messages; numpy
    arrays go as a (dtype, shape) header frame plus the array's buffer, sent and received
    without copying (``copy=False``), the pyzmq zero-copy path. pyzmq has no batch API: the
    batch row sends single messages (as mp.Queue does).
    """

    key = "zmq"
    label = "pyzmq"
    has_batch = False

    def unavailable(self):
        return not_importable("zmq", "pyzmq")

    def create(self, capacity, item_size, array=None, peers=(1, 1)):
        producers, consumers = peers
        paths = tuple(f"/tmp/{unique_name('sqbench_zmq')}.ipc" for _ in range(consumers))
        endpoint = _Endpoint(paths, producers, capacity, array is not None, CTX.Value("i", 0))
        return Handle(_ZmqQueue(endpoint), endpoint)

    def attach(self, endpoint):
        return _ZmqQueue(endpoint)

    def bind_consumer(self, q):
        q.bind()

    def detach(self, q):
        q.close()

    def destroy(self, handle):
        handle.obj.close()
        for path in handle.endpoint.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def ops(self, q):
        return Ops.one_at_a_time(q.put, q.get)

    def version(self):
        return dist_version("pyzmq")


class _ZmqQueue:
    """One process's end of a PUSH/PULL "queue": sockets made on first use (or bind())."""

    def __init__(self, endpoint: _Endpoint):
        self.ep = endpoint
        self._ctx: Any = None
        self._pushes: list[Any] = []
        self._pull: Any = None
        self._next = 0  # the next PUSH socket to send on (several consumers)
        self._ends = 0  # end markers received

    def _socket(self, kind: int) -> Any:
        import zmq

        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, int(OP_TIMEOUT * 1000))  # deliver what was sent
        sock.setsockopt(zmq.SNDHWM if kind == zmq.PUSH else zmq.RCVHWM, self.ep.hwm)
        sock.setsockopt(zmq.RCVTIMEO if kind == zmq.PULL else zmq.SNDTIMEO, int(OP_TIMEOUT * 1000))
        return sock

    def bind(self) -> None:
        """Bind this process's PULL socket to the next unclaimed consumer address."""
        import zmq

        if self._pull is not None:
            return
        with self.ep.claim.get_lock():
            index = self.ep.claim.value
            self.ep.claim.value += 1
        if index >= len(self.ep.paths):
            raise RuntimeError(f"more consumers than the {len(self.ep.paths)} of this queue")
        self._pull = self._socket(zmq.PULL)
        self._pull.bind(f"ipc://{self.ep.paths[index]}")

    def _connect(self) -> None:
        import zmq

        for path in self.ep.paths:
            sock = self._socket(zmq.PUSH)
            sock.connect(f"ipc://{path}")
            self._pushes.append(sock)

    def put(self, x: Any) -> None:
        if not self._pushes:
            self._connect()
        if x is None:  # the end marker: to every consumer
            for sock in self._pushes:
                sock.send(b"")
            return
        pushes = self._pushes
        sock = pushes[0]
        if len(pushes) > 1:
            sock = pushes[self._next]
            self._next = (self._next + 1) % len(pushes)
        if self.ep.arrays:
            header = pickle.dumps((x.dtype.str, x.shape))
            sock.send_multipart([header, x], copy=False)
        else:
            sock.send(pickle.dumps(x, protocol=5))

    def get(self) -> Any:
        if self._pull is None:
            self.bind()
        pull = self._pull
        while True:
            first = pull.recv()
            if first:
                break
            self._ends += 1  # an end marker
            if self._ends >= self.ep.producers:
                return None
        if self.ep.arrays:
            import numpy as np

            dtype, shape = pickle.loads(first)
            frame = pull.recv(copy=False)
            return np.frombuffer(frame.buffer, dtype).reshape(shape)
        return pickle.loads(first)

    def close(self) -> None:
        for sock in [*self._pushes, self._pull]:
            if sock is not None:
                sock.close()
        self._pushes, self._pull = [], None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
