"""Client API layer: `Cluster`, which starts and stops a controller and its engines.

``with Cluster(n=4) as rc:`` starts a controller process and four engines through a launcher,
yields a connected `Client`, and stops everything on exit, also on error. Each step has an
async form (``await cluster.start_cluster()``) and a sync one-liner over it
(``cluster.start_cluster_sync()``) that works inside a running event loop too (a notebook).

State lives in one directory per cluster (`cluster_dir`): the connection file, ``cluster.json``
(who started what, for ``ipcluster list`` and ``ipcluster stop``) and the logs.
"""

from __future__ import annotations

import asyncio
import json
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
from ipcluster import connection, state
from ipcluster.client import Client
import ipcluster.dashboard.link as dashboard
from ipcluster.supervisor import Supervisor
from ipcluster.config import cluster_dir, resolve
from ipcluster.errors import IpclusterError, NoEnginesRegistered
from ipcluster.launchers import allocation, network
from ipcluster.launchers.base import tail

__all__ = ["Cluster"]

CONNECTION_VARIABLE = "IPCLUSTER_CONNECTION"  # the connection info, for engines in batch jobs


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
    """

    def __init__(self, n: int | None = None, *, engines: str | None = None, cluster_id: str | None = None,
                 controller_ip: str | None = None, interface: str | None = None,
                 curve: bool | None = None, restart: bool = False, db: str | None = None,
                 start_timeout: float = 60.0,
                 owner: str = "python", **launcher_options) -> None:
        self.allocation = allocation.detect() if engines is None else None
        if self.allocation is not None:
            launcher_options.setdefault("starter", self.allocation.starter)
            n = self.allocation.tasks if n is None else n
        self.n = n if n is not None else (os.cpu_count() or 1)
        self.engines = engines or "local"
        self.launcher_options = launcher_options
        self.interface = interface
        self.cluster_id = cluster_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.controller_ip = controller_ip
        self.curve = curve  # CurveZMQ; None: on unless the controller binds loopback only
        self.restart = restart  # start a replacement (same engine id) for an engine that exits
        self.db = db  # "sqlite" or "sqlite:PATH": tasks and results survive a controller crash
        self.supervisor: Supervisor | None = None
        self.start_timeout = start_timeout
        self.owner = owner  # "cli" when `ipcluster start` supervises it
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

    async def start_controller(self, restore: bool = False) -> None:
        """Start the controller; with `restore`, one that takes over from a controller that
        died (its connection file, ports and task store: engines and clients reconnect)."""
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
        if restore:
            argv.append("--restore")
        log = self.cluster_dir / "controller.log"
        with open(log, "ab") as out:
            self.controller = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True)
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
                                     f"see its log at {log}")
            await asyncio.sleep(0.01)
        self._write_state()

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
        if self.controller is None:
            return
        self.controller.terminate()
        try:
            await asyncio.to_thread(self.controller.wait, 5)
        except subprocess.TimeoutExpired:
            self.controller.kill()
            await asyncio.to_thread(self.controller.wait)

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
        n = self.n if n is None else n
        self._engine_environment()
        try:
            await asyncio.to_thread(self.launcher.start, self.engine_command(), n)
        except launchers.LaunchError as exc:
            raise IpclusterError(f"could not start {n} engines with the {self.engines} launcher: "
                                 f"{exc}") from None
        self._write_state()
        if self.supervisor is None and self.launcher.local_processes() is not None:
            self.supervisor = Supervisor(self, self.restart)
            self.supervisor.start()

    async def stop_engines(self) -> None:
        if self.supervisor is not None:
            await asyncio.to_thread(self.supervisor.stop)
            self.supervisor = None
        await asyncio.to_thread(self.launcher.stop)

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
            await self.start_controller()
            await self.start_engines(n)
        except BaseException:
            await self.stop_cluster()
            raise

    async def connect_client(self) -> Client:
        self.client = await asyncio.to_thread(Client, self.connection_file)
        return self.client

    async def wait_for_engines(self, n: int | None = None, timeout: float | None = None) -> None:
        """Wait until `n` engines registered; fail at once, with its log, if an engine exits."""
        n = self.n if n is None else n
        timeout = self.start_timeout if timeout is None else timeout
        client = self.client if self.client is not None else await self.connect_client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await asyncio.to_thread(client.wait_for_engines, n, timeout=0.1)
            except NoEnginesRegistered:
                pass
            state = await asyncio.to_thread(self.launcher.state)
            if state is launchers.State.FAILED:
                raise NoEnginesRegistered(
                    f"{len(client.ids)} of {n} engines registered; the others exited before "
                    f"registering. The {self.engines} launcher says: {self.launcher.failure()}")
            if time.monotonic() > deadline:
                raise NoEnginesRegistered(
                    f"{len(client.ids)} of {n} engines registered after {timeout} s; "
                    f"see the engine logs in {self.cluster_dir}")

    async def start_and_connect(self, n: int | None = None) -> Client:
        """Start the cluster, connect a client, wait for the engines; returns the client."""
        await self.start_cluster(n)
        try:
            await self.connect_client()
            await self.wait_for_engines(n)
        except BaseException:
            await self.stop_cluster()
            raise
        self.ready = True
        self._write_state()
        return self.client

    async def stop_cluster(self) -> None:
        """Stop engines, then the controller; close the client; remove the cluster's directory."""
        if self.client is not None:
            self.client.close()
            self.client = None
        await self.stop_engines()
        await asyncio.to_thread(dashboard.stop, self.cluster_dir)
        if self.controller is not None:  # only what this object made: never another's directory
            await self.stop_controller()
            shutil.rmtree(self.cluster_dir, ignore_errors=True)

    def _write_state(self) -> None:
        if self.controller is None:  # engines added to a cluster another process owns: its record
            return
        state.write(self.cluster_id, {
            "cluster_id": self.cluster_id, "n": self.n, "engines": self.engines,
            "owner": self.owner, "supervisor_pid": os.getpid(),
            "controller_pid": self.controller.pid if self.controller else None,
            "engine_pids": list(self.launcher.pids),
            "jobs": list(getattr(self.launcher, "jobs", [])),
            "created": time.time(), "ready": self.ready,
        })

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

    def start_and_connect_sync(self, n: int | None = None) -> Client:
        return run_sync(self.start_and_connect(n))

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
