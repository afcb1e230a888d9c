#!/usr/bin/env bash
# space_admission.sh - a run that cannot fit is refused before any step
# starts (SPEC section 8): on a 64 MiB tmpfs the test mounts (and unmounts
# in its trap; skipped when mounting is not permitted), a job whose steps
# need 96 MiB (a full raw image and a copy of a source of known size)
# exits 1, names the mount point, the bytes needed and the bytes free,
# writes the report with every step skipped, and leaves nothing on the
# file system; with --no-space-check it starts, and the step that meets
# ENOSPC fails cleanly with nothing left behind (no temporary, no partial
# output); a job that fits runs; an up-to-date rerun on the nearly full
# file system is admitted (up-to-date steps write nothing), a --rebuild of
# the same step is not; a safe rebase that must copy in more of its old
# backing chain than fits is refused, an unsafe one admitted.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP"
mkdir mnt
if ! mount -t tmpfs -o size=64M tmpfs "$T_TMP/mnt" 2>/dev/null; then
    echo "SKIP: $T_NAME: cannot mount a tmpfs here (needs root)"
    exit 77
fi
trap 'rc=$?; umount "$T_TMP/mnt" 2>/dev/null || umount -l "$T_TMP/mnt"; (exit $rc); t_cleanup' EXIT

head -c $((40 << 20)) /dev/urandom > src.bin
cat > big.yaml <<'YAML'
version: 1
steps:
  - {id: flat, op: create, image: mnt/out/flat.raw, format: raw, size: 56M, preallocation: full}
  - {id: copy, op: copy, from: src.bin, to: mnt/out/copy.bin}
YAML

set_case "refused"
run_df run big.yaml
expect_eq "exit" "$DF_RC" 1
expect_true "names the mount point" grep -qF "'$T_TMP/mnt'" "$DF_ERR"
expect_true "names the bytes needed ($((96 << 20)))" grep -q "need $((96 << 20)) bytes" "$DF_ERR"
expect_true "names the bytes free" grep -qE "[0-9]+ bytes \([0-9.]+ [KMG]iB\) are free" "$DF_ERR"
expect_eq "every step skipped" \
    "$("$PY" -c 'import json; r=json.load(open("big.report.json")); print(r["status"], sorted(set(s["status"] for s in r["steps"])), r["summary"]["skipped"])')" \
    "failed ['skipped'] 2"
if "$PY" -c 'import jsonschema' 2>/dev/null; then
    expect_true "the report matches the schema" \
        "$PY" "$T_SRC/tests/interop/pipeline_check_report.py" big.report.json
fi
expect_eq "nothing written there" "$(find mnt -type f | wc -l)" 0

set_case "--no-space-check"
run_df run big.yaml --no-space-check
expect_eq "exit" "$DF_RC" 1
expect_true "a step failed with ENOSPC" grep -qi "no space left" "$DF_ERR"
expect_eq "no temporary left" "$(find mnt -name '*.tmp' | wc -l)" 0
# the two steps race for the space: whichever lost is not there at all,
# and what is there is whole
expect_true "not both made" test ! -e mnt/out/flat.raw -o ! -e mnt/out/copy.bin
[[ -e mnt/out/flat.raw ]] &&
    expect_eq "the image is whole" "$(alloc_of mnt/out/flat.raw)" $((56 << 20))
[[ -e mnt/out/copy.bin ]] &&
    expect_true "the copy is whole" cmp -s src.bin mnt/out/copy.bin

set_case "fits"
rm -rf mnt/out
cat > full.yaml <<'YAML'
version: 1
steps:
  - {id: flat, op: create, image: mnt/out/flat.raw, format: raw, size: 40M, preallocation: full}
  - {id: look, op: info, image: mnt/out/flat.raw}
YAML
run_df run full.yaml
expect_eq "exit" "$DF_RC" 0

# an up-to-date step writes nothing: a rerun on the nearly full file
# system is admitted (its estimate, 40 MiB, is more than the 24 MiB left)
set_case "up-to-date rerun on a nearly full file system"
expect_true "the file system is nearly full" \
    test "$(($(stat -f -c '%a * %S' mnt)))" -lt $((40 << 20))
run_df run full.yaml
expect_eq "rerun: exit" "$DF_RC" 0
expect_eq "rerun: every step up to date" \
    "$("$PY" -c 'import json; r=json.load(open("full.report.json")); print(sorted(set(s["status"] for s in r["steps"])))')" \
    "['up_to_date']"
run_df run full.yaml --rebuild flat
expect_eq "--rebuild flat: refused (its 40 MiB do not fit)" "$DF_RC" 1
expect_true "--rebuild flat: names the bytes needed" grep -q "need $((40 << 20)) bytes" "$DF_ERR"
rm -rf mnt/out .diskforge

# a safe rebase may copy into the image all the old backing chain holds:
# an overlay on the tmpfs over a base outside it with 80 MiB of data,
# rebased onto nothing, cannot fit in 64 MiB
set_case "rebase that cannot fit"
mkdir -p mnt/out
qemu-img create -q -f qcow2 base.qcow2 96M
qemu-io -f qcow2 -c 'write -P 0x11 0 80M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b "$T_TMP/base.qcow2" -F qcow2 mnt/out/top.qcow2
before=$(sha_of mnt/out/top.qcow2)
cat > rebase.yaml <<'YAML'
version: 1
steps:
  - {id: flatten, op: rebase, image: mnt/out/top.qcow2, format: qcow2, backing: null}
YAML
run_df run rebase.yaml
expect_eq "exit" "$DF_RC" 1
expect_true "refused before the step: names the mount point" grep -qF "'$T_TMP/mnt'" "$DF_ERR"
expect_true "the estimate covers the old chain's data (>= 80 MiB)" \
    grep -qE "need (8[3-9]|9[0-9])[0-9]{6} bytes" "$DF_ERR"
expect_eq "the step was skipped" \
    "$("$PY" -c 'import json; r=json.load(open("rebase.report.json")); print([s["status"] for s in r["steps"]])')" \
    "['skipped']"
expect_eq "the image is untouched" "$(sha_of mnt/out/top.qcow2)" "$before"
cat > rebase-unsafe.yaml <<'YAML'
version: 1
steps:
  - {id: flatten, op: rebase, image: mnt/out/top.qcow2, format: qcow2, backing: null, unsafe: true}
YAML
run_df run rebase-unsafe.yaml --report unsafe.json
expect_eq "an unsafe rebase (the header only) is admitted" "$DF_RC" 0
finish
