"""Processes layer: what the controller concludes about an engine that has gone quiet, from
its watchdog (a process beside each engine that needs no GIL: `engine/watchdog.py`) or from
silence alone.

- **busy**: its watchdog says it runs, in a call that holds the GIL. It is alive: its work is
  left alone and it is never dropped for silence.
- **frozen**: its watchdog says it is stopped (SIGSTOP), or engine and watchdog are both silent
  for `unresponsive_after`. Nothing new is sent to it; its queued tasks, which it has not
  started, go to other engines at once (without using a retry); its running task is run again
  elsewhere if it has `retries` left. If it comes back, the first result of each task wins and
  later ones are discarded, so every task completes once.
- **timed out**: its watchdog saw a task run past `time_limit + kill_grace`, reported it and ended
  the engine: the task fails with `TaskTimeout`; the engine's queued tasks move.
"""

from __future__ import annotations

import logging
import time

from ipcluster.controller import recovery
from ipcluster.errors import TaskTimeout

log = logging.getLogger("ipcluster.controller")


def watchdog_said(ctl, engine, said: dict) -> None:
    """A report from `engine`'s watchdog."""
    if isinstance(said.get("timeout"), str):
        timed_out(ctl, engine, said["timeout"], said.get("grace"))
    elif said.get("state") == "busy":
        engine.last_seen = time.monotonic()  # alive: it is not silent, only busy
        engine.responsive = True
        if engine.frozen:
            thaw(ctl, engine)
    elif said.get("state") == "stopped" and not engine.frozen:
        task = said.get("task")
        freeze(ctl, engine, task if isinstance(task, str) else None, "its process is stopped")


def freeze(ctl, engine, running: str | None, why: str) -> None:
    """Send nothing more to `engine`; move its queued tasks (and, with retries, its running
    one) to other engines."""
    engine.frozen, engine.responsive = True, False
    ctl.scheduler.pause(engine.id)
    moved, retried = _move_queued(ctl, engine, running), []
    task = ctl.ledger.get(running)
    if task is not None and task.result is None and engine.tasks.get(running):
        if task.retries > 0:
            engine.tasks.pop(running)
            ctl.scheduler.finished(engine.id)
            recovery.retry(ctl, task, engine.id)
            retried.append(running)
    if moved:  # should it come back, it must not run them (its answer is ignored)
        ctl.send_control(engine, {"action": "withdraw", "tasks": moved})
    log.warning("engine %d (pid %d on %s) is frozen (%s): %d queued tasks moved, %d running "
                "task(s) sent again", engine.id, engine.pid, engine.host, why, len(moved),
                len(retried))
    ctl.publish({"event": "engine_unresponsive", "id": engine.id})
    ctl.dispatch()


def thaw(ctl, engine) -> None:
    engine.frozen = False
    ctl.scheduler.resume(engine.id)
    log.info("engine %d is running again", engine.id)
    ctl.dispatch()


def timed_out(ctl, engine, task_id: str, grace) -> None:
    task = ctl.ledger.get(task_id)
    if task is not None and task.result is None and engine.tasks.pop(task_id, None) is not None:
        ctl.scheduler.finished(engine.id)
        ctl.fail(task, TaskTimeout(
            "TaskTimeout", f"ran past its time_limit and did not stop within {grace} s of being "
            "interrupted (a call that holds the GIL, or ignores signals); its engine was ended "
            "(and is restarted where its launcher can)", engine_id=engine.id))
    _move_queued(ctl, engine, None)
    ctl.drop_engine(engine, f"its watchdog ended it: task {task_id} ran past its time_limit")


def _move_queued(ctl, engine, running: str | None) -> list[str]:
    """Queue again the balanced tasks `engine` holds but has not started."""
    moved = []
    for task_id, balanced in list(engine.tasks.items()):
        task = ctl.ledger.get(task_id)
        if not balanced or task_id == running or task is None or task.result is not None:
            continue
        engine.tasks.pop(task_id)
        ctl.scheduler.finished(engine.id)
        recovery.requeue(ctl, task)
        moved.append(task_id)
    return moved
