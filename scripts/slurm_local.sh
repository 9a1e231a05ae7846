#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, to try and test `--executor slurm` (docs/scale-out.md).
#
#   scripts/slurm_local.sh up       install slurm-wlm + munge if missing (apt-get), write /etc/slurm/slurm.conf,
#                                   start munged, slurmctld, slurmd, wait until `sinfo` shows the node idle
#   scripts/slurm_local.sh down     stop the daemons this script started (by their pid files)
#   scripts/slurm_local.sh status   what runs, and `sinfo`
#
# The cluster: one node (this host, `nproc` CPUs, `free` memory), one partition `local` (the default), the
# daemons and the jobs as root, proctrack/linuxproc, task/none, select/cons_tres (CR_Core), no cgroups, no
# accounting database (finished jobs stay visible to `scontrol show job` for MinJobAge=30 min). The daemons are
# started directly (containers have no systemd), never through systemctl.
#
# Idempotent: `up` on a running cluster only checks it; `down` with nothing running says so. Files: the config
# /etc/slurm/slurm.conf carries the first line "# written by lcdata scripts/slurm_local.sh"; an existing
# slurm.conf without it is moved to slurm.conf.bak-<time> (said on stderr), never overwritten. State, logs and
# pid files are under /var/lib/slurm-lcdata, /var/log/slurm-lcdata and /run/slurm-lcdata.
# Environment: SLURM_LOCAL_TIMEOUT (seconds to wait for an idle node, default 60), SLURM_LOCAL_NO_INSTALL=1
# (fail instead of installing).
set -euo pipefail

MARK="# written by lcdata scripts/slurm_local.sh"
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
STATE=/var/lib/slurm-lcdata
LOGS=/var/log/slurm-lcdata
RUN=/run/slurm-lcdata
PARTITION=local
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (it installs packages, writes $CONF and starts the daemons as root); run: sudo $0 $1"
}

ours() { [ -f "$CONF" ] && head -n 1 "$CONF" | grep -qF "$MARK"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} = 0 ] && return 0
    [ "${SLURM_LOCAL_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${missing[*]} (SLURM_LOCAL_NO_INSTALL=1); install them: apt-get install ${missing[*]}"
    command -v apt-get >/dev/null || die "missing packages: ${missing[*]}, and no apt-get here to install them; install Slurm (slurmctld, slurmd, sbatch) and munge yourself"
    say "installing ${missing[*]} (apt-get)"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            slurm-wlm slurm-client munge; } >"/tmp/slurm_local-apt.log" 2>&1; then
        tail -n 20 /tmp/slurm_local-apt.log >&2
        die "apt-get could not install slurm-wlm slurm-client munge (log: /tmp/slurm_local-apt.log)"
    fi
}

write_conf() {
    local host cpus mem_mb conf_tmp
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(free -m | awk '/^Mem:/ {print $2}')
    mem_mb=$(( mem_mb * 9 / 10 ))  # leave the OS its share; slurmd refuses a node with less than configured
    mkdir -p "$CONF_DIR"
    if [ -f "$CONF" ] && ! ours; then
        local bak; bak="$CONF.bak-$(date -u +%Y%m%dT%H%M%SZ)"
        mv "$CONF" "$bak"
        echo "slurm_local: $CONF was not written by this script: moved to $bak (restore it after 'down')" >&2
    fi
    conf_tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
    cat >"$conf_tmp" <<EOF
$MARK: a one-node cluster for tests; 'scripts/slurm_local.sh down' stops it
ClusterName=lcdata-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_min_interval=100000
ReturnToService=2
MinJobAge=1800
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 644 "$conf_tmp"
    mv "$conf_tmp" "$CONF"
    say "wrote $CONF ($host: $cpus CPUs, $mem_mb MB, partition $PARTITION)"
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    [ -f /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || /usr/sbin/create-munge-key -f >/dev/null; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 20); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "munged runs but 'munge -n | unmunge' fails (see /var/log/munge/munged.log)"
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n 1; }

up() {
    need_root up
    install_packages
    if alive "$RUN/slurmctld.pid" && alive "$RUN/slurmd.pid"; then
        case "$(node_state)" in idle|mixed|allocated) say "already up"; sinfo; return 0 ;; esac
    fi
    for d in slurmctld slurmd; do  # a daemon this script did not start holds the ports: refuse
        if pgrep -x "$d" >/dev/null && ! alive "$RUN/$d.pid"; then
            die "a $d not started by this script runs (pid $(pgrep -x "$d" | head -n 1)); stop it first (is another Slurm configured here?)"
        fi
    done
    write_conf
    mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN"
    start_munge
    if ! alive "$RUN/slurmctld.pid"; then
        slurmctld -i || die "slurmctld did not start (log: $LOGS/slurmctld.log)"
    else
        scontrol reconfigure >/dev/null 2>&1 || true
    fi
    alive "$RUN/slurmd.pid" || slurmd || die "slurmd did not start (log: $LOGS/slurmd.log)"
    local t0=$SECONDS state=""
    while [ $(( SECONDS - t0 )) -lt "$TIMEOUT" ]; do
        state=$(node_state)
        case "$state" in
            idle|mixed|allocated) say "up in $(( SECONDS - t0 )) s"; sinfo; return 0 ;;
            down*|drain*|fail*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    sinfo >&2 || true
    tail -n 5 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
    die "the node is not idle after $TIMEOUT s (state '${state:-no answer}'; logs in $LOGS)"
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
    local name=$1 f=$2 pid
    alive "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    kill "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || { say "stopped $name ($pid)"; rm -f "$f"; return 0; }; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
    say "killed $name ($pid)"
}

down() {
    need_root down
    if ! alive "$RUN/slurmctld.pid" && ! alive "$RUN/slurmd.pid" && ! alive /run/munge/munged.pid; then
        say "not running (nothing this script started)"; return 0
    fi
    # jobs first, so that no task is left running without its daemon
    if alive "$RUN/slurmctld.pid"; then scancel --state=pending,running --partition="$PARTITION" 2>/dev/null || true; sleep 1; fi
    stop_pid slurmd "$RUN/slurmd.pid"
    stop_pid slurmctld "$RUN/slurmctld.pid"
    if [ -f /run/munge/munged.pid ] && alive /run/munge/munged.pid; then
        # munged is only stopped if this script started the cluster (it may serve another Slurm otherwise)
        if ours; then stop_pid munged /run/munge/munged.pid; fi
    fi
    say "down ($CONF kept; 'up' reuses it)"
}

status() {
    local any=0
    for d in slurmctld slurmd; do
        if alive "$RUN/$d.pid"; then say "$d running (pid $(cat "$RUN/$d.pid"))"; any=1; else say "$d not running"; fi
    done
    [ $any = 1 ] || return 3
    sinfo && squeue
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
