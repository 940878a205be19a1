"""SSH: engines on a list of hosts, ``{host: n}``, started and stopped over ``ssh``.

One ``ssh host sh -s`` per host and action; the script travels on stdin, so the environment
(which may hold the cluster's key) never appears on a command line. Each remote process leads
its own session (``setsid``), so stopping kills it and everything it started, by process group,
on the remote host: killing a local ``ssh`` would not.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal as signals
import subprocess
import time
from dataclasses import dataclass, field

from ipcluster.launchers.base import Launcher, LaunchError, State
from ipcluster.launchers.options import build


_SERIAL = itertools.count()  # the {i} of remote log names


@dataclass
class SSHOptions:
    hosts: dict = field(default_factory=lambda: {"localhost": 1})  # {host: most engines there}, filled in order
    user: str | None = None  # remote user; None: ssh's default
    port: int | None = None  # remote sshd port; None: ssh's default (22 or ~/.ssh/config)
    identity_file: str | None = None  # ssh -i
    config_file: str | None = None  # ssh -F: an ssh config of your own (Host aliases, HostName...)
    ssh: str = "ssh"  # the ssh command
    ssh_args: list = field(default_factory=lambda: ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])  # more ssh options
    python: str | None = None  # remote python that runs engines; None: the command's own
    remote_log_dir: str = "/tmp"  # where engine logs go on the remote hosts
    log_dir: str | None = None  # accepted for symmetry with other launchers; logs stay remote
    log_name: str = "ipcluster-engine-{pid}-{i}.log"  # remote log file name; {pid}: ours
    env: dict = field(default_factory=dict)  # environment variables for the engines, sent on stdin
    stop_grace: float = 5.0  # seconds from SIGTERM to SIGKILL when stopping
    poll_interval: float = 2.0  # least seconds between two liveness checks per host


class SSHLauncher(Launcher):
    name = "ssh"
    options_class = SSHOptions
    remote = True

    def __init__(self, options: SSHOptions | None = None, **overrides) -> None:
        self.options = options or build(self.options_class, self.name, overrides)
        self.started: dict[str, list[tuple[int, str]]] = {}  # host -> [(remote pid, remote log)]
        self.dead: dict[str, list[int]] = {}
        self._polled = 0.0
        self._stopping = False

    def hosts(self) -> list[str]:
        """The addresses ssh connects to: a host alias is resolved as ssh would (`resolve`)."""
        return [self.resolve(host) for host in self.options.hosts]

    def resolve(self, host: str) -> str:
        """The HostName that ssh's configuration gives `host` (``ssh -G``), or `host` itself."""
        o = self.options
        argv = [o.ssh, *(["-F", o.config_file] if o.config_file else []), *o.ssh_args, "-G", host]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return host
        for line in out.stdout.splitlines() if out.returncode == 0 else ():
            key, _, value = line.partition(" ")
            if key == "hostname" and value.strip():
                return value.strip()
        return host

    def ssh_argv(self, host: str) -> list[str]:
        o = self.options
        argv = [o.ssh, *o.ssh_args]
        if o.config_file:
            argv[1:1] = ["-F", o.config_file]
        if o.port:
            argv += ["-p", str(o.port)]
        if o.identity_file:
            argv += ["-i", o.identity_file]
        return [*argv, f"{o.user}@{host}" if o.user else host, "sh", "-s"]

    def plan(self, n: int) -> dict[str, int]:
        """How many of `n` engines go to each host: fill the hosts in order, each up to its n."""
        plan, left = {}, n
        for host, most in self.options.hosts.items():
            room = int(most) - len(self.started.get(host, []))
            if left and room > 0:
                plan[host] = min(room, left)
                left -= plan[host]
        if left:
            raise LaunchError(f"{n} engines do not fit on the hosts {self.options.hosts} "
                              f"({sum(map(len, self.started.values()))} started already)")
        return plan

    def _start_script(self, command: list[str], k: int) -> tuple[str, list[str]]:
        o = self.options
        if o.python:
            command = [o.python, *command[1:]]
        # numbered across every launcher of this process: two engine sets on one host
        # (two SSHLaunchers) never write the same remote log
        logs = [f"{o.remote_log_dir}/{o.log_name.format(pid=os.getpid(), i=next(_SERIAL))}"
                for _ in range(k)]
        lines = [f"export {key}={shlex.quote(str(v))}" for key, v in o.env.items()]
        lines.append(f"cd {shlex.quote(o.remote_log_dir)}")
        for log in logs:
            lines.append(f"setsid {self.quote(command)} </dev/null >{shlex.quote(log)} 2>&1 &")
            lines.append("echo $!")
        return "\n".join(lines) + "\n", logs

    def script(self, command: list[str], n: int) -> str:
        parts = []
        for host, k in self.plan(n).items():
            text, _ = self._start_script(command, k)
            parts.append(f"# {self.quote(self.ssh_argv(host))} <<'EOF'\n{text}EOF\n")
        return "\n".join(parts)

    def _ssh(self, host: str, text: str, what: str) -> str:
        argv = self.ssh_argv(host)
        try:
            proc = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise LaunchError(f"{what} on {host}: `{self.quote(argv)}` did not finish in 60 s") from None
        if proc.returncode != 0:
            raise LaunchError(f"{what} on {host}: `{self.quote(argv)}` failed with exit code "
                              f"{proc.returncode}; it said:\n{(proc.stdout + proc.stderr).strip()}")
        return proc.stdout

    def start(self, command: list[str], n: int) -> None:
        self._stopping = False
        for host, k in self.plan(n).items():
            text, logs = self._start_script(command, k)
            out = self._ssh(host, text, f"starting {k} engines")
            pids = [int(w) for w in out.split() if w.isdigit()]
            if len(pids) != k:
                raise LaunchError(f"starting {k} engines on {host}: expected {k} pids, got {out!r}")
            self.started.setdefault(host, []).extend(zip(pids, logs))

    def _alive(self, host: str) -> list[int]:
        pids = [p for p, _ in self.started[host]]
        out = self._ssh(host, "".join(f"kill -0 {p} 2>/dev/null && echo {p}\n" for p in pids) + "true\n",
                        "checking engines")
        return [int(w) for w in out.split()]

    def state(self) -> State:
        if not self.started:
            return State.NOT_STARTED
        now = time.monotonic()
        if now - self._polled >= self.options.poll_interval:
            self._polled = now
            for host in self.started:
                alive = set(self._alive(host))
                self.dead[host] = [p for p, _ in self.started[host] if p not in alive]
        dead = sum(map(len, self.dead.values()))
        if dead and not self._stopping:
            return State.FAILED
        if dead < sum(map(len, self.started.values())):
            return State.RUNNING
        return State.STOPPED

    def failure(self) -> str | None:
        for host, pids in self.dead.items():
            for pid, log in self.started[host]:
                if pid in pids and not self._stopping:
                    out = self._ssh(host, f"tail -n 15 {shlex.quote(log)} 2>&1\n", "reading a log")
                    text = "\n".join("    " + line for line in out.splitlines())
                    return f"engine process {pid} on {host} exited; its log {host}:{log} ends with:\n{text}"
        return None

    def signal(self, sig: int = signals.SIGINT) -> None:
        for host, started in self.started.items():
            groups = " ".join(f"-{p}" for p, _ in started)
            self._ssh(host, f"kill -{signals.Signals(sig).name.removeprefix('SIG')} {groups} 2>/dev/null; true\n", "signalling engines")

    def stop(self) -> None:
        self._stopping = True
        tries = max(1, int(self.options.stop_grace / 0.1))
        for host, started in self.started.items():
            pids = " ".join(str(p) for p, _ in started)
            self._ssh(host, f"""\
pids="{pids}"
for p in $pids; do kill -TERM -$p 2>/dev/null; done
i=0
while [ $i -lt {tries} ]; do
  alive=; for p in $pids; do kill -0 $p 2>/dev/null && alive=1; done
  [ -z "$alive" ] && exit 0
  sleep 0.1; i=$((i + 1))
done
for p in $pids; do kill -KILL -$p 2>/dev/null; done
true
""", "stopping engines")
            self.dead[host] = [p for p, _ in started]
