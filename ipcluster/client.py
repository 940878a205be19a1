"""Client API layer: `Client`, the user's connection to a running cluster.

One IO thread per client owns its sockets: a DEALER to the controller (requests out; results,
output and replies back, in the order the controller forwarded them) and a SUB for events
(engines coming and going, the controller's beat). User threads never touch those sockets:
each sends through its own in-process socket to the IO thread, so every call is thread-safe.
If the controller is silent for `timeout` seconds, work in flight fails with `ControllerLost`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

from ipcluster import connection, serialize, transport
from ipcluster.asyncresult import TaskFuture
from ipcluster.errors import (
    ClientClosed, ControllerLost, NoEnginesRegistered, NoSuchEngine, SerializationError, from_wire,
)
from ipcluster.protocol import BadMessage, Ids, Signer, decode, encode, now, pack, unpack
from ipcluster.views import DirectView, LoadBalancedView

log = logging.getLogger("ipcluster.client")

__all__ = ["Client"]


class Client:
    """Connect to a running cluster.

    `url_file_or_cluster_id` is a connection file's path, a cluster id, or None for the one
    running cluster (the ``default`` cluster of ``ipcluster start`` first). Fails within
    `timeout` seconds with a clear error if the controller does not answer.
    """

    def __init__(self, url_file_or_cluster_id=None, *, timeout: float = 10) -> None:
        self.connection_file = connection.find(url_file_or_cluster_id)
        self._info = connection.read(self.connection_file)
        self.cluster_id = self._info.cluster_id
        self.timeout = timeout
        self._signer = Signer(self._info.key_bytes)
        self._ids = Ids()
        self._context = transport.Context()
        self._inbox_name = f"client-{self._ids.session}"
        self._local = threading.local()
        self._outboxes: list = []
        self._tasks: dict[str, TaskFuture] = {}
        self._replies: dict[str, concurrent.futures.Future] = {}
        self._engine_ids: list[int] = []
        self._engines_changed = threading.Condition()
        self._closed = False
        self._lost: str | None = None
        self._last_heard = time.monotonic()
        self._io = threading.Thread(target=self._io_loop, name="ipcluster-client-io", daemon=True)
        self._io_ready = threading.Event()
        self._stopping = threading.Event()
        self._io.start()
        self._io_ready.wait()
        try:
            reply = self._request("hello", timeout=timeout)
        except BaseException:
            self.close()
            raise
        self._set_engine_ids(reply["ids"])
        self._beat_interval = reply["beat_interval"]

    # -- public API -------------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        """Ids of the registered engines, kept current by the controller's events."""
        return list(self._engine_ids)

    def __len__(self) -> int:
        return len(self._engine_ids)

    def __iter__(self):
        return (self[i] for i in self.ids)

    def __getitem__(self, key) -> DirectView:
        """``rc[i]`` (one engine, single results), ``rc[a:b]``, ``rc[:]`` or ``rc[[0, 2]]``."""
        ids = self.ids
        if isinstance(key, slice):
            return DirectView(self, ids[key])
        if isinstance(key, int):
            if key not in ids and ids and -len(ids) <= key < 0:
                key = ids[key]
            if key not in ids:
                ids = self._refresh_ids()
            if key not in ids:
                raise NoSuchEngine("NoSuchEngine", f"no engine with id {key}; registered "
                                   f"engines: {ids}", engine_id=key)
            return DirectView(self, key)
        if isinstance(key, (list, tuple)):
            return DirectView(self, list(key))
        raise TypeError(f"index engines with an int, a slice or a list of ids, not {key!r}")

    def direct_view(self, targets="all") -> DirectView:
        """A view on `targets`; ``"all"`` means every engine registered at each call."""
        return DirectView(self, targets)

    def load_balanced_view(self, targets=None) -> LoadBalancedView:
        return LoadBalancedView(self, targets)

    def wait_for_engines(self, n: int | None = None, *, timeout: float | None = None) -> None:
        """Wait until at least `n` engines (default 1) are registered."""
        n = 1 if n is None else n
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ids = self._refresh_ids()
            if len(ids) >= n:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise NoEnginesRegistered(
                    f"{len(ids)} of {n} engines registered after {timeout} s; check the engine "
                    f"logs in {self.connection_file.parent}, or wait longer")
            with self._engines_changed:
                self._engines_changed.wait(min(0.5, left) if left is not None else 0.5)

    def close(self) -> None:
        """Stop the IO thread and close the sockets; pending results fail with `ClientClosed`."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._io.is_alive() and self._io is not threading.current_thread():
            self._io.join(timeout=5)
        self._fail_all(ClientClosed("the client was closed before this result arrived"))
        self._context.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client cluster_id={self.cluster_id!r} engines={len(self)}>"

    # -- sending ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ClientClosed("this client is closed; create a new Client() to reconnect")
        if self._lost:
            raise ControllerLost(self._lost)

    def _send(self, header: dict, content=b"", buffers=()) -> None:
        sock = getattr(self._local, "outbox", None)
        if sock is None:
            sock = self._local.outbox = self._context.outbox(self._inbox_name)
            self._outboxes.append(sock)
        transport.send(sock, encode(self._signer, header, content, buffers))

    def _request(self, kind: str, content: dict | None = None, timeout: float | None = None):
        """Ask the controller something and wait for its reply."""
        self._check_usable()
        msg_id = self._ids()
        reply = self._replies[msg_id] = concurrent.futures.Future()
        self._send({"kind": kind, "id": msg_id}, pack(content) if content is not None else b"")
        try:
            return reply.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            raise ControllerLost(
                f"no answer from the controller at {self._info.client_url} within "
                f"{self.timeout if timeout is None else timeout} s (connection file "
                f"{self.connection_file}); is the cluster running? `ipcluster list` shows the "
                "running clusters") from None
        finally:
            self._replies.pop(msg_id, None)

    def _refresh_ids(self) -> list[int]:
        self._set_engine_ids(self._request("query", {"what": "ids"})["ids"])
        return self.ids

    def _submit(self, f, args: tuple, kwargs: dict, targets, *, balanced: bool) -> list[TaskFuture]:
        """Send one call, to each of `targets` (direct) or to one engine chosen by the controller."""
        self._check_usable()
        if not self._engine_ids and balanced:
            self._refresh_ids()
            if not self._engine_ids:
                raise NoEnginesRegistered(
                    "no engines are registered, so the task would wait forever; start some "
                    "(`ipcluster engines -n 4`, or Cluster.start_engines) or call "
                    "rc.wait_for_engines(n) first")
        content, buffers = serialize.dumps_call(f, args, kwargs)
        if balanced:
            tasks = [TaskFuture(self._ids())]
        else:
            tasks = [TaskFuture(self._ids(), t) for t in targets]
        for task in tasks:
            self._tasks[task.task_id] = task
        header = {"kind": "apply", "tasks": [t.task_id for t in tasks], "targets": targets,
                  "balanced": balanced, "submitted": now()}
        self._send(header, content, buffers)
        return tasks

    # -- the IO thread ----------------------------------------------------------------------

    def _io_loop(self) -> None:
        dealer = self._context.dealer(self._info.client_url)
        sub = self._context.subscriber(self._info.pub_url)
        inbox = self._context.inbox(self._inbox_name)
        self._io_ready.set()
        poller = transport.Poller(dealer, sub, inbox)
        try:
            while not self._stopping.is_set():
                ready = poller.poll(0.1)
                if inbox in ready:
                    for frames in transport.drain(inbox):
                        transport.send(dealer, frames)
                if dealer in ready:
                    self._last_heard = time.monotonic()
                    for frames in transport.drain(dealer):
                        self._on_reply(frames)
                if sub in ready:
                    self._last_heard = time.monotonic()
                    for frames in transport.drain(sub):
                        self._on_event(frames)
                self._check_controller()
        except Exception as exc:  # surfaced to every caller waiting on this client
            log.exception("client IO thread failed")
            self._lost = f"the client's IO thread failed: {type(exc).__name__}: {exc}"
            self._fail_all(ControllerLost(self._lost))

    def _check_controller(self) -> None:
        silent = time.monotonic() - self._last_heard
        if silent > self.timeout and not self._lost:
            self._lost = (
                f"the controller at {self._info.client_url} has been silent for {silent:.1f} s "
                f"(timeout {self.timeout} s); it has probably stopped. Work in flight cannot "
                "complete; restart the cluster and create a new Client()")
            self._fail_all(ControllerLost(self._lost))
        elif silent <= self.timeout and self._lost and self._lost.startswith("the controller"):
            self._lost = None

    def _fail_all(self, error: Exception) -> None:
        for table in (self._tasks, self._replies):
            for key in list(table):
                future = table.pop(key, None)
                if future is not None and not future.done():
                    future.set_exception(error)

    def _on_reply(self, frames) -> None:
        try:
            msg = decode(self._signer, frames)
            self._dispatch_reply(msg)
        except Exception as exc:  # one bad message must not stop the IO thread
            log.warning("dropped a message from the controller: %s: %s", type(exc).__name__, exc)

    def _dispatch_reply(self, msg) -> None:
        header = msg.header
        if msg.kind == "result":
            task = self._tasks.pop(header.get("parent"), None)
            if task is not None:
                self._complete(task, msg)
        elif msg.kind == "output":
            task = self._tasks.get(header.get("parent"))
            if task is not None:
                out = unpack(msg.content)
                task.metadata[out["name"]] += out["text"]
        else:
            reply = self._replies.get(header.get("parent"))
            if reply is not None and not reply.done():
                reply.set_result(unpack(msg.content))

    def _complete(self, task: TaskFuture, msg) -> None:
        header = msg.header
        meta = task.metadata
        meta.update(engine_id=header.get("engine"), started=header.get("started"),
                    completed=header.get("completed"), received=now(), status=header.get("status"))
        if header.get("status") == "ok":
            try:
                task.set_result(serialize.loads(msg.content, msg.buffers))
            except SerializationError as exc:
                task.set_exception(exc)
        else:
            task.set_exception(from_wire(unpack(msg.content)))

    def _on_event(self, frames) -> None:
        try:
            msg = decode(self._signer, frames)
        except BadMessage as exc:
            log.warning("dropped an event: %s", exc)
            return
        event = unpack(msg.content)
        if "ids" in event:
            self._set_engine_ids(event["ids"])

    def _set_engine_ids(self, ids: list[int]) -> None:
        ids = sorted(ids)
        if ids != self._engine_ids:
            self._engine_ids = ids
            with self._engines_changed:
                self._engines_changed.notify_all()
