#!/usr/bin/env bash
# create_matrix: `diskforge create` against `qemu-img create`, option by option.
#
# For each case both tools create the same image with the same command line.
# Then:
#   - the file lengths are equal;
#   - the allocated bytes (st_blocks * 512) are within 10 % of each other
#     (or, for images under 1 MiB, within 8 KiB: two file-system blocks of a
#     tiny image are more than 10 %);
#   - qcow2: `qemu-img check` of diskforge's image exits 0, "No errors";
#   - qcow2: `qemu-img info --output=json` of diskforge's image shows the
#     requested virtual-size, cluster-size, compat, lazy-refcounts,
#     refcount-bits and compression-type (and so does qemu's image, which
#     checks the expectations themselves);
#   - `qemu-img map --output=json` classifies the same ranges as
#     present/data/zero in both images (host offsets ignored; for raw, from
#     4 KiB on: see expect_same_map in lib.sh);
#   - `diskforge info --output=json` agrees with `qemu-img info` on the
#     fields both print;
#   - creating the image a second time gives a byte-identical file.
#
# A table of the lengths and allocations goes to stdout and to
# $DF_TEST_OUT/create_matrix.md, ready for a closing note.
#
# 512-byte clusters stay at 16 MiB for the preallocated modes: qemu-img takes
# about a minute to preallocate 1 GiB with 512-byte clusters.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

# expected_info OPTS VSIZE: the KEY=VALUE list json_expect checks.
expected_info() {
    local opts=$1 vsize=$2 kv k v
    local cluster=65536 compat=1.1 lazy=false rbits=16 ctype=zlib
    local IFS=,
    for kv in $opts; do
        k=${kv%%=*}
        v=${kv#*=}
        case $k in
        cluster_size) cluster=$(bytes_of "$v") ;;
        compat) compat=$v ;;
        lazy_refcounts) [[ $v == on ]] && lazy=true ;;
        refcount_bits) rbits=$v ;;
        compression_type) ctype=$v ;;
        esac
    done
    echo "virtual-size=$vsize"
    echo "format=qcow2"
    echo "cluster-size=$cluster"
    echo "format-specific.data.compat=$compat"
    echo "format-specific.data.refcount-bits=$rbits"
    echo "format-specific.data.compression-type=$ctype"
    if [[ $compat == 1.1 ]]; then
        echo "format-specific.data.lazy-refcounts=$lazy"
        echo "format-specific.data.corrupt=false"
        echo "format-specific.data.extended-l2=false"
    else
        echo "format-specific.data.lazy-refcounts=<absent>"
    fi
}

# run_case FMT SIZE OPTS
run_case() {
    local fmt=$1 size=$2 opts=$3 fails_before=$T_FAILS
    local d="$T_TMP/df.$fmt" q="$T_TMP/qemu.$fmt" d2="$T_TMP/df-again.$fmt"
    local oargs=() vsize dl ql da qa exp mism
    [[ -n $opts ]] && oargs=(-o "$opts")
    set_case "$fmt $size ${opts:-(defaults)}"
    rm -f "$d" "$q" "$d2"

    if ! q_ok qemu-img create -q -f "$fmt" "${oargs[@]}" "$q" "$size"; then
        bad "qemu-img refused the case: the test is wrong"
        return
    fi
    if ! df_ok create -f "$fmt" "${oargs[@]}" "$d" "$size"; then
        table_row "$fmt" "$size" "${opts:--}" "-" "$(len_of "$q")" "-" \
            "$(alloc_of "$q")" "**create failed**"
        rm -f "$d" "$q"
        return
    fi
    # Write both out first: with delayed allocation st_blocks can still
    # change at writeback, and info's actual-size is read twice below.
    sync "$d" "$q"
    dl=$(len_of "$d")
    ql=$(len_of "$q")
    da=$(alloc_of "$d")
    qa=$(alloc_of "$q")
    expect_eq "file length" "$dl" "$ql"
    expect_near "allocated bytes" 10 8192 "$da" "$qa"

    # The sizes qemu reports are rounded up to 512 bytes.
    vsize=$((($(bytes_of "$size") + 511) / 512 * 512))
    qemu-img info -f "$fmt" --output=json "$q" >"$T_TMP/qinfo.q.json"
    if qemu-img info -f "$fmt" --output=json "$d" >"$T_TMP/qinfo.d.json" \
        2>"$Q_ERR"; then
        if [[ $fmt == qcow2 ]]; then
            mapfile -t exp < <(expected_info "$opts" "$vsize")
            qcheck "$d"
        else
            exp=("virtual-size=$vsize" "format=raw")
        fi
        T_CHECKS=$((T_CHECKS + 2))
        if ! mism=$(json_expect "$T_TMP/qinfo.d.json" "${exp[@]}"); then
            bad "qemu-img info of diskforge's image: ${mism//$'\n'/; }"
        fi
        if ! mism=$(json_expect "$T_TMP/qinfo.q.json" "${exp[@]}"); then
            bad "qemu-img info of qemu's own image (test expectation?):" \
                "${mism//$'\n'/; }"
        fi
        expect_same_map "map" "$d" "$q" "$fmt"
    else
        bad "qemu-img info cannot open diskforge's image"
        show "$Q_ERR"
    fi

    # diskforge info agrees with qemu-img info on diskforge's image.
    if df_ok info -f "$fmt" --output=json "$d"; then
        local keys=("${INFO_RAW[@]}")
        [[ $fmt == qcow2 ]] && keys=("${INFO_QCOW2[@]}")
        expect_info_like "$DF_OUT" "$T_TMP/qinfo.d.json" "${keys[@]}"
    fi

    # Determinism: the same command again gives the same bytes.
    if df_ok create -f "$fmt" "${oargs[@]}" "$d2" "$size"; then
        expect_same_bytes "two runs of the same create" "$d" "$d2"
    fi

    table_row "$fmt" "$size" "${opts:--}" "$dl" "$ql" "$da" "$qa" \
        "$( ((T_FAILS == fails_before)) && echo ok || echo '**FAIL**')"
    rm -f "$d" "$q" "$d2"
}

table_start create_matrix.md format size options "diskforge length" \
    "qemu-img length" "diskforge allocated" "qemu-img allocated" result

# raw: sparse, fallocate, and zeros written
for size in 64M 1G; do
    run_case raw "$size" preallocation=off
    run_case raw "$size" preallocation=falloc
done
run_case raw 64M preallocation=full
run_case raw 64M ""
run_case raw 1000000 preallocation=off     # not a multiple of 512
run_case raw 1000000 preallocation=full

# qcow2: every preallocation mode at each cluster size
run_case qcow2 1G ""
for cluster in 512 4K 64K 2M; do
    run_case qcow2 64M "preallocation=off,cluster_size=$cluster"
    run_case qcow2 1G "preallocation=off,cluster_size=$cluster"
    if [[ $cluster == 512 ]]; then
        sizes=(16M)
    else
        sizes=(64M 1G)
    fi
    for size in "${sizes[@]}"; do
        run_case qcow2 "$size" "preallocation=metadata,cluster_size=$cluster"
        run_case qcow2 "$size" "preallocation=falloc,cluster_size=$cluster"
    done
    run_case qcow2 "${sizes[0]}" "preallocation=full,cluster_size=$cluster"
done

# a size that ends inside a cluster (and inside an L2 table)
for mode in off metadata falloc full; do
    run_case qcow2 1000000 "preallocation=$mode,cluster_size=64K"
    run_case qcow2 65M "preallocation=$mode,cluster_size=2M"
done

# version 2 images
run_case qcow2 1G "compat=0.10"
run_case qcow2 64M "compat=0.10,cluster_size=512"
run_case qcow2 1G "compat=0.10,preallocation=metadata"
run_case qcow2 64M "compat=0.10,preallocation=falloc,cluster_size=2M"
run_case qcow2 64M "compat=1.1,preallocation=full,cluster_size=4K"

# lazy refcounts, refcount widths, compression type
run_case qcow2 1G "lazy_refcounts=on"
run_case qcow2 1G "lazy_refcounts=on,preallocation=metadata"
for bits in 1 2 4 8 16 32 64; do
    run_case qcow2 1G "refcount_bits=$bits"
done
run_case qcow2 1G "refcount_bits=1,preallocation=metadata"
run_case qcow2 64M "refcount_bits=64,preallocation=metadata,cluster_size=4K"
run_case qcow2 16M "refcount_bits=8,preallocation=falloc,cluster_size=512"
run_case qcow2 1G "compression_type=zstd"
run_case qcow2 1G "compression_type=zlib"
run_case qcow2 4T "cluster_size=64K"
run_case qcow2 1T "cluster_size=4K,refcount_bits=1"

finish
