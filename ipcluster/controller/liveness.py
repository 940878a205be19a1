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

Silence is paced so that its cost does not grow with the number of engines: engines beat every
second up to `max_beat_rate` engines, then each beats less often (told in its register reply
and in beat answers), so the controller hears at most about that many beats a second; the
silence limits stretch with the longest interval an engine may still be using. Silence counts
only up to the last moment the controller had read everything engines sent (`caught_up`): a
controller behind on its own queue cannot tell an engine's silence from its backlog.
"""

from __future__ import annotations

import logging
import math
import time

from ipcluster.controller import recovery
from ipcluster.errors import TaskTimeout

log = logging.getLogger("ipcluster.controller")

BEAT = 1.0  # seconds between an engine's beats, until the controller says otherwise
LONGEST_BEAT = 8.0  # seconds; an engine stops after 60 s without hearing from the controller
MISSED = 3  # beats an engine told a longer interval may miss before it counts as silent


def beat_interval(ctl) -> float:
    """Seconds between an engine's beats: 1, or more past `max_beat_rate` engines."""
    need = len(ctl.registry) / ctl.options.max_beat_rate
    return min(LONGEST_BEAT, max(BEAT, float(math.ceil(need))))


def limits(ctl) -> tuple[float, float]:
    """Seconds of silence after which an engine is unresponsive, and dead: the controller's
    options, stretched by the beats a longer interval lets an engine skip."""
    extra = MISSED * (ctl.registry.longest_beat(BEAT) - BEAT)
    return ctl.options.unresponsive_after + extra, ctl.options.engine_timeout + extra


def check(ctl, caught_up: float) -> None:
    """Silent engines are shown unresponsive, then after the grace declared dead; silence is
    counted up to `caught_up` (when the controller last had nothing unread from engines)."""
    unresponsive, dead = limits(ctl)
    for engine in ctl.registry.silent_since(caught_up - unresponsive):
        if not engine.frozen:  # its watchdog is silent too: the whole node may be stopped
            freeze(ctl, engine, next(iter(engine.tasks), None),
                   f"silent for {caught_up - engine.last_seen:.1f} s")
    for engine in ctl.registry.silent_since(caught_up - dead):
        ctl.drop_engine(engine, f"silent for more than {dead} s")


def watchdog_said(ctl, engine, said: dict) -> None:
    """A report from `engine`'s watchdog."""
    if isinstance(said.get("timeout"), str):
        timed_out(ctl, engine, said["timeout"], said.get("grace"))
    elif said.get("state") == "busy":
        ctl.registry.heard(engine, time.monotonic())  # alive: it is not silent, only busy
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
