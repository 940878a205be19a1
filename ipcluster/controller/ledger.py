"""Processes layer: every task the controller has seen, from arrival to (kept) result.

A task's record says which client asked (to route the result back), which other clients wait
for it (`get_result` from a second client), which engine runs it (to fail the task if that
engine dies), and, while it is not done, its request frames (to send it again elsewhere).
Finished results are kept, as the frames the engine sent, for `get_result` and `db_query`;
the oldest are culled past `max_results` tasks or `max_bytes` of result frames.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Task:
    id: str
    client: bytes  # socket identity of the client that submitted it
    balanced: bool = False
    targets: frozenset | None = None  # engines a balanced task may run on; None: any
    label: str | None = None
    engine: int | None = None  # None while queued for load balancing
    submitted: float = field(default_factory=time.time)
    completed: float | None = None
    status: str | None = None  # "ok" or "error" once done
    request: list | None = None  # the request frames, until done
    tried: set = field(default_factory=set)  # engines where it failed or its dependency was unmet
    retries: int = 0  # times it may still be sent again after its engine died or it raised
    priority: float = 0  # higher runs first among queued balanced tasks
    watchers: set = field(default_factory=set)  # other clients waiting for the result
    result: list | None = None  # the result frames, once done
    stdout: str = ""
    stderr: str = ""

    @property
    def state(self) -> str:
        if self.result is not None:
            return "done"
        return "queued" if self.engine is None else "running"

    def summary(self) -> dict:
        return {"msg_id": self.id, "state": self.state, "status": self.status, "engine_id": self.engine,
                "label": self.label, "submitted": self.submitted, "completed": self.completed}


def _size(frames: list) -> int:
    return sum(len(f.buffer) if hasattr(f, "buffer") else len(f) for f in frames)


class Ledger:
    def __init__(self, max_results: int = 100_000, max_bytes: int = 1 << 30) -> None:
        self.tasks: dict[str, Task] = {}
        self.max_results, self.max_bytes = max_results, max_bytes
        self._done: OrderedDict[str, int] = OrderedDict()  # finished task id -> result bytes
        self._done_bytes = 0
        self.culled = 0

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, task: Task) -> None:
        self.tasks[task.id] = task

    def get(self, task_id) -> Task | None:
        return self.tasks.get(task_id) if isinstance(task_id, str) else None

    def open(self) -> int:
        return len(self.tasks) - len(self._done)

    def finish(self, task: Task, frames: list, status: str, completed: float | None) -> None:
        task.result, task.status, task.request = frames, status, None
        task.completed = completed or time.time()
        size = _size(frames)
        self._done[task.id] = size
        self._done_bytes += size
        while self._done and (len(self._done) > self.max_results or self._done_bytes > self.max_bytes):
            self.forget(next(iter(self._done)))
            self.culled += 1

    def forget(self, task_id: str) -> None:
        """Drop a finished task's record and result."""
        size = self._done.pop(task_id, None)
        if size is not None:
            self._done_bytes -= size
            self.tasks.pop(task_id, None)

    def finished_ids(self) -> list[str]:
        return list(self._done)
