"""The dashboard process: started on first use, one per cluster, loopback, its token derived
from the cluster key; the JSON status API; the CLI; a clear message without its extra."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import ipcluster
from ipcluster import connection
from ipcluster.dashboard import link
from ipcluster.errors import IpclusterError
from tests.conftest import _fixture_pids, start_cluster
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster(2)
    try:
        yield cluster
    finally:
        cluster.stop_cluster_sync()


def dashboard(cluster) -> str:
    """The cluster's dashboard link; the process belongs to the module's cluster."""
    url = cluster.client.dashboard_link
    _fixture_pids.add(link.read(cluster.cluster_dir)["pid"])
    return url


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/status", timeout=10) as reply:
        assert reply.headers["Content-Type"] == "application/json"
        return json.loads(reply.read())


def test_started_on_first_use_once_loopback_with_a_token_from_the_key(cluster):
    assert link.read(cluster.cluster_dir) is None  # nobody asked: no dashboard process
    url = dashboard(cluster)
    facts = link.read(cluster.cluster_dir)
    info = connection.read(cluster.connection_file)
    assert url == f"http://127.0.0.1:{facts['port']}/{link.token(info.key)}"
    assert info.key not in url and link.token(info.key) != link.token(connection.new_key())
    assert oct((cluster.cluster_dir / link.FILENAME).stat().st_mode & 0o777) == "0o600"
    with ipcluster.Client(cluster.connection_file) as rc2:
        assert rc2.dashboard_link == url and cluster.dashboard_link == url
    assert link.read(cluster.cluster_dir)["pid"] == facts["pid"]  # the same process
    out = subprocess.run([sys.executable, "-m", "ipcluster", "dashboard", cluster.cluster_id],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == url


def test_the_status_api_reports_engines_queue_done_and_rates(cluster):
    rc = cluster.client
    url = dashboard(cluster)
    pids = sorted(rc[:].apply_sync(os.getpid))
    before = status(url)["done"]
    rc.load_balanced_view().map_sync(abs, range(-20, 0), chunksize=1)
    wait_until(lambda: status(url)["done"] >= before + 20, timeout=20)
    facts = status(url)
    assert sorted(e["pid"] for e in facts["engines"]) == pids
    assert {e["host"] for e in facts["engines"]} == {os.uname().nodename}
    for e in facts["engines"]:
        assert e["state"] in ("idle", "busy") and e["rss"] > 0 and e["cpu"] is not None
    assert facts["queued"] == 0 and facts["cluster_id"] == cluster.cluster_id
    assert facts["finished_since_start"] >= 20 and "tasks_per_second" in facts
    for wrong in (url.rsplit("/", 1)[0], url[:-1]):
        with pytest.raises(urllib.error.HTTPError) as refused:
            status(wrong)
        assert refused.value.code == 403


def test_without_the_extra_the_message_says_what_to_install(cluster, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "bokeh", None)
    stopped = tmp_path / "elsewhere"  # a cluster directory whose dashboard is not running
    stopped.mkdir(mode=0o700)
    connection.write(stopped / connection.FILENAME, connection.read(cluster.connection_file))
    with pytest.raises(IpclusterError, match=r"pip install 'ipcluster\[dashboard\]'"):
        link.dashboard_link(stopped / connection.FILENAME)


def test_ipcluster_start_dashboard_prints_the_link_and_stop_ends_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "ipcluster", "start", "-n", "1", "--dashboard",
                             "--cluster-id", "dash-cli"], stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("dashboard: "):
            line = proc.stdout.readline()
            assert line, "ipcluster start ended without printing the dashboard link"
        url = line.split(": ", 1)[1].strip()
        assert status(url)["cluster_id"] == "dash-cli"
        pid = link.read(connection.find("dash-cli").parent)["pid"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    wait_until(lambda: not link._alive(pid), timeout=10)


def test_jupyter_shows_cluster_client_and_result_with_state_progress_and_link(cluster):
    rc = cluster.client
    url = dashboard(cluster)
    shown = cluster._repr_html_()
    assert cluster.cluster_id in shown and "running" in shown and "2 of 2" in shown
    assert f"href='{url}/'" in shown
    shown = rc._repr_html_()
    assert "2 (0, 1)" in shown and f"href='{url}/'" in shown
    ar = rc.load_balanced_view().map_async(abs, range(4), chunksize=1, label="shown")
    ar.get(timeout=30)
    shown = ar._repr_html_()
    assert "<progress value='4' max='4'>" in shown and "4 of 4 tasks" in shown
    assert "done" in shown and "shown" in shown and f"href='{url}/'" in shown
    with pytest.raises(Exception):
        rc[0].apply_sync(lambda: 1 / 0)
    failed = rc[0].apply_async(lambda: 1 / 0)
    failed.wait(30)
    assert "failed, 1 failed" in failed._repr_html_()


def test_task_events_go_only_to_a_watcher_holding_the_key(cluster):
    import dataclasses

    from ipcluster.dashboard.feed import Feed
    from ipcluster.dashboard.status import Status

    info = connection.read(cluster.connection_file)
    forged = dataclasses.replace(info, key=connection.new_key())
    feeds = [Feed(i, Status(cluster.cluster_id)) for i in (info, forged)]
    for feed in feeds:
        feed.start()
    try:
        cluster.client.load_balanced_view().map_sync(abs, range(8), chunksize=1)
        wait_until(lambda: feeds[0].batches >= 4, timeout=20)
        assert feeds[1].batches == 0  # a watch request signed with another key is dropped
    finally:
        for feed in feeds:
            feed.stop()
            feed.join(timeout=10)


def test_the_dashboard_ends_when_its_controller_stops():
    cluster = start_cluster(1)
    try:
        cluster.dashboard_link
        pid = link.read(cluster.cluster_dir)["pid"]
        cluster.client.shutdown(hub=True)  # the controller stops by itself, the owner lives on
        wait_until(lambda: not link._alive(pid), timeout=15)
    finally:
        cluster.stop_cluster_sync()
