"""Processes layer: which engine runs a load-balanced task. Policy only, no sockets.

Least-load: a task goes to the engine with the fewest outstanding tasks, as long as that number
is below the high-water mark `hwm` (so an engine has its next task queued when it finishes one,
but a slow engine does not hoard work). Tasks that fit nowhere wait in arrival order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class Pending:
    task_id: str
    targets: frozenset | None  # engines allowed to run it; None means any
    payload: object  # what the server needs to send it


class LeastLoad:
    def __init__(self, hwm: int = 2) -> None:
        self.hwm = hwm  # 0 means no limit
        self.load: dict[int, int] = {}
        self.pending: deque[Pending] = deque()

    def add_engine(self, eid: int) -> None:
        self.load.setdefault(eid, 0)

    def remove_engine(self, eid: int) -> None:
        self.load.pop(eid, None)

    def _pick(self, targets: frozenset | None) -> int | None:
        best, best_load = None, None
        for eid, load in self.load.items():
            if targets is not None and eid not in targets:
                continue
            if best_load is None or load < best_load:
                best, best_load = eid, load
        if best is None or (self.hwm and best_load >= self.hwm):
            return None
        return best

    def submit(self, task: Pending) -> None:
        """Queue `task`; `ready()` says when and where it can go."""
        self.pending.append(task)

    def remove(self, task_id: str) -> bool:
        """Take a queued task out (it was aborted); False if it is not queued."""
        for i, task in enumerate(self.pending):
            if task.task_id == task_id:
                del self.pending[i]
                return True
        return False

    def started(self, eid: int) -> None:
        """A task was sent to `eid` directly, outside the balancer: it counts toward its load."""
        if eid in self.load:
            self.load[eid] += 1

    def finished(self, eid: int) -> None:
        if self.load.get(eid, 0) > 0:
            self.load[eid] -= 1

    def ready(self) -> list[tuple[Pending, int]]:
        """Queued tasks that can be sent now, each with its engine."""
        out = []
        skipped = deque()
        while self.pending:
            task = self.pending.popleft()
            eid = self._pick(task.targets)
            if eid is None:
                skipped.append(task)
                if task.targets is None:
                    break  # no engine has room for an unrestricted task: none for the rest
                continue
            self.load[eid] += 1
            out.append((task, eid))
        skipped.extend(self.pending)
        self.pending = skipped
        return out
