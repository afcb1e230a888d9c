#!/usr/bin/env bash
# image_locks.sh - diskforge's image locks against the real QEMU tools
# (SPEC section 8): with qemu-nbd --fork (read-write) holding a qcow2, a
# diskforge write step, create, convert and info fail naming the image and
# "in use", and the image is unchanged (qemu-img info fails there too;
# info -U reads it, as qemu-img info -U does); with qemu-io holding a raw
# image read-write, a fill step and digest fail the same way, while info
# works, as qemu-img info does (it takes no lock on raw images); with qemu-io holding a
# base read-only, diskforge still makes an overlay on it and reads it, but
# refuses to write it.  The other way round: while diskforge writes an
# image in place, or the temporary of a new one, qemu-io's write fails with
# QEMU's lock error and qemu-img info with its shared-lock error; while
# diskforge reads an image, qemu-img info (a reader) works and qemu-io's
# write fails; two diskforge readers of one base run at once.  Every
# process the test starts is tracked by its PID and stopped in the trap.
. "$(dirname "$0")/lib.sh"
need_qemu
command -v qemu-nbd >/dev/null || { echo "SKIP: $T_NAME: qemu-nbd missing"; exit 77; }
cd "$T_TMP"

# qemu-nbd --fork: its PID is in its pid file
trap 'rc=$?; exec 3>&- 2>/dev/null; for p in $(cat nbd*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done; (exit $rc); t_cleanup' EXIT

job_fill() { # job_fill IMAGE FORMAT > job.yaml
    cat <<YAML
version: 1
steps:
  - {id: fill, op: fill, image: "$1", format: $2, offset: 0, pattern: 85}
YAML
}

# ---- qemu-nbd --fork holds a qcow2 read-write ----
set_case "qemu-nbd holds the image"
q_ok qemu-img create -q -f qcow2 held.qcow2 64M
q_ok qemu-io -f qcow2 -c 'write -P 7 0 1M' held.qcow2
q_ok qemu-img create -q -f raw src.raw 1M
before=$(sha_of held.qcow2)
qemu-nbd --fork --pid-file="$T_TMP/nbd1.pid" -k "$T_TMP/nbd1.sock" \
    -f qcow2 "$T_TMP/held.qcow2"
nbd=$(cat nbd1.pid)
expect_true "qemu-nbd holds the write lock" wait_lock held.qcow2 101
job_fill held.qcow2 qcow2 > fill.yaml
run_df run fill.yaml
expect_eq "fill step: exit" "$DF_RC" 1
expect_true "fill step: names the image and 'in use'" \
    grep -q "held.qcow2' is in use" "$DF_ERR"
expect_eq "fill step: report error code" \
    "$("$PY" -c 'import json; print(json.load(open("fill.report.json"))["steps"][0]["error"]["code"])')" EBUSY
run_df create -f qcow2 held.qcow2 1G
expect_eq "create over it: exit" "$DF_RC" 1
expect_true "create over it: 'in use'" grep -q "held.qcow2' is in use" "$DF_ERR"
run_df convert -O qcow2 src.raw held.qcow2
expect_eq "convert onto it: exit" "$DF_RC" 1
expect_true "convert onto it: 'in use'" grep -q "held.qcow2' is in use" "$DF_ERR"
expect_eq "image unchanged" "$(sha_of held.qcow2)" "$before"
expect_eq "no temporary left" "$(find . -name '*.tmp' | wc -l)" 0
# qemu-img info fails here; so does diskforge info, and -U reads it
expect_true "qemu-img info fails (oracle)" \
    bash -c '! qemu-img info held.qcow2 >/dev/null 2>&1'
run_df info held.qcow2
expect_eq "info: exit" "$DF_RC" 1
expect_true "info: 'in use'" grep -q "held.qcow2' is in use" "$DF_ERR"
run_df info -U --output json held.qcow2
expect_eq "info -U: exit" "$DF_RC" 0
expect_eq "info -U: virtual size" "$(json_get "$DF_OUT" virtual-size)" 67108864
run_df digest -U held.qcow2
expect_eq "digest -U: exit" "$DF_RC" 0
kill "$nbd"
for _ in $(seq 1 200); do kill -0 "$nbd" 2>/dev/null || break; sleep 0.025; done
rm -f nbd1.pid
run_df info held.qcow2
expect_eq "info after qemu-nbd is gone: exit" "$DF_RC" 0

# ---- qemu-io holds a raw image read-write ----
set_case "qemu-io holds a raw image"
q_ok qemu-img create -q -f raw held.raw 16M
before=$(sha_of held.raw)
mkfifo qio.fifo
qemu-io -f raw held.raw < qio.fifo > qio.out 2>&1 &
T_PIDS+=($!)
exec 3> qio.fifo
expect_true "qemu-io holds the write lock" wait_lock held.raw 101
job_fill held.raw raw > fill.yaml
run_df run fill.yaml
expect_eq "fill step: exit" "$DF_RC" 1
expect_true "fill step: names the image and 'in use'" \
    grep -q "held.raw' is in use" "$DF_ERR"
expect_eq "image unchanged" "$(sha_of held.raw)" "$before"
# qemu-img info reads a raw image's size only, with no lock: so does
# diskforge info (a qcow2's metadata is another matter: see above)
expect_true "qemu-img info works (oracle)" qemu-img info held.raw
run_df info held.raw
expect_eq "info of the raw image: exit" "$DF_RC" 0
run_df digest held.raw
expect_eq "digest (reads the data): exit" "$DF_RC" 1
expect_true "digest: 'in use'" grep -q "held.raw' is in use" "$DF_ERR"
exec 3>&-
stop_tracked
rm -f qio.fifo

# ---- qemu-io reads a base: readers share, writers are refused ----
set_case "qemu-io reads the base"
q_ok qemu-img create -q -f qcow2 base.qcow2 16M
q_ok qemu-io -f qcow2 -c 'write -P 9 0 64k' base.qcow2
mkfifo qio.fifo
qemu-io -r -f qcow2 base.qcow2 < qio.fifo > qio.out 2>&1 &
T_PIDS+=($!)
exec 3> qio.fifo
expect_true "qemu-io holds the read lock" wait_lock base.qcow2 100
cat > overlay.yaml <<'YAML'
version: 1
steps:
  - {id: ov, op: overlay, image: ov.qcow2, backing: base.qcow2, backing_format: qcow2}
  - {id: d, op: digest, image: ov.qcow2, format: qcow2}
YAML
run_df run overlay.yaml
expect_eq "overlay and digest on a base qemu-io reads: exit" "$DF_RC" 0
run_df digest base.qcow2
expect_eq "digest of the base: exit" "$DF_RC" 0
job_fill base.qcow2 qcow2 > fill.yaml
run_df run fill.yaml
expect_eq "writing the base qemu-io reads: exit" "$DF_RC" 1
expect_true "writing the base: 'in use'" grep -q "base.qcow2' is in use" "$DF_ERR"
exec 3>&-
stop_tracked
rm -f qio.fifo

# ---- diskforge writes an image in place: QEMU refuses it ----
set_case "diskforge writes in place"
q_ok qemu-img create -q -f qcow2 big.qcow2 8G
job_fill big.qcow2 qcow2 > bigfill.yaml
"$DISKFORGE" run bigfill.yaml > bigfill.out 2>&1 &
dfpid=$!
T_PIDS+=("$dfpid")
if expect_true "diskforge holds the write lock" wait_lock big.qcow2 101; then
    T_CHECKS=$((T_CHECKS + 1))
    if qemu-io -f qcow2 -c 'write 0 4k' big.qcow2 > qio.out 2>&1; then
        bad "qemu-io wrote an image diskforge is writing"
    fi
    expect_true "qemu-io: QEMU's lock error" \
        grep -q 'Failed to get "write" lock' qio.out
    qemu-img info big.qcow2 > qinfo.out 2>&1 || true
    expect_true "qemu-img info: QEMU's shared lock error" \
        grep -q 'Failed to get shared "write" lock' qinfo.out
    expect_true "qemu-img info -U reads it" qemu-img info -U big.qcow2
fi
kill -INT "$dfpid"
wait "$dfpid" || true
stop_tracked

# ---- diskforge writes a new image's temporary: locked too ----
set_case "diskforge writes a temporary"
cat > bigcreate.yaml <<'YAML'
version: 1
steps:
  - {id: c, op: create, image: new.raw, format: raw, size: 8G, preallocation: full}
YAML
"$DISKFORGE" run bigcreate.yaml > bigcreate.out 2>&1 &
dfpid=$!
T_PIDS+=("$dfpid")
tmpf=""
for _ in $(seq 1 400); do
    tmpf=$(compgen -G '.new.raw.df-*.tmp' || true)
    [[ -n $tmpf ]] && break
    sleep 0.025
done
if expect_true "the temporary appeared" test -n "$tmpf" &&
   expect_true "diskforge holds the temporary's write lock" wait_lock "$tmpf" 101; then
    T_CHECKS=$((T_CHECKS + 1))
    if qemu-io -f raw -c 'write 0 4k' "$tmpf" > qio.out 2>&1; then
        bad "qemu-io wrote the temporary diskforge is writing"
    fi
    expect_true "qemu-io: QEMU's lock error" \
        grep -q 'Failed to get "write" lock' qio.out
fi
kill -INT "$dfpid"
wait "$dfpid" || true
stop_tracked
expect_eq "no temporary left after the interrupt" \
    "$(find . -name '.new.raw.df-*' | wc -l)" 0

# ---- diskforge reads: other readers go on, writers are refused ----
set_case "diskforge reads"
q_ok qemu-img create -q -f raw shared.raw 64G
"$DISKFORGE" digest -f raw shared.raw > d1.out 2>&1 &
T_PIDS+=($!)
"$DISKFORGE" digest -f raw shared.raw > d2.out 2>&1 &
T_PIDS+=($!)
if expect_true "diskforge holds the read lock" wait_lock shared.raw 100; then
    for _ in $(seq 1 200); do
        (($(lock_count shared.raw 100) >= 2)) && break
        sleep 0.025
    done
    expect_eq "two diskforge readers at once" "$(lock_count shared.raw 100)" 2
    expect_true "qemu-img info reads it meanwhile" qemu-img info shared.raw
    T_CHECKS=$((T_CHECKS + 1))
    if qemu-io -f raw -c 'write 0 4k' shared.raw > qio.out 2>&1; then
        bad "qemu-io wrote an image diskforge is reading"
    fi
    expect_true "qemu-io: QEMU's lock error" \
        grep -q 'Failed to get "write" lock' qio.out
fi
stop_tracked

finish
