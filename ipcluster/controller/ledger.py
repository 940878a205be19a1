"""Processes layer: every task the controller has sent and not yet seen answered.

A task is recorded when it arrives and forgotten when its result has been forwarded; the
record says which client asked (to route the result back) and which engine runs it (to fail
the task if that engine dies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Task:
    id: str
    client: bytes  # socket identity of the client that submitted it
    engine: int | None = None  # None while queued for load balancing
    submitted: float = field(default_factory=time.time)


class Ledger:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, task: Task) -> None:
        self.tasks[task.id] = task

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def pop(self, task_id: str) -> Task | None:
        return self.tasks.pop(task_id, None)

    def queued(self) -> int:
        return sum(1 for t in self.tasks.values() if t.engine is None)
