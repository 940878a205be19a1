"""Client API layer: `TaskFuture`, one task on one engine: its future, its metadata (times,
engine id, status) and its output (stdout, stderr, display data, a cell's ``Out`` value) as
they arrive through the client's IO thread."""

from __future__ import annotations

import concurrent.futures
from concurrent.futures._base import (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, LOGGER,
                                      PENDING, RUNNING)
import pickle
import threading
from datetime import datetime, timezone

__all__ = ["TaskFuture", "Metadata", "Future"]


TIMES = ("submitted", "started", "completed", "received")
UTC = timezone.utc


def _when(value):
    return datetime.fromtimestamp(value, UTC) if isinstance(value, (int, float)) else value


class Metadata(dict):
    """A task's metadata: keys as attributes too (``md.started``), times as UTC datetimes,
    as ipyparallel's; `seconds` gives a time as a float."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)  # then the times made datetimes, in place: this
        for key in TIMES:  # runs once per task, on the client's hot path
            value = dict.get(self, key)
            if isinstance(value, (int, float)):
                dict.__setitem__(self, key, _when(value))

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, _when(value) if key in TIMES else value)

    @classmethod
    def of(cls, fields: dict) -> "Metadata":
        """Metadata holding `fields`, whose times are datetimes already (the hot path's way:
        no key looked at)."""
        md = dict.__new__(cls)  # without __init__: nothing to convert
        dict.update(md, fields)
        return md

    def update(self, *args, **kwargs) -> None:
        new = dict(*args, **kwargs)  # one dict update, the times made datetimes first: this
        for key in TIMES:  # runs twice per task, on the client's hot path
            if key in new:
                new[key] = _when(new[key])
        super().update(new)

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def seconds(self, key: str) -> float | None:
        value = self[key]
        return None if value is None else value.timestamp()


_SHARED = threading.Condition()  # the lock of every `Future` here
_LOCK = _SHARED._lock  # held directly where only the lock is needed: no Python-level layer
WAITING = (PENDING, RUNNING)
DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))


class Future(concurrent.futures.Future):
    """A stdlib future whose lock is one shared by every such future in the process: its own
    condition would be 8 objects more per task for the garbage collector to walk while
    thousands are pending. Its condition is never waited on: `result` and `exception` wait
    with `concurrent.futures.wait` (an event for this future alone), so a future finishing
    wakes only the threads that wait for it. Its critical sections are short: no callback
    runs under it. `done`, `set_result` and `add_done_callback` run per task on the client's hot
    path: they take the lock itself (or none, to read one field) and notify nobody, as nobody
    waits on the condition."""

    def __init__(self) -> None:  # the stdlib's fields (tests/test_task.py checks them), but
        self._condition = _SHARED  # no condition made only to be dropped
        self._state = PENDING
        self._result = self._exception = None
        self._waiters: list = []
        self._done_callbacks: list = []

    def done(self) -> bool:
        return self._state in DONE

    def set_result(self, result) -> None:
        with _LOCK:
            if self._state in DONE:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            self._result, self._state = result, FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
        self._invoke_callbacks()  # the stdlib's, as its set_result does

    def add_done_callback(self, fn) -> None:
        with _LOCK:
            if self._state not in DONE:
                self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def result(self, timeout: float | None = None):
        if self._state == FINISHED and self._exception is None:
            return self._result  # a finished future never changes: no lock needed
        if self._state in WAITING and (timeout is None or timeout > 0):
            concurrent.futures.wait([self], timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None):
        if self._state == FINISHED:
            return self._exception
        if self._state in WAITING and (timeout is None or timeout > 0):
            concurrent.futures.wait([self], timeout)
        return super().exception(0)


class TaskFuture(Future):
    """One task on one engine, with its metadata (timestamps, engine id, output)."""

    def __init__(self, task_id: str, engine_id: int | None = None, label: str | None = None,
                 size: int = 1) -> None:
        super().__init__()
        self.task_id = task_id
        self.size = size  # items of a map this task computes, for progress
        self.cell = False  # a code cell (`execute`): its value is an ExecuteReply
        self.output_callbacks: list | tuple = ()  # a list once one is added
        self.metadata = Metadata.of({
            "msg_id": task_id, "engine_id": engine_id, "engine_uuid": None, "status": "pending",
            "label": label,
            "submitted": datetime.now(UTC), "started": None, "completed": None, "received": None,
            "stdout": "", "stderr": "", "outputs": [], "execute_result": None, "data": {},
        })

    def finish(self, engine_id, engine_uuid, status: str, started, completed, received) -> None:
        """The result's metadata (times as floats, or None), before it is set."""
        when = datetime.fromtimestamp
        dict.update(self.metadata, engine_id=engine_id, engine_uuid=engine_uuid, status=status,
                    started=None if started is None else when(started, UTC),
                    completed=None if completed is None else when(completed, UTC),
                    received=when(received, UTC))

    def add_output(self, name: str, data, engine_id) -> None:
        """Called by the IO thread as output arrives, while the task runs: text of ``stdout``
        or ``stderr``, or a dict for ``display_data`` (kept in ``outputs``) and
        ``execute_result`` (a cell's ``Out`` value)."""
        with self._condition:
            if name in ("stdout", "stderr"):
                self.metadata[name] += data
            elif name == "execute_result":
                self.metadata["execute_result"] = data
            elif name == "data":  # ipcluster.datapub.publish_data on the engine: not shown
                # signed like every message, and checked before it was unpacked
                self.metadata["data"].update(pickle.loads(data["pickle"]))
                return
            else:
                self.metadata["outputs"].append(data)
            if engine_id is not None:
                self.metadata["engine_id"] = engine_id
            callbacks = tuple(self.output_callbacks)
        # outside the (shared) lock: one thread (the one handling what the client received)
        # calls them, in the order output came; one added meanwhile was given this output
        # already, with what had arrived before it
        for callback in callbacks:
            callback(self, name, data)

    def add_output_callback(self, callback) -> None:
        """Call ``callback(task, name, data)`` for each output: first for what has already
        arrived (text, then display data, then the result), then as the rest arrives."""
        with self._condition:  # so no output comes between what it is given and the rest
            md = self.metadata
            earlier = [(n, md[n]) for n in ("stdout", "stderr") if md[n]]
            earlier += [("display_data", d) for d in md["outputs"]]
            if md["execute_result"] is not None:
                earlier.append(("execute_result", md["execute_result"]))
            for name, data in earlier:
                callback(self, name, data)
            self.output_callbacks = [*self.output_callbacks, callback]
