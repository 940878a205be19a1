"""MPI between engines: four engines are the ranks of one mpiexec, and each computes part of
a sum that MPI's allreduce combines, so every engine holds the total.

    python examples/mpi_allreduce.py [--terms N]

Needs mpi4py and an mpiexec on PATH (the `mpich` package from PyPI provides both).
The sum is the Leibniz series 4 (1 - 1/3 + 1/5 - ...) = pi, split over the ranks.
"""

import argparse
import math

import ipcluster


def partial_sum(terms):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = sum((-1) ** k * 4 / (2 * k + 1) for k in range(rank, terms, size))
    return rank, comm.allreduce(mine, op=MPI.SUM)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terms", type=int, default=2_000_000)
    args = parser.parse_args()

    with ipcluster.Cluster(n=4, engines="mpi") as rc:
        results = rc[:].apply_sync(partial_sum, args.terms)
    for engine_id, (rank, total) in zip(rc.ids, results):
        print(f"engine {engine_id} is rank {rank}; allreduce gives {total:.10f}")
    totals = {total for _, total in results}
    assert len(totals) == 1, f"the ranks disagree: {totals}"
    print(f"pi to {args.terms:,} terms: error {abs(totals.pop() - math.pi):.2e}")


if __name__ == "__main__":
    main()
