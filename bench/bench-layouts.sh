#!/usr/bin/env bash
# bench-layouts.sh - convert and copy on the layouts real images have,
# against qemu-img and cp, in one invocation on the same files.
#
#   bench/bench-layouts.sh [--rounds N] [--dir DIR] [--out FILE]
#
# Inputs (made once, in a work directory under DIR):
#   frag.raw     2 GiB raw, 8,000 extents of 512 B, 4 KiB, 64 KiB, 128 KiB or
#                300,000 B, half of them not on a 4 KiB boundary (a file a
#                tool filled piecemeal); random bytes
#   frag.qcow2   that file converted by qemu-img
#   guest.qcow2  2 GiB qcow2 written by qemu-io in 20,000 random 4 KiB
#                writes, as a guest writes: its host file interleaves data
#                clusters and L2 tables
#   fs.raw       an ext4 file system made by mke2fs -d from /usr/share (a
#                real file tree), 2 GiB
#   usr.qcow2    512 MiB of /usr files, compressed by qemu-img convert -c
#   half.raw     1 GiB, every other 64 KiB block zeros (allocated)
# Each round runs A B B A (diskforge, other, other, diskforge), with the
# output removed and the file system synced before every timed run; the
# figure is the median of the 2N runs of each side.  The ratio is
# diskforge / other: below 1, diskforge is faster.  Needs about 8 GiB free.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
QEMU_IMG=${QEMU_IMG:-qemu-img}
QEMU_IO=${QEMU_IO:-qemu-io}
bench_setup bench-layouts 3 -- "$@"

echo "machine: $(bench_machine "$W"); rounds: $ROUNDS (ABBA each)"
echo "making the inputs"
"$PY" "$ROOT/scripts/gen-sparse-raw.py" "$W/frag.raw" --size 2G \
    --layout fragmented --extents 8000 --data urandom
"$QEMU_IMG" convert -O qcow2 "$W/frag.raw" "$W/frag.qcow2"
"$QEMU_IMG" create -q -f qcow2 "$W/guest.qcow2" 2G
"$PY" - > "$W/writes" <<'PY'
import random
r = random.Random(1)
for _ in range(20000):
    print("write -q -P %d %d 4k" % (r.randrange(1, 255),
                                   r.randrange(0, (2 << 30) // 4096) * 4096))
PY
"$QEMU_IO" "$W/guest.qcow2" < "$W/writes" > /dev/null
mkfs=$(command -v mke2fs || echo /sbin/mke2fs)
"$mkfs" -q -t ext4 -d /usr/share -E lazy_itable_init=0 "$W/fs.raw" 2G
find /usr/lib /usr/share /usr/bin -type f -size +4k 2>/dev/null | sort |
    xargs cat 2>/dev/null | head -c 512M > "$W/usr.raw" || true
"$QEMU_IMG" convert -c -O qcow2 "$W/usr.raw" "$W/usr.qcow2"
rm -f "$W/usr.raw" "$W/writes"
"$PY" - "$W/half.raw" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    zero = bytes(65536)
    for i in range(8192):
        f.write(os.urandom(65536) if i % 2 else zero)
PY
sync

ROWS=()
# abba NAME OUT CMD_A -- CMD_B: time A and B alternately (A B B A per round)
abba() {
    local name=$1 out=$2 r ta=() tb=() ma mb a=() b=()
    shift 2
    while [[ $1 != -- ]]; do a+=("$1"); shift; done
    shift
    b=("$@")
    for ((r = 0; r < ROUNDS; r++)); do
        ta+=("$(time_once "$out" "${a[@]}")")
        tb+=("$(time_once "$out" "${b[@]}")")
        tb+=("$(time_once "$out" "${b[@]}")")
        ta+=("$(time_once "$out" "${a[@]}")")
    done
    rm -f "$out"
    ma=$(printf '%s\n' "${ta[@]}" | median)
    mb=$(printf '%s\n' "${tb[@]}" | median)
    ROWS+=("$(bench_row "$name" "$ma" "$mb")")
    printf '  %-44s diskforge %7.3f s   %s %7.3f s\n' "$name" "$ma" \
        "$(basename "${b[0]}")" "$mb"
}

o=$W/out
abba "convert raw->qcow2, fragmented 2 GiB" "$o" \
    "$DF" convert -O qcow2 "$W/frag.raw" "$o" -- \
    "$QEMU_IMG" convert -O qcow2 "$W/frag.raw" "$o"
abba "convert qcow2->raw, fragmented 2 GiB" "$o" \
    "$DF" convert -O raw "$W/frag.qcow2" "$o" -- \
    "$QEMU_IMG" convert -O raw "$W/frag.qcow2" "$o"
abba "convert guest-written qcow2->raw" "$o" \
    "$DF" convert -O raw "$W/guest.qcow2" "$o" -- \
    "$QEMU_IMG" convert -O raw "$W/guest.qcow2" "$o"
abba "convert guest-written qcow2->qcow2" "$o" \
    "$DF" convert -O qcow2 "$W/guest.qcow2" "$o" -- \
    "$QEMU_IMG" convert -O qcow2 "$W/guest.qcow2" "$o"
abba "convert ext4 of /usr/share raw->qcow2" "$o" \
    "$DF" convert -O qcow2 "$W/fs.raw" "$o" -- \
    "$QEMU_IMG" convert -O qcow2 "$W/fs.raw" "$o"
abba "convert zlib qcow2 (512 MiB /usr)->raw" "$o" \
    "$DF" convert -O raw "$W/usr.qcow2" "$o" -- \
    "$QEMU_IMG" convert -O raw "$W/usr.qcow2" "$o"
abba "copy --sparse=always 1 GiB half zeros (cp)" "$o" \
    "$DF" copy --sparse=always "$W/half.raw" "$o" -- \
    cp --sparse=always "$W/half.raw" "$o"

{
    echo
    echo "| operation | diskforge (s) | qemu-img / cp (s) | ratio |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "${OUT:-/dev/null}"
