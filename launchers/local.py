"""The local launcher: processes on this machine, each in its own session and log file; and
`mpi`, which is local with the `mpiexec` starter."""

from __future__ import annotations

import os
import signal as signals
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ipcluster.launchers import starters
from ipcluster.launchers.base import Launcher, LaunchError, State, tail
from ipcluster.launchers.options import build
from ipcluster.launchers.template import Template


@dataclass
class LocalOptions:
    log_dir: str | None = None  # where process-<i>.log files go; None: inherit stdout and stderr
    log_name: str = "engine-{i}.log"  # file name of the i-th process's log in log_dir
    env: dict = field(default_factory=dict)  # extra environment variables for the processes
    stop_grace: float = 5.0  # seconds from SIGTERM to SIGKILL when stopping
    starter: str = "plain"  # how the copies start: plain (n processes), mpiexec or srun (one each)
    starter_args: list = field(default_factory=list)  # extra arguments for mpiexec or srun
    preload: list = field(default_factory=list)  # modules a template process imports once, then
    # forks each copy of a `python -m`/`-c` command (plain starter); empty: a fresh process each


class LocalLauncher(Launcher):
    name = "local"
    options_class = LocalOptions

    def __init__(self, options: LocalOptions | None = None, **overrides) -> None:
        self.options = options or build(self.options_class, self.name, overrides)
        self.processes: list = []  # subprocess.Popen, or template.Copy when forked
        self.template: Template | None = None
        self._stopping = False

    def starter(self) -> starters.Starter:
        if self.options.starter == "plain":
            return starters.plain
        return starters.get(self.options.starter, args=tuple(self.options.starter_args))

    def commands(self, command: list[str], n: int) -> list[list[str]]:
        return self.starter()(command, n)

    def script(self, command: list[str], n: int) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.options.env.items())
        lines = [f"{env} {self.quote(argv)}".strip() for argv in self.commands(command, n)]
        return "\n".join(f"{line} &" for line in lines) + "\nwait\n"

    def log_path(self, i: int) -> Path | None:
        if self.options.log_dir is None:
            return None
        return Path(self.options.log_dir) / self.options.log_name.format(i=i)

    def environment(self) -> dict:
        return {**os.environ, **{k: str(v) for k, v in self.options.env.items()}}

    def prepare(self, command: list[str]) -> None:
        """Start the template process now (it imports while the caller does other work)."""
        self._template(command, self.environment())

    def _template(self, argv: list[str], env: dict) -> Template | None:
        """The template that forks copies of `argv`, or None if a fresh process must start."""
        if not self.options.preload or self.options.starter != "plain" or not Template.forkable(argv):
            return None
        if self.template is None or self.template.gone:
            log = Path(self.options.log_dir) / "template.log" if self.options.log_dir else None
            try:
                self.template = Template(argv[0], self.options.preload, env, log)
            except FileNotFoundError:
                raise LaunchError(f"{argv[0]!r} not found; is it installed and on PATH? "
                                  f"(PATH={env.get('PATH', '')})") from None
        return self.template if self.template.fits(argv, env) else None

    def start(self, command: list[str], n: int) -> None:
        self._stopping = False
        env = self.environment()
        argvs = self.commands(command, n)
        template = self._template(command, env) if argvs else None
        if template is not None:
            logs = [self.log_path(len(self.processes) + i) for i in range(len(argvs))]
            self.processes.extend(template.fork(argvs, env, logs))
            return
        for argv in argvs:
            log = self.log_path(len(self.processes))
            out = open(log, "ab") if log is not None else None
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out else None,
                    env=env, start_new_session=True,  # Ctrl-C in a terminal reaches only our parent
                )
            except FileNotFoundError:
                raise LaunchError(
                    f"{argv[0]!r} not found; is it installed and on PATH? (PATH={env.get('PATH', '')})"
                    + (f"; or set the {self.name} launcher's `mpiexec` option to its full path"
                       if isinstance(self.options, MPIOptions) else "")) from None
            finally:
                if out is not None:
                    out.close()
            self.processes.append(proc)

    def local_processes(self) -> list | None:
        return self.processes if self.options.starter == "plain" else None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def logs(self) -> list[Path]:
        return [log for i in range(len(self.processes)) if (log := self.log_path(i)) is not None]

    def signal(self, sig: int = signals.SIGINT) -> None:
        self._signal_groups(sig, [p for p in self.processes if p.poll() is None])

    @staticmethod
    def _signal_groups(sig: int, processes) -> None:
        # each process leads its own process group: the signal reaches what it started too
        for proc in processes:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self) -> None:
        self._stopping = True
        self.signal(signals.SIGTERM)
        deadline = time.monotonic() + self.options.stop_grace
        while time.monotonic() < deadline and any(p.poll() is None for p in self.processes):
            time.sleep(0.02)
        self._signal_groups(signals.SIGKILL, self.processes)
        for proc in self.processes:
            proc.wait()
        if self.template is not None:
            self.template.close()
            self.template = None

    def state(self) -> State:
        if not self.processes:
            return State.NOT_STARTED
        codes = [p.poll() for p in self.processes]
        if any(c is None for c in codes):
            return State.RUNNING
        if not self._stopping and any(c != 0 for c in codes):
            return State.FAILED
        return State.STOPPED

    def failure(self) -> str | None:
        failed = [i for i, p in enumerate(self.processes) if p.poll() and not self._stopping]
        if not failed:
            return None
        i, log = failed[0], self.log_path(failed[0])
        return (f"process {i} exited with code {self.processes[i].returncode}; "
                f"its log {log} ends with:\n"
                f"{tail(log) if log else '    (no log: output went to the terminal)'}")


@dataclass
class MPIOptions(LocalOptions):
    log_name: str = "mpiexec-{i}.log"  # one log per mpiexec: every rank's output, in order
    starter: str = "mpiexec"  # mpi is local with the mpiexec starter
    mpiexec: str = "mpiexec"  # the mpiexec to run: a path, or mpiexec.mpich / mpiexec.openmpi


class MPILauncher(LocalLauncher):
    """``mpiexec -n N command``: N ranks, and an engine's id is its rank."""

    name = "mpi"
    options_class = MPIOptions

    def starter(self) -> starters.Starter:
        return starters.get("mpiexec", mpiexec=self.options.mpiexec, args=tuple(self.options.starter_args))
