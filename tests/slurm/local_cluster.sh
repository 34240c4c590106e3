#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for testing the SLURM profile for real:
#   tests/slurm/local_cluster.sh up|down|status
# munged, slurmctld and slurmd from Debian's slurm-wlm and munge packages (install them first:
# apt-get install slurm-wlm munge), run as root without systemd. Partitions cpu (default),
# knl and gpu stand for the three kinds of node; the one node has the features haswell, knl
# and gpu and two stand-in GPUs (GRES), so constraint= and gres= requests are honoured.
# Everything lives under $REALFAKE_SLURM_DIR (default /tmp/realfake-slurm); the only file
# outside it is the link /etc/slurm/slurm.conf, which client commands read.
set -euo pipefail

D="${REALFAKE_SLURM_DIR:-/tmp/realfake-slurm}"
CPUS="${REALFAKE_SLURM_CPUS:-$(nproc)}"
MEM_MB="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)"
CONF="$D/etc/slurm.conf"
SOCKET="$D/munge/munge.socket.2"

say() { echo "[local_cluster] $*" >&2; }
fail() {
  say "error: $*"
  exit 1
}

running() { # pidfile process-name: print the pid if that process is alive
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(tr -dc 0-9 <"$1")"
  [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] || return 1
  echo "$pid"
}

configure() {
  for cmd in munged slurmctld slurmd sbatch; do
    command -v "$cmd" >/dev/null || fail "$cmd not found: apt-get install slurm-wlm munge"
  done
  mkdir -p "$D"/{etc,ctld,slurmd,run,log,munge,dev}
  chmod 0755 "$D" "$D/munge" # munged refuses a socket folder that is not a+x
  for i in 0 1; do           # stand-in GPU devices: SLURM only checks that they exist
    [[ -e "$D/dev/nvidia$i" ]] || mknod "$D/dev/nvidia$i" c 195 "$i" 2>/dev/null || : >"$D/dev/nvidia$i"
  done
  echo "AutoDetect=off
NodeName=localhost Name=gpu Type=tesla File=$D/dev/nvidia[0-1]" >"$D/etc/gres.conf"
  # squeue (not sacct, which needs slurmdbd) reports job states: MinJobAge keeps finished jobs
  # visible long enough; EnforcePartLimits rejects at once a job the node can never run.
  cat >"$CONF" <<CONF
ClusterName=realfake
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/slurmd
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
MinJobAge=300
EnforcePartLimits=ALL
ReturnToService=2
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Features=haswell,knl,gpu Gres=gpu:tesla:2 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=knl Nodes=localhost MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
CONF
  mkdir -p /etc/slurm
  if [[ -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
    mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.orig
  fi
  ln -sfn "$CONF" /etc/slurm/slurm.conf
}

wait_for() { # seconds command...: retry the command every 0.2 s
  local n=$(($1 * 5))
  shift
  for ((i = 0; i < n; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

node_ready() { [[ "$(sinfo -h -N -o %t 2>/dev/null | head -1)" =~ ^(idle|mix|alloc)$ ]]; }

up() {
  configure
  if ! running "$D/run/munged.pid" munged >/dev/null; then
    [[ -s "$D/munge/munge.key" ]] || {
      head -c 1024 /dev/urandom >"$D/munge/munge.key"
      chmod 0400 "$D/munge/munge.key"
    }
    rm -f "$SOCKET" "$SOCKET.lock"
    munged --socket="$SOCKET" --key-file="$D/munge/munge.key" --pid-file="$D/run/munged.pid" \
      --log-file="$D/log/munged.log" --seed-file="$D/munge/seed" || fail "munged: see $D/log/munged.log"
  fi
  running "$D/run/slurmctld.pid" slurmctld >/dev/null || slurmctld -f "$CONF" || fail "slurmctld: see $D/log/slurmctld.log"
  running "$D/run/slurmd.pid" slurmd >/dev/null || slurmd -f "$CONF" -N localhost || fail "slurmd: see $D/log/slurmd.log"
  wait_for 60 node_ready || {
    scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    wait_for 30 node_ready || fail "node not idle; see $D/log/"
  }
  say "up: $(sinfo -h -o '%P %a %D %t' | tr '\n' ' ')(config $CONF)"
}

down() {
  if running "$D/run/slurmctld.pid" slurmctld >/dev/null; then
    scancel --user=root >/dev/null 2>&1 || true
    wait_for 15 test -z "$(squeue -h -t R,CG -o %i 2>/dev/null)" || true
  fi
  for name in slurmd slurmctld munged; do
    if pid="$(running "$D/run/$name.pid" "$name")"; then
      kill "$pid"
      wait_for 10 test ! -e "/proc/$pid" || kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [[ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" == "$CONF" ]]; then
    rm -f /etc/slurm/slurm.conf
    [[ ! -e /etc/slurm/slurm.conf.orig ]] || mv /etc/slurm/slurm.conf.orig /etc/slurm/slurm.conf
  fi
  say "down (logs in $D/log)"
}

status() {
  local rc=0
  for name in munged slurmctld slurmd; do
    if pid="$(running "$D/run/$name.pid" "$name")"; then echo "$name: running ($pid)"; else
      echo "$name: stopped"
      rc=1
    fi
  done
  [[ $rc != 0 ]] || { sinfo && node_ready; } || rc=1
  return $rc
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
  echo "usage: $0 up|down|status" >&2
  exit 2
  ;;
esac
