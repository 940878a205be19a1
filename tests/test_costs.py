"""Performance guards that do not depend on the machine's speed: messages per task, copies of a
large buffer, and what an idle engine imports."""

from __future__ import annotations

import sys
import time

import numpy as np

from ipcluster import serialize, transport
from ipcluster.protocol import Signer, decode, unpack
from tests.conftest import wait_until


def received(rc) -> dict:
    return rc._session.request("query", {})["received"]


def test_one_message_each_way_per_task_and_one_request_for_all_engines(rc):
    view = rc.load_balanced_view()
    view.map_sync(abs, range(10))  # warm
    before = received(rc)
    ars = [view.apply_async(abs, -i) for i in range(100)]
    [ar.get(timeout=30) for ar in ars]
    rc[:].apply_sync(abs, -1)  # 4 engines: still one request from the client
    after = received(rc)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grew["apply"] == 101
    assert grew["result"] == 104
    assert grew.get("output", 0) == 0  # a silent task sends no output messages
    # no query per task: the one that read `before`, and the engine supervisor's periodic ones
    # (every 0.5 s; the controller counts every client's messages)
    assert grew["query"] < 10


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
