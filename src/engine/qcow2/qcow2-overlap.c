/* SPDX-License-Identifier: MIT */
/*
 * qcow2-overlap.c - refuse a write that would land on the image's own
 * metadata.
 *
 * In a sound image no write ever does: every cluster has one owner.  A
 * corrupt or hostile image can make an L2 entry point at a refcount
 * block, an L1 entry at the refcount table, or put its L1 table past the
 * end of the file where the allocator will hand the same clusters out
 * again.  Writing through such an image would destroy what is left of
 * it.  So, as QEMU does with its overlap checks, every write of data and
 * of metadata is checked first against the header, the active L1 table,
 * the refcount table, the refcount blocks and the L2 tables (less the
 * kind being written), and a write that overlaps is refused and the
 * image marked corrupt for the rest of this open.  Reads are not
 * affected.
 *
 * Refcount blocks and L2 tables are looked up in a sorted array of their
 * cluster numbers, rebuilt when s->meta_gen says the L1 or refcount table
 * changed (which happens once per new L2 table or refcount block, not
 * per write).
 */
#include <stdlib.h>

#include "qcow2.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

void qcow2_overlap_free(struct qcow2_state *s)
{
    free(s->meta_l2);
    free(s->meta_rb);
    s->meta_l2 = s->meta_rb = NULL;
    s->meta_l2_n = s->meta_rb_n = 0;
}

/* Sorted cluster numbers of the nonzero entries of @t[@n]. */
static uint64_t *clusters_of(const struct qcow2_state *s, const uint64_t *t,
                             uint64_t n, uint64_t *count)
{
    uint64_t *v = malloc(DF_MAX(n, 1) * sizeof(*v)), k = 0;

    if (!v) {
        return NULL;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = t[i] & QCOW2_OFFSET_MASK;
        if (off) {
            v[k++] = off >> s->cluster_bits;
        }
    }
    qsort(v, k, sizeof(*v), cmp_u64);
    *count = k;
    return v;
}

/*
 * The L1 and refcount tables of the image as it was opened must lie in
 * the file: one that starts past its end reads as zeros, and the
 * allocator would give its clusters out again (or grow the file to
 * wherever it points).  Checked once, before the first change: the tables
 * this open moves are placed by the allocator and may sit past the end
 * until they are flushed.
 */
int qcow2_tables_in_file(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t end = DF_ROUND_UP(s->file_size, s->cluster_size);
    const char *what = NULL;
    uint64_t at = 0;

    if (s->tables_checked) {
        return 0;
    }
    if (s->l1_size && s->l1_offset + (uint64_t)s->l1_size * 8 > end) {
        what = "the L1 table";
        at = s->l1_offset;
    } else if (s->rt_offset + s->rt_size * 8 > end) {
        what = "the refcount table";
        at = s->rt_offset;
    }
    if (!what) {
        s->tables_checked = true;
        return 0;
    }
    s->corrupt = true;
    return df_fail(err, DF_E_CORRUPT, "'%s': the image is corrupt: %s at "
                   "0x%llx runs past the end of the file; write refused",
                   img->path, what, (unsigned long long)at);
}

static int rebuild(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t *l2, *rb, nl2 = 0, nrb = 0;

    l2 = clusters_of(s, s->l1, s->l1_size, &nl2);
    rb = clusters_of(s, s->rt, s->rt ? s->rt_size : 0, &nrb);
    if (!l2 || !rb) {
        free(l2);
        free(rb);
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    qcow2_overlap_free(s);
    s->meta_l2 = l2;
    s->meta_l2_n = nl2;
    s->meta_rb = rb;
    s->meta_rb_n = nrb;
    s->meta_built_gen = s->meta_gen;
    s->meta_built = true;
    return 0;
}

/* Does a cluster of sorted @v[@n] fall in clusters [@first, @last]? */
static bool any_in(const uint64_t *v, uint64_t n, uint64_t first,
                   uint64_t last, uint64_t *hit)
{
    uint64_t lo = 0, hi = n;

    while (lo < hi) { /* first element >= first */
        uint64_t mid = lo + (hi - lo) / 2;
        if (v[mid] < first) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < n && v[lo] <= last) {
        *hit = v[lo];
        return true;
    }
    return false;
}

static bool ranges_meet(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

int qcow2_overlap_check(struct df_image *img, unsigned skip, uint64_t off,
                        uint64_t len, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t first, last, hit = 0;
    uint64_t rt_off = s->rt ? s->rt_offset : s->h.refcount_table_offset;
    uint64_t rt_len = s->rt ? s->rt_size * 8
                            : (uint64_t)s->h.refcount_table_clusters
                                  << s->cluster_bits;
    const char *what = NULL;

    if (!len) {
        return 0;
    }
    if (!s->refcounts_loaded) { /* where the refcount blocks are */
        int ret = qcow2_refcounts_load(img, err);
        if (ret < 0) {
            return ret;
        }
    }
    if (!s->meta_built || s->meta_built_gen != s->meta_gen) {
        int ret = rebuild(img, err);
        if (ret < 0) {
            return ret;
        }
    }
    first = off >> s->cluster_bits;
    last = (off + len - 1) >> s->cluster_bits;
    if (!(skip & QCOW2_META_HEADER) && first == 0) {
        what = "the image header";
        hit = 0;
    } else if (!(skip & QCOW2_META_L1) &&
               ranges_meet(off, len, s->l1_offset, (uint64_t)s->l1_size * 8)) {
        what = "the L1 table";
        hit = s->l1_offset >> s->cluster_bits;
    } else if (!(skip & QCOW2_META_RT) &&
               ranges_meet(off, len, rt_off, rt_len)) {
        what = "the refcount table";
        hit = rt_off >> s->cluster_bits;
    } else if (!(skip & QCOW2_META_RB) &&
               any_in(s->meta_rb, s->meta_rb_n, first, last, &hit)) {
        what = "a refcount block";
    } else if (!(skip & QCOW2_META_L2) &&
               any_in(s->meta_l2, s->meta_l2_n, first, last, &hit)) {
        what = "an L2 table";
    }
    if (!what) {
        return 0;
    }
    s->corrupt = true;
    return df_fail(err, DF_E_CORRUPT, "'%s': the image is corrupt: writing "
                   "%llu bytes at offset 0x%llx would overwrite %s at 0x%llx; "
                   "write refused", img->path, (unsigned long long)len,
                   (unsigned long long)off, what,
                   (unsigned long long)(hit << s->cluster_bits));
}
