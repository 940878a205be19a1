"""Client API layer: `Cluster`, which starts and stops a controller and its engines.

``with Cluster(n=4) as rc:`` starts a controller process and four engines through a launcher,
yields a connected `Client`, and stops everything on exit, also on error. Each step has an
async form (``await cluster.start_cluster()``) and a sync one-liner over it
(``cluster.start_cluster_sync()``) that works inside a running event loop too (a notebook).
Engines come in engine sets (`ipcluster.engineset`), as in ipyparallel.

State lives in one directory per cluster (`cluster_dir`, in `profile_dir`): the connection
file, ``cluster.json`` (`ipcluster.state`) and the logs. A cluster belongs to the process that
started it: its controller stops everything when that process dies (``shutdown_atexit=False``
keeps it running). A start that fails stops what it started and keeps the directory, so that
the logs its error quotes are still there.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ipcluster import connection, controllerprocess, display, launchers, shm, state
from ipcluster.blocking import sync_form
from ipcluster.client import Client
import ipcluster.dashboard.link as dashboard
from ipcluster.engineset import EngineSet, EngineSets, check_count
from ipcluster.progress import wait_registered
from ipcluster.supervisor import Supervisor
from ipcluster.config import cluster_dir, ipcluster_dir, locate
from ipcluster.errors import ConnectionFileError, IpclusterError, NoEnginesRegistered
from ipcluster.launchers import allocation, network

from ipcluster.connection import CONNECTION_VARIABLE  # the connection info, for batch jobs

__all__ = ["Cluster"]


class Cluster:
    """A controller and `n` engines started by the `engines` launcher.

    `engines` is a launcher's name (``"local"``, ``"mpi"``, ``"ssh"``, ``"slurm"``, ...); other
    keywords are that launcher's options (``partition="debug"``), resolved over dask.config
    ``ipcluster.<launcher>``. The default, None, is ``"local"``, or inside a Slurm, PBS, LSF or
    SGE allocation: engines across the allocation (``srun`` or ``mpiexec``), `n` its task count.

    `profile_dir` is the directory that holds cluster directories (default ``$IPCLUSTER_DIR``,
    else ``~/.ipcluster``); `profile` names a cluster in it, the one whose id is `profile`
    when `cluster_id` is not given (ipyparallel's profiles, mapped as docs/migration.md says).

    The cluster stops when this process exits, normally or not (its controller watches it);
    with ``shutdown_atexit=False`` it keeps running until ``ipcluster stop CLUSTER_ID``.
    `start_timeout` counts from when the engines start running: a batch job waiting in the
    queue is shown waiting, for at most `pending_timeout` seconds (None: no limit).
    """

    def __init__(self, n: int | None = None, *, engines: str | None = None, cluster_id: str | None = None,
                 profile: str | None = None, profile_dir: str | None = None,
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
        self.launcher_name = engines or "local"
        self.launcher_options = launcher_options
        self.interface = interface
        self.profile = profile or ""
        self.profile_dir, self.cluster_id = locate(cluster_id, profile, profile_dir)
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
        self.cluster_dir = cluster_dir(self.cluster_id, self.profile_dir)
        self.cluster_file = self.cluster_dir / state.FILENAME  # the record `from_file` reads
        self.connection_file = self.cluster_dir / connection.FILENAME
        self.controller: subprocess.Popen | None = None
        self.engines = EngineSets(self.launcher_name, launcher_options, self.cluster_dir)
        self.client: Client | None = None
        self.ready = False  # all n engines registered once

    @classmethod
    def from_file(cls, cluster_file=None, *, profile: str | None = None,
                  profile_dir: str | None = None, cluster_id: str = "", **kwargs) -> "Cluster":
        """A running cluster another process started, from its record: by default the one
        ``ipcluster start`` started (`cluster_id` ``""``); or a record's path (`cluster_file`).

        It connects clients (``connect_client``) and adds engine sets to the cluster; the
        cluster stays its owner's (``ipcluster stop CLUSTER_ID`` stops it)."""
        if cluster_file is None:
            root, cluster_id = locate(cluster_id, profile, profile_dir)
            cluster_file = state.path(cluster_id, Path(root))
        path = Path(cluster_file).absolute()
        record = state.read(path.parent.name, path.parent.parent)
        if record is None:
            running = state.running() if path.parent.parent == ipcluster_dir() else []
            raise IpclusterError(
                f"no cluster record at {path}; running clusters: {', '.join(running) or 'none'}"
                f"; start one with `ipcluster start -n 4` or Cluster(n=4, shutdown_atexit=False)")
        kwargs.setdefault("shutdown_atexit", False)
        cluster = cls(record.get("n", 0), engines=record.get("engines") or "local",
                      cluster_id=path.parent.name, profile_dir=str(path.parent.parent), **kwargs)
        cluster.engines.join_others()
        return cluster

    def _repr_html_(self) -> str:
        return display.cluster_html(self)

    def __repr__(self) -> str:
        home = os.path.expanduser("~")
        where = ("~" + self.profile_dir[len(home):] if self.profile_dir.startswith(home + os.sep)
                 else self.profile_dir)
        fields = [f"cluster_id={self.cluster_id!r}", f"profile_dir={where!r}"]
        if self.controller is not None:
            fields.append(f"controller=<{'running' if self.controller.poll() is None else 'stopped'}>")
        if self.engines:
            fields.append(f"engine_sets={list(self.engines)}")
        return f"<{type(self).__name__}({', '.join(fields)})>"

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
        argv = controllerprocess.command(
            self.cluster_id, ip=await asyncio.to_thread(self.choose_ip), curve=self.curve,
            db=self.db, max_message_size=self.max_message_size, restore=restore,
            owner=str(self.owner) if self.shutdown_atexit else None)
        self.controller = controllerprocess.spawn(argv, self.cluster_dir, self.profile_dir)
        if prepare_engines:  # e.g. the local launcher's template imports meanwhile
            await asyncio.to_thread(self.launcher.prepare, self.engine_command())
        await controllerprocess.wait_ready(self.controller, self.cluster_dir, self.start_timeout)
        if not restore:
            state.write(self.cluster_id, {}, self.profile_dir)  # not a record a failed start left
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
        """Stop the controller (then `controller` is None, as in ipyparallel)."""
        await asyncio.to_thread(self._stop_controller)
        self.controller = None

    def _stop_controller(self) -> None:
        controllerprocess.stop(self.controller)

    @property
    def dashboard_link(self) -> str:
        """The URL of this cluster's live dashboard, started on first use (``ipcluster[dashboard]``)."""
        return dashboard.dashboard_link(self.connection_file)

    # -- engine sets ------------------------------------------------------------------------

    @property
    def launcher(self) -> launchers.Launcher:
        """The launcher of the newest engine set; before the first, the one it will use."""
        return self.engines.launcher

    @property
    def engine_set(self) -> EngineSet | None:
        """The first engine set (most clusters have one), as ipyparallel's; None before it."""
        return next(iter(self.engines.values()), None)

    def engine_command(self) -> list[str]:
        if self.remote:  # no shared filesystem needed: the info travels in the environment
            return [sys.executable, "-m", "ipcluster", "engine"]
        return [sys.executable, "-m", "ipcluster", "engine", "--connection-file",
                str(self.connection_file)]

    def _engine_environment(self, launcher: launchers.Launcher) -> None:
        if self.remote and self.connection_file.exists():
            info = dataclasses.asdict(connection.read(self.connection_file))
            launcher.options.env = {**launcher.options.env, CONNECTION_VARIABLE: json.dumps(info)}

    def engines_script(self, n: int | None = None) -> str:
        """Exactly what `start_engines(n)` runs or submits."""
        return self.launcher.script(self.engine_command(), self.n if n is None else n)

    async def start_engines(self, n: int | None = None, engine_set_id: str | None = None) -> str:
        """Start `n` engines (default: the cluster's `n`) as a new engine set; its id, the key
        of ``cluster.engines``. Does not wait for them (`wait_for_engines` does)."""
        engine_set = self.engines.add(check_count(self.n if n is None else n), engine_set_id)
        launcher, n = engine_set.launcher, engine_set.n
        self._engine_environment(launcher)
        try:
            await asyncio.to_thread(launcher.start, self.engine_command(), n)
        except launchers.LaunchError as exc:
            raise IpclusterError(f"could not start {n} engines with the {self.launcher_name} "
                                 f"launcher: {exc}") from None
        finally:
            self._write_state()  # job ids on disk at once: the controller cancels them if we die
        if self.supervisor is None and launcher.local_processes() is not None:
            self.supervisor = Supervisor(self, self.restart)
            self.supervisor.start()
        return engine_set.id

    async def stop_engines(self, engine_set_id: str | None = None) -> None:
        """Stop one engine set, or every set (the default); a stopped set leaves `engines`."""
        await asyncio.to_thread(self._stop_engines, engine_set_id)

    def _stop_engines(self, engine_set_id: str | None = None) -> None:
        chosen = self.engines.chosen(engine_set_id)
        if len(chosen) == len(self.engines) and self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        # out of the supervisor's sight first: their exits are not crashes to restart
        self.engines.stop(chosen, self.supervisor.lock if self.supervisor else contextlib.nullcontext())
        self._write_state()

    async def signal_engines(self, sig: int, engine_set_id: str | None = None) -> None:
        """Send `sig` to the engines of one set, or of every set (the default), through its
        launcher (``scancel --signal`` for Slurm)."""
        await asyncio.to_thread(self.engines.signal, sig, self.engines.chosen(engine_set_id))

    async def restart_engines(self, engine_set_id: str | None = None) -> None:
        """Stop one engine set (default: every set), start it afresh under the same id with as
        many engines, and wait for all the cluster's engines."""
        counts = {set_id: self.engines[set_id].n for set_id in self.engines.chosen(engine_set_id)}
        for set_id in counts:
            await self.stop_engines(set_id)
        for set_id, n in counts.items():
            await self.start_engines(n, set_id)
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
        self.client.cluster = self
        return self.client

    async def wait_for_engines(self, n: int | None = None, timeout: float | None = None) -> None:
        """Wait until `n` engines registered (default: as many as the engine sets started);
        fail at once, with its log, if an engine exits.

        `timeout` (default `start_timeout`) counts from when the engines start running: while
        a batch job waits in the queue, its wait is shown ("slurm job 1234 pending: Priority,
        2 min"), for at most `pending_timeout` seconds.
        """
        n = check_count(sum(s.n for s in self.engines.values()) or self.n if n is None else n)
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
        await asyncio.to_thread(self._halt)
        if self.cluster_dir.exists():
            reason = "interrupted" if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) \
                else f"{type(exc).__name__}: {exc}"
            state.update(self.cluster_id, self.profile_dir, failed=reason, **state.record_of(self))
            if isinstance(exc, IpclusterError) and not isinstance(exc, NoEnginesRegistered):
                exc.args = (f"{exc.args[0]}\n(the logs stay in {self.cluster_dir}; "
                            f"`ipcluster clean` removes them)",) + exc.args[1:]

    def _halt(self) -> None:
        """Close the client, stop the engines, then the controller (blocking: also at exit,
        when no new thread may start)."""
        atexit.unregister(self._stop_at_exit)
        if self.client is not None:
            self.client.close()
            self.client = None
        self._stop_engines()
        if self.controller is not None:  # a dashboard of a cluster we started, not another's
            dashboard.stop(self.cluster_dir)
        self._stop_controller()

    async def stop_cluster(self) -> None:
        """Stop engines, then the controller; close the client; remove the cluster's directory."""
        await asyncio.to_thread(self._stop_at_exit)
        self.controller = None

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

    def _write_state(self) -> None:
        if self.controller is None:  # engines added to a cluster another process owns: its record
            return
        if self.cluster_dir.exists():
            state.update(self.cluster_id, self.profile_dir, failed=None, **state.record_of(self))

    # -- sync forms -------------------------------------------------------------------------

    start_controller_sync = sync_form(start_controller)
    start_engines_sync = sync_form(start_engines)
    start_cluster_sync = sync_form(start_cluster)
    connect_client_sync = sync_form(connect_client)
    wait_for_engines_sync = sync_form(wait_for_engines)
    start_and_connect_sync = sync_form(start_and_connect)
    stop_engines_sync = sync_form(stop_engines)
    signal_engines_sync = sync_form(signal_engines)
    stop_controller_sync = sync_form(stop_controller)
    restart_engines_sync = sync_form(restart_engines)
    stop_cluster_sync = sync_form(stop_cluster)

    # -- context managers -------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self.start_and_connect_sync()

    def __exit__(self, *exc) -> None:
        self.stop_cluster_sync()

    async def __aenter__(self) -> Client:
        return await self.start_and_connect()

    async def __aexit__(self, *exc) -> None:
        await self.stop_cluster()
