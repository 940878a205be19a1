"""Grid Engine (SGE, Son of Grid Engine, Univa/Altair GE): one array job per `start`
(``-t 1-N``), one engine per task."""

from __future__ import annotations

import getpass
import re
import signal as signals
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ipcluster.launchers.base import LaunchError, State
from ipcluster.launchers.batch import BatchLauncher, BatchOptions, hms

# qstat's state column, from `man qstat`: combinations of d(eletion) E(rror) h(old) r(unning)
# R(estarted) s/S(uspended) t(ransferring) T(hreshold) w(aiting) q(ueued)
TABLE = {
    "qw": State.PENDING, "hqw": State.PENDING, "hRwq": State.PENDING, "Rq": State.PENDING,
    "s": State.PENDING, "S": State.PENDING, "T": State.PENDING, "ts": State.PENDING,
    "r": State.RUNNING, "t": State.RUNNING, "Rr": State.RUNNING, "Rt": State.RUNNING,
    "dr": State.RUNNING, "dt": State.RUNNING, "dRr": State.RUNNING,
    "Eqw": State.FAILED, "Ehqw": State.FAILED, "EhRqw": State.FAILED, "dqw": State.STOPPED,
    "done": State.STOPPED, "failed": State.FAILED,  # ours, from qacct once the job has left qstat
}


@dataclass
class SGEOptions(BatchOptions):
    queue: str | None = None  # -q, the queue
    project: str | None = None  # -P, the project to charge
    pe: str | None = None  # "-pe NAME SLOTS" for each engine, e.g. "smp 4"; None: one slot
    qsub: str = "qsub"  # the qsub command


class SGELauncher(BatchLauncher):
    name = "sge"
    options_class = SGEOptions
    prefix = "#$"
    # `qsub -terse` prints "123" for a job, "123.1-4:1" for an array
    job_id_pattern = re.compile(r"^(?P<job_id>\d+)(\.\S+)?\s*$", re.M)
    table = TABLE

    def directives(self, n: int) -> list[str]:
        o = self.options
        out = self.log_dir / f"{o.job_name}-{len(self.jobs)}.$TASK_ID.out"
        lines = [f"-N {o.job_name}", f"-t 1-{n}", "-S /bin/bash", "-cwd", "-j y", f"-o {out}"]
        for flag, value in [("-q", o.queue), ("-P", o.project), ("-pe", o.pe)]:
            if value:
                lines.append(f"{flag} {value}")
        if o.time:
            lines.append(f"-l h_rt={hms(o.time)}")
        if o.memory:
            lines.append(f"-l h_vmem={o.memory}")
        return lines

    def launch(self, command: list[str], n: int) -> str:
        return self.quote(command)

    def submit_argv(self, script: Path) -> list[str]:
        return [self.options.qsub, "-terse", *self.options.submit_args, str(script)]

    def status_argv(self, jobs: list[str]) -> list[str]:
        return ["qstat", "-u", getpass.getuser()]

    def parse_status(self, out: str) -> dict[str, tuple[str, str]]:
        # job-ID prior name user state submit/start-at queue slots ja-task-ID; one line per
        # running task, one per group of waiting tasks: the job's state is its "worst" one
        found: dict[str, tuple[str, str]] = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 5 and words[0].isdigit():
                job, state = words[0], words[4]
                self.merge(found, job, state, "")
        return found

    def gone(self, job_id: str) -> tuple[str, str]:
        # left qstat: accounting says how it ended (it may lag a moment behind)
        proc = subprocess.run(["qacct", "-j", job_id], capture_output=True, text=True)
        failed = [line.split(None, 1)[1] for line in proc.stdout.splitlines()
                  if line.startswith(("failed", "exit_status")) and line.split()[1] != "0"]
        if failed:
            return ("failed", "; ".join(failed))
        return ("done", "")

    def cancel_argv(self, jobs: list[str]) -> list[str]:
        return ["qdel", *jobs]

    def signal_argv(self, jobs: list[str], sig: int) -> list[str]:
        # Grid Engine signals only to suspend and resume
        if sig == signals.SIGSTOP:
            return ["qmod", "-sj", *jobs]
        if sig == signals.SIGCONT:
            return ["qmod", "-usj", *jobs]
        raise LaunchError(f"Grid Engine cannot send {signals.Signals(sig).name} to jobs; it "
                          f"suspends (SIGSTOP) and resumes (SIGCONT) only")

    def output_path(self, job_id: str) -> Path:
        return self.log_dir / f"{self.options.job_name}-{self.jobs.index(job_id)}.<task>.out"
