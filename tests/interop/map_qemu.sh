#!/usr/bin/env bash
# map_qemu: `diskforge map` prints what `qemu-img map` 7.2 prints, byte for
# byte, in both output formats, with the same exit code.
#
# Images (made by qemu-img and qemu-io, in a directory tree so that backing
# names are relative and the "File" column shows combined paths):
#   - raw: sparse with data, allocated zeros and a hole at the end; a length
#     that is not a whole number of sectors; all hole; fully written;
#   - qcow2 v3 and v2, cluster sizes 512 B, 64 KiB and 2 MiB, written with
#     lib.sh's qemu-io patterns (unaligned writes, zero writes with and
#     without unmap, a discard, the last bytes);
#   - compressed clusters: JSON equal; human output fails the way qemu-img
#     does (the lines before the first compressed cluster, then exit 1);
#   - zero clusters that keep their host cluster, at non-contiguous host
#     offsets;
#   - preallocation metadata (64 KiB and 2 MiB clusters), falloc and full,
#     and a metadata-preallocated image written afterwards;
#   - a chain of depth 2 in subdirectories (zero clusters over backing
#     data, an overlay larger than its backing file), a raw base under an
#     overlay, and each image of the chain opened from another directory;
#   - --start-offset and --max-length.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

W="$T_TMP/w"
mkdir -p "$W/sub/deep"
cd "$W"

# same_map WHAT ARGS...: diskforge map ARGS and qemu-img map ARGS agree on
# stdout (byte for byte) and on the exit code.
same_map() {
    local what=$1
    shift
    set_case "$what: map $*"
    same_as_qemu map "$@"
}

# both_maps WHAT IMG [FMT]: human and JSON.
both_maps() {
    local fmt=()
    [[ -n ${3:-} ]] && fmt=(-f "$3")
    same_map "$1" "${fmt[@]}" "$2"
    same_map "$1" "${fmt[@]}" --output=json "$2"
}

qio() {
    q_ok qemu-io "$@" || true
}

# --- raw ----------------------------------------------------------------------

"$PY" - <<'EOF'
import os
fd = os.open("sparse.raw", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.ftruncate(fd, 48 << 20)
os.pwrite(fd, os.urandom(200000), 3 << 20)          # data, ends mid-block
os.pwrite(fd, bytes(1 << 20), 10 << 20)             # allocated zeros
os.pwrite(fd, os.urandom(4096), (10 << 20) + 8192)  # data inside them
os.pwrite(fd, b"x", (40 << 20) - 1)
os.close(fd)
with open("odd.raw", "wb") as f:                     # 1000.5 sectors
    f.write(os.urandom(512 * 1000 + 256))
fd = os.open("hole.raw", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.ftruncate(fd, 16 << 20)
os.close(fd)
with open("dense.raw", "wb") as f:
    f.write(os.urandom(3 << 20))
EOF
for f in sparse odd hole dense; do
    both_maps "raw $f" "$f.raw" raw
done
both_maps "raw, format probed" sparse.raw

# --- qcow2 written by qemu-io -----------------------------------------------------

for opts in cluster_size=65536 cluster_size=512 cluster_size=2M \
    compat=0.10 compat=0.10,cluster_size=4096 refcount_bits=1; do
    img="q-${opts//[=,]/-}.qcow2"
    q_ok qemu-img create -q -f qcow2 -o "$opts" "$img" 64M || continue
    c=65536
    [[ $opts =~ cluster_size=([0-9]+[KM]?) ]] && c=$(bytes_of "${BASH_REMATCH[1]}")
    mapfile -d '' -t io < <(qemu_io_patterns "$c" $((64 * MiB)) 0)
    qio -f qcow2 "${io[@]}" "$img"
    both_maps "qcow2 $opts" "$img" qcow2
done
both_maps "qcow2, format probed" q-cluster_size-65536.qcow2

# compressed clusters between plain ones
q_ok qemu-img create -q -f qcow2 comp.qcow2 16M
qio -f qcow2 -c "write -P 1 0 128k" -c "write -c -P 2 1M 64k" \
    -c "write -c -P 3 1088k 64k" -c "write -P 4 4M 64k" comp.qcow2
both_maps "compressed" comp.qcow2

# zero clusters that keep their host cluster (write -z without -u over data
# written out of order, so the host offsets are not contiguous)
q_ok qemu-img create -q -f qcow2 zalloc.qcow2 8M
qio -f qcow2 -c "write -P 1 192k 64k" -c "write -P 2 0 192k" \
    -c "write -P 3 2M 256k" -c "write -z 0 256k" -c "write -z 2M 128k" \
    zalloc.qcow2
both_maps "zero clusters with host clusters" zalloc.qcow2

# --- preallocation ------------------------------------------------------------------

for p in metadata:65536 metadata:2M falloc:65536 full:65536; do
    img="pre-${p%%:*}-${p#*:}.qcow2"
    q_ok qemu-img create -q -f qcow2 \
        -o "preallocation=${p%%:*},cluster_size=${p#*:}" "$img" 256M || continue
    both_maps "preallocation ${p%%:*}, cluster ${p#*:}" "$img"
done
q_ok qemu-img create -q -f qcow2 -o preallocation=metadata prew.qcow2 64M
qio -f qcow2 -c "write -P 7 1M 100k" -c "write -z 8M 64k" \
    -c "write -P 8 $((64 * MiB - 512)) 512" prew.qcow2
both_maps "metadata preallocation, then written" prew.qcow2

# --- backing chains -----------------------------------------------------------------

q_ok qemu-img create -q -f qcow2 sub/deep/base.qcow2 4M
qio -f qcow2 -c "write -P 1 0 128k" -c "write -P 2 1M 64k" \
    -c "write -z 2M 64k" -c "write -P 3 3M 1M" sub/deep/base.qcow2
q_ok qemu-img create -q -f qcow2 -b deep/base.qcow2 -F qcow2 sub/mid.qcow2
qio -f qcow2 -c "write -P 4 64k 128k" -c "write -z 1M 64k" \
    -c "write -z -u 3M 128k" sub/mid.qcow2
q_ok qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 top.qcow2 6M
qio -f qcow2 -c "write -P 5 3200k 64k" -c "write -P 6 5M 64k" \
    -c "write -z 0 64k" top.qcow2
both_maps "chain depth 2" top.qcow2
both_maps "chain depth 1" sub/mid.qcow2
both_maps "chain base" sub/deep/base.qcow2
both_maps "chain depth 2, absolute path" "$W/top.qcow2"
(
    cd sub/deep
    both_maps "chain depth 2, from a subdirectory" ../../top.qcow2
)

# a raw base under a qcow2 overlay
cp --sparse=always sparse.raw sub/base.raw
q_ok qemu-img create -q -f qcow2 -b sub/base.raw -F raw over-raw.qcow2
qio -f qcow2 -c "write -P 9 3M 64k" -c "write -z 10M 64k" over-raw.qcow2
both_maps "qcow2 over raw" over-raw.qcow2

# --- start and length ---------------------------------------------------------------

same_map "window" --start-offset=1M --max-length=3M top.qcow2
same_map "window" --output=json --start-offset=1536k --max-length=100k top.qcow2
same_map "window" --output=json --start-offset=5M top.qcow2
same_map "window past the end" --output=json --start-offset=1G top.qcow2
same_map "window of length 0" --output=json --max-length=0 top.qcow2

finish
