"""Processes layer: the engine's watchdog, a small process forked by each engine before it
starts, that acts when no thread of the engine can.

    engine process                              watchdog process (forked, no GIL shared)
    ┌───────────────────────────┐  shared page  ┌───────────────────────────────────────┐
    │ control thread: stamps    │ ────────────▶ │ every 0.1 s reads the page and        │
    │   "alive" every 0.1 s     │   (mmap)      │   /proc/<engine>/stat:                │
    │ main thread: the running  │               │ - past deadline + kill_grace: reports │
    │   task, its deadline      │               │   TaskTimeout, then SIGKILLs it       │
    └───────────────────────────┘               │ - stopped (SIGSTOP): "stopped"        │
                                                │ - silent, running: "busy" (in a call  │
                                                │   that holds the GIL)                 │
                                                └──────────────── DEALER ──▶ controller ─┘

A task stuck in a C call that holds the GIL (a regular expression, a numeric kernel) stops
every thread of its engine, so its timeout and its liveness are told by this process. It says
nothing while the control thread answers for itself, connects to the controller only when it
must speak, and exits when the engine does.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import struct
import time

from ipcluster import transport
from ipcluster.protocol import Ids, encode, pack

log = logging.getLogger("ipcluster.engine")

POLL = 0.1  # seconds between looks at the engine
_PAGE = struct.Struct("ddd64s")  # control thread alive at, task deadline (0: none), grace, task
_RUNNING = struct.Struct("dd64s")  # the page from its deadline on (a longer task id is cut)


class Watch:
    """The page the engine writes and its watchdog reads (anonymous shared memory, so it is
    shared with the process forked after it is made)."""

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, _PAGE.size)
        self.alive()

    def alive(self) -> None:
        struct.pack_into("d", self._mem, 0, time.monotonic())

    def running(self, task: str | None, deadline: float | None, grace: float) -> None:
        _RUNNING.pack_into(self._mem, 8, deadline or 0.0, grace, task.encode() if task else b"")

    def read(self) -> tuple[float, float, float, str]:
        alive, deadline, grace, task = _PAGE.unpack_from(self._mem)
        return alive, deadline, grace, task.rstrip(b"\0").decode()


def state(pid: int) -> str | None:
    """The process state letter from /proc (``T``: stopped), or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


class Watchdog:
    def __init__(self, watch: Watch, info, signer, engine_pid: int, beat_interval: float) -> None:
        self.watch, self.info, self.signer = watch, info, signer
        self.engine_pid, self.beat_interval = engine_pid, beat_interval
        self.host = socket.gethostname()
        self.ids = Ids()
        self._context = self._sock = None
        self._last_said = 0.0

    def run(self) -> None:
        while os.getppid() == self.engine_pid:
            time.sleep(POLL)
            alive, deadline, grace, task = self.watch.read()
            now = time.monotonic()
            if task and deadline and now > deadline + grace:
                self._say({"timeout": task, "grace": grace})
                self._context.close(linger_ms=2000)  # the report first, then the end
                self._context = None
                os.kill(self.engine_pid, signal.SIGKILL)
                return
            stopped = state(self.engine_pid) in ("T", "t")
            silent = now - alive > 1.5 * self.beat_interval
            if (stopped or silent) and now - self._last_said >= self.beat_interval:
                self._last_said = now
                self._say({"state": "stopped" if stopped else "busy", "task": task or None})

    def _say(self, content: dict) -> None:
        if self._sock is None:
            self._context = transport.Context(self.info.key_bytes)  # proves the key
            self._sock = self._context.dealer(
                self.info.engine_url, identity=os.urandom(16),
                curve_server_key=self.info.curve_public_key or None)
        content.update(pid=self.engine_pid, host=self.host)
        transport.send(self._sock, encode(self.signer, {"kind": "watchdog", "id": self.ids()},
                                          pack(content)))

    def close(self) -> None:
        if self._context is not None:
            self._context.close(linger_ms=500)


def start(watch: Watch, info, signer, beat_interval: float) -> int:
    """Fork the watchdog of this process (call before any zmq context exists); returns its
    pid. The child never returns."""
    engine_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the engine's task
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        dog = Watchdog(watch, info, signer, engine_pid, beat_interval)
        try:
            dog.run()
        finally:
            dog.close()
    except BaseException:  # the engine goes on without it; say why in its log
        log.exception("the engine's watchdog failed")
        code = 1
    os._exit(code)
