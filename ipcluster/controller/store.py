"""Processes layer: the durable task ledger, in SQLite (WAL), written off the hot path.

The controller's loop only puts records on a queue; a writer thread commits them in batches
(at most every `interval` seconds), so a task costs the loop a queue put, not a disk write.
What is committed survives a crash of the controller: finished results (the engine's frames,
as sent), and the requests of tasks not yet done, so that ``--restore`` sends them again.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path

import msgpack

from ipcluster.controller.ledger import COLUMNS, OPERATORS  # one query language for both
from ipcluster.controller.provenance import record

log = logging.getLogger("ipcluster.controller")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    msg_id TEXT PRIMARY KEY,
    client BLOB,
    label TEXT,
    key TEXT,              -- digest of the call, so a labelled sweep run again skips done work
    balanced INTEGER,
    targets BLOB,          -- msgpack list of allowed engine ids, or NULL
    engine_id INTEGER,
    submitted REAL,
    completed REAL,
    status TEXT,           -- NULL until done; then ok or error
    stdout TEXT,
    stderr TEXT,
    request BLOB,          -- msgpack list of the request frames, until done
    result BLOB,           -- msgpack list of the result frames, once done
    provenance BLOB        -- msgpack map, once done: function, code and data hashes, engine
);
CREATE TABLE IF NOT EXISTS environments (
    engine TEXT PRIMARY KEY,   -- host:pid
    facts BLOB                 -- msgpack map: python version, executable, packages
);
CREATE INDEX IF NOT EXISTS tasks_label ON tasks (label);
"""
_STOP = object()


class StoreError(RuntimeError):
    """The store cannot answer truthfully (it failed to write): reported to the client."""


def frames_blob(frames) -> bytes:
    return msgpack.packb([bytes(f.buffer) if hasattr(f, "buffer") else bytes(f) for f in frames])


class Store:
    def __init__(self, path: Path, interval: float = 0.05, retry_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.interval, self.retry_interval = interval, retry_interval
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self.error: BaseException | None = None  # why the last write failed, until one succeeds
        with self._connect() as db:
            db.executescript(SCHEMA)
        self._writer = threading.Thread(target=self._write_loop, name="ipcluster-store", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    # -- writing (from the controller's loop: queue puts only) ----------------------------

    def submitted(self, task) -> None:
        targets = msgpack.packb(sorted(task.targets)) if task.targets is not None else None
        request = task.request
        self._queue.put(("INSERT OR REPLACE INTO tasks (msg_id, client, label, key, balanced, "
                         "targets, submitted, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (task.id, task.client, task.label, task.key, int(task.balanced), targets,
                          task.submitted, request)))

    def sent(self, task) -> None:
        self._queue.put(("UPDATE tasks SET engine_id = ? WHERE msg_id = ?", (task.engine, task.id)))

    def results(self, task_ids: list[str]) -> dict:
        """``{task_id: (frames, stdout, stderr, engine_id)}`` of those tasks that finished, in
        one query (a chunk per 10,000 ids, SQLite's limit on parameters being near 32,000)."""
        found = {}
        for i in range(0, len(task_ids), 10_000):
            chunk = task_ids[i:i + 10_000]
            rows = self.rows(f"WHERE result IS NOT NULL AND msg_id IN ({', '.join('?' * len(chunk))})",
                             tuple(chunk), "msg_id, result, stdout, stderr, engine_id")
            for row in rows:
                found[row["msg_id"]] = (msgpack.unpackb(row["result"]), row["stdout"] or "",
                                        row["stderr"] or "", row["engine_id"])
        return found

    def finished(self, task) -> None:
        self._queue.put(("UPDATE tasks SET status = ?, completed = ?, engine_id = ?, stdout = ?, "
                         "stderr = ?, result = ?, request = NULL, provenance = ? WHERE msg_id = ?",
                         (task.status, task.completed, task.engine, task.stdout, task.stderr,
                          task.result, msgpack.packb(record(task)) if task.provenance else None,
                          task.id)))

    def environment(self, engine: str, facts: bytes) -> None:
        self._queue.put(("INSERT OR REPLACE INTO environments (engine, facts) VALUES (?, ?)",
                         (engine, facts)))

    def environments(self) -> dict:
        self.flush()
        with self._connect() as db:
            return {k: msgpack.unpackb(v) for k, v in db.execute("SELECT engine, facts FROM environments")}

    def forget(self, task_id: str) -> None:
        self._queue.put(("DELETE FROM tasks WHERE msg_id = ?", (task_id,)))

    def _write_loop(self) -> None:
        db, batch = None, []
        while True:
            if not batch:
                batch = self._take()
            try:
                db = db or self._connect()
                with db:  # one transaction per batch
                    for item in batch:
                        if isinstance(item, tuple):
                            sql, args = item
                            db.execute(sql, tuple(frames_blob(a) if isinstance(a, (list, tuple)) else a
                                                  for a in args))
            except (sqlite3.Error, OSError) as exc:  # a full disk, most often: keep the batch,
                self._failed(exc)  # say so, and try again; the loop goes on meanwhile
                if self._stopping.is_set():  # closing: no more waiting for space
                    log.error("the task store stops with records not written to %s", self.path)
                    break
                self._stopping.wait(self.retry_interval)
                continue
            except BaseException as exc:  # not a condition that passes: stop writing, loudly
                self._failed(exc)
                break
            if self.error is not None:
                log.warning("the task store writes to %s again", self.path)
                self.error = None
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()  # flush(): everything before it is committed
            if _STOP in batch:
                break
            batch = []
        for item in batch:  # nobody waits for a store that stopped
            if isinstance(item, threading.Event):
                item.set()
        if db is not None:
            db.close()

    def _take(self) -> list:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.interval  # commit at least this often
        try:
            while len(batch) < 10_000 and (left := deadline - time.monotonic()) > 0:
                batch.append(self._queue.get(timeout=left))
        except queue.Empty:
            pass
        return batch

    def _failed(self, exc: BaseException) -> None:
        if self.error is None or str(self.error) != str(exc):
            log.error("the task store cannot write to %s: %s: %s; finished results are kept in "
                      "memory only, and writing is tried again every %.0f s", self.path,
                      type(exc).__name__, exc, self.retry_interval)
        self.error = exc

    @property
    def problem(self) -> str | None:
        """What is wrong with the store, in words for the user, or None."""
        exc = self.error
        return None if exc is None else (
            f"the task store {self.path} cannot be written ({type(exc).__name__}: {exc}); "
            "results finishing now are not durable until it can")

    def flush(self, timeout: float = 10) -> None:
        """Wait until everything queued so far is committed (before a query reads it)."""
        committed = threading.Event()
        self._queue.put(committed)
        deadline = time.monotonic() + timeout
        while not committed.wait(0.05) and time.monotonic() < deadline:
            if self.error is not None:
                return  # it may not commit for a long time: read what is there

    def close(self) -> None:
        """Commit everything queued, then stop the writer."""
        self._queue.put(_STOP)
        self._stopping.set()
        self._writer.join(timeout=30)

    # -- reading (restore, queries) -----------------------------------------------------

    def rows(self, where: str = "", args: tuple = (), columns: str = "*") -> list[sqlite3.Row]:
        self.flush()
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            return db.execute(f"SELECT {columns} FROM tasks {where}", args).fetchall()

    def query(self, query: dict, keys: list[str] | None) -> list[dict]:
        """Tasks matching `query` (ipyparallel's form: ``{"label": "x", "completed":
        {"$gt": t}}``, with $in, $nin, $eq, $ne, $lt, $lte, $gt, $gte)."""
        where, args = sql_where(query)
        keys = list(keys or COLUMNS)
        bad = sorted(set(keys) - set(COLUMNS))
        if bad:
            raise ValueError(f"unknown keys {bad}; valid: {', '.join(COLUMNS)}")
        records = [dict(row) for row in self.rows(where, args, ", ".join(keys))]
        if self.error is not None:
            raise StoreError(f"{self.problem}; the answer would miss them. Try again once "
                             "it is fixed (free space on its disk): it retries by itself")
        return records


def sql_where(query: dict) -> tuple[str, tuple]:
    clauses, args = [], []
    for field, condition in query.items():
        if field not in COLUMNS:
            raise ValueError(f"cannot query on {field!r}; valid fields: {', '.join(COLUMNS)}")
        if not isinstance(condition, dict):
            condition = {"$eq": condition}
        for op, value in condition.items():
            if op in ("$in", "$nin"):
                values = list(value)
                marks = ", ".join("?" * len(values)) or "NULL"
                clauses.append(f"{field} {'NOT ' if op == '$nin' else ''}IN ({marks})")
                args += values
            elif op in OPERATORS:
                if value is None and op in ("$eq", "$ne"):
                    clauses.append(f"{field} IS {'NOT ' if op == '$ne' else ''}NULL")
                else:
                    clauses.append(f"{field} {OPERATORS[op][0]} ?")
                    args.append(value)
            else:
                raise ValueError(f"unknown operator {op!r}; valid: $in, $nin, {', '.join(OPERATORS)}")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(args)
