# shellcheck shell=bash
# bench/lib.sh - timing helpers shared by the bench/*.sh scripts.  Sourced.
#
#   t=$(time_once OUT CMD...)     seconds CMD took (OUT removed, fs synced first)
#   printf '%s\n' "${times[@]}" | median
#   bench_row NAME T_DISKFORGE T_OTHER   one markdown row with the ratio
#   bench_machine DIR              a line describing CPU, kernel, file system

now() { date +%s.%N; }

median() {
    sort -g | awk '{ a[NR] = $1 }
        END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# time_once OUTFILE CMD...: seconds taken by CMD (OUTFILE removed and the
# file system synced first, untimed).  A failing command stops the bench
# (set -e in the caller).
time_once() {
    local out=$1 t0 t1
    shift
    rm -f "$out"
    sync
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.6f\n", a - b }'
}

# bench_row NAME A B: "| NAME | A | B | A/B |" with 3 decimals (2 for A/B).
bench_row() {
    awk -v n="$1" -v a="$2" -v b="$3" \
        'BEGIN { printf "| %s | %.3f | %.3f | %.2f |\n", n, a, b, a / b }'
}

bench_machine() {
    echo "$(nproc) CPUs, $(uname -r), $(df -hT "$1" | awk 'NR == 2 { print $2 " on " $1 }')"
}
