#!/usr/bin/env bash
# bench.sh - time diskforge against qemu-img on the same machine, same files.
#
#   bench/bench.sh [--rounds N] [--dir DIR] [--out FILE] [--hyperfine]
#
# Builds nothing: it times build/src/diskforge (or $DISKFORGE) and the
# qemu-img on $PATH.  The input is a 2 GiB sparse raw file with 25 % data:
# 8192 of its 32768 64 KiB clusters, at random positions (seed 42), filled
# from /dev/urandom (scripts/gen-sparse-raw.py).  Measured:
#
#   convert -f raw -O qcow2   the 2 GiB raw file
#   convert -f qcow2 -O raw   that qcow2 back to a (sparse) raw file
#   create -o preallocation=MODE, 1 GiB, qcow2 off/metadata/falloc/full and
#   raw off/falloc/full
#
# Each operation runs N rounds (default 5), alternating diskforge and
# qemu-img within a round so that both see the same page-cache and
# background conditions; before each run the output is removed and the file
# system synced (not timed).  The table gives the median wall time of each
# tool and the ratio diskforge / qemu-img (below 1: diskforge is faster).
# With --hyperfine (if installed) each pair is timed by hyperfine instead
# (1 warm-up, N runs, same prepare step), which runs one tool's rounds
# after the other's.
#
# Needs about 1.6 GiB free in DIR (default $TMPDIR or /tmp): 512 MiB of
# input data, outputs up to 1 GiB.  Timings are wall clock on a warm page
# cache; outputs are not fsynced (as qemu-img convert's default cache mode).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
QEMU_IMG=${QEMU_IMG:-qemu-img}
bench_setup bench 5 hyperfine -- "$@"
command -v "$QEMU_IMG" >/dev/null || { echo "bench.sh: qemu-img not found" >&2; exit 1; }
if ((USE_HYPERFINE)) && ! command -v hyperfine >/dev/null; then
    echo "bench.sh: --hyperfine given but hyperfine is not installed" >&2
    exit 1
fi

SRC="$W/src.raw"

echo "diskforge: $DF ($("$DF" --version 2>/dev/null | head -n 1 || echo '?'))"
echo "qemu-img:  $(command -v "$QEMU_IMG") ($("$QEMU_IMG" --version | head -n 1))"
echo "machine:   $(bench_machine "$W")"
echo "rounds:    $ROUNDS$( ((USE_HYPERFINE)) && echo ' (hyperfine)')"
echo
echo "making the input: 2 GiB sparse raw, 8192 x 64 KiB random clusters (seed 42)"
"$PY" "$ROOT/scripts/gen-sparse-raw.py" "$SRC" --size 2G --cluster 64K \
    --count 8192 --seed 42 --data urandom
sync

ROWS=()
# bench_pair NAME OUTFILE "DISKFORGE ARGS" "QEMU-IMG ARGS": time both tools.
bench_pair() {
    local name=$1 out=$2 dfa=$3 qa=$4 r tdf=() tq=() mdf mq
    if ((USE_HYPERFINE)); then
        local js="$W/hf.json"
        hyperfine --warmup 1 --runs "$ROUNDS" --prepare "rm -f $out && sync" \
            --export-json "$js" "$DF $dfa" "$QEMU_IMG $qa" >/dev/null
        read -r mdf mq < <("$PY" -c 'import json,sys
r = json.load(open(sys.argv[1]))["results"]
print(r[0]["median"], r[1]["median"])' "$js")
    else
        for ((r = 0; r < ROUNDS; r++)); do
            # shellcheck disable=SC2086 # the argument strings are split on purpose
            tdf+=("$(time_once "$out" "$DF" $dfa)")
            # shellcheck disable=SC2086
            tq+=("$(time_once "$out" "$QEMU_IMG" $qa)")
        done
        mdf=$(printf '%s\n' "${tdf[@]}" | median)
        mq=$(printf '%s\n' "${tq[@]}" | median)
    fi
    ROWS+=("$(bench_row "$name" "$mdf" "$mq")")
    printf '  %-40s diskforge %7.3f s   qemu-img %7.3f s\n' "$name" "$mdf" "$mq"
}

echo
echo "timing (median of $ROUNDS):"
bench_pair "convert raw -> qcow2 (2 GiB, 25 % data)" "$W/out.qcow2" \
    "convert -f raw -O qcow2 $SRC $W/out.qcow2" \
    "convert -f raw -O qcow2 $SRC $W/out.qcow2"

# the qcow2 to convert back: made once by diskforge, checked against the source
"$DF" convert -f raw -O qcow2 "$SRC" "$W/in.qcow2"
if ! "$QEMU_IMG" compare -q -f raw -F qcow2 "$SRC" "$W/in.qcow2"; then
    echo "bench.sh: diskforge's qcow2 differs from the source; not timing a wrong result" >&2
    exit 1
fi
bench_pair "convert qcow2 -> raw (2 GiB, 25 % data)" "$W/out.raw" \
    "convert -f qcow2 -O raw $W/in.qcow2 $W/out.raw" \
    "convert -f qcow2 -O raw $W/in.qcow2 $W/out.raw"
rm -f "$W/in.qcow2" "$W/out.raw" "$W/out.qcow2"

for mode in off metadata falloc full; do
    bench_pair "create qcow2 1 GiB preallocation=$mode" "$W/c.qcow2" \
        "create -q -f qcow2 -o preallocation=$mode $W/c.qcow2 1G" \
        "create -q -f qcow2 -o preallocation=$mode $W/c.qcow2 1G"
done
for mode in off falloc full; do
    bench_pair "create raw 1 GiB preallocation=$mode" "$W/c.raw" \
        "create -q -f raw -o preallocation=$mode $W/c.raw 1G" \
        "create -q -f raw -o preallocation=$mode $W/c.raw 1G"
done

{
    echo
    echo "| operation | diskforge (s) | qemu-img (s) | diskforge / qemu-img |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "${OUT:-/dev/null}"
