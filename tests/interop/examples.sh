#!/usr/bin/env bash
# examples.sh - the programs and scripts in examples/ run, and what they
# make is what they say, by qemu-img's account:
#   overlay-chain (the library's public API): exit 0; base and overlays
#     check clean; the overlays name base.qcow2 as written (relative);
#     qemu reads "base" at 0 and each overlay's name at 1 MiB through the
#     chain, and "base" at 1 MiB in the base, which the overlays left alone
#   storage-walkthrough.sh (the CLI): exit 0; the flat image and the
#     never-copy fully allocated, the sparse image and the always-copy
#     not; every qcow2 checks clean; the overlays' backing is base.qcow2
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

EX=${DF_EXAMPLES:-$(dirname "$DISKFORGE")/../examples}

# backing_of IMG: the backing file name stored in IMG, as qemu-img reads it
backing_of() {
    qemu-img info --output=json "$1" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])'
}

# bytes_at IMG OFFSET LEN: the guest bytes, as qemu reads them
bytes_at() {
    qemu-img convert -O raw "$1" "$T_TMP/.raw" &&
        dd if="$T_TMP/.raw" bs=1 skip="$2" count="$3" status=none
}

set_case "overlay-chain"
O="$T_TMP/chain"
mkdir -p "$O"
if q_ok "$EX/overlay-chain" "$O"; then
    for img in base web db; do
        qcheck "$O/$img.qcow2"
    done
    for img in web db; do
        expect_eq "$img backing" "$(backing_of "$O/$img.qcow2")" base.qcow2
        expect_eq "$img at 0" "$(bytes_at "$O/$img.qcow2" 0 4)" base
        expect_eq "$img at 1M" "$(bytes_at "$O/$img.qcow2" 1048576 ${#img})" "$img"
    done
    expect_eq "base at 1M" "$(bytes_at "$O/base.qcow2" 1048576 4)" base
fi

set_case "storage-walkthrough.sh"
W="$T_TMP/walk"
if q_ok bash "$T_SRC/examples/storage-walkthrough.sh" "$W" "$DISKFORGE"; then
    allocated() { echo $(($(stat -c %b "$W/$1") * 512)); }
    expect_eq "flat.raw allocated" "$(allocated flat.raw)" $((64 << 20))
    expect_eq "flat-never.raw allocated" "$(allocated flat-never.raw)" $((64 << 20))
    expect_eq "sparse.raw allocated" "$(allocated sparse.raw)" 0
    expect_eq "flat-always.raw allocated" "$(allocated flat-always.raw)" 0
    for img in "$W"/*.qcow2; do
        qcheck "$img"
    done
    for img in vm1 vm2; do
        expect_eq "$img backing" "$(backing_of "$W/$img.qcow2")" base.qcow2
    done
fi
finish
