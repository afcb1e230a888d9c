#!/usr/bin/env bash
# disk_layout.sh - the partition and filesystem ops (SPEC §9) against the
# real tools: sgdisk -v and sfdisk --json read the GPT that `partition`
# writes (raw, and qcow2 converted to raw by qemu-img); e2fsck -fn and
# fsck.vfat -n pass on the partitions cut out with dd / qemu-img dd;
# debugfs and mtype read the files back; the same job gives the same bytes
# in another directory with other file times; a partition of 2 GiB with a
# few files costs a few MiB; a filesystem step on an overlay leaves the
# base alone; `diskforge info` shows a table that sgdisk wrote, and says
# when one is damaged; job-file errors exit 2 with file:line:column, and a
# step that fails on an existing image leaves it as it was.
. "$(dirname "$0")/lib.sh"
need_qemu
need_tools sgdisk sfdisk mke2fs debugfs e2fsck mkfs.vfat fsck.vfat mcopy mtype
rjson() { "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }
cd "$T_TMP"

# --- source trees -------------------------------------------------------------
mk_trees() { # mk_trees DIR: an ESP tree and a root tree
    mkdir -p "$1/esp/EFI/BOOT" "$1/esp/loader/entries" "$1/root"
    echo "not really a boot loader" >"$1/esp/EFI/BOOT/BOOTX64.EFI"
    printf 'title golden\nlinux /vmlinuz\n' >"$1/esp/loader/entries/golden.conf"
    echo "timeout 3" >"$1/esp/loader/loader.conf"
    cp -r "$T_SRC/examples/golden-rootfs/." "$1/root/"
    mkdir -p "$1/root/var/lib/empty" "$1/root/opt/app"
    head -c 300000 /dev/urandom >"$1/root/opt/app/blob.bin"
    ln -s ../etc/hostname "$1/root/opt/hostname-link"
    printf 'x%.0s' {1..5000} >"$1/root/opt/app/five-thousand-x"
}
mk_trees A

job() { # job FILE IMAGE FORMAT: the layout job
    cat >"$1" <<YAML
version: 1
name: layout-test
steps:
  - id: disk
    op: create
    image: $2
    format: $3
    size: 320M
  - id: gpt
    op: partition
    image: $2
    partitions:
      - name: esp
        type: esp
        size: 64M
      - name: swap
        type: swap
        size: 32M
        attributes: [no_automount, 50]
      - name: root
        type: linux-root-x86-64
        size: rest
        guid: 01234567-89AB-CDEF-0123-456789ABCDEF
  - id: esp-fs
    op: filesystem
    image: $2
    partition: esp
    type: vfat
    label: ESP
    from: esp
  - id: root-fs
    op: filesystem
    image: $2
    partition: 3
    type: ext4
    label: root
    uuid: 6f1b7a52-3b1e-4c2a-9d3e-0000000000aa
    from: root
YAML
}

# to_raw IMG FMT OUT: the guest bytes as a raw file
to_raw() {
    if [[ $2 == raw ]]; then cp --sparse=always "$1" "$3"; else qemu-img convert -f "$2" -O raw "$1" "$3"; fi
}

# part_out IMG FMT START SIZE OUT: one partition cut out (dd, qemu-img dd)
part_out() {
    if [[ $2 == raw ]]; then
        dd if="$1" of="$5" bs=512 skip=$(($3 / 512)) count=$(($4 / 512)) status=none
    else
        # qemu-img 7.2's dd counts the skipped blocks in count=
        qemu-img dd -f qcow2 -O raw bs=512 skip=$(($3 / 512)) count=$((($3 + $4) / 512)) if="$1" of="$5"
        [[ $(len_of "$5") == "$4" ]] || bad "qemu-img dd cut $(len_of "$5") bytes, not $4"
    fi
}

for fmt in raw qcow2; do
    set_case "$fmt: run"
    img=disk.$fmt
    job "A/job.yaml" "$img" "$fmt"
    df_ok run A/job.yaml --report A/report.json || continue
    expect_eq "status" "$(rjson A/report.json "r['status']")" succeeded
    [[ $fmt == qcow2 ]] && qcheck "A/$img"
    expect_eq "no temporary left" "$(find A -name '*.tmp*' | wc -l)" 0
    # the last step's digest, taken while it wrote the partition, is the
    # SHA-256 of the image file as the run left it
    expect_eq "root-fs sha256 = the file's" \
        "$(rjson A/report.json "next(s['outputs'][0]['sha256'] for s in r['steps'] if s['id']=='root-fs')")" \
        "$(sha256sum "A/$img" | cut -d' ' -f1)"
    to_raw "A/$img" "$fmt" "$fmt.raw"

    set_case "$fmt: sgdisk and sfdisk"
    q_ok sgdisk -v "$fmt.raw" &&
        expect_true "sgdisk -v finds no problems" grep -q "^No problems found" "$Q_OUT"
    q_ok sfdisk --json "$fmt.raw" && cp "$Q_OUT" "$fmt.sfdisk.json"
    mism=$("$PY" - "$fmt.sfdisk.json" A/report.json <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["partitiontable"]
rep = json.load(open(sys.argv[2]))
res = next(s["result"] for s in rep["steps"] if s["id"] == "gpt")
bad = []
def want(what, got, exp):
    if got != exp:
        bad.append(f"{what}: sfdisk {got!r}, want {exp!r}")
want("label", t["label"], "gpt")
want("disk id", t["id"], res["disk_guid"])
want("first lba", t["firstlba"], 34)
want("last lba", t["lastlba"], 320 * 2048 - 34)
exp = [("esp", 2048, 131072, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
       ("swap", 133120, 65536, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
       ("root", 198656, 320 * 2048 - 34 - 198656 + 1, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")]
ps = t["partitions"]
want("count", len(ps), 3)
for p, (name, start, size, typ), r in zip(ps, exp, res["partitions"]):
    want(name + " name", p.get("name"), name)
    want(name + " start", p["start"], start)
    want(name + " size", p["size"], size)
    want(name + " type", p["type"], typ)
    want(name + " uuid = report", p["uuid"], r["guid"])
    want(name + " report start", r["start"], start * 512)
    want(name + " report size", r["size"], size * 512)
want("root guid as given", ps[2]["uuid"], "01234567-89AB-CDEF-0123-456789ABCDEF")
want("swap attributes", ps[1].get("attrs"), "GUID:50,63")
want("esp attributes", ps[0].get("attrs"), None)
print("; ".join(bad))
EOF
)
    expect_eq "sfdisk --json agrees with the job and the report" "$mism" ""

    set_case "$fmt: diskforge info"
    df_ok info --output json "A/$img" &&
        expect_eq "info partitions = sfdisk's" "$("$PY" - "$DF_OUT" "$fmt.sfdisk.json" <<'EOF'
import json, sys
i = json.load(open(sys.argv[1]))
t = json.load(open(sys.argv[2]))["partitiontable"]
mine = [(p["number"], p["name"], p["type"], p["guid"], p["start"], p["size"]) for p in i["partitions"]]
theirs = [(n + 1, p["name"], p["type"], p["uuid"], p["start"] * 512, p["size"] * 512)
          for n, p in enumerate(t["partitions"])]
ok = mine == theirs and i["partition-table"]["valid"] is True and \
     i["partition-table"]["disk-guid"] == t["id"] and i["partition-table"]["problems"] == []
print("same" if ok else f"{mine} vs {theirs} / {i.get('partition-table')}")
EOF
)" same
    df_ok info "A/$img" &&
        expect_true "human info shows the table" grep -q "^    3: name 'root', start 101711872" "$DF_OUT"

    set_case "$fmt: file systems"
    part_out "A/$img" "$fmt" 1048576 67108864 esp.img
    part_out "A/$img" "$fmt" 101711872 $(((320 * 2048 - 34 - 198656 + 1) * 512)) root.img
    q_ok fsck.vfat -n esp.img
    q_ok e2fsck -fn root.img
    expect_eq "mtype reads a file back" "$(mtype -i esp.img ::/loader/entries/golden.conf)" \
        "$(cat A/esp/loader/entries/golden.conf)"
    expect_eq "vfat label and volume id" \
        "$(rjson A/report.json "next(s['result']['uuid'] for s in r['steps'] if s['id']=='esp-fs')" | tr a-f A-F)" \
        "$(MTOOLS_SKIP_CHECK=1 minfo -i esp.img 2>/dev/null | sed -n 's/^ *serial number: *//p' | head -1)"
    expect_eq "debugfs reads a file back" "$(debugfs -R 'cat /etc/hostname' root.img 2>/dev/null)" golden
    debugfs -R 'dump /opt/app/blob.bin blob.out' root.img >/dev/null 2>&1
    expect_true "a 300 kB file comes back whole" cmp -s blob.out A/root/opt/app/blob.bin
    expect_eq "the symbolic link" "$(debugfs -R 'stat /opt/hostname-link' root.img 2>/dev/null | sed -n 's/^Fast link dest: "\(.*\)"/\1/p')" ../etc/hostname
    expect_eq "ext4 uuid and label" "$(dumpe2fs -h root.img 2>/dev/null | sed -n 's/^Filesystem UUID: *//p;s/^Filesystem volume name: *//p' | tr '\n' ' ')" \
        "root 6f1b7a52-3b1e-4c2a-9d3e-0000000000aa "
    expect_eq "every inode time is the fixed time" \
        "$(debugfs -R 'stat /opt/app/blob.bin' root.img 2>/dev/null | grep -cE '^ *(a|c|m|cr)time: 0x12cea600:')" 4
    expect_eq "directories too" \
        "$(debugfs -R 'stat /var/lib' root.img 2>/dev/null | grep -cE '^ *(a|c|m|cr)time: 0x12cea600:')" 4
    expect_eq "vfat entries have the fixed date" "$(mdir -i esp.img ::/loader | grep -c '1980-01-01')" 4
    rm -f esp.img root.img blob.out "$fmt.raw"
done

# --- the same bytes from another checkout ---------------------------------------
set_case "reproducible"
mk_trees B
cp A/root/opt/app/blob.bin B/root/opt/app/blob.bin  # the one random file
touch -d '2001-02-03 04:05:06' B/root/etc/hostname B/esp/loader B/root/opt
for fmt in raw qcow2; do
    job "B/job.yaml" "disk.$fmt" "$fmt"
    df_ok run B/job.yaml --report B/report.json &&
        expect_eq "$fmt image bytes equal across directories and file times" \
            "$(sha_of "B/disk.$fmt")" "$(sha_of "A/disk.$fmt")"
done
df_ok digest -f qcow2 A/disk.qcow2 && qd=$(grep -oE '[0-9a-f]{64}' "$DF_OUT" | head -1)
df_ok digest -f raw A/disk.raw &&
    expect_eq "raw and qcow2 hold the same guest bytes" "$(grep -oE '[0-9a-f]{64}' "$DF_OUT" | head -1)" "${qd:-}"

one_fs_job() { # one_fs_job NAME IMAGE SIZE DIR: NAME.yaml, one ext4 partition of DIR
    cat >"$1.yaml" <<YAML
version: 1
name: $1
steps:
  - {id: disk, op: create, image: $2, size: $3}
  - {id: gpt, op: partition, image: $2, partitions: [{name: root, type: linux, size: rest}]}
  - {id: fs, op: filesystem, image: $2, partition: root, type: ext4, from: $4}
YAML
}

# --- cost: zero blocks are not written ---------------------------------------
set_case "a big partition with a few files is cheap"
one_fs_job big big.qcow2 2G A/root
df_ok run big.yaml --report big.json &&
    expect_true "2 GiB ext4 with 350 kB of files: qcow2 under 48 MiB (is $(len_of big.qcow2))" \
        test "$(len_of big.qcow2)" -lt $((48 << 20))
qcheck big.qcow2

set_case "SOURCE_DATE_EPOCH is the time the file systems record"
cat >sde.yaml <<'YAML'
version: 1
name: sde
steps:
  - {id: disk, op: create, image: sde.raw, size: 100M}
  - {id: gpt, op: partition, image: sde.raw, partitions: [{name: e, type: esp, size: 40M}, {name: r, type: linux, size: rest}]}
  - {id: e, op: filesystem, image: sde.raw, partition: e, type: vfat, label: EFI, from: A/esp}
  - {id: r, op: filesystem, image: sde.raw, partition: r, type: ext4, from: A/root}
YAML
SOURCE_DATE_EPOCH=1700000000 run_df run sde.yaml --report sde.json
expect_eq "exit" "$DF_RC" 0 "$DF_ERR"
dd if=sde.raw of=sde-e.img bs=1M skip=1 count=40 status=none
dd if=sde.raw of=sde-r.img bs=1M skip=41 count=58 status=none
q_ok e2fsck -fn sde-r.img
q_ok fsck.vfat -n sde-e.img
expect_eq "ext4 inodes at 2023-11-14T22:13:20Z" \
    "$(debugfs -R 'stat /etc/motd' sde-r.img 2>/dev/null | grep -cE '^ *(a|c|m|cr)time: 0x6553f100:')" 4
expect_eq "vfat entries and label at 2023-11-14 22:13" \
    "$(mdir -i sde-e.img ::/ | grep -c '2023-11-14  22:13')" 2
expect_true "the vfat label's entry too" grep -q "Volume in drive : is EFI" <(mdir -i sde-e.img ::/)
rm -f sde.raw sde-e.img sde-r.img

set_case "a filesystem step's sha256 is its image file's"
# vfat written into a new disk (hashed while written), then ext4 made twice
# in one partition: the second time the partition holds the first file
# system, so the step compares with it and the file is hashed after
mkdir -p D/root/etc && echo second >D/root/etc/hostname
for fmt in qcow2 raw; do
    cat >dg.yaml <<YAML
version: 1
name: dg
steps:
  - {id: disk, op: create, image: dg.$fmt, size: 100M}
  - {id: gpt, op: partition, image: dg.$fmt, partitions: [{name: e, type: esp, size: 40M}, {name: r, type: linux, size: rest}]}
  - {id: e, op: filesystem, image: dg.$fmt, partition: e, type: vfat, from: A/esp}
YAML
    df_ok run dg.yaml --report dg.json &&
        expect_eq "$fmt: vfat step's sha256 = the file's" \
            "$(rjson dg.json "r['steps'][2]['outputs'][0]['sha256']")" "$(sha_of "dg.$fmt")"
    [[ $fmt == qcow2 ]] && qcheck dg.qcow2
    cat >>dg.yaml <<YAML
  - {id: r1, op: filesystem, image: dg.$fmt, partition: r, type: ext4, from: A/root}
  - {id: r2, op: filesystem, image: dg.$fmt, partition: r, type: ext4, label: again, from: D/root}
YAML
    df_ok run dg.yaml --report dg.json &&
        expect_eq "$fmt: the second ext4 step's sha256 = the file's" \
            "$(rjson dg.json "r['steps'][4]['outputs'][0]['sha256']")" "$(sha_of "dg.$fmt")"
    [[ $fmt == qcow2 ]] && qcheck dg.qcow2
    to_raw "dg.$fmt" "$fmt" dg-all.raw
    dd if=dg-all.raw of=dg-r.img bs=1M skip=41 count=58 status=none
    q_ok e2fsck -fn dg-r.img
    expect_eq "$fmt: the second file system is the one read" \
        "$(debugfs -R 'cat /etc/hostname' dg-r.img 2>/dev/null)" second
    expect_eq "$fmt: none of the first one's files is left" \
        "$(debugfs -R 'stat /etc/motd' dg-r.img 2>&1 | grep -c 'File not found')" 1
    rm -f "dg.$fmt" dg-all.raw dg-r.img
done

set_case "every inode of a tree of 9,000 files gets the fixed time"
# more inodes than one group holds, and than one piece of an inode table
# that the op fixes at a time (1 MiB: 4,096 inodes of 256 bytes)
"$PY" - many <<'PY'
import os, sys
for d in range(9):
    os.makedirs(f"{sys.argv[1]}/d{d}")
    for f in range(1000):
        with open(f"{sys.argv[1]}/d{d}/f{f:04d}", "w") as fh:
            fh.write(f"{d} {f}\n")
PY
touch -d '2011-01-01 00:00:00' many/d0/f0000 many/d8/f0999
one_fs_job many many.raw 601M many
if df_ok run many.yaml --report many.json; then
    dd if=many.raw of=many-r.img bs=1M skip=1 count=599 status=none
    q_ok e2fsck -fn many-r.img
    expect_true "more than one group of inodes in use" \
        test "$(dumpe2fs many-r.img 2>/dev/null | grep -c 'free inodes, .* directories')" -gt 1
    for f in d0/f0000 d4/f0500 d8/f0999 d8; do
        expect_eq "$f: every time is the fixed time" \
            "$(debugfs -R "stat /$f" many-r.img 2>/dev/null | grep -cE '^ *(a|c|m|cr)time: 0x12cea600:')" 4
    done
    expect_eq "the last file reads back" "$(debugfs -R 'cat /d8/f0999' many-r.img 2>/dev/null)" "8 999"
fi
rm -rf many many.raw many-r.img

# --- overlays ---------------------------------------------------------------------
set_case "filesystem on an overlay leaves the base unchanged"
mkdir -p C/root/etc && echo web >C/root/etc/hostname
cat >ov.yaml <<'YAML'
version: 1
name: ov
steps:
  - {id: web, op: overlay, image: web.qcow2, backing: A/disk.qcow2, backing_format: qcow2}
  - {id: web-fs, op: filesystem, image: web.qcow2, partition: root, type: ext4, from: C/root}
YAML
base_sha=$(sha_of A/disk.qcow2)
df_ok run ov.yaml --report ov.json
expect_eq "base file unchanged" "$(sha_of A/disk.qcow2)" "$base_sha"
qcheck web.qcow2
q_ok qemu-img convert -O raw web.qcow2 web.raw
part_out web.raw raw 101711872 $(((320 * 2048 - 34 - 198656 + 1) * 512)) web-root.img
q_ok e2fsck -fn web-root.img
expect_eq "the overlay holds the new file system" "$(debugfs -R 'cat /etc/hostname' web-root.img 2>/dev/null)" web
q_ok qemu-img convert -O raw A/disk.qcow2 base.raw
expect_true "the ESP still comes from the base" \
    cmp -s -n 67108864 -i 1048576:1048576 web.raw base.raw
rm -f web.raw web-root.img base.raw

set_case "partition on an overlay"
cat >ov2.yaml <<'YAML'
version: 1
name: ov2
steps:
  - {id: top, op: overlay, image: top.qcow2, backing: A/disk.qcow2, backing_format: qcow2}
  - id: gpt
    op: partition
    image: top.qcow2
    partitions: [{name: only, type: linux, size: 100M}]
YAML
df_ok run ov2.yaml --report ov2.json
expect_eq "base file unchanged" "$(sha_of A/disk.qcow2)" "$base_sha"
df_ok info --output json top.qcow2 &&
    expect_eq "the overlay shows its own table" "$(rjson "$DF_OUT" "[(p['name'], p['size']) for p in r['partitions']]")" "[('only', 104857600)]"
df_ok info --output json A/disk.qcow2 &&
    expect_eq "the base keeps three" "$(rjson "$DF_OUT" "len(r['partitions'])")" 3

# --- a table made by sgdisk ------------------------------------------------------
set_case "info reads what sgdisk wrote"
truncate -s 100M sg.raw
q_ok sgdisk -n 1:2048:+10M -t 1:ef00 -c 1:EFI -n 2:0:+20M -t 2:8300 -c "2:data é" -A 2:set:2 sg.raw
q_ok sfdisk --json sg.raw && cp "$Q_OUT" sg.json
for fmt in raw qcow2; do
    if [[ $fmt == qcow2 ]]; then qemu-img convert -O qcow2 sg.raw sg.qcow2; f=sg.qcow2; else f=sg.raw; fi
    df_ok info --output json "$f" &&
        expect_eq "$fmt: info = sfdisk" "$("$PY" - "$DF_OUT" sg.json <<'EOF'
import json, sys
i = json.load(open(sys.argv[1]))
t = json.load(open(sys.argv[2]))["partitiontable"]
mine = [(p["name"], p["type"], p["guid"], p["start"], p["size"]) for p in i["partitions"]]
theirs = [(p["name"], p["type"], p["uuid"], p["start"] * 512, p["size"] * 512) for p in t["partitions"]]
print("same" if mine == theirs and i["partition-table"]["valid"] else f"{mine} vs {theirs} {i['partition-table']}")
EOF
)" same
done

# --- damaged and hostile tables -------------------------------------------------
set_case "damaged GPTs are reported, never shown as sound"
# poke_le FILE OFFSET WIDTH VALUE (little-endian)
poke_le() {
    "$PY" - "$@" <<'EOF'
import sys
p, off, w, v = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3]), int(sys.argv[4], 0)
with open(p, "r+b") as f:
    f.seek(off); f.write(v.to_bytes(w, "little"))
EOF
}
# fix_hdr_crc FILE: recompute the primary header's CRC-32
fix_hdr_crc() {
    "$PY" - "$1" <<'EOF'
import sys, zlib
with open(sys.argv[1], "r+b") as f:
    f.seek(512); h = bytearray(f.read(92)); h[16:20] = b"\0\0\0\0"
    f.seek(512 + 16); f.write(zlib.crc32(bytes(h)).to_bytes(4, "little"))
EOF
}
damage_case() { # damage_case NAME WANT: info on bad.raw
    df_ok info --output json bad.raw || return 0
    expect_eq "$1: valid is false" "$(rjson "$DF_OUT" "r['partition-table']['valid']")" False
    expect_true "$1: the problem is named ($2)" grep -qF "$2" "$DF_OUT"
    df_ok info bad.raw
    expect_true "$1: human output says DAMAGED" grep -q "^Partition table: gpt (DAMAGED)" "$DF_OUT"
}
cp sg.raw bad.raw
poke_le bad.raw $((1024 + 56)) 2 0x41
damage_case "entry array CRC" "primary entry array: CRC-32 mismatch"
expect_eq "shown from the backup" "$(df_ok info --output json bad.raw; rjson "$DF_OUT" "r['partition-table']['from-backup']")" True
cp sg.raw bad.raw
poke_le bad.raw $((512 + 80)) 4 0xffffffff
fix_hdr_crc bad.raw
damage_case "entry count 2^32-1" "4294967295 entries"
cp sg.raw bad.raw
poke_le bad.raw $((1024 + 128 + 40)) 8 $((1 << 40))
"$PY" - bad.raw <<'EOF'
import sys, zlib
with open(sys.argv[1], "r+b") as f:
    f.seek(1024); a = f.read(128 * 128)
    f.seek(512 + 88); f.write(zlib.crc32(a).to_bytes(4, "little"))
EOF
fix_hdr_crc bad.raw
damage_case "partition past the end" "lie outside"
cp sg.raw bad.raw
truncate -s 200M bad.raw
damage_case "a disk grown under its GPT" "not at the disk's last LBA"
cp sg.raw bad.raw
poke_le bad.raw $((1024 + 56)) 2 0x41
bad_sha=$(sha_of bad.raw)
cat >fsbad.yaml <<'YAML'
version: 1
steps:
  - {id: fs, op: filesystem, image: bad.raw, format: raw, partition: EFI, type: vfat}
YAML
run_df run fsbad.yaml --report fsbad.json
expect_eq "filesystem on a damaged GPT: exit 1" "$DF_RC" 1
expect_true "the error says why" grep -q "the GPT is damaged: primary entry array: CRC-32 mismatch" fsbad.json
expect_eq "the image is unchanged" "$(sha_of bad.raw)" "$bad_sha"

# --- failures on existing images --------------------------------------------------
set_case "a partition step that cannot fit an existing image changes nothing"
truncate -s 50M small.raw
echo "keep me" | dd of=small.raw bs=512 seek=1 conv=notrunc status=none
small_sha=$(sha_of small.raw)
cat >small.yaml <<'YAML'
version: 1
steps:
  - id: gpt
    op: partition
    image: small.raw
    format: raw
    partitions: [{name: a, type: linux, size: 40M}, {name: b, type: linux, size: 10M}]
YAML
df_ok validate small.yaml
run_df run small.yaml --report small.json
expect_eq "exit 1" "$DF_RC" 1
expect_true "names the partition" grep -q "partition 'b' does not fit" small.json
expect_eq "image unchanged" "$(sha_of small.raw)" "$small_sha"
expect_eq "no temporary left" "$(find . -maxdepth 1 -name '*.tmp*' | wc -l)" 0

set_case "a missing tool names its package"
cat >notool.yaml <<'YAML'
version: 1
steps:
  - {id: fs, op: filesystem, image: sg.raw, format: raw, partition: 2, type: ext4}
YAML
sg_sha=$(sha_of sg.raw)
DISKFORGE_TOOL_PATH=$T_TMP/nowhere run_df run notool.yaml --report notool.json
expect_eq "exit 1" "$DF_RC" 1
expect_true "error names mke2fs and e2fsprogs" grep -q "needs mke2fs, which is not installed (apt-get install e2fsprogs)" notool.json
expect_eq "image unchanged" "$(sha_of sg.raw)" "$sg_sha"

# --- the DAG -----------------------------------------------------------------------
set_case "DAG"
job A/job.yaml disk.qcow2 qcow2
df_ok plan A/job.yaml --format json &&
    expect_eq "filesystem steps follow the partition step, one after the other" \
        "$(rjson "$DF_OUT" "[(s['id'], s['needs']) for s in r['steps']]")" \
        "[('disk', []), ('gpt', ['disk']), ('esp-fs', ['gpt']), ('root-fs', ['esp-fs'])]"
expect_eq "the filesystem step reads its tree" \
    "$(rjson "$DF_OUT" "next(s['reads'] for s in r['steps'] if s['id']=='esp-fs')")" "['A/esp']"

# --- job-file errors ------------------------------------------------------------------
set_case "validation: file:line:column, exit 2, nothing runs"
cat >bad.yaml <<'YAML'
version: 1
steps:
  - {id: disk, op: create, image: v.raw, size: 100M}
  - id: gpt
    op: partition
    image: v.raw
    disk_guid: 1234
    partitions:
      - {name: esp, type: efi, size: 64M}
      - {name: esp, type: linux, size: 30M}
      - {name: big, type: 0FC63DAF-8483-4772-8E79-3D69D8477DE4, size: 10M, guid: nope}
      - {name: x, type: linux, size: rest, attributes: [hidden, 64]}
      - {name: y, type: linux, size: 1000}
  - id: fs
    op: filesystem
    image: v.raw
    partition: bootx
    type: vfat
    uuid: 12345
  - {id: tiny, op: create, image: t.raw, size: 16K}
  - id: gpt2
    op: partition
    image: t.raw
    partitions: []
  - {id: d3, op: create, image: w.raw, size: 100M}
  - id: gpt3
    op: partition
    image: w.raw
    partitions:
      - {name: a, type: linux, size: 64M}
      - {name: b, type: linux, size: 64M}
YAML
run_df validate bad.yaml
expect_eq "validate exit" "$DF_RC" 2
for want in "bad.yaml:7:16: error: 'disk_guid': malformed GUID '1234'" \
            "bad.yaml:9:27: error: unknown partition type 'efi'" \
            "bad.yaml:10:9: error: duplicate partition name 'esp' (first at line 9)" \
            "bad.yaml:11:82: error: 'guid': malformed GUID 'nope'" \
            "bad.yaml:12:57: error: unknown partition attribute 'hidden'" \
            "bad.yaml:12:65: error: unknown partition attribute '64'" \
            "bad.yaml:12:38: error: partition 'x': only the last partition may have 'size: rest'" \
            "bad.yaml:13:38: error: partition size 1000 is not a positive multiple of 512 bytes" \
            "bad.yaml:19:11: error: step 'fs': malformed vfat uuid '12345'" \
            "bad.yaml:23:12: error: step 'gpt2': a disk of 16384 bytes is too small for a GPT" \
            "bad.yaml:31:38: error: step 'gpt3': partition 'b' does not fit on the disk of 104857600 bytes"; do
    expect_true "message: $want" grep -qF "$want" "$DF_ERR"
done
expect_eq "error lines" "$(grep -c ': error: ' "$DF_ERR")" 11
run_df run bad.yaml
expect_eq "run exit" "$DF_RC" 2
expect_true "nothing made" test ! -e v.raw -a ! -e t.raw -a ! -e w.raw
cat >nopart.yaml <<'YAML'
version: 1
steps:
  - {id: disk, op: create, image: v.raw, size: 100M}
  - {id: gpt, op: partition, image: v.raw, partitions: [{name: boot, type: esp, size: 64M}, {name: root, type: linux, size: rest}]}
  - {id: fs, op: filesystem, image: v.raw, partition: bootx, type: vfat}
  - {id: fs3, op: filesystem, image: v.raw, partition: 3, type: ext4, label: "seventeen chars!!"}
YAML
run_df validate nopart.yaml
expect_eq "unknown partition: exit" "$DF_RC" 2
expect_true "unknown partition: message" grep -qF "nopart.yaml:5:55: error: step 'fs': step 'gpt' makes no partition 'bootx' in 'v.raw' (did you mean 'boot'?)" "$DF_ERR"
expect_true "partition number past the table" grep -qF "nopart.yaml:6:56: error: step 'fs3': step 'gpt' makes no partition '3'" "$DF_ERR"
expect_true "ext4 label too long" grep -qF "error: step 'fs3': label 'seventeen chars!!' is longer than the 16 bytes ext4 holds" "$DF_ERR"
"$PY" - >many.yaml <<'EOF'
print("version: 1\nsteps:\n  - id: p\n    op: partition\n    image: m.raw\n    partitions:")
for i in range(129):
    print(f"      - {{name: p{i}, type: linux, size: 1M}}")
EOF
run_df validate many.yaml
expect_eq "129 partitions: exit" "$DF_RC" 2
expect_true "129 partitions: message" grep -qF "many.yaml:7:7: error: 129 partitions: a GPT holds at most 128" "$DF_ERR"
finish
