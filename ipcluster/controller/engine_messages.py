"""Processes layer: the controller's handler for each kind an engine sends (`HANDLERS`): a
function of (controller, message). Every message from a registered engine says it is alive;
results and output go on to the client that asked; `Controller` owns the sockets."""

from __future__ import annotations

import logging
import time

from ipcluster.controller import liveness, recovery
from ipcluster.controller.registry import Engine
from ipcluster.protocol import BadMessage, Result, encode, pack, unpack

log = logging.getLogger("ipcluster.controller")

BEAT_ANSWER_EVERY = 10.0  # seconds; an engine stops after 60 s without hearing from us


def heard_from(ctl, msg) -> Engine | None:
    """The registered engine that sent `msg` (None: unknown), marked alive."""
    engine = ctl.registry.by_identity.get(msg.route[0])
    if engine is not None:
        ctl.registry.heard(engine, time.monotonic())
        if not engine.responsive:
            engine.responsive = True
            log.info("engine %d answers again", engine.id)
        if engine.frozen:
            liveness.thaw(ctl, engine)
    return engine


def register(ctl, msg) -> None:
    info = unpack(msg.content) or {}
    if msg.route[0] in ctl.registry.by_identity:
        raise BadMessage("register: this engine is registered already")
    requested = info.get("id")
    engine = ctl.registry.add(msg.route[0], int(info.get("pid", 0)), str(info.get("host", "?")),
                              requested if isinstance(requested, int) else None)
    engine.shm, engine.data = (info.get(k) if isinstance(info.get(k), str) else ""
                               for k in ("shm", "data"))
    ctl.provenance.registered(engine, info)
    ctl.graph.engine_added(engine.id)
    ctl.scheduler.add_engine(engine.id)
    holds = info.get("holds")
    if isinstance(holds, list):  # registering again after a restart: what it still has
        recovery.held(ctl, engine, [t for t in holds if isinstance(t, str)])
    interval = liveness.beat_interval(ctl)
    ctl.registry.tell_beat(engine, interval)
    engine.answered = time.monotonic()  # the reply is what it needs to hear from us for now
    # a durable controller stores results as bytes: engines then send them in the message
    ctl.reply(ctl.engines, msg, "register_reply",
              {"id": engine.id, "durable": ctl.ledger.store is not None, "beat": interval})
    log.info("engine %d registered (pid %d on %s)", engine.id, engine.pid, engine.host)
    ctl.publish({"event": "engine_up", "id": engine.id, "version": ctl.registry.version})
    ctl.dispatch()


def unregister(ctl, msg) -> None:
    engine = heard_from(ctl, msg)
    if engine is not None:
        try:
            said = unpack(msg.content)
        except (ValueError, TypeError):  # an engine leaving is dropped whatever else it says
            said = None
        reason = said.get("reason") if isinstance(said, dict) else None
        ctl.drop_engine(engine, reason if isinstance(reason, str) else "it shut down")


def beat(ctl, msg) -> None:
    engine = heard_from(ctl, msg)
    if engine is not None:
        now = time.monotonic()
        interval = liveness.beat_interval(ctl)
        # not each beat (half the messages): an engine only needs to hear from us within its
        # timeout, and of a new interval when the number of engines changed it
        if now - engine.answered >= BEAT_ANSWER_EVERY or interval != engine.beat:
            engine.answered = now
            ctl.registry.tell_beat(engine, interval)
            header = {"kind": "beat", "id": ctl.ids()}
            ctl.outbox.send(ctl.engines, msg.route[0], encode(ctl.signer, header, pack({"beat": interval})))
    elif ctl.restored:  # an engine of the controller we took over from: welcome it back
        ctl.outbox.send(ctl.engines, msg.route[0],
                 encode(ctl.signer, {"kind": "reregister", "id": ctl.ids()}))
    # else: an engine we dropped hears nothing, and exits


def result(ctl, msg) -> None:
    engine = heard_from(ctl, msg)
    record = Result.from_header(msg.header)
    task = ctl.ledger.get(record.parent)
    if engine is None and ctl.restored and task is not None and task.result is None:
        recovery.restored_result(ctl, task, msg)  # finished while we were down
        return
    if task is None or engine is None:
        raise BadMessage(f"result for unknown task {record.parent!r}")
    if task.result is not None or task.engine != engine.id:  # moved off it while it was frozen
        log.info("late result of task %s from engine %d discarded", task.id, engine.id)
        return
    engine.tasks.pop(task.id, None)
    engine.completed += 1
    engine.progressed = time.monotonic()
    ctl.scheduler.finished(engine.id, record.duration)
    if record.unmet and task.balanced and recovery.move(ctl, task, engine, msg):
        ctl.dispatch()
        return
    if record.status == "error" and recovery.retry(ctl, task, engine.id, msg):
        ctl.dispatch()
        return
    ctl.provenance.finished(task, engine, msg.header)
    ctl.ledger.finish(task, msg.frames, record.status, record.completed)
    if ctl.watch:
        ctl.watch.finished(task, msg.header, msg.content)
    ctl.forward(task, msg.frames)
    ctl.settle(ctl.graph.finished(task.id, record.status == "ok", engine.id))
    ctl.dispatch()


def withdrawn(ctl, msg) -> None:
    engine = heard_from(ctl, msg)
    reply = unpack(msg.content)
    if engine is not None and isinstance(reply, dict):
        if recovery.withdrawn(ctl, engine, reply):
            ctl.dispatch()


def watchdog(ctl, msg) -> None:
    said = unpack(msg.content) or {}
    engine = ctl.registry.by_pid(int(said.get("pid", -1)), str(said.get("host", "")))
    if engine is not None:
        liveness.watchdog_said(ctl, engine, said)


def output(ctl, msg) -> None:
    heard_from(ctl, msg)
    task = ctl.ledger.get(msg.header.get("parent"))
    if task is not None and task.result is None:
        # the record keeps at most max_task_output of it; past that, nothing is unpacked
        if ctl.watch or ctl.ledger.output_room(task) > 0:
            out = unpack(msg.content) or {}
            if out.get("name") in ("stdout", "stderr") and isinstance(out.get("text"), str):
                ctl.ledger.wrote(task, out["name"], out["text"])
                if ctl.watch:
                    ctl.watch.wrote(task.engine, out["name"], out["text"])
        ctl.forward(task, msg.frames)


HANDLERS = {"register": register, "unregister": unregister, "beat": beat, "result": result,
            "withdrawn": withdrawn, "watchdog": watchdog, "output": output}
