"""Client API layer: `AsyncResult`, a `concurrent.futures.Future` over one or more tasks.

Each task sent to an engine has its own `TaskFuture`, completed by the client's IO thread when
the result arrives (with the task's captured stdout/stderr already in its metadata). An
`AsyncResult` combines the tasks of one call: a single value, a list with one value per engine,
or the flattened chunks of a map. It is awaitable in a running asyncio loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

from ipcluster.errors import CompositeError, RemoteError

__all__ = ["AsyncResult", "TaskFuture"]


class TaskFuture(concurrent.futures.Future):
    """One task on one engine, with its metadata (timestamps, engine id, output)."""

    def __init__(self, task_id: str, engine_id: int | None = None) -> None:
        super().__init__()
        self.task_id = task_id
        self.metadata = {
            "msg_id": task_id, "engine_id": engine_id, "status": "pending",
            "submitted": time.time(), "started": None, "completed": None, "received": None,
            "stdout": "", "stderr": "",
        }


def _flatten(chunks: list) -> list:
    return [item for chunk in chunks for item in chunk]


class AsyncResult(concurrent.futures.Future):
    """The pending result of a call: ``get()`` it, ``wait()`` for it, or ``await`` it.

    `shape` is ``"single"`` (one task, its value), ``"list"`` (one value per task) or
    ``"map"`` (each task returned a chunk of a map; the value is the chunks joined).
    """

    def __init__(self, tasks: list[TaskFuture], shape: str = "list") -> None:
        super().__init__()
        self._tasks = tasks
        self._shape = shape
        self._lock = threading.Lock()
        self._remaining = len(tasks)
        for task in tasks:
            task.add_done_callback(self._task_done)
        if not tasks:
            self.set_result([])

    def _task_done(self, _task) -> None:
        with self._lock:
            self._remaining -= 1
            if self._remaining:
                return
        errors = [t.exception() for t in self._tasks if t.exception() is not None]
        if errors:
            remote = [e for e in errors if isinstance(e, RemoteError)]
            if len(errors) > 1 and len(remote) == len(errors):
                self.set_exception(CompositeError(remote))
            else:
                self.set_exception(errors[0])
            return
        values = [t.result() for t in self._tasks]
        if self._shape == "single":
            self.set_result(values[0])
        elif self._shape == "map":
            self.set_result(_flatten(values))
        else:
            self.set_result(values)

    # -- the familiar ipyparallel surface ---------------------------------------------------

    def get(self, timeout: float | None = None):
        """The result, waiting at most `timeout` seconds (`TimeoutError` after that)."""
        return self.result(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until done or `timeout`; True if done."""
        concurrent.futures.wait([self], timeout)
        return self.done()

    def ready(self) -> bool:
        return self.done()

    def successful(self) -> bool:
        """True if done without error; raises if not done yet, as in ipyparallel."""
        if not self.done():
            raise AssertionError("the result is not ready yet; check ready() first")
        return self.exception() is None

    def _per_task(self, values: list):
        return values[0] if self._shape == "single" else values

    @property
    def msg_ids(self) -> list[str]:
        return [t.task_id for t in self._tasks]

    @property
    def metadata(self):
        return self._per_task([t.metadata for t in self._tasks])

    @property
    def stdout(self):
        return self._per_task([t.metadata["stdout"] for t in self._tasks])

    @property
    def stderr(self):
        return self._per_task([t.metadata["stderr"] for t in self._tasks])

    @property
    def engine_id(self):
        return self._per_task([t.metadata["engine_id"] for t in self._tasks])

    def __len__(self) -> int:
        return len(self._tasks)

    def __await__(self):
        return asyncio.wrap_future(self).__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else f"{len(self._tasks) - self._remaining}/{len(self._tasks)} done"
        return f"<AsyncResult({self._shape}) {state}>"
