"""Client API layer: how a `Cluster`, a `Client` and an `AsyncResult` look in Jupyter
(``_repr_html_``): their state, progress, and the link to the cluster's dashboard.

Showing an object never starts anything: the dashboard's link is shown when the dashboard
runs, and otherwise how to start it.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipcluster.dashboard.link as dashboard

STYLE = "font-family:sans-serif;font-size:13px;border-left:3px solid #1f77b4;padding:2px 10px"


def _dashboard(connection_file, owner: str) -> str:
    running = dashboard.read(Path(connection_file).parent) if connection_file else None
    if running is not None:
        url = html.escape(running["url"])
        return f"<a href='{url}/' target='_blank'>dashboard</a>"
    return f"dashboard: not running (<code>{owner}.dashboard_link</code> starts it)"


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{k}</th><td "
                    f"style='text-align:left'>{v}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def cluster_html(cluster) -> str:
    controller = cluster.controller
    state = ("running" if controller is not None and controller.poll() is None
             else "stopped" if controller is not None else "not started")
    client = cluster.client
    engines = f"{len(client.ids)} of {cluster.n}" if client is not None and not client.closed else str(cluster.n)
    return (f"<div style='{STYLE}'><b>Cluster</b> {html.escape(cluster.cluster_id)}"
            + _table([("state", state), ("engines", f"{engines} ({html.escape(cluster.launcher_name)} launcher)"),
                      ("connection file", f"<code>{html.escape(str(cluster.connection_file))}</code>"),
                      ("", _dashboard(cluster.connection_file if state == "running" else None,
                                      "cluster"))])
            + "</div>")


def client_html(client) -> str:
    if client.closed:
        return f"<div style='{STYLE}'><b>Client</b> of {html.escape(client.cluster_id)} (closed)</div>"
    ids = client.ids
    shown = ", ".join(map(str, ids[:16])) + (" ..." if len(ids) > 16 else "")
    return (f"<div style='{STYLE}'><b>Client</b> of cluster {html.escape(client.cluster_id)}"
            + _table([("engines", f"{len(ids)} ({shown})"),
                      ("tasks", f"{len(client.history)} submitted, {len(client.outstanding)} running or queued"),
                      ("", _dashboard(client.connection_file, "rc"))])
            + "</div>")


def result_html(result) -> str:
    tasks = result.tasks
    done = sum(1 for t in tasks if t.done())
    failed = sum(1 for t in tasks if t.done() and t.exception() is not None)
    state = ("pending" if done < len(tasks) else "failed" if failed else "done")
    labels = sorted({t.metadata["label"] for t in tasks if t.metadata["label"]})
    client = getattr(result, "_client", None)
    rows = [("state", state + (f", {failed} failed" if failed else "")),
            ("progress", f"<progress value='{done}' max='{max(len(tasks), 1)}'></progress> "
                         f"{done} of {len(tasks)} tasks"),
            ("elapsed", f"{result.elapsed:.2f} s")]
    if labels:
        rows.append(("label", html.escape(", ".join(labels))))
    if client is not None and not client.closed:
        rows.append(("", _dashboard(client.connection_file, "rc")))
    return f"<div style='{STYLE}'><b>AsyncResult</b>" + _table(rows) + "</div>"
