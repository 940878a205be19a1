"""Client API layer: where a cluster's dashboard is, starting it on first use.

The dashboard is a process of its own beside the controller (``ipcluster dashboard --serve``),
started the first time someone asks for its link (`rc.dashboard_link`, `cluster.dashboard_link`,
``ipcluster dashboard``): a cluster nobody looks at pays nothing for it. It writes
``dashboard.json`` (its URL and pid) in the cluster's directory, and exits when its controller
stops. Its URL holds a token derived from the cluster key, so only those who can read the
connection file can open it; it binds loopback unless told otherwise.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ipcluster import connection
from ipcluster.errors import IpclusterError

FILENAME = "dashboard.json"
MISSING = ("the dashboard needs Bokeh, which is not installed here; install the extra: "
           "pip install 'ipcluster[dashboard]'")


def token(key: str) -> str:
    """The dashboard's token: derived from the cluster key, and telling nothing of it."""
    return hmac.new(bytes.fromhex(key), b"ipcluster dashboard", hashlib.sha256).hexdigest()[:40]


def read(cluster_dir: Path) -> dict | None:
    """The running dashboard's facts (url, pid, controller_pid), or None."""
    try:
        facts = json.loads((Path(cluster_dir) / FILENAME).read_text())
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) and _alive(facts.get("pid")) else None


def write(cluster_dir: Path, facts: dict) -> None:
    path = Path(cluster_dir) / FILENAME
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(facts, f)
    os.replace(tmp, path)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def installed() -> bool:
    """Whether the dashboard's libraries (the ``dashboard`` extra) are installed."""
    try:
        return importlib.util.find_spec("bokeh") is not None
    except ValueError:  # in sys.modules as None: deliberately unavailable
        return False


def dashboard_link(connection_file, *, ip: str = "127.0.0.1", port: int = 0,
                   timeout: float = 30.0) -> str:
    """The URL of the cluster's dashboard, starting the dashboard if it is not running."""
    connection_file = Path(connection_file)
    info = connection.read(connection_file)
    cdir = connection_file.parent
    running = read(cdir)
    if running is not None and running.get("controller_pid") == info.controller_pid:
        return running["url"]
    if not installed():
        raise IpclusterError(MISSING)
    with open(cdir / "dashboard.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one dashboard, however many ask at once
        running = read(cdir)
        if running is not None and running.get("controller_pid") == info.controller_pid:
            return running["url"]
        log = cdir / "dashboard.log"
        argv = [sys.executable, "-m", "ipcluster", "dashboard", "--serve",
                "--connection-file", str(connection_file), "--ip", ip, "--port", str(port)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=proc.wait, name="ipcluster-dashboard-reaper", daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            running = read(cdir)
            if running is not None and running.get("pid") == proc.pid:
                return running["url"]
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                raise IpclusterError(f"the dashboard exited with code {proc.returncode} before "
                                     f"it was ready; {log} ends with:\n" + "\n".join(tail))
            if time.monotonic() > deadline:
                proc.terminate()
                raise IpclusterError(f"the dashboard was not ready after {timeout} s; see {log}")
            time.sleep(0.05)


def stop(cluster_dir: Path, timeout: float = 5.0) -> None:
    """Stop the cluster's dashboard, if one runs."""
    running = read(cluster_dir)
    if running is None:
        return
    try:
        os.kill(running["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(running["pid"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(running["pid"]):
        os.kill(running["pid"], signal.SIGKILL)
