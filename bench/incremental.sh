#!/usr/bin/env bash
# incremental.sh - what an incremental run costs when nothing changed
# (issue 7, docs/incremental.md).  Not a timed test: figures for a note.
#
#   bench/incremental.sh [--rounds N] [--dir DIR] [--out FILE]
#
#  1. A job of 300 steps (100 qcow2 creates of 64 MiB, 100 overlays on them,
#     100 checks of the overlays), run once, then N more times (default 5)
#     with nothing changed: the median wall time of a second run, and per
#     step (target: under 2 ms per step; the issue's limit is 10 ms).
#  2. jobs/golden-image.yaml (needs mke2fs): the first run's wall time and
#     the median of N second runs, and their ratio (limit: 10 %).
#  3. The hash cache: on a second run of the golden image, how many files
#     of its rootfs input directory diskforge opened (strace, when it is
#     installed): with a warm stat cache, none (only stat() calls).  The
#     rootfs directory is copied first and its files' times set 10 s back,
#     so that the cache trusts them on the first run already (SPEC §6 does
#     not trust a hash within 2 s of the file's mtime or ctime; a fresh
#     copy's ctime is new, hence the 3 s pause before the first run).
# Each run has its own store (--state) in the work directory, made in DIR
# (default $TMPDIR or /tmp) and removed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_setup incremental 5 -- "$@"

report() { [[ -z $OUT ]] && cat || tee -a "$OUT"; }
ms_per() { awk -v t="$1" -v n="$2" 'BEGIN { printf "%.3f", t * 1000 / n }'; }

echo "diskforge incremental benchmark: $(bench_machine "$W"), $ROUNDS rounds," \
     "load $(cut -d' ' -f1-3 /proc/loadavg)" | report

# --- 1. 300 steps, nothing changed -------------------------------------------
{
    printf 'version: 1\nname: many\nsteps:\n'
    for i in $(seq -w 1 100); do
        printf '  - {id: base%s, op: create, image: base%s.qcow2, size: 64M}\n' "$i" "$i"
        printf '  - {id: ov%s, op: overlay, image: ov%s.qcow2, backing: base%s.qcow2}\n' "$i" "$i" "$i"
        printf '  - {id: check%s, op: check, image: ov%s.qcow2}\n' "$i" "$i"
    done
} > "$W/many.yaml"
first=$(time_once "$W/many.report.json" "$DF" run "$W/many.yaml" --state "$W/many.db")
times=()
for _ in $(seq "$ROUNDS"); do
    times+=("$(time_once "$W/many.report.json" "$DF" run "$W/many.yaml" --state "$W/many.db")")
done
second=$(printf '%s\n' "${times[@]}" | median)
utd=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["up_to_date"])' "$W/many.report.json")
{
    echo
    echo "| 300 steps (100 create, 100 overlay, 100 check) | seconds | ms per step |"
    echo "|---|---|---|"
    echo "| first run | $first | $(ms_per "$first" 300) |"
    echo "| second run, nothing changed (median) | $second | $(ms_per "$second" 300) |"
    echo
    echo "steps up to date in the second run: $utd of 300"
} | report

# --- 2. the golden image --------------------------------------------------------
if ! command -v mke2fs >/dev/null; then
    echo "(mke2fs not installed: the golden image is not measured)" | report
    exit 0
fi
cp -r "$ROOT/examples/golden-rootfs" "$W/rootfs"
find "$W/rootfs" -exec touch -h -d '-10 seconds' {} +
sleep 3
G=(run "$ROOT/jobs/golden-image.yaml" --set out="$W/golden" --set rootfs="$W/rootfs"
   --state "$W/golden.db" --report "$W/golden.json")
gfirst=$(time_once "$W/golden.json" "$DF" "${G[@]}")
times=()
for _ in $(seq "$ROUNDS"); do
    times+=("$(time_once "$W/golden.json" "$DF" "${G[@]}")")
done
gsecond=$(printf '%s\n' "${times[@]}" | median)
{
    echo
    echo "| jobs/golden-image.yaml | seconds |"
    echo "|---|---|"
    echo "| first run | $gfirst |"
    echo "| second run, nothing changed (median) | $gsecond |"
    awk -v a="$gsecond" -v b="$gfirst" 'BEGIN { printf "| second / first | %.1f %% |\n", 100 * a / b }'
} | report

# --- 3. the hash cache on a warm store -------------------------------------------
if command -v strace >/dev/null; then
    nfiles=$(find "$W/rootfs" -type f | wc -l)
    strace -f -qq -e trace=open,openat -o "$W/strace.out" "$DF" "${G[@]}" >/dev/null
    opened=$(grep "$W/rootfs/" "$W/strace.out" | grep -vc O_DIRECTORY || true)
    echo "" | report
    echo "warm stat cache: $opened of the $nfiles files in the rootfs input opened by a second run (strace)" | report
fi
