"""Processes layer: the controller process: its options, its keys, and its life from the
connection file written to SIGTERM, or to the death of the cluster's owner (`--owner`)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ipcluster import connection, shm, state, transport
from ipcluster.controller import memory, recovery
from ipcluster.controller.server import Controller
from ipcluster.controller.store import Store
from ipcluster.errors import ConnectionFileError

log = logging.getLogger("ipcluster.controller")


@dataclass
class ControllerOptions:
    ip: str = "127.0.0.1"  # address to bind: loopback unless told otherwise
    location: str | None = None  # address others use to reach it; default: ip (host name for 0.0.0.0)
    curve: bool | None = None  # CurveZMQ encryption; None: on unless bound to loopback only
    scheme: str = "leastload"  # load balancing: leastload, lru, twobin, weighted, plainrandom
    hwm: int = 32  # most outstanding load-balanced tasks on one engine (0: no limit); an engine
    # whose tasks take a millisecond or more holds fewer, down to 2 (controller/scheduler.py)
    unresponsive_after: float = 3.0  # seconds of engine silence before it is shown unresponsive
    engine_timeout: float = 30.0  # seconds of silence before it is declared dead: a grace,
    # since a long C call holding the GIL is legitimate (an engine that exits is reported by
    # its supervisor at once)
    beat_interval: float = 1.0  # seconds between the controller's published beats
    max_beat_rate: float = 2000.0  # engine beats a second: with more engines than this, each
    # beats less often (at most every 8 s) and the silence limits above stretch with it
    max_results: int = 100_000  # finished tasks kept in memory for get_result; oldest go first
    max_result_bytes: int = 128 << 20  # ... and at most this many bytes of them, counting all
    # a record keeps (its own objects, result frames, output), so the default fits in 300 MiB
    forget_clients_after: float = 300.0  # seconds a client may be away before what it missed
    # is dropped from memory (it is in the ledger: a client that comes back gets it by its sync)
    max_task_output: int = 1 << 20  # characters of stdout/stderr a task's record keeps (for
    # db_query and other clients); the client that submitted it still receives all of it
    max_message_size: int = 2 << 30  # bytes in one frame; a peer sending more is disconnected
    replay_window: int = 100_000  # message ids remembered to refuse replays
    max_age: float = 600.0  # seconds; an older (or as much newer) message is refused
    db: str | None = None  # "sqlite" (tasks.db in the cluster directory) or "sqlite:PATH": durable


def is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def wants_curve(options: ControllerOptions) -> bool:
    if options.curve is None:
        return not is_loopback(options.ip)
    if not options.curve and not is_loopback(options.ip):
        log.warning("CurveZMQ is off while binding %s: traffic (code, data, results) crosses the "
                    "network unencrypted; only do this on a trusted fabric", options.ip)
    return options.curve


def open_store(options: ControllerOptions, connection_file: Path) -> Store | None:
    if options.db is None:
        return None
    kind, _, path = options.db.partition(":")
    if kind != "sqlite":
        raise ValueError(f"db must be 'sqlite' or 'sqlite:PATH', not {options.db!r}")
    return Store(Path(path) if path else connection_file.parent / "tasks.db")


class OwnerWatch:
    """Whether the cluster's owner has died, asking the system at most every `interval` s."""

    def __init__(self, owner: state.Owner | None, interval: float = 0.5) -> None:
        self.owner, self.interval = owner, interval
        self.dead = False
        self._next = 0.0

    def __call__(self) -> bool:
        if self.owner is None or self.dead:
            return self.dead
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self.dead = not self.owner.alive()
        return self.dead


def stop_orphaned(controller: Controller, cluster_id: str, grace: float = 3.0) -> None:
    """The owner died without stopping its cluster: stop every engine (registered ones by
    message; local processes by the pids, batch jobs by the cancel commands in the record)."""
    for engine in list(controller.registry.by_id.values()):
        controller.send_control(engine, {"action": "shutdown"})
    found = state.read(cluster_id) or {}
    pids, cancel = state.engines(found)
    for argv in cancel:
        try:
            subprocess.run(argv, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not cancel the cluster's jobs with %s: %s", argv, exc)
    pids = [p for p in pids if state.alive(p, found)]
    deadline = time.monotonic() + grace
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [p for p in pids if state.alive(p, found)]
        deadline = time.monotonic() + grace


def run(cluster_id: str, options: ControllerOptions, connection_file: Path, restore: bool = False,
        owner: state.Owner | None = None) -> None:
    """Run a controller until SIGTERM or SIGINT (or a client's shutdown), with its connection
    file written meanwhile. With `restore`, take over from a controller that died: the same
    key, ports and task store, so engines and clients reconnect to it. With `owner`, stop the
    whole cluster (engines and batch jobs too) within a second of that process's death."""
    memory.use_system_allocator()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
    memory.return_large_blocks()
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    if restore and options.db is None:
        options.db = "sqlite"  # the store a durable controller keeps in its cluster directory
    store = open_store(options, connection_file)
    if restore:
        old = connection.read(connection_file)
        ports = [int(u.rsplit(":", 1)[1]) for u in (old.client_url, old.engine_url, old.pub_url)]
        controller = Controller(cluster_id, options, old.key, old.curve_public_key,
                                old.curve_secret_key, ports=ports, store=store)
        recovery.restore(controller)
    else:
        public, secret = transport.curve_keypair() if wants_curve(options) else ("", "")
        controller = Controller(cluster_id, options, connection.new_key(), public, secret, store=store)
    connection.write(connection_file, controller.info)
    log.info("controller of cluster %r on %s (pid %d, host %s, curve %s%s)", cluster_id,
             controller.info.client_url, os.getpid(), socket.gethostname(),
             "on" if controller.info.curve_public_key else "off", ", restored" if restore else "")
    owner_died = OwnerWatch(owner)
    try:
        controller.serve(lambda: bool(stop) or owner_died())
        if owner_died.dead:
            log.warning("the cluster's owner (pid %d) has exited; stopping its engines", owner.pid)
            stop_orphaned(controller, cluster_id)
    finally:
        with contextlib.suppress(ConnectionFileError, OSError):
            if connection.read(connection_file).controller_pid == os.getpid():
                connection_file.unlink()
        controller.close()
        if store is not None:
            store.close()
        # segments whose sender or reader was killed between writing and mapping
        swept = shm.sweep(shm.prefix(controller.info.key_bytes))
        log.info("controller stopped%s", f"; removed {swept} shared-memory files" if swept else "")
