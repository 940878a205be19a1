"""Client API layer: `Cluster`, which starts and stops a controller and its engines.

``with Cluster(n=4) as rc:`` starts a controller process and four engines through a launcher,
yields a connected `Client`, and stops everything on exit, also on error. Each step has an
async form (``await cluster.start_cluster()``) and a sync one-liner over it
(``cluster.start_cluster_sync()``) that works inside a running event loop too (a notebook).

State lives in one directory per cluster (`cluster_dir`): the connection file, ``cluster.json``
(`ipcluster.state`: who started what, for ``ipcluster list`` and ``ipcluster stop``) and the
logs. A cluster belongs to the process that started it: its controller stops everything when
that process dies (``shutdown_atexit=False`` keeps it running). A start that fails stops what it
started and keeps the directory, so that the logs its error quotes are still there.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time

import dataclasses

from ipcluster import display
from ipcluster import launchers
from ipcluster import connection, shm, state
from ipcluster.client import Client
import ipcluster.dashboard.link as dashboard
from ipcluster.progress import wait_registered
from ipcluster.supervisor import Supervisor
from ipcluster.config import cluster_dir, resolve
from ipcluster.errors import ConnectionFileError, IpclusterError, NoEnginesRegistered
from ipcluster.launchers import allocation, network
from ipcluster.launchers.base import tail

__all__ = ["Cluster"]

from ipcluster.connection import CONNECTION_VARIABLE  # the connection info, for batch jobs

# What `ipcluster engine` imports: the local launcher's template process imports these once and
# forks each engine, instead of each engine starting an interpreter and importing them.
ENGINE_MODULES = ["argparse", "ipcluster.engine.command", "ipcluster.engine.main",
                  "ipcluster.engine.walltime"]


def run_sync(coro):
    """Run `coro` to completion from sync code, even where an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name="ipcluster-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_count(n, what: str = "n") -> int:
    """`n` as a number of engines, or a clear error saying what was expected."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what} must be a whole number of engines, 0 or more; got {n!r} "
                         f"({type(n).__name__}); e.g. Cluster(n=4) or `ipcluster start -n 4`")
    return n


def make_launcher(engines: str, log_dir, **options) -> launchers.Launcher:
    """The `engines` launcher with options from `options`, then dask.config, then defaults."""
    cls = launchers.get(engines)
    resolved = resolve(cls.options_class, engines, {"log_dir": str(log_dir), **options})
    return cls(resolved)


class Cluster:
    """A controller and `n` engines started by the `engines` launcher.

    `engines` is a launcher's name (``"local"``, ``"mpi"``, ``"ssh"``, ``"slurm"``, ...); other
    keywords are that launcher's options (``partition="debug"``), resolved over dask.config
    ``ipcluster.<launcher>``. The default, None, is ``"local"``, or inside a Slurm, PBS, LSF or
    SGE allocation: engines across the allocation (``srun`` or ``mpiexec``), `n` its task count.

    The cluster stops when this process exits, normally or not (its controller watches it);
    with ``shutdown_atexit=False`` it keeps running until ``ipcluster stop CLUSTER_ID``.
    `start_timeout` counts from when the engines start running: a batch job waiting in the
    queue is shown waiting, for at most `pending_timeout` seconds (None: no limit).
    """

    def __init__(self, n: int | None = None, *, engines: str | None = None, cluster_id: str | None = None,
                 controller_ip: str | None = None, interface: str | None = None,
                 curve: bool | None = None, restart: bool = False, db: str | None = None,
                 start_timeout: float = 60.0, pending_timeout: float | None = None,
                 shutdown_atexit: bool = True, max_message_size: int | None = None,
                 log_level: int | str | None = None, **launcher_options) -> None:
        if log_level is not None:  # ipyparallel's: how much this process logs about its cluster
            logging.getLogger("ipcluster").setLevel(log_level)
        self.allocation = allocation.detect() if engines is None else None
        if self.allocation is not None:
            launcher_options.setdefault("starter", self.allocation.starter)
            n = self.allocation.tasks if n is None else n
        self.n = check_count(n) if n is not None else (os.cpu_count() or 1)
        self.engines = engines or "local"
        if self.engines == "local":  # engines forked from one pre-imported process
            launcher_options.setdefault("preload", ENGINE_MODULES)
        self.launcher_options = launcher_options
        self.interface = interface
        self.cluster_id = cluster_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.controller_ip = controller_ip
        self.curve = curve  # CurveZMQ; None: on unless the controller binds loopback only
        self.restart = restart  # start a replacement (same engine id) for an engine that exits
        self.db = db  # "sqlite" or "sqlite:PATH": tasks and results survive a controller crash
        self.supervisor: Supervisor | None = None
        self.start_timeout = start_timeout
        self.pending_timeout = pending_timeout
        self.shutdown_atexit = shutdown_atexit  # False: the cluster outlives this process
        self.max_message_size = max_message_size  # bytes in one frame; None: the controller's default
        self.owner = state.Owner.this_process()
        self.created = time.time()
        self.cluster_dir = cluster_dir(self.cluster_id)
        self.connection_file = self.cluster_dir / connection.FILENAME
        self.controller: subprocess.Popen | None = None
        self.launcher = make_launcher(self.engines, self.cluster_dir, **launcher_options)
        self.client: Client | None = None
        self.ready = False  # all n engines registered once

    def _repr_html_(self) -> str:
        return display.cluster_html(self)

    def __repr__(self) -> str:
        return f"<Cluster cluster_id={self.cluster_id!r} n={self.n} engines={self.engines!r}>"

    # -- controller -------------------------------------------------------------------------

    async def start_controller(self, restore: bool = False, *, prepare_engines: bool = False) -> None:
        """Start the controller; with `restore`, one that takes over from a controller that
        died (its connection file, ports and task store: engines and clients reconnect).
        With `prepare_engines`, the launcher prepares while the controller starts."""
        if self.controller is not None and self.controller.poll() is None:
            raise IpclusterError(f"the controller of cluster {self.cluster_id!r} is already running")
        if self.connection_file.exists() and not restore:
            raise IpclusterError(
                f"cluster {self.cluster_id!r} already has a connection file at "
                f"{self.connection_file}; stop it first (`ipcluster stop --cluster-id "
                f"{self.cluster_id}`) or choose another cluster_id")
        connection.make_private_dir(self.cluster_dir)
        argv = [sys.executable, "-m", "ipcluster", "controller", "--cluster-id", self.cluster_id]
        ip = await asyncio.to_thread(self.choose_ip)
        if ip:
            argv += ["--ip", ip]
        if self.curve is not None:
            argv.append("--curve" if self.curve else "--no-curve")
        if self.db is not None:
            argv += ["--db", self.db]
        if self.max_message_size is not None:
            argv += ["--max-message-size", str(self.max_message_size)]
        if restore:
            argv.append("--restore")
        if self.shutdown_atexit:
            argv += ["--owner", str(self.owner)]
        log = self.cluster_dir / "controller.log"
        with open(log, "ab") as out:
            self.controller = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        if prepare_engines:  # e.g. the local launcher's template imports meanwhile
            await asyncio.to_thread(self.launcher.prepare, self.engine_command())
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if connection.read(self.connection_file).controller_pid == self.controller.pid:
                    break
            except IpclusterError:
                pass
            if self.controller.poll() is not None:
                raise IpclusterError(
                    f"the controller exited with code {self.controller.returncode} before it "
                    f"was ready; its log {log} ends with:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise IpclusterError(f"the controller was not ready after {self.start_timeout} s; "
                                     f"its log {log} ends with:\n{tail(log)}")
            await asyncio.sleep(0.01)
        if not restore:
            state.write(self.cluster_id, {})  # a fresh record, not one a failed start left
        self._write_state()
        if self.shutdown_atexit:
            atexit.register(self._stop_at_exit)

    @property
    def remote(self) -> bool:
        """Whether engines may run on other hosts (then they need a reachable address)."""
        return self.launcher.remote or self.allocation is not None

    def choose_ip(self) -> str | None:
        """An address the engines' hosts reach: explicit, else by route to them (loopback if local)."""
        if not (self.controller_ip or self.interface or self.remote):
            return None  # the controller's own default (loopback)
        hosts = self.allocation.hosts if self.allocation else self.launcher.hosts()
        try:
            return network.choose_ip(hosts, ip=self.controller_ip, interface=self.interface)
        except ValueError as exc:
            raise IpclusterError(f"cannot choose the controller's address: {exc}") from None

    async def stop_controller(self) -> None:
        await asyncio.to_thread(self._stop_controller)

    def _stop_controller(self) -> None:
        if self.controller is None:
            return
        self.controller.terminate()
        try:
            self.controller.wait(5)
        except subprocess.TimeoutExpired:
            self.controller.kill()
            self.controller.wait()

    @property
    def dashboard_link(self) -> str:
        """The URL of this cluster's live dashboard, started on first use (``ipcluster[dashboard]``)."""
        return dashboard.dashboard_link(self.connection_file)

    # -- engines ----------------------------------------------------------------------------

    def engine_command(self) -> list[str]:
        if self.remote:  # no shared filesystem needed: the info travels in the environment
            return [sys.executable, "-m", "ipcluster", "engine"]
        return [sys.executable, "-m", "ipcluster", "engine", "--connection-file",
                str(self.connection_file)]

    def _engine_environment(self) -> None:
        if self.remote and self.connection_file.exists():
            info = dataclasses.asdict(connection.read(self.connection_file))
            self.launcher.options.env = {**self.launcher.options.env,
                                         CONNECTION_VARIABLE: json.dumps(info)}

    def engines_script(self, n: int | None = None) -> str:
        """Exactly what `start_engines(n)` runs or submits."""
        return self.launcher.script(self.engine_command(), self.n if n is None else n)

    async def start_engines(self, n: int | None = None) -> None:
        n = check_count(self.n if n is None else n)
        self._engine_environment()
        try:
            await asyncio.to_thread(self.launcher.start, self.engine_command(), n)
        except launchers.LaunchError as exc:
            raise IpclusterError(f"could not start {n} engines with the {self.engines} launcher: "
                                 f"{exc}") from None
        finally:
            self._write_state()  # job ids on disk at once: the controller cancels them if we die
        if self.supervisor is None and self.launcher.local_processes() is not None:
            self.supervisor = Supervisor(self, self.restart)
            self.supervisor.start()

    async def stop_engines(self) -> None:
        await asyncio.to_thread(self._stop_engines)

    def _stop_engines(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        self.launcher.stop()

    def signal_engines(self, sig: int) -> None:
        """Send `sig` to every engine, through the launcher (``scancel --signal`` for Slurm)."""
        self.launcher.signal(sig)

    async def restart_engines(self) -> None:
        """Stop every engine, then start the cluster's `n` afresh and wait for them."""
        await self.stop_engines()
        self.launcher = make_launcher(self.engines, self.cluster_dir, **self.launcher_options)
        await self.start_engines()
        await self.wait_for_engines()

    # -- the whole cluster ------------------------------------------------------------------

    async def start_cluster(self, n: int | None = None) -> None:
        """Start the controller, then `n` engines (default: the cluster's `n`)."""
        try:
            await self.start_controller(prepare_engines=(self.n if n is None else n) > 0)
            await self.start_engines(n)
        except BaseException as exc:
            await self._stop_failed(exc)
            raise

    async def connect_client(self) -> Client:
        self.client = await asyncio.to_thread(Client, self.connection_file)
        return self.client

    async def wait_for_engines(self, n: int | None = None, timeout: float | None = None) -> None:
        """Wait until `n` engines registered; fail at once, with its log, if an engine exits.

        `timeout` (default `start_timeout`) counts from when the engines start running: while
        a batch job waits in the queue, its wait is shown ("slurm job 1234 pending: Priority,
        2 min"), for at most `pending_timeout` seconds.
        """
        n = check_count(self.n if n is None else n)
        client = self.client if self.client is not None else await self.connect_client()
        await wait_registered(client, self.launcher, n,
                              timeout=self.start_timeout if timeout is None else timeout,
                              pending_timeout=self.pending_timeout)

    async def start_and_connect(self, n: int | None = None, activate: bool = False) -> Client:
        """Start the cluster, connect a client, wait for the engines; returns the client.
        With `activate` (in IPython), %px runs on all its engines (``rc.activate()``)."""
        await self.start_cluster(n)
        try:
            await self.connect_client()
            await self.wait_for_engines(n)
        except BaseException as exc:
            await self._stop_failed(exc)
            raise
        self.ready = True
        self._write_state()
        if activate:
            self.client.activate()
        return self.client

    async def _stop_failed(self, exc: BaseException) -> None:
        """Stop what a failed start started, keeping the directory: its logs explain the error
        (``ipcluster list`` shows the cluster as failed, ``ipcluster clean`` removes it)."""
        await self._stop_processes()
        if self.cluster_dir.exists():
            reason = "interrupted" if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) \
                else f"{type(exc).__name__}: {exc}"
            state.update(self.cluster_id, failed=reason, **self._state())
            if isinstance(exc, IpclusterError) and not isinstance(exc, NoEnginesRegistered):
                exc.args = (f"{exc.args[0]}\n(the logs stay in {self.cluster_dir}; "
                            f"`ipcluster clean` removes them)",) + exc.args[1:]

    async def _stop_processes(self) -> None:
        await asyncio.to_thread(self._halt)

    def _halt(self) -> None:
        """Close the client, stop the engines, then the controller (blocking: also at exit,
        when no new thread may start)."""
        atexit.unregister(self._stop_at_exit)
        if self.client is not None:
            self.client.close()
            self.client = None
        self._stop_engines()
        dashboard.stop(self.cluster_dir)
        self._stop_controller()

    async def stop_cluster(self) -> None:
        """Stop engines, then the controller; close the client; remove the cluster's directory."""
        await asyncio.to_thread(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        try:
            key = connection.read(self.connection_file).key_bytes  # gone once the controller is
        except ConnectionFileError:
            key = None
        self._halt()
        if self.controller is not None:  # only what this object made: never another's directory
            if key is not None:  # shared memory left by a killed process, had the controller no
                shm.sweep(shm.prefix(key))  # chance to remove it (it does when it stops)
            shutil.rmtree(self.cluster_dir, ignore_errors=True)

    def _state(self) -> dict:
        jobs = list(getattr(self.launcher, "jobs", []))
        return {
            "cluster_id": self.cluster_id, "n": self.n, "engines": self.engines,
            "owner": {"pid": self.owner.pid, "started": self.owner.started,
                      "command": " ".join(sys.argv[:3])},
            "shutdown_atexit": self.shutdown_atexit,
            "controller_pid": self.controller.pid if self.controller else None,
            "engine_pids": list(self.launcher.pids), "jobs": jobs,
            "started": state.start_times([self.controller.pid if self.controller else None,
                                          *self.launcher.pids]),
            "cancel": [self.launcher.cancel_argv(jobs)] if jobs else [],
            "created": self.created, "ready": self.ready,
        }

    def _write_state(self) -> None:
        if self.controller is None:  # engines added to a cluster another process owns: its record
            return
        if self.cluster_dir.exists():
            state.update(self.cluster_id, failed=None, **self._state())

    # -- sync forms -------------------------------------------------------------------------

    def start_controller_sync(self, restore: bool = False) -> None:
        return run_sync(self.start_controller(restore))

    def start_engines_sync(self, n: int | None = None) -> None:
        return run_sync(self.start_engines(n))

    def start_cluster_sync(self, n: int | None = None) -> None:
        return run_sync(self.start_cluster(n))

    def connect_client_sync(self) -> Client:
        return run_sync(self.connect_client())

    def wait_for_engines_sync(self, n: int | None = None, timeout: float | None = None) -> None:
        return run_sync(self.wait_for_engines(n, timeout))

    def start_and_connect_sync(self, n: int | None = None, activate: bool = False) -> Client:
        return run_sync(self.start_and_connect(n, activate))

    def stop_engines_sync(self) -> None:
        return run_sync(self.stop_engines())

    def stop_controller_sync(self) -> None:
        return run_sync(self.stop_controller())

    def restart_engines_sync(self) -> None:
        return run_sync(self.restart_engines())

    def stop_cluster_sync(self) -> None:
        return run_sync(self.stop_cluster())

    # -- context managers -------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self.start_and_connect_sync()

    def __exit__(self, *exc) -> None:
        self.stop_cluster_sync()

    async def __aenter__(self) -> Client:
        return await self.start_and_connect()

    async def __aexit__(self, *exc) -> None:
        await self.stop_cluster()
