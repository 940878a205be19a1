"""Client API layer: the supervisor of a cluster's local engine processes.

Whoever started the engines sees them exit before anyone else can: the supervisor tells the
controller at once (so the engine's tasks fail or are retried within a fraction of a second,
not after the controller's grace for silent engines), kills an engine the controller has given
up on (a C call holding the GIL for longer than the grace), and with ``restart=True`` starts a
replacement that registers with the same engine id.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from ipcluster import connection
from ipcluster.errors import ControllerLost
from ipcluster.session import Session

log = logging.getLogger("ipcluster.cluster")


class Supervisor(threading.Thread):
    def __init__(self, cluster, restart: bool, interval: float = 0.1) -> None:
        super().__init__(name="ipcluster-supervisor", daemon=True)
        self.cluster, self.restart, self.interval = cluster, restart, interval
        self.host = socket.gethostname()
        self.restarts = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._seen_exit: set[int] = set()
        self._ids: dict[int, int] = {}  # pid -> engine id, as the controller reported them
        # held while the engine sets are read: a set being stopped leaves them under it first
        self.lock = threading.Lock()

    def stop(self) -> None:
        """Stop watching (before the engines are stopped on purpose)."""
        self._stopping.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=10)

    def run(self) -> None:
        try:
            # a session, not a Client: the supervisor asks the controller, it submits no work
            session = Session(connection.read(self.cluster.connection_file),
                              self.cluster.connection_file, timeout=10)
            session.warn_store = False  # the user's own client warns of it
            try:
                next_query = 0.0
                while not self._stopping.wait(self.interval):
                    try:
                        with self.lock:
                            self._reap(session)
                        if time.monotonic() >= next_query:
                            next_query = time.monotonic() + 0.5
                            self._kill_abandoned(session)
                    except ControllerLost:  # restarting, perhaps: keep watching
                        time.sleep(1)
            finally:
                session.close()
        except BaseException as exc:  # kept for the cluster to report; the engines go on
            if not self._stopping.is_set():
                self.error = exc
                log.warning("engine supervisor stopped: %s: %s", type(exc).__name__, exc)

    def _processes(self):
        """(launcher, process) of every engine of every engine set that runs as our child."""
        return [(s.launcher, proc) for s in list(self.cluster.engines.values())
                for proc in list(s.launcher.local_processes() or ())]

    def _reap(self, session) -> None:
        for launcher, proc in self._processes():
            code = proc.poll()
            if code is None or proc.pid in self._seen_exit or self._stopping.is_set():
                continue
            self._seen_exit.add(proc.pid)
            reply = session.request("control", {
                "action": "engine_exited", "pid": proc.pid, "host": self.host, "code": code})
            eid = reply["engine_id"] if reply["engine_id"] is not None else self._ids.get(proc.pid)
            log.warning("engine %s (pid %d) exited with code %s%s", eid, proc.pid, code,
                        "; restarting it" if self.restart and eid is not None else "")
            if self.restart and eid is not None:
                self.restarts += 1
                launcher.start(self.cluster.engine_command() + ["--id", str(eid)], 1)
                # its id is known here: should it die before it registers, it is restarted too
                self._ids[launcher.local_processes()[-1].pid] = eid

    def _kill_abandoned(self, session) -> None:
        """An engine process still running that the controller removed as dead (silent past
        its grace) is stuck: kill it, so that it is reaped (and restarted) like any exit."""
        reply = session.request("query", {})
        for eid, e in reply["engines"].items():
            self._ids[int(e["pid"])] = int(eid)
        dead = {int(pid) for pid, host in reply["dropped"] if host == self.host}
        for _, proc in self._processes():
            if proc.poll() is None and proc.pid in dead and proc.pid in self._ids:
                log.warning("engine %d (pid %d) was given up on by the controller; killing it",
                            self._ids[proc.pid], proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
