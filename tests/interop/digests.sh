#!/usr/bin/env bash
# digests.sh - the digests of a run's outputs (SPEC §5, §6; docs/incremental.md
# "Digests"):
#   - every output's report sha256 equals sha256sum of the file, for a job
#     of copies (each sparse mode, a source with holes and data; one whose
#     data spans several batches of the zero-scanning threads), raw and
#     qcow2 creates, an in-place fill, and converts;
#   - guest_sha256 equals sha256 for raw outputs, and for a convert to qcow2
#     equals the sha256 of `qemu-img convert -O raw` of the output; a qcow2
#     made by create has none (nothing computed it);
#   - an up-to-date rerun lists the outputs as recorded, both digests;
#   - a copy step's output is not read again after the step: strace counts
#     the bytes diskforge reads from it (describing it reads its header);
#   - a SIGINT while the run hashes its inputs, or a step's output after
#     the step, ends the run at once: exit 130, the report written with
#     status interrupted (steps not started skipped; the step whose output
#     was being hashed failed, "interrupted"), and the next run finishes.
. "$(dirname "$0")/lib.sh"
need_qemu
need_jsonschema
cd "$T_TMP"

# digest_of REPORT PATH KEY: the KEY digest of output PATH in REPORT (last
# step that lists it), or "none"
digest_of() {
    rjson "$1" "([o.get('$3') for s in r['steps'] for o in s['outputs'] if o['path']=='$2'] or ['none'])[-1] or 'none'"
}

# --- 1. sha256 and guest_sha256 of every output --------------------------------
set_case "every output"
# a source with data, a hole, then data again (and a zero block in the data)
"$PY" - <<'PY'
import os
with open("src.bin", "wb") as f:
    f.write(os.urandom(3 << 20))
    f.write(b"\0" * (1 << 20))
    f.seek(9 << 20)
    f.write(os.urandom((2 << 20) + 123))
PY
# a sparse source whose data spans several 32 MiB batches of the threads
# that scan for zeros, starting off a 128 KiB piece boundary
"$PY" - <<'PY'
import os
with open("wide.bin", "wb") as f:
    f.seek((1 << 20) + 4096)
    f.write(os.urandom(72 << 20))
    f.seek(80 << 20)
    f.write(b"end")
PY
qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -f qcow2 -c 'write -P 0x5a 1M 2M' base.qcow2 >/dev/null
cat > all.yaml <<'YAML'
version: 1
steps:
  - {id: cauto, op: copy, from: src.bin, to: out/auto.bin}
  - {id: calways, op: copy, from: src.bin, to: out/always.bin, sparse: always}
  - {id: cnever, op: copy, from: src.bin, to: out/never.bin, sparse: never}
  - {id: cwide, op: copy, from: wide.bin, to: out/wide.bin, sparse: always}
  - {id: raw, op: create, image: out/r.raw, format: raw, size: 5M}
  - {id: rawfull, op: create, image: out/full.raw, format: raw, size: 3M, preallocation: full}
  - {id: q, op: create, image: out/q.qcow2, format: qcow2, size: 6M}
  - {id: fill, op: fill, image: out/r.raw, format: raw, pattern: random:7, offset: 1M, length: 1M}
  - {id: toq, op: convert, from: base.qcow2, from_format: qcow2, to: out/c.qcow2, format: qcow2}
  - {id: tor, op: convert, from: base.qcow2, from_format: qcow2, to: out/c.raw, format: raw}
YAML
df_ok run all.yaml -j 2 --report all.1.json || fail "the run failed"
report_ok all.1.json
for f in out/auto.bin out/always.bin out/never.bin out/wide.bin out/full.raw out/q.qcow2 out/c.qcow2 out/c.raw; do
    expect_eq "$f: sha256 = sha256sum" "$(digest_of all.1.json "$f" sha256)" "$(sha_of "$f")"
done
# r.raw is written twice: create's digest (zeros) then fill's (read back)
expect_eq "out/r.raw (create): sha256 of 5 MiB of zeros" \
    "$(rjson all.1.json "next(o['sha256'] for s in r['steps'] if s['id']=='raw' for o in s['outputs'])")" \
    "$(head -c $((5 << 20)) /dev/zero | sha256sum | cut -d' ' -f1)"
expect_eq "out/r.raw (fill): sha256 = sha256sum" "$(digest_of all.1.json out/r.raw sha256)" "$(sha_of out/r.raw)"
for f in out/auto.bin out/always.bin out/never.bin out/r.raw out/full.raw out/c.raw; do
    expect_eq "$f (raw): guest_sha256 = sha256" "$(digest_of all.1.json "$f" guest_sha256)" "$(sha_of "$f")"
done
expect_eq "a qcow2 create: no guest_sha256 (not computed)" "$(digest_of all.1.json out/q.qcow2 guest_sha256)" none
# convert's guest digest comes from the engine (df_convert_opts.guest_sha256)
expect_eq "convert to qcow2: guest_sha256 = qemu-img convert -O raw | sha256sum" \
    "$(digest_of all.1.json out/c.qcow2 guest_sha256)" "$(qemu_sha out/c.qcow2 qcow2)"

set_case "up-to-date rerun"
df_ok run all.yaml --report all.2.json
report_ok all.2.json
expect_eq "every step up to date" "$(rjson all.2.json "set(s['status'] for s in r['steps'])")" "{'up_to_date'}"
expect_eq "outputs listed as recorded, both digests" \
    "$(rjson all.2.json "[(o['path'], o['sha256'], o.get('guest_sha256')) for s in r['steps'] for o in s['outputs']]")" \
    "$(rjson all.1.json "[(o['path'], o['sha256'], o.get('guest_sha256')) for s in r['steps'] for o in s['outputs']]")"

# --- 2. a copy's output is not read back ---------------------------------------
set_case "copy: not read again"
if command -v strace >/dev/null; then
    # LeakSanitizer cannot run under ptrace: no leak check under strace
    asan_saved=${ASAN_OPTIONS-}
    export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
    head -c $((24 << 20)) /dev/urandom > big.bin
    cat > cp.yaml <<'YAML'
version: 1
steps:
  - {id: c, op: copy, from: big.bin, to: out/cp.bin}
  - {id: s, op: copy, from: big.bin, to: out/cps.bin, sparse: always}
YAML
    strace -f -y -qq -e trace=read,pread64 -o cp.strace \
        "$DISKFORGE" run cp.yaml --report cp.json >/dev/null 2>&1 ||
        bad "the copy run under strace failed"
    for f in cp cps; do
        got=$(awk -v p="/out/$f.bin>" 'index($0, p) { n = $NF; if (n + 0 > 0) s += n } END { print s + 0 }' cp.strace)
        T_CHECKS=$((T_CHECKS + 1))
        ((got < 1 << 20)) ||
            bad "out/$f.bin: diskforge read $got bytes of it after copying it (24 MiB; its header only expected)"
        expect_eq "out/$f.bin: the report's sha256 is the file's" "$(digest_of cp.json "out/$f.bin" sha256)" "$(sha_of out/$f.bin)"
    done
    # the same check can see a read back: a fill is hashed by reading it
    cat > fill.yaml <<'YAML'
version: 1
steps:
  - {id: mk, op: create, image: out/f.raw, format: raw, size: 24M}
  - {id: f, op: fill, image: out/f.raw, format: raw, pattern: random:1}
YAML
    strace -f -y -qq -e trace=read,pread64 -o fill.strace \
        "$DISKFORGE" run fill.yaml >/dev/null 2>&1 || bad "the fill run under strace failed"
    got=$(awk 'index($0, "/out/f.raw>") { n = $NF; if (n + 0 > 0) s += n } END { print s + 0 }' fill.strace)
    expect_eq "a fill's output is read back (the check sees reads)" "$((got >= 24 << 20))" 1
    rm -f big.bin out/cp.bin out/cps.bin out/f.raw
    ASAN_OPTIONS=$asan_saved
else
    say "SKIP: copy not read again: no strace"
fi

# --- 3. SIGINT while hashing ----------------------------------------------------
# wait_open PID PATH: wait (up to 20 s) until process PID has PATH open
wait_open() {
    local real
    real=$(realpath "$2")
    for _ in $(seq 1 2000); do
        for fd in /proc/"$1"/fd/*; do
            [[ $(readlink "$fd" 2>/dev/null) == "$real" ]] && return 0
        done
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}
# interrupt_when_open JOB PATH REPORT: run JOB, SIGINT it once it has PATH
# open; sets RC and MS (milliseconds from the signal to its exit)
interrupt_when_open() {
    local pid t0
    "$DISKFORGE" run "$1" --report "$3" >int.out 2>int.err &
    pid=$!
    T_PIDS+=("$pid")
    if wait_open "$pid" "$2"; then
        t0=$(date +%s%N)
        kill -INT "$pid"
        RC=0
        wait "$pid" || RC=$?
        MS=$((($(date +%s%N) - t0) / 1000000))
    else
        RC=0
        wait "$pid" || RC=$?
        MS=-1
        bad "$1: the run never opened $2 (exit $RC)"
    fi
    T_PIDS=()
}

set_case "SIGINT while hashing inputs"
mkdir -p sig
# data, not holes: the identity of an input hashes its data extents only
head -c $((768 << 20)) < <(yes diskforge) > sig/big.in
cat > sig/job.yaml <<'YAML'
version: 1
steps:
  - {id: make, op: command, inputs: [big.in], outputs: [big.out], shell: "cat big.in > big.out"}
  - {id: after, op: copy, from: big.out, to: small.out}
YAML
interrupt_when_open sig/job.yaml sig/big.in sig/r1.json
expect_eq "exit" "$RC" 130
expect_true "stopped within 2 s ($MS ms)" test "$MS" -ge 0 -a "$MS" -lt 2000
expect_true "says it was interrupted while hashing the inputs" grep -q "hashing" int.err
echo "SIGINT while hashing inputs: exit $RC, $MS ms after the signal" | tee "$T_OUT/digests-sigint.txt"
expect_true "the report was written" test -s sig/r1.json
if [[ -s sig/r1.json ]]; then
    report_ok sig/r1.json
    expect_eq "report: interrupted, every step skipped" \
        "$(rjson sig/r1.json "r['status'], sorted(set(s['status'] for s in r['steps']))")" \
        "interrupted ['skipped']"
    expect_eq "report: stale_temporaries" "$(rjson sig/r1.json "r['stale_temporaries']")" "{'files': 0, 'bytes': 0}"
fi
expect_true "no step ran" test ! -e sig/big.out

set_case "SIGINT while hashing an output"
interrupt_when_open sig/job.yaml sig/big.out sig/r2.json
expect_eq "exit" "$RC" 130
echo "SIGINT while hashing an output: exit $RC, $MS ms after the signal" | tee -a "$T_OUT/digests-sigint.txt"
expect_true "stopped within 2 s ($MS ms)" test "$MS" -ge 0 -a "$MS" -lt 2000
if [[ -s sig/r2.json ]]; then
    report_ok sig/r2.json
    expect_eq "report: interrupted; the step hashing failed, the next skipped" \
        "$(rjson sig/r2.json "r['status'], [s['status'] for s in r['steps']]")" \
        "interrupted ['failed', 'skipped']"
    expect_true "report: the error says it was hashing" \
        grep -q "interrupted while hashing" <(rjson sig/r2.json "r['steps'][0]['error']['message']")
else
    bad "the report was not written"
fi
set_case "SIGINT: the next run"
df_ok run sig/job.yaml --report sig/r3.json
expect_eq "make reruns (its record was not written)" "$(rjson sig/r3.json "r['steps'][0]['reason']")" never-run
expect_eq "big.out: sha256 = sha256sum" "$(digest_of sig/r3.json sig/big.out sha256)" "$(sha_of sig/big.out)"
rm -rf sig
finish
