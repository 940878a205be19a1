"""A dask dataframe on the engines: rc.become_dask() turns the engines into dask workers,
and a groupby over a synthetic table of taxi trips runs on them.

    python examples/dask_dataframe.py [--engines N] [--rows N]

Then the same question through view.dask_get, the dask scheduler that runs graphs on a
load-balanced view without the distributed scheduler. The engines serve apply throughout.
"""

import argparse
import os

import ipcluster


def make_trips(rows, partitions):
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(42)
    trips = pd.DataFrame({
        "zone": rng.choice(["airport", "downtown", "harbour", "suburbs"], rows),
        "distance": rng.exponential(5.0, rows).round(2),
        "passengers": rng.integers(1, 5, rows),
    })
    trips["fare"] = (3.0 + 2.5 * trips.distance + 0.5 * trips.passengers).round(2)
    return trips, dd.from_pandas(trips, npartitions=partitions)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=os.cpu_count())
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    trips, ddf = make_trips(args.rows, partitions=4 * args.engines)
    question = ddf.groupby("zone").agg({"fare": "mean", "distance": "max", "passengers": "sum"})
    with ipcluster.Cluster(n=args.engines) as rc:
        dask_client = rc.become_dask()
        try:
            print(f"dask workers in the engines: {sorted(dask_client.scheduler_info()['workers'])}")
            answer = dask_client.compute(question).result()
        finally:
            rc.stop_dask()
        print(answer.round(2))
        again = question.compute(scheduler=rc.load_balanced_view().dask_get)
        print("the same through view.dask_get:", again.round(6).equals(answer.round(6)))
        print("engines still serve apply:", rc[:].apply_sync(lambda: "yes"))

    expected = trips.groupby("zone").agg({"fare": "mean", "distance": "max", "passengers": "sum"})
    assert (answer.sort_index().round(6) == expected.sort_index().round(6)).all().all()


if __name__ == "__main__":
    main()
