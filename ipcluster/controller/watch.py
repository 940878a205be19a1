"""Processes layer: task events for dashboards, at no cost to a cluster nobody watches.

    dashboard ── control {"action": "watch"} ──▶ controller      (signed; a lease of LEASE s,
    dashboard ◀── event {batch} every INTERVAL ── controller      renewed by asking again)

A watcher is a client that asked, with a signed request, for events; only it receives them, on
its own connection (not on the PUB socket every client reads). While a lease holds, the
controller's handlers note what they already hold in hand (a task finished, its output, an
error's text) and, at most once per `INTERVAL`, each watcher gets one message: the tasks
finished since the last one and a snapshot (engines, queue depth by label). With no watcher a
handler pays one truth test, and no message or frame is sent.
"""

from __future__ import annotations

import time
from collections import Counter

from ipcluster.protocol import encode, pack, unpack

INTERVAL = 0.5  # seconds between two batches to a watcher
LEASE = 10.0  # seconds a watch holds unless renewed
MAX_TASKS = 5000  # task records kept for one batch; past that they are counted, not kept
MAX_TEXT = 4000  # characters of one output or traceback text


class Watch:
    def __init__(self) -> None:
        self.watchers: dict[bytes, float] = {}  # client identity -> end of its lease (monotonic)
        self.tasks: list[dict] = []  # finished since the last batch
        self.output: list[list] = []  # [engine, stream, text] since the last batch
        self.skipped = 0  # task records not kept (more than MAX_TASKS in one interval)
        self.batches = 0  # batches sent, for the cost tests
        self._due = 0.0

    def __bool__(self) -> bool:
        return bool(self.watchers)

    def subscribe(self, identity: bytes, lease: float = LEASE) -> dict:
        self.watchers[identity] = time.monotonic() + min(max(lease, 1.0), 60.0)
        return {"interval": INTERVAL, "lease": LEASE}

    def finished(self, task, header: dict, content) -> None:
        """`task` finished with the result `header` and `content` (msgpack for an error)."""
        if len(self.tasks) >= MAX_TASKS:
            self.skipped += 1
            return
        record = {"id": task.id, "engine": task.engine, "fn": task.function or "?",
                  "label": task.label, "status": header.get("status"),
                  "start": header.get("started"), "end": header.get("completed")}
        if record["status"] == "error":
            try:
                error = unpack(content) or {}
            except (ValueError, TypeError):
                error = {}
            record.update(ename=str(error.get("ename", "Error")),
                          evalue=str(error.get("evalue", ""))[:MAX_TEXT],
                          traceback=str(error.get("traceback", ""))[-MAX_TEXT:])
        self.tasks.append(record)

    def wrote(self, engine, stream: str, text) -> None:
        if isinstance(text, str) and len(self.output) < MAX_TASKS:
            self.output.append([engine, stream, text[-MAX_TEXT:]])

    def tick(self, ctl, now: float) -> None:
        """From the controller's loop: send a batch to each watcher when one is due."""
        if now < self._due:
            return
        self._due = now + INTERVAL
        self.watchers = {w: end for w, end in self.watchers.items() if end > now}
        if not self.watchers:
            self.tasks, self.output, self.skipped = [], [], 0
            return
        content = pack(self.snapshot(ctl))
        self.tasks, self.output, self.skipped = [], [], 0
        for identity in list(self.watchers):
            header = {"kind": "event", "id": ctl.ids()}
            if not ctl.outbox.send(ctl.clients, identity, encode(ctl.signer, header, content)):
                del self.watchers[identity]
        self.batches += 1

    def snapshot(self, ctl) -> dict:
        def label(task_id) -> str:
            task = ctl.ledger.get(task_id)
            return (task.label or "") if task is not None else ""

        engines = []
        for e in sorted(ctl.registry.by_id.values(), key=lambda e: e.id):
            current = next(iter(e.tasks), None)
            engines.append({"id": e.id, "host": e.host, "pid": e.pid, "state": e.state,
                            "task": current, "label": label(current) if current else None,
                            "done": e.completed})
        queued = Counter(label(p.task_id) for p in ctl.scheduler.pending)
        queued.update(label(t) for t in ctl.graph.waiting)
        return {"t": time.time(), "cluster_id": ctl.cluster_id, "engines": engines,
                "queued": dict(queued), "tasks": self.tasks, "skipped": self.skipped,
                "output": self.output}


def watch(ctl, client: bytes, request: dict) -> dict:
    """The control action: `client` receives event batches for `lease` seconds."""
    lease = request.get("lease", LEASE)
    if isinstance(lease, bool) or not isinstance(lease, (int, float)):
        raise ValueError(f"watch: 'lease' must be a number of seconds, not {lease!r}")
    return ctl.watch.subscribe(client, float(lease))
