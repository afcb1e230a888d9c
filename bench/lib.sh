# shellcheck shell=bash
# bench/lib.sh - timing helpers shared by the bench/*.sh scripts.  Sourced.
#
#   t=$(time_once OUT CMD...)     seconds CMD took (OUT removed, fs synced first)
#   printf '%s\n' "${times[@]}" | median
#   bench_row NAME T_DISKFORGE T_OTHER   one markdown row with the ratio
#   bench_machine DIR              a line describing CPU, kernel, file system
#   bench_setup NAME ROUNDS [hyperfine] -- "$@"   the scripts' common start

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

# bench_setup NAME DEFAULT_ROUNDS [hyperfine] -- ARGS...: what every
# bench/NAME.sh starts with.  Sets DF (the diskforge program: $DISKFORGE or
# build/src/diskforge, which must exist), PY (the system's python3), and
# from ARGS ROUNDS (--rounds N), DIR (--dir DIR, default $TMPDIR or /tmp),
# OUT (--out FILE) and, only when "hyperfine" is given, USE_HYPERFINE
# (--hyperfine).  -h prints the script's header comment.  Then makes the
# work directory W in DIR, removed on exit.
bench_setup() {
    local name=$1 hyperfine=0
    ROUNDS=$2
    shift 2
    [[ $1 == hyperfine ]] && { hyperfine=1; shift; }
    [[ $1 == -- ]] && shift
    DF=${DISKFORGE:-$ROOT/build/src/diskforge}
    PY=python3
    [[ -x /usr/bin/python3 ]] && PY=/usr/bin/python3
    DIR=${TMPDIR:-/tmp}
    OUT=""
    USE_HYPERFINE=0
    while (($#)); do
        case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --dir) DIR=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --hyperfine) ((hyperfine)) || break; USE_HYPERFINE=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) break ;;
        esac
    done
    if (($#)); then
        echo "$name.sh: unknown argument '$1' (see $name.sh --help)" >&2
        exit 2
    fi
    [[ -x $DF ]] || { echo "$name.sh: no diskforge at $DF (build first, or set DISKFORGE)" >&2; exit 1; }
    W=$(mktemp -d "$DIR/df-$name.XXXXXX")
    trap 'rm -rf "$W"' EXIT
}
