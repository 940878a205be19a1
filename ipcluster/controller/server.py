"""Processes layer: the controller process: its sockets, its one loop, and a handler per kind.

    clients ── DEALER ──▶ client ROUTER ─┐                  ┌─ engine ROUTER ◀── DEALER ── engines
                                         ├─ Controller.serve ┤
    clients ◀── SUB ───── PUB (events) ──┘   registry        └─ results and output of a task go
                                             scheduler          back on the client ROUTER to the
                                             ledger             client that asked, in order

- It routes by header only: a request's frames are forwarded to engines exactly as received
  (``copy=False``), never unpickled, so a request to N engines is serialized once by the client.
- Engines register and get an id in the reply; an engine is usable from that moment.
- An engine is alive while it is heard from (its control thread beats every second); one silent
  for `engine_timeout` is dropped and its tasks fail with `EngineError`.
- The controller publishes a beat with the engine ids every `beat_interval`, so clients notice
  new engines and a controller that is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ipcluster import connection, transport
from ipcluster.controller.ledger import Ledger, Task
from ipcluster.controller.registry import Engine, Registry
from ipcluster.controller.scheduler import LeastLoad, Pending
from ipcluster.errors import (
    EngineError, ImpossibleDependency, NoSuchEngine, RemoteError, TaskAborted,
)
from ipcluster.protocol import DELIM, BadMessage, Ids, Signer, decode, encode, pack, unpack

log = logging.getLogger("ipcluster.controller")

EVENT_TOPIC = b"ev"
CLIENT_KINDS = {"hello", "query", "apply", "control"}
ENGINE_KINDS = {"register", "unregister", "beat", "result", "output"}


@dataclass
class ControllerOptions:
    ip: str = "127.0.0.1"  # address to bind: loopback unless told otherwise
    hwm: int = 2  # most load-balanced tasks waiting on one engine (0: no limit)
    engine_timeout: float = 5.0  # seconds an engine may be silent before it is declared dead
    beat_interval: float = 1.0  # seconds between the controller's published beats
    max_results: int = 100_000  # finished results kept for get_result; the oldest go first
    max_result_bytes: int = 1 << 30  # ... and at most this many bytes of them


class Controller:
    def __init__(self, cluster_id: str, options: ControllerOptions, key: str) -> None:
        self.options = options
        self.cluster_id = cluster_id
        self.context = transport.Context()
        self.clients, client_url = self.context.router(options.ip)
        self.engines, engine_url = self.context.router(options.ip)
        self.pub, pub_url = self.context.publisher(options.ip)
        self.info = connection.ConnectionInfo(
            cluster_id, client_url, engine_url, pub_url, key, os.getpid()
        )
        self.signer = Signer(bytes.fromhex(key))
        self.ids = Ids()
        self.registry = Registry()
        self.scheduler = LeastLoad(options.hwm)
        self.ledger = Ledger(options.max_results, options.max_result_bytes)
        self.stopping = False  # set by a client's shutdown(hub=True)
        self.dropped = 0  # messages dropped as bad (unsigned, malformed, misdirected)
        self._next_beat = 0.0

    # -- the loop ---------------------------------------------------------------------------

    def serve(self, should_stop) -> None:
        poller = transport.Poller(self.clients, self.engines)
        while not should_stop() and not self.stopping:
            ready = poller.poll(self.options.beat_interval / 2)
            if self.engines in ready:
                for frames in transport.drain(self.engines):
                    self._handle(frames, ENGINE_KINDS)
            if self.clients in ready:
                for frames in transport.drain(self.clients):
                    self._handle(frames, CLIENT_KINDS)
            now = time.monotonic()
            if now >= self._next_beat:
                self._next_beat = now + self.options.beat_interval
                self._publish({"event": "beat", "ids": self.registry.ids()})
                for engine in self.registry.silent_since(now - self.options.engine_timeout):
                    self._drop_engine(engine, f"silent for more than {self.options.engine_timeout} s")

    def close(self) -> None:
        self.context.close(linger_ms=200)

    def _handle(self, frames: list, allowed: set) -> None:
        try:
            msg = decode(self.signer, frames)
            if msg.kind not in allowed:
                raise BadMessage(f"{msg.kind!r} is not accepted on this socket")
            getattr(self, f"on_{msg.kind}")(msg)
        except BadMessage as exc:
            self.dropped += 1
            log.warning("dropped a message: %s", exc)
        except Exception:
            self.dropped += 1
            log.exception("error handling a message; dropped it")

    # -- sending ----------------------------------------------------------------------------

    def _send(self, sock, identity: bytes, frames: list) -> bool:
        try:
            transport.send(sock, [identity, *frames])
            return True
        except transport.ZMQError as exc:
            if not transport.is_unreachable(exc):
                raise
            log.info("peer %r is gone; message not delivered", identity)
            return False

    def _reply(self, sock, msg, kind: str, content: dict) -> None:
        header = {"kind": kind, "id": self.ids(), "parent": msg.header.get("id")}
        self._send(sock, msg.route[0], encode(self.signer, header, pack(content)))

    def _publish(self, content: dict) -> None:
        header = {"kind": "event", "id": self.ids()}
        transport.send(self.pub, [EVENT_TOPIC, *encode(self.signer, header, pack(content))])

    def _fail(self, task: Task, error: RemoteError) -> None:
        """Finish `task` with an error made here (no such engine, engine died, aborted...)."""
        header = {"kind": "result", "id": self.ids(), "parent": task.id, "status": "error",
                  "engine": task.engine, "completed": time.time()}
        frames = encode(self.signer, header, pack(error.to_wire()))[1:]
        self.ledger.finish(task, frames, "error", None)
        self._forward(task, frames)

    def _send_task(self, task: Task, engine: Engine, frames: list) -> None:
        task.engine = engine.id
        engine.tasks[task.id] = task.balanced
        if not self._send(self.engines, engine.identity, [DELIM, *frames]):
            self._drop_engine(engine, "its connection is gone")

    def _send_control(self, engine: Engine, request: dict) -> None:
        header = {"kind": "control", "id": self.ids()}
        self._send(self.engines, engine.identity, encode(self.signer, header, pack(request)))

    def _forward(self, task: Task, frames: list) -> None:
        """Result or output frames of `task` to its client and every client waiting for it."""
        for client in (task.client, *task.watchers):
            self._send(self.clients, client, [DELIM, *frames])

    # -- client messages --------------------------------------------------------------------

    def on_hello(self, msg) -> None:
        self._reply(self.clients, msg, "hello_reply", {
            "ids": self.registry.ids(), "cluster_id": self.cluster_id,
            "beat_interval": self.options.beat_interval,
        })

    def on_query(self, msg) -> None:
        request = unpack(msg.content) or {}
        targets = request.get("targets")
        engines = [e for e in self.registry.by_id.values() if targets is None or e.id in targets]
        verbose = bool(request.get("verbose"))
        self._reply(self.clients, msg, "query_reply", {
            "ids": self.registry.ids(),
            "engines": {e.id: e.info() for e in engines},
            "status": {e.id: e.status(verbose) for e in engines},
            "unassigned": [p.task_id for p in self.scheduler.pending] if verbose
            else len(self.scheduler.pending),
            "tasks": self.ledger.open(),
        })

    def on_apply(self, msg) -> None:
        header = msg.header
        client = msg.route[0]
        tasks, targets = header.get("tasks"), header.get("targets")
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise BadMessage("apply: 'tasks' must be a list of task ids")
        if targets is not None and (
            not isinstance(targets, list) or not all(isinstance(t, int) for t in targets)
        ):
            raise BadMessage("apply: 'targets' must be a list of engine ids or null")
        label = header.get("label") if isinstance(header.get("label"), str) else None
        if header.get("balanced"):
            if len(tasks) != 1:
                raise BadMessage("apply: a load-balanced request carries exactly one task id")
            allowed = None if targets is None else frozenset(targets)
            task = Task(tasks[0], client, balanced=True, targets=allowed, label=label,
                        request=msg.frames)
            self.ledger.add(task)
            if allowed is not None and not allowed & set(self.registry.by_id):
                self._fail(task, NoSuchEngine(
                    "NoSuchEngine", f"none of the engines {sorted(allowed)} is registered; "
                    f"registered engines: {self.registry.ids()}"))
                return
            self.scheduler.submit(Pending(task.id, allowed, msg.frames))
            self._dispatch()
            return
        if targets is None or len(targets) != len(tasks):
            raise BadMessage("apply: a direct request needs one task id per target")
        for task_id, eid in zip(tasks, targets):
            task = Task(task_id, client, label=label)
            self.ledger.add(task)
            engine = self.registry.by_id.get(eid)
            if engine is None:
                self._fail(task, NoSuchEngine(
                    "NoSuchEngine", f"no engine with id {eid}; registered engines: "
                    f"{self.registry.ids()}", engine_id=eid))
                continue
            self.scheduler.started(eid)
            self._send_task(task, engine, msg.frames)

    def _dispatch(self) -> None:
        for pending, eid in self.scheduler.ready():
            task = self.ledger.get(pending.task_id)
            if task is not None and task.result is None:
                self._send_task(task, self.registry.by_id[eid], pending.payload)

    def on_control(self, msg) -> None:
        request = unpack(msg.content) or {}
        action = request.get("action")
        handler = getattr(self, f"control_{action}", None) if isinstance(action, str) else None
        if handler is None:
            raise BadMessage(f"control: unknown action {action!r}")
        self._reply(self.clients, msg, "control_reply", handler(msg.route[0], request) or {})

    def _engines_of(self, request: dict) -> list[Engine]:
        targets = request.get("targets")
        if targets is None or targets == "all":
            return list(self.registry.by_id.values())
        return [self.registry.by_id[t] for t in targets if t in self.registry.by_id]

    def control_abort(self, client: bytes, request: dict) -> dict:
        by_engine: dict[int, list[str]] = {}
        aborted = []
        for task_id in request.get("tasks", []):
            task = self.ledger.get(task_id)
            if task is None or task.result is not None:
                continue
            if task.engine is None:
                self.scheduler.remove(task.id)
                self._fail(task, TaskAborted("TaskAborted", "aborted before it started"))
            else:
                by_engine.setdefault(task.engine, []).append(task.id)
            aborted.append(task_id)
        for eid, ids in by_engine.items():
            if eid in self.registry.by_id:
                self._send_control(self.registry.by_id[eid], {"action": "abort", "tasks": ids})
        return {"aborted": aborted}

    def control_signal(self, client: bytes, request: dict) -> dict:
        engines = self._engines_of(request)
        for engine in engines:
            self._send_control(engine, {"action": "signal", "signal": int(request.get("signal", 2))})
        return {"engines": [e.id for e in engines]}

    def control_shutdown(self, client: bytes, request: dict) -> dict:
        engines = self._engines_of(request)
        for engine in engines:
            self._send_control(engine, {"action": "shutdown"})
        if request.get("hub"):
            log.info("shutdown of the controller requested by a client")
            self.stopping = True
        return {"engines": [e.id for e in engines]}

    def control_fetch(self, client: bytes, request: dict) -> dict:
        """Send finished results to `client`; have unfinished ones sent when they finish."""
        missing = []
        for task_id in request.get("tasks", []):
            task = self.ledger.get(task_id)
            if task is None:
                missing.append(task_id)
            elif task.result is None:
                task.watchers.add(client)
            else:
                for name in ("stdout", "stderr"):
                    if getattr(task, name):
                        header = {"kind": "output", "id": self.ids(), "parent": task.id,
                                  "engine": task.engine}
                        content = pack({"name": name, "text": getattr(task, name)})
                        self._send(self.clients, client, encode(self.signer, header, content))
                self._send(self.clients, client, [DELIM, *task.result])
        return {"missing": missing}

    def control_purge(self, client: bytes, request: dict) -> dict:
        ids = request.get("tasks")
        ids = self.ledger.finished_ids() if ids == "all" else ids or []
        for task_id in ids:
            self.ledger.forget(task_id)
        return {"purged": len(ids)}

    def control_history(self, client: bytes, request: dict) -> dict:
        return {"tasks": [t.summary() for t in self.ledger.tasks.values()]}

    # -- engine messages --------------------------------------------------------------------

    def _engine(self, msg) -> Engine | None:
        engine = self.registry.by_identity.get(msg.route[0])
        if engine is not None:
            engine.last_seen = time.monotonic()
        return engine

    def on_register(self, msg) -> None:
        info = unpack(msg.content) or {}
        if msg.route[0] in self.registry.by_identity:
            raise BadMessage("register: this engine is registered already")
        engine = self.registry.add(
            msg.route[0], int(info.get("pid", 0)), str(info.get("host", "?")), info.get("id")
        )
        self.scheduler.add_engine(engine.id)
        self._reply(self.engines, msg, "register_reply", {"id": engine.id})
        log.info("engine %d registered (pid %d on %s)", engine.id, engine.pid, engine.host)
        self._publish({"event": "engine_up", "id": engine.id, "ids": self.registry.ids()})
        self._dispatch()

    def on_unregister(self, msg) -> None:
        engine = self._engine(msg)
        if engine is not None:
            self._drop_engine(engine, "it shut down")

    def on_beat(self, msg) -> None:
        if self._engine(msg) is not None:  # an engine we dropped hears nothing, and exits
            header = {"kind": "beat", "id": self.ids()}
            self._send(self.engines, msg.route[0], encode(self.signer, header))

    def on_result(self, msg) -> None:
        engine = self._engine(msg)
        task = self.ledger.get(msg.header.get("parent"))
        if task is None or engine is None or task.result is not None or task.engine != engine.id:
            raise BadMessage(f"result for unknown task {msg.header.get('parent')!r}")
        engine.tasks.pop(task.id, None)
        engine.completed += 1
        self.scheduler.finished(engine.id)
        if msg.header.get("unmet") and task.balanced and self._move(task, engine, msg):
            self._dispatch()
            return
        self.ledger.finish(task, msg.frames, str(msg.header.get("status")), msg.header.get("completed"))
        self._forward(task, msg.frames)
        self._dispatch()

    def _move(self, task: Task, engine: Engine, msg) -> bool:
        """Send a task whose dependency was unmet on `engine` to an engine not yet tried."""
        task.tried.add(engine.id)
        allowed = set(self.registry.by_id) if task.targets is None else set(task.targets)
        untried = frozenset(allowed - task.tried)
        task.engine = None
        if untried:
            self.scheduler.submit(Pending(task.id, untried, task.request))
            return True
        reason = (unpack(msg.content) or {}).get("evalue", "")  # errors are msgpack, never pickle
        self._fail(task, ImpossibleDependency(
            "ImpossibleDependency", f"no engine meets the task's dependencies (tried engines "
            f"{sorted(task.tried)}); the last said: {reason}"))
        return True

    def on_output(self, msg) -> None:
        self._engine(msg)
        task = self.ledger.get(msg.header.get("parent"))
        if task is not None and task.result is None:
            out = unpack(msg.content) or {}
            if out.get("name") in ("stdout", "stderr") and isinstance(out.get("text"), str):
                setattr(task, out["name"], getattr(task, out["name"]) + out["text"])
            self._forward(task, msg.frames)

    def _drop_engine(self, engine: Engine, reason: str) -> None:
        if self.registry.by_id.get(engine.id) is not engine:
            return
        log.warning("engine %d (pid %d on %s) removed: %s", engine.id, engine.pid, engine.host, reason)
        self.registry.remove(engine)
        self.scheduler.remove_engine(engine.id)
        for task_id in sorted(engine.tasks):
            task = self.ledger.get(task_id)
            if task is not None and task.result is None:
                self._fail(task, EngineError(
                    "EngineError", f"engine {engine.id} (pid {engine.pid} on {engine.host}) "
                    f"stopped before finishing this task: {reason}", engine_id=engine.id))
        self._publish({"event": "engine_down", "id": engine.id, "ids": self.registry.ids()})


def run(cluster_id: str, options: ControllerOptions, connection_file: Path) -> None:
    """Run a controller until SIGTERM or SIGINT, with its connection file written meanwhile."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    controller = Controller(cluster_id, options, connection.new_key())
    connection.write(connection_file, controller.info)
    log.info("controller of cluster %r on %s (pid %d, host %s)", cluster_id,
             controller.info.client_url, os.getpid(), socket.gethostname())
    try:
        controller.serve(lambda: bool(stop))
    finally:
        try:
            if connection.read(connection_file).controller_pid == os.getpid():
                connection_file.unlink()
        except Exception:
            pass
        controller.close()
        log.info("controller stopped")
