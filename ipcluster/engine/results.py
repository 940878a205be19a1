"""Processes layer: how an engine's main thread sends its results: itself, on the engine's
socket, each as its task ends.

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

A result is never held back to go with others: an engine that dies in its next task (a
segfault, ``os._exit``, the kernel's OOM killer) would take held results of tasks that had
finished with it, and they would fail with `EngineError` or run again.
"""

from __future__ import annotations

from ipcluster import transport
from ipcluster.wire import signals_held


class Results:
    def __init__(self, wire, tasks, handling, output, pending) -> None:
        self.wire = wire
        self.tasks, self.handling = tasks, handling  # the main thread's queue, and its lock
        self.output = output  # sends the output captured so far (under the wire's lock)
        self.pending = pending  # True if output was captured since it last sent it

    def post(self, frames: list) -> None:
        """Main thread: send a task's reply, after the output captured so far; it queues
        behind what is queued for the control thread, if anything is."""
        pending = self.pending()
        # each message of one frame is one zmq call, which a signal handler cannot split:
        # signals are held back only while a message of several frames may go
        if len(frames) == 1 and not pending:
            wake, waiting = self._send(frames, False)
        else:
            with signals_held():
                wake, waiting = self._send(frames, pending)
        if waiting:
            with self.handling:
                wake = not self.tasks.empty()  # else the main thread receives next, itself
        if wake:
            self.wire.wake()

    def _send(self, frames: list, output: bool) -> tuple[bool, bool]:
        """(wake the control thread, a message may be waiting on the socket)"""
        with self.wire.lock:
            sock = self.wire.sock
            if self.wire.queued or sock is None:
                self.wire.queued.append(frames)
                return True, False
            if output:
                self.output(sock)
            transport.send(sock, frames)
            # a message came as it sent? With no task queued, the main thread looks itself
            # before it waits (`Control.next_task`): only else the question
            return False, not self.tasks.empty() and transport.readable(sock)
