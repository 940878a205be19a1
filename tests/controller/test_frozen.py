"""A frozen engine during a load-balanced map (tests/test_faults.py's SIGSTOP test), replayed
without processes: the controller's handlers get the messages its engines would send, and each
engine's "not started" bookkeeping is the engine's own (`engine.running.Running`), its main thread
stepped by the test and its control thread answering several times per task, as it does.

Under load that test took 15-57 s instead of about 12: the frozen engine, paused with nothing
left on it, counted as idle, so the controller kept asking the two busy engines for the tasks
queued behind their running ones, for an engine that could take none; they went back to the
same busy engines, and each asked again. An engine sent a task it had given back counted it as
given back once however often it gave it back, so it ran copies the controller had moved
elsewhere (their results discarded as late) and the map crawled until the frozen engine was
dropped (30 s)."""

from __future__ import annotations

import collections
import logging
import time

import pytest

from ipcluster import connection
from ipcluster.controller import recovery, server
from ipcluster.controller.main import ControllerOptions
from ipcluster.controller.server import Controller
from ipcluster.engine.running import Running
from ipcluster.engine.watchdog import Watch
from ipcluster.protocol import Apply, Ids, Result, decode, encode, pack, unpack

HOST = "here"
ANSWERS_PER_TASK = 3  # control rounds (the controller's loop, the engines' control threads)


class FakeEngine:
    """An engine as its messages show it: the control thread answers (`answer`), the main
    thread ends its task and starts the next one it may (`step`)."""

    def __init__(self, ctl: Controller, eid: int) -> None:
        self.ctl, self.id, self.ids = ctl, eid, Ids()
        self.identity, self.pid = f"engine-{eid}".encode(), 1000 + eid
        ctl.registry.add(self.identity, self.pid, HOST, eid)
        ctl.scheduler.add_engine(eid)
        ctl.graph.engine_added(eid)
        self.inbox: list = []  # frames the controller sent it
        self.running = Running(Watch(), 0.5)
        self.taken: list[str] = []  # the main thread's queue, in order
        self.ran: list[str] = []
        self.asked_back: list[str] = []

    def say(self, header: dict, content=b"", identity=None) -> None:
        header["id"] = self.ids()
        frames = encode(self.ctl.signer, header, content)
        self.ctl._handle(self.ctl.engines, [identity or self.identity, *frames], server.ENGINE_KINDS)

    def answer(self) -> None:
        while self.inbox:
            msg = decode(self.ctl.signer, self.inbox.pop(0))
            if msg.kind == "apply":
                task = Apply.task_for(msg.header, self.id)
                self.running.enqueue(task)
                self.taken.append(task)
            elif msg.kind == "control" and unpack(msg.content).get("action") == "withdraw":
                asked = unpack(msg.content)["tasks"]
                self.asked_back += asked
                given = [t for t in asked if self.running.withdraw(t)]
                self.say({"kind": "withdrawn", "engine": self.id}, pack(
                    {"withdrawn": given, "started": [t for t in asked if t not in given]}))

    def step(self) -> None:
        if self.running.task is not None:
            task, at = self.running.task, time.time()
            self.running.finish()
            self.say(Result(task, self.id, "ok", started=at, completed=at).header(""), pack(task))
        while self.taken:
            task = self.taken.pop(0)
            if self.running.claim(task):  # False: given back, skipped
                self.running.start(task, None)
                self.ran.append(task)
                return

    def stopped(self) -> None:
        """Its watchdog reports it stopped (SIGSTOP), naming the task it runs."""
        self.say({"kind": "watchdog"}, pack({"state": "stopped", "task": self.running.task,
                                             "pid": self.pid, "host": HOST}),
                 identity=b"watchdog-%d" % self.id)


@pytest.mark.parametrize("hwm", [2, 8])  # a task queued behind the running one; several
def test_a_frozen_engine_leaves_the_busy_ones_alone_and_every_task_runs_once(caplog, hwm):
    caplog.set_level(logging.INFO, logger="ipcluster.controller")
    ctl = Controller("frozen", ControllerOptions(hwm=hwm), connection.new_key())
    try:
        engines = [FakeEngine(ctl, eid) for eid in range(3)]
        by_identity = {e.identity: e for e in engines}

        def send(sock, identity, frames):
            if identity in by_identity:
                by_identity[identity].inbox.append(frames)
            return True

        ctl.outbox.send = send  # engines as if connected; the client's results are not looked at
        client, n = Ids(), 30
        tasks = [f"t{i}" for i in range(n)]
        for task in tasks:  # map(f, range(30), chunksize=1) with retries=1
            header = Apply([task], None, True, retries=1).header(client())
            ctl._handle(ctl.clients, [b"client", *encode(ctl.signer, header, b"call")],
                        server.CLIENT_KINDS)
        frozen, live = engines[2], engines[:2]
        stuck, steps = None, 0

        def busy():  # a result missing, or a live engine with something left to run
            return (not all(ctl.ledger.get(t).result is not None for t in tasks)
                    or any(e.running.task or e.taken or e.inbox for e in live))

        while steps < 10 * n and busy():
            for engine in engines if stuck is None else live:
                engine.step()
            if steps == 3:  # some tasks done: engine 2 is stopped in the middle of one
                stuck = frozen.running.task
                frozen.stopped()
            for _ in range(ANSWERS_PER_TASK):
                for engine in engines if stuck is None else live:
                    engine.answer()
                if ctl.scheduler.movable():  # as the loop does; every task runs past STALL
                    recovery.rebalance(ctl, time.monotonic() + 1)
            steps += 1

        assert not busy(), "the map did not end"
        runs = collections.Counter(t for e in engines for t in e.ran)
        assert {t: c for t, c in runs.items() if c != 1} == {stuck: 2}  # on 2, then elsewhere
        assert [r.getMessage() for r in caplog.records if "late result" in r.getMessage()] == []
        # asked back only for an engine that could run it (once, at the end), not again and
        # again for the frozen one, which takes nothing
        asked = collections.Counter(t for e in live for t in e.asked_back)
        assert max(asked.values(), default=0) <= 1, asked
    finally:
        ctl.close()
