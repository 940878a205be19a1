"""Inside an allocation: which batch system gave it, on which hosts, and how engines start.

``ipcluster start -n 64`` inside a job needs no flags: Slurm allocations start engines with
``srun``; PBS, LSF and SGE allocations with ``mpiexec``, which reads the allocation's hosts
from the scheduler (MPICH's Hydra and Open MPI both do).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass


@dataclass
class Allocation:
    scheduler: str  # slurm, pbs, lsf or sge
    job_id: str
    hosts: list[str]  # each host once
    tasks: int  # how many engines the allocation holds
    starter: str  # srun or mpiexec


def _expand_slurm_nodelist(nodelist: str) -> list[str]:
    """``node[01-03,07],gpu1`` -> node01 node02 node03 node07 gpu1."""
    hosts = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{i:0{len(lo)}d}")
    return hosts


def _slurm_tasks(environ) -> int:
    if environ.get("SLURM_NTASKS", "").isdigit():
        return int(environ["SLURM_NTASKS"])
    total = 0  # SLURM_TASKS_PER_NODE looks like "2(x3),1"
    for count, times in re.findall(r"(\d+)(?:\(x(\d+)\))?", environ.get("SLURM_TASKS_PER_NODE", "")):
        total += int(count) * int(times or 1)
    return total or 1


def _read_hosts(path: str | None, column: int = 0, count_column: int | None = None) -> list[str]:
    hosts: list[str] = []
    if not path:
        return hosts
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts:
                    n = int(parts[count_column]) if count_column is not None else 1
                    hosts += [parts[column]] * n
    except OSError:
        pass
    return hosts


def detect(environ=os.environ) -> Allocation | None:
    """The allocation this process runs in, or None."""
    if "SLURM_JOB_ID" in environ:
        nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or socket.gethostname()
        return Allocation("slurm", environ["SLURM_JOB_ID"], _expand_slurm_nodelist(nodelist),
                          _slurm_tasks(environ), "srun")
    if "PBS_JOBID" in environ and "PBS_NODEFILE" in environ:
        slots = _read_hosts(environ["PBS_NODEFILE"])  # one line per slot
        return Allocation("pbs", environ["PBS_JOBID"], sorted(set(slots)), len(slots) or 1, "mpiexec")
    if "LSB_JOBID" in environ and ("LSB_MCPU_HOSTS" in environ or "LSB_HOSTS" in environ):
        if "LSB_MCPU_HOSTS" in environ:  # "hostA 4 hostB 2"
            words = environ["LSB_MCPU_HOSTS"].split()
            slots = [h for h, n in zip(words[::2], words[1::2]) for _ in range(int(n))]
        else:  # "hostA hostA hostB": one word per slot
            slots = environ["LSB_HOSTS"].split()
        return Allocation("lsf", environ["LSB_JOBID"], sorted(set(slots)), len(slots) or 1, "mpiexec")
    if "JOB_ID" in environ and "PE_HOSTFILE" in environ:
        slots = _read_hosts(environ["PE_HOSTFILE"], 0, 1)  # "host slots queue processors"
        return Allocation("sge", environ["JOB_ID"], sorted(set(slots)), len(slots) or 1, "mpiexec")
    return None
