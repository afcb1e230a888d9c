#!/usr/bin/env bash
# shellcheck disable=SC2317 # the damage functions run through `damaged`
# bad_input: diskforge on files and arguments that are wrong.
#
# Every command here runs under a 20-second timeout and must not crash:
# an exit code >= 128, a timeout or a sanitizer report is a failure.
#
# "refused" cases (bad header fields, features outside SPEC §2, truncated,
# random or missing files, invalid sizes and options) must:
#   - exit 1 or 2 (compare: 2), with a message on stderr that names the file
#     (or, for a bad argument, quotes the argument) and, for an unsupported
#     feature, names the feature;
#   - leave no output file and no temporary file when convert fails, and
#     leave an existing destination file as it was.
# "corrupt data" cases (L1/L2 entries poked to bad values) may be read or
# refused (exit 0 or 1), but never crash or hang, and a refusal still names
# the file and leaves no output behind.
#
# The qcow2 pokes follow /work/shared/research/qcow2-notes.md §4.5; the
# header offsets are in lib.sh (QCOW2_FIELD).  Files in tests/bad/ are run
# as "corrupt data" cases too (see tests/bad/README.md).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu
DF_TIMEOUT=20

W="$T_TMP/w"
mkdir -p "$W"
REF="$W/ref.raw"            # what `compare` is given as the other image
truncate -s 64M "$REF"

# A real image to damage: 64 MiB, 64 KiB clusters, v3, 1 MiB of data at 0.
GOOD="$W/good.qcow2"
qemu-img create -q -f qcow2 "$GOOD" 64M
qemu-io -f qcow2 -c "write -P 0x42 0 1M" -c "write -P 0x43 7M 64k" "$GOOD" >/dev/null

# --- helpers -----------------------------------------------------------------

# names NEEDLES: the last stderr contains one of NEEDLES ("a|b": fixed
# strings, any one will do, case ignored).
names() {
    local alts=() a
    IFS='|' read -r -a alts <<<"$1"
    for a in "${alts[@]}"; do
        grep -qiF -- "$a" "$DF_ERR" && return 0
    done
    return 1
}

# expect_named NEEDLES: the last (failed) command's stderr names one.
expect_named() {
    T_CHECKS=$((T_CHECKS + 1))
    if [[ ! -s $DF_ERR ]]; then
        bad "no message on stderr"
    elif ! names "$1"; then
        bad "the message does not name '$1'"
        show "$DF_ERR" 5
    fi
}

# expect_refused NEEDLES ARGS...: diskforge ARGS must exit 1 or 2 with a
# message on stderr that names one of NEEDLES.
expect_refused() {
    local needle=$1
    shift
    run_df "$@"
    T_CHECKS=$((T_CHECKS + 1))
    if ((DF_RC != 1 && DF_RC != 2)); then
        bad "diskforge $* exited $DF_RC, want 1 or 2"
        show "$DF_OUT"
    fi
    expect_named "$needle"
}

# expect_feature REGEX: the last stderr names the feature (grep -Ei).
expect_feature() {
    T_CHECKS=$((T_CHECKS + 1))
    if ! grep -qEi -- "$1" "$DF_ERR"; then
        bad "the message does not name the feature (/$1/)"
        show "$DF_ERR" 5
    fi
}

# expect_dir_is DIR ENTRIES...: `ls -A DIR` lists exactly ENTRIES.
expect_dir_is() {
    local dir=$1 got want
    shift
    want=$(printf '%s\n' "$@" | sed '/^$/d' | sort | tr '\n' ' ')
    # shellcheck disable=SC2012 # the names are the test's own
    got=$(ls -A "$dir" | sort | tr '\n' ' ')
    expect_eq "files left in $(basename "$dir")/" "$got" "$want"
}

# convert_leaves_nothing KIND FILE: a convert of FILE (format qcow2) into an
# empty directory and onto an existing file.  KIND refused: it must fail;
# corrupt: it may succeed.  A failure leaves nothing new behind.
convert_leaves_nothing() {
    local kind=$1 f=$2 name out="$W/out" keep="$W/keep" before
    name=$(basename "$f")
    rm -rf "$out" "$keep"
    mkdir -p "$out" "$keep"

    if [[ $kind == refused ]]; then
        expect_refused "$name" convert -f qcow2 -O raw "$f" "$out/new.raw"
    else
        run_df convert -f qcow2 -O raw "$f" "$out/new.raw"
    fi
    if ((DF_RC != 0)); then
        expect_dir_is "$out"
        [[ $kind == corrupt ]] && expect_named "$name"
    fi

    printf 'precious bytes\n' >"$keep/dst.raw"
    before=$(sha_of "$keep/dst.raw")
    for fmt in raw qcow2; do
        run_df convert -f qcow2 -O "$fmt" "$f" "$keep/dst.raw"
        [[ $kind == refused ]] &&
            expect_true "convert -O $fmt of a refused image failed" \
                test "$DF_RC" -ne 0
        if ((DF_RC != 0)); then
            expect_eq "existing destination after a failed convert -O $fmt" \
                "$(sha_of "$keep/dst.raw")" "$before"
            expect_dir_is "$keep" dst.raw
        else
            printf 'precious bytes\n' >"$keep/dst.raw"
        fi
    done
    rm -rf "$out" "$keep"
}

# refused FILE [FEATURE_REGEX [CMDS]]: every reading command refuses FILE
# (CMDS: which of info and digest; default both).
refused() {
    local f=$1 feature=${2:-} cmds=${3:-"info digest"} name cmd
    name=$(basename "$f")
    for cmd in $cmds; do
        expect_refused "$name" "$cmd" -f qcow2 "$f"
        [[ -n $feature ]] && expect_feature "$feature"
    done
    run_df compare -f qcow2 -F raw "$f" "$REF"
    expect_eq "compare with an unreadable image (exit code)" "$DF_RC" 2
    expect_named "$name"
    convert_leaves_nothing refused "$f"
}

# corrupt FILE: reading FILE may work or fail, but cleanly.
corrupt() {
    local f=$1 name cmd
    name=$(basename "$f")
    for cmd in info digest; do
        run_df "$cmd" -f qcow2 "$f"
        T_CHECKS=$((T_CHECKS + 1))
        if ((DF_RC != 0 && DF_RC != 1 && DF_RC != 2)); then
            bad "diskforge $cmd $name exited $DF_RC, want 0, 1 or 2"
        elif ((DF_RC != 0)); then
            expect_named "$name"
        fi
    done
    run_df compare -f qcow2 -F raw "$f" "$REF"
    T_CHECKS=$((T_CHECKS + 1))
    ((DF_RC <= 2)) || bad "compare exited $DF_RC, want 0, 1 or 2"
    convert_leaves_nothing corrupt "$f"
}

# damaged NAME KIND [FEATURE_REGEX] -- COMMAND...: copy the good image to
# $W/NAME (in $P), run COMMAND to damage $P, then check it as KIND: refused,
# unreadable (refused, but `info` may work) or corrupt.
P=""
damaged() {
    local name=$1 kind=$2 feature=""
    shift 2
    if [[ $1 != -- ]]; then
        feature=$1
        shift
    fi
    shift # --
    P="$W/$name"
    cp "$GOOD" "$P"
    "$@"
    set_case "$name"
    if [[ $kind == refused ]]; then
        refused "$P" "$feature"
    elif [[ $kind == unreadable ]]; then # info need not read data
        refused "$P" "$feature" digest
    else
        corrupt "$P"
    fi
    rm -f "$P"
}

set_field() { qcow2_set "$P" "$1" "$2"; }
set_l1_0() { poke "$P" "$(qcow2_get "$P" l1_table_offset)" 8 "$1"; }
set_l2_0() { poke "$P" "$(qcow2_l2_offset "$P")" 8 "$1"; }
set_rt_0() { poke "$P" "$(qcow2_get "$P" refcount_table_offset)" 8 "$1"; }
set_backing() { # OFFSET NAME
    set_field backing_file_offset "$1"
    set_field backing_file_size "${#2}"
    printf '%s' "$2" | dd of="$P" bs=1 seek=$(($1)) conv=notrunc status=none
}

L2=$(qcow2_l2_offset "$GOOD")
E0=$(peek "$GOOD" "$L2" 8)                # L2[0]: 0x80000000000X0000
D0=$((E0 & 0x00fffffffffffe00))           # its data cluster
RT=$(qcow2_get "$GOOD" refcount_table_offset)

# --- files that are not qcow2 images ----------------------------------------

set_case "random bytes"
"$PY" -c 'import random,sys; open(sys.argv[1],"wb").write(random.Random(1).randbytes(1<<20))' \
    "$W/random.bin"
refused "$W/random.bin"

set_case "empty file"
: >"$W/empty.qcow2"
refused "$W/empty.qcow2"

for n in 40 100; do
    set_case "header truncated to $n bytes"
    head -c "$n" "$GOOD" >"$W/trunc$n.qcow2"
    refused "$W/trunc$n.qcow2"
done

set_case "raw file opened as qcow2"
"$PY" "$T_GEN" "$W/plain.raw" --size 8M --layout extents --extents 20 --seed 9 2>/dev/null
refused "$W/plain.raw"

set_case "missing file"
for cmd in info digest; do
    expect_refused "no-such.qcow2" "$cmd" -f qcow2 "$W/no-such.qcow2"
    expect_refused "no-such.raw" "$cmd" "$W/no-such.raw"
done
run_df compare "$W/no-such.qcow2" "$REF"
expect_eq "compare with a missing file (exit code)" "$DF_RC" 2
expect_named "no-such.qcow2"
convert_leaves_nothing refused "$W/no-such.qcow2"

set_case "a directory"
mkdir -p "$W/adir.qcow2"
expect_refused "adir.qcow2" info -f qcow2 "$W/adir.qcow2"
expect_refused "adir.qcow2" digest -f raw "$W/adir.qcow2"
rmdir "$W/adir.qcow2"

# Random bytes behind a valid magic and version: whatever the header says,
# no crash (seeded, so a failure can be replayed).
for seed in 1 2 3 4 5 6 7 8; do
    P="$W/qfi-random-$seed.qcow2"
    "$PY" - "$P" "$seed" <<'EOF'
import random, sys
r = random.Random(int(sys.argv[2]))
body = bytearray(r.randbytes(256 * 1024))
body[0:8] = b"QFI\xfb\x00\x00\x00\x03"
open(sys.argv[1], "wb").write(body)
EOF
    set_case "random header $seed"
    corrupt "$P"
    rm -f "$P"
done

# --- header fields poked to bad values (qcow2-notes.md 4.5) -----------------

damaged magic.qcow2 refused -- set_field magic 0x514649fc
damaged version9.qcow2 refused -- set_field version 9
damaged version1.qcow2 refused -- set_field version 1
damaged cluster-bits22.qcow2 refused -- set_field cluster_bits 22
damaged cluster-bits8.qcow2 refused -- set_field cluster_bits 8
damaged cluster-bits-huge.qcow2 refused -- set_field cluster_bits 0xffffffff
damaged l1-size-huge.qcow2 refused -- set_field l1_size 0xffffffff
damaged l1-size-zero.qcow2 refused -- set_field l1_size 0
damaged size-1T.qcow2 refused -- set_field size $((1 << 40))   # L1 too small
damaged size-max.qcow2 refused -- set_field size 0xffffffffffffffff
damaged l1-offset-unaligned.qcow2 refused -- \
    set_field l1_table_offset $(($(qcow2_get "$GOOD" l1_table_offset) + 512))
damaged refcount-order7.qcow2 refused "refcount" -- set_field refcount_order 7
damaged header-length-huge.qcow2 refused -- set_field header_length 0x7fffffff
damaged header-length-short.qcow2 refused -- set_field header_length 50
damaged backing-too-long.qcow2 refused -- \
    eval 'set_field backing_file_offset 0x200; set_field backing_file_size 2000'
damaged backing-past-cluster.qcow2 refused -- \
    eval 'set_field backing_file_offset 0x20000; set_field backing_file_size 10'
# info does not open the backing file (as qemu-img); reading data must fail.
damaged backing-missing.qcow2 unreadable "no-such-base" -- \
    set_backing 0x400 no-such-base.qcow2
damaged incompat-unknown.qcow2 refused "feature|incompat" -- \
    set_field incompatible_features 0x100
damaged incompat-data-file.qcow2 refused "data.?file" -- \
    set_field incompatible_features 0x4
damaged incompat-extended-l2.qcow2 refused "extended.?l2|subcluster" -- \
    set_field incompatible_features 0x10
damaged crypt-aes.qcow2 refused "encrypt|aes" -- set_field crypt_method 1
damaged crypt-luks.qcow2 refused "encrypt|luks" -- set_field crypt_method 2
damaged compression-type-no-bit.qcow2 refused -- set_field compression_type 1
damaged compression-type-unknown.qcow2 refused "compression" -- \
    eval 'set_field incompatible_features 0x8; set_field compression_type 7'
damaged refcount-table-offset-unaligned.qcow2 corrupt -- \
    set_field refcount_table_offset $((RT + 512))
damaged refcount-table-empty.qcow2 corrupt -- set_field refcount_table_clusters 0
damaged snapshots-huge.qcow2 corrupt -- \
    eval 'set_field nb_snapshots 0xffffffff; set_field snapshots_offset 0x7fffffff0000'
damaged l1-offset-huge.qcow2 corrupt -- set_field l1_table_offset 0x7fffffff0000
damaged l1-offset-past-eof.qcow2 corrupt -- set_field l1_table_offset 0x10000000
damaged header-length-odd.qcow2 corrupt -- set_field header_length 105
damaged dirty-bit.qcow2 corrupt -- set_field incompatible_features 0x1
damaged corrupt-bit.qcow2 corrupt -- set_field incompatible_features 0x2

# --- L1/L2 entries poked (the data path) ------------------------------------

damaged l2-past-eof.qcow2 corrupt -- set_l2_0 $((1 << 63 | 0x10000000))
damaged l2-unaligned.qcow2 corrupt -- set_l2_0 $((E0 + 0x200))
damaged l2-reserved-bits.qcow2 corrupt -- set_l2_0 $((E0 | 1 << 56))
damaged l2-on-l2.qcow2 corrupt -- set_l2_0 $((1 << 63 | L2))
damaged l2-on-refblock.qcow2 corrupt -- \
    set_l2_0 $((1 << 63 | $(peek "$GOOD" "$RT" 8)))
damaged l2-on-header.qcow2 corrupt -- set_l2_0 $((1 << 63))
damaged compressed-255-sectors.qcow2 corrupt -- \
    set_l2_0 $((1 << 62 | 255 << 54 | D0))
damaged compressed-past-eof.qcow2 corrupt -- \
    set_l2_0 $((1 << 62 | 1 << 54 | 0x10000000))
damaged compressed-garbage.qcow2 corrupt -- \
    set_l2_0 $((1 << 62 | 3 << 54 | D0 + 0x123))
damaged compressed-offset-zero.qcow2 corrupt -- set_l2_0 $((1 << 62))
damaged l1-unaligned.qcow2 corrupt -- set_l1_0 $((1 << 63 | L2 + 0x200))
damaged l1-past-eof.qcow2 corrupt -- set_l1_0 $((1 << 63 | 0x40000000))
damaged l1-on-l1.qcow2 corrupt -- \
    set_l1_0 $((1 << 63 | $(qcow2_get "$GOOD" l1_table_offset)))
damaged refblock-unaligned.qcow2 corrupt -- set_rt_0 0x20200

# --- images qemu-img makes with features outside SPEC §2 ---------------------

# qemu-img 7.2 as Debian ships it times PBKDF2 with getrusage() before it
# writes a LUKS header, and fails with "Unable to get accurate CPU usage"
# when the thread's CPU time has not advanced yet (a QEMU bug reported
# upstream in January 2025). That failure is qemu's, not ours: q_ok_retry
# runs the command again, up to five times in all, while it fails that way.
q_ok_retry() { # COMMAND...
    local try
    for try in 1 2 3 4; do
        timeout -k 5 600 "$@" >"$Q_OUT" 2>"$Q_ERR" </dev/null && return 0
        grep -q "Unable to get accurate CPU usage" "$Q_ERR" || break
    done
    q_ok "$@"
}
unsupported() { # NAME FEATURE_REGEX QEMU-IMG-CREATE-ARGS...
    local name=$1 feature=$2 run=q_ok
    shift 2
    set_case "$name (made by qemu-img)"
    [[ "$*" == *encrypt* ]] && run=q_ok_retry
    if $run qemu-img create -q -f qcow2 "$@" "$W/$name" 16M; then
        refused "$W/$name" "$feature"
    fi
    rm -f "$W/$name" "$W/$name.data"
}
unsupported extended-l2.qcow2 "extended.?l2|subcluster" -o extended_l2=on
unsupported data-file.qcow2 "data.?file" -o "data_file=$W/data-file.qcow2.data"
unsupported luks.qcow2 "encrypt|luks" --object secret,id=sec0,data=123456 \
    -o encrypt.format=luks,encrypt.key-secret=sec0
unsupported aes.qcow2 "encrypt|aes" --object secret,id=sec0,data=123456 \
    -o encryption=on,encrypt.key-secret=sec0

# --- the regression corpus in tests/bad/ ------------------------------------

for f in "$T_SRC"/tests/bad/*.qcow2; do
    [[ -e $f ]] || continue
    set_case "tests/bad/$(basename "$f")"
    cp "$f" "$W/"
    corrupt "$W/$(basename "$f")"
    rm -f "$W/$(basename "$f")"
done

# --- arguments ---------------------------------------------------------------

A="$W/args"
mkdir -p "$A"
arg_refused() { # NEEDLE ARGS...: refused, and nothing created in $A
    set_case "diskforge ${*:2}"
    expect_refused "$@"
    expect_dir_is "$A"
    rm -rf "${A:?}"/*
}
arg_refused "12Q|size" create -f raw "$A/x.raw" 12Q
arg_refused "12Q|size" create -f qcow2 "$A/x.qcow2" 12Q
arg_refused "-5|'5'|size" create -f raw "$A/x.raw" -5
arg_refused "-5|size" create -f qcow2 "$A/x.qcow2" -- -5
arg_refused "20E|size" create -f raw "$A/x.raw" 20E
arg_refused "1.5|size" create -f raw "$A/x.raw" 1.5
arg_refused "abc|size" create -f qcow2 "$A/x.qcow2" abc
arg_refused "x.qcow2|size" create -f qcow2 "$A/x.qcow2"   # no size, no backing
arg_refused "3000|cluster" create -f qcow2 -o cluster_size=3000 "$A/x.qcow2" 64M
arg_refused "256|cluster" create -f qcow2 -o cluster_size=256 "$A/x.qcow2" 64M
arg_refused "4M|cluster" create -f qcow2 -o cluster_size=4M "$A/x.qcow2" 64M
arg_refused "refcount" create -f qcow2 -o refcount_bits=3 "$A/x.qcow2" 64M
arg_refused "128|refcount" create -f qcow2 -o refcount_bits=128 "$A/x.qcow2" 64M
arg_refused refcount create -f qcow2 -o compat=0.10,refcount_bits=8 "$A/x.qcow2" 64M
arg_refused lazy create -f qcow2 -o compat=0.10,lazy_refcounts=on "$A/x.qcow2" 64M
arg_refused "zstd|compression" create -f qcow2 -o compat=0.10,compression_type=zstd "$A/x.qcow2" 64M
arg_refused "2.0|compat" create -f qcow2 -o compat=2.0 "$A/x.qcow2" 64M
arg_refused lz4 create -f qcow2 -o compression_type=lz4 "$A/x.qcow2" 64M
arg_refused bogus create -f qcow2 -o preallocation=bogus "$A/x.qcow2" 64M
arg_refused bogus create -f raw -o preallocation=bogus "$A/x.raw" 64M
arg_refused "metadata|preallocation" create -f raw -o preallocation=metadata "$A/x.raw" 64M
arg_refused no_such_option create -f qcow2 -o no_such_option=1 "$A/x.qcow2" 64M
arg_refused vmdk9 create -f vmdk9 "$A/x.img" 64M
arg_refused vmdk9 info -f vmdk9 "$GOOD"
arg_refused vmdk9 digest -f vmdk9 "$GOOD"
arg_refused vmdk9 convert -O vmdk9 "$GOOD" "$A/x.img"
arg_refused vmdk9 convert -f vmdk9 -O raw "$GOOD" "$A/x.raw"
arg_refused "3000|cluster" convert -O qcow2 -o cluster_size=3000 "$GOOD" "$A/x.qcow2"
arg_refused "1000|-S|sparse" convert -S 1000 -O raw "$GOOD" "$A/x.raw"   # not a multiple of 512
arg_refused no-such-dir convert -f qcow2 -O raw "$GOOD" "$A/no-such-dir/x.raw"
arg_refused no-such-dir create -f qcow2 "$A/no-such-dir/x.qcow2" 64M

set_case "usage errors"
for args in "" "frobnicate" "create" "info" "digest" "convert" "convert $GOOD" \
    "compare $GOOD" "info --no-such-flag $GOOD"; do
    # shellcheck disable=SC2086 # split on purpose
    run_df $args
    expect_eq "diskforge $args (exit code)" "$DF_RC" 2
    T_CHECKS=$((T_CHECKS + 1))
    [[ -s $DF_ERR ]] || bad "diskforge $args: no message on stderr"
done
for cmd in create info convert digest compare; do
    run_df "$cmd" --help
    expect_eq "diskforge $cmd --help (exit code)" "$DF_RC" 0
    T_CHECKS=$((T_CHECKS + 1))
    grep -q "$cmd" "$DF_OUT" || bad "diskforge $cmd --help does not name '$cmd'"
done

finish
