"""Surfaces layer: the ``ipcluster`` command.

    ipcluster start -n 4 [--daemonize]     a controller and engines; Ctrl-C stops them all
    ipcluster start --engines slurm --set partition=debug      engines from a launcher, with options
    ipcluster engines -n 8 [--engines slurm]                   add engines to a running cluster
    ipcluster config slurm [--set ...]     a launcher's resolved options and its job script
    ipcluster stop [--cluster-id ID]       stop a running cluster, leaving no process behind
    ipcluster list [-o json]               the clusters in $IPCLUSTER_DIR
    ipcluster controller / engine          the processes themselves, as launchers run them
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

from ipcluster import connection
from ipcluster.cluster import CONNECTION_VARIABLE, Cluster
from ipcluster.launchers.base import tail
from ipcluster.report import alive, cmd_list, cmd_status
from ipcluster.state import append as append_state, read as read_state
from ipcluster.config import DEFAULT_CLUSTER_ID, cluster_dir, ipcluster_dir, resolve
from ipcluster.dashboard import command as dashboard_command, link as dashboard_link


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipcluster", description="Interactive parallel computing.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = sub.add_parser("start", help="start a controller and engines")
    start.add_argument("-n", type=int, default=None, help="number of engines (default: CPU count)")
    start.add_argument("--cluster-id", default=DEFAULT_CLUSTER_ID)
    _launcher_arguments(start)
    start.add_argument("--ip", default=None,
                       help="address the controller binds (default: 127.0.0.1, or one the "
                            "engines' hosts reach)")
    start.add_argument("--interface", default=None, help="bind the controller to this interface's address")
    _curve_argument(start)
    start.add_argument("--db", default=None,
                       help="sqlite or sqlite:PATH: tasks and results survive a controller crash "
                            "(then `ipcluster controller --restore`)")
    start.add_argument("--restart", action="store_true",
                       help="start a replacement, with the same id, for a local engine that exits")
    start.add_argument("--daemonize", action="store_true",
                       help="run in the background; return once the engines are up")
    start.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for the engines (default: 60)")
    start.add_argument("--dashboard", action="store_true", help="start the dashboard; print its link")

    engines = sub.add_parser("engines", help="add engines to a running cluster")
    engines.add_argument("-n", type=int, required=True, help="number of engines to add")
    engines.add_argument("--cluster-id", default=DEFAULT_CLUSTER_ID)
    engines.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to wait for the engines (default: 60)")
    _launcher_arguments(engines)

    config = sub.add_parser("config", help="show a launcher's resolved options and job script")
    config.add_argument("launcher", help="launcher name, e.g. slurm")
    config.add_argument("-n", type=int, default=4, help="number of engines in the script (default: 4)")
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a launcher option (repeatable), e.g. --set partition=debug")

    stop = sub.add_parser("stop", help="stop a running cluster")
    stop.add_argument("--cluster-id", default=DEFAULT_CLUSTER_ID)

    status = sub.add_parser("status", help="engines of a running cluster, their work and resources")
    status.add_argument("--cluster-id", default=DEFAULT_CLUSTER_ID)
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")

    dashboard_command.add_parser(sub)

    ls = sub.add_parser("list", help="list clusters")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")

    ctl = sub.add_parser("controller", help="run a controller (launchers call this)")
    ctl.add_argument("--cluster-id", default=DEFAULT_CLUSTER_ID)
    ctl.add_argument("--ip", default=None)
    _curve_argument(ctl)
    ctl.add_argument("--db", default=None, help="sqlite or sqlite:PATH: keep tasks and results on disk")
    ctl.add_argument("--restore", action="store_true",
                     help="take over from a controller that died: same connection file, ports and "
                          "task store; engines and clients reconnect")

    eng = sub.add_parser("engine", help="run an engine (launchers call this)")
    eng.add_argument("--connection-file", default=None,
                     help=f"default: the connection info in ${CONNECTION_VARIABLE}")
    eng.add_argument("--id", type=int, default=None, help="engine id to ask for")
    return parser


def _curve_argument(parser) -> None:
    parser.add_argument("--curve", action=argparse.BooleanOptionalAction, default=None,
                        help="encrypt with CurveZMQ (default: on unless the controller binds "
                             "loopback only); --no-curve only on a trusted fabric")


def _launcher_arguments(parser) -> None:
    parser.add_argument("--engines", default=None,
                        help="launcher for the engines: local, mpi, ssh, slurm, pbs, sge, lsf, "
                             "htcondor (default: local, or the allocation this runs in)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a launcher option (repeatable), e.g. --set partition=debug; "
                             "values are YAML: --set nodes=2 --set 'srun_args=[--mpi=pmi2]'")


def _options(pairs: list[str]) -> dict:
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"ipcluster: --set {pair!r}: expected KEY=VALUE")
        if ":" in value and not value.startswith(("[", "{")):
            options[key.strip().replace("-", "_")] = value  # a time, not YAML's base-60 number
        else:
            options[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else None
    return options


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)


# -- start / stop -----------------------------------------------------------------------------

def cmd_start(args) -> int:
    if args.daemonize:
        return _start_daemon(args)
    try:
        cluster = Cluster(args.n, engines=args.engines, cluster_id=args.cluster_id,
                          controller_ip=args.ip, interface=args.interface, curve=args.curve,
                          db=args.db, restart=args.restart,
                          start_timeout=args.timeout, owner="cli", **_options(args.set))
    except (TypeError, ValueError) as exc:  # an unknown launcher or option: the message lists them
        print(f"ipcluster: {exc}", file=sys.stderr)
        return 1
    if cluster.allocation is not None:
        a = cluster.allocation
        print(f"in {a.scheduler} job {a.job_id}: {cluster.n} engines on {', '.join(a.hosts)} "
              f"with {a.starter}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        client = cluster.start_and_connect_sync()
    except Exception as exc:
        print(f"ipcluster: could not start cluster {args.cluster_id!r}: {exc}", file=sys.stderr)
        return 1
    print(f"cluster {cluster.cluster_id!r}: {len(client.ids)} engines ready "
          f"(connection file {cluster.connection_file}); Ctrl-C or `ipcluster stop` stops it",
          flush=True)
    if args.dashboard:
        print(f"dashboard: {cluster.dashboard_link}", flush=True)
    client.close()
    cluster.client = None
    code = 0
    while not stop.wait(0.5):
        if cluster.controller.poll() is None:
            continue
        if cluster.db is not None:  # durable: a new controller takes over, engines reconnect
            print(f"ipcluster: the controller exited with code {cluster.controller.returncode}; "
                  f"starting one that takes over (--restore)", file=sys.stderr, flush=True)
            try:
                cluster.start_controller_sync(restore=True)
                continue
            except Exception as exc:
                print(f"ipcluster: could not restore the controller: {exc}", file=sys.stderr)
        else:
            print(f"ipcluster: the controller exited with code {cluster.controller.returncode}; "
                  f"stopping the engines", file=sys.stderr)
        code = 1
        break
    cluster.stop_cluster_sync()
    print(f"cluster {cluster.cluster_id!r} stopped", flush=True)
    return code


def _start_daemon(args) -> int:
    cdir = cluster_dir(args.cluster_id)
    if (cdir / connection.FILENAME).exists():
        print(f"ipcluster: cluster {args.cluster_id!r} is already running; "
              f"`ipcluster stop --cluster-id {args.cluster_id}` stops it", file=sys.stderr)
        return 1
    connection.make_private_dir(cdir)
    log = cdir / "ipcluster.log"
    argv = [sys.executable, "-m", "ipcluster", "start", "--cluster-id", args.cluster_id,
            "--timeout", str(args.timeout)]
    argv += ["-n", str(args.n)] if args.n is not None else []
    argv += ["--engines", args.engines] if args.engines else []
    argv += ["--ip", args.ip] if args.ip else []
    argv += ["--interface", args.interface] if args.interface else []
    argv += [] if args.curve is None else ["--curve" if args.curve else "--no-curve"]
    argv += ["--db", args.db] if args.db else []
    argv += ["--restart"] if args.restart else []
    argv += ["--dashboard"] if args.dashboard else []
    argv += [f"--set={pair}" for pair in args.set]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + args.timeout + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"ipcluster: the cluster failed to start; {log} ends with:\n{tail(log)}",
                  file=sys.stderr)
            return 1
        state = read_state(args.cluster_id)
        if state and state.get("ready") and state.get("supervisor_pid") == proc.pid:
            print(f"cluster {args.cluster_id!r} running in the background with "
                  f"{len(state['engine_pids'])} engines (pid {proc.pid}, log {log})")
            if args.dashboard:
                print(f"dashboard: {dashboard_link.dashboard_link(cdir / connection.FILENAME)}")
            return 0
        time.sleep(0.05)
    proc.terminate()
    print(f"ipcluster: the cluster was not ready after {args.timeout} s; see {log}", file=sys.stderr)
    return 1


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        if not pids:
            break
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        if alive(pid):
            try:
                os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def cmd_stop(args) -> int:
    state = read_state(args.cluster_id)
    if state is None:
        known = ", ".join(connection.running_cluster_ids()) or "none"
        print(f"ipcluster: no cluster {args.cluster_id!r} in {ipcluster_dir()}; running: {known}",
              file=sys.stderr)
        return 1
    for argv in state.get("cancel", []):  # batch jobs added by `ipcluster engines`
        subprocess.run(argv, capture_output=True)
    children = [state.get("controller_pid")] + list(state.get("engine_pids", []))
    children += [(dashboard_link.read(cluster_dir(args.cluster_id)) or {}).get("pid")]
    if state.get("owner") == "cli" and alive(state.get("supervisor_pid")):
        _kill([state["supervisor_pid"]], signal.SIGTERM)  # it stops its engines and controller
        _wait_gone([state["supervisor_pid"]], 20)
    _kill(children, signal.SIGTERM)
    left = _wait_gone(children, 5)
    _kill(left, signal.SIGKILL)
    left = _wait_gone(left, 5)
    if not alive(state.get("supervisor_pid")) or state.get("owner") != "cli":
        import shutil

        shutil.rmtree(cluster_dir(args.cluster_id), ignore_errors=True)
    if left:
        print(f"ipcluster: processes {left} did not stop", file=sys.stderr)
        return 1
    print(f"cluster {args.cluster_id!r} stopped")
    return 0


# -- engines / config ---------------------------------------------------------------------------

def cmd_engines(args) -> int:
    """Add engines to a running cluster; `ipcluster stop` stops them with the rest."""
    from ipcluster.client import Client

    state = read_state(args.cluster_id)
    if state is None or not (cluster_dir(args.cluster_id) / connection.FILENAME).exists():
        known = ", ".join(connection.running_cluster_ids()) or "none"
        print(f"ipcluster: no running cluster {args.cluster_id!r} in {ipcluster_dir()}; "
              f"running: {known}", file=sys.stderr)
        return 1
    try:
        cluster = Cluster(args.n, engines=args.engines or state.get("engines") or "local",
                          cluster_id=args.cluster_id, start_timeout=args.timeout,
                          **_options(args.set))
    except (TypeError, ValueError) as exc:
        print(f"ipcluster: {exc}", file=sys.stderr)
        return 1
    client = Client(cluster.connection_file)
    try:
        before = len(client.ids)
        cluster.client = client
        cluster.start_engines_sync(args.n)
        _record_added_engines(args.cluster_id, cluster.launcher)
        cluster.wait_for_engines_sync(before + args.n)
    except Exception as exc:
        print(f"ipcluster: could not add {args.n} engines: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"cluster {args.cluster_id!r}: {args.n} {cluster.engines} engines added "
          f"({before + args.n} in all)")
    return 0


def _record_added_engines(cluster_id: str, launcher) -> None:
    jobs = list(getattr(launcher, "jobs", []))
    append_state(cluster_id, engine_pids=launcher.pids,
                        cancel=[launcher.cancel_argv(jobs)] if jobs else [])


def cmd_config(args) -> int:
    """Print a launcher's resolved options (arguments > dask config > defaults) and its script."""
    import dataclasses

    from ipcluster.cluster import make_launcher

    try:
        launcher = make_launcher(args.launcher, cluster_dir("<cluster-id>"), **_options(args.set))
    except (TypeError, ValueError) as exc:
        print(f"ipcluster: {exc}", file=sys.stderr)
        return 1
    print(f"# {args.launcher} options (from --set, then dask config ipcluster.{args.launcher}, "
          f"then defaults)")
    for f in dataclasses.fields(launcher.options):
        print(f"#   {f.name} = {getattr(launcher.options, f.name)!r}")
    command = [sys.executable, "-m", "ipcluster", "engine"]
    if not launcher.remote:
        command += ["--connection-file", str(cluster_dir("<cluster-id>") / connection.FILENAME)]
    print(f"# what `ipcluster start -n {args.n} --engines {args.launcher}` runs or submits:")
    print(launcher.script(command, args.n), end="")
    return 0


# -- the processes ------------------------------------------------------------------------------

def cmd_controller(args) -> int:
    from ipcluster.controller.main import ControllerOptions, run

    options = resolve(ControllerOptions, "controller", {"ip": args.ip, "curve": args.curve, "db": args.db})
    run(args.cluster_id, options, cluster_dir(args.cluster_id) / connection.FILENAME, args.restore)
    return 0


# Variables holding a process's rank under mpiexec (MPICH/Hydra, Open MPI, PMIx) and srun: an
# engine asks for its rank as its id, so engine i is rank i.
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")



def _rank(environ=os.environ) -> int | None:
    for name in RANK_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return None


def cmd_engine(args) -> int:
    import logging

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
    engine = Engine(info, EngineOptions(), args.id if args.id is not None else _rank())
    if (walltime := from_environment()) is not None:
        Walltime(engine, *walltime).start()
    return engine.run()


COMMANDS = {"status": cmd_status, "start": cmd_start, "stop": cmd_stop, "list": cmd_list, "engines": cmd_engines,
            "config": cmd_config, "dashboard": dashboard_command.cmd_dashboard,
            "controller": cmd_controller, "engine": cmd_engine}
