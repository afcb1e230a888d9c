#!/usr/bin/env bash
# step_cmd.sh - `diskforge step JOB.yaml ID --result FILE` (SPEC §7): one
# step runs alone (its dependencies do not run, nothing after it runs, no
# state store or run lock appears) and its result file holds the same
# step object as a local `run` writes, output sha256 included; qemu-img
# reads what it made; --set reaches it; a failing step writes a JSON error
# and exits 1; an unknown id exits 2; a changed job file (EJOBCHANGED,
# also one that no longer loads) and another diskforge version (EVERSION)
# are refused with exit 1 before anything runs; --untrusted refuses a
# backing file outside the image's directory; SIGTERM and SIGINT during
# a long step exit 130 within 2 s, leaving no temporary and no output.
# Every result file is checked against the schema's step object.
. "$(dirname "$0")/lib.sh"
need_qemu
need_jsonschema
cd "$T_TMP"

cat > job.yaml <<'YAML'
version: 1
name: step-test
vars: {size: 64M}
steps:
  - {id: base, op: create, image: out/base.qcow2, format: qcow2, size: "${size}"}
  - {id: fillb, op: fill, image: out/base.qcow2, offset: 1M, length: 3M, pattern: 0x5a}
  - {id: web, op: overlay, image: out/web.qcow2, backing: out/base.qcow2}
  - {id: other, op: create, image: out/other.raw, format: raw, size: 1M}
  - {id: look, op: check, image: out/missing.qcow2}
YAML
# rfield FILE EXPR: a field of a result file (python, r = the object)
rfield() { rjson "$1" "$2" 2>/dev/null || echo "(unreadable $1)"; }
no_temps() { ! compgen -G 'out/.*.tmp' >/dev/null && ! compgen -G '.*.df-*.tmp' >/dev/null; }

# ---- one step alone, in dependency order ----
set_case "web before base: its dependency does not run"
run_df step job.yaml web --result web0.json
expect_eq "exit" "$DF_RC" 1 "$DF_ERR"
expect_eq "status" "$(rfield web0.json 'r["status"]')" failed
expect_eq "error code" "$(rfield web0.json 'r["error"]["code"]')" ENOENT
expect_true "base.qcow2 was not made" test ! -e out/base.qcow2
step_result_ok web0.json

set_case "base, fillb, web: each alone"
declare -A op_of=([base]=create [fillb]=fill [web]=overlay)
declare -A out_of=([base]=out/base.qcow2 [fillb]=out/base.qcow2 [web]=out/web.qcow2)
for id in base fillb web; do
    df_ok step job.yaml "$id" --result "$id.json" || continue
    expect_eq "$id: status" "$(rfield "$id.json" 'r["status"]')" succeeded
    expect_eq "$id: id and op" "$(rfield "$id.json" 'r["id"] + " " + r["op"]')" \
        "$id ${op_of[$id]}"
    expect_eq "$id: the output's sha256 is the file's" \
        "$(rfield "$id.json" 'r["outputs"][0]["sha256"]')" "$(sha_of "${out_of[$id]}")"
    expect_true "$id: stdout names the step" grep -q "step '$id' succeeded" "$DF_OUT"
    step_result_ok "$id.json"
done
expect_eq "web needs (base's last writer)" "$(rfield web.json '",".join(r["needs"])')" fillb
expect_eq "web's backing" "$(rfield web.json 'r["outputs"][0]["backing"]')" base.qcow2
expect_eq "base's virtual size (--set not given: 64M)" \
    "$(rfield base.json 'r["outputs"][0]["virtual_size"]')" $((64 * MiB))
qcheck out/base.qcow2
qcheck out/web.qcow2
q_ok qemu-io -r -f qcow2 -c "read -P 0x5a 1M 3M" out/web.qcow2
expect_true "no step after web ran (other.raw absent)" test ! -e out/other.raw
expect_true "no state store or run lock (.diskforge absent)" test ! -e .diskforge
expect_true "no temporaries beside outputs or results" no_temps

set_case "the same step objects as a local run"
mkdir local && cp job.yaml local/
(cd local && "$DISKFORGE" run job.yaml -j 1 >/dev/null 2>&1) || true
for id in base fillb web other; do
    [[ -f $id.json ]] || (cd "$T_TMP" && "$DISKFORGE" step job.yaml "$id" --result "$id.json" >/dev/null 2>&1) || true
    expect_eq "$id: result vs local report (times and reason aside)" \
        "$("$PY" - "$id.json" local/job.report.json "$id" <<'EOF'
import json, sys
step = json.load(open(sys.argv[1]))
run = [s for s in json.load(open(sys.argv[2]))["steps"] if s["id"] == sys.argv[3]][0]
for o in (step, run):
    for k in ("started_at", "finished_at", "duration_ms", "reason"):
        o.pop(k, None)
print("same" if step == run else f"step {step} / run {run}")
EOF
)" same
done

set_case "--set reaches the step"
mkdir setdir && cp job.yaml setdir/
(cd setdir && "$DISKFORGE" step job.yaml base --set size=32M --result r.json >/dev/null 2>&1) || true
expect_eq "virtual size with --set size=32M" \
    "$(rfield setdir/r.json 'r["outputs"][0]["virtual_size"]')" $((32 * MiB))

# ---- failures ----
set_case "a failing step"
run_df step job.yaml look --result look.json
expect_eq "exit" "$DF_RC" 1 "$DF_ERR"
expect_eq "status" "$(rfield look.json 'r["status"]')" failed
expect_eq "error code" "$(rfield look.json 'r["error"]["code"]')" ENOENT
expect_true "the message names the image" \
    grep -q "missing.qcow2" <<<"$(rfield look.json 'r["error"]["message"]')"
expect_true "stderr names the step" grep -q "step 'look' failed" "$DF_ERR"
step_result_ok look.json

set_case "unknown step id"
run_df step job.yaml nosuch --result nosuch.json
expect_eq "exit" "$DF_RC" 2 "$DF_ERR"
expect_true "stderr names the id" grep -q "no step 'nosuch'" "$DF_ERR"
expect_eq "result code" "$(rfield nosuch.json 'r["error"]["code"]')" EJOB
step_result_ok nosuch.json

set_case "usage"
run_df step job.yaml base
expect_eq "no --result: exit" "$DF_RC" 2
run_df step job.yaml --result x.json
expect_eq "no id: exit" "$DF_RC" 2
run_df step job.yaml base --result x.json --expect-job-sha256 abc
expect_eq "a short sha256: exit" "$DF_RC" 2
expect_true "nothing written for bad usage" test ! -e x.json
df_ok step --help
expect_true "--help shows the usage" grep -q "usage: diskforge step" "$DF_OUT"

set_case "--expect-job-sha256"
sum=$(sha_of job.yaml)
df_ok step job.yaml other --result other2.json --expect-job-sha256 "$sum"
df_ok step job.yaml other --result other2.json \
    --expect-job-sha256 "$(tr a-f A-F <<<"$sum")"
rm -f out/other.raw
wrong=$(printf '%064d' 0)
run_df step job.yaml other --result changed.json --expect-job-sha256 "$wrong"
expect_eq "mismatch: exit" "$DF_RC" 1 "$DF_ERR"
expect_eq "mismatch: code" "$(rfield changed.json 'r["error"]["code"]')" EJOBCHANGED
msg=$(rfield changed.json 'r["error"]["message"]')
expect_true "the message names the job file ($msg)" grep -q "job.yaml" <<<"$msg"
expect_true "the message gives both hashes" grep -q "$sum.*$wrong" <<<"$msg"
expect_eq "mismatch: op still given" "$(rfield changed.json 'r["op"]')" create
expect_true "mismatch: the step did not run" test ! -e out/other.raw
step_result_ok changed.json
printf 'version: 1\nsteps: [\n' > broken.yaml
run_df step broken.yaml other --result broken.json --expect-job-sha256 "$sum"
expect_eq "a job that no longer loads: exit" "$DF_RC" 1
expect_eq "a job that no longer loads: code" "$(rfield broken.json 'r["error"]["code"]')" EJOBCHANGED
step_result_ok broken.json
run_df step broken.yaml other --result broken2.json
expect_eq "an invalid job, nothing expected: exit" "$DF_RC" 2
expect_eq "an invalid job: code" "$(rfield broken2.json 'r["error"]["code"]')" EJOB
step_result_ok broken2.json

set_case "--expect-version"
version=$("$DISKFORGE" --version | awk '{print $2}')
df_ok step job.yaml other --result v.json --expect-version "$version"
rm -f out/other.raw
run_df step job.yaml other --result v9.json --expect-version 99.0.0
expect_eq "mismatch: exit" "$DF_RC" 1 "$DF_ERR"
expect_eq "mismatch: code" "$(rfield v9.json 'r["error"]["code"]')" EVERSION
msg=$(rfield v9.json 'r["error"]["message"]')
expect_true "the message names both versions ($msg)" \
    grep -q "$version.*99\.0\.0" <<<"$msg"
expect_true "mismatch: the step did not run" test ! -e out/other.raw
step_result_ok v9.json

set_case "the result file's directory does not exist"
run_df step job.yaml other --result nodir/r.json
expect_eq "exit" "$DF_RC" 1
expect_true "stderr names the file" grep -q "nodir/r.json" "$DF_ERR"

set_case "--untrusted"
q_ok qemu-img create -q -f qcow2 -u -b /etc/passwd -F raw evil.qcow2 1M
cat > evil.yaml <<'YAML'
version: 1
steps:
  - {id: leak, op: convert, from: evil.qcow2, from_format: qcow2, to: out/leak.raw, format: raw}
YAML
run_df step evil.yaml leak --result leak.json --untrusted
expect_eq "exit" "$DF_RC" 1 "$DF_ERR"
expect_true "the error names the backing file" \
    grep -qF "'/etc/passwd'" <<<"$(rfield leak.json 'r["error"]["message"]')"
expect_true "no output" test ! -e out/leak.raw
step_result_ok leak.json
df_ok step evil.yaml leak --result leak.json
expect_true "without it, the step is trusted (the backing file is read)" test -e out/leak.raw

# ---- cancellation ----
cat > slow.yaml <<'YAML'
version: 1
steps:
  - {id: big, op: create, image: out/big.raw, format: raw, size: 8G, preallocation: full}
YAML
wait_temp() {
    for _ in $(seq 1 400); do
        compgen -G "$1" >/dev/null && return 0
        sleep 0.025
    done
    return 1
}
for sig in TERM INT; do
    set_case "SIG$sig during a long step"
    rm -f big.json
    "$DISKFORGE" step slow.yaml big --result big.json >big.out 2>big.err &
    pid=$!
    T_PIDS+=("$pid")
    if ! expect_true "the step started" wait_temp 'out/.big.raw.df-*.tmp'; then
        stop_tracked
        continue
    fi
    sleep 0.2
    t0=$(date +%s%N)
    kill "-$sig" "$pid"
    rc=0
    wait "$pid" || rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    T_PIDS=()
    expect_eq "exit" "$rc" 130 big.err
    expect_true "exited within 2 s of the signal (${ms} ms)" test "$ms" -lt 2000
    expect_true "no temporary left" no_temps
    expect_true "no output" test ! -e out/big.raw
    expect_eq "status" "$(rfield big.json 'r["status"]')" failed
    expect_eq "error code" "$(rfield big.json 'r["error"]["code"]')" ECANCELED
    expect_true "stderr says which signal" grep -q "interrupted by SIG$sig" big.err
    step_result_ok big.json
    no_sanitizer_report big.err
    echo "step: SIG$sig to exit: $ms ms" >>"$T_OUT/step_cmd.txt"
done
finish
