#!/usr/bin/env bash
# reproducible.sh - `run --expect-reproducible` and `run --events` (SPEC §6):
#   - the jobs in jobs/ rebuilt with --expect-reproducible give the same
#     bytes: exit 0, every step forced and "reproducible": true;
#   - SOURCE_DATE_EPOCH is part of a command step's definition (only);
#   - a job whose command writes the time fails, exit 1, naming that step
#     (and only it) on stderr, "reproducible": false in the report; on a
#     first run (no record) the field is null;
#   - --events FILE: every line is one JSON object; run-start first and
#     run-finish last; times are numbers that never decrease; each step has
#     exactly one step-finish; an up-to-date step has no step-start; each
#     step-start comes before its step-finish;
#   - --events -: stdout holds only the events (progress and the summary go
#     to stderr);
#   - `write` decides data or zeros by content, not by the host file's
#     holes: one file copied with cp --sparse=never and --sparse=always,
#     each written into a fresh qcow2, gives byte-identical images;
#   - the reports match docs/report.schema.json.
. "$(dirname "$0")/lib.sh"
need_qemu
need_jsonschema
JOBS=$(jobs_copy) # the job files, run from a copy

# --- jobs/ rebuild to the same bytes --------------------------------------------
for job in $(job_files); do
    set_case "$job"
    O=$T_TMP/$job
    df_ok run "$JOBS/$job.yaml" -j 2 --set out="$O" --state "$O.db" --report "$O.1.json" || continue
    run_df run "$JOBS/$job.yaml" -j 2 --set out="$O" --state "$O.db" --report "$O.2.json" --expect-reproducible
    expect_eq "exit" "$DF_RC" 0 "$DF_ERR"
    report_ok "$O.2.json"
    expect_eq "every step ran, forced, reproducible" \
        "$(rjson "$O.2.json" "sorted(set((s['status'], s['reason'], s['reproducible']) for s in r['steps']))")" \
        "[('succeeded', 'forced', True)]"
done

# --- a job that writes the time ----------------------------------------------------
set_case "time-stamped job"
cd "$T_TMP"
cat > stamp.yaml <<'YAML'
version: 1
steps:
  - {id: fixed, op: command, shell: "echo same > fixed.txt", outputs: [fixed.txt]}
  - {id: stamp, op: command, shell: "date +%s%N > stamp.txt", outputs: [stamp.txt]}
  - {id: img, op: create, image: img.qcow2, size: 1M}
YAML
run_df run stamp.yaml --expect-reproducible --report s1.json
expect_eq "first run: exit" "$DF_RC" 0 "$DF_ERR"
expect_eq "first run: nothing to compare with" \
    "$(rjson s1.json "sorted(set(str(s['reproducible']) for s in r['steps']))")" "['None']"
run_df run stamp.yaml --expect-reproducible --report s2.json
expect_eq "second run: exit" "$DF_RC" 1
expect_true "names the step" grep -q "step 'stamp' is not reproducible" "$DF_ERR"
expect_eq "names only that step" "$(grep -c 'not reproducible' "$DF_ERR")" 1
expect_eq "report" "$(rjson s2.json "[(s['id'], s['reproducible']) for s in r['steps']]")" \
    "[('fixed', True), ('stamp', False), ('img', True)]"
expect_eq "report status" "$(rjson s2.json "r['status']")" failed
report_ok s1.json
report_ok s2.json
# SOURCE_DATE_EPOCH is part of a command's definition, and only a command's
export SOURCE_DATE_EPOCH=1234567890
df_ok run stamp.yaml --report s3.json
unset SOURCE_DATE_EPOCH
expect_eq "SOURCE_DATE_EPOCH set: reruns the commands only" \
    "$(rjson s3.json "[(s['id'], s['reason']) for s in r['steps']]")" \
    "[('fixed', 'definition-changed'), ('stamp', 'definition-changed'), ('img', 'up-to-date')]"

# --- write: the same bytes, sparse or not, give the same image -----------------------
set_case "write by content"
head -c 1M /dev/urandom > src.bin
head -c 2M /dev/zero >> src.bin
head -c 300000 /dev/urandom >> src.bin
head -c 70000 /dev/zero >> src.bin
printf 'tail' >> src.bin
cp --sparse=never src.bin dense.bin
cp --sparse=always src.bin holes.bin
expect_true "the copies differ in allocation" test "$(alloc_of dense.bin)" -gt "$(alloc_of holes.bin)"
for f in dense holes; do
    cat > w-$f.yaml <<YAML
version: 1
steps:
  - {id: img, op: create, image: $f.qcow2, size: 8M}
  - {id: put, op: write, image: $f.qcow2, from: $f.bin, offset: 1M}
YAML
    df_ok run w-$f.yaml --report w-$f.json
done
expect_true "the two images are byte-identical" cmp -s dense.qcow2 holes.qcow2
qcheck dense.qcow2
q_ok qemu-img compare dense.qcow2 holes.qcow2

# --- events ------------------------------------------------------------------------
set_case "events"
mkdir -p ev && cd ev
cat > ev.yaml <<'YAML'
version: 1
steps:
  - {id: base, op: create, image: base.qcow2, size: 64M}
  - {id: data, op: fill, image: base.qcow2, length: 32M, pattern: "random:1"}
  - {id: ov, op: overlay, image: ov.qcow2, backing: base.qcow2}
  - {id: sum, op: digest, image: ov.qcow2}
  - {id: bad, op: command, argv: ["false"]}
  - {id: after-bad, op: info, image: base.qcow2, needs: [bad]}
YAML
cat > "$T_TMP/check_events.py" <<'PY'
import json, sys
# check_events.py EVENTS REPORT: the stream against the SPEC and the report
lines = open(sys.argv[1]).read().splitlines()
report = json.load(open(sys.argv[2]))
ev = [json.loads(l) for l in lines]          # every line is one object
assert all(isinstance(e, dict) for e in ev)
assert ev[0]['event'] == 'run-start' and ev[-1]['event'] == 'run-finish', 'run-start first, run-finish last'
times = [e['time'] for e in ev]
assert all(isinstance(t, (int, float)) for t in times)
assert times == sorted(times), 'times never decrease'
names = {'run-start', 'step-start', 'step-progress', 'step-finish', 'run-finish'}
assert all(e['event'] in names for e in ev)
for s in report['steps']:
    mine = [e for e in ev if e.get('step') == s['id']]
    fin = [e for e in mine if e['event'] == 'step-finish']
    start = [i for i, e in enumerate(ev) if e.get('step') == s['id'] and e['event'] == 'step-start']
    assert len(fin) == 1, s['id'] + ': one step-finish'
    assert fin[0]['status'] == s['status'] and fin[0]['reason'] == s['reason'], s['id']
    if s['status'] in ('up_to_date', 'skipped'):
        assert not start, s['id'] + ': no step-start'
    else:
        assert len(start) == 1 and start[0] < ev.index(fin[0]), s['id']
assert ev[-1]['status'] == report['status'] and ev[-1]['summary'] == report['summary']
print(len(ev))
PY
run_df run ev.yaml -j 2 --keep-going --events ev1.jsonl --report r1.json
expect_eq "first run: exit (a step fails)" "$DF_RC" 1
report_ok r1.json
expect_true "first run: events check" "$PY" "$T_TMP/check_events.py" ev1.jsonl r1.json
run_df run ev.yaml -j 2 --keep-going --events - --report r2.json
cp "$DF_OUT" ev2.jsonl
expect_true "second run, --events -: events check" "$PY" "$T_TMP/check_events.py" ev2.jsonl r2.json
expect_true "stdout holds only events" "$PY" -c 'import json,sys; [json.loads(l)["event"] for l in open(sys.argv[1])]' ev2.jsonl
expect_true "the summary went to stderr" grep -q "up to date in" "$DF_ERR"
expect_eq "up-to-date steps in the stream" \
    "$("$PY" -c 'import json,sys; print(sorted(e["step"] for e in map(json.loads, open(sys.argv[1])) if e.get("status") == "up_to_date"))' ev2.jsonl)" \
    "['base', 'data', 'ov', 'sum']"
finish
