"""Simulated engines: many engines in one process, speaking ipcluster's engine protocol.

    python -m benchmarks.simulated --connection-file PATH --engines 500

Each simulated engine is a DEALER socket with its own identity. It registers, beats as often as
the controller tells it (every second, or less often with many engines), and answers every
`apply` at once with a `result` of None, without unpickling the call:
the load on the controller is that of real engines, with none of their per-process cost, so
one machine can show how the controller behaves with a thousand of them. SIGTERM makes each
engine unregister, then the process exits.
"""

from __future__ import annotations

import argparse
import heapq
import selectors
import signal
import sys
import time
import uuid

from ipcluster import connection, serialize, transport
from ipcluster.batch import unbatch
from ipcluster.protocol import Ids, Signer, decode, encode, now, pack, unpack


class Simulator:
    def __init__(self, info, engines: int) -> None:
        self.signer = Signer(info.key_bytes)
        self.ids = Ids()
        self.context = transport.Context(info.key_bytes)  # proves the key when it connects
        self.sockets = [self.context.dealer(info.engine_url, identity=uuid.uuid4().bytes,
                                            heartbeat=transport.ENGINE_HEARTBEAT)
                        for _ in range(engines)]
        self.engine_ids: dict = {}
        self.intervals: dict = {}  # socket -> seconds between its beats, as the controller says
        self.beats: list = []  # heap of (when, socket index) of the next beats
        self.index = {sock: i for i, sock in enumerate(self.sockets)}
        self.pending: list = []  # sockets sent on since they were last read
        self.none_content, _ = serialize.dumps(None)
        self.served = 0

    def send(self, sock, header: dict, content=b"") -> None:
        header["id"] = self.ids()
        transport.send(sock, encode(self.signer, header, content))
        self.pending.append(sock)  # a send may take the descriptor's edge: read it after

    def register_all(self) -> None:
        for sock in self.sockets:
            self.send(sock, {"kind": "register"}, pack({"pid": 0, "host": "simulated", "id": None}))

    def serve(self, should_stop) -> None:
        # epoll on each socket's notification descriptor: a wake-up costs O(sockets ready), not
        # O(sockets) as zmq_poll over 1,000 of them would (the load generator must stay cheaper
        # than the controller it loads). The descriptor signals edges, so a socket is read
        # until it has nothing left, also after each send, and all of them once a second.
        selector = selectors.EpollSelector()
        for sock in self.sockets:
            selector.register(sock.FD, selectors.EVENT_READ, sock)
        sweep = time.monotonic()
        while not should_stop():
            wait = self.beats[0][0] - time.monotonic() if self.beats else 0.1
            for key, _ in selector.select(min(0.1, max(0.0, wait))):
                self.read(key.data)
            while self.pending:
                self.read(self.pending.pop())
            now = time.monotonic()
            while self.beats and self.beats[0][0] <= now:  # each engine on its own interval
                _, i = heapq.heappop(self.beats)
                sock = self.sockets[i]
                self.send(sock, {"kind": "beat"})
                heapq.heappush(self.beats, (now + self.intervals[sock], i))
            if now - sweep >= 1.0:
                sweep = now
                for sock in self.sockets:
                    self.read(sock)
        selector.close()

    def read(self, sock) -> None:
        for frames in transport.drain(sock):
            self.on_message(sock, frames)

    def on_message(self, sock, frames) -> None:
        for msg in unbatch(decode(self.signer, frames)):  # tasks may come several at once
            self.on_one(sock, msg)

    def on_one(self, sock, msg) -> None:
        if msg.kind == "register_reply":
            reply = unpack(msg.content)
            self.engine_ids[sock] = reply["id"]
            self.intervals[sock] = reply.get("beat", 1.0)
            heapq.heappush(self.beats, (time.monotonic() + self.intervals[sock], self.index[sock]))
        elif msg.kind == "beat":
            told = unpack(msg.content)
            if isinstance(told, dict) and "beat" in told:
                self.intervals[sock] = told["beat"]
        elif msg.kind == "apply":
            header = msg.header
            eid = self.engine_ids[sock]
            task = header["tasks"][0] if header.get("balanced") else \
                header["tasks"][header["targets"].index(eid)]
            t = now()
            self.send(sock, {"kind": "result", "parent": task, "engine": eid, "status": "ok",
                             "started": t, "completed": t}, self.none_content)
            self.served += 1

    def close(self) -> None:
        for sock in self.sockets:
            if sock in self.engine_ids:
                self.send(sock, {"kind": "unregister"})
        self.context.close(linger_ms=2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connection-file", required=True)
    parser.add_argument("--engines", type=int, default=500)
    args = parser.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    sim = Simulator(connection.read(args.connection_file), args.engines)
    sim.register_all()
    try:
        sim.serve(lambda: bool(stop))
    finally:
        sim.close()
    print(f"simulated engines served {sim.served} tasks", file=sys.stderr)


if __name__ == "__main__":
    main()
