#!/usr/bin/env bash
# storage-walkthrough.sh - the KVM virtual-storage walk-through, one
# diskforge command at a time (jobs/seed-walkthrough.yaml is the same as
# a job file).
#
#   examples/storage-walkthrough.sh DIR [DISKFORGE]
#
# DISKFORGE defaults to build/src/diskforge beside this script, then to
# `diskforge` on the PATH.  Every image goes into DIR.
set -euo pipefail
dir=${1:?usage: storage-walkthrough.sh DIR [DISKFORGE]}
here=$(cd "$(dirname "$0")" && pwd)
df=${2:-$here/../build/src/diskforge}
[[ -x $df ]] || df=diskforge
mkdir -p "$dir"
cd "$dir"

step() { printf '\n== %s\n' "$*"; }
alloc() { printf '%s: %s bytes long, %s bytes allocated\n' "$1" \
    "$(stat -c %s "$1")" "$(($(stat -c %b "$1") * 512))"; }

step "a flat raw image: every byte written (like dd from /dev/zero)"
"$df" create -f raw -o preallocation=full flat.raw 64M
alloc flat.raw

step "a sparse raw image: nothing allocated (like truncate or dd seek)"
"$df" create -f raw sparse.raw 64M
alloc sparse.raw
"$df" info sparse.raw

step "copies: auto keeps holes, always makes zeros holes, never fills them"
for mode in auto always never; do
    "$df" copy --sparse=$mode flat.raw "flat-$mode.raw"
    alloc "flat-$mode.raw"
done

step "qcow2 preallocation: off and metadata stay sparse, falloc and full do not"
for p in off metadata falloc full; do
    "$df" create -f qcow2 -o preallocation=$p "prealloc-$p.qcow2" 64M
    alloc "prealloc-$p.qcow2"
done
"$df" info prealloc-metadata.qcow2

step "check: no errors, and how much is allocated"
"$df" check prealloc-full.qcow2

step "a base image and two overlays that share it"
"$df" create -f qcow2 base.qcow2 64M
"$df" create -f qcow2 -b base.qcow2 -F qcow2 vm1.qcow2
"$df" create -f qcow2 -b base.qcow2 -F qcow2 vm2.qcow2
"$df" info --backing-chain vm1.qcow2
alloc base.qcow2
alloc vm1.qcow2
