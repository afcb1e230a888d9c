#!/usr/bin/env bash
# qemu_img_forms.sh - issue 12: backing formats are never guessed where a
# backing reference is recorded; the qemu-img forms pipelines use (-U,
# file: names, hexadecimal sizes, size 0, encryption=off) work as in
# qemu-img; json:, --image-opts and other protocols are refused by name.
# qemu-img and qemu-io are the oracle throughout.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP" || exit 1

# refused WHAT RC WORD...: the last run_df exited RC and its message holds
# every WORD.
refused() {
    local what=$1 rc=$2 w
    shift 2
    expect_eq "$what: exit code" "$DF_RC" "$rc" "$DF_ERR"
    for w in "$@"; do
        expect_true "$what: the message names '$w'" grep -qF -- "$w" "$DF_ERR"
    done
}

# no_backing IMG: qemu-img sees no backing file in IMG.
no_backing() {
    ! qemu-img info -U "$1" | grep -q '^backing file'
}

# ---- 1. a backing file's format is never guessed -------------------------
# The reproduction of the issue: evil.img is a raw disk whose guest wrote a
# qcow2 header pointing at a host file.  Probed, it reads as that file.
set_case "evil.img"
printf 'SECRET\n' >secret.txt
truncate -s 1M secret.txt
qemu-img create -q -f qcow2 -b "$PWD/secret.txt" -F raw evil.img 1M
qemu-img create -q -f qcow2 top.qcow2 1M
top_sum=$(sha256sum <top.qcow2)
qrc=0
qemu-img rebase -u -b evil.img top.qcow2 2>/dev/null || qrc=$?
expect_eq "qemu-img rebase -u without -F fails (oracle)" "$qrc" 1
run_df rebase -u -b evil.img top.qcow2
refused "rebase -u -b evil.img (no -F)" 2 evil.img "-F"
run_df rebase -b evil.img top.qcow2
refused "rebase -b evil.img (no -F)" 2 evil.img "-F"
expect_eq "top.qcow2 is untouched" "$(sha256sum <top.qcow2)" "$top_sum"
expect_true "qemu-img sees no backing file in top.qcow2" no_backing top.qcow2
expect_true "the guest reads zeros, not secret.txt (qemu-io)" \
    q_ok qemu-io -f qcow2 -c 'read -P 0 0 16' top.qcow2
qemu-io -f qcow2 -c 'read -v 0 16' top.qcow2 >q.out
expect_true "SECRET never shows in the guest" \
    sh -c '! grep -q "53 45 43 52 45 54" q.out'

qrc=0
qemu-img convert -O qcow2 -B evil.img evil.img q-out.qcow2 2>/dev/null ||
    qrc=$?
expect_eq "qemu-img convert -B without -F fails (oracle)" "$qrc" 1
run_df convert -O qcow2 -B evil.img evil.img out.qcow2
refused "convert -B evil.img (no -F)" 2 out.qcow2 evil.img "-F"
expect_true "convert -B without -F leaves no out.qcow2" test ! -e out.qcow2
qemu-img convert -O qcow2 -B evil.img -F qcow2 evil.img q-out.qcow2
if df_ok convert -O qcow2 -B evil.img -F qcow2 evil.img out.qcow2; then
    expect_eq "convert -B -F records the format given, as qemu-img" \
        "$(qemu-img info out.qcow2 | grep '^backing')" \
        "$(qemu-img info q-out.qcow2 | grep '^backing')"
    qcheck out.qcow2
fi

run_df create -q -f qcow2 -b evil.img c.qcow2 1M
refused "create -b evil.img (no -F)" 2 c.qcow2 "-F"
expect_true "create -b without -F leaves no c.qcow2" test ! -e c.qcow2
run_df create -q -f qcow2 -o backing_file=evil.img c.qcow2 1M
refused "create -o backing_file (no backing_fmt)" 2 c.qcow2
expect_true "... and leaves no c.qcow2" test ! -e c.qcow2

# Job files: the step's own backing_format, else the format of the step
# that made the backing file; otherwise a job-file error naming the place.
set_case "job backing formats"
mkdir job
qemu-img create -q -f raw job/ext.raw 1M
cat >job/ok.yaml <<'EOF'
version: 1
steps:
  - id: base
    op: create
    image: base.img
    format: raw
    size: 1M
  - id: mid
    op: overlay
    image: mid.qcow2
    backing: base.img
  - id: top
    op: create
    image: top.qcow2
    format: qcow2
    backing: mid.qcow2
  - id: ext
    op: overlay
    image: ext.qcow2
    backing: ext.raw
    backing_format: raw
EOF
if df_ok run job/ok.yaml --report "$T_TMP/ok.report.json"; then
    for pair in mid:raw top:qcow2 ext:raw; do
        expect_eq "job: ${pair%%:*} records its backing format" \
            "$(qemu-img info "job/${pair%%:*}.qcow2" |
               sed -n 's/^backing file format: //p')" "${pair#*:}"
    done
fi
for op in overlay rebase create convert; do
    case $op in
    overlay) keys="image: o.qcow2" ;;
    rebase) keys="image: r.qcow2" ;;
    create) keys=$'image: c.qcow2\n    format: qcow2' ;;
    convert) keys=$'from: ext.raw\n    to: v.qcow2' ;;
    esac
    printf 'version: 1\nsteps:\n  - id: s\n    op: %s\n    %s\n    backing: ext.raw\n' \
        "$op" "$keys" >"job/$op.yaml"
    line=$(grep -n 'backing: ext.raw' "job/$op.yaml" | cut -d: -f1)
    run_df validate "job/$op.yaml"
    refused "job $op: backing without backing_format" 2 \
        "job/$op.yaml:$line:14:" ext.raw backing_format
done

# ---- 2. the qemu-img forms pipelines use -----------------------------------
set_case "info -U"
qemu-img create -q -f qcow2 u.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x61 0 1M' u.qcow2 >/dev/null
same_as_qemu info -U u.qcow2
same_as_qemu info --force-share --output=json u.qcow2
same_as_qemu map -U --output=json u.qcow2
same_as_qemu check -U u.qcow2
same_as_qemu compare -U u.qcow2 u.qcow2

set_case "file: names"
same_as_qemu create -f qcow2 file:f.qcow2 1M
expect_true "create file:f.qcow2 makes f.qcow2" test -f f.qcow2
expect_true "... and no file named 'file:f.qcow2'" test ! -e file:f.qcow2
rm -f f.qcow2
df_ok create -q -f qcow2 file:f.qcow2 1M && qcheck f.qcow2
same_as_qemu info file:f.qcow2
df_ok convert -O raw file:f.qcow2 file:f.raw &&
    expect_true "convert file:SRC file:DST makes f.raw" test -f f.raw
expect_true "no file named 'file:f.raw'" test ! -e file:f.raw
# "file:" then a name with ':': the rest is a plain file, as qemu takes it
df_ok create -q -f raw file:a:b.raw 64k &&
    expect_true "file:a:b.raw makes the file 'a:b.raw'" test -f a:b.raw
same_as_qemu info ./a:b.raw

set_case "hexadecimal numbers"
qemu-img create -q -f qcow2 -o cluster_size=0x10000,refcount_bits=0x10 \
    q-hex.qcow2 0x100000
same_as_qemu create -f qcow2 -o cluster_size=0x10000,refcount_bits=0x10 \
    hex.qcow2 0x100000
expect_true "-o cluster_size=0x10000: the same bytes as qemu-img's" \
    cmp -s hex.qcow2 q-hex.qcow2
same_as_qemu create -f qcow2 -o cluster_size=0x200 hex2.qcow2 0x80000
same_as_qemu resize hex.qcow2 0x200000
same_as_qemu resize hex.qcow2 +0x10000
same_as_qemu measure -O qcow2 --size 0x100000
same_as_qemu map --start-offset 0x10000 --max-length 0x20000 u.qcow2
qemu-img convert -O raw -S 0x1000 u.qcow2 q-hex.raw
df_ok convert -O raw -S 0x1000 u.qcow2 hex.raw &&
    expect_true "convert -S 0x1000: the same content as qemu-img's" \
        cmp -s hex.raw q-hex.raw
for bad in 0x 0x1.8M 0xg; do
    run_df create -q -f raw h.raw "$bad"
    refused "size '$bad' refused" 2 "$bad"
done

set_case "size 0"
for fmt in raw qcow2; do
    qemu-img create -q -f $fmt q-zero.$fmt 0
    same_as_qemu create -f $fmt zero.$fmt 0
    expect_true "$fmt size 0: the same bytes as qemu-img's" \
        cmp -s zero.$fmt q-zero.$fmt
    same_as_qemu info zero.$fmt
done
qcheck zero.qcow2
df_ok convert -O qcow2 zero.raw zero2.qcow2 && qcheck zero2.qcow2
same_as_qemu info zero2.qcow2

set_case "encryption=off"
qemu-img create -q -f qcow2 -o encryption=off q-enc.qcow2 1M
same_as_qemu create -f qcow2 -o encryption=off enc.qcow2 1M
expect_true "encryption=off: the same bytes as qemu-img's" \
    cmp -s enc.qcow2 q-enc.qcow2
run_df create -q -f qcow2 -o encryption=on enc2.qcow2 1M
refused "encryption=on" 1 encryption
expect_true "encryption=on leaves no file" test ! -e enc2.qcow2

# ---- 3. json:, --image-opts and other protocols are refused --------------
set_case "json: and protocol names"
qemu-img create -q -f raw base.raw 1M
qemu-io -f raw -c 'write -P 0x77 0 64k' base.raw >/dev/null
json='json:{"driver":"raw","file":{"driver":"file","filename":"base.raw"}}'
expect_true "qemu-img itself opens $json (oracle)" q_ok qemu-img info "$json"
for name in "$json" blkdebug::base.raw nbd:localhost:10809 \
            http://localhost/base.raw; do
    word=${name%%:*}
    [[ $word == json ]] && word="json:"
    for args in "info" "info -U" "check" "map" "digest" "measure -O qcow2" \
                "convert -O raw NAME x.raw" "convert -O raw base.raw NAME" \
                "create -f raw NAME 1M" "resize NAME 2M" "commit" \
                "sparsify" "rebase -u -b '' NAME" \
                "create -f qcow2 -b NAME -F raw x.qcow2 1M" \
                "rebase -u -b NAME -F raw top.qcow2" \
                "convert -O qcow2 -B NAME -F raw base.raw x.qcow2"; do
        eval "set -- $args"
        if [[ $args != *NAME* ]]; then
            set -- "$@" NAME
        fi
        argv=()
        for a in "$@"; do
            [[ $a == NAME ]] && a=$name
            argv+=("$a")
        done
        run_df "${argv[@]}"
        refused "${args/NAME/$word...}" 1 "$word"
    done
    run_df compare base.raw "$name"
    refused "compare" 2 "$word"
done
expect_true "nothing was created" test ! -e x.raw -a ! -e x.qcow2
expect_eq "top.qcow2 is still untouched" "$(sha256sum <top.qcow2)" "$top_sum"
for cmd in info check convert compare map measure; do
    run_df $cmd --image-opts driver=raw,file.filename=base.raw x.raw
    refused "$cmd --image-opts" 1 "--image-opts"
done
run_df convert --target-image-opts base.raw driver=raw,file.filename=x.raw
refused "convert --target-image-opts" 1 "--target-image-opts"

# A backing name read from a header: json: is refused when the chain is
# opened, with the name in the message; qemu follows it.
set_case "json: backing name in a header"
qemu-img create -q -f qcow2 -u -b "$json" -F raw j.qcow2 1M
expect_true "qemu-io reads base.raw through the json: name (oracle)" \
    q_ok qemu-io -f qcow2 -c 'read -P 0x77 0 64k' j.qcow2
same_as_qemu info j.qcow2
for args in "info --backing-chain" "digest" "map" "compare base.raw j.qcow2" \
            "convert -O raw j.qcow2 x.raw" "commit" \
            "rebase -b base.raw -F raw j.qcow2"; do
    # shellcheck disable=SC2086 # word splitting wanted
    set -- $args
    [[ $args == *j.qcow2* ]] || set -- "$@" j.qcow2
    run_df "$@"
    refused "$args" $([[ $1 == compare ]] && echo 2 || echo 1) \
        j.qcow2 '"driver":"raw"' "json:"
done
expect_true "nothing was created" test ! -e x.raw
qemu-img create -q -f qcow2 -u -b nbd:localhost:10809 -F raw n.qcow2 1M
run_df digest n.qcow2
refused "nbd: backing name" 1 n.qcow2 nbd:localhost:10809 "'nbd'"

# "file:" in a header: as qemu, the rest is the path, taken from the
# current directory (not the image's).
set_case "file: backing name in a header"
mkdir fb
qemu-img create -q -f raw fb/base.raw 1M
qemu-io -f raw -c 'write -P 0x5c 0 64k' fb/base.raw >/dev/null
qemu-img create -q -f qcow2 -u -b file:base.raw -F raw fb/top.qcow2 1M
same_as_qemu info fb/top.qcow2
cd fb
expect_true "qemu-io reads the backing through file:base.raw (oracle)" \
    q_ok qemu-io -f qcow2 -c 'read -P 0x5c 0 64k' top.qcow2
qemu-img convert -O raw top.qcow2 ../fb-q.raw
df_ok convert -O raw top.qcow2 ../fb-df.raw &&
    expect_true "convert reads what qemu reads" cmp -s ../fb-q.raw ../fb-df.raw
cd "$T_TMP"

# Job files read image names the same way.
set_case "job file names"
cat >job/names.yaml <<'EOF'
version: 1
steps:
  - id: made
    op: create
    image: file:made.qcow2
    size: 1M
  - id: bad
    op: info
    image: json:{"driver":"raw"}
  - id: nbd
    op: check
    image: nbd:localhost:10809
EOF
run_df validate job/names.yaml
refused "job: json: image" 2 "job/names.yaml:9:12:" "json:"
refused "job: nbd: image" 2 "job/names.yaml:12:12:" "'nbd'"
sed -i '/id: bad/,$d' job/names.yaml
df_ok run job/names.yaml --report "$T_TMP/names.report.json" &&
    expect_true "job: image file:made.qcow2 makes made.qcow2" \
        test -f job/made.qcow2 -a ! -e job/file:made.qcow2

finish
