"""Performance guards that do not depend on the machine's speed: messages and frames per task,
scheduler steps per task at many engines, beats answered and beats a second at 10,000 engines,
engines looked at to find the silent ones, copies of a large buffer, and what an idle engine
imports."""

from __future__ import annotations

import sys
import time

import numpy as np

from ipcluster import connection, serialize, transport
from ipcluster.controller import liveness, server
from ipcluster.controller.main import ControllerOptions
from ipcluster.controller.registry import Registry
from ipcluster.controller.scheduler import Pending, make_scheduler
from ipcluster.controller.server import Controller
from ipcluster.protocol import Apply, Ids, Result, Signer, decode, encode, pack, unpack
from tests.conftest import wait_until


def counts(rc) -> dict:
    return rc._session.request("query", {})


def received(rc) -> dict:
    return counts(rc)["received"]


def test_one_message_each_way_per_task_two_frames_each_and_one_request_for_all_engines(rc):
    view = rc.load_balanced_view()
    view.map_sync(abs, range(10))  # warm
    before = counts(rc)
    ars = [view.apply_async(abs, -i) for i in range(100)]
    [ar.get(timeout=30) for ar in ars]
    rc[:].apply_sync(abs, -1)  # 4 engines: still one request from the client
    after = counts(rc)
    mine = {k: n - before["received_from_you"].get(k, 0)
            for k, n in after["received_from_you"].items()
            if n != before["received_from_you"].get(k, 0)}
    assert mine == {"apply": 101, "query": 1}  # this client's messages only: no query per task
    grew = {k: after["received"].get(k, 0) - before["received"].get(k, 0) for k in after["received"]}
    assert grew["result"] == 104
    assert grew.get("output", 0) == 0  # a silent task sends no output messages
    traffic = {k: after["traffic"][k] - before["traffic"].get(k, 0) for k in after["traffic"]}
    tasks = 104
    # in: an apply per request, a result per task (and the engines' beats and the supervisor's
    # queries meanwhile, a handful); out: the task to its engine, the result to its client
    assert traffic["messages_in"] <= 101 + tasks + 20
    assert traffic["messages_out"] <= 2 * tasks + 20
    # frames per message: the routing id, then one frame (delimiter, signature, header and
    # content: no buffers, small content); out, at most one message per peer and turn (batches)
    assert traffic["frames_in"] <= 2 * traffic["messages_in"]  # fewer: requests in batches
    assert traffic["frames_out"] == 2 * traffic["messages_out"]


def wait_for_file(path: str) -> None:
    """A task that holds its engine until `path` exists (the test creates it)."""
    import os
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_burst_of_requests_reaches_the_controller_in_few_messages(rc, tmp_path):
    """Requests submitted while others are in flight are held and go several to one signed
    ``batch`` (`wire.Wire.hold`): 2,000 apply_async in a loop are far fewer messages. The
    tasks wait behind a gate, so that only this client (and the engines' beats) send meanwhile."""
    gate = tmp_path / "open"
    gated = rc[0].apply_async(wait_for_file, str(gate))
    view = rc.load_balanced_view()
    before = counts(rc)
    with view.temp_flags(after=gated):
        ars = [view.apply_async(abs, -i) for i in range(2000)]
    after = counts(rc)  # a request: what was held went before it
    traffic = {k: after["traffic"][k] - before["traffic"].get(k, 0) for k in after["traffic"]}
    sent = after["received_from_you"]["apply"] - before["received_from_you"]["apply"]
    others = traffic["messages_in"] - sent  # the query, engines' beats: at most one message each
    messages = traffic["frames_in"] // 2  # every message here is a routing id and one frame
    assert sent == 2000
    assert messages <= 2000 // 20 + others, (messages, others, traffic)
    gate.touch()
    assert [ar.get(timeout=60) for ar in ars] == list(range(2000))
    assert gated.get(timeout=30) is None


def engine_wakeups() -> int:
    """On an engine: how often its main thread woke the control thread (to send for it)."""
    import threading

    return next(t for t in threading.enumerate() if t.name == "ipcluster-control").wire.wakeups


def engine_handed() -> int:
    """On an engine: how many tasks its control thread received and queued for the main thread."""
    import threading

    return next(t for t in threading.enumerate() if t.name == "ipcluster-control").handed


def test_no_thread_hand_off_per_task_in_the_client_or_the_engine(rc):
    """The calling thread sends its request on the client's socket itself and the engine's main
    thread sends the result itself: a round trip wakes neither the client's IO thread nor the
    engine's control thread to send for it. The idle engine's main thread receives its next
    task itself: the control thread does not receive it and hand it over; and the calling
    thread waiting for the result receives it itself, so the client's IO thread does not
    handle it and wake the caller.

    A hand-off still happens when a message came as a thread sent (the send took its
    notification in, so the sender wakes the other thread): a reply, a beat's answer, or,
    with the process descheduled between its send and that check (a loaded machine), the
    answer to what it sent. So the round trips run in batches of 20, and the quietest batch
    counts: a hand-off per task would be 20 in every batch."""
    engine, session = rc[0], rc._session
    engine.apply_sync(abs, -1)

    def costs() -> tuple:
        handed, woke = engine.apply_sync(engine_handed), engine.apply_sync(engine_wakeups)
        return session.wire.wakeups, woke, handed, session.receiver.io_handled

    batches = []
    for _ in range(5):
        before = costs()
        for i in range(20):
            assert engine.apply_sync(abs, -i) == i
        batches.append([b - a for a, b in zip(before, costs())])
    # each batch's counts include the two queries of `costs` (a wake-up or a hand-off each,
    # at most), so at most 2 + 3 in the quietest batch
    client_woke, engine_woke, handed, io_handled = (min(b[k] for b in batches) for k in range(4))
    assert client_woke <= 5 and engine_woke <= 5, batches
    assert handed <= 5, batches
    assert io_handled <= 5, batches


def test_threads_waiting_while_another_receives_are_handed_to_the_io_thread(rc):
    """One thread waiting in get() receives for every thread; another, waiting meanwhile, is
    completed by it. When the receiving thread has its result and leaves while the other still
    waits, it wakes the IO thread to watch the socket again (not left to its next look)."""
    import threading

    quick, slow = rc[0].apply_async(time.sleep, 0.2), rc[1].apply_async(time.sleep, 0.6)
    receiving = threading.Thread(target=quick.get, kwargs={"timeout": 30})
    receiving.start()
    wait_until(lambda: rc._session.receiver.caller_receives, timeout=10)
    woken, io_handled = rc._session.wire.wakeups, rc._session.receiver.io_handled
    assert slow.get(timeout=30) is None  # waits on its future: the other thread receives
    receiving.join(timeout=30)
    assert quick.done()
    assert rc._session.wire.wakeups > woken  # the receiving thread left and woke the IO thread
    assert rc._session.receiver.io_handled > io_handled  # which took the slow result in


def test_no_per_engine_scan_per_task():
    """Placing a task costs the same number of scheduler steps at 8 and at 1,000 engines."""
    def steps_per_task(engines: int, tasks: int = 2000) -> float:
        s = make_scheduler("leastload", 2)
        for eid in range(engines):
            s.add_engine(eid)
        start = s.steps
        for i in range(tasks):
            s.submit(Pending(f"t{i}", None, None))
            for _, eid in s.ready():
                s.finished(eid)
        return (s.steps - start) / tasks

    few, many = steps_per_task(8), steps_per_task(1000)
    assert many <= 2 * few + 2, (few, many)


def test_the_queue_is_never_copied_or_walked_per_task():
    """10,000 tasks wait behind two full engines: each freed slot places one task in a few
    scheduler steps, not a walk over the queue, and the queue is never rebuilt (a copy of it per
    dispatch once cost a fifth of the controller's time, growing with the queue)."""
    s = make_scheduler("leastload", 2)
    for eid in range(2):
        s.add_engine(eid)
    for i in range(10_004):
        s.submit(Pending(f"t{i}", None, None))
    running = [eid for _, eid in s.ready()]
    queue, start = s.buckets[None].heap, s.steps
    for _ in range(1000):
        s.finished(running.pop(0))
        running += [eid for _, eid in s.ready()]
    assert (s.steps - start) / 1000 <= 6, (s.steps - start) / 1000
    assert s.buckets[None].heap is queue and len(s.pending) == 9000


def test_beats_answered_per_second_do_not_grow_with_every_beat(tmp_path):
    """N engines beating once a second cost the controller N decodes a second and at most
    N / BEAT_ANSWER_EVERY answers, not N answers: the controller's handler on its own, no
    socket traffic (sends are recorded)."""
    ctl = Controller("costs", ControllerOptions(), connection.new_key())
    sent = []
    ctl.outbox.send = lambda sock, identity, frames: sent.append(identity) or True
    try:
        n = 500
        for eid in range(n):
            ctl.registry.add(f"e{eid}".encode(), eid, "h")
        for second in range(5):  # five beats from every engine
            for eid in range(n):
                frames = [f"e{eid}".encode(),
                          *encode(ctl.signer, {"kind": "beat", "id": f"b{second}-{eid}"})]
                server.HANDLERS["beat"](ctl, decode(ctl.signer, frames))
        assert len(sent) == n  # one answer each, for 5 * n beats
    finally:
        ctl.close()


def test_tasks_and_results_handled_in_one_turn_cost_one_message_per_peer(tmp_path):
    """What one turn of the controller's loop sends a peer goes as one message (a batch): 40
    tasks to two engines are 2 messages, their 40 results to the client 1. The handlers on
    their own, as the loop calls them; what would go out is recorded."""
    ctl = Controller("costs", ControllerOptions(hwm=0), connection.new_key())
    out = []
    ctl.outbox.transmit = lambda sock, identity, frames: out.append((identity, len(frames))) or True
    try:
        for eid in range(2):
            ctl.registry.add(f"engine-{eid}".encode(), eid, "h", eid)
            ctl.scheduler.add_engine(eid)
            ctl.graph.engine_added(eid)
        ids, tasks = Ids(), [f"t{i}" for i in range(40)]
        ctl.outbox.batching = True  # as in `serve`
        for task in tasks:
            header = Apply([task], None, True).header(ids())
            ctl._handle(ctl.clients, [b"client", *encode(ctl.signer, header, b"call")],
                        server.CLIENT_KINDS)
        ctl.outbox.flush()
        assert sorted(out) == [(b"engine-0", 1), (b"engine-1", 1)]  # one frame each
        out.clear()
        for task in tasks:
            eid = ctl.ledger.get(task).engine
            header = Result(task, eid, "ok").header(ids())
            ctl._handle(ctl.engines, [f"engine-{eid}".encode(), *encode(ctl.signer, header, b"r")],
                        server.ENGINE_KINDS)
        ctl.outbox.flush()
        assert out == [(b"client", 1)]
        assert ctl.traffic["batched"] == 80
    finally:
        ctl.close()


def test_a_large_array_is_never_copied_on_the_way_in_or_out():
    ctx = transport.Context()
    try:
        a_sock, url = ctx.router("127.0.0.1")
        b_sock = ctx.dealer(url)
        array = np.arange(1_000_000, dtype=np.float64)
        content, buffers = serialize.dumps(array)
        assert len(buffers) == 1 and np.shares_memory(np.frombuffer(buffers[0], np.float64), array)
        transport.send(b_sock, [content, *buffers])
        frames = transport.recv(a_sock)[1:]
        out = serialize.loads(frames[0], frames[1:])
        received_at = np.frombuffer(frames[1].buffer, np.uint8).ctypes.data
        assert out.ctypes.data == received_at  # built on the received frame: no copy
        assert out.flags.writeable and np.array_equal(out, array)
    finally:
        ctx.close()


def test_an_engine_imports_no_heavy_module_until_it_is_used(rc):
    def heavy_modules():
        import sys
        return sorted(m for m in ("IPython", "numpy", "dask", "distributed", "pandas", "tqdm",
                                  "psutil", "sqlite3", "mpi4py") if m in sys.modules)

    # a fresh engine: engine 3 of this module's cluster has only run plain functions so far
    assert rc[3].apply_sync(heavy_modules) == []
    assert "numpy" in sys.modules  # (the client has it; the engine did not inherit it)


def test_nobody_watching_no_task_event_is_made_or_sent(rc):
    info = rc._session.info
    ctx = transport.Context(info.key_bytes)  # a peer with the key: it hears what clients hear
    try:
        sub = ctx.subscriber(info.pub_url)  # what every client hears
        before = rc._session.request("query", {})
        rc.load_balanced_view().map_sync(abs, range(100), chunksize=1)
        after = rc._session.request("query", {})
        published = [unpack(decode(Signer(info.key_bytes), frames).content)["event"]
                     for frames in transport.drain(sub)]
    finally:
        ctx.close()
    assert after["event_batches"] == before["event_batches"] == 0
    assert set(published) <= {"beat"}  # the controller's periodic beat, nothing per task
    grew = {k: after["received"].get(k, 0) - before["received"].get(k, 0) for k in after["received"]}
    assert grew["apply"] == 100 and grew["result"] == 100


def test_watched_events_come_batched_at_most_one_message_per_interval(rc):
    from ipcluster.controller.watch import INTERVAL
    from ipcluster.dashboard.feed import Feed
    from ipcluster.dashboard.status import Status

    state = Status(rc.cluster_id)
    feed = Feed(rc._session.info, state)
    feed.start()
    try:
        wait_until(lambda: feed.batches > 0, timeout=10)
        first, start = feed.batches, time.monotonic()
        before = received(rc)
        ars = rc.load_balanced_view().map_async(abs, range(300), chunksize=1)
        ids = set(ars.msg_ids)
        ars.get(timeout=60)
        wait_until(lambda: ids <= {t["id"] for t in list(state.tasks)}, timeout=20)
        elapsed, batches = time.monotonic() - start, feed.batches - first
        grew = {k: received(rc).get(k, 0) - before.get(k, 0) for k in before}
    finally:
        feed.stop()
        feed.join(timeout=10)
    # one message per interval for all engines together: at most one per engine per interval
    assert batches <= elapsed / INTERVAL + 2, (batches, elapsed)
    assert batches < len(ids) / 4  # batched: many tasks in one message
    assert grew["apply"] == 300 and grew["result"] == 300  # the hot path is unchanged
    assert {t["fn"] for t in state.tasks if t["id"] in ids} == {"abs"}


def test_beats_a_second_stay_bounded_however_many_engines_register():
    """Past `max_beat_rate` engines each is told to beat less often, in its register reply: the
    beats the controller hears a second stay near that rate, and the silence limits stretch."""
    ctl = Controller("costs", ControllerOptions(max_beat_rate=1000), connection.new_key())
    replies = []
    ctl.outbox.send = lambda sock, identity, frames: replies.append(unpack(decode(ctl.signer, [identity, *frames]).content)) or True
    try:
        n = 10_000
        for eid in range(n):
            frames = [f"e{eid}".encode(), *encode(ctl.signer, {"kind": "register", "id": f"r{eid}"},
                                                  pack({"pid": eid, "host": "h"}))]
            server.HANDLERS["register"](ctl, decode(ctl.signer, frames))
        told = [r["beat"] for r in replies]
        assert len(told) == n and told[0] == 1.0 and told[-1] == 8.0  # capped: 10 would be due
        replies.clear()  # the engines told a shorter interval learn the new one at their next beat
        for eid in range(n):
            beat = [f"e{eid}".encode(), *encode(ctl.signer, {"kind": "beat", "id": f"b{eid}"})]
            server.HANDLERS["beat"](ctl, decode(ctl.signer, beat))
        assert replies == [{"beat": 8.0}] * sum(t != 8.0 for t in told)
        assert sum(1 / e.beat for e in ctl.registry.by_id.values()) == n / 8  # beats a second
        assert liveness.limits(ctl) == (3.0 + 3 * 7, 30.0 + 3 * 7)
    finally:
        ctl.close()


def test_finding_silent_engines_looks_at_the_silent_ones_only():
    registry = Registry()
    engines = [registry.add(f"e{i}".encode(), i, "h") for i in range(10_000)]
    for engine in engines[3:]:  # all but three were heard from since
        registry.heard(engine, time.monotonic() + 10)
    registry.scanned = 0
    assert registry.silent_since(time.monotonic() + 5) == engines[:3]
    assert registry.scanned == 4  # the three, and the first one heard from: not 10,000
    assert registry.by_pid(9_999, "h") is engines[-1]


def test_silence_is_counted_only_up_to_when_the_controller_had_read_everything():
    """A controller behind on its queue cannot tell silence from its own backlog."""
    ctl = Controller("costs", ControllerOptions(), connection.new_key())
    ctl.outbox.send = lambda *args: True
    try:
        engine = ctl.registry.add(b"e0", 0, "h")
        heard = engine.last_seen
        liveness.check(ctl, heard + 2.9)  # caught up 2.9 s after it was heard: not silent
        assert not engine.frozen
        liveness.check(ctl, heard + 3.1)
        assert engine.frozen
    finally:
        ctl.close()


def test_a_client_waiting_for_engines_asks_without_a_scan_of_the_engines(rc):
    reply = rc._session.request("query", {"what": "ids"})
    assert reply == {"ids": rc.ids, "version": reply["version"]}


def test_the_controller_keeps_no_libzmq_timer_per_engine_connection():
    """libzmq cancels a timer by walking every timer of its I/O thread, at the end of each
    connection's handshake and at the first message after each ping: with a handshake deadline
    and pings on the engines' socket, registering 10,000 engines cost O(engines²) in libzmq
    (3-5 s instead of 6-38 s with them, on a loaded machine). Engines ping their own end."""
    ctl = Controller("costs", ControllerOptions(), connection.new_key())
    try:
        assert ctl.engines.heartbeat_ivl == 0 and ctl.engines.handshake_ivl == 0
        assert ctl.engines.tcp_keepalive == 1  # a vanished peer is still found, by the kernel
        assert ctl.clients.heartbeat_ivl > 0  # a few clients: pinged as before
    finally:
        ctl.close()


def test_the_controllers_beat_is_the_same_size_at_10_and_at_10000_engines():
    """Every client hears the controller's beat each second: it carries the registry's version,
    never the list of engine ids (O(engines) a second to make, send and read)."""
    def beat_at(engines: int) -> dict:
        ctl = Controller("costs", ControllerOptions(), connection.new_key())
        published = []
        ctl.publish = published.append
        loops = iter([False, True])  # one turn of the loop: its first beat is due at once
        try:
            for eid in range(engines):
                ctl.registry.add(f"e{eid}".encode(), eid, "h")
            ctl.serve(lambda: next(loops))
        finally:
            ctl.close()
        return next(e for e in published if e["event"] == "beat")

    few, many = beat_at(10), beat_at(10_000)
    assert few.keys() == many.keys() and len(pack(many)) < 100, (few, many)
