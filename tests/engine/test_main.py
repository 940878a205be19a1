"""Engine processes: they survive their tasks' failures and exits, and give up clearly when the
controller is not there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

import ipcluster
from ipcluster import connection


def test_a_task_that_exits_or_interrupts_does_not_kill_the_engine(rc):
    with pytest.raises(ipcluster.RemoteError, match="SystemExit"):
        rc[0].apply_sync(sys.exit, 3)
    with pytest.raises(ipcluster.RemoteError, match="KeyboardInterrupt"):
        rc[0].apply_sync(lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    pid = rc[0].apply_sync(os.getpid)
    assert rc[0].apply_sync(os.getpid) == pid


def test_a_function_from_a_module_the_engine_cannot_import_is_explained_from_its_side(rc, tmp_path, monkeypatch):
    (tmp_path / "mylocalmod.py").write_text("def twice(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable here, not on the engines
    import mylocalmod

    engine_cwd = rc[0].apply_sync(os.getcwd)
    with pytest.raises(ipcluster.RemoteError) as info:
        rc[0].apply_sync(mylocalmod.twice, 21)
    message = str(info.value)
    assert info.value.ename == "SerializationError"
    assert "engine 0 (pid " in message and f"working directory {engine_cwd}," in message
    assert "module 'mylocalmod' is not importable on the engine" in message
    assert "start the engines from the directory that holds mylocalmod" in message
    assert "cloudpickle.register_pickle_by_value(mylocalmod)" in message
    assert "the result" not in message
    log = re.search(r", log (\S+)\)", message)[1]  # the engine's log, named and still there
    assert os.path.exists(log) and re.search(r"engine-\d+\.log$", log)
    rc[0].execute(f"import sys; sys.path.insert(0, {str(tmp_path)!r})", block=True)  # the advice works
    try:
        assert rc[0].apply_sync(mylocalmod.twice, 21) == 42
    finally:
        rc[0].execute(f"import sys; sys.path.remove({str(tmp_path)!r})", block=True)


def test_an_engine_exits_with_a_clear_message_when_no_controller_answers(tmp_path):
    info = connection.ConnectionInfo("ghost", "tcp://127.0.0.1:9", "tcp://127.0.0.1:9",
                                     "tcp://127.0.0.1:9", connection.new_key())
    path = tmp_path / "ghost.json"
    connection.write(path, info)
    code = ("import sys; from ipcluster import connection; from ipcluster.engine.main import "
            "EngineOptions, run; sys.exit(run(connection.read(sys.argv[1]), "
            "EngineOptions(register_timeout=0.5)))")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert "no reply from the controller at tcp://127.0.0.1:9 within 0.5 s" in out.stderr
    assert time.monotonic() - t0 < 10


def test_an_engine_that_dies_fails_its_task_with_engine_error(rc):
    pid = rc[1].apply_sync(os.getpid)
    ar = rc[1].apply_async(os._exit, 1)  # the process exits mid-task
    with pytest.raises(ipcluster.EngineError, match="engine 1"):
        ar.get(timeout=30)
    assert rc._refresh_ids() == [0, 2, 3]  # removed before its task failed
    assert pid not in rc[:].apply_sync(os.getpid)

