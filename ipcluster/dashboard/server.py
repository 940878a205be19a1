"""Surfaces layer: the dashboard process: a Bokeh server for the page, a JSON status API, and
the feed that watches the controller.

    http://127.0.0.1:PORT/TOKEN/              the live page (Bokeh, updated over a websocket)
    http://127.0.0.1:PORT/TOKEN/api/status    engines, queue depth, tasks done, rates (JSON)
    anything else                             403

Every path of the server sits under the token (Bokeh's URL prefix), so a request without it
reaches nothing. The process exits on SIGTERM, or when its controller stops.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from pathlib import Path

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.server.server import Server
from bokeh.settings import settings
from tornado.ioloop import PeriodicCallback
from tornado.web import RequestHandler

from ipcluster import connection
from ipcluster.dashboard import link
from ipcluster.dashboard.feed import Feed
from ipcluster.dashboard.page import make_document
from ipcluster.dashboard.status import Status

log = logging.getLogger("ipcluster.dashboard")


class Forbidden(RequestHandler):
    def prepare(self) -> None:
        self.set_status(403)
        self.finish("403: this dashboard's URL holds a token; ask for it with `ipcluster "
                    "dashboard` or rc.dashboard_link\n")


class StatusHandler(RequestHandler):
    def initialize(self, state: Status) -> None:
        self.state = state

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(self.state.summary()))


def serve(connection_file, ip: str = "127.0.0.1", port: int = 0) -> int:
    """Run the dashboard of the cluster of `connection_file` until SIGTERM or its end."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dashboard %(levelname)s %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # its lines hold the token
    info = connection.read(connection_file)
    cdir = Path(connection_file).parent
    token = link.token(info.key)
    # BokehJS inline in the page: its static URLs would be absolute (/TOKEN/static/...) and miss
    # behind a proxy's prefix (Jupyter's /proxy/PORT/); its websocket URL follows the page's
    settings.resources.set_value("inline")
    state = Status(info.cluster_id)
    feed = Feed(info, state, connection_file=connection_file)
    server = Server(
        {"/": Application(FunctionHandler(make_document(state)))},
        address=ip, port=port, prefix=token,
        extra_patterns=[(r"/api/status", StatusHandler, {"state": state})],
        default_handler_class=Forbidden,
        # the token in every path is the protection; the page may be reached through a proxy
        # (jupyter-server-proxy) whose origin is not known here
        allow_websocket_origin=["*"],
        check_unused_sessions_milliseconds=2000, unused_session_lifetime_milliseconds=5000)
    server.start()
    host = socket.gethostname() if ip in ("0.0.0.0", "", "*", "::") else ip
    if not ip.startswith("127.") and ip not in ("localhost", "::1"):
        log.warning("the dashboard listens on %s, beyond this host: its token protects it, but "
                    "its traffic (and the token) crosses the network unencrypted", ip)
    url = f"http://{host}:{server.port}/{token}"
    loop = server.io_loop

    def end(*_):
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    PeriodicCallback(lambda: loop.stop() if feed.gone.is_set() else None, 500).start()
    feed.start()
    link.write(cdir, {"url": url, "pid": os.getpid(), "port": server.port,
                      "controller_pid": info.controller_pid, "cluster_id": info.cluster_id})
    log.info("dashboard of cluster %r at http://%s:%d/ (token in the link)", info.cluster_id,
             host, server.port)
    try:
        loop.start()
    finally:
        feed.stop()
        feed.join(timeout=5)
        server.stop()
        if (link.read(cdir) or {}).get("pid") == os.getpid():
            (cdir / link.FILENAME).unlink(missing_ok=True)
    if feed.error:
        log.error("the feed failed: %s", feed.error)
        return 1
    log.info("dashboard stopped")
    return 0
