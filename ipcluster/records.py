"""Client API layer: the records of tasks, this client's and the controller's.

    rc.results, rc.metadata              this client's finished results and every task's metadata
    rc.get_result(msg_ids, owner=False)  earlier tasks, also another client's
    rc.db_query({...}), rc.hub_history() the controller's ledger (durable with --db sqlite)
    rc.resubmit(msg_ids)                 run earlier tasks again, as new tasks
    rc.purge_local_results / purge_hub_results / purge_results / purge_everything

`Client` inherits these; the controller's side is its ledger (controller/ledger.py).
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from datetime import datetime

from ipcluster.asyncresult import AsyncHubResult, AsyncResult
from ipcluster.errors import RemoteError
from ipcluster.protocol import pack, unpack
from ipcluster.task import Metadata, TaskFuture

__all__ = ["TaskRecords"]

# Requests are kept for `resubmit` up to these sizes (one request; all kept, the oldest dropped
# first), so that a long sweep does not keep every argument it sent in the client's memory.
RESUBMIT_LIMIT = 1 << 20
RESUBMIT_TOTAL = 64 << 20


class _Results(MutableMapping):
    """``msg_id -> value`` (or exception) for every finished task this client knows, and any
    value set by hand (ipyparallel's ``rc.results`` is a plain dict)."""

    def __init__(self, futures: dict) -> None:
        self._futures, self._set = futures, {}

    def _done(self) -> list[str]:
        return [k for k, f in self._futures.items() if f.done() and k not in self._set]

    def __getitem__(self, msg_id):
        if msg_id in self._set:
            return self._set[msg_id]
        f = self._futures[msg_id]
        if not f.done():
            raise KeyError(f"task {msg_id} has not finished")
        return f.exception() or f.result()

    def __setitem__(self, msg_id, value) -> None:
        self._set[msg_id] = value

    def __delitem__(self, msg_id) -> None:
        found = self._set.pop(msg_id, None) is not None
        if msg_id in self._futures and self._futures[msg_id].done():
            del self._futures[msg_id]
        elif not found:
            raise KeyError(msg_id)

    def __iter__(self):
        return iter(self._done() + list(self._set))

    def __len__(self) -> int:
        return len(self._done()) + len(self._set)


class _MetadataMap(MutableMapping):
    """``msg_id -> Metadata`` of every task this client knows; an unknown id gets an empty
    record, as ipyparallel's defaultdict does."""

    def __init__(self, futures: dict) -> None:
        self._futures, self._set = futures, {}

    def __getitem__(self, msg_id) -> Metadata:
        if msg_id in self._futures:
            return self._futures[msg_id].metadata
        return self._set.setdefault(msg_id, Metadata())

    def __contains__(self, msg_id) -> bool:  # not through __getitem__, which makes a record
        return msg_id in self._futures or msg_id in self._set

    def __setitem__(self, msg_id, value) -> None:
        self._set[msg_id] = Metadata(value)

    def __delitem__(self, msg_id) -> None:
        self._set.pop(msg_id, None)

    def __iter__(self):
        return iter([*self._futures, *(k for k in self._set if k not in self._futures)])

    def __len__(self) -> int:
        return len(self._futures) + sum(1 for k in self._set if k not in self._futures)


def _seconds(query):
    """A query with its datetimes as the seconds the controller's records hold."""
    if isinstance(query, datetime):
        return query.timestamp()
    if isinstance(query, dict):
        return {k: _seconds(v) for k, v in query.items()}
    if isinstance(query, (list, tuple)):
        return [_seconds(v) for v in query]
    return query


class TaskRecords:
    """What `Client` knows of earlier tasks (needs its `_session`, `_submitter`, `_futures`, `history`)."""

    def _init_records(self) -> None:
        self.results = _Results(self._futures)
        self.metadata = _MetadataMap(self._futures)
        self._requests: dict[str, tuple] = {}  # msg_id -> what resubmit sends again, oldest first
        self._kept = 0  # bytes in _requests
        self._keeping = threading.Lock()  # both, changed by any thread submitting

    def db_query(self, query: dict, keys: list[str] | None = None) -> list[dict]:
        """Records of tasks in the controller's ledger matching `query`, as ipyparallel's:
        ``rc.db_query({"label": "sweep-1", "status": "ok"}, keys=["msg_id"])``; operators
        $in, $nin, $eq, $ne, $lt, $lte, $gt, $gte. Durable with ``--db sqlite``."""
        if isinstance(keys, str):
            keys = [keys]
        if keys is not None and "msg_id" not in keys:
            keys = ["msg_id", *keys]
        records = self._session.request("control", {"action": "db_query", "query": _seconds(query),
                                                    "keys": keys})["records"]
        return [Metadata(r) for r in records]  # times as datetimes, as ipyparallel's

    def db_history(self) -> list[dict]:
        """Every task the controller still records: id, state, status, engine, label, times."""
        return self._session.request("control", {"action": "history"})["tasks"]

    def hub_history(self) -> list[str]:
        """The msg ids of every task the controller records, in the order they were sent."""
        records = self.db_query({}, keys=["msg_id", "submitted"])
        return [r["msg_id"] for r in sorted(records, key=lambda r: r.seconds("submitted") or 0)]

    def get_result(self, indices_or_msg_ids=None, block: bool | None = None,
                   owner: bool = True, timeout=None):
        """An AsyncResult for earlier tasks, including ones submitted by another client (an
        `AsyncHubResult` with ``owner=False``)."""
        ids = self._task_ids(indices_or_msg_ids if indices_or_msg_ids is not None else -1)
        kind = AsyncResult if owner else AsyncHubResult
        ar = kind(self._fetch(ids), "single" if len(ids) == 1 else "list", client=self,
                  owner=owner)
        return ar.get(timeout) if block else ar

    def _fetch(self, ids: list[str], size: int = 1) -> list[TaskFuture]:
        """Futures for tasks by id: ours, or fetched from the controller."""
        tasks, fetch = [], []
        for task_id in ids:
            if task_id not in self._futures:
                self._futures[task_id] = TaskFuture(task_id, size=size)
                self._session.tasks[task_id] = self._futures[task_id]
                fetch.append(task_id)
            tasks.append(self._futures[task_id])
        if fetch:
            reply = self._session.request("control", {"action": "fetch", "tasks": fetch})
            for task_id in reply.get("cells", []):  # code cells: their values are ExecuteReplies
                self._futures[task_id].cell = True
            for task_id in reply["missing"]:
                self._session.tasks.pop(task_id, None)
                self._futures.pop(task_id).set_exception(RemoteError(
                    "KeyError", f"the controller has no task {task_id!r}: unknown, or its result "
                    "was culled (see ControllerOptions.max_results) or purged"))
        return tasks

    def _keep_request(self, task_id: str, header: dict, index: int, content, buffers) -> None:
        # the header packed: a kept request is then bytes and ints, which the garbage collector
        # stops walking (a dict each made every full collection walk all of them), and counted
        header = pack(header)
        size = len(header) + len(content) + (sum(memoryview(b).nbytes for b in buffers) if buffers else 0)
        if size > RESUBMIT_LIMIT:
            return
        with self._keeping:
            self._requests[task_id] = (header, index, content, tuple(buffers), size)  # () untracked
            self._kept += size
            while self._kept > RESUBMIT_TOTAL:
                self._kept -= self._requests.pop(next(iter(self._requests)))[-1]

    def resubmit(self, indices_or_msg_ids, block: bool | None = None):
        """Run earlier tasks of this client again, as new tasks with the same call and flags;
        an AsyncResult of the new ones. Requests over 1 MiB are not kept for this."""
        ids = self._task_ids(indices_or_msg_ids)
        missing = [i for i in ids if i not in self._requests]
        if missing:
            raise RemoteError("KeyError", f"no request kept for {missing}: resubmit runs again "
                              "recent tasks this client sent (each request up to 1 MiB)")
        tasks = []
        for task_id in ids:
            header, index, content, buffers, _ = self._requests[task_id]
            tasks += self._submitter.send_again(unpack(header), index, content, buffers)
        ar = AsyncResult(tasks, "single" if len(tasks) == 1 else "list", client=self)
        return ar.get() if block else ar

    def _local_ids(self, jobs, targets) -> list[str]:
        if jobs == "all":
            return list(self._futures) + list(self.results._set)
        ids = self._task_ids(jobs) if jobs else []
        if targets:
            wanted = {targets} if isinstance(targets, int) else set(targets)
            ids += [k for k, f in self._futures.items() if f.metadata["engine_id"] in wanted]
        return ids

    def purge_local_results(self, jobs=(), targets=()) -> None:
        """Forget finished results in this client (``jobs="all"`` for all); RuntimeError if
        one of them has not finished."""
        ids = self._local_ids(jobs, targets)
        running = [i for i in ids if i in self._futures and not self._futures[i].done()]
        if running:
            raise RuntimeError(f"cannot purge the results of tasks that have not finished: "
                               f"{running[:5]}; wait for them (rc.wait()) or abort them first")
        for task_id in ids:
            self._futures.pop(task_id, None)
            with self._keeping:
                self._kept -= self._requests.pop(task_id, (0,))[-1]
            self.results._set.pop(task_id, None)
            self.metadata._set.pop(task_id, None)

    def purge_hub_results(self, jobs=(), targets=()) -> None:
        """Forget finished results in the controller (``jobs="all"`` for all)."""
        ids = "all" if jobs == "all" else self._task_ids(jobs) if jobs else []
        if targets:
            wanted = {targets} if isinstance(targets, int) else set(targets)
            ids = [r["msg_id"] for r in self.db_query({}, keys=["msg_id", "engine_id"])
                   if r.get("engine_id") in wanted]
        self._session.request("control", {"action": "purge", "tasks": ids})

    def purge_results(self, jobs=(), targets=()) -> None:
        """Forget finished results here and in the controller (``jobs="all"`` for all)."""
        done = jobs if jobs == "all" else [i for i in self._local_ids(jobs, targets)
                                           if i not in self._futures or self._futures[i].done()]
        self.purge_hub_results(jobs if jobs == "all" else done)
        if done == "all":
            done = [i for i, f in self._futures.items() if f.done()] + list(self.results._set)
        self.purge_local_results(done)

    def purge_everything(self) -> None:
        """Forget every finished result, here and in the controller, and this client's history."""
        self.purge_results("all")
        self.history.clear()
