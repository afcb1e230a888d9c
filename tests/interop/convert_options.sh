#!/usr/bin/env bash
# convert_options: `convert -n` (into an existing image) and `convert -c
# -S 0` against qemu-img 7.2 doing the same to copies of the same files:
# the guest bytes read by qemu-io, the allocation (qemu-img map), and for
# -c -S 0 the output bytes; and -n's refusals (a smaller output, -o, -B,
# -c, a missing output), which leave the output untouched.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

W="$T_TMP/w"
mkdir -p "$W"
cd "$W"

# src.raw: 3 MiB; data at 0 (64 KiB), 1M+4K (an unaligned 70,000 bytes),
# a hole elsewhere, allocated zeros at 2M
qemu-img create -q -f raw src.raw 3M
qemu-io -f raw -c 'write -q -P 1 0 64k' -c 'write -q -P 2 1052672 70000' \
    -c 'write -q -P 0 2M 256k' src.raw

for fmt in qcow2 raw; do
    for size in 3M 5M; do
        set_case "convert -n -O $fmt into a $size $fmt full of 0x99"
        rm -f d.$fmt q.$fmt
        qemu-img create -q -f $fmt d.$fmt $size
        qemu-io -f $fmt -c "write -q -P 0x99 0 $size" d.$fmt
        cp d.$fmt q.$fmt
        df_ok convert -n -O $fmt src.raw d.$fmt || continue
        q_ok qemu-img convert -n -O $fmt src.raw q.$fmt || continue
        q_ok qemu-io -f $fmt -c 'read -q -P 1 0 64k' \
            -c 'read -q -P 0 65536 987136' -c 'read -q -P 2 1052672 70000' \
            -c 'read -q -P 0 1122672 2023056' d.$fmt
        [[ $size == 5M ]] &&
            q_ok qemu-io -f $fmt -c 'read -q -P 0x99 3M 2M' d.$fmt
        q_ok qemu-img compare -q -f $fmt -F $fmt d.$fmt q.$fmt
        expect_same_map "map" d.$fmt q.$fmt "$fmt"
        [[ $fmt == qcow2 ]] && qcheck d.$fmt
    done
done

# refusals: nothing written, exit 1 (or 2 for bad usage)
qemu-img create -q -f qcow2 small.qcow2 1M
qemu-io -c 'write -q -P 0x77 0 1M' small.qcow2
before=$(sha_of small.qcow2)
refuse() {
    local want=$1 what=$2
    shift 2
    set_case "convert -n refused: $what"
    run_df convert "$@"
    expect_eq "exit code" "$DF_RC" "$want" "$DF_ERR"
    expect_eq "output untouched" "$(sha_of small.qcow2)" "$before"
}
refuse 1 "output smaller than the input" -n -O qcow2 src.raw small.qcow2
refuse 2 "-o with -n" -n -O qcow2 -o cluster_size=4k src.raw small.qcow2
refuse 2 "-B with -n" -n -O qcow2 -B src.raw -F raw src.raw small.qcow2
refuse 1 "-c with -n" -n -c -O qcow2 small.qcow2 small.qcow2
set_case "convert -n to a missing output"
run_df convert -n -O qcow2 src.raw missing.qcow2
expect_eq "exit code" "$DF_RC" 1 "$DF_ERR"
expect_true "no output made" test ! -e missing.qcow2
expect_true "the error names the output" grep -q missing.qcow2 "$DF_ERR"

# -c -S 0: every cluster is stored compressed, zero clusters included
for ct in zlib zstd; do
    set_case "convert -c -S 0 -o compression_type=$ct"
    rm -f c.qcow2 cq.qcow2
    df_ok convert -c -S 0 -O qcow2 -o compression_type=$ct src.raw c.qcow2 || continue
    q_ok qemu-img convert -c -S 0 -O qcow2 -o compression_type=$ct src.raw cq.qcow2 || continue
    expect_true "the same bytes as qemu-img's" cmp -s c.qcow2 cq.qcow2
    expect_same_map "map" c.qcow2 cq.qcow2 qcow2
    q_ok qemu-img compare -q -F qcow2 src.raw c.qcow2
    qcheck c.qcow2
done

finish
