#!/usr/bin/env bash
# disk_files.sh - the `files` op (SPEC §9): files added to and replaced in
# an ext4 inside a partition, through an overlay that then holds only the
# changed blocks; e2fsck -fn stays clean; debugfs reads the files back
# with fixed times and root as owner; the base is never written; the same
# job gives the same bytes in another directory; wrong targets fail the
# step and leave the image as it was; a relative `to` is a job-file error.
. "$(dirname "$0")/lib.sh"
need_qemu
need_tools mke2fs debugfs e2fsck mkfs.vfat mcopy
rjson() { "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }
cd "$T_TMP"

mk_tree() { # mk_tree DIR
    mkdir -p "$1/root" "$1/role/etc/web" "$1/role/srv/www" "$1/role2"
    cp -r "$T_SRC/examples/golden-rootfs/." "$1/root/"
    head -c 200000 /dev/zero | tr '\0' 'r' >"$1/root/srv/big-file"
    echo "role = web" >"$1/role/etc/web/role.conf"
    echo "<h1>web</h1>" >"$1/role/srv/www/index.html" # replaces the base's
    echo web >"$1/role/etc/hostname"                   # replaces the base's
    ln -s web/role.conf "$1/role/etc/role-link"
    chmod 0600 "$1/role/etc/web/role.conf"
    echo deep >"$1/role2/note"
}

job() { # job DIR
    cat >"$1/job.yaml" <<'YAML'
version: 1
name: files-test
steps:
  - {id: disk, op: create, image: base.qcow2, size: 256M}
  - id: gpt
    op: partition
    image: base.qcow2
    partitions:
      - {name: esp, type: esp, size: 32M}
      - {name: root, type: linux-root-x86-64, size: rest}
  - {id: esp-fs, op: filesystem, image: base.qcow2, partition: esp, type: vfat}
  - {id: root-fs, op: filesystem, image: base.qcow2, partition: root, type: ext4, from: root}
  - {id: web, op: overlay, image: web.qcow2, backing: base.qcow2}
  - {id: web-files, op: files, image: web.qcow2, partition: root, from: role}
  - {id: web-deep, op: files, image: web.qcow2, partition: 2, from: role2, to: /opt/new/dir}
YAML
}

mk_tree A
job A
set_case "files through an overlay"
df_ok run A/job.yaml --report A/report.json
expect_eq "status" "$(rjson A/report.json "r['status']")" succeeded
expect_eq "added and replaced" \
    "$(rjson A/report.json "[(s['result']['added'], s['result']['replaced']) for s in r['steps'] if s['op']=='files']")" \
    "[(3, 2), (1, 0)]"
qcheck A/base.qcow2
qcheck A/web.qcow2
expect_true "the overlay holds only the delta ($(len_of A/web.qcow2) bytes)" \
    test "$(len_of A/web.qcow2)" -lt $((2 << 20))
expect_eq "no temporary left" "$(find A -name '*.tmp*' | wc -l)" 0
df_ok info --output json A/web.qcow2 &&
    expect_eq "info shows the table through the overlay" \
        "$(rjson "$DF_OUT" "[p['name'] for p in r['partitions']]")" "['esp', 'root']"
q_ok qemu-img convert -O raw A/web.qcow2 web.raw
q_ok qemu-img convert -O raw A/base.qcow2 base.raw
start=$(("$(rjson A/report.json "next(s['result']['start'] for s in r['steps'] if s['id']=='root-fs')")"))
size=$(("$(rjson A/report.json "next(s['result']['size'] for s in r['steps'] if s['id']=='root-fs')")"))
dd if=web.raw of=web-root.img bs=1M skip=$((start >> 20)) count=$((size >> 20)) status=none
dd if=base.raw of=base-root.img bs=1M skip=$((start >> 20)) count=$((size >> 20)) status=none
q_ok e2fsck -fn web-root.img
q_ok e2fsck -fn base-root.img
dfs() { debugfs -R "$1" "$2" 2>/dev/null; }
expect_eq "a new file" "$(dfs 'cat /etc/web/role.conf' web-root.img)" "role = web"
expect_eq "a replaced file" "$(dfs 'cat /etc/hostname' web-root.img)" web
expect_eq "a replaced file in a subdirectory" "$(dfs 'cat /srv/www/index.html' web-root.img)" "<h1>web</h1>"
expect_eq "untouched files stay" "$(dfs 'cat /etc/motd' web-root.img)" "$(cat A/root/etc/motd)"
dfs 'dump /srv/big-file big.out' web-root.img >/dev/null
expect_true "the base's big file is intact" cmp -s big.out A/root/srv/big-file
expect_eq "into a new directory path" "$(dfs 'cat /opt/new/dir/note' web-root.img)" deep
expect_eq "a symbolic link" "$(dfs 'stat /etc/role-link' web-root.img | sed -n 's/^Fast link dest: "\(.*\)"/\1/p')" web/role.conf
expect_true "mode kept, owner root" \
    grep -q "^/[0-9]*/100600/0/0/role.conf/11/" <(dfs 'ls -p /etc/web' web-root.img)
expect_eq "fixed times on new, replaced and parent inodes" \
    "$(for f in /etc/web/role.conf /etc/hostname /etc /opt/new /; do dfs "stat $f" web-root.img; done | grep -cE '^ *(a|c|m|cr)time: 0x12cea600:')" 20
expect_eq "the base still has its own hostname" "$(dfs 'cat /etc/hostname' base-root.img)" golden
expect_true "outside the root partition the overlay reads as the base" \
    cmp -s -n "$start" web.raw base.raw
rm -f web.raw base.raw big.out web-root.img base-root.img

set_case "the same bytes in another directory"
mk_tree B
cp A/root/srv/big-file B/root/srv/big-file
touch -d '1999-09-09' B/role/etc/hostname B/role/srv/www
job B
df_ok run B/job.yaml --report B/report.json
for f in base web; do
    expect_eq "$f.qcow2 identical" "$(sha_of "B/$f.qcow2")" "$(sha_of "A/$f.qcow2")"
done

set_case "failures leave the image unchanged"
cp A/web.qcow2 keep.qcow2
cp A/web.qcow2 web2.qcow2
mkdir -p clash/etc/hostname
# the overlay's backing is relative to A/: make it absolute for the copy
q_ok qemu-img rebase -u -F qcow2 -b "$T_TMP/A/base.qcow2" web2.qcow2
before=$(sha_of web2.qcow2)
fail_case() { # fail_case NAME PARTITION FROM TO WANT
    cat >"$1.yaml" <<YAML
version: 1
steps:
  - {id: $1, op: files, image: web2.qcow2, format: qcow2, partition: $2, from: $3, to: $4}
YAML
    run_df run "$1.yaml" --report "$1.json"
    expect_eq "$1: exit 1" "$DF_RC" 1
    expect_true "$1: $5" grep -qF "$5" "$1.json"
}
fail_case vfat esp A/role / "holds no ext2/3/4 file system"
fail_case clash root clash / "'/etc/hostname' exists in the file system as a file"
fail_case file-as-dir root A/role2 /etc/hostname "'/etc/hostname' exists in the file system and is not a directory"
expect_eq "the image is unchanged" "$(sha_of web2.qcow2)" "$before"
expect_eq "no temporary left" "$(find . -maxdepth 1 -name '*.tmp*' | wc -l)" 0

set_case "job-file errors"
cat >bad.yaml <<'YAML'
version: 1
steps:
  - {id: f, op: files, image: x.raw, partition: root, from: A/role, to: etc}
  - {id: g, op: files, image: x.raw, partition: root, from: A/role, to: /a/../b}
  - {id: h, op: files, image: x.raw, partition: root}
YAML
run_df validate bad.yaml
expect_eq "exit 2" "$DF_RC" 2
expect_true "relative to" grep -qF "bad.yaml:3:73: error: 'to' must be an absolute directory of the file system" "$DF_ERR"
expect_true "'..' in to" grep -qF "bad.yaml:4:73: error: 'to' must be an absolute directory" "$DF_ERR"
expect_true "from is required" grep -qF "bad.yaml:5:5: error: step 'h': op 'files' needs 'from'" "$DF_ERR"
finish
