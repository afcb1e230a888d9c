/* SPDX-License-Identifier: MIT */
/*
 * test_fill.c - df_image_fill(): a file copied into a range of an image
 * that reads as zeros, with the image file's SHA-256 taken on a second
 * thread while it is written.  The digest must be that of the file as it
 * is afterwards, the guest must read the source back, what lies outside
 * the range must not change, the metadata must stay consistent, a cluster
 * of zeros must get no storage, and whatever this cannot do must leave
 * the image untouched.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "diskforge/ops.h"

#define UNIT_TMPDIR_NAME "fill"
#include "unit-tmpdir.h"

#define MIB (1024u * 1024u)
#define SIZE (32ull * MIB)
/* the range: from 1 MiB to 40,000 bytes short of the end, so that its last
 * cluster also holds bytes outside it */
#define OFF (1ull * MIB)
#define LEN (SIZE - OFF - 40000)

static void create(const char *name, enum df_format fmt, uint32_t cs,
                   int compat, bool lazy)
{
    struct df_create_opts o;
    struct df_error err = { 0 };

    df_create_opts_init(&o);
    o.format = fmt;
    o.size = SIZE;
    if (fmt == DF_FMT_QCOW2) {
        o.cluster_size = cs;
        o.compat = compat;
        o.lazy_refcounts = lazy;
    }
    ck_assert_msg(df_image_create(path_in(name), &o, &err) == 0, "%s",
                  err.msg);
}

static struct df_image *open_rw(const char *name)
{
    struct df_error err = { 0 };
    struct df_image *img = df_image_open(path_in(name), DF_FMT_AUTO,
                                         DF_OPEN_RDWR, &err);

    ck_assert_msg(img != NULL, "%s", err.msg);
    return img;
}

static void put(struct df_image *img, uint64_t off, size_t len, int byte)
{
    struct df_error err = { 0 };
    unsigned char *b = malloc(len);

    ck_assert_ptr_nonnull(b);
    memset(b, byte, len);
    ck_assert_msg(df_image_pwrite(img, b, len, off, &err) == 0, "%s",
                  err.msg);
    free(b);
}

/* SHA-256 of a whole file */
static void file_sha(const char *path, unsigned char out[DF_SHA256_LEN])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char buf[65536];
    unsigned int n = 0;
    ssize_t r;
    int fd = open(path, O_RDONLY);

    ck_assert_int_ge(fd, 0);
    ck_assert_ptr_nonnull(md);
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    while ((r = read(fd, buf, sizeof(buf))) > 0) {
        EVP_DigestUpdate(md, buf, (size_t)r);
    }
    ck_assert_int_eq(r, 0);
    EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
    close(fd);
}

/*
 * The source: LEN bytes, sparse, as a file system image looks: runs of
 * data with all-zero 4 KiB blocks and a whole zero cluster inside them,
 * holes between, and data in the range's last, partial cluster.  Its
 * bytes also go into @ref.  Returns the count of non-zero 4 KiB blocks.
 */
static uint64_t make_source(const char *name, unsigned char *ref)
{
    static const struct {
        uint64_t off, len;
    } runs[] = {
        { 0, 3 * 65536 },                 /* at the start of the range */
        { 5 * MIB + 4096, 300000 },      /* unaligned, across clusters */
        { 9 * MIB, 4 * 65536 },           /* a zero cluster inside (below) */
        { 12 * MIB, 4 * MIB + 12288 },    /* longer than a write (1 MiB) */
        { 17 * MIB + 512, 1000 },        /* a few bytes in a block */
        { LEN - 20000, 20000 },          /* the last, partial cluster */
    };
    unsigned seed = 77;
    uint64_t blocks = 0;
    int fd = open(path_in(name), O_RDWR | O_CREAT | O_TRUNC, 0600);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)LEN), 0);
    memset(ref, 0, LEN);
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        for (uint64_t k = 0; k < runs[i].len; k++) {
            ref[runs[i].off + k] = (unsigned char)(rand_r(&seed) | 1);
        }
    }
    /* zeros inside the data: a 4 KiB block, and a whole cluster */
    memset(ref + 65536 + 8192, 0, 4096);
    memset(ref + 9 * MIB + 65536, 0, 65536);
    /* written as data (one extent), zeros included */
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        ck_assert_int_eq(pwrite(fd, ref + runs[i].off, runs[i].len,
                                (off_t)runs[i].off),
                         (ssize_t)runs[i].len);
    }
    close(fd);
    for (uint64_t b = 0; b < LEN; b += 4096) {
        /* blocks at multiples of 4 KiB of the image */
        uint64_t a = b, z = b + 4096 > LEN ? LEN : b + 4096;
        bool nz = false;
        for (uint64_t k = a; k < z && !nz; k++) {
            nz = ref[k] != 0;
        }
        blocks += nz ? z - a : 0;
    }
    return blocks;
}

struct fmt_case {
    enum df_format fmt;
    uint32_t cs;
    int compat;
    bool lazy;
};

static const struct fmt_case cases[] = {
    { DF_FMT_QCOW2, 65536, 3, false },
    { DF_FMT_QCOW2, 65536, 2, false },
    { DF_FMT_QCOW2, 4096, 3, true },
    { DF_FMT_RAW, 0, 0, false },
};

/* The image as a guest reads it. */
static unsigned char *guest(const char *name)
{
    struct df_error err = { 0 };
    struct df_image *img = df_image_open(path_in(name), DF_FMT_AUTO, 0,
                                         &err);
    unsigned char *b = malloc(SIZE);

    ck_assert_msg(img != NULL, "%s", err.msg);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(df_image_pread(img, b, SIZE, 0, &err), 0);
    df_image_close(img, NULL);
    return b;
}

static void consistent(const char *name, enum df_format fmt)
{
    struct df_error err = { 0 };
    struct df_check_result res;

    if (fmt != DF_FMT_QCOW2) {
        return;
    }
    ck_assert_msg(df_check(path_in(name), DF_FMT_QCOW2, DF_REPAIR_NONE, &res,
                           NULL, NULL, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(res.corruptions, 0);
    ck_assert_uint_eq(res.leaks, 0);
}

START_TEST(fill_writes_and_hashes)
{
    const struct fmt_case *c = &cases[_i];
    unsigned char *ref = malloc(LEN), *before, *after;
    unsigned char want[DF_SHA256_LEN];
    struct df_error err = { 0 };
    struct df_fill f = { 0 };
    struct df_image *img;
    struct df_extent ext;
    uint64_t blocks;

    ck_assert_ptr_nonnull(ref);
    create("d.img", c->fmt, c->cs, c->compat, c->lazy);
    img = open_rw("d.img");
    /* a table at the start and one at the end, as a GPT has, the last
     * in the cluster the range ends in */
    put(img, 0, 17408, 0xa1);
    put(img, SIZE - 30000, 30000, 0xb2);
    ck_assert_int_eq(df_image_close(img, &err), 0);
    before = guest("d.img");
    blocks = make_source("src", ref);

    img = open_rw("d.img");
    f.fd = open(path_in("src"), O_RDONLY);
    ck_assert_int_ge(f.fd, 0);
    ck_assert_msg(df_image_fill(img, OFF, LEN, &f, &err) == 0, "%s",
                  err.msg);
    ck_assert_uint_eq(f.data, blocks);
    /* a cluster of zeros in the source gets no storage */
    ck_assert_int_eq(df_image_block_status(img, OFF + 9 * MIB + 65536, 65536,
                                           true, &ext, &err), 0);
    ck_assert(ext.flags & DF_BLOCK_ZERO);
    if (c->fmt == DF_FMT_QCOW2) {
        ck_assert(!(ext.flags & DF_BLOCK_DATA));
    }
    ck_assert_int_eq(df_image_close(img, &err), 0);
    close(f.fd);

    /* the digest is the file's, closed */
    file_sha(path_in("d.img"), want);
    ck_assert_mem_eq(f.sha256, want, DF_SHA256_LEN);
    after = guest("d.img");
    ck_assert_mem_eq(after, before, OFF);
    ck_assert_msg(memcmp(after + OFF, ref, LEN) == 0, "the range differs");
    ck_assert_mem_eq(after + OFF + LEN, before + OFF + LEN, 40000);
    consistent("d.img", c->fmt);
    free(ref);
    free(before);
    free(after);
}
END_TEST

/* Clusters freed inside the file, and zero clusters that keep their
 * storage: both hold old bytes, which must not show through. */
START_TEST(fill_reused_clusters_read_as_the_source)
{
    unsigned char *ref = malloc(LEN), *after;
    unsigned char want[DF_SHA256_LEN];
    struct df_error err = { 0 };
    struct df_fill f = { 0 };
    struct df_image *img;

    ck_assert_ptr_nonnull(ref);
    create("r.qcow2", DF_FMT_QCOW2, 65536, 3, false);
    img = open_rw("r.qcow2");
    put(img, 0, 65536, 0x11);
    put(img, OFF, 12 * MIB, 0xee); /* old bytes everywhere */
    /* half freed (their clusters reused by the fill), half zero clusters
     * that keep their host clusters */
    ck_assert_int_eq(df_image_write_zeroes(img, OFF, 6 * MIB,
                                           DF_ZERO_MAY_UNMAP, &err), 0);
    ck_assert_int_eq(df_image_write_zeroes(img, OFF + 6 * MIB, 6 * MIB, 0,
                                           &err), 0);
    ck_assert_int_eq(df_image_close(img, &err), 0);
    make_source("src", ref);

    img = open_rw("r.qcow2");
    f.fd = open(path_in("src"), O_RDONLY);
    ck_assert_int_ge(f.fd, 0);
    ck_assert_msg(df_image_fill(img, OFF, LEN, &f, &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(df_image_close(img, &err), 0);
    close(f.fd);
    file_sha(path_in("r.qcow2"), want);
    ck_assert_mem_eq(f.sha256, want, DF_SHA256_LEN);
    after = guest("r.qcow2");
    ck_assert_msg(memcmp(after + OFF, ref, LEN) == 0,
                  "old bytes show through");
    consistent("r.qcow2", DF_FMT_QCOW2);
    free(ref);
    free(after);
}
END_TEST

static void unchanged_after_refusal(const char *name, uint64_t off)
{
    unsigned char a[DF_SHA256_LEN], b[DF_SHA256_LEN];
    unsigned char *ref = malloc(LEN);
    struct df_error err = { 0 };
    struct df_fill f = { 0 };
    struct df_image *img;

    ck_assert_ptr_nonnull(ref);
    make_source("src", ref);
    file_sha(path_in(name), a);
    img = open_rw(name);
    f.fd = open(path_in("src"), O_RDONLY);
    ck_assert_int_eq(df_image_fill(img, off, LEN, &f, &err),
                     -DF_E_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, name));
    ck_assert_int_eq(df_image_close(img, NULL), 0);
    close(f.fd);
    file_sha(path_in(name), b);
    ck_assert_mem_eq(a, b, DF_SHA256_LEN);
    free(ref);
}

START_TEST(fill_refuses_what_it_cannot_do)
{
    struct df_create_opts o;
    struct df_error err = { 0 };
    struct df_image *img;

    /* one byte in the range that is not zero */
    create("n.qcow2", DF_FMT_QCOW2, 65536, 3, false);
    img = open_rw("n.qcow2");
    put(img, OFF + 7 * MIB + 3, 1, 0x01);
    df_image_close(img, NULL);
    unchanged_after_refusal("n.qcow2", OFF);

    /* an overlay: its backing decides what the range reads */
    df_create_opts_init(&o);
    o.backing_file = "n.qcow2";
    o.backing_format = DF_FMT_QCOW2;
    ck_assert_msg(df_image_create(path_in("o.qcow2"), &o, &err) == 0, "%s",
                  err.msg);
    unchanged_after_refusal("o.qcow2", OFF);

    /* a range past the end is bad usage, not a fallback */
    img = open_rw("n.qcow2");
    {
        struct df_fill f = { .fd = -1 };
        ck_assert_int_eq(df_image_fill(img, SIZE - 4096, LEN, &f, &err),
                         -DF_E_INVAL);
    }
    df_image_close(img, NULL);
}
END_TEST

static int stop_soon(void *opaque, uint64_t done, uint64_t total)
{
    int *calls = opaque;
    (void)done;
    (void)total;
    return ++*calls > 2;
}

/* Cancelled half-way: an error, the hashing thread gone, the image
 * consistent. */
START_TEST(fill_cancelled)
{
    unsigned char *ref = malloc(LEN);
    struct df_error err = { 0 };
    int calls = 0;
    struct df_fill f = { .progress = stop_soon, .opaque = &calls };
    struct df_image *img;

    ck_assert_ptr_nonnull(ref);
    create("c.qcow2", DF_FMT_QCOW2, 65536, 3, false);
    make_source("src", ref);
    img = open_rw("c.qcow2");
    f.fd = open(path_in("src"), O_RDONLY);
    ck_assert_int_eq(df_image_fill(img, OFF, LEN, &f, &err),
                     -DF_E_CANCELED);
    ck_assert_ptr_nonnull(strstr(err.msg, "interrupted"));
    ck_assert_int_eq(df_image_close(img, NULL), 0);
    close(f.fd);
    consistent("c.qcow2", DF_FMT_QCOW2);
    free(ref);
}
END_TEST

static Suite *fill_suite(void)
{
    Suite *s = suite_create("fill");
    TCase *t = tcase_create("fill");

    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_loop_test(t, fill_writes_and_hashes, 0,
                        (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(t, fill_reused_clusters_read_as_the_source);
    tcase_add_test(t, fill_refuses_what_it_cannot_do);
    tcase_add_test(t, fill_cancelled);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fill_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
