/* SPDX-License-Identifier: MIT */
/*
 * test_convert.c - df_convert()'s guest digest (opts.guest_sha256), taken
 * while the windows are written, equals df_digest() of the output and of
 * the source, on every path through convert: sparse windows with zero
 * runs skipped, -S 0, a backing file (-B), an existing output (-n),
 * compressed output, and one CPU or several.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define UNIT_TMPDIR_NAME "convert"
#include "unit-tmpdir.h"

#define MiB (1024u * 1024u)

static struct df_image *open_rw(const char *path)
{
    struct df_error err = { 0 };
    struct df_image *img = df_image_open(path, DF_FMT_AUTO, DF_OPEN_RDWR,
                                         &err);

    ck_assert_msg(img, "%s: %s", path, err.msg);
    return img;
}

static void put(struct df_image *img, uint64_t off, size_t len, int seed)
{
    struct df_error err = { 0 };
    unsigned char *b = malloc(len);

    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < len; i++) {
        b[i] = (unsigned char)(seed + i * 7 + (i >> 9));
    }
    ck_assert_int_eq(df_image_pwrite(img, b, len, off, &err), 0);
    free(b);
}

/*
 * A 40 MiB qcow2 with data scattered over more than one window: small
 * unaligned extents, a large run, zeroed ranges, and data at the end.
 */
static void make_source(const char *path)
{
    struct df_create_opts o;
    struct df_error err = { 0 };
    struct df_image *img;

    df_create_opts_init(&o);
    o.size = 40 * MiB;
    ck_assert_int_eq(df_image_create(path, &o, &err), 0);
    img = open_rw(path);
    for (unsigned i = 0; i < 200; i++) {
        put(img, (uint64_t)i * 97 * 1024 + 512 * (i % 3), 512 + 700 * (i % 5),
            (int)i);
    }
    put(img, 24 * MiB + 4096, 5 * MiB + 123, 9);
    ck_assert_int_eq(df_image_write_zeroes(img, 25 * MiB, 2 * MiB, 0, &err),
                     0);
    put(img, 40 * MiB - 1000, 1000, 3);
    ck_assert_int_eq(df_image_close(img, &err), 0);
}

static void digest_of(const char *path, unsigned char d[DF_SHA256_LEN])
{
    struct df_error err = { 0 };
    struct df_image *img = df_image_open(path, DF_FMT_AUTO, 0, &err);

    ck_assert_msg(img, "%s: %s", path, err.msg);
    ck_assert_int_eq(df_digest(img, d, NULL, NULL, &err), 0);
    ck_assert_int_eq(df_image_close(img, &err), 0);
}

/* Convert with @o and check the digest it took against both images. */
static void convert_and_check(const char *src, const char *dst,
                              struct df_convert_opts *o)
{
    unsigned char taken[DF_SHA256_LEN], want[DF_SHA256_LEN],
        out[DF_SHA256_LEN];
    struct df_error err = { 0 };

    memset(taken, 0, sizeof(taken));
    o->guest_sha256 = taken;
    ck_assert_msg(df_convert(src, dst, o, &err) == 0, "%s", err.msg);
    digest_of(src, want);
    digest_of(dst, out);
    ck_assert_mem_eq(taken, want, DF_SHA256_LEN);
    ck_assert_mem_eq(taken, out, DF_SHA256_LEN);
}

START_TEST(digest_on_every_path)
{
    char src[300], base[300];
    struct df_convert_opts o;

    /* path_in() reuses its buffers: keep the source's name */
    snprintf(src, sizeof(src), "%s", path_in("src.qcow2"));
    make_source(src);

    df_convert_opts_init(&o);
    o.target.format = DF_FMT_RAW;
    convert_and_check(src, path_in("a.raw"), &o);

    df_convert_opts_init(&o);
    o.target.cluster_size = 4096;
    convert_and_check(path_in("a.raw"), path_in("b.qcow2"), &o);

    df_convert_opts_init(&o);
    o.sparse_size = 0;
    convert_and_check(src, path_in("c.qcow2"), &o);

    df_convert_opts_init(&o);
    o.compress = true;
    convert_and_check(src, path_in("d.qcow2"), &o);

    /* -n into an image that holds other data */
    df_convert_opts_init(&o);
    o.no_create = true;
    {
        struct df_create_opts co;
        struct df_error err = { 0 };
        struct df_image *img;
        df_create_opts_init(&co);
        co.size = 48 * MiB;
        ck_assert_int_eq(df_image_create(path_in("e.qcow2"), &co, &err), 0);
        img = open_rw(path_in("e.qcow2"));
        put(img, 0, 30 * MiB, 77);
        ck_assert_int_eq(df_image_close(img, &err), 0);
    }
    /* the digest covers the source's size, not the existing output's */
    {
        unsigned char taken[DF_SHA256_LEN], want[DF_SHA256_LEN];
        struct df_error err = { 0 };
        o.target.format = DF_FMT_QCOW2;
        o.guest_sha256 = taken;
        ck_assert_msg(df_convert(src, path_in("e.qcow2"), &o, &err) == 0,
                      "%s", err.msg);
        digest_of(src, want);
        ck_assert_mem_eq(taken, want, DF_SHA256_LEN);
    }

    /* -B: the output holds only what differs from its base */
    snprintf(base, sizeof(base), "%s", path_in("a.raw"));
    df_convert_opts_init(&o);
    o.target.backing_file = base;
    o.target.backing_format = DF_FMT_RAW;
    {
        struct df_image *img;
        struct df_error err = { 0 };
        struct df_create_opts co;
        df_create_opts_init(&co);
        co.backing_file = base;
        co.backing_format = DF_FMT_RAW;
        ck_assert_int_eq(df_image_create(path_in("ov.qcow2"), &co, &err), 0);
        img = open_rw(path_in("ov.qcow2"));
        put(img, 3 * MiB, 100000, 5);
        ck_assert_int_eq(df_image_write_zeroes(img, 24 * MiB, MiB, 0, &err),
                         0);
        ck_assert_int_eq(df_image_close(img, &err), 0);
    }
    convert_and_check(path_in("ov.qcow2"), path_in("f.qcow2"), &o);
}
END_TEST

/* An image that is all zeros, and an empty one. */
START_TEST(digest_of_zeros)
{
    struct df_create_opts co;
    struct df_convert_opts o;
    struct df_error err = { 0 };

    df_create_opts_init(&co);
    co.size = 9 * MiB + 512;
    ck_assert_int_eq(df_image_create(path_in("z.qcow2"), &co, &err), 0);
    df_convert_opts_init(&o);
    o.target.format = DF_FMT_RAW;
    convert_and_check(path_in("z.qcow2"), path_in("z.raw"), &o);
    co.size = 0;
    ck_assert_int_eq(df_image_create(path_in("e.qcow2"), &co, &err), 0);
    df_convert_opts_init(&o);
    convert_and_check(path_in("e.qcow2"), path_in("e2.qcow2"), &o);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("convert");
    TCase *t = tcase_create("digest");
    SRunner *r;
    int failed;

    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, digest_on_every_path);
    tcase_add_test(t, digest_of_zeros);
    suite_add_tcase(s, t);
    r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
