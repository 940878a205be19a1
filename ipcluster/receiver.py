"""Client API layer: who receives on a client's DEALER: its IO thread, or a calling thread that
waits for a result (`Receiver.wait_for`), so the result wakes no other thread.

While a calling thread waits, it receives on the DEALER itself and handles what comes, as the
IO thread would; the IO thread then leaves the DEALER alone (it stops waiting on its notifier,
and looks again every `ASIDE` seconds; when the caller leaves with other threads still
waiting, it wakes the IO thread to take over). One lock (`handling`) lets one thread at a time handle
what was received, so it is handled in the order it came. Whoever sends on the DEALER may take
in the notification of a message that came meanwhile (`wire.Wire`): the IO thread looks after
each of its turns and wakes the receiving caller through a pipe.
"""

from __future__ import annotations

import concurrent.futures
import os
import select
import threading
import time

from ipcluster import transport
from ipcluster.wire import signals_held

DRAIN = 1000  # messages taken from the DEALER at most at once; more: look again at once
POLL = 0.1  # seconds a thread waits on its sockets before it looks around again
ASIDE = 0.05  # the same for the IO thread while a calling thread receives on the DEALER


class Receiver:
    def __init__(self, wire, handle) -> None:
        self.wire = wire  # the DEALER
        # held by the thread handling what the DEALER received; reentrant, for a callback run
        # by that thread that closes the client
        self.handling = threading.RLock()
        self.caller_receives = False  # a calling thread receives (set under `handling`)
        self.callers = 0  # calling threads that sent and will wait for the answer (`answer`)
        self.io_handled = 0  # messages from the DEALER the IO thread handled
        self._handle = handle  # handles a list of received messages
        self._role = threading.Lock()  # held by the calling thread receiving
        self._others = 0  # calling threads waiting on their futures while another receives
        self._count = threading.Lock()  # guards `_others`
        self._poller = None  # the receiving caller's: the DEALER's notifier and `_woken`
        # a pipe on which the IO thread wakes the receiving caller (a plain file descriptor:
        # one poll() call per wait; a zmq poll with an in-process socket in it makes four)
        self._wakes = os.pipe()
        for fd in self._wakes:
            os.set_blocking(fd, False)
        self._woken = self._wakes[0]  # its end read by the caller

    def take(self) -> int:
        """The IO thread: take and handle what the DEALER holds, unless a calling thread
        receives; returns how many messages."""
        with self.handling:
            received = [] if self.owned else self.wire.take(DRAIN)
            if received:
                self.io_handled += len(received)
                self._handle(received)
        return len(received)

    @property
    def owned(self) -> bool:
        """A calling thread receives, or is about to (it sent and no thread waits on a future
        meanwhile, which the IO thread must then receive for): the IO thread leaves the DEALER
        to it."""
        return self.caller_receives or self.callers > 0 and not self._others

    def answer(self, call):
        """`call()`, which sends a request and returns its AsyncResult, and its result: from the
        send on the calling thread is the one to receive (the IO thread leaves the DEALER to
        it, as while it waits), so an answer that comes before it waits is not handed over."""
        with self._count:
            self.callers += 1
        try:
            return call().get()
        finally:
            with self._count:
                self.callers -= 1

    def wait_for(self, future, timeout: float | None) -> float | None:
        """A calling thread that waits for `future` receives on the DEALER while no other
        calling thread does (else it waits on `future`, which the one receiving completes).
        Returns once `future` is done, or at `timeout`, with what is left of it."""
        self.wire.flush()  # what this thread (or any) holds goes now: an answer is awaited
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._count:  # counted before trying: whoever leaves the role next sees us
            self._others += 1
        try:
            if not self._role.acquire(blocking=False):
                concurrent.futures.wait([future], timeout)  # completed by the one receiving
                return None if deadline is None else max(0.0, deadline - time.monotonic())
        finally:
            with self._count:
                self._others -= 1
        ready = expected = False  # the DEALER may have a message; its notifier said so
        first = True
        try:
            while not future.done():
                with self.handling:
                    sock = self.wire.sock
                    if sock is None:
                        break  # the client is closed
                    if self._poller is None:
                        self._poller = select.poll()
                        self._poller.register(self._woken, select.POLLIN)
                        self._poller.register(transport.notifier(sock), select.POLLIN)
                    self.caller_receives = True
                    if not ready and not (first and self.wire.quiet):  # asked without
                        with self.wire.lock:  # holding Ctrl-C back: nothing is taken
                            ready = transport.readable(sock)
                    first = False  # the send's look, if the last use of the socket, will do
                received = ()
                if ready:  # Ctrl-C comes after what is taken is handled, `handling` let go
                    with signals_held(), self.handling:
                        received = self.wire.take(DRAIN, expected)
                        if received:
                            self._handle(received)
                left = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                if future.done() or left <= 0:
                    break
                ready = expected = False
                for fd, _ in self._poller.poll(0 if len(received) == DRAIN else left * 1000):
                    ready = True  # the DEALER's notifier, or a wake-up: look at the DEALER
                    if fd == self._woken:
                        os.read(fd, 4096)
                    else:
                        expected = True
        finally:
            self.caller_receives = False
            self._role.release()
            if self._others:  # they wait for what no thread watches now: the IO thread does
                self.wire.wake()
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def wake_caller(self, dealer) -> None:
        """The IO thread, after each of its turns: a message the receiving caller was not told
        of (a send took its notification in) is waiting: wake it."""
        if not self.owned:
            return
        with self.wire.lock:  # and so the pipe is not closed meanwhile
            self.wire.quiet = False
            if transport.readable(dealer) and self._wakes is not None:
                try:
                    os.write(self._wakes[1], b"w")
                except BlockingIOError:
                    pass  # the pipe is full of wake-ups: it will wake

    def close(self) -> None:
        """Closing (the DEALER detached): once the calling thread receiving (whose future has
        failed) has left the sockets alone, the wake-up pipe goes (else it is left open)."""
        if self._role.acquire(timeout=2 * POLL):
            with self.wire.lock:  # not while the IO thread writes to it
                wakes, self._wakes = self._wakes, None
            for fd in wakes or ():
                os.close(fd)
            self._role.release()
