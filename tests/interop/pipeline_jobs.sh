#!/usr/bin/env bash
# pipeline_jobs.sh - run the ready job files of jobs/ and check what they
# make with qemu-img: check (no errors, no leaks), info (backing files
# stored relative), compare (content), and the reports against
# docs/report.schema.json.  Also renders `plan --format dot` with Graphviz
# when it is installed.
. "$(dirname "$0")/lib.sh"
need_qemu
command -v mke2fs >/dev/null || { echo "SKIP: $T_NAME: mke2fs not found"; exit 77; }
CHECK_REPORT="$T_SRC/tests/interop/pipeline_check_report.py"
"$PY" -c 'import jsonschema' 2>/dev/null ||
    { echo "SKIP: $T_NAME: python3-jsonschema missing"; exit 77; }

report_ok() { # report_ok FILE: valid against the schema
    T_CHECKS=$((T_CHECKS + 1))
    "$PY" "$CHECK_REPORT" "$1" 2>"$T_TMP/.schema.err" ||
        { bad "$(basename "$1") does not match the report schema"; show "$T_TMP/.schema.err"; }
}
rjson() { # rjson FILE PYEXPR: evaluate PYEXPR with r = the report
    "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}
step_status() { rjson "$1" "next(s['status'] for s in r['steps'] if s['id']=='$2')"; }
raw_of() { qemu-img convert -O raw "$1" "$2"; }

# The job files are run from a copy: a run takes the job's run lock (and
# state) in .diskforge/ beside the job file, and another copy of this suite
# may be running the same jobs at the same moment.  examples/ is where
# golden-image.yaml finds its root file system.
mkdir -p "$T_TMP/src"
cp -r "$T_SRC/jobs" "$T_TMP/src/jobs"
ln -s "$T_SRC/examples" "$T_TMP/src/examples"
JOBS=$T_TMP/src/jobs

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
df_ok run "$JOBS/seed-walkthrough.yaml" -j 2 --set out="$O" --report "$O.json"
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
df_ok run "$JOBS/lab.yaml" -j 4 --set out="$O" --report "$O.json"
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
run_df run "$JOBS/golden-image.yaml" -j 2 --keep-going --set out="$O" --report "$O.json"
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
set_case "golden-image: content"
raw_of "$O/base.qcow2" "$T_TMP/golden.raw"
expect_true "the root file system is at 1 MiB" \
    cmp -s -n "$(len_of "$O/rootfs.ext4")" -i 1048576:0 "$T_TMP/golden.raw" "$O/rootfs.ext4"
raw_of "$O/web.qcow2" "$T_TMP/web.raw"
expect_eq "web role data" "$(tail -c 1048576 "$T_TMP/web.raw" | tr -d 'W' | wc -c)" 0
expect_true "web is the base below its role data" \
    cmp -s -n $((255 << 20)) "$T_TMP/web.raw" "$T_TMP/golden.raw"
rm -f "$T_TMP/golden.raw" "$T_TMP/web.raw"
if command -v debugfs >/dev/null; then
    expect_eq "hostname inside the file system" \
        "$(debugfs -R 'cat /etc/hostname' "$O/rootfs.ext4" 2>/dev/null)" golden
fi
expect_eq "no temporary files left" "$(find "$O" -name '*.tmp' | wc -l)" 0
finish
