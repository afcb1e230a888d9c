#!/usr/bin/env bash
# engine_ops.sh - check and repair, commit, rebase, resize, sparsify and
# backing chains, each against what qemu-img does with the same input.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP" || exit 1

# poke FILE WHAT ARG VALUE: change one on-disk field of a qcow2 image
#   rc CLUSTER VALUE    16-bit refcount of CLUSTER (first refcount block)
#   l2 INDEX VALUE      entry INDEX of the first L2 table
poke() {
    "$PY" - "$@" <<'EOF'
import struct, sys
path, what, a, v = sys.argv[1], sys.argv[2], int(sys.argv[3], 0), int(sys.argv[4], 0)
with open(path, "r+b") as f:
    h = f.read(104)
    if what == "rc":
        f.seek(struct.unpack(">Q", h[48:56])[0])
        rb = struct.unpack(">Q", f.read(8))[0]
        f.seek(rb + 2 * a)
        f.write(struct.pack(">H", v))
    else:
        f.seek(struct.unpack(">Q", h[40:48])[0])
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
        f.seek(l2 + 8 * a)
        f.write(struct.pack(">Q", v))
EOF
}

# ---- check: same report and exit code as qemu-img, then repair ----------
qemu-img create -q -f qcow2 clean.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' clean.qcow2 >/dev/null
declare -A cases=(
    [pristine]=""
    [leak]="rc 25 1"                       # counted, referenced by nothing
    [refcount_zero]="rc 5 0"               # in use, refcount 0
    [into_l1]="l2 0 0x8000000000030000"    # data cluster on the L1 table
    [beyond_eof]="l2 0 0x8000000010000000" # data past the end of the file
    [unaligned]="l2 0 0x8000000000050200"
    [on_refblock]="l2 0 0x8000000000020000"
    [no_copied]="l2 0 0x0000000000050000"
)
for name in "${!cases[@]}"; do
    set_case "check $name"
    cp clean.qcow2 "$name.qcow2"
    truncate -s 2M "$name.qcow2"   # room for the leaked cluster 25
    [[ -z ${cases[$name]} ]] || poke "$name.qcow2" ${cases[$name]}
    for out in human json; do
        qrc=0
        qemu-img check --output=$out "$name.qcow2" >q.out 2>/dev/null || qrc=$?
        run_df check --output=$out "$name.qcow2"
        expect_eq "check --output=$out exit code" "$DF_RC" "$qrc" "$DF_ERR"
        sed "s/$name.qcow2/IMG/" q.out >q.norm
        sed "s/$name.qcow2/IMG/" "$DF_OUT" >d.norm
        expect_true "check --output=$out report equals qemu-img's" \
            cmp -s q.norm d.norm
        cmp -s q.norm d.norm || diff q.norm d.norm | head -n 12 >&2 || true
    done
    # repair: the image diskforge repaired must be clean for qemu-img
    # whenever qemu-img's own repair of the same image is
    for mode in leaks all; do
        cp "$name.qcow2" "q-$mode-$name.qcow2"
        cp "$name.qcow2" "d-$mode-$name.qcow2"
        qrc=0
        qemu-img check -r $mode "q-$mode-$name.qcow2" >/dev/null 2>&1 || qrc=$?
        run_df check -r $mode "d-$mode-$name.qcow2"
        if ((qrc == 0)); then
            expect_eq "check -r $mode exit code" "$DF_RC" 0 "$DF_ERR"
            qcheck "d-$mode-$name.qcow2"
        fi
        if [[ $mode == all ]]; then
            # diskforge also repairs what qemu-img leaves broken
            expect_eq "check -r all exit code" "$DF_RC" 0 "$DF_ERR"
            qcheck "d-$mode-$name.qcow2"
        fi
    done
done
set_case "check raw"
truncate -s 1M plain.raw
run_df check -f raw plain.raw
expect_eq "check of a raw image exits like qemu-img" "$DF_RC" 63

# ---- backing chains of depth 1-3, writes at each level --------------------
set_case "chains"
mkdir -p sub
qemu-img create -q -f qcow2 -o cluster_size=4096 sub/l0.qcow2 32M
qemu-io -f qcow2 -c 'write -P 0x10 0 32M' sub/l0.qcow2 >/dev/null
prev=l0.qcow2
for d in 1 2 3; do
    # relative names, resolved against the overlay's own directory
    df_ok create -q -f qcow2 -b "$prev" -F qcow2 "sub/l$d.qcow2"
    df_ok create -q -f qcow2 -b "sub/$prev" -F qcow2 "q$d.qcow2"
    qemu-io -f qcow2 -c "write -P 0x$d$d $((d * 3))M 1M" \
        -c "write -z $((d * 5))M 64k" -c "write -P 0x$d$d $((d * 7))M 777" \
        "sub/l$d.qcow2" >/dev/null
    expect_eq "digest through depth $d" "$(df_sha "sub/l$d.qcow2" qcow2)" \
        "$(qemu_sha "sub/l$d.qcow2" qcow2)"
    qcheck "sub/l$d.qcow2"
    prev=l$d.qcow2
done
base_sum=$(sha_of sub/l0.qcow2)
run_df info --backing-chain --output=json sub/l3.qcow2
expect_eq "info --backing-chain lists 4 images" \
    "$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$DF_OUT")" 4

# a loop and a missing backing file are errors, not hangs
set_case "chain errors"
qemu-img create -q -f qcow2 loopa.qcow2 1M
qemu-img create -q -f qcow2 -u -b loopa.qcow2 -F qcow2 loopb.qcow2 1M
qemu-img rebase -u -b loopb.qcow2 -F qcow2 loopa.qcow2
run_df digest loopa.qcow2
expect_eq "backing loop exit code" "$DF_RC" 1
expect_true "backing loop message names the file" grep -q "loop" "$DF_ERR"
qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 orphan.qcow2 1M
run_df digest orphan.qcow2
expect_eq "missing backing exit code" "$DF_RC" 1
expect_true "missing backing message names it" grep -q "gone.qcow2" "$DF_ERR"

# ---- commit, against qemu-img commit ---------------------------------------
set_case "commit"
for who in d q; do
    qemu-img create -q -f qcow2 $who-base.qcow2 64M
    qemu-io -f qcow2 -c 'write -P 0x11 0 8M' $who-base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b $who-base.qcow2 -F qcow2 $who-top.qcow2
    qemu-io -f qcow2 -c 'write -P 0x22 1M 3M' -c 'write -z 6M 1M' \
        -c 'write -P 0x33 20M 100k' $who-top.qcow2 >/dev/null
done
qemu-img convert -O raw d-top.qcow2 expect.raw
df_ok commit d-top.qcow2
q_ok qemu-img commit -q q-top.qcow2
expect_true "committed base shows the overlay's content" \
    qemu-img compare -q -f raw -F qcow2 expect.raw d-base.qcow2
expect_true "the emptied overlay still shows it" \
    qemu-img compare -q -f raw -F qcow2 expect.raw d-top.qcow2
expect_true "base equals qemu-img's committed base" \
    qemu-img compare -q d-base.qcow2 q-base.qcow2
expect_eq "emptied overlay length" "$(len_of d-top.qcow2)" "$(len_of q-top.qcow2)"
qcheck d-base.qcow2
qcheck d-top.qcow2

# ---- rebase ----------------------------------------------------------------
set_case "rebase"
qemu-img create -q -f qcow2 b1.qcow2 16M
qemu-io -f qcow2 -c 'write -P 0x41 0 16M' b1.qcow2 >/dev/null
qemu-img create -q -f qcow2 b2.qcow2 16M
qemu-io -f qcow2 -c 'write -P 0x41 0 4M' -c 'write -P 0x42 4M 4M' b2.qcow2 >/dev/null
b1_sum=$(sha_of b1.qcow2)
for who in d q; do
    qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 $who-o.qcow2
    qemu-io -f qcow2 -c 'write -P 0x99 100k 10k' $who-o.qcow2 >/dev/null
done
qemu-img convert -O raw d-o.qcow2 before.raw
df_ok rebase -b b2.qcow2 -F qcow2 d-o.qcow2
q_ok qemu-img rebase -b b2.qcow2 -F qcow2 q-o.qcow2
expect_true "safe rebase keeps the content" \
    qemu-img compare -q -f raw -F qcow2 before.raw d-o.qcow2
expect_eq "copied the same clusters as qemu-img" \
    "$(map_sig d-o.qcow2 qcow2)" "$(map_sig q-o.qcow2 qcow2)"
expect_true "new backing recorded" grep -q '"backing-filename": "b2.qcow2"' \
    <(qemu-img info --output=json d-o.qcow2)
qcheck d-o.qcow2
df_ok rebase -b "" d-o.qcow2
expect_true "rebase onto nothing keeps the content" \
    qemu-img compare -q -f raw -F qcow2 before.raw d-o.qcow2
expect_true "no backing left" bash -c "! qemu-img info d-o.qcow2 | grep -q backing"
df_ok rebase -u -b b1.qcow2 -F qcow2 d-o.qcow2
expect_true "unsafe rebase changes only the name" \
    grep -q '"backing-filename": "b1.qcow2"' <(qemu-img info --output=json d-o.qcow2)
expect_eq "backing files untouched" "$(sha_of b1.qcow2)" "$b1_sum"
expect_eq "chain base untouched" "$(sha_of sub/l0.qcow2)" "$base_sum"

# ---- resize: byte for byte what qemu-img resize makes -----------------------
for mode in off metadata falloc full; do
    set_case "resize $mode"
    qemu-img create -q -f qcow2 d-r.qcow2 64M
    qemu-img create -q -f qcow2 q-r.qcow2 64M
    df_ok resize -q --preallocation=$mode d-r.qcow2 +64M
    q_ok qemu-img resize -q --preallocation=$mode q-r.qcow2 +64M
    expect_true "same file as qemu-img" cmp -s d-r.qcow2 q-r.qcow2
    qcheck d-r.qcow2
done
set_case "resize raw"
truncate -s 10M r.raw
run_df resize r.raw 5M
expect_eq "shrink without --shrink" "$DF_RC" 1
expect_true "message names --shrink" grep -q -- "--shrink" "$DF_ERR"
expect_eq "file untouched" "$(len_of r.raw)" 10485760
df_ok resize --shrink r.raw -2M
expect_eq "shrunk" "$(len_of r.raw)" 8388608
run_df resize -f qcow2 d-r.qcow2 1M
expect_eq "qcow2 shrink refused" "$DF_RC" 1

# ---- sparsify ----------------------------------------------------------------
set_case "sparsify qcow2"
qemu-img create -q -f qcow2 s.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0 0 16M' -c 'write -P 0x5 16M 1M' s.qcow2 >/dev/null
qemu-img convert -O raw s.qcow2 s-before.raw
before=$(alloc_of s.qcow2)
df_ok sparsify s.qcow2
expect_true "content unchanged" qemu-img compare -q -f raw -F qcow2 s-before.raw s.qcow2
expect_true "allocation dropped ($before -> $(alloc_of s.qcow2))" \
    test "$(alloc_of s.qcow2)" -lt $((before / 4))
qcheck s.qcow2
set_case "sparsify overlay"
df_ok create -q -f qcow2 -b b1.qcow2 -F qcow2 so.qcow2
qemu-io -f qcow2 -c 'write -P 0 0 2M' so.qcow2 >/dev/null
qemu-img convert -O raw so.qcow2 so-before.raw
df_ok sparsify so.qcow2
expect_true "zeros over a backing file stay zeros" \
    qemu-img compare -q -f raw -F qcow2 so-before.raw so.qcow2
qcheck so.qcow2
set_case "sparsify raw"
dd if=/dev/zero of=z.raw bs=1M count=32 status=none
dd if=/dev/urandom of=z.raw bs=1M count=2 seek=10 conv=notrunc status=none
z_sum=$(sha_of z.raw)
df_ok sparsify z.raw
expect_eq "raw content unchanged" "$(sha_of z.raw)" "$z_sum"
expect_true "raw allocation dropped" test "$(alloc_of z.raw)" -le $((3 * 1048576))

# ---- convert -B: an overlay holding only what differs from the base --------
set_case "convert -B"
qemu-img create -q -f qcow2 cb-base.qcow2 32M
qemu-io -f qcow2 -c 'write -P 0x11 0 32M' cb-base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b cb-base.qcow2 -F qcow2 cb-ov.qcow2
qemu-io -f qcow2 -c 'write -P 0x22 1M 100k' -c 'write -z 4M 64k' \
    -c 'write -P 0x11 8M 64k' cb-ov.qcow2 >/dev/null
qemu-img convert -O raw cb-ov.qcow2 cb-flat.raw
cb_sum=$(sha_of cb-base.qcow2)
df_ok convert -O qcow2 -B cb-base.qcow2 -F qcow2 cb-flat.raw cb-out.qcow2
expect_true "same content as the flat source" \
    qemu-img compare -q -f raw -F qcow2 cb-flat.raw cb-out.qcow2
qcheck cb-out.qcow2
expect_eq "only the clusters that differ from the base are stored" \
    "$(qemu-img map --output=json cb-out.qcow2 | grep -c '"depth": 0')" 2
expect_eq "base untouched" "$(sha_of cb-base.qcow2)" "$cb_sum"
run_df convert -O raw -B cb-base.qcow2 -F qcow2 cb-flat.raw cb-x.raw
expect_eq "-B with raw output refused" "$DF_RC" 1
expect_true "nothing left behind" test ! -e cb-x.raw

finish
