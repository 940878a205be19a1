"""Inside an allocation: which scheduler, which hosts, how many engines and which starter;
and the controller's address chosen by reachability."""

from __future__ import annotations

import pytest

from ipcluster.launchers import allocation, network


def test_slurm_allocation_uses_srun_on_its_nodes():
    a = allocation.detect({"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node[01-03,07],gpu1",
                           "SLURM_TASKS_PER_NODE": "2(x3),1,4"})
    assert (a.scheduler, a.job_id, a.starter, a.tasks) == ("slurm", "42", "srun", 11)
    assert a.hosts == ["node01", "node02", "node03", "node07", "gpu1"]
    assert allocation.detect({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4", "SLURM_NODELIST": "a"}).tasks == 4


def test_pbs_sge_and_lsf_allocations_use_mpiexec(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1\nn1\nn2\n")
    a = allocation.detect({"PBS_JOBID": "7.pbs", "PBS_NODEFILE": str(nodefile)})
    assert (a.scheduler, a.hosts, a.tasks, a.starter) == ("pbs", ["n1", "n2"], 3, "mpiexec")
    pe = tmp_path / "pe"
    pe.write_text("n1 4 all.q@n1 UNDEFINED\nn2 2 all.q@n2 UNDEFINED\n")
    a = allocation.detect({"JOB_ID": "9", "PE_HOSTFILE": str(pe)})
    assert (a.scheduler, a.hosts, a.tasks) == ("sge", ["n1", "n2"], 6)
    a = allocation.detect({"LSB_JOBID": "5", "LSB_MCPU_HOSTS": "h1 4 h2 2"})
    assert (a.scheduler, a.hosts, a.tasks) == ("lsf", ["h1", "h2"], 6)
    assert allocation.detect({"LSB_JOBID": "5", "LSB_HOSTS": "h1 h1 h2"}).tasks == 3
    assert allocation.detect({"HOME": "/root"}) is None


def test_the_controller_address_follows_the_route_to_the_hosts():
    assert network.choose_ip(None) == "127.0.0.1"
    assert network.choose_ip(["localhost", "127.0.0.1"]) == "127.0.0.1"
    assert network.choose_ip(["anything"], ip="10.1.2.3") == "10.1.2.3"
    assert network.choose_ip(["x"], interface="lo") == "127.0.0.1"
    with pytest.raises(ValueError, match=r"interface 'nope0' has no IPv4 address; candidates: .*lo \(127.0.0.1"):
        network.choose_ip(None, interface="nope0")
    with pytest.raises(ValueError, match=r"cannot resolve engine host 'no-such-host.invalid'.*candidates"):
        network.choose_ip(["no-such-host.invalid"])
