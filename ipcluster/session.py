"""Client API layer: a client's session with the controller: its sockets, IO thread and tables.

One IO thread receives: on a DEALER to the controller (results, output and replies, in the
order the controller forwarded them; while a calling thread waits for a result, that thread
receives on the DEALER instead: `receiver.Receiver`) and a SUB for events (engines coming and going, the
controller's beat). A user thread sends its requests on that DEALER itself (`sender.Sender`,
over `wire.Wire`: a lock around every use of the socket; the IO thread waits on its notifier):
no hand-off to another thread per request. If the
controller is silent for `timeout` seconds, work in flight fails with `ControllerLost`.

Delivery is exactly once, without timers. What the controller could not send while this client
was away it keeps, and sends when the client's next message arrives. Each time the DEALER
connects again (the controller restarted, or the connection dropped), the IO thread sends a
`sync` with the tasks it still waits for; the reply says which are finished. Everything sent
before that reply arrives before it, so a finished task still waiting then was lost on the way:
the client fetches exactly those (with how much of their output it has), and fails those the
controller does not know.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import logging
import threading
import time
import warnings

from ipcluster import batch, direct, serialize, shm, transport
from ipcluster.wire import BATCH_SPARE, HOLD_BYTES, Wire
from ipcluster.links import Links
from ipcluster.receiver import ASIDE, DRAIN, POLL, Receiver
from ipcluster.sender import Sender
from ipcluster.task import TaskFuture
from ipcluster.errors import ClientClosed, ControllerLost, RemoteError, SerializationError, from_wire
from ipcluster.protocol import (
    BadMessage, Ids, Replay, Result, Signer, decode, encode, now, pack, unpack,
)

log = logging.getLogger("ipcluster.client")


class Session:
    def __init__(self, info, connection_file, timeout: float) -> None:
        self.info = info
        self.connection_file = connection_file
        self.timeout = timeout
        self.signer = Signer(info.key_bytes)
        self.replay = Replay()
        self.ids = Ids()
        self.context = transport.Context(info.key_bytes)  # proves the key when it connects
        # the DEALER, any thread; requests held in a burst go as one signed batch
        limit = info.max_message_size  # the controller's bound on a frame: a batch is one
        self.wire = Wire(self.context, f"client-{self.ids.session}",
                         lambda messages: batch.pack(self.signer, self.ids(), messages),
                         HOLD_BYTES if limit is None or limit < 0 else min(HOLD_BYTES, limit - BATCH_SPARE))
        self.shm = shm.host(info.key_bytes)  # None where there is no shared memory
        self.links = Links(self)  # direct links to the data ports of engines on other hosts
        self.tasks: dict[str, TaskFuture] = {}  # unfinished tasks of this client
        self.sender = Sender(self.signer, self.wire, self.shm, self.links, connection_file,
                             lambda targets: self.request("query", {"targets": targets})["engines"],
                             self.tasks)
        self._replies: dict[str, concurrent.futures.Future] = {}
        self.engine_ids: list[int] = []
        self.engines_version: int | None = None  # the controller's registry version they match
        self._ids_asked: str | None = None  # id of our question for the ids, until answered
        self.engines_changed = threading.Condition()
        self.closed = False
        self.lost: str | None = None
        self.store_problem: str | None = None  # the controller's durable store is failing
        self.warn_store = True  # warn on the next call once a store problem is known
        self._warned: str | None = None
        self._last_heard = time.monotonic()
        self._syncs: set[str] = set()  # ids of our sync requests not yet answered
        # held while a task is registered and its request sent, so that a sync never lists a
        # task whose request would reach the controller after it
        self.submitting = threading.Lock()
        self.receiver = Receiver(self.wire, self.handle)
        self._stopping = threading.Event()
        self._io_ready = threading.Event()
        self._io = threading.Thread(target=self._io_loop, name="ipcluster-client-io", daemon=True)
        self._io.start()
        self._io_ready.wait()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.wire.flush()  # requests held to go together go, as each would have alone
        self._stopping.set()
        if self._io.is_alive() and self._io is not threading.current_thread():
            self._io.join(timeout=5)
        with self.receiver.handling:  # a calling thread receiving takes nothing more
            self.wire.detach()
        self._fail_all(ClientClosed("the client was closed before this result arrived"))
        self.receiver.close()
        for task, *_ in self.links.pending.expired(0):  # results still waiting for their data
            task.set_exception(ClientClosed("the client was closed before this result arrived"))
        self.sender.discard_all()
        self.context.close()

    # -- asking (any thread) ----------------------------------------------------------------

    def check_usable(self) -> None:
        if self.closed:
            raise ClientClosed("this client is closed; create a new Client() to reconnect")
        if self.lost:
            raise ControllerLost(self.lost)
        problem = self.store_problem
        if problem != self._warned and self.warn_store:  # once per problem, on the next call after it is known
            self._warned = problem
            if problem:
                warnings.warn(f"the controller says: {problem}", RuntimeWarning, stacklevel=3)

    def request(self, kind: str, content: dict | None = None, timeout: float | None = None):
        """Ask the controller something and wait for its reply."""
        self.check_usable()
        timeout = self.timeout if timeout is None else timeout
        msg_id = self.ids()
        reply = self._replies[msg_id] = concurrent.futures.Future()
        self.sender.send({"kind": kind, "id": msg_id}, pack(content) if content is not None else b"")
        try:
            return reply.result(self.wait_for(reply, timeout))
        except concurrent.futures.TimeoutError:
            raise ControllerLost(
                f"no answer from the controller at {self.info.client_url} within {timeout} s "
                f"(connection file {self.connection_file}); is the cluster running? "
                "`ipcluster list` shows the running clusters") from None
        finally:
            self._replies.pop(msg_id, None)

    def set_engine_ids(self, ids: list[int], version: int | None = None) -> None:
        """The engine ids as the controller listed them, at its registry's `version`."""
        self.engines_version = version
        ids = sorted(ids)
        if ids != self.engine_ids:
            self.engine_ids = ids
            with self.engines_changed:
                self.engines_changed.notify_all()

    def _engine_joined(self, eid: int) -> None:
        i = bisect.bisect_left(self.engine_ids, eid)
        if i == len(self.engine_ids) or self.engine_ids[i] != eid:
            self.engine_ids = [*self.engine_ids[:i], eid, *self.engine_ids[i:]]  # a new list:
            with self.engines_changed:  # callers may be iterating the old one
                self.engines_changed.notify_all()

    def _engine_left(self, eid: int) -> None:
        if eid in self.engine_ids:
            self.set_engine_ids([e for e in self.engine_ids if e != eid])

    def wait_for(self, future, timeout: float | None) -> float | None:
        """Wait for `future` receiving on the DEALER in this thread if no other thread does
        (`Receiver.wait_for`); returns what is left of `timeout`."""
        if threading.get_ident() == self._io.ident:
            return timeout
        return self.receiver.wait_for(future, timeout)

    def handle(self, received: list) -> None:
        """Handle messages received on the DEALER (the caller holds `receiver.handling`)."""
        self._last_heard = time.monotonic()
        for frames in received:
            self._on_reply(frames)

    # -- the IO thread ----------------------------------------------------------------------

    def _io_loop(self) -> None:
        curve = self.info.curve_public_key or None
        # a fixed identity, so a restarted controller routes our results to us again
        dealer = self.context.dealer(self.info.client_url, identity=f"client-{self.ids.session}".encode(),
                                     curve_server_key=curve)
        sub = self.context.subscriber(self.info.pub_url, curve_server_key=curve)
        inbox = self.wire.inbox()
        monitor = transport.watch_connections(dealer)
        connected = 0
        poller = transport.Poller(sub, inbox, monitor)
        self.wire.attach(dealer, poller)  # from now on used under its lock only
        notifier, watching = transport.notifier(dealer), True
        self._io_ready.set()
        received = 0
        try:
            while not self._stopping.is_set():
                if watching == self.receiver.owned:  # the DEALER's notifier is the
                    (poller.remove if watching else poller.add)(notifier)  # caller's, or ours
                    watching = not watching
                ready = poller.poll(0 if received == DRAIN else POLL if watching else ASIDE)
                if monitor in ready:
                    was, connected = connected, connected + transport.connections(monitor)
                    if was and connected > was:  # connected again: find what we missed
                        self._sync(dealer, inbox, poller)
                if inbox in ready:
                    for _ in transport.drain(inbox):
                        pass  # wake-ups: the messages are in `wire.queued`
                if self.wire.held:  # let a thread that is submitting add to them first: it
                    time.sleep(0)  # takes the GIL now if it wants it, else this thread goes on
                with self.wire.lock:
                    self._send_outgoing(dealer, poller)
                received = self.receiver.take()  # handled with the wire's lock let go: they send
                for sock in self.links.readable(ready):
                    with self.receiver.handling:
                        for frames in transport.drain(sock):
                            self._on_link(sock, frames)
                if sub in ready:
                    self._last_heard = time.monotonic()
                    for frames in transport.drain(sub):
                        self._on_event(frames)
                self.receiver.wake_caller(dealer)
                self._check_controller(dealer)
                with self.receiver.handling:
                    self.links.expire()
        except Exception as exc:  # surfaced to every caller waiting on this client
            log.exception("client IO thread failed")
            self.lost = f"the client's IO thread failed: {type(exc).__name__}: {exc}"
            self._fail_all(ControllerLost(self.lost))

    def _send_outgoing(self, dealer, poller) -> None:
        """What user threads queued or held, in order (under `wire.lock`)."""
        for frames in self.wire.outgoing():
            if not self.links.on_request(frames, poller):
                transport.send(dealer, frames)

    def _sync(self, dealer, inbox, poller) -> None:
        with self.submitting, self.wire.lock:  # each task listed has its request ahead of the sync
            for _ in transport.drain(inbox):
                pass
            self._send_outgoing(dealer, poller)  # every request queued so far
            if not self.tasks:
                return
            msg_id = self.ids()
            self._syncs.add(msg_id)
            request = {"action": "sync", "tasks": list(self.tasks)}
            transport.send(dealer, encode(self.signer, {"kind": "control", "id": msg_id}, pack(request)))

    def _on_sync(self, reply: dict) -> None:
        """The controller's answer to a sync: results it finished that have not arrived were
        lost on the way (anything sent before the reply came before it): fetch them."""
        lost = [t for t in reply.get("finished", []) if t in self.tasks]
        if lost:
            have = {t: [len(self.tasks[t].metadata["stdout"]), len(self.tasks[t].metadata["stderr"])]
                    for t in lost}
            self.sender.send({"kind": "control", "id": self.ids()},
                      pack({"action": "fetch", "tasks": lost, "have": have}))
        for task_id in reply.get("missing", []):
            task = self.tasks.pop(task_id, None)
            if task is not None:
                task.set_exception(ControllerLost(
                    f"the controller at {self.info.client_url} has no record of task {task_id}: "
                    "it restarted without a task store (start the cluster with db='sqlite' to "
                    "keep work across restarts), or the task was submitted as it stopped. "
                    "Submit it again"))

    def _check_controller(self, dealer) -> None:
        silent = time.monotonic() - self._last_heard
        if silent > self.timeout and not self.lost:
            self.lost = (
                f"the controller at {self.info.client_url} has been silent for {silent:.1f} s "
                f"(timeout {self.timeout} s); it has probably stopped. Work in flight cannot "
                "complete; restart the cluster and create a new Client()")
            self._fail_all(ControllerLost(self.lost))
        elif silent <= self.timeout and self.lost and self.lost.startswith("the controller"):
            self.lost = None

    def _fail_all(self, error: Exception) -> None:
        for table in (self.tasks, self._replies):
            for key in list(table):
                future = table.pop(key, None)
                if future is not None and not future.done():
                    future.set_exception(error)

    def _on_reply(self, frames) -> None:
        try:
            msg = decode(self.signer, frames, self.replay)
            self._dispatch(msg)
        except Exception as exc:  # one bad message must not stop the IO thread
            _dropped(exc)

    def _dispatch(self, msg) -> None:
        handler = HANDLERS.get(msg.kind)
        if handler is None:
            raise BadMessage(f"a {msg.kind!r} message is not for clients")
        handler(self, msg)

    # -- a handler per kind (HANDLERS) ------------------------------------------------------

    def on_batch(self, msg) -> None:  # results and output, each handled as if it came alone
        for item in batch.unbatch(msg, self.replay, _dropped):
            try:
                self._dispatch(item)
            except Exception as exc:
                _dropped(exc)

    def on_result(self, msg) -> None:
        result = Result.from_header(msg.header)
        task = self.tasks.pop(result.parent, None)
        if task is not None:
            self.sender.discard(task.task_id)
            if "direct" in msg.header:  # its large buffers come on a direct link
                data = self.links.pending.message(msg.header["id"], (task, result, msg))
                if data is None:
                    return  # completed when they arrive
                msg.buffers = direct.join(msg.header, msg.buffers, data)
            self.complete(task, result, msg)
        else:
            log.warning("dropped a result for task %s, which this client does not wait "
                        "for (a duplicate?)", result.parent)

    def on_output(self, msg) -> None:
        task = self.tasks.get(msg.header.get("parent"))
        if task is not None:
            out = unpack(msg.content)
            task.add_output(out["name"], out["text"], msg.header.get("engine"))

    def on_error(self, msg) -> None:  # the controller refused a request of ours
        error = unpack(msg.content)
        exc = RemoteError(error.get("ename", "Error"), f"the controller refused the request: "
                          f"{error.get('evalue', '')}")
        for task_id in error.get("tasks", []):
            task = self.tasks.pop(task_id, None)
            if task is not None:
                task.set_exception(exc)
        reply = self._replies.get(msg.header.get("parent"))
        if reply is not None and not reply.done():
            reply.set_exception(exc)

    def on_reply(self, msg) -> None:  # hello_reply, query_reply, control_reply
        if msg.header.get("parent") in self._syncs:
            self._syncs.discard(msg.header["parent"])
            self._on_sync(unpack(msg.content) or {})
            return
        if msg.header.get("parent") == self._ids_asked:
            self._ids_asked = None
            reply = unpack(msg.content) or {}
            self.set_engine_ids(reply.get("ids", []), reply.get("version"))
            return
        reply = self._replies.get(msg.header.get("parent"))
        if reply is not None and not reply.done():
            reply.set_result(unpack(msg.content))

    def on_event(self, msg) -> None:
        event = unpack(msg.content)
        if event.get("event") in ("engine_up", "engine_down"):
            gone = self.sender.forget(event.get("id"))  # a restarted engine has a new token
            if gone and event["event"] == "engine_down":  # what a killed engine held on this
                shm.drop_held(self.info.key_bytes, gone.get("shm"))  # host (if not the controller's)
        if event.get("event") == "engine_up":
            self._engine_joined(int(event["id"]))
            self._counted(event.get("version"))
        elif event.get("event") == "engine_down":
            self._engine_left(int(event["id"]))
            self._counted(event.get("version"))
        elif event.get("event") == "beat" and event.get("engines") != self.engines_version \
                and self._ids_asked is None:  # we missed a change (events may be dropped)
            self._ids_asked = self.ids()
            self.sender.send({"kind": "query", "id": self._ids_asked}, pack({"what": "ids"}))
        if "store" in event:
            self.store_problem = event["store"]

    def _counted(self, version) -> None:
        """An engine_up or engine_down event at the registry's `version`: our list is at that
        version if it was at the one before (else the next beat shows that it is stale)."""
        if self.engines_version is not None and version == self.engines_version + 1:
            self.engines_version = version

    def complete(self, task: TaskFuture, result: Result, msg) -> None:
        """Finish `task` with the value or error of its result message."""
        task.finish(result.engine, result.engine_uuid, result.status, result.started,
                    result.completed, now())
        if result.status == "ok":
            try:
                task.set_result(serialize.loads(msg.content, msg.buffers))
            except SerializationError as exc:
                task.set_exception(exc)
        else:
            task.set_exception(from_wire(unpack(msg.content)))

    def _on_link(self, sock, frames) -> None:
        try:
            self.links.on_message(sock, frames)
        except Exception as exc:  # one bad message must not stop the IO thread
            log.warning("dropped a message from an engine's data port: %s: %s", type(exc).__name__, exc)

    def _on_event(self, frames) -> None:
        try:
            msg = decode(self.signer, frames, self.replay)
            if msg.kind != "event":
                raise BadMessage(f"a {msg.kind!r} message on the event subscription")
            self.on_event(msg)
        except Exception as exc:
            log.warning("dropped an event: %s: %s", type(exc).__name__, exc)


def _dropped(exc: Exception) -> None:
    log.warning("dropped a message from the controller: %s: %s", type(exc).__name__, exc)


# The client's handler per kind it receives: a function of (session, message).
HANDLERS = {"result": Session.on_result, "output": Session.on_output, "error": Session.on_error,
            "batch": Session.on_batch, "event": Session.on_event, "hello_reply": Session.on_reply,
            "query_reply": Session.on_reply, "control_reply": Session.on_reply}
