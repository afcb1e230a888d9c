/* SPDX-License-Identifier: MIT */
/*
 * map.c - df_map_*(): the ranges of an image as `qemu-img map` (7.2)
 * reports them.
 *
 * qemu-img asks each layer of the chain in turn, top first, and stops at
 * the first layer whose answer is "data" or "zero"; a range unallocated
 * in every layer is reported by the bottom layer, as zero but not present,
 * and so is a range past the end of a shorter backing file, by the layer
 * above it.  df_image_block_status() cannot tell those cases from a zero
 * cluster (both read as zeros), so this walks the drivers' own per-layer
 * answers instead.  Adjacent ranges with the same depth and flags, and
 * contiguous offsets, are merged as qemu-img merges them.
 *
 * Two corrections make the drivers' answers qemu's:
 *
 *   - qemu reports a data cluster whose host cluster is a hole in the file
 *     as "zero" only when it believes the image was preallocated with
 *     preallocation=metadata: when at least
 *     max(10/9 * allocated clusters, allocated clusters + 2) clusters of
 *     the file have a non-zero refcount (qcow2_detect_metadata_
 *     preallocation()).  Elsewhere (falloc'd clusters, partial writes
 *     that left holes) it says data, not zero.  The qcow2 driver always
 *     says zero; the test is made once per layer and the zero flag
 *     dropped when it fails.
 *   - the driver reports a run of zero clusters that keep their host
 *     clusters with the offset of the first one only; qemu-img shows each
 *     contiguous piece on its own, so such runs are cut per cluster and
 *     merged again where the host clusters follow each other.
 */
#include <stdlib.h>
#include <sys/stat.h>

#include "internal.h"
#include "qcow2/qcow2.h"

enum { UNKNOWN = -1 };

struct df_map {
    struct df_image *img;
    uint64_t end;
    struct df_map_extent cur; /* the range being merged */
    bool done;
    /* per layer of the chain: does qemu take holes under data clusters
     * for zeros?  UNKNOWN until asked */
    signed char zero_holes[DF_MAX_BACKING_DEPTH + 1];
};

struct df_map *df_map_new(struct df_image *img, uint64_t start,
                          uint64_t len, struct df_error *err)
{
    struct df_map *m = calloc(1, sizeof(*m));
    uint64_t size = df_image_size(img);

    if (!m) {
        df_fail(err, DF_E_NOMEM, "'%s': out of memory", df_image_path(img));
        return NULL;
    }
    m->img = img;
    m->end = len < size && start < size - len ? start + len : size;
    m->cur.start = start;
    m->cur.offset = DF_NO_OFFSET;
    m->cur.layer = img;
    for (size_t i = 0; i < sizeof(m->zero_holes); i++) {
        m->zero_holes[i] = UNKNOWN;
    }
    return m;
}

void df_map_free(struct df_map *m)
{
    free(m);
}

/* qemu's qcow2_detect_metadata_preallocation() for the qcow2 @layer. */
static bool metadata_preallocated(struct df_image *layer)
{
    struct qcow2_state *s = qcow2_state(layer);
    uint64_t real, threshold, end, count = 0;
    struct stat st;

    if (fstat(layer->fd, &st) < 0) {
        return false;
    }
    real = (uint64_t)st.st_blocks * 512 / s->cluster_size;
    threshold = DF_MAX(real * 10 / 9, real + 2);
    end = DF_DIV_ROUND_UP((uint64_t)st.st_size, s->cluster_size);
    pthread_mutex_lock(&layer->lock);
    /* like qemu, a refcount that cannot be read means "not preallocated" */
    if (qcow2_refcounts_load(layer, NULL) == 0) {
        for (uint64_t i = 0; i < end && count < threshold; i++) {
            uint64_t rc;
            if (qcow2_get_refcount(layer, i, &rc, NULL) < 0) {
                break;
            }
            count += rc != 0;
        }
    }
    pthread_mutex_unlock(&layer->lock);
    return count >= threshold;
}

/* Make the driver's answer for the qcow2 @layer at @depth qemu's. */
static void qemu_view(struct df_map *m, struct df_image *layer, int depth,
                      struct df_extent *ext)
{
    const struct qcow2_state *s;

    if (layer->drv != &df_qcow2_driver || ext->host_offset == DF_NO_OFFSET) {
        return;
    }
    if (ext->flags == (DF_BLOCK_DATA | DF_BLOCK_ZERO)) {
        if (m->zero_holes[depth] == UNKNOWN) {
            m->zero_holes[depth] = metadata_preallocated(layer);
        }
        if (!m->zero_holes[depth]) {
            ext->flags = DF_BLOCK_DATA;
        }
    } else if (ext->flags == DF_BLOCK_ZERO) {
        s = qcow2_state(layer);
        ext->length = DF_MIN(ext->length,
                             s->cluster_size -
                                 qcow2_offset_into_cluster(s, ext->start));
    }
}

/* The unmerged range at @off (at most @len bytes). */
static int map_status(struct df_map *m, uint64_t off, uint64_t len,
                      struct df_map_extent *e, struct df_error *err)
{
    struct df_image *cur = m->img;
    struct df_extent ext;
    int depth = 0, ret;

    for (;;) {
        ret = cur->drv->block_status(cur, off, len, &ext, err);
        if (ret < 0) {
            return ret;
        }
        if (ext.length == 0) {
            return df_fail(err, DF_E_IO, "'%s': block status at offset %llu "
                           "returned an empty range", cur->path,
                           (unsigned long long)off);
        }
        len = ext.length = DF_MIN(len, ext.length);
        if (ext.flags) {
            break; /* allocated in this layer */
        }
        if (!cur->backing || off >= cur->backing->size) {
            /* nowhere in the chain, or past the end of the backing file:
             * zeros that this layer reports itself */
            *e = (struct df_map_extent){ .start = off, .length = len,
                                         .depth = depth, .zero = true,
                                         .offset = DF_NO_OFFSET,
                                         .layer = cur };
            return 0;
        }
        cur = cur->backing;
        depth++;
        len = DF_MIN(len, cur->size - off);
    }
    qemu_view(m, cur, depth, &ext);
    *e = (struct df_map_extent){
        .start = off,
        .length = ext.length,
        .depth = depth,
        .present = true,
        .zero = ext.flags & DF_BLOCK_ZERO,
        .data = ext.flags & DF_BLOCK_DATA,
        /* a raw layer maps every byte to the same offset of its file */
        .offset = cur->drv->format == DF_FMT_RAW ? off : ext.host_offset,
        .layer = cur,
    };
    return 0;
}

/* qemu-img's entry_mergeable(): @next continues @cur seamlessly. */
static bool mergeable(const struct df_map_extent *cur,
                      const struct df_map_extent *next)
{
    bool offset = cur->offset != DF_NO_OFFSET;

    if (cur->length == 0 || cur->zero != next->zero ||
        cur->data != next->data || cur->depth != next->depth ||
        cur->present != next->present ||
        offset != (next->offset != DF_NO_OFFSET)) {
        return false;
    }
    /* the same depth is the same file */
    return !offset || cur->offset + cur->length == next->offset;
}

int df_map_next(struct df_map *m, struct df_map_extent *e,
                struct df_error *err)
{
    if (m->done) {
        return 0;
    }
    while (m->cur.start + m->cur.length < m->end) {
        uint64_t off = m->cur.start + m->cur.length;
        struct df_map_extent next;
        int ret = map_status(m, off, m->end - off, &next, err);
        if (ret < 0) {
            return ret;
        }
        if (mergeable(&m->cur, &next)) {
            m->cur.length += next.length;
            continue;
        }
        if (m->cur.length > 0) {
            *e = m->cur;
            m->cur = next;
            return 1;
        }
        m->cur = next;
    }
    /* the last range; a window that starts at or past the end gives one
     * empty range, as in qemu-img */
    *e = m->cur;
    m->done = true;
    return 1;
}
