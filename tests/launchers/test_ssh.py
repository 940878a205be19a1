"""SSH, against a real sshd on 127.0.0.1 (`.ci/services/sshd.sh`): engines run work, their
connection info never appears on a command line, and stop leaves no remote process behind."""

from __future__ import annotations

import os
import time

import psutil
import pytest

import ipcluster
from ipcluster import launchers
from ipcluster.launchers.ssh import SSHLauncher
from tests.conftest import wait_until
from tests.launchers.conftest import SSH_ARGS, SSH_PORT

# a C call holding the GIL for hours (a lambda travels by value: the engines cannot import tests)
HOLDS_THE_GIL = lambda: __import__("re").match(r"(a+)+$", "a" * 34 + "b")  # noqa: E731


def ssh_options(**more):
    return {"port": SSH_PORT, "ssh_args": SSH_ARGS, **more}


def test_plan_fills_the_hosts_in_order():
    launcher = SSHLauncher(hosts={"a": 2, "b": 3})
    assert launcher.plan(4) == {"a": 2, "b": 2}
    with pytest.raises(launchers.LaunchError, match="6 engines do not fit"):
        launcher.plan(6)


def test_script_sends_the_environment_on_stdin_not_argv():
    launcher = SSHLauncher(hosts={"node1": 2}, user="me", port=2200, python="/opt/py/bin/python",
                           env={"IPCLUSTER_CONNECTION": '{"key": "secret"}'})
    script = launcher.script(["python", "-m", "ipcluster", "engine"], 2)
    first = script.splitlines()[0]
    assert first.startswith("# ssh -o BatchMode=yes") and "-p 2200 me@node1 sh -s" in first
    assert "secret" not in first
    assert "export IPCLUSTER_CONNECTION='{\"key\": \"secret\"}'" in script
    assert script.count("setsid /opt/py/bin/python -m ipcluster engine") == 2


def test_engine_sets_over_ssh_write_their_own_logs_and_stop_apart(sshd):
    cluster = ipcluster.Cluster(n=1, engines="ssh", hosts={"127.0.0.1": 1}, **ssh_options())
    with cluster as rc:
        extra = cluster.start_engines_sync(1)  # each set fills `hosts` on its own
        cluster.wait_for_engines_sync()
        logs = [log for s in cluster.engines.values() for started in s.launcher.started.values()
                for _, log in started]
        assert len(set(logs)) == 2  # two sets on one host: two remote logs, not one
        (gone,) = [p for started in cluster.engines[extra].launcher.started.values()
                   for p, _ in started]
        cluster.stop_engines_sync(extra)
        assert not psutil.pid_exists(gone) or psutil.Process(gone).status() == psutil.STATUS_ZOMBIE
        wait_until(lambda: len(rc.ids) == 1)
        assert rc[:].apply_sync(lambda: "still here") == ["still here"]


def test_ssh_engines_run_work_and_leave_no_process(sshd):
    cluster = ipcluster.Cluster(n=3, engines="ssh", hosts={"127.0.0.1": 2, "localhost": 2},
                                **ssh_options())
    with cluster as rc:
        pids = rc[:].apply_sync(os.getpid)
        remote = [p for started in cluster.launcher.started.values() for p, _ in started]
        assert sorted(pids) == sorted(remote)
        for pid in pids:  # the key travelled in the environment, not on the command line
            assert "engine" in psutil.Process(pid).cmdline() and "--connection-file" not in psutil.Process(pid).cmdline()
            assert "IPCLUSTER_CONNECTION" in psutil.Process(pid).environ()
        assert rc.load_balanced_view().map_sync(abs, [-1, -2, -3]) == [1, 2, 3]
        t0 = time.monotonic()  # a task holding the GIL past its time_limit: the watchdog acts
        with pytest.raises(ipcluster.TaskTimeout):
            rc.load_balanced_view(targets=[0], time_limit=1).apply_async(HOLDS_THE_GIL).get(timeout=30)
        assert time.monotonic() - t0 < 1 + 0.5 + 1
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        assert time.monotonic() < deadline, "remote engines left behind"
        time.sleep(0.05)


def test_an_unreachable_host_fails_fast_with_ssh_output(sshd):
    launcher = SSHLauncher(hosts={"127.0.0.1": 1}, port=1, ssh_args=SSH_ARGS)
    with pytest.raises(launchers.LaunchError, match=r"(?s)starting 1 engines on 127.0.0.1.*refused"):
        launcher.start(["true"], 1)


def test_engines_on_a_host_alias_of_a_private_ssh_config(sshd, tmp_path):
    config = tmp_path / "ssh_config"  # ours, with -F: root's own ~/.ssh/config is not read
    config.write_text(f"Host node1\n    HostName 127.0.0.1\n    Port {SSH_PORT}\n"
                      "    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n"
                      "    LogLevel ERROR\n    BatchMode yes\n")
    launcher = SSHLauncher(hosts={"node1": 1}, config_file=str(config), ssh_args=[])
    assert launcher.hosts() == ["127.0.0.1"]  # what `ssh -F config -G node1` connects to
    assert launcher.script(["python"], 1).startswith(f"# ssh -F {config} node1 sh -s")
    cluster = ipcluster.Cluster(n=1, engines="ssh", hosts={"node1": 1}, config_file=str(config),
                                ssh_args=[])
    with cluster as rc:
        assert rc[:].apply_sync(os.getpid) == [p for p, _ in cluster.launcher.started["node1"]]
