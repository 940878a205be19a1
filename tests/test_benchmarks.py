"""The benchmark suite's ipcluster-only quick path, so the harness cannot rot.

Runs two cases for ipcluster, the floor probe and ProcessPoolExecutor (no peer venvs are made) and checks the
shape of the JSON and the tables; it never asserts a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.peers.cases import BY_NAME, select

ROOT = Path(__file__).resolve().parent.parent


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


def test_the_sweep_memory_case_runs_a_short_sweep():
    # in a process of its own: the client's memory is the sweep's, not the test run's
    out = subprocess.run([sys.executable, "-m", "benchmarks.sweep_memory", "--tasks", "300"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tasks"] == 300 and set(result["peak_MiB"]) == {"controller", "client"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv", [["benchmarks.handlers"],
                                  ["benchmarks.cpu", "--floor", "--threads", "--roundtrips", "50",
                                   "--tasks", "200"],
                                  ["benchmarks.cpu", "--roundtrips", "50", "--tasks", "200"]],
                         ids=["handlers", "cpu-floor", "cpu"])
def test_the_cost_probes_print_their_figures(argv):
    out = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                         timeout=110, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    if argv[0] == "benchmarks.handlers":
        assert [line.split(":")[0] for line in out.stdout.splitlines()] == [
            "direct round trip", "load-balanced round trip", "task in batches of 16"]
    else:
        assert "round trip" in out.stdout and "CPU us per task" in out.stdout
