"""The %px magics in a real IPython shell (InteractiveShell, in this process) on a real cluster:
activation, flags, streamed output, errors, Ctrl-C, and bad input."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

IPython = pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import ipcluster  # noqa: E402
from ipcluster.asyncresult import AsyncResult  # noqa: E402


def _clear_shells() -> None:
    from ipcluster.engine import shell

    if shell._shell is not None:  # an engine shell made in this process by an in-process test
        type(shell._shell).clear_instance()
        shell._shell = None
    InteractiveShell.clear_instance()


@pytest.fixture
def ip():
    """A fresh IPython shell; clients made while it exists activate %px on it."""
    _clear_shells()
    shell = InteractiveShell.instance()
    yield shell
    _clear_shells()


@pytest.fixture
def client(cluster, ip):
    """A client made inside the IPython session (so it activates %px), closed after the test."""
    rc = ipcluster.Client(cluster.connection_file)
    rc.wait_for_engines(cluster.n, timeout=30)
    yield rc
    rc.close()


def run(ip, code: str):
    """Run a cell; its result (error_in_exec etc.)."""
    return ip.run_cell(code, store_history=True)


def test_first_client_activates_px_and_runs_numpy(client, ip, capsys):
    assert not run(ip, "%px import numpy as np").error_in_exec
    assert not run(ip, "%px a = np.random.rand(3)").error_in_exec
    assert [a.shape for a in client[:].pull("a", block=True)] == [(3,)] * 4
    assert not run(ip, "%px a.shape").error_in_exec
    out = capsys.readouterr().out
    for eid in client.ids:
        assert f"Out[{eid}:" in out and "]: (3,)" in out


def test_px_cell_on_every_other_engine_streams_prints_displays_and_errors(client, ip, capsys):
    result = run(ip, """%%px --targets ::2
import sys
from IPython.display import HTML, display
print("hello from", get_ipython().__class__.__name__)
print("to stderr", file=sys.stderr)
display(HTML("<b>bold</b>"))
1 / 0
""")
    captured = capsys.readouterr()
    # streamed: each engine's error shown (on stderr) as it came, then "2 errors", as ipyparallel
    error = result.error_in_exec
    assert isinstance(error, ipcluster.AlreadyDisplayedError) and error.render_traceback() == [
        "2 errors"]
    assert isinstance(error.original_error, ipcluster.CompositeError)
    assert error.original_error.ename == "ZeroDivisionError"
    for eid in (0, 2):
        assert f"[stdout:{eid}] hello from EngineShell" in captured.out
        assert f"[stderr:{eid}] to stderr" in captured.err
        assert f"[output:{eid}]" in captured.out
        # each engine's error once, IPython's traceback with the line
        assert captured.err.count(f"[{eid}:execute]") == 1
    for eid in (1, 3):
        assert f":{eid}]" not in captured.out + captured.err
    assert captured.err.count("----> 6 1 / 0") == 2
    assert captured.err.count("ZeroDivisionError: division by zero") == 2


def test_syntax_error_is_reported_once_per_engine_with_its_line(client, ip, capsys):
    result = run(ip, "%%px\nx = 1\ny = (x +\n")
    err = capsys.readouterr().err
    assert result.error_in_exec.ename == "SyntaxError"
    for eid in client.ids:
        assert err.count(f"[{eid}:execute]") == 1
    assert err.count("y = (x +") == 4 and err.count("SyntaxError") == 4
    assert "Traceback" not in err  # no frames of the magic or the client
    assert run(ip, "%px z = 3").success


def test_flags_targets_noblock_out_pxresult_and_group_outputs(client, ip, capsys):
    run(ip, "%%px -t 1 --noblock -o late\nprint('late'); 6 * 7")
    ar = ip.user_ns["late"]
    assert isinstance(ar, AsyncResult) and ar.engine_id == 1
    assert not run(ip, "%pxresult").error_in_exec
    out = capsys.readouterr().out
    assert "[stdout:1] late" in out and "Out[1:" in out and "]: 42" in out

    run(ip, "%%px --targets [0,3] --no-stream --group-outputs engine\nprint('a')\nprint('b')")
    out = capsys.readouterr().out  # several lines under one label, as ipyparallel shows them
    assert "[stdout:0]\na\nb\n" in out and "[stdout:3]\na\nb\n" in out
    assert out.index("[stdout:0]") < out.index("[stdout:3]")

    # the live stream (and its errors, on stderr) in arrival order; the grouped display and
    # the error of a grouped cell in engine order
    for eid in (0, 3):
        client[eid].push({"eid": eid}, block=True)
    cell = "import time\ntime.sleep(0.6 if eid == 0 else 0)\nprint('hi')\n1 / 0"
    run(ip, "%%px --targets [3,0]\n" + cell)
    streamed = capsys.readouterr()
    assert streamed.out.index("[stdout:3] hi") < streamed.out.index("[stdout:0] hi")
    assert streamed.err.index("[3:execute]") < streamed.err.index("[0:execute]")
    result = run(ip, "%%px --targets [3,0] --no-stream --group-outputs engine\n" + cell)
    grouped = capsys.readouterr().out
    assert grouped.index("[stdout:0] hi") < grouped.index("[stdout:3] hi")
    shown = result.error_in_exec._render_traceback_()
    assert shown.index("[0:execute]") < shown.index("[3:execute]")

    run(ip, "%%px -t 0:2 --no-stream --group-outputs type\nimport sys\nprint('o')\n"
            "print('e', file=sys.stderr)\n'r'")
    captured = capsys.readouterr()
    assert captured.out.index("[stdout:1] o") < captured.out.index("Out[0:")
    assert "[stderr:0] e" in captured.err and "[stderr:2]" not in captured.err

    run(ip, "%%px --targets all --local --verbose\nlocal_too = 5")
    assert ip.user_ns["local_too"] == 5
    assert "Parallel execution on engine(s): all" in capsys.readouterr().out


def test_autopx_pxconfig_and_suffix(client, ip, capsys):
    run(ip, "%autopx")
    run(ip, "on_engines = 11\non_engines")
    run(ip, "%autopx")
    assert "on_engines" not in ip.user_ns
    assert client[:].pull("on_engines", block=True) == [11] * 4
    out = capsys.readouterr().out
    assert "%autopx enabled" in out and "%autopx disabled" in out and "]: 11" in out

    run(ip, "%pxconfig --targets 1:3 --no-stream")
    run(ip, "%px print('configured')")
    out = capsys.readouterr().out
    assert sorted(line for line in out.splitlines() if "configured" in line) == [
        "[stdout:1] configured", "[stdout:2] configured"]
    run(ip, "%pxconfig")  # --targets set the activated view's targets, as in ipyparallel
    assert "view targets [1, 2]" in capsys.readouterr().out

    client.activate(targets=[3], suffix="3")
    run(ip, "%px3 print('three')")
    assert capsys.readouterr().out.strip() == "[stdout:3] three"


def test_bad_input_says_what_to_do(client, ip, capsys):
    for cell in ("%%px --bogus\nx = 1", "%pxconfig --group-outputs sideways",
                 "%%px --progress-after soon\nx = 1", "%autopx now"):
        result = run(ip, cell)
        assert isinstance(result.error_in_exec, IPython.core.error.UsageError), cell
        assert "usage:" in str(result.error_in_exec) and "error:" in str(result.error_in_exec)
    result = run(ip, "%%px --targets banana\nx = 1")
    assert "--targets takes all" in str(result.error_in_exec)
    result = run(ip, "%%px --targets 9\nx = 1")
    assert "no engine with id [9]" in str(result.error_in_exec)
    assert "%%px runs a whole cell" in str(run(ip, "%px").error_in_exec)
    assert "--signal-on-interrupt takes" in str(
        run(ip, "%pxconfig --signal-on-interrupt SIGNOPE").error_in_exec)
    assert "no non-blocking %px yet" in str(run(ip, "%pxresult").error_in_exec)


def test_px_without_a_client_or_without_engines_says_what_to_do(ip, tmp_path):
    ip.extension_manager.load_extension("ipcluster")
    result = run(ip, "%px x = 1")
    assert "Connect to one" in str(result.error_in_exec)
    assert "ipcluster.Client()" in str(result.error_in_exec)

    cluster = ipcluster.Cluster(n=0, cluster_id="no-engines")
    cluster.start_cluster_sync()
    try:
        with ipcluster.Client(cluster.connection_file) as rc:
            assert rc.ids == []
            result = run(ip, "%px x = 1")
            assert "no engines registered" in str(result.error_in_exec)
            assert "wait_for_engines" in str(result.error_in_exec)
    finally:
        cluster.stop_cluster_sync()
    assert "is closed" in str(run(ip, "%px x = 1").error_in_exec)


def _interrupt_when_started(ip, name: str, n: int, times: dict) -> threading.Thread:
    """Send this process SIGINT (Ctrl-C) once the cell's tasks all print 'started'."""
    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ar = ip.user_ns.get(name)
            if ar is not None and sum("started" in t.metadata["stdout"] for t in ar.tasks) == n:
                times["sent"] = time.monotonic()
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_interrupts_the_engines_and_returns_promptly(client, ip, capsys):
    times: dict = {}
    watcher = _interrupt_when_started(ip, "sleeper", 4, times)
    result = run(ip, "%%px -o sleeper\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
    returned = time.monotonic()
    watcher.join(5)
    elapsed = returned - times["sent"]
    with capsys.disabled():
        print(f"\n%%px interrupted on 4 engines: returned {elapsed:.3f} s after SIGINT")
    assert elapsed < 2, elapsed
    # as ipyparallel: the cell says what it sent and returns, without an error of its own
    assert result.error_in_exec is None
    assert "Received Keyboard Interrupt. Sending signal SIGINT to engines..." in (
        capsys.readouterr().err)
    error = ip.user_ns["sleeper"].exception(timeout=10)
    assert isinstance(error, ipcluster.CompositeError)
    assert {e.ename for e in error.errors} == {"KeyboardInterrupt"}
    assert sorted(e.engine_id for e in error.errors) == [0, 1, 2, 3]
    assert "time.sleep(60)" in error.errors[0].traceback
    # the engines live on, and the next %px runs at once
    assert run(ip, "%px after = 'fine'").success
    assert client[:].pull("after", block=True) == ["fine"] * 4


def test_ctrl_c_in_get_signals_exactly_the_engines_running_the_work(client, ip):
    def nap(seconds):
        print("started", flush=True)
        time.sleep(seconds)
        return seconds

    other = client[3].apply_async(nap, 3)
    ar = client[[0, 1]].apply_async(nap, 60)
    ip.user_ns["nap_ar"] = ar
    times: dict = {}
    watcher = _interrupt_when_started(ip, "nap_ar", 2, times)
    with pytest.raises(KeyboardInterrupt):
        ar.get()
    returned = time.monotonic()
    watcher.join(5)
    assert returned - times["sent"] < 2
    assert ar.done() and all(t.exception().ename == "KeyboardInterrupt" for t in ar.tasks)
    assert other.get(timeout=30) == 3  # engine 3 was not interrupted
    assert client[:].apply_sync(lambda: "alive") == ["alive"] * 4


def test_ctrl_c_with_abort_configured(client, ip):
    times: dict = {}
    run(ip, "%pxconfig --signal-on-interrupt abort --targets 0")
    watcher = _interrupt_when_started(ip, "aborted", 1, times)
    result = run(ip, "%%px -o aborted\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
    watcher.join(5)
    assert result.error_in_exec is None
    assert isinstance(ip.user_ns["aborted"].exception(timeout=10), ipcluster.TaskAborted)
    assert run(ip, "%px print('next')").success
