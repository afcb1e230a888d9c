#!/usr/bin/env bash
# bench-disk.sh - the filesystem op (SPEC §9) against doing it by hand:
# an ext4 of a tree of real files made in the root partition of a qcow2
# disk, against `mke2fs -d` of the same tree into a raw file of the
# partition's size plus `qemu-img convert -O qcow2` of that file.
#
#   bench/bench-disk.sh [--rounds N] [--dir DIR] [--out FILE]
#   BENCH_TREE_MIB=1024 BENCH_DISK=16G bench/bench-disk.sh   (the issue's figures)
#
# The tree is BENCH_TREE_MIB (default 256) MiB of files copied from /usr
# (a real mix of sizes); the disk is BENCH_DISK (default 16G) with one
# partition of the rest.  diskforge's time is the `filesystem` step's
# duration_ms from the report (the create and partition steps before it
# are not timed); the other side runs mke2fs with the same -E options
# (a truncated file is as prezeroed as the step's temporary) and
# then qemu-img convert, both timed; a second row adds to that side the
# SHA-256 of its qcow2 (openssl dgst), which the step computes for the
# report (SPEC §6).  Each round runs A B B A; the figure is the median.
#
# mke2fs is nearly all of both sides, the same program with the same tree,
# and its time varies by several seconds from run to run; that spread
# hides what the two sides do differently.  So mke2fs is also timed on its
# own on both sides (on ours through a wrapper first in PATH, which runs
# the real one), and two more rows compare what each side adds to it: the
# step's time less its mke2fs, against qemu-img convert (and the digest);
# and two that add those to one mke2fs time for both sides, the median of
# all the runs of both (the same command and tree on each side).
# Also printed: the peak size of the temporary files beside the image (at
# most one partition-sized file, sparse) and each output's allocation.
# Needs a few GiB free in DIR.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
QEMU_IMG=${QEMU_IMG:-qemu-img}
TREE_MIB=${BENCH_TREE_MIB:-256}
DISK=${BENCH_DISK:-16G}
bench_setup bench-disk 3 -- "$@"
PATH=$PATH:/usr/sbin:/sbin

echo "machine: $(bench_machine "$W"); rounds: $ROUNDS (ABBA each); tree: $TREE_MIB MiB; disk: $DISK"
"$PY" - "$W/tree" "$TREE_MIB" <<'PY'
import os, shutil, sys
dst, budget = sys.argv[1], int(sys.argv[2]) << 20
used = 0
for top in ("/usr/share", "/usr/lib"):
    for d, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if not os.path.isfile(p) or os.path.islink(p):
                continue
            n = os.path.getsize(p)
            if used + n > budget:
                continue
            t = os.path.join(dst, os.path.relpath(p, "/usr"))
            os.makedirs(os.path.dirname(t), exist_ok=True)
            try:
                shutil.copyfile(p, t)
            except OSError:
                continue
            used += n
        if used >= budget * 0.99:
            break
print(f"tree: {used >> 20} MiB")
PY
cat >"$W/job.yaml" <<YAML
version: 1
name: bench-disk
steps:
  - {id: disk, op: create, image: disk.qcow2, size: $DISK}
  - {id: gpt, op: partition, image: disk.qcow2, partitions: [{name: root, type: linux, size: rest}]}
  - {id: fs, op: filesystem, image: disk.qcow2, partition: root, type: ext4, from: tree}
YAML

# the partition's size, from a first run
"$DF" run "$W/job.yaml" --report "$W/r.json" >/dev/null
PSIZE=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(next(s['result']['size'] for s in r['steps'] if s['id']=='fs'))" "$W/r.json")

watch_tmp() { # watch_tmp PID: the largest temporary's allocation, into $W/peaks
    local peak=0 a f
    while kill -0 "$1" 2>/dev/null; do
        for f in "$W"/*.tmp; do
            [[ -e $f ]] || continue
            a=$(($(stat -c %b "$f" 2>/dev/null || echo 0) * 512))
            ((a > peak)) && peak=$a
        done
        sleep 0.2
    done
    echo "$peak" >>"$W/peaks"
}

# Before each timed run, both sides' outputs are removed and synced: each
# side then starts from the same page cache (the tree cached, no output),
# and the memory just freed is the same for both.
clean() {
    rm -f "$W/disk.qcow2" "$W/fs.raw" "$W/fs.qcow2"
    sync
}

# the real mke2fs, timed: $W/bin/mke2fs writes its start and end to
# $W/mk.t (the step finds it first in PATH)
MKE2FS=$(command -v mke2fs)
mkdir -p "$W/bin"
cat >"$W/bin/mke2fs" <<SH
#!/bin/bash
t0=\$(date +%s.%N)
"$MKE2FS" "\$@"
rc=\$?
echo "\$t0 \$(date +%s.%N)" >"$W/mk.t"
exit \$rc
SH
chmod +x "$W/bin/mke2fs"

# ours: "SECONDS MKE2FS_SECONDS" of the step
ours() {
    clean
    rm -f "$W/mk.t"
    PATH="$W/bin:$PATH" "$DF" run "$W/job.yaml" --report "$W/r.json" >/dev/null &
    local pid=$!
    watch_tmp "$pid"
    wait "$pid"
    "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); a,b=map(float,open(sys.argv[2]).read().split()); print('%.6f %.6f' % (next(s['duration_ms'] for s in r['steps'] if s['id']=='fs') / 1000, b - a))" "$W/r.json" "$W/mk.t"
}

# theirs: "SECONDS SECONDS_WITH_DIGEST MKE2FS_SECONDS", the second adding
# the SHA-256 of the qcow2 that the step computes for the report (SPEC §6),
# with the same library (openssl dgst; coreutils' sha256sum is several
# times slower here)
theirs() {
    clean
    local t0 tm t1 t2
    t0=$(now)
    truncate -s "$PSIZE" "$W/fs.raw"
    "$MKE2FS" -q -F -t ext4 -E lazy_itable_init=0,lazy_journal_init=0,assume_storage_prezeroed=1 -d "$W/tree" "$W/fs.raw" >/dev/null
    tm=$(now)
    "$QEMU_IMG" convert -O qcow2 "$W/fs.raw" "$W/fs.qcow2"
    t1=$(now)
    openssl dgst -sha256 "$W/fs.qcow2" >/dev/null
    t2=$(now)
    echo "fs.raw $(($(stat -c %b "$W/fs.raw") * 512 >> 20)) MiB + fs.qcow2 $(($(stat -c %b "$W/fs.qcow2") * 512 >> 20)) MiB" >"$W/alloc-theirs"
    awk -v a="$t1" -v b="$t0" -v c="$t2" -v m="$tm" 'BEGIN { printf "%.6f %.6f %.6f\n", a - b, c - b, m - b }'
}

# a: ours, b: theirs, c: theirs + digest; ma, mb: their mke2fs runs
a=() b=() c=() ma=() mb=()
for ((i = 0; i < ROUNDS; i++)); do
    read -r x m < <(ours)
    a+=("$x") ma+=("$m")
    for _ in 1 2; do
        read -r x y m < <(theirs)
        b+=("$x") c+=("$y") mb+=("$m")
    done
    read -r x m < <(ours)
    a+=("$x") ma+=("$m")
done
ta=$(printf '%s\n' "${a[@]}" | median)
tb=$(printf '%s\n' "${b[@]}" | median)
tc=$(printf '%s\n' "${c[@]}" | median)
# what each run added to its own mke2fs
rest() { # rest TIMES MKE2FS_TIMES: the medians of TIMES[i] - MKE2FS_TIMES[i]
    paste -d' ' <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '{ printf "%.6f\n", $1 - $2 }' | median
}
ra=$(rest "${a[*]}" "${ma[*]}")
rb=$(rest "${b[*]}" "${mb[*]}")
rc=$(rest "${c[*]}" "${mb[*]}")
tm=$(printf '%s\n' "${ma[@]}" "${mb[@]}" | median)
{
    echo
    echo "diskforge: ${a[*]}"
    echo "  its mke2fs: ${ma[*]}"
    echo "mke2fs -d + qemu-img convert: ${b[*]}"
    echo "  its mke2fs: ${mb[*]}"
    echo "the same + openssl dgst -sha256: ${c[*]}"
    echo
    echo "| filesystem step, $TREE_MIB MiB tree, $DISK qcow2 | diskforge (s) | by hand (s) | ratio |"
    echo "|---|---|---|---|"
    bench_row "against mke2fs -d + qemu-img convert" "$ta" "$tb"
    bench_row "against the same + the output's SHA-256" "$ta" "$tc"
    bench_row "after mke2fs: the step's rest, against qemu-img convert" "$ra" "$rb"
    bench_row "after mke2fs: the same, against convert + SHA-256" "$ra" "$rc"
    bench_row "one mke2fs for both ($(printf '%.3f' "$tm") s) + each side's rest" \
        "$(awk -v m="$tm" -v r="$ra" 'BEGIN { print m + r }')" "$(awk -v m="$tm" -v r="$rb" 'BEGIN { print m + r }')"
    bench_row "the same, against convert + SHA-256" \
        "$(awk -v m="$tm" -v r="$ra" 'BEGIN { print m + r }')" "$(awk -v m="$tm" -v r="$rc" 'BEGIN { print m + r }')"
    echo
    echo "largest temporary seen: $(($(sort -n "$W/peaks" | tail -1) >> 20)) MiB allocated (partition: $((PSIZE >> 20)) MiB; the temporaries are sparse)"
    echo "allocated: disk.qcow2 $(($(stat -c %b "$W/disk.qcow2") * 512 >> 20)) MiB; $(cat "$W/alloc-theirs")"
} | tee ${OUT:+"$OUT"}
