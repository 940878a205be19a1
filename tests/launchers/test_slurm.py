"""Slurm, against the real munged, slurmctld and slurmd that `.ci/services/slurm.sh` starts:
engines in an sbatch job, a refused submission, jobs failed or cancelled before their engines
register, and `ipcluster start` inside an allocation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import ipcluster
from ipcluster import launchers
from tests.conftest import wait_until
from ipcluster.launchers.slurm import SlurmLauncher

# Captured from squeue 22.05 on the test machine: a failed, a held, a running and a cancelled job
SQUEUE = """\
4|FAILED|NonZeroExitCode
3|PENDING|JobHeldUser
5|RUNNING|None
6|CANCELLED|JobHeldUser
"""

# a C call holding the GIL for hours (a lambda travels by value: the engines cannot import tests)
HOLDS_THE_GIL = lambda: __import__("re").match(r"(a+)+$", "a" * 34 + "b")  # noqa: E731


def test_script_has_the_options_as_directives_and_srun_starts_the_engines(tmp_path):
    launcher = SlurmLauncher(log_dir=str(tmp_path), partition="debug", account="proj1", qos="high",
                             time="1:30:00", nodes=2, ntasks_per_node=4, directives=["--gres=gpu:1"],
                             prologue=["module load python"], srun_args=["--mpi=pmi2"])
    script = launcher.script(["python", "-m", "ipcluster", "engine"], 8)
    for line in ["#SBATCH --ntasks=8", "#SBATCH --partition=debug", "#SBATCH --account=proj1",
                 "#SBATCH --qos=high", "#SBATCH --time=01:30:00", "#SBATCH --nodes=2",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --gres=gpu:1", "module load python",
                 f"#SBATCH --output={tmp_path}/ipcluster-engines-%j.out",
                 "srun -n 8 --label --mpi=pmi2 python -m ipcluster engine"]:
        assert line in script.splitlines(), line
    assert script.index("module load") < script.index("srun")
    assert "IPCLUSTER_JOB_END=$(( $(date +%s) + 5400 ))" in script


def test_options_come_from_dask_config_and_arguments_win(monkeypatch, tmp_path):
    import dask.config

    from ipcluster.engineset import make_launcher

    monkeypatch.setenv("DASK_IPCLUSTER__SLURM__PARTITION", "fromenv")
    dask.config.refresh()
    try:
        assert make_launcher("slurm", tmp_path).options.partition == "fromenv"
        assert make_launcher("slurm", tmp_path, partition="arg").options.partition == "arg"
        with pytest.raises(TypeError, match=r"unknown slurm option\(s\) 'partion'.*partition=None"):
            make_launcher("slurm", tmp_path, partion="x")
    finally:
        monkeypatch.delenv("DASK_IPCLUSTER__SLURM__PARTITION")
        dask.config.refresh()


def test_squeue_states_map_through_the_table():
    launcher = SlurmLauncher()
    found = launcher.parse_status(SQUEUE)
    assert found == {"4": ("FAILED", "NonZeroExitCode"), "3": ("PENDING", "JobHeldUser"),
                     "5": ("RUNNING", "None"), "6": ("CANCELLED", "JobHeldUser")}
    table = launcher.table
    assert [table[s] for s, _ in found.values()] == [
        launchers.State.FAILED, launchers.State.PENDING, launchers.State.RUNNING, launchers.State.FAILED]
    assert launcher.job_id_pattern.search("42;cluster\n")["job_id"] == "42"


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True)
    return set(out.stdout.split())


def test_a_cluster_of_slurm_engines_runs_work_and_leaves_no_job(slurm):
    t0 = time.monotonic()
    cluster = ipcluster.Cluster(n=4, engines="slurm", poll_interval=0.5)
    with cluster as rc:
        ready = time.monotonic() - t0
        (job,) = cluster.launcher.jobs
        assert job in squeue_ids()
        ranks = rc[:].apply_sync(lambda: int(__import__("os").environ["SLURM_PROCID"]))
        assert sorted(ranks) == [0, 1, 2, 3] and rc.ids == [0, 1, 2, 3]
        assert rc.load_balanced_view().map_sync(lambda x: x * x, range(8)) == [x * x for x in range(8)]
        t1 = time.monotonic()  # a task holding the GIL past its time_limit: the watchdog acts
        with pytest.raises(ipcluster.TaskTimeout):
            rc.load_balanced_view(targets=[3], time_limit=1).apply_async(HOLDS_THE_GIL).get(timeout=30)
        assert time.monotonic() - t1 < 1 + 0.5 + 1
    assert job not in squeue_ids()
    print(f"Cluster(n=4, engines='slurm'): engines usable after {ready:.2f} s")


def test_a_refused_submission_shows_sbatch_output(slurm):
    t0 = time.monotonic()
    with pytest.raises(ipcluster.IpclusterError, match=r"(?s)sbatch.*invalid partition.*nope"):
        ipcluster.Cluster(n=2, engines="slurm", partition="nope").start_and_connect_sync()
    assert time.monotonic() - t0 < 10


def wait_for_job_state(cluster, state: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        jobs = getattr(cluster.launcher, "jobs", [])
        if jobs:
            out = subprocess.run(["squeue", "-h", "-j", jobs[0], "-o", "%T"], capture_output=True, text=True)
            if out.stdout.strip() == state:
                return jobs[0]
        assert time.monotonic() < deadline, f"job never reached {state}"
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["held, then cancelled", "running, then cancelled"])
def test_a_job_cancelled_before_its_engines_register_is_reported_within_10_s(slurm, how):
    # a held job never runs; a running one waits in its prologue, so no engine registers
    options = {"directives": ["--hold"]} if how.startswith("held") else {"prologue": ["sleep 600"]}
    cluster = ipcluster.Cluster(n=2, engines="slurm", start_timeout=120, poll_interval=0.5, **options)
    errors = []

    def start():
        try:
            cluster.start_and_connect_sync()
        except Exception as exc:
            errors.append((time.monotonic(), exc))

    thread = threading.Thread(target=start)
    thread.start()
    try:
        job = wait_for_job_state(cluster, "PENDING" if how.startswith("held") else "RUNNING")
        subprocess.run(["scancel", job], check=True)
        cancelled = time.monotonic()
        thread.join(30)
    finally:
        thread.join()
        cluster.stop_cluster_sync()
    (when, error), = errors
    assert when - cancelled < 10
    message = str(error)
    assert f"slurm job {job} is CANCELLED" in message
    assert f"ipcluster-engines-{job}.out" in message
    if how.startswith("held"):
        assert "JobHeldUser" in message
    else:  # slurmstepd's line in the job's output (the prologue may not have printed yet)
        assert f"JOB {job} ON localhost CANCELLED" in message


def test_a_job_that_fails_is_reported_with_reason_and_output(slurm):
    cluster = ipcluster.Cluster(n=2, engines="slurm", poll_interval=0.5,
                                prologue=["echo 'no scratch space' >&2", "exit 3"])
    launcher = cluster.launcher  # the first engine set's (a failed start stops the set)
    t0 = time.monotonic()
    with pytest.raises(ipcluster.NoEnginesRegistered) as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 10
    job = launcher.jobs[0]
    assert f"slurm job {job} is FAILED (reason: NonZeroExitCode)" in str(info.value)
    assert "no scratch space" in str(info.value)


def test_signal_engines_reaches_them_through_scancel(slurm):
    import signal

    def task():
        print("started", flush=True)
        __import__("time").sleep(60)

    cluster = ipcluster.Cluster(n=2, engines="slurm", poll_interval=0.2)
    with cluster as rc:
        ar = rc[:].apply_async(task)
        deadline = time.monotonic() + 30
        while not all("started" in out for out in ar.stdout):  # output streams as it is printed
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cluster.signal_engines_sync(signal.SIGINT)
        with pytest.raises(Exception, match="KeyboardInterrupt"):
            ar.get(timeout=30)


def test_engine_sets_are_jobs_of_their_own(slurm):
    """Each engine set is a job of its own, with its script and output in its own directory:
    stopping one set cancels its job only."""
    cluster = ipcluster.Cluster(n=1, engines="slurm", poll_interval=0.2)
    with cluster as rc:
        extra = cluster.start_engines_sync(1)
        cluster.wait_for_engines_sync()  # both sets: 2 engines
        (first,), (other,) = cluster.engine_set.jobs, cluster.engines[extra].jobs
        assert first != other
        assert (cluster.cluster_dir / f"engines-{extra}" / "ipcluster-engines-0.sh").exists()
        cluster.stop_engines_sync(extra)
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
        assert other not in queued.split() and first in queued.split()
        wait_until(lambda: len(rc.ids) == 1)
        assert rc[:].apply_sync(lambda: "still here") == ["still here"]


IN_ALLOCATION = """\
#!/bin/bash
#SBATCH --ntasks=4
#SBATCH --output={out}
set -e
export IPCLUSTER_DIR={state}
{python} -m ipcluster start -n 4 --cluster-id alloc --daemonize
{python} -c '
import os, ipcluster, psutil
rc = ipcluster.Client("alloc")
info = rc[:].apply_sync(lambda: (os.environ["SLURM_PROCID"], os.environ.get("SLURM_STEP_ID"),
                                 __import__("psutil").Process().parent().name()))
print("ENGINES", sorted(info))
rc.close()
'
cat $IPCLUSTER_DIR/alloc/ipcluster.log
{python} -m ipcluster stop --cluster-id alloc
"""


def test_ipcluster_start_inside_an_sbatch_job_uses_srun_with_no_flags(slurm, tmp_path):
    script = tmp_path / "job.sh"
    out = tmp_path / "job.out"
    script.write_text(IN_ALLOCATION.format(out=out, state=os.environ["IPCLUSTER_DIR"],
                                           python=sys.executable))
    proc = subprocess.run(["sbatch", "--wait", "--parsable", str(script)], capture_output=True,
                          text=True, timeout=100)
    text = out.read_text()
    assert proc.returncode == 0, text
    assert "in slurm job" in text and "4 engines" in text and "with srun" in text
    engines = next(line for line in text.splitlines() if line.startswith("ENGINES"))
    for rank in range(4):  # each engine is an srun task of the job's step 0
        assert f"('{rank}', '0', 'slurmstepd')" in engines
    assert proc.stdout.strip().split(";")[0] not in squeue_ids()


def test_a_held_job_waits_past_start_timeout_and_its_engines_register_once_released(slurm, capfd):
    # start_timeout counts from when the job runs, not from its submission
    cluster = ipcluster.Cluster(n=2, engines="slurm", start_timeout=8, poll_interval=0.2,
                                directives=["--hold"])
    errors = []

    def start():
        try:
            cluster.start_and_connect_sync()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    try:
        job = wait_for_job_state(cluster, "PENDING")
        held = time.monotonic()
        wait_until(lambda: time.monotonic() - held > cluster.start_timeout + 1 or errors)
        assert not errors and thread.is_alive()
        subprocess.run(["scontrol", "release", job], check=True)
        thread.join(60)
        assert not errors, errors
        assert cluster.client.ids == [0, 1]
    finally:
        thread.join()
        cluster.stop_cluster_sync()
    assert f"slurm job {job} pending: JobHeldUser" in capfd.readouterr().err
    assert job not in squeue_ids()


def test_ctrl_c_while_the_job_is_pending_cancels_it(slurm):
    proc = subprocess.Popen([sys.executable, "-m", "ipcluster", "start", "-n", "1", "--engines",
                             "slurm", "--cluster-id", "pending", "--set", "directives=[--hold]",
                             "--set", "poll_interval=0.2"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        seen = [proc.stderr.readline()]
        while seen[-1] and " pending: " not in seen[-1]:
            seen.append(proc.stderr.readline())
        line = seen[-1]
        assert " pending: JobHeldUser" in line, "".join(seen) + proc.stderr.read()
        job = line.split("slurm job ", 1)[1].split()[0]
        assert job in squeue_ids()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        assert "interrupted; cluster 'pending' stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert job not in squeue_ids()
    assert subprocess.run([sys.executable, "-m", "ipcluster", "clean"], capture_output=True).returncode == 0


def test_the_batch_job_of_a_killed_owner_is_cancelled(slurm):
    code = ("import json, ipcluster\n"
            "cluster = ipcluster.Cluster(n=1, engines='slurm', poll_interval=0.5)\n"
            "cluster.start_and_connect_sync()\n"
            "print(json.dumps(cluster.launcher.jobs), flush=True)\n"
            "import time; time.sleep(120)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline()
        assert line, owner.stderr.read() if owner.poll() is not None else "no output"
        (job,) = json.loads(line)
        assert job in squeue_ids()
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        killed = time.monotonic()
        wait_until(lambda: job not in squeue_ids(), timeout=10)
        print(f"\nslurm job {job} gone {time.monotonic() - killed:.2f} s after SIGKILL of its owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    subprocess.run([sys.executable, "-m", "ipcluster", "clean"], capture_output=True)
