"""Client: finding and connecting to a cluster, engine ids, and every kind of bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

import ipcluster
from ipcluster import connection
from ipcluster.protocol import pack, unpack
from tests.conftest import errors_of_threads_at_once, start_cluster, wait_until


def test_client_finds_a_cluster_by_id_and_by_path(cluster):
    for where in (cluster.cluster_id, cluster.connection_file, str(cluster.connection_file)):
        with ipcluster.Client(where) as rc:
            assert rc.ids == [0, 1, 2, 3]
            assert len(rc) == 4


def test_wait_for_engines_times_out_with_a_clear_error(rc):
    t0 = time.monotonic()
    with pytest.raises(ipcluster.NoEnginesRegistered, match="4 of 5 engines registered"):
        rc.wait_for_engines(5, timeout=0.5)
    assert time.monotonic() - t0 < 5


def test_a_client_that_missed_engine_events_has_the_right_ids_after_the_next_beat(rc):
    """Events may be dropped on the way (a slow subscriber): the controller's beat carries its
    registry's version (not every id), and a client whose list is at another version asks."""
    session = rc._session
    right = session.engine_ids
    session.engine_ids = right[:-1]  # as if it had missed engine_up for the last one
    session.engines_version -= 1
    wait_until(lambda: session.engine_ids == right, timeout=10)
    assert rc.ids == [0, 1, 2, 3]


def test_unknown_engine_id(rc):
    with pytest.raises(ipcluster.NoSuchEngine, match="no engine with id 99"):
        rc[99]
    ar = rc.direct_view([0, 99]).apply_async(os.getpid)
    with pytest.raises(ipcluster.NoSuchEngine, match="no engine with id 99"):
        ar.get(timeout=10)
    with pytest.raises(ipcluster.NoSuchEngine):
        rc.load_balanced_view(targets=[99]).apply_sync(os.getpid)
    assert len(rc[:].apply_sync(os.getpid)) == 4  # the cluster is unharmed


def test_unpicklable_argument_names_the_argument(rc):
    with pytest.raises(ipcluster.SerializationError, match=r"argument 1 \(lock object\)"):
        rc[0].apply_async(lambda a, b: a, 1, threading.Lock())
    assert rc[0].apply_sync(lambda: "still fine") == "still fine"


def test_unpicklable_result_comes_back_as_a_remote_error(rc):
    with pytest.raises(ipcluster.RemoteError, match="cannot send the result"):
        rc[0].apply_sync(threading.Lock)


def test_a_closed_client_refuses_calls(cluster):
    rc = ipcluster.Client(cluster.connection_file)
    view = rc[:]
    rc.close()
    with pytest.raises(ipcluster.ClientClosed, match="closed"):
        view.apply_sync(os.getpid)
    rc.close()  # closing twice is harmless


def test_a_closed_client_leaves_no_file_descriptor_open(cluster):
    ipcluster.Client(cluster.connection_file).close()  # what is made once per process
    before = psutil.Process().num_fds()
    for _ in range(10):
        rc = ipcluster.Client(cluster.connection_file)
        rc[0].apply_sync(os.getpid)  # the calling thread receives: its wake-up pipe is made
        rc.close()
        assert rc._session.receiver._wakes is None
    # not one descriptor per client (a leak: 2 or more each); other clients of the module's
    # cluster may hold one or two more for a moment as they reconnect
    assert psutil.Process().num_fds() - before < 5


def test_resubmit_runs_a_task_again_from_a_request_the_garbage_collector_does_not_walk(rc):
    import gc

    view = rc[0]
    with view.temp_flags(label="kept"):
        ar = view.apply_async(divmod, 7, 2)
    assert ar.get(timeout=30) == (3, 1)
    again = rc.resubmit(ar.msg_ids)
    assert again.get(timeout=30) == (3, 1) and again.msg_ids != ar.msg_ids
    assert again.metadata["label"] == "kept" and again.metadata["engine_id"] == 0
    gc.collect()  # thousands kept: each a tuple of bytes and ints, untracked once collected
    assert not gc.is_tracked(rc._requests[ar.msg_ids[0]])


def test_missing_and_corrupt_connection_files(tmp_path):
    with pytest.raises(ipcluster.ConnectionFileError, match="no connection file"):
        ipcluster.Client(tmp_path / "nope.json")
    with pytest.raises(ipcluster.ConnectionFileError, match="no connection file"):
        ipcluster.Client("no-such-cluster-id")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    with pytest.raises(ipcluster.ConnectionFileError, match="not JSON"):
        ipcluster.Client(bad)
    bad.write_text('{"cluster_id": "x"}')
    with pytest.raises(ipcluster.ConnectionFileError, match="corrupt"):
        ipcluster.Client(bad)
    bad.chmod(0o644)
    with pytest.raises(ipcluster.ConnectionFileError, match=r"readable by others \(mode 644\)"):
        ipcluster.Client(bad)


def test_a_controller_that_does_not_answer_fails_within_the_timeout(tmp_path):
    # a connection file that points at a port nobody serves
    info = connection.ConnectionInfo("ghost", "tcp://127.0.0.1:9", "tcp://127.0.0.1:9",
                                     "tcp://127.0.0.1:9", connection.new_key())
    path = tmp_path / "ghost.json"
    connection.write(path, info)
    t0 = time.monotonic()
    with pytest.raises(ipcluster.ControllerLost, match="no answer from the controller"):
        ipcluster.Client(path, timeout=1)
    assert time.monotonic() - t0 < 3


def test_work_in_flight_fails_when_the_controller_dies():
    cluster = start_cluster(1)
    try:
        rc = ipcluster.Client(cluster.connection_file, timeout=2)
        ar = rc[0].apply_async(time.sleep, 30)
        os.kill(cluster.controller.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(ipcluster.ControllerLost, match="silent"):
            ar.get(timeout=15)
        assert time.monotonic() - t0 < 5
        with pytest.raises(ipcluster.ControllerLost):
            rc[0].apply_async(os.getpid)
        rc.close()
    finally:
        cluster.stop_cluster_sync()


def test_load_balanced_work_without_engines_says_what_to_do():
    cluster = ipcluster.Cluster(n=0)
    cluster.start_cluster_sync()
    try:
        with ipcluster.Client(cluster.connection_file) as rc:
            with pytest.raises(ipcluster.NoEnginesRegistered, match="wait_for_engines"):
                rc.load_balanced_view().apply_async(os.getpid)
    finally:
        cluster.stop_cluster_sync()


SCRIPT = """
import ipcluster, sys
rc = ipcluster.Client(sys.argv[1])
factor = 10
def scale(x):
    return x * factor
def make_adder(k):
    return lambda x: x + k
print(rc[:].apply_sync(scale, 4))
print(rc.load_balanced_view().map_sync(make_adder(5), [1, 2, 3]))
rc[:].push({"factor": 100}, block=True)
print(rc[0].apply_sync(scale, 4))   # names on the engine win, as in ipyparallel
rc.close()
"""


def test_functions_and_closures_from_a_main_script_run_on_engines(cluster, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(cluster.connection_file)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[40, 40, 40, 40]", "[6, 7, 8]", "400"]


def test_functions_from_an_ipython_cell_run_on_engines(cluster):
    code = textwrap.dedent(f"""
        import ipcluster
        rc = ipcluster.Client({str(cluster.connection_file)!r})
        def cube(x):
            return x ** 3
        print("RESULT", rc.load_balanced_view().map_sync(cube, range(4)))
        rc.close()
    """)
    out = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--quick", "-c", code],
                         capture_output=True, text=True, timeout=60)
    assert "RESULT [0, 1, 8, 27]" in out.stdout, out.stdout + out.stderr


def test_spin_takes_in_what_the_controller_sent(cluster):
    from tests.conftest import wait_until

    with ipcluster.Client(cluster.connection_file) as rc, \
            ipcluster.Client(cluster.connection_file) as other:
        rc.wait_for_engines(cluster.n, timeout=30)
        before = other.queue_status(targets=0)["completed"]
        ar = rc[0].apply_async(abs, -3)
        wait_until(lambda: other.queue_status(targets=0)["completed"] > before)
        rc.spin()  # the result was sent before spin's reply: it is in when spin returns
        assert ar.done() and ar.get() == 3


def test_threads_sending_at_once_on_the_clients_socket_each_get_their_own_results(rc):
    """User threads send their requests on the client's one DEALER themselves (under its lock,
    while the IO thread receives on it): eight threads at once, each mixing balanced and direct
    tasks, printed output and queries, each get exactly their own values and output."""
    lview = rc.load_balanced_view()
    start, failures = threading.Barrier(8), []

    def work(k: int) -> None:
        try:
            start.wait(timeout=30)
            ars = [lview.apply_async(divmod, 1000 * k + i, 1000) for i in range(100)]
            printed = [rc[i % 4].apply_async(print, f"thread {k} call {i}") for i in range(20)]
            for _ in range(20):  # requests are sent outside the lock that orders submissions
                assert set(rc.queue_status()) == {0, 1, 2, 3, "unassigned"}
            assert [ar.get(timeout=60) for ar in ars] == [(k, i) for i in range(100)]
            for i, ar in enumerate(printed):
                ar.get(timeout=60)
                assert ar.stdout == f"thread {k} call {i}\n"  # its output, before its result
        except BaseException as exc:  # reported by the test's thread
            failures.append(f"thread {k}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch within a message's frames, if nothing stops it
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)


def test_a_request_held_while_others_are_in_flight_goes_though_its_caller_never_waits(rc, tmp_path):
    """With a task in flight, a request waits for others to go with it (`wire.Wire.hold`); a
    caller that then never blocks (it polls `ready()` in Python, or sleeps in C) still has it
    sent at once, by the IO thread."""
    from tests.test_costs import wait_for_file

    gate = tmp_path / "open"
    gated = rc[0].apply_async(wait_for_file, str(gate))
    try:
        for engine in (1, 2):
            ar = rc[engine].apply_async(abs, -engine)
            assert len(rc._session.tasks) > 1  # so it was held
            deadline = time.monotonic() + 30
            if engine == 1:
                while not ar.ready():  # busy in Python: the IO thread gets the GIL by turns
                    assert time.monotonic() < deadline, "a held request was never sent"
            else:
                wait_until(ar.ready)  # time.sleep between looks: sleeping in C
            assert ar.get(0) == engine
    finally:
        gate.touch()
    assert gated.get(timeout=30) is None


def test_ctrl_c_while_the_calling_thread_sends_never_leaves_a_message_half_sent(rc):
    """A request goes out frame by frame from the calling thread; Ctrl-C between two frames
    would leave the message open and make the next one its tail (both then dropped by the
    controller as forged). Interrupted again and again while submitting, every call that
    returned gets its result."""
    view = rc.load_balanced_view()
    armed, stop = threading.Event(), threading.Event()

    def on_sigint(signum, frame):  # Ctrl-C inside ipcluster's and zmq's code (not in a finalizer
        # elsewhere, where Python could only report it as unraisable, nor in this test's own
        # lines outside the `try`, where it would end the test)
        where = frame.f_code.co_filename if frame is not None else ""
        if (armed.is_set() and where != __file__
                and any(part in where for part in ("/ipcluster/", "/zmq/"))):
            raise KeyboardInterrupt

    def interrupter():
        while not stop.wait(0.0005):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    thread = threading.Thread(target=interrupter)
    sent, interrupted = [], 0
    armed.set()
    thread.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(sent) < 3000:
            try:
                i = len(sent)
                sent.append((i, view.apply_async(divmod, i, 7)))
            except KeyboardInterrupt:
                interrupted += 1
    finally:
        armed.clear()
        stop.set()
        thread.join()
        signal.signal(signal.SIGINT, previous)
    assert interrupted > 10 and len(sent) > 100, (interrupted, len(sent))
    assert [ar.get(timeout=60) for _, ar in sent] == [divmod(i, 7) for i, _ in sent]


SUBMIT_AND_EXIT = """
import sys
from pathlib import Path
import ipcluster

def touch(i, where):
    from pathlib import Path
    Path(where, str(i)).touch()

rc = ipcluster.Client(sys.argv[1])
view = rc.load_balanced_view()
for i in range(20):  # while the first is in flight, the others are held to go together
    view.apply_async(touch, i, sys.argv[2])
"""  # and exits without waiting: what is still held goes at exit


def test_tasks_submitted_by_a_script_that_exits_without_waiting_all_run(cluster, tmp_path):
    script, done = tmp_path / "submit.py", tmp_path / "done"
    script.write_text(SUBMIT_AND_EXIT)
    done.mkdir()
    out = subprocess.run([sys.executable, str(script), str(cluster.connection_file), str(done)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: len(list(done.iterdir())) == 20, timeout=30)


ENUM_SCRIPT = """
import enum
import sys
import ipcluster

class Color(enum.IntEnum):  # a class of this script's __main__: the engine has no such class
    RED = 1

def shade(c):
    return int(c) + 1

rc = ipcluster.Client(sys.argv[1])
rc.wait_for_engines(1, timeout=30)
print(rc[rc.ids[0]].apply_sync(shade, Color.RED), rc[rc.ids[0]].apply_sync(shade, c=Color.RED))
rc.close()
"""


def test_an_argument_of_a_class_defined_in_the_main_script_reaches_the_engine(cluster, tmp_path):
    """A small argument of an int subclass (an IntEnum of the script) goes by value, as
    cloudpickle sends it, not by reference to a ``__main__`` the engine does not have."""
    script = tmp_path / "enum_script.py"
    script.write_text(ENUM_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(cluster.connection_file)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2"]


def _kept(rc):
    """A finished task's AsyncResult and the header its request was kept with (for resubmit)."""
    ar = rc[0].apply_async(divmod, 7, 2)
    assert ar.get(timeout=30) == (3, 1)
    return ar, unpack(rc._requests[ar.msg_ids[0]][0])


def test_resubmit_sends_a_fresh_time(rc):
    """What sending added to a kept request (its time, the ways its buffers went) is not sent
    again: a resubmit past the controller's max_age would be refused as stale."""
    ar, said = _kept(rc)
    assert "t" in said  # the original's send time was kept with the request
    sent = []
    real = rc._session.sender.send
    rc._session.sender.send = lambda h, *a, **k: (sent.append(dict(h)), real(h, *a, **k))[1]
    try:
        rc.resubmit(ar.msg_ids).get(timeout=30)
    finally:
        rc._session.sender.send = real
    assert sent[0].get("t") != said["t"], "the resubmitted request carries the original's time"


def test_resubmit_of_a_request_kept_for_ten_minutes_runs(rc):
    """The controller refuses messages older than max_age (600 s): a request kept longer
    still runs when resubmitted."""
    ar, said = _kept(rc)
    said["t"] -= 700  # as if it had been kept 700 s (the controller's max_age is 600 s)
    _, index, content, buffers, size = rc._requests[ar.msg_ids[0]]
    rc._requests[ar.msg_ids[0]] = (pack(said), index, content, buffers, size)
    again = rc.resubmit(ar.msg_ids)
    assert again.get(timeout=10) == (3, 1)


def test_threads_keeping_requests_at_once_never_fail(rc):
    """Requests kept for resubmit by several submitting threads at once: none fails after its
    request went (the oldest evicted under a lock), and the bytes kept are counted true."""
    content = b"x" * 900_000

    def submitter(k):
        for i in range(400):
            rc._keep_request(f"review-{k}-{i}", {"kind": "apply", "tasks": ["t"]}, 0, content, ())

    errors = errors_of_threads_at_once(submitter, 6)
    assert not errors, errors[0]
    assert rc._kept == sum(r[-1] for r in rc._requests.values())  # the count is true
