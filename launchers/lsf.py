"""IBM Spectrum LSF: one job array per `start` (``-J name[1-N]``), one engine per element."""

from __future__ import annotations

import re
import signal as signals
from dataclasses import dataclass
from pathlib import Path

from ipcluster.launchers.base import State
from ipcluster.launchers.batch import BatchLauncher, BatchOptions, seconds

# bjobs STAT, from the LSF documentation, "About job states"
TABLE = {
    "PEND": State.PENDING, "WAIT": State.PENDING, "PSUSP": State.PENDING,
    "USUSP": State.PENDING, "SSUSP": State.PENDING,
    "RUN": State.RUNNING, "PROV": State.RUNNING,
    "DONE": State.STOPPED,
    "EXIT": State.FAILED, "ZOMBI": State.FAILED, "UNKWN": State.PENDING,
}


@dataclass
class LSFOptions(BatchOptions):
    queue: str | None = None  # -q, the queue
    project: str | None = None  # -P, the project to charge
    cpus: int = 1  # -n, slots for each engine
    bsub: str = "bsub"  # the bsub command


class LSFLauncher(BatchLauncher):
    name = "lsf"
    options_class = LSFOptions
    prefix = "#BSUB"
    job_id_pattern = re.compile(r"Job <(?P<job_id>\d+)> is submitted")
    table = TABLE
    submit_stdin = True  # `bsub < script`: bsub reads #BSUB lines only from stdin

    def directives(self, n: int) -> list[str]:
        o = self.options
        name = o.job_name if n == 1 else f"{o.job_name}[1-{n}]"
        out = self.log_dir / f"{o.job_name}-{len(self.jobs)}.%I.out"  # %I: the element's index
        lines = [f'-J "{name}"', f"-n {o.cpus}", f"-o {out}"]
        for flag, value in [("-q", o.queue), ("-P", o.project), ("-M", o.memory)]:
            if value:
                lines.append(f"{flag} {value}")
        if o.time:
            minutes = -(-seconds(o.time) // 60)
            lines.append(f"-W {minutes // 60}:{minutes % 60:02d}")  # [hours:]minutes
        return lines

    def launch(self, command: list[str], n: int) -> str:
        return self.quote(command)

    def submit_argv(self, script: Path) -> list[str]:
        return [self.options.bsub, *self.options.submit_args]

    def status_argv(self, jobs: list[str]) -> list[str]:
        return ["bjobs", "-a", "-noheader", "-w", *jobs]  # -a: finished jobs too

    def parse_status(self, out: str) -> dict[str, tuple[str, str]]:
        # JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME, one line per element
        found: dict[str, tuple[str, str]] = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 3 and words[0].isdigit():
                job, state = words[0], words[2]
                self.merge(found, job, state, "")
        return found

    def cancel_argv(self, jobs: list[str]) -> list[str]:
        return ["bkill", *jobs]

    def signal_argv(self, jobs: list[str], sig: int) -> list[str]:
        return ["bkill", "-s", signals.Signals(sig).name.removeprefix("SIG"), *jobs]

    def output_path(self, job_id: str) -> Path:
        return self.log_dir / f"{self.options.job_name}-{self.jobs.index(job_id)}.<index>.out"
