/* SPDX-License-Identifier: MIT */
/*
 * test_hostmap.c - the host extent map (src/engine/hostmap.c): built once
 * from SEEK_DATA/SEEK_HOLE, answered by lookup, and kept true by our own
 * writes (raw, and qcow2 preallocated with metadata, whose data clusters
 * are holes in the file until written).
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define UNIT_TMPDIR_NAME "hostmap"
#include "unit-tmpdir.h"

/* Does the file system here report holes?  (tmpfs and ext4 do.) */
static bool fs_has_holes(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    bool holes;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
    holes = lseek(fd, 0, SEEK_DATA) < 0;
    close(fd);
    unlink(path);
    return holes;
}

/* Status flags of @img at @off, and the run length through *@len. */
static unsigned status(struct df_image *img, uint64_t off, uint64_t *len)
{
    struct df_extent ext;
    struct df_error err = { 0 };

    ck_assert_int_eq(df_image_block_status(img, off, df_image_size(img) - off,
                                           false, &ext, &err), 0);
    if (len) {
        *len = ext.length;
    }
    return ext.flags & (DF_BLOCK_DATA | DF_BLOCK_ZERO);
}

static void put(struct df_image *img, uint64_t off, size_t len, int byte)
{
    struct df_error err = { 0 };
    unsigned char *b = malloc(len);

    ck_assert_ptr_nonnull(b);
    memset(b, byte, len);
    ck_assert_int_eq(df_image_pwrite(img, b, len, off, &err), 0);
    free(b);
}

/* The map itself: lookups, then writes that insert, extend and merge. */
START_TEST(map_lookup_and_merge)
{
    const char *p = path_in("m.raw");
    struct df_hostmap *m = df_hostmap_new();
    struct df_error err = { 0 };
    uint64_t run;
    bool data;
    int fd;

    if (!fs_has_holes(p)) {
        df_hostmap_free(m);
        return; /* nothing to map: every byte is data */
    }
    fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 16 << 20), 0);
    ck_assert_int_eq(pwrite(fd, "x", 1, 4 << 20), 1);

    ck_assert_int_eq(df_hostmap_lookup(m, fd, p, 0, 16 << 20, &data, &run,
                                       &err), 0);
    ck_assert(!data);
    ck_assert_uint_eq(run, 4 << 20);
    ck_assert_int_eq(df_hostmap_lookup(m, fd, p, 4 << 20, 1 << 20, &data,
                                       &run, &err), 0);
    ck_assert(data);
    ck_assert_uint_eq(run, 4096);

    /* a write the file system has not seen yet counts at once */
    df_hostmap_note_write(m, 8 << 20, 4096);
    ck_assert_int_eq(df_hostmap_lookup(m, fd, p, 8 << 20, 1 << 20, &data,
                                       &run, &err), 0);
    ck_assert(data);
    ck_assert_uint_eq(run, 4096);
    ck_assert_int_eq(df_hostmap_lookup(m, fd, p, (8 << 20) + 4096, 1 << 20,
                                       &data, &run, &err), 0);
    ck_assert(!data);
    /* a write bridging two extents merges the three into one */
    df_hostmap_note_write(m, (4 << 20) + 4096, (4 << 20) - 4096);
    ck_assert_int_eq(df_hostmap_lookup(m, fd, p, 4 << 20, 16 << 20, &data,
                                       &run, &err), 0);
    ck_assert(data);
    ck_assert_uint_eq(run, (4 << 20) + 4096);
    /* past the end of the file: a hole */
    ck_assert_int_eq(df_hostmap_lookup(m, fd, p, 20 << 20, 4096, &data,
                                       &run, &err), 0);
    ck_assert(!data);
    /* forgetting walks the file again: the noted writes never happened */
    df_hostmap_forget(m);
    ck_assert_int_eq(df_hostmap_lookup(m, fd, p, 8 << 20, 4096, &data, &run,
                                       &err), 0);
    ck_assert(!data);
    close(fd);
    df_hostmap_free(m);
}
END_TEST

/* A raw image: block status after our own writes sees them. */
START_TEST(raw_status_sees_own_writes)
{
    const char *p = path_in("r.raw");
    struct df_create_opts o;
    struct df_error err = { 0 };
    struct df_image *img;
    uint64_t len;

    if (!fs_has_holes(p)) {
        return;
    }
    df_create_opts_init(&o);
    o.format = DF_FMT_RAW;
    o.size = 8 << 20;
    ck_assert_int_eq(df_image_create(p, &o, &err), 0);
    img = df_image_open(p, DF_FMT_RAW, DF_OPEN_RDWR, &err);
    ck_assert_ptr_nonnull(img);
    ck_assert_uint_eq(status(img, 0, &len), DF_BLOCK_ZERO); /* builds it */
    ck_assert_uint_eq(len, 8 << 20);
    put(img, 1 << 20, 8192, 0xab);
    ck_assert_uint_eq(status(img, 0, &len), DF_BLOCK_ZERO);
    ck_assert_uint_eq(len, 1 << 20);
    ck_assert_uint_eq(status(img, 1 << 20, &len), DF_BLOCK_DATA);
    ck_assert_uint_eq(len, 8192);
    put(img, (1 << 20) + 8192, 4096, 0xcd); /* extends that extent */
    ck_assert_uint_eq(status(img, 1 << 20, &len), DF_BLOCK_DATA);
    ck_assert_uint_eq(len, 12288);
    ck_assert_int_eq(df_image_close(img, &err), 0);
}
END_TEST

/*
 * A qcow2 image with metadata preallocation: every cluster is mapped, and
 * the unwritten ones are holes that read as zeros.  After a write, the
 * written clusters are data, without waiting for the file system.
 */
START_TEST(qcow2_prealloc_status_sees_own_writes)
{
    const char *p = path_in("m.qcow2");
    struct df_create_opts o;
    struct df_error err = { 0 };
    struct df_image *img;
    uint64_t len;

    if (!fs_has_holes(p)) {
        return;
    }
    df_create_opts_init(&o);
    o.format = DF_FMT_QCOW2;
    o.size = 64 << 20;
    o.prealloc = DF_PREALLOC_METADATA;
    ck_assert_int_eq(df_image_create(p, &o, &err), 0);
    img = df_image_open(p, DF_FMT_QCOW2, DF_OPEN_RDWR, &err);
    ck_assert_ptr_nonnull(img);
    ck_assert_uint_eq(status(img, 0, &len), DF_BLOCK_DATA | DF_BLOCK_ZERO);
    ck_assert_uint_eq(len, 64 << 20);
    put(img, 2 << 20, 65536, 0x5a);
    ck_assert_uint_eq(status(img, 0, &len), DF_BLOCK_DATA | DF_BLOCK_ZERO);
    ck_assert_uint_eq(len, 2 << 20);
    ck_assert_uint_eq(status(img, 2 << 20, &len), DF_BLOCK_DATA);
    ck_assert_uint_eq(len, 65536);
    ck_assert_uint_eq(status(img, (2 << 20) + 65536, NULL),
                      DF_BLOCK_DATA | DF_BLOCK_ZERO);
    ck_assert_int_eq(df_image_close(img, &err), 0);
}
END_TEST

static Suite *hostmap_suite(void)
{
    Suite *s = suite_create("hostmap");
    TCase *t = tcase_create("hostmap");

    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, map_lookup_and_merge);
    tcase_add_test(t, raw_status_sees_own_writes);
    tcase_add_test(t, qcow2_prealloc_status_sees_own_writes);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(hostmap_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
