"""python -m benchmarks: ipcluster against ipyparallel, dask.distributed and
ProcessPoolExecutor on this machine, in one run, each peer in its own interpreter.

    python -m benchmarks                       # the full suite (under 15 minutes on 2 cores)
    python -m benchmarks --quick               # a smoke run of about 2 minutes
    python -m benchmarks --only roundtrip,submit --peers ipcluster,pool --json out.json

For each peer the suite finds (or makes) its interpreter, runs ``peers/run.py`` in it as a
subprocess with a private state directory, and reads the JSON line it prints. It then prints
the table of figures with ratios to the best peer, and the issue's goals as met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks import goals, link, report, venvs
from benchmarks.noise import NoiseMeter
from benchmarks.peers.cases import CASES, select

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "peers" / "run.py"
PEERS = ["ipcluster", "floor", "ipyparallel", "dask", "pool"]
VERSIONS = {"ipcluster": ["ipcluster", "pyzmq", "cloudpickle", "msgpack"],
            "ipyparallel": ["ipyparallel", "pyzmq", "ipykernel"],
            "dask": ["distributed", "dask", "tornado"], "pool": [], "floor": ["pyzmq", "cloudpickle"]}
PEER_TIMEOUT = 900  # seconds one peer may take before it is stopped and reported as failed


def machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(),
            "memory_GiB": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "system": platform.platform()}


def git() -> dict:
    def out(*argv):
        r = subprocess.run(["git", *argv], cwd=HERE.parent, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    status = out("status", "--porcelain", "--", "ipcluster", "launchers")
    return {"commit": out("rev-parse", "--short", "HEAD"),
            "ipcluster_changed_since_commit": bool(status) if status is not None else None}


def run_peer(peer: str, args, workdir: Path) -> dict:
    python = venvs.python_for(peer)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # not workdir/"ipcluster": a folder of that name in the working directory shadows the package
    env.update(IPCLUSTER_DIR=str(workdir / "state"), IPYTHONDIR=str(workdir / "ipython"),
               PATH=f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}")
    argv = [python, str(RUNNER), "--peer", peer, *(["--quick"] if args.quick else []),
            *(["--only", args.only] if args.only else [])]
    print(f"== {peer}: {shlex.join(argv)}", file=sys.stderr, flush=True)
    entry = {"python": python, "versions": venvs.versions(python, VERSIONS[peer])}
    meter = NoiseMeter()
    meter.start()
    # a peer's own working directory keeps the repo off its sys.path; its own session, so that
    # whatever it started is stopped with it (a peer stopped at the timeout left dask's workers
    # running, mid-transfer, through the cases after it)
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        entry.update(results={}, errors={"peer": f"did not finish within {args.timeout} s"})
        return entry
    finally:
        left = stop_group(proc)
        entry["noise"] = meter.stop()
        if left:
            entry["left_running"] = left
    lines = [line for line in out.splitlines() if line.startswith('{"peer"')]
    if not lines:
        entry.update(results={}, errors={"peer": f"exited with code {proc.returncode} and no "
                                                  "results; its log is above"})
        return entry
    found = json.loads(lines[-1])
    entry.update(results=found["results"], errors=found["errors"], seconds=found["seconds"])
    return entry


def stop_group(proc: subprocess.Popen) -> int:
    """Kill the peer's session (its process group) and reap the peer; returns how many of its
    processes were still running."""
    group = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == proc.pid]
    for p in group:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.kill()
    proc.wait()
    psutil.wait_procs(group, timeout=10)
    return len([p for p in group if p.pid != proc.pid])


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def render(data: dict) -> str:
    """The figures, the goals and the noise of one run, as markdown."""
    lines = [report.table(data), "", goals.table(goals.check(data))]
    for peer, entry in data["peers"].items():
        for case, error in entry.get("errors", {}).items():
            lines.append(f"\n{peer} {case} failed: {error}")
    lines.append(
        f"\n{data['mode']} run in {data['seconds']} s. Noise: CPU used by other processes "
        "while each peer ran: " + "; ".join(
            f"{p} {e['noise']['other_processes_cpu_s']} s "
            f"({100 * e['noise']['other_processes_share_of_machine']:.0f} % of the machine)"
            for p, e in data["peers"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 2 minutes")
    parser.add_argument("--only", default="", help="comma-separated cases or prefixes: "
                        + ", ".join(c.name for c in CASES))
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, of " + ", ".join(PEERS))
    parser.add_argument("--json", metavar="PATH", help="write all results to this file")
    parser.add_argument("--timeout", type=float, default=PEER_TIMEOUT, help="seconds per peer")
    parser.add_argument("--from-json", metavar="PATH",
                        help="print the tables of an earlier run's JSON; run nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        print(render(json.loads(Path(args.from_json).read_text())))
        return 0
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peer {', '.join(sorted(unknown))}; the peers are {', '.join(PEERS)}")
    select([o for o in args.only.split(",") if o], args.quick)  # fails early on a bad name

    t0 = time.perf_counter()
    data = {"command": shlex.join(["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]),
            "mode": "quick" if args.quick else "full", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine(), "git": git(), "peers": {}}
    with tempfile.TemporaryDirectory(prefix="ipcluster-bench-") as tmp:
        for peer in peers:
            data["peers"][peer] = run_peer(peer, args, Path(tmp))
    chosen = select([o for o in args.only.split(",") if o], args.quick)
    for case, engines in (("link_push_100MB", 1), ("link_broadcast_100MB", 2)):
        if "ipcluster" not in peers or case not in chosen:
            continue
        print(f"== {case}: 100 MB to {engines} host(s) over 1 Gbit/s links (network namespaces)",
              file=sys.stderr)
        found = link.measure(engines)
        entry = data["peers"]["ipcluster"]
        if "skipped" in found:
            entry.setdefault("errors", {})[case] = f"skipped: {found['skipped']}"
        else:
            entry.setdefault("results", {})[case] = found
    data["seconds"] = round(time.perf_counter() - t0, 1)
    data["cases"] = [vars(c) for c in CASES]
    data["goals"] = goals.check(data)

    print(render(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0 if not any(e.get("errors") for e in data["peers"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
