/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of df_measure(): the figures of `qemu-img measure`.
 *
 * The expected numbers of the "size" table were printed by qemu-img 7.2
 * (`qemu-img measure -O FMT -o OPTS --size SIZE`).  The "source" tests
 * build small images with the engine and check the rule qemu-img applies:
 * required = metadata for the whole virtual size + one cluster for every
 * cluster holding a byte of non-zero data; the same images were measured
 * with qemu-img, which printed the numbers in the comments.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskforge/image.h"
#include "diskforge/ops.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)

#define UNIT_TMPDIR_NAME "measure"
#include "unit-tmpdir.h"

/* ---- empty images of a size ---- */

static const struct {
    enum df_format fmt;
    uint64_t size;
    uint32_t cluster_size;
    int refcount_bits;
    enum df_prealloc prealloc;
    uint64_t required, fully;
} sizes[] = {
    { DF_FMT_QCOW2, GiB, 65536, 16, DF_PREALLOC_OFF, 393216, 1074135040 },
    { DF_FMT_QCOW2, GiB, 2 * MiB, 16, DF_PREALLOC_OFF, 10485760,
      1084227584 },
    { DF_FMT_QCOW2, TiB, 65536, 16, DF_PREALLOC_OFF, 168034304,
      UINT64_C(1099679662080) },
    { DF_FMT_QCOW2, TiB, 2 * MiB, 64, DF_PREALLOC_OFF, 16777216,
      UINT64_C(1099528404992) },
    { DF_FMT_QCOW2, 200 * TiB, 65536, 16, DF_PREALLOC_OFF,
      UINT64_C(33559674880), UINT64_C(219935885230080) },
    { DF_FMT_QCOW2, 1000, 65536, 16, DF_PREALLOC_OFF, 327680, 393216 },
    { DF_FMT_QCOW2, 0, 65536, 16, DF_PREALLOC_OFF, 196608, 196608 },
    { DF_FMT_QCOW2, MiB, 4096, 16, DF_PREALLOC_OFF, 20480, 1069056 },
    { DF_FMT_QCOW2, GiB, 65536, 16, DF_PREALLOC_METADATA, 393216,
      1074135040 },
    { DF_FMT_QCOW2, GiB, 65536, 16, DF_PREALLOC_FULL, 1074135040,
      1074135040 },
    { DF_FMT_QCOW2, GiB, MiB, 16, DF_PREALLOC_METADATA, 5242880,
      1078984704 },
    { DF_FMT_RAW, GiB, 0, 0, DF_PREALLOC_OFF, GiB, GiB },
    { DF_FMT_RAW, 1000, 0, 0, DF_PREALLOC_OFF, 1024, 1024 },
};

START_TEST(measure_size)
{
    struct df_create_opts o;
    struct df_measure m;
    struct df_error err = { 0 };

    df_create_opts_init(&o);
    o.format = sizes[_i].fmt;
    o.size = sizes[_i].size;
    if (sizes[_i].cluster_size) {
        o.cluster_size = sizes[_i].cluster_size;
        o.refcount_bits = sizes[_i].refcount_bits;
    }
    o.prealloc = sizes[_i].prealloc;
    ck_assert_int_eq(df_measure(NULL, &o, &m, &err), 0);
    ck_assert_uint_eq(m.required, sizes[_i].required);
    ck_assert_uint_eq(m.fully_allocated, sizes[_i].fully);
    ck_assert(!m.has_bitmaps);
}
END_TEST

START_TEST(measure_refuses)
{
    struct df_create_opts o;
    struct df_measure m;
    struct df_error err = { 0 };

    df_create_opts_init(&o);
    o.size = UINT64_C(1) << 60; /* 1E: an L1 table over 32 MiB */
    ck_assert_int_eq(df_measure(NULL, &o, &m, &err), -DF_E_INVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "too large"));

    df_error_clear(&err);
    o.size = GiB;
    o.cluster_size = 3000;
    ck_assert_int_eq(df_measure(NULL, &o, &m, &err), -DF_E_INVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "cluster size"));

    df_error_clear(&err);
    o.cluster_size = 65536;
    o.refcount_bits = 3;
    ck_assert_int_eq(df_measure(NULL, &o, &m, &err), -DF_E_INVAL);

    o.refcount_bits = 16;
    o.size = UINT64_MAX;
    ck_assert_int_eq(df_measure(NULL, &o, &m, NULL), -DF_E_INVAL);
    o.format = DF_FMT_RAW;
    ck_assert_int_eq(df_measure(NULL, &o, &m, NULL), -DF_E_INVAL);
}
END_TEST

/* ---- from a source ---- */

static struct df_image *make_image(const char *name, enum df_format fmt,
                                   uint64_t size)
{
    struct df_create_opts o;
    struct df_error err = { 0 };
    struct df_image *img;

    df_create_opts_init(&o);
    o.format = fmt;
    o.size = size;
    ck_assert_msg(df_image_create(path_in(name), &o, &err) == 0, "%s",
                  err.msg);
    img = df_image_open(path_in(name), fmt, DF_OPEN_RDWR, &err);
    ck_assert_msg(img != NULL, "%s", err.msg);
    return img;
}

static void put(struct df_image *img, uint64_t off, size_t len, int byte)
{
    struct df_error err = { 0 };
    unsigned char *buf = malloc(len);

    ck_assert_ptr_nonnull(buf);
    memset(buf, byte, len);
    ck_assert_msg(df_image_pwrite(img, buf, len, off, &err) == 0, "%s",
                  err.msg);
    free(buf);
}

/* What a qcow2 target with default options needs for @src. */
static struct df_measure measure_qcow2(struct df_image *src, int compat,
                                       const char *backing)
{
    struct df_create_opts o;
    struct df_measure m;
    struct df_error err = { 0 };

    df_create_opts_init(&o);
    o.compat = compat;
    o.backing_file = backing;
    ck_assert_msg(df_measure(src, &o, &m, &err) == 0, "%s", err.msg);
    return m;
}

/* Metadata a default qcow2 target has for @size bytes (no data). */
static uint64_t metadata_for(uint64_t size)
{
    struct df_create_opts o;
    struct df_measure m;

    df_create_opts_init(&o);
    o.size = size;
    ck_assert_int_eq(df_measure(NULL, &o, &m, NULL), 0);
    return m.required;
}

START_TEST(measure_qcow2_source)
{
    struct df_image *img = make_image("s.qcow2", DF_FMT_QCOW2, 64 * MiB);
    struct df_error err = { 0 };
    struct df_create_opts o;
    struct df_measure m;

    put(img, 0, 1, 0x11);                /* cluster 0 */
    put(img, MiB + 100, 70000, 0x22);    /* clusters 16 and 17 */
    put(img, 10 * MiB, 65536, 0x33);     /* cluster 160 ... */
    ck_assert_int_eq(df_image_write_zeroes(img, 10 * MiB, 65536, 0, &err),
                     0);                 /* ... made a zero cluster */
    ck_assert_int_eq(df_image_write_zeroes(img, 20 * MiB, 65536, 0, &err),
                     0);
    ck_assert_int_eq(df_image_flush(img, &err), 0);

    /* qemu-img measure -O qcow2: required size: 524288 */
    m = measure_qcow2(img, 3, NULL);
    ck_assert_uint_eq(m.required, metadata_for(64 * MiB) + 3 * 65536);
    ck_assert_uint_eq(m.required, 524288);
    ck_assert_uint_eq(m.fully_allocated, 64 * MiB + metadata_for(64 * MiB));
    ck_assert(m.has_bitmaps);
    ck_assert_uint_eq(m.bitmaps, 0);

    /* no "bitmaps size" for a v2 target, nor with a raw target */
    ck_assert(!measure_qcow2(img, 2, NULL).has_bitmaps);
    df_create_opts_init(&o);
    o.format = DF_FMT_RAW;
    ck_assert_int_eq(df_measure(img, &o, &m, &err), 0);
    ck_assert_uint_eq(m.required, 64 * MiB);
    ck_assert_uint_eq(m.fully_allocated, 64 * MiB);
    ck_assert(!m.has_bitmaps);

    /* with a backing file every cluster counts */
    m = measure_qcow2(img, 3, "base.qcow2");
    ck_assert_uint_eq(m.required, m.fully_allocated);
    df_image_close(img, NULL);
}
END_TEST

START_TEST(measure_raw_source)
{
    struct df_image *img = make_image("s.raw", DF_FMT_RAW, 16 * MiB);
    struct df_measure m;

    put(img, 5000, 4096, 0x44);          /* blocks 4K..12K: cluster 0 */
    put(img, 3 * 65536 - 10, 20, 0x55);  /* clusters 2 and 3 */
    put(img, 8 * MiB, 8192, 0);          /* allocated zeros: data too */
    df_image_close(img, NULL);
    img = df_image_open(path_in("s.raw"), DF_FMT_RAW, 0, NULL);
    ck_assert_ptr_nonnull(img);

    /* qemu-img measure -f raw -O qcow2: required size: 589824 */
    m = measure_qcow2(img, 3, NULL);
    ck_assert_uint_eq(m.required, metadata_for(16 * MiB) + 4 * 65536);
    ck_assert_uint_eq(m.required, 589824);
    ck_assert(!m.has_bitmaps); /* the source is not qcow2 */
    df_image_close(img, NULL);
}
END_TEST

static Suite *measure_suite(void)
{
    Suite *s = suite_create("measure");
    TCase *t;

    t = tcase_create("size");
    tcase_add_loop_test(t, measure_size, 0, sizeof(sizes) / sizeof(sizes[0]));
    tcase_add_test(t, measure_refuses);
    suite_add_tcase(s, t);

    t = tcase_create("source");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, measure_qcow2_source);
    tcase_add_test(t, measure_raw_source);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(measure_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
