#!/usr/bin/env bash
# bench-engine.sh - the engine's heavier operations against qemu-img, run
# alternately in one invocation on the same files.
#
#   bench/bench-engine.sh [--rounds N] [--dir DIR] [--out FILE]
#
# Measured (median wall time of N rounds, default 3):
#   convert -c (zlib)   512 MiB of compressible data (each 64 KiB cluster:
#                       32 KiB of random bytes + 32 KiB of text; zlib halves
#                       it) -> qcow2.  diskforge compresses on every CPU.
#   convert -c (zstd)   the same with -o compression_type=zstd
#   convert qcow2->raw  the zlib image back to raw (decompression)
#   check 1 TiB         qemu-img check vs diskforge check of a 1 TiB image
#                       made with preallocation=metadata (16 M clusters)
# The ratio is diskforge / qemu-img: below 1, diskforge is faster.
# Needs about 2 GiB free in DIR (default $TMPDIR or /tmp).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
QEMU_IMG=${QEMU_IMG:-qemu-img}
bench_setup bench-engine 3 -- "$@"

echo "machine: $(bench_machine "$W"); rounds: $ROUNDS"
echo "making 512 MiB of half-compressible data"
"$PY" - "$W/mixed.raw" <<'PY'
import random, sys
rnd = random.Random(42)
words = [bytes(rnd.choice(b"abcdefghijklmnop ") for _ in range(rnd.randrange(3, 10)))
         for _ in range(2000)]
text = bytearray()
while len(text) < 1 << 20:
    text += b" ".join(rnd.choice(words) for _ in range(100)) + b"\n"
with open(sys.argv[1], "wb") as f:
    for i in range(8192):
        f.write(rnd.randbytes(32768))
        o = rnd.randrange(0, len(text) - 32768)
        f.write(text[o:o + 32768])
PY
sync

ROWS=()
pair() {
    local name=$1 out=$2 dfa=$3 qa=$4 r tdf=() tq=() mdf mq
    for ((r = 0; r < ROUNDS; r++)); do
        # shellcheck disable=SC2086 # the argument strings are split on purpose
        tdf+=("$(time_once "$out" "$DF" $dfa)")
        # shellcheck disable=SC2086
        tq+=("$(time_once "$out" "$QEMU_IMG" $qa)")
    done
    mdf=$(printf '%s\n' "${tdf[@]}" | median)
    mq=$(printf '%s\n' "${tq[@]}" | median)
    ROWS+=("$(bench_row "$name" "$mdf" "$mq")")
    printf '  %-36s diskforge %7.3f s   qemu-img %7.3f s\n' "$name" "$mdf" "$mq"
}

pair "convert -c zlib (512 MiB)" "$W/z.qcow2" \
    "convert -c -O qcow2 $W/mixed.raw $W/z.qcow2" \
    "convert -c -O qcow2 $W/mixed.raw $W/z.qcow2"
pair "convert -c zstd (512 MiB)" "$W/s.qcow2" \
    "convert -c -O qcow2 -o compression_type=zstd $W/mixed.raw $W/s.qcow2" \
    "convert -c -O qcow2 -o compression_type=zstd $W/mixed.raw $W/s.qcow2"
"$DF" convert -c -O qcow2 "$W/mixed.raw" "$W/in.qcow2"
"$QEMU_IMG" compare -q -f raw -F qcow2 "$W/mixed.raw" "$W/in.qcow2" ||
    { echo "bench-engine.sh: compressed image differs from its source" >&2; exit 1; }
echo "  (zlib image: diskforge $(stat -c %s "$W/in.qcow2") bytes)"
pair "convert qcow2(zlib) -> raw" "$W/back.raw" \
    "convert -O raw $W/in.qcow2 $W/back.raw" \
    "convert -O raw $W/in.qcow2 $W/back.raw"
rm -f "$W/in.qcow2" "$W/back.raw" "$W/mixed.raw"

"$DF" create -q -f qcow2 -o preallocation=metadata "$W/m1t.qcow2" 1T
pair "check 1 TiB preallocation=metadata" "$W/none" \
    "check $W/m1t.qcow2" "check $W/m1t.qcow2"

{
    echo
    echo "| operation | diskforge (s) | qemu-img (s) | diskforge / qemu-img |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "${OUT:-/dev/null}"
