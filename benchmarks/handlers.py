"""The controller's handlers alone, socket-free: what a request and its result cost the
controller's loop in Python, without libzmq, polling or other processes.

    python -m benchmarks.handlers [--cold BYTES]

A `Controller` with two registered engines (none connected: what would go out is dropped),
fed signed messages as its loop would feed them: a direct request and its result, a
load-balanced request and its result, and batches of 16 load-balanced requests and their
results. Prints µs per round trip (the fastest of ten runs; encoding the two messages
included, about 5 µs). `--cold` writes a byte in every cache line of a buffer of that size
before each round trip, as the other processes of a real round trip do to the caches (the
time of that writing is measured apart and taken off).
"""

from __future__ import annotations

import argparse
import time

import cloudpickle

from ipcluster import batch, connection
from ipcluster.controller import server
from ipcluster.controller.main import ControllerOptions
from ipcluster.controller.server import Controller
from ipcluster.protocol import Apply, Ids, Result, encode

BURST = 16


class Harness:
    def __init__(self, cold: int) -> None:
        self.ctl = ctl = Controller("handlers", ControllerOptions(), connection.new_key())
        ctl.outbox.transmit = lambda sock, identity, frames: True
        ctl.outbox.batching = True  # as in `serve`
        for eid in range(2):
            ctl.registry.add(f"engine-{eid}".encode(), eid, "here", eid)
            ctl.scheduler.add_engine(eid)
            ctl.graph.engine_added(eid)
        self.ids, self.n = Ids(), 0
        self.call = cloudpickle.dumps((lambda x=None: x, (1,), {}))
        self.buffer = bytearray(cold)

    def thrash(self) -> None:
        if self.buffer:
            self.buffer[::64] = b"x" * len(self.buffer[::64])

    def _in(self, sock, identity: bytes, messages: list) -> None:
        frames = messages[0] if len(messages) == 1 else batch.pack(
            self.ctl.signer, self.ids(), messages)
        kinds = server.CLIENT_KINDS if sock is self.ctl.clients else server.ENGINE_KINDS
        self.ctl._handle(sock, [identity, *frames], kinds)
        self.ctl.outbox.flush()

    def round_trip(self, balanced: bool, burst: int = 1) -> None:
        self.thrash()
        ctl, tasks = self.ctl, []
        for _ in range(burst):
            self.n += 1
            tasks.append(f"t{self.n}")
        self._in(ctl.clients, b"client", [encode(ctl.signer, Apply(
            [t], None if balanced else [0], balanced).header(self.ids()), self.call) for t in tasks])
        for eid in (0, 1):
            engine = ctl.registry.by_id[eid]
            done = list(engine.tasks)
            if done:
                self._in(ctl.engines, engine.identity, [encode(ctl.signer, Result(
                    t, eid, "ok", started=1.0, completed=1.00001).header(self.ids()), b"r" * 20)
                    for t in done])


def fastest(run, per: int, repeat: int = 10, n: int = 2000) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            run()
        best = min(best, (time.perf_counter() - t0) / (n * per))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=0, help="bytes of cache lines written between round trips")
    args = parser.parse_args()
    h = Harness(args.cold)
    thrash = fastest(h.thrash, 1) if args.cold else 0.0
    try:
        for name, run, per in (("direct round trip", lambda: h.round_trip(False), 1),
                               ("load-balanced round trip", lambda: h.round_trip(True), 1),
                               (f"task in batches of {BURST}", lambda: h.round_trip(True, BURST), BURST)):
            for _ in range(200):
                run()
            print(f"{name}: {fastest(run, per) - thrash / per:.1f} us")
    finally:
        h.ctl.close()


if __name__ == "__main__":
    main()
