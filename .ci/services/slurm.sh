#!/usr/bin/env bash
# Slurm on this machine for the tests: munged, slurmctld and slurmd, one node "localhost" with
# 8 CPUs declared, partition "debug". `slurm.sh packages|start|stop`. Needs root; no systemd.
set -euo pipefail
CONF=/etc/slurm/slurm.conf

packages() {
  command -v slurmd >/dev/null && command -v munged >/dev/null && return
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

configure() {
  install -d /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
  # config_overrides: 8 CPUs declared on a smaller machine, so 4-8 engines fit in one job
  cat > "$CONF" <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MinJobAge=300
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  packages
  configure
  install -d -o munge -g munge -m 0755 /run/munge
  alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
  alive /run/slurmctld.pid || /usr/sbin/slurmctld -c
  alive /run/slurmd.pid || /usr/sbin/slurmd -N localhost
  for _ in $(seq 300); do
    state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
    case "$state" in idle|mix|alloc) echo "slurm: node localhost $state"; return 0;; esac
    sleep 0.1
  done
  echo "slurm: node not idle after 30 s (state: ${state:-none}); see /var/log/slurm/" >&2
  return 1
}

stop() {
  scancel --user=root 2>/dev/null || true
  for pid in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    alive "$pid" && kill "$(cat "$pid")" || true
  done
}

"$@"
