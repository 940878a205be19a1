"""Client API layer: `AsyncResult`, a `concurrent.futures.Future` over one or more tasks.

Each task sent to an engine has its own `TaskFuture`, completed by the client's IO thread when
its result arrives (its stdout and stderr, which travel ahead of it, are complete by then). An
`AsyncResult` combines the tasks of one call: one value (``single``), one value per task
(``list``) or the joined chunks of a map (``map``). It is awaitable in a running asyncio loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import sys
import time

from ipcluster import display
from ipcluster.errors import (CompositeError, IpclusterError, RemoteError, TaskAborted,
                              TimeoutError)
from ipcluster.output import ExecuteReply, Streaming, display_outputs
from ipcluster.task import FINISHED, Future, TaskFuture

log = logging.getLogger("ipcluster.client")

__all__ = ["AsyncResult", "AsyncMapResult", "AsyncHubResult"]


class AsyncResult(Future):
    """The pending result of a call: ``get()`` it, ``wait()`` for it, ``await`` it, iterate it.

    Ctrl-C while ``get()`` or ``wait()`` blocks stops this result's unfinished work before the
    `KeyboardInterrupt` goes on: `signal_on_interrupt` is sent to exactly the engines running
    it (SIGINT raises KeyboardInterrupt in the task; the engine lives on), and tasks not yet on
    an engine are aborted. ``"abort"`` aborts them all; None leaves the work running.
    """

    signal_on_interrupt: int | str | None = signal.SIGINT
    interrupt_grace = 1.0  # seconds to wait, after Ctrl-C, for the interrupted tasks to report

    def __init__(self, tasks: list[TaskFuture], shape: str = "list", *, client=None,
                 ordered: bool = True, reduce=None, tracker=None, owner: bool = True) -> None:
        """`owner`: this result holds its tasks' results and metadata, and the client forgets
        them once they are done (as ipyparallel's): a long sweep does not pile them up in
        ``rc.results``."""
        super().__init__()
        self._owner = owner
        self._cancel_queued = False  # set by ViewExecutor.shutdown(cancel_futures=True)
        self._tasks = tasks
        self._shape = shape
        self._client = client
        self._ordered = ordered
        self._reduce = reduce  # joins the values of the tasks, for gather and parallel calls
        self._tracker = tracker
        self._remaining = len(tasks)  # counted down under the future's own lock
        self._order: list[TaskFuture] | None = None if ordered else []  # as they finished
        for task in tasks:
            task.add_done_callback(self._task_done)
        if not tasks:
            self.set_result([])

    def _task_done(self, task) -> None:
        if self._owner and self._client is not None:
            self._client._futures.pop(task.task_id, None)
        if len(self._tasks) > 1:  # else this is the one call
            with self._condition:
                if self._order is not None:
                    self._order.append(task)
                self._remaining -= 1
                if self._remaining:
                    return
        elif self._order is not None:
            self._order.append(task)
        if len(self._tasks) == 1 and task._state == FINISHED:  # no lock needed to read it
            errors = [] if task._exception is None else [task._exception]
        else:
            errors = [e for e in map(TaskFuture.exception, self._tasks) if e is not None]
        if self._cancel_queued and errors and all(_never_started(e) for e in errors):
            # cancelled before it started (Executor.shutdown(cancel_futures=True)), as a
            # stdlib future: cancelled() is True and result() raises CancelledError
            if super().cancel():
                self.set_running_or_notify_cancel()
            return
        if errors:
            remote = [e for e in errors if isinstance(e, RemoteError)]
            if len(errors) > 1 and len(remote) == len(errors):
                self.set_exception(CompositeError(remote))
            else:
                self.set_exception(errors[0])
        elif len(self._tasks) == 1:
            self.set_result(self._combine([self._value(task)]))
        else:
            self.set_result(self._combine([self._value(t) for t in self._finished()]))

    def _value(self, task: TaskFuture):
        """A finished task's value: its result, or for a code cell its `ExecuteReply`."""
        value = task.result()
        return ExecuteReply(task.metadata) if task.cell else value

    def _finished(self) -> list[TaskFuture]:
        return self._tasks if self._order is None else list(self._order)

    def _combine(self, values: list):
        if self._reduce is not None:
            return self._reduce(values)
        if self._shape == "single":
            return values[0]
        if self._shape == "map":
            return [item for chunk in values for item in chunk]
        return values

    # -- results ----------------------------------------------------------------------------

    def get(self, timeout: float | None = None, return_exceptions: bool = False):
        """The result, waiting at most `timeout` seconds (`TimeoutError` after that).

        With `return_exceptions`, a failed task gives its exception in place of its value.
        """
        try:
            if not return_exceptions:
                return self.result(self._receive(timeout))
            if not self._wait(timeout):
                raise TimeoutError(f"result not ready after {timeout} s")
        except KeyboardInterrupt:
            self.interrupt()
            raise
        values = [t.exception() or self._value(t) for t in self._finished()]
        if self._shape == "map":
            return [item for chunk in values for item in (
                [chunk] if isinstance(chunk, BaseException) else chunk)]
        return values[0] if self._shape == "single" else values

    def get_dict(self, timeout: float | None = None) -> dict:
        """``{engine_id: result}`` for a call with one result per engine."""
        values = self.get(timeout)
        if self._shape == "single":
            return {self.engine_id: values}
        engines = self.engine_id
        if self._shape != "list" or self._reduce is not None:
            raise ValueError("get_dict() is for calls with one result per engine (apply on a "
                             f"DirectView), not a {self._shape} result; use get() instead")
        if len(set(engines)) != len(engines):
            raise ValueError(f"several tasks ran on one engine ({engines}); use get() instead")
        return dict(zip(engines, values))

    def wait(self, timeout: float | None = None,
             return_when: str = concurrent.futures.ALL_COMPLETED):
        """Wait until done; True if it is. With ``return_when`` FIRST_COMPLETED or
        FIRST_EXCEPTION (as `concurrent.futures.wait`), ``(done, pending)``: sets of one-task
        results (`split`)."""
        try:
            return self._wait(timeout, return_when)
        except KeyboardInterrupt:
            self.interrupt()
            raise

    def _wait(self, timeout: float | None = None,
              return_when: str = concurrent.futures.ALL_COMPLETED) -> bool:
        if timeout is not None and timeout < 0:
            timeout = None  # ipyparallel's -1 means forever
        if return_when == concurrent.futures.ALL_COMPLETED:
            concurrent.futures.wait([self], self._receive(timeout))
            return self.done()
        done, _ = concurrent.futures.wait(self._tasks, timeout, return_when)
        parts = dict(zip(self._tasks, self.split()))
        return ({parts[t] for t in self._tasks if t in done},
                {parts[t] for t in self._tasks if t not in done})

    def _receive(self, timeout: float | None) -> float | None:
        """Wait receiving in this thread (`Session.wait_for`); returns the time left."""
        done = self._client is None or self.done()
        return timeout if done else self._client._session.wait_for(self, timeout)

    def interrupt(self) -> None:
        """What Ctrl-C in `get` or `wait` does: stop exactly the unfinished work of this result
        (see `signal_on_interrupt`), then give it `interrupt_grace` seconds to report."""
        pending = [t for t in self._tasks if not t.done()]
        sig = self.signal_on_interrupt
        if not pending or not sig or self._client is None:
            return
        on_engine = [] if sig == "abort" else [t for t in pending
                                               if t.metadata["engine_id"] is not None]
        elsewhere = [t for t in pending if t not in on_engine]
        try:
            if on_engine:
                engines = sorted({t.metadata["engine_id"] for t in on_engine})
                self._client.send_signal(sig, targets=engines)
            if elsewhere:
                self._client.abort([t.task_id for t in elsewhere], block=False)
        except IpclusterError as exc:  # the KeyboardInterrupt goes on; say why nothing stopped
            log.warning("could not stop the interrupted tasks: %s", exc)
            return
        concurrent.futures.wait(pending, self.interrupt_grace)

    def ready(self) -> bool:
        return self.done()

    def successful(self) -> bool:
        """True if done without error; raises if not done yet, as in ipyparallel."""
        if not self.done():
            raise AssertionError("the result is not ready yet; check ready() first")
        return self.exception() is None

    def __iter__(self):
        """Values as they become available: in order, or as they finish for ``ordered=False``.

        Items of a map one by one; a failed task raises when reached.
        """
        if self._ordered:
            pending = iter(self._tasks)
        else:
            pending = (f for f in concurrent.futures.as_completed(self._tasks))
        for task in pending:
            task.result()
            value = self._value(task)
            if self._shape == "map":
                yield from value
            else:
                yield value

    def __await__(self):
        return asyncio.wrap_future(self).__await__()

    def abort(self) -> None:
        """Stop the tasks of this result that have not finished (queued or running)."""
        if self._client is not None:
            self._client.abort(self)

    # -- metadata ---------------------------------------------------------------------------

    def _per_task(self, values: list):
        return values[0] if self._shape == "single" else values

    @property
    def tasks(self) -> list[TaskFuture]:
        """The future of each task, in the order they were sent."""
        return list(self._tasks)

    @property
    def msg_ids(self) -> list[str]:
        return [t.task_id for t in self._tasks]

    @property
    def metadata(self):
        return self._per_task([t.metadata for t in self._tasks])

    stdout = property(lambda self: self._per_task([t.metadata["stdout"] for t in self._tasks]))
    stderr = property(lambda self: self._per_task([t.metadata["stderr"] for t in self._tasks]))
    engine_id = property(lambda self: self._per_task([t.metadata["engine_id"] for t in self._tasks]))

    @property
    def progress(self) -> int:
        """Tasks finished so far (items, for a map)."""
        return sum(t.size if self._shape == "map" else 1 for t in self._tasks if t.done())

    @property
    def sent(self) -> bool:
        """True once zmq no longer needs the buffers sent (always, unless `track` was set)."""
        return self._tracker is None or self._tracker.done

    def wait_for_send(self, timeout: float | None = None) -> None:
        """Wait until arrays sent with ``track=True`` may be changed again."""
        if self._tracker is not None:
            self._tracker.wait(-1 if timeout is None else timeout)

    def _times(self, key: str) -> list[float]:
        return [t.metadata.seconds(key) for t in self._tasks if t.metadata[key] is not None]

    @property
    def elapsed(self) -> float:
        """Seconds since the first task was submitted (until the last result, once done)."""
        end = max(self._times("received")) if self.done() and self._tasks else time.time()
        return end - min(self._times("submitted"), default=end)

    @property
    def wall_time(self) -> float:
        """Seconds from the first submission to the last result received."""
        self._require_done()
        return max(self._times("received")) - min(self._times("submitted"))

    @property
    def serial_time(self) -> float:
        """Seconds of computation summed over the tasks (engine-side start to completion)."""
        self._require_done()
        return sum(t.metadata.seconds("completed") - t.metadata.seconds("started")
                   for t in self._tasks
                   if t.metadata["started"] is not None and t.metadata["completed"] is not None)

    def _require_done(self) -> None:
        if not self.done():
            raise TimeoutError("timing is known once the result is ready; wait() first")

    def __len__(self) -> int:
        """Tasks, or items for a map."""
        return sum(t.size for t in self._tasks) if self._shape == "map" else len(self._tasks)

    def __getitem__(self, key):
        """``ar[i]``: the i-th result (waits); ``ar["completed"]``: that metadata key."""
        if isinstance(key, (int, slice)):
            return self.get()[key]
        if key not in (self._tasks[0].metadata if self._tasks else {}):
            raise KeyError(key)
        return self._per_task([t.metadata[key] for t in self._tasks])

    def __getattr__(self, key):
        """Metadata keys as attributes (``ar.started``, ``ar.completed``), as ipyparallel's."""
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute {key!r}") from None

    @property
    def data(self):
        """What the tasks published with ``ipcluster.datapub.publish_data``, merged per task."""
        return self._per_task([t.metadata["data"] for t in self._tasks])

    def wait_for_output(self, timeout: float | None = None) -> bool:
        """True once every task's output is here (output arrives before each task's result)."""
        return self._wait(timeout)

    def split(self) -> tuple:
        """One AsyncResult per task (itself if it has one task)."""
        if len(self._tasks) == 1 and self._shape != "map":
            return (self,)
        shape = "single" if self._shape == "list" else "list"
        return tuple(AsyncResult([t], shape, client=self._client) for t in self._tasks)

    @classmethod
    def join(cls, *results) -> "AsyncResult":
        """One AsyncResult over the tasks of several, in order; a list of their values."""
        return AsyncResult([t for r in results for t in r._tasks], "list",
                           client=next((r._client for r in results), None))

    def _repr_html_(self) -> str:
        return display.result_html(self)

    def __repr__(self) -> str:
        state = "done" if self.done() else f"{self.progress}/{len(self)} done"
        return f"<AsyncResult({self._shape}) {state}>"

    # -- showing progress and output ------------------------------------------------------

    def wait_interactive(self, interval: float = 0.1, timeout: float | None = None,
                         return_when: str = concurrent.futures.ALL_COMPLETED) -> None:
        """Wait with a progress bar (done/total, rate and ETA; a widget inside Jupyter), until
        done, or as `return_when` says (FIRST_COMPLETED, FIRST_EXCEPTION)."""
        from tqdm.auto import tqdm

        total = sum(t.size for t in self._tasks)
        label = self._tasks[0].metadata["label"] if self._tasks else None
        deadline = None if timeout is None else time.monotonic() + timeout
        with tqdm(total=total, unit="items" if self._shape == "map" else "tasks",
                  desc=label or "tasks") as bar:
            while True:
                bar.update(sum(t.size for t in self._tasks if t.done()) - bar.n)
                if self.done() or (deadline is not None and time.monotonic() > deadline):
                    break
                if return_when != concurrent.futures.ALL_COMPLETED:
                    done, _ = self.wait(interval, return_when)
                    if return_when == concurrent.futures.FIRST_COMPLETED and done or any(
                            ar.exception() for ar in done):
                        break
                else:
                    self.wait(interval)

    def display_outputs(self, groupby: str = "type", result_only: bool = False) -> None:
        """Show the tasks' stdout (on sys.stdout), stderr (on sys.stderr), display data and
        ``Out`` values; labelled ``[stdout:<engine>]`` unless there is one task. `groupby`:
        ``"type"`` (all stdout, then stderr, ...), ``"engine"`` or ``"order"`` (as sent)."""
        display_outputs(self._tasks, groupby, single=self._shape == "single",
                        result_only=result_only)

    def stream_output(self, file=None) -> "Streaming":
        """Print output as it arrives, each line labelled with its engine, until done.

        Use as ``with ar.stream_output(): ar.get()``, or call and forget: it stops by itself.
        """
        return Streaming(self, file or sys.stdout)


def _never_started(error) -> bool:
    return isinstance(error, TaskAborted) and error.evalue == "aborted before it started"


class AsyncMapResult(AsyncResult):
    """The AsyncResult of a `map` or `gather` (ipyparallel's name): iterating it gives items."""


class AsyncHubResult(AsyncResult):
    """The AsyncResult of tasks another client sent (``get_result(..., owner=False)``)."""


class AsyncExecuteResult(AsyncResult):
    """The AsyncResult of `execute`: each engine's value is an `ExecuteReply`."""

    def _value(self, task: TaskFuture):
        task.result()
        return ExecuteReply(task.metadata)
