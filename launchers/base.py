"""The interface every launcher implements, and the one `State` every backend reports."""

from __future__ import annotations

import enum
import shlex
import signal as signals
from abc import ABC, abstractmethod


class State(enum.Enum):
    PENDING = "pending"  # submitted, not running yet
    RUNNING = "running"  # at least one process is running
    STOPPED = "stopped"  # nothing running, and nothing failed
    FAILED = "failed"  # a process exited with an error before it was stopped
    NOT_STARTED = "not started"


class Launcher(ABC):
    """Runs `command` (an argv list) `n` times, somewhere; each `start` adds `n` more."""

    name = "?"

    @abstractmethod
    def start(self, command: list[str], n: int) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Stop everything this launcher started, forcibly after a grace period."""

    @abstractmethod
    def signal(self, sig: int = signals.SIGINT) -> None: ...

    @abstractmethod
    def state(self) -> State: ...

    @abstractmethod
    def script(self, command: list[str], n: int) -> str:
        """Exactly what `start(command, n)` runs or submits, for users to read."""

    @staticmethod
    def quote(argv: list[str]) -> str:
        return shlex.join(argv)
