/* SPDX-License-Identifier: MIT */
/*
 * measure.c - df_measure(): the file size a new image needs, computed the
 * way `qemu-img measure` (7.2) does, so that both print the same numbers.
 *
 * qcow2: "fully allocated" is every data cluster of the virtual size plus
 * the metadata for it: the header cluster, L2 tables for every cluster,
 * an L1 table rounded up to whole clusters, and the refcount table and
 * blocks counting all of those and themselves (the fixed point of
 * qcow2_refcount_metadata_clusters()).  "Required" keeps that metadata
 * and counts only the data clusters the content needs: clusters holding
 * a byte the source's block status calls data and not zero, or every
 * cluster with preallocation=falloc/full, or with a backing file (the new
 * image may share nothing with its backing).
 *
 * raw: both figures are the size (with no source, rounded up to whole
 * 512-byte sectors), as qemu-img says: unallocated sectors count.
 */
#include <string.h>

#include "internal.h"
#include "qcow2/qcow2.h"

/* Size of the image qcow2 preallocation=full would make for @vsize. */
static uint64_t qcow2_full_size(uint64_t vsize, uint64_t cs,
                                uint32_t refcount_order)
{
    uint64_t meta = cs; /* the header */
    uint64_t l2_entries = DF_ROUND_UP(vsize / cs, cs / 8);
    uint64_t l1_entries = DF_ROUND_UP(l2_entries * 8 / cs, cs / 8);

    meta += l2_entries * 8 + l1_entries * 8;
    meta += qcow2_refcount_metadata_clusters((meta + vsize) / cs, cs,
                                             refcount_order, false, NULL) *
            cs;
    return meta + vsize;
}

/*
 * Bytes of whole clusters of @src holding data that is not zero, counted
 * the way qemu-img does: a data range is extended to the end of its last
 * cluster, and one that starts inside a cluster counts that cluster whole.
 * The ranges are qemu's (df_map_next()), so the same bytes count as data.
 */
static int data_clusters(struct df_image *src, uint64_t cs, uint64_t *bytes,
                         struct df_error *err)
{
    struct df_map *m = df_map_new(src, 0, UINT64_MAX, err);
    struct df_map_extent e;
    uint64_t total = 0, skip_to = 0;
    int ret;

    if (!m) {
        return -err->code;
    }
    while ((ret = df_map_next(m, &e, err)) > 0) {
        uint64_t off = DF_MAX(e.start, skip_to), end = e.start + e.length;
        if (e.zero || !e.data || off >= end) {
            continue;
        }
        /* qemu goes on from the end of the cluster it rounded up to */
        skip_to = DF_ROUND_UP(end, cs);
        total += off % cs + (skip_to - off);
    }
    df_map_free(m);
    *bytes = total;
    return ret;
}

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static int measure_qcow2(struct df_image *src, const struct df_create_opts *o,
                         struct df_measure *res, struct df_error *err)
{
    uint64_t cs = o->cluster_size ? o->cluster_size : 65536;
    uint64_t vsize = src ? df_image_size(src) : o->size;
    uint64_t required = 0, l2_tables;
    int ret;

    if (!is_pow2(cs) || cs < 512 || cs > (2u << 20)) {
        return df_fail(err, DF_E_INVAL, "invalid cluster size %llu: use a "
                       "power of two from 512 to 2M",
                       (unsigned long long)cs);
    }
    if (!is_pow2((uint64_t)o->refcount_bits) || o->refcount_bits > 64) {
        return df_fail(err, DF_E_INVAL, "invalid refcount width %d: use a "
                       "power of two up to 64", o->refcount_bits);
    }
    if (vsize > (UINT64_MAX >> 2)) {
        return df_fail(err, DF_E_INVAL, "image size %llu is too large",
                       (unsigned long long)vsize);
    }
    vsize = DF_ROUND_UP(vsize, cs);
    l2_tables = DF_DIV_ROUND_UP(vsize / cs, cs / 8);
    if (l2_tables * 8 > QCOW2_MAX_L1_BYTES) {
        return df_fail(err, DF_E_INVAL, "image size %llu is too large for "
                       "qcow2 with %llu-byte clusters (try using a larger "
                       "cluster size)", (unsigned long long)vsize,
                       (unsigned long long)cs);
    }
    if (src && o->backing_file) {
        required = vsize;
    } else if (src) {
        ret = data_clusters(src, cs, &required, err);
        if (ret < 0) {
            return ret;
        }
    }
    if (o->prealloc == DF_PREALLOC_FALLOC || o->prealloc == DF_PREALLOC_FULL) {
        required = vsize;
    }
    res->fully_allocated =
        qcow2_full_size(vsize, cs, (uint32_t)__builtin_ctz(
                                       (unsigned)o->refcount_bits));
    res->required = res->fully_allocated - vsize + required;
    /* qemu-img adds the space of persistent dirty bitmaps when both the
     * source and the new image are version 3 qcow2 */
    if (o->compat != 2 && src && df_image_format(src) == DF_FMT_QCOW2) {
        struct df_info info;
        ret = df_image_info(src, &info, err);
        if (ret < 0) {
            return ret;
        }
        res->has_bitmaps = info.version >= 3;
        res->bitmaps = 0; /* diskforge writes no bitmaps; see docs/cli.md */
    }
    return 0;
}

int df_measure(struct df_image *src, const struct df_create_opts *o,
               struct df_measure *res, struct df_error *err)
{
    struct df_error local = { 0 };

    if (!err) {
        err = &local; /* data_clusters() reads err->code */
    }
    memset(res, 0, sizeof(*res));
    switch (o->format) {
    case DF_FMT_QCOW2:
        return measure_qcow2(src, o, res, err);
    case DF_FMT_RAW:
        if (src) {
            res->required = df_image_size(src);
        } else if (o->size > UINT64_MAX - 511) {
            return df_fail(err, DF_E_INVAL, "image size %llu is too large",
                           (unsigned long long)o->size);
        } else {
            res->required = DF_ROUND_UP(o->size, 512);
        }
        res->fully_allocated = res->required;
        return 0;
    default:
        return df_fail(err, DF_E_INVAL, "cannot measure for format %d: use "
                       "raw or qcow2", (int)o->format);
    }
}
