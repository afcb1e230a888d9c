#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Make a sparse raw disk image with data at deterministic random places.

Two layouts:

  clusters (default)  --count whole clusters of --cluster bytes, chosen at
                      random among the file's clusters (the benchmark's
                      2 GiB / 25 % data file: --size 2G --count 8192).
  extents             --extents runs at any byte offset, 1..--max-len bytes
                      long (unaligned, may overlap and cross cluster and L2
                      boundaries); --zero-frac of them are explicit zero
                      bytes, which allocate blocks in the raw file but must
                      read (and convert) as zeros.
  fragmented          --extents runs as a file system or a tool leaves
                      them: each 512 B, 4 KiB, 64 KiB, 128 KiB or 300,000 B
                      long, half of them starting on a 4 KiB boundary and
                      half on a 512-byte boundary that is not one.

Positions come from random.Random(--seed), so the same arguments give the
same layout.  --data seeded also makes the bytes reproducible; urandom is
faster for big files and is what the benchmark uses; mixed is half seeded
random bytes, half text, so that it compresses to about one half.

Examples:
  gen-sparse-raw.py src.raw --size 2G --count 8192 --seed 42 --data urandom
  gen-sparse-raw.py t.raw --size 64M --layout extents --extents 300 \\
      --max-len 200000 --seed 7
  gen-sparse-raw.py frag.raw --size 2G --layout fragmented --extents 8000 \\
      --data urandom
"""
import argparse
import os
import random
import sys

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_arg(s):
    s = s.strip().upper()
    unit = s[-1] if s and s[-1] in UNITS else ""
    return int(s[: len(s) - len(unit)]) * UNITS[unit]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--size", type=size_arg, default=size_arg("2G"))
    ap.add_argument("--layout", choices=("clusters", "extents", "fragmented"), default="clusters")
    ap.add_argument("--cluster", type=size_arg, default=size_arg("64K"))
    ap.add_argument("--count", type=int, default=8192)
    ap.add_argument("--extents", type=int, default=200)
    ap.add_argument("--max-len", type=size_arg, default=size_arg("256K"))
    ap.add_argument("--zero-frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data", choices=("seeded", "urandom", "mixed"), default="seeded")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    data_rng = random.Random(a.seed ^ 0x5EED)

    text = b"".join(b"%08d the quick brown fox jumps over the lazy disk\n" % i
                    for i in range(4096))

    def payload(n):
        if a.data == "urandom":
            return os.urandom(n)
        if a.data == "mixed":
            out = bytearray()
            while len(out) < n:
                out += data_rng.randbytes(32768)
                start = data_rng.randrange(0, len(text) - 32768)
                out += text[start:start + 32768]
            return bytes(out[:n])
        return data_rng.randbytes(n)

    runs = []  # (offset, length, zero?)
    if a.layout == "clusters":
        n = a.size // a.cluster
        if a.count > n:
            sys.exit(f"--count {a.count} > {n} clusters in --size")
        for idx in sorted(rng.sample(range(n), a.count)):
            runs.append((idx * a.cluster, a.cluster, False))
    elif a.layout == "fragmented":
        sizes = (512, 4096, 65536, 131072, 300000)
        for i in range(a.extents):
            length = rng.choice(sizes)
            if i % 2:
                off = rng.randrange(0, (a.size - length) // 4096) * 4096
            else:
                off = rng.randrange(0, (a.size - length) // 4096) * 4096 + \
                    rng.randrange(1, 8) * 512
            runs.append((off, length, False))
    else:
        for _ in range(a.extents):
            length = rng.randint(1, a.max_len)
            off = rng.randrange(0, a.size - length + 1)
            runs.append((off, length, rng.random() < a.zero_frac))

    fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, a.size)
        data = 0
        for off, length, zero in runs:
            buf = bytes(length) if zero else payload(length)
            os.pwrite(fd, buf, off)
            data += length
    finally:
        os.close(fd)
    print(f"{a.out}: {a.size} bytes, {len(runs)} runs, {data} bytes written",
          file=sys.stderr)


if __name__ == "__main__":
    main()
