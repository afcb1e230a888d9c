#!/usr/bin/env bash
# copy_cp: `diskforge copy --sparse=MODE` against `cp --sparse=MODE`
# (GNU coreutils), on dense and sparse sources.
#
# For every source and mode (and no --sparse, which is auto):
#   - the copy has the same length and bytes as the source (cmp);
#   - it allocates no more blocks (stat %b) than cp's copy; the figures go
#     to $DF_TEST_OUT/copy_cp.md;
#   - no temporary file is left beside it.
# Sources: random data with aligned and unaligned zero runs and a partial
# zero block at the end; a sparse file with holes, data ending mid-block,
# allocated zeros and a trailing hole; a file that is all hole; an empty
# file; a short file of zeros; a file with fallocated (unwritten) ranges.
# Then: replacing an existing file (its permissions kept), a directory as
# destination, -p, and bad input: a missing source, a directory source,
# a FIFO source (refused, not waited on), a missing or non-directory
# destination directory, a bad --sparse value, a file copied onto itself,
# and a write that fails half way (file size limit): each fails with a
# message naming the file, exit 1 (2 for usage), leaves no temporary file
# and leaves an existing destination as it was.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu
command -v cp >/dev/null || { echo "SKIP: cp not found"; exit 77; }

W="$T_TMP/w"
mkdir -p "$W/src" "$W/out"
cd "$W"

blocks_of() { stat -c %b "$1"; }

# no_temp DIR: no diskforge temporary file in DIR.
no_temp() {
    local left
    left=$(find "$1" -maxdepth 1 -name '.*.df-*.tmp' | head -n 3)
    T_CHECKS=$((T_CHECKS + 1))
    [[ -z $left ]] || bad "temporary files left: $left"
}

"$PY" - <<'EOF'
import os
def sparse(name, size, writes):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, size)
    for off, data in writes:
        os.pwrite(fd, data, off)
    os.close(fd)
M = 1 << 20
with open("src/dense.bin", "wb") as f:
    for i in range(24):
        if i % 3 == 2:
            f.write(bytes(M))                  # allocated zeros
        else:
            b = bytearray(os.urandom(M))
            b[4096:12288] = bytes(8192)        # aligned zero blocks
            b[20000:30000] = bytes(10000)      # unaligned zero run
            f.write(b)
    f.write(os.urandom(1000) + bytes(2000))    # partial block, zero end
sparse("src/sparse.bin", 64 * M + 123, [
    (3 * M, os.urandom(200000)),               # data ending mid-block
    (10 * M, bytes(M)),                        # allocated zeros
    (10 * M + 8192, os.urandom(4096)),
    (20 * M, os.urandom(M)),
    (40 * M - 1, b"x"),
])
sparse("src/hole.bin", 16 * M, [])
sparse("src/empty.bin", 0, [])
with open("src/zeros.bin", "wb") as f:
    f.write(bytes(1000))
fd = os.open("src/falloc.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.posix_fallocate(fd, 0, 8 * M)
os.pwrite(fd, os.urandom(M), 2 * M)
os.close(fd)
EOF

table_start copy_cp.md source mode "cp blocks" "diskforge blocks" result
for src in dense sparse hole empty zeros falloc; do
    for mode in auto always never default; do
        set_case "$src --sparse=$mode"
        flag=(--sparse="$mode")
        [[ $mode == default ]] && flag=()
        rm -f out/cp.bin out/df.bin
        cp "${flag[@]}" "src/$src.bin" out/cp.bin
        df_ok copy "${flag[@]}" "src/$src.bin" out/df.bin || continue
        T_CHECKS=$((T_CHECKS + 1))
        cmp -s "src/$src.bin" out/df.bin || bad "content differs from the source"
        expect_eq "length" "$(len_of out/df.bin)" "$(len_of "src/$src.bin")"
        # st_blocks counts delayed-allocation reservations until writeback
        sync out/cp.bin out/df.bin
        cpb=$(blocks_of out/cp.bin)
        dfb=$(blocks_of out/df.bin)
        T_CHECKS=$((T_CHECKS + 1))
        verdict=same
        ((dfb < cpb)) && verdict=fewer
        if ((dfb > cpb)); then
            bad "allocates $dfb blocks, cp $cpb"
            verdict=MORE
        fi
        table_row "$src" "$mode" "$cpb" "$dfb" "$verdict"
        no_temp out
    done
done

# --- replacing, directories, progress -----------------------------------------------

set_case "replace"
printf 'old' >out/keep.bin
chmod 600 out/keep.bin
df_ok copy --sparse=always src/sparse.bin out/keep.bin &&
    expect_eq "permissions kept" "$(stat -c %a out/keep.bin)" 600
expect_eq "replaced" "$(cmp -s src/sparse.bin out/keep.bin && echo same)" same

set_case "directory destination"
df_ok copy src/dense.bin out/ &&
    expect_eq "copied into" "$(cmp -s src/dense.bin out/dense.bin && echo same)" same

set_case "-p"
if df_ok copy -p src/dense.bin out/p.bin; then
    T_CHECKS=$((T_CHECKS + 1))
    grep -q '(100.00/100%)' "$DF_OUT" || bad "no 100% progress line"
fi
no_temp out

# --- bad input ----------------------------------------------------------------------

# refused RC NEEDLE ARGS...: exit RC, stderr names NEEDLE.
refused() {
    local want=$1 needle=$2
    shift 2
    run_df copy "$@"
    expect_eq "exit code" "$DF_RC" "$want" "$DF_ERR"
    T_CHECKS=$((T_CHECKS + 1))
    grep -qF -- "$needle" "$DF_ERR" || { bad "the message does not name '$needle'"; show "$DF_ERR"; }
}

printf 'precious' >out/victim.bin
set_case "missing source"
refused 1 src/nosuch.bin src/nosuch.bin out/victim.bin
set_case "source is a directory"
refused 1 "'src'" src out/victim.bin
set_case "FIFO source"
mkfifo src/fifo
DF_TIMEOUT=20 refused 1 src/fifo src/fifo out/victim.bin
set_case "missing destination directory"
refused 1 out/nodir/x.bin src/dense.bin out/nodir/x.bin
set_case "destination under a file"
refused 1 out/victim.bin/x.bin src/dense.bin out/victim.bin/x.bin
set_case "bad --sparse"
refused 2 sometimes --sparse=sometimes src/dense.bin out/victim.bin
set_case "missing operand"
refused 2 "copy" src/dense.bin
set_case "onto itself"
refused 1 "same file" out/victim.bin out/victim.bin
if ((EUID != 0)); then
    set_case "unwritable destination directory"
    mkdir -p out/ro
    chmod 555 out/ro
    refused 1 out/ro/x.bin src/dense.bin out/ro/x.bin
    chmod 755 out/ro
fi
set_case "write fails half way"
# a file size limit of 4 MiB: the write past it fails with EFBIG
# (SIGXFSZ ignored), after the temporary file was created
(
    trap '' XFSZ
    ulimit -f 4096
    refused 1 out/victim.bin --sparse=never src/sparse.bin out/victim.bin
    ((T_FAILS == 0))
) || bad "a failing write was not reported as expected"
set_case "after the failures"
expect_eq "destination untouched" "$(cat out/victim.bin)" precious
no_temp out
no_temp .

finish
