"""Surfaces layer: what the dashboard knows of its cluster, built from the controller's event
batches: engines (with CPU and memory read here), queue depth and throughput over time, the
finished tasks for the task stream, the last errors and each engine's output tail.

One `Status` per dashboard process; the feed thread writes it, the page and the JSON API read
it (under its lock). Everything it keeps is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque

HISTORY = 600  # points of queue depth and throughput kept (one per batch: 5 minutes)
STREAM = 5000  # finished tasks kept for the task stream
ERRORS = 20  # last errors kept, with their tracebacks
TAIL = 2000  # characters of output kept per engine


class Status:
    def __init__(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self.lock = threading.Lock()
        self.engines: list[dict] = []
        self.queued: dict[str, int] = {}
        self.history: deque = deque(maxlen=HISTORY)  # (time, queued by label, tasks/s)
        self.tasks: deque = deque(maxlen=STREAM)
        self.errors: deque = deque(maxlen=ERRORS)
        self.tails: dict[int, str] = {}
        self.finished = 0  # tasks seen finishing since this dashboard started
        self.skipped = 0  # of those, task records the controller did not keep (too many at once)
        self.updated = 0.0  # time of the last batch (0: none yet)
        self.host = socket.gethostname()
        self._procs: dict[int, object] = {}  # engine pid -> psutil.Process, for CPU %

    def apply(self, batch: dict) -> None:
        """Take in one batch from the controller."""
        now = float(batch.get("t") or time.time())
        resources = {e["pid"]: self._resources(e["pid"], e["host"]) for e in batch.get("engines", [])}
        with self.lock:
            last = self.updated
            self.engines = [{**e, "cpu": resources[e["pid"]][0], "rss": resources[e["pid"]][1]}
                            for e in batch.get("engines", [])]
            self.queued = {str(k): int(v) for k, v in batch.get("queued", {}).items()}
            tasks = batch.get("tasks", [])
            self.tasks.extend(tasks)
            self.errors.extend(t for t in tasks if t.get("status") == "error")
            count = len(tasks) + int(batch.get("skipped", 0))
            self.finished += count
            self.skipped += int(batch.get("skipped", 0))
            rate = count / (now - last) if last and now > last else 0.0
            self.history.append((now, dict(self.queued), rate))
            for engine, stream, text in batch.get("output", []):
                tail = self.tails.get(engine, "") + (text if stream == "stdout" else f"[{stream}] {text}")
                self.tails[engine] = tail[-TAIL:]
            self.updated = now

    def _resources(self, pid: int, host: str) -> tuple:
        """CPU % (since the last batch) and RSS in bytes of an engine on this host."""
        import psutil

        if host != self.host:
            return None, None
        try:
            proc = self._procs.get(pid)
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            return proc.cpu_percent(None), proc.memory_info().rss
        except psutil.Error:
            self._procs.pop(pid, None)
            return None, None

    def summary(self) -> dict:
        """The facts of ``GET <dashboard_link>/api/status``."""
        with self.lock:
            rates = [r for _, _, r in list(self.history)[-10:]]
            return {
                "cluster_id": self.cluster_id, "updated": self.updated,
                "engines": [dict(e) for e in self.engines],
                "queued": sum(self.queued.values()), "queued_by_label": dict(self.queued),
                "done": sum(e["done"] for e in self.engines),
                "finished_since_start": self.finished,
                "tasks_per_second": sum(rates) / len(rates) if rates else 0.0,
                "errors": len(self.errors),
            }
