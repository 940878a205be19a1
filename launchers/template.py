"""A template process: one interpreter that imports a command's modules once, then forks each
copy of the command, so a copy costs a fork instead of an interpreter start and its imports.

    launcher (this process)                         template (python -m ipcluster.launchers.template)
    ┌───────────────────────────┐ requests, stdin   ┌──────────────────────────────────────────┐
    │ Template.fork(argv, ...)  │ ────────────────▶ │ imported `preload` once; per request:    │
    │ Copy: pid, poll(), wait() │ ◀──────────────── │   fork, report the pid; SIGCHLD: reap,   │
    └───────────────────────────┘ reports, a pipe   │   report the exit code                   │
                                                    └───────────────┬──────────────────────────┘
                                                                    │ fork
                                                     copy: own session, log, environment,
                                                     directory and argv; runs `-m module`
                                                     (or `-c code`) as a fresh interpreter would

Each copy is a process of its own (signal it, kill its group, restart it), only its parent is
the template, so its exit code reaches the launcher through the template's reports (`Copy`
offers `subprocess.Popen`'s poll/wait/returncode). Nothing may start a thread or a zmq context
in the template before it forks: `preload` names modules whose import does neither. When the
launcher closes its stdin (or its process exits) the template forks no more and exits once its
last copy has: copies outlive their launcher's process as fresh processes would.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ipcluster.launchers.base import LaunchError, tail

STARTUP_VARIABLES = "PYTHON"  # variables read at interpreter start: a fork cannot apply them
LOST = 255  # exit code of a copy that ended after its template died (its own is unknowable)
START_TIMEOUT = 60.0  # seconds for the template to fork what it was asked for


class Copy:
    """One forked copy, as much of `subprocess.Popen` as launchers use."""

    def __init__(self, template: "Template", pid: int, args: list[str]) -> None:
        self.template, self.pid, self.args = template, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.template.collect()
        if self.returncode is None and self.template.gone and _ended(self.pid):
            self.returncode = LOST  # an orphan since its template died
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.01)
        return self.returncode


class Template:
    """The launcher's side: starts the template, asks it for copies, reads their exits."""

    def __init__(self, python: str, preload: list[str], env: dict, log: Path | None) -> None:
        self.python, self.preload, self.log = python, list(preload), log
        self.startup = _startup(env)
        reports, self._report_w = os.pipe()
        out = open(log, "ab") if log is not None else None
        try:
            self.process = subprocess.Popen(
                [python, "-m", "ipcluster.launchers.template", str(self._report_w), *preload],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT if out else None,
                env=env, pass_fds=(self._report_w,), start_new_session=True)
        finally:
            os.close(self._report_w)
            if out is not None:
                out.close()
        self._reports = os.fdopen(reports, "rb", buffering=0)
        os.set_blocking(reports, False)
        self._buffer = b""
        self._lock = threading.Lock()
        self._copies: dict[int, Copy] = {}
        self._exited: dict[int, int] = {}  # exits read before the copy's start was
        self._started: dict[int, int | str] = {}  # request number -> pid, or why it failed
        self._sent = 0
        self.gone = False

    @staticmethod
    def forkable(argv: list[str]) -> bool:
        """Whether `argv` is a command a template can run: ``python -m M ...``, ``python -c C``."""
        return len(argv) >= 3 and argv[1] in ("-m", "-c")

    def fits(self, argv: list[str], env: dict) -> bool:
        """Whether a fork of this template is what `argv` with `env` would start."""
        return (not self.gone and self.forkable(argv) and argv[0] == self.python
                and _startup(env) == self.startup)

    def fork(self, argvs: list[list[str]], env: dict, logs: list[Path | None]) -> list[Copy]:
        """One copy per argv (each with its log); returns once each one is forked."""
        for log in logs:  # there before the copy runs, as a fresh process's would be
            if log is not None:
                open(log, "ab").close()
        with self._lock:
            first = self._sent
            lines = b"".join(json.dumps({"argv": argv, "env": env, "cwd": os.getcwd(),
                                         "log": str(log) if log else None}).encode() + b"\n"
                             for argv, log in zip(argvs, logs))
            self._sent += len(argvs)
            try:
                self.process.stdin.write(lines)
                self.process.stdin.flush()
            except (BrokenPipeError, OSError):
                self.gone = True
            wanted = range(first, self._sent)
            deadline = time.monotonic() + START_TIMEOUT
            while not all(i in self._started for i in wanted) and not self.gone:
                if time.monotonic() > deadline:
                    raise LaunchError(f"the template process did not fork {len(argvs)} copies "
                                      f"within {START_TIMEOUT} s; {self._log_tail()}")
                self._read(block=True)
            if self.gone:
                raise LaunchError(f"the template process that forks the copies exited with code "
                                  f"{self.process.wait()}; {self._log_tail()}")
            copies = []
            for i, argv in zip(wanted, argvs):
                pid = self._started.pop(i)
                if isinstance(pid, str):
                    raise LaunchError(f"could not fork a copy of {argv}: {pid}")
                copy = self._copies[pid] = Copy(self, pid, argv)
                copy.returncode = self._exited.pop(pid, None)
                copies.append(copy)
            return copies

    def collect(self) -> None:
        """Read what the template reported (exits of copies), without waiting."""
        with self._lock:
            self._read(block=False)

    def close(self, timeout: float = 5.0) -> None:
        """End the template, once its copies have ended (call after stopping them)."""
        with self._lock:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self._read(block=False)
            self._reports.close()
            self.gone = True

    def _read(self, block: bool) -> None:
        if self._reports.closed:
            return
        if block:
            selector = selectors.DefaultSelector()
            selector.register(self._reports, selectors.EVENT_READ)
            selector.select(1.0)
            selector.close()
        while True:
            try:
                chunk = self._reports.read(65536)
            except BlockingIOError:
                chunk = None
            if chunk is None:
                return
            if chunk == b"":  # the template is gone: its copies are orphans now
                self.gone = True
                self._reports.close()
                return
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                self._report(json.loads(line))

    def _report(self, report: dict) -> None:
        if "exited" in report:
            copy = self._copies.pop(report["exited"], None)
            if copy is None:
                self._exited[report["exited"]] = report["code"]
            else:
                copy.returncode = report["code"]
        else:
            self._started[report["request"]] = report.get("pid", report.get("error"))

    def _log_tail(self) -> str:
        return (f"its log {self.log} ends with:\n{tail(self.log)}" if self.log
                else "its output went to the terminal")


def _ended(pid: int) -> bool:
    """Whether process `pid` (not our child) has exited: gone, or a zombie nobody reaps."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # its pid is another user's now
        return True
    return False


def _startup(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_VARIABLES)}


# -- the template process -------------------------------------------------------------------


def serve(reports: int, preload: list[str]) -> dict | None:
    """Import `preload`, then fork a copy per request until stdin closes and every copy has
    ended. Returns the request in a copy (which then runs it), None in the template."""
    import importlib

    for name in preload:
        importlib.import_module(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # its arrival writes to wake_w
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    buffer, number, children = b"", 0, set()
    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                os.read(wake_r, 4096)
                continue
            chunk = os.read(0, 1 << 20)
            if not chunk:  # the launcher is done: no more copies
                selector.unregister(0)
                if not children:
                    return None
                continue
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                try:
                    pid = os.fork()
                except OSError as exc:
                    _say(reports, {"request": number, "error": str(exc)})
                else:
                    if pid == 0:
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        selector.close()
                        for fd in (reports, wake_r, wake_w):
                            os.close(fd)
                        return request
                    children.add(pid)
                    _say(reports, {"request": number, "pid": pid})
                number += 1
        children -= _reap(reports)  # after each wake: a SIGCHLD may come while we fork
        if not children and 0 not in selector.get_map():
            return None


def _reap(reports: int) -> set[int]:
    reaped = set()
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.add(pid)
        _say(reports, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _say(reports: int, report: dict) -> None:
    data = json.dumps(report).encode() + b"\n"
    try:
        while data:
            data = data[os.write(reports, data):]
    except BrokenPipeError:  # the launcher's process is gone: nobody to tell
        pass


def become(request: dict) -> None:
    """Turn this fresh fork into the copy `request` asks for, as a new interpreter would be."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()  # like start_new_session: a Ctrl-C in a terminal reaches only its launcher
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if request["log"]:
        out = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
    before = os.getcwd()
    os.chdir(request["cwd"])
    if sys.path and sys.path[0] == before:
        sys.path[0] = request["cwd"]
    os.environ.clear()
    os.environ.update(request["env"])


def run(argv: list[str]) -> None:
    """Run ``python -m module args`` or ``python -c code args`` in this interpreter."""
    import runpy
    import types

    if argv[1] == "-m":
        sys.argv = [argv[2], *argv[3:]]
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *argv[3:]]
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(argv[2], "<string>", "exec"), main.__dict__)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher's Ctrl-C is not for us
    request = serve(int(sys.argv[1]), sys.argv[2:])
    if request is not None:
        become(request)
        run(request["argv"])


if __name__ == "__main__":
    main()
