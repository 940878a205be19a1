"""Jupyter: a Jupyter server with jupyter-server-proxy shows ipcluster in its launcher; the
manager page, behind Jupyter's authentication, starts a cluster with a chosen launcher and size,
opens its dashboard through the Jupyter server (a browser sees its engines), and stops it."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode, urljoin

import pytest

from tests.conftest import wait_until
from tests.dashboard.test_browser import text

TOKEN = "jupyter-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter(tmp_path):
    port = free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = open(tmp_path / "jupyter.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={tmp_path}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "jupyter.log").read_text()[-3000:]
        try:
            return request(port, "GET", "/api")[0] == 200
        except OSError:
            return False

    try:
        wait_until(up, timeout=60)
        yield port, tmp_path / "jupyter.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def request(port: int, method: str, path: str, form: dict | None = None, auth: bool = True):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"token {TOKEN}"} if auth else {}
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read().decode(errors="replace")
    finally:
        conn.close()


def clusters(port: int) -> dict:
    status, _, body = request(port, "GET", "/ipcluster/api/clusters")
    assert status == 200, body
    return {c["cluster_id"]: c for c in json.loads(body)}


def test_the_manager_page_starts_and_stops_a_cluster_and_opens_its_dashboard(jupyter, browser):
    port, log = jupyter
    # the launcher shows an ipcluster icon, which opens the manager page
    info = json.loads(request(port, "GET", "/server-proxy/servers-info")[2])["server_processes"]
    entry = next(s for s in info if s["name"] == "ipcluster")["launcher_entry"]
    assert entry["enabled"] and entry["path_info"] == "ipcluster/"
    status, headers, icon = request(port, "GET", entry["icon_url"])
    assert status == 200 and "<svg" in icon

    # only behind Jupyter's authentication
    for path in ("/ipcluster/", "/ipcluster/api/clusters"):
        status, headers, _ = request(port, "GET", path, auth=False)
        assert status in (302, 401, 403) and "/login" in headers.get("Location", "/login")
    status, _, page = request(port, "GET", "/ipcluster/")
    assert status == 200 and "Start a cluster" in page, (
        f"{status}: {page[:500]}\nJupyter's log ends with:\n{log.read_text()[-3000:]}")
    form = re.search(r"name='form' value='(\w+)'", page).group(1)
    assert request(port, "POST", "/ipcluster/start", {"launcher": "local", "n": "2"})[0] == 403

    # start one with a chosen launcher and size
    status, headers, _ = request(port, "POST", "/ipcluster/start", {
        "form": form, "launcher": "local", "n": "2", "cluster_id": "from-jupyter"})
    assert status == 303 and "started" in headers["Location"]
    try:
        assert clusters(port)["from-jupyter"]["running"]
        assert clusters(port)["from-jupyter"]["engines"] == 2
        status, _, page = request(port, "GET", "/ipcluster/")
        assert "from-jupyter" in page

        # its dashboard, through the Jupyter server's own proxy
        status, headers, _ = request(port, "GET", "/ipcluster/dashboard/from-jupyter")
        assert status == 302
        target = urljoin("/ipcluster/dashboard/from-jupyter", headers["Location"])
        assert re.fullmatch(r"/proxy/\d+/\w+/", target)
        status, _, body = request(port, "GET", target + "api/status")
        assert status == 200 and len(json.loads(body)["engines"]) == 2
        assert request(port, "GET", target + "api/status", auth=False)[0] in (302, 401, 403)
        pids = [str(e["pid"]) for e in json.loads(body)["engines"]]
        browser.get(f"http://127.0.0.1:{port}/lab?token={TOKEN}")  # logs the browser in
        browser.get(f"http://127.0.0.1:{port}{target}")
        wait_until(lambda: all(p in text(browser) for p in pids), timeout=30)
    finally:
        status, headers, _ = request(port, "POST", "/ipcluster/stop",
                                     {"form": form, "cluster_id": "from-jupyter"})
    assert status == 303 and "stopped" in headers["Location"]
    assert "from-jupyter" not in clusters(port)


def test_an_unreadable_cluster_directory_does_not_break_the_manager_page():
    import shutil

    from ipcluster import state
    from ipcluster.config import cluster_dir
    from ipcluster.dashboard import manager

    odd = cluster_dir("odd-cluster")
    odd.mkdir(mode=0o700)
    try:
        state.path("odd-cluster").write_text("[1, 2]")  # JSON, but not a cluster's record
        rows = {r["cluster_id"]: r for r in manager.clusters()}
        assert rows["odd-cluster"]["state"].startswith("unreadable")
    finally:
        shutil.rmtree(odd)
