"""The local launcher's template process: copies of a `python -m`/`-c` command forked from one
interpreter that imported `preload` once, each a process of its own, as a fresh one would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from ipcluster.launchers import State
from ipcluster.launchers.local import LocalLauncher
from ipcluster.launchers.template import LOST, Copy
from tests.conftest import wait_until

REPORT = ("import json, os, sys; print(json.dumps({'argv': sys.argv, 'pid': os.getpid(), "
          "'sid': os.getsid(0), 'parent': os.getppid(), 'cwd': os.getcwd(), 'var': os.environ.get('X_TEMPLATE'), "
          "'preloaded': 'email.mime.text' in sys.modules, 'name': __name__}), flush=True)")


def read_report(launcher, i) -> dict:
    wait_until(lambda: launcher.log_path(i).exists() and launcher.log_path(i).read_text())
    return json.loads(launcher.log_path(i).read_text())


def test_copies_are_forked_from_the_template_each_a_process_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launcher = LocalLauncher(log_dir=str(tmp_path), preload=["email.mime.text"],
                             env={"X_TEMPLATE": "yes"})
    try:
        launcher.start([sys.executable, "-c", REPORT, "a", "b"], 3)
        assert all(isinstance(p, Copy) for p in launcher.processes)
        for i, proc in enumerate(launcher.processes):
            said = read_report(launcher, i)
            assert said == {"argv": ["-c", "a", "b"], "pid": proc.pid, "sid": proc.pid,
                            "parent": launcher.template.process.pid, "cwd": str(tmp_path),
                            "var": "yes", "preloaded": True, "name": "__main__"}
            assert proc.wait(20) == 0
    finally:
        launcher.stop()
    assert launcher.template is None  # closed with the launcher: nothing left (the fixture checks)


def test_a_module_runs_as_main_and_its_exit_code_and_signals_are_reported(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path), preload=["json"], stop_grace=5)
    try:
        launcher.start([sys.executable, "-m", "json.tool", "--help"], 1)
        assert launcher.processes[0].wait(20) == 0
        assert "usage:" in launcher.log_path(0).read_text()
        launcher.start([sys.executable, "-c", "raise SystemExit(3)"], 1)
        assert launcher.processes[1].wait(20) == 3
        assert launcher.state() is State.FAILED and "exited with code 3" in launcher.failure()
        launcher.start([sys.executable, "-c", "print('up', flush=True); import time; time.sleep(60)"], 1)
        wait_until(lambda: "up" in launcher.log_path(2).read_text())
        os.kill(launcher.processes[2].pid, signal.SIGKILL)
        assert launcher.processes[2].wait(20) == -signal.SIGKILL
    finally:
        launcher.stop()


def test_a_command_a_fork_cannot_reproduce_starts_a_fresh_process(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path), preload=["email.mime.text"])
    try:
        launcher.start([sys.executable, "-c", REPORT], 1)
        launcher.start([sys.executable, "-X", "dev", "-c", REPORT], 1)  # an interpreter option
        launcher.options.env = {"PYTHONHASHSEED": "7"}  # read when an interpreter starts
        launcher.start([sys.executable, "-c", REPORT], 1)
        assert [type(p) for p in launcher.processes] == [Copy, subprocess.Popen, subprocess.Popen]
        assert [read_report(launcher, i)["preloaded"] for i in range(3)] == [True, False, False]
    finally:
        launcher.stop()
    assert LocalLauncher(log_dir=str(tmp_path))._template([sys.executable, "-c", ""], {}) is None


def test_the_template_outlives_its_launcher_only_as_long_as_its_copies(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path), preload=["json"])
    launcher.start([sys.executable, "-c", "import sys; sys.stdin.read()"], 1)  # ends at once
    launcher.start([sys.executable, "-c", "print('up', flush=True); import time; time.sleep(60)"], 1)
    wait_until(lambda: "up" in launcher.log_path(1).read_text())
    template = launcher.template.process
    launcher.template.process.stdin.close()  # as when the launcher's process exits
    assert template.poll() is None  # a copy still runs
    os.kill(launcher.processes[1].pid, signal.SIGTERM)
    assert template.wait(20) == 0
    assert launcher.processes[1].wait(20) == -signal.SIGTERM
    launcher.stop()


def test_copies_of_a_template_that_died_are_reported_once_they_end(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path), preload=["email.mime.text"], stop_grace=5)
    try:
        launcher.start([sys.executable, "-c", "print('up', flush=True); import time; time.sleep(60)"], 1)
        wait_until(lambda: "up" in launcher.log_path(0).read_text())
        launcher.template.process.kill()
        launcher.template.process.wait()
        copy = launcher.processes[0]
        assert copy.poll() is None  # still running, an orphan now
        os.kill(copy.pid, signal.SIGTERM)
        assert copy.wait(20) == LOST
        dead = launcher.template.process.pid
        launcher.start([sys.executable, "-c", REPORT], 1)  # a new template
        said = read_report(launcher, 1)
        assert said["preloaded"] and said["parent"] not in (dead, os.getpid())
    finally:
        launcher.stop()


def test_a_template_that_cannot_import_its_preload_says_why(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path), preload=["no_such_module_here"])
    try:
        launcher.start([sys.executable, "-c", "pass"], 1)
        raise AssertionError("started without its template")
    except Exception as exc:
        assert "template process" in str(exc) and "No module named 'no_such_module_here'" in str(exc)
    finally:
        launcher.stop()
