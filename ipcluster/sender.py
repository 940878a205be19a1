"""Client API layer: how a client's message travels: its large buffers through shared memory
(engines on this host), on direct links to engines' data ports (engines elsewhere), or in it.

The message itself goes on the session's DEALER from the calling thread (`wire.Wire`: under its
lock); only what the IO thread must do (open a direct link, send data on one) is queued for it,
and a request sent meanwhile queues behind, so the order holds.
"""

from __future__ import annotations

import os

from ipcluster import direct, shm, transport
from ipcluster.errors import ControllerLost
from ipcluster.protocol import encode


class Sender:
    def __init__(self, signer, wire, shm_host, links, connection_file, ask_engines,
                 tasks: dict) -> None:
        self.signer = signer
        self.wire = wire
        self.shm = shm_host  # None where there is no shared memory
        self.links = links  # direct links to the data ports of engines on other hosts
        self.connection_file = connection_file
        self.ask_engines = ask_engines  # engine ids -> what the controller says of each
        self.tasks = tasks  # the session's unfinished tasks: while there are, requests may wait
        self._facts: dict[int, dict] = {}  # engine id -> its "shm" identity and "data" port URL
        self._segments: dict[str, list] = {}  # task id -> names its engine has yet to map

    def to_io(self, frames: list) -> None:
        """Hand frames to the IO thread (from any thread), for what only it may do (`Links`):
        one object in a queue and a one-frame wake-up, not the frames themselves."""
        self.wire.queue(frames)

    def to_controller(self, frames: list, track: bool = False):
        """Send a message on the DEALER from this thread (any thread; `Wire.send`). With
        `track`, the tracker says when zmq let go of the frames on their way to the controller."""
        tracker = None
        if track:
            frames, tracker = transport.tracked(frames)
        try:
            self.wire.send(frames)
        except transport.Refused as exc:  # the key does not match: the handshake failed first
            raise ControllerLost(f"{exc} (connection file {self.connection_file})") from None
        return tracker

    def send(self, header: dict, content=b"", buffers=(), track: bool = False):
        """Send a message to the controller. The large buffers of a direct request go through
        shared memory if all its engines are on this host, else on direct links to their data
        ports if all answer, else in the message."""
        shared, data = None, []
        if header["kind"] == "apply":
            if self.shm is not None:  # so an engine here answers through memory
                header["shm_host"] = self.shm.identity
            if self.links.any_open:  # so an engine elsewhere answers on the link
                header["link"] = self.links.identity.decode()
            facts = self._engines(header, buffers) if buffers else None
            readers = [self.shm.reader(f.get("shm")) for f in facts] if facts and self.shm else []
            if readers and all(readers):
                shared = (self.shm, readers)
            elif facts and all(f.get("data") and self.links.usable(f["data"]) for f in facts):
                header["link"] = self.links.identity.decode()
                buffers, frames = direct.split(header, buffers, shm.THRESHOLD)
                data = self.links.messages(header["id"], [f["data"] for f in facts], frames)
        frames = encode(self.signer, header, content, buffers, shared)
        if "segments" in header:  # removed by the engine once mapped, or here if it never is
            for task_id, reader in zip(header["tasks"], shared[1]):
                self._segments[task_id] = self.shm.names(header, reader)
        for message in data:
            self.to_io(message)
        if (not buffers and not track and len(frames) == 1 and self._busy(header)
                and self.wire.holds(frames)):
            self.wire.hold(frames)  # goes with the next ones, or as soon as this thread waits
            return None
        return self.to_controller(frames, track=track)

    def _busy(self, header: dict) -> bool:
        """True while tasks sent earlier are unfinished (Nagle's rule: with work in flight, a
        request may wait a moment for others to go with it; see `wire.Wire.hold`). A request
        sent when nothing else is in flight goes at once: a round trip neither waits nor wakes
        the IO thread."""
        return len(self.tasks) > (len(header["tasks"]) if header["kind"] == "apply" else 0)

    def _engines(self, header: dict, buffers) -> list[dict] | None:
        """What the controller says of each engine of a direct request with large buffers."""
        targets = header.get("targets")
        if (header.get("balanced") or not targets or len(set(targets)) != len(targets)
                or not any(memoryview(b).nbytes >= shm.THRESHOLD for b in buffers)):
            return None  # balanced requests may be sent again elsewhere: they carry their bytes
        unknown = [t for t in targets if t not in self._facts]
        if unknown:
            engines = self.ask_engines(unknown)
            self._facts.update({eid: engines.get(eid) or {} for eid in unknown})
        return [self._facts.get(t, {}) for t in targets]

    def forget(self, engine_id) -> dict | None:
        """Forget what the controller said of an engine (it left, or restarted with a new
        token); returns what was known."""
        return self._facts.pop(engine_id, None)

    def discard(self, task_id: str) -> None:
        """Remove the segments of a task that its engine has not mapped (its result is here)."""
        if self._segments:
            for path in self._segments.pop(task_id, ()):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def discard_all(self) -> None:
        for task_id in list(self._segments):
            self.discard(task_id)
