#!/usr/bin/env bash
# bench-slurm.sh - what `run --executor slurm` costs the coordinator, per
# step, against the local pool, on a private single-node Slurm
# (tests/slurm-cluster.sh; needs root, slurm-wlm and munge).
#
# The job: STEPS (default 100) independent small creates (a 1 MiB qcow2
# each), so every step is one Slurm job and none waits on another.  Each
# round runs it from scratch twice: with the local pool (-j = the CPUs)
# and with --executor slurm (Slurm runs up to the CPUs at once as well).
# Printed, as medians over the rounds:
#  - wall time of each, and (slurm - local) / STEPS: the whole price of a
#    step as a Slurm job (submission, Slurm's own launch of a batch job,
#    polling, merging the result);
#  - the coordinator's CPU time (its own and its children's: sbatch,
#    squeue, scancel) per step, local and slurm;
#  - the submission phase: from the first sbatch's start to the last's
#    end, per step; and the merge latency: from the last step's log write
#    to the coordinator's exit; together, per step, the coordinator's own
#    share of the wall time (the rest is Slurm launching batch jobs);
#  - squeue calls: their number against the run's seconds, and the
#    shortest gap between two (it must be >= 1 s: one call a second,
#    whatever the number of jobs).
# sbatch and squeue are counted and timed by a shim put first in PATH for
# the slurm runs only (a bash wrapper that logs and execs the real one;
# its own start-up, a few ms a call, is inside the figures).
#
# usage: bench/bench-slurm.sh [--rounds N] [--dir DIR] [--out FILE]
#   STEPS=N in the environment changes the job's size (default 100).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_setup bench-slurm 3 -- "$@"
STEPS=${STEPS:-100}
DF=$(readlink -f "$DF")

mkdir -p "$W/slurm"
rc=0
env_file=$("$ROOT/tests/slurm-cluster.sh" start "$W/slurm" 2>"$W/slurm.err") || rc=$?
if ((rc == 77)); then
    echo "bench-slurm: skipped: $(cat "$W/slurm.err")"
    exit 0
elif ((rc != 0)); then
    echo "bench-slurm: the cluster did not start:" >&2
    cat "$W/slurm.err" >&2
    exit 1
fi
trap '"$ROOT/tests/slurm-cluster.sh" stop "$W/slurm" >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
# shellcheck source=/dev/null
. "$env_file"

# the job
{
    echo "version: 1"
    echo "name: bench-slurm"
    echo "steps:"
    for ((i = 1; i <= STEPS; i++)); do
        printf '  - {id: s%03d, op: create, image: out/s%03d.qcow2, format: qcow2, size: 1M}\n' "$i" "$i"
    done
} >"$W/job.yaml"

# the shim: log "NAME START END" per call, then exit as the real one did
mkdir -p "$W/shim"
for cmd in sbatch squeue; do
    real=$(command -v "$cmd")
    cat >"$W/shim/$cmd" <<SH
#!/bin/bash
t0=\$(date +%s.%N)
"$real" "\$@"
rc=\$?
echo "$cmd \$t0 \$(date +%s.%N)" >>"$W/calls.log"
exit \$rc
SH
    chmod +x "$W/shim/$cmd"
done

# timed JOB ARGS...: run diskforge, print "WALL USER SYS" (seconds; CPU of
# diskforge and every process it waited for)
timed() {
    "$PY" - "$DF" "$@" <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
if rc != 0:
    sys.exit(f"diskforge exited {rc}")
print(f"{wall:.3f} {ru.ru_utime:.3f} {ru.ru_stime:.3f}")
PY
}

fresh() { rm -rf "$W/out" "$W/.diskforge" "$W/job.report.json" "$W/calls.log"; }

echo "diskforge --executor slurm benchmark: $STEPS independent steps," \
     "$ROUNDS rounds, $(bench_machine "$W"), load $(cut -d' ' -f1-3 /proc/loadavg)"
loc_wall=() loc_cpu=() sl_wall=() sl_cpu=() sub=() merge=() polls=() gaps=() rate=()
for ((r = 1; r <= ROUNDS; r++)); do
    fresh
    read -r w u s < <(timed run "$W/job.yaml" -j "$(nproc)")
    loc_wall+=("$w")
    loc_cpu+=("$(echo "$u + $s" | bc -l)")
    fresh
    t_end=""
    read -r w u s < <(PATH="$W/shim:$PATH" timed run "$W/job.yaml" --executor slurm)
    t_exit=$(now)
    sl_wall+=("$w")
    sl_cpu+=("$(echo "$u + $s" | bc -l)")
    # the newest result was merged (and removed); the newest log is the
    # last job's: its mtime is when that step's process ended
    t_end=$(find "$W/.diskforge/slurm" -name '*.out' -printf '%T@\n' | sort -g | tail -1)
    merge+=("$(echo "$t_exit - $t_end" | bc -l)")
    read -r s1 s2 n_sq gap < <(awk '
        $1 == "sbatch" { if (!f || $2 < f) f = $2; if ($3 > l) l = $3 }
        $1 == "squeue" { n++; if (p != "") { g = $2 - p; if (mg == "" || g < mg) mg = g }; p = $2 }
        END { printf "%s %s %d %s\n", f, l, n, (mg == "" ? "-" : mg) }' "$W/calls.log")
    sub+=("$(echo "($s2 - $s1) / $STEPS" | bc -l)")
    polls+=("$n_sq")
    gaps+=("$gap")
    rate+=("$(echo "$n_sq / $w" | bc -l)")
    n_ok=$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(isinstance(s.get("slurm_job_id"), int) for s in r["steps"]))' "$W/job.report.json")
    [[ $n_ok == "$STEPS" ]] || { echo "bench-slurm: only $n_ok of $STEPS steps have a slurm_job_id" >&2; exit 1; }
    printf 'round %d: local %.2f s, slurm %.2f s, %d squeue calls (shortest gap %s s)\n' \
        "$r" "${loc_wall[-1]}" "$w" "$n_sq" "$gap"
done
med() { printf '%s\n' "$@" | median; }
lw=$(med "${loc_wall[@]}") sw=$(med "${sl_wall[@]}")
{
    echo
    echo "| figure (median of $ROUNDS) | local pool | --executor slurm |"
    echo "|---|---|---|"
    awk -v a="$lw" -v b="$sw" 'BEGIN { printf "| wall time, %d steps | %.2f s | %.2f s |\n", '"$STEPS"', a, b }'
    awk -v a="$lw" -v b="$sw" -v n="$STEPS" 'BEGIN { printf "| wall per step | %.1f ms | %.1f ms |\n", 1000 * a / n, 1000 * b / n }'
    awk -v a="$lw" -v b="$sw" -v n="$STEPS" 'BEGIN { printf "| slurm - local, per step | | %.1f ms |\n", 1000 * (b - a) / n }'
    awk -v a="$(med "${loc_cpu[@]}")" -v b="$(med "${sl_cpu[@]}")" -v n="$STEPS" \
        'BEGIN { printf "| coordinator CPU per step (with children) | %.2f ms | %.2f ms |\n", 1000 * a / n, 1000 * b / n }'
    awk -v a="$(med "${sub[@]}")" 'BEGIN { printf "| submission (sbatch) per step | | %.1f ms |\n", 1000 * a }'
    awk -v a="$(med "${merge[@]}")" 'BEGIN { printf "| last step ended -> coordinator exit | | %.2f s |\n", a }'
    awk -v a="$(med "${sub[@]}")" -v b="$(med "${merge[@]}")" -v n="$STEPS" \
        'BEGIN { printf "| coordinator wall per step (submission + end latency / steps) | | %.1f ms |\n", 1000 * (a + b / n) }'
    awk -v a="$(med "${polls[@]}")" -v b="$(med "${rate[@]}")" \
        'BEGIN { printf "| squeue calls (per second of run) | | %d (%.2f/s) |\n", a, b }'
    echo "| shortest gap between two squeue calls | | $(printf '%s\n' "${gaps[@]}" | sort -g | head -1) s |"
} | tee -a "${OUT:-/dev/null}"
