/* SPDX-License-Identifier: MIT */
/*
 * qcow2-refcount.c - refcount table and blocks, and the cluster allocator.
 *
 * The allocator follows the placement rules of qemu-img 7.2 so that images
 * we create have the same length and layout as qemu's:
 *  - clusters are taken from the first free run at or after a hint that
 *    only moves backwards when clusters are freed;
 *  - a missing refcount block is placed in the next free cluster, where it
 *    usually describes itself, and the allocation is then retried;
 *  - when the refcount table is full, a larger one (with 50% headroom) is
 *    placed, with any refcount blocks it needs, at the start of the first
 *    range no refcount block covers yet, and the old table is freed.
 * Refcount blocks, once loaded, stay in memory until the image is closed;
 * they are written back by qcow2_flush_refcounts().  All functions run with
 * img->lock held.
 */
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* Returned internally by refcount updates that allocated a refcount block:
 * the caller's free-space search may have been overtaken, so search again. */
#define RETRY 1

uint64_t qcow2_rb_get(const unsigned char *rb, uint64_t idx,
                      uint32_t refcount_bits)
{
    if (refcount_bits >= 8) {
        unsigned bytes = refcount_bits / 8;
        const unsigned char *p = rb + idx * bytes;
        uint64_t v = 0;
        for (unsigned i = 0; i < bytes; i++) {
            v = (v << 8) | p[i];
        }
        return v;
    }
    /* sub-byte widths: entry 0 is in the least significant bits */
    uint64_t bit = idx * refcount_bits;
    unsigned mask = (1u << refcount_bits) - 1;
    return (rb[bit / 8] >> (bit % 8)) & mask;
}

void qcow2_rb_set(unsigned char *rb, uint64_t idx, uint32_t refcount_bits,
                  uint64_t v)
{
    if (refcount_bits >= 8) {
        unsigned bytes = refcount_bits / 8;
        unsigned char *p = rb + idx * bytes;
        for (int i = (int)bytes - 1; i >= 0; i--) {
            p[i] = (unsigned char)v;
            v >>= 8;
        }
        return;
    }
    uint64_t bit = idx * refcount_bits;
    unsigned mask = ((1u << refcount_bits) - 1) << (bit % 8);
    rb[bit / 8] = (unsigned char)((rb[bit / 8] & ~mask) |
                                  ((v << (bit % 8)) & mask));
}

static uint64_t refcount_max(const struct qcow2_state *s)
{
    return s->refcount_bits == 64 ? UINT64_MAX
                                  : (1ULL << s->refcount_bits) - 1;
}

uint64_t qcow2_refcount_metadata_clusters(uint64_t clusters,
                                          uint64_t cluster_size,
                                          uint32_t refcount_order,
                                          bool generous, uint64_t *blocks_out)
{
    /*
     * Refcount structures count themselves too, so iterate to the fixed
     * point where one more pass needs no further blocks or table clusters.
     * @generous adds room for half the table again, as a growing table
     * does.
     */
    uint64_t per_table = cluster_size / 8;
    uint64_t per_block = cluster_size * 8 >> refcount_order;
    uint64_t table = 0, blocks = 0, n = 0, last;

    do {
        last = n;
        blocks = DF_DIV_ROUND_UP(clusters + table + blocks, per_block);
        table = DF_DIV_ROUND_UP(blocks, per_table);
        n = clusters + blocks + table;
        if (n == last && generous) {
            clusters += DF_DIV_ROUND_UP(table, 2);
            n = 0;
            generous = false;
        }
    } while (n != last);
    if (blocks_out) {
        *blocks_out = blocks;
    }
    return blocks + table;
}

void qcow2_refcounts_free(struct qcow2_state *s)
{
    if (s->rb) {
        for (uint64_t i = 0; i < s->rt_size; i++) {
            free(s->rb[i]);
        }
    }
    free(s->rb);
    free(s->rb_dirty);
    free(s->rt);
    s->rb = NULL;
    s->rb_dirty = NULL;
    s->rt = NULL;
    s->refcounts_loaded = false;
    s->meta_gen++;
}

int qcow2_refcounts_load(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret;

    if (s->refcounts_loaded) {
        return 0;
    }
    s->rt_offset = s->h.refcount_table_offset;
    s->rt_size = (uint64_t)s->h.refcount_table_clusters * s->cluster_size / 8;
    s->rt = calloc(s->rt_size, sizeof(uint64_t));
    s->rb = calloc(s->rt_size, sizeof(*s->rb));
    s->rb_dirty = calloc(s->rt_size, sizeof(bool));
    if (!s->rt || !s->rb || !s->rb_dirty) {
        qcow2_refcounts_free(s);
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory for the "
                       "refcount table", img->path);
    }
    ret = qcow2_read_table(img, s->rt_offset, s->rt, s->rt_size, err);
    for (uint64_t i = 0; ret == 0 && i < s->rt_size; i++) {
        uint64_t e = s->rt[i];
        if (e & QCOW2_REFT_RESERVED) {
            ret = df_fail(err, DF_E_CORRUPT, "'%s': refcount table entry %llu "
                          "(0x%llx) is not cluster aligned", img->path,
                          (unsigned long long)i, (unsigned long long)e);
            break;
        }
        if (e & (s->cluster_size - 1)) {
            ret = df_fail(err, DF_E_CORRUPT, "'%s': refcount block %llu at "
                          "0x%llx is not cluster aligned", img->path,
                          (unsigned long long)i, (unsigned long long)e);
            break;
        }
    }
    if (ret < 0) {
        qcow2_refcounts_free(s);
        return ret;
    }
    s->free_cluster_index = 0;
    s->refcounts_loaded = true;
    s->meta_gen++;
    return 0;
}

/* The refcount block for table index @i, loading it; NULL if none. */
static int get_block(struct df_image *img, uint64_t i, unsigned char **out,
                     struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret;

    *out = NULL;
    if (i >= s->rt_size || !s->rt[i]) {
        return 0;
    }
    if (!s->rb[i]) {
        unsigned char *b = malloc(s->cluster_size);
        if (!b) {
            return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
        }
        if (s->rt[i] == 0 || s->rt[i] >= s->file_size) {
            free(b);
            return df_fail(err, DF_E_CORRUPT, "'%s': refcount block %llu at "
                           "0x%llx is outside the file", img->path,
                           (unsigned long long)i,
                           (unsigned long long)s->rt[i]);
        }
        ret = df_io_pread(img->fd, b, s->cluster_size, s->rt[i], img->path,
                          err);
        if (ret < 0) {
            free(b);
            return ret;
        }
        s->rb[i] = b;
    }
    *out = s->rb[i];
    return 0;
}

int qcow2_get_refcount(struct df_image *img, uint64_t cluster, uint64_t *rc,
                       struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    unsigned char *b;
    int ret = get_block(img, cluster >> s->rb_bits, &b, err);

    if (ret < 0) {
        return ret;
    }
    *rc = b ? qcow2_rb_get(b, cluster & (s->rb_entries - 1),
                           s->refcount_bits)
            : 0;
    return 0;
}

/* Find @n free clusters in a row from the hint on, without counting them. */
static int64_t alloc_noref(struct df_image *img, uint64_t n,
                           struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t run = 0, rc;

    while (run < n) {
        uint64_t idx = s->free_cluster_index++;
        int ret = qcow2_get_refcount(img, idx, &rc, err);
        if (ret < 0) {
            return ret;
        }
        run = rc ? 0 : run + 1;
        if ((s->free_cluster_index << s->cluster_bits) >
            QCOW2_MAX_HOST_OFFSET) {
            return df_fail(err, DF_E_NOSPC, "'%s': no room left in the "
                           "image's address space", img->path);
        }
    }
    return (int64_t)(s->free_cluster_index - n);
}

static int update_refcount(struct df_image *img, uint64_t first, uint64_t n,
                           int delta, struct df_error *err);

/* Append a larger refcount table; see the file comment. */
static int64_t refcount_area(struct df_image *img, uint64_t start_offset,
                             uint64_t additional, bool exact,
                             uint64_t new_index, uint64_t new_offset,
                             unsigned char *new_block, struct df_error *err);

/*
 * Make sure a refcount block covers @cluster.  Returns 0 when one already
 * does, RETRY after placing a new one, or a negative error.
 */
static int ensure_block(struct df_image *img, uint64_t cluster,
                        struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t i = cluster >> s->rb_bits;
    unsigned char *block;
    int64_t nb;
    int ret;

    if (i < s->rt_size && s->rt[i]) {
        return get_block(img, i, &block, err);
    }
    nb = alloc_noref(img, 1, err);
    if (nb < 0) {
        return (int)nb;
    }
    if (nb == 0) {
        s->corrupt = true;
        return df_fail(err, DF_E_CORRUPT, "'%s': refusing to place a refcount "
                       "block at offset 0", img->path);
    }
    if (((uint64_t)nb >> s->rb_bits) != i) {
        /* described by another block: count it there first */
        ret = update_refcount(img, (uint64_t)nb, 1, 1, err);
        if (ret != 0) {
            return ret;
        }
    }
    block = calloc(1, s->cluster_size);
    if (!block) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    if (((uint64_t)nb >> s->rb_bits) == i) {
        /* the block describes itself */
        qcow2_rb_set(block, (uint64_t)nb & (s->rb_entries - 1),
                     s->refcount_bits, 1);
    }
    if (i < s->rt_size) {
        s->rt[i] = (uint64_t)nb << s->cluster_bits;
        s->meta_gen++;
        s->rb[i] = block;
        s->rb_dirty[i] = true;
        s->rt_dirty = true;
        return RETRY;
    }
    /* the table is full: place a bigger one past everything in use */
    {
        uint64_t used = DF_MAX(cluster + 1, (uint64_t)nb + 1);
        uint64_t blocks_used = DF_DIV_ROUND_UP(used, s->rb_entries);
        uint64_t meta = blocks_used * s->rb_entries << s->cluster_bits;
        int64_t r = refcount_area(img, meta, 0, false, i,
                                  (uint64_t)nb << s->cluster_bits, block,
                                  err);
        return r < 0 ? (int)r : RETRY;
    }
}

/*
 * Add @delta (+1 or -1) to the refcounts of @n clusters from @first.  On
 * any failure, RETRY included, the changes made so far are undone.
 */
static int update_refcount(struct df_image *img, uint64_t first, uint64_t n,
                           int delta, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t done;
    int ret = 0;

    for (done = 0; done < n; done++) {
        uint64_t c = first + done, i = c >> s->rb_bits, rc;
        unsigned char *b;

        ret = ensure_block(img, c, err);
        if (ret != 0) {
            break;
        }
        b = s->rb[i];
        rc = qcow2_rb_get(b, c & (s->rb_entries - 1), s->refcount_bits);
        if ((delta < 0 && rc == 0) || (delta > 0 && rc == refcount_max(s))) {
            s->corrupt = true;
            ret = df_fail(err, DF_E_CORRUPT, "'%s': refcount of cluster "
                          "%llu would %s", img->path, (unsigned long long)c,
                          delta < 0 ? "drop below zero" : "overflow");
            break;
        }
        rc += (uint64_t)(int64_t)delta;
        qcow2_rb_set(b, c & (s->rb_entries - 1), s->refcount_bits, rc);
        s->rb_dirty[i] = true;
        if (rc == 0 && c < s->free_cluster_index) {
            s->free_cluster_index = c;
        }
    }
    if (ret != 0) {
        /* undo; these blocks exist, so this cannot allocate */
        for (uint64_t k = 0; k < done; k++) {
            uint64_t c = first + k, i = c >> s->rb_bits;
            uint64_t rc = qcow2_rb_get(s->rb[i], c & (s->rb_entries - 1),
                                       s->refcount_bits);
            rc -= (uint64_t)(int64_t)delta;
            qcow2_rb_set(s->rb[i], c & (s->rb_entries - 1), s->refcount_bits,
                         rc);
            if (rc == 0 && c < s->free_cluster_index) {
                s->free_cluster_index = c;
            }
        }
    }
    return ret;
}

int64_t qcow2_alloc_clusters(struct df_image *img, uint64_t n,
                             struct df_error *err)
{
    int ret = qcow2_refcounts_load(img, err);
    int64_t c;

    if (ret < 0) {
        return ret;
    }
    do {
        c = alloc_noref(img, n, err);
        if (c < 0) {
            return c;
        }
        ret = update_refcount(img, (uint64_t)c, n, 1, err);
        if (ret == RETRY && (uint64_t)c < qcow2_state(img)->free_cluster_index) {
            /* search again from where this attempt started */
            qcow2_state(img)->free_cluster_index = (uint64_t)c;
        }
    } while (ret == RETRY);
    if (ret < 0) {
        return ret;
    }
    return c << qcow2_state(img)->cluster_bits;
}

int qcow2_alloc_clusters_at(struct df_image *img, uint64_t offset, uint64_t n,
                            struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = qcow2_refcounts_load(img, err);

    while (ret == 0) {
        uint64_t c = offset >> s->cluster_bits, k, rc;
        for (k = 0; k < n; k++) {
            ret = qcow2_get_refcount(img, c + k, &rc, err);
            if (ret < 0) {
                return ret;
            }
            if (rc) {
                return df_fail(err, DF_E_CORRUPT, "'%s': cluster %llu is "
                               "already in use", img->path,
                               (unsigned long long)(c + k));
            }
        }
        ret = update_refcount(img, c, n, 1, err);
        if (ret != RETRY) {
            break;
        }
        ret = 0;
    }
    return ret;
}

int qcow2_free_clusters(struct df_image *img, uint64_t offset, uint64_t n,
                        struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = qcow2_refcounts_load(img, err);

    if (ret == 0) {
        ret = update_refcount(img, offset >> s->cluster_bits, n, -1, err);
    }
    /* freeing never allocates, so RETRY cannot happen */
    return ret;
}

static int64_t refcount_area(struct df_image *img, uint64_t start_offset,
                             uint64_t additional, bool exact,
                             uint64_t new_index, uint64_t new_offset,
                             unsigned char *new_block, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t total, table_size, table_clusters, area_index, extra = 0;
    uint64_t table_offset, end_offset, block_offset, old_offset, old_size;
    uint64_t *nt = NULL;
    unsigned char **nrb = NULL;
    bool *ndirty = NULL;
    int ret;

    qcow2_refcount_metadata_clusters((start_offset >> s->cluster_bits) +
                                         additional,
                                     s->cluster_size, s->h.refcount_order,
                                     !exact, &total);
    table_size = exact ? total : total + DF_DIV_ROUND_UP(total, 2);
    table_size = DF_ROUND_UP(table_size, s->cluster_size / 8);
    table_clusters = table_size * 8 >> s->cluster_bits;
    if (table_size * 8 > QCOW2_MAX_REFTABLE_BYTES) {
        free(new_block);
        return df_fail(err, DF_E_NOSPC, "'%s': the refcount table would "
                       "exceed its maximum size", img->path);
    }
    area_index = (start_offset >> s->cluster_bits) >> s->rb_bits;
    nt = calloc(table_size, sizeof(*nt));
    nrb = calloc(table_size, sizeof(*nrb));
    ndirty = calloc(table_size, sizeof(*ndirty));
    if (!nt || !nrb || !ndirty) {
        free(new_block);
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
        goto fail;
    }
    for (uint64_t i = 0; i < DF_MIN(table_size, s->rt_size); i++) {
        nt[i] = s->rt[i];
        nrb[i] = s->rb[i];
        ndirty[i] = s->rb_dirty[i];
    }
    /* blocks the smaller new table would drop describe only free space */
    for (uint64_t i = table_size; i < s->rt_size; i++) {
        free(s->rb[i]);
    }
    if (new_offset) {
        nt[new_index] = new_offset;
        nrb[new_index] = new_block;
        ndirty[new_index] = true;
    }
    for (uint64_t i = area_index; i < total; i++) {
        extra += !nt[i];
    }
    table_offset = start_offset + (extra << s->cluster_bits);
    end_offset = table_offset + (table_clusters << s->cluster_bits);
    block_offset = start_offset;

    /* switch to the new arrays, then fill the area's refcounts */
    free(s->rt);
    free(s->rb);
    free(s->rb_dirty);
    old_offset = s->rt_offset;
    old_size = s->rt_size;
    s->rt = nt;
    s->meta_gen++;
    s->rb = nrb;
    s->rb_dirty = ndirty;
    s->rt_size = table_size;
    nt = NULL;
    nrb = NULL;
    ndirty = NULL;
    for (uint64_t i = area_index; i < total; i++) {
        uint64_t first = (i * s->rb_entries) << s->cluster_bits;
        unsigned char *b;

        if (!s->rt[i]) {
            s->rb[i] = calloc(1, s->cluster_size);
            if (!s->rb[i]) {
                return df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                               img->path);
            }
            s->rt[i] = block_offset;
            s->meta_gen++;
            block_offset += s->cluster_size;
        }
        ret = get_block(img, i, &b, err);
        if (ret < 0) {
            return ret;
        }
        s->rb_dirty[i] = true;
        if (first < end_offset) {
            uint64_t j = first < start_offset
                             ? (start_offset - first) >> s->cluster_bits
                             : 0;
            uint64_t end = DF_MIN((end_offset - first) >> s->cluster_bits,
                                  s->rb_entries);
            for (; j < end; j++) {
                qcow2_rb_set(b, j, s->refcount_bits, 1);
            }
        }
    }
    s->rt_offset = table_offset;
    s->rt_dirty = true;
    s->rt_moved = true;
    s->h.refcount_table_offset = table_offset;
    s->h.refcount_table_clusters = (uint32_t)table_clusters;
    /* the old table's clusters are free again */
    ret = update_refcount(img, old_offset >> s->cluster_bits,
                          DF_DIV_ROUND_UP(old_size * 8, s->cluster_size), -1,
                          err);
    if (ret < 0) {
        return ret;
    }
    return (int64_t)end_offset;
fail:
    free(nt);
    free(nrb);
    free(ndirty);
    return ret;
}

int64_t qcow2_refcount_area(struct df_image *img, uint64_t start_offset,
                            uint64_t additional_clusters, bool exact_size,
                            uint64_t new_rb_index, uint64_t new_rb_offset,
                            struct df_error *err)
{
    int ret = qcow2_refcounts_load(img, err);
    if (ret < 0) {
        return ret;
    }
    return refcount_area(img, start_offset, additional_clusters, exact_size,
                         new_rb_index, new_rb_offset, NULL, err);
}

int qcow2_last_used_cluster(struct df_image *img, int64_t *last,
                            struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t n = DF_DIV_ROUND_UP(s->file_size, s->cluster_size), rc;
    int ret = qcow2_refcounts_load(img, err);

    *last = -1;
    while (ret == 0 && n-- > 0) {
        ret = qcow2_get_refcount(img, n, &rc, err);
        if (ret == 0 && rc) {
            *last = (int64_t)n;
            break;
        }
    }
    return ret;
}

int qcow2_flush_refcounts(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = 0;

    if (!s->refcounts_loaded) {
        return 0;
    }
    for (uint64_t i = 0; ret == 0 && i < s->rt_size; i++) {
        if (s->rb_dirty[i] && s->rb[i]) {
            ret = qcow2_overlap_check(img, QCOW2_META_RB, s->rt[i],
                                      s->cluster_size, err);
            if (ret < 0) {
                break;
            }
            ret = df_io_pwrite(img->fd, s->rb[i], s->cluster_size, s->rt[i],
                               img->path, err);
            if (ret == 0) {
                s->rb_dirty[i] = false;
                s->file_size = DF_MAX(s->file_size, s->rt[i] + s->cluster_size);
            }
        }
    }
    if (ret == 0 && s->rt_dirty) {
        ret = qcow2_overlap_check(img, QCOW2_META_RT, s->rt_offset,
                                  s->rt_size * 8, err);
    }
    if (ret == 0 && s->rt_dirty) {
        ret = qcow2_write_table(img, s->rt_offset, s->rt, s->rt_size, err);
        if (ret == 0) {
            s->rt_dirty = false;
            s->file_size = DF_MAX(s->file_size, s->rt_offset + s->rt_size * 8);
        }
    }
    if (ret == 0 && s->rt_moved) {
        ret = qcow2_write_header_field64(img, QCOW2_HDR_RT_OFFSET,
                                         s->rt_offset, err);
        if (ret == 0) {
            ret = qcow2_write_header_field32(img, QCOW2_HDR_RT_CLUSTERS,
                                             s->h.refcount_table_clusters,
                                             err);
        }
        if (ret == 0) {
            s->rt_moved = false;
        }
    }
    return ret;
}

/*
 * After a shrink: drop the refcount blocks that count nothing but
 * themselves, as QEMU's shrink does, so that the file can be cut before
 * them.  A block that counts itself takes its refcount with it; one that
 * another block counts is set to 0 there.
 */
int qcow2_drop_unused_refblocks(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = qcow2_refcounts_load(img, err);

    for (uint64_t i = 0; ret == 0 && i < s->rt_size; i++) {
        uint64_t off = s->rt[i], own = off >> s->cluster_bits;
        bool self = (own >> s->rb_bits) == i, unused = true;
        unsigned char *b;

        ret = get_block(img, i, &b, err);
        if (ret < 0 || !b) {
            continue;
        }
        for (uint64_t k = 0; unused && k < s->rb_entries; k++) {
            unused = (self && k == (own & (s->rb_entries - 1))) ||
                     qcow2_rb_get(b, k, s->refcount_bits) == 0;
        }
        if (!unused) {
            continue;
        }
        free(s->rb[i]);
        s->rb[i] = NULL;
        s->rb_dirty[i] = false;
        s->rt[i] = 0;
        s->rt_dirty = true;
        s->meta_gen++;
        if (!self) {
            ret = qcow2_set_refcount(img, own, 0, err);
        }
    }
    return ret;
}

int qcow2_set_refcount(struct df_image *img, uint64_t cluster, uint64_t v,
                       struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t i = cluster >> s->rb_bits;
    unsigned char *b;
    int ret = get_block(img, i, &b, err);

    if (ret < 0) {
        return ret;
    }
    if (!b) {
        return df_fail(err, DF_E_CORRUPT, "'%s': no refcount block covers "
                       "cluster %llu", img->path, (unsigned long long)cluster);
    }
    if (v > refcount_max(s)) {
        return df_fail(err, DF_E_NOSPC, "'%s': refcount %llu of cluster %llu "
                       "does not fit in %u bits", img->path,
                       (unsigned long long)v, (unsigned long long)cluster,
                       s->refcount_bits);
    }
    qcow2_rb_set(b, cluster & (s->rb_entries - 1), s->refcount_bits, v);
    s->rb_dirty[i] = true;
    if (v == 0 && cluster < s->free_cluster_index) {
        s->free_cluster_index = cluster;
    }
    return 0;
}

/*
 * Replace the refcount structures with new ones written after everything
 * in use: refcount blocks, then the table, at cluster @nb or later.  The
 * refcount of each cluster below @nb becomes @refs[cluster]; the new
 * structures count 1; the old ones are simply no longer referenced.
 */
int qcow2_rebuild_refcounts(struct df_image *img, const uint16_t *refs,
                            uint64_t nb, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t blocks, table_clusters, table_size, start = nb;
    uint64_t *rt;
    unsigned char **rb;
    bool *dirty;

    qcow2_refcount_metadata_clusters(start, s->cluster_size,
                                     s->h.refcount_order, false, &blocks);
    table_clusters = DF_DIV_ROUND_UP(blocks * 8, s->cluster_size);
    table_size = table_clusters * s->cluster_size / 8;
    if (table_clusters * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
        return df_fail(err, DF_E_NOSPC, "'%s': the rebuilt refcount table "
                       "would be too large", img->path);
    }
    rt = calloc(table_size, sizeof(*rt));
    rb = calloc(table_size, sizeof(*rb));
    dirty = calloc(table_size, sizeof(*dirty));
    if (!rt || !rb || !dirty) {
        free(rt);
        free(rb);
        free(dirty);
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    for (uint64_t i = 0; i < blocks; i++) {
        rt[i] = (start + i) << s->cluster_bits;
        rb[i] = calloc(1, s->cluster_size);
        dirty[i] = true;
        if (!rb[i]) {
            for (uint64_t k = 0; k < i; k++) {
                free(rb[k]);
            }
            free(rt);
            free(rb);
            free(dirty);
            return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
        }
    }
    qcow2_refcounts_free(s);
    s->rt = rt;
    s->meta_gen++;
    s->rb = rb;
    s->rb_dirty = dirty;
    s->rt_size = table_size;
    s->refcounts_loaded = true;
    for (uint64_t c = 0; c < start + blocks + table_clusters; c++) {
        uint64_t v = c < nb ? refs[c] : (c >= start ? 1 : 0);
        if (v > refcount_max(s)) {
            return df_fail(err, DF_E_NOSPC, "'%s': cluster %llu has %llu "
                           "references, more than %u-bit refcounts hold",
                           img->path, (unsigned long long)c,
                           (unsigned long long)v, s->refcount_bits);
        }
        qcow2_rb_set(rb[c >> s->rb_bits], c & (s->rb_entries - 1),
                     s->refcount_bits, v);
    }
    s->rt_offset = (start + blocks) << s->cluster_bits;
    s->h.refcount_table_offset = s->rt_offset;
    s->h.refcount_table_clusters = (uint32_t)table_clusters;
    s->rt_dirty = true;
    s->rt_moved = true;
    s->free_cluster_index = 0;
    return qcow2_flush_refcounts(img, err);
}

/*
 * Room for @size bytes of compressed data.  Compressed clusters are packed
 * back to back and may run on into the next host cluster when that one is
 * free; every host cluster an extent touches counts one more reference.
 */
int64_t qcow2_alloc_bytes(struct df_image *img, uint64_t size,
                          struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t off = s->free_byte_offset, free_in, rc;
    int ret = qcow2_refcounts_load(img, err);

    if (ret < 0) {
        return ret;
    }
    if (off) {
        ret = qcow2_get_refcount(img, off >> s->cluster_bits, &rc, err);
        if (ret < 0) {
            return ret;
        }
        if (rc == refcount_max(s)) {
            off = 0;
        }
    }
    free_in = s->cluster_size - (off & (s->cluster_size - 1));
    do {
        if (!off || free_in < size) {
            int64_t nc = alloc_noref(img, 1, err);
            uint64_t noff;
            if (nc < 0) {
                return nc;
            }
            if (nc == 0) {
                s->corrupt = true;
                return df_fail(err, DF_E_CORRUPT, "'%s': refusing to place "
                               "compressed data at offset 0", img->path);
            }
            noff = (uint64_t)nc << s->cluster_bits;
            if (!off || DF_ROUND_UP(off, s->cluster_size) != noff) {
                off = noff;
                free_in = s->cluster_size;
            } else {
                free_in += s->cluster_size;
            }
        }
        ret = update_refcount(img, off >> s->cluster_bits,
                              ((off + size - 1) >> s->cluster_bits) -
                                  (off >> s->cluster_bits) + 1,
                              1, err);
        if (ret != 0) {
            off = 0;
        }
    } while (ret == RETRY);
    if (ret < 0) {
        return ret;
    }
    s->free_byte_offset = (off + size) & (s->cluster_size - 1) ? off + size
                                                               : 0;
    return (int64_t)off;
}
