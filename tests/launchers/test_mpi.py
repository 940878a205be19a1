"""`mpi` = local + mpiexec, against real MPICH (the `mpich` wheel's Hydra) and Open MPI
(Debian's openmpi-bin), with mpi4py on the engines: engine id = rank, COMM_WORLD works."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import ipcluster
from ipcluster.launchers.local import MPILauncher
from tests.launchers.conftest import require

VENV_MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
FLAVOURS = {
    "mpich": (VENV_MPIEXEC, {}),
    # Open MPI refuses root and more ranks than cores unless told; mpi4py picks its library
    "openmpi": ("mpiexec.openmpi", {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                                    "OMPI_MCA_rmaps_base_oversubscribe": "1",
                                    "MPI4PY_LIBMPI": "libmpi.so.40"}),
}


def test_script_is_one_mpiexec_with_n_ranks():
    launcher = MPILauncher(mpiexec="mpiexec.mpich", starter_args=["-bind-to", "core"])
    assert launcher.script(["python", "-m", "ipcluster", "engine"], 4) == \
        "mpiexec.mpich -n 4 -bind-to core python -m ipcluster engine &\nwait\n"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_engines_are_the_ranks_and_allreduce_works(flavour):
    mpiexec, env = FLAVOURS[flavour]
    try:
        import mpi4py  # noqa: F401
        have = shutil.which(mpiexec) is not None
    except ImportError:
        have = False
    require(have, f"{flavour}'s mpiexec and mpi4py")
    with ipcluster.Cluster(n=4, engines="mpi", mpiexec=mpiexec, env=env) as rc:
        assert rc.ids == [0, 1, 2, 3]
        view = rc[:]
        # what %px runs: code cells in each engine's namespace
        view.execute("from mpi4py import MPI\n"
                     "rank = MPI.COMM_WORLD.Get_rank()\n"
                     "total = MPI.COMM_WORLD.allreduce(rank)", block=True)
        assert view.pull("rank", block=True) == [0, 1, 2, 3]
        assert view.pull("total", block=True) == [6, 6, 6, 6]


def test_allreduce_from_px():
    mpiexec, env = FLAVOURS["mpich"]
    require(shutil.which(mpiexec) is not None, "MPICH's mpiexec and mpi4py")
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    try:
        with ipcluster.Cluster(n=4, engines="mpi", mpiexec=mpiexec, env=env) as rc:
            rc.activate()
            cell = shell.run_cell("%%px\nfrom mpi4py import MPI\n"
                                  "total = MPI.COMM_WORLD.allreduce(MPI.COMM_WORLD.Get_rank() + 1)")
            assert not cell.error_in_exec, cell.error_in_exec
            assert rc[:].pull("total", block=True) == [10, 10, 10, 10]
    finally:
        InteractiveShell.clear_instance()


def test_a_timeout_holds_on_an_mpi_engine_whose_task_holds_the_gil():
    """Its watchdog (a process the rank forks) reports TaskTimeout and ends the rank; the
    world then ends (docs/launchers/mpi.md says what happens to an MPI world that loses a rank)."""
    import time

    from tests.test_faults import holds_the_gil

    mpiexec, env = FLAVOURS["mpich"]
    require(shutil.which(mpiexec) is not None, "MPICH's mpiexec and mpi4py")
    with ipcluster.Cluster(n=2, engines="mpi", mpiexec=mpiexec, env=env) as rc:
        view = rc.load_balanced_view(targets=[1], time_limit=1)
        t0 = time.monotonic()
        with pytest.raises(ipcluster.TaskTimeout):  # "did not stop": the watchdog ended it
            view.apply_async(holds_the_gil, 34).get(timeout=30)
        took = time.monotonic() - t0
        print(f"\nTaskTimeout on an MPI rank after {took:.2f} s")
        assert took < 1 + 0.5 + 1
