"""A labelled parameter sweep with a progress bar: the damped, driven pendulum over a grid of
driving strengths and damping, each point integrated on an engine.

    python examples/sweep_progress.py [--engines N] [--points N]

The tasks carry a label ("pendulum-sweep"), which shows on the progress bar and in the
controller's record of the work (rc.db_history()). Results arrive as chunks finish. A labelled
map run again (after the client crashed, say; with `ipcluster start --db sqlite` also after the
controller crashed) fetches the chunks already done and computes only what is missing.
"""

import argparse
import math
import os

import ipcluster


def pendulum(drive, damping, steps=4000, dt=0.01):
    """Largest swing of a driven pendulum after its transient: small for gentle driving,
    erratic (chaotic) above a strength of about 1.07."""
    theta, omega, widest = 0.2, 0.0, 0.0
    for i in range(steps):
        t = i * dt
        accel = -damping * omega - math.sin(theta) + drive * math.cos(2 / 3 * t)
        omega += accel * dt
        theta += omega * dt
        if i > steps // 2:
            widest = max(widest, abs(theta))
    return widest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=os.cpu_count())
    parser.add_argument("--points", type=int, default=40, help="grid points per axis")
    args = parser.parse_args()

    drives = [0.5 + 1.0 * i / (args.points - 1) for i in range(args.points)]
    dampings = [0.25, 0.5]
    grid = [(d, g) for g in dampings for d in drives]
    with ipcluster.Cluster(n=args.engines) as rc:
        view = rc.load_balanced_view()
        chunksize = max(1, len(grid) // 32)
        ar = view.map_async(pendulum, *zip(*grid), chunksize=chunksize, label="pendulum-sweep")
        ar.wait_interactive()
        swings = ar.get()
        labels = {task["label"] for task in rc.db_history()}
        done = sum(s["completed"] for e, s in rc.queue_status().items() if e != "unassigned")
        again = view.map_sync(pendulum, *zip(*grid), chunksize=chunksize, label="pendulum-sweep")
        ran = sum(s["completed"] for e, s in rc.queue_status().items() if e != "unassigned") - done
    print(f"{len(grid)} points; tasks labelled {sorted(labels)}")
    print(f"run again with the same label: {ran} chunks computed, {len(ar) - ran} fetched; "
          f"results {'identical' if again == swings else 'DIFFERENT'}")
    for damping in dampings:
        row = [s for (d, g), s in zip(grid, swings) if g == damping]
        big = next((d for (d, g), s in zip(grid, swings) if g == damping and s > math.pi), None)
        print(f"damping {damping}: widest swing {max(row):.2f} rad; "
              + (f"goes over the top from drive {big:.2f}" if big else "never goes over the top"))


if __name__ == "__main__":
    main()
