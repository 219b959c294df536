#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying profiles/slurm without a real cluster.
#
#   scripts/slurm-local.sh up       # install Debian's slurmctld/slurmd/slurm-client/munge where missing,
#                                   # write work/slurm-local/slurm.conf, start the daemons, wait for "idle"
#   scripts/slurm-local.sh plugin   # install the SLURM executor plugin (version from requirements.lock)
#                                   # into work/slurm-plugin/, outside the venv (see below)
#   scripts/slurm-local.sh env      # prints the exports a shell needs to use the cluster and the plugin
#   scripts/slurm-local.sh status   # sinfo / squeue
#   scripts/slurm-local.sh down     # stops exactly the daemons `up` started (munged only if it started it)
#
# Needs root (apt-get, daemons as root).  No systemd: the daemons are started directly.  Everything the
# cluster writes lives in work/slurm-local/ (config, state, logs, pid files).  Clients find the config
# through SLURM_CONF (`eval "$(scripts/slurm-local.sh env)"`), except `srun` inside a job: the plugin's
# job step (snakemake-executor-plugin-slurm-jobstep) removes every SLURM_* variable but the job's id
# before it calls srun, so `up` also links /etc/slurm/slurm.conf to it while the cluster runs (only
# where no such file exists; `down` removes the link).
#
# The node advertises FAKE_GPUS GPUs as a generic resource with no device behind it, so that the GPU
# requests of profiles/slurm (`--gpus=1` on sbatch) are scheduled exactly as on a real cluster; the jobs of
# the ci profile run on the CPU (device: cpu) whatever they were given.
#
# The executor plugin is deliberately NOT installed into the project's venv: Snakemake imports every
# installed executor plugin at start-up and the SLURM one runs `scontrol show config`, which waits ~9 s
# whenever a SLURM client is installed but no controller answers, i.e. on every `make tables` of this
# machine once the cluster is down.  work/slurm-plugin/ is put on PYTHONPATH only by `env` (and
# tests/test_slurm.py) for the snakemake process that submits to the cluster.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="${SURFBENCH_SLURM_DIR:-$ROOT/work/slurm-local}"
PLUGIN_DIR="${SURFBENCH_SLURM_PLUGIN_DIR:-$ROOT/work/slurm-plugin}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
FAKE_GPUS="${SURFBENCH_SLURM_FAKE_GPUS:-2}"
CONF="$D/slurm.conf"
export SLURM_CONF="$CONF"

log() { echo "slurm-local: $*" >&2; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || { log "cannot install ${missing[*]}: no apt-get"; return 1; }
    [ "$(id -u)" -eq 0 ] || { log "cannot install ${missing[*]}: not root"; return 1; }
    log "installing ${missing[*]}"
    # policy-rc.d keeps the packages' init scripts from starting daemons we would not own
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"${TMPDIR:-/tmp}/slurm-local-apt.log" 2>&1 || {
        apt-get update -qq >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"${TMPDIR:-/tmp}/slurm-local-apt.log" 2>&1
    } || { log "apt-get install failed (${TMPDIR:-/tmp}/slurm-local-apt.log)"; return 1; }
}

write_conf() {
    local host node
    host="$(hostname)"
    # `slurmd -C` prints this machine's NodeName=... CPUs=... RealMemory=... line; the node name must be
    # the hostname.  Memory is kept ~10 % under the physical amount (slurmd refuses a node that has less).
    node="$(slurmd -C | head -1 | sed -E "s/^NodeName=[^ ]+ //")"
    local mem
    mem="$(sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' <<<"$node")"
    node="$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((mem * 9 / 10))/" <<<"$node")"
    mkdir -p "$D/state" "$D/spool" "$D/log"
    cat >"$CONF" <<EOF
# written by scripts/slurm-local.sh (one-node cluster on $host); not for a real cluster
ClusterName=surfbench-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MpiDefault=none
# no systemd / cgroup delegation in a container: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# no accounting storage (so no sacct): finished jobs stay visible to squeue for MinJobAge seconds,
# far longer than the executor plugin's polling interval (--slurm-status-command squeue)
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
GresTypes=gpu
NodeName=$host $node Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=gpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # $FAKE_GPUS stand-in GPUs: character devices equal to /dev/null (slurmd counts a GPU per device
    # file), schedulable, never used (see the header of this script)
    mkdir -p "$D/dev"
    local i
    for i in $(seq 0 $((FAKE_GPUS - 1))); do
        [ -e "$D/dev/gpu$i" ] || mknod "$D/dev/gpu$i" c 1 3
    done
    echo "NodeName=$host Name=gpu File=$D/dev/gpu[0-$((FAKE_GPUS - 1))] Count=$FAKE_GPUS" >"$D/gres.conf"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_idle() {
    local host state i
    host="$(hostname)"
    for i in $(seq 1 120); do
        state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
        case "$state" in
        idle | mix | alloc) log "node $host is $state"; return 0 ;;
        inval* | drain* | down*) [ "$i" -gt 10 ] && break ;;
        esac
        sleep 0.5
    done
    log "node $host did not become idle (last state: '${state:-no answer}'); logs in $D/log"
    return 1
}

up() {
    [ "$(id -u)" -eq 0 ] || { log "needs root"; return 1; }
    install_packages
    if pid_alive "$D/slurmctld.pid" || pid_alive "$D/slurmd.pid"; then
        log "already running ($D)"; wait_idle; return
    fi
    write_conf
    : >"$D/started"
    # munge: use the system's key and socket (the SLURM clients talk to the default socket)
    if ! pgrep -x munged >/dev/null; then
        [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key; }
        mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
        runuser -u munge -- munged
        echo munged >>"$D/started"
    fi
    if [ ! -e /etc/slurm/slurm.conf ]; then
        mkdir -p /etc/slurm && ln -s "$CONF" /etc/slurm/slurm.conf && echo etc-link >>"$D/started"
    elif [ "$(readlink /etc/slurm/slurm.conf)" != "$CONF" ]; then
        log "warning: /etc/slurm/slurm.conf is not this cluster's: srun inside jobs will read it"
    fi
    slurmctld -c   # -c: start with a clean state (no jobs left from an earlier run)
    echo slurmctld >>"$D/started"
    slurmd
    echo slurmd >>"$D/started"
    wait_idle
}

stop_pid() { # name pidfile
    local pid i
    [ -f "$2" ] || return 0
    pid="$(cat "$2")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$2"
}

down() {
    [ -f "$D/started" ] || { log "nothing started by this script ($D/started missing)"; return 0; }
    if grep -qx slurmd "$D/started"; then stop_pid slurmd "$D/slurmd.pid"; fi
    if grep -qx slurmctld "$D/started"; then stop_pid slurmctld "$D/slurmctld.pid"; fi
    if grep -qx munged "$D/started"; then stop_pid munged /run/munge/munged.pid; fi
    if grep -qx etc-link "$D/started" && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
        rm -f /etc/slurm/slurm.conf
    fi
    rm -f "$D/started"
}

plugin() {
    # the versions pinned in requirements.lock; their dependencies (pandas, numpy, throttler,
    # snakemake-interface-*) are already in the venv at the locked versions, hence --no-deps
    if [ -d "$PLUGIN_DIR/snakemake_executor_plugin_slurm" ]; then return 0; fi
    "$PY" -m pip install --quiet --no-deps --target "$PLUGIN_DIR" --constraint "$ROOT/requirements.lock" \
        snakemake-executor-plugin-slurm snakemake-executor-plugin-slurm-jobstep
    log "executor plugin installed in $PLUGIN_DIR"
}

case "${1:-}" in
up) up ;;
down) down ;;
plugin) plugin ;;
env) echo "export SLURM_CONF='$CONF' PYTHONPATH='$PLUGIN_DIR'\${PYTHONPATH:+:\$PYTHONPATH}" ;;
status) sinfo; squeue ;;
*) echo "usage: $0 up|down|plugin|env|status" >&2; exit 2 ;;
esac
