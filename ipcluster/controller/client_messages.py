"""Processes layer: the controller's handler for each kind a client sends (`HANDLERS`): a
function of (controller, message). They answer on the client socket and hand tasks to the
dependency graph, the scheduler or straight to an engine; `Controller` owns the sockets."""

from __future__ import annotations

from ipcluster.controller import actions
from ipcluster.controller.graph import Dep
from ipcluster.controller.ledger import Task
from ipcluster.controller.reader import Later
from ipcluster.errors import ImpossibleDependency, InvalidDependency, NoSuchEngine
from ipcluster.protocol import Apply, BadMessage, unpack


def hello(ctl, msg) -> None:
    ctl.reply(ctl.clients, msg, "hello_reply", {
        "ids": ctl.registry.ids(), "version": ctl.registry.version, "cluster_id": ctl.cluster_id,
        "beat_interval": ctl.options.beat_interval,
        "max_message_size": ctl.options.max_message_size,
        "store": ctl.store_problem(),
    })


def query(ctl, msg) -> None:
    request = unpack(msg.content) or {}
    if request.get("what") == "ids":  # the common question (a client waiting for engines):
        ctl.reply(ctl.clients, msg, "query_reply",  # no scan
                  {"ids": ctl.registry.ids(), "version": ctl.registry.version})
        return
    targets = request.get("targets")
    engines = [e for e in ctl.registry.by_id.values() if targets is None or e.id in targets]
    verbose = bool(request.get("verbose"))
    ctl.reply(ctl.clients, msg, "query_reply", {
        "ids": ctl.registry.ids(),
        "engines": {e.id: e.info() for e in engines},
        "status": {e.id: e.status(verbose) for e in engines},
        "unassigned": [p.task_id for p in ctl.scheduler.pending] + list(ctl.graph.waiting)
        if verbose else len(ctl.scheduler.pending) + len(ctl.graph),
        "tasks": ctl.ledger.open(),
        "dropped": [list(k) for k in ctl.registry.dropped],
        "received": dict(ctl.received),
        "received_from_you": dict(ctl.received_from.get(msg.route[0], {})),
        "traffic": dict(ctl.traffic),
        "refused": ctl.context.refused,  # peers refused at connect: no cluster key
        "store": ctl.store_problem(),
        "event_batches": ctl.watch.batches,
    })


def control(ctl, msg) -> None:
    request = unpack(msg.content) or {}
    action = actions.ACTIONS.get(request.get("action"))
    if action is None:
        raise BadMessage(f"unknown control action {request.get('action')!r}; "
                         f"known: {', '.join(actions.ACTIONS)}")
    reply = action(ctl, msg.route[0], request)
    if isinstance(reply, Later):  # it reads the store: off the loop, answered when read
        ctl.reader.submit(reply, lambda found, error: _answer(ctl, msg, reply, found, error))
    else:
        ctl.reply(ctl.clients, msg, "control_reply", reply)


def _answer(ctl, msg, later: Later, found, error: Exception | None) -> None:
    try:
        if error is not None:
            raise error
        ctl.reply(ctl.clients, msg, "control_reply", later.then(found))
    except Exception as exc:
        ctl.dropped(exc)
        ctl.reply(ctl.clients, msg, "error", {"ename": type(exc).__name__,
                                              "evalue": str(exc), "tasks": []})


def apply(ctl, msg) -> None:
    request = Apply.from_header(msg.header)
    client, tasks, targets = msg.route[0], request.tasks, request.targets
    if not ctl.ledger.tasks.keys().isdisjoint(tasks):
        raise BadMessage("apply: a task id is in use already")
    label, key, fn = request.label, request.key, request.fn
    if request.balanced:
        allowed = None if targets is None else frozenset(targets)
        after, follow = Dep.from_wire(request.after), Dep.from_wire(request.follow)
        task = Task(tasks[0], client, balanced=True, targets=allowed, label=label,
                    request=msg.frames, retries=request.retries,
                    priority=request.priority, key=key, function=fn, timeout=request.timeout)
        ctl.ledger.add(task)
        ctl.wait_at_most(task)
        if allowed is not None and not allowed & set(ctl.registry.by_id):
            ctl.fail(task, NoSuchEngine(
                "NoSuchEngine", f"none of the engines {sorted(allowed)} is registered; "
                f"registered engines: {ctl.registry.ids()}"))
            return
        state, detail = ctl.graph.add(task.id, after, follow)
        if state == "invalid":  # a dependency on no known task (ipyparallel's name)
            ctl.fail(task, InvalidDependency("InvalidDependency", detail))
        elif state == "impossible":
            ctl.fail(task, ImpossibleDependency("ImpossibleDependency", detail))
        elif state == "ready":
            ctl.release(task, detail)
            ctl.dispatch()
        return
    for task_id, eid in zip(tasks, targets):
        task = Task(task_id, client, label=label, key=key, function=fn, request=msg.frames)
        ctl.ledger.add(task)
        ctl.graph.add(task_id)  # so that later tasks may depend on it
        engine = ctl.registry.by_id.get(eid)
        if engine is None:
            ctl.fail(task, NoSuchEngine(
                "NoSuchEngine", f"no engine with id {eid}; registered engines: "
                f"{ctl.registry.ids()}", engine_id=eid))
            continue
        ctl.scheduler.started(eid)
        ctl.send_task(task, engine, msg.frames)


HANDLERS = {"hello": hello, "query": query, "control": control, "apply": apply}
