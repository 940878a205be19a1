"""Processes layer: the controller: its sockets, its one loop, and what its handlers use to
send and schedule (the handlers per kind: `client_messages.py`, `engine_messages.py`).

    clients ── DEALER ──▶ client ROUTER ─┐                  ┌─ engine ROUTER ◀── DEALER ── engines
                                         ├─ Controller.serve ┤
    clients ◀── SUB ───── PUB (events) ──┘   registry        └─ results and output of a task go
                                             scheduler          back on the client ROUTER to the
                                             ledger             client that asked, in order

- It routes by header only: a request's frames are forwarded to engines exactly as received
  (``copy=False``), never unpickled, so a request to N engines is serialized once by the client.
- Every message is checked before anything else: signature, then a replay window of message
  ids (and, from clients and engines, the time it was sent). A message that fails is dropped
  and counted; a signed request it cannot accept is answered with an ``error``.
- Engines register and get an id in the reply; an engine is usable from that moment.
- An engine is alive while it is heard from (its control thread beats every second); one silent
  for `engine_timeout` is dropped and its tasks fail with `EngineError`.
- The controller publishes a beat with the engine ids every `beat_interval`, so clients notice
  new engines and a controller that is gone.
- Within one turn of the loop, the buffer-less results and output for one client, and the
  buffer-less tasks for one engine, are held and sent as one ``batch`` message (`outbox.py`)
  when the turn's messages are handled; anything else sent to that peer sends them first, so
  each peer gets everything in the order it was sent. A ``batch`` from a client (requests) or
  an engine (results) is unwrapped, and each message in it handled as if it came alone.
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import time
from collections import Counter

from ipcluster import batch, connection, shm, transport
from ipcluster.controller import client_messages, engine_messages, liveness, memory, recovery
from ipcluster.controller.provenance import Provenance
from ipcluster.controller.watch import Watch
from ipcluster.controller.outbox import Outbox
from ipcluster.controller.ledger import Ledger, Task, Undelivered
from ipcluster.controller.reader import Reader
from ipcluster.controller.registry import Engine, Registry
from ipcluster.controller.graph import Graph
from ipcluster.controller.scheduler import Pending, make_scheduler
from ipcluster.errors import EngineError, ImpossibleDependency, RemoteError, TaskTimeout
from ipcluster.protocol import (
    BadMessage, Drops, Ids, Replay, Result, Signer, decode, encode, kinds_for, pack,
)

log = logging.getLogger("ipcluster.controller")

EVENT_TOPIC = b"ev"
TRIM_INTERVAL = 5.0  # seconds between two malloc_trim calls (see controller/memory.py)
DRAIN = 1000  # messages read from one socket before the others get a turn
CLIENT_KINDS = kinds_for("controller", "client")
ENGINE_KINDS = kinds_for("controller", "engine")


def _url(bound: str, location: str) -> str:
    return f"tcp://{location}:{bound.rsplit(':', 1)[1]}"


class Controller:
    def __init__(self, cluster_id: str, options, key: str, curve_public: str = "",
                 curve_secret: str = "", ports=(None, None, None), store=None) -> None:
        self.options = options
        self.cluster_id = cluster_id
        # admits only peers with the key; engines' connections have an I/O thread of their own,
        # so that thousands of them connecting and beating do not delay clients' messages
        self.context = transport.Context(bytes.fromhex(key), io_threads=2)
        curve = curve_secret or None
        self.clients, client_url = self.context.router(
            options.ip, curve, options.max_message_size, ports[0])
        self.engines, engine_url = self.context.router(
            options.ip, curve, options.max_message_size, ports[1], io_thread=1,
            heartbeat=None)  # no timer per engine in libzmq (see transport.router)
        self.pub, pub_url = self.context.publisher(options.ip, curve, ports[2])
        location = options.location or (
            socket.gethostname() if options.ip in ("0.0.0.0", "*", "::") else options.ip)
        self.info = connection.ConnectionInfo(
            cluster_id, _url(client_url, location), _url(engine_url, location),
            _url(pub_url, location), key, os.getpid(), curve_public, curve_secret,
            options.max_message_size)
        self.signer = Signer(bytes.fromhex(key))
        self.replay = Replay(options.replay_window)
        self.ids = Ids()
        self.registry = Registry()
        self.scheduler = make_scheduler(options.scheme, options.hwm)
        self.graph = Graph()  # tasks waiting for others (after / follow)
        self.deadlines: list[tuple[float, str]] = []  # heap: when waiting tasks' timeouts run out
        self.ledger = Ledger(options.max_results, options.max_result_bytes, store,
                             options.max_task_output)
        self.reader = Reader(self.context, f"reader-{self.ids.session}")  # store reads
        self._store_problem: str | None = None  # as last published
        self.undelivered = Undelivered()  # per client: what it missed while away
        self.stopping = False  # set by a client's shutdown(hub=True)
        self.restored = False  # took over from a controller that died
        self.dropped = Drops(log)  # messages dropped as bad (unsigned, forged, replayed, malformed)
        self.received: Counter = Counter()  # accepted messages by kind: a machine-free cost measure
        self.received_from: dict[bytes, Counter] = {}  # ... by client (the last 1000 clients)
        self.traffic: Counter = Counter()  # messages and frames in and out (not events)
        self.outbox = Outbox(self.signer, self.ids, self.traffic, self._lost)  # batches in `serve`
        self._next_beat = 0.0
        self.caught_up = time.monotonic()  # when nothing from engines was left unread
        self._next_trim = 0.0
        self.watch = Watch()  # dashboards watching task events; empty: nothing is sent
        self.provenance = Provenance(store)  # what ran where: engine environments, task facts
        self.repacker = memory.Repacker([self.replay, self.graph])  # after a surge
        self._unbatching = False  # handling the messages of a batch: `dispatch` once after
        self._dispatch_due = False

    # -- the loop ---------------------------------------------------------------------------

    def serve(self, should_stop) -> None:
        poller = transport.Poller(self.clients, self.engines, self.reader.inbox)
        self.outbox.batching = True
        try:
            self._serve(poller, should_stop)
        finally:
            self.outbox.batching = False
            self.outbox.flush()

    def _serve(self, poller, should_stop) -> None:
        while not should_stop() and not self.stopping:
            movable = self.scheduler.movable()
            beat = self.options.beat_interval / 2
            wait = min(recovery.STALL, beat) if movable else beat
            if self.deadlines:
                wait = min(wait, max(0.0, self.deadlines[0][0] - time.monotonic()))
            ready = poller.poll(wait)
            polled = time.monotonic()
            if self.engines in ready:  # (the poll saw a message: received without asking)
                taken = transport.take(self.engines, DRAIN, expected=True)
                for frames in taken:
                    self._handle(self.engines, frames, ENGINE_KINDS)
                self.outbox.flush()  # results to their clients, and the tasks they freed room for
                if len(taken) < DRAIN:  # nothing left unread: what engines sent by then is in
                    self.caught_up = polled
            else:
                self.caught_up = polled
            if self.clients in ready:
                for frames in transport.take(self.clients, DRAIN, expected=True):
                    self._handle(self.clients, frames, CLIENT_KINDS)
            if self.reader.inbox in ready:
                self.reader.finish_ready()
            now = time.monotonic()
            if self.deadlines and self.deadlines[0][0] <= now:
                self._expire(now)
            if movable:
                recovery.rebalance(self, now)
            store = self.ledger.store  # its problem is told at once, not at the next beat
            if now >= self._next_beat or store is not None and self._store_problem != store.problem:
                self._next_beat = now + self.options.beat_interval
                self._store_problem = self.store_problem()
                # the registry's version, not its ids (O(1)): a client that missed an
                # engine_up or engine_down sees its version differ and asks for the ids
                self.publish({"event": "beat", "engines": self.registry.version,
                              "store": self._store_problem})
                liveness.check(self, self.caught_up)
                for client in self.undelivered.forget_gone(now - self.options.forget_clients_after):
                    self.received_from.pop(client, None)  # gone: its counts would pin memory
                if now >= self._next_trim:  # what a surge freed goes back to the system
                    self._next_trim = now + TRIM_INTERVAL
                    self.repacker.tick(self.traffic["messages_in"] + self.dropped.count
                                       + self.ledger.forgotten)
                    memory.trim()
            if self.watch:
                self.watch.tick(self, now)
            self.outbox.flush()

    def close(self) -> None:
        self.reader.close()
        self.context.close(linger_ms=200)

    def store_problem(self) -> str | None:
        """Why the durable store is not writing, or None: every client is told, in each beat."""
        return None if self.ledger.store is None else self.ledger.store.problem

    def _handle(self, sock, frames: list, allowed: set) -> None:
        try:
            msg = decode(self.signer, frames, self.replay, self.options.max_age)
        except BadMessage as exc:
            self.dropped(exc)  # unsigned, forged or replayed: never answered
            return
        self.traffic["frames_in"] += len(frames)
        if msg.kind != batch.KIND:
            self._accept(sock, msg, allowed)
            return
        try:  # several messages of one peer, signed once: each handled as if it came alone
            items = batch.unbatch(msg, self.replay, self.dropped)
        except BadMessage as exc:
            self.dropped(exc)
            return
        self.traffic["batches_in"] += 1
        try:
            for item in items:
                # a run of results and load-balanced requests: the tasks they free room for or
                # queue are sent once, after it; anything else (a direct request takes a slot
                # of its engine) comes after what they sent, as if each had come alone
                self._unbatching = item.kind == "result" or (
                    item.kind == "apply" and item.header.get("balanced") is True)
                if self._dispatch_due and not self._unbatching:
                    self.dispatch()
                self._accept(sock, item, allowed)
        finally:
            self._unbatching = False
        if self._dispatch_due:
            self.dispatch()

    def _accept(self, sock, msg, allowed: set) -> None:
        """Handle one message whose signature and id were checked."""
        kind = msg.kind
        try:
            if kind not in allowed:
                raise BadMessage(f"{kind!r} is not accepted on this socket")
            self.received[kind] += 1
            self.traffic["messages_in"] += 1
            if sock is self.clients:
                self._count_from(msg.route[0], kind)
                if self.undelivered.by_client:  # it is back: catch it up
                    self.undelivered.flush(self._to_client, msg.route[0])
            HANDLERS[kind](self, msg)
        except Exception as exc:  # a signed request we cannot accept: say so, keep serving
            self.dropped(exc)
            if sock is self.clients and msg.route:
                tasks = msg.header.get("tasks")
                self.reply(sock, msg, "error", {
                    "ename": type(exc).__name__, "evalue": str(exc),
                    "tasks": [t for t in tasks if isinstance(t, str)] if isinstance(tasks, list) else []})

    # -- sending ----------------------------------------------------------------------------

    def _count_from(self, client: bytes, kind: str) -> None:
        counts = self.received_from.get(client)
        if counts is None:
            if len(self.received_from) >= 1000:
                self.received_from.pop(next(iter(self.received_from)))
            counts = self.received_from[client] = Counter()
        counts[kind] += 1

    def _lost(self, sock, identity: bytes, messages: list) -> None:
        """What a held batch could not deliver: a client's results and output are kept, in
        order, until it is back; an engine's tasks go elsewhere with the engine dropped."""
        if sock is self.clients:
            for frames in messages:
                self.undelivered.send(_unsent, identity, frames)
        elif (engine := self.registry.by_identity.get(identity)) is not None:
            self.drop_engine(engine, "its connection is gone")

    def reply(self, sock, msg, kind: str, content: dict) -> None:
        header = {"kind": kind, "id": self.ids(), "parent": msg.header.get("id")}
        self.outbox.send(sock, msg.route[0], encode(self.signer, header, pack(content)))

    def publish(self, content: dict) -> None:
        header = {"kind": "event", "id": self.ids()}
        transport.send(self.pub, [EVENT_TOPIC, *encode(self.signer, header, pack(content))])

    def fail(self, task: Task, error: RemoteError) -> None:
        """Finish `task` with an error made here (no such engine, engine died, aborted...)."""
        header = Result(task.id, task.engine, "error", completed=time.time()).header(self.ids())
        content = pack(error.to_wire())
        frames = encode(self.signer, header, content)
        self.ledger.finish(task, frames, "error", None)
        if self.watch:
            self.watch.finished(task, header, content)
        self.forward(task, frames)
        self.settle(self.graph.finished(task.id, False, task.engine))

    def wait_at_most(self, task: Task) -> None:
        """`task` starts to wait (for its dependencies, or an engine it may run on): with a
        `timeout`, it fails with TaskTimeout if it has not started `timeout` s from now."""
        if task.timeout:
            task.waits_until = time.monotonic() + task.timeout
            heapq.heappush(self.deadlines, (task.waits_until, task.id))

    def _expire(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            at, task_id = heapq.heappop(self.deadlines)
            task = self.ledger.get(task_id)
            if (task is None or task.result is not None or task.engine is not None
                    or task.waits_until != at):
                continue  # it started, or ended, or waits again with a later deadline
            self.scheduler.remove(task_id)
            self.fail(task, TaskTimeout("TaskTimeout", (
                f"not started within its timeout of {task.timeout} s (waiting for its "
                f"dependencies, or for an engine it may run on)")))

    def send_task(self, task: Task, engine: Engine, frames: list) -> None:
        if not engine.tasks:
            engine.progressed = time.monotonic()
        task.engine = engine.id
        engine.tasks[task.id] = task.balanced
        if self.ledger.store is not None:
            self.ledger.store.sent(task)
        if not self.outbox.post(self.engines, engine.identity, frames):
            self.drop_engine(engine, "its connection is gone")

    def send_control(self, engine: Engine, request: dict) -> None:
        header = {"kind": "control", "id": self.ids()}
        self.outbox.send(self.engines, engine.identity, encode(self.signer, header, pack(request)))

    def _to_client(self, client: bytes, frames: list) -> bool:
        return self.outbox.post(self.clients, client, frames)

    def deliver(self, client: bytes, frames: list) -> None:
        """Result or output frames (from the delimiter on) to `client`; if it is away, they are kept
        and sent when its next message arrives. Each is sent once: a client that was away
        asks, when back, for results it still lacks (the `sync` action)."""
        self.undelivered.send(self._to_client, client, frames)

    def forward(self, task: Task, frames: list) -> None:
        """Result or output frames of `task` to its client and every client waiting for it."""
        for client in task.watchers if task.held else (task.client, *task.watchers):
            self.deliver(client, frames)

    # -- scheduling ---------------------------------------------------------------------

    def release(self, task: Task, allowed) -> None:
        """Queue a balanced task whose dependencies are met; `allowed`: engines it must follow
        to (None: any)."""
        targets = allowed if task.targets is None else (
            task.targets if allowed is None else task.targets & allowed)
        if targets is not None and not targets:
            self.fail(task, ImpossibleDependency(
                "ImpossibleDependency", f"the tasks it follows ran on {sorted(allowed)}, outside "
                f"its targets {sorted(task.targets)}"))
            return
        self.scheduler.submit(Pending(task.id, targets, task.request, task.priority))

    def settle(self, events: list) -> None:
        """Tasks the dependency graph released, or found can never run."""
        for task_id, state, detail in events:
            task = self.ledger.get(task_id)
            if task is None or task.result is not None:
                continue
            if state == "ready":
                self.release(task, detail)
            else:
                self.fail(task, ImpossibleDependency("ImpossibleDependency", detail))
        if events:
            self.dispatch()

    def dispatch(self) -> None:
        """Send the queued tasks that can go now (within a batch received, once after it)."""
        if self._unbatching:
            self._dispatch_due = True
            return
        self._dispatch_due = False
        for pending, eid in self.scheduler.ready():
            task = self.ledger.get(pending.task_id)
            engine = self.registry.by_id.get(eid)
            if task is None or task.result is not None:
                self.scheduler.finished(eid)  # the slot it was given is free again
            elif engine is None:  # dropped earlier in this round: its send failed
                self.put_back(task, pending)
            else:
                task.allowed = pending.targets  # kept for a copy given back (recovery.requeue)
                self.send_task(task, engine, pending.payload)

    def put_back(self, task: Task, pending: Pending) -> None:
        """Queue again a task the scheduler gave to an engine that left before it was sent
        (the engine never saw it); fail it if no engine it may run on is left."""
        if pending.targets is None or pending.targets & set(self.registry.by_id):
            self.wait_at_most(task)
            self.scheduler.submit(pending)
        elif not recovery.widen(self, task, pending):
            self.fail(task, ImpossibleDependency(
                "ImpossibleDependency", f"the engines it may run on left; no registered engine "
                f"in {sorted(pending.targets)} may run it"))

    def drop_engine(self, engine: Engine, reason: str) -> None:
        if self.registry.by_id.get(engine.id) is not engine:
            return
        log.warning("engine %d (pid %d on %s) removed: %s", engine.id, engine.pid, engine.host, reason)
        self.registry.remove(engine, dead=reason.startswith("silent"))
        shm.drop_held(self.info.key_bytes, engine.shm)  # what it mapped, if killed holding it
        self.settle(self.graph.engine_gone(engine.id))
        for pending in self.scheduler.remove_engine(engine.id):
            task = self.ledger.get(pending.task_id)
            if task is not None and task.result is None and not recovery.widen(self, task, pending):
                self.fail(task, ImpossibleDependency(
                    "ImpossibleDependency", f"engine {engine.id} left; no registered engine in "
                    f"{sorted(pending.targets)} may run it"))
        for task_id in sorted(engine.tasks):
            task = self.ledger.get(task_id)
            if task is not None and task.result is None and not recovery.retry(self, task, engine.id):
                self.fail(task, EngineError(
                    "EngineError", f"engine {engine.id} (pid {engine.pid} on {engine.host}) "
                    f"stopped before finishing this task: {reason}", engine_id=engine.id))
        self.publish({"event": "engine_down", "id": engine.id, "version": self.registry.version})
        self.dispatch()  # retried tasks go to the engines left


def _unsent(client: bytes, frames: list) -> bool:
    return False  # a held message its batch could not deliver: `Undelivered` keeps it


# The controller's handler per kind it receives: a function of (controller, message).
HANDLERS = {**client_messages.HANDLERS, **engine_messages.HANDLERS}
