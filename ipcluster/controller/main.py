"""Processes layer: the controller process: its options, its keys, and its life from the
connection file written to SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from ipcluster import connection, shm, transport
from ipcluster.controller import recovery
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
    hwm: int = 2  # most load-balanced tasks waiting on one engine (0: no limit)
    unresponsive_after: float = 3.0  # seconds of engine silence before it is shown unresponsive
    engine_timeout: float = 30.0  # seconds of silence before it is declared dead: a grace,
    # since a long C call holding the GIL is legitimate (an engine that exits is reported by
    # its supervisor at once)
    beat_interval: float = 1.0  # seconds between the controller's published beats
    max_results: int = 100_000  # finished results kept for get_result; the oldest go first
    max_result_bytes: int = 1 << 30  # ... and at most this many bytes of them
    max_message_size: int = 2 << 30  # bytes in one frame; a peer sending more is disconnected
    client_queue: int = 10_000  # messages queued per peer before TCP back-pressure slows it
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


def run(cluster_id: str, options: ControllerOptions, connection_file: Path, restore: bool = False) -> None:
    """Run a controller until SIGTERM or SIGINT (or a client's shutdown), with its connection
    file written meanwhile. With `restore`, take over from a controller that died: the same
    key, ports and task store, so engines and clients reconnect to it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
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
    try:
        controller.serve(lambda: bool(stop))
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
