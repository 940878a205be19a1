"""Provenance: the ledger's record of one task of a labelled sweep, exported as W3C PROV-JSON by
``ipcluster provenance``, matches what actually ran: the function sent (name and code hash), the
bytes of its call and result, the engine (id, pid, host) and its environment, the times."""

from __future__ import annotations

import json
import marshal
import os
import socket
import subprocess
import sys
import warnings
from datetime import datetime

import pytest
import xxhash

from ipcluster import serialize
from ipcluster.provenance import IncompleteProvenance
from tests.conftest import start_cluster


def simulate(x):
    import os
    import socket

    return {"x": x, "y": x * x, "pid": os.getpid(), "host": socket.gethostname()}


def xxh(content, buffers=()) -> str:
    h = xxhash.xxh3_128(content)
    for b in buffers:
        h.update(b)
    return h.hexdigest()


def seconds(value) -> float:
    value = value["$"] if isinstance(value, dict) else value
    return datetime.fromisoformat(value).timestamp()


def plain(value):
    return value["$"] if isinstance(value, dict) else value


def test_the_export_of_a_labelled_sweep_matches_what_ran(tmp_path):
    cluster = start_cluster(2, db="sqlite")
    try:
        rc = cluster.client
        view = rc.load_balanced_view(label="prov-sweep")
        ars = [view.apply_async(simulate, x) for x in range(6)]
        results = [ar.get(timeout=30) for ar in ars]
        rc.load_balanced_view(label="other").apply_sync(simulate, 99)  # not in the export
        out = tmp_path / "prov.json"
        done = subprocess.run([sys.executable, "-m", "ipcluster", "provenance", cluster.cluster_id,
                               "--label", "prov-sweep", "-o", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "6 tasks" in done.stderr and "incomplete" not in done.stderr
        doc = json.loads(out.read_text())
    finally:
        cluster.stop_cluster_sync()

    assert len(doc["activity"]) == 6
    ledger = doc["entity"]["ipc:ledger"]
    assert plain(ledger["ipc:complete"]) in (True, "true") and ledger["ipc:missing"] == "nothing"

    ar, result = ars[2], results[2]  # one task, field by field
    activity = doc["activity"][f"ipc:task-{ar.msg_ids[0]}"]
    assert activity["ipc:function"] == f"{__name__}.simulate"
    assert activity["ipc:label"] == "prov-sweep" and activity["ipc:status"] == "ok"
    assert int(plain(activity["ipc:engine_id"])) == ar.metadata["engine_id"]
    # metadata times are datetimes, as ipyparallel's; .seconds() gives them as the ledger has them
    assert abs(seconds(activity["prov:startTime"]) - ar.metadata.seconds("started")) < 1e-5
    assert abs(seconds(activity["prov:endTime"]) - ar.metadata.seconds("completed")) < 1e-5
    task = f"ipc:task-{ar.msg_ids[0]}"

    def related(kind: str, role: str, other: str) -> list[str]:
        return [r[other] for r in doc.get(kind, {}).values() if r[role] == task]

    agent_id, = related("wasAssociatedWith", "prov:activity", "prov:agent")
    agent = doc["agent"][agent_id]
    assert int(plain(agent["ipc:pid"])) == result["pid"] and agent["ipc:host"] == result["host"]
    assert result["host"] == socket.gethostname()
    assert agent["ipc:python"] == sys.version.split()[0] and agent["ipc:executable"] == sys.executable
    packages = json.loads(agent["ipc:packages"])
    assert "ipcluster" in packages and "xxhash" in packages
    code = xxhash.xxh3_128(marshal.dumps(simulate.__code__)).hexdigest()  # the function sent
    call = xxh(*serialize.dumps_call(simulate, (2,), {}))  # its call, as the client pickled it
    assert sorted(related("used", "prov:activity", "prov:entity")) == sorted(
        [f"ipc:code-{code}", f"ipc:call-{call}"])
    assert doc["entity"][f"ipc:code-{code}"]["ipc:function"] == f"{__name__}.simulate"
    generated = [r["prov:entity"] for r in doc["wasGeneratedBy"].values() if r["prov:activity"] == task]
    assert generated == [f"ipc:result-{xxh(*serialize.dumps(result))}"]  # the result's bytes


def test_without_a_durable_ledger_the_export_says_it_is_incomplete():
    cluster = start_cluster(1)
    try:
        rc = cluster.client
        rc[0].apply_sync(simulate, 1)
        with pytest.warns(IncompleteProvenance, match="--db"):
            doc = json.loads(rc.provenance().serialize(format="json"))
    finally:
        cluster.stop_cluster_sync()
    ledger = doc["entity"]["ipc:ledger"]
    assert plain(ledger["ipc:complete"]) in (False, "false") and "--db" in ledger["ipc:missing"]
    assert len(doc["activity"]) == 1
