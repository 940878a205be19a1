"""joblib.Parallel on the engines: cross-validated ridge regression over a grid of
regularisation strengths, written for joblib and run by ipcluster's joblib backend.

    python examples/joblib_parallel.py [--engines N] [--samples N]

With joblib.parallel_config("ipcluster"), each Parallel call runs on a local cluster started
for it (and stopped after it); given a view, it runs on that cluster instead.
"""

import argparse
import os

import joblib
import numpy as np

import ipcluster


def fold_error(alpha, fold, x, y, folds=5):
    """Mean squared error of ridge regression with `alpha`, trained without `fold`."""
    import numpy as np

    test = np.arange(len(y)) % folds == fold
    xt, yt = x[~test], y[~test]
    w = np.linalg.solve(xt.T @ xt + alpha * np.eye(x.shape[1]), xt.T @ yt)
    return float(np.mean((x[test] @ w - y[test]) ** 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=os.cpu_count())
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, 30))
    y = x @ rng.normal(size=30) + rng.normal(scale=3.0, size=args.samples)
    alphas = np.logspace(-3, 4, 36)

    ipcluster.register_joblib_backend()
    with joblib.parallel_config("ipcluster", n=args.engines):
        errors = joblib.Parallel(n_jobs=-1)(
            joblib.delayed(fold_error)(a, f, x, y) for a in alphas for f in range(5))
    scores = np.array(errors).reshape(len(alphas), 5).mean(axis=1)
    best = alphas[scores.argmin()]
    print(f"{len(errors)} fits; best alpha {best:.3g} (cross-validated error {scores.min():.3f})")

    with ipcluster.Cluster(n=args.engines) as rc:  # a cluster of your own, reused
        with joblib.parallel_config("ipcluster", view=rc.load_balanced_view()):
            again = joblib.Parallel()(joblib.delayed(fold_error)(best, f, x, y) for f in range(5))
    print(f"on a given cluster: error {np.mean(again):.3f} at alpha {best:.3g}")


if __name__ == "__main__":
    main()
