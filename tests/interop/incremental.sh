#!/usr/bin/env bash
# incremental.sh - incremental runs end to end (SPEC §6, docs/incremental.md):
#   - a second run of each job in jobs/ (and of a job of in-place edits) is
#     all up_to_date, with recorded outputs and null times in the report;
#   - `plan --format json` and `run --dry-run` give up_to_date and reason,
#     and neither writes anything (the store included; none is created);
#   - editing one input file reruns exactly the steps that depend on it;
#   - a qemu-io write into an overlay is `output-modified`, a deleted output
#     `output-missing`, a changed value `definition-changed`; --force and
#     --rebuild (an unknown id: exit 2, nothing runs, the store unchanged);
#   - a qemu-io write into the base of an external base (a backing chain
#     made by qemu-img, outside the job) makes an overlay on it stale;
#   - --sums is a file `sha256sum -c` accepts, and the report's sha256 of
#     each output is the file's;
#   - a run killed by SIGKILL (at several moments) or SIGINT, then run
#     again, leaves outputs byte-identical to a clean build, and a store
#     that passes PRAGMA integrity_check;
#   - a store left with a hot journal (a writer killed inside a transaction):
#     plan says so and exits 1 without writing; the next run rolls it back,
#     finds the last committed records and passes PRAGMA integrity_check;
#   - a store from a newer diskforge is refused;
#   - every report matches docs/report.schema.json.
. "$(dirname "$0")/lib.sh"
need_qemu
need_jsonschema
JOBS=$(jobs_copy) # the job files, run from a copy

# reasons FILE: "id=reason" per step of a report (or plan), one per line
reasons() { rjson "$1" "'\n'.join(s['id']+'='+s['reason'] for s in r['steps'])"; }
reason_of() { rjson "$1" "next(s['reason'] for s in r['steps'] if s['id']=='$2')"; }
# ran FILE: the ids of the steps that ran, space-separated, in file order
ran() { rjson "$1" "' '.join(s['id'] for s in r['steps'] if s['status']!='up_to_date')"; }
all_up_to_date() { # all_up_to_date WHAT REPORT
    expect_eq "$1: steps not up to date" "$(ran "$2")" ""
    expect_eq "$1: up-to-date steps have null times" \
        "$(rjson "$2" "sum(1 for s in r['steps'] if s['started_at'] or s['finished_at'])")" 0
    expect_eq "$1: summary" "$(rjson "$2" "r['summary']['up_to_date']==r['summary']['total']")" True
}
integrity() { # integrity DB: PRAGMA integrity_check
    "$PY" -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])' "$1"
}

# --- 1. a second run of each job in jobs/ is all up to date -----------------
for job in $(job_files); do
    set_case "$job: second run"
    O=$T_TMP/$job
    df_ok run "$JOBS/$job.yaml" -j 2 --set out="$O" --state "$O.db" --report "$O.1.json" || continue
    report_ok "$O.1.json"
    expect_eq "first run: every step never-run" \
        "$(rjson "$O.1.json" "sorted(set(s['reason'] for s in r['steps']))")" "['never-run']"
    df_ok plan "$JOBS/$job.yaml" --format json --set out="$O" --state "$O.db"
    expect_eq "plan: every step up to date" \
        "$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(all(s["up_to_date"] and s["reason"]=="up-to-date" for s in r["steps"]))' "$DF_OUT")" True
    df_ok run "$JOBS/$job.yaml" -j 2 --set out="$O" --state "$O.db" --report "$O.2.json"
    report_ok "$O.2.json"
    all_up_to_date "$job" "$O.2.json"
    expect_eq "outputs and results as recorded" \
        "$(rjson "$O.2.json" "[(s['outputs'], s['result']) for s in r['steps']]")" \
        "$(rjson "$O.1.json" "[(s['outputs'], s['result']) for s in r['steps']]")"
    expect_eq "store integrity" "$(integrity "$O.db")" ok
done
expect_eq "with --state, no database beside the job files" \
    "$(find "$JOBS/.diskforge" -name '*.db' 2>/dev/null | wc -l)" 0

# --- 2. sums and the report's sha256 ------------------------------------------
set_case "sums"
O=$T_TMP/seed-walkthrough
df_ok run "$JOBS/seed-walkthrough.yaml" --set out="$O" --state "$O.db" \
    --report "$O.3.json" --sums "$T_TMP/seed.sha256"
expect_eq "one line per file the job writes" "$(wc -l < "$T_TMP/seed.sha256")" \
    "$(rjson "$O.3.json" "len(set(o['path'] for s in r['steps'] for o in s['outputs']))")"
expect_true "sha256sum -c accepts it" bash -c "cd '$T_TMP' && sha256sum --quiet -c seed.sha256"
expect_eq "sorted by path" "$(cut -c67- "$T_TMP/seed.sha256")" "$(cut -c67- "$T_TMP/seed.sha256" | sort)"
expect_eq "report sha256 = the file's (vm2.qcow2)" \
    "$(rjson "$O.3.json" "next(o['sha256'] for s in r['steps'] for o in s['outputs'] if o['path'].endswith('/vm2.qcow2'))")" \
    "$(sha_of "$O/vm2.qcow2")"

# --- 3. plan and dry-run write nothing ---------------------------------------
set_case "plan and dry-run are read-only"
cd "$T_TMP"
mkdir ro && cp "$JOBS/lab.yaml" ro/lab.yaml
df_ok plan ro/lab.yaml --format json --set out=out
expect_eq "without a store every step is never-run" \
    "$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sorted(set((s["up_to_date"], s["reason"]) for s in r["steps"])))' "$DF_OUT")" \
    "[(False, 'never-run')]"
df_ok run ro/lab.yaml --dry-run --set out=out
expect_true "dry-run prints the reasons" grep -q 'runs: never-run' "$DF_OUT"
expect_true "no .diskforge/ was created" test ! -e ro/.diskforge
df_ok run ro/lab.yaml --set out=out -j 2
expect_true "the default store is .diskforge/NAME.db" test -s ro/.diskforge/lab.db
before=$(sha_of ro/.diskforge/lab.db)
touch -d '2001-01-01' ro/.diskforge/lab.db
df_ok plan ro/lab.yaml --set out=out
df_ok run ro/lab.yaml --dry-run --set out=out
expect_true "dry-run prints up to date" grep -q 'up to date' "$DF_OUT"
expect_eq "the store is untouched" "$(sha_of ro/.diskforge/lab.db) $(stat -c %Y ro/.diskforge/lab.db)" \
    "$before $(date -d 2001-01-01 +%s)"

# --- 4. what runs, and why ----------------------------------------------------
set_case "reasons"
mkdir -p why && cd why
cat > why.yaml <<'YAML'
version: 1
vars: {size: 16M}
steps:
  - {id: a, op: command, argv: [cp, in-a.bin, a.bin], inputs: [in-a.bin], outputs: [a.bin]}
  - {id: b, op: command, argv: [cp, in-b.bin, b.bin], inputs: [in-b.bin], outputs: [b.bin]}
  - {id: img-a, op: create, image: a.qcow2, size: "${size}"}
  - {id: put-a, op: write, image: a.qcow2, from: a.bin, offset: 1M}
  - {id: img-b, op: create, image: b.qcow2, size: 16M}
  - {id: put-b, op: write, image: b.qcow2, from: b.bin}
  - {id: ov-a, op: overlay, image: ov-a.qcow2, backing: a.qcow2}
  - {id: ov-b, op: overlay, image: ov-b.qcow2, backing: b.qcow2}
  - {id: chk-a, op: check, image: ov-a.qcow2}
  - {id: chk-b, op: check, image: ov-b.qcow2}
  - {id: hello, op: command, argv: [true]}
YAML
head -c 100000 /dev/urandom > in-a.bin
head -c 100000 /dev/urandom > in-b.bin
df_ok run why.yaml --report r1.json
report_ok r1.json
df_ok run why.yaml --report r2.json
expect_eq "second run: only the command without outputs" "$(ran r2.json)" hello
expect_eq "its reason" "$(reason_of r2.json hello)" always

# one input file edited: exactly what depends on it
printf 'x' | dd of=in-b.bin bs=1 seek=5000 conv=notrunc status=none
df_ok run why.yaml --dry-run
expect_true "dry-run names the changed input" grep -q 'runs: input-changed in-b.bin' "$DF_OUT"
df_ok run why.yaml --report r3.json
report_ok r3.json
expect_eq "edited input: steps that ran" "$(ran r3.json)" "b img-b put-b ov-b chk-b hello"
expect_eq "reasons" "$(reasons r3.json | grep -v '=up-to-date' | tr '\n' ' ')" \
    "b=input-changed in-b.bin img-b=upstream put-b put-b=upstream b ov-b=upstream put-b chk-b=upstream ov-b hello=always "
qcheck b.qcow2

# qemu-io writes into an overlay behind our back
q_ok qemu-io -f qcow2 -c 'write -P 0x5a 0 64k' ov-a.qcow2
df_ok run why.yaml --report r4.json
expect_eq "qemu-io write: output-modified" "$(reason_of r4.json ov-a)" "output-modified ov-a.qcow2"
expect_eq "qemu-io write: what ran" "$(ran r4.json)" "ov-a chk-a hello"
q_ok qemu-img compare ov-a.qcow2 a.qcow2

# a deleted output
rm a.bin
df_ok run why.yaml --report r5.json
expect_eq "deleted output" "$(reason_of r5.json a)" "output-missing a.bin"
expect_eq "deleted output: what ran" "$(ran r5.json)" "a img-a put-a ov-a chk-a hello"
expect_eq "in-place chain: the create runs for the write" "$(reason_of r5.json img-a)" "upstream put-a"

# a changed definition (through --set)
df_ok run why.yaml --set size=32M --report r6.json
expect_eq "changed definition" "$(reason_of r6.json img-a)" definition-changed
expect_eq "changed definition: what ran" "$(ran r6.json)" "img-a put-a ov-a chk-a hello"
q_ok qemu-img info --output=json ov-a.qcow2 &&
    expect_eq "the overlay has the new size" "$(json_get "$Q_OUT" virtual-size)" $((32 << 20))

# --force and --rebuild
df_ok run why.yaml --set size=32M --force --report r7.json
expect_eq "--force: every step" "$(rjson r7.json "sorted(set(s['reason'] for s in r['steps']))")" "['forced']"
expect_eq "--force: every step ran" "$(rjson r7.json "r['summary']['succeeded']")" 11
df_ok run why.yaml --set size=32M --rebuild put-b --rebuild chk-a --report r8.json
expect_eq "--rebuild: what ran" "$(ran r8.json)" "img-b put-b ov-b chk-a chk-b hello"
expect_eq "--rebuild: the step is forced" "$(reason_of r8.json put-b)" forced
expect_eq "--rebuild: its chain follows" "$(reason_of r8.json img-b)" "upstream put-b"
store_sum=$(sha_of .diskforge/why.db)
out_sum=$(sha_of b.qcow2)
run_df run why.yaml --set size=32M --rebuild no-such-step --report r9.json
expect_eq "--rebuild unknown id: exit" "$DF_RC" 2
expect_true "--rebuild unknown id: named" grep -q "no-such-step" "$DF_ERR"
expect_true "--rebuild unknown id: no report" test ! -e r9.json
expect_eq "--rebuild unknown id: store unchanged" "$(sha_of .diskforge/why.db)" "$store_sum"
expect_eq "--rebuild unknown id: outputs unchanged" "$(sha_of b.qcow2)" "$out_sum"
for r in r4 r5 r6 r7 r8; do report_ok $r.json; done
cd "$T_TMP"

# --- 5. an external backing chain counts as input ----------------------------
set_case "external backing chain"
mkdir -p ext && cd ext
q_ok qemu-img create -f qcow2 low.qcow2 16M
q_ok qemu-img create -f qcow2 -b low.qcow2 -F qcow2 mid.qcow2
cat > ext.yaml <<'YAML'
version: 1
steps:
  - {id: top, op: overlay, image: top.qcow2, backing: mid.qcow2, backing_format: qcow2}
  - {id: sum, op: digest, image: top.qcow2}
YAML
df_ok run ext.yaml --report x1.json
df_ok run ext.yaml --report x2.json
all_up_to_date "external chain" x2.json
q_ok qemu-io -f qcow2 -c 'write -P 0x77 1M 64k' low.qcow2
df_ok run ext.yaml --report x3.json
expect_eq "a write two levels down: the overlay is stale" "$(reason_of x3.json top)" "input-changed mid.qcow2"
expect_eq "the digest sees the new bytes" "$(rjson x3.json "r['steps'][1]['result']['sha256']")" \
    "$(qemu_sha top.qcow2 qcow2)"
report_ok x3.json
cd "$T_TMP"

# --- 6. in-place edits: a second run is all up to date ------------------------
set_case "in-place edit job"
mkdir -p edit && cd edit
cat > edit.yaml <<'YAML'
version: 1
steps:
  - {id: lower, op: create, image: lower.qcow2, size: 32M}
  - {id: seed, op: fill, image: lower.qcow2, offset: 2M, length: 2M, pattern: "random:3"}
  - {id: upper, op: overlay, image: upper.qcow2, backing: lower.qcow2}
  - {id: grow, op: resize, image: upper.qcow2, size: 48M}
  - {id: zero, op: fill, image: upper.qcow2, offset: 2M, length: 1M, pattern: zero}
  - {id: thin, op: sparsify, image: upper.qcow2}
  - {id: repair, op: check, image: upper.qcow2, repair: all}
  - {id: merge, op: commit, image: upper.qcow2}
  - {id: sum, op: digest, image: lower.qcow2}
YAML
df_ok run edit.yaml --report e1.json -j 2
df_ok run edit.yaml --report e2.json -j 2
report_ok e2.json
all_up_to_date "in-place edits" e2.json
expect_eq "digest as recorded" "$(rjson e2.json "r['steps'][-1]['result']['sha256']")" \
    "$(rjson e1.json "r['steps'][-1]['result']['sha256']")"
cd "$T_TMP"

# --- 7. killed runs: a rerun gives a clean build's bytes -----------------------
mkdir -p kill && cd kill
cat > k.yaml <<'YAML'
version: 1
vars: {out: out}
steps:
  - {id: src, op: create, image: "${out}/src.raw", format: raw, size: 96M}
  - {id: data, op: fill, image: "${out}/src.raw", length: 48M, pattern: "random:5"}
  - {id: more, op: fill, image: "${out}/src.raw", offset: 64M, length: 16M, pattern: 0x33}
  - {id: q, op: convert, from: "${out}/src.raw", to: "${out}/q.qcow2", format: qcow2}
  - {id: z, op: convert, from: "${out}/q.qcow2", to: "${out}/z.qcow2", format: qcow2, compress: zlib}
  - {id: ov1, op: overlay, image: "${out}/ov1.qcow2", backing: "${out}/q.qcow2"}
  - {id: ov1-data, op: fill, image: "${out}/ov1.qcow2", offset: 4M, length: 8M, pattern: "random:9"}
  - {id: ov2, op: overlay, image: "${out}/ov2.qcow2", backing: "${out}/z.qcow2"}
  - {id: copy, op: copy, from: "${out}/src.raw", to: "${out}/copy.raw"}
  - {id: chk, op: check, image: "${out}/ov1.qcow2"}
YAML
set_case "killed runs: clean build"
df_ok run k.yaml --set out=clean --state clean.db --sums clean.sha256 -j 2
# wait_for CONDITION: poll a shell condition every 10 ms, 60 s at most
wait_for() {
    local i
    for ((i = 0; i < 6000; i++)); do
        eval "$1" && return 0
        sleep 0.01
    done
    return 1
}
# kill_and_rerun SIGNAL WHEN [RUN-ARGS...]: start a run (with RUN-ARGS),
# send SIGNAL as soon as the shell condition WHEN holds, then run again
# (plainly) and compare with the clean build.
kill_and_rerun() {
    local sig=$1 when=$2 pid rc=0 want
    shift 2
    "$DISKFORGE" run k.yaml --state state.db -j 2 "$@" >run.out 2>run.err &
    pid=$!
    set_case "killed runs: SIG$sig when $when${*:+ ($*)}"
    expect_true "the moment came" wait_for "$when"
    kill -s "$sig" "$pid" 2>/dev/null || true
    wait "$pid" || rc=$?
    want=130
    [[ $sig == KILL ]] && want=137
    expect_eq "the run was killed while it ran" "$rc" "$want" run.err
    if [[ -e state.db ]]; then
        expect_eq "store integrity after the kill" "$(integrity state.db)" ok
    fi
    df_ok run k.yaml --state state.db -j 2 --sums out.sha256 --report rerun.json || return 0
    report_ok rerun.json
    expect_eq "outputs equal a clean build's" "$(cut -d' ' -f1 out.sha256)" "$(cut -d' ' -f1 clean.sha256)"
    expect_true "sums check against the files" sha256sum --quiet -c out.sha256
    expect_eq "store integrity" "$(integrity state.db)" ok
    df_ok run k.yaml --state state.db -j 2 --report again.json
    all_up_to_date "third run" again.json
}
tmp_of() { compgen -G "out/.$1.df-*.tmp" >/dev/null; }
# a first run, killed at several moments
rm -rf out state.db
kill_and_rerun KILL 'test -e out/src.raw'          # filling in place
rm -rf out state.db
kill_and_rerun KILL 'tmp_of q.qcow2'               # converting
rm -rf out state.db
kill_and_rerun KILL 'tmp_of z.qcow2'               # compressing
rm -rf out state.db
kill_and_rerun INT 'tmp_of z.qcow2'
# a forced rebuild over a complete build and its records, killed while the
# in-place fills change the new src.raw: the records of the complete build
# must not be trusted for the half-filled file
ino=$(stat -c %i out/src.raw)
kill_and_rerun KILL "test \"\$(stat -c %i out/src.raw 2>/dev/null)\" != $ino" --force
kill_and_rerun KILL 'tmp_of q.qcow2' --rebuild data
cd "$T_TMP"

# --- 8. a writer killed inside a transaction ----------------------------------
set_case "hot journal"
cd "$T_TMP/why"
cat > hold.py <<'PY'
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('PRAGMA cache_size=1')          # spill to the file: a hot journal
c.execute('BEGIN IMMEDIATE')
c.execute('DELETE FROM step')
for i in range(3000):
    c.execute("INSERT INTO file_hash VALUES (?,1,1,1,1,?,1,NULL)", ('junk%d' % i, 'b' * 64))
print('held', flush=True)
time.sleep(60)
PY
"$PY" hold.py .diskforge/why.db > hold.out &
holder=$!
for _ in $(seq 100); do grep -q held hold.out && break; sleep 0.1; done
kill -9 "$holder"
wait "$holder" 2>/dev/null || true
expect_true "the killed writer left a journal" test -s .diskforge/why.db-journal
before=$(sha_of .diskforge/why.db)
run_df plan why.yaml --set size=32M
expect_eq "plan: exit" "$DF_RC" 1
expect_true "plan: says a run was killed while writing" grep -q "killed while writing" "$DF_ERR"
expect_eq "plan: the store is untouched" "$(sha_of .diskforge/why.db)" "$before"
df_ok run why.yaml --set size=32M --report r10.json
expect_eq "run: the last committed records" "$(ran r10.json)" hello
expect_true "run: the journal is gone" test ! -e .diskforge/why.db-journal
expect_eq "run: store integrity" "$(integrity .diskforge/why.db)" ok
cd "$T_TMP"

# --- 9. a store from a newer diskforge ----------------------------------------
set_case "newer store"
"$PY" -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("PRAGMA user_version=7"); c.commit()' why/.diskforge/why.db
run_df run why/why.yaml
expect_eq "exit" "$DF_RC" 1
expect_true "says it is newer" grep -q "newer diskforge" "$DF_ERR"
run_df plan why/why.yaml
expect_eq "plan: exit" "$DF_RC" 1
printf 'not a database at all, just text\n%.0s' {1..100} > junk.db
run_df run why/why.yaml --state junk.db
expect_eq "junk store: exit" "$DF_RC" 1
expect_true "junk store: named" grep -q "junk.db" "$DF_ERR"
finish
