"""Processes layer: what becomes of work when something fails: a task sent again after its
engine died or it raised (`retry`), moved off an engine that cannot meet its dependency
(`move`), and the unfinished work taken over from a controller that died (`restore`)."""

from __future__ import annotations

import logging

import msgpack

from ipcluster.controller.ledger import Task
from ipcluster.controller.scheduler import Pending
from ipcluster.errors import ImpossibleDependency
from ipcluster.protocol import resign, unpack

log = logging.getLogger("ipcluster.controller")


def restored_result(ctl, task: Task, msg) -> None:
    """A result sent to the controller that died, by an engine not yet registered again:
    signed with the key, so it is a real result; take it (once)."""
    ctl.scheduler.remove(task.id)  # it was to be sent again
    again = ctl.registry.by_id.get(task.engine)
    if again is not None and again.tasks.pop(task.id, None) is not None:
        ctl.scheduler.finished(again.id)  # sent again already: that copy's answer is dropped
    ctl.ledger.finish(task, msg.frames, str(msg.header.get("status")), msg.header.get("completed"))
    ctl._forward(task, msg.frames)
    ctl._on_graph(ctl.graph.finished(task.id, msg.header.get("status") == "ok", task.engine))

def restore(ctl) -> None:
    """Take over the unfinished work of the controller that died (from the store): queued
    and running balanced tasks are sent again (a result that arrives first wins; a second
    is dropped)."""
    ctl.restored = True
    store = ctl.ledger.store
    if store is None:
        raise ValueError("restore needs the task store: start the controller with --db sqlite")
    count = 0
    for row in store.rows("WHERE status IS NULL AND request IS NOT NULL"):
        request = msgpack.unpackb(row["request"])
        targets = None if row["targets"] is None else frozenset(msgpack.unpackb(row["targets"]))
        task = Task(row["msg_id"], row["client"], balanced=True, targets=targets,
                    label=row["label"], key=row["key"], submitted=row["submitted"],
                    request=request)
        ctl.ledger.tasks[task.id] = task  # already in the store
        ctl.scheduler.submit(Pending(task.id, targets, resign(ctl.signer, request, ctl.ids())[1:]))
        count += 1
    log.info("restored: %d unfinished tasks will be sent again as engines register", count)

def retry(ctl, task: Task, eid: int, msg=None) -> bool:
    """Send a balanced task again, preferably to another engine, if it has retries left
    and failed by raising or by losing its engine (not by abort or timeout)."""
    if not task.balanced or task.retries <= 0 or task.request is None:
        return False
    if msg is not None:
        error = unpack(msg.content) or {}  # errors are msgpack, never pickle
        if error.get("error") in ("TaskAborted", "TaskTimeout"):
            return False
    task.retries -= 1
    task.tried.add(eid)
    task.engine = None
    allowed = set(ctl.registry.by_id) if task.targets is None else set(task.targets)
    others = frozenset(allowed - task.tried) or task.targets
    log.info("task %s failed on engine %d; trying again (%d retries left)", task.id, eid,
             task.retries)
    # a new message id: the engine it failed on may be the only one left
    ctl.scheduler.submit(Pending(task.id, others, resign(ctl.signer, task.request, ctl.ids())[1:],
                                  task.priority))
    return True

def move(ctl, task: Task, engine, msg) -> bool:
    """Send a task whose dependency was unmet on `engine` to an engine not yet tried."""
    task.tried.add(engine.id)
    allowed = set(ctl.registry.by_id) if task.targets is None else set(task.targets)
    untried = frozenset(allowed - task.tried)
    task.engine = None
    if untried:  # each engine sees the request once, so none takes it for a replay
        ctl.scheduler.submit(Pending(task.id, untried, task.request, task.priority))
        return True
    reason = (unpack(msg.content) or {}).get("evalue", "")  # errors are msgpack, never pickle
    ctl.fail(task, ImpossibleDependency(
        "ImpossibleDependency", f"no engine meets the task's dependencies (tried engines "
        f"{sorted(task.tried)}); the last said: {reason}"))
    return True
