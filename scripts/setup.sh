#!/usr/bin/env bash
# setup.sh - the README's first command.  On a fresh Debian 12 machine, as
# root: install the packages diskforge needs (only the missing ones), build
# it into build/, and run the main job.
#
#   scripts/setup.sh            everything
#   scripts/setup.sh --no-demo  install and build only
#
# The main job is `diskforge run jobs/golden-image.yaml` (outputs in
# build/golden/, report in build/golden-image.report.json).  Should that job
# file or the runner be missing (an older checkout), a demo of the engine's
# commands runs instead in build/demo/: create in every preallocation mode,
# info, convert raw -> qcow2 -> raw, digest, compare, each command printed
# before it runs.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

demo=1
case ${1:-} in
--no-demo) demo=0 ;;
"") ;;
*) echo "usage: $0 [--no-demo]" >&2; exit 2 ;;
esac

df_install_packages
df_build "$DF_ROOT/build"
DF="$DF_ROOT/build/src/diskforge"
((demo)) || exit 0

JOB="$DF_ROOT/jobs/golden-image.yaml"
if [[ -f $JOB ]] && "$DF" run --help >/dev/null 2>&1; then
    REPORT="$DF_ROOT/build/golden-image.report.json"
    df_say "running the main job: diskforge run ${JOB#"$DF_ROOT"/}"
    exec "$DF" run "$JOB" --report "$REPORT"
fi

# --- the engine demo -------------------------------------------------------
D="$DF_ROOT/build/demo"
rm -rf "$D"
mkdir -p "$D"
cd "$D"
run() {
    printf '\n$ diskforge %s\n' "$*"
    "$DF" "$@"
}
sh_() {
    printf '\n$ %s\n' "$*"
    "$@"
}

df_say "diskforge engine demo in ${D#"$DF_ROOT"/} (no job runner in this build)"

# raw: sparse, fallocated, zeros written
run create -f raw sparse.raw 1G
run create -f raw -o preallocation=falloc falloc.raw 1G
run create -f raw -o preallocation=full full.raw 64M
# qcow2 in each preallocation mode
for mode in off metadata falloc; do
    run create -f qcow2 -o "preallocation=$mode" "$mode.qcow2" 1G
done
run create -f qcow2 -o preallocation=full,cluster_size=2M full.qcow2 64M
run create -f qcow2 -o compat=0.10,cluster_size=4K v2.qcow2 1G
sh_ ls -ls --block-size=1 ./*.raw ./*.qcow2

run info metadata.qcow2
run info --output=json v2.qcow2

# put some data into the sparse raw file: 16 runs of 64 KiB
printf '\n$ (write 16 x 64 KiB of random data into sparse.raw)\n'
for i in $(seq 0 15); do
    dd if=/dev/urandom of=sparse.raw bs=64K count=1 seek=$((i * 97 + 3)) \
        conv=notrunc status=none
done

run convert -f raw -O qcow2 sparse.raw data.qcow2
run convert -f qcow2 -O raw data.qcow2 back.raw
sh_ ls -ls --block-size=1 sparse.raw data.qcow2 back.raw
run info data.qcow2
run digest -f raw sparse.raw
run digest -f qcow2 data.qcow2
sh_ sha256sum back.raw
run compare -f raw -F qcow2 sparse.raw data.qcow2
if command -v qemu-img >/dev/null 2>&1; then
    sh_ qemu-img check data.qcow2
fi
df_say "done; the files are in ${D#"$DF_ROOT"/}"
