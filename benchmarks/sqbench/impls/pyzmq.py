"""pyzmq PUSH/PULL over ``ipc://``: a socket library in the comparison (see ``ZmqImpl``)."""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Any

from ..common import OP_TIMEOUT, dist_version, unique_name
from .base import Handle, Impl, Ops, not_importable


class ZmqImpl(Impl):
    """pyzmq PUSH/PULL over ipc://: the arrays, ping-pong and wake-up rows.

    Numpy arrays go as a (dtype, shape) header frame plus the array's buffer, sent and received
    without copying (copy=False), the pyzmq zero-copy path; other objects are pickled. No
    small-dict throughput rows: there the consumer binds only after the producer has started
    sending, and in this harness some runs lost messages (2 of 3 timed out); a fair setup
    would need a broker device, which the other implementations do not pay for either.
    """

    key = "zmq"
    label = "pyzmq"
    has_batch = False
    roles = frozenset({"pair"})

    def unavailable(self):
        return not_importable("zmq", "pyzmq")

    def create(self, capacity, item_size, array=None):
        path = f"/tmp/{unique_name('sqbench_zmq')}.ipc"
        return Handle(_ZmqQueue(f"ipc://{path}", capacity), path)

    def attach(self, endpoint):
        return _ZmqQueue(f"ipc://{endpoint}", 0)

    def detach(self, q):
        q.close()

    def destroy(self, handle):
        handle.obj.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.endpoint)

    def ops(self, q):
        return Ops.one_at_a_time(q.put, q.get)

    def version(self):
        return dist_version("pyzmq")


class _ZmqQueue:
    """The consumer binds a PULL socket, the producer connects a PUSH socket, lazily."""

    def __init__(self, address: str, hwm: int):
        self.address, self.hwm = address, hwm
        self._push = self._pull = None
        self._ctx = None

    def _socket(self, kind: int, bind: bool) -> Any:
        import zmq

        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, int(OP_TIMEOUT * 1000))  # deliver what was sent
        if self.hwm:
            sock.setsockopt(zmq.SNDHWM if kind == zmq.PUSH else zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.RCVTIMEO if kind == zmq.PULL else zmq.SNDTIMEO, int(OP_TIMEOUT * 1000))
        if bind:
            sock.bind(self.address)
        else:
            sock.connect(self.address)
        return sock

    def put(self, x: Any) -> None:
        import zmq

        if self._push is None:
            self._push = self._socket(zmq.PUSH, bind=False)
        if type(x).__name__ == "ndarray":
            header = pickle.dumps((x.dtype.str, x.shape))
            self._push.send_multipart([header, x], copy=False)
        else:
            self._push.send(pickle.dumps(x, protocol=5), copy=False)

    def get(self) -> Any:
        import zmq

        if self._pull is None:
            self._pull = self._socket(zmq.PULL, bind=True)
        frames = self._pull.recv_multipart(copy=False)
        if len(frames) == 2:
            import numpy as np

            dtype, shape = pickle.loads(frames[0].bytes)
            return np.frombuffer(frames[1].buffer, dtype).reshape(shape)
        return pickle.loads(frames[0].buffer)

    def close(self) -> None:
        for sock in (self._push, self._pull):
            if sock is not None:
                sock.close()
        if self._ctx is not None:
            self._ctx.term()
