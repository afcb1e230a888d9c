#!/usr/bin/env bash
# measure_qemu: `diskforge measure` prints what `qemu-img measure` 7.2
# prints (human and JSON, byte for byte) with the same exit code.
#
#   - --size: 0, sub-sector, 1M, 1G, 1T, 200T, 1E (too large for 64 KiB
#     clusters: both fail) with cluster sizes 512 B..2 MiB, refcount widths
#     1..64, compat 0.10, preallocation metadata/falloc/full, raw output;
#   - from a source: the 2 GiB raw with 512 MiB of data in 64 KiB clusters
#     (qcow2-notes.md section 5.2), a raw with unaligned extents and
#     allocated zeros, qcow2 images written by qemu-io (a backing chain,
#     compressed clusters, zero clusters, v2, preallocation metadata and
#     falloc), each measured for raw and for qcow2 output with several
#     cluster sizes, -o backing_file, preallocation=full and compat=0.10.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

W="$T_TMP/w"
mkdir -p "$W/sub"
cd "$W"

# same_measure ARGS...: both programs print the same and exit the same.
same_measure() {
    set_case "measure $*"
    same_as_qemu measure "$@"
}

# --- empty images of a given size ---------------------------------------------------

for size in 0 1000 1M 1G 1T; do
    same_measure --size "$size"
    for o in cluster_size=65536 cluster_size=512 cluster_size=4k \
        cluster_size=2M refcount_bits=1 refcount_bits=64 \
        cluster_size=2M,refcount_bits=8 compat=0.10 preallocation=metadata \
        preallocation=falloc preallocation=full,cluster_size=1M; do
        [[ $size == 1T && $o == cluster_size=512 ]] && continue # > 32 MiB L1
        same_measure -O qcow2 -o "$o" --size "$size"
    done
done
same_measure -O qcow2 --size 1G --output=json
same_measure -O qcow2 --size 1T --output=json
same_measure -O raw --size 1G --output=json
same_measure -O qcow2 --size 200T
same_measure -O qcow2 -o cluster_size=2M --size 200T --output=json
same_measure -O qcow2 --size 1E

# --- from sources -------------------------------------------------------------------

# 2 GiB, 8192 of 32768 64 KiB clusters of random data (512 MiB)
"$PY" "$T_GEN" big.raw --size 2G --count 8192 --seed 42 --data urandom
"$PY" "$T_GEN" ext.raw --size 64M --layout extents --extents 300 \
    --max-len 200000 --seed 7 --zero-frac 0.3

q_ok qemu-img create -q -f qcow2 sub/base.qcow2 32M
q_ok qemu-io -f qcow2 -c "write -P 1 0 1M" -c "write -P 2 5M 100k" \
    -c "write -P 3 20M 3M" sub/base.qcow2
q_ok qemu-img create -q -f qcow2 -b sub/base.qcow2 -F qcow2 top.qcow2 40M
q_ok qemu-io -f qcow2 -c "write -z 0 512k" -c "write -P 4 8M 64k" \
    -c "write -z -u 20M 1M" -c "write -P 5 36M 1M" top.qcow2

q_ok qemu-img create -q -f qcow2 comp.qcow2 16M
q_ok qemu-io -f qcow2 -c "write -c -P 1 0 64k" -c "write -c -P 2 1M 64k" \
    -c "write -P 3 2M 4k" comp.qcow2

q_ok qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4k v2.qcow2 16M
q_ok qemu-io -f qcow2 -c "write -P 1 3000 10000" -c "write -z 1M 64k" v2.qcow2

q_ok qemu-img create -q -f qcow2 -o preallocation=metadata meta.qcow2 64M
q_ok qemu-io -f qcow2 -c "write -P 1 1M 100k" meta.qcow2
q_ok qemu-img create -q -f qcow2 -o preallocation=falloc falloc.qcow2 16M

sources=(big.raw ext.raw sub/base.qcow2 top.qcow2 comp.qcow2 v2.qcow2
    meta.qcow2 falloc.qcow2)
for src in "${sources[@]}"; do
    same_measure "$src"
    same_measure -O qcow2 "$src"
    same_measure -O qcow2 --output=json "$src"
    for o in cluster_size=512 cluster_size=2M refcount_bits=1 compat=0.10 \
        backing_file=other.qcow2 preallocation=full preallocation=metadata; do
        same_measure -O qcow2 -o "$o" "$src"
    done
done
same_measure -f raw -O qcow2 sub/base.qcow2   # a qcow2 file read as raw
same_measure -f qcow2 -O qcow2 -o cluster_size=4k top.qcow2

finish
