"""PBS Pro / OpenPBS: one job array per `start` (``-J``), one engine per subjob.

Torque takes the same directives except arrays (``-t``): pass ``directives`` for it.
"""

from __future__ import annotations

import re
import signal as signals
from dataclasses import dataclass
from pathlib import Path

from ipcluster.launchers.base import State
from ipcluster.launchers.batch import BatchLauncher, BatchOptions, hms

# job_state letters, from the PBS Professional Reference Guide, "Job States"
TABLE = {
    "Q": State.PENDING, "H": State.PENDING, "W": State.PENDING, "T": State.PENDING,
    "M": State.PENDING, "S": State.PENDING, "U": State.PENDING,
    "R": State.RUNNING, "B": State.RUNNING, "E": State.RUNNING,
    "F": State.STOPPED, "X": State.STOPPED, "C": State.STOPPED,  # C: Torque's "completed"
    "F_FAILED": State.FAILED,  # finished with a nonzero Exit_status (ours: F + Exit_status)
}


@dataclass
class PBSOptions(BatchOptions):
    queue: str | None = None  # -q, the destination queue
    account: str | None = None  # -A, the account to charge
    cpus: int = 1  # ncpus of each engine's chunk (-l select=1:ncpus=...)
    qsub: str = "qsub"  # the qsub command


class PBSLauncher(BatchLauncher):
    name = "pbs"
    options_class = PBSOptions
    prefix = "#PBS"
    # "1234.server" for a job, "1234[].server" for an array
    job_id_pattern = re.compile(r"^(?P<job_id>\d+(\[\])?(\.[\w.-]+)?)\s*$", re.M)
    table = TABLE

    def _output(self, index: int | str) -> Path:
        return self.log_dir / f"{self.options.job_name}-{index}.out"

    def directives(self, n: int) -> list[str]:
        o = self.options
        select = f"select=1:ncpus={o.cpus}" + (f":mem={o.memory}" if o.memory else "")
        # ^array_index^: PBS names each subjob's output after its index
        lines = [f"-N {o.job_name}", f"-l {select}", "-j oe",
                 f"-o {self._output(len(self.jobs)) if n == 1 else self._output(f'{len(self.jobs)}.^array_index^')}"]
        if n > 1:
            lines.append(f"-J 0-{n - 1}")  # PBS arrays need two subjobs or more
        for flag, value in [("-q", o.queue), ("-A", o.account)]:
            if value:
                lines.append(f"{flag} {value}")
        if o.time:
            lines.append(f"-l walltime={hms(o.time)}")
        return lines

    def launch(self, command: list[str], n: int) -> str:
        return f'cd "${{PBS_O_WORKDIR:-$HOME}}"\n{self.quote(command)}'

    def submit_argv(self, script: Path) -> list[str]:
        return [self.options.qsub, *self.options.submit_args, str(script)]

    def status_argv(self, jobs: list[str]) -> list[str]:
        return ["qstat", "-x", "-f", *jobs]  # -x: finished jobs too

    def parse_status(self, out: str) -> dict[str, tuple[str, str]]:
        found, job, fields = {}, None, {}

        def done():
            if job is not None:
                state, reason = fields.get("job_state", "?"), fields.get("comment", "")
                exit_status = fields.get("Exit_status")
                if state == "F" and exit_status not in (None, "0"):
                    state, reason = "F_FAILED", f"Exit_status={exit_status}; {reason}".rstrip("; ")
                found[job] = (state, reason)

        for line in out.splitlines():
            if line.startswith("Job Id:"):
                done()
                job, fields = line.split(":", 1)[1].strip(), {}
            elif " = " in line and not line.startswith("\t"):
                key, _, value = line.strip().partition(" = ")
                fields[key] = value
        done()
        return found

    def cancel_argv(self, jobs: list[str]) -> list[str]:
        return ["qdel", *jobs]

    def signal_argv(self, jobs: list[str], sig: int) -> list[str]:
        return ["qsig", "-s", signals.Signals(sig).name, *jobs]

    def output_path(self, job_id: str) -> Path:
        index = self.jobs.index(job_id)
        return self._output(index) if "[]" not in job_id else self._output(f"{index}.<subjob>")
