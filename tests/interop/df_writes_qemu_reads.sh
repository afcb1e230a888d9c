#!/usr/bin/env bash
# df_writes_qemu_reads: diskforge converts random sparse raw files to qcow2
# (and back), and qemu must read the same bytes.
#
# Inputs (deterministic seeds, scripts/gen-sparse-raw.py): whole random
# clusters; unaligned extents of any length with explicit zero runs among
# them; thousands of tiny runs; a length that ends inside a cluster; an
# all-hole file; a file of written zeros; a fully written file.
#
# For each input and each target (cluster sizes 512 B..2 MiB, v2 and v3):
#   - `diskforge convert -f raw -O qcow2` succeeds;
#   - `qemu-img check` is clean and `qemu-img compare` says identical;
#   - `diskforge digest` of the qcow2 equals sha256sum of the input;
#   - qemu-img map classifies the same ranges as data/zero as the image
#     `qemu-img convert` makes from the same input (holes and zeros are not
#     written, -S as in qemu-img);
#   - converting the same input again gives a byte-identical file;
#   - `diskforge convert -O raw` back gives the input's bytes, sparse as
#     qemu-img's own raw output.
# Then -S 0 and -S 64k against qemu-img's, and qcow2 -> qcow2.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

IN="$T_TMP/in"
mkdir -p "$IN"
gen() { "$PY" "$T_GEN" "$@" 2>/dev/null; }

gen "$IN/clusters.raw" --size 64M --layout clusters --cluster 64K --count 256 --seed 1
gen "$IN/extents.raw" --size 64M --layout extents --extents 300 \
    --max-len 200K --zero-frac 0.15 --seed 2
gen "$IN/tiny.raw" --size 16M --layout extents --extents 2000 --max-len 700 \
    --zero-frac 0.2 --seed 3
gen "$IN/odd.raw" --size 67110400 --layout extents --extents 100 \
    --max-len 100K --seed 4                      # 64 MiB + 1.5 KiB
truncate -s 64M "$IN/holes.raw"
dd if=/dev/zero of="$IN/zeros.raw" bs=1M count=8 status=none
"$PY" -c 'import random,sys; open(sys.argv[1],"wb").write(random.Random(5).randbytes(8<<20))' \
    "$IN/dense.raw"

# to_qcow2 INPUT OPTS: the checks above for one input and target.
to_qcow2() {
    local src=$1 opts=$2 name
    local out="$T_TMP/df.qcow2" again="$T_TMP/df-again.qcow2"
    local qout="$T_TMP/qemu.qcow2" back="$T_TMP/back.raw" qback="$T_TMP/qback.raw"
    name=$(basename "$src" .raw)
    set_case "$name -> qcow2 $opts"
    rm -f "$out" "$again" "$qout" "$back" "$qback"

    df_ok convert -f raw -O qcow2 -o "$opts" "$src" "$out" || return 0
    qcheck "$out"
    q_ok qemu-img compare -f raw -F qcow2 "$src" "$out" || true
    expect_eq "diskforge digest vs sha256sum of the input" \
        "$(df_sha "$out" qcow2)" "$(sha_of "$src")"
    q_ok qemu-img convert -f raw -O qcow2 -o "$opts" "$src" "$qout" &&
        expect_same_map "data/zero map vs qemu-img convert" "$out" "$qout" \
            qcow2 clusters &&
        expect_true "allocates no more than qemu-img convert" \
            test "$(stat -c %b "$out")" -le "$(stat -c %b "$qout")"
    if df_ok convert -f raw -O qcow2 -o "$opts" "$src" "$again"; then
        expect_same_bytes "convert twice (determinism)" "$out" "$again"
    fi

    set_case "$name -> qcow2 $opts -> raw"
    if df_ok convert -f qcow2 -O raw "$out" "$back"; then
        expect_same_bytes "back to raw" "$back" "$src"
        q_ok qemu-img convert -f qcow2 -O raw "$out" "$qback" &&
            expect_same_map "raw data/hole map vs qemu-img convert -O raw" \
                "$back" "$qback" raw
    fi
    rm -f "$out" "$again" "$qout" "$back" "$qback"
}

TARGETS=(
    "cluster_size=512,compat=1.1"
    "cluster_size=512,compat=0.10"
    "cluster_size=4K,compat=1.1"
    "cluster_size=64K,compat=1.1"
    "cluster_size=64K,compat=0.10"
    "cluster_size=2M,compat=1.1"
)
for src in "$IN"/*.raw; do
    case $(basename "$src") in
    holes.raw | zeros.raw | dense.raw) # uniform content: two targets suffice
        to_qcow2 "$src" "cluster_size=512,compat=0.10"
        to_qcow2 "$src" "cluster_size=64K,compat=1.1"
        ;;
    *)
        for opts in "${TARGETS[@]}"; do
            to_qcow2 "$src" "$opts"
        done
        ;;
    esac
done

# -S: the sparse-detection threshold, compared with qemu-img's result.
src="$IN/extents.raw"
for s in 0 64k 512; do
    for fmt in qcow2 raw; do
        set_case "extents -> $fmt -S $s"
        rm -f "$T_TMP/s.df" "$T_TMP/s.q"
        df_ok convert -f raw -O "$fmt" -S "$s" "$src" "$T_TMP/s.df" || continue
        q_ok qemu-img convert -f raw -O "$fmt" -S "$s" "$src" "$T_TMP/s.q" ||
            continue
        expect_same_map "map vs qemu-img convert -S $s" \
            "$T_TMP/s.df" "$T_TMP/s.q" "$fmt" \
            "$([[ $fmt == raw ]] || echo clusters)"
        expect_eq "digest" "$(df_sha "$T_TMP/s.df" "$fmt")" "$(sha_of "$src")"
        [[ $fmt != qcow2 ]] || qcheck "$T_TMP/s.df"
    done
done
rm -f "$T_TMP/s.df" "$T_TMP/s.q"

# qcow2 -> qcow2 with another cluster size and version.
set_case "qcow2 64K v3 -> qcow2 4K v2"
a="$T_TMP/a.qcow2" b="$T_TMP/b.qcow2"
if df_ok convert -f raw -O qcow2 "$IN/extents.raw" "$a" &&
    df_ok convert -f qcow2 -O qcow2 -o cluster_size=4K,compat=0.10 "$a" "$b"; then
    qcheck "$b"
    q_ok qemu-img compare -f raw -F qcow2 "$IN/extents.raw" "$b" || true
    expect_eq "qemu-img info compat" \
        "$(qemu-img info --output=json "$b" | "$PY" -c \
            'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["compat"])')" \
        0.10
fi

finish
