"""Processes layer: the provenance the ledger keeps: for each finished task, what ran, where and
when; for each engine, once, its interpreter and installed packages.

    engine ── register {pid, host, environment} ──▶ environments[(host, pid)] (+ store)
    engine ── result header "prov" {fn, code, call, result}, started, completed
                                                  ──▶ task.provenance (+ store, with the task)

The hashes are the engine's, taken over bytes it already holds (the call it received, the
result it sends): the controller keeps them as the result's header said them, a tuple per
task, and makes the record only when it is asked for. The export (the ``provenance`` action)
is complete only with a durable store (``--db``) and no write failure; otherwise it says what
is missing.
"""

from __future__ import annotations

import msgpack

from ipcluster.controller.reader import Later

FIELDS = ("fn", "code", "call", "result")


class Provenance:
    def __init__(self, store=None) -> None:
        self.store = store
        self.environments: dict[str, dict] = {}  # "host:pid" -> the engine's environment

    def registered(self, engine, info: dict) -> None:
        env = info.get("environment")
        if isinstance(env, dict):
            key = f"{engine.host}:{engine.pid}"
            self.environments[key] = env
            if self.store is not None:
                self.store.environment(key, msgpack.packb(env))

    def finished(self, task, engine, header: dict) -> None:
        """Keep what the result's header says ran `task`, where and when, as it came: the
        record is made when it is asked for (`record`), not for every task."""
        task.provenance = (header.get("prov"), engine.id, engine.host, engine.pid,
                           header.get("started"), header.get("completed"))


def record(task) -> dict | None:
    """`task`'s provenance record (None until it finished on an engine)."""
    if task.provenance is None:
        return None
    said, engine_id, host, pid, started, completed = task.provenance
    said = said if isinstance(said, dict) else {}
    fields = {k: said.get(k) if isinstance(said.get(k), (str, type(None))) else None for k in FIELDS}
    fields.update(fn=fields["fn"] or task.function, engine_id=engine_id, host=host, pid=pid,
                  started=started, completed=completed)
    return fields


def _record(task_id, label, status, submitted, prov: dict) -> dict:
    return {"msg_id": task_id, "label": label, "status": status, "submitted": submitted, **prov}


def provenance(ctl, client: bytes, request: dict):
    """The control action: provenance records (of `label`, or all) and engine environments,
    and whether they are complete. With a store, read off the loop."""
    label = request.get("label")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"provenance: 'label' must be a string or null, not {label!r}")
    known = dict(ctl.provenance.environments)
    store = ctl.ledger.store
    if store is None:
        records = [_record(t.id, t.label, t.status, t.submitted, record(t))
                   for t in ctl.ledger.tasks.values()
                   if t.provenance is not None and (label is None or t.label == label)]
        missing = ["the controller keeps no durable ledger (start it with --db sqlite): only "
                   "tasks still in its memory are here" + (
                       f"; {ctl.ledger.culled} finished tasks were culled" if ctl.ledger.culled else "")]
        return _reply(ctl.cluster_id, records, known, missing)

    def read():
        where, args = ("WHERE provenance IS NOT NULL" + (" AND label = ?" if label is not None else ""),
                       (label,) if label is not None else ())
        rows = store.rows(where, args, "msg_id, label, status, submitted, provenance")
        return ([_record(r["msg_id"], r["label"], r["status"], r["submitted"],
                         msgpack.unpackb(r["provenance"])) for r in rows], store.environments())

    def then(found) -> dict:
        records, stored = found
        missing = [store.problem] if store.problem else []
        return _reply(ctl.cluster_id, records, {**stored, **known}, missing)

    return Later(read, then)


def _reply(cluster_id: str, records: list, environments: dict, missing: list) -> dict:
    used = {f"{r['host']}:{r['pid']}" for r in records}
    return {"cluster_id": cluster_id, "records": records,
            "environments": {k: v for k, v in environments.items() if k in used},
            "complete": not missing, "missing": missing}
