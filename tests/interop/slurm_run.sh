#!/usr/bin/env bash
# slurm_run.sh - `diskforge run --executor slurm` on a private single-node
# Slurm (tests/slurm-cluster.sh: needs root, slurm-wlm and munge; skipped,
# saying why, elsewhere).  SPEC section 7:
# - the lab job and the golden job (where mke2fs exists) give files
#   byte-identical (sha256 of every output) to a local run of the same
#   job; every step of the report has a slurm_job_id; the report is valid;
# - Slurm did the ordering: by `scontrol show job` (StartTime, EndTime,
#   asked while Slurm still knows the jobs), no step started before a step
#   it depends on ended;
# - an up-to-date rerun submits nothing: no slurm_job_id, no new log, no
#   new job known to Slurm;
# - a failing step: exit 1, its error from the step's result, its
#   dependents skipped, a pending independent job cancelled (skipped) and
#   a running one finished, no temporary left, nothing of ours queued;
#   with --keep-going the independent steps run;
# - a job killed outright (SIGKILL, no result file): the step fails with
#   ESLURM naming the Slurm job, scontrol's state and its log;
# - SIGINT during a long step: exit 130, report "interrupted", no
#   temporary left, and squeue holds none of our jobs;
# - sbatch failing (the controller unreachable): exit 1, the step fails
#   with ESLURM and sbatch's message, nothing is submitted;
# - a --set value with quotes, spaces, $, %, ` reaches the step as it
#   was given, and a --slurm-arg reaches sbatch as one word; run
#   --untrusted makes the steps untrusted;
# - --executor with another name, or --slurm-arg without slurm: exit 2;
# - no sanitizer report in any job's log (an ASan build runs its steps
#   under ASan too).
. "$(dirname "$0")/lib.sh"
need_jsonschema
slurm_start
cd "$T_TMP"
say "cluster $DF_SLURM_CLUSTER up; daemons $T_SLURM_PIDS"
DISKFORGE=$(readlink -f "$DISKFORGE")
jobs=$(jobs_copy)

# jobs_known: how many jobs Slurm knows (any state; MinJobAge keeps them)
jobs_known() { squeue -h -t all -o %i | wc -l; }
# ours_queued NAME: our jobs of job NAME still queued (pending, running)
ours_queued() { squeue -h -o %j | grep -c "^diskforge:$1:" || true; }
# sums DIR: "HASH  PATH" of every file under DIR, paths relative to it
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
temps_in() { find "$@" -name '.*.df-*.tmp' 2>/dev/null | head -5; }
logs_of() { find "$1/.diskforge/slurm" -name '*.out' 2>/dev/null | wc -l; }
# slurm_times REPORT: "ID START END JOBID" per submitted step, from
# scontrol's record of its Slurm job
slurm_times() {
    local id jid line
    while read -r id jid; do
        line=$(scontrol -o show job "$jid")
        printf '%s %s %s %s\n' "$id" \
            "$(grep -o ' StartTime=[^ ]*' <<<"$line" | cut -d= -f2)" \
            "$(grep -o ' EndTime=[^ ]*' <<<"$line" | cut -d= -f2)" "$jid"
    done < <(rjson "$1" '"\n".join("%s %s" % (s["id"], s["slurm_job_id"]) for s in r["steps"] if "slurm_job_id" in s)')
}

job_list="lab"
command -v mke2fs >/dev/null && job_list="lab golden-image"
for job in $job_list; do
    set_case "$job: local and slurm"
    yaml="$jobs/$job.yaml"
    df_ok run "$yaml" --set "out=$T_TMP/local/$job" --report "$T_TMP/$job.local.json" || continue
    t0=$(date +%s%N)
    df_ok run "$yaml" --executor slurm --set "out=$T_TMP/slurm/$job" \
        --report "$T_TMP/$job.slurm.json" || { show "$DF_OUT" 40; continue; }
    ms=$((($(date +%s%N) - t0) / 1000000))
    n=$(rjson "$job.slurm.json" 'len(r["steps"])')
    say "$job: $n steps under Slurm in $ms ms"
    echo "$job: $n steps, --executor slurm $ms ms" >>"$T_OUT/slurm_run.txt"
    report_ok "$job.slurm.json"
    expect_eq "every step succeeded" \
        "$(rjson "$job.slurm.json" 'r["summary"]["succeeded"]')" "$n"
    expect_eq "every step has an integer slurm_job_id" \
        "$(rjson "$job.slurm.json" 'sum(isinstance(s.get("slurm_job_id"), int) for s in r["steps"])')" "$n"
    expect_eq "the local report has no slurm_job_id" \
        "$(rjson "$job.local.json" 'sum("slurm_job_id" in s for s in r["steps"])')" 0
    sums "local/$job" >"$job.local.sums"
    sums "slurm/$job" >"$job.slurm.sums"
    expect_true "some outputs to compare" test -s "$job.local.sums"
    expect_true "every output is byte-identical to the local run's" \
        diff "$job.local.sums" "$job.slurm.sums"
    expect_eq "the report's sha256 are the files'" \
        "$(rjson "$job.slurm.json" 'sorted(o["sha256"] for s in r["steps"] for o in s["outputs"])')" \
        "$(rjson "$job.local.json" 'sorted(o["sha256"] for s in r["steps"] for o in s["outputs"])')"
    expect_true "each step's log is in .diskforge/slurm" \
        test "$(logs_of "$jobs")" -ge "$n"
    expect_eq "no result or script left beside the logs" \
        "$(find "$jobs/.diskforge/slurm" -name '*.result.json' -o -name '*.sh' | wc -l)" 0

    set_case "$job: Slurm did the ordering"
    slurm_times "$job.slurm.json" >"$job.times"
    expect_eq "scontrol knows every job" "$(awk '$2 != "" && $3 != ""' "$job.times" | wc -l)" "$n"
    # every edge: the dependent's StartTime is no earlier than the
    # dependency's EndTime (ISO times compare as strings)
    expect_eq "no step started before a step it needs ended" "$("$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
t = {l.split()[0]: l.split()[1:3] for l in open(sys.argv[2])}
bad = [f"{s['id']} started {t[s['id']][0]} before {d} ended {t[d][1]}"
       for s in r["steps"] for d in s["needs"] if t[s["id"]][0] < t[d][1]]
edges = sum(len(s["needs"]) for s in r["steps"])
print("; ".join(bad) or f"ok ({edges} edges)")' "$job.slurm.json" "$job.times")" \
        "ok ($(rjson "$job.slurm.json" 'sum(len(s["needs"]) for s in r["steps"])') edges)"

    set_case "$job: an up-to-date rerun"
    logs=$(logs_of "$jobs")
    known=$(jobs_known)
    df_ok run "$yaml" --executor slurm --set "out=$T_TMP/slurm/$job" \
        --report "$T_TMP/$job.again.json" || continue
    report_ok "$job.again.json"
    expect_eq "every step up to date" \
        "$(rjson "$job.again.json" 'r["summary"]["up_to_date"]')" "$n"
    expect_eq "no slurm_job_id" \
        "$(rjson "$job.again.json" 'sum("slurm_job_id" in s for s in r["steps"])')" 0
    expect_eq "no new log" "$(logs_of "$jobs")" "$logs"
    expect_eq "no new Slurm job" "$(jobs_known)" "$known"
done

# ---- a failing step ----
# bad fails about 2 s in, while "long" still sleeps and "after-long" waits
# on it: without --keep-going the pending job is cancelled (skipped), the
# running one finishes; with --keep-going both run.
set_case "a failing step"
mkdir -p fail
cat > fail/job.yaml <<'YAML'
version: 1
name: slurm-fail
steps:
  - {id: base, op: create, image: out/base.qcow2, format: qcow2, size: 64M}
  - {id: bad, op: check, image: out/missing.qcow2, needs: [base]}
  - {id: after-bad, op: overlay, image: out/ab.qcow2, backing: out/base.qcow2, needs: [bad]}
  - {id: later, op: digest, image: out/ab.qcow2}
  - {id: long, op: command, argv: [sleep, "8"]}
  - {id: after-long, op: create, image: out/al.qcow2, format: qcow2, size: 1M, needs: [long]}
YAML
run_df run fail/job.yaml --executor slurm
expect_eq "exit" "$DF_RC" 1 "$DF_ERR"
r=fail/job.report.json
report_ok "$r"
expect_eq "statuses" "$(rjson "$r" '" ".join(s["status"] for s in r["steps"])')" \
    "succeeded failed skipped skipped succeeded skipped"
expect_eq "bad's error code, from its result" "$(rjson "$r" 'r["steps"][1]["error"]["code"]')" ENOENT
expect_true "bad's message names the image" \
    grep -q missing.qcow2 <<<"$(rjson "$r" 'r["steps"][1]["error"]["message"]')"
expect_true "after-bad skipped because of bad" \
    grep -q "'bad', which failed" <<<"$(rjson "$r" 'r["steps"][2]["error"]["message"]')"
expect_true "after-long, pending, was cancelled: not started" \
    grep -q "stopped after step 'bad' failed" <<<"$(rjson "$r" 'r["steps"][5]["error"]["message"]')"
expect_eq "after-long never ran" "$(rjson "$r" 'r["steps"][5]["started_at"]')" None
expect_eq "run status" "$(rjson "$r" 'r["status"]')" failed
expect_eq "no temporary left" "$(temps_in fail)" ""
expect_eq "none of our jobs queued" "$(ours_queued slurm-fail)" 0
expect_true "stderr names the failed step" grep -q "step 'bad' failed" "$DF_ERR"

set_case "a failing step, --keep-going"
rm -rf fail/out fail/.diskforge/*.db
run_df run fail/job.yaml --executor slurm --keep-going
expect_eq "exit" "$DF_RC" 1 "$DF_ERR"
report_ok "$r"
expect_eq "statuses" "$(rjson "$r" '" ".join(s["status"] for s in r["steps"])')" \
    "succeeded failed skipped skipped succeeded succeeded"
expect_eq "none of our jobs queued" "$(ours_queued slurm-fail)" 0

# ---- a job that dies without writing its result ----
set_case "a job killed outright"
mkdir -p kill
cat > kill/job.yaml <<'YAML'
version: 1
name: slurm-kill
steps:
  - {id: victim, op: command, argv: [sleep, "60"]}
  - {id: after, op: create, image: out/a.qcow2, format: qcow2, size: 1M, needs: [victim]}
YAML
t0=$SECONDS
"$DISKFORGE" run kill/job.yaml --executor slurm >kill.out 2>kill.err &
pid=$!
T_PIDS+=("$pid")
jid=""
until [[ -n $jid ]] || ((SECONDS - t0 > 60)); do
    jid=$(squeue -h -t R -o '%i %j' | awk '$2 == "diskforge:slurm-kill:victim" { print $1 }')
    sleep 0.1
done
if expect_true "the victim's job runs" test -n "$jid"; then
    # SIGKILL to the batch step (diskforge step itself): no result can be
    # written, and Slurm does not count it as cancelled
    scancel --batch --signal=KILL "$jid"
    rc=0
    wait "$pid" || rc=$?
    T_PIDS=()
    expect_eq "exit" "$rc" 1 kill.err
    r=kill/job.report.json
    report_ok "$r"
    expect_eq "victim: ESLURM" "$(rjson "$r" 'r["steps"][0]["error"]["code"]')" ESLURM
    msg=$(rjson "$r" 'r["steps"][0]["error"]["message"]')
    expect_true "the message names the Slurm job $jid" grep -q "Slurm job $jid left the queue" <<<"$msg"
    expect_true "... scontrol's state" grep -q "JobState=" <<<"$msg"
    expect_true "... and its log" grep -q "victim-$jid.out" <<<"$msg"
    expect_eq "after: skipped" "$(rjson "$r" 'r["steps"][1]["status"]')" skipped
    expect_eq "none of our jobs queued" "$(ours_queued slurm-kill)" 0
fi

# ---- SIGINT during a long step ----
set_case "SIGINT during a long step"
mkdir -p int
cat > int/job.yaml <<'YAML'
version: 1
name: slurm-int
steps:
  - {id: big, op: create, image: out/big.raw, format: raw, size: 8G, preallocation: full}
  - {id: over, op: overlay, image: out/over.qcow2, backing: out/big.raw, backing_format: raw}
  - {id: wait, op: command, argv: [sleep, "300"]}
YAML
t0=$SECONDS
"$DISKFORGE" run int/job.yaml --executor slurm >int.out 2>int.err &
pid=$!
T_PIDS+=("$pid")
# until the long step writes and all three jobs are queued
until { compgen -G 'int/out/.big.raw.df-*.tmp' >/dev/null &&
        (($(ours_queued slurm-int) == 3)); } || ((SECONDS - t0 > 60)); do
    sleep 0.05
done
if expect_true "the long step started writing" \
    test -n "$(compgen -G 'int/out/.big.raw.df-*.tmp' || true)"; then
    expect_eq "three jobs queued before the signal" "$(ours_queued slurm-int)" 3
    kill -INT "$pid"
    rc=0
    wait "$pid" || rc=$?
    T_PIDS=()
    took=$((SECONDS - t0))
    expect_eq "exit" "$rc" 130 int.err
    expect_true "done within 60 s ($took s)" test "$took" -lt 60
    r=int/job.report.json
    report_ok "$r"
    expect_eq "report status" "$(rjson "$r" 'r["status"]')" interrupted
    expect_eq "big: cancelled" "$(rjson "$r" 'r["steps"][0]["error"]["code"]')" ECANCELED
    expect_eq "over: skipped" "$(rjson "$r" 'r["steps"][1]["status"]')" skipped
    expect_eq "squeue holds none of our jobs" "$(ours_queued slurm-int)" 0
    expect_eq "no temporary left" "$(temps_in int)" ""
    expect_true "no output" test ! -e int/out/big.raw
    expect_true "stderr says SIGINT" grep -q "interrupted by SIGINT" int.err
fi

# ---- sbatch failing: the controller unreachable ----
set_case "the controller unreachable"
mkdir -p down
cp fail/job.yaml down/job.yaml
known=$(jobs_known)
sed 's/^SlurmctldPort=.*/SlurmctldPort=1/' "$SLURM_CONF" >down.conf
SLURM_CONF=$T_TMP/down.conf run_df run down/job.yaml --executor slurm
expect_eq "exit" "$DF_RC" 1 "$DF_ERR"
r=down/job.report.json
report_ok "$r"
expect_eq "statuses" "$(rjson "$r" '" ".join(s["status"] for s in r["steps"])')" \
    "failed skipped skipped skipped skipped skipped"
expect_eq "base: ESLURM" "$(rjson "$r" 'r["steps"][0]["error"]["code"]')" ESLURM
expect_true "base: sbatch's message" \
    grep -q "Unable to contact slurm controller" <<<"$(rjson "$r" 'r["steps"][0]["error"]["message"]')"
expect_eq "nothing submitted: no log" "$(logs_of down)" 0
expect_eq "nothing submitted: no new Slurm job" "$(jobs_known)" "$known"
expect_eq "no slurm_job_id" "$(rjson "$r" 'sum("slurm_job_id" in s for s in r["steps"])')" 0

# ---- words that a shell would mangle ----
set_case "--set and --slurm-arg reach the step and sbatch as they are"
mkdir -p quote
cat > quote/job.yaml <<'YAML'
version: 1
name: slurm-quote
vars: {out: out}
steps:
  - {id: a, op: create, image: "${out}/a.qcow2", format: qcow2, size: 1M}
  - id: b
    op: command
    argv: [sh, -c, 'printf "%s" "$0" > "$1"', "${out}", "${out}/b.txt"]
    outputs: ["${out}/b.txt"]
    needs: [a]
YAML
word='o u'"'"'t $HOME "x" %j; `id`'
df_ok run quote/job.yaml --executor slurm --set "out=$word" \
    "--slurm-arg=--comment=two words; \$x" || show "$DF_OUT"
expect_eq "the step got the --set value" "$(cat "quote/$word/b.txt" 2>/dev/null)" "$word"
jid=$(rjson quote/job.report.json 'r["steps"][1]["slurm_job_id"]')
expect_true "sbatch got the --slurm-arg as one word" \
    grep -qF 'Comment=two words; $x' <<<"$(scontrol -o show job "$jid")"

# ---- run --untrusted reaches every step ----
set_case "--untrusted"
mkdir -p evil
df_ok create -f qcow2 -b /etc/passwd -F raw evil/evil.qcow2 1M
cat > evil/job.yaml <<'YAML'
version: 1
name: slurm-evil
steps:
  - {id: leak, op: convert, from: evil.qcow2, from_format: qcow2, to: out/leak.raw, format: raw}
YAML
run_df run evil/job.yaml --executor slurm --untrusted
expect_eq "exit" "$DF_RC" 1 "$DF_ERR"
expect_true "the step refused the backing file" \
    grep -qF "'/etc/passwd'" <<<"$(rjson evil/job.report.json 'r["steps"][0]["error"]["message"]')"
expect_true "no output" test ! -e evil/out/leak.raw

# ---- the jobs' logs ----
set_case "the jobs' logs"
expect_eq "no sanitizer report in any job's log" \
    "$(grep -lE 'Sanitizer|runtime error:' "$jobs"/.diskforge/slurm/*.out \
        {fail,kill,int}/.diskforge/slurm/*.out 2>/dev/null | head -3)" ""

# ---- bad usage ----
set_case "bad usage"
run_df run fail/job.yaml --executor pbs
expect_eq "--executor pbs: exit" "$DF_RC" 2
expect_true "names the executor" grep -q "pbs" "$DF_ERR"
run_df run fail/job.yaml --slurm-arg=--partition=x
expect_eq "--slurm-arg without slurm: exit" "$DF_RC" 2
finish
