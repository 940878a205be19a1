"""Surfaces layer: the dashboard page, as a Bokeh document per browser session.

    ┌ summary: engines, running, queued, done, tasks/s ─────────────────────────────────┐
    │ engines table (id, host, pid, state, label, done, CPU %, RSS)                     │
    │ task stream: a row per engine, a bar per task coloured by function, errors red    │
    │ queue depth over time, by label          │ throughput (tasks/s) over time          │
    │ last errors with their tracebacks        │ each engine's output tail               │
    └───────────────────────────────────────────────────────────────────────────────────┘

Each session polls the shared `Status` every `REFRESH` ms and pushes only what changed (new task
bars are streamed, not resent). Models the browser test reads carry a `name`.
"""

from __future__ import annotations

import html
import zlib

from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div, HoverTool
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

REFRESH = 1000  # ms between two updates of a page: drawing is what an open page costs most
STREAM_ROWS = 1000  # task bars a page keeps (and at most draws new in one update)
TAIL_LINES = 4  # lines of each engine's output shown
ERROR_COLOR = "#d62728"
COLORS = [c for c in Category10_10 if c != ERROR_COLOR]
TITLES = ["engine", "host", "pid", "state", "label", "done", "CPU %", "RSS"]


def color(fn: str) -> str:
    return COLORS[zlib.crc32(fn.encode()) % len(COLORS)]


def _engine_table(engines: list[dict]) -> str:
    """The engines as an HTML table (plain text in the page, as a reader and a test see it)."""
    head = "".join(f"<th style='text-align:left;padding:2px 12px 2px 0'>{t}</th>" for t in TITLES)
    rows = []
    for e in engines:
        cells = [e["id"], e["host"], e["pid"], e["state"],
                 e.get("label") or ("-" if e.get("task") is None else "(no label)"), e["done"],
                 "-" if e.get("cpu") is None else f"{e['cpu']:.0f}",
                 "-" if e.get("rss") is None else f"{e['rss'] / 2**20:.0f} MiB"]
        rows.append("<tr>" + "".join(f"<td style='padding:2px 12px 2px 0'>{html.escape(str(c))}</td>"
                                     for c in cells) + "</tr>")
    return f"<table style='border-collapse:collapse;font-size:13px'><tr>{head}</tr>{''.join(rows)}</table>"


def _summary(status: dict) -> str:
    running = sum(1 for e in status["engines"] if e.get("task"))
    return (f"<b>cluster {html.escape(status['cluster_id'])}</b> &nbsp; "
            f"engines: <span class='engines'>{len(status['engines'])}</span> &nbsp; "
            f"running: {running} &nbsp; queued: {status['queued']} &nbsp; "
            f"done: <span class='done'>{status['done']}</span> &nbsp; "
            f"tasks/s: {status['tasks_per_second']:.1f} &nbsp; errors: {status['errors']}")


def _errors(errors: list[dict]) -> str:
    if not errors:
        return "<b>Last errors</b><p>none</p>"
    parts = ["<b>Last errors</b>"]
    for e in reversed(errors):
        parts.append(f"<p>engine {e.get('engine')} · {html.escape(str(e.get('fn')))} · "
                     f"<b>{html.escape(e.get('ename', ''))}</b>: {html.escape(e.get('evalue', ''))}"
                     f"</p><pre style='font-size:11px;max-height:160px;overflow:auto'>"
                     f"{html.escape(e.get('traceback', ''))}</pre>")
    return "".join(parts)


def _tails(tails: dict) -> str:
    parts = ["<b>Output</b>"]
    for engine in sorted(tails):
        last = "\n".join(tails[engine].splitlines()[-TAIL_LINES:])
        parts.append(f"<p style='margin:4px 0'>engine {engine}</p>"
                     f"<pre style='font-size:11px;margin:0'>{html.escape(last)}</pre>")
    return "".join(parts) if len(parts) > 1 else "<b>Output</b><p>none yet</p>"


def make_document(state):
    """A Bokeh application function showing `state`."""

    def modify_doc(doc) -> None:
        summary = Div(text="", name="summary", sizing_mode="stretch_width")
        table = Div(text="", name="engines", sizing_mode="stretch_width")
        bars = ColumnDataSource({k: [] for k in ("left", "right", "bottom", "top", "color", "fn",
                                                 "label", "engine", "status")}, name="task_stream")
        stream = figure(title="Task stream", height=220, x_axis_type="datetime",
                        sizing_mode="stretch_width", name="stream_figure",
                        tools="xpan,xwheel_zoom,reset")
        stream.quad(left="left", right="right", bottom="bottom", top="top", color="color",
                    source=bars, line_color=None)
        stream.add_tools(HoverTool(tooltips=[("function", "@fn"), ("label", "@label"),
                                             ("engine", "@engine"), ("status", "@status")]))
        stream.yaxis.axis_label = "engine"
        queue = ColumnDataSource({"xs": [], "ys": [], "label": [], "color": []}, name="queue")
        queue_fig = figure(title="Queue depth by label", height=200, x_axis_type="datetime",
                           sizing_mode="stretch_width", tools="")
        queue_fig.multi_line(xs="xs", ys="ys", color="color", legend_field="label", source=queue)
        rate = ColumnDataSource({"t": [], "rate": []}, name="throughput")
        rate_fig = figure(title="Throughput (tasks/s)", height=200, x_axis_type="datetime",
                          sizing_mode="stretch_width", tools="")
        rate_fig.line(x="t", y="rate", source=rate)
        errors = Div(text=_errors([]), name="errors", sizing_mode="stretch_width")
        tails = Div(text=_tails({}), name="output", sizing_mode="stretch_width")
        doc.title = f"ipcluster {state.cluster_id}"
        doc.add_root(column(summary, table, stream, row(queue_fig, rate_fig, sizing_mode="stretch_width"),
                            row(errors, tails, sizing_mode="stretch_width"),
                            sizing_mode="stretch_width"))
        seen = {"tasks": 0, "finished": -1, "updated": -1.0}

        def update() -> None:
            status = state.summary()
            if status["updated"] == seen["updated"]:
                return
            seen["updated"] = status["updated"]
            summary.text = _summary(status)
            table.text = _engine_table(status["engines"])
            with state.lock:
                new = [t for t in list(state.tasks)[-max(0, state.finished - seen["tasks"]):]] \
                    if state.finished > seen["tasks"] else []
                seen["tasks"] = state.finished
                history = list(state.history)
                error_list, tail_map = list(state.errors), dict(state.tails)
            new = [t for t in new if t.get("start") and t.get("end")][-STREAM_ROWS:]
            if new:
                bars.stream({
                    "left": [t["start"] * 1000 for t in new], "right": [t["end"] * 1000 for t in new],
                    "bottom": [t["engine"] - 0.4 for t in new], "top": [t["engine"] + 0.4 for t in new],
                    "color": [ERROR_COLOR if t["status"] == "error" else color(t["fn"]) for t in new],
                    "fn": [t["fn"] for t in new], "label": [t.get("label") or "" for t in new],
                    "engine": [t["engine"] for t in new], "status": [t["status"] for t in new],
                }, rollover=STREAM_ROWS)
            labels = sorted({lb for _, q, _ in history for lb in q})
            times = [h[0] * 1000 for h in history]
            queue.data = {
                "xs": [times] * (len(labels) + 1),
                "ys": [[sum(h[1].values()) for h in history]]
                + [[h[1].get(lb, 0) for h in history] for lb in labels],
                "label": ["(all)"] + [lb or "(no label)" for lb in labels],
                "color": ["#444444"] + [color(lb) for lb in labels]}
            rate.data = {"t": [h[0] * 1000 for h in history], "rate": [h[2] for h in history]}
            errors.text = _errors(error_list[-5:])
            tails.text = _tails(tail_map)

        update()
        doc.add_periodic_callback(update, REFRESH)

    return modify_doc
