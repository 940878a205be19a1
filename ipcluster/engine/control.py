"""Processes layer: the engine's control thread, which answers the controller while a task runs.

The main thread runs tasks; this thread registers the engine, streams captured output while
tasks run, and beats so the controller knows the engine is alive. An idle main thread receives
on the socket itself (`next_task`): a task that reaches an idle engine wakes the main thread
only, with no hand-off from this thread. While a task runs, this thread receives (within `POLL`
seconds of the task's start) and queues what comes for the main thread; one lock (`handling`)
lets one thread at a time handle what was received, so it is handled in the order it came.
The main thread sends each result on the socket itself, after the task's output (`wire.Wire`:
a lock around every use of the socket; the receiving thread waits on its notifier): no
hand-off per result (`results.py`: each as its task ends, never held back). A
result's data for a client's direct link is queued for this thread, and a result sent meanwhile
queues behind it. It also acts on control messages while a task runs:
abort (skip a queued task, interrupt a running one), withdraw (give back queued tasks not yet
started), signal, shutdown, and a task's time_limit (interrupted here; one that does not stop
within `kill_grace` is reported and ended by the engine's watchdog process). If the controller
is silent for `controller_timeout`, it stops the engine (SIGTERM to itself), so an engine
never outlives its cluster.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
import uuid

from ipcluster import batch, direct, fingerprint, shm, transport
from ipcluster.engine.dataport import DataPort
from ipcluster.engine.results import Results
from ipcluster.engine.running import Running
from ipcluster.wire import Wire
from ipcluster.protocol import (
    Apply, BadMessage, Result, Drops, Ids, Replay, decode, encode, kinds_for, pack, unpack,
)

log = logging.getLogger("ipcluster.engine")

RESULTS = "results"  # name of the in-process channel from the main thread
POLL = 0.1  # seconds a thread waits on its sockets before it looks around again
POLL_MS = round(POLL * 1000)
STOP = object()  # put on the task queue to end the main loop
DRAIN = 1000  # messages taken from the socket at most at once; more: look again at once
OUTPUT_PIECE = 1 << 24  # most characters of output per message: fewer pieces, less joining
MAX_BEAT = 30.0  # seconds: a longer interval the controller asks for is ignored


class Control(threading.Thread):
    def __init__(self, context, info, signer, capture, tasks, options, watch, requested_id=None):
        super().__init__(name="ipcluster-control", daemon=True)
        self.watch = watch
        self.context, self.info, self.signer = context, info, signer
        self.capture, self.tasks, self.options = capture, tasks, options
        self.wire = Wire(context, RESULTS)  # the socket, used by this thread and the main one
        self.requested_id = requested_id
        self.ids = Ids()
        self.replay = Replay()
        self.dropped = Drops(log)
        self.engine_id: int | None = None
        self.uuid = str(uuid.uuid4())  # this process's, in each result (ipyparallel's engine_uuid)
        self.shm = shm.host(info.key_bytes)  # None where there is no shared memory
        if self.shm is not None:  # so that what it maps, sent back unwritten, is not copied
            self.shm.hold = True
        self.durable = False  # the controller stores results: send them as bytes
        self.dataport: DataPort | None = None  # where clients on other hosts send large buffers
        self.registered = threading.Event()
        self.beat_interval = options.beat_interval  # until the controller says otherwise
        self.handling = threading.Lock()  # held by the thread handling received messages
        self.results = Results(self.wire, tasks, self.handling, self._send_output,
                               capture.pending)  # the main thread's
        self.main_receives = False  # the idle main thread waits on the socket (set under handling)
        self.handed = 0  # tasks this thread received and queued for the main thread
        self.main_ident = threading.get_ident()  # made by the main thread
        self.last_heard = time.monotonic()
        self._main_poller = None  # the main thread's: the socket's notifier and `_wakes`
        # a pipe that wakes the idle main thread (a plain file descriptor: one poll() call per
        # wait, where a zmq poll with an in-process socket in it makes four); open as long as
        # the engine process
        self._wakes = os.pipe()
        for fd in self._wakes:
            os.set_blocking(fd, False)
        self.running = Running(watch, options.kill_grace)
        self.aborted: set[str] = set()
        self.error: str | None = None
        self.stop_reason = "it shut down"  # told to the controller, which tells the clients
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced to the main thread, which owns this thread
            self.error = f"control thread failed: {type(exc).__name__}: {exc}"
            log.exception("control thread failed")
        finally:
            self.registered.set()
            self.tasks.put(STOP)
            self._wake_main()

    def _send(self, sock, header: dict, content=b"") -> None:
        if threading.current_thread() is threading.main_thread():  # a handler run by the idle
            header["id"] = self.ids()  # main thread: `Wire.send` holds Ctrl-C and SIGTERM back
            self.wire.send(encode(self.signer, header, content))  # until the message is whole
            return
        with self.wire.lock:
            self._send_output(sock)
            self._put(sock, header, content)

    def _put(self, sock, header: dict, content=b"") -> None:
        """Send a new message (the caller holds `wire.lock`)."""
        header["id"] = self.ids()
        transport.send(sock, encode(self.signer, header, content))

    def post(self, frames: list) -> None:
        """From the main thread: a task's reply, sent after the task's output
        (`results.Results.post`). A result's data for a client's direct link (``[b"data", peer, ...]``) is queued for
        this thread."""
        if frames[0] == b"data":
            self.wire.queue(frames)
        else:
            self.results.post(frames)

    def _register(self, sock) -> bool:
        self._send(sock, {"kind": "register"}, pack(self._facts(self.requested_id)))
        deadline = time.monotonic() + self.options.register_timeout
        poller = transport.Poller(sock)
        while time.monotonic() < deadline and not self._stopping.is_set():
            if sock not in poller.poll(0.1):
                continue
            try:
                msg = decode(self.signer, transport.recv(sock), self.replay)
                if msg.kind == "register_reply":
                    reply = unpack(msg.content)
                    self.engine_id, self.durable = int(reply["id"]), bool(reply.get("durable"))
                    self._paced(reply)
                    return True
            except Exception as exc:
                self.dropped(exc)
        self.error = (f"no reply from the controller at {self.info.engine_url} within "
                      f"{self.options.register_timeout} s; is the cluster running?")
        return False

    def _facts(self, engine_id) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "id": engine_id,
                "shm": self.shm.identity if self.shm is not None else "",
                "data": self.dataport.url if self.dataport is not None else "",
                "environment": fingerprint.environment(),  # for provenance
                # registering again after a restart: these are ours, not to be sent again
                "holds": self.running.held()}

    def _run(self) -> None:
        sock = self._sock = self.context.dealer(self.info.engine_url, identity=uuid.uuid4().bytes,
                                                curve_server_key=self.info.curve_public_key or None,
                                                heartbeat=transport.ENGINE_HEARTBEAT)
        inbox = self.wire.inbox()
        self.dataport = DataPort(self.context, self.info, self.signer, self.replay)
        if not self._register(sock):
            return
        poller = transport.Poller(inbox, self.dataport.sock)
        self.wire.attach(sock, poller)  # from now on used under its lock only
        aside = transport.Poller(inbox, self.dataport.sock)  # while the main thread receives
        self.registered.set()
        next_beat = time.monotonic()
        received: list = []
        while not self._stopping.is_set():
            waiter = aside if self.main_receives else poller
            ready = waiter.poll(0 if len(received) == DRAIN else POLL)
            with self.handling:
                # handled with the wire's lock let go: they send
                received = [] if self.main_receives else self.wire.take(DRAIN)
                if received:
                    self.last_heard = time.monotonic()
                    for frames in received:
                        self._on_message(frames)
                if self.dataport.sock in ready:
                    for frames in transport.drain(self.dataport.sock):
                        self._on_data(frames)
            if inbox in ready:
                for _ in transport.drain(inbox):
                    pass  # wake-ups: the messages are in `wire.queued`
            with self.wire.lock:
                while self.wire.queued:
                    frames = self.wire.queued.popleft()
                    if frames[0] == b"data":  # a result's data, to its client's link
                        self.dataport.send(frames[1], frames[2:])
                        continue
                    self._send_output(sock)  # a task's output before its result
                    transport.send(sock, frames)
                self._send_output(sock)
            self.watch.alive()  # the watchdog speaks for the engine when this stops
            if self.running.overdue():  # past kill_grace more, the watchdog ends the engine
                self.running.interrupt(None, "timeout")
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.beat_interval
                self._send(sock, {"kind": "beat"})
                for msg in self.dataport.pending.expired():
                    self._fail_undelivered(sock, msg)
                self.dataport.check_onward()
            if self.main_receives:  # a message that came as this thread sent was taken in by
                with self.wire.lock:  # the send, not signalled to the main thread: wake it
                    waiting = transport.readable(sock)
                if waiting:
                    self._wake_main()
            if now - self.last_heard > self.options.controller_timeout:
                self.error = (f"lost the controller: nothing heard from {self.info.engine_url} "
                              f"for {self.options.controller_timeout} s")
                log.error("%s; stopping", self.error)
                os.kill(os.getpid(), signal.SIGTERM)
                break
        with self.wire.lock:
            self._send_output(sock)
            self._put(sock, {"kind": "unregister"}, pack({"reason": self.stop_reason}))

    def _on_message(self, frames) -> None:
        try:
            self._dispatch(decode(self.signer, frames, self.replay))
        except Exception as exc:  # nothing a message says may stop this thread
            self.dropped(exc)

    def _dispatch(self, msg) -> None:
        handler = HANDLERS.get(msg.kind)
        if handler is None:
            raise BadMessage(f"a {msg.kind!r} message is not for engines")
        handler(self, msg)

    def next_task(self):
        """The main thread's next task (or `STOP`): a queued one, else, idle, it receives on the
        socket itself and handles what comes (as this thread would) until a task is there."""
        if not self.tasks.empty():  # only this thread takes from the queue
            return self.tasks.get_nowait()
        if self._main_poller is None:
            self._main_poller = select.poll()
            self._main_poller.register(self._wakes[0], select.POLLIN)
            self._main_poller.register(transport.notifier(self._sock), select.POLLIN)
        came = False  # the socket's notifier said a message came
        try:
            while True:
                with self.handling:
                    self.main_receives = True
                    received = [] if not self.tasks.empty() else self.wire.take(DRAIN, came)
                    if received:
                        self.last_heard = time.monotonic()
                        for frames in received:
                            self._on_message(frames)
                    if not self.tasks.empty():
                        self.main_receives = False
                        return self.tasks.get_nowait()
                came = False
                for fd, _ in self._main_poller.poll(0 if len(received) == DRAIN else POLL_MS):
                    if fd == self._wakes[0]:  # wake-ups: what they announce is on the socket
                        os.read(fd, 4096)  # or in the queue
                    else:
                        came = True
        finally:
            self.main_receives = False

    def _wake_main(self) -> None:
        """From this thread: the main thread waiting on the socket has something to look at."""
        try:
            os.write(self._wakes[1], b"w")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups: it will wake

    # -- a handler per kind (HANDLERS) ------------------------------------------------------

    def on_batch(self, msg) -> None:  # tasks, each handled as if it came alone
        for item in batch.unbatch(msg, self.replay, self.dropped):
            try:
                self._dispatch(item)
            except Exception as exc:
                self.dropped(exc)

    def on_apply(self, msg) -> None:
        task = Apply.task_for(msg.header, self.engine_id)
        msg = self.dataport.request(msg)  # None: its large buffers have yet to come
        if msg is not None:
            self._queue(msg, task)

    def _queue(self, msg, task: str) -> None:
        self.running.enqueue(task)
        self.tasks.put((task, msg))
        if threading.get_ident() != self.main_ident:
            self.handed += 1

    def _on_data(self, frames) -> None:
        try:
            msg = self.dataport.receive(frames, self.ids)
            if msg is not None:
                self._queue(msg, Apply.task_for(msg.header, self.engine_id))
                if self.main_receives:
                    self._wake_main()
        except Exception as exc:  # nothing a message says may stop this thread
            self.dropped(exc)

    def _fail_undelivered(self, sock, msg) -> None:
        task = Apply.task_for(msg.header, self.engine_id)
        error = {"error": "RemoteError", "ename": "DataLost", "engine_id": self.engine_id,
                 "evalue": f"the large buffers of this request did not arrive on the engine's data "
                           f"port within {direct.WAIT} s of the request (the client's direct link "
                           "broke); submit it again", "traceback": ""}
        header = Result(task, self.engine_id, "error", completed=time.time()).header(self.ids())
        with self.wire.lock:
            transport.send(sock, encode(self.signer, header, pack(error)))

    def on_control(self, msg) -> None:
        self._on_control(unpack(msg.content))

    def on_reregister(self, msg) -> None:  # a restarted controller: same id, namespace intact
        log.info("the controller restarted; registering again as engine %s", self.engine_id)
        self._send(self._sock, {"kind": "register"}, pack(self._facts(self.engine_id)))

    def on_register_reply(self, msg) -> None:
        log.info("registered again as engine %s", unpack(msg.content).get("id"))

    def on_beat(self, msg) -> None:
        """Hearing from the controller (`last_heard` is set for any message), and how often to
        beat: with many engines, less often than every second."""
        self._paced(unpack(msg.content))

    def _paced(self, said) -> None:
        beat = said.get("beat") if isinstance(said, dict) else None
        if isinstance(beat, (int, float)) and 0 < beat <= MAX_BEAT:
            self.beat_interval = float(beat)

    def _on_control(self, request) -> None:
        if not isinstance(request, dict):
            raise BadMessage(f"control: expected a map, got {type(request).__name__}")
        action = request.get("action")
        if action == "abort":
            for task in request.get("tasks", []):
                if request.get("queued_only") and self.running.task == task:
                    continue  # running: it finishes (Executor.shutdown(cancel_futures=True))
                if not self.running.interrupt(task, "abort"):
                    self.aborted.add(task)  # skipped when the main thread reaches it
        elif action == "signal":
            sig = int(request.get("signal", signal.SIGINT))
            if sig == signal.SIGINT:
                self.running.interrupt(None, "signal")  # only ever interrupts a task
            else:
                os.kill(os.getpid(), sig)
        elif action == "withdraw":  # give back queued tasks, so they can run elsewhere
            tasks = [t for t in request.get("tasks", []) if isinstance(t, str)]
            given = [t for t in tasks if self.running.withdraw(t)]
            self._send(self._sock, {"kind": "withdrawn", "engine": self.engine_id},
                       pack({"withdrawn": given, "started": [t for t in tasks if t not in given]}))
        elif action == "shutdown":
            log.info("shutdown requested by the controller")
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            raise BadMessage(f"unknown control action {action!r}")

    def _send_output(self, sock) -> None:
        """Output captured so far (the caller holds `wire.lock`: what one thread took, it sends
        before the other can send anything)."""
        for task, name, text in self.capture.take():
            # in pieces: no message nears max_message_size (4 bytes a character at most), and
            # the controller holds one piece at a time
            size = OUTPUT_PIECE
            if self.info.max_message_size > 0:
                size = max(1024, min(size, self.info.max_message_size // 8))
            pieces = [text[i:i + size] for i in range(0, len(text), size)] \
                if isinstance(text, str) and text else [text]
            for piece in pieces:
                self._put(sock, {"kind": "output", "parent": task, "engine": self.engine_id},
                          pack({"name": name, "text": piece}))


# The engine's handler per kind it receives: a function of (control thread, message).
HANDLERS = {kind: getattr(Control, f"on_{kind}") for kind in kinds_for("engine")}
