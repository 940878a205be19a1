"""Surfaces layer: the ``ipcluster`` command.

    ipcluster start -n 4 [--daemonize]     a controller and engines; Ctrl-C stops them all
    ipcluster start --engines slurm --set partition=debug      engines from a launcher, with options
    ipcluster engines -n 8 [--engines slurm]                   add engines to a running cluster
    ipcluster config slurm [--set ...]     a launcher's resolved options and its job script
    ipcluster stop [CLUSTER_ID] [--all]    stop a running cluster, leaving no process behind
    ipcluster list [-o json]               the clusters in $IPCLUSTER_DIR: running, failed, stale
    ipcluster clean                        remove the failed and stale ones (their logs too)
    ipcluster controller / engine          the processes themselves, as launchers run them
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time

import ipcluster
from ipcluster import connection, state
from ipcluster.cluster import Cluster
from ipcluster.engine import command as engine_command
from ipcluster.launchers.base import tail
from ipcluster.report import cmd_list, cmd_status
from ipcluster.teardown import cmd_clean, cmd_stop
from ipcluster.config import DEFAULT_CLUSTER_ID, cluster_dir, ipcluster_dir, resolve
from ipcluster.errors import ConnectionFileError
from ipcluster import provenance
from ipcluster.dashboard import command as dashboard_command, link as dashboard_link

RESTORE_RETRY = 5.0  # seconds between two tries to restore a durable cluster's controller


def count(text: str) -> int:
    """A number of engines: a whole number, 0 or more."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of engines, 0 or more; got "
                                         f"{text!r} (e.g. -n 4)")
    return n


def _cluster_argument(parser) -> None:
    parser.add_argument("--cluster-id", default=None,
                        help="the cluster (default: the only running one, else 'default')")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipcluster", description="Interactive parallel computing.")
    parser.add_argument("--version", action="version",
                        version=f"ipcluster {ipcluster.__version__} ({ipcluster.__file__})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = sub.add_parser("start", help="start a controller and engines")
    start.add_argument("-n", type=count, default=None, help="number of engines (default: CPU count)")
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
                       help="seconds to wait for the engines once they run (default: 60)")
    start.add_argument("--pending-timeout", type=float, default=None,
                       help="seconds a batch job may wait in the queue (default: no limit); "
                            "Ctrl-C while it waits cancels it")
    start.add_argument("--max-message-size", type=int, default=None,
                       help="bytes in one message frame the controller accepts (default: 2 GiB)")
    start.add_argument("--dashboard", action="store_true", help="start the dashboard; print its link")

    engines = sub.add_parser("engines", help="add engines to a running cluster")
    engines.add_argument("-n", type=count, required=True, help="number of engines to add")
    _cluster_argument(engines)
    engines.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to wait for the engines once they run (default: 60)")
    _launcher_arguments(engines)

    config = sub.add_parser("config", help="show a launcher's resolved options and job script")
    config.add_argument("launcher", help="launcher name, e.g. slurm")
    config.add_argument("-n", type=count, default=4, help="number of engines in the script (default: 4)")
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a launcher option (repeatable), e.g. --set partition=debug")

    stop = sub.add_parser("stop", help="stop a running cluster")
    stop.add_argument("cluster", nargs="?", default=None, metavar="CLUSTER_ID",
                      help="the cluster (default: the only running one, else 'default')")
    stop.add_argument("--cluster-id", default=None, help="the same, as an option")
    stop.add_argument("--all", action="store_true", help="stop every cluster in $IPCLUSTER_DIR")

    status = sub.add_parser("status", help="engines of a running cluster, their work and resources")
    _cluster_argument(status)
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")

    provenance.add_parser(sub)

    ls = sub.add_parser("list", help="list clusters: running, failed (logs kept) and stale")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")

    sub.add_parser("clean", help="remove failed and stale clusters, with their logs")

    dashboard_command.add_parser(sub)

    ctl = sub.add_parser("controller", help="run a controller (launchers call this)")
    ctl.add_argument("--cluster-id", default=DEFAULT_CLUSTER_ID)
    ctl.add_argument("--ip", default=None)
    _curve_argument(ctl)
    ctl.add_argument("--db", default=None, help="sqlite or sqlite:PATH: keep tasks and results on disk")
    ctl.add_argument("--max-message-size", type=int, default=None,
                     help="bytes in one message frame the controller accepts")
    ctl.add_argument("--restore", action="store_true",
                     help="take over from a controller that died: same connection file, ports and "
                          "task store; engines and clients reconnect")
    ctl.add_argument("--owner", default=None, metavar="PID:START_TIME",
                     help="stop the cluster (engines and batch jobs too) when this process exits")

    engine_command.add_arguments(sub.add_parser("engine", help="run an engine (launchers call this)"))
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
    cluster_id = args.cluster_id
    try:
        cluster = Cluster(args.n, engines=args.engines, cluster_id=cluster_id,
                          controller_ip=args.ip, interface=args.interface, curve=args.curve,
                          db=args.db, restart=args.restart, start_timeout=args.timeout,
                          pending_timeout=args.pending_timeout,
                          max_message_size=args.max_message_size, **_options(args.set))
    except (TypeError, ValueError) as exc:  # an unknown launcher or option: the message lists them
        print(f"ipcluster: {exc}", file=sys.stderr)
        return 1
    if cluster.allocation is not None:
        a = cluster.allocation
        print(f"in {a.scheduler} job {a.job_id}: {cluster.n} engines on {', '.join(a.hosts)} "
              f"with {a.starter}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops a start like Ctrl-C
    try:
        client = cluster.start_and_connect_sync()
    except KeyboardInterrupt:
        print(f"ipcluster: interrupted; cluster {cluster_id!r} stopped (batch jobs cancelled)",
              file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"ipcluster: could not start cluster {cluster_id!r}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"cluster {cluster.cluster_id!r}: {len(client.ids)} engines ready "
          f"(connection file {cluster.connection_file}); Ctrl-C or `ipcluster stop` stops it",
          flush=True)
    if args.dashboard:
        print(f"dashboard: {cluster.dashboard_link}", flush=True)
    client.close()
    cluster.client = None
    code = 0
    told, failing, retry_at = None, None, 0.0
    while not stop.wait(0.5):
        error = cluster.supervisor.error if cluster.supervisor is not None else None
        if error is not None and error is not told:  # Supervisor.error reaches the user
            told = error
            print(f"ipcluster: the engine supervisor stopped ({type(error).__name__}: {error}); "
                  f"an engine that exits is now noticed only after the controller's grace"
                  f"{' and not restarted' if cluster.restart else ''}", file=sys.stderr, flush=True)
        if cluster.controller.poll() is None or time.monotonic() < retry_at:
            continue
        if cluster.db is not None:  # durable: a new controller takes over, engines reconnect
            if failing is None:
                print(f"ipcluster: the controller exited with code {cluster.controller.returncode}"
                      f"; starting one that takes over (--restore)", file=sys.stderr, flush=True)
            try:
                cluster.start_controller_sync(restore=True)
                failing = None
                continue
            except Exception as exc:  # a full disk, perhaps: say why, and try again
                if str(exc) != failing:
                    print(f"ipcluster: could not restore the controller: {exc}\nipcluster: "
                          f"trying again every {RESTORE_RETRY:.0f} s; Ctrl-C stops the cluster",
                          file=sys.stderr, flush=True)
                failing, retry_at = str(exc), time.monotonic() + RESTORE_RETRY
                continue
        else:
            print(f"ipcluster: the controller exited with code {cluster.controller.returncode}; "
                  f"stopping the engines", file=sys.stderr)
        code = 1
        break
    cluster.stop_cluster_sync()
    print(f"cluster {cluster.cluster_id!r} stopped", flush=True)
    return code


def _start_daemon(args) -> int:
    """`ipcluster start` in the background, in its own session: it owns the cluster, which
    therefore outlives this command and the terminal."""
    cdir = cluster_dir(args.cluster_id)
    if state.status(args.cluster_id) in ("running", "starting"):
        print(f"ipcluster: cluster {args.cluster_id!r} is already running; "
              f"`ipcluster stop {args.cluster_id}` stops it", file=sys.stderr)
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
    argv += ["--pending-timeout", str(args.pending_timeout)] if args.pending_timeout else []
    argv += ["--max-message-size", str(args.max_message_size)] if args.max_message_size else []
    argv += [f"--set={pair}" for pair in args.set]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        code = _wait_daemon(args.cluster_id, proc, log)
    except KeyboardInterrupt:  # the daemon stops what it started, cancelling batch jobs
        proc.send_signal(signal.SIGINT)
        proc.wait()
        print(f"ipcluster: interrupted; cluster {args.cluster_id!r} stopped", file=sys.stderr)
        return 130
    if code == 0 and args.dashboard:
        print(f"dashboard: {dashboard_link.dashboard_link(cdir / connection.FILENAME)}")
    return code


def _wait_daemon(cluster_id: str, proc: subprocess.Popen, log) -> int:
    cdir = log.parent
    shown = ""
    while True:
        if proc.poll() is not None:
            print(f"ipcluster: the cluster failed to start; {log} ends with:\n{tail(log)}\n"
                  f"(the logs stay in {cdir}; `ipcluster clean` removes them)", file=sys.stderr)
            return 1
        found = state.read(cluster_id) or {}
        if found.get("ready") and (found.get("owner") or {}).get("pid") == proc.pid:
            print(f"cluster {cluster_id!r} running in the background with "
                  f"{len(found['engine_pids']) or found['n']} engines (pid {proc.pid}, log {log})")
            return 0
        lines = [line for line in _read(log).splitlines() if " pending: " in line]
        if lines and lines[-1] != shown:  # a batch job waiting in the queue
            shown = lines[-1]
            print(shown, file=sys.stderr, flush=True)
        time.sleep(0.05)


def _read(path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# -- engines / config ---------------------------------------------------------------------------

def _choose(args) -> str | None:
    """The cluster the command means (`state.choose`), or None after saying why not."""
    try:
        return state.choose(getattr(args, "cluster", None) or args.cluster_id)
    except ConnectionFileError as exc:
        print(f"ipcluster: {exc}", file=sys.stderr)
        return None


def cmd_engines(args) -> int:
    """Add engines to a running cluster; `ipcluster stop` stops them with the rest."""
    from ipcluster.client import Client

    cluster_id = _choose(args)
    if cluster_id is None:
        return 1
    found = state.read(cluster_id)
    if found is None or state.status(cluster_id) != "running":
        print(f"ipcluster: cluster {cluster_id!r} is not running in {ipcluster_dir()}; "
              f"running: {', '.join(state.running()) or 'none'}", file=sys.stderr)
        return 1
    try:
        cluster = Cluster(args.n, engines=args.engines or found.get("engines") or "local",
                          cluster_id=cluster_id, start_timeout=args.timeout,
                          **_options(args.set))
    except (TypeError, ValueError) as exc:
        print(f"ipcluster: {exc}", file=sys.stderr)
        return 1
    cluster.engines.join_others()  # its logs beside, not in, the owner's engine logs
    client = Client(cluster.connection_file)
    try:
        before = len(client.ids)
        cluster.client = client
        cluster.start_engines_sync(args.n)
        jobs = list(getattr(cluster.launcher, "jobs", []))
        state.add_engines(cluster_id, cluster.launcher.pids,
                           cluster.launcher.cancel_argv(jobs) if jobs else None)
        cluster.wait_for_engines_sync(before + args.n)
    except Exception as exc:
        print(f"ipcluster: could not add {args.n} engines: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"cluster {cluster_id!r}: {args.n} {cluster.launcher_name} engines added "
          f"({before + args.n} in all)")
    return 0


def cmd_config(args) -> int:
    """Print a launcher's resolved options (arguments > dask config > defaults) and its script."""
    import dataclasses

    from ipcluster.engineset import make_launcher

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

    options = resolve(ControllerOptions, "controller", {"ip": args.ip, "curve": args.curve, "db": args.db,
                                                        "max_message_size": args.max_message_size})
    owner = state.Owner.parse(args.owner) if args.owner else None
    run(args.cluster_id, options, cluster_dir(args.cluster_id) / connection.FILENAME, args.restore,
        owner)
    return 0


COMMANDS = {"status": cmd_status, "start": cmd_start, "stop": cmd_stop, "list": cmd_list,
            "clean": cmd_clean, "engines": cmd_engines, "config": cmd_config,
            "dashboard": dashboard_command.cmd_dashboard,
            "provenance": provenance.cmd_provenance,
            "controller": cmd_controller, "engine": engine_command.run}
