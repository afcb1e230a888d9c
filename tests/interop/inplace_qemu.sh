#!/bin/bash
# inplace_qemu: resize, rebase and commit change an image in place the way
# qemu-img 7.2 does, and never change what the guest sees when they should
# not (issue 12).  The oracle is qemu-io reading patterns back, with
# `qemu-img check` after every change.  Asserts:
#  - resize of an overlay (backing shorter, equal, longer; old size inside a
#    cluster or not; preallocation off/metadata/falloc/full; compat 1.1 and
#    0.10): the old content stays, the new area reads as zeros; where
#    qemu-img fails (compat 0.10 over a longer backing file with off or
#    metadata) diskforge fails too and leaves the image as it was;
#  - safe rebase (old backing none, shorter, longer than the image; new one
#    shorter, longer, none): the guest reads exactly what it read before;
#  - resize --shrink of qcow2: the data before the new end stays, the file
#    is as long as qemu-img's, check is clean; growing again shows zeros;
#    shrinking needs --shrink and takes no preallocation;
#  - commit -b BASE, -d and the default: each layer of the chain reads as
#    after qemu-img's commit on a copy; an image not in the chain is an
#    error naming it.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP"

K=1024

# fill_raw FILE SIZE PATTERN: a raw file of SIZE bytes of PATTERN.
fill_raw() {
    qemu-img create -q -f raw "$1" "$2"
    qemu-io -f raw -c "write -q -P $3 0 $2" "$1"
}

# --- 1. resize of an overlay --------------------------------------------------
# base files of 1s: shorter than, as long as, and longer than the overlay
fill_raw b16.raw $((16 * K)) 1
fill_raw b31.raw $((31 * K)) 1
fill_raw b128.raw $((128 * K)) 1
fill_raw b1m.raw $((1024 * K)) 1

for compat in 1.1 0.10; do
    for pre in off metadata falloc full; do
        # old size, new size, backing file
        for c in "31 96 b128" "31 96 b16" "31 96 b31" "64 192 b128" \
                 "31 48 b128" "100 1500 b1m" "64 96 b16"; do
            read -r old new b <<<"$c"
            blen=$(stat -c %s $b.raw)
            set_case "resize $pre compat=$compat ${old}K -> ${new}K over $b"
            img=o.qcow2
            rm -f $img
            qemu-img create -q -f qcow2 -o compat=$compat -F raw -b $b.raw \
                $img ${old}K
            # the guest wrote a little into the overlay as well
            qemu-io -c "write -q -P 2 2k 1k" $img
            seen=$((old * K < blen ? old * K : blen))
            qemu_fails=0
            if [[ $compat == 0.10 && ($pre == off || $pre == metadata) ]] &&
               ((blen > old * K && new * K > (old * K + 65535) / 65536 * 65536)); then
                qemu_fails=1
            fi
            run_df resize -q -f qcow2 --preallocation=$pre $img ${new}K
            if ((qemu_fails)); then
                expect_eq "exit code where qemu-img fails" "$DF_RC" 1 "$DF_ERR"
                expect_true "message names the image" grep -q "'$img'" "$DF_ERR"
                expect_eq "size unchanged" \
                    "$(qcow2_get $img size)" "$(printf '0x%x' $((old * K)))"
                expect_pattern "old content" $img qcow2 \
                    "1 0 2k" "2 2k 1k" "1 3k $((seen - 3 * K))"
                qcheck $img
                continue
            fi
            expect_eq "exit code" "$DF_RC" 0 "$DF_ERR"
            expect_pattern "old content kept, new area zeros" $img qcow2 \
                "1 0 2k" "2 2k 1k" "1 3k $((seen - 3 * K))" \
                "0 $seen $((new * K - seen))"
            qcheck $img
        done
    done
done

# the issue's two reproductions, literally
set_case "issue 12 reproduction: metadata over a longer raw base"
qemu-img create -q -f qcow2 -F raw -b b128.raw t.qcow2 31k
df_ok resize -f qcow2 --preallocation=metadata t.qcow2 96k &&
    expect_pattern "backing data in the old last cluster" t.qcow2 qcow2 \
        "1 0 31k" "0 31k 65k"
set_case "issue 12 reproduction: default preallocation"
qemu-img create -q -f raw b64k.raw 128k
qemu-io -f raw -c 'write -q -P 1 0 128k' b64k.raw
qemu-img create -q -f qcow2 -F raw -b b64k.raw u.qcow2 64k
df_ok resize u.qcow2 128k &&
    expect_pattern "grown area" u.qcow2 qcow2 "1 0 64k" "0 64k 64k"

# --- 2. safe rebase ---------------------------------------------------------
qemu-img create -q -f qcow2 oshort.qcow2 128K
qemu-io -c 'write -q -P 0x21 0 128K' oshort.qcow2
qemu-img create -q -f qcow2 olong.qcow2 512K
qemu-io -c 'write -q -P 0x22 0 512K' olong.qcow2
qemu-img create -q -f qcow2 nshort.qcow2 128K
qemu-io -c 'write -q -P 0x31 64K 64K' nshort.qcow2
qemu-img create -q -f qcow2 nlong.qcow2 512K
qemu-io -c 'write -q -P 0x32 0 100K' -c 'write -q -P 0x33 256K 256K' nlong.qcow2

# what the 384 KiB image shows over each old backing file: its own
# writes (0x44 at 32K, 0x45 at 300K) over the backing file's bytes
expected_ranges() {
    case $1 in
    none) echo "0 0 32K|0x44 32K 8K|0 40K 260K|0x45 300K 64K|0 364K 20K" ;;
    oshort) echo "0x21 0 32K|0x44 32K 8K|0x21 40K 88K|0 128K 172K|0x45 300K 64K|0 364K 20K" ;;
    olong) echo "0x22 0 32K|0x44 32K 8K|0x22 40K 260K|0x45 300K 64K|0x22 364K 20K" ;;
    esac
}

for compat in 1.1 0.10; do
    for old in none oshort olong; do
        for new in nshort nlong none; do
            set_case "rebase compat=$compat $old -> $new"
            rm -f r.qcow2
            if [[ $old == none ]]; then
                qemu-img create -q -f qcow2 -o compat=$compat r.qcow2 384K
            else
                qemu-img create -q -f qcow2 -o compat=$compat -b $old.qcow2 \
                    -F qcow2 r.qcow2 384K
            fi
            qemu-io -c 'write -q -P 0x44 32K 8K' -c 'write -q -P 0x45 300K 64K' \
                r.qcow2
            if [[ $new == none ]]; then
                df_ok rebase -b "" r.qcow2 || continue
            else
                df_ok rebase -b $new.qcow2 -F qcow2 r.qcow2 || continue
            fi
            IFS='|' read -r -a ranges <<<"$(expected_ranges $old)"
            expect_pattern "guest content unchanged" r.qcow2 qcow2 "${ranges[@]}"
            qemu-img info --output=json r.qcow2 >info.json
            expect_eq "backing file" "$(json_get info.json backing-filename)" \
                "$([[ $new == none ]] && echo '<absent>' || echo $new.qcow2)"
            qcheck r.qcow2
        done
    done
done
# the issue's reproduction
set_case "issue 12 reproduction: rebase of an image without a backing file"
qemu-img create -q -f qcow2 t2.qcow2 384K
qemu-img create -q -f qcow2 new.qcow2 384K
qemu-io -c 'write -q -P 0x11 256K 64K' new.qcow2
df_ok rebase -b new.qcow2 -F qcow2 t2.qcow2 &&
    expect_pattern "zeros stay zeros" t2.qcow2 qcow2 "0 0 384K"

# --- 5. resize --shrink -----------------------------------------------------
for to in 100k 64k 513k 1M; do
    set_case "shrink 2M -> $to"
    for t in q d; do
        rm -f $t.qcow2
        qemu-img create -q -f qcow2 -o cluster_size=4k $t.qcow2 2M
        qemu-io -c 'write -q -P 5 0 300k' -c 'write -q -P 6 1M 8k' \
            -c 'write -q -z 1500k 64k' $t.qcow2
    done
    q_ok qemu-img resize -q --shrink q.qcow2 $to || continue
    df_ok resize -q --shrink d.qcow2 $to || continue
    qcheck d.qcow2
    expect_eq "file length (qemu-img's)" "$(len_of d.qcow2)" "$(len_of q.qcow2)"
    expect_same_map "allocation" d.qcow2 q.qcow2 qcow2
    n=$(bytes_of "${to^^}")
    p5=$((n < 300 * K ? n : 300 * K))
    expect_pattern "content before the new end" d.qcow2 qcow2 "5 0 $p5" \
        "0 $p5 $((n > 1024 * K ? 1024 * K - p5 : n - p5))"
    # growing again must not bring back what was cut (qemu-img shows the
    # bytes of a cut cluster again: a deliberate difference)
    df_ok resize -q d.qcow2 2M &&
        expect_pattern "grown again: zeros past the old end" d.qcow2 qcow2 \
            "0 $n $((2048 * K - n))"
    qcheck d.qcow2
done
# data far out, in clusters counted by a second refcount block (4 KiB
# clusters: one block counts 8 MiB of file): that block goes too, and the
# file is as short as qemu-img's
set_case "shrink 64M -> 2M past a second refcount block"
for t in q d; do
    rm -f $t.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=4k $t.qcow2 64M
    qemu-io -c 'write -q -P 5 0 1M' -c 'write -q -P 6 20M 20M' $t.qcow2
done
if q_ok qemu-img resize -q --shrink q.qcow2 2M &&
   df_ok resize -q --shrink d.qcow2 2M; then
    qcheck d.qcow2
    expect_eq "file length (qemu-img's)" "$(len_of d.qcow2)" "$(len_of q.qcow2)"
    expect_pattern "content" d.qcow2 qcow2 "5 0 1M" "0 1M 1M"
    df_ok resize -q d.qcow2 64M &&
        expect_pattern "grown again" d.qcow2 qcow2 "5 0 1M" "0 1M 63M"
    qemu-io -c 'write -q -P 7 30M 5M' d.qcow2
    qcheck d.qcow2
fi
set_case "shrink refusals"
qemu-img create -q -f qcow2 s.qcow2 1M
run_df resize s.qcow2 512k
expect_eq "shrink without --shrink: exit code" "$DF_RC" 1 "$DF_ERR"
expect_true "... says --shrink" grep -q -- "--shrink" "$DF_ERR"
run_df resize --shrink --preallocation=full s.qcow2 512k
expect_eq "shrink with preallocation: exit code" "$DF_RC" 1 "$DF_ERR"
expect_eq "size unchanged" "$(qcow2_get s.qcow2 size)" "0x100000"

# --- 6. commit -b BASE, -d --------------------------------------------------
# base (1 MiB of 1s) <- mid (2s at 64K..192K) <- top (1.5 MiB: 3s at
# 128K..256K, 4s at 1M..1M+64K)
make_chain() {
    rm -f "$1"-base.qcow2 "$1"-mid.qcow2 "$1"-top.qcow2
    qemu-img create -q -f qcow2 "$1"-base.qcow2 1M
    qemu-io -c 'write -q -P 1 0 1M' "$1"-base.qcow2
    qemu-img create -q -f qcow2 -b "$1"-base.qcow2 -F qcow2 "$1"-mid.qcow2 1M
    qemu-io -c 'write -q -P 2 64k 128k' "$1"-mid.qcow2
    qemu-img create -q -f qcow2 -b "$1"-mid.qcow2 -F qcow2 "$1"-top.qcow2 1536k
    qemu-io -c 'write -q -P 3 128k 128k' -c 'write -q -P 4 1M 64k' \
        "$1"-top.qcow2
}
for args in "-b q-base.qcow2" "-b q-mid.qcow2" "-d" ""; do
    set_case "commit ${args:-(default)}"
    make_chain q
    make_chain d
    q_ok qemu-img commit -q $args q-top.qcow2 || continue
    df_ok commit -q ${args//q-/d-} d-top.qcow2 || continue
    for l in base mid top; do
        q_ok qemu-img compare d-$l.qcow2 q-$l.qcow2 || :
        expect_same_map "$l allocation" d-$l.qcow2 q-$l.qcow2 qcow2
        qcheck d-$l.qcow2
    done
    case $args in
    "-b q-base.qcow2")
        expect_pattern "base holds everything above it" d-base.qcow2 qcow2 \
            "1 0 64k" "2 64k 64k" "3 128k 128k" "1 256k 768k" "4 1M 64k" \
            "0 1088k 448k"
        expect_pattern "top kept (-b implies -d)" d-top.qcow2 qcow2 \
            "3 128k 128k" "4 1M 64k" ;;
    -d)
        expect_pattern "top kept" d-top.qcow2 qcow2 "3 128k 128k" "4 1M 64k"
        expect_pattern "mid holds top's data" d-mid.qcow2 qcow2 \
            "1 0 64k" "2 64k 64k" "3 128k 128k" "1 256k 768k" "4 1M 64k" ;;
    "")
        expect_eq "top emptied: allocated clusters" \
            "$(qemu-img map --output=json d-top.qcow2 | grep -c '"depth": 0, "present": true')" 0 ;;
    esac
done
set_case "commit -b of an image outside the chain"
make_chain d
qemu-img create -q -f qcow2 other.qcow2 1M
run_df commit -b other.qcow2 d-top.qcow2
expect_eq "exit code" "$DF_RC" 1 "$DF_ERR"
expect_true "message names the base and the image" \
    grep -q "Did not find 'other.qcow2' in the backing chain of 'd-top.qcow2'" "$DF_ERR"
run_df commit -b d-top.qcow2 d-top.qcow2
expect_eq "the image itself is not its base: exit code" "$DF_RC" 1 "$DF_ERR"

finish
