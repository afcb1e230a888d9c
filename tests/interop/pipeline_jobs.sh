#!/usr/bin/env bash
# pipeline_jobs.sh - run the ready job files of jobs/ and check what they
# make with qemu-img: check (no errors, no leaks), info (backing files
# stored relative), compare (content), and the reports against
# docs/report.schema.json.  Also renders `plan --format dot` with Graphviz
# when it is installed.
. "$(dirname "$0")/lib.sh"
need_qemu
need_tools mke2fs debugfs e2fsck mkfs.vfat fsck.vfat mcopy mtype sfdisk
need_jsonschema

step_status() { rjson "$1" "next(s['status'] for s in r['steps'] if s['id']=='$2')"; }
raw_of() { qemu-img convert -O raw "$1" "$2"; }

# The job files are run from a copy (jobs_copy in lib.sh).
JOBS=$(jobs_copy)

for job in seed-walkthrough lab golden-image; do
    set_case "$job: validate and plan"
    df_ok validate "$JOBS/$job.yaml" --set out="$T_TMP/$job"
    df_ok plan "$JOBS/$job.yaml" --format dot --set out="$T_TMP/$job"
    if command -v dot >/dev/null; then
        cp "$DF_OUT" "$T_TMP/$job.dot"
        expect_true "dot renders the plan" dot -Tsvg -o "$T_TMP/$job.svg" "$T_TMP/$job.dot"
    else
        expect_true "DOT output is a digraph" grep -q '^digraph ' "$DF_OUT"
    fi
    df_ok plan "$JOBS/$job.yaml" --format json --set out="$T_TMP/$job"
    expect_true "plan json parses" "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$DF_OUT"
done

# --- seed walk-through --------------------------------------------------------
set_case "seed-walkthrough: run"
O=$T_TMP/seed-walkthrough
df_ok run "$JOBS/seed-walkthrough.yaml" -j 2 --set out="$O" --report "$O.json" --state "$O.db"
report_ok "$O.json"
expect_eq "status" "$(rjson "$O.json" "r['status']")" succeeded
for f in prealloc-off prealloc-metadata prealloc-falloc prealloc-full base vm1 vm2; do
    qcheck "$O/$f.qcow2"
done
set_case "seed-walkthrough: sizes"
expect_eq "flat raw is fully allocated" "$(alloc_of "$O/flat.raw")" $((64 << 20))
expect_true "sparse raw holds only its 4 MiB" test "$(alloc_of "$O/sparse.raw")" -le $((5 << 20))
expect_eq "copy-never is fully allocated" "$(alloc_of "$O/copy-never.raw")" $((64 << 20))
expect_true "copy-always of the flat image is sparse" test "$(alloc_of "$O/copy-always.raw")" -lt $((1 << 20))
expect_true "copies keep the content" cmp -s "$O/sparse.raw" "$O/copy-auto.raw"
q_ok qemu-img info --output=json "$O/vm1.qcow2" &&
    expect_eq "overlay's backing is relative" \
        "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["backing-filename"])' "$Q_OUT")" base.qcow2
set_case "seed-walkthrough: content"
q_ok qemu-img compare "$O/vm2.qcow2" "$O/sparse.raw"
raw_of "$O/base.qcow2" "$T_TMP/base.raw"
expect_eq "digest step = sha256 of the content" \
    "$(rjson "$O.json" "next(s['result']['sha256'] for s in r['steps'] if s['id']=='base-digest')")" \
    "$(sha_of "$T_TMP/base.raw")"
rm -f "$T_TMP/base.raw"
expect_eq "no temporary files left" "$(find "$O" -name '*.tmp' | wc -l)" 0

# --- lab ----------------------------------------------------------------------
set_case "lab: run"
O=$T_TMP/lab
df_ok run "$JOBS/lab.yaml" -j 4 --set out="$O" --report "$O.json" --state "$O.db"
report_ok "$O.json"
expect_eq "status" "$(rjson "$O.json" "r['status']")" succeeded
expect_eq "12 students succeeded" \
    "$(rjson "$O.json" "sum(1 for s in r['steps'] if s['id'].startswith('student') and s['status']=='succeeded')")" 12
expect_eq "students depend only on the base" \
    "$(rjson "$O.json" "sorted(set(n for s in r['steps'] if s['id'].startswith('student') for n in s['needs']))")" \
    "['course-data']"
qcheck "$O/base.qcow2"
for i in 01 06 12; do
    qcheck "$O/students/student$i.qcow2"
    q_ok qemu-img compare "$O/students/student$i.qcow2" "$O/base.qcow2"
done
mv "$O" "$T_TMP/lab-moved"
q_ok qemu-img compare "$T_TMP/lab-moved/students/student03.qcow2" "$T_TMP/lab-moved/base.qcow2"

# --- golden image -------------------------------------------------------------
set_case "golden-image: run"
O=$T_TMP/golden-image
run_df run "$JOBS/golden-image.yaml" -j 2 --keep-going --set out="$O" --report "$O.json" --state "$O.db"
report_ok "$O.json"
expect_eq "exit code" "$DF_RC" 0 "$DF_ERR"
expect_eq "status" "$(rjson "$O.json" "r['status']")" succeeded
expect_eq "dist step" "$(step_status "$O.json" dist)" succeeded
qcheck "$O/golden-dist.qcow2"
q_ok qemu-img compare "$O/base.qcow2" "$O/golden-dist.qcow2"
q_ok qemu-img check --output=json "$O/golden-dist.qcow2" &&
    expect_true "the distributable copy is compressed" \
        grep -q '"compressed-clusters"' "$Q_OUT"
for f in base web db ci; do
    qcheck "$O/$f.qcow2"
done
set_case "golden-image: a real disk"
raw_of "$O/base.qcow2" "$T_TMP/golden.raw"
q_ok sfdisk --json "$T_TMP/golden.raw" &&
    expect_eq "sfdisk: an ESP and an x86-64 root" "$("$PY" -c '
import json, sys
t = json.load(open(sys.argv[1]))["partitiontable"]
print(t["label"], [(p["name"], p["type"], p["start"], p["size"]) for p in t["partitions"]])' "$Q_OUT")" \
        "gpt [('esp', 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 2048, 131072), ('root', '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709', 133120, 391135)]"
part() { # part RAW N OUT: partition N (1 ESP, 2 root) cut out
    if (($2 == 1)); then
        dd if="$1" of="$3" bs=1M skip=1 count=64 status=none
    else
        dd if="$1" of="$3" bs=512 skip=133120 count=391135 status=none
    fi
}
part "$T_TMP/golden.raw" 1 "$T_TMP/esp.img"
part "$T_TMP/golden.raw" 2 "$T_TMP/root.img"
q_ok fsck.vfat -n "$T_TMP/esp.img"
q_ok e2fsck -fn "$T_TMP/root.img"
expect_eq "hostname inside the root file system" \
    "$(debugfs -R 'cat /etc/hostname' "$T_TMP/root.img" 2>/dev/null)" golden
expect_eq "the boot loader's configuration in the ESP" \
    "$(MTOOLS_SKIP_CHECK=1 mtype -i "$T_TMP/esp.img" ::/loader/loader.conf)" \
    "$(cat "$T_SRC/examples/golden-esp/loader/loader.conf")"
expect_eq "the base has no role" \
    "$(debugfs -R 'cat /etc/golden/role' "$T_TMP/root.img" 2>/dev/null)" ""
for role in web db ci; do
    raw_of "$O/$role.qcow2" "$T_TMP/$role.raw"
    part "$T_TMP/$role.raw" 2 "$T_TMP/$role-root.img"
    q_ok e2fsck -fn "$T_TMP/$role-root.img"
    expect_eq "$role: its role file" \
        "$(debugfs -R 'cat /etc/golden/role' "$T_TMP/$role-root.img" 2>/dev/null)" "role=$role"
    expect_true "$role: the ESP is the base's" \
        cmp -s -n $((64 << 20)) -i $((1 << 20)):$((1 << 20)) "$T_TMP/$role.raw" "$T_TMP/golden.raw"
    expect_true "$role: the overlay holds only the delta ($(len_of "$O/$role.qcow2") bytes)" \
        test "$(len_of "$O/$role.qcow2")" -lt $((2 << 20))
    rm -f "$T_TMP/$role.raw" "$T_TMP/$role-root.img"
done
expect_eq "web: its page" \
    "$(raw_of "$O/web.qcow2" "$T_TMP/web.raw"; part "$T_TMP/web.raw" 2 "$T_TMP/web-root.img"
       debugfs -R 'cat /srv/www/index.html' "$T_TMP/web-root.img" 2>/dev/null | sed -n 2p)" "<title>golden web</title>"
rm -f "$T_TMP/golden.raw" "$T_TMP/web.raw" "$T_TMP/web-root.img" "$T_TMP/esp.img" "$T_TMP/root.img"

set_case "golden-image: the same bytes on a second run elsewhere"
O2=$T_TMP/golden-again
df_ok run "$JOBS/golden-image.yaml" -j 2 --set out="$O2" --report "$O2.json" --state "$O2.db"
for f in base web db ci golden-dist; do
    expect_eq "$f.qcow2" "$(sha_of "$O2/$f.qcow2")" "$(sha_of "$O/$f.qcow2")"
done
expect_eq "no temporary files left" "$(find "$O" -name '*.tmp' | wc -l)" 0
finish
