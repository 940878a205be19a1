"""Processes layer: what an engine holds: the task its main thread runs and the tasks queued
for it, shared by its main thread and its control thread (the "not started" handshake)."""

from __future__ import annotations

import signal
import threading
import time


class Running:
    """The task the main thread is running and the tasks queued for it, shared with the
    control thread. A queued task is either started by the main thread or withdrawn by the
    control thread, never both: one lock decides (the "not started" handshake).

    Copies are counted: a task given back may be sent to this engine again (as a new message)
    before the main thread has reached the copy it gave back, and be given back again; the main
    thread skips as many copies as were given back and runs the rest, so a task given back is
    never run here, however often it came and went."""

    def __init__(self, watch, grace: float) -> None:
        self._lock = threading.Lock()
        self._watch, self._grace = watch, grace  # what the watchdog process sees
        self.task: str | None = None
        self.deadline: float | None = None
        self.reason: str | None = None  # why it was interrupted: "abort" or "timeout"
        self.interrupted_at = 0.0
        # task -> copies (plain dicts: a Counter calls its Python __missing__ for each new task)
        self.queued: dict[str, int] = {}  # copies received, not yet started nor given back
        self._withdrawn: dict[str, int] = {}  # copies given back: the main thread skips them

    def enqueue(self, task: str) -> None:
        with self._lock:
            self.queued[task] = self.queued.get(task, 0) + 1

    def waiting(self) -> set[str]:
        """The tasks received and not started yet, now."""
        with self._lock:
            return set(self.queued)

    def withdraw(self, task: str) -> bool:
        """Give back a task that has not started; False if it started (or is not here)."""
        with self._lock:
            if not self.queued.get(task):
                return False
            _take(self.queued, task)
            self._withdrawn[task] = self._withdrawn.get(task, 0) + 1
            return True

    def held(self) -> list[str]:
        """The tasks received and not finished: the running one first, then the queued."""
        with self._lock:
            return [t for t in [self.task] if t is not None] + sorted(self.queued)

    def claim(self, task: str) -> bool:
        """The main thread takes `task` from the queue; False if it was withdrawn (skip it)."""
        with self._lock:
            if self._withdrawn and self._withdrawn.get(task):
                _take(self._withdrawn, task)
                return False
            copies = self.queued.pop(task, 0)  # `_take`, inline: every task
            if copies > 1:
                self.queued[task] = copies - 1
            return True

    def start(self, task: str, timeout) -> None:
        """`timeout`: seconds the task may run (anything but a positive number: no limit)."""
        limited = timeout is not None and isinstance(timeout, (int, float)) and timeout > 0
        deadline = time.monotonic() + timeout if limited else None
        with self._lock:
            self.task, self.reason, self.deadline = task, None, deadline
            self._watch.running(task, deadline, self._grace)

    def finish(self) -> None:
        with self._lock:
            self.task = self.deadline = None
            self._watch.running(None, None, self._grace)

    def interrupt(self, task: str | None, reason: str) -> bool:
        """Interrupt the running task (if it is `task`, or any if None) with KeyboardInterrupt."""
        with self._lock:
            if self.task is None or (task is not None and task != self.task) or self.reason:
                return False
            self.reason, self.interrupted_at = reason, time.monotonic()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return True

    def overdue(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def _take(counts: dict, task: str) -> None:
    """One copy of `task` fewer (none left: no entry, so that the keys are the tasks held)."""
    if counts.get(task, 0) > 1:
        counts[task] -= 1
    else:
        counts.pop(task, None)
