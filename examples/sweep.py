"""A parameter sweep on a local cluster: the Lyapunov exponent of the logistic map
x -> r x (1 - x) over a grid of r, computed on every core.

    python examples/sweep.py [--engines N] [--points N]

A positive exponent means chaos. The sweep shows the period-doubling route to chaos near
r = 3.57 and the window of order near r = 3.83. By default it uses every core, but at most 4
on the login node of a batch cluster (a machine with `sbatch`, `qsub` or `bsub`, outside a
job), which others share.
"""

import argparse
import math
import os
import shutil
import time

import ipcluster


def lyapunov(r, steps=20_000, skip=1_000):
    x, total = 0.5, 0.0
    for i in range(steps + skip):
        x = r * x * (1 - x)
        if i >= skip:
            total += math.log(abs(r * (1 - 2 * x)) + 1e-300)
    return total / steps


def default_engines() -> int:
    cores = os.cpu_count() or 1
    in_job = any(v in os.environ for v in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID"))
    login_node = not in_job and any(shutil.which(c) for c in ("sbatch", "qsub", "bsub"))
    return min(cores, 4) if login_node else cores


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=default_engines(),
                        help="engines to start (default: every core; at most 4 on a login node)")
    parser.add_argument("--points", type=int, default=400)
    args = parser.parse_args()

    grid = [2.8 + 1.2 * i / (args.points - 1) for i in range(args.points)]
    t0 = time.perf_counter()
    with ipcluster.Cluster(n=args.engines) as rc:
        print(f"cluster up: {len(rc.ids)} engines in {time.perf_counter() - t0:.2f} s")
        view = rc.load_balanced_view()
        t1 = time.perf_counter()
        ar = view.map_async(lyapunov, grid, label="lyapunov-sweep")
        ar.wait_interactive()  # a progress bar
        exponents = ar.get()
        elapsed = time.perf_counter() - t1
    t2 = time.perf_counter()
    serial = [lyapunov(r) for r in grid[:: max(1, len(grid) // 20)]]
    serial_rate = len(serial) / (time.perf_counter() - t2)

    print(f"{len(grid)} points in {elapsed:.2f} s on {args.engines} engines "
          f"({len(grid) / elapsed:.0f} points/s; one core alone: {serial_rate:.0f} points/s)")
    chaotic = [r for r, lam in zip(grid, exponents) if lam > 0]
    print(f"first chaotic r: {chaotic[0]:.4f}" if chaotic else "no chaos found")
    window = [r for r, lam in zip(grid, exponents) if 3.82 < r < 3.86 and lam < 0]
    print(f"window of order around r = {window[0]:.3f}" if window else "no window found")
    for r, lam in list(zip(grid, exponents))[:: max(1, len(grid) // 12)]:
        bar = "#" * int(max(0.0, lam) * 40)
        print(f"  r = {r:.3f}  lambda = {lam:+.3f}  {bar}")


if __name__ == "__main__":
    main()
