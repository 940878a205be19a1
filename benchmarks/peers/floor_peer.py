"""The floor probe: the smallest Python relay that does ipcluster's job, as a peer.

    client DEALER ──▶ relay ROUTER │ relay ROUTER ◀── engine DEALER (one process each)
                 ◀──                 ──▶

One relay process with two ROUTER sockets forwards each request to an engine (chosen round
robin among those with fewer than two outstanding, as a least-load queue would) and each reply
back to the client that asked. A request is two frames, ``[task id, pickle of (f, args)]``; an
engine unpickles it, calls it, and sends back ``[task id, pickle of the value]``. No signing,
no headers, no ledger, no threads: what Python and pyzmq cost on this machine for the same
hops, so every ipcluster figure can be read against it.
"""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import tempfile
import time

import cloudpickle  # by value, as the other peers ship the runner's __main__ no-op
import zmq

READY = b"ready"
CASES = ("roundtrip_median", "roundtrip_p90", "submit")  # a floor for the hot path only


def relay(client_port_file: str) -> None:
    """The relay process: binds two ROUTERs on loopback, writes their ports, forwards."""
    ctx = zmq.Context()
    clients, engines = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    client_port = clients.bind_to_random_port("tcp://127.0.0.1")
    engine_port = engines.bind_to_random_port("tcp://127.0.0.1")
    with open(client_port_file, "w") as f:
        f.write(f"{client_port} {engine_port}")
    load: dict[bytes, int] = {}  # engine identity -> outstanding tasks
    waiting: collections.deque = collections.deque()  # requests no engine has room for
    owner: dict[bytes, bytes] = {}  # task id -> client identity
    ring: collections.deque = collections.deque()

    def place(client, task, payload) -> bool:
        for _ in range(len(ring)):
            eid = ring[0]
            ring.rotate(-1)
            if load[eid] < 2:
                load[eid] += 1
                owner[task] = client
                engines.send_multipart([eid, task, payload], copy=False)
                return True
        return False

    poller = zmq.Poller()
    poller.register(clients, zmq.POLLIN)
    poller.register(engines, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            if sock is engines:
                eid, task, payload = engines.recv_multipart(copy=False)
                eid = eid.bytes
                if task.bytes == READY:
                    load[eid] = 0
                    ring.append(eid)
                    clients.send_multipart([payload.bytes, READY])  # tell the starter
                    continue
                load[eid] -= 1
                clients.send_multipart([owner.pop(task.bytes), task, payload], copy=False)
                while waiting and place(*waiting[0]):
                    waiting.popleft()
            else:
                client, task, payload = clients.recv_multipart(copy=False)
                client, task = client.bytes, task.bytes
                if waiting or not place(client, task, payload):
                    waiting.append((client, task, payload))


def engine(engine_port: str, starter: str) -> None:
    """An engine process: announces itself, then runs every call it gets."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(f"tcp://127.0.0.1:{engine_port}")
    sock.send_multipart([READY, starter.encode()])
    while True:
        task, payload = sock.recv_multipart()
        f, args = pickle.loads(payload)
        sock.send_multipart([task, pickle.dumps(f(*args), protocol=5)])


class Session:
    def __init__(self, n: int, noop) -> None:
        self.procs = []
        port_file = os.path.join(tempfile.mkdtemp(prefix="floor-"), "ports")
        self.procs.append(subprocess.Popen([sys.executable, __file__, "relay", port_file]))
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read()):
            if time.monotonic() > deadline:
                raise RuntimeError("the floor relay did not start")
            time.sleep(0.01)
        client_port, engine_port = open(port_file).read().split()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        identity = f"client-{os.getpid()}".encode()
        self.sock.setsockopt(zmq.IDENTITY, identity)
        self.sock.connect(f"tcp://127.0.0.1:{client_port}")
        self.procs += [subprocess.Popen([sys.executable, __file__, "engine", engine_port,
                                         identity.decode()]) for _ in range(n)]
        for _ in range(n):
            assert self.sock.recv_multipart() == [READY]
        self.count = 0

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.sock.close(linger=0)
        self.ctx.term()

    def _send(self, f, args) -> bytes:
        self.count += 1
        task = self.count.to_bytes(8, "little")
        self.sock.send_multipart([task, cloudpickle.dumps((f, args), protocol=5)])
        return task

    def roundtrip(self, f) -> None:
        self._send(f, ())
        pickle.loads(self.sock.recv_multipart()[1])

    def submit_many(self, f, n: int) -> None:
        for i in range(n):
            self._send(f, (i,))
        for _ in range(n):
            pickle.loads(self.sock.recv_multipart()[1])


def start(n: int, noop) -> Session:
    return Session(n, noop)


if __name__ == "__main__":
    {"relay": relay, "engine": engine}[sys.argv[1]](*sys.argv[2:])
