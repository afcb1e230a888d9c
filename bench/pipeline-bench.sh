#!/usr/bin/env bash
# pipeline-bench.sh - two figures for the job runner (not a timed test):
#
#  1. parallel speed-up: a job with two independent digest steps over two
#     1 GiB images, run with -j 2 and with -j 1; the ratio of the wall
#     times should be at most 0.6 on a machine with 2 idle cores.  By
#     default the images are sparse, so each digest hashes 1 GiB of zeros:
#     CPU work only, no disk reads to blur the figure.  BENCH_DATA=random
#     fills them with random bytes instead (then the disk and the page
#     cache take part);
#  2. scheduling overhead: a job of 500 trivial steps (info of one small
#     image, each after the previous one and in parallel), its wall time
#     minus the time of the same ops run back to back, per step.
#
# usage: bench/pipeline-bench.sh [DISKFORGE]   (default: build/src/diskforge)
# BENCH_DIR picks where the 2 GiB of test images go (default: a temporary
# directory under $TMPDIR); BENCH_SIZE changes the image size (default 1G).
set -euo pipefail
DF=${1:-${DISKFORGE:-build/src/diskforge}}
[[ -x $DF ]] || { echo "no diskforge at '$DF' (build it, or pass its path)" >&2; exit 2; }
SIZE=${BENCH_SIZE:-1G}
DIR=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/df-pipeline-bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }
cpus=$(nproc)
echo "diskforge pipeline benchmark: $cpus online CPUs, images of $SIZE," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg) (figures need an idle machine)"

# --- 1. two independent CPU-heavy steps --------------------------------------
cat > "$DIR/prepare.yaml" <<YAML
version: 1
steps:
  - {id: mk-a, op: create, image: a.raw, format: raw, size: $SIZE}
  - {id: mk-b, op: create, image: b.raw, format: raw, size: $SIZE}
YAML
if [[ ${BENCH_DATA:-zero} == random ]]; then
    cat >> "$DIR/prepare.yaml" <<'YAML'
  - {id: fill-a, op: fill, image: a.raw, pattern: "random:1"}
  - {id: fill-b, op: fill, image: b.raw, pattern: "random:2"}
YAML
fi
cat > "$DIR/digests.yaml" <<'YAML'
version: 1
steps:
  - {id: digest-a, op: digest, image: a.raw}
  - {id: digest-b, op: digest, image: b.raw}
YAML
"$DF" run "$DIR/prepare.yaml" -j 2 >/dev/null
# warm the page cache so that both runs hash from memory
cat "$DIR/a.raw" "$DIR/b.raw" >/dev/null
best() { # best J: the fastest of three runs with -j J
    local b="" t0 t1 d
    for _ in 1 2 3; do
        t0=$(now)
        "$DF" run "$DIR/digests.yaml" -j "$1" --report "$DIR/r.json" >/dev/null
        t1=$(now)
        d=$(elapsed "$t0" "$t1")
        if [[ -z $b ]] || (($(echo "$d < $b" | bc -l))); then b=$d; fi
    done
    echo "$b"
}
t1=$(best 1)
t2=$(best 2)
printf 'two %s digests (%s data): -j 1 %.2f s, -j 2 %.2f s, ratio %.2f (target <= 0.60 on 2 idle cores)\n' \
    "$SIZE" "${BENCH_DATA:-zero}" "$t1" "$t2" "$(echo "$t2 / $t1" | bc -l)"
rm -f "$DIR/a.raw" "$DIR/b.raw"

# --- 2. 500 small steps ----------------------------------------------------------
N=500
"$DF" create -f raw "$DIR/small.raw" 64K >/dev/null
{
    echo "version: 1"
    echo "steps:"
    for i in $(seq 1 $N); do
        echo "  - {id: s$i, op: info, image: small.raw}"
    done
} > "$DIR/fan.yaml"
{
    echo "version: 1"
    echo "steps:"
    echo "  - {id: s1, op: info, image: small.raw}"
    for i in $(seq 2 $N); do
        echo "  - {id: s$i, op: info, image: small.raw, needs: [s$((i - 1))]}"
    done
} > "$DIR/chain.yaml"
run_ms() { # run_ms JOB J: wall ms of the run phase as the report measures it
    "$DF" run "$DIR/$1" -j "$2" --report "$DIR/r.json" >/dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["duration_ms"], sum(s["duration_ms"] for s in r["steps"]))' "$DIR/r.json"
}
for job in chain fan; do
    for j in 1 "$cpus"; do
        read -r total busy < <(run_ms "$job.yaml" "$j")
        t0=$(now)
        "$DF" validate "$DIR/$job.yaml" >/dev/null
        t1=$(now)
        printf '%s of %d steps, -j %d: run %d ms, in ops %d ms, scheduling %.3f ms/step (load+validate %.0f ms)\n' \
            "$job" "$N" "$j" "$total" "$busy" \
            "$(echo "($total - $busy / $j) / $N" | bc -l)" \
            "$(echo "($t1 - $t0) * 1000" | bc -l)"
    done
done
