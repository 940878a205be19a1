"""Processes layer: how an engine's main thread sends its results: itself, on the engine's
socket, several in one message while its tasks queue up.

Each result goes on the socket from the main thread (`post`), under the wire's lock, after the
output captured so far, with Ctrl-C and SIGTERM held back until it is whole (as `wire.Wire.send`
does) when it has several frames (a message of one frame is one zmq call, which no signal
handler splits). A message that came meanwhile (the send took its notification in) is left to
the main thread, which receives next (`Control.next_task`), unless a task is queued for it: only
then is the control thread woken to receive it (`wire.Wire.send` would wake it for every such message:
about one task in three on a load-balanced view, each a turn of the control thread's loop).
That is decided under `Control.handling`, under which the control thread takes in every message
waiting before it queues a task: a message the main thread saw is either taken in by the
control thread or still there when the main thread, finding no task queued, receives.

The main thread runs queued tasks back to back. A result with no buffers and its content in its
one frame, finished while `BEHIND` tasks or more are queued, is held (`hold`); what is held goes
as one ``batch`` message (`ipcluster.batch`): with the next result finished with fewer queued
(so it is sent while the last queued task runs: a load-balanced view sends an engine more tasks
as its results free slots, `hwm`, 2 by default, and results held until the queue is empty would
leave the engine idle for a round trip after each batch: slower, and no cheaper), when `MOST`
are held, when the oldest has waited `WAIT` seconds, before the main thread
waits for a task or sends anything else, and before the engine unregisters. A long task that
runs after short ones does not keep their results: the control thread sends what has waited
`WAIT` seconds (`look`), and waits at most that long while results are held (the main thread
wakes it when it holds a first result and the control thread would look too late). A task
that holds the GIL stops every thread of the engine, so what is held waits for it (as output
captured so far does); a task with a time_limit, which the watchdog may end with its engine if
it overruns holding the GIL, starts only once what is held is sent. Whoever
sends what is held sends the captured output first, so a task's output still goes before its
result. All of it under the wire's lock: the held results are sent exactly once, in order.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext

from ipcluster import batch, transport
from ipcluster.wire import signals_held

BEHIND = 2  # tasks queued, at least, for a result to be held
MOST = 64  # results held at most: then they go
WAIT = 0.002  # seconds a result is held at most


class Results:
    def __init__(self, signer, ids, wire, tasks, handling, output, pending) -> None:
        self.signer, self.ids, self.wire = signer, ids, wire
        self.tasks, self.handling = tasks, handling  # the main thread's queue, and its lock
        self.output = output  # sends the output captured so far (under the wire's lock)
        self.pending = pending  # True if output was captured since it last sent it
        self.messages: list = []  # held, oldest first (under the wire's lock)
        self.since = 0.0  # when the oldest was held (time.monotonic)
        self.looks_at = math.inf  # when the control thread looks again, at the latest
        self.sent = 0  # messages that carried plain results (cost measures)
        self.carried = 0  # plain results they carried
        self.overdue = 0  # messages of them the control thread sent (the main thread was busy)

    def post(self, frames: list, plain: bool) -> None:
        """Main thread: send a task's reply; `plain` (no buffers), it may be held."""
        if plain:
            frames = self.hold(frames, self.tasks.qsize() >= BEHIND)
            if frames is None:
                return
        self._send(frames)

    def flush(self) -> None:
        """Main thread: send what is held now (before it waits for a task, or stops)."""
        if self.messages:
            self._send(None)

    def _send(self, frames: list | None) -> None:
        """Main thread: the output, what is held, then `frames` (if any); `frames` queue behind
        what is queued for the control thread, if anything is."""
        wake = waiting = False
        # each message of one frame is one zmq call, which a signal handler cannot split:
        # signals are held back only while a message of several frames may go
        whole = (frames is None or len(frames) == 1) and not self.pending()
        with nullcontext() if whole else signals_held():
            with self.wire.lock:
                sock = self.wire.sock
                if self.wire.queued or sock is None:
                    if frames is not None:
                        self.wire.queued.append(frames)
                        wake = True
                else:
                    self.release(sock)
                    if frames is not None:
                        transport.send(sock, frames)
                    # a message came as it sent? With no task queued, the main thread looks
                    # itself before it waits (`Control.next_task`): only else the question
                    waiting = not self.tasks.empty() and transport.readable(sock)
        if waiting:
            with self.handling:
                wake = not self.tasks.empty()  # else the main thread receives next, itself
        if wake:
            self.wire.wake()

    def hold(self, frames: list, more: bool) -> list | None:
        """Main thread: hold a plain result while `more` tasks are queued (None), or return the
        message to send now: this result alone (it cannot be batched, or messages queued for the
        control thread go first), or with those held (no `more`, `MOST` of them, or the oldest
        `WAIT` old)."""
        if not batch.batchable(frames) or not (more or self.messages):
            return self._alone(frames)
        wake = False
        with self.wire.lock:
            if self.wire.queued or self.wire.sock is None:
                return self._alone(frames)  # sent behind what is queued, in order
            now = time.monotonic()
            if not self.messages:
                self.since = now
                wake = self.looks_at > now + WAIT
            self.messages.append(frames)
            if not more or len(self.messages) >= MOST or now >= self.since + WAIT:
                return self.take()
        if wake:  # the control thread would look too late to send it in time
            self.wire.wake()
        return None

    def _alone(self, frames: list) -> list:
        self.sent += 1
        self.carried += 1
        return frames

    def take(self) -> list | None:
        """What is held, as one message, and nothing held any more (None: nothing was)."""
        messages, self.messages = self.messages, []
        if not messages:
            return None
        self.sent += 1
        self.carried += len(messages)
        return messages[0] if len(messages) == 1 else batch.pack(self.signer, self.ids(), messages)

    def release(self, sock) -> None:
        """Under the wire's lock: the output captured so far, then what is held."""
        self.output(sock)
        self.send(sock)

    def send(self, sock) -> None:
        """Under the wire's lock, after the output: send what is held, if anything."""
        if self.messages:
            self.overdue += threading.current_thread() is not threading.main_thread()
            transport.send(sock, self.take())

    def look(self, sock, longest: float) -> float:
        """Control thread, under the wire's lock, after the output: send what is held if the
        oldest has waited `WAIT`; returns how long it may wait before it looks again."""
        now = time.monotonic()
        if self.messages and now >= self.since + WAIT:
            self.send(sock)
        # whole milliseconds, rounded up: the poll's unit (rounded down, it would spin)
        wait = min(longest, math.ceil((self.since + WAIT - now) * 1e3) / 1e3) \
            if self.messages else longest
        self.looks_at = now + wait
        return wait
