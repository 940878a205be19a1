"""ipcluster.launchers (the repository's launchers/ folder): "run this command N times, there". They know nothing of zmq, messages or engines.

A launcher says *where* processes run (`local`, `mpi`, `ssh`, `slurm`, `pbs`, `sge`, `lsf`,
`htcondor`) and has an options dataclass, ``start(command, n)``, ``stop()``, ``signal(sig)``,
``state()`` and ``script(command, n)``, the exact text it will run or submit. A starter
(`ipcluster.launchers.starters`) says *how* N copies start inside an allocation. Launchers are found by
name in the entry-point group ``ipcluster.launchers``; the built-in ones are registered there too.
"""

from ipcluster.launchers.base import Launcher, LaunchError, State
from ipcluster.launchers.catalog import get, names

__all__ = ["Launcher", "LaunchError", "State", "get", "names"]
