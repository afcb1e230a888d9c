#!/usr/bin/env bash
# fuzz_replay.sh - hostile images through the whole engine, in the ordinary
# test suite: the fuzz target tests/fuzz/fuzz_image.c (open, info, block
# status, reads, check, check -r all, writes, check again), driven by
# fuzz_replay over
#   - small images that qemu-img and qemu-io make (tests/fuzz/make-seeds.sh),
#   - 40 seeded mutations of each: 8-byte table entries and header fields
#     set to values that point back into the file, past its end, or at
#     nothing, bytes flipped, the file cut short,
#   - the regression corpus tests/bad/*.qcow2.
# Every input must run to the end: no crash, no sanitizer report, no hang
# (each batch has a time limit).  What the engine answers is not judged
# here; bad_input.sh and engine_ops.sh judge the answers.
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"
need_qemu

REPLAY=${DF_FUZZ_REPLAY:-}
if [[ -z $REPLAY ]]; then
    REPLAY=$(dirname "$DISKFORGE")/../tests/fuzz_replay
fi
[[ -x $REPLAY ]] || fail "no fuzz_replay program (DF_FUZZ_REPLAY='$REPLAY')"

S="$T_TMP/seeds"
M="$T_TMP/mutants"
mkdir -p "$M"
"$T_SRC/tests/fuzz/make-seeds.sh" "$S"

"$PY" - "$S" "$M" <<'EOF'
import os, random, struct, sys
src, dst = sys.argv[1], sys.argv[2]
rnd = random.Random(20261127)
for name in sorted(os.listdir(src)):
    data = open(os.path.join(src, name), "rb").read()
    size = len(data)
    cs = 1 << struct.unpack(">I", data[20:24])[0]
    for k in range(40):
        m = bytearray(data)
        kind = k % 4
        for _ in range(1 + k % 3):
            # an 8-byte entry in the first clusters, where the header and
            # the tables are
            at = rnd.randrange(0, max(8, min(size, 16 * cs)) - 7) & ~7
            if kind == 0:    # points at another cluster of the file
                v = rnd.randrange(0, max(1, size // cs)) * cs
                v |= rnd.choice([0, 1 << 63, 1 << 62, 1 << 63 | 1])
            elif kind == 1:  # points past the end, or at nothing sensible
                v = rnd.choice([size + cs, size * 4, 1 << 40, (1 << 56) - cs,
                                rnd.getrandbits(64), cs // 2 | 1 << 63])
            elif kind == 2:  # a flipped bit
                v = struct.unpack(">Q", bytes(m[at:at + 8]))[0] ^ \
                    (1 << rnd.randrange(64))
            else:            # a random byte anywhere
                pos = rnd.randrange(size)
                m[pos] = rnd.randrange(256)
                continue
            m[at:at + 8] = struct.pack(">Q", v & (1 << 64) - 1)
        if k % 10 == 9:      # cut short
            m = m[:rnd.randrange(1, size)]
        with open(os.path.join(dst, "%s.%02d" % (name, k)), "wb") as f:
            f.write(m)
EOF

# replay PROGRAM BATCH FILES...: run PROGRAM on the files, BATCH at a time;
# each batch must exit 0 within the time limit with no sanitizer report.
replay() {
    local prog=$1 batch=$2 i rc part log="$T_TMP/replay.log"
    shift 2
    local files=("$@")
    for ((i = 0; i < ${#files[@]}; i += batch)); do
        part=("${files[@]:i:batch}")
        rc=0
        timeout -k 5 "${DF_TIMEOUT:-300}" "$prog" "${part[@]}" >"$log" 2>&1 || rc=$?
        T_CHECKS=$((T_CHECKS + 1))
        if ((rc != 0)) || grep -qE "Sanitizer|runtime error" "$log"; then
            bad "$(basename "$prog") exited $rc on files $i..$((i + ${#part[@]} - 1));" \
                "the last one started: $(grep -E '\(([0-9]+) bytes\)$' "$log" | tail -n 1)"
            tail -n 30 "$log" | sed "s/^/    | /" >&2
        fi
    done
    echo "$(basename "$prog"): ${#files[@]} inputs replayed"
}

set_case "fuzz_replay"
inputs=("$S"/*.qcow2 "$M"/*)
for f in "$T_SRC"/tests/bad/*.qcow2; do
    [[ -e $f ]] && inputs+=("$f")
done
replay "$REPLAY" 50 "${inputs[@]}"

# --- job files ---------------------------------------------------------------
# the job reader, validator, DAG and plan printers (tests/fuzz/fuzz_job.c)
# on the job files in jobs/ and 150 seeded mutations of each: lines
# dropped, repeated, swapped or re-indented, values replaced with YAML
# oddities (anchors, aliases, tags, flow collections, ${...}, huge or
# negative numbers), bytes inserted, files cut short; and a document of
# aliases of aliases (a billion laughs).
JREPLAY=${DF_FUZZ_JOB_REPLAY:-$(dirname "$REPLAY")/fuzz_job_replay}
[[ -x $JREPLAY ]] || fail "no fuzz_job_replay program ('$JREPLAY')"
J="$T_TMP/jobs"
mkdir -p "$J"
"$PY" - "$T_SRC/jobs" "$J" <<'EOF'
import os, random, sys
src, dst = sys.argv[1], sys.argv[2]
rnd = random.Random(1127)
odd = ["${", "${nope}", "${out}${out}", "-1", "1E", "99999999999999999999P",
       "0x10", "[", "{", "[a, b", "{a: 1}", "&a x", "*a", "!!binary AAAA",
       "!!int 3", "~", "null", "''", '"\\x00\\u0000"', "a" * 5000, ":",
       "- - -", "? x", "|", ">", "\t", "1.5G", "4611686018427387904",
       "../../../../etc/passwd", "/", "."]
seeds = {n: open(os.path.join(src, n)).read().split("\n")
         for n in sorted(os.listdir(src)) if n.endswith(".yaml")}
laughs = ["version: 1", "vars:", "  a: &a [x, x, x, x, x, x, x, x, x, x]"]
for i in range(1, 9):
    laughs.append("  b%d: &b%d [%s]" % (i, i, ", ".join(
        ["*a" if i == 1 else "*b%d" % (i - 1)] * 10)))
laughs += ["steps:", "  - id: s", "    op: info", "    image: *b8"]
seeds["laughs.yaml"] = laughs
# found by the fuzzer: a second 'partitions' key leaked the first list
seeds["dup-partitions.yaml"] = [
    "version: 1", "name: d", "steps:", "  - id: p", "    op: partition",
    "    image: d.raw", "    partitions:", "      - {name: a, type: esp, size: 1M}",
    "    partitions:", "      - {name: b, type: linux, size: rest}"]
for name, lines in seeds.items():
    with open(os.path.join(dst, name), "w") as f:
        f.write("\n".join(lines))
    for k in range(150):
        m = list(lines)
        for _ in range(1 + k % 3):
            if not m:
                break
            i = rnd.randrange(len(m))
            op = rnd.randrange(7)
            if op == 0:
                del m[i]
            elif op == 1:
                m.insert(i, m[i])
            elif op == 2:
                j = rnd.randrange(len(m))
                m[i], m[j] = m[j], m[i]
            elif op == 3:
                m[i] = " " * rnd.choice([0, 1, 2, 3, 4, 6, 8]) + m[i].lstrip()
            elif op == 4 and ":" in m[i]:
                m[i] = m[i].split(":", 1)[0] + ": " + rnd.choice(odd)
            elif op == 5:
                p = rnd.randrange(len(m[i]) + 1)
                m[i] = m[i][:p] + chr(rnd.randrange(1, 256)) + m[i][p:]
            else:
                m[i] = m[i].replace("id:", "needs: [%s]" % rnd.choice(
                    ["base", "a, a", "x", "self"]), 1)
        text = "\n".join(m)
        if k % 25 == 24:
            text = text[:rnd.randrange(len(text) + 1)]
        with open(os.path.join(dst, "%s.%03d" % (name, k)), "wb") as f:
            f.write(text.encode("utf-8", "surrogateescape"))
EOF
set_case "fuzz_job_replay"
replay "$JREPLAY" 200 "$J"/*

# check -r all on the corpus from the command line: it may fail, but it
# must end, and it must not make an image worse than it found it.
for f in "$T_SRC"/tests/bad/*.qcow2; do
    [[ -e $f ]] || continue
    set_case "check -r all $(basename "$f")"
    cp "$f" "$T_TMP/r.qcow2"
    run_df check -r all "$T_TMP/r.qcow2"
    T_CHECKS=$((T_CHECKS + 1))
    ((DF_RC <= 3)) || bad "diskforge check -r all exited $DF_RC"
done
# This image's L1 table lies past the end of the file; rebuilding its
# refcounts once put the new refcount table right on top of it.  Now the
# repair is refused and the header still points where it did.
set_case "check -r all, L1 table past the end of the file"
cp "$T_SRC/tests/bad/repair-over-l1-past-eof.qcow2" "$T_TMP/r.qcow2"
run_df check -r all "$T_TMP/r.qcow2"
expect_eq "exit code" "$DF_RC" 1
expect_eq "header" "$(head -c 104 "$T_TMP/r.qcow2" | sha256sum)" \
    "$(head -c 104 "$T_SRC/tests/bad/repair-over-l1-past-eof.qcow2" | sha256sum)"
finish
