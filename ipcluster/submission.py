"""Client API layer: a call made into an apply request: its futures registered, its record
(`protocol.Apply`) built, and the request handed to the session, which sends it.

A `Client` owns one `Submitter`; the views submit through the client (`Client._submit`).
"""

from __future__ import annotations

from ipcluster import fingerprint, namespace, serialize
from ipcluster.dependency import Dependency
from ipcluster.errors import NoEnginesRegistered
from ipcluster.protocol import Apply, now
from ipcluster.task import TaskFuture

__all__ = ["Submitter"]


# what sending a request added to its header, so not kept for sending it again: its time (a
# resubmit past the controller's max_age would be refused as stale), its buffers' lengths and
# the ways they went (shared memory, a direct link), the digest of its call (`key`)
SENT = frozenset({"t", "buffers", "segments", "direct", "shm_host", "link", "key"})


class Submitter:
    """Sends calls for a client: `futures` and `history` are the client's tables of its tasks;
    `refresh_ids` asks the controller for the engine ids, `keep` keeps a request for
    `resubmit`, `fetch` gets the results of finished tasks."""

    def __init__(self, session, futures: dict, history: list, refresh_ids, keep, fetch) -> None:
        self.session = session
        self.futures = futures
        self.history = history
        self.refresh_ids = refresh_ids
        self.keep = keep
        self.fetch = fetch

    def submit(self, f, args: tuple, kwargs: dict, targets, *, balanced: bool,
               flags: dict | None = None, sizes: int = 1, done: dict | None = None):
        """Send one call, to each of `targets` (direct) or to one engine chosen by the controller.

        A labelled call carries a digest of itself (`key`); if `done` maps that digest to a
        finished task (a labelled sweep run again), that task's result is fetched instead.
        Returns the tasks and a tracker (if ``track`` is set)."""
        session = self.session
        session.check_usable()
        flags = flags or {}
        if balanced and not session.engine_ids and not self.refresh_ids():
            raise NoEnginesRegistered(
                "no engines are registered, so the task would wait forever; start some "
                "(`ipcluster start`, Cluster.start_engines) or call rc.wait_for_engines(n) first")
        content, buffers = serialize.dumps_call(f, args, kwargs)
        serialize.check_size(content, buffers, session.info.max_message_size, "this call")
        label = flags.get("label")
        key = serialize.digest(content, buffers) if label is not None else None
        if done and key in done:
            return self.fetch([done[key]], sizes), None
        ids = session.ids
        if balanced:
            tasks = [TaskFuture(ids(), label=label, size=sizes)]
        else:
            tasks = [TaskFuture(ids(), t, label=label, size=sizes) for t in targets]
        if f is namespace.execute:
            for task in tasks:
                task.cell = True
        after, follow = flags.get("after"), flags.get("follow")
        request = Apply(
            [t.task_id for t in tasks], targets, balanced, label=label, key=key,
            fn=fingerprint.qualified_name(fingerprint.user_function(f, args)),
            timeout=flags.get("timeout"), time_limit=flags.get("time_limit"),
            retries=flags.get("retries") or 0, priority=flags.get("priority") or 0,
            submitted=now(),  # dependencies as plain data: {"ids": [...], "all", ...}
            after=None if after is None else Dependency.of(after).to_wire(),
            follow=None if follow is None else Dependency.of(follow).to_wire())
        with session.submitting:
            for task in tasks:
                session.tasks[task.task_id] = task
            header = request.header(ids())
            tracker = session.sender.send(header, content, buffers, track=bool(flags.get("track")))
        # after the request went: none of this is needed to handle its result (a result
        # handled meanwhile has left `session.tasks`, and only that table is looked at)
        futures, history = self.futures, self.history
        for index, task in enumerate(tasks):
            futures[task.task_id] = task
            history.append(task.task_id)
            self.keep(task.task_id, header, index, content, buffers)
        return tasks, tracker

    def send_again(self, header: dict, index: int, content, buffers) -> list[TaskFuture]:
        """A kept request (task `index` of `header`) sent again as a new task (`resubmit`)."""
        session = self.session
        session.check_usable()
        target = None if header["balanced"] else header["targets"][index]
        task = TaskFuture(session.ids(), target, label=header.get("label"))
        again = {k: v for k, v in header.items() if k not in SENT}
        again.update(id=session.ids(), tasks=[task.task_id], submitted=now(),
                     targets=header["targets"] if target is None else [target])
        with session.submitting:
            session.tasks[task.task_id] = self.futures[task.task_id] = task
            self.history.append(task.task_id)
            session.sender.send(again, content, buffers)
        self.keep(task.task_id, again, 0, content, buffers)
        return [task]
