"""The benchmark suite's ipcluster-only quick path, so the harness cannot rot.

Runs two cases for ipcluster, the floor probe and ProcessPoolExecutor (no peer venvs are made) and checks the
shape of the JSON and the tables; it never asserts a timing.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from benchmarks.peers.cases import BY_NAME, select


@pytest.mark.timeout(180)
def test_quick_ipcluster_run_writes_results(tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(["--quick", "--peers", "ipcluster,floor,pool", "--only", "roundtrip,scale",
                 "--json", str(out)])
    data = json.loads(out.read_text())
    assert code == 0, data["peers"]
    assert set(data["peers"]) == {"ipcluster", "floor", "pool"}
    assert data["mode"] == "quick"
    assert {"cpu", "cores", "memory_GiB", "python"} <= set(data["machine"])
    ours = data["peers"]["ipcluster"]["results"]
    assert set(ours) == {"roundtrip_median", "roundtrip_p90", "scale_register", "scale_tasks_8",
                         "scale_tasks_many", "scale_controller_memory"}
    for peer in ("pool", "floor"):
        assert set(data["peers"][peer]["results"]) == {"roundtrip_median", "roundtrip_p90"}
    for result in ours.values():
        assert isinstance(result["value"], (int, float)) and result["value"] > 0
    assert all({"goal", "measured", "met"} <= set(g) for g in data["goals"])
    printed = capsys.readouterr().out
    assert BY_NAME["roundtrip_median"].title in printed
    assert "ipcluster vs best other" in printed


def test_unknown_case_lists_the_cases():
    with pytest.raises(SystemExit, match="the cases are: start_2"):
        select(["no_such_case"], quick=False)


def test_the_sweep_memory_case_runs_a_short_sweep(capsys):
    from benchmarks import sweep_memory

    assert sweep_memory.main(["--tasks", "300"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["tasks"] == 300 and set(result["peak_MiB"]) == {"controller", "client"}
