"""Processes layer: every task the controller has seen, from arrival to (kept) result, and the
results and output a client could not be sent while it was away (`Undelivered`).

A task's record says which client asked (to route the result back), which other clients wait
for it (`get_result` from a second client), which engine runs it (to fail the task if that
engine dies), and, while it is not done, its request frames (to send it again elsewhere).
Finished results are kept, as the frames the engine sent, for `get_result` and `db_query`;
the oldest are culled past `max_results` tasks or `max_bytes`, which counts everything a record
holds (its objects, result frames, output); a record keeps at most `max_output` of output.
"""

from __future__ import annotations

import operator
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

# the fields and operators of db_query, shared with the SQLite store
COLUMNS = ("msg_id", "label", "key", "status", "engine_id", "submitted", "completed", "stdout",
           "stderr")
OPERATORS = {"$eq": ("=", operator.eq), "$ne": ("!=", operator.ne), "$lt": ("<", operator.lt),
             "$lte": ("<=", operator.le), "$gt": (">", operator.gt), "$gte": (">=", operator.ge)}


NOBODY: frozenset = frozenset()  # the empty `tried` and `watchers` most tasks keep for good


@dataclass(slots=True)
class Task:
    id: str
    client: bytes  # socket identity of the client that submitted it
    balanced: bool = False
    targets: frozenset | None = None  # engines a balanced task may run on; None: any
    # engines its queued copy may go to: `targets`, narrowed by a `follow` dependency or by the
    # engines it failed on; set when it is sent, so a copy given back is queued the same way
    allowed: frozenset | None = None
    label: str | None = None
    key: str | None = None  # digest of the call, for resumable labelled sweeps
    function: str | None = None  # qualified name of the function, from the request's header
    provenance: tuple | None = None  # once done: what ran it, where, when (provenance.record)
    engine: int | None = None  # None while queued for load balancing
    # times in whole microseconds, what the datetimes a client shows hold: a record then
    # compares with a query made from its own time as that time (db_query $lt, $gte)
    submitted: float = field(default_factory=lambda: round(time.time(), 6))
    completed: float | None = None
    status: str | None = None  # "ok" or "error" once done
    request: list | None = None  # the request frames, until done
    tried: frozenset = NOBODY  # engines where it failed or its dependency was unmet
    retries: int = 0  # times it may still be sent again after its engine died or it raised
    priority: float = 0  # higher runs first among queued balanced tasks
    timeout: float | None = None  # seconds it may wait to start, each time it waits (ipyparallel's)
    waits_until: float | None = None  # time.monotonic() when its wait runs out, while it waits
    watchers: frozenset = NOBODY  # other clients waiting for the result
    held: bool = False  # restored after a restart: its client is sent nothing until its sync
    # says it still waits (it may have had the result from the controller that died)
    result: tuple | None = None  # the result frames, once done
    stdout: str = ""
    stderr: str = ""

    @property
    def state(self) -> str:
        if self.result is not None:
            return "done"
        return "queued" if self.engine is None else "running"

    def summary(self) -> dict:
        return {"msg_id": self.id, "state": self.state, "status": self.status, "engine_id": self.engine,
                "label": self.label, "key": self.key, "submitted": self.submitted,
                "completed": self.completed, "stdout": self.stdout, "stderr": self.stderr}


def matches(record: dict, query: dict) -> bool:
    """ipyparallel's query form, on one record (the store runs the same query as SQL)."""
    for field_name, condition in query.items():
        if field_name not in COLUMNS:
            raise ValueError(f"cannot query on {field_name!r}; valid fields: {', '.join(COLUMNS)}")
        value = record.get(field_name)
        for op, wanted in (condition if isinstance(condition, dict) else {"$eq": condition}).items():
            if op == "$in" and value not in wanted or op == "$nin" and value in wanted:
                return False
            if op in OPERATORS:
                if value is None and op not in ("$eq", "$ne"):
                    return False
                if not OPERATORS[op][1](value, wanted):
                    return False
            elif op not in ("$in", "$nin"):
                raise ValueError(f"unknown operator {op!r}; valid: $in, $nin, {', '.join(OPERATORS)}")
    return True


# What a finished record costs besides its data: the Task, its frames' objects, its entries
# in the indexes (measured with tracemalloc: about 2 KiB)
RECORD_BYTES = 2048
KEEP_AS_IS = 1 << 16  # frames at least this large are kept without copying
# With a durable store, finished records live there; memory keeps the most recent as a cache
CACHE_RESULTS, CACHE_BYTES = 2_000, 16 << 20


def _size(frames: list) -> int:
    return sum(len(f.buffer) if hasattr(f, "buffer") else len(f) for f in frames)


def compact(frames: list) -> tuple:
    """Frames to keep for long: small ones copied out of libzmq's receive buffer. A frame
    received without copying shares that buffer (8 KiB or more) with the frames that came in
    with it, and keeps all of it alive: kept as they came, 23,000 small results of clients
    killed mid-submit held 339 MiB. Large frames have a buffer of their own and stay as they are.
    A tuple: of bytes only, the garbage collector stops walking it (a list it walks for good)."""
    return tuple([bytes(f.buffer) if hasattr(f, "buffer") and len(f.buffer) < KEEP_AS_IS else f
                  for f in frames])


def cost(task: Task) -> int:
    """The memory a finished task's record holds, as counted against `max_bytes`."""
    return RECORD_BYTES + _size(task.result or ()) + len(task.stdout) + len(task.stderr)


class Ledger:
    def __init__(self, max_results: int = 100_000, max_bytes: int = 128 << 20, store=None,
                 max_output: int = 1 << 20) -> None:
        self.tasks: dict[str, Task] = {}
        self.store = store  # the durable SQLite store, or None (memory only)
        self.max_results, self.max_bytes, self.max_output = max_results, max_bytes, max_output
        self._done: OrderedDict[str, int] = OrderedDict()  # finished task id -> result bytes
        self._done_bytes = 0
        self.culled = 0
        self.forgotten = 0  # finished records dropped (culled or purged), ever

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, task: Task) -> None:
        self.tasks[task.id] = task
        if self.store is not None:
            self.store.submitted(task)

    def get(self, task_id) -> Task | None:
        return self.tasks.get(task_id) if isinstance(task_id, str) else None

    def open(self) -> int:
        return len(self.tasks) - len(self._done)

    def finish(self, task: Task, frames: list, status: str, completed: float | None) -> None:
        task.result, task.status, task.request = compact(frames), status, None
        task.completed = round(completed or time.time(), 6)
        if self.store is not None:
            self.store.finished(task)
        size = cost(task)
        self._done[task.id] = size
        self._done_bytes += size
        most, most_bytes = self.max_results, self.max_bytes
        if self.store is not None and self.store.error is None:  # it holds every record: keep
            most, most_bytes = min(most, CACHE_RESULTS), min(most_bytes, CACHE_BYTES)  # a cache
        while self._done and (len(self._done) > most or self._done_bytes > most_bytes):
            self.forget(next(iter(self._done)))
            self.culled += 1

    def output_room(self, task: Task) -> int:
        """Characters of output `task`'s record may still keep."""
        return self.max_output - len(task.stdout) - len(task.stderr)

    def wrote(self, task: Task, name: str, text: str) -> None:
        """Output of a running task: kept up to `max_output`, then a note of the cut."""
        room = self.output_room(task)
        if room <= 0:
            return
        if len(text) > room:
            text = (text[:room] + f"\n[output past {self.max_output} characters is not kept by "
                    "the controller; the client that submitted the task received all of it]\n")
        setattr(task, name, getattr(task, name) + text)

    def forget(self, task_id: str) -> None:
        """Drop a finished task's record and result."""
        size = self._done.pop(task_id, None)
        if size is not None:
            self._done_bytes -= size
            self.tasks.pop(task_id, None)
            self.forgotten += 1

    def purge(self, task_id: str) -> None:
        """Forget a finished task here and in the store."""
        self.forget(task_id)
        if self.store is not None:
            self.store.forget(task_id)

    def finished_ids(self) -> list[str]:
        return list(self._done)

    def query(self, query: dict, keys: list[str] | None) -> list[dict]:
        """Tasks in memory matching `query` (the store answers the same query in SQL)."""
        keys = list(keys or COLUMNS)
        bad = sorted(set(keys) - set(COLUMNS))
        if bad:
            raise ValueError(f"unknown keys {bad}; valid: {', '.join(COLUMNS)}")
        found = [t.summary() for t in self.tasks.values()]
        return [{k: r[k] for k in keys} for r in found if matches(r, query)]


class Undelivered:
    """Result and output messages a client could not be sent (it was reconnecting, or the
    controller was restarted before it came back), in order, until its next message shows it is
    back. At most `limit` per client, the oldest dropped first: the client's sync on reconnecting
    finds any result dropped here, so this bounds memory without losing anything."""

    def __init__(self, limit: int = 10_000) -> None:
        self.by_client: dict[bytes, deque] = {}
        self.since: dict[bytes, float] = {}  # when each client's backlog began
        self.limit = limit

    def send(self, send, client: bytes, frames: list) -> None:
        """`send(client, frames) -> bool`; behind messages already kept, so order holds."""
        if client in self.by_client or not send(client, frames):
            if client not in self.by_client:
                self.since[client] = time.monotonic()
                self.by_client[client] = deque(maxlen=self.limit)
            self.by_client[client].append(compact(frames))

    def forget_gone(self, older_than: float) -> list[bytes]:
        """Drop the backlogs of clients away since before `older_than` (monotonic): most are
        dead (killed mid-submit), and one that comes back finds its results by its sync.
        Returns those clients."""
        gone = [c for c, t in self.since.items() if t < older_than and c in self.by_client]
        for client in gone:
            del self.by_client[client], self.since[client]
        return gone

    def flush(self, send, client: bytes) -> int:
        """Send what `client` missed; returns how many messages went."""
        kept = self.by_client.pop(client, None)
        self.since.pop(client, None)
        sent = 0
        while kept:
            if not send(client, kept[0]):  # gone again: keep the rest for next time
                self.by_client[client] = kept
                self.since[client] = time.monotonic()
                break
            kept.popleft()
            sent += 1
        return sent
