#!/usr/bin/env bash
# make-seeds.sh OUTDIR - small qcow2 images made by qemu-img and qemu-io,
# the starting corpus of the fuzz target (scripts/fuzz.sh) and of
# tests/interop/fuzz_replay.sh.  Each is a few KiB to a few hundred KiB:
# small clusters keep the metadata, which is what the fuzzer should
# change, near the start of the file.
set -euo pipefail
out=$1
mkdir -p "$out"

seed() { # NAME QEMU-IMG-CREATE-OPTIONS SIZE [QEMU-IO-COMMANDS...]
    local name=$1 opts=$2 size=$3 f="$out/$1.qcow2"
    shift 3
    qemu-img create -q -f qcow2 -o "$opts" "$f" "$size"
    local cmd
    for cmd in "$@"; do
        qemu-io -f qcow2 -c "$cmd" "$f" >/dev/null
    done
}

seed empty-v3-512 cluster_size=512 1M
seed data-v3-512 cluster_size=512 1M "write -P 0x11 0 4k" "write -P 0x22 600k 3k"
seed data-v2-512 cluster_size=512,compat=0.10 1M "write -P 0x33 1k 2k" \
    "write -z 1k 512"
seed zero-v3-4k cluster_size=4k 4M "write -P 0x44 0 64k" "write -z 16k 8k" \
    "write -z 1M 64k"
seed refcount1-4k cluster_size=4k,refcount_bits=1 2M "write -P 0x55 8k 8k"
seed refcount64-4k cluster_size=4k,refcount_bits=64 2M "write -P 0x66 0 12k"
seed lazy-4k cluster_size=4k,lazy_refcounts=on 2M "write -P 0x77 4k 4k"
seed big-virtual-64k cluster_size=64k 4T "write -P 0x88 3T 4k"
seed meta-4k cluster_size=4k,preallocation=metadata 256k "write -P 0x99 0 4k"
truncate -s 1M "$out/base.raw" # only while the overlay is written
seed backing-name-4k cluster_size=4k,backing_file=base.raw,backing_fmt=raw 1M \
    "write -P 0xaa 0 4k"
rm -f "$out/base.raw"
seed zstd-4k cluster_size=4k,compression_type=zstd 1M
qemu-img create -q -f qcow2 -o cluster_size=4k "$out/snap.qcow2" 1M
qemu-io -f qcow2 -c "write -P 0xbb 0 8k" "$out/snap.qcow2" >/dev/null
qemu-img snapshot -c first "$out/snap.qcow2"
qemu-io -f qcow2 -c "write -P 0xcc 4k 8k" "$out/snap.qcow2" >/dev/null

# compressed clusters, zlib and zstd, from a raw file of mixed content
raw="$out/.src.raw"
head -c 65536 /dev/zero | tr '\0' 'a' >"$raw"
head -c 16384 /dev/urandom >>"$raw"
truncate -s 256k "$raw"
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4k "$raw" \
    "$out/compressed-zlib-4k.qcow2"
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4k,compression_type=zstd \
    "$raw" "$out/compressed-zstd-4k.qcow2"
rm -f "$raw"
# a guest disk with a GPT (the table's CRCs and entries for the fuzzer)
if command -v sgdisk >/dev/null 2>&1 || [[ -x /usr/sbin/sgdisk ]]; then
    truncate -s 1M "$out/gpt.raw"
    PATH=$PATH:/usr/sbin sgdisk -n 1:34:+200K -t 1:ef00 -c 1:esp \
        -n 2:0:0 -t 2:8300 -c 2:root "$out/gpt.raw" >/dev/null
    qemu-img convert -f raw -O qcow2 -o cluster_size=512 "$out/gpt.raw" \
        "$out/gpt-512.qcow2"
    rm -f "$out/gpt.raw"
fi
