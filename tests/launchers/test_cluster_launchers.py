"""Cluster and CLI surfaces of the launchers: options through Cluster and --set, `ipcluster
config`, `ipcluster engines -n` on a running cluster, restart, and the walltime margin."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import ipcluster


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ipcluster", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_config_prints_resolved_options_and_the_job_script():
    out = cli("config", "slurm", "--set", "partition=debug", "--set", "time=0:30:00", "-n", "8")
    assert out.returncode == 0, out.stderr
    assert "#   partition = 'debug'" in out.stdout
    assert "#SBATCH --partition=debug" in out.stdout and "#SBATCH --ntasks=8" in out.stdout
    assert "#SBATCH --time=00:30:00" in out.stdout and "srun -n 8" in out.stdout
    bad = cli("config", "slurm", "--set", "partishun=debug")
    assert bad.returncode == 1 and "valid options and their defaults: " in bad.stderr


def test_unknown_cluster_options_list_the_launchers_valid_ones():
    with pytest.raises(TypeError, match=r"unknown mpi option\(s\) 'np'.*mpiexec='mpiexec'"):
        ipcluster.Cluster(n=2, engines="mpi", np=2)


def test_engines_adds_to_a_running_cluster_and_stop_stops_them():
    started = cli("start", "-n", "1", "--cluster-id", "grow", "--daemonize")
    assert started.returncode == 0, started.stderr
    try:
        added = cli("engines", "-n", "2", "--cluster-id", "grow")
        assert added.returncode == 0, added.stderr
        assert "2 local engines added (3 in all)" in added.stdout
        rc = ipcluster.Client("grow")
        try:
            assert len(rc[:].apply_sync(os.getpid)) == 3
        finally:
            rc.close()
    finally:
        stopped = cli("stop", "--cluster-id", "grow")
    assert stopped.returncode == 0, stopped.stderr


def test_restart_engines_gives_fresh_engines():
    cluster = ipcluster.Cluster(n=2)
    with cluster as rc:
        before = set(rc[:].apply_sync(os.getpid))
        cluster.restart_engines_sync()
        rc2 = cluster.client
        assert len(rc2.ids) == 2
        assert not before & set(rc2[rc2.ids].apply_sync(os.getpid))


def test_engines_stop_taking_work_a_margin_before_the_walltime_and_say_why():
    end = time.time() + 3 + 60  # the margin (60 s) is reached in 3 s
    cluster = ipcluster.Cluster(n=1, env={"IPCLUSTER_JOB_END": str(end)})
    with cluster as rc:
        deadline = time.monotonic() + 30
        while rc.ids and time.monotonic() < deadline:  # the engine unregisters at the margin
            time.sleep(0.1)
        assert rc.ids == []
        log = (cluster.cluster_dir / "engine-0.log").read_text()
        controller = (cluster.cluster_dir / "controller.log").read_text()
    assert "walltime ends at" in log and "takes no new work" in log
    assert "removed: its job's walltime ends at" in controller  # the reason its tasks would get
