#!/bin/bash
# inplace_matrix: resize and rebase, generated over a matrix and run on two
# copies of each image, one with qemu-img 7.2 and one with diskforge
# (issue 12).  Asserts, per case:
#  - both exit alike (0, or both refuse);
#  - the guest content is the same as qemu-img's (`qemu-img compare`), and
#    what it must be (qemu-io pattern reads: for resize the old content
#    and zeros after it; for rebase exactly what the guest read before);
#  - the allocation is the same as qemu-img's (`qemu-img map`, host offsets
#    aside) and `qemu-img check` is clean.
# resize: compat 1.1 and 0.10, no backing file or a raw one shorter than,
# as long as, between, or longer than the old and new sizes, old and new
# sizes inside and across 64 KiB clusters and a 4 KiB-cluster L2 table,
# preallocation off/metadata/falloc/full.  rebase: old backing file none,
# shorter, as long, longer; new one the same four; image sizes on and off
# a cluster boundary; compat 1.1 and 0.10.  Where qemu-img itself changes
# the guest content (a compat 0.10 image without a backing file gets the
# new backing file's data), diskforge must keep it: the case is listed in
# the table as a qemu-img difference and its map is not compared.
# The table of cases goes to $DF_TEST_OUT/inplace_matrix.md.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP"

K=1024
table_start inplace_matrix.md op compat case result

# one_side TOOL ARGS...: run qemu-img or diskforge; sets RC
one_side() {
    local tool=$1
    shift
    RC=0
    if [[ $tool == q ]]; then
        qemu-img "$@" >/dev/null 2>"$T_TMP/q.err" || RC=$?
    else
        run_df "$@"
        RC=$DF_RC
    fi
}

# --- resize ---------------------------------------------------------------
# raw_backing KIB: bKIB.raw, KIB KiB of 1s (made once)
raw_backing() {
    [[ -f b$1.raw ]] && return 0
    qemu-img create -q -f raw b$1.raw ${1}K
    qemu-io -f raw -c "write -q -P 1 0 ${1}K" b$1.raw
}

resize_case() {
    local compat=$1 cs=$2 old=$3 new=$4 b=$5 pre=$6 seen qrc label
    label="cs=$cs ${old}K->${new}K backing=${b:-none} $pre"
    set_case "resize compat=$compat $label"
    rm -f t.qcow2 q.qcow2 d.qcow2
    if [[ -n $b ]]; then
        raw_backing $b
        qemu-img create -q -f qcow2 -o compat=$compat,cluster_size=$cs \
            -F raw -b b$b.raw t.qcow2 ${old}K
        seen=$(((old < b ? old : b) * K))
    else
        qemu-img create -q -f qcow2 -o compat=$compat,cluster_size=$cs \
            t.qcow2 ${old}K
        seen=0
    fi
    qemu-io -c "write -q -P 2 1k 1k" t.qcow2
    cp t.qcow2 q.qcow2
    cp t.qcow2 d.qcow2
    one_side q resize -q -f qcow2 --preallocation=$pre q.qcow2 ${new}K
    qrc=$RC
    one_side d resize -q -f qcow2 --preallocation=$pre d.qcow2 ${new}K
    expect_eq "exit code (qemu-img's)" "$RC" "$qrc" "$DF_ERR"
    if ((qrc != 0)); then
        # both refuse: the image still shows what it showed
        q_ok qemu-img compare -q d.qcow2 t.qcow2 || :
        qcheck d.qcow2
        table_row resize "$compat" "$label" "both refuse"
        return
    fi
    ((RC == 0)) || return 0
    q_ok qemu-img compare -q d.qcow2 q.qcow2 || :
    expect_pattern "old content, then zeros" d.qcow2 qcow2 \
        "$((seen ? 1 : 0)) 0 1k" "2 1k 1k" \
        "$((seen > 2 * K ? 1 : 0)) 2k $((seen > 2 * K ? seen - 2 * K : 0))" \
        "0 $((seen > 2 * K ? seen : 2 * K)) $((new * K - (seen > 2 * K ? seen : 2 * K)))"
    expect_same_map "allocation" d.qcow2 q.qcow2 qcow2
    qcheck d.qcow2
    table_row resize "$compat" "$label" "same"
}

# compat 0.10 (no zero flag) and full (placed as falloc) on fewer cases,
# to keep the run short
for compat in 1.1 0.10; do
    for pre in off metadata falloc full; do
        sizes=("31 96" "64 192" "31 40" "100 1100")
        [[ $compat == 1.1 && $pre != full ]] || sizes=("31 96" "100 1100")
        for sz in "${sizes[@]}"; do
            read -r old new <<<"$sz"
            # none, shorter, as long, between old and new, longer
            for b in "" 16 $old $(((old + new) / 2)) $((new + 64)); do
                [[ $compat == 1.1 || $b != $(((old + new) / 2)) ]] || continue
                resize_case $compat 65536 $old $new "$b" $pre
            done
        done
        # 4 KiB clusters: one L2 table maps 2 MiB; cross it
        for b in "" 2400; do
            resize_case $compat 4096 1200 2100 "$b" $pre
        done
    done
done

# --- rebase ---------------------------------------------------------------
# old backing files: 0x21 everywhere; new ones: 0x21 like the old in the
# first 64K, 0x31 after, a hole at 128K..192K, 0x32 from 192K on
make_backing() {
    qemu-img create -q -f qcow2 "$1" "$2"
    if [[ $3 == old ]]; then
        qemu-io -c "write -q -P 0x21 0 $2" "$1"
    else
        qemu-io -c "write -q -P 0x21 0 64K" -c "write -q -P 0x31 64K 64K" \
            "$1"
        if (($(bytes_of "$2") > 192 * K)); then
            qemu-io -c "write -q -P 0x32 192K $(($(bytes_of "$2") - 192 * K))" "$1"
        fi
    fi
}

rebase_case() {
    local compat=$1 size=$2 old=$3 new=$4 qrc label q_same=0
    label="${size} ${old:-none}->${new:-none}"
    set_case "rebase compat=$compat $label"
    rm -f t.qcow2 q.qcow2 d.qcow2 before.raw
    if [[ -n $old ]]; then
        qemu-img create -q -f qcow2 -o compat=$compat -b o$old.qcow2 \
            -F qcow2 t.qcow2 $size
    else
        qemu-img create -q -f qcow2 -o compat=$compat t.qcow2 $size
    fi
    qemu-io -c 'write -q -P 0x44 32K 8K' -c 'write -q -P 0x45 300K 20K' t.qcow2
    qemu-img convert -O raw t.qcow2 before.raw
    cp t.qcow2 q.qcow2
    cp t.qcow2 d.qcow2
    if [[ -n $new ]]; then
        one_side q rebase -q -b n$new.qcow2 -F qcow2 q.qcow2
        qrc=$RC
        one_side d rebase -q -b n$new.qcow2 -F qcow2 d.qcow2
    else
        one_side q rebase -q -b "" q.qcow2
        qrc=$RC
        one_side d rebase -q -b "" d.qcow2
    fi
    expect_eq "exit code (qemu-img's)" "$RC" "$qrc" "$DF_ERR"
    ((RC == 0 && qrc == 0)) || return 0
    q_ok qemu-img compare -q -f raw -F qcow2 before.raw d.qcow2 || :
    # the patterns the guest saw, read back through the new chain
    expect_pattern "own writes" d.qcow2 qcow2 "0x44 32K 8K" "0x45 300K 20K"
    qemu-img compare -q -f raw -F qcow2 before.raw q.qcow2 2>/dev/null &&
        q_same=1
    if ((q_same)); then
        expect_same_map "allocation" d.qcow2 q.qcow2 qcow2
        table_row rebase "$compat" "$label" "same"
    else
        table_row rebase "$compat" "$label" \
            "qemu-img changes the guest content; diskforge keeps it"
    fi
    qcheck d.qcow2
}

for s in 128K 383K 384K 512K; do
    make_backing o$s.qcow2 $s old
    make_backing n$s.qcow2 $s new
done
for compat in 1.1 0.10; do
    sizes=(383K 384K)
    [[ $compat == 1.1 ]] || sizes=(383K)
    for size in "${sizes[@]}"; do
        for old in "" 128K $size 512K; do
            for new in "" 128K $size 512K; do
                rebase_case $compat $size "$old" "$new"
            done
        done
    done
done

finish
