"""PBS, SGE, LSF and HTCondor up to the boundary no server here can cross: their job scripts,
submit argv, job id parsing, status parsing and state tables; and the shared batch logic,
driven by stand-in commands.

No PBS, LSF or HTCondor server installs on Debian 12, so the status samples below are written
in the output formats the vendors document (sources named at each); Slurm's are captured from
the real slurmctld in test_slurm.py.
"""

from __future__ import annotations

import os
import stat
import sys

import pytest

from ipcluster import launchers
from ipcluster.launchers.base import State
from ipcluster.launchers.batch import seconds
from ipcluster.launchers.htcondor import HTCondorLauncher
from ipcluster.launchers.lsf import LSFLauncher
from ipcluster.launchers.pbs import PBSLauncher
from ipcluster.launchers.sge import SGELauncher

COMMAND = ["python", "-m", "ipcluster", "engine"]

# `qstat -x -f` of an array and a finished job, in the layout of the PBS Professional 2022
# Reference Guide, "qstat" (attribute lines indented four spaces, continuation lines by a tab)
PBS_QSTAT = """\
Job Id: 1234[].pbs01
    Job_Name = ipcluster-engines
    Job_Owner = alice@login1
    job_state = B
    queue = workq
    array = True
    array_indices_submitted = 0-3

Job Id: 1235.pbs01
    Job_Name = ipcluster-engines
    job_state = F
    queue = workq
    comment = Job run at Tue Mar 05 at 10:12 on (node3:ncpus=1) and failed
    Exit_status = 271

Job Id: 1236.pbs01
    Job_Name = ipcluster-engines
    job_state = Q
    comment = Not Running: Insufficient amount of resource: ncpus
"""

# `qstat -u alice`, in the layout of `man qstat` of Son of Grid Engine 8.1.9: one line per
# running task, one line for the waiting ones
SGE_QSTAT = """\
job-ID  prior   name       user         state submit/start at     queue                          slots ja-task-ID
-----------------------------------------------------------------------------------------------------------------
     17 0.55500 ipcluster- alice        r     03/05/2024 10:12:01 all.q@node1                        1 1
     17 0.55500 ipcluster- alice        r     03/05/2024 10:12:01 all.q@node2                        1 2
     17 0.55500 ipcluster- alice        qw    03/05/2024 10:11:58                                    1 3-4:1
     18 0.55500 ipcluster- alice        Eqw   03/05/2024 10:13:00                                    1 1
     19 0.00000 ipcluster- alice        hqw   03/05/2024 10:14:00                                    1
"""

# `bjobs -a -noheader -w 301 302`, in the column layout of IBM Spectrum LSF 10.1 "bjobs":
# JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME, one line per array element
LSF_BJOBS = """\
301     alice   RUN   normal     login1      node1       ipcluster-engines[1] Mar  5 10:12
301     alice   PEND  normal     login1      -           ipcluster-engines[2] Mar  5 10:12
302     alice   EXIT  normal     login1      node2       ipcluster-engines[1] Mar  5 10:13
303     alice   DONE  normal     login1      node2       ipcluster-engines   Mar  5 10:14
"""

# `condor_q 77 78 -af ClusterId JobStatus HoldReason` (HTCondor manual, condor_q -autoformat:
# values separated by spaces, "undefined" for a missing attribute), one line per job
CONDOR_Q = """\
77 2 undefined
77 1 undefined
78 5 Error from slot1@node3: Failed to execute '/home/alice/engines.sh': Permission denied
"""


def test_seconds_reads_every_walltime_form():
    assert seconds("1:30:00") == 5400 and seconds("30") == 1800 and seconds("1-00:00:00") == 86400
    assert seconds(3600) == 3600 and seconds(None) is None


def test_pbs_script_argv_id_and_states(tmp_path):
    launcher = PBSLauncher(log_dir=str(tmp_path), queue="workq", account="proj", time="2:00:00",
                           cpus=4, memory="8gb", directives=["-l place=scatter"])
    script = launcher.script(COMMAND, 4)
    for line in ["#PBS -N ipcluster-engines", "#PBS -l select=1:ncpus=4:mem=8gb", "#PBS -J 0-3",
                 "#PBS -q workq", "#PBS -A proj", "#PBS -l walltime=02:00:00", "#PBS -l place=scatter",
                 "#PBS -j oe", f"#PBS -o {tmp_path}/ipcluster-engines-0.^array_index^.out"]:
        assert line in script.splitlines(), line
    assert "-J" not in launcher.script(COMMAND, 1)  # a PBS array needs two subjobs or more
    assert launcher.submit_argv(tmp_path / "s.sh") == ["qsub", str(tmp_path / "s.sh")]
    assert launcher.job_id_pattern.search("1234[].pbs01\n")["job_id"] == "1234[].pbs01"
    assert launcher.job_id_pattern.search("1235.pbs01\n")["job_id"] == "1235.pbs01"
    found = launcher.parse_status(PBS_QSTAT)
    assert found["1234[].pbs01"] == ("B", "")
    assert found["1235.pbs01"][0] == "F_FAILED" and "Exit_status=271" in found["1235.pbs01"][1]
    assert "Insufficient amount of resource" in found["1236.pbs01"][1]
    assert [launcher.table[s] for s, _ in found.values()] == [State.RUNNING, State.FAILED, State.PENDING]
    assert launcher.status_argv(["1"]) == ["qstat", "-x", "-f", "1"]
    assert launcher.signal_argv(["1"], 15) == ["qsig", "-s", "SIGTERM", "1"]


def test_sge_script_argv_id_and_states(tmp_path):
    launcher = SGELauncher(log_dir=str(tmp_path), queue="all.q", project="p1", pe="smp 4",
                           time="00:30:00", memory="4G")
    script = launcher.script(COMMAND, 4)
    for line in ["#$ -N ipcluster-engines", "#$ -t 1-4", "#$ -q all.q", "#$ -P p1", "#$ -pe smp 4",
                 "#$ -l h_rt=00:30:00", "#$ -l h_vmem=4G", "#$ -j y",
                 f"#$ -o {tmp_path}/ipcluster-engines-0.$TASK_ID.out"]:
        assert line in script.splitlines(), line
    assert launcher.submit_argv(tmp_path / "s.sh")[:2] == ["qsub", "-terse"]
    assert launcher.job_id_pattern.search("17.1-4:1\n")["job_id"] == "17"
    found = launcher.parse_status(SGE_QSTAT)
    assert found == {"17": ("r", ""), "18": ("Eqw", ""), "19": ("hqw", "")}
    assert [launcher.table[s] for s, _ in found.values()] == [State.RUNNING, State.FAILED, State.PENDING]
    with pytest.raises(launchers.LaunchError, match="suspends"):
        launcher.signal_argv(["17"], 2)


def test_lsf_script_argv_id_and_states(tmp_path):
    launcher = LSFLauncher(log_dir=str(tmp_path), queue="normal", project="p1", time="1:30:00", cpus=2)
    script = launcher.script(COMMAND, 4)
    for line in ['#BSUB -J "ipcluster-engines[1-4]"', "#BSUB -n 2", "#BSUB -q normal", "#BSUB -P p1",
                 "#BSUB -W 1:30", f"#BSUB -o {tmp_path}/ipcluster-engines-0.%I.out"]:
        assert line in script.splitlines(), line
    assert launcher.submit_stdin and launcher.submit_argv(tmp_path / "s.sh") == ["bsub"]
    out = "Job <301> is submitted to queue <normal>.\n"  # bsub's reply, LSF 10.1 "bsub"
    assert launcher.job_id_pattern.search(out)["job_id"] == "301"
    found = launcher.parse_status(LSF_BJOBS)
    assert {j: s for j, (s, _) in found.items()} == {"301": "RUN", "302": "EXIT", "303": "DONE"}
    assert [launcher.table[s] for s, _ in found.values()] == [State.RUNNING, State.FAILED, State.STOPPED]
    assert launcher.signal_argv(["301"], 2) == ["bkill", "-s", "INT", "301"]


def test_htcondor_description_argv_id_and_states(tmp_path):
    launcher = HTCondorLauncher(log_dir=str(tmp_path), cpus=2, memory="4GB", time="1:00:00",
                                requirements='OpSys == "LINUX"', prologue=["source env/bin/activate"])
    text = launcher.script(COMMAND, 4)
    for line in [f"executable = {tmp_path}/ipcluster-engines-0.sh", "request_cpus = 2",
                 "request_memory = 4GB", 'requirements = OpSys == "LINUX"', "queue 4",
                 f"output = {tmp_path}/ipcluster-engines-0.$(Process).out",
                 "exec python -m ipcluster engine", "source env/bin/activate"]:
        assert line in text.splitlines(), line
    out = "Submitting job(s)....\n4 job(s) submitted to cluster 77.\n"  # condor_submit's reply
    assert launcher.job_id_pattern.search(out)["job_id"] == "77"
    found = launcher.parse_status(CONDOR_Q)
    assert found["77"] == ("2", "")
    assert found["78"][0] == "5" and "Permission denied" in found["78"][1]
    assert launcher.table["2"] is State.RUNNING and launcher.table["5"] is State.FAILED


STAND_IN = """\
#!/bin/sh
# a stand-in scheduler command: records its argv, answers from a file
echo "$(basename "$0") $*" >> {log}
cat {answers}/$(basename "$0") 2>/dev/null
exit $(cat {answers}/$(basename "$0").rc 2>/dev/null || echo 0)
"""


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """qsub, qstat, qdel, bsub, bjobs, bkill, condor_* that answer what a test writes."""
    bin_dir, answers = tmp_path / "bin", tmp_path / "answers"
    bin_dir.mkdir()
    answers.mkdir()
    for name in ["qsub", "qstat", "qdel", "qsig", "bsub", "bjobs", "bkill", "condor_submit",
                 "condor_q", "condor_rm"]:
        path = bin_dir / name
        path.write_text(STAND_IN.format(log=tmp_path / "calls", answers=answers))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return answers, tmp_path / "calls"


@pytest.mark.parametrize("name, submitted, status, failed_reason", [
    ("pbs", "1235.pbs01", PBS_QSTAT, "Exit_status=271"),
    ("lsf", "Job <302> is submitted to queue <normal>.", LSF_BJOBS, "EXIT"),
    ("htcondor", "1 job(s) submitted to cluster 78.", CONDOR_Q, "Permission denied"),
])
def test_a_failed_job_is_reported_with_its_reason_and_output(stand_ins, tmp_path, name, submitted,
                                                            status, failed_reason):
    answers, calls = stand_ins
    submit, query = {"pbs": ("qsub", "qstat"), "lsf": ("bsub", "bjobs"),
                     "htcondor": ("condor_submit", "condor_q")}[name]
    (answers / submit).write_text(submitted + "\n")
    (answers / query).write_text(status)
    launcher = launchers.get(name)(log_dir=str(tmp_path / "logs"), poll_interval=0)
    launcher.start([sys.executable, "-m", "ipcluster", "engine"], 1)
    assert launcher.state() is State.FAILED
    message = launcher.failure()
    assert f"{name} job {launcher.jobs[0]}" in message and failed_reason in message
    assert str(tmp_path / "logs") in message
    launcher.stop()  # nothing active: no cancel command
    assert not any(line.split()[0] in ("qdel", "bkill", "condor_rm") for line in calls.read_text().splitlines())


def test_a_refused_submission_shows_the_raw_output(stand_ins, tmp_path):
    answers, _ = stand_ins
    (answers / "qsub").write_text("qsub: Unknown queue\n")
    (answers / "qsub.rc").write_text("170")
    launcher = PBSLauncher(log_dir=str(tmp_path), queue="nope")
    with pytest.raises(launchers.LaunchError, match=r"(?s)exit code 170.*qsub: Unknown queue"):
        launcher.start(COMMAND, 2)
    (answers / "qsub.rc").write_text("0")
    (answers / "qsub").write_text("something unexpected\n")
    with pytest.raises(launchers.LaunchError, match=r"(?s)no job id.*something unexpected"):
        launcher.start(COMMAND, 2)


def test_stop_cancels_running_jobs_and_waits_for_them_to_leave(stand_ins, tmp_path):
    answers, calls = stand_ins
    (answers / "bsub").write_text("Job <301> is submitted to queue <normal>.\n")
    (answers / "bjobs").write_text(LSF_BJOBS)
    launcher = LSFLauncher(log_dir=str(tmp_path), poll_interval=0)
    launcher.start(COMMAND, 2)
    assert launcher.state() is State.RUNNING
    assert "#BSUB" not in calls.read_text()  # the script went to bsub on stdin, not as argv
    (answers / "bjobs").write_text("301 alice EXIT normal login1 node1 ipcluster-engines[1] Mar  5 10:12\n")
    launcher.stop()
    assert "bkill 301" in calls.read_text()
    assert launcher.state() is State.STOPPED  # EXIT after our bkill is not a failure


def test_signal_asks_the_scheduler_first_rather_than_trust_a_stale_state(stand_ins, tmp_path):
    answers, calls = stand_ins
    (answers / "bsub").write_text("Job <301> is submitted to queue <normal>.\n")
    (answers / "bjobs").write_text("301 alice PEND normal login1 - ipcluster-engines[1] Mar  5 10:12\n")
    launcher = LSFLauncher(log_dir=str(tmp_path), poll_interval=3600)  # the cache would not refresh
    launcher.start(COMMAND, 1)
    assert launcher.state() is State.PENDING
    (answers / "bjobs").write_text(LSF_BJOBS)  # running now
    launcher.signal(2)
    assert "bkill -s INT 301" in calls.read_text()


def test_every_built_in_is_registered_with_an_options_schema():
    for name in ["local", "mpi", "ssh", "slurm", "pbs", "sge", "lsf", "htcondor"]:
        cls = launchers.get(name)
        assert cls.name == name and cls.options_class.__doc__ is not None
