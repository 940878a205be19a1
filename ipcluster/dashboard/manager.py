"""Surfaces layer: the cluster manager page for Jupyter: it lists the clusters in
$IPCLUSTER_DIR, starts one with a chosen launcher and size, stops one, and opens a cluster's
dashboard through the Jupyter server.

    {jupyter}/ipcluster/                    the page (jupyter-server-proxy's "ipcluster" entry)
    {jupyter}/ipcluster/start, /stop        POST forms (ipcluster start --daemonize / stop)
    {jupyter}/ipcluster/dashboard/<id>      redirect to {jupyter}/proxy/<port>/<token>/
    {jupyter}/ipcluster/api/clusters        the list, as JSON

It runs launchers, so it is reached only through Jupyter's own authentication: it listens on a
Unix socket in a private directory made by jupyter-server-proxy, never on a TCP port. Its
forms carry a token of this process, so another site cannot post them (the proxy leaves
cross-site checks to the proxied app).

    python -m ipcluster.dashboard.manager UNIX_SOCKET
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
import subprocess
import sys
import time
from urllib.parse import urlencode, urlsplit

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_unix_socket
from tornado.web import Application, HTTPError, RequestHandler

from ipcluster import connection, launchers, state
from ipcluster.config import cluster_dir
from ipcluster.dashboard import link

CLUSTER_ID = re.compile(r"^[\w.-]{1,100}$")
FORM_TOKEN = secrets.token_hex(16)  # per process: a page of this process posts its forms


def clusters() -> list[dict]:
    rows = []
    for cid in state.cluster_ids():
        try:
            record = state.read(cid) or {}
            status = state.status(cid)
            rows.append({"cluster_id": cid, "state": status, "running": status == "running",
                         "engines": sum(1 for p in state.engines(record)[0] if state.alive(p)),
                         "launcher": record.get("engines"), "created": record.get("created"),
                         "dashboard": link.read(cluster_dir(cid)) is not None})
        except Exception as exc:  # one odd directory must not hide the others
            rows.append({"cluster_id": cid, "state": f"unreadable ({type(exc).__name__}: {exc})",
                         "running": False, "engines": 0, "launcher": None, "created": None,
                         "dashboard": False})
    return rows


def run(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return done.returncode, (done.stdout + done.stderr).strip()


class Handler(RequestHandler):
    def check_form(self) -> None:
        if not secrets.compare_digest(self.get_body_argument("form", ""), FORM_TOKEN):
            raise HTTPError(403, "this form did not come from the manager page")

    def cluster_id(self, value: str) -> str:
        if not CLUSTER_ID.match(value):
            raise HTTPError(400, f"a cluster id is letters, digits, '.', '_' or '-', not {value!r}")
        return value


class Page(Handler):
    def get(self) -> None:
        message = self.get_query_argument("message", "")
        rows = []
        for c in clusters():
            created = (time.strftime("%Y-%m-%d %H:%M", time.localtime(c["created"]))
                       if isinstance(c["created"], (int, float)) else "-")
            cid = html.escape(c["cluster_id"])
            rows.append(
                f"<tr><td>{cid}</td><td>{html.escape(c['state'])}</td>"
                f"<td>{c['engines']}</td><td>{html.escape(str(c['launcher']))}</td><td>{created}</td>"
                f"<td><a href='dashboard/{cid}' target='_blank'>dashboard</a></td>"
                f"<td><form method='post' action='stop'><input type='hidden' name='form' "
                f"value='{FORM_TOKEN}'><input type='hidden' name='cluster_id' value='{cid}'>"
                f"<button type='submit'>stop</button></form></td></tr>")
        options = "".join(f"<option>{html.escape(n)}</option>" for n in launchers.names())
        self.finish(f"""<!doctype html><html><head><title>ipcluster clusters</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:4px 14px 4px 0;text-align:left}}</style>
</head><body><h2>ipcluster clusters</h2>
<p class='message'>{html.escape(message)}</p>
<table><tr><th>cluster</th><th>state</th><th>engines</th><th>launcher</th><th>created</th>
<th></th><th></th></tr>{''.join(rows) or "<tr><td colspan=7>no clusters</td></tr>"}</table>
<h3>Start a cluster</h3>
<form method='post' action='start'><input type='hidden' name='form' value='{FORM_TOKEN}'>
launcher <select name='launcher'>{options}</select>
engines <input name='n' type='number' min='1' value='2' style='width:5em'>
cluster id <input name='cluster_id' placeholder='(a new one)'>
<button type='submit'>start</button></form></body></html>""")


class Start(Handler):
    async def post(self) -> None:
        self.check_form()
        launcher = self.get_body_argument("launcher", "local")
        if launcher not in launchers.names():
            raise HTTPError(400, f"unknown launcher {launcher!r}; known: {', '.join(launchers.names())}")
        n = self.get_body_argument("n", "2")
        if not n.isdigit() or int(n) < 1:
            raise HTTPError(400, f"the number of engines is a positive integer, not {n!r}")
        cid = self.cluster_id(self.get_body_argument("cluster_id", "")
                              or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
        code, out = await asyncio.to_thread(run, [
            sys.executable, "-m", "ipcluster", "start", "-n", n, "--engines", launcher,
            "--cluster-id", cid, "--daemonize"])
        self.redirect(f"./?{urlencode({'message': out if code else f'cluster {cid} started'})}", status=303)


class Stop(Handler):
    async def post(self) -> None:
        self.check_form()
        cid = self.cluster_id(self.get_body_argument("cluster_id"))
        code, out = await asyncio.to_thread(run, [sys.executable, "-m", "ipcluster", "stop",
                                                  "--cluster-id", cid])
        self.redirect(f"./?{urlencode({'message': out if code else f'cluster {cid} stopped'})}", status=303)


class Dashboard(Handler):
    async def get(self, cid: str) -> None:
        path = cluster_dir(self.cluster_id(cid)) / connection.FILENAME
        try:
            url = await asyncio.to_thread(link.dashboard_link, path)
        except Exception as exc:
            raise HTTPError(404, f"no dashboard for cluster {cid!r}: {exc}") from None
        parts = urlsplit(url)  # through Jupyter's own proxy, behind its authentication:
        # {jupyter}/ipcluster/dashboard/<id> -> {jupyter}/proxy/<port>/<token>/ (a relative
        # location, which the proxy passes on as it is)
        self.redirect(f"../../proxy/{parts.port}{parts.path}/")


class ClusterList(Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(clusters()))


def main(argv: list[str] | None = None) -> int:
    unix_socket = (argv if argv is not None else sys.argv[1:])[0]
    app = Application([(r"/", Page), (r"/start", Start), (r"/stop", Stop),
                       (r"/dashboard/([^/]+)", Dashboard), (r"/api/clusters", ClusterList)])
    server = HTTPServer(app)
    server.add_socket(bind_unix_socket(unix_socket, mode=0o600))
    IOLoop.current().start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
