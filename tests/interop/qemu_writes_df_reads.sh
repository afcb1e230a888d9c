#!/usr/bin/env bash
# qemu_writes_df_reads: diskforge creates qcow2 images, qemu-io writes into
# them, and diskforge must read back what qemu wrote.
#
# For each image (cluster sizes 512 B..2 MiB, v2 and v3, lazy refcounts,
# refcount widths, preallocated images):
#   - diskforge create succeeds;
#   - qemu-io writes patterns at unaligned offsets, across cluster and L2
#     table boundaries (a 512-byte-cluster L2 table covers only 32 KiB),
#     zero writes (-z, with and without unmap), a discard, compressed
#     clusters (-c), and a byte written into a compressed cluster;
#   - `qemu-img check` is clean afterwards (diskforge's metadata let qemu
#     allocate without trouble);
#   - `diskforge digest` equals sha256sum of `qemu-img convert -O raw`;
#   - `diskforge compare` finds the image identical to qemu's raw copy, and
#     different (exit 1) from the raw copy with one byte changed.
# Then a 4 TiB image written at scattered offsets stays check-clean.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

# one_image OPTS: create with diskforge, write with qemu-io, read with both.
one_image() {
    local opts=$1 size=64M img="$T_TMP/img.qcow2" ref="$T_TMP/ref.raw"
    local c bytes z io
    set_case "qcow2 $opts"
    rm -f "$img" "$ref"
    df_ok create -f qcow2 -o "$opts" "$img" "$size" || return 0
    c=65536
    [[ $opts =~ cluster_size=([0-9]+[KM]?) ]] && c=$(bytes_of "${BASH_REMATCH[1]}")
    bytes=$(bytes_of "$size")

    z=1
    [[ $opts == *preallocation=* ]] && z=0
    mapfile -d '' -t io < <(qemu_io_patterns "$c" "$bytes" "$z")
    q_ok qemu-io -f qcow2 "${io[@]}" "$img" || return 0
    qcheck "$img"

    q_ok qemu-img convert -f qcow2 -O raw "$img" "$ref" || return 0
    expect_reads_as "$img" qcow2 "$ref"

    # One byte changed inside a written range must be found.
    printf '\x01' | dd of="$ref" bs=1 seek=$((5 * MiB + 1000)) conv=notrunc \
        status=none
    run_df compare -f qcow2 -F raw "$img" "$ref"
    expect_eq "diskforge compare with a changed copy (exit code)" "$DF_RC" 1 "$DF_ERR"
    rm -f "$img" "$ref"
}

for cluster in 512 4K 64K 2M; do
    for compat in 0.10 1.1; do
        one_image "cluster_size=$cluster,compat=$compat"
    done
done
one_image "lazy_refcounts=on"
one_image "lazy_refcounts=on,cluster_size=512"
one_image "refcount_bits=1,cluster_size=4K"
one_image "refcount_bits=64"
one_image "compression_type=zstd"
one_image "compression_type=zstd,cluster_size=2M"
one_image "preallocation=metadata"
one_image "preallocation=metadata,cluster_size=4K,compat=0.10"
one_image "preallocation=falloc,cluster_size=2M"
one_image "preallocation=full,cluster_size=4K"

# A 4 TiB image written at scattered offsets: L2 tables far apart, several
# refcount blocks.  (No digest: that would hash 4 TiB.)
set_case "qcow2 4T scattered"
img="$T_TMP/big.qcow2"
if df_ok create -f qcow2 "$img" 4T; then
    T=$((1024 * 1024 * MiB))
    q_ok qemu-io -f qcow2 \
        -c "write -P 0x01 0 1M" \
        -c "write -P 0x02 $((T + 12345)) 100k" \
        -c "write -P 0x03 $((2 * T - 1)) 2" \
        -c "write -P 0x04 $((3 * T + 7 * MiB)) 5M" \
        -c "write -P 0x05 $((4 * T - 4096)) 4096" \
        "$img" || true
    qcheck "$img"
    q_ok qemu-io -f qcow2 -r \
        -c "read -P 0x02 $((T + 12345)) 100k" \
        -c "read -P 0x05 $((4 * T - 4096)) 4096" \
        -c "read -P 0 $((T / 2)) 1M" \
        "$img" || true
    if df_ok info -f qcow2 --output=json "$img"; then
        expect_eq "diskforge info virtual-size" \
            "$(json_get "$DF_OUT" virtual-size)" $((4 * T))
    fi
fi
rm -f "$img"

finish
