"""Profile ipcluster's controller, engines and client with py-spy while they run a case.

    python -m benchmarks.profile [--out benchmarks/profiles] [--rate 250] [--native]

Starts a controller and two engines, then for each case (the no-op round trip, 10,000
no-op tasks submitted one by one, and push + pull of a 100 MB array) runs a client in a child process and records every
process with ``py-spy record --threads --nonblocking --format raw`` while the case runs.
Prints, per process and thread, the share of CPU samples and the functions where the time goes
(self time, and inclusive time), which is what benchmarks/PROFILE.md summarises.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CASES = {"roundtrip": 3000, "submit": 10_000, "pushpull": 10}  # pushpull: 100 MB arrays


def client(case: str, connection_file: str) -> None:
    """The client side of one case; waits for a line on stdin so py-spy attaches first."""
    import ipcluster as ipp

    def noop(x=None):
        return x

    rc = ipp.Client(connection_file)
    rc.wait_for_engines(2, timeout=30)
    first, lview = rc[rc.ids[0]], rc.load_balanced_view()
    for _ in range(100):
        first.apply_sync(noop)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    n = CASES[case]
    if case == "roundtrip":
        for _ in range(n):
            first.apply_sync(noop)
    elif case == "pushpull":
        import numpy as np

        a = np.ones(100_000_000, dtype=np.uint8)
        for _ in range(n):
            first.push({"a": a}, block=True)
            first.pull("a", block=True)
    else:
        for ar in [lview.apply_async(noop, i) for i in range(n)]:
            ar.get()
    seconds = time.perf_counter() - t0
    print(f"{case}: {n} in {seconds:.2f} s ({n / seconds:.0f}/s) under the profiler", flush=True)
    rc.close()


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _name(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m['func']} ({file})"


def summarise(path: Path, top: int = 12) -> str:
    """Per thread: samples, and the top functions by self and by inclusive samples."""
    threads: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    selfs: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread, frames = frames[0], [_name(f) for f in frames[1:]]
        n = int(count)
        threads[thread]["samples"] += n
        if frames:
            selfs[thread][frames[-1]] += n
        for f in set(frames):
            inclusive[thread][f] += n
    total = sum(t["samples"] for t in threads.values()) or 1
    out = []
    for thread, t in sorted(threads.items(), key=lambda kv: -kv[1]["samples"]):
        n = t["samples"]
        if n < 0.03 * total:
            continue
        out.append(f"  {thread}: {n} samples ({100 * n / total:.0f} % of the process)")
        out.append("    self:")
        out += [f"      {100 * c / n:5.1f} %  {f}" for f, c in selfs[thread].most_common(top)]
        out.append("    inclusive:")
        out += [f"      {100 * c / n:5.1f} %  {f}" for f, c in inclusive[thread].most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "profiles"))
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--connection-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client(args.client, args.connection_file)

    import ipcluster as ipp

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cluster = ipp.Cluster(n=2)
    cluster.start_cluster_sync()
    try:
        cluster.connect_client_sync()
        cluster.wait_for_engines_sync(2)
        cluster.client.close()
        roles = {"controller": cluster.controller.pid,
                 **{f"engine-{i}": pid for i, pid in enumerate(cluster.launcher.pids)}}
        for case in CASES:
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.profile", "--client", case,
                                     "--connection-file", str(cluster.connection_file)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    cwd=Path(__file__).resolve().parents[1])
            assert proc.stdout.readline().strip() == "ready"
            spies = {}
            for role, pid in {**roles, "client": proc.pid}.items():
                argv = [pyspy, "record", "--pid", str(pid), "--rate", str(args.rate), "--threads",
                        "--nonblocking", "--format", "raw", "-o", str(out / f"{case}-{role}.txt")]
                spies[role] = subprocess.Popen(argv + (["--native"] if args.native else []),
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # py-spy attaches
            proc.stdin.write("go\n")
            proc.stdin.flush()
            print(proc.stdout.readline().strip())
            proc.wait()
            for role, spy in spies.items():
                if spy.poll() is None:
                    spy.send_signal(signal.SIGINT)
            for spy in spies.values():
                spy.wait(timeout=30)
            for role in spies:
                path = out / f"{case}-{role}.txt"
                if path.exists():
                    print(f"\n== {case} / {role}\n{summarise(path)}")
    finally:
        cluster.stop_cluster_sync()


if __name__ == "__main__":
    main()
