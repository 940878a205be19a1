"""Batches: several buffer-less messages for one peer in one signed message. On the wire (signed
once, each message kept whole, replay checked per message) and in the controller (held for one
turn of the loop, sent in order with whatever else goes to that peer, kept or failed over as a
single send would be)."""

from __future__ import annotations

import pytest

from ipcluster import batch, connection
from ipcluster.controller import server
from ipcluster.controller.ledger import Task
from ipcluster.controller.main import ControllerOptions
from ipcluster.controller.server import Controller
from ipcluster.protocol import BadMessage, Ids, Replay, Result, Signer, decode, encode, pack, unpack

KEY = bytes(range(32))


def messages(n: int, signer=Signer(KEY), ids=Ids()) -> list:
    return [encode(signer, {"kind": "output", "id": ids(), "parent": f"t{i}"}, pack(i))
            for i in range(n)]


def test_a_batch_carries_its_messages_in_order_each_with_its_own_id():
    signer, sent = Signer(KEY), messages(3)
    got = batch.unbatch(decode(signer, batch.pack(signer, "b-1", sent)), Replay())
    assert [unpack(m.content) for m in got] == [0, 1, 2]
    assert [m.header["id"] for m in got] == [decode(signer, f).header["id"] for f in sent]
    assert len(batch.pack(signer, "b-2", sent)) == 1  # one frame, as each message was


def test_a_message_alone_is_itself():
    msg = decode(Signer(KEY), messages(1)[0])
    assert batch.unbatch(msg) == [msg]


def test_a_changed_byte_anywhere_in_a_batch_is_refused_before_anything_is_read():
    signer = Signer(KEY)
    frames = batch.pack(signer, "b-1", messages(2))
    tampered = bytearray(frames[0])
    tampered[-len(tampered) // 4] ^= 1  # in the second message
    with pytest.raises(BadMessage, match="bad signature"):
        decode(signer, [bytes(tampered)])


def test_a_replayed_message_in_a_batch_is_dropped_and_the_others_kept():
    signer, replay, dropped = Signer(KEY), Replay(), []
    sent = messages(3)
    decode(signer, sent[1], replay)  # seen alone before
    got = batch.unbatch(decode(signer, batch.pack(signer, "b-1", sent), replay), replay,
                        dropped.append)
    assert [unpack(m.content) for m in got] == [0, 2]
    assert len(dropped) == 1 and "replayed" in str(dropped[0])
    again = batch.unbatch(decode(signer, batch.pack(signer, "b-2", sent), replay), replay,
                          dropped.append)
    assert again == [] and len(dropped) == 4  # the same messages in a new batch: all replays


@pytest.mark.parametrize("header, error", [
    ({"kind": "batch", "id": "x"}, "cannot be batched"),
    ({"kind": "format_disk", "id": "x"}, "cannot be batched"),
    ({"kind": "result", "id": "x", "buffers": [3]}, "no buffers"),
    ({"kind": "result"}, "no id"),
])
def test_a_batch_holding_what_cannot_be_batched_is_refused(header, error):
    signer = Signer(KEY)
    frames = batch.pack(signer, "b-1", [encode(signer, header, b"")])
    with pytest.raises(BadMessage, match=error):
        batch.unbatch(decode(signer, frames))


# -- in the controller, without sockets ---------------------------------------------------

@pytest.fixture
def ctl():
    ctl = Controller("batches", ControllerOptions(), connection.new_key())
    ctl.wire = []  # (identity, frames) as they would have gone out; a peer named gone refuses
    ctl.outbox.transmit = lambda sock, identity, frames: (
        not identity.startswith(b"gone") and (ctl.wire.append((identity, frames)) or True))
    ctl.outbox.batching = True  # as in a turn of `serve`
    yield ctl
    ctl.close()


def received(ctl, identity) -> list:
    """What `identity` received, each batch opened: (kind, parent or None)."""
    out = []
    for to, frames in ctl.wire:
        if to == identity:
            out += [(m.kind, m.header.get("parent")) for m in batch.unbatch(decode(ctl.signer, frames))]
    return out


def finish(ctl, task_id: str, client: bytes) -> None:
    task = Task(task_id, client)
    ctl.ledger.add(task)
    header = Result(task_id, 0, "ok").header(ctl.ids())
    ctl.forward(task, encode(ctl.signer, {"kind": "output", "id": ctl.ids(), "parent": task_id},
                             pack({"name": "stdout", "text": "x"})))
    ctl.forward(task, encode(ctl.signer, header, b"\x80\x05N."))


def test_results_for_one_client_in_one_turn_go_as_one_message_in_order(ctl):
    for i in range(3):
        finish(ctl, f"t{i}", b"client-a")
    finish(ctl, "u0", b"client-b")
    assert ctl.wire == []  # held until the turn's messages are handled
    ctl.outbox.flush()
    assert [to for to, _ in ctl.wire] == [b"client-a", b"client-b"]
    assert received(ctl, b"client-a") == [(k, f"t{i}") for i in range(3) for k in ("output", "result")]
    assert ctl.traffic["batched"] == 8  # messages that went in batches (client-b: two)


def test_a_reply_to_a_client_goes_after_what_was_held_for_it(ctl):
    finish(ctl, "t0", b"client-a")
    ctl.reply(ctl.clients, decode(ctl.signer, [b"client-a", *encode(
        ctl.signer, {"kind": "control", "id": "sync-1"}, pack({}))]), "control_reply", {})
    assert received(ctl, b"client-a") == [("output", "t0"), ("result", "t0"),
                                          ("control_reply", "sync-1")]
    assert ctl.outbox.held == {}


def test_a_batch_a_client_could_not_take_is_kept_in_order_for_when_it_is_back(ctl):
    finish(ctl, "t0", b"gone-client")
    finish(ctl, "t1", b"gone-client")
    ctl.outbox.flush()
    kept = ctl.undelivered.by_client[b"gone-client"]
    assert [decode(ctl.signer, f).header["parent"] for f in kept] == ["t0", "t0", "t1", "t1"]
    finish(ctl, "t2", b"gone-client")  # behind them, not held
    assert len(kept) == 6 and ctl.outbox.held == {}


def test_tasks_for_an_engine_that_is_gone_are_failed_over_as_a_single_send_would_be(ctl):
    ctl.registry.add(b"gone-engine", 1000, "h", 0)
    ctl.scheduler.add_engine(0)
    tasks = [Task(f"t{i}", b"client-a", balanced=True, request=[b"", b""]) for i in range(2)]
    for task in tasks:
        ctl.ledger.add(task)
        ctl.send_task(task, ctl.registry.by_id[0], encode(ctl.signer, {"kind": "apply", "id": task.id}))
    assert ctl.registry.by_id  # held: not known to fail yet
    ctl.outbox.flush()
    assert not ctl.registry.by_id  # dropped, and its tasks failed (no retries) to their client
    assert all(t.status == "error" for t in tasks)
    assert received(ctl, b"client-a") == [("result", "t0"), ("result", "t1")]


def test_outside_the_loop_every_send_goes_at_once(ctl):
    ctl.outbox.batching = False  # handlers called on their own, as the other controller tests do
    finish(ctl, "t0", b"client-a")
    assert len(ctl.wire) == 2 and ctl.outbox.held == {}


def test_a_message_with_buffers_is_never_held_and_goes_after_what_was(ctl):
    finish(ctl, "t0", b"client-a")
    task = Task("big", b"client-a")
    ctl.ledger.add(task)
    header = Result("big", 0, "ok").header(ctl.ids())
    ctl.forward(task, encode(ctl.signer, header, b"\x80\x05N.", [b"x" * 100]))
    assert [len(f) for _, f in ctl.wire] == [1, 2]  # the held batch first, then it alone
    assert received(ctl, b"client-a")[-1] == ("result", "big")
    # a batch in is unwrapped by the loop (`Controller._handle`), never handled as a kind
    assert server.HANDLERS.keys() == (server.CLIENT_KINDS | server.ENGINE_KINDS) - {"batch"}
