#!/usr/bin/env bash
# pipeline_errors.sh - job files that are wrong and steps that fail:
# `validate` prints every error as file:line:column and exits 2, `run` and
# `plan` refuse the same file without touching anything, a failing step
# makes exit 1 with its dependents skipped, --keep-going, atomic outputs
# (an existing target survives a failed step; no temporary is left), a
# command's odd output in a valid report, and usage errors.
. "$(dirname "$0")/lib.sh"
need_qemu
CHECK_REPORT="$T_SRC/tests/interop/pipeline_check_report.py"
"$PY" -c 'import jsonschema' 2>/dev/null ||
    { echo "SKIP: $T_NAME: python3-jsonschema missing"; exit 77; }
report_ok() {
    T_CHECKS=$((T_CHECKS + 1))
    "$PY" "$CHECK_REPORT" "$1" 2>"$T_TMP/.schema.err" ||
        { bad "$(basename "$1") does not match the report schema"; show "$T_TMP/.schema.err"; }
}
rjson() { "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }
cd "$T_TMP"

set_case "invalid job: every error, with positions"
cat > bad.yaml <<'YAML'
version: 1
vars: {out: o}
steps:
  - id: base
    op: create
    imgae: ${out}/a.qcow2
    size: 10Q
  - id: base
    op: overlya
  - id: c
    op: fill
    image: ${ot}/x.img
    pattern: 300
    needs: [bsae]
YAML
run_df validate bad.yaml
expect_eq "validate exit" "$DF_RC" 2
for want in "bad.yaml:6:5: error: unknown key 'imgae' (did you mean 'image'?)" \
            "bad.yaml:7:11: error: 'size': invalid size '10Q'" \
            "bad.yaml:8:9: error: duplicate step id 'base'" \
            "bad.yaml:9:9: error: unknown op 'overlya' (did you mean 'overlay'?)" \
            "bad.yaml:12:12: error: undefined variable 'ot' (did you mean 'out'?)" \
            "bad.yaml:13:14: error: invalid pattern '300'" \
            "bad.yaml:14:13: error: step 'c' needs 'bsae', which is not a step (did you mean 'base'?)"; do
    expect_true "message: $want" grep -qF "$want" "$DF_ERR"
done
expect_true "missing key not hidden" grep -qF "bad.yaml:4:5: error: step 'base': op 'create' needs 'image'" "$DF_ERR"
expect_eq "error lines" "$(grep -c ': error: ' "$DF_ERR")" 8
run_df run bad.yaml
expect_eq "run exit" "$DF_RC" 2
expect_true "run made nothing" test ! -e o -a ! -e bad.report.json
run_df plan bad.yaml
expect_eq "plan exit" "$DF_RC" 2

set_case "cycle"
cat > cycle.yaml <<'YAML'
version: 1
steps:
  - {id: a, op: create, image: a.img, size: 1M, needs: [b]}
  - {id: b, op: digest, image: a.img}
YAML
run_df validate cycle.yaml
expect_eq "exit" "$DF_RC" 2
expect_true "the cycle is printed" grep -qF "cycle.yaml:3:57: error: dependency cycle: a -> b -> a" "$DF_ERR"

set_case "YAML syntax error"
printf 'version: 1\nsteps:\n  - id: a\n    op: [info\n' > syntax.yaml
run_df validate syntax.yaml
expect_eq "exit" "$DF_RC" 2
expect_true "names the position" grep -qE '^syntax.yaml:[0-9]+:[0-9]+: error: YAML syntax error' "$DF_ERR"

set_case "a failing step"
"$DISKFORGE" create -f raw keep.img 1M >/dev/null
"$DISKFORGE" create -f raw other.img 1M >/dev/null
before=$(sha_of keep.img)
cat > fail.yaml <<'YAML'
version: 1
steps:
  - id: boom
    op: command
    argv: [sh, -c, 'echo "it said \"no\""; printf "\377\376\n"; exit 3']
  - id: after-boom
    op: info
    image: other.img
    needs: [boom]
  - id: replace-keep
    op: convert
    from: missing.img
    to: keep.img
    format: raw
  - id: independent
    op: create
    image: new.img
    format: raw
    size: 1M
YAML
run_df run fail.yaml -j 1 --report fail.json
expect_eq "exit" "$DF_RC" 1
report_ok fail.json
expect_eq "status" "$(rjson fail.json "r['status']")" failed
expect_eq "boom failed" "$(rjson fail.json "r['steps'][0]['status']")" failed
expect_true "exit status in the message" grep -q "exited with status 3" "$DF_ERR"
expect_eq "output captured" "$(rjson fail.json "r['steps'][0]['result']['output'].splitlines()[0]")" 'it said "no"'
expect_eq "dependent skipped" "$(rjson fail.json "r['steps'][1]['status']")" skipped
expect_eq "fail-fast: nothing new started" "$(rjson fail.json "r['steps'][3]['status']")" skipped
run_df run fail.yaml -j 1 --keep-going --report fail2.json
expect_eq "keep-going exit" "$DF_RC" 1
report_ok fail2.json
expect_eq "keep-going ran the independent step" "$(rjson fail2.json "r['steps'][3]['status']")" succeeded
expect_eq "convert failed" "$(rjson fail2.json "r['steps'][2]['error']['code']")" ENOENT
expect_eq "existing target untouched" "$(sha_of keep.img)" "$before"
expect_eq "no temporary files" "$(find . -name '*.tmp' | wc -l)" 0

set_case "usage"
run_df run
expect_eq "no job file" "$DF_RC" 2
run_df run fail.yaml -j 0
expect_eq "-j 0" "$DF_RC" 2
run_df run fail.yaml --set novalue
expect_eq "--set without =" "$DF_RC" 2
run_df plan fail.yaml --format svg
expect_eq "unknown plan format" "$DF_RC" 2
run_df validate missing.yaml
expect_eq "missing job file" "$DF_RC" 2
df_ok run --help
df_ok run fail.yaml --dry-run
expect_true "dry run prints the plan" grep -q "after boom: needs 'boom'" "$DF_OUT"
expect_true "dry run made nothing" test ! -e new.img -o -e fail2.json
finish
