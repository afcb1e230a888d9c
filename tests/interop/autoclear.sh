#!/bin/bash
# autoclear: the qcow2 spec says a writer that does not understand an
# autoclear feature bit must clear it before it writes; diskforge implements
# none of them (issue 12).  Asserts, for a v3 image whose header has
# autoclear bits set (bit 0 "bitmaps" and an unknown one):
#  - every operation that changes the image (data write, fill, zero fill,
#    resize grow and shrink, rebase and rebase -u, commit into the base and
#    out of the overlay, commit -d, sparsify, check -r leaks and -r all)
#    leaves the header's autoclear field (offset 88, 8 bytes) at 0, and
#    `qemu-img check` clean;
#  - operations that only read (info, check, map, digest, compare) leave
#    it alone, and so does a repair that finds nothing to repair;
#  - with a real persistent bitmap (qemu-img bitmap --add) the same
#    operations drop it whole: the bit is cleared, the extension goes, its
#    clusters are freed, so `qemu-img check` is clean and QEMU does not
#    warn about a program lacking bitmap support;
#  - the issue's reproduction: after `qemu-img bitmap --add` on the base,
#    `diskforge commit` leaves no bitmap that missed the commit.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP"

BITS=$(((1 << 0) | (1 << 37)))

# fresh IMG: a v3 image with data and autoclear bits set: with $KIND
# "bits", the bitmaps bit and an unknown one poked into the header; with
# "bitmap", a real persistent dirty bitmap added by qemu-img.
fresh() {
    rm -f "$1"
    qemu-img create -q -f qcow2 "$1" 4M
    qemu-io -c 'write -q -P 7 0 1M' -c 'write -q -P 0 2M 128k' "$1"
    if [[ $KIND == bits ]]; then
        qcow2_set "$1" autoclear_features $BITS
    else
        qemu-img bitmap --add "$1" b0
    fi
}

# expect_cleared WHAT IMG: the autoclear field is 0, and the image is
# clean for qemu-img check (a dropped bitmap leaves no leaked clusters),
# without QEMU's warning about a program lacking bitmap support.
expect_cleared() {
    expect_eq "$1: autoclear field after the operation" \
        "$(qcow2_get "$2" autoclear_features)" 0x0
    qcheck "$2"
    expect_true "$1: QEMU finds no stale bitmap" \
        bash -c "! grep -q 'lacking bitmap support' '$Q_ERR'"
}

# run_job NAME STEP: a one-step job (YAML flow mapping) on the images here.
run_job() {
    printf 'version: 1\nsteps:\n  - %s\n' "$2" >"$1.yaml"
    df_ok run "$1.yaml" -j 1
}

head -c 100000 /dev/urandom >data.bin

for KIND in bits bitmap; do
    set_case "$KIND: data write (job op write)"
    fresh a.qcow2
    run_job w "{id: w, op: write, image: a.qcow2, from: data.bin, offset: 64k}" &&
        expect_cleared "write" a.qcow2
    set_case "$KIND: fill with a byte"
    fresh a.qcow2
    run_job f "{id: f, op: fill, image: a.qcow2, offset: 3M, length: 70k, pattern: 0x41}" &&
        expect_cleared "fill" a.qcow2
    set_case "$KIND: zero fill"
    fresh a.qcow2
    run_job z "{id: z, op: fill, image: a.qcow2, offset: 0, length: 1M, pattern: zero}" &&
        expect_cleared "zero fill" a.qcow2
    set_case "$KIND: resize (grow)"
    fresh a.qcow2
    df_ok resize a.qcow2 8M && expect_cleared "resize" a.qcow2
    set_case "$KIND: resize --shrink"
    fresh a.qcow2
    df_ok resize --shrink a.qcow2 3M && expect_cleared "resize --shrink" a.qcow2
    set_case "$KIND: sparsify"
    fresh a.qcow2
    df_ok sparsify a.qcow2 && expect_cleared "sparsify" a.qcow2
    for r in leaks all; do
        set_case "$KIND: check -r $r"
        fresh a.qcow2
        # a leaked cluster for the repair to fix (cluster 200, in the file)
        poke a.qcow2 $((0x20000 + 2 * 200)) 2 1
        truncate -s 16M a.qcow2
        df_ok check -r $r a.qcow2 && expect_cleared "check -r $r" a.qcow2
    done

    qemu-img create -q -f qcow2 nb.qcow2 4M
    qemu-io -c 'write -q -P 9 1M 1M' nb.qcow2
    set_case "$KIND: rebase -u"
    fresh a.qcow2
    df_ok rebase -u -b nb.qcow2 -F qcow2 a.qcow2 && expect_cleared "rebase -u" a.qcow2
    set_case "$KIND: rebase (safe)"
    fresh a.qcow2
    df_ok rebase -b nb.qcow2 -F qcow2 a.qcow2 && expect_cleared "rebase" a.qcow2

    for d in "" -d; do
        set_case "$KIND: commit $d"
        fresh b.qcow2
        rm -f o.qcow2
        qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 o.qcow2 4M
        qemu-io -c 'write -q -P 3 1M 64k' o.qcow2
        qcow2_set o.qcow2 autoclear_features $BITS
        df_ok commit $d o.qcow2 || continue
        expect_cleared "commit $d: the base" b.qcow2
        if [[ -z $d ]]; then
            expect_cleared "commit: the emptied overlay" o.qcow2
        else
            # -d: the overlay is not written at all
            expect_eq "commit -d: the overlay's autoclear field" \
                "$(qcow2_get o.qcow2 autoclear_features)" "$(printf '0x%x' $BITS)"
        fi
    done

done

KIND=bits
set_case "operations that only read"
fresh a.qcow2
cp a.qcow2 a2.qcow2
for op in "info a.qcow2" "check a.qcow2" "map a.qcow2" "digest a.qcow2" \
          "compare a.qcow2 a2.qcow2"; do
    # shellcheck disable=SC2086
    df_ok $op || :
done
expect_eq "autoclear field after reading" \
    "$(qcow2_get a.qcow2 autoclear_features)" "$(printf '0x%x' $BITS)"
# a repair that finds nothing to repair writes nothing
KIND=bitmap
fresh a.qcow2
df_ok check -r all a.qcow2 || :
expect_eq "autoclear field after repairing a clean image" \
    "$(qcow2_get a.qcow2 autoclear_features)" 0x1
q_ok qemu-img info --output=json a.qcow2 || :
expect_true "its bitmap is still there" grep -q '"name": "b0"' "$Q_OUT"

# the issue's reproduction: a persistent dirty bitmap in the base
set_case "commit into a base with a dirty bitmap"
rm -f base.qcow2 top.qcow2
qemu-img create -q -f qcow2 base.qcow2 64M
q_ok qemu-img bitmap --add base.qcow2 b0 || :
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -q 1M 1M' top.qcow2
expect_eq "qemu-img set the bitmaps bit" \
    "$(qcow2_get base.qcow2 autoclear_features)" 0x1
if df_ok commit top.qcow2; then
    expect_eq "bitmaps bit cleared in the base" \
        "$(qcow2_get base.qcow2 autoclear_features)" 0x0
    q_ok qemu-img info --output=json base.qcow2 || :
    expect_true "QEMU no longer has the stale bitmap" \
        bash -c "! grep -q '\"name\": \"b0\"' '$Q_OUT'"
    expect_pattern "committed data in the base" base.qcow2 qcow2 \
        "0xcd 1M 1M" "0 0 1M" "0 2M 62M"
    # the bitmap is dropped whole: no leaked clusters, no warning
    qcheck base.qcow2
    expect_true "no warning from QEMU" \
        bash -c "! grep -q 'lacking bitmap support' '$Q_ERR'"
    df_ok check base.qcow2 || :
fi

finish
