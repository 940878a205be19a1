"""Transport layer: `Wire`, one zmq socket shared by the threads of a process, with no thread
hand-off per message.

zmq sockets are not thread-safe, so every use of the socket holds `Wire.lock`. Any thread sends
on it itself (`send`): a whole message under the lock, with nothing handed to another thread.
One thread owns it (the client's IO thread, the engine's control thread): it receives (`take`)
and sends what others `queue` for it, and it waits on the socket's notifier, a file descriptor,
never holding the lock while it waits. A send may take in the notification of a message that
arrived meanwhile; the sender then wakes the owner with a one-frame message on its own
in-process socket (`wake`), as it does for what it queues. A message sent while others are
queued goes behind them, so each thread's messages keep their order.

Requests that come in a burst go several to a message, without a timer (Nagle's idea): a
one-frame message may be `hold`-en instead of sent; the first one held wakes the owner once.
Whoever sends next sends everything held first, in order, as one message (`pack`, the
client's signed ``batch``): the owner when it runs (it takes them with what was queued), a
thread about to wait for an answer (`flush`), any `send` or `queue`, or the holder itself once
`HOLD` messages or `hold_bytes` are held. What is held is always the tail of what is to go;
at the interpreter's exit, what is still held goes (`_send_held`: the owner is a daemon
thread, and a script may submit and exit without waiting).

A message is sent frame by frame, and Python runs signal handlers between two calls: Ctrl-C
(or SIGTERM) in the main thread half-way through a message would leave it open, and the next
message, whoever sends it, would be sent as its tail. So in the main thread a send of more
than one frame holds the handlers of SIGINT and SIGTERM back until the message is whole, then
runs them (a message of one frame is one zmq call: nothing to hold back).
"""

from __future__ import annotations

import _signal  # the C module under `signal`: its calls take and return plain ints
import atexit
import collections
import contextlib
import signal
import threading
import weakref

from ipcluster import transport

WAKE = [b""]
HELD = (signal.SIGINT, signal.SIGTERM)
HOLD = 64  # messages held at most, then the one holding sends them: a batch is one turn of the
# controller's loop (~60 us a request), so engines waiting for it wait a few ms at most
HOLD_BYTES = 256 * 1024  # bytes held at most (`Wire.hold_bytes`, lower for a small frame limit)
_wires: weakref.WeakSet = weakref.WeakSet()  # every Wire, for `_send_held` at exit
BATCH_SPARE = 4096  # bytes a batch adds to what it carries, at most: header, signature, lengths


class _HeldSignals:
    """In the main thread: SIGINT and SIGTERM handlers run when the block ends, not within it.

    Through `_signal`, not `signal`: the latter converts each handler to an enum and back
    (a failed enum lookup per call for a callable handler), 20 µs a send against 1 µs."""

    def __enter__(self):
        self.caught: list = []
        self.saved = saved = {}
        for signum in HELD:
            handler = _signal.getsignal(signum)
            if callable(handler):
                saved[signum] = handler
                _signal.signal(signum, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self.caught.append((signum, frame))

    def __exit__(self, *exc) -> None:
        for signum, handler in self.saved.items():
            _signal.signal(signum, handler)
        for signum, frame in self.caught:
            self.saved[signum](signum, frame)


def signals_held():
    """A block in which, in the main thread, SIGINT and SIGTERM handlers run only at its end:
    for work that must not stop half-way (handling a received message)."""
    if threading.get_ident() == threading.main_thread().ident:
        return _HeldSignals()
    return contextlib.nullcontext()


class Wire:
    def __init__(self, context, inbox_name: str, pack=None, hold_bytes: int = HOLD_BYTES) -> None:
        self.lock = threading.Lock()
        self.queued: collections.deque = collections.deque()  # for the owner to send, in order
        self.held: list = []  # one-frame messages to go together, after `queued` (`hold`)
        self.held_bytes = 0
        self.pack = pack  # one-frame messages -> the frames of one message carrying them
        self.hold_bytes = hold_bytes  # what is held at most (below the peer's frame limit)
        self.sock = None  # None until `attach`, and again after `detach`
        # True while, as of a send's look (`_send`), nothing waits on the socket, so that its
        # notifier signals the next message; any other use of it clears this
        self.quiet = False
        self.wakeups = 0  # of the owner by other threads: a machine-free cost measure
        self._context, self._inbox_name = context, inbox_name
        self._local = threading.local()  # each thread's in-process socket to the owner
        _wires.add(self)

    def inbox(self):
        """The owner's end of the in-process channel that `wake` sends on."""
        return self._context.inbox(self._inbox_name)

    def attach(self, sock, poller) -> None:
        """The owner: `sock` is shared from now on; `poller` waits on its notifier."""
        poller.add(transport.notifier(sock))
        with self.lock:
            self.sock = sock

    def detach(self) -> None:
        with self.lock:  # no thread is sending on it as it goes
            self.sock = None

    def send(self, frames: list | None, queue: bool = False) -> None:
        """Any thread: send what is held, then a message (if any) now, or queue them behind
        what is queued (or if the socket is not attached yet, or with `queue`: a message only
        the owner may send)."""
        with self.lock:
            several = self.held or frames is not None and len(frames) > 1
            if not several:  # one zmq call (a message of one frame), which Ctrl-C cannot cut
                waiting = self._send(frames, queue)
        if several:  # Ctrl-C held back, its handler run once the lock is let go (it may send)
            with signals_held(), self.lock:
                waiting = self._send(frames, queue)
        if waiting:
            self.wake()

    def _send(self, frames: list | None, queue: bool) -> bool:
        """Under the lock; True if the owner must look (at what is queued, or at a message
        that came as this thread sent, whose notification the send may have taken in)."""
        if self.held:
            self._release()
        if frames is None:
            pass
        elif queue or self.queued or self.sock is None:
            self.queued.append(frames)
        else:
            transport.send(self.sock, frames)
        if self.queued or self.sock is None:
            self.quiet = False
            return True
        waiting = transport.readable(self.sock)
        self.quiet = not waiting
        return waiting

    def hold(self, frames: list) -> None:
        """Any thread: a one-frame message, to go with the others held (see the module's
        docstring); the first one held wakes the owner, which sends them if nobody does
        before. Appending is one step: Ctrl-C cannot leave half a message here."""
        size = len(frames[0])
        with self.lock:
            held = self.held
            if held and self.held_bytes + size > self.hold_bytes:
                full = True  # it would make the batch too large: it waits for the next one
            else:
                held.append(frames)
                self.held_bytes += size
                full, frames = len(held) >= HOLD or self.held_bytes >= self.hold_bytes, None
            first = len(held) == 1
        if full:
            self.send(None)
            if frames is not None:
                self.hold(frames)
        elif first:
            self.wake()

    def holds(self, frames: list) -> bool:
        """True if a one-frame message may be held (it fits in a batch)."""
        return len(frames[0]) <= self.hold_bytes

    def flush(self) -> None:
        """Any thread, before it waits for an answer: send what is held, now."""
        if self.held:
            self.send(None)

    def _release(self) -> None:
        """Under the lock: what is held, as one message, sent or queued behind what is."""
        held, self.held, self.held_bytes = self.held, [], 0
        frames = held[0] if len(held) == 1 else self.pack(held)
        if self.queued or self.sock is None:
            self.queued.append(frames)
        else:
            transport.send(self.sock, frames)

    def queue(self, frames: list) -> None:
        """Any thread: a message only the owner may send (it reads it from `queued`)."""
        self.send(frames, queue=True)

    def outgoing(self):
        """The owner, under the lock: what to send, in order: what was queued, then what is
        held (as one message)."""
        self.quiet = False
        while self.queued:
            yield self.queued.popleft()
        if self.held:
            self._release()  # nothing queued: sent now


    def wake(self) -> None:
        self.wakeups += 1  # not under a lock: an estimate when threads race
        sock = getattr(self._local, "outbox", None)
        if sock is None:
            sock = self._local.outbox = self._context.outbox(self._inbox_name)
        transport.send(sock, WAKE)

    def take(self, limit: int, expected: bool = False) -> list:
        """The owner: the messages waiting on the socket (at most `limit`), under the lock, so
        that they are handled after it is let go (a handler may send); `expected`: its notifier
        said one came (`transport.take`)."""
        with self.lock:
            self.quiet = False
            return [] if self.sock is None else transport.take(self.sock, limit, expected)


@atexit.register
def _send_held() -> None:
    """At the interpreter's exit: what any Wire still holds goes now."""
    for wire in list(_wires):
        if wire.held and wire.sock is not None:
            wire.flush()
