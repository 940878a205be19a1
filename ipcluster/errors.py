"""Leaf layer: the exceptions users catch, and how a remote failure travels as plain data.

A failure on an engine crosses the wire as a small dict of strings (never a pickled exception,
whose class may not exist on the client) and is rebuilt here as a `RemoteError` whose
`__cause__` carries the remote traceback text, as `concurrent.futures` does for its workers;
where the remote exception's class can be imported here, the error is an instance of it too.
"""

from __future__ import annotations

import importlib
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
    "InvalidDependency",
    "AlreadyDisplayedError",
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
    remote traceback text, `engine_id` the engine it ran on and `method` what ran there
    (``"apply"`` or ``"execute"``). Where the remote class can be imported here, the error is
    also an instance of it (`from_wire`): ``except ZeroDivisionError`` catches it.
    """

    def __init__(self, ename: str, evalue: str, traceback: str = "", engine_id: int | None = None,
                 *, eclass: str | None = None, method: str = "apply"):
        # not super().__init__: a remote class combined with this one may take other arguments
        Exception.__init__(self, ename, evalue, traceback, engine_id)
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.engine_id = engine_id
        self.eclass = eclass  # "module:qualname" of the remote exception's class
        self.method = method
        if traceback:
            self.__cause__ = RemoteTraceback(traceback)

    @property
    def engine_info(self) -> dict:
        return {"engine_id": self.engine_id, "method": self.method}

    def __str__(self) -> str:
        where = f"[engine {self.engine_id}] " if self.engine_id is not None else ""
        return f"{where}{self.ename}: {self.evalue}"

    def render_traceback(self) -> list[str]:
        """The remote traceback as lines (what IPython shows for this error)."""
        return (self.traceback or f"{self.ename}: {self.evalue}").rstrip("\n").split("\n")

    def _render_traceback_(self) -> list[str]:
        return self.render_traceback()

    def print_traceback(self) -> None:
        print("\n".join(self.render_traceback()))

    def to_wire(self) -> dict:
        return {
            "error": type(self).__name__ if type(self).__name__ in _WIRE else "RemoteError",
            "ename": self.ename,
            "evalue": self.evalue,
            "traceback": self.traceback,
            "engine_id": self.engine_id,
            "eclass": self.eclass,
            "method": self.method,
        }

    def __reduce__(self):
        return from_wire, (self.to_wire(),)


class CompositeError(RemoteError):
    """Several tasks of one call failed; `errors` holds each task's `RemoteError` (a task per
    engine for a direct view, a task per chunk for a map).

    As ipyparallel's: `elist` is ``[(ename, evalue, traceback, engine_info), ...]``,
    `raise_exception(i)` raises the i-th error, and the traceback shows the first `tb_limit`.
    """

    tb_limit = 4

    def __init__(self, errors: list[RemoteError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.ename, first.evalue, first.traceback, first.engine_id,
                         method=first.method)

    @property
    def elist(self) -> list[tuple]:
        return [(e.ename, e.evalue, e.traceback, e.engine_info) for e in self.errors]

    def __str__(self) -> str:
        engines = sorted({e.engine_id for e in self.errors if e.engine_id is not None})
        on = f" on engine{'s' if len(engines) > 1 else ''} {', '.join(map(str, engines))}" if engines else ""
        lines = [f"{len(self.errors)} task{'s' if len(self.errors) > 1 else ''} raised errors{on}:"]
        lines += [f"  {e}" for e in self.errors[: self.tb_limit]]
        if len(self.errors) > self.tb_limit:
            lines.append(f"  ... and {len(self.errors) - self.tb_limit} more (see .errors)")
        return "\n".join(lines)

    def raise_exception(self, excid: int = 0):
        """Raise the error of one engine (the first by default)."""
        if not 0 <= excid < len(self.errors):
            raise IndexError(f"an integer in [0, {len(self.errors)}) is expected, not {excid}")
        raise self.errors[excid]

    def render_traceback(self, excid: int | None = None) -> list[str]:
        """Each engine's traceback under ``[engine:method]``, the first `tb_limit` of them."""
        chosen = self.errors[: self.tb_limit] if excid is None else [self.errors[excid]]
        lines = []
        for e in chosen:
            lines.append(f"[{e.engine_id}:{e.method}]: ")
            lines += RemoteError.render_traceback(e) + [""]
        if excid is None and len(self.errors) > self.tb_limit:
            lines.append(f"... {len(self.errors) - self.tb_limit} more exceptions ...")
        return lines

    def __reduce__(self):
        return (type(self), (self.errors,))


class AlreadyDisplayedError(RemoteError):
    """The errors of a %px cell whose tracebacks were already shown as they happened;
    `original_error` is the error itself."""

    def __init__(self, original_error: RemoteError):
        self.original_error = original_error
        errors = getattr(original_error, "errors", [original_error])
        super().__init__(original_error.ename, original_error.evalue, "",
                         original_error.engine_id, method=original_error.method)
        self.count = len(errors)

    def render_traceback(self) -> list[str]:
        return [f"{self.count} errors" if self.count > 1 else f"{self.count} error"]

    def __str__(self) -> str:
        return "\n".join(self.render_traceback())

    def __reduce__(self):
        return (type(self), (self.original_error,))


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


class InvalidDependency(ImpossibleDependency):
    """A dependency names a task the controller does not know."""


class NoEnginesRegistered(IpclusterError, TimeoutError):
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
                                       TaskTimeout, UnmetDependency, ImpossibleDependency,
                                       InvalidDependency)}
_TYPED: dict[str, type | None] = {}


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _typed(eclass: str | None) -> type:
    """RemoteError combined with the remote exception's class, where that class can be
    imported here and combined (an `Exception`, not a KeyboardInterrupt or SystemExit that
    would look like a local Ctrl-C or exit); else RemoteError itself."""
    if not eclass:
        return RemoteError
    if eclass not in _TYPED:
        _TYPED[eclass] = None
        module, _, qualname = eclass.partition(":")
        try:
            found = importlib.import_module(module)
            for part in qualname.split("."):
                found = getattr(found, part)
            if (isinstance(found, type) and issubclass(found, Exception)
                    and not issubclass(found, IpclusterError)):
                _TYPED[eclass] = type(f"RemoteError({found.__name__})", (RemoteError, found),
                                      {"__module__": __name__, "__init__": RemoteError.__init__,
                                       "__str__": RemoteError.__str__})
        except Exception:  # not importable or not combinable (a layout conflict): plain
            pass
    return _TYPED[eclass] or RemoteError


def from_wire(data: dict) -> RemoteError:
    """Rebuild the error an engine or the controller sent as a dict."""
    cls = _WIRE.get(data.get("error", ""), RemoteError)
    if cls is RemoteError:
        cls = _typed(data.get("eclass"))
    return cls(
        str(data.get("ename", "RemoteError")),
        str(data.get("evalue", "")),
        str(data.get("traceback", "")),
        data.get("engine_id"),
        eclass=data.get("eclass"),
        method=data.get("method") or "apply",
    )


def describe(exc: BaseException, engine_id, traceback_text: str, method: str = "apply") -> dict:
    """The wire form of an exception raised on an engine."""
    return {"error": "RemoteError", "ename": type(exc).__name__, "evalue": str(exc),
            "traceback": traceback_text, "engine_id": engine_id,
            "eclass": class_path(type(exc)), "method": method}
