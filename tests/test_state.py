"""cluster.json and the one rule for which cluster a command means (`state.choose`)."""

from __future__ import annotations

import os

import pytest

from ipcluster import state
from ipcluster.errors import ConnectionFileError

LIVE = {101, 102, 103}  # controller pids taken as running in these tests


@pytest.fixture
def clusters(tmp_path, monkeypatch):
    monkeypatch.setenv("IPCLUSTER_DIR", str(tmp_path))
    monkeypatch.setattr(state, "alive", lambda pid, found=None: pid in LIVE)

    def make(cluster_id, controller_pid, **fields):
        (tmp_path / cluster_id).mkdir()
        state.write(cluster_id, {"controller_pid": controller_pid, **fields})
    return make


def test_the_cluster_named_is_the_one_meant(clusters):
    assert state.choose("anything") == "anything"


def test_the_only_running_cluster_is_meant_even_beside_a_stale_default(clusters):
    clusters("default", 999)  # its controller is gone: stale
    clusters("alpha", 101)
    assert state.status("default") == "stale"
    assert state.choose(None) == "alpha"


def test_default_is_meant_when_several_run(clusters):
    clusters("alpha", 101)
    clusters("default", 102)
    assert state.choose(None) == "default"


def test_several_running_and_no_default_is_an_error_listing_them(clusters):
    clusters("alpha", 101)
    clusters("beta", 102)
    clusters("old", 999, failed="NoEnginesRegistered: 0 of 4")
    with pytest.raises(ConnectionFileError, match=r"2 clusters are running \(alpha, beta\).*old \(failed\)"):
        state.choose(None)


def test_nothing_running_says_so_and_names_the_stale(clusters):
    with pytest.raises(ConnectionFileError, match="no running cluster"):
        state.choose(None)
    clusters("gone", 999)
    with pytest.raises(ConnectionFileError, match=r"only gone \(stale\).*ipcluster clean"):
        state.choose(None)


def test_an_owner_is_its_pid_and_start_time():
    me = state.Owner.this_process()
    assert me.alive()
    assert state.Owner.parse(str(me)) == me
    assert not state.Owner(me.pid, me.started - 100).alive()  # the pid, reused by another
    assert not state.Owner(0, 0.0).alive()
    with pytest.raises(ValueError, match="PID:START_TIME"):
        state.Owner.parse("1234")
    assert os.getpid() == me.pid


def test_engines_added_later_are_stopped_with_the_rest(clusters):
    clusters("alpha", 101, engine_pids=[1, 2], cancel=[["scancel", "7"]])
    state.add_engines("alpha", [3], ["scancel", "8"])
    state.add_engines("alpha", [4], None)
    assert state.engines(state.read("alpha")) == ([1, 2, 3, 4], [["scancel", "7"], ["scancel", "8"]])


def test_ipyparallels_ipcluster_command_on_path_is_explained(clusters, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ipcluster"  # what pip writes for ipyparallel's console script
    script.write_text("#!/usr/bin/python3\nimport sys\nfrom ipyparallel.cluster.app import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConnectionFileError, match=r"no running cluster.*the `ipcluster` command "
                       r"on PATH \(.*/bin/ipcluster\) is ipyparallel's.*python -m ipcluster"):
        state.choose(None)
    script.write_text("#!/usr/bin/python3\nfrom ipcluster.cli import main\n")
    with pytest.raises(ConnectionFileError) as ours:
        state.choose(None)
    assert "is ipyparallel's" not in str(ours.value)
