/* SPDX-License-Identifier: MIT */
/*
 * compare.c - df_compare(): are two images' guest-visible bytes equal?
 *
 * Semantics follow `qemu-img compare`: what matters is what a guest reads,
 * so an unallocated range, a zero cluster and explicitly written zeros are
 * all equal.  Both images are walked by block status (through their
 * backing chains); where both sides read as zeros nothing is read.  When
 * the sizes differ, the bytes past the end of the shorter image must read
 * as zeros in the longer one, unless @strict makes the size difference a
 * mismatch by itself.
 *
 * Unlike qemu-img, which reports the first differing 512-byte sector, the
 * mismatch offset is the exact first differing byte.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Scanning granule: skip equal/zero blocks fast, then find the byte. */
#define SCAN_BLOCK 4096

struct cmp {
    struct df_image *a, *b; /* for messages */
    unsigned char *buf[2];
    uint64_t total; /* the larger virtual size, for progress */
    df_progress_fn progress;
    void *opaque;
};

static size_t first_nonzero(const unsigned char *p, size_t len)
{
    size_t i = 0;

    while (i < len && df_is_zero(p + i, DF_MIN(len - i, SCAN_BLOCK))) {
        i += DF_MIN(len - i, SCAN_BLOCK);
    }
    while (i < len && !p[i]) {
        i++;
    }
    return i;
}

static size_t first_difference(const unsigned char *a, const unsigned char *b,
                               size_t len)
{
    size_t i = 0;

    while (i < len &&
           memcmp(a + i, b + i, DF_MIN(len - i, SCAN_BLOCK)) == 0) {
        i += DF_MIN(len - i, SCAN_BLOCK);
    }
    while (i < len && a[i] == b[i]) {
        i++;
    }
    return i;
}

/*
 * How far from @off (at most to @end) @img keeps one kind, and whether
 * that run reads as zeros.  A NULL @img stands for the zeros past the end
 * of the shorter image.
 */
static int status(struct df_image *img, uint64_t off, uint64_t end,
                  uint64_t *len, bool *zero, struct df_error *err)
{
    struct df_extent ext;
    int ret;

    if (!img) {
        *len = end - off;
        *zero = true;
        return 0;
    }
    ret = df_image_block_status(img, off, end - off, true, &ext, err);
    if (ret < 0) {
        return ret;
    }
    if (ext.length == 0) {
        return df_fail(err, DF_E_IO, "'%s': block status at offset %llu "
                       "returned an empty range", df_image_path(img),
                       (unsigned long long)off);
    }
    *len = DF_MIN(ext.length, end - off);
    *zero = ext.flags & DF_BLOCK_ZERO;
    return 0;
}

static int report(struct cmp *c, uint64_t done, struct df_error *err)
{
    if (c->progress && c->progress(c->opaque, done, c->total)) {
        return df_fail(err, DF_E_CANCELED, "comparing '%s' and '%s': "
                       "canceled", df_image_path(c->a), df_image_path(c->b));
    }
    return 0;
}

/*
 * Compare [@off, @end) of @img[0] and @img[1] (either may be NULL: zeros).
 * On the first difference, records it in @res and stops.
 */
static int compare_range(struct cmp *c, struct df_image *img[2], uint64_t off,
                         uint64_t end, struct df_compare_result *res,
                         struct df_error *err)
{
    while (off < end) {
        uint64_t len[2], run;
        bool zero[2];
        int ret;

        for (int i = 0; i < 2; i++) {
            ret = status(img[i], off, end, &len[i], &zero[i], err);
            if (ret < 0) {
                return ret;
            }
        }
        run = DF_MIN(len[0], len[1]);
        if (zero[0] && zero[1]) {
            off += run;
            ret = report(c, off, err);
            if (ret < 0) {
                return ret;
            }
            continue;
        }
        for (uint64_t stop = off + run; off < stop;) {
            size_t n = (size_t)DF_MIN(stop - off, (uint64_t)DF_CHUNK), at;
            for (int i = 0; i < 2; i++) {
                if (!zero[i]) {
                    ret = df_image_pread(img[i], c->buf[i], n, off, err);
                    if (ret < 0) {
                        return ret;
                    }
                }
            }
            if (zero[0] || zero[1]) {
                at = first_nonzero(c->buf[zero[0] ? 1 : 0], n);
            } else {
                at = first_difference(c->buf[0], c->buf[1], n);
            }
            if (at < n) {
                res->identical = false;
                res->mismatch_offset = off + at;
                return 0;
            }
            off += n;
            ret = report(c, off, err);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

int df_compare(struct df_image *a, struct df_image *b, bool strict,
               struct df_compare_result *res, df_progress_fn progress,
               void *opaque, struct df_error *err)
{
    uint64_t sa = df_image_size(a), sb = df_image_size(b);
    uint64_t common = DF_MIN(sa, sb);
    struct cmp c = { .a = a, .b = b, .total = DF_MAX(sa, sb),
                     .progress = progress, .opaque = opaque };
    struct df_image *both[2] = { a, b };
    int ret;

    memset(res, 0, sizeof(*res));
    res->identical = true;
    res->size_mismatch = sa != sb;
    if (res->size_mismatch && strict) {
        res->identical = false;
        res->mismatch_offset = common;
        return 0;
    }
    c.buf[0] = malloc(DF_CHUNK);
    c.buf[1] = malloc(DF_CHUNK);
    if (!c.buf[0] || !c.buf[1]) {
        ret = df_fail(err, DF_E_NOMEM, "out of memory comparing '%s' and "
                      "'%s'", df_image_path(a), df_image_path(b));
        goto out;
    }
    ret = report(&c, 0, err);
    if (ret == 0) {
        ret = compare_range(&c, both, 0, common, res, err);
    }
    if (ret == 0 && res->identical && res->size_mismatch) {
        /* the longer image's tail against nothing, i.e. zeros */
        struct df_image *tail[2] = { sa > sb ? a : b, NULL };
        ret = compare_range(&c, tail, common, c.total, res, err);
    }
out:
    free(c.buf[0]);
    free(c.buf[1]);
    return ret;
}
