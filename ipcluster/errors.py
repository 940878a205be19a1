"""Leaf layer: the exceptions users catch, and how a remote failure travels as plain data.

A failure on an engine crosses the wire as a small dict of strings (never a pickled exception,
whose class may not exist on the client) and is rebuilt here as a `RemoteError` whose
`__cause__` carries the remote traceback text, as `concurrent.futures` does for its workers.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError

__all__ = [
    "IpclusterError",
    "RemoteError",
    "CompositeError",
    "EngineError",
    "NoEnginesRegistered",
    "NoSuchEngine",
    "TaskAborted",
    "TaskTimeout",
    "UnmetDependency",
    "ImpossibleDependency",
    "ConnectionFileError",
    "ControllerLost",
    "ClientClosed",
    "SerializationError",
    "TimeoutError",
]


class IpclusterError(Exception):
    """Base class of every error ipcluster raises."""


class RemoteTraceback(Exception):
    """The traceback text of a remote failure; shown as the cause of the error raised locally."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb.rstrip("\n")


class RemoteError(IpclusterError):
    """Code raised an exception on an engine.

    `ename` and `evalue` are the remote exception's class name and message, `traceback` the
    remote traceback text and `engine_id` the engine it ran on.
    """

    def __init__(self, ename: str, evalue: str, traceback: str = "", engine_id: int | None = None):
        super().__init__(ename, evalue, traceback, engine_id)
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.engine_id = engine_id
        if traceback:
            self.__cause__ = RemoteTraceback(traceback)

    @property
    def engine_info(self) -> dict:
        return {"engine_id": self.engine_id}

    def __str__(self) -> str:
        where = f"[engine {self.engine_id}] " if self.engine_id is not None else ""
        return f"{where}{self.ename}: {self.evalue}"

    def to_wire(self) -> dict:
        return {
            "error": type(self).__name__,
            "ename": self.ename,
            "evalue": self.evalue,
            "traceback": self.traceback,
            "engine_id": self.engine_id,
        }


class CompositeError(RemoteError):
    """Several tasks of one call failed; `errors` holds each task's `RemoteError` (a task per
    engine for a direct view, a task per chunk for a map)."""

    shown = 3

    def __init__(self, errors: list[RemoteError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.ename, first.evalue, first.traceback, first.engine_id)

    def __str__(self) -> str:
        engines = sorted({e.engine_id for e in self.errors if e.engine_id is not None})
        on = f" on engine{'s' if len(engines) > 1 else ''} {', '.join(map(str, engines))}" if engines else ""
        lines = [f"{len(self.errors)} task{'s' if len(self.errors) > 1 else ''} raised errors{on}:"]
        lines += [f"  {e}" for e in self.errors[: self.shown]]
        if len(self.errors) > self.shown:
            lines.append(f"  ... and {len(self.errors) - self.shown} more (see .errors)")
        return "\n".join(lines)

    def __reduce__(self):
        return (type(self), (self.errors,))


class EngineError(RemoteError):
    """The engine running a task died or left before the task finished."""


class NoSuchEngine(RemoteError, IndexError):
    """A request named an engine id that is not registered."""


class TaskAborted(RemoteError):
    """The task was aborted (`abort()`) before it finished."""


class TaskTimeout(RemoteError):
    """The task ran longer than its `timeout` and was stopped."""


class UnmetDependency(RemoteError):
    """The task's dependency is not met on this engine (raised on the engine to move it)."""


class ImpossibleDependency(UnmetDependency):
    """No engine can meet the task's dependencies, so it will never run."""


class NoEnginesRegistered(IpclusterError):
    """Work was sent, or engines awaited, but the cluster has no (or too few) engines."""


class ConnectionFileError(IpclusterError):
    """The connection file of a cluster is missing, unreadable or corrupt."""


class ControllerLost(IpclusterError):
    """The controller stopped answering; work in flight cannot complete."""


class ClientClosed(IpclusterError):
    """A call was made on a client (or one of its views) after `close()`."""


class SerializationError(IpclusterError, TypeError):
    """An argument or result could not be pickled or unpickled."""


_WIRE = {cls.__name__: cls for cls in (RemoteError, EngineError, NoSuchEngine, TaskAborted,
                                       TaskTimeout, UnmetDependency, ImpossibleDependency)}


def from_wire(data: dict) -> RemoteError:
    """Rebuild the error an engine or the controller sent as a dict."""
    cls = _WIRE.get(data.get("error", ""), RemoteError)
    return cls(
        str(data.get("ename", "RemoteError")),
        str(data.get("evalue", "")),
        str(data.get("traceback", "")),
        data.get("engine_id"),
    )
