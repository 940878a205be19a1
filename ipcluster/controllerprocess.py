"""Client API layer: a cluster's controller process, started and stopped by its `Cluster`:
``python -m ipcluster controller`` in a session of its own, logging to ``controller.log``,
ready once the connection file it writes names its pid.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from ipcluster import connection
from ipcluster.errors import IpclusterError
from ipcluster.launchers.base import tail


def command(cluster_id: str, *, ip: str | None, curve: bool | None, db: str | None,
            max_message_size: int | None, restore: bool, owner: str | None) -> list[str]:
    """The controller's argv (see ``python -m ipcluster controller -h``)."""
    argv = [sys.executable, "-m", "ipcluster", "controller", "--cluster-id", cluster_id]
    argv += ["--ip", ip] if ip else []
    argv += [] if curve is None else ["--curve" if curve else "--no-curve"]
    argv += ["--db", db] if db is not None else []
    argv += ["--max-message-size", str(max_message_size)] if max_message_size is not None else []
    argv += ["--restore"] if restore else []
    return argv + (["--owner", owner] if owner else [])


def spawn(argv: list[str], cluster_dir: Path, profile_dir: str) -> subprocess.Popen:
    """Run the controller `argv` for the cluster in `cluster_dir`, inside `profile_dir` (where
    it finds its directory), in a session of its own, logging to ``controller.log``."""
    env = {**os.environ, "IPCLUSTER_DIR": profile_dir}
    with open(cluster_dir / "controller.log", "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, env=env,
                                stderr=subprocess.STDOUT, start_new_session=True)


async def wait_ready(proc: subprocess.Popen, cluster_dir: Path, timeout: float) -> None:
    """Wait until the connection file names `proc`; a clear error, quoting its log, if it exits
    first or is not ready within `timeout` seconds (stopping it is the caller's)."""
    log = cluster_dir / "controller.log"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if connection.read(cluster_dir / connection.FILENAME).controller_pid == proc.pid:
                return
        except IpclusterError:
            pass
        if proc.poll() is not None:
            raise IpclusterError(f"the controller exited with code {proc.returncode} before it "
                                 f"was ready; its log {log} ends with:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise IpclusterError(f"the controller was not ready after {timeout} s; "
                                 f"its log {log} ends with:\n{tail(log)}")
        await asyncio.sleep(0.01)


def stop(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; waits for the process to end."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
