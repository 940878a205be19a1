"""Processes layer: the engine process: register, then run tasks in the main thread until told
to stop (SIGTERM, a shutdown request, a lost controller) or the control thread fails.

A task is ``(f, args, kwargs)``. Its return value travels back pickled (large buffers out of
band); an exception travels back as text (class name, message, traceback) with the engine id.
SIGINT interrupts the running task (abort, timeout, Ctrl-C) and never the engine itself.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import sys
import traceback
from dataclasses import dataclass

from ipcluster import direct, errors, fingerprint, namespace, serialize, shm, transport
from ipcluster.connection import ConnectionInfo
from ipcluster.engine import shell
from ipcluster.engine.capture import Capture
from ipcluster.engine import watchdog
from ipcluster.engine.control import STOP, Control
from ipcluster.engine.watchdog import Watch
from ipcluster.errors import RemoteError, SerializationError, TaskAborted, TaskTimeout, UnmetDependency
from ipcluster.protocol import Result, Signer, encode, now, pack

log = logging.getLogger("ipcluster.engine")


@dataclass
class EngineOptions:
    register_timeout: float = 30.0  # seconds to wait for the controller to accept the engine
    controller_timeout: float = 60.0  # seconds of controller silence after which the engine exits
    beat_interval: float = 1.0  # seconds between beats to the controller
    kill_grace: float = 0.5  # seconds a task may run on after its time_limit interrupt before the
    # engine's watchdog reports TaskTimeout and ends it (to be restarted by its supervisor)


class Engine:
    def __init__(self, info: ConnectionInfo, options: EngineOptions, requested_id=None) -> None:
        self.signer = Signer(info.key_bytes)
        self.max_message_size = info.max_message_size
        self.watch = Watch()  # forked before any zmq context exists, as fork requires
        self.watchdog = watchdog.start(self.watch, info, self.signer, options.beat_interval)
        self.context = transport.Context(info.key_bytes)  # proves the key when it connects
        self.capture = Capture()
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.terminating = False
        self.control = Control(self.context, info, self.signer, self.capture, self.tasks,
                               options, self.watch, requested_id)
        self.running = self.control.running
        # code cells queued behind a cell that failed: aborted, as ipykernel's stop_on_error
        # aborts what waits behind an error (a notebook's "run all" stops at the first error)
        self.stopped_cells: set[str] = set()

    def _on_sigterm(self, signum, frame):
        self.terminating = True
        raise SystemExit(128 + signum)

    def _on_sigint(self, signum, frame):
        if self.running.task is not None:
            raise KeyboardInterrupt

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigint)
        self.control.start()
        try:
            self.control.registered.wait()
            if self.control.error:
                log.error("%s", self.control.error)
                return 1
            namespace.install(self.control.engine_id, shell.run_cell)
            log.info("registered as engine %d", self.control.engine_id)
            self.capture.install()
            while (item := self.control.next_task()) is not STOP:
                reply = self.run_task(*item)
                if reply is not None:  # None: withdrawn before it started
                    self.control.post(reply)
                    sys.stdout.flush()  # after the result is sent: nothing waits for it
        except SystemExit:
            log.info("engine %s stopping", self.control.engine_id)
        finally:
            self.control.stop()
            self.control.join(timeout=5)
            self.context.close(linger_ms=1000)
        if self.control.error:
            log.error("%s", self.control.error)
            return 1
        return 0

    def run_task(self, task_id: str, msg) -> list | None:
        """The reply's frames."""
        header = msg.header
        eid = self.control.engine_id
        started = now()
        if not self.running.claim(task_id):
            return None  # given back to the controller, which sends it elsewhere
        if task_id in self.control.aborted:
            self.control.aborted.discard(task_id)
            error = TaskAborted("TaskAborted", "aborted before it started", engine_id=eid)
            return self._reply(task_id, started, "error", pack(error.to_wire()))
        self.capture.task = task_id
        self.running.start(task_id, header.get("time_limit"))
        function, cell, status, unmet = None, False, "error", False
        behind_an_error = bool(self.stopped_cells) and task_id in self.stopped_cells
        if behind_an_error:
            self.stopped_cells.discard(task_id)
        try:
            try:
                if msg.buffers:  # hashed below, as received
                    msg.buffers = serialize.received(msg.buffers)
                f, args, kwargs = serialize.loads(msg.content, msg.buffers)
            except SerializationError as exc:
                msg.buffers = []  # not hashed: they could not be read
                raise SerializationError(unloadable(exc, eid)) from exc.__cause__
            cell = f is namespace.execute
            if cell and behind_an_error:
                self.running.finish()
                error = TaskAborted("TaskAborted", "aborted: a code cell queued before it on "
                                    "this engine failed", engine_id=eid)
                return self._reply(task_id, started, "error", pack(error.to_wire()))
            function = fingerprint.user_function(f, args)
            f, args, kwargs = namespace.resolve_call(f, args, kwargs)
            result = namespace.bind(f)(*args, **kwargs)
            self.running.finish()
            content, buffers = serialize.dumps_result(result)
            serialize.check_size(content, buffers, self.max_message_size, "the result")
            status = "ok"
        except BaseException as exc:  # the task's failure, reported to its client
            self.running.finish()
            if self.terminating:
                raise  # SIGTERM arrived during the task: stop the engine
            error = self._error(exc, eid, header.get("time_limit"))
            if cell:
                self.stopped_cells |= self.running.waiting()
            unmet = isinstance(exc, UnmetDependency)
            content, buffers = pack(error), []
        finally:
            self.capture.task = None
        prov = fingerprint.facts(function, msg.content, msg.buffers, content, buffers)
        return self._reply(task_id, started, status, content, buffers, header, unmet, prov)

    def _reply(self, task_id: str, started: float, status: str, content, buffers=(),
               request=None, unmet: bool = False, prov=None) -> list:
        """The frames of a task's result (`Result`), made as it ends."""
        control = self.control
        header = Result(task_id, control.engine_id, status, started, now(), unmet, prov,
                        control.uuid).header(control.ids())
        if not buffers:
            return encode(self.signer, header, content)
        shared = self._shared(request.get("shm_host")) if request else None
        if request and shared is None:
            buffers = self._direct(header, buffers, request.get("link"))
        return encode(self.signer, header, content, buffers, shared)

    def _direct(self, header: dict, buffers, peer) -> list:
        """The large buffers of a result to a client on another host go on its direct link
        (if it opened one, and the controller does not store results); returns what stays."""
        port = self.control.dataport
        if (not isinstance(peer, str) or port is None or self.control.durable
                or peer.encode() not in port.peers):
            return buffers
        kept, large = direct.split(header, buffers, shm.THRESHOLD)
        for fields, chunk in direct.chunks(large):
            data = {"kind": "data", "id": self.control.ids(), "parent": header["id"], **fields}
            self.control.post([b"data", peer.encode(), *encode(self.signer, data, b"", [chunk])])
        return kept

    def _shared(self, client):
        """Shared memory for a result to `client` (its identity) if it is on this host and the
        controller does not store results (which must be bytes, not names)."""
        host = self.control.shm
        reader = host.reader(client) if host is not None and not self.control.durable else None
        return (host, [reader]) if reader else None

    def _error(self, exc: BaseException, eid, time_limit) -> dict:
        if isinstance(exc, KeyboardInterrupt) and self.running.reason == "abort":
            return TaskAborted("TaskAborted", "aborted while running", engine_id=eid).to_wire()
        if isinstance(exc, KeyboardInterrupt) and self.running.reason == "timeout":
            return TaskTimeout("TaskTimeout", f"ran longer than its time_limit of {time_limit} s",
                               engine_id=eid).to_wire()
        if isinstance(exc, RemoteError):  # raised as such on purpose (e.g. UnmetDependency)
            return exc.to_wire()
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # hide run_task's frame
        return errors.describe(exc, eid, "".join(traceback.format_exception(type(exc), exc, tb)))


def run(info: ConnectionInfo, options: EngineOptions, requested_id=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    return Engine(info, options, requested_id).run()


def log_file() -> str | None:
    """The file this process's output goes to, when it is one (a launcher's log)."""
    try:
        target = os.readlink("/proc/self/fd/1")
    except OSError:
        return None
    return target if os.path.isfile(target) else None


def unloadable(exc: SerializationError, eid) -> str:
    """Why this engine cannot unpickle a task's function or arguments, and how to fix it: the
    usual cause is a module importable where the client runs, not where the engine does."""
    cause = exc.__cause__
    log = log_file()
    where = (f"engine {eid} (pid {os.getpid()} on {socket.gethostname()}, working directory "
             f"{os.getcwd()}, python {sys.executable}{f', log {log}' if log else ''})")
    if not isinstance(cause, ModuleNotFoundError):
        return f"{where} cannot unpickle the task's function or arguments: {cause or exc}"
    name = cause.name or "?"
    return (f"{where} cannot unpickle the task's function or arguments: module {name!r} is not "
            f"importable on the engine. Either start the engines from the directory that holds "
            f"{name} (they import from their working directory), or add that directory on them "
            f"(rc[:].execute(\"import sys; sys.path.insert(0, '/path/to/dir')\"), then "
            f"`with rc[:].sync_imports(): import {name}`), or send the module's code with its "
            f"functions (cloudpickle.register_pickle_by_value({name}) in the client), or install "
            f"{name} where the engines run")
