#!/usr/bin/env bash
# qemu_images_df_reads: qemu-img and qemu-io make images with every option
# qemu-img 7.2 has (that SPEC §2 requires us to read), and diskforge must
# read the same bytes and report the same facts.
#
# Images: cluster sizes 512 B..2 MiB, v2 and v3, refcount_bits 1..64, lazy
# refcounts (clean, and dirty after qemu-io was killed), preallocation
# metadata/falloc/full, zero clusters (qemu-io write -z), compressed
# clusters (qemu-img convert -c, zlib and zstd), an internal snapshot.
# For each:
#   - `diskforge digest` equals sha256sum of `qemu-img convert -O raw`;
#   - `diskforge compare` with that raw copy says identical (exit 0);
#   - `diskforge info --output=json` equals `qemu-img info --output=json` on
#     the fields both print, and the human `diskforge info` has qemu-img's
#     lines for format, sizes and format-specific fields.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

SIZE=64M
BYTES=$(bytes_of $SIZE)
IMG="$T_TMP/img.qcow2"
REF="$T_TMP/ref.raw"

# Human `info` lines that must read the same as qemu-img's (key: value).
HUMAN_KEYS='^(file format|virtual size|disk size|cluster_size|backing file|backing file format|compat|compression type|lazy refcounts|refcount bits|corrupt|extended l2|cleanly shut down):'

# check_image LABEL: the checks above on $IMG.
check_image() {
    set_case "$1"
    if ! q_ok qemu-img convert -f qcow2 -O raw "$IMG" "$REF"; then
        bad "qemu-img cannot read its own image: the test is wrong"
        return 0
    fi
    expect_reads_as "$IMG" qcow2 "$REF"

    sync "$IMG" # settle st_blocks (delayed allocation) before actual-size
    qemu-img info -f qcow2 --output=json "$IMG" >"$T_TMP/q.json"
    if df_ok info -f qcow2 --output=json "$IMG"; then
        expect_info_like "$DF_OUT" "$T_TMP/q.json" "${INFO_QCOW2[@]}"
    fi

    qemu-img info -f qcow2 "$IMG" | sed -E 's/^ +//' |
        grep -E "$HUMAN_KEYS" >"$T_TMP/q.txt" || true
    if df_ok info -f qcow2 "$IMG"; then
        sed -E 's/^ +//' "$DF_OUT" | grep -E "$HUMAN_KEYS" >"$T_TMP/d.txt" || true
        T_CHECKS=$((T_CHECKS + 1))
        if ! diff -q "$T_TMP/d.txt" "$T_TMP/q.txt" >/dev/null; then
            bad "diskforge info (human) differs from qemu-img info (< diskforge, > qemu-img)"
            diff "$T_TMP/d.txt" "$T_TMP/q.txt" | sed 's/^/    | /' >&2 || true
        fi
    fi
    rm -f "$REF"
}

# written OPTS [COMPRESS]: qemu-img create + qemu-io patterns, then check.
written() {
    local opts=$1 z=${2:-1} c=65536 io
    [[ $opts =~ cluster_size=([0-9]+[KM]?) ]] && c=$(bytes_of "${BASH_REMATCH[1]}")
    rm -f "$IMG"
    set_case "qemu-img create -o $opts"
    q_ok qemu-img create -q -f qcow2 -o "$opts" "$IMG" $SIZE || return 0
    mapfile -d '' -t io < <(qemu_io_patterns "$c" "$BYTES" "$z")
    q_ok qemu-io -f qcow2 "${io[@]}" "$IMG" || return 0
    check_image "qemu-img create -o $opts + qemu-io writes"
}

for cluster in 512 4K 64K 2M; do
    for compat in 0.10 1.1; do
        written "cluster_size=$cluster,compat=$compat"
    done
done
for bits in 1 2 4 8 16 32 64; do
    written "refcount_bits=$bits"
done
written "refcount_bits=1,cluster_size=512"
written "refcount_bits=64,cluster_size=2M"
written "lazy_refcounts=on"
written "compression_type=zstd"
for mode in metadata falloc full; do
    written "preallocation=$mode" 0
    written "preallocation=$mode,cluster_size=4K" 0
done
written "preallocation=metadata,compat=0.10,cluster_size=512" 0

# Untouched preallocated images (metadata: sparse file, data clusters that
# must read as zeros).
for mode in metadata falloc; do
    for cluster in 512 64K 2M; do
        rm -f "$IMG"
        q_ok qemu-img create -q -f qcow2 -o "preallocation=$mode,cluster_size=$cluster" \
            "$IMG" 16M || continue
        check_image "qemu-img create -o preallocation=$mode,cluster_size=$cluster"
    done
done

# Dirty: lazy refcounts and qemu-io killed before it could clean up.
rm -f "$IMG"
set_case "dirty image"
if q_ok qemu-img create -q -f qcow2 -o lazy_refcounts=on "$IMG" $SIZE; then
    (qemu-io -f qcow2 -c "write -P 0x5a 0 1M" -c "write -P 0x5b 7M 100k" \
        -c "sigraise 9" "$IMG" >/dev/null 2>&1 || true) 2>/dev/null
    dirty=$(qemu-img info --output=json "$IMG" | "$PY" -c \
        'import json,sys; print(json.load(sys.stdin)["dirty-flag"])')
    expect_eq "qemu-img sees the dirty flag (test setup)" "$dirty" True
    if [[ $dirty == True ]]; then
        check_image "dirty image (lazy refcounts, qemu-io killed)"
    fi
fi

# Internal snapshot: the active layer shares clusters (refcount 2) and the
# writes after the snapshot were copied on write.
rm -f "$IMG"
set_case "internal snapshot"
if q_ok qemu-img create -q -f qcow2 "$IMG" $SIZE &&
    q_ok qemu-io -f qcow2 -c "write -P 0x31 0 2M" "$IMG" &&
    q_ok qemu-img snapshot -c snap1 "$IMG" &&
    q_ok qemu-io -f qcow2 -c "write -P 0x32 1M 4k" -c "write -z 1536k 64k" "$IMG"; then
    check_image "internal snapshot, active layer written after it"
fi

# Compressed clusters, written by qemu-img convert -c.
SRC="$T_TMP/mixed.raw"
"$PY" "$T_GEN" "$SRC" --size 32M --layout clusters --cluster 64K --count 160 \
    --data mixed --seed 11 2>/dev/null
for ct in zlib zstd; do
    for cluster in 512 4K 64K 2M; do
        rm -f "$IMG"
        set_case "convert -c $ct $cluster"
        q_ok qemu-img convert -c -f raw -O qcow2 \
            -o "compression_type=$ct,cluster_size=$cluster" "$SRC" "$IMG" || continue
        check_image "qemu-img convert -c -o compression_type=$ct,cluster_size=$cluster"
    done
done
# a compressed v2 image
rm -f "$IMG"
set_case "convert -c compat=0.10"
q_ok qemu-img convert -c -f raw -O qcow2 -o compat=0.10 "$SRC" "$IMG" &&
    check_image "qemu-img convert -c -o compat=0.10"
rm -f "$IMG" "$SRC"

finish
