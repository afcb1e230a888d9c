#!/usr/bin/env bash
# pipeline_interrupt.sh - SIGINT and SIGTERM during a run: running steps
# (an engine conversion and an external command) are cancelled within
# seconds, no temporary file is left, the target of the cancelled step
# does not appear, the report says "interrupted" and the exit code is 130.
. "$(dirname "$0")/lib.sh"
need_qemu
"$PY" -c 'import jsonschema' 2>/dev/null ||
    { echo "SKIP: $T_NAME: python3-jsonschema missing"; exit 77; }
cd "$T_TMP"
cat > long.yaml <<'YAML'
version: 1
vars: {out: out}
steps:
  - {id: src, op: create, image: "${out}/src.raw", format: raw, size: 2G}
  - {id: data, op: fill, image: "${out}/src.raw", pattern: "random:7"}
  - id: slow-convert
    op: convert
    from: ${out}/src.raw
    to: ${out}/dst.qcow2
    sparse_size: 0
  - {id: sleeper, op: command, shell: "echo $$$$ > sleeper.pid; exec sleep 120", needs: [data]}
  - {id: after, op: digest, image: "${out}/dst.qcow2"}
YAML
for sig in INT TERM; do
    set_case "SIG$sig"
    rm -rf out long.report.json sleeper.pid
    start=$(date +%s)
    "$DISKFORGE" run long.yaml -j 2 >run.out 2>run.err &
    pid=$!
    # wait for the conversion's temporary file to appear
    for _ in $(seq 1 1200); do
        compgen -G 'out/.dst.qcow2.df-*.tmp' >/dev/null && break
        sleep 0.05
    done
    expect_true "the conversion started" compgen -G 'out/.dst.qcow2.df-*.tmp'
    kill -s "$sig" "$pid"
    rc=0
    wait "$pid" || rc=$?
    took=$(($(date +%s) - start))
    expect_eq "exit code" "$rc" 130
    expect_true "stopped within seconds (took ${took}s)" test "$took" -lt 60
    expect_eq "temporary files left" "$(find out -name '*.tmp' | wc -l)" 0
    expect_true "no half-made target" test ! -e out/dst.qcow2
    expect_true "report written" test -s long.report.json
    T_CHECKS=$((T_CHECKS + 1))
    "$PY" "$T_SRC/tests/interop/pipeline_check_report.py" long.report.json ||
        bad "report does not match the schema"
    expect_eq "status" "$("$PY" -c 'import json; print(json.load(open("long.report.json"))["status"])')" interrupted
    expect_eq "cancelled step" "$("$PY" -c 'import json; r=json.load(open("long.report.json")); print(r["steps"][2]["error"]["code"])')" ECANCELED
    # its own pid, not a process search: other tests may sleep too
    # ($$$$ in the job is the shell's $$: its pid, which exec keeps)
    expect_true "the sleeping command started" grep -qx '[0-9][0-9]*' sleeper.pid
    expect_true "the sleeping command was killed" bash -c '! kill -0 "$(cat sleeper.pid)" 2>/dev/null'
    show run.err
done
finish
