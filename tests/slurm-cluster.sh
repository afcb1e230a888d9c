#!/usr/bin/env bash
# tests/slurm-cluster.sh - a private single-node Slurm for the tests.
#
#   tests/slurm-cluster.sh start DIR   start munged, slurmctld and slurmd
#   tests/slurm-cluster.sh stop DIR    stop exactly those daemons, by PID
#
# DIR is an empty directory of the caller's (mktemp -d).  `start` writes
# everything there: munge's key, pid, log and seed files, slurm.conf,
# slurmctld's state, slurmd's spool, the daemons' logs; only munged's
# socket is elsewhere, in a directory of its own made with mktemp -d in
# $TMPDIR or /tmp (munged wants all its parents searchable by everyone).
# The ports are picked free at run time, the cluster and node names are
# unique, so two copies of the suite can each run a cluster on one machine.
#
# `start` returns once the node is idle and a probe job has run (slurmctld
# schedules nothing in its first seconds), and prints the path of
# DIR/env, a file for the caller to source.  It sets:
#   SLURM_CONF             DIR/slurm.conf (sbatch, squeue, scancel, sinfo,
#                          scontrol read it; it names the munge socket in
#                          AuthInfo=socket=..., so no other setting is
#                          needed by the client commands)
#   DF_SLURM_DIR           DIR
#   DF_SLURM_MUNGE_SOCKET  munged's socket (for `munge --socket=...`)
#   DF_SLURM_CLUSTER       the cluster name; DF_SLURM_NODE the node name
#   DF_SLURM_PARTITION     the one (default) partition
#   DF_SLURM_PIDS          the daemons' PIDs: munged slurmctld slurmd
# The PIDs are also in DIR/pids, "PID NAME" a line, which `stop` reads; it
# signals a PID only while /proc/PID/comm is still NAME (no reused PID).
#
# `stop` cancels the cluster's jobs, waits until none is queued, sends
# SIGTERM to slurmd, slurmctld and munged (in that order) by PID, and
# waits until each is gone (SIGKILL after 30 s; a zombie that init has not
# reaped yet counts as gone), and until slurmctld's child slurmscriptd is.
# It is safe to run twice, and after a `start` that failed half-way.
#
# Exit codes: 0 done; 77 Slurm cannot start here (not root, or slurm-wlm
# or munge not installed; a message on stderr says which): the caller
# skips its test (ctest SKIP_RETURN_CODE 77); 1 it should have worked but
# did not (a daemon died, the node never came up; the logs' tails are on
# stderr); 2 bad usage.
set -euo pipefail
export LC_ALL=C
PATH=$PATH:/usr/sbin:/sbin

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
(($# == 2)) || usage
cmd=$1
dir=$2
[[ -d $dir ]] || { echo "slurm-cluster: $dir: not a directory" >&2; exit 2; }
dir=$(cd "$dir" && pwd)

say() { echo "slurm-cluster: $*" >&2; }

# tails of the logs, for a failure's message
show_logs() {
    local f
    for f in "$dir"/log/*.log; do
        [[ -f $f ]] || continue
        echo "--- $f (last lines)" >&2
        tail -n 15 "$f" >&2
    done
}

# free_port: a TCP port free on 127.0.0.1 now (the kernel's pick)
free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# alive PID: PID runs (a zombie, dead but not yet reaped by init, is not)
alive() {
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${st:0:1} != Z ]]
}
# ours PID NAME: PID is alive and still runs NAME
ours() { alive "$1" && [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]]; }

# wait_gone PID SECONDS: until PID is gone; 1 if it outlived SECONDS
wait_gone() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        alive "$1" || return 0
        sleep 0.1
    done
    return 1
}

# start_daemon NAME CMD...: start CMD in the foreground of its own session,
# its output to DIR/log/NAME.out, and record its PID (a child of a
# non-interactive shell is no group leader, so setsid execs in place and
# $! is the daemon itself)
pids=()
start_daemon() {
    local name=$1
    shift
    setsid "$@" </dev/null >"$dir/log/$name.out" 2>&1 &
    pids+=("$!")
    echo "$! $name" >>"$dir/pids"
}

do_start() {
    local p
    if [[ $(id -u) -ne 0 ]]; then
        say "SKIP: Slurm's daemons must start as root (this is uid $(id -u))"
        exit 77
    fi
    for p in munged slurmctld slurmd sbatch squeue sinfo scancel python3; do
        if ! command -v "$p" >/dev/null 2>&1; then
            say "SKIP: $p not found (apt-get install slurm-wlm munge python3)"
            exit 77
        fi
    done
    if [[ -e $dir/pids ]]; then
        say "$dir already holds a cluster (stop it first)"
        exit 2
    fi
    umask 022
    mkdir -p "$dir/munge" "$dir/log" "$dir/state" "$dir/spool" "$dir/run"
    chmod 0755 "$dir/munge" "$dir/log" "$dir/run"
    # munged wants every directory above its socket searchable by all and
    # the socket's own at 0755, which the caller's private DIR (0700) is
    # not: the socket gets a directory of its own, named in DIR/sockdir
    # and removed by `stop`
    local sockdir
    local base=${TMPDIR:-/tmp}
    # a Unix socket's path holds at most 107 bytes
    ((${#base} <= 60)) || base=/tmp
    sockdir=$(mktemp -d "$base/df-munge.XXXXXX")
    chmod 0755 "$sockdir"
    echo "$sockdir" >"$dir/sockdir"
    local sock=$sockdir/socket
    : >"$dir/pids"

    # munged with its own key
    head -c 1024 /dev/urandom >"$dir/munge/key"
    chmod 0400 "$dir/munge/key"
    start_daemon munged munged -F --socket="$sock" --key-file="$dir/munge/key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/seed"
    for ((i = 0; i < 100; i++)); do
        [[ -S $sock ]] && break
        alive "${pids[0]}" || break
        sleep 0.05
    done
    if [[ ! -S $sock ]]; then
        say "munged did not start"
        cat "$dir/log/munged.out" >&2 || true
        show_logs
        do_stop >/dev/null 2>&1 || true
        exit 1
    fi

    # slurm.conf: unique names, free ports, everything inside DIR
    local id node cluster ctld_port d_port nodeline mem
    id=$(basename "$dir" | tr -cd 'a-z0-9' | tail -c 8)
    id=${id:-x}$$
    cluster=df${id}
    cluster=${cluster:0:30}
    node=dfn${id}
    node=${node:0:30}
    # the node's real layout, under our node name; RealMemory a little
    # below what slurmd measures (it drains a node that has less)
    nodeline=$(slurmd -C | head -n 1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$nodeline")
    nodeline=$(sed -e "s/^NodeName=[^ ]*/NodeName=$node NodeAddr=127.0.0.1 NodeHostname=localhost/" \
        -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$nodeline")
    export SLURM_CONF=$dir/slurm.conf
    # the ports are free when picked, not reserved: another program (or
    # another copy of this script) may take one before slurmctld or slurmd
    # binds it; then they die at once, and we try again with new ones
    local attempt
    for attempt in 1 2 3; do
        ctld_port=$(free_port)
        d_port=$(free_port)
        while [[ $d_port == "$ctld_port" ]]; do d_port=$(free_port); done
        cat >"$dir/slurm.conf" <<EOF
# generated by tests/slurm-cluster.sh: a private single-node cluster
ClusterName=$cluster
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
$nodeline State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
        start_daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
        start_daemon slurmd slurmd -D -f "$SLURM_CONF" -N "$node"
        wait_idle && break
        case $? in
        1) ;; # a daemon died: new ports
        *) show_logs; do_stop >/dev/null 2>&1 || true; exit 1 ;;
        esac
        if ((attempt == 3)); then
            say "slurmctld or slurmd died at start three times"
            show_logs
            do_stop >/dev/null 2>&1 || true
            exit 1
        fi
        say "slurmctld or slurmd died at start (a port taken?): again with other ports"
        stop_pids "${pids[2]} slurmd" "${pids[1]} slurmctld"
        pids=("${pids[0]}")
        head -n 1 "$dir/pids" >"$dir/pids.new" && mv "$dir/pids.new" "$dir/pids"
        rm -rf "${dir:?}/state" "${dir:?}/spool"
        mkdir -p "$dir/state" "$dir/spool"
    done

    cat >"$dir/env" <<EOF
export SLURM_CONF=$dir/slurm.conf
export DF_SLURM_DIR=$dir
export DF_SLURM_MUNGE_SOCKET=$sock
export DF_SLURM_CLUSTER=$cluster
export DF_SLURM_NODE=$node
export DF_SLURM_PARTITION=debug
export DF_SLURM_PIDS="${pids[*]}"
EOF

    # then for a probe job to run through (slurmctld schedules nothing in
    # its first seconds)
    local job state t0=$SECONDS
    if ! job=$(sbatch --parsable -J df-probe -o /dev/null -e /dev/null --wrap true 2>&1); then
        say "the probe job was refused: $job"
        show_logs
        do_stop >/dev/null 2>&1 || true
        exit 1
    fi
    job=${job%%;*}
    while ((SECONDS - t0 < 60)); do
        [[ -z $(squeue -h -j "$job" -o %i 2>/dev/null || true) ]] && break
        sleep 0.2
    done
    state=$(squeue -h -t all -j "$job" -o %T 2>/dev/null || true)
    if [[ $state != COMPLETED ]]; then
        say "the probe job $job did not complete within 60 s (state '${state}')"
        show_logs
        do_stop >/dev/null 2>&1 || true
        exit 1
    fi
    echo "$dir/env"
}

# wait_idle: until the node is idle (0); 1 a daemon of ours died; 2 not
# idle within 60 s (the state is said)
wait_idle() {
    local p state="" t0=$SECONDS
    while ((SECONDS - t0 < 60)); do
        for p in "${pids[@]}"; do
            alive "$p" || return 1
        done
        state=$(sinfo -h -N -n "$node" -o %t 2>/dev/null || true)
        [[ $state == idle ]] && return 0
        sleep 0.2
    done
    say "the node did not become idle within 60 s (state '${state}')"
    return 2
}

# stop_pids "PID NAME"...: SIGTERM each PID that still runs NAME, and wait
# until it is gone (SIGKILL after 30 s); 1 if one survived
stop_pids() {
    local p name entry rc=0
    for entry in "$@"; do
        read -r p name <<<"$entry"
        [[ $p =~ ^[0-9]+$ ]] || continue
        ours "$p" "$name" || continue
        kill -TERM "$p" 2>/dev/null || true
        if ! wait_gone "$p" 30; then
            say "PID $p ($name) outlived SIGTERM by 30 s: SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
            wait_gone "$p" 5 || { say "PID $p ($name) survived SIGKILL"; rc=1; }
        fi
    done
    return "$rc"
}

do_stop() {
    local p rc=0 list=()
    if [[ ! -f $dir/pids ]]; then
        say "$dir holds no cluster (no pids file)"
        return 0
    fi
    mapfile -t list <"$dir/pids"
    export SLURM_CONF=$dir/slurm.conf
    # no job may outlive the cluster: cancel them and wait for the queue
    # to empty while slurmd can still clean up their steps
    local ctl=() d=()
    read -r -a ctl <<<"${list[1]:-}" # "PID NAME"
    read -r -a d <<<"${list[2]:-}"
    if ((${#ctl[@]} == 2 && ${#d[@]} == 2)) &&
       ours "${ctl[0]}" "${ctl[1]}" && ours "${d[0]}" "${d[1]}"; then
        scancel --quiet -u "$(id -un)" 2>/dev/null || true
        local t0=$SECONDS
        while ((SECONDS - t0 < 20)); do
            [[ -z $(squeue -h -o %i 2>/dev/null || echo x) ]] && break
            sleep 0.2
        done
    fi
    # slurmctld's helper, slurmscriptd, ends with it: wait for that too
    local kids=() k
    if ((${#ctl[@]} == 2)) && ours "${ctl[0]}" "${ctl[1]}"; then
        mapfile -t kids < <(ps -o pid= --ppid "${ctl[0]}" 2>/dev/null || true)
    fi
    # slurmd, slurmctld, then munged: the reverse of their start
    local rev=()
    for ((i = ${#list[@]} - 1; i >= 0; i--)); do
        rev+=("${list[i]}")
    done
    stop_pids "${rev[@]}" || rc=1
    for k in "${kids[@]}"; do
        k=${k// /}
        [[ $k =~ ^[0-9]+$ ]] || continue
        wait_gone "$k" 10 || stop_pids "$k slurmscriptd" || rc=1
    done
    mv "$dir/pids" "$dir/pids.stopped"
    if [[ -f $dir/sockdir ]]; then
        p=$(cat "$dir/sockdir")
        [[ $p == */df-munge.* ]] && rm -rf "$p"
        rm -f "$dir/sockdir"
    fi
    return "$rc"
}

case $cmd in
start) do_start ;;
stop) do_stop ;;
*) usage ;;
esac
