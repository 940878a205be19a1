"""Client API layer: `Client`, the user's connection to a running cluster.

    rc = Client()                   # the running cluster (a path or a cluster id also work)
    rc[:]  rc[0]  rc[::2]           # DirectViews on engines
    rc.load_balanced_view()         # the controller picks the engine of each task
    rc.wait(), rc.abort(), rc.get_result(msg_id), rc.queue_status(), rc.shutdown()

The sockets and the IO thread live in the client's `Session`; the client keeps the history of
its tasks (`history`, `results`, `metadata`) and speaks to the controller for the rest.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal as signals
import sys
import threading
import time

from ipcluster import connection, display, namespace, provenance, state
from ipcluster.asyncresult import AsyncResult
from ipcluster.task import TaskFuture
from ipcluster.submission import Submitter
import ipcluster.dashboard.link as dashboard
from ipcluster.errors import NoEnginesRegistered, NoSuchEngine
from ipcluster.records import TaskRecords
from ipcluster.session import Session
from ipcluster.balanced import LoadBalancedView
from ipcluster.views import BroadcastView, DirectView, activate_magics

__all__ = ["Client"]

log = logging.getLogger("ipcluster.client")


class Client(TaskRecords):
    """Connect to a running cluster.

    `url_file` is a connection file's path or a cluster id; `cluster_id` a cluster id; with
    neither, the only running cluster, else ``default`` (`ipcluster.state.choose`).
    `profile` is ipyparallel's name for where its clusters live; ipcluster has no IPython
    profiles, so it names the cluster id when no other is given. `context` (ipyparallel's zmq
    context) is accepted and not used: the client owns its sockets. Fails within `timeout`
    seconds with a clear error if the controller does not answer.
    """

    def __init__(self, url_file=None, profile: str | None = None, *, cluster_id: str | None = None,
                 context=None, timeout: float = 10) -> None:
        where = next((w for w in (url_file, cluster_id, profile) if w is not None), None)
        self.connection_file = connection.find(state.choose(None) if where is None else where)
        info = connection.read(self.connection_file)
        self.cluster_id = info.cluster_id
        self.timeout = timeout
        self.cluster = None  # the Cluster whose connect_client made this client, as ipyparallel's
        self.history: list[str] = []  # ids of the tasks this client submitted, in order
        self._futures: dict[str, TaskFuture] = {}
        self._init_records()
        self._dask = None  # the daskbridge.DaskOnEngines of become_dask, until stop_dask
        self._session = Session(info, self.connection_file, timeout)
        self._submitter = Submitter(self._session, self._futures, self.history,
                                    self._refresh_ids, self._keep_request, self._fetch)
        try:
            reply = self._session.request("hello")
        except BaseException:
            self._session.close()
            raise
        self._session.set_engine_ids(reply["ids"], reply.get("version"))
        self._session.store_problem = reply.get("store")
        self._activate_in_ipython()

    def _activate_in_ipython(self) -> None:
        """Inside IPython (already imported: a script never pays for it), the first client
        binds the %px magics to all its engines, as in ipyparallel (later ones: ``rc.activate()``)."""
        ipython = sys.modules.get("IPython")
        if ipython is None or ipython.get_ipython() is None:
            return
        try:
            activate_magics(self.direct_view("all", block=True), replace=False)
        except Exception as exc:  # a client works without its magics
            log.warning("could not activate the %%px magics: %s: %s", type(exc).__name__, exc)

    def activate(self, targets="all", suffix: str = "") -> DirectView:
        """In IPython: run ``%px{suffix}`` and its sibling magics on `targets` (a blocking
        view, as ipyparallel's); the view."""
        view = self.direct_view(targets, block=True)
        view.activate(suffix)
        return view

    # -- engines and views ------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        """Ids of the registered engines, kept current by the controller's events."""
        return list(self._session.engine_ids)

    def __len__(self) -> int:
        return len(self._session.engine_ids)

    def __iter__(self):
        return (self[i] for i in self.ids)

    def __getitem__(self, key) -> DirectView:
        """``rc[i]`` (one engine, single results), ``rc[a:b]``, ``rc[:]`` or ``rc[[0, 2]]``."""
        ids = self.ids
        if isinstance(key, slice):
            return self.direct_view(ids[key])
        if isinstance(key, int):
            if key < 0 and -len(ids) <= key:
                key = ids[key]
            if key not in ids:
                ids = self._refresh_ids()
            if key not in ids:
                raise NoSuchEngine("NoSuchEngine", f"no engine with id {key}; registered "
                                   f"engines: {ids}", engine_id=key)
            return self.direct_view(key)
        if isinstance(key, (list, tuple)):
            return self.direct_view(list(key))
        raise TypeError(f"index engines with an int, a slice or a list of ids, not {key!r}")

    def _engine(self, targets):
        """A negative engine id counts from the last registered engine (``-1``: the last)."""
        if isinstance(targets, int) and targets < 0:
            ids = self.ids if -len(self) <= targets else self._refresh_ids()
            if not -len(ids) <= targets:
                raise NoSuchEngine("NoSuchEngine", f"no engine {targets}: {len(ids)} engines "
                                   f"are registered ({ids})", engine_id=targets)
            return ids[targets]
        return targets

    def direct_view(self, targets="all", **flags) -> DirectView:
        """A view on `targets`; ``"all"`` means every engine registered at each call."""
        return DirectView(self, self._engine(targets), **flags)

    def load_balanced_view(self, targets=None, **flags) -> LoadBalancedView:
        """A view where the controller chooses the engine of each task, among `targets`
        (default: all; ``"all"`` too; an engine id or a list of them)."""
        targets = self._engine(targets)
        targets = [targets] if isinstance(targets, int) else None if targets == "all" else targets
        return LoadBalancedView(self, targets, **flags)

    def broadcast_view(self, targets="all", **flags) -> BroadcastView:
        """A DirectView; every call on several engines is already sent once and fanned out."""
        return BroadcastView(self, self._engine(targets), **flags)

    def executor(self, targets=None, **flags):
        """A `concurrent.futures.Executor` running on a load-balanced view."""
        return self.load_balanced_view(targets, **flags).executor

    def become_dask(self, targets="all", nanny: bool = False, scheduler_args: dict | None = None,
                    **worker_args):
        """Start a dask.distributed scheduler in the first of `targets` and a worker in each
        (sharing the engine's process and namespace); the connected ``distributed.Client``.

        `worker_args` go to ``distributed.Worker`` (default ``nthreads=1``); see
        `ipcluster.daskbridge.become_dask`. `stop_dask` stops them again.
        """
        from ipcluster import daskbridge

        if self._dask is not None:
            raise RuntimeError(f"dask already runs on engines {self._dask.worker_engines}; "
                               "call rc.stop_dask() first")
        self._dask = daskbridge.become_dask(self, targets, nanny, scheduler_args, **worker_args)
        return self._dask.client

    def stop_dask(self) -> None:
        """Stop what `become_dask` started; the engines go on serving ``apply``."""
        dask, self._dask = self._dask, None
        if dask is not None:
            dask.stop()

    def wait_for_engines(self, n: int | None = None, *, timeout: float | None = None,
                         block: bool = True, interactive: bool = False):
        """Wait until at least `n` engines (default 1) are registered; a progress bar if
        `interactive`. With ``block=False``, a `concurrent.futures.Future` of that instead."""
        if not block:
            future = concurrent.futures.Future()
            if len(self._refresh_ids()) >= (n or 1):
                future.set_result(None)
                return future

            def wait():
                try:
                    future.set_result(self.wait_for_engines(n, timeout=timeout))
                except BaseException as exc:  # the future's owner sees it
                    future.set_exception(exc)

            threading.Thread(target=wait, name="wait_for_engines", daemon=True).start()
            return future
        n = 1 if n is None else n
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        bar = None
        if interactive:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, unit="engines", desc="waiting for engines")
        try:
            while True:
                ids = self._refresh_ids()
                if bar is not None:
                    bar.update(min(len(ids), n) - bar.n)
                if len(ids) >= n:
                    return
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise NoEnginesRegistered(
                        f"{len(ids)} of {n} engines registered after {timeout} s; check the "
                        f"engine logs in {self.connection_file.parent}, or wait longer")
                with self._session.engines_changed:
                    self._session.engines_changed.wait(0.5 if left is None else min(0.5, left))
        finally:
            if bar is not None:
                bar.close()

    def spin(self) -> None:
        """Take in what the controller has sent so far (ipyparallel's ``spin``). The IO thread
        (or a thread waiting for a result) receives all the time; this is one round trip, so
        results sent before it returns are in their AsyncResults, and the engine ids are
        current."""
        self._refresh_ids()

    def _refresh_ids(self) -> list[int]:
        reply = self._session.request("query", {"what": "ids"})
        self._session.set_engine_ids(reply["ids"], reply.get("version"))
        return self.ids

    def provenance(self, label: str | None = None):
        """What ran where, as a W3C PROV document (``.serialize(format="json")``): the tasks
        labelled `label` (or all), their function, code and data hashes, engine, host, pid,
        times, and each engine's Python and packages. Warns if incomplete (no ``--db``)."""
        return provenance.of(self, label)

    @property
    def dashboard_link(self) -> str:
        """The URL of the cluster's live dashboard, started on first use (``ipcluster[dashboard]``)."""
        return dashboard.dashboard_link(self.connection_file)

    # -- waiting for and steering work ------------------------------------------------------

    def _task_ids(self, jobs) -> list[str]:
        """Task ids from None (all unfinished), AsyncResults, ids, history indices, or lists."""
        if jobs is None:
            return list(self._session.tasks)
        if isinstance(jobs, (str, int, AsyncResult)):
            jobs = [jobs]
        ids = []
        for job in jobs:
            if isinstance(job, AsyncResult):
                ids += job.msg_ids
            elif isinstance(job, int):
                ids.append(self.history[job])
            elif isinstance(job, str):
                ids.append(job)
            else:
                raise TypeError(f"expected an AsyncResult, a msg_id or a history index, not {job!r}")
        return ids

    @property
    def outstanding(self) -> set[str]:
        """Ids of this client's tasks that have not finished."""
        return set(self._session.tasks)

    def wait(self, jobs=None, timeout: float = -1) -> bool:
        """Wait for `jobs` (default: everything outstanding; any Future too); True if all
        finished in time."""
        jobs = [jobs] if isinstance(jobs, concurrent.futures.Future) else jobs
        others = [j for j in jobs or () if isinstance(j, concurrent.futures.Future)
                  and not isinstance(j, AsyncResult)]
        mine = None if jobs is None else [j for j in jobs if j not in others]
        futures = others + [self._futures[i] for i in self._task_ids(mine) if i in self._futures]
        done, not_done = concurrent.futures.wait(futures, None if timeout < 0 else timeout)
        return not not_done

    def wait_interactive(self, jobs=None, interval: float = 0.1, timeout: float | None = None) -> None:
        """Wait for `jobs` (default: everything outstanding) with a progress bar."""
        tasks = [self._futures[i] for i in self._task_ids(jobs) if i in self._futures]
        AsyncResult(tasks, "list").wait_interactive(interval, timeout)

    def abort(self, jobs=None, targets=None, block: bool = True, *, running: bool = True) -> None:
        """Stop tasks that have not finished: queued ones never run, running ones are
        interrupted (not with ``running=False``); each fails with `TaskAborted`. Default: all
        of this client's."""
        ids = self._task_ids(jobs)
        if targets is not None:
            wanted = {targets} if isinstance(targets, int) else set(targets)
            ids = [i for i in ids if self._futures.get(i) is not None
                   and self._futures[i].metadata["engine_id"] in wanted]
        self._session.request("control", {"action": "abort", "tasks": ids,
                                          "queued_only": not running})
        if block:
            self.wait(ids, timeout=self.timeout)

    def clear(self, targets=None, block: bool = True):
        """Empty the namespaces of the engines."""
        ar = self.direct_view("all" if targets is None else targets).apply_async(namespace.clear)
        return ar.get() if block else ar

    def send_signal(self, sig=signals.SIGINT, targets=None, block: bool = True) -> None:
        """Send a signal (a number or a name: ``"SIGINT"``, ``"INT"``) to the engine processes
        (SIGINT interrupts the running task only)."""
        if isinstance(sig, str) and not sig.isdigit():
            name = sig.upper() if sig.upper().startswith("SIG") else "SIG" + sig.upper()
            if not isinstance(getattr(signals, name, None), int):
                raise ValueError(f"unknown signal {sig!r}; give a number or a name like SIGINT")
            sig = getattr(signals, name)
        self._session.request("control", {"action": "signal", "signal": int(sig),
                                          "targets": self._targets(targets)})

    def shutdown(self, targets="all", hub: bool = False, block: bool = True) -> None:
        """Stop engines (and the controller too, with `hub`); they exit cleanly."""
        self._session.request("control", {"action": "shutdown", "hub": hub,
                                          "targets": self._targets(targets)})
        if block and not hub:
            deadline = time.monotonic() + self.timeout
            gone = set(self._targets(targets) or self.ids)
            while gone & set(self._refresh_ids()) and time.monotonic() < deadline:
                time.sleep(0.05)

    def _targets(self, targets):
        targets = self._engine(targets)
        if targets is None or targets == "all":
            return None
        return [targets] if isinstance(targets, int) else list(targets)

    def queue_status(self, targets=None, verbose: bool = False) -> dict:
        """``{engine_id: {"queue", "tasks", "completed"}, "unassigned": n}``, as ipyparallel."""
        reply = self._session.request("query", {"targets": self._targets(targets), "verbose": verbose})
        status = {int(k): v for k, v in reply["status"].items()}
        if isinstance(self._engine(targets), int):  # one engine: its own dict, as ipyparallel
            return status[self._engine(targets)]
        status["unassigned"] = reply["unassigned"]
        return status

    @property
    def store_problem(self) -> str | None:
        """Why the controller's durable store (``--db sqlite``) cannot write, or None. Also
        shown by ``ipcluster status``, and warned about (RuntimeWarning) on the next call."""
        return self._session.store_problem

    def engine_info(self) -> dict:
        """``{engine_id: {"pid", "host", "state", "tasks", "completed", "silent"}}`` for every
        registered engine; state is idle, busy or unresponsive."""
        engines = self._session.request("query", {})["engines"]
        return {int(k): v for k, v in engines.items()}

    # -- submitting (submission.py) ---------------------------------------------------------

    def _answer(self, call):
        """A view's blocking call: `call()` sends, and this thread receives the answer
        (`Receiver.answer`)."""
        return self._session.receiver.answer(call)

    def _submit(self, f, args: tuple, kwargs: dict, targets, *, balanced: bool,
                flags: dict | None = None, sizes: int = 1, done: dict | None = None):
        """Send one call (`Submitter.submit`); the views' way in."""
        return self._submitter.submit(f, args, kwargs, targets, balanced=balanced, flags=flags,
                                      sizes=sizes, done=done)

    # -- closing ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._session.closed

    def close(self) -> None:
        """Stop the IO thread and close the sockets; pending results fail with `ClientClosed`."""
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _repr_html_(self) -> str:
        return display.client_html(self)

    def __repr__(self) -> str:
        return f"<Client cluster_id={self.cluster_id!r} engines={len(self)}>"
