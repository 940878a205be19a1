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

from ipcluster import connection, transport
from ipcluster.controller.server import Controller
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


def run(cluster_id: str, options: ControllerOptions, connection_file: Path) -> None:
    """Run a controller until SIGTERM or SIGINT (or a client's shutdown), with its connection
    file written meanwhile."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    public, secret = transport.curve_keypair() if wants_curve(options) else ("", "")
    controller = Controller(cluster_id, options, connection.new_key(), public, secret)
    connection.write(connection_file, controller.info)
    log.info("controller of cluster %r on %s (pid %d, host %s, curve %s)", cluster_id,
             controller.info.client_url, os.getpid(), socket.gethostname(),
             "on" if public else "off")
    try:
        controller.serve(lambda: bool(stop))
    finally:
        with contextlib.suppress(ConnectionFileError, OSError):
            if connection.read(connection_file).controller_pid == os.getpid():
                connection_file.unlink()
        controller.close()
        log.info("controller stopped")
