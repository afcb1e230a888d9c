#!/usr/bin/env bash
# convert_layouts: convert on the layouts real images have, against
# qemu-img convert of the same input: the same guest bytes, no more
# allocation, and the same output bytes whatever the number of threads.
#
# Inputs:
#   - frag.raw: 192 MiB raw, 2,500 extents of 512 B, 4 KiB, 64 KiB, 128 KiB
#     or 300,000 B, half not on a 4 KiB boundary (gen-sparse-raw.py
#     --layout fragmented), and that file converted to qcow2 by qemu-img;
#   - guest.qcow2: 192 MiB qcow2 written by qemu-io in 3,000 random 4 KiB
#     writes and some zero writes, as a guest writes (data clusters and L2
#     tables interleaved in the host file, COW areas left unwritten);
#   - meta.qcow2: preallocation=metadata, then 400 scattered qemu-io writes
#     (data clusters that are holes in the host file, and some that are
#     not);
#   - a 2-deep chain: an overlay written by qemu-io over guest.qcow2.
# Outputs: raw, qcow2 (64 KiB and 4 KiB clusters), -S 0 and -S 64k, and
# the overlay converted with -B onto its base.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

W="$T_TMP/w"
mkdir -p "$W"
cd "$W"

"$PY" "$T_GEN" frag.raw --size 192M --layout fragmented --extents 2500 \
    --seed 11 2>/dev/null
qemu-img convert -O qcow2 frag.raw frag.qcow2
qemu-img create -q -f qcow2 guest.qcow2 192M
"$PY" - > writes <<'PY'
import random
r = random.Random(5)
n = (192 << 20) // 4096
for i in range(3000):
    if i % 10 == 9:
        print("write -q -z %d 64k" % (r.randrange(0, n - 16) * 4096))
    else:
        print("write -q -P %d %d 4k" % (r.randrange(1, 255), r.randrange(0, n) * 4096))
PY
qemu-io guest.qcow2 < writes > /dev/null
qemu-img create -q -f qcow2 -o preallocation=metadata meta.qcow2 192M
"$PY" - > mwrites <<'PY'
import random
r = random.Random(6)
for i in range(400):
    print("write -q -P %d %d %d" % (r.randrange(1, 255),
          r.randrange(0, (192 << 20) - 300000), r.choice((512, 4096, 70000, 300000))))
PY
qemu-io meta.qcow2 < mwrites > /dev/null
qemu-img create -q -f qcow2 -b guest.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -q -P 0x33 1M 5M' -c 'write -q -z 20M 3M' \
    -c 'write -q -P 0x44 100000 70000' top.qcow2 > /dev/null

# convert_like_qemu IN OUTFMT [OPTS...]: diskforge's and qemu-img's outputs
# read the same, and diskforge's allocates no more (within 64 KiB);
# qcow2 outputs pass qemu-img check; one CPU gives the same bytes.
convert_like_qemu() {
    local in=$1 fmt=$2 d q one
    shift 2
    set_case "convert -O $fmt $* $in"
    d=$W/df.$fmt q=$W/q.$fmt one=$W/one.$fmt
    rm -f "$d" "$q" "$one"
    df_ok convert -O "$fmt" "$@" "$in" "$d" || return 0
    q_ok qemu-img convert -O "$fmt" "$@" "$in" "$q" || return 0
    q_ok qemu-img compare -q -F "$fmt" "$in" "$d" || return 0
    q_ok qemu-img compare -q -f "$fmt" -F "$fmt" "$q" "$d"
    T_CHECKS=$((T_CHECKS + 1))
    if (($(alloc_of "$d") > $(alloc_of "$q") + 65536)); then
        bad "diskforge allocates $(alloc_of "$d") bytes, qemu-img $(alloc_of "$q")"
    fi
    [[ $fmt == qcow2 ]] && qcheck "$d"
    timeout -k 5 300 taskset -c 0 "$DISKFORGE" convert -O "$fmt" "$@" \
        "$in" "$one" || bad "diskforge on one CPU failed"
    expect_true "same output bytes on one CPU and on all" cmp -s "$d" "$one"
}

for in in frag.raw frag.qcow2 guest.qcow2 meta.qcow2 top.qcow2; do
    convert_like_qemu "$in" raw
    convert_like_qemu "$in" qcow2
done
convert_like_qemu frag.raw qcow2 -o cluster_size=4096
convert_like_qemu guest.qcow2 qcow2 -o cluster_size=4096
convert_like_qemu frag.qcow2 raw -S 0
convert_like_qemu guest.qcow2 qcow2 -S 64k
convert_like_qemu meta.qcow2 raw -S 64k

# the overlay onto its base (-B): only what the overlay changes is stored
set_case "convert -B guest.qcow2 top.qcow2"
rm -f df.qcow2 q.qcow2
if df_ok convert -O qcow2 -B guest.qcow2 -o backing_fmt=qcow2 top.qcow2 df.qcow2 &&
   q_ok qemu-img convert -O qcow2 -B guest.qcow2 -o backing_fmt=qcow2 top.qcow2 q.qcow2; then
    q_ok qemu-img compare -q top.qcow2 df.qcow2
    qcheck df.qcow2
    T_CHECKS=$((T_CHECKS + 1))
    (($(alloc_of df.qcow2) <= $(alloc_of q.qcow2) + 65536)) ||
        bad "diskforge allocates $(alloc_of df.qcow2) bytes, qemu-img $(alloc_of q.qcow2)"
fi

finish
