"""ipyparallel's documented behaviour, against `import ipcluster as ipp`."""

from __future__ import annotations

import io
import itertools
import os
import time

import numpy as np
import pytest

import ipcluster as ipp


# -- scatter / gather -----------------------------------------------------------------------

@pytest.mark.parametrize("dist", ["b", "r"])
def test_scatter_gather_lists_and_arrays(rc, dist):
    dview = rc[:]
    dview.scatter("part", list(range(10)), dist=dist, block=True)
    parts = dview.pull("part", block=True)
    assert sorted(x for p in parts for x in p) == list(range(10))
    assert dview.gather("part", dist=dist, block=True) == list(range(10))
    arr = np.arange(100.0).reshape(25, 4)
    dview.scatter("arr", arr, dist=dist, block=True)
    assert [p.shape[0] for p in dview.pull("arr", block=True)] == [7, 6, 6, 6]
    assert np.array_equal(dview.gather("arr", dist=dist, block=True), arr)


def test_scatter_then_compute_then_gather(rc):
    dview = rc[:]
    dview.scatter("x", np.arange(16), block=True)
    dview.execute("y = x ** 2", block=True)
    assert list(dview.gather("y", block=True)) == [i**2 for i in range(16)]


def test_scatter_flatten_gives_single_items(rc):
    rc[:].scatter("item", [10, 20, 30, 40], flatten=True, block=True)
    assert rc[:].pull("item", block=True) == [10, 20, 30, 40]
    assert rc[:].gather("item", block=True) == [10, 20, 30, 40]


def test_scatter_bad_input(rc):
    with pytest.raises(ValueError, match="dist must be"):
        rc[:].scatter("a", [1, 2], dist="z")
    with pytest.raises(TypeError, match="sliced"):
        rc[:].scatter("a", {1, 2, 3})
    assert rc[:].apply_sync(lambda: 1) == [1] * 4


# -- map --------------------------------------------------------------------------------------

def slow_first_or_last(x):
    import time
    time.sleep(0.5 if x in (0, 11) else 0.01)
    return x


def test_map_ordered_and_unordered_with_slow_first_and_last_items(rc):
    view = rc.load_balanced_view()
    ordered = view.map(slow_first_or_last, range(12), chunksize=1, block=False)
    assert list(ordered) == list(range(12))
    unordered = view.map(slow_first_or_last, range(12), chunksize=1, ordered=False, block=False)
    got = list(unordered)
    assert sorted(got) == list(range(12)) and got[0] not in (0, 11)
    assert sorted(unordered.get()) == list(range(12))


def test_map_return_exceptions(rc):
    def inverse(x):
        return 1 / x

    for view in (rc.load_balanced_view(), rc[:]):
        out = view.map_sync(inverse, [1, 0, 2, 4], return_exceptions=True)
        assert out[0] == 1.0 and out[2:] == [0.5, 0.25]
        assert isinstance(out[1], ipp.RemoteError) and out[1].ename == "ZeroDivisionError"
        with pytest.raises(ipp.RemoteError, match="ZeroDivisionError"):
            view.map_sync(inverse, [1, 0, 2, 4])


def test_get_return_exceptions(rc):
    ar = rc[:].apply_async(lambda: 1 / (os.getpid() % 1))
    values = ar.get(timeout=10, return_exceptions=True)
    assert len(values) == 4 and all(isinstance(v, ipp.RemoteError) for v in values)


def test_imap_over_an_endless_generator_keeps_few_tasks_in_flight(rc):
    view = rc.load_balanced_view()
    drawn = []

    def numbers():
        for i in itertools.count():
            drawn.append(i)
            yield i

    results = view.imap(lambda x: x * 2, numbers(), max_outstanding=3)
    first = [next(results) for _ in range(20)]
    assert first == [2 * i for i in range(20)]
    assert len(drawn) <= 20 + 3  # never more than max_outstanding ahead
    results.close()


def test_imap_unordered(rc):
    out = list(rc.load_balanced_view().imap(slow_first_or_last, range(12), ordered=False))
    assert sorted(out) == list(range(12)) and out[0] != 0


# -- flags, references, decorators ----------------------------------------------------------

def test_temp_flags_apply_inside_the_block_only(rc):
    view = rc.load_balanced_view()
    with view.temp_flags(block=True, label="tmp"):
        assert view.apply(lambda: 5) == 5
    assert isinstance(view.apply(lambda: 5), ipp.AsyncResult)
    with pytest.raises(TypeError, match="unknown flag"):
        view.set_flags(bolck=True)


def test_label_reaches_the_metadata(rc):
    view = rc.load_balanced_view(label="sweep-7")
    ar = view.apply_async(lambda: 1)
    ar.get(timeout=10)
    assert ar.metadata["label"] == "sweep-7"


def test_reference_resolves_in_the_engine_namespace(rc):
    rc[:].push({"big": list(range(5))}, block=True)
    assert rc[:].apply_sync(len, ipp.Reference("big")) == [5] * 4
    with pytest.raises(ValueError, match="a name or an expression"):
        ipp.Reference("not a name")


def test_view_item_access(rc):
    rc[:]["shared"] = 7
    assert rc[:]["shared"] == [7] * 4
    assert rc[2]["shared"] == 7


def test_remote_decorator(rc):
    @rc[:].remote(block=True)
    def getpid():
        import os
        return os.getpid()

    assert len(set(getpid())) == 4

    @rc.load_balanced_view().remote(block=False)
    def square(x):
        return x * x

    assert square(9).get(timeout=10) == 81
    assert square.map(range(4)).get(timeout=10) == [0, 1, 4, 9]


def test_parallel_decorator_gives_each_engine_its_part(rc):
    @rc[:].parallel(block=True)
    def part_sizes(xs):
        return [len(xs)] * len(xs)

    assert part_sizes(list(range(10))) == [3] * 6 + [2] * 4  # blocks of 3, 3, 2, 2

    @rc.load_balanced_view().parallel(block=True, chunksize=4)
    def double(xs):
        return [2 * x for x in xs]

    assert double(list(range(10))) == [2 * x for x in range(10)]

    @rc[:].parallel(block=True)
    def arr_double(a):
        return a * 2

    assert np.array_equal(arr_double(np.arange(9)), np.arange(9) * 2)


def test_require_imports_modules_and_defines_objects(rc):
    def helper(x):
        return x + 1

    @ipp.require("json", helper)
    def uses_them(x):
        return json.dumps(helper(x))  # noqa: F821 (both defined on the engine)

    assert rc[0].apply_sync(uses_them, 1) == "2"

    @ipp.require("no_such_module_anywhere")
    def never():
        return 1

    with pytest.raises(ipp.UnmetDependency, match="no_such_module_anywhere"):
        rc.load_balanced_view().apply_sync(never)


def test_depend_moves_a_task_to_an_engine_that_meets_it(rc):
    target_pid = rc[2].apply_sync(os.getpid)

    def is_engine(pid):
        import os
        return os.getpid() == pid

    @ipp.depend(is_engine, target_pid)
    def where():
        import os
        return os.getpid()

    view = rc.load_balanced_view()
    assert {view.apply_sync(where) for _ in range(6)} == {target_pid}

    @ipp.depend(is_engine, -1)
    def nowhere():
        return 1

    with pytest.raises(ipp.ImpossibleDependency, match="no engine meets"):
        view.apply_sync(nowhere)


def test_sync_imports_announces_imports_as_written(rc, capsys):
    with rc[:].sync_imports():
        import math  # noqa: F401
        import json as js  # noqa: F401
        from os import path  # noqa: F401
        from math import sqrt, pi as PI  # noqa: F401
        import xml.dom  # noqa: F401
    assert capsys.readouterr().out.splitlines() == [
        "import math (on engine(s))", "import json as js (on engine(s))",
        "from os import path (on engine(s))", "from math import sqrt (on engine(s))",
        "from math import pi as PI (on engine(s))", "import xml.dom (on engine(s))"]
    got = rc[:].apply_sync(ipp.interactive(  # noqa: F821
        lambda: (math.floor(2.5), js.dumps(1), path.join("a", "b"), sqrt(4.0), PI, xml.dom.Node.ELEMENT_NODE)))
    assert got == [(2, "1", "a/b", 2.0, 3.141592653589793, 1)] * 4


# -- abort, results from other clients, status ------------------------------------------------

def test_abort_queued_work(rc):
    view = rc.load_balanced_view()
    running = [view.apply_async(time.sleep, 0.5) for _ in range(8)]  # 4 engines, 2 each at least
    queued = view.apply_async(lambda: "should not run")
    queued.abort()
    with pytest.raises(ipp.TaskAborted):
        queued.get(timeout=10)
    assert all(ar.get(timeout=30) is None for ar in running)


def test_abort_running_work_interrupts_it_and_the_engine_goes_on(rc):
    ar = rc[1].apply_async(time.sleep, 60)
    time.sleep(0.3)  # let it start: abort must reach a running task
    t0 = time.monotonic()
    rc.abort(ar)
    with pytest.raises(ipp.TaskAborted, match="while running"):
        ar.get(timeout=10)
    assert time.monotonic() - t0 < 5
    assert rc[1].apply_sync(lambda: "next") == "next"


def test_get_result_from_a_second_client(rc, cluster):
    ar = rc.load_balanced_view().apply_async(lambda: print("hi") or 42)
    ar.get(timeout=10)
    with ipp.Client(cluster.connection_file) as other:
        again = other.get_result(ar.msg_ids[0])
        assert again.get(timeout=10) == 42
        assert again.stdout == "hi\n"
        slow = rc[0].apply_async(time.sleep, 0.5)
        rc.queue_status()  # a round trip: the controller has seen the task (same socket, in order)
        assert other.get_result(slow.msg_ids, block=True) is None  # waits for unfinished work
        with pytest.raises(ipp.RemoteError, match="no task"):
            other.get_result("no-such-id").get(timeout=10)


def test_client_bookkeeping(rc):
    ar = rc[0].apply_async(lambda: 3)
    assert ar.msg_ids[0] in rc.history
    rc.wait([ar], timeout=10)
    # as in ipyparallel, the AsyncResult owns its result: the client does not keep it too
    assert ar.get() == 3 and ar.msg_ids[0] not in rc.results
    rc.get_result(ar.msg_ids, owner=False).get(timeout=10)  # fetched, owned by no result
    assert rc.results[ar.msg_ids[0]] == 3
    assert rc.metadata[ar.msg_ids[0]]["engine_id"] == 0
    assert ar.msg_ids[0] not in rc.outstanding
    assert rc.wait(timeout=10) is True
    rc.purge_results("all")
    assert ar.msg_ids[0] not in rc.results


def test_results_name_their_engine_process_by_uuid(rc):
    ar = rc[:].apply_async(os.getpid)
    ar.get(timeout=10)
    uuids = ar.engine_uuid  # ipyparallel's: one per engine, a list for several
    assert len(set(uuids)) == len(rc.ids) and all(isinstance(u, str) for u in uuids)
    again = rc[:].apply_async(os.getpid)
    again.get(timeout=10)
    assert again.engine_uuid == uuids and again.engine_id == ar.engine_id


def test_a_failed_cell_aborts_the_cells_queued_behind_it(rc, tmp_path):
    """ipykernel's stop_on_error, which ipyparallel's engines have: a notebook's "run all"
    stops at the first error; calls queued behind it still run."""
    from tests.conftest import wait_until

    go, view = tmp_path / "go", rc[0]
    view.execute(f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)",
                 block=False)
    failing = view.execute("1 / 0", block=False)
    applied = view.apply_async(lambda: 42)
    behind = view.execute("ran_behind_an_error = True", block=False)
    wait_until(lambda: rc.queue_status(targets=0)["queue"] == 4)
    go.touch()
    with pytest.raises(ZeroDivisionError):
        failing.get(timeout=10)
    assert applied.get(timeout=10) == 42
    with pytest.raises(ipp.TaskAborted, match="a code cell queued before it"):
        behind.get(timeout=10)
    view.execute("ran_after = True", block=True)  # a cell sent after the error runs
    assert view.pull("ran_after", block=True) is True
    with pytest.raises(ipp.RemoteError, match="NameError"):
        view.pull("ran_behind_an_error", block=True)


def test_timeout_is_how_long_a_task_may_wait_to_start(rc, tmp_path):
    """ipyparallel's load-balanced `timeout`: the wait for dependencies or an engine, each time
    a task waits; not its run time (that is `time_limit`)."""
    def fail():
        raise ValueError("fails everywhere")

    n = len(rc.ids)
    # failed on every engine: it waits for an engine it has not failed on, until its timeout
    with pytest.raises(ipp.TaskTimeout, match="not started within its timeout of 0.5 s"):
        rc.load_balanced_view(retries=n, timeout=0.5).apply_sync(fail)
    with pytest.raises(ValueError):  # without a timeout it runs again where it failed
        rc.load_balanced_view(retries=n).apply_sync(fail)

    def wait_for(path):
        import os
        import time
        while not os.path.exists(path):
            time.sleep(0.01)

    go = tmp_path / "go"
    view = rc.load_balanced_view()
    first = view.apply_async(wait_for, str(go))
    try:
        with pytest.raises(ipp.TaskTimeout, match="not started"):  # its dependency runs on
            with view.temp_flags(after=first, timeout=0.5):
                view.apply_sync(lambda: "never")
        with view.temp_flags(timeout=0.1):  # started in time, it may run longer than that
            assert view.apply_sync(lambda: __import__("time").sleep(0.5) or "ran") == "ran"
    finally:
        go.touch()
    first.get(timeout=10)


def test_another_client_fetches_a_cell_as_its_execute_reply(rc, cluster):
    ar = rc[0].execute("print('from a cell')", silent=False, block=False)
    mine = ar.get(timeout=10)
    with ipp.Client(cluster.connection_file) as other:
        hub = other.get_result(ar.msg_ids[0], owner=False)
        assert isinstance(hub, ipp.AsyncHubResult)
        reply = hub.get(timeout=10)
        assert reply.stdout == mine.stdout == "from a cell\n"
        assert reply.execute_result is mine.execute_result is None
        assert other.get_result(ar.msg_ids[0]).get(timeout=10) == reply  # the same cell
        assert other[0].apply_async(lambda: 1).get(timeout=10) == 1  # a plain value stays one


def test_queue_status(rc):
    ar = rc[0].apply_async(time.sleep, 0.5)
    status = rc.queue_status()
    assert set(status) == {0, 1, 2, 3, "unassigned"}
    assert status[0]["queue"] == 1 and status["unassigned"] == 0
    ar.get(timeout=10)
    assert rc.queue_status(targets=0)["queue"] == 0  # one engine: its own dict, as ipyparallel


def test_clear_empties_namespaces(rc):
    rc[:].push({"gone": 1}, block=True)
    rc.clear(block=True)
    with pytest.raises(ipp.CompositeError):
        rc[:].pull("gone", block=True)


# -- AsyncResult ------------------------------------------------------------------------------

def test_async_result_timings_and_dict(rc):
    ar = rc[:].apply_async(time.sleep, 0.1)
    ar.get(timeout=10)
    assert ar.get_dict() == dict.fromkeys(rc.ids)
    assert 0.1 <= ar.wall_time < 10 and ar.serial_time >= 0.4 and ar.elapsed >= ar.wall_time * 0.99
    assert ar.progress == 4 and len(ar) == 4


def test_streaming_output_arrives_while_the_tasks_run(rc, tmp_path):
    go = tmp_path / "go"

    def talk(go):
        import os
        import time
        print("first", flush=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)  # the task holds until the test has seen its first line
        print("second")

    ar = rc[:].apply_async(talk, str(go))
    out = io.StringIO()
    with ar.stream_output(out):
        deadline = time.monotonic() + 30
        while out.getvalue().count("first") < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out.getvalue().count("first") == 4 and not ar.done()  # before the tasks end
        go.touch()
        ar.get(timeout=30)
    lines = out.getvalue().splitlines()
    assert sorted(lines) == sorted([f"[stdout:{i}] {w}" for i in rc.ids for w in ("first", "second")])


def test_wait_interactive_shows_a_progress_bar(rc, capsys):
    ar = rc.load_balanced_view().map_async(slow_first_or_last, range(8), chunksize=1)
    ar.wait_interactive()
    err = capsys.readouterr().err
    assert "8/8" in err and "items" in err and ar.done()


def test_executor_is_a_real_executor(rc):
    import concurrent.futures

    with rc.executor() as ex:
        futures = [ex.submit(pow, i, 2) for i in range(100)]
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == \
            [i * i for i in range(100)]
        assert list(ex.map(pow, range(5), range(5))) == [pow(i, i) for i in range(5)]


def test_track_tells_when_sent_arrays_may_change(rc):
    a = np.ones(1_000_000)
    ar = rc[:].push({"tracked": a}, block=False, track=True)
    ar.wait_for_send(timeout=10)
    assert ar.sent
    ar.get(timeout=10)


def test_display_outputs_labels_each_engine(rc, capsys):
    ar = rc[:].apply_async(lambda: print("line"))
    ar.get(timeout=10)
    ar.display_outputs()
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(
        f"[stdout:{i}] line" for i in rc.ids)


def test_send_signal_interrupts_the_running_task_only(rc):
    import signal

    ar = rc[3].apply_async(time.sleep, 60)
    time.sleep(0.3)
    rc.send_signal(signal.SIGINT, targets=3)
    with pytest.raises(ipp.RemoteError, match="KeyboardInterrupt"):
        ar.get(timeout=10)
    assert rc[3].apply_sync(lambda: "alive") == "alive"


def test_all_view_includes_late_engines_and_shutdown_stops_them():
    from tests.conftest import start_cluster

    cluster = start_cluster(1)
    try:
        rc = ipp.Client(cluster.connection_file)
        everyone = rc.direct_view("all")
        assert len(everyone.apply_sync(os.getpid)) == 1
        cluster.start_engines_sync(2)
        rc.wait_for_engines(3, timeout=30, interactive=True)
        assert len(set(everyone.apply_sync(os.getpid))) == 3
        rc.shutdown(targets=[1, 2])
        assert rc.ids == [0]
        rc.shutdown(hub=True)
        deadline = time.monotonic() + 10
        while cluster.controller.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cluster.controller.returncode == 0
        rc.close()
    finally:
        cluster.stop_cluster_sync()
