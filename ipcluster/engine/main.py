"""Processes layer: the engine process: register, then run tasks in the main thread until told
to stop (SIGTERM, a lost controller) or the control thread fails.

A task is ``(f, args, kwargs)``. Its return value travels back pickled (large buffers out of
band); an exception travels back as text (class name, message, traceback) with the engine id.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import time
import traceback
from dataclasses import dataclass

from ipcluster import serialize, transport
from ipcluster.connection import ConnectionInfo
from ipcluster.engine import namespace
from ipcluster.engine.capture import Capture
from ipcluster.engine.control import RESULTS, STOP, Control
from ipcluster.protocol import Signer, encode, now, pack

log = logging.getLogger("ipcluster.engine")


@dataclass
class EngineOptions:
    register_timeout: float = 30.0  # seconds to wait for the controller to accept the engine
    controller_timeout: float = 60.0  # seconds of controller silence after which the engine exits
    beat_interval: float = 1.0  # seconds between beats to the controller


class Engine:
    def __init__(self, info: ConnectionInfo, options: EngineOptions, requested_id=None) -> None:
        self.signer = Signer(info.key_bytes)
        self.context = transport.Context()
        self.capture = Capture()
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.terminating = False
        self.control = Control(self.context, info, self.signer, self.capture, self.tasks,
                               options, requested_id)

    def run(self) -> int:
        namespace.install()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.control.start()
        try:
            self.control.registered.wait()
            if self.control.error:
                log.error("%s", self.control.error)
                return 1
            log.info("registered as engine %d", self.control.engine_id)
            self.capture.install()
            outbox = self.context.outbox(RESULTS)
            while True:
                try:
                    msg = self.tasks.get()
                except KeyboardInterrupt:  # SIGINT meant for a task that had already finished
                    continue
                if msg is STOP:
                    break
                transport.send(outbox, self.run_task(msg))
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

    def _on_sigterm(self, signum, frame):
        self.terminating = True
        raise SystemExit(128 + signum)

    def run_task(self, msg) -> list:
        header = msg.header
        eid = self.control.engine_id
        task_id = header["tasks"][0] if header.get("balanced") else \
            header["tasks"][header["targets"].index(eid)]
        self.capture.task = task_id
        started = now()
        try:
            f, args, kwargs = serialize.loads(msg.content, msg.buffers)
            result = namespace.bind(f)(*args, **kwargs)
            content, buffers = serialize.dumps(result, "the result")
            status = "ok"
        except BaseException as exc:  # the task's failure, reported to its client
            if self.terminating:
                raise  # SIGTERM arrived during the task: stop the engine
            content, buffers, status = pack(self._error(exc, eid)), [], "error"
        finally:
            sys.stdout.flush()
            self.capture.task = None
        reply = {"kind": "result", "id": f"{task_id}/r", "parent": task_id, "engine": eid,
                 "status": status, "started": started, "completed": now()}
        return encode(self.signer, reply, content, buffers)

    @staticmethod
    def _error(exc: BaseException, eid) -> dict:
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # hide run_task's frame
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        return {"error": "RemoteError", "ename": type(exc).__name__, "evalue": str(exc),
                "traceback": text, "engine_id": eid}


def run(info: ConnectionInfo, options: EngineOptions, requested_id=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    return Engine(info, options, requested_id).run()
