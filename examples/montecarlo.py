"""A Monte Carlo estimate of pi, spread over the engines, with its statistical error.

    python examples/montecarlo.py [--engines N] [--samples N] [--batches N]

Each batch draws points in the unit square with its own seed (so the batches are
independent and the run is reproducible) and counts those inside the quarter circle.
"""

import argparse
import math
import os

import ipcluster


def count_inside(seed, samples):
    import numpy as np

    rng = np.random.default_rng(seed)
    x, y = rng.random(samples), rng.random(samples)
    return int(np.count_nonzero(x * x + y * y <= 1.0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=os.cpu_count())
    parser.add_argument("--samples", type=int, default=2_000_000, help="points per batch")
    parser.add_argument("--batches", type=int, default=64)
    args = parser.parse_args()

    with ipcluster.Cluster(n=args.engines) as rc:
        view = rc.load_balanced_view()
        seeds = range(args.batches)
        counts = view.map_sync(count_inside, seeds, [args.samples] * args.batches, chunksize=1)

    total = args.samples * args.batches
    estimate = 4 * sum(counts) / total
    p = math.pi / 4
    error = 4 * math.sqrt(p * (1 - p) / total)  # one standard deviation of the estimate
    print(f"pi ~ {estimate:.6f} +- {error:.6f} from {total:,} points on {args.engines} engines")
    print(f"off by {abs(estimate - math.pi) / error:.1f} standard deviations")


if __name__ == "__main__":
    main()
