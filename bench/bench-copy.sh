#!/usr/bin/env bash
# bench-copy.sh - time `diskforge copy` against `cp` (GNU coreutils) on the
# same files, same machine.
#
#   bench/bench-copy.sh [--rounds N] [--dir DIR] [--out FILE]
#
# Inputs, made once:
#   half.bin    1 GiB written in full, half of it zeros: 16384 blocks of
#               64 KiB, each random data or zeros by a seeded coin toss
#               (allocated zeros: the case --sparse=always is for)
#   sparse.raw  2 GiB sparse file with 512 MiB of random data in 8192
#               64 KiB clusters at random places (seed 42), the input of
#               bench.sh (scripts/gen-sparse-raw.py)
# Measured, each as `diskforge copy --sparse=M IN OUT` and
# `cp --sparse=M IN OUT`:
#   always on half.bin, auto on sparse.raw, always on sparse.raw,
#   never on sparse.raw
#
# Each operation runs N rounds (default 5), alternating diskforge and cp
# within a round so that both see the same page-cache and background
# conditions; before each run the output is removed, the file system
# synced and one second left for background work (not timed).  The table
# gives the median wall time and CPU time (user + system) of each tool and
# the ratios diskforge / cp (below 1: diskforge is faster).  On a shared
# machine the wall time mostly measures write-back and other load; the CPU
# time is steadier.  Before timing, each diskforge output is checked: same
# bytes as the input (cmp) and no more blocks allocated than cp's.  Needs
# about 5 GiB free in DIR (default $TMPDIR or /tmp).  Outputs are not
# fsynced (neither tool does).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
CP=${CP:-cp}
bench_setup bench-copy 5 -- "$@"

echo "diskforge: $DF ($("$DF" --version 2>/dev/null | head -n 1 || echo '?'))"
echo "cp:        $(command -v "$CP") ($("$CP" --version | head -n 1))"
echo "machine:   $(bench_machine "$W")"
echo "rounds:    $ROUNDS"
echo
echo "making the inputs: 1 GiB half zeros (allocated), 2 GiB sparse with 512 MiB data"
"$PY" - "$W/half.bin" <<'EOF'
import os, random, sys
rnd = random.Random(42)
zero = bytes(65536)
with open(sys.argv[1], "wb") as f:
    for _ in range(16384):
        f.write(zero if rnd.random() < 0.5 else os.urandom(65536))
EOF
"$PY" "$ROOT/scripts/gen-sparse-raw.py" "$W/sparse.raw" --size 2G \
    --cluster 64K --count 8192 --seed 42 --data urandom
sync

# time_cpu OUTFILE CMD...: "WALL CPU" seconds taken by CMD, CPU being
# user + system time (OUTFILE removed and the file system synced first,
# untimed).  A failing command stops the bench.
time_cpu() {
    local out=$1 t
    shift
    rm -f "$out"
    sync
    # let the journal and block freeing of the removed output settle: they
    # run in the background and would be charged to the next command
    sleep 1
    t=$( { TIMEFORMAT='%3R %3U %3S'; time "$@" >/dev/null 2>&1; } 2>&1 )
    awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' <<<"$t"
}

# verify MODE IN: diskforge's copy has IN's bytes and no more blocks than cp's.
verify() {
    local mode=$1 in=$2
    rm -f "$W/df.out" "$W/cp.out"
    "$DF" copy --sparse="$mode" "$in" "$W/df.out"
    "$CP" --sparse="$mode" "$in" "$W/cp.out"
    # delayed allocation reserves blocks until the data is written back
    sync "$W/df.out" "$W/cp.out"
    if ! cmp -s "$in" "$W/df.out"; then
        echo "bench-copy.sh: diskforge's copy of $in differs; not timing a wrong result" >&2
        exit 1
    fi
    if (($(stat -c %b "$W/df.out") > $(stat -c %b "$W/cp.out"))); then
        echo "bench-copy.sh: diskforge's copy of $in allocates more than cp's" >&2
        exit 1
    fi
    echo "  checked --sparse=$mode $(basename "$in"): same bytes; blocks diskforge" \
        "$(stat -c %b "$W/df.out"), cp $(stat -c %b "$W/cp.out")"
    rm -f "$W/df.out" "$W/cp.out"
}

ROWS=()
# bench_pair NAME MODE IN: time both tools, alternating.
bench_pair() {
    local name=$1 mode=$2 in=$3 r t dw=() dc=() cw=() cc=() mdw mdc mcw mcc
    verify "$mode" "$in"
    for ((r = 0; r < ROUNDS; r++)); do
        read -r -a t <<<"$(time_cpu "$W/df.out" "$DF" copy --sparse="$mode" "$in" "$W/df.out")"
        dw+=("${t[0]}") dc+=("${t[1]}")
        read -r -a t <<<"$(time_cpu "$W/cp.out" "$CP" --sparse="$mode" "$in" "$W/cp.out")"
        cw+=("${t[0]}") cc+=("${t[1]}")
    done
    rm -f "$W/df.out" "$W/cp.out"
    mdw=$(printf '%s\n' "${dw[@]}" | median)
    mdc=$(printf '%s\n' "${dc[@]}" | median)
    mcw=$(printf '%s\n' "${cw[@]}" | median)
    mcc=$(printf '%s\n' "${cc[@]}" | median)
    ROWS+=("$(awk -v n="$name" -v a="$mdw" -v b="$mcw" -v c="$mdc" -v d="$mcc" \
        'BEGIN { printf "| %s | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |", n, a, b, a / b, c, d, c / d }')")
    printf '  %-44s wall: diskforge %6.3f s, cp %6.3f s   cpu: diskforge %6.3f s, cp %6.3f s\n' \
        "$name" "$mdw" "$mcw" "$mdc" "$mcc"
}

echo
echo "timing (median of $ROUNDS):"
bench_pair "--sparse=always, 1 GiB half zeros" always "$W/half.bin"
bench_pair "--sparse=auto, 2 GiB sparse (512 MiB data)" auto "$W/sparse.raw"
bench_pair "--sparse=always, 2 GiB sparse (512 MiB data)" always "$W/sparse.raw"
bench_pair "--sparse=never, 2 GiB sparse (512 MiB data)" never "$W/sparse.raw"

{
    echo
    echo "| operation | diskforge wall (s) | cp wall (s) | ratio | diskforge cpu (s) | cp cpu (s) | ratio |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "${OUT:-/dev/null}"
