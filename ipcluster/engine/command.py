"""Processes layer: ``ipcluster engine``, the command launchers run once per engine.

`python -m ipcluster engine` comes here without importing the client API (the package's names
are imported lazily), so each engine pays only for what an engine uses: with 64 engines
started at once on a few cores, what each imports is most of the start-up time.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from ipcluster import connection
from ipcluster.connection import CONNECTION_VARIABLE

# Variables holding a process's rank under mpiexec (MPICH/Hydra, Open MPI, PMIx) and srun: an
# engine asks for its rank as its id, so engine i is rank i.
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def add_arguments(parser) -> None:
    parser.add_argument("--connection-file", default=None,
                        help=f"default: the connection info in ${CONNECTION_VARIABLE}")
    parser.add_argument("--id", type=int, default=None, help="engine id to ask for")


def rank(environ=os.environ) -> int | None:
    for name in RANK_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return None


def run(args) -> int:
    from ipcluster.engine.main import Engine, EngineOptions
    from ipcluster.engine.walltime import Walltime, from_environment

    if args.connection_file:
        info = connection.read(args.connection_file)
    elif CONNECTION_VARIABLE in os.environ:  # no shared filesystem needed
        info = connection.ConnectionInfo(**json.loads(os.environ[CONNECTION_VARIABLE]))
    else:
        print(f"ipcluster engine: pass --connection-file, or set {CONNECTION_VARIABLE}",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    engine = Engine(info, EngineOptions(), args.id if args.id is not None else rank())
    if (walltime := from_environment()) is not None:
        Walltime(engine, *walltime).start()
    return engine.run()


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="ipcluster engine",
                                     description="run an engine (launchers call this)")
    add_arguments(parser)
    return run(parser.parse_args(argv))
