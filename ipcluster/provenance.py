"""Client API layer: what ran where, as W3C PROV: `rc.provenance(label=...)` and
``ipcluster provenance [CLUSTER_ID] [--label L] -o prov.json``.

The controller's ledger records, for each finished task, the function's qualified name and a
hash of its code, hashes of the call's bytes (function and arguments) and of the result's, the
engine (id, host, pid), its start and end times and the label; and once per engine its Python
and installed packages. Here they become a PROV document (the `prov` package):

    task (activity) ──used──▶ code (entity), call (entity)
         │  └─wasAssociatedWith─▶ engine (software agent: host, pid, python, packages)
         └◀─wasGeneratedBy── result (entity)

Without a durable ledger (``--db``), or after a store failure, the export says it is
incomplete: an entity ``ipc:ledger`` carries ``ipc:complete`` and what is missing, and a
warning is raised.
"""

from __future__ import annotations

import datetime
import json
import sys
import warnings

NAMESPACE = ("ipc", "urn:ipcluster:")


class IncompleteProvenance(UserWarning):
    """The export lacks records: no durable ledger, or records it could not keep."""


def _time(t) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) if isinstance(t, (int, float)) else None


def document(export: dict):
    """A PROV document (`prov.model.ProvDocument`) of the controller's provenance export."""
    from prov.model import PROV_TYPE, ProvDocument  # only when asked: it is not small

    doc = ProvDocument()
    doc.add_namespace(*NAMESPACE)
    doc.entity("ipc:ledger", {"ipc:cluster_id": export["cluster_id"], "ipc:complete": export["complete"],
                              "ipc:missing": "; ".join(export["missing"]) or "nothing",
                              "ipc:tasks": len(export["records"])})
    agents, entities = {}, {}

    def entity(identifier: str, attributes: dict):  # once each: tasks share code and data
        if identifier not in entities:
            entities[identifier] = doc.entity(identifier, attributes)
        return entities[identifier]

    for key, env in export["environments"].items():
        host, _, pid = key.rpartition(":")
        agents[key] = doc.agent(f"ipc:engine-{host}-{pid}", {
            PROV_TYPE: "prov:SoftwareAgent", "ipc:host": host, "ipc:pid": int(pid),
            "ipc:python": env.get("python", "?"), "ipc:executable": env.get("executable", "?"),
            "ipc:packages": json.dumps(env.get("packages", {}), sort_keys=True)})
    for r in export["records"]:
        key = f"{r['host']}:{r['pid']}"
        if key not in agents:  # its environment is not known (an engine of an older controller)
            agents[key] = doc.agent(f"ipc:engine-{r['host']}-{r['pid']}", {
                PROV_TYPE: "prov:SoftwareAgent", "ipc:host": r["host"], "ipc:pid": r["pid"]})
        task = doc.activity(f"ipc:task-{r['msg_id']}", _time(r["started"]), _time(r["completed"]), {
            "ipc:msg_id": r["msg_id"], "ipc:function": r["fn"] or "?", "ipc:label": r["label"] or "",
            "ipc:status": r["status"] or "?", "ipc:engine_id": r["engine_id"],
            "ipc:submitted": _time(r["submitted"]) or "?"})
        doc.wasAssociatedWith(task, agents[key])
        if r["code"]:
            doc.used(task, entity(f"ipc:code-{r['code']}", {
                "ipc:function": r["fn"] or "?", "ipc:code_hash": r["code"]}))
        doc.used(task, entity(f"ipc:call-{r['call']}", {"ipc:hash": r["call"]}))
        result = entity(f"ipc:result-{r['result']}", {"ipc:hash": r["result"]})
        doc.wasGeneratedBy(result, task, _time(r["completed"]))
    return doc


def of(client, label: str | None = None):
    """`client`'s cluster's provenance (of the tasks labelled `label`, or all)."""
    export = client._session.request("control", {"action": "provenance", "label": label})
    if not export["complete"]:
        warnings.warn("the provenance is incomplete: " + "; ".join(export["missing"]),
                      IncompleteProvenance, stacklevel=3)
    return document(export)


# -- ipcluster provenance ------------------------------------------------------------------------

def add_parser(sub) -> None:
    parser = sub.add_parser("provenance", help="export what ran where as W3C PROV-JSON")
    parser.add_argument("cluster_id", nargs="?", default=None,
                        help="cluster id or connection file (default: the one running cluster)")
    parser.add_argument("--label", default=None, help="only the tasks with this label")
    parser.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")


def cmd_provenance(args) -> int:
    from ipcluster.client import Client
    from ipcluster.errors import IpclusterError

    try:
        with Client(args.cluster_id, timeout=30) as rc:
            export = rc._session.request("control", {"action": "provenance", "label": args.label})
    except IpclusterError as exc:
        print(f"ipcluster: {exc}", file=sys.stderr)
        return 1
    text = document(export).serialize(format="json", indent=1)
    if args.output == "-":
        print(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)
    print(f"{len(export['records'])} tasks" + ("" if export["complete"] else
          " (incomplete: " + "; ".join(export["missing"]) + ")"), file=sys.stderr)
    return 0
