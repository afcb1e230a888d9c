#!/bin/bash
# check_wording: what `diskforge check` (and -r leaks, -r all) prints about
# a damaged image is what qemu-img check prints about a copy of it, for
# users whose scripts grep qemu-img's output (issue 12).  Asserts:
#  - the per-cluster lines (Leaked cluster N refcount=R reference=0, ERROR
#    cluster N ..., Repairing cluster N ..., Rebuilding refcount structure,
#    ERROR need to rebuild refcount structures), in qemu-img's order, the
#    repair summary counts, and the exit code are qemu-img's, for leaks,
#    refcounts too high on data clusters and refcounts of 0 on clusters in
#    use (which need a rebuild);
#  - the image is clean for qemu-img check after a repair that succeeded;
#  - an image with persistent bitmaps gets qemu-img's report (the bitmap
#    clusters are counted, not leaks);
#  - a backing loop, an L1 table that is too large and a missing backing
#    file are reported with qemu's phrases ("Backing file 'X' creates an
#    infinite loop.", "Active L1 table too large", "Could not open backing
#    file: Could not open 'X': No such file or directory"), which the real
#    qemu-img prints for the same files.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP"

# damaged IMG INDEX=REFCOUNT...: a 1 MiB image (64 KiB clusters: header,
# refcount table, refcount block at 0x20000, L1, L2, then data clusters 5
# and 6), the file padded to 1 MiB, with 16-bit refcounts poked.
damaged() {
    local img=$1 kv
    shift
    rm -f "$img"
    qemu-img create -q -f qcow2 "$img" 1M
    qemu-io -c 'write -q -P 5 0 128k' "$img"
    truncate -s 1M "$img"
    for kv in "$@"; do
        poke "$img" $((0x20000 + 2 * ${kv%=*})) 2 "${kv#*=}"
    done
}

# the lines both print per cluster, and the summary counts
findings() {
    grep -E '^(Leaked cluster|ERROR|Repairing|Rebuilding|    [0-9]+ (leaked clusters|corruptions)$)' "$1" || true
}

for dmg in "10=1 11=2" "5=2 12=1" "6=0" "5=0 6=2"; do
    for mode in "" "-r leaks" "-r all"; do
        set_case "check ${mode:-(read-only)} of refcounts $dmg"
        damaged q.qcow2 $dmg
        damaged d.qcow2 $dmg
        qrc=0
        # shellcheck disable=SC2086
        qemu-img check $mode q.qcow2 >q.out 2>&1 || qrc=$?
        # shellcheck disable=SC2086
        run_df check $mode d.qcow2
        cat "$DF_ERR" "$DF_OUT" >d.out
        expect_eq "exit code (qemu-img's)" "$DF_RC" "$qrc" d.out
        findings q.out >q.lines
        findings d.out >d.lines
        T_CHECKS=$((T_CHECKS + 1))
        if [[ ! -s q.lines ]]; then
            bad "qemu-img printed no finding: the damage did not take"
        elif ! cmp -s d.lines q.lines; then
            bad "lines differ (diskforge < > qemu-img)"
            diff d.lines q.lines | sed 's/^/    | /' >&2 || true
        fi
        if [[ -n $mode ]] && ((qrc == 0)); then
            qcheck d.qcow2
        fi
    done
done

set_case "image with persistent bitmaps"
# the bitmaps' directory, tables and data clusters are counted, as
# qemu-img counts them: no leaks
qemu-img create -q -f qcow2 bm.qcow2 64M
qemu-img bitmap --add bm.qcow2 b0
qemu-img bitmap --add -g 4096 bm.qcow2 b1
qemu-io -c 'write -q 0 3M' -c 'write -q 40M 1M' bm.qcow2
qrc=0
qemu-img check bm.qcow2 >q.out 2>&1 || qrc=$?
run_df check bm.qcow2
expect_eq "exit code (qemu-img's)" "$DF_RC" "$qrc" "$DF_ERR"
expect_eq "report (qemu-img's)" "$(cat "$DF_OUT")" "$(cat q.out)"

set_case "backing loop"
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2 1M
qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2
phrase="Backing file 'b.qcow2' creates an infinite loop."
timeout 60 qemu-img info --backing-chain b.qcow2 >/dev/null 2>q.err || true
expect_true "qemu-img says: $phrase" grep -qF "$phrase" q.err
for op in "info --backing-chain b.qcow2" "digest b.qcow2"; do
    # shellcheck disable=SC2086
    run_df $op
    expect_eq "$op: exit code" "$DF_RC" 1 "$DF_ERR"
    expect_true "$op says: $phrase" grep -qF "$phrase" "$DF_ERR"
done

set_case "L1 table too large"
qemu-img create -q -f qcow2 l1.qcow2 1M
qcow2_set l1.qcow2 l1_size $((0x400001))
phrase="Active L1 table too large"
qemu-img info l1.qcow2 >/dev/null 2>q.err || true
expect_true "qemu-img says: $phrase" grep -qF "$phrase" q.err
for op in "info l1.qcow2" "check l1.qcow2"; do
    # shellcheck disable=SC2086
    run_df $op
    expect_eq "$op: exit code" "$DF_RC" 1 "$DF_ERR"
    expect_true "$op says: $phrase and names the file" \
        grep -qF "'l1.qcow2': $phrase" "$DF_ERR"
done

set_case "missing backing file"
qemu-img create -q -u -f qcow2 -b gone.qcow2 -F qcow2 top.qcow2 1M
phrase="Could not open backing file: Could not open 'gone.qcow2': No such file or directory"
qemu-img convert -O raw top.qcow2 q.raw 2>q.err || true
expect_true "qemu-img says: $phrase" grep -qF "$phrase" q.err
for op in "info --backing-chain top.qcow2" "digest top.qcow2" \
          "convert -O raw top.qcow2 out.raw"; do
    # shellcheck disable=SC2086
    run_df $op
    expect_eq "$op: exit code" "$DF_RC" 1 "$DF_ERR"
    expect_true "$op says: $phrase and names the image" \
        grep -qF "'top.qcow2': $phrase" "$DF_ERR"
done

finish
