"""HTCondor: one cluster of N jobs per `start` (``queue N``), one engine per job.

HTCondor submits a description, not a script with directives: the engines run from a shell
script (environment, prologue, command) that the description names as its executable.
"""

from __future__ import annotations

import re
import signal as signals
import string
from dataclasses import dataclass
from pathlib import Path

from ipcluster.launchers.base import LaunchError, State
from ipcluster.launchers.batch import BatchLauncher, BatchOptions, seconds

# JobStatus codes, from the HTCondor manual, "Job ClassAd Attributes"
TABLE = {
    "1": State.PENDING,  # Idle
    "2": State.RUNNING,  # Running
    "3": State.FAILED,  # Removed
    "4": State.STOPPED,  # Completed
    "5": State.FAILED,  # Held: it will not run until someone releases it; HoldReason says why
    "6": State.RUNNING,  # Transferring Output
    "7": State.PENDING,  # Suspended
}

DESCRIPTION = string.Template("""\
universe = vanilla
executable = ${executable}
output = ${output}
error = ${output}
log = ${events}
getenv = True
request_cpus = ${cpus}
${requests}
queue ${n}
""")


@dataclass
class HTCondorOptions(BatchOptions):
    cpus: int = 1  # request_cpus of each engine
    requirements: str | None = None  # a ClassAd expression, e.g. 'OpSys == "LINUX"'
    condor_submit: str = "condor_submit"  # the condor_submit command


class HTCondorLauncher(BatchLauncher):
    name = "htcondor"
    options_class = HTCondorOptions
    prefix = "#"  # the job script has no directives: they are in the description
    job_id_pattern = re.compile(r"submitted to cluster (?P<job_id>\d+)\.")
    table = TABLE

    def directives(self, n: int) -> list[str]:
        return []

    def launch(self, command: list[str], n: int) -> str:
        return f"exec {self.quote(command)}"

    def _paths(self, index: int) -> tuple[Path, Path]:
        base = self.log_dir / f"{self.options.job_name}-{index}"
        return base.with_suffix(".sh"), base.with_suffix(".submit")

    def description(self, n: int) -> str:
        o = self.options
        requests = []
        if o.memory:
            requests.append(f"request_memory = {o.memory}")
        if o.requirements:
            requests.append(f"requirements = {o.requirements}")
        if o.time:
            # the engines' own margin does the clean stop; this removes a job that overstays
            requests.append(f"periodic_remove = (JobStatus == 2) && "
                            f"(time() - EnteredCurrentStatus > {seconds(o.time)})")
        requests += list(o.directives)
        index = len(self.jobs)
        return DESCRIPTION.substitute(
            executable=self._paths(index)[0],
            output=self.log_dir / f"{o.job_name}-{index}.$(Process).out",
            events=self.log_dir / f"{o.job_name}-{index}.events", cpus=o.cpus,
            requests="\n".join(requests), n=n)

    def script(self, command: list[str], n: int) -> str:
        executable, submit = self._paths(len(self.jobs))
        saved, self.options.directives = self.options.directives, []  # they go in the description
        try:
            body = super().script(command, n)
        finally:
            self.options.directives = saved
        return f"# {submit}\n{self.description(n)}\n# {executable}\n{body}"

    def write_files(self, command: list[str], n: int) -> Path:
        executable, submit = self._paths(len(self.jobs))
        saved, self.options.directives = self.options.directives, []
        try:
            self.write(executable, super().script(command, n))
        finally:
            self.options.directives = saved
        return self.write(submit, self.description(n))

    def submit_argv(self, script: Path) -> list[str]:
        return [self.options.condor_submit, *self.options.submit_args, str(script)]

    def status_argv(self, jobs: list[str]) -> list[str]:
        # one line per job: cluster, status, hold reason (free text, so last)
        return ["condor_q", *jobs, "-af", "ClusterId", "JobStatus", "HoldReason"]

    def parse_status(self, out: str) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for line in out.splitlines():
            words = line.split(None, 2)
            if len(words) >= 2 and words[0].isdigit():
                job, status = words[0], words[1]
                reason = words[2] if len(words) == 3 and words[2] != "undefined" else ""
                self.merge(found, job, status, reason)
        return found

    def cancel_argv(self, jobs: list[str]) -> list[str]:
        return ["condor_rm", *jobs]

    def signal_argv(self, jobs: list[str], sig: int) -> list[str]:
        # HTCondor has a command per action, not a signal command
        commands = {signals.SIGSTOP: "condor_suspend", signals.SIGCONT: "condor_continue",
                    signals.SIGTERM: "condor_rm", signals.SIGKILL: "condor_rm"}
        if sig not in commands:
            raise LaunchError(f"HTCondor cannot send {signals.Signals(sig).name} to jobs; it "
                              f"suspends (SIGSTOP), continues (SIGCONT) and removes (SIGTERM) them")
        return [commands[sig], *jobs]

    def output_path(self, job_id: str) -> Path:
        return self.log_dir / f"{self.options.job_name}-{self.jobs.index(job_id)}.<process>.out"
