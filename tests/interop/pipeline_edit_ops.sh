#!/usr/bin/env bash
# pipeline_edit_ops.sh - the ops that change images in place, run from a
# job: sparsify, resize, rebase and commit, then check and digest; the
# result is read back with qemu-io and checked with qemu-img.
. "$(dirname "$0")/lib.sh"
need_qemu
"$PY" -c 'import jsonschema' 2>/dev/null ||
    { echo "SKIP: $T_NAME: python3-jsonschema missing"; exit 77; }
cd "$T_TMP"
cat > edit.yaml <<'YAML'
version: 1
steps:
  - {id: base, op: create, image: base.qcow2, size: 64M}
  - {id: base2, op: create, image: base2.qcow2, size: 64M}
  - {id: data, op: fill, image: base.qcow2, length: 4M, pattern: 0x11}
  - {id: ov, op: overlay, image: ov.qcow2, backing: base.qcow2}
  - {id: ovdata, op: fill, image: ov.qcow2, offset: 8M, length: 1M, pattern: 0x22}
  - {id: zeros, op: fill, image: ov.qcow2, offset: 20M, length: 2M, pattern: 0}
  - {id: sp, op: sparsify, image: ov.qcow2}
  - {id: grow, op: resize, image: base2.qcow2, size: 128M}
  - {id: rb, op: rebase, image: ov.qcow2, backing: base2.qcow2}
  - {id: cm, op: commit, image: ov.qcow2}
  - {id: chk, op: check, image: base2.qcow2}
  - {id: sum, op: digest, image: base2.qcow2}
YAML
run_df run edit.yaml -j 2 --keep-going
T_CHECKS=$((T_CHECKS + 1))
"$PY" "$T_SRC/tests/interop/pipeline_check_report.py" edit.report.json ||
    bad "edit.report.json does not match the report schema"
expect_eq "exit" "$DF_RC" 0
show "$DF_ERR"
qcheck base2.qcow2
qcheck ov.qcow2
q_ok qemu-img info --output=json base2.qcow2 &&
    expect_true "resized to 128 MiB" grep -q '"virtual-size": 134217728' "$Q_OUT"
q_ok qemu-img info --output=json ov.qcow2 &&
    expect_true "rebased onto base2" grep -q '"backing-filename": "base2.qcow2"' "$Q_OUT"
q_ok qemu-io -f qcow2 -r -c "read -P 0x11 0 4M" -c "read -P 0x22 8M 1M" \
    -c "read -P 0 20M 2M" base2.qcow2
expect_true "committed data is in base2" bash -c "! grep -q 'Pattern verification failed' '$Q_OUT'"
finish
