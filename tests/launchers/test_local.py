"""The local launcher, and finding launchers by name."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from ipcluster import launchers
from ipcluster.launchers.local import LocalLauncher


def test_built_in_launchers_are_found_by_name():
    assert launchers.get("local") is LocalLauncher
    assert "local" in launchers.names()


def test_an_unknown_launcher_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown launcher 'slurmm'; known launchers: .*local"):
        launchers.get("slurmm")


def test_start_state_stop_and_logs(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path), stop_grace=2)
    command = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    assert launcher.state() is launchers.State.NOT_STARTED
    launcher.start(command, 3)
    assert len(set(launcher.pids)) == 3
    assert launcher.state() is launchers.State.RUNNING
    deadline = time.monotonic() + 20
    while not all(launcher.log_path(i).exists() and launcher.log_path(i).read_text() for i in range(3)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    launcher.stop()
    assert launcher.state() is launchers.State.STOPPED
    assert launcher.log_path(2).read_text() == "up\n"


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path), stop_grace=0.5)
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    launcher.start([sys.executable, "-c", code], 1)
    while "ready" not in launcher.log_path(0).read_text():
        time.sleep(0.02)
    t0 = time.monotonic()
    launcher.stop()
    assert time.monotonic() - t0 < 5
    assert launcher.processes[0].returncode == -signal.SIGKILL


def test_a_failing_process_is_reported_as_failed(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path))
    launcher.start([sys.executable, "-c", "raise SystemExit(3)"], 1)
    launcher.processes[0].wait(20)
    assert launcher.state() is launchers.State.FAILED


def test_script_shows_what_will_run():
    launcher = LocalLauncher(env={"OMP_NUM_THREADS": 1})
    script = launcher.script(["python", "-m", "ipcluster", "engine", "--connection-file", "a b.json"], 2)
    assert script.count("OMP_NUM_THREADS=1 python -m ipcluster engine --connection-file 'a b.json' &") == 2


def test_unknown_options_list_the_valid_ones():
    with pytest.raises(TypeError, match=r"unknown local option\(s\) 'log_directory'; valid .*log_dir=None"):
        LocalLauncher(log_directory="/tmp")


def test_local_processes_are_offered_only_when_each_copy_is_our_child(tmp_path):
    launcher = LocalLauncher(log_dir=str(tmp_path))
    launcher.start([sys.executable, "-c", "pass"], 2)
    try:
        assert launcher.local_processes() is launcher.processes and len(launcher.processes) == 2
    finally:
        launcher.stop()
    assert LocalLauncher(starter="mpiexec").local_processes() is None  # one mpiexec, n ranks
    assert launchers.get("slurm")().local_processes() is None  # the Launcher default
