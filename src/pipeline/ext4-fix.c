/* SPDX-License-Identifier: MIT */
/*
 * ext4-fix.c - set the owner and times of every inode that `mke2fs -d`
 * copied from a host tree, in the new file system itself (ops-disk.h).
 *
 * mke2fs -d copies each source file's atime, mtime, ctime and owner, so
 * two checkouts of the same tree give two images.  Setting them with
 * debugfs `sif` takes a path lookup per field (10 s for 18,000 files);
 * this walks the inode tables once instead.  Layout facts from the ext4
 * disk-layout documentation: the superblock at byte 1024, group
 * descriptors in the block after it, an inode bitmap and an inode table
 * per group; with metadata_csum each inode carries a CRC32C over the file
 * system's checksum seed, its number, its generation and its bytes (the
 * checksum fields zeroed).  Only inodes in use from the root (2) and the
 * first non-reserved one on are touched; nothing else changes, so the
 * bitmaps and group checksums stay valid.  e2fsck -fn checks the result
 * in tests/interop/disk_layout.sh.
 */
#include "ops-disk.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SB_OFFSET 1024
#define INCOMPAT_META_BG 0x10u
#define INCOMPAT_64BIT 0x80u
#define INCOMPAT_CSUM_SEED 0x2000u
#define RO_COMPAT_METADATA_CSUM 0x400u
#define BG_INODE_UNINIT 0x1u
#define GOOD_OLD_INODE_SIZE 128u
/* How much of an inode table is read and written back at a time. */
#define PIECE (1u << 20)

static uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const uint8_t *p)
{
    return le16(p) | le16(p + 2) << 16;
}

static void put_le16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    put_le16(p, v);
    put_le16(p + 2, v >> 16);
}

/* CRC32C (Castagnoli, reflected), without the final inversion: the form
 * ext4 chains. */
static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    static _Atomic int ready;

    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) {
                c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
            }
            table[i] = c;
        }
        ready = 1;
    }
    while (n--) {
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return crc;
}

/* Does the field at @off (4 bytes) exist in an inode of @extra extra bytes? */
static bool has_field(uint32_t off, uint32_t extra, uint32_t isize)
{
    return off + 4 <= GOOD_OLD_INODE_SIZE + extra && off + 4 <= isize;
}

static void fix_inode(uint8_t *ino, uint32_t isize, uint32_t num,
                      long long epoch, bool csum, uint32_t seed)
{
    uint32_t lo = (uint32_t)epoch;
    /* the two epoch bits of the _extra fields, nanoseconds 0 */
    uint32_t ext = (uint32_t)((epoch - (long long)(int32_t)lo) >> 32) & 3;
    uint32_t extra = isize > GOOD_OLD_INODE_SIZE ? le16(ino + 0x80) : 0;
    static const uint32_t times[] = { 0x08, 0x0c, 0x10 }; /* a, c, m */
    static const uint32_t extras[] = { 0x84, 0x88, 0x8c, 0x94 };

    put_le16(ino + 0x02, 0); /* uid */
    put_le16(ino + 0x18, 0); /* gid */
    put_le16(ino + 0x78, 0); /* uid high */
    put_le16(ino + 0x7a, 0); /* gid high */
    for (size_t i = 0; i < 3; i++) {
        put_le32(ino + times[i], lo);
    }
    if (has_field(0x90, extra, isize)) {
        put_le32(ino + 0x90, lo); /* crtime */
    }
    for (size_t i = 0; i < 4; i++) {
        if (has_field(extras[i], extra, isize)) {
            put_le32(ino + extras[i], ext);
        }
    }
    if (csum) {
        bool hi = isize > GOOD_OLD_INODE_SIZE && extra >= 4;
        uint8_t num_le[4];
        uint32_t c;
        put_le16(ino + 0x7c, 0);
        if (hi) {
            put_le16(ino + 0x82, 0);
        }
        put_le32(num_le, num);
        c = crc32c(seed, num_le, 4);
        c = crc32c(c, ino + 0x64, 4); /* generation */
        c = crc32c(c, ino, isize);
        put_le16(ino + 0x7c, c & 0xffff);
        if (hi) {
            put_le16(ino + 0x82, c >> 16);
        }
    }
}

/* Is inode @num (slot @i of its group's @bitmap) one to fix: in use, and
 * the root or past the reserved ones? */
static bool to_fix(const uint8_t *bitmap, uint32_t i, uint32_t num,
                   uint32_t first_ino)
{
    return (bitmap[i / 8] >> (i % 8) & 1) && (num == 2 || num >= first_ino);
}

int ext4_fix_inodes(struct op_ctx *ctx, int fd, long long epoch,
                    uint64_t *fixed)
{
    uint8_t sb[1024], *desc = NULL, *bitmap = NULL, *piece = NULL;
    uint32_t bsize, ipg, isize, first_ino, groups, dsize, incompat, ro;
    uint32_t per_piece, slots;
    uint64_t gdt_off;
    bool csum;
    uint32_t seed = 0;
    int ret = 0;

    *fixed = 0;
    if (pread(fd, sb, sizeof(sb), SB_OFFSET) != (ssize_t)sizeof(sb) ||
        le16(sb + 0x38) != 0xef53) {
        return df_fail(&ctx->err, DF_E_FORMAT, "mke2fs made no ext4 "
                       "superblock this op can read");
    }
    bsize = 1024u << (le32(sb + 0x18) & 15);
    ipg = le32(sb + 0x28);
    isize = le32(sb + 0x4c) >= 1 ? le16(sb + 0x58) : GOOD_OLD_INODE_SIZE;
    first_ino = le32(sb + 0x4c) >= 1 ? le32(sb + 0x54) : 11;
    incompat = le32(sb + 0x60);
    ro = le32(sb + 0x64);
    dsize = incompat & INCOMPAT_64BIT ? le16(sb + 0xfe) : 32;
    if (!ipg || isize < GOOD_OLD_INODE_SIZE || isize > bsize || dsize < 32 ||
        dsize > bsize || (incompat & INCOMPAT_META_BG)) {
        return df_fail(&ctx->err, DF_E_UNSUPPORTED, "the new ext4 file "
                       "system has a layout this op does not handle (meta_bg, "
                       "or odd inode or descriptor sizes)");
    }
    groups = (le32(sb + 0x00) + ipg - 1) / ipg;
    csum = ro & RO_COMPAT_METADATA_CSUM;
    if (csum) {
        seed = incompat & INCOMPAT_CSUM_SEED
                   ? le32(sb + 0x270)
                   : crc32c(~0u, sb + 0x68, 16); /* s_uuid */
    }
    /* group descriptors: in the block after the superblock's */
    gdt_off = (uint64_t)(le32(sb + 0x14) + 1) * bsize;
    desc = malloc((size_t)groups * dsize);
    bitmap = malloc(bsize);
    per_piece = PIECE / isize;
    slots = ipg < bsize * 8 ? ipg : bsize * 8; /* what one bitmap block maps */
    piece = malloc((size_t)per_piece * isize);
    if (!desc || !bitmap || !piece) {
        ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        goto out;
    }
    if (pread(fd, desc, (size_t)groups * dsize, (off_t)gdt_off) !=
        (ssize_t)((size_t)groups * dsize)) {
        ret = df_fail_sys(&ctx->err, "cannot read the group descriptors");
        goto out;
    }
    for (uint32_t g = 0; ret == 0 && g < groups; g++) {
        const uint8_t *d = desc + (size_t)g * dsize;
        uint64_t bmp = le32(d + 0x04), table = le32(d + 0x08);
        if (dsize >= 64) {
            bmp |= (uint64_t)le32(d + 0x24) << 32;
            table |= (uint64_t)le32(d + 0x28) << 32;
        }
        if (le16(d + 0x12) & BG_INODE_UNINIT) {
            continue;
        }
        if (pread(fd, bitmap, bsize, (off_t)(bmp * bsize)) != (ssize_t)bsize) {
            ret = df_fail_sys(&ctx->err, "cannot read an inode bitmap");
            break;
        }
        /* the table a piece at a time: read, fix what is in use, write */
        for (uint32_t i0 = 0; ret == 0 && i0 < slots; i0 += per_piece) {
            uint32_t end = slots - i0 < per_piece ? slots : i0 + per_piece;
            uint32_t n;
            off_t at = (off_t)(table * bsize + (uint64_t)i0 * isize);
            /* up to the last inode to fix in this piece */
            while (end > i0 && !to_fix(bitmap, end - 1, g * ipg + end,
                                       first_ino)) {
                end--;
            }
            if (end == i0) {
                continue;
            }
            n = end - i0;
            if (pread(fd, piece, (size_t)n * isize, at) !=
                (ssize_t)((size_t)n * isize)) {
                ret = df_fail_sys(&ctx->err, "cannot read the inode table "
                                  "of group %u", g);
                break;
            }
            for (uint32_t i = i0; i < end; i++) {
                if (to_fix(bitmap, i, g * ipg + i + 1, first_ino)) {
                    fix_inode(piece + (size_t)(i - i0) * isize, isize,
                              g * ipg + i + 1, epoch, csum, seed);
                    (*fixed)++;
                }
            }
            if (pwrite(fd, piece, (size_t)n * isize, at) !=
                (ssize_t)((size_t)n * isize)) {
                ret = df_fail_sys(&ctx->err, "cannot write the inode table "
                                  "of group %u", g);
            }
        }
        if (ret == 0 && op_cancelled(ctx)) {
            ret = df_fail(&ctx->err, DF_E_CANCELED, "'%s': interrupted",
                          ctx->step->image);
        }
    }
out:
    free(desc);
    free(bitmap);
    free(piece);
    return ret;
}
