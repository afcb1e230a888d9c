/* SPDX-License-Identifier: MIT */
/*
 * test_qcow2.c - unit tests of the qcow2 driver's internals: header
 * encoding, refcount packing, geometry arithmetic, the allocator's
 * layout, writes against a reference buffer, concurrent readers, and
 * hostile images (every mutation must end in an error, never a crash).
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2/qcow2.h"

#define UNIT_TMPDIR_NAME "qcow2"
#include "unit-tmpdir.h"

/* ---- header ---- */

START_TEST(header_roundtrip_v3)
{
    struct qcow2_header h = { 0 }, d;
    unsigned char buf[QCOW2_V3_HEADER_LEN];

    h.magic = QCOW2_MAGIC;
    h.version = 3;
    h.backing_file_offset = 0x1f8;
    h.backing_file_size = 9;
    h.cluster_bits = 16;
    h.size = 0x123456789aULL;
    h.l1_size = 77;
    h.l1_table_offset = 0x30000;
    h.refcount_table_offset = 0x10000;
    h.refcount_table_clusters = 1;
    h.incompatible_features = QCOW2_INCOMPAT_COMPRESSION;
    h.compatible_features = QCOW2_COMPAT_LAZY_REFCOUNTS;
    h.refcount_order = 4;
    h.compression_type = 1;
    ck_assert_uint_eq(qcow2_header_encode(&h, buf), QCOW2_V3_HEADER_LEN);
    /* big-endian on disk */
    ck_assert_uint_eq(buf[0], 'Q');
    ck_assert_uint_eq(buf[7], 3);
    ck_assert_uint_eq(buf[104], 1);
    ck_assert_int_eq(qcow2_header_decode(buf, sizeof(buf), &d), 0);
    ck_assert_uint_eq(d.size, h.size);
    ck_assert_uint_eq(d.l1_size, 77);
    ck_assert_uint_eq(d.backing_file_offset, 0x1f8);
    ck_assert_uint_eq(d.header_length, QCOW2_V3_HEADER_LEN);
    ck_assert_uint_eq(d.compatible_features, QCOW2_COMPAT_LAZY_REFCOUNTS);
    ck_assert_uint_eq(d.compression_type, 1);
}
END_TEST

START_TEST(header_v2_implies_16_bit_refcounts)
{
    struct qcow2_header h = { 0 }, d;
    unsigned char buf[QCOW2_V3_HEADER_LEN];

    h.magic = QCOW2_MAGIC;
    h.version = 2;
    h.cluster_bits = 12;
    ck_assert_uint_eq(qcow2_header_encode(&h, buf), QCOW2_V2_HEADER_LEN);
    ck_assert_int_eq(qcow2_header_decode(buf, QCOW2_V2_HEADER_LEN, &d), 0);
    ck_assert_uint_eq(d.refcount_order, 4);
    ck_assert_uint_eq(d.header_length, QCOW2_V2_HEADER_LEN);
    /* a v3 header cut short is refused */
    buf[7] = 3;
    ck_assert_int_lt(qcow2_header_decode(buf, 80, &d), 0);
}
END_TEST

START_TEST(header_validation_rejects)
{
    struct qcow2_header h = { 0 };
    struct df_error err = { 0 };

    h.magic = QCOW2_MAGIC;
    h.version = 3;
    h.cluster_bits = 16;
    h.header_length = 112;
    h.refcount_table_offset = 0x10000;
    h.refcount_table_clusters = 1;
    h.refcount_order = 4;
    ck_assert_int_eq(qcow2_validate_header(&h, 1 << 20, "x", &err), 0);

    struct qcow2_header b = h;
    b.cluster_bits = 22;
    ck_assert_int_eq(qcow2_validate_header(&b, 1 << 20, "x", &err),
                     -DF_E_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.msg, "cluster size"));
    df_error_clear(&err);
    b = h;
    b.incompatible_features = 1ULL << 8;
    ck_assert_int_eq(qcow2_validate_header(&b, 1 << 20, "x", &err),
                     -DF_E_UNSUPPORTED);
    df_error_clear(&err);
    b = h;
    b.incompatible_features = QCOW2_INCOMPAT_EXTL2;
    ck_assert_int_eq(qcow2_validate_header(&b, 1 << 20, "x", &err),
                     -DF_E_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "extended L2"));
    df_error_clear(&err);
    b = h;
    b.size = 1ULL << 40; /* the L1 table is too small for this */
    ck_assert_int_eq(qcow2_validate_header(&b, 1 << 20, "x", &err),
                     -DF_E_CORRUPT);
    df_error_clear(&err);
    b = h;
    b.refcount_table_offset = 0x10200; /* not aligned */
    ck_assert_int_eq(qcow2_validate_header(&b, 1 << 20, "x", &err),
                     -DF_E_CORRUPT);
    df_error_clear(&err);
    b = h;
    b.crypt_method = 2;
    ck_assert_int_eq(qcow2_validate_header(&b, 1 << 20, "x", &err),
                     -DF_E_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "encrypted"));
}
END_TEST

/* ---- refcounts and geometry ---- */

START_TEST(refcount_packing_all_widths)
{
    unsigned char block[512];
    uint32_t bits = 1u << _i;
    uint64_t max = bits == 64 ? UINT64_MAX : (1ULL << bits) - 1;
    uint64_t n = sizeof(block) * 8 / bits;

    memset(block, 0, sizeof(block));
    for (uint64_t i = 0; i < n; i++) {
        qcow2_rb_set(block, i, bits, (i * 7919) & max);
    }
    for (uint64_t i = 0; i < n; i++) {
        ck_assert_uint_eq(qcow2_rb_get(block, i, bits), (i * 7919) & max);
    }
    /* neighbours are untouched by a write */
    qcow2_rb_set(block, 1, bits, max);
    ck_assert_uint_eq(qcow2_rb_get(block, 0, bits), 0);
    ck_assert_uint_eq(qcow2_rb_get(block, 2, bits), (2 * 7919) & max);
    if (bits == 16) {
        /* 16-bit refcounts are big-endian */
        qcow2_rb_set(block, 0, 16, 0x0102);
        ck_assert_uint_eq(block[0], 1);
        ck_assert_uint_eq(block[1], 2);
    }
    if (bits == 1) {
        /* sub-byte widths start at the least significant bit */
        memset(block, 0, sizeof(block));
        qcow2_rb_set(block, 0, 1, 1);
        ck_assert_uint_eq(block[0], 1);
    }
}
END_TEST

START_TEST(l1_arithmetic)
{
    /* 64 KiB clusters: one L2 table maps 512 MiB */
    ck_assert_uint_eq(qcow2_l1_entries_for(1ULL << 30, 16), 2);
    ck_assert_uint_eq(qcow2_l1_entries_for((1ULL << 29) + 1, 16), 2);
    ck_assert_uint_eq(qcow2_l1_entries_for(1ULL << 40, 16), 2048);
    /* 512 B clusters: 64 entries per table, 32 KiB each */
    ck_assert_uint_eq(qcow2_l1_entries_for(1ULL << 30, 9), 32768);
    /* 2 MiB clusters: 512 GiB per table */
    ck_assert_uint_eq(qcow2_l1_entries_for(1ULL << 30, 21), 1);
}
END_TEST

START_TEST(refcount_metadata_fixed_point)
{
    uint64_t blocks;
    /* 1 TiB of 64 KiB clusters with L2 tables and the header: qemu-img
     * measure reports 168034304 bytes = 2564 clusters of metadata */
    uint64_t clusters = (1ULL << 40 >> 16) + 2048 + 1 + 1;
    uint64_t meta = qcow2_refcount_metadata_clusters(clusters, 65536, 4,
                                                     false, &blocks);
    ck_assert_uint_eq(blocks, 513);
    ck_assert_uint_eq(meta, 514);
    ck_assert_uint_eq(clusters + meta, (1ULL << 40 >> 16) + 2564);
    /* the refcount blocks must cover themselves */
    ck_assert_uint_ge(blocks * 32768, clusters + meta);
}
END_TEST

/* ---- whole images ---- */

static void create(const char *name, uint64_t size, uint32_t cs, int compat,
                   int rbits, enum df_prealloc p)
{
    struct df_create_opts o;
    struct df_error err = { 0 };

    df_create_opts_init(&o);
    o.size = size;
    o.cluster_size = cs;
    o.compat = compat;
    o.refcount_bits = rbits;
    o.prealloc = p;
    ck_assert_msg(df_image_create(path_in(name), &o, &err) == 0, "%s",
                  err.msg);
}

static off_t file_len(const char *name)
{
    struct stat st;
    ck_assert_int_eq(stat(path_in(name), &st), 0);
    return st.st_size;
}

START_TEST(create_layout_like_qemu)
{
    /* qemu-img create -f qcow2 x 1G: header, reftable, refblock, L1 */
    create("a.qcow2", 1ULL << 30, 65536, 3, 16, DF_PREALLOC_OFF);
    ck_assert_int_eq(file_len("a.qcow2"), 3 * 65536 + 16);
    /* preallocation=metadata: six metadata clusters, then 1 GiB */
    create("m.qcow2", 1ULL << 30, 65536, 3, 16, DF_PREALLOC_METADATA);
    ck_assert_int_eq(file_len("m.qcow2"), 1074135040);
    /* 2 MiB clusters, off */
    create("b.qcow2", 1ULL << 30, 2 << 20, 3, 16, DF_PREALLOC_OFF);
    ck_assert_int_eq(file_len("b.qcow2"), 3 * (2 << 20) + 8);
}
END_TEST

/* Random writes and zeroings, mirrored in a buffer, then read back. */
START_TEST(writes_match_reference)
{
    static const uint32_t sizes[] = { 512, 4096, 65536 };
    uint32_t cs = sizes[_i % 3];
    int compat = _i < 3 ? 3 : 2;
    const uint64_t size = 8 << 20;
    unsigned char *ref = calloc(1, size), *got = malloc(size);
    unsigned char *data = malloc(300000);
    struct df_error err = { 0 };
    struct df_image *img;
    unsigned seed = 1234 + _i;

    create("w.qcow2", size, cs, compat, 16, DF_PREALLOC_OFF);
    img = df_image_open(path_in("w.qcow2"), DF_FMT_QCOW2, DF_OPEN_RDWR, &err);
    ck_assert_msg(img != NULL, "%s", err.msg);
    for (int k = 0; k < 80; k++) {
        uint64_t off = (uint64_t)rand_r(&seed) % (size - 300000);
        size_t len = 1 + (size_t)rand_r(&seed) % 299999;
        if (rand_r(&seed) % 4 == 0) {
            ck_assert_int_eq(df_image_write_zeroes(img, off, len,
                                                   (unsigned)k & 1, &err), 0);
            memset(ref + off, 0, len);
        } else {
            memset(data, rand_r(&seed) & 0xff, len);
            data[0] ^= 0x5a;
            ck_assert_int_eq(df_image_pwrite(img, data, len, off, &err), 0);
            memcpy(ref + off, data, len);
        }
        if (k % 20 == 19) {
            /* flush mid-way: the cache must write back and reload */
            ck_assert_int_eq(df_image_flush(img, &err), 0);
        }
    }
    ck_assert_int_eq(df_image_close(img, &err), 0);

    img = df_image_open(path_in("w.qcow2"), DF_FMT_AUTO, 0, &err);
    ck_assert_msg(img != NULL, "%s", err.msg);
    ck_assert_int_eq(df_image_pread(img, got, size, 0, &err), 0);
    ck_assert_msg(memcmp(ref, got, size) == 0, "content differs");
    df_image_close(img, NULL);

    /* and the metadata is consistent */
    struct df_check_result res;
    ck_assert_int_eq(df_check(path_in("w.qcow2"), DF_FMT_QCOW2,
                              DF_REPAIR_NONE, &res, NULL, NULL, &err), 0);
    ck_assert_uint_eq(res.corruptions, 0);
    ck_assert_uint_eq(res.leaks, 0);
    free(ref);
    free(got);
    free(data);
}
END_TEST

START_TEST(scattered_writes_4tib_stay_consistent)
{
    /* refcount structures must grow as the file does */
    struct df_error err = { 0 };
    struct df_check_result res;
    struct df_image *img;
    unsigned char block[4096];

    create("big.qcow2", 4ULL << 40, 65536, 3, 16, DF_PREALLOC_OFF);
    img = df_image_open(path_in("big.qcow2"), DF_FMT_QCOW2, DF_OPEN_RDWR,
                        &err);
    ck_assert_ptr_nonnull(img);
    for (uint64_t k = 0; k < 64; k++) {
        memset(block, (int)k + 1, sizeof(block));
        uint64_t off = (k * 0x1234567ULL * 65536 + k * 512) % (4ULL << 40);
        off = off / 512 * 512;
        ck_assert_int_eq(df_image_pwrite(img, block, sizeof(block), off,
                                         &err), 0);
    }
    ck_assert_int_eq(df_image_close(img, &err), 0);
    ck_assert_int_eq(df_check(path_in("big.qcow2"), DF_FMT_QCOW2,
                              DF_REPAIR_NONE, &res, NULL, NULL, &err), 0);
    ck_assert_uint_eq(res.corruptions + res.leaks, 0);
}
END_TEST

START_TEST(refcount_table_grows_with_small_clusters)
{
    /* 512 B clusters: one refcount table cluster covers only 8 MiB of
     * file, so 16 MiB of data makes the table move */
    struct df_error err = { 0 };
    struct df_check_result res;
    struct df_image *img;
    unsigned char *buf = malloc(1 << 20);
    struct df_info info;

    create("s.qcow2", 64 << 20, 512, 3, 16, DF_PREALLOC_OFF);
    img = df_image_open(path_in("s.qcow2"), DF_FMT_QCOW2, DF_OPEN_RDWR,
                        &err);
    ck_assert_ptr_nonnull(img);
    for (int k = 0; k < 16; k++) {
        memset(buf, k + 1, 1 << 20);
        ck_assert_int_eq(df_image_pwrite(img, buf, 1 << 20,
                                         (uint64_t)k << 21, &err), 0);
    }
    ck_assert_int_eq(df_image_close(img, &err), 0);
    img = df_image_open(path_in("s.qcow2"), DF_FMT_QCOW2, 0, &err);
    ck_assert_int_eq(df_image_info(img, &info, &err), 0);
    ck_assert_uint_gt(qcow2_state(img)->h.refcount_table_clusters, 1);
    for (int k = 0; k < 16; k++) {
        ck_assert_int_eq(df_image_pread(img, buf, 4096, (uint64_t)k << 21,
                                        &err), 0);
        ck_assert_uint_eq(buf[0], k + 1);
        ck_assert_uint_eq(buf[4095], k + 1);
    }
    df_image_close(img, NULL);
    ck_assert_int_eq(df_check(path_in("s.qcow2"), DF_FMT_QCOW2,
                              DF_REPAIR_NONE, &res, NULL, NULL, &err), 0);
    ck_assert_uint_eq(res.corruptions + res.leaks, 0);
    free(buf);
}
END_TEST

/* ---- concurrency: many readers of one image ---- */

struct reader {
    struct df_image *img;
    unsigned seed;
    int bad;
};

static void *read_loop(void *arg)
{
    struct reader *r = arg;
    unsigned char buf[8192];
    struct df_error err = { 0 };

    for (int k = 0; k < 2000; k++) {
        uint64_t cl = (uint64_t)rand_r(&r->seed) % 256;
        if (df_image_pread(r->img, buf, sizeof(buf), cl * 65536 + 100,
                           &err) < 0 ||
            buf[0] != (unsigned char)(cl + 1) ||
            buf[8191] != (unsigned char)(cl + 1)) {
            r->bad++;
        }
    }
    return NULL;
}

START_TEST(concurrent_readers)
{
    struct df_error err = { 0 };
    unsigned char *buf = malloc(65536);
    struct reader r[4];
    pthread_t t[4];
    struct df_image *img;

    /* 4 KiB clusters and 256 x 64 KiB of data: many L2 tables, so the
     * readers also exercise the cache's eviction */
    create("c.qcow2", 16 << 20, 4096, 3, 16, DF_PREALLOC_OFF);
    img = df_image_open(path_in("c.qcow2"), DF_FMT_QCOW2, DF_OPEN_RDWR,
                        &err);
    for (int k = 0; k < 256; k++) {
        memset(buf, k + 1, 65536);
        ck_assert_int_eq(df_image_pwrite(img, buf, 65536, (uint64_t)k * 65536,
                                         &err), 0);
    }
    ck_assert_int_eq(df_image_close(img, &err), 0);
    img = df_image_open(path_in("c.qcow2"), DF_FMT_QCOW2, 0, &err);
    ck_assert_ptr_nonnull(img);
    for (int i = 0; i < 4; i++) {
        r[i] = (struct reader){ .img = img, .seed = (unsigned)i * 77 + 1 };
        ck_assert_int_eq(pthread_create(&t[i], NULL, read_loop, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(r[i].bad, 0);
    }
    df_image_close(img, NULL);
    free(buf);
}
END_TEST

/* ---- hostile images ---- */

/* Flip header bytes and table entries; every open/read/check must return
 * (an error or data), never crash or hang. */
START_TEST(mutated_images_fail_cleanly)
{
    struct df_error err = { 0 };
    unsigned seed = 99;
    unsigned char *orig, *buf = malloc(1 << 20);
    size_t len;
    FILE *f;
    struct df_image *img;

    create("base.qcow2", 4 << 20, 512, 3, 16, DF_PREALLOC_OFF);
    img = df_image_open(path_in("base.qcow2"), DF_FMT_QCOW2, DF_OPEN_RDWR,
                        &err);
    memset(buf, 0x42, 1 << 20);
    ck_assert_int_eq(df_image_pwrite(img, buf, 1 << 20, 4096, &err), 0);
    ck_assert_int_eq(df_image_close(img, &err), 0);
    f = fopen(path_in("base.qcow2"), "rb");
    fseek(f, 0, SEEK_END);
    len = (size_t)ftell(f);
    rewind(f);
    orig = malloc(len);
    ck_assert_uint_eq(fread(orig, 1, len, f), len);
    fclose(f);

    for (int round = 0; round < 300; round++) {
        unsigned char *m = malloc(len);
        struct df_check_result res;
        memcpy(m, orig, len);
        for (int k = 0; k < 1 + round % 4; k++) {
            /* mostly the header and the first metadata clusters */
            size_t at = round % 2 ? (size_t)rand_r(&seed) % 120
                                  : (size_t)rand_r(&seed) % DF_MIN(len, 8192);
            m[at] = (unsigned char)rand_r(&seed);
        }
        f = fopen(path_in("m.qcow2"), "wb");
        ck_assert_uint_eq(fwrite(m, 1, len, f), len);
        fclose(f);
        df_error_clear(&err);
        img = df_image_open(path_in("m.qcow2"), DF_FMT_QCOW2, 0, &err);
        if (img) {
            uint64_t sz = df_image_size(img);
            df_image_pread(img, buf, (size_t)DF_MIN(sz, 1 << 20), 0, &err);
            df_image_close(img, NULL);
        } else {
            ck_assert_int_ne(err.code, DF_OK);
            ck_assert_ptr_nonnull(strstr(err.msg, "m.qcow2"));
        }
        df_error_clear(&err);
        df_check(path_in("m.qcow2"), DF_FMT_QCOW2, DF_REPAIR_NONE, &res,
                 NULL, NULL, &err);
        free(m);
    }
    free(orig);
    free(buf);
}
END_TEST

/* Read @len bytes of the file @name at @off. */
static void peek(const char *name, uint64_t off, void *buf, size_t len)
{
    FILE *f = fopen(path_in(name), "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, (long)off, SEEK_SET), 0);
    ck_assert_uint_eq(fread(buf, 1, len, f), len);
    fclose(f);
}

static void poke_be64(const char *name, uint64_t off, uint64_t v)
{
    unsigned char b[8];
    FILE *f = fopen(path_in(name), "r+b");
    ck_assert_ptr_nonnull(f);
    df_put_be64(b, v);
    ck_assert_int_eq(fseek(f, (long)off, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(b, 1, 8, f), 8);
    fclose(f);
}

/*
 * A corrupt image whose tables point at other metadata: a write through
 * it is refused and the metadata it would have hit is left as it was.
 * _i: 0 an L2 entry at the refcount block, 1 an L2 entry at the L1 table,
 * 2 an L1 entry (an L2 table) at the refcount block, 3 the L1 table moved
 * past the end of the file, where the next allocation would land.
 */
START_TEST(writes_never_overwrite_metadata)
{
    struct df_error err = { 0 };
    struct qcow2_header h;
    unsigned char hb[QCOW2_V3_HEADER_LEN], before[4096], after[4096];
    unsigned char data[4096];
    uint64_t l2, rb, victim;
    struct df_image *img;
    struct stat st;

    create("o.qcow2", 16 << 20, 4096, 3, 16, DF_PREALLOC_OFF);
    img = df_image_open(path_in("o.qcow2"), DF_FMT_QCOW2, DF_OPEN_RDWR, &err);
    ck_assert_ptr_nonnull(img);
    memset(data, 0x42, sizeof(data));
    ck_assert_int_eq(df_image_pwrite(img, data, 4096, 0, &err), 0);
    ck_assert_int_eq(df_image_close(img, &err), 0);

    peek("o.qcow2", 0, hb, sizeof(hb));
    ck_assert_int_eq(qcow2_header_decode(hb, sizeof(hb), &h), 0);
    peek("o.qcow2", h.l1_table_offset, hb, 8);
    l2 = df_be64(hb) & QCOW2_OFFSET_MASK;
    peek("o.qcow2", h.refcount_table_offset, hb, 8);
    rb = df_be64(hb);
    ck_assert_uint_ne(l2, 0);
    ck_assert_uint_ne(rb, 0);
    switch (_i) {
    case 0:
        victim = rb;
        poke_be64("o.qcow2", l2, rb | QCOW2_OFLAG_COPIED);
        break;
    case 1:
        victim = h.l1_table_offset;
        poke_be64("o.qcow2", l2, victim | QCOW2_OFLAG_COPIED);
        break;
    case 2:
        victim = rb;
        poke_be64("o.qcow2", h.l1_table_offset, rb | QCOW2_OFLAG_COPIED);
        break;
    default:
        ck_assert_int_eq(stat(path_in("o.qcow2"), &st), 0);
        victim = (uint64_t)st.st_size; /* the next cluster to be handed out */
        poke_be64("o.qcow2", 40, victim); /* l1_table_offset */
        break;
    }
    if (_i < 3) {
        peek("o.qcow2", victim, before, sizeof(before));
    } else {
        memset(before, 0, sizeof(before)); /* past the end: reads as 0 */
    }

    img = df_image_open(path_in("o.qcow2"), DF_FMT_QCOW2, DF_OPEN_RDWR, &err);
    if (_i == 3) {
        /* an L1 table past the end is refused before anything is written */
        ck_assert_ptr_null(img);
    } else {
        ck_assert_msg(img != NULL, "%s", err.msg);
        memset(data, 0x77, sizeof(data));
        df_error_clear(&err);
        ck_assert_int_lt(df_image_pwrite(img, data, 4096, 0, &err), 0);
    }
    ck_assert_int_ne(err.code, DF_OK);
    ck_assert_msg(strstr(err.msg, "o.qcow2") != NULL, "%s", err.msg);
    if (_i != 2) { /* 2 fails earlier: the refcounts read as L2 entries */
        ck_assert_int_eq(err.code, DF_E_CORRUPT);
        ck_assert_msg(strstr(err.msg, _i == 3 ? "beyond the end of the file"
                                              : "overwrite"),
                      "%s", err.msg);
    }
    df_image_close(img, NULL);
    memset(after, 0, sizeof(after));
    ck_assert_int_eq(stat(path_in("o.qcow2"), &st), 0);
    if (victim < (uint64_t)st.st_size) {
        peek("o.qcow2", victim, after, sizeof(after));
    }
    ck_assert_mem_eq(before, after, sizeof(before));
}
END_TEST

static Suite *qcow2_suite(void)
{
    Suite *s = suite_create("qcow2");
    TCase *t;

    t = tcase_create("header");
    tcase_add_test(t, header_roundtrip_v3);
    tcase_add_test(t, header_v2_implies_16_bit_refcounts);
    tcase_add_test(t, header_validation_rejects);
    suite_add_tcase(s, t);

    t = tcase_create("arithmetic");
    tcase_add_loop_test(t, refcount_packing_all_widths, 0, 7);
    tcase_add_test(t, l1_arithmetic);
    tcase_add_test(t, refcount_metadata_fixed_point);
    suite_add_tcase(s, t);

    t = tcase_create("images");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, create_layout_like_qemu);
    tcase_add_loop_test(t, writes_match_reference, 0, 6);
    tcase_add_test(t, scattered_writes_4tib_stay_consistent);
    tcase_add_test(t, refcount_table_grows_with_small_clusters);
    tcase_add_test(t, concurrent_readers);
    tcase_add_test(t, mutated_images_fail_cleanly);
    tcase_add_loop_test(t, writes_never_overwrite_metadata, 0, 4);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(qcow2_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
