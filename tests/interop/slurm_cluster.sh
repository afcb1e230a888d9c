#!/usr/bin/env bash
# slurm_cluster.sh - `diskforge step` as Slurm jobs on a private
# single-node cluster (tests/slurm-cluster.sh; needs root, slurm-wlm and
# munge, else skipped): a step submitted with `sbatch --parsable --wrap`
# runs and leaves a valid result file and its log; a dependent submitted
# up front with --dependency=afterok starts only after it; a step that
# fails makes its dependent (--kill-on-invalid-dep=yes) leave the queue
# without running; scancel of a long step delivers SIGTERM (result
# ECANCELED, no temporary left).  Stopping the cluster leaves none of the
# daemons it started alive (checked by PID).
. "$(dirname "$0")/lib.sh"
need_jsonschema
slurm_start
cd "$T_TMP"
say "cluster $DF_SLURM_CLUSTER up; daemons $T_SLURM_PIDS"

DISKFORGE=$(readlink -f "$DISKFORGE")
cat > job.yaml <<'YAML'
version: 1
name: slurm-tiny
steps:
  - {id: base, op: create, image: out/base.qcow2, format: qcow2, size: 64M}
  - {id: web, op: overlay, image: out/web.qcow2, backing: out/base.qcow2}
  - {id: bad, op: check, image: out/missing.qcow2}
  - {id: after_bad, op: overlay, image: out/ab.qcow2, backing: out/missing.qcow2, backing_format: qcow2, needs: [bad]}
  - {id: big, op: create, image: out/big.raw, format: raw, size: 8G, preallocation: full}
YAML
sum=$(sha_of job.yaml)
version=$("$DISKFORGE" --version | awk '{print $2}')
mkdir -p .diskforge/slurm

# submit ID [SBATCH_ARGS...]: sbatch one `diskforge step`, print its job id
submit() {
    local id=$1 cmd
    shift
    printf -v cmd 'exec %q step %q %q --result %q --expect-job-sha256 %q --expect-version %q' \
        "$DISKFORGE" "$T_TMP/job.yaml" "$id" "$T_TMP/$id.result.json" "$sum" "$version"
    sbatch --parsable --job-name "diskforge:slurm-tiny:$id" --chdir "$T_TMP" \
        --output "$T_TMP/.diskforge/slurm/$id-%j.out" "$@" --wrap "$cmd"
}
# gone JOB...: wait (up to 60 s) until none of the jobs is queued
gone() {
    local t0=$SECONDS
    while ((SECONDS - t0 < 60)); do
        [[ -z $(squeue -h -j "$(IFS=,; echo "$*")" -o %i 2>/dev/null) ]] && return 0
        sleep 0.2
    done
    return 1
}
state_of() { squeue -h -t all -j "$1" -o %T 2>/dev/null || echo unknown; }
not_before() { [[ -n $1 && -n $2 && ! $1 < $2 ]]; }
rfield() { rjson "$1" "$2" 2>/dev/null || echo "(unreadable $1)"; }

set_case "one step, then its dependent submitted up front"
t0=$(date +%s%N)
if j1=$(submit base) && j2=$(submit web --dependency "afterok:$j1" --kill-on-invalid-dep=yes); then
    expect_true "sbatch --parsable printed job ids ($j1, $j2)" \
        grep -qE '^[0-9]+ [0-9]+$' <<<"$j1 $j2"
    expect_true "both left the queue" gone "$j1" "$j2"
    echo "slurm: two dependent tiny steps, sbatch to both gone: $((($(date +%s%N) - t0) / 1000000)) ms" \
        >>"$T_OUT/slurm_cluster.txt"
    expect_eq "base: Slurm state" "$(state_of "$j1")" COMPLETED
    expect_eq "web: Slurm state" "$(state_of "$j2")" COMPLETED
    for id in base web; do
        expect_eq "$id: result status" "$(rfield "$id.result.json" 'r["status"]')" succeeded
        step_result_ok "$id.result.json"
    done
    expect_eq "web's output sha256 is the file's" \
        "$(rfield web.result.json 'r["outputs"][0]["sha256"]')" "$(sha_of out/web.qcow2)"
    expect_true "the log names the step" \
        grep -q "step 'base' succeeded" ".diskforge/slurm/base-$j1.out"
    expect_true "web started after base finished" "$PY" -c '
import json, sys
b, w = (json.load(open(f)) for f in sys.argv[1:3])
sys.exit(0 if w["started_at"] >= b["finished_at"] else 1)' base.result.json web.result.json
    end1=$(scontrol show job -o "$j1" | grep -o ' EndTime=[^ ]*' | cut -d= -f2)
    start2=$(scontrol show job -o "$j2" | grep -o ' StartTime=[^ ]*' | cut -d= -f2)
    expect_true "Slurm's records: web started ($start2) no earlier than base ended ($end1)" \
        not_before "$start2" "$end1"
else
    bad "sbatch refused the jobs: $j1 ${j2:-}"
fi

set_case "a failing step and its dependent"
if j3=$(submit bad) && j4=$(submit after_bad --dependency "afterok:$j3" --kill-on-invalid-dep=yes); then
    expect_true "both left the queue" gone "$j3" "$j4"
    expect_eq "bad: Slurm state" "$(state_of "$j3")" FAILED
    expect_eq "bad: result status" "$(rfield bad.result.json 'r["status"]')" failed
    expect_eq "bad: error code" "$(rfield bad.result.json 'r["error"]["code"]')" ENOENT
    step_result_ok bad.result.json
    expect_true "the log has the error" grep -q "missing.qcow2" ".diskforge/slurm/bad-$j3.out"
    expect_eq "after_bad: Slurm state" "$(state_of "$j4")" CANCELLED
    expect_true "after_bad never ran (no result file)" test ! -e after_bad.result.json
else
    bad "sbatch refused the jobs: $j3 ${j4:-}"
fi

set_case "scancel during a long step"
if j5=$(submit big); then
    t0=$SECONDS
    until compgen -G 'out/.big.raw.df-*.tmp' >/dev/null || ((SECONDS - t0 > 30)); do
        sleep 0.05
    done
    if expect_true "the step started writing" test -n "$(compgen -G 'out/.big.raw.df-*.tmp' || true)"; then
        sleep 0.2
        scancel "$j5"
        expect_true "it left the queue" gone "$j5"
        expect_eq "result status" "$(rfield big.result.json 'r["status"]')" failed
        expect_eq "result error" "$(rfield big.result.json 'r["error"]["code"]')" ECANCELED
        step_result_ok big.result.json
        expect_true "no temporary left" test -z "$(compgen -G 'out/.*.tmp' || true)"
        expect_true "no output" test ! -e out/big.raw
        expect_true "the log says SIGTERM" grep -q "interrupted by SIGTERM" ".diskforge/slurm/big-$j5.out"
    fi
else
    bad "sbatch refused the job: $j5"
fi

no_sanitizer_report .diskforge/slurm/*.out

set_case "stopping the cluster"
pids=$T_SLURM_PIDS
# not_ours PID: PID is gone, a zombie (dead, not yet reaped) or another program
not_ours() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ ${st:0:1} == Z ]] || ! grep -qxE 'munged|slurmctld|slurmd' "/proc/$1/comm" 2>/dev/null
}
t0=$(date +%s%N)
expect_true "tests/slurm-cluster.sh stop succeeded" slurm_stop
echo "slurm cluster stop: $((($(date +%s%N) - t0) / 1000000)) ms" >>"$T_OUT/slurm_cluster.txt"
for p in $pids; do
    expect_true "daemon PID $p is gone" not_ours "$p"
done
finish
