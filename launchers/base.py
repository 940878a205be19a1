"""The interface every launcher implements, and the one `State` every backend reports."""

from __future__ import annotations

import enum
import shlex
import signal as signals
from abc import ABC, abstractmethod


class State(enum.Enum):
    """One set of states for every backend; each scheduler maps its own through a table."""

    PENDING = "pending"  # submitted, not running yet (queued, held, suspended, configuring)
    RUNNING = "running"  # at least one process is running
    STOPPED = "stopped"  # nothing running, and nothing failed (or stopped on request)
    FAILED = "failed"  # exited with an error, or killed by the scheduler, before it was stopped
    NOT_STARTED = "not started"


class LaunchError(RuntimeError):
    """Starting failed: a submission was refused, or a host could not be reached."""


class Launcher(ABC):
    """Runs `command` (an argv list) `n` times, somewhere; each `start` adds `n` more."""

    name = "?"
    options_class: type  # the options dataclass: the schema of this launcher's options
    remote = False  # True when processes may run on other hosts than this one

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

    def failure(self) -> str | None:
        """Why the launcher is FAILED, for users: what failed, the reason and its log."""
        return None

    def pending(self) -> str | None:
        """What the processes still wait for before they run (a batch job in the queue), for
        users: ``slurm job 1234 pending: Priority, 2 min``; None when nothing waits."""
        return None

    def logs(self) -> list:
        """Paths of the logs the processes write, for error messages to quote."""
        return []

    def hosts(self) -> list[str] | None:
        """Hosts processes may run on, to choose an address they reach; None: this one only."""
        return None

    def prepare(self, command: list[str]) -> None:
        """Get ready to start copies of `command` (called while other work goes on, e.g. the
        local launcher's template process importing); `start` works without it."""

    def local_processes(self) -> list | None:
        """The `subprocess.Popen` of each copy when every copy is a child of this process, so
        its exit can be watched and one copy restarted (`start(command, 1)`); None when this
        launcher cannot offer that (copies on other hosts, in a batch job, under mpiexec)."""
        return None

    @property
    def pids(self) -> list[int]:
        """Local process ids (for `ipcluster list` and `ipcluster stop`)."""
        return []

    @staticmethod
    def quote(argv: list[str]) -> str:
        return shlex.join(argv)


def tail(path, lines: int = 15) -> str:
    """The last `lines` lines of a log, indented, for error messages."""
    try:
        with open(path, errors="replace") as f:
            text = f.read().splitlines()[-lines:]
    except OSError:
        return "    (no output yet)"
    return "\n".join("    " + line for line in text) or "    (empty)"
