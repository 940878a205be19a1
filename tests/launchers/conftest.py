"""Tests that need a real service (slurmd, sshd, mpiexec) skip without it, except in CI (env
`CI` set), where `.ci/test` has started it and its absence is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

SSH_PORT = int(os.environ.get("IPCLUSTER_SSH_PORT", "2222"))
SSH_ARGS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]


def require(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI is set: `.ci/test` should have started it")
    pytest.skip(f"{what} is not available here (`bash .ci/test` installs and starts it)")


def slurm_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc"))


def sshd_up() -> bool:
    if not shutil.which("ssh"):
        return False
    out = subprocess.run(["ssh", *SSH_ARGS, "-p", str(SSH_PORT), "127.0.0.1", "true"],
                         capture_output=True, timeout=30)
    return out.returncode == 0


@pytest.fixture(scope="session")
def slurm():
    require(slurm_up(), "a running Slurm (slurmctld + slurmd)")


@pytest.fixture(scope="session")
def sshd():
    require(sshd_up(), f"an sshd on 127.0.0.1:{SSH_PORT} with root key auth")
