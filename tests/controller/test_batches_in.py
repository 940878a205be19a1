"""Batches into the controller: requests a client sent as one ``batch`` message, and results an
engine sent as one, are each handled as if they came alone (socket-free: the handlers as the
loop calls them, what would go out recorded)."""

from __future__ import annotations

import pytest

from ipcluster import batch, connection
from ipcluster.controller import server
from ipcluster.controller.main import ControllerOptions
from ipcluster.controller.server import Controller
from ipcluster.protocol import Apply, Ids, Result, decode, encode, unpack


@pytest.fixture(params=[0], ids=["hwm0"])
def ctl(request):
    ctl = Controller("batches", ControllerOptions(hwm=request.param), connection.new_key())
    ctl.out = []
    ctl.outbox.transmit = lambda sock, identity, frames: ctl.out.append((identity, frames)) or True
    ctl.outbox.batching = True  # as in `serve`: what one turn sends a peer goes as one message
    for eid in range(2):
        ctl.registry.add(f"engine-{eid}".encode(), eid, "h", eid)
        ctl.scheduler.add_engine(eid)
        ctl.graph.engine_added(eid)
    yield ctl
    ctl.close()


def _batch(ctl, ids, messages):
    return batch.pack(ctl.signer, ids(), [encode(ctl.signer, h, c) for h, c in messages])


def _sent(ctl, identity):
    """The messages sent to `identity`, batches unwrapped, decoded."""
    out = []
    for to, frames in ctl.out:
        if to == identity:
            msg = decode(ctl.signer, [to, *frames])
            out += batch.unbatch(msg)
    return out


def test_a_clients_batch_of_requests_runs_each_and_refuses_only_the_bad_one(ctl):
    ids = Ids()
    good = [(Apply([f"t{i}"], None, True).header(ids()), b"call") for i in range(3)]
    bad = ({**Apply(["bad"], None, True).header(ids()), "targets": "all"}, b"call")
    ctl._handle(ctl.clients, [b"client", *_batch(ctl, ids, [good[0], bad, *good[1:]])],
                server.CLIENT_KINDS)
    ctl.outbox.flush()
    assert ctl.traffic["batches_in"] == 1
    assert all(ctl.ledger.get(f"t{i}").engine in (0, 1) for i in range(3))  # each sent
    assert ctl.ledger.get("bad") is None
    errors = [m for m in _sent(ctl, b"client") if m.kind == "error"]
    assert len(errors) == 1 and unpack(errors[0].content)["tasks"] == ["bad"]
    assert "targets" in unpack(errors[0].content)["evalue"]


def test_a_batched_message_seen_before_is_dropped_and_the_rest_handled(ctl):
    ids = Ids()
    first = (Apply(["t0"], None, True).header(ids()), b"call")
    ctl._handle(ctl.clients, [b"client", *_batch(ctl, ids, [first])], server.CLIENT_KINDS)
    again = (Apply(["t1"], None, True).header(ids()), b"call")
    dropped = ctl.dropped.count
    ctl._handle(ctl.clients, [b"client", *_batch(ctl, ids, [first, again])], server.CLIENT_KINDS)
    assert ctl.received["apply"] == 2  # t0 once, t1 once
    assert ctl.dropped.count == dropped + 1
    assert ctl.ledger.get("t1") is not None


def test_a_kind_a_socket_does_not_take_is_refused_inside_a_batch_too(ctl):
    ids = Ids()
    forged = (Result("t0", 0, "ok").header(ids()), b"r")  # a result, from a client
    ctl._handle(ctl.clients, [b"client", *_batch(ctl, ids, [forged])], server.CLIENT_KINDS)
    assert ctl.received["result"] == 0
    assert [m.kind for m in _sent(ctl, b"client")] == ["error"]


def test_an_engines_batch_of_results_reaches_the_client_in_order(ctl):
    ids = Ids()
    tasks = [f"t{i}" for i in range(6)]
    for task in tasks:
        ctl._handle(ctl.clients, [b"client", *encode(ctl.signer, Apply([task], None, True)
                                                      .header(ids()), b"call")], server.CLIENT_KINDS)
    ctl.outbox.flush()
    ctl.out.clear()
    for eid in range(2):
        mine = [t for t in tasks if ctl.ledger.get(t).engine == eid]
        results = [(Result(t, eid, "ok").header(ids()), t.encode()) for t in mine]
        ctl._handle(ctl.engines, [f"engine-{eid}".encode(), *_batch(ctl, ids, results)],
                    server.ENGINE_KINDS)
    ctl.outbox.flush()
    got = _sent(ctl, b"client")
    assert [bytes(m.content) for m in got] == [t.encode() for t in sorted(
        tasks, key=lambda t: (ctl.ledger.get(t).engine, t))]
    assert all(ctl.ledger.get(t).result is not None for t in tasks)
    assert ctl.traffic["batches_in"] == 2 and ctl.received["result"] == 6


@pytest.mark.parametrize("ctl", [8], ids=["hwm8"], indirect=True)
def test_the_tasks_a_batch_of_results_frees_room_for_are_sent_once_after_it(ctl):
    """A batch of results frees a slot per result: the waiting tasks are looked for once, after
    the batch (one `ready()`), and go to the engine as one message, not one per result."""
    ids = Ids()
    tasks = [f"t{i}" for i in range(12)]
    for task in tasks:
        ctl._handle(ctl.clients, [b"client", *encode(ctl.signer, Apply([task], [0], True)
                                                      .header(ids()), b"call")], server.CLIENT_KINDS)
    ctl.outbox.flush()
    running = [t for t in tasks if ctl.ledger.get(t).engine == 0]
    assert len(running) == 2 and len(ctl.scheduler.pending) == 10  # engine 0 holds 2 at first
    calls, ready = [], ctl.scheduler.ready
    ctl.scheduler.ready = lambda: calls.append(1) or ready()
    ctl.out.clear()
    results = [(Result(t, 0, "ok", started=1.0, completed=1.00001).header(ids()), b"r")
               for t in running]
    ctl._handle(ctl.engines, [b"engine-0", *_batch(ctl, ids, results)], server.ENGINE_KINDS)
    ctl.outbox.flush()
    assert len(calls) == 1
    to_engine = [frames for to, frames in ctl.out if to == b"engine-0"]
    assert len(to_engine) == 1  # the tasks it now has room for, in one message
    sent = [m.header["tasks"][0] for m in batch.unbatch(decode(ctl.signer, [b"e", *to_engine[0]]))]
    assert sent == tasks[2:2 + len(sent)] and len(sent) >= 2  # room for more: its tasks are short


@pytest.mark.parametrize("ctl", [8], ids=["hwm8"], indirect=True)
def test_a_direct_request_after_a_balanced_one_in_a_batch_does_not_take_its_slot(ctl):
    """In one batch: a direct task, a balanced one for the same engine, two more direct ones.
    The balanced one is sent where it stands, while the engine had room (as if each came
    alone), not after the direct ones behind it filled the engine."""
    ids = Ids()
    messages = [(Apply(["gate"], [0]).header(ids()), b"call"),
                (Apply(["balanced"], [0], True).header(ids()), b"call"),
                (Apply(["d1"], [0]).header(ids()), b"call"),
                (Apply(["d2"], [0]).header(ids()), b"call")]
    ctl._handle(ctl.clients, [b"client", *_batch(ctl, ids, messages)], server.CLIENT_KINDS)
    ctl.outbox.flush()
    assert ctl.ledger.get("balanced").engine == 0
    sent = [m.header["tasks"][0] for to, frames in ctl.out if to == b"engine-0"
            for m in batch.unbatch(decode(ctl.signer, [to, *frames]))]
    assert sent == ["gate", "balanced", "d1", "d2"]


def test_a_request_reusing_a_task_id_is_refused_and_the_first_task_kept(ctl):
    ids = Ids()
    first = (Apply(["t0"], None, True).header(ids()), b"call")
    again = (Apply(["t9", "t0"], [0, 1]).header(ids()), b"call")  # a direct request naming t0
    ctl._handle(ctl.clients, [b"client", *_batch(ctl, ids, [first, again])], server.CLIENT_KINDS)
    ctl.outbox.flush()
    errors = [unpack(m.content) for m in _sent(ctl, b"client") if m.kind == "error"]
    assert len(errors) == 1 and "in use already" in errors[0]["evalue"]
    assert ctl.ledger.get("t9") is None and ctl.ledger.get("t0").engine in (0, 1)
