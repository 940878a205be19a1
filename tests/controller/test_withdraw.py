"""The "not started" handshake: an engine gives back a queued task it has not started, and
keeps one it has; a task given back runs elsewhere, once."""

from __future__ import annotations

import os
import subprocess
import sys

import ipcluster as ipp
from ipcluster.controller import recovery
from tests.conftest import wait_until


def wait_for_flag(path):
    import os
    import time
    print("started", flush=True)
    while not os.path.exists(path):
        time.sleep(0.02)
    return os.getpid()


def note_pid(path):
    import os
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return os.getpid()


def test_a_queued_task_given_back_runs_elsewhere_once_and_a_started_one_stays(served, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(recovery, "STALL", 1e9)  # the test asks, not the controller's rebalancing
    path = served.path
    engine = [sys.executable, "-m", "ipcluster", "engine", "--connection-file", str(path)]
    procs = [subprocess.Popen(engine, stderr=subprocess.DEVNULL)]
    try:
        rc = ipp.Client(path)
        rc.wait_for_engines(1, timeout=30)
        flag, runs = tmp_path / "flag", tmp_path / "runs"
        view = rc.load_balanced_view()
        held = view.apply_async(wait_for_flag, str(flag))
        queued = view.apply_async(note_pid, str(runs))  # behind it, on the same engine
        wait_until(lambda: "started" in held.stdout)
        procs.append(subprocess.Popen(engine, stderr=subprocess.DEVNULL))
        rc.wait_for_engines(2, timeout=30)
        first = served.ctl.registry.by_id[0]
        assert set(first.tasks) == {held.msg_ids[0], queued.msg_ids[0]}

        asked = served.call(lambda: recovery.withdraw(served.ctl, first, list(first.tasks)))
        assert sorted(asked) == sorted([held.msg_ids[0], queued.msg_ids[0]])
        assert queued.get(timeout=30) == procs[1].pid  # given back, run by the idle engine
        assert not held.done()  # started: it stayed where it runs
        flag.touch()
        assert held.get(timeout=30) == procs[0].pid
        rc[0].apply_sync(os.getpid)  # engine 0 has nothing left queued
        assert runs.read_text().split() == [str(procs[1].pid)]  # ran once
        assert served.call(lambda: (first.withdrawing, served.ctl.received["withdrawn"])) == (set(), 1)
        rc.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def test_a_task_held_by_an_engine_back_after_a_restart_is_asked_back_from_the_one_sent_it():
    """Engine 1 registers again first and gets a restored task that engine 0 still holds; when
    engine 0 registers again saying so, the task is its own and engine 1 is asked to give it
    back (not started there: it runs once; started: its result is the late one, discarded)."""
    from ipcluster import connection
    from ipcluster.controller.ledger import Task
    from ipcluster.controller.main import ControllerOptions
    from ipcluster.controller.scheduler import Pending
    from ipcluster.controller.server import Controller

    ctl = Controller("held", ControllerOptions(), connection.new_key())
    try:
        task = Task("t", b"client", balanced=True, request=[b"frame"])
        ctl.ledger.add(task)
        ctl.scheduler.submit(Pending("t", None, [b"frame"]))
        other = ctl.registry.add(b"engine-1", 1001, "here", 1)
        ctl.scheduler.add_engine(1)
        ctl.outbox.send = lambda sock, identity, frames: True  # engines as if connected
        asked = []
        ctl.send_control = lambda engine, request: asked.append((engine.id, request))
        ctl.dispatch()
        assert other.tasks == {"t": True} and task.engine == 1
        holder = ctl.registry.add(b"engine-0", 1000, "here", 0)
        ctl.scheduler.add_engine(0)
        recovery.held(ctl, holder, ["t", "unknown"])
        assert holder.tasks == {"t": True} and other.tasks == {} and task.engine == 0
        assert asked == [(1, {"action": "withdraw", "tasks": ["t"]})]
        assert ctl.scheduler.load == {0: 1, 1: 0}
        recovery.withdrawn(ctl, other, {"withdrawn": ["t"], "started": []})
        assert not list(ctl.scheduler.pending)  # given back, and not queued again
    finally:
        ctl.close()


def test_a_retried_task_given_back_stays_off_the_engine_it_failed_on():
    """A task that raised on engine 0 is retried on engine 1 only; engine 1 gives it back
    before starting it. Queued again, it still may not go to engine 0 (it went there when the
    requeue took the task's own targets, None, instead of the restriction it was sent with)."""
    from ipcluster import connection
    from ipcluster.controller.main import ControllerOptions
    from ipcluster.controller.server import CLIENT_KINDS, ENGINE_KINDS, Controller
    from ipcluster.protocol import Apply, Ids, Result, encode, pack

    ctl = Controller("requeue", ControllerOptions(), connection.new_key())
    try:
        engines = {}
        for eid in (0, 1):
            engines[eid] = ctl.registry.add(f"engine-{eid}".encode(), 1000 + eid, "here", eid)
            ctl.scheduler.add_engine(eid)
            ctl.graph.engine_added(eid)
        sent = []  # (engine id, frames) of each task sent
        ctl.outbox.send = lambda sock, identity, frames: sent.append((identity, frames)) or True
        ids = Ids()

        def say(sock, identity, header, content, kinds):
            header["id"] = ids()
            ctl._handle(sock, [identity, *encode(ctl.signer, header, content)], kinds)

        say(ctl.clients, b"client", Apply(["t"], None, True, retries=1).header(ids()), b"call",
            CLIENT_KINDS)
        task = ctl.ledger.get("t")
        first = task.engine
        other = 1 - first
        say(ctl.engines, engines[first].identity,
            Result("t", first, "error").header(""), pack({"error": "ValueError"}), ENGINE_KINDS)
        assert task.engine == other and task.result is None  # retried elsewhere
        recovery.withdraw(ctl, engines[other], ["t"])
        say(ctl.engines, engines[other].identity, {"kind": "withdrawn", "engine": other},
            pack({"withdrawn": ["t"], "started": []}), ENGINE_KINDS)
        assert task.engine == other, "given back, it went to the engine it had failed on"
        assert engines[other].tasks == {"t": True} and engines[first].tasks == {}
    finally:
        ctl.close()
