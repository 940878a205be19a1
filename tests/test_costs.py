"""Performance guards that do not depend on the machine's speed: messages per task, copies of a
large buffer, and what an idle engine imports."""

from __future__ import annotations

import sys

import numpy as np

from ipcluster import serialize, transport


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
    assert grew["query"] == 1  # the query that read `before`


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
