"""Starters say *how* N copies of a command start inside an allocation: a function from
``(command, n)`` to the argv lists to run. Launchers say *where*; any launcher takes any starter.

    plain(cmd, 3)    -> [cmd, cmd, cmd]                  three processes
    mpiexec(cmd, 3)  -> [["mpiexec", "-n", "3", *cmd]]   one mpiexec, three ranks
    srun(cmd, 3)     -> [["srun", "-n", "3", *cmd]]      one job step, three tasks
"""

from __future__ import annotations

import functools
from typing import Callable

Starter = Callable[[list[str], int], list[list[str]]]


def plain(command: list[str], n: int) -> list[list[str]]:
    return [list(command) for _ in range(n)]


def mpiexec(command: list[str], n: int, *, mpiexec: str = "mpiexec", args: tuple = ()) -> list[list[str]]:
    return [[mpiexec, "-n", str(n), *args, *command]]


def srun(command: list[str], n: int, *, srun: str = "srun", args: tuple = ()) -> list[list[str]]:
    # --label prefixes each output line with its task number: one log, n engines, readable
    return [[srun, "-n", str(n), "--label", *args, *command]]


STARTERS = {"plain": plain, "mpiexec": mpiexec, "srun": srun}


def get(name: str, **options) -> Starter:
    if name not in STARTERS:
        raise ValueError(f"unknown starter {name!r}; known starters: {', '.join(STARTERS)}")
    return functools.partial(STARTERS[name], **options) if options else STARTERS[name]
