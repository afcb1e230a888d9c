#!/usr/bin/env bash
# compress.sh - compressed clusters both ways: diskforge reads what
# qemu-img compresses (zlib and zstd), and what diskforge compresses is
# clean and identical for qemu-img, and the same bytes whatever the number
# of threads.
. "$(dirname "$0")/lib.sh"
need_qemu
cd "$T_TMP" || exit 1

# 24 MiB: text-like runs, zero runs and random runs
"$PY" - <<'PY'
import random
random.seed(11)
words = [bytes(random.choice(b"abcdefghij ") for _ in range(random.randrange(3, 9)))
         for _ in range(400)]
out = bytearray()
while len(out) < 24 << 20:
    out += b" ".join(random.choice(words) for _ in range(1500)) + b"\n"
    if random.random() < 0.3:
        out += bytes(65536 + random.randrange(4096))
    if random.random() < 0.2:
        out += random.randbytes(20000)
open("src.raw", "wb").write(out[:24 << 20])
PY
src_sum=$(sha_of src.raw)

for type in zlib zstd; do
    for cs in 512 4k 64k 2M; do
        set_case "$type cluster $cs"
        # diskforge writes, qemu-img reads
        df_ok convert -c -O qcow2 -o compression_type=$type,cluster_size=$cs \
            src.raw d.qcow2 || continue
        qcheck d.qcow2
        expect_true "qemu-img compare finds it identical" \
            qemu-img compare -q -f raw -F qcow2 src.raw d.qcow2
        expect_true "qemu-img counts compressed clusters" \
            grep -q '"compressed-clusters"' <(qemu-img check --output=json d.qcow2)
        expect_eq "compression type recorded" \
            "$(qemu-img info --output=json d.qcow2 | "$PY" -c \
               'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["compression-type"])')" \
            "$type"
        # qemu-img writes, diskforge reads
        q_ok qemu-img convert -c -O qcow2 -o compression_type=$type,cluster_size=$cs \
            src.raw q.qcow2 || continue
        expect_eq "digest of qemu's compressed image" "$(df_sha q.qcow2 qcow2)" "$src_sum"
        df_ok convert -O raw q.qcow2 back.raw
        expect_true "converted back to the same bytes" cmp -s back.raw src.raw
        run_df check q.qcow2
        expect_eq "diskforge check of qemu's compressed image" "$DF_RC" 0 "$DF_OUT"
        rm -f d.qcow2 q.qcow2 back.raw
    done
done

set_case "zlib 64k like qemu-img"
df_ok convert -c -O qcow2 src.raw d.qcow2
q_ok qemu-img convert -c -O qcow2 src.raw q.qcow2
expect_true "byte-identical to qemu-img convert -c" cmp -s d.qcow2 q.qcow2

set_case "determinism"
if command -v taskset >/dev/null && [[ $(nproc) -gt 1 ]]; then
    for type in zlib zstd; do
        df_ok convert -c -O qcow2 -o compression_type=$type src.raw many.qcow2
        # one usable CPU: one compressing thread
        run_df_one=0
        taskset -c 0 "$DISKFORGE" convert -c -O qcow2 \
            -o compression_type=$type src.raw one.qcow2 || run_df_one=$?
        expect_eq "$type: convert on one CPU" "$run_df_one" 0
        expect_true "$type: 1 thread and $(nproc) threads write the same bytes" \
            cmp -s many.qcow2 one.qcow2
        rm -f many.qcow2 one.qcow2
    done
fi

set_case "bad combinations"
run_df convert -c -O raw src.raw x.raw
expect_eq "-c with raw output is refused" "$DF_RC" 1
expect_true "no output left" test ! -e x.raw
run_df convert -c -O qcow2 -o preallocation=metadata src.raw x.qcow2
expect_true "-c with preallocation is refused" test "$DF_RC" -ne 0
expect_true "no output left" test ! -e x.qcow2

finish
