"""Slurm: one ``sbatch`` job of N tasks per `start`; ``srun`` starts the N engines in it."""

from __future__ import annotations

import re
import signal as signals
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ipcluster.launchers import starters
from ipcluster.launchers.base import State
from ipcluster.launchers.batch import BatchLauncher, BatchOptions, hms

# squeue's long state names (`%T`), from `man squeue`, JOB STATE CODES
TABLE = {
    "PENDING": State.PENDING, "CONFIGURING": State.PENDING, "REQUEUED": State.PENDING,
    "REQUEUE_HOLD": State.PENDING, "REQUEUE_FED": State.PENDING, "RESV_DEL_HOLD": State.PENDING,
    "SUSPENDED": State.PENDING, "STOPPED": State.PENDING, "RESIZING": State.RUNNING,
    "RUNNING": State.RUNNING, "COMPLETING": State.RUNNING, "SIGNALING": State.RUNNING,
    "STAGE_OUT": State.RUNNING,
    "COMPLETED": State.STOPPED,
    "CANCELLED": State.FAILED, "FAILED": State.FAILED, "TIMEOUT": State.FAILED,
    "NODE_FAIL": State.FAILED, "PREEMPTED": State.FAILED, "BOOT_FAIL": State.FAILED,
    "DEADLINE": State.FAILED, "OUT_OF_MEMORY": State.FAILED, "REVOKED": State.FAILED,
    "SPECIAL_EXIT": State.FAILED,
}


@dataclass
class SlurmOptions(BatchOptions):
    partition: str | None = None  # --partition; None: the cluster's default partition
    account: str | None = None  # --account to charge
    qos: str | None = None  # --qos
    nodes: int | None = None  # --nodes; None: as many as the tasks need
    ntasks_per_node: int | None = None  # --ntasks-per-node
    cpus_per_task: int = 1  # --cpus-per-task: cores for each engine
    srun_args: list = field(default_factory=list)  # extra srun arguments, e.g. ["--mpi=pmi2"]
    sbatch: str = "sbatch"  # the sbatch command (a path, or a wrapper)


class SlurmLauncher(BatchLauncher):
    name = "slurm"
    options_class = SlurmOptions
    prefix = "#SBATCH"
    # `sbatch --parsable` prints "<id>" or "<id>;<cluster>"
    job_id_pattern = re.compile(r"^(?P<job_id>\d+)(;\S+)?\s*$", re.M)
    table = TABLE

    def directives(self, n: int) -> list[str]:
        o = self.options
        lines = [f"--job-name={o.job_name}", f"--ntasks={n}", f"--cpus-per-task={o.cpus_per_task}",
                 f"--output={self.log_dir / (o.job_name + '-%j.out')}"]
        for flag, value in [("partition", o.partition), ("account", o.account), ("qos", o.qos),
                            ("nodes", o.nodes), ("ntasks-per-node", o.ntasks_per_node),
                            ("time", hms(o.time)), ("mem", o.memory)]:
            if value is not None:
                lines.append(f"--{flag}={value}")
        return lines

    def launch(self, command: list[str], n: int) -> str:
        (argv,) = starters.srun(command, n, args=tuple(self.options.srun_args))
        return self.quote(argv)

    def submit_argv(self, script: Path) -> list[str]:
        return [self.options.sbatch, "--parsable", *self.options.submit_args, str(script)]

    def status_argv(self, jobs: list[str]) -> list[str]:
        # --states=all: finished jobs stay listed (for MinJobAge), with their final state
        return ["squeue", "--noheader", "--states=all", f"--jobs={','.join(jobs)}",
                "--format=%i|%T|%r"]

    def parse_status(self, out: str) -> dict[str, tuple[str, str]]:
        found = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                found[parts[0]] = (parts[1], parts[2])
        return found

    def gone(self, job_id: str) -> tuple[str, str]:
        # purged from squeue (after MinJobAge); scontrol may still know how it ended
        proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
        fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
        if "JobState" in fields:
            return fields["JobState"], fields.get("Reason", "")
        return ("gone", "no longer known to slurmctld")

    def cancel_argv(self, jobs: list[str]) -> list[str]:
        return ["scancel", *jobs]

    def signal_argv(self, jobs: list[str], sig: int) -> list[str]:
        # to the job steps: the engines run in the srun step
        return ["scancel", f"--signal={signals.Signals(sig).name.removeprefix('SIG')}", *jobs]

    def output_path(self, job_id: str) -> Path:
        return self.log_dir / f"{self.options.job_name}-{job_id}.out"

    def hosts(self) -> list[str] | None:
        argv = ["sinfo", "--noheader", "--format=%n"]
        if self.options.partition:
            argv.append(f"--partition={self.options.partition}")
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return sorted(set(proc.stdout.split()))
