#!/usr/bin/env bash
# untrusted.sh - hostile images (SPEC section 8, docs/untrusted.md): a
# qcow2 whose backing file is /etc/passwd converts into a copy of it when
# trusted (the hole), and is refused with --untrusted on the CLI, with
# `untrusted: true` on a step and with `run --untrusted`, the backing name
# in the message and no output left; so are a backing of ../x.qcow2 and a
# symbolic link in the image's directory that points out of it, while a
# backing inside the directory, one the job made, and one listed in
# allow_backing are followed (the content then matches qemu-img's).  No
# format is probed: without -f / format the untrusted open fails.  info,
# check, compare, map and digest take --untrusted.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP"
mkdir -p sub

# images qemu-img makes, backing files recorded but not opened (-u)
q_ok qemu-img create -q -f qcow2 -u -b /etc/passwd -F raw evil.qcow2 1M
q_ok qemu-img create -q -f qcow2 x.qcow2 1M
q_ok qemu-io -f qcow2 -c 'write -P 0x42 0 64k' x.qcow2
q_ok qemu-img create -q -f qcow2 -u -b ../x.qcow2 -F qcow2 sub/up.qcow2 1M
ln -s /etc/passwd sub/link.raw
q_ok qemu-img create -q -f qcow2 -u -b link.raw -F raw sub/linked.qcow2 1M
q_ok qemu-img create -q -f qcow2 sub/base.qcow2 1M
q_ok qemu-io -f qcow2 -c 'write -P 0x17 0 64k' sub/base.qcow2
q_ok qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 sub/ok.qcow2 1M

set_case "trusted (the hole)"
df_ok convert -f qcow2 -O raw evil.qcow2 leaked.raw
expect_true "a trusted convert reads /etc/passwd" \
    cmp -s -n "$(stat -c %s /etc/passwd)" leaked.raw /etc/passwd

refused() { # refused WHAT NAME ARGS...: exit 1, NAME in the message
    local what=$1 name=$2
    shift 2
    run_df "$@"
    expect_eq "$what: exit" "$DF_RC" 1
    expect_true "$what: names '$name'" grep -qF "'$name'" "$DF_ERR"
    expect_true "$what: says untrusted" grep -q "untrusted image" "$DF_ERR"
}

set_case "CLI --untrusted"
refused "convert /etc/passwd" /etc/passwd \
    convert --untrusted -f qcow2 -O raw evil.qcow2 out.raw
expect_true "no output" test ! -e out.raw
refused "info --backing-chain" /etc/passwd \
    info --untrusted --backing-chain -f qcow2 evil.qcow2
refused "digest" /etc/passwd digest --untrusted -f qcow2 evil.qcow2
refused "map" /etc/passwd map --untrusted -f qcow2 evil.qcow2
run_df compare --untrusted -f qcow2 -F qcow2 evil.qcow2 x.qcow2
expect_eq "compare: exit (an error: 2, as qemu-img)" "$DF_RC" 2
expect_true "compare: names /etc/passwd" grep -qF "'/etc/passwd'" "$DF_ERR"
refused "../x.qcow2" ../x.qcow2 digest --untrusted -f qcow2 sub/up.qcow2
refused "a link out of the directory" link.raw \
    digest --untrusted -f qcow2 sub/linked.qcow2
run_df info --untrusted evil.qcow2
expect_eq "no probing: exit" "$DF_RC" 1
expect_true "no probing: says the format must be given" \
    grep -q "format must be given" "$DF_ERR"
df_ok info --untrusted -f qcow2 evil.qcow2
df_ok check --untrusted -f qcow2 evil.qcow2
run_df digest --untrusted -f qcow2 sub/ok.qcow2
expect_eq "a backing inside the directory: exit" "$DF_RC" 0
q_ok qemu-img convert -O raw sub/ok.qcow2 ok.raw
expect_eq "a backing inside the directory: content" \
    "$(cut -d' ' -f1 "$DF_OUT")" "$(sha_of ok.raw)"

set_case "steps"
cat > job.yaml <<'YAML'
version: 1
steps:
  - {id: evil, op: convert, from: evil.qcow2, from_format: qcow2, to: out/evil.raw, format: raw, untrusted: true}
  - {id: up, op: convert, from: sub/up.qcow2, from_format: qcow2, to: out/up.raw, format: raw, untrusted: true}
  - {id: up-allowed, op: convert, from: sub/up.qcow2, from_format: qcow2, to: out/up2.raw, format: raw, untrusted: true, allow_backing: [x.qcow2]}
  - {id: probe, op: digest, image: sub/ok.qcow2, untrusted: true}
  - {id: made, op: create, image: made/base.qcow2, format: qcow2, size: 1M}
  - {id: ov, op: overlay, image: made/sub/ov.qcow2, backing: made/base.qcow2, backing_format: qcow2}
  - {id: made-ok, op: convert, from: made/sub/ov.qcow2, from_format: qcow2, to: out/made.raw, format: raw, untrusted: true}
YAML
run_df run job.yaml --keep-going
expect_eq "run: exit" "$DF_RC" 1
status() { "$PY" -c 'import json,sys; r=json.load(open("job.report.json")); s=next(s for s in r["steps"] if s["id"]==sys.argv[1]); print(s["status"], (s["error"] or {}).get("message",""))' "$1"; }
expect_true "evil refused naming /etc/passwd" \
    bash -c "[[ \"\$1\" == failed*\"'/etc/passwd'\"* ]]" _ "$(status evil)"
expect_true "../x.qcow2 refused" \
    bash -c "[[ \"\$1\" == failed*\"'../x.qcow2'\"* ]]" _ "$(status up)"
expect_eq "allow_backing lets it through" "$(status up-allowed)" "succeeded "
expect_true "no format: refused" \
    bash -c "[[ \"\$1\" == failed*'format must be given'* ]]" _ "$(status probe)"
expect_eq "a backing the job made (../base.qcow2) is followed" \
    "$(status made-ok)" "succeeded "
expect_true "no refused output" test ! -e out/evil.raw -a ! -e out/up.raw
q_ok qemu-img compare out/up2.raw sub/up.qcow2

set_case "run --untrusted"
cat > plain.yaml <<'YAML'
version: 1
steps:
  - {id: evil, op: convert, from: evil.qcow2, from_format: qcow2, to: out/plain.raw, format: raw}
YAML
run_df run plain.yaml --untrusted
expect_eq "exit" "$DF_RC" 1
expect_true "names /etc/passwd" grep -qF "'/etc/passwd'" "$DF_ERR"
expect_true "no output" test ! -e out/plain.raw
finish
