"""Processes layer: stdout and stderr of the running task, captured to be sent as it is written.

`sys.stdout` and `sys.stderr` are replaced by streams that append to one buffer, tagged with
the task that is running. The control thread takes what has accumulated and sends it while the
task runs, and once more right before the task's result, so a task's output is complete by the
time its result arrives. Output written between tasks goes to the engine's log. Rich output
(display data, a cell's ``Out`` value) is published as a dict in the same stream, in order.
"""

from __future__ import annotations

import io
import sys
import threading

current: "Capture | None" = None  # the engine's capture, once installed


class Capture:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[tuple[str, str, str]] = []  # (task id, stream name, text)
        self.task: str | None = None

    def install(self) -> None:
        global current
        current = self
        self.log_out, self.log_err = sys.stdout, sys.stderr
        sys.stdout = Stream(self, "stdout", self.log_out)
        sys.stderr = Stream(self, "stderr", self.log_err)

    def write(self, name: str, text: str, fallback) -> None:
        task = self.task
        if task is None:
            fallback.write(text)
            return
        with self._lock:
            self._parts.append((task, name, text))

    def publish(self, name: str, content: dict) -> bool:
        """Rich output of the running task (``display_data``, ``execute_result``); False if no
        task is running."""
        task = self.task
        if task is None:
            return False
        with self._lock:
            self._parts.append((task, name, content))
        return True

    def pending(self) -> bool:
        """True if anything was written since the last `take`."""
        return bool(self._parts)

    def take(self) -> list[tuple[str, str, str]]:
        """What was written since the last call, adjacent writes of one stream joined."""
        with self._lock:
            parts, self._parts = self._parts, []
        joined: list[tuple[str, str, str]] = []
        for task, name, text in parts:
            if joined and joined[-1][:2] == (task, name) and isinstance(text, str):
                joined[-1] = (task, name, joined[-1][2] + text)
            else:
                joined.append((task, name, text))
        return joined


class Stream(io.TextIOBase):
    def __init__(self, capture: Capture, name: str, fallback) -> None:
        self._capture = capture
        self.name = name
        self._fallback = fallback

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._capture.write(self.name, text, self._fallback)
        return len(text)

    def flush(self) -> None:
        self._fallback.flush()

    def fileno(self) -> int:
        return self._fallback.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"
