#!/usr/bin/env bash
# run_safety.sh - runs of one job do not hurt each other (SPEC section 8):
# a second `run` of a job file (also through a symlink: the real path
# counts) while the first runs exits 1 at once naming the first's PID, and
# a run after it works; runs killed with SIGKILL 0.05, 0.2 and 0.4 s into
# their conversions
# leave temporaries that the next run removes, saying how many bytes it
# freed (the figure, on stderr and in the report's stale_temporaries, is
# checked against what the files held, and written to the test output); a temporary that a live process holds (QEMU's lock
# bytes), or whose PID is alive, or that another job's live run is
# writing, is never removed.  Processes are tracked by PID.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP"


wait_temp() { # wait_temp GLOB: until a file matches (prints it)
    local f
    for _ in $(seq 1 400); do
        f=$(compgen -G "$1" | head -1 || true)
        [[ -n $f ]] && { echo "$f"; return 0; }
        sleep 0.025
    done
    return 1
}
alloc_sum() { # allocated bytes of the files given
    local t=0 f
    for f in "$@"; do
        t=$((t + $(stat -c %b "$f") * 512))
    done
    echo "$t"
}

cat > slow.yaml <<'YAML'
version: 1
steps:
  - {id: big, op: create, image: out/big.raw, format: raw, size: 8G, preallocation: full}
YAML

# ---- two runs of one job ----
set_case "two runs at once"
"$DISKFORGE" run slow.yaml > first.out 2>&1 &
first=$!
T_PIDS+=("$first")
if expect_true "the first run started" wait_temp 'out/.big.raw.df-*.tmp' >/dev/null; then
    t0=$(date +%s%N)
    run_df run slow.yaml
    ms=$((($(date +%s%N) - t0) / 1000000))
    expect_eq "second run: exit" "$DF_RC" 1
    expect_true "second run: names the first's PID $first" \
        grep -q "already being run by process $first" "$DF_ERR"
    expect_true "second run: refused at once (${ms} ms)" test "$ms" -lt 2000
    ln -s slow.yaml alias.yaml
    run_df run alias.yaml
    expect_eq "through a symlink: exit" "$DF_RC" 1
    expect_true "through a symlink: names the first's PID" \
        grep -q "already being run by process $first" "$DF_ERR"
    expect_true "the first run's temporary is still there" \
        compgen -G 'out/.big.raw.df-*.tmp'
fi
kill -INT "$first"
wait "$first" || true
T_PIDS=()
sed -i 's/size: 8G, preallocation: full/size: 1M/' slow.yaml
run_df run slow.yaml
expect_eq "a run after the first ended: exit" "$DF_RC" 0

# ---- SIGKILL, then a run to the end ----
set_case "SIGKILL and rerun"
q_ok qemu-img create -q -f raw src.raw 3G
# random data (slow to compress) in three places, holes between
for at in 0 1024 2048; do
    head -c 256M /dev/urandom |
        dd of=src.raw bs=1M seek="$at" conv=notrunc,sparse status=none
done
cat > conv.yaml <<'YAML'
version: 1
steps:
  - {id: plain, op: convert, from: src.raw, from_format: raw, to: out/out.qcow2, format: qcow2}
  - {id: packed, op: convert, from: src.raw, from_format: raw, to: out/outc.qcow2, format: qcow2, compress: zstd}
YAML
# (each run first removes what the previous one left; the time counts
# from when the run's own first temporary appears, so that a loaded
# machine, slow to start the run, still kills it mid-conversion)
for at in 0.05 0.2 0.4; do
    "$DISKFORGE" run conv.yaml -j 2 > killed.out 2>&1 &
    p=$!
    expect_true "run $p started converting" wait_temp "out/.out*.qcow2.df-$p-*.tmp" >/dev/null
    sleep "$at"
    kill -KILL "$p" 2>/dev/null || bad "the run killed $at s in had ended"
    wait "$p" || true
done
mapfile -t stale < <(compgen -G 'out/.out*.qcow2.df-*.tmp' || true)
expect_true "the killed runs left temporaries (${#stale[@]})" test "${#stale[@]}" -gt 0
# (written back first: delayed allocation moves st_blocks a little)
sync "${stale[@]}"
freed=$(alloc_sum "${stale[@]}")
run_df run conv.yaml -j 2
expect_eq "rerun: exit" "$DF_RC" 0
expect_eq "rerun: no temporary left" "$(find out -name '*.tmp' | wc -l)" 0
said=$(sed -n "s/.*removed ${#stale[@]} stale temporary files\? .*freeing \([0-9]*\) bytes.*/\1/p" "$DF_ERR")
expect_true "rerun: says it removed ${#stale[@]} files" test -n "$said"
expect_near "rerun: the bytes it says it freed" 1 65536 "${said:-0}" "$freed"
expect_eq "rerun: the report's stale_temporaries.files" \
    "$(rjson conv.report.json "r['stale_temporaries']['files']")" "${#stale[@]}"
expect_near "rerun: the report's stale_temporaries.bytes" 1 65536 \
    "$(rjson conv.report.json "r['stale_temporaries']['bytes']")" "$freed"
"$PY" -c 'import jsonschema' 2>/dev/null && report_ok conv.report.json
echo "stale temporaries: ${#stale[@]} removed, ${said:-?} bytes freed (the files held $freed)" |
    tee "$T_OUT/run_safety-freed.txt"
q_ok qemu-img compare src.raw out/out.qcow2
q_ok qemu-img compare src.raw out/outc.qcow2

# ---- temporaries in use are kept ----
set_case "temporaries in use"
true & dead=$!
wait "$dead"
sleep 120 & alive=$!
T_PIDS+=("$alive")
held=out/.out.qcow2.df-$dead-0.tmp
live=out/.out.qcow2.df-$alive-0.tmp
orphan=out/.outc.qcow2.df-$dead-7.tmp
for f in "$held" "$live" "$orphan"; do
    head -c 65536 /dev/urandom > "$f"
done
mkfifo qio.fifo
qemu-io -f raw "$held" < qio.fifo > qio.out 2>&1 &
T_PIDS+=($!)
exec 3> qio.fifo
expect_true "qemu-io holds the temporary" wait_lock "$held" 100
run_df run conv.yaml
expect_eq "run: exit" "$DF_RC" 0
expect_true "a temporary qemu-io holds is kept" test -e "$held"
expect_true "a temporary of a live PID is kept" test -e "$live"
expect_true "an orphan is removed" test ! -e "$orphan"
exec 3>&-
stop_tracked
run_df run conv.yaml
expect_true "once released, it is removed" test ! -e "$held"
expect_true "once its process is gone, it is removed" test ! -e "$live"

# ---- another job's live run writing the same output ----
set_case "another job's live run"
cat > other.yaml <<'YAML'
version: 1
steps:
  - {id: big, op: create, image: out/out.qcow2, format: raw, size: 8G, preallocation: full}
YAML
"$DISKFORGE" run other.yaml > other.out 2>&1 &
other=$!
T_PIDS+=("$other")
if tmpf=$(wait_temp 'out/.out.qcow2.df-*.tmp'); then
    run_df run conv.yaml
    expect_true "the other run's temporary is kept" test -e "$tmpf"
else
    bad "the other run did not start"
fi
kill -INT "$other"
wait "$other" || true
T_PIDS=()
expect_eq "no temporary left at the end" "$(find out -name '*.tmp' | wc -l)" 0

finish
