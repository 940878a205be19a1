"""Processes layer: what a client's ``control`` request can ask of the controller.

Each action is a function ``(controller, client identity, request) -> reply dict``, found by
name in `ACTIONS`; one that reads the SQLite store returns a `Later` instead, so that the read
runs off the loop. Actions on engines (abort, signal, shutdown) are passed on to them as
``control`` messages; the rest act on the ledger.
"""

from __future__ import annotations

import logging

from ipcluster.controller.ledger import Task
from ipcluster.controller.reader import Later
from ipcluster.controller.provenance import provenance
from ipcluster.controller.watch import watch
from ipcluster.errors import TaskAborted
from ipcluster.protocol import encode, pack, resign

log = logging.getLogger("ipcluster.controller")


def _engines(ctl, request: dict) -> list:
    targets = request.get("targets")
    if targets is None or targets == "all":
        return list(ctl.registry.by_id.values())
    if not isinstance(targets, list):
        raise ValueError(f"targets must be a list of engine ids or 'all', not {targets!r}")
    return [ctl.registry.by_id[t] for t in targets if t in ctl.registry.by_id]


def abort(ctl, client: bytes, request: dict) -> dict:
    """Queued tasks fail with TaskAborted here; tasks on engines are stopped there (only
    those not started yet, with ``queued_only``)."""
    by_engine: dict[int, list[str]] = {}
    aborted = []
    for task_id in request.get("tasks", []):
        task = ctl.ledger.get(task_id)
        if task is None or task.result is not None:
            continue
        if task.engine is None:
            ctl.scheduler.remove(task.id)
            ctl.fail(task, TaskAborted("TaskAborted", "aborted before it started"))
        else:
            by_engine.setdefault(task.engine, []).append(task.id)
        aborted.append(task_id)
    for eid, ids in by_engine.items():
        if eid in ctl.registry.by_id:
            ctl.send_control(ctl.registry.by_id[eid], {"action": "abort", "tasks": ids,
                                                       "queued_only": bool(request.get("queued_only"))})
    return {"aborted": aborted}


def signal(ctl, client: bytes, request: dict) -> dict:
    engines = _engines(ctl, request)
    for engine in engines:
        ctl.send_control(engine, {"action": "signal", "signal": int(request.get("signal", 2))})
    return {"engines": [e.id for e in engines]}


def shutdown(ctl, client: bytes, request: dict) -> dict:
    engines = _engines(ctl, request)
    for engine in engines:
        ctl.send_control(engine, {"action": "shutdown"})
    if request.get("hub"):
        log.info("shutdown of the controller requested by a client")
        ctl.stopping = True
    return {"engines": [e.id for e in engines]}


def fetch(ctl, client: bytes, request: dict):
    """Send finished results (and their output) to `client`; unfinished ones when they finish.
    `have` ({task id: [stdout chars, stderr chars]}) says how much output the client has, so
    only the rest is sent. Results no longer in memory (culled, or before a restart) are read
    from the store off the loop, all in one query."""
    tasks = request.get("tasks", [])
    if not isinstance(tasks, list):
        raise ValueError(f"fetch: 'tasks' must be a list of task ids, not {tasks!r}")
    have = request.get("have") if isinstance(request.get("have"), dict) else {}
    store = ctl.ledger.store
    unknown = [t for t in tasks if isinstance(t, str) and ctl.ledger.get(t) is None]
    if store is None or not unknown:
        return _send(ctl, client, tasks, {}, have)
    return Later(lambda: store.results(unknown), lambda found: _send(ctl, client, tasks, found, have))


CELL = "ipcluster.namespace.execute"  # the function of a code cell (`execute`), as named


def _send(ctl, client: bytes, tasks: list, stored: dict, have: dict) -> dict:
    missing, cells = [], []
    for task_id in tasks:
        task = ctl.ledger.get(task_id)
        if task is None and task_id in stored:
            frames, stdout, stderr, engine = stored[task_id]
            task = Task(task_id, b"", engine=engine, result=frames, stdout=stdout, stderr=stderr)
        if task is None:
            missing.append(task_id)
            continue
        if task.function == CELL:
            cells.append(task_id)
        if task.result is None:
            if client != task.client:  # its own client gets it anyway: once, not twice
                task.watchers |= {client}
            else:  # it asks, so it waits: send it even if restored (see sync)
                task.held = False
        else:
            held = have.get(task_id) if isinstance(have.get(task_id), list) else [0, 0]
            for name, start in zip(("stdout", "stderr"), held):
                text = getattr(task, name)[start if isinstance(start, int) else 0:]
                if text:
                    header = {"kind": "output", "id": ctl.ids(), "parent": task.id,
                              "engine": task.engine}
                    ctl.deliver(client, encode(ctl.signer, header, pack({"name": name, "text": text})))
            # a resend is a new message: the client must not take it for a replay
            ctl.deliver(client, resign(ctl.signer, task.result, ctl.ids()))
    return {"missing": missing, "cells": cells}


def sync(ctl, client: bytes, request: dict):
    """A client (re)connected and waits for `tasks`: say which are finished and which this
    controller does not know. Anything it was sent before this reply arrives before it, so
    the client then fetches exactly the finished results it still lacks: none twice. A task
    restored after a restart is sent to its client only once the client says it waits for it
    (it may have had the result from the controller that died, before that one stored it)."""
    tasks = request.get("tasks", [])
    if not isinstance(tasks, list):
        raise ValueError(f"sync: 'tasks' must be a list of task ids, not {tasks!r}")
    finished, unknown = [], []
    for task_id in tasks:
        task = ctl.ledger.get(task_id)
        if task is None:
            unknown.append(task_id)
        elif task.result is not None:
            finished.append(task_id)
        elif client != task.client:
            task.watchers |= {client}
        else:
            task.held = False
    store = ctl.ledger.store
    if store is None or not unknown:
        return {"finished": finished, "missing": unknown}
    return Later(lambda: store.results(unknown), lambda found: {
        "finished": finished + [t for t in unknown if t in found],
        "missing": [t for t in unknown if t not in found]})


def purge(ctl, client: bytes, request: dict) -> dict:
    ids = request.get("tasks")
    ids = ctl.ledger.finished_ids() if ids == "all" else ids or []
    for task_id in ids:
        ctl.ledger.purge(task_id)
        ctl.graph.forget(task_id)
    return {"purged": len(ids)}


def db_query(ctl, client: bytes, request: dict):
    """Tasks matching a query, from the store (off the loop) or the memory ledger."""
    query = request.get("query") or {}
    if not isinstance(query, dict):
        raise ValueError(f"a query is a dict of field conditions, not {query!r}")
    keys = request.get("keys")
    store = ctl.ledger.store
    if store is None:
        return {"records": ctl.ledger.query(query, keys)}
    return Later(lambda: store.query(query, keys), lambda records: {"records": records})


def history(ctl, client: bytes, request: dict) -> dict:
    return {"tasks": [t.summary() for t in ctl.ledger.tasks.values()]}


def engine_exited(ctl, client: bytes, request: dict) -> dict:
    """A supervisor saw an engine's process exit: drop it now rather than after the grace, and
    say its id (so that the supervisor restarts it with that id), even if it was removed
    already."""
    pid, host = int(request.get("pid", -1)), str(request.get("host", ""))
    engine = ctl.registry.by_pid(pid, host)
    if engine is None:  # removed already (its connection went first): still say which it was
        return {"engine_id": ctl.registry.gone.get((pid, host))}
    ctl.drop_engine(engine, f"its process exited with code {request.get('code')}")
    return {"engine_id": engine.id}


ACTIONS = {f.__name__: f for f in (abort, signal, shutdown, fetch, sync, purge, history,
                                   engine_exited, db_query, watch, provenance)}
