# shellcheck shell=bash
# shellcheck disable=SC2034 # variables for the scripts that source this
# tests/interop/lib.sh - helpers shared by the interop tests.
#
# Sourced (never run) by tests/interop/*.sh.  A test script:
#
#   . "$(dirname "$0")/lib.sh"
#   need_qemu                        # exit 77 (ctest: skipped) without qemu
#   set_case "qcow2 64K metadata"    # label for the messages that follow
#   df_ok create -f qcow2 "$T_TMP/a.qcow2" 64M || continue
#   expect_eq "file length" "$(len_of a)" "$(len_of b)"
#   ...
#   finish                           # exit 1 if any check failed
#
# Checks (expect_*, qcheck) record a failure and go on, so one run shows
# every broken case; they always return 0, so they are safe under set -e.
# df_ok and q_ok return 1 on failure, for `|| return` / `if`; `fail` stops
# the test at once.  Every failure is printed as it happens and again in
# the summary at the end.
#
# Environment:
#   DISKFORGE       the diskforge program (ctest sets it; default: build/)
#   DF_TEST_OUT     where tables for humans are written (ctest: the build
#                   tree's test-output/); default: the temporary directory
#   DF_TEST_TMPDIR  where the temporary directory is made (default $TMPDIR
#                   or /tmp); images need a file system with sparse files
#   DF_KEEP_TMP=1   keep the temporary directory (it is always kept, and
#                   named, when a check failed)
#   DF_TIMEOUT      seconds one diskforge command may take (default 300)

set -euo pipefail
export LC_ALL=C

T_NAME=$(basename "$0" .sh)
T_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T_GEN="$T_SRC/scripts/gen-sparse-raw.py"
# The system's python3 (a version manager's shim can cost 0.5 s a call).
PY=${PYTHON:-python3}
[[ -z ${PYTHON:-} && -x /usr/bin/python3 ]] && PY=/usr/bin/python3
T_FAILS=0
T_CHECKS=0
T_CASE=""
T_FAILED_LIST=()

if [[ -z "${DISKFORGE:-}" ]]; then
    for _c in "$T_SRC/build/src/diskforge" "$T_SRC/build/diskforge"; do
        if [[ -x "$_c" ]]; then
            DISKFORGE=$_c
            break
        fi
    done
fi
if [[ -z "${DISKFORGE:-}" || ! -x "$DISKFORGE" ]]; then
    echo "FAIL: $T_NAME: the diskforge program was not found" \
         "(DISKFORGE='${DISKFORGE:-}'); build it, or run through ctest" >&2
    exit 1
fi

T_TMP=$(mktemp -d "${DF_TEST_TMPDIR:-${TMPDIR:-/tmp}}/df-$T_NAME.XXXXXX")
T_OUT=${DF_TEST_OUT:-$T_TMP}
mkdir -p "$T_OUT"
DF_OUT="$T_TMP/.df.out"     # stdout of the last run_df
DF_ERR="$T_TMP/.df.err"     # stderr of the last run_df
DF_RC=0                     # exit code of the last run_df
Q_OUT="$T_TMP/.q.out"       # stdout of the last q_ok
Q_ERR="$T_TMP/.q.err"

t_cleanup() {
    local rc=$?
    stop_tracked
    slurm_stop
    if [[ -n "${DF_KEEP_TMP:-}" || $T_FAILS -ne 0 ]] ||
       ((rc != 0 && rc != 77)); then
        echo "($T_NAME: files kept in $T_TMP)" >&2
    else
        rm -rf "$T_TMP"
    fi
}
trap t_cleanup EXIT

# Processes a test leaves running are tracked by PID, never found by name
# (another copy of the suite may run the same programs at the same time):
# `T_PIDS+=($!)` after starting one; stop_tracked kills and reaps them all
# (the exit trap does it too).
T_PIDS=()
stop_tracked() {
    local p
    for p in "${T_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${T_PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    T_PIDS=()
}

# lock_count FILE BYTE: how many of the locks in /proc/locks cover byte
# BYTE of FILE (QEMU's image locks: docs/design.md; adjacent bytes of one
# holder show as one range).  wait_lock FILE BYTE: wait (up to 10 s) until
# one does; 1 if none came.
lock_count() {
    local ino
    ino=$(stat -c %i "$1")
    awk -v ino="$ino" -v b="$2" '
        { n = split($(NF - 2), id, ":") }
        id[n] == ino && $(NF - 1) <= b + 0 && ($NF == "EOF" || $NF >= b + 0) { c++ }
        END { print c + 0 }' /proc/locks
}
wait_lock() {
    for _ in $(seq 1 400); do
        (($(lock_count "$1" "$2") > 0)) && return 0
        sleep 0.025
    done
    return 1
}

# need_qemu: the interop tests need qemu-img, qemu-io and python3 (for JSON
# and for making test files).  Without them the test is skipped (77).
need_qemu() {
    local p
    for p in qemu-img qemu-io "$PY"; do
        if ! command -v "$p" >/dev/null 2>&1; then
            echo "SKIP: $T_NAME: $p not found (apt-get install qemu-utils python3)"
            exit 77
        fi
    done
}

# need_tools PROG...: skip (77) unless every PROG is found, also in
# /usr/sbin and /sbin (where Debian keeps mke2fs, sgdisk and mkfs.vfat).
need_tools() {
    local p
    for p in "$@"; do
        command -v "$p" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
        if ! command -v "$p" >/dev/null 2>&1; then
            echo "SKIP: $T_NAME: $p not found (apt-get install gdisk fdisk e2fsprogs dosfstools mtools)"
            exit 77
        fi
    done
}

# --- reporting ---------------------------------------------------------------

set_case() { T_CASE="$*"; }

say() { printf '%s\n' "$*"; }

# bad MSG: record a failed check and go on.
bad() {
    local msg="FAIL [$T_NAME${T_CASE:+: $T_CASE}] $*"
    T_FAILS=$((T_FAILS + 1))
    T_FAILED_LIST+=("$msg")
    printf '%s\n' "$msg" >&2
}

# fail MSG: stop the test now.
fail() {
    bad "$@"
    finish
}

# finish: print the summary and exit 0 when every check passed.
finish() {
    local m
    if [[ $T_FAILS -eq 0 ]]; then
        say "PASS $T_NAME: $T_CHECKS checks"
        exit 0
    fi
    {
        echo "=== $T_NAME: $T_FAILS of $T_CHECKS checks failed:"
        for m in "${T_FAILED_LIST[@]}"; do
            echo "  $m"
        done
    } >&2
    exit 1
}

# show FILE [LINES]: indent the head of a file into a failure message.
show() {
    [[ -s "$1" ]] || return 0
    head -n "${2:-15}" "$1" | sed 's/^/    | /' >&2
}

# --- checks ------------------------------------------------------------------

# expect_eq WHAT GOT WANT [FILE]: on a mismatch, FILE's head is shown too.
expect_eq() {
    T_CHECKS=$((T_CHECKS + 1))
    if [[ "$2" != "$3" ]]; then
        bad "$1: got '$2', want '$3'"
        [[ -z ${4:-} ]] || show "$4"
    fi
    return 0
}

# expect_true WHAT COMMAND...: the command must succeed.
expect_true() {
    local what=$1
    shift
    T_CHECKS=$((T_CHECKS + 1))
    if ! "$@"; then
        bad "$what"
    fi
    return 0
}

# near PCT SLACK A B: |A-B| <= PCT% of max(A,B), or <= SLACK bytes when both
# are below 1 MiB (a few file-system blocks of a tiny file are not 10%).
near() {
    local pct=$1 slack=$2 a=$3 b=$4 d m
    d=$((a > b ? a - b : b - a))
    m=$((a > b ? a : b))
    ((d * 100 <= m * pct)) && return 0
    ((m < 1048576 && d <= slack)) && return 0
    return 1
}

# expect_near WHAT PCT SLACK GOT WANT
expect_near() {
    T_CHECKS=$((T_CHECKS + 1))
    if ! near "$2" "$3" "$4" "$5"; then
        bad "$1: got $4, want $5 (within $2% or $3 bytes below 1 MiB)"
    fi
    return 0
}

# --- running programs --------------------------------------------------------

# run_df ARGS...: run diskforge under a timeout.  Sets DF_RC; stdout and
# stderr are in $DF_OUT and $DF_ERR.  A hang, a crash (signal, exit >= 128)
# or a sanitizer report is a failed check here; the exit code is the
# caller's to judge.
run_df() {
    local rc=0
    timeout -k 5 "${DF_TIMEOUT:-300}" "$DISKFORGE" "$@" \
        >"$DF_OUT" 2>"$DF_ERR" </dev/null || rc=$?
    DF_RC=$rc
    T_CHECKS=$((T_CHECKS + 1))
    if ((rc == 124)); then
        bad "diskforge $* did not finish within ${DF_TIMEOUT:-300} s (hang?)"
    elif ((rc >= 128)); then
        bad "diskforge $* crashed (exit $rc, signal $((rc - 128)))"
        show "$DF_ERR"
    elif grep -qE 'Sanitizer|runtime error:' "$DF_ERR"; then
        bad "diskforge $* made a sanitizer report"
        show "$DF_ERR" 40
    fi
    return 0
}

# df_ok ARGS...: run_df and expect exit 0.  Returns 1 (after recording the
# failure) otherwise, so a caller can skip checks that depend on it.
df_ok() {
    run_df "$@"
    T_CHECKS=$((T_CHECKS + 1))
    if ((DF_RC != 0)); then
        bad "diskforge $* exited $DF_RC"
        show "$DF_ERR"
        return 1
    fi
}

# q_ok COMMAND...: run a qemu (or other oracle) command, expect exit 0.
q_ok() {
    local rc=0
    timeout -k 5 600 "$@" >"$Q_OUT" 2>"$Q_ERR" </dev/null || rc=$?
    T_CHECKS=$((T_CHECKS + 1))
    if ((rc != 0)); then
        bad "$* exited $rc"
        show "$Q_ERR"
        show "$Q_OUT"
        return 1
    fi
}

# same_as_qemu SUBCOMMAND ARGS...: `diskforge SUBCOMMAND ARGS` and
# `qemu-img SUBCOMMAND ARGS` exit with the same code and print the same
# stdout, byte for byte.
same_as_qemu() {
    local qrc=0
    qemu-img "$@" >"$Q_OUT" 2>"$Q_ERR" || qrc=$?
    run_df "$@"
    T_CHECKS=$((T_CHECKS + 1))
    if ((DF_RC != qrc)); then
        bad "exit $DF_RC, qemu-img exits $qrc"
        show "$DF_ERR"
        show "$Q_ERR"
    fi
    T_CHECKS=$((T_CHECKS + 1))
    if ! cmp -s "$DF_OUT" "$Q_OUT"; then
        bad "output differs (diskforge < > qemu-img)"
        diff "$DF_OUT" "$Q_OUT" | head -n 20 | sed 's/^/    | /' >&2 || true
    fi
    return 0
}

# qcheck IMG: `qemu-img check` must exit 0 and find no errors and no leaks.
qcheck() {
    local rc=0
    qemu-img check -f qcow2 "$1" >"$Q_OUT" 2>"$Q_ERR" || rc=$?
    T_CHECKS=$((T_CHECKS + 1))
    if ((rc != 0)) || ! grep -q '^No errors were found on the image' "$Q_OUT"; then
        bad "qemu-img check $(basename "$1") exited $rc"
        show "$Q_OUT"
        show "$Q_ERR"
    fi
    return 0
}

# --- files -------------------------------------------------------------------

len_of() { stat -c %s "$1"; }
alloc_of() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }

# bytes_of SIZE: 64M -> 67108864 (the suffixes the tests use).
bytes_of() {
    local s=$1 n m=1
    case $s in
    *K) m=1024 ;;
    *M) m=$((1024 ** 2)) ;;
    *G) m=$((1024 ** 3)) ;;
    *T) m=$((1024 ** 4)) ;;
    esac
    n=${s%[KMGT]}
    echo $((n * m))
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- job runner reports -------------------------------------------------------

# report_ok FILE: a run report valid against docs/report.schema.json
# (needs python3-jsonschema: check with need_jsonschema first).
report_ok() {
    T_CHECKS=$((T_CHECKS + 1))
    "$PY" "$T_SRC/tests/interop/pipeline_check_report.py" "$1" 2>"$T_TMP/.schema.err" ||
        { bad "$(basename "$1") does not match the report schema"; show "$T_TMP/.schema.err"; }
}
# rjson FILE PYEXPR: print PYEXPR evaluated with r = the JSON in FILE.
rjson() {
    "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}
# step_result_ok FILE: a `diskforge step --result` file valid against the
# schema's step object.
step_result_ok() {
    T_CHECKS=$((T_CHECKS + 1))
    "$PY" "$T_SRC/tests/interop/pipeline_check_report.py" --step "$1" 2>"$T_TMP/.schema.err" ||
        { bad "$(basename "$1") does not match the schema's step object"; show "$T_TMP/.schema.err"; }
}
# no_sanitizer_report FILE...: none of the files (logs of diskforge runs
# the test did not start through run_df) holds a sanitizer report.
no_sanitizer_report() {
    local f
    for f in "$@"; do
        T_CHECKS=$((T_CHECKS + 1))
        if grep -qE 'Sanitizer|runtime error:' "$f" 2>/dev/null; then
            bad "$(basename "$f") holds a sanitizer report"
            show "$f" 40
        fi
    done
    return 0
}
# need_jsonschema: skip (77) without python3-jsonschema.
need_jsonschema() {
    "$PY" -c 'import jsonschema' 2>/dev/null ||
        { echo "SKIP: $T_NAME: python3-jsonschema missing"; exit 77; }
}
# job_files: the jobs in jobs/ this machine can run (golden-image needs mke2fs).
# jobs_copy: copy jobs/ to $T_TMP/src/jobs (examples/ linked beside it, as
# the jobs find their inputs there) and print that directory.  Tests run
# the job files from the copy: a run takes the job's run lock (and state)
# in .diskforge/ beside the job file, and another copy of this suite may
# run the same jobs at the same moment.
jobs_copy() {
    if [[ ! -d $T_TMP/src/jobs ]]; then
        mkdir -p "$T_TMP/src"
        cp -r "$T_SRC/jobs" "$T_TMP/src/jobs"
        rm -rf "$T_TMP/src/jobs/.diskforge"
        ln -s "$T_SRC/examples" "$T_TMP/src/examples"
    fi
    echo "$T_TMP/src/jobs"
}

job_files() {
    echo seed-walkthrough lab
    command -v mke2fs >/dev/null && echo golden-image
    return 0
}

# qemu_sha IMG FMT: sha256 of the guest bytes, as qemu-img converts them.
qemu_sha() {
    local raw="$T_TMP/.qemu_sha.raw"
    rm -f "$raw"
    qemu-img convert -f "$2" -O raw "$1" "$raw" || {
        echo "qemu-img-convert-failed"
        return 0
    }
    sha_of "$raw"
    rm -f "$raw"
}

# df_sha IMG FMT: the digest diskforge prints (first 64-hex-digit word), or
# "diskforge-digest-failed".
df_sha() {
    run_df digest -f "$2" "$1"
    if ((DF_RC != 0)); then
        show "$DF_ERR" >&2
        echo "diskforge-digest-failed(rc=$DF_RC)"
        return 0
    fi
    grep -oE '\b[0-9a-f]{64}\b' "$DF_OUT" | head -n 1 || echo "no-digest-in-output"
}

# expect_reads_as IMG FMT REF: diskforge reads IMG as the bytes of the raw
# file REF: `diskforge digest` equals sha256sum of REF and `diskforge
# compare` says identical (exit 0).
expect_reads_as() {
    expect_eq "diskforge digest vs sha256 of $(basename "$3")" \
        "$(df_sha "$1" "$2")" "$(sha_of "$3")"
    run_df compare -f "$2" -F raw "$1" "$3"
    expect_eq "diskforge compare with $(basename "$3") (exit code)" \
        "$DF_RC" 0 "$DF_ERR"
}

# map_sig IMG FMT [FROM]: qemu-img map --output=json reduced to what must
# agree between two images with the same content and layout policy: the
# runs of (present, data, zero) from byte FROM on, host offsets and depth
# ignored, adjacent runs of the same kind merged.  One "start length present
# data zero" line a run.
map_sig() {
    qemu-img map -f "$2" --output=json "$1" | "$PY" -c '
import json, sys
start_at = int(sys.argv[1])
runs = []
for e in json.load(sys.stdin):
    s, n = e["start"], e["length"]
    if s + n <= start_at:
        continue
    if s < start_at:
        s, n = start_at, s + n - start_at
    k = (e["present"], e["data"], e["zero"])
    if runs and runs[-1][2] == k and runs[-1][0] + runs[-1][1] == s:
        runs[-1][1] += n
    else:
        runs.append([s, n, k])
for s, n, (p, d, z) in runs:
    print(s, n, "present" if p else "-", "data" if d else "-", "zero" if z else "-")
' "${3:-0}"
}

# expect_same_map WHAT IMG_A IMG_B FMT: the same map_sig.  For raw files the
# first 4 KiB are left out: qemu-img writes that block of every raw file it
# creates (to probe the alignment when it opens the file again), so it is
# data in qemu's files and a hole in ours.  The bytes there are still
# compared by the digests.
expect_same_map() {
    local a="$T_TMP/.map.a" b="$T_TMP/.map.b" from=0
    [[ $4 != raw ]] || from=4096
    map_sig "$2" "$4" "$from" >"$a" || true
    map_sig "$3" "$4" "$from" >"$b" || true
    T_CHECKS=$((T_CHECKS + 1))
    if ! cmp -s "$a" "$b"; then
        bad "$1: qemu-img map differs (diskforge's < > qemu's)"
        diff "$a" "$b" | head -n 20 | sed 's/^/    | /' >&2 || true
    fi
    return 0
}

# same_bytes A B: the two files have the same length and bytes.  Compares
# only the data regions (SEEK_DATA/SEEK_HOLE) of either file, so two sparse
# 1 GiB images compare in milliseconds; a hole equals zero bytes.
same_bytes() {
    "$PY" - "$1" "$2" <<'EOF'
import os, sys
def data_runs(fd, size):
    runs, off = [], 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        runs.append((start, end))
        off = end
    return runs
fa, fb = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
size = os.fstat(fa).st_size
if os.fstat(fb).st_size != size:
    print(f"lengths differ: {size} and {os.fstat(fb).st_size}")
    sys.exit(1)
for start, end in sorted(data_runs(fa, size) + data_runs(fb, size)):
    off = start
    while off < end:
        n = min(end - off, 1 << 22)
        if os.pread(fa, n, off) != os.pread(fb, n, off):
            print(f"first difference within bytes {off}..{off + n}")
            sys.exit(1)
        off += n
EOF
}

# expect_same_bytes WHAT A B
expect_same_bytes() {
    local why
    T_CHECKS=$((T_CHECKS + 1))
    if ! why=$(same_bytes "$2" "$3"); then
        bad "$1: $(basename "$2") and $(basename "$3") differ: $why"
    fi
    return 0
}

# --- qemu-io ----------------------------------------------------------------

MiB=$((1024 * 1024))

# qemu_io_patterns CLUSTER SIZE COMPRESS: qemu-io -c arguments (NUL
# separated) that write an image of SIZE bytes: unaligned offsets, runs
# across cluster and L2 boundaries (a 512-byte-cluster L2 table covers only
# 32 KiB), zero writes with and without unmap, a discard, the last bytes;
# with COMPRESS 1 also compressed clusters and a byte written into one
# (qemu refuses compressed writes into preallocated clusters).
qemu_io_patterns() {
    local c=$1 s=$2 z=$3
    local args=(
        "write -P 0xab 0 64k"
        "write -P 0x11 1M 3k"
        "write -P 0x12 $((MiB + 4096 + 1)) 777"        # unaligned, mid-cluster
        "write -P 0x22 32767 2"                         # across 32 KiB
        "write -P 0x23 $((65536 - 3)) 7"                # across 64 KiB
        "write -P 0x33 $((2 * MiB - 100)) 200"          # across 2 MiB
        "write -z 2M 128k"
        "write -P 0x44 5M 1M"
        "write -z $((5 * MiB + 4096 + 17)) 8000"        # zeros inside data
        "write -z -u $((5 * MiB + 256 * 1024)) 256k"    # zero with unmap
        "discard $((5 * MiB + 768 * 1024)) 128k"
        "write -P 0x66 $((s / 2 + 12345)) 300000"       # many clusters
        "write -P 0x67 $((s / 2 + 12345 + 299990)) 20"  # overlaps the end
        "write -P 0x99 $((s - 700)) 700"                # the last bytes
        "write -z $((s - 300)) 100"
    )
    if ((z)); then
        args+=(
            "write -c -P 0x77 $((8 * MiB)) $c"          # compressed cluster
            "write -c -P 0x78 $((16 * MiB)) $c"
            "write -P 0x88 $((16 * MiB + c / 2 + 3)) 1" # into a compressed one
        )
    fi
    local a
    for a in "${args[@]}"; do
        printf '%s\0%s\0' -c "$a"
    done
}
# Use: mapfile -d '' -t io < <(qemu_io_patterns 65536 67108864 1)
#      qemu-io -f qcow2 "${io[@]}" img.qcow2

# expect_pattern WHAT IMG FMT "PATTERN OFFSET LENGTH"...: qemu-io reads
# IMG (read-only, through its backing chain) and finds each range filled
# with its byte (`read -q -P`); one check for all the ranges, which
# qemu-io names on a mismatch.  Ranges of length 0 are left out.
expect_pattern() {
    local what=$1 img=$2 fmt=$3 r p o n rc=0 args=()
    shift 3
    for r in "$@"; do
        read -r p o n <<<"$r"
        [[ $n == 0 ]] || args+=(-c "read -q -P $p $o $n")
    done
    T_CHECKS=$((T_CHECKS + 1))
    qemu-io -r -f "$fmt" "${args[@]}" "$img" >"$Q_OUT" 2>&1 || rc=$?
    if ((rc != 0)) || grep -qi 'failed' "$Q_OUT"; then
        bad "$what: qemu-io pattern reads of $(basename "$img") (exit $rc)"
        show "$Q_OUT"
    fi
    return 0
}

# --- JSON --------------------------------------------------------------------

# json_get FILE KEY.PATH: one value, as JSON ("<absent>" when missing).
json_get() {
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    if not isinstance(v, dict) or k not in v:
        print("<absent>")
        sys.exit(0)
    v = v[k]
print(v if isinstance(v, str) else json.dumps(v))
EOF
}

# json_expect FILE KEY=VALUE...: each KEY (dotted path) must have VALUE
# (strings bare, others as JSON; "<absent>" for a key that must be missing).
# Prints one line per mismatch; returns 1 if there was any.
json_expect() {
    "$PY" - "$@" <<'EOF'
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"not JSON: {e}")
    sys.exit(1)
bad = 0
for kv in sys.argv[2:]:
    key, want = kv.split("=", 1)
    v = doc
    for k in key.split("."):
        v = v[k] if isinstance(v, dict) and k in v else "<absent>"
        if v == "<absent>":
            break
    got = v if isinstance(v, str) else json.dumps(v)
    if got != want:
        print(f"{key}: got {got}, want {want}")
        bad = 1
sys.exit(bad)
EOF
}

# json_common A B KEY.PATH...: for each key, values in A and B must be equal
# where both have it; keys named with a leading '!' must be in both.
json_common() {
    "$PY" - "$@" <<'EOF'
import json, sys
def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return KeyError
        d = d[k]
    return d
try:
    a, b = (json.load(open(p)) for p in sys.argv[1:3])
except Exception as e:
    print(f"not JSON: {e}")
    sys.exit(1)
bad = 0
for key in sys.argv[3:]:
    need = key.startswith("!")
    key = key.lstrip("!")
    va, vb = get(a, key), get(b, key)
    if va is KeyError or vb is KeyError:
        if need:
            print(f"{key}: missing ({'diskforge' if va is KeyError else 'qemu-img'})")
            bad = 1
        continue
    if va != vb:
        print(f"{key}: diskforge {json.dumps(va)}, qemu-img {json.dumps(vb)}")
        bad = 1
sys.exit(bad)
EOF
}

# Fields `diskforge info --output=json` must share with `qemu-img info
# --output=json` (json_common: '!' = both must print it; the others are
# compared where both have them).
INFO_RAW=('!virtual-size' '!format' '!actual-size' 'filename' 'dirty-flag')
INFO_QCOW2=("${INFO_RAW[@]}" '!cluster-size' '!dirty-flag'
    'format-specific.type' '!format-specific.data.compat'
    'format-specific.data.lazy-refcounts' '!format-specific.data.refcount-bits'
    '!format-specific.data.compression-type' 'format-specific.data.corrupt'
    'format-specific.data.extended-l2' 'backing-filename'
    'backing-filename-format')

# expect_info_like DF_JSON QEMU_JSON KEYS...: json_common as a check.
expect_info_like() {
    local mism
    T_CHECKS=$((T_CHECKS + 1))
    if ! mism=$(json_common "$@"); then
        bad "diskforge info vs qemu-img info: ${mism//$'\n'/; }"
    fi
    return 0
}

# --- qcow2 header pokes ------------------------------------------------------

# Offset and width (bytes, big-endian) of the qcow2 header fields.
declare -A QCOW2_FIELD=(
    [magic]="0 4" [version]="4 4" [backing_file_offset]="8 8"
    [backing_file_size]="16 4" [cluster_bits]="20 4" [size]="24 8"
    [crypt_method]="32 4" [l1_size]="36 4" [l1_table_offset]="40 8"
    [refcount_table_offset]="48 8" [refcount_table_clusters]="56 4"
    [nb_snapshots]="60 4" [snapshots_offset]="64 8"
    [incompatible_features]="72 8" [compatible_features]="80 8"
    [autoclear_features]="88 8" [refcount_order]="96 4"
    [header_length]="100 4" [compression_type]="104 1"
)

# poke FILE OFFSET WIDTH VALUE: write VALUE big-endian (WIDTH bytes).
# VALUE may be negative (bash arithmetic is signed 64-bit): it is taken
# modulo 2^(8*WIDTH), so $((1 << 63 | off)) works.
poke() {
    "$PY" - "$@" <<'EOF'
import sys
path, off, width, val = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3]), int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(off)
    f.write((val % (1 << (8 * width))).to_bytes(width, "big"))
EOF
}

# peek FILE OFFSET WIDTH: the big-endian value there, as 0x... hex (which
# bash arithmetic reads, wrapping values >= 2^63 to negative numbers).
peek() {
    "$PY" - "$@" <<'EOF'
import sys
path, off, width = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3])
with open(path, "rb") as f:
    f.seek(off)
    print(hex(int.from_bytes(f.read(width).ljust(width, b"\0"), "big")))
EOF
}

# qcow2_get FILE FIELD / qcow2_set FILE FIELD VALUE
qcow2_get() {
    local f=${QCOW2_FIELD[$2]:?unknown qcow2 field $2}
    # shellcheck disable=SC2086 # "offset width"
    peek "$1" $f
}
qcow2_set() {
    local f=${QCOW2_FIELD[$2]:?unknown qcow2 field $2}
    # shellcheck disable=SC2086
    poke "$1" ${f% *} ${f#* } "$3"
}

# qcow2_l2_offset FILE [L1_INDEX]: host offset of an L2 table (0 if none).
qcow2_l2_offset() {
    local l1 e
    l1=$(qcow2_get "$1" l1_table_offset)
    e=$(peek "$1" $((l1 + 8 * ${2:-0})) 8)
    echo $((e & 0x00fffffffffffe00))
}

# --- tables for humans -------------------------------------------------------

# table_start FILE HEADER...: start a markdown table in $T_OUT/FILE (and on
# stdout); table_row CELL... adds a row to both.
table_start() {
    T_TABLE="$T_OUT/$1"
    shift
    : >"$T_TABLE"
    table_row "$@"
    local sep=() c
    for c in "$@"; do
        sep+=("---")
    done
    table_row "${sep[@]}"
}

table_row() {
    local line="|" c
    for c in "$@"; do
        line+=" $c |"
    done
    printf '%s\n' "$line" | tee -a "$T_TABLE"
}

# --- Slurm ------------------------------------------------------------------

# slurm_start: start a private single-node Slurm (tests/slurm-cluster.sh)
# in $T_TMP/slurm and source its environment (SLURM_CONF, DF_SLURM_*), so
# sbatch, squeue and scancel talk to it.  Skips the test (77) where Slurm
# cannot start (not root, slurm-wlm or munge missing), saying why, unless
# DF_REQUIRE_SLURM=1 (.ci/run: there a skip would hide that the Slurm
# tests did not run); a cluster that should start and does not is a
# failure.  The exit trap
# stops it (slurm_stop); T_SLURM_PIDS holds its daemons' PIDs.
T_SLURM_DIR=""
T_SLURM_PIDS=""
slurm_start() {
    local env rc=0
    T_SLURM_DIR="$T_TMP/slurm"
    mkdir -p "$T_SLURM_DIR"
    env=$("$T_SRC/tests/slurm-cluster.sh" start "$T_SLURM_DIR" 2>"$T_TMP/.slurm.err") || rc=$?
    if ((rc == 77)) && [[ ${DF_REQUIRE_SLURM:-0} != 1 ]]; then
        echo "SKIP: $T_NAME: $(sed 's/^slurm-cluster: SKIP: //' "$T_TMP/.slurm.err")"
        T_SLURM_DIR=""
        exit 77
    elif ((rc != 0)); then
        T_SLURM_DIR=""
        bad "the test cluster did not start (tests/slurm-cluster.sh exit $rc${DF_REQUIRE_SLURM:+, and DF_REQUIRE_SLURM=$DF_REQUIRE_SLURM})"
        show "$T_TMP/.slurm.err" 80
        finish
    fi
    # shellcheck source=/dev/null
    . "$env"
    # shellcheck disable=SC2153 # set by the env file
    T_SLURM_PIDS=$DF_SLURM_PIDS
}
# slurm_stop: stop the cluster slurm_start started (exactly its daemons, by
# PID), if any; 1 if one survived.
slurm_stop() {
    local d=$T_SLURM_DIR
    [[ -n $d ]] || return 0
    T_SLURM_DIR=""
    "$T_SRC/tests/slurm-cluster.sh" stop "$d" >&2
}
