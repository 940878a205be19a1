"""The dashboard in a real browser (headless Chromium): it shows a running cluster's engines,
updates while tasks run without a reload, shows a task's error, and refuses a request without
the token."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest

from ipcluster.dashboard import link
from tests.conftest import _fixture_pids, start_cluster
from tests.conftest import wait_until

# All the page's text, through Bokeh's shadow roots.
DEEP_TEXT = """
function deep(node) {
  let text = node.shadowRoot ? deep(node.shadowRoot) : "";
  for (const child of node.childNodes)
    text += child.nodeType === 3 ? child.textContent + " " : deep(child);
  return text;
}
return deep(document.body);
"""
BARS = """
const doc = window.Bokeh && Bokeh.documents[0];
const source = doc && doc.get_model_by_name("task_stream");
return source ? Array.from(source.data.color) : null;
"""


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster(2)
    try:
        cluster.dashboard_link  # started here: it belongs to the module's cluster
        _fixture_pids.add(link.read(cluster.cluster_dir)["pid"])
        yield cluster
    finally:
        cluster.stop_cluster_sync()


def wait_for_file(path: str) -> int:
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return os.getpid()


def text(browser) -> str:
    return browser.execute_script(DEEP_TEXT)


def done_shown(browser) -> int:
    page = text(browser)
    marker = "done: "
    return int(page[page.index(marker) + len(marker):].split()[0]) if marker in page else -1


def test_the_page_shows_engines_updates_live_and_shows_errors(cluster, browser, tmp_path):
    rc = cluster.client
    link = rc.dashboard_link
    browser.get(link + "/")
    pids = rc[:].apply_sync(os.getpid)
    wait_until(lambda: all(str(p) in text(browser) for p in pids), timeout=30)
    start = done_shown(browser)
    bars = len(browser.execute_script(BARS) or [])

    # phase 1: six quick tasks finish on engine 0 while a task is held running on engine 1
    gate = str(tmp_path / "gate")
    held = [rc[1].apply_async(wait_for_file, gate), rc[1].apply_async(wait_for_file, gate)]
    [ar.get(timeout=20) for ar in [rc[0].apply_async(abs, -i) for i in range(6)]]
    wait_until(lambda: done_shown(browser) >= start + 6, timeout=20)
    wait_until(lambda: len(browser.execute_script(BARS)) >= bars + 6, timeout=20)
    assert not any(ar.ready() for ar in held)  # the page updated while these still run
    mid = done_shown(browser)

    # phase 2: the held tasks finish; the page follows without a reload
    open(gate, "w").close()
    [ar.get(timeout=20) for ar in held]
    wait_until(lambda: done_shown(browser) >= mid + 2, timeout=20)
    wait_until(lambda: len(browser.execute_script(BARS)) >= bars + 8, timeout=20)

    # an error raised by a task: its message and traceback on the page, its bar red
    def fails():
        raise ValueError("boom from a task")

    with pytest.raises(Exception):
        rc[0].apply_sync(fails)
    wait_until(lambda: "boom from a task" in text(browser), timeout=20)
    assert "Traceback" in text(browser)
    assert "#d62728" in browser.execute_script(BARS)


def test_a_request_without_the_token_is_refused(cluster, browser):
    link = cluster.client.dashboard_link
    base = link.rsplit("/", 1)[0]
    browser.get(base + "/")
    assert "403" in browser.page_source and "ipcluster" not in browser.title
    for url in (base + "/api/status", base + "/", base + "/wrong" + link.rsplit("/", 1)[1][5:]):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=10)
        assert info.value.code == 403
    with urllib.request.urlopen(link + "/api/status", timeout=10) as reply:
        assert reply.status == 200
