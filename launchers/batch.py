"""What every batch launcher shares: write the job script from options, submit it as an argv
list, parse the job id with a named regex group, poll states in batches at a bounded rate, map
them to `State` through the system's table, cancel and signal.

One small module per batch system (`slurm`, `pbs`, `sge`, `lsf`, `htcondor`) fills in its
directives, its commands and its table. A submission that fails raises `LaunchError` with the
command's raw output; a job that fails or is cancelled before it is stopped makes `state()`
FAILED, and `failure()` names the job, the scheduler's reason and the job's output file.
"""

from __future__ import annotations

from abc import abstractmethod

import os
import re
import shlex
import signal as signals
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ipcluster.launchers.base import Launcher, LaunchError, State, tail
from ipcluster.launchers.options import build

GRACE = 10.0  # seconds a job just submitted may be missing from the status output

SCRIPT = string.Template("""\
#!/bin/bash
${directives}

${environment}
${prologue}
${launch}
""")


@dataclass
class BatchOptions:
    log_dir: str | None = None  # where job scripts and job output go; None: the current directory
    job_name: str = "ipcluster-engines"  # the job's name in the queue, and its files' prefix
    time: str | None = None  # walltime, HH:MM:SS; None: the queue's default
    memory: str | None = None  # memory per job or node, in the system's own syntax (e.g. 4G)
    directives: list = field(default_factory=list)  # extra directive lines, prefix added for you
    prologue: list = field(default_factory=list)  # shell lines before the engines start (module load ...)
    env: dict = field(default_factory=dict)  # environment variables exported in the job script
    submit_args: list = field(default_factory=list)  # extra arguments for the submit command
    poll_interval: float = 1.0  # least seconds between two state queries to the scheduler
    stop_timeout: float = 30.0  # seconds to wait for cancelled jobs to leave the queue
    walltime_margin: float = 60.0  # engines stop taking work this many seconds before `time` ends


def seconds(walltime: str | int | None) -> int | None:
    """``[[D-]HH:]MM:SS`` or minutes, as seconds; an int is seconds already (YAML reads
    ``time: 01:00:00`` as the sexagesimal int 3600)."""
    if not walltime:
        return None
    if isinstance(walltime, (int, float)):
        return int(walltime)
    days, _, rest = walltime.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:
        parts = [0, parts[0], 0]  # a bare number is minutes, as in sbatch --time
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return (int(days or 0) * 24 + h) * 3600 + m * 60 + s


def hms(walltime: str | int | None) -> str | None:
    """The walltime as HH:MM:SS, the form every batch system accepts."""
    total = seconds(walltime)
    if total is None:
        return None
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


class BatchLauncher(Launcher):
    """Submits one job (or array) per `start`; subclasses describe their batch system."""

    remote = True
    prefix = "#"  # directive prefix, e.g. "#SBATCH"
    job_id_pattern: re.Pattern  # matches the submit command's output, group "job_id"
    table: dict[str, State]  # the scheduler's state names -> State
    submit_stdin = False  # LSF's bsub reads its directives only from a script on stdin

    def __init__(self, options=None, **overrides) -> None:
        self.options = options or build(self.options_class, self.name, overrides)
        self.jobs: list[str] = []
        self.native: dict[str, tuple[str, str]] = {}  # job id -> (scheduler state, reason)
        self._polled = 0.0
        self._submitted: dict[str, float] = {}
        self._stopping = False

    # -- what each system fills in ----------------------------------------------------------

    @abstractmethod
    def directives(self, n: int) -> list[str]:
        ...

    @abstractmethod
    def launch(self, command: list[str], n: int) -> str:
        ...

    @abstractmethod
    def submit_argv(self, script: Path) -> list[str]:
        ...

    @abstractmethod
    def status_argv(self, jobs: list[str]) -> list[str]:
        ...

    @abstractmethod
    def parse_status(self, out: str) -> dict[str, tuple[str, str]]:
        """Job id -> (native state, reason) from the status command's output."""
        ...

    @abstractmethod
    def cancel_argv(self, jobs: list[str]) -> list[str]:
        ...

    @abstractmethod
    def signal_argv(self, jobs: list[str], sig: int) -> list[str]:
        ...

    @abstractmethod
    def output_path(self, job_id: str) -> Path:
        ...

    def merge(self, found: dict, job: str, native: str, reason: str = "") -> None:
        """Record one line of status output in `found`; a job listed once per array element
        or task keeps its most telling state (failed, then running, then pending)."""
        rank = {State.FAILED: 3, State.RUNNING: 2, State.PENDING: 1, State.STOPPED: 0}
        old = found.get(job)
        if old is None or rank[self.table.get(native, State.PENDING)] > rank[self.table.get(old[0], State.PENDING)]:
            found[job] = (native, reason)

    def gone(self, job_id: str) -> tuple[str, str]:
        """(native state, reason) of a job the status command no longer lists (STOPPED)."""
        return ("gone", "no longer in the queue")

    # -- the shared part ----------------------------------------------------------------------

    @property
    def log_dir(self) -> Path:
        return Path(self.options.log_dir or os.getcwd())

    def script(self, command: list[str], n: int) -> str:
        o = self.options
        env = dict(o.env)
        if seconds(o.time):
            # the engines stop taking work `walltime_margin` seconds before the job ends
            env.setdefault("IPCLUSTER_WALLTIME_MARGIN", str(o.walltime_margin))
        exports = [f"export {k}={shlex.quote(str(v))}" for k, v in env.items()]
        if seconds(o.time):
            exports.append(f"export IPCLUSTER_JOB_END=$(( $(date +%s) + {seconds(o.time)} ))")
        directives = self.directives(n) + list(o.directives)
        return SCRIPT.substitute(
            directives="\n".join(f"{self.prefix} {d}" for d in directives),
            environment="\n".join(exports),
            prologue="\n".join(o.prologue),
            launch=self.launch(command, n),
        )

    def run(self, argv: list[str], what: str, check: bool = True, stdin=None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                  stdin=stdin or subprocess.DEVNULL)
        except FileNotFoundError:
            raise LaunchError(f"{what}: {argv[0]!r} not found; is {self.name} installed, and on "
                              f"PATH of this machine?") from None
        except subprocess.TimeoutExpired:
            raise LaunchError(f"{what}: `{self.quote(argv)}` did not finish within 60 s") from None
        if check and proc.returncode != 0:
            raise LaunchError(f"{what}: `{self.quote(argv)}` failed with exit code {proc.returncode}; "
                              f"it said:\n{(proc.stdout + proc.stderr).strip()}")
        return proc

    def start(self, command: list[str], n: int) -> None:
        self._stopping = False
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.write_files(command, n)
        argv = self.submit_argv(path)
        if self.submit_stdin:
            with open(path) as stdin:
                proc = self.run(argv, f"submitting {path}", stdin=stdin)
        else:
            proc = self.run(argv, f"submitting {path}")
        match = self.job_id_pattern.search(proc.stdout)
        if not match:
            raise LaunchError(f"submitting {path}: no job id in the output of `{self.quote(argv)}`; "
                              f"it said:\n{(proc.stdout + proc.stderr).strip()}")
        job_id = match["job_id"]
        self.jobs.append(job_id)
        self.native[job_id] = ("submitted", "")
        self._submitted[job_id] = time.monotonic()

    def write(self, path: Path, text: str) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)  # it may hold a key
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def write_files(self, command: list[str], n: int) -> Path:
        """Write what is submitted for the next job; returns the file the submit command takes."""
        return self.write(self.log_dir / f"{self.options.job_name}-{len(self.jobs)}.sh",
                          self.script(command, n))

    def poll(self, force: bool = False) -> dict[str, tuple[str, str]]:
        """The native state of every job, asking the scheduler at most every `poll_interval` s."""
        active = [j for j in self.jobs if self.job_state(j) in (State.PENDING, State.RUNNING)]
        now = time.monotonic()
        if active and (force or now - self._polled >= self.options.poll_interval):
            self._polled = now
            proc = self.run(self.status_argv(active), "asking for job states", check=False)
            seen = self.parse_status(proc.stdout)
            for job in active:
                if job in seen:
                    self.native[job] = seen[job]
                elif self.native[job][0] != "submitted" or now - self._submitted[job] > GRACE:
                    self.native[job] = self.gone(job)  # (a new job may take a moment to show)
        return self.native

    def job_state(self, job_id: str) -> State:
        native, _ = self.native[job_id]
        if native == "submitted":
            return State.PENDING
        if native == "gone":
            return State.STOPPED
        state = self.table.get(native, State.PENDING)  # a state we do not know: keep asking
        if state is State.FAILED and self._stopping:
            return State.STOPPED  # cancelled by us
        return state

    def state(self) -> State:
        if not self.jobs:
            return State.NOT_STARTED
        self.poll()
        states = {self.job_state(j) for j in self.jobs}
        for state in (State.FAILED, State.RUNNING, State.PENDING):
            if state in states:
                return state
        return State.STOPPED

    def pending(self) -> str | None:
        for job in self.jobs:
            if self.job_state(job) is State.PENDING:
                native, reason = self.native[job]
                waited = time.monotonic() - self._submitted[job]
                return (f"{self.name} job {job} pending: {reason or native}, "
                        f"{f'{waited / 60:.0f} min' if waited >= 90 else f'{waited:.0f} s'}")
        return None

    def logs(self) -> list[Path]:
        return [self.output_path(job) for job in self.jobs]

    def failure(self) -> str | None:
        for job in self.jobs:
            if self.job_state(job) is State.FAILED:
                native, reason = self.native[job]
                out = self.output_path(job)
                return (f"{self.name} job {job} is {native} (reason: {reason or 'none given'}); "
                        f"its output {out} ends with:\n{tail(out)}")
        return None

    def stop(self) -> None:
        self._stopping = True
        active = [j for j in self.jobs if self.job_state(j) in (State.PENDING, State.RUNNING)]
        if not active:
            return
        self.run(self.cancel_argv(active), "cancelling jobs", check=False)
        deadline = time.monotonic() + self.options.stop_timeout
        while time.monotonic() < deadline:
            self.poll(force=True)
            if all(self.job_state(j) not in (State.PENDING, State.RUNNING) for j in active):
                return
            time.sleep(0.2)
        raise LaunchError(f"{self.name} jobs {', '.join(active)} were still in the queue "
                          f"{self.options.stop_timeout} s after `{self.quote(self.cancel_argv(active))}`")

    def signal(self, sig: int = signals.SIGINT) -> None:
        self.poll(force=True)  # the cached state may still say pending for a job now running
        active = [j for j in self.jobs if self.job_state(j) is State.RUNNING]
        if active:
            self.run(self.signal_argv(active, sig), f"sending {signals.Signals(sig).name}")
