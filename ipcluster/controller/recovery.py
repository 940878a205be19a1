"""Processes layer: what becomes of work when something fails or waits: a task sent again after
its engine died or it raised (`retry`), moved off an engine that cannot meet its dependency
(`move`), taken back from an engine that has not started it (`withdraw`, `withdrawn`; asked of
an engine stalled on a long task while another idles: `rebalance`), and the unfinished work
taken over from a controller that died (`restore`).

The "not started" handshake: the controller asks an engine to give back queued balanced tasks;
the engine's control thread answers, under the same lock its main thread takes to start a task,
which it gave back ("withdrawn") and which had started. Only a withdrawn task is queued again
here, so a task moved this way never runs twice.
"""

from __future__ import annotations

import logging

import msgpack

from ipcluster.controller.ledger import Task
from ipcluster.controller.scheduler import Pending
from ipcluster.errors import ImpossibleDependency
from ipcluster.protocol import resign, unpack

STALL = 0.05  # seconds without a result after which an engine's queued tasks may move to an
# idle engine: long enough that a stream of short tasks never moves, short beside a long task

log = logging.getLogger("ipcluster.controller")


def restored_result(ctl, task: Task, msg) -> None:
    """A result sent to the controller that died, by an engine not yet registered again:
    signed with the key, so it is a real result; take it (once)."""
    ctl.scheduler.remove(task.id)  # it was to be sent again
    again = ctl.registry.by_id.get(task.engine)
    if again is not None and again.tasks.pop(task.id, None) is not None:
        ctl.scheduler.finished(again.id)  # sent again already: that copy's answer is dropped
    ctl.ledger.finish(task, msg.frames, str(msg.header.get("status")), msg.header.get("completed"))
    ctl.forward(task, msg.frames)
    ctl.settle(ctl.graph.finished(task.id, msg.header.get("status") == "ok", task.engine))

def restore(ctl) -> None:
    """Take over the unfinished work of the controller that died (from the store): queued
    and running tasks are sent again, balanced ones as the scheduler sees fit, direct ones to
    their engine once it registers again (a result that arrives first wins; a second is
    dropped)."""
    ctl.restored = True
    store = ctl.ledger.store
    if store is None:
        raise ValueError("restore needs the task store: start the controller with --db sqlite")
    count = 0
    for row in store.rows("WHERE status IS NULL AND request IS NOT NULL"):
        request = msgpack.unpackb(row["request"])
        balanced = bool(row["balanced"])
        if balanced:
            targets = None if row["targets"] is None else frozenset(msgpack.unpackb(row["targets"]))
        elif row["engine_id"] is not None:
            targets = frozenset([row["engine_id"]])
        else:
            continue  # a direct task never sent: its engine was missing, and it failed
        task = Task(row["msg_id"], row["client"], balanced=balanced,
                    targets=targets if balanced else None, allowed=targets,
                    label=row["label"], key=row["key"],
                    submitted=row["submitted"], request=request, held=True)
        ctl.ledger.tasks[task.id] = task  # already in the store
        ctl.scheduler.submit(Pending(task.id, targets, resign(ctl.signer, request, ctl.ids())))
        count += 1
    log.info("restored: %d unfinished tasks will be sent again as engines register", count)


def held(ctl, engine, task_ids: list[str]) -> None:
    """`engine`, registering again with a restored controller, still has these tasks (running
    or queued): they stay its own and are not sent again. One sent again already to another
    engine is asked back from it (if that one started it, its result is the late one and is
    discarded), so each runs once."""
    for task_id in task_ids:
        task = ctl.ledger.get(task_id)
        if task is None or task.result is not None or engine.tasks.get(task_id) is not None:
            continue
        if not ctl.scheduler.remove(task_id) and task.engine is not None:
            other = ctl.registry.by_id.get(task.engine)
            if other is not None and other.tasks.pop(task_id, None) is not None:
                ctl.scheduler.finished(other.id)
                ctl.send_control(other, {"action": "withdraw", "tasks": [task_id]})
        task.engine = engine.id
        engine.tasks[task_id] = task.balanced
        ctl.scheduler.started(engine.id)
        if ctl.ledger.store is not None:
            ctl.ledger.store.sent(task)


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
    task.tried |= {eid}
    task.engine = None
    allowed = set(ctl.registry.by_id) if task.targets is None else set(task.targets)
    others = frozenset(allowed - task.tried)
    log.info("task %s failed on engine %d; trying again (%d retries left)", task.id, eid,
             task.retries)
    ctl.wait_at_most(task)
    if not others and task.timeout:  # failed everywhere: it waits for its timeout, as in
        return True  # ipyparallel (without one it may run again where it failed)
    others = others or task.targets
    # a new message id: the engine it failed on may be the only one left
    ctl.scheduler.submit(Pending(task.id, others, resign(ctl.signer, task.request, ctl.ids()),
                                  task.priority))
    return True

def widen(ctl, task: Task, pending: Pending) -> bool:
    """A retried task kept off the engines it failed on, stranded because the others left too:
    let it wait for any engine its own targets allow (a restarted engine keeps its id), rather
    than fail it for a restriction the user never asked for."""
    if not task.tried or pending.targets == task.targets:
        return False
    if task.targets is not None and not task.targets & set(ctl.registry.by_id):
        return False
    ctl.scheduler.submit(Pending(task.id, task.targets, pending.payload, pending.priority))
    return True


def move(ctl, task: Task, engine, msg) -> bool:
    """Send a task whose dependency was unmet on `engine` to an engine not yet tried."""
    task.tried |= {engine.id}
    allowed = set(ctl.registry.by_id) if task.targets is None else set(task.targets)
    untried = frozenset(allowed - task.tried)
    task.engine = None
    if untried:  # each engine sees the request once, so none takes it for a replay
        ctl.wait_at_most(task)
        ctl.scheduler.submit(Pending(task.id, untried, task.request, task.priority))
        return True
    reason = (unpack(msg.content) or {}).get("evalue", "")  # errors are msgpack, never pickle
    ctl.fail(task, ImpossibleDependency(
        "ImpossibleDependency", f"no engine meets the task's dependencies (tried engines "
        f"{sorted(task.tried)}); the last said: {reason}"))
    return True


def requeue(ctl, task: Task) -> None:
    """Queue a balanced task again for the scheduler to place, with the restriction it was sent
    with (a retried task stays off the engines it failed on), as a new message, so that an
    engine that saw it before does not take it for a replay."""
    task.engine = None
    ctl.scheduler.submit(Pending(task.id, task.allowed,
                                 resign(ctl.signer, task.request, ctl.ids()), task.priority))


def rebalance(ctl, now: float) -> None:
    """An engine is idle and nothing waits for one: ask engines stalled on a long task to give
    back the tasks queued behind it (an engine runs its tasks in the order it got them, so
    all but its first have not started; the handshake settles a race)."""
    idle = ctl.scheduler.idle
    for eid in list(ctl.scheduler.movable()):
        engine = ctl.registry.by_id.get(eid)
        if engine is None or now - engine.progressed < STALL:
            continue
        queued = [t for t in list(engine.tasks)[1:] if engine.tasks[t]
                  and (task := ctl.ledger.get(t)) is not None
                  and (task.allowed is None or not task.allowed.isdisjoint(idle))]
        withdraw(ctl, engine, queued)


def withdraw(ctl, engine, task_ids) -> list[str]:
    """Ask `engine` to give back the balanced tasks among `task_ids` that it has queued and not
    started; `withdrawn` queues again those it gives back. Returns the ids asked for."""
    asked = [t for t in task_ids if engine.tasks.get(t) and t not in engine.withdrawing]
    if asked:
        engine.withdrawing.update(asked)
        ctl.send_control(engine, {"action": "withdraw", "tasks": asked})
    return asked


def withdrawn(ctl, engine, reply: dict) -> list[str]:
    """The engine's answer to `withdraw`: tasks it gave back are queued again (unless they were
    moved off it meanwhile); tasks it had started stay with it. Returns the ids queued again."""
    given = [t for t in reply.get("withdrawn", []) if isinstance(t, str)]
    engine.withdrawing.difference_update(given)
    engine.withdrawing.difference_update(t for t in reply.get("started", []) if isinstance(t, str))
    queued = []
    for task_id in given:
        task = ctl.ledger.get(task_id)
        if engine.tasks.pop(task_id, None) is None or task is None or task.result is not None:
            continue  # moved off it already (it froze), or finished
        ctl.scheduler.finished(engine.id)
        requeue(ctl, task)
        queued.append(task_id)
    return queued
