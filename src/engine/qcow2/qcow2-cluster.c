/* SPDX-License-Identifier: MIT */
/*
 * qcow2-cluster.c - guest offsets to host clusters: the L1 table, the L2
 * table cache, reads, writes with copy-on-write, zeroing, block status and
 * preallocation.
 *
 * Reads look up a run of clusters under img->lock, then do the data I/O
 * without it, so many threads can read one image at once.  Writes hold
 * img->lock from lookup to the last metadata update.  Metadata is written
 * back by qcow2_flush_tables() in a crash-safe order: refcounts, then L2
 * tables, then the L1 table.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2.h"

/* ---- entry decoding ---- */

enum qcow2_cluster_type qcow2_entry_type(const struct qcow2_state *s,
                                         uint64_t e)
{
    if (e & QCOW2_OFLAG_COMPRESSED) {
        return QCOW2_CLUSTER_COMPRESSED;
    }
    if ((e & QCOW2_OFLAG_ZERO) && s->h.version >= 3) {
        return (e & QCOW2_OFFSET_MASK) ? QCOW2_CLUSTER_ZERO_ALLOC
                                       : QCOW2_CLUSTER_ZERO_PLAIN;
    }
    return (e & QCOW2_OFFSET_MASK) ? QCOW2_CLUSTER_NORMAL
                                   : QCOW2_CLUSTER_UNALLOCATED;
}

/* The data cluster at @host (for guest offset @guest) must start inside
 * the file: reading or writing past its end is an error, not zeros. */
static int cluster_in_file(struct df_image *img, uint64_t host,
                           uint64_t guest, struct df_error *err)
{
    if (host < qcow2_state(img)->file_size) {
        return 0;
    }
    return df_fail(err, DF_E_CORRUPT, "'%s': data cluster 0x%llx for guest "
                   "offset %llu is beyond the end of the file", img->path,
                   (unsigned long long)host, (unsigned long long)guest);
}

/* Check a standard (not compressed) L2 entry read from the file. */
static int check_l2_entry(struct df_image *img, uint64_t e, uint64_t guest,
                          struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t reserved = QCOW2_L2_RESERVED;
    uint64_t off = e & QCOW2_OFFSET_MASK;

    if (e & QCOW2_OFLAG_COMPRESSED) {
        return 0;
    }
    if (s->h.version < 3) {
        reserved |= QCOW2_OFLAG_ZERO;
    }
    if (e & reserved) {
        return df_fail(err, DF_E_CORRUPT, "'%s': L2 entry 0x%016llx for "
                       "guest offset %llu has reserved bits set", img->path,
                       (unsigned long long)e, (unsigned long long)guest);
    }
    if (off & (s->cluster_size - 1)) {
        return df_fail(err, DF_E_CORRUPT, "'%s': data cluster 0x%llx for "
                       "guest offset %llu is not cluster aligned", img->path,
                       (unsigned long long)off, (unsigned long long)guest);
    }
    return 0;
}

/* ---- the L2 cache ---- */

int qcow2_cache_init(struct qcow2_state *s)
{
    uint64_t n = (32ULL << 20) / s->cluster_size;

    s->l2_cache_slots = (unsigned)DF_MIN(DF_MAX(n, 8), 256);
    s->l2_cache = calloc(s->l2_cache_slots, sizeof(*s->l2_cache));
    return s->l2_cache ? 0 : -1;
}

void qcow2_cache_free(struct qcow2_state *s)
{
    for (unsigned i = 0; s->l2_cache && i < s->l2_cache_slots; i++) {
        free(s->l2_cache[i].table);
    }
    free(s->l2_cache);
    s->l2_cache = NULL;
}

static void note_file_end(struct qcow2_state *s, uint64_t end)
{
    if (end > s->file_size) {
        s->file_size = end;
    }
}

static int write_l2(struct df_image *img, struct qcow2_l2_slot *slot,
                    struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = qcow2_overlap_check(img, QCOW2_META_L2, slot->offset,
                                  s->cluster_size, err);

    if (ret == 0) {
        ret = qcow2_write_table(img, slot->offset, slot->table,
                                s->l2_entries, err);
    }

    if (ret == 0) {
        slot->dirty = false;
        note_file_end(s, slot->offset + s->cluster_size);
    }
    return ret;
}

/* A free or least recently used slot, written back if needed. */
static int cache_victim(struct df_image *img, struct qcow2_l2_slot **out,
                        struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_slot *v = &s->l2_cache[0];

    for (unsigned i = 0; i < s->l2_cache_slots; i++) {
        struct qcow2_l2_slot *c = &s->l2_cache[i];
        if (!c->offset) {
            v = c;
            break;
        }
        if (c->lru < v->lru) {
            v = c;
        }
    }
    if (v->offset && v->dirty) {
        /* refcounts first, so a crash can only leak clusters */
        int ret = qcow2_flush_refcounts(img, err);
        if (ret == 0) {
            ret = write_l2(img, v, err);
        }
        if (ret < 0) {
            return ret;
        }
    }
    if (!v->table) {
        v->table = malloc(s->cluster_size);
        if (!v->table) {
            return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
        }
    }
    v->offset = 0;
    v->dirty = false;
    *out = v;
    return 0;
}

static struct qcow2_l2_slot *cache_find(struct qcow2_state *s, uint64_t off)
{
    for (unsigned i = 0; i < s->l2_cache_slots; i++) {
        if (s->l2_cache[i].offset == off) {
            s->l2_cache[i].lru = ++s->lru_clock;
            return &s->l2_cache[i];
        }
    }
    return NULL;
}

/* The L2 table at host offset @off, loaded into the cache. */
static int l2_load(struct df_image *img, uint64_t off,
                   struct qcow2_l2_slot **out, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_slot *slot = cache_find(s, off);
    int ret;

    if (slot) {
        *out = slot;
        return 0;
    }
    if (off + s->cluster_size > s->file_size) {
        return df_fail(err, DF_E_CORRUPT, "'%s': L2 table at 0x%llx is beyond "
                       "the end of the file", img->path,
                       (unsigned long long)off);
    }
    ret = cache_victim(img, &slot, err);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_read_table(img, off, slot->table, s->l2_entries, err);
    if (ret < 0) {
        return ret;
    }
    slot->offset = off;
    slot->lru = ++s->lru_clock;
    *out = slot;
    return 0;
}

/* Validate L1 entry @i and return the L2 table offset it holds (0: none). */
static int l1_entry(struct df_image *img, uint64_t i, uint64_t *l2off,
                    struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t e = s->l1[i];

    *l2off = e & QCOW2_OFFSET_MASK;
    if (e & QCOW2_L1_RESERVED) {
        return df_fail(err, DF_E_CORRUPT, "'%s': L1 entry %llu (0x%016llx) "
                       "has reserved bits set", img->path,
                       (unsigned long long)i, (unsigned long long)e);
    }
    if (*l2off & (s->cluster_size - 1)) {
        return df_fail(err, DF_E_CORRUPT, "'%s': L2 table offset 0x%llx in L1 "
                       "entry %llu is not cluster aligned", img->path,
                       (unsigned long long)*l2off, (unsigned long long)i);
    }
    return 0;
}

/*
 * Look up the L2 table mapping guest offset @off.  *slot is NULL when the
 * L1 entry is empty.  With @alloc, a missing table is allocated, and a
 * table shared with a snapshot (no COPIED flag) is copied first.
 */
static int get_l2(struct df_image *img, uint64_t off, bool alloc,
                  struct qcow2_l2_slot **slot, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t i = qcow2_l1_index(s, off), l2off;
    struct qcow2_l2_slot *old = NULL, *n;
    int64_t noff;
    int ret;

    *slot = NULL;
    if (i >= s->l1_size) {
        return df_fail(err, DF_E_CORRUPT, "'%s': guest offset %llu is beyond "
                       "the L1 table", img->path, (unsigned long long)off);
    }
    ret = l1_entry(img, i, &l2off, err);
    if (ret < 0) {
        return ret;
    }
    if (l2off) {
        ret = l2_load(img, l2off, &old, err);
        if (ret < 0 || !alloc || (s->l1[i] & QCOW2_OFLAG_COPIED)) {
            *slot = old;
            return ret;
        }
    } else if (!alloc) {
        return 0;
    }
    noff = qcow2_alloc_clusters(img, 1, err);
    if (noff < 0) {
        return (int)noff;
    }
    if (noff == 0) {
        s->corrupt = true;
        return df_fail(err, DF_E_CORRUPT, "'%s': refusing to place an L2 "
                       "table at offset 0", img->path);
    }
    ret = qcow2_overlap_check(img, QCOW2_META_L2, (uint64_t)noff,
                              s->cluster_size, err);
    if (ret < 0) {
        return ret;
    }
    /* @old may be evicted by cache_victim; copy its entries first */
    {
        uint64_t *copy = NULL;
        if (old) {
            copy = malloc(s->cluster_size);
            if (!copy) {
                return df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                               img->path);
            }
            memcpy(copy, old->table, s->cluster_size);
        }
        ret = cache_victim(img, &n, err);
        if (ret < 0) {
            free(copy);
            return ret;
        }
        if (copy) {
            memcpy(n->table, copy, s->cluster_size);
            free(copy);
        } else {
            memset(n->table, 0, s->cluster_size);
        }
    }
    n->offset = (uint64_t)noff;
    n->dirty = true;
    n->lru = ++s->lru_clock;
    s->l1[i] = (uint64_t)noff | QCOW2_OFLAG_COPIED;
    s->l1_dirty = true;
    s->meta_gen++;
    if (l2off) {
        ret = qcow2_free_clusters(img, l2off, 1, err);
        if (ret < 0) {
            return ret;
        }
    }
    *slot = n;
    return 0;
}

/* ---- compressed clusters ---- */

void qcow2_compressed_span(const struct qcow2_state *s, uint64_t e,
                           uint64_t *off, uint64_t *len)
{
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t nsec = ((e >> x) & ((1ULL << (s->cluster_bits - 8)) - 1)) + 1;

    *off = e & ((1ULL << x) - 1);
    *len = nsec * 512 - (*off & 511);
}

/* Decompress the cluster described by @e into @out (one cluster). */
static int read_compressed(struct df_image *img, uint64_t e, uint64_t guest,
                           unsigned char *out, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t off, len;
    unsigned char *in;
    int ret;

    qcow2_compressed_span(s, e, &off, &len);
    if (off >= s->file_size) {
        return df_fail(err, DF_E_CORRUPT, "'%s': compressed cluster for guest "
                       "offset %llu starts beyond the end of the file",
                       img->path, (unsigned long long)guest);
    }
    len = DF_MIN(len, s->file_size - off);
    in = qcow2_decompress_buffer(len ? len : 1);
    if (!in) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    ret = df_io_pread(img->fd, in, len, off, img->path, err);
    if (ret == 0 && qcow2_decompress(s->h.compression_type, in, len, out,
                                     s->cluster_size) < 0) {
        ret = df_fail(err, DF_E_CORRUPT, "'%s': compressed cluster for guest "
                      "offset %llu does not decompress", img->path,
                      (unsigned long long)guest);
    }
    return ret;
}

/* ---- reads ---- */

struct run {
    enum qcow2_cluster_type type;
    uint64_t host;  /* host offset of the run's first byte (NORMAL) */
    uint64_t bytes; /* length of the run from the request position */
    uint64_t entry; /* the first cluster's L2 entry (COMPRESSED) */
};

/*
 * Describe the run of clusters from guest @off (at most @len bytes) that
 * share one type and, for data, contiguous host clusters.  Runs stop at
 * the end of an L2 table.  Called with the lock held.
 */
static int map_run(struct df_image *img, uint64_t off, uint64_t len,
                   struct run *r, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_slot *slot;
    uint64_t in = qcow2_offset_into_cluster(s, off);
    uint64_t idx = qcow2_l2_index(s, off);
    uint64_t avail = ((s->l2_entries - idx) << s->cluster_bits) - in;
    uint64_t e, n;
    int ret;

    len = DF_MIN(len, avail);
    ret = get_l2(img, off, false, &slot, err);
    if (ret < 0) {
        return ret;
    }
    if (!slot) {
        r->type = QCOW2_CLUSTER_UNALLOCATED;
        r->bytes = len;
        return 0;
    }
    e = slot->table[idx];
    ret = check_l2_entry(img, e, off, err);
    if (ret < 0) {
        return ret;
    }
    r->type = qcow2_entry_type(s, e);
    r->entry = e;
    r->host = (e & QCOW2_OFFSET_MASK) + in;
    if (r->type == QCOW2_CLUSTER_NORMAL) {
        ret = cluster_in_file(img, e & QCOW2_OFFSET_MASK, off, err);
        if (ret < 0) {
            return ret;
        }
    }
    n = s->cluster_size - in;
    if (r->type == QCOW2_CLUSTER_COMPRESSED) {
        r->bytes = DF_MIN(len, n);
        return 0;
    }
    while (n < len) {
        uint64_t e2 = slot->table[++idx];
        if (check_l2_entry(img, e2, off + n, NULL) < 0 ||
            qcow2_entry_type(s, e2) != r->type) {
            break;
        }
        if (r->type == QCOW2_CLUSTER_NORMAL) {
            uint64_t h2 = e2 & QCOW2_OFFSET_MASK;
            if (h2 != (e & QCOW2_OFFSET_MASK) + n + in ||
                h2 >= s->file_size) {
                break;
            }
        }
        n += s->cluster_size;
    }
    r->bytes = DF_MIN(len, n);
    return 0;
}

static int read_range(struct df_image *img, unsigned char *buf, size_t len,
                      uint64_t off, bool locked, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    unsigned char *cbuf = NULL;
    int ret = 0;

    while (len && ret == 0) {
        struct run r;

        if (!locked) {
            pthread_mutex_lock(&img->lock);
        }
        ret = map_run(img, off, len, &r, err);
        if (!locked) {
            pthread_mutex_unlock(&img->lock);
        }
        if (ret < 0) {
            break;
        }
        switch (r.type) {
        case QCOW2_CLUSTER_UNALLOCATED:
            ret = df_image_read_backing(img, buf, r.bytes, off, err);
            break;
        case QCOW2_CLUSTER_ZERO_PLAIN:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            memset(buf, 0, r.bytes);
            break;
        case QCOW2_CLUSTER_NORMAL:
            ret = df_io_pread(img->fd, buf, r.bytes, r.host, img->path, err);
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            if (!cbuf && !(cbuf = malloc(s->cluster_size))) {
                ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                              img->path);
                break;
            }
            ret = read_compressed(img, r.entry, off, cbuf, err);
            if (ret == 0) {
                memcpy(buf, cbuf + qcow2_offset_into_cluster(s, off),
                       r.bytes);
            }
            break;
        }
        buf += r.bytes;
        off += r.bytes;
        len -= r.bytes;
    }
    free(cbuf);
    return ret;
}

int qcow2_read(struct df_image *img, void *buf, size_t len, uint64_t off,
               struct df_error *err)
{
    return read_range(img, buf, len, off, false, err);
}

/* ---- writes ---- */

static int check_writable_state(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);

    if (s->corrupt) {
        return df_fail(err, DF_E_CORRUPT, "'%s': an inconsistency was found "
                       "earlier; refusing further writes", img->path);
    }
    if (qcow2_tables_in_file(img, err) < 0) {
        return -DF_E_CORRUPT;
    }
    {
        int ret = qcow2_begin_write(img, err);
        if (ret < 0) {
            return ret;
        }
    }
    if ((s->h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) &&
        !s->dirty_marked) {
        /* lazy refcounts: the image is dirty until we flush */
        int ret = qcow2_write_header_field64(
            img, QCOW2_HDR_INCOMPAT,
            s->h.incompatible_features | QCOW2_INCOMPAT_DIRTY, err);
        if (ret < 0) {
            return ret;
        }
        s->dirty_marked = true;
    }
    return 0;
}

/* Drop one reference to whatever host storage entry @e holds. */
static int release_entry(struct df_image *img, uint64_t e,
                         struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);

    switch (qcow2_entry_type(s, e)) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return qcow2_free_clusters(img, e & QCOW2_OFFSET_MASK, 1, err);
    case QCOW2_CLUSTER_COMPRESSED: {
        uint64_t off, len, first, last;
        qcow2_compressed_span(s, e, &off, &len);
        first = off >> s->cluster_bits;
        last = (off + len - 1) >> s->cluster_bits;
        return qcow2_free_clusters(img, first << s->cluster_bits,
                                   last - first + 1, err);
    }
    default:
        return 0;
    }
}

/* Write guest data to the file at @host (the host map learns of it). */
static int write_data(struct df_image *img, const void *buf, size_t len,
                      uint64_t host, struct df_error *err)
{
    int ret = df_io_pwrite(img->fd, buf, len, host, img->path, err);

    df_hostmap_note_write(img->hostmap, host, len);
    return ret;
}

/* Does writing into a cluster with entry @e need a new cluster? */
static bool needs_alloc(const struct qcow2_state *s, uint64_t e)
{
    enum qcow2_cluster_type t = qcow2_entry_type(s, e);

    return !((t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) &&
             (e & QCOW2_OFLAG_COPIED));
}

/*
 * Write one cluster's worth of @buf at guest @off (within one cluster) to
 * host cluster @host, filling the rest of the cluster from its old content
 * (@old_entry) when the write is partial.
 */
static int write_partial(struct df_image *img, uint64_t host,
                         const unsigned char *buf, size_t len, uint64_t off,
                         bool keep_old, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t start = off & ~(s->cluster_size - 1);
    uint64_t in = off - start;
    uint64_t vis = DF_MIN(s->cluster_size, img->size - start);
    unsigned char *c = calloc(1, s->cluster_size);
    int ret = 0;

    if (!c) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    if (keep_old) {
        ret = read_range(img, c, vis, start, true, err);
    }
    if (ret == 0) {
        memcpy(c + in, buf, len);
        ret = write_data(img, c, s->cluster_size, host, err);
    }
    free(c);
    return ret;
}

/* Does the cluster with entry @e read as zeros to the guest today? */
static bool old_reads_zero(struct df_image *img, uint64_t e)
{
    enum qcow2_cluster_type t = qcow2_entry_type(qcow2_state(img), e);

    return t == QCOW2_CLUSTER_ZERO_PLAIN || t == QCOW2_CLUSTER_ZERO_ALLOC ||
           (t == QCOW2_CLUSTER_UNALLOCATED && !img->backed);
}

/* The L2 entry @e of guest @off, its table loaded (allocated if need be). */
static int entry_for_write(struct df_image *img, uint64_t off,
                           struct qcow2_l2_slot **slot, uint64_t *e,
                           struct df_error *err)
{
    int ret;

    *e = 0;
    ret = get_l2(img, off, true, slot, err);
    if (ret == 0) {
        *e = (*slot)->table[qcow2_l2_index(qcow2_state(img), off)];
        ret = check_l2_entry(img, *e, off, err);
    }
    return ret;
}

/*
 * New host clusters, *@host on, for the run of entries of @slot from @idx
 * (guest @off) that all need one: *@ncl of them, at most @max.
 */
static int alloc_run(struct df_image *img, struct qcow2_l2_slot *slot,
                     uint64_t idx, uint64_t max, uint64_t off, uint64_t *ncl,
                     uint64_t *host, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t n = 1;
    int64_t h;

    while (n < max && needs_alloc(s, slot->table[idx + n]) &&
           check_l2_entry(img, slot->table[idx + n], off, NULL) == 0) {
        n++;
    }
    h = qcow2_alloc_clusters(img, n, err);
    if (h < 0) {
        return (int)h;
    }
    if (h == 0) {
        s->corrupt = true;
        return df_fail(err, DF_E_CORRUPT, "'%s': refusing to place data at "
                       "offset 0", img->path);
    }
    *ncl = n;
    *host = (uint64_t)h;
    return qcow2_overlap_check(img, 0, *host, n << s->cluster_bits, err);
}

static int write_locked(struct df_image *img, const unsigned char *buf,
                        size_t len, uint64_t off, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t fresh_from;
    int ret = check_writable_state(img, err);

    while (len && ret == 0) {
        struct qcow2_l2_slot *slot;
        uint64_t idx = qcow2_l2_index(s, off);
        uint64_t in = qcow2_offset_into_cluster(s, off);
        uint64_t left = DF_MIN((uint64_t)len,
                               ((s->l2_entries - idx) << s->cluster_bits) -
                                   in);
        uint64_t n, ncl, e, host;

        ret = entry_for_write(img, off, &slot, &e, err);
        if (ret < 0) {
            break;
        }
        if (!needs_alloc(s, e)) {
            /* overwrite in place a run of contiguous owned clusters */
            uint64_t h0 = e & QCOW2_OFFSET_MASK;
            bool zero = qcow2_entry_type(s, e) == QCOW2_CLUSTER_ZERO_ALLOC;
            n = s->cluster_size - in;
            while (!zero && n < left) {
                uint64_t e2 = slot->table[idx + n / s->cluster_size];
                if (needs_alloc(s, e2) ||
                    qcow2_entry_type(s, e2) != QCOW2_CLUSTER_NORMAL ||
                    (e2 & QCOW2_OFFSET_MASK) != h0 + in + n) {
                    break;
                }
                n += s->cluster_size;
            }
            n = DF_MIN(n, left);
            ret = cluster_in_file(img, h0, off, err);
            if (ret < 0) {
                s->corrupt = true;
                break;
            }
            ret = qcow2_overlap_check(img, 0, h0, in + n, err);
            if (ret < 0) {
                break;
            }
            if (zero && n < s->cluster_size) {
                /* the rest of a preallocated zero cluster must read 0 */
                ret = write_partial(img, h0, buf, n, off, false, err);
            } else {
                ret = write_data(img, buf, n, h0 + in, err);
            }
            if (ret < 0) {
                break;
            }
            if (zero) {
                slot->table[idx] = h0 | QCOW2_OFLAG_COPIED;
                slot->dirty = true;
            }
            note_file_end(s, h0 + in + n);
            buf += n;
            off += n;
            len -= n;
            continue;
        }
        /* a run of clusters that all need new host clusters */
        fresh_from = s->file_size;
        ret = alloc_run(img, slot, idx,
                        DF_DIV_ROUND_UP(in + left, s->cluster_size), off,
                        &ncl, &host, err);
        if (ret < 0) {
            break;
        }
        n = DF_MIN(left, (ncl << s->cluster_bits) - in);
        /* the allocation may have evicted the slot: look it up again */
        ret = get_l2(img, off, true, &slot, err);
        if (ret < 0) {
            break;
        }
        {
            uint64_t done = 0, h = (uint64_t)host;
            /* clusters past the file's old end read as zeros already:
             * when their old content is zeros too, a partial write needs
             * no zero fill (as a fresh image's scattered guest writes) */
            bool fill = (uint64_t)host < fresh_from ||
                        !old_reads_zero(img, slot->table[idx]) ||
                        !old_reads_zero(img, slot->table[idx + ncl - 1]);
            /* head: partial first cluster */
            if (in || n < s->cluster_size) {
                uint64_t k = DF_MIN(n, s->cluster_size - in);
                ret = fill ? write_partial(img, h, buf, k, off, true, err)
                           : write_data(img, buf, k, h + in, err);
                done = k;
            }
            /* middle: whole clusters straight from the caller's buffer */
            if (ret == 0 && n - done >= s->cluster_size) {
                uint64_t k = (n - done) & ~(s->cluster_size - 1);
                ret = write_data(img, buf + done, k, h + in + done, err);
                done += k;
            }
            /* tail: partial last cluster */
            if (ret == 0 && done < n) {
                ret = fill ? write_partial(img, h + in + done, buf + done,
                                           n - done, off + done, true, err)
                           : write_data(img, buf + done, n - done,
                                        h + in + done, err);
            }
            if (ret < 0) {
                break;
            }
            s->short_file |= !fill;
            note_file_end(s, h + (ncl << s->cluster_bits));
            for (uint64_t k = 0; k < ncl; k++) {
                uint64_t old = slot->table[idx + k];
                slot->table[idx + k] = (h + (k << s->cluster_bits)) |
                                       QCOW2_OFLAG_COPIED;
                ret = release_entry(img, old, err);
                if (ret < 0) {
                    break;
                }
            }
            slot->dirty = true;
        }
        buf += n;
        off += n;
        len -= n;
    }
    return ret;
}

int qcow2_write(struct df_image *img, const void *buf, size_t len,
                uint64_t off, struct df_error *err)
{
    int ret;

    pthread_mutex_lock(&img->lock);
    ret = write_locked(img, buf, len, off, err);
    pthread_mutex_unlock(&img->lock);
    return ret;
}

/* ---- zeroing ---- */

/* Does the cluster at @off already read as zeros? */
static int reads_zero(struct df_image *img, uint64_t off, unsigned flags,
                      bool *zero, struct df_error *err)
{
    struct run r;
    int ret = map_run(img, off, 1, &r, err);

    *zero = ret == 0 && (r.type == QCOW2_CLUSTER_ZERO_PLAIN ||
                         r.type == QCOW2_CLUSTER_ZERO_ALLOC ||
                         (r.type == QCOW2_CLUSTER_UNALLOCATED &&
                          !(flags & DF_ZERO_HIDE_BACKING) &&
                          (img->backing ? off >= img->backing->size
                                        : !img->backed)));
    return ret;
}

static int zero_partial(struct df_image *img, uint64_t off, uint64_t len,
                        unsigned flags, struct df_error *err)
{
    unsigned char *z;
    bool zero;
    int ret = reads_zero(img, off, flags, &zero, err);

    if (ret < 0 || zero) {
        return ret;
    }
    z = calloc(1, len);
    if (!z) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    ret = write_locked(img, z, len, off, err);
    free(z);
    return ret;
}

/* Zero whole clusters [off, off + len) within one L2 table. */
static int zero_clusters(struct df_image *img, uint64_t off, uint64_t len,
                         unsigned flags, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_slot *slot;
    uint64_t idx = qcow2_l2_index(s, off), n = len >> s->cluster_bits;
    /* a backing file that was not opened still shows through */
    bool has_backing = (flags & DF_ZERO_HIDE_BACKING) ||
                       (img->backing ? off < img->backing->size
                                     : img->backed);
    int ret;

    if (s->h.version < 3 && has_backing) {
        /* no zero flag in v2: only explicit zeros hide the backing file */
        for (uint64_t k = 0; k < n; k++) {
            ret = zero_partial(img, off + (k << s->cluster_bits),
                               s->cluster_size, flags, err);
            if (ret < 0) {
                return ret;
            }
        }
        return 0;
    }
    ret = get_l2(img, off, has_backing, &slot, err);
    if (ret < 0 || !slot) {
        return ret; /* no table and nothing beneath: already zeros */
    }
    if (!(s->l1[qcow2_l1_index(s, off)] & QCOW2_OFLAG_COPIED)) {
        ret = get_l2(img, off, true, &slot, err);
        if (ret < 0) {
            return ret;
        }
    }
    for (uint64_t k = 0; k < n; k++) {
        uint64_t e = slot->table[idx + k], ne;
        enum qcow2_cluster_type t = qcow2_entry_type(s, e);
        bool unmap = t == QCOW2_CLUSTER_COMPRESSED ||
                     ((flags & DF_ZERO_MAY_UNMAP) &&
                      (t == QCOW2_CLUSTER_NORMAL ||
                       t == QCOW2_CLUSTER_ZERO_ALLOC)) ||
                     (t != QCOW2_CLUSTER_UNALLOCATED &&
                      !(e & QCOW2_OFLAG_COPIED));

        ret = check_l2_entry(img, e, off, err);
        if (ret < 0) {
            return ret;
        }
        if (s->h.version < 3) {
            /* v2 without a backing file: deallocate */
            ne = 0;
            unmap = t != QCOW2_CLUSTER_UNALLOCATED;
        } else {
            ne = (unmap ? 0 : e) | QCOW2_OFLAG_ZERO;
        }
        if (ne == e) {
            continue;
        }
        slot->table[idx + k] = ne;
        slot->dirty = true;
        if (unmap) {
            ret = release_entry(img, e, err);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

static int zero_locked(struct df_image *img, uint64_t off, uint64_t len,
                       unsigned flags, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = check_writable_state(img, err);

    while (len && ret == 0) {
        uint64_t in = qcow2_offset_into_cluster(s, off);
        uint64_t n;

        if (in || len < s->cluster_size) {
            /* partial cluster (or the image's last, partial cluster) */
            n = DF_MIN(len, s->cluster_size - in);
            if (in == 0 && off + n == img->size) {
                ret = zero_clusters(img, off, s->cluster_size, flags, err);
            } else {
                ret = zero_partial(img, off, n, flags, err);
            }
        } else {
            uint64_t idx = qcow2_l2_index(s, off);
            n = DF_MIN(len & ~(s->cluster_size - 1),
                       (s->l2_entries - idx) << s->cluster_bits);
            ret = zero_clusters(img, off, n, flags, err);
        }
        off += n;
        len -= n;
    }
    return ret;
}

int qcow2_zero(struct df_image *img, uint64_t off, uint64_t len,
               unsigned flags, struct df_error *err)
{
    int ret;

    pthread_mutex_lock(&img->lock);
    ret = zero_locked(img, off, len, flags, err);
    pthread_mutex_unlock(&img->lock);
    return ret;
}

/* ---- block status ---- */

/*
 * Is the file sparse enough that data clusters may be holes in it?  That
 * is what preallocation=metadata makes: every cluster mapped, none
 * written.  A file written cluster by cluster (by a guest, or by convert)
 * has nearly all of its length allocated, and asking the file system
 * about every data run of such a file would cost more than reading it
 * (the rule is qemu's: it too asks only when far less is allocated than
 * the file's length).  Decided once per open.
 */
static bool sparse_file(struct df_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    struct stat st;

    if (!s->sparse_known) {
        s->sparse_known = true;
        s->sparse_file = fstat(img->fd, &st) == 0 &&
                         (uint64_t)st.st_blocks * 512 / 9 * 10 <
                             (uint64_t)st.st_size;
    }
    return s->sparse_file;
}

/*
 * Data clusters at host @host, ext->length bytes of them: in a @sparse
 * file, those that are holes read as zeros, and say so.
 */
static int host_status(struct df_image *img, uint64_t host, bool sparse,
                       struct df_extent *ext, struct df_error *err)
{
    uint64_t run;
    bool data;
    int ret;

    if (!sparse) {
        return 0;
    }
    ret = df_hostmap_lookup(img->hostmap, img->fd, img->path, host,
                            ext->length, &data, &run, err);
    if (ret == 0) {
        ext->length = run;
        if (!data) {
            ext->flags |= DF_BLOCK_ZERO;
        }
    }
    return ret;
}

int qcow2_status(struct df_image *img, uint64_t off, uint64_t len,
                 struct df_extent *ext, struct df_error *err)
{
    struct run r;
    uint64_t total = 0;
    bool sparse;
    int ret = 0;

    ext->start = off;
    ext->host_offset = DF_NO_OFFSET;
    pthread_mutex_lock(&img->lock);
    sparse = sparse_file(img);
    ret = map_run(img, off, len, &r, err);
    if (ret == 0) {
        struct run r2 = r;
        uint64_t host = r.host;
        total = r.bytes;
        /* merge following runs of the same kind (and contiguous data) */
        while (r.type != QCOW2_CLUSTER_COMPRESSED && total < len) {
            if (map_run(img, off + total, len - total, &r2, NULL) < 0 ||
                r2.type != r.type ||
                (r.type == QCOW2_CLUSTER_NORMAL && r2.host != host + total)) {
                break;
            }
            total += r2.bytes;
        }
    }
    pthread_mutex_unlock(&img->lock);
    if (ret < 0) {
        return ret;
    }
    ext->length = total;
    switch (r.type) {
    case QCOW2_CLUSTER_UNALLOCATED:
        ext->flags = 0;
        break;
    case QCOW2_CLUSTER_ZERO_PLAIN:
        ext->flags = DF_BLOCK_ZERO;
        break;
    case QCOW2_CLUSTER_ZERO_ALLOC:
        ext->flags = DF_BLOCK_ZERO;
        ext->host_offset = r.host;
        break;
    case QCOW2_CLUSTER_COMPRESSED:
        ext->flags = DF_BLOCK_DATA | DF_BLOCK_COMPRESSED;
        break;
    case QCOW2_CLUSTER_NORMAL:
        ext->flags = DF_BLOCK_DATA;
        ext->host_offset = r.host;
        return host_status(img, r.host, sparse, ext, err);
    }
    return 0;
}

/* ---- L1 growth, preallocation, flush ---- */

int qcow2_grow_l1(struct df_image *img, uint64_t min_size,
                  struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t bytes = min_size * 8, old_off = s->l1_offset;
    uint64_t old_clusters = DF_DIV_ROUND_UP((uint64_t)s->l1_size * 8,
                                            s->cluster_size);
    uint64_t *nl1;
    int64_t off;
    int ret;

    ret = qcow2_tables_in_file(img, err);
    if (ret == 0) {
        ret = qcow2_begin_write(img, err);
    }
    if (ret < 0) {
        return ret;
    }
    if (min_size <= s->l1_size) {
        return 0;
    }
    if (bytes > QCOW2_MAX_L1_BYTES) {
        return df_fail(err, DF_E_NOSPC, "'%s': the L1 table would exceed its "
                       "maximum size", img->path);
    }
    nl1 = calloc(min_size, sizeof(uint64_t));
    if (!nl1) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    memcpy(nl1, s->l1, (size_t)s->l1_size * 8);
    /* tables the new L1 points at must be on disk before it */
    ret = qcow2_flush_tables(img, err);
    off = ret < 0 ? ret
                  : qcow2_alloc_clusters(
                        img, DF_DIV_ROUND_UP(bytes, s->cluster_size), err);
    if (off < 0) {
        free(nl1);
        return (int)off;
    }
    ret = qcow2_flush_refcounts(img, err);
    if (ret == 0) {
        ret = qcow2_overlap_check(img, QCOW2_META_L1, (uint64_t)off, bytes,
                                  err);
    }
    if (ret == 0) {
        ret = qcow2_write_table(img, (uint64_t)off, nl1, min_size, err);
    }
    if (ret == 0) {
        unsigned char hdr[12];
        df_put_be32(hdr, (uint32_t)min_size);
        df_put_be64(hdr + 4, (uint64_t)off);
        ret = df_io_pwrite(img->fd, hdr, sizeof(hdr), QCOW2_HDR_L1_SIZE,
                           img->path, err);
    }
    if (ret < 0) {
        free(nl1);
        return ret;
    }
    note_file_end(s, (uint64_t)off + bytes);
    free(s->l1);
    s->l1 = nl1;
    s->l1_size = (uint32_t)min_size;
    s->meta_gen++;
    s->l1_offset = (uint64_t)off;
    s->h.l1_size = (uint32_t)min_size;
    s->h.l1_table_offset = (uint64_t)off;
    if (old_clusters && old_off) {
        ret = qcow2_free_clusters(img, old_off, old_clusters, err);
    }
    return ret;
}

/* Map guest clusters [first, first + n) of one L2 table to host @host. */
static int link_l2(struct df_image *img, uint64_t first, uint64_t n,
                   uint64_t host, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_slot *slot;
    uint64_t off = first << s->cluster_bits;
    uint64_t idx = qcow2_l2_index(s, off);
    int ret = get_l2(img, off, true, &slot, err);

    for (uint64_t k = 0; ret == 0 && k < n; k++) {
        uint64_t e = slot->table[idx + k];
        slot->table[idx + k] = (host + (k << s->cluster_bits)) |
                               QCOW2_OFLAG_COPIED;
        /* what the cluster held before (resize's old last cluster) */
        ret = release_entry(img, e, err);
    }
    if (ret == 0) {
        slot->dirty = true;
    }
    return ret;
}

/* Clusters of guest range [c, end) up to the end of c's L2 table. */
static uint64_t clusters_in_l2(const struct qcow2_state *s, uint64_t c,
                               uint64_t end)
{
    uint64_t l2_end = (c | (s->l2_entries - 1)) + 1;
    return DF_MIN(end, l2_end) - c;
}

/*
 * Give guest range [off, off + len) (whole clusters) host clusters of its
 * own that read as zeros, so that df_image_fill() can then write into them
 * in place, without touching a table.  Clusters the image owns already
 * (normal, not shared) are kept; the others get new clusters in guest
 * order, each L2 table allocated just before the first cluster it maps,
 * which is where write_locked() would have put them.  A new cluster inside
 * the file's old end may hold stale bytes and is zeroed; one past it reads
 * as zeros, and the file is extended to it at the next flush.  A zero
 * cluster with a host cluster of its own gets that cluster zeroed and
 * becomes a normal one.  The tables are written by the next flush.
 */
static int allocate_locked(struct df_image *img, uint64_t off, uint64_t len,
                           struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = check_writable_state(img, err);

    while (len && ret == 0) {
        struct qcow2_l2_slot *slot;
        uint64_t idx = qcow2_l2_index(s, off);
        uint64_t left = DF_MIN(len >> s->cluster_bits, s->l2_entries - idx);
        uint64_t ncl, e, fresh_from, host;

        ret = entry_for_write(img, off, &slot, &e, err);
        if (ret < 0) {
            break;
        }
        if (!needs_alloc(s, e)) {
            uint64_t h0 = e & QCOW2_OFFSET_MASK;
            ret = cluster_in_file(img, h0, off, err);
            if (ret < 0) {
                s->corrupt = true;
                break;
            }
            if (qcow2_entry_type(s, e) == QCOW2_CLUSTER_ZERO_ALLOC) {
                ret = qcow2_overlap_check(img, 0, h0, s->cluster_size, err);
                if (ret == 0) {
                    ret = df_io_write_zeroes(img->fd, h0, s->cluster_size,
                                             img->path, err);
                }
                if (ret < 0) {
                    break;
                }
                slot->table[idx] = h0 | QCOW2_OFLAG_COPIED;
                slot->dirty = true;
            }
            off += s->cluster_size;
            len -= s->cluster_size;
            continue;
        }
        fresh_from = s->file_size;
        ret = alloc_run(img, slot, idx, left, off, &ncl, &host, err);
        if (ret == 0 && host < fresh_from) {
            ret = df_io_write_zeroes(img->fd, host,
                                     DF_MIN(ncl << s->cluster_bits,
                                            fresh_from - host),
                                     img->path, err);
        }
        if (ret == 0) {
            ret = link_l2(img, off >> s->cluster_bits, ncl, host, err);
        }
        if (ret < 0) {
            break;
        }
        note_file_end(s, host + (ncl << s->cluster_bits));
        s->short_file = true;
        off += ncl << s->cluster_bits;
        len -= ncl << s->cluster_bits;
    }
    return ret;
}

int qcow2_allocate(struct df_image *img, uint64_t off, uint64_t len,
                   struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret;

    if ((off | len) & (s->cluster_size - 1)) {
        return df_fail(err, DF_E_INVAL, "'%s': allocation of %llu bytes at "
                       "%llu is not cluster aligned", img->path,
                       (unsigned long long)len, (unsigned long long)off);
    }
    pthread_mutex_lock(&img->lock);
    ret = allocate_locked(img, off, len, err);
    pthread_mutex_unlock(&img->lock);
    return ret;
}

/*
 * preallocation=metadata: for each L2 table in turn, allocate the table
 * and then one contiguous run of data clusters for it (at most just under
 * 2 GiB at a time, counted from where the run starts, as qemu-img does),
 * and finally make the file long enough to hold the last data cluster.
 */
static int prealloc_metadata(struct df_image *img, uint64_t first,
                             struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t nclusters = DF_DIV_ROUND_UP(img->size, s->cluster_size);
    uint64_t chunk = ((uint64_t)INT32_MAX & ~(s->cluster_size - 1)) >>
                     s->cluster_bits;
    uint64_t c = first, end = 0;
    int ret = 0;

    while (c < nclusters && ret == 0) {
        uint64_t n = DF_MIN(clusters_in_l2(s, c, nclusters), chunk);
        struct qcow2_l2_slot *slot;
        int64_t host;

        ret = get_l2(img, c << s->cluster_bits, true, &slot, err);
        if (ret < 0) {
            break;
        }
        host = qcow2_alloc_clusters(img, n, err);
        if (host < 0) {
            ret = (int)host;
            break;
        }
        ret = link_l2(img, c, n, (uint64_t)host, err);
        c += n;
        /* whole clusters, the image's last (partial) one included */
        end = (uint64_t)host + (n << s->cluster_bits);
        if (c == nclusters && (img->size & (s->cluster_size - 1))) {
            /* like qemu-img, write zeros past the virtual size in it */
            uint64_t tail = img->size & (s->cluster_size - 1);
            ret = df_io_write_zeroes(img->fd, end - s->cluster_size + tail,
                                     s->cluster_size - tail, img->path, err);
            note_file_end(s, end);
        }
    }
    if (ret == 0) {
        ret = qcow2_flush_tables(img, err);
    }
    if (ret == 0 && end > s->file_size) {
        if (ftruncate(img->fd, (off_t)end) < 0) {
            return df_fail_sys(err, "'%s': cannot extend the file", img->path);
        }
        s->file_size = end;
    }
    return ret;
}

/*
 * preallocation=falloc/full: place new refcount structures able to cover
 * the whole image after the metadata in use, then one contiguous data area
 * (fallocated, or written with zeros), then map it through L2 tables that
 * the allocator places in the free clusters left.
 */
static int prealloc_data(struct df_image *img, enum df_prealloc mode,
                         uint64_t first, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t ndata = DF_DIV_ROUND_UP(img->size, s->cluster_size) - first;
    uint64_t nl2 = DF_DIV_ROUND_UP(ndata, s->l2_entries) + 1;
    uint64_t start, data_end, cur, c = 0;
    int64_t last, area;
    int ret;

    ret = qcow2_last_used_cluster(img, &last, err);
    if (ret < 0) {
        return ret;
    }
    area = qcow2_refcount_area(img, (uint64_t)(last + 1) << s->cluster_bits,
                               ndata + nl2, true, 0, 0, err);
    if (area < 0) {
        return (int)area;
    }
    start = (uint64_t)area;
    ret = qcow2_alloc_clusters_at(img, start, ndata, err);
    if (ret == 0) {
        ret = qcow2_flush_refcounts(img, err);
    }
    if (ret < 0) {
        return ret;
    }
    data_end = start + (ndata << s->cluster_bits);
    cur = s->file_size;
    if (data_end > cur) {
        if (mode == DF_PREALLOC_FULL) {
            ret = df_io_write_zeroes(img->fd, cur, data_end - cur, img->path,
                                     err);
        } else {
            ret = df_io_fallocate(img->fd, cur, data_end - cur, img->path,
                                  err);
        }
        if (ret < 0) {
            return ret;
        }
        s->file_size = data_end;
    }
    while (c < ndata && ret == 0) {
        uint64_t n = clusters_in_l2(s, first + c, first + ndata);
        ret = link_l2(img, first + c, n, start + (c << s->cluster_bits), err);
        c += n;
    }
    return ret;
}

int qcow2_preallocate(struct df_image *img, enum df_prealloc mode,
                      uint64_t first, struct df_error *err)
{
    if (first >= DF_DIV_ROUND_UP(img->size, qcow2_state(img)->cluster_size)) {
        return 0;
    }
    switch (mode) {
    case DF_PREALLOC_METADATA:
        return prealloc_metadata(img, first, err);
    case DF_PREALLOC_FALLOC:
    case DF_PREALLOC_FULL:
        return prealloc_data(img, mode, first, err);
    default:
        return 0;
    }
}

/*
 * The file ends where its last cluster ends, even when that cluster's
 * zero tail was never written (see write_locked()).
 */
static int extend_short_file(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    struct stat st;

    if (!s->short_file) {
        return 0;
    }
    if (fstat(img->fd, &st) < 0) {
        return df_fail_sys(err, "'%s': cannot stat", img->path);
    }
    if ((uint64_t)st.st_size < s->file_size &&
        ftruncate(img->fd, (off_t)s->file_size) < 0) {
        return df_fail_sys(err, "'%s': cannot extend the file to %llu bytes",
                           img->path, (unsigned long long)s->file_size);
    }
    s->short_file = false;
    return 0;
}

int qcow2_flush_tables(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = extend_short_file(img, err);

    if (ret == 0) {
        ret = qcow2_flush_refcounts(img, err);
    }

    for (unsigned i = 0; ret == 0 && i < s->l2_cache_slots; i++) {
        struct qcow2_l2_slot *slot = &s->l2_cache[i];
        if (slot->offset && slot->dirty) {
            ret = write_l2(img, slot, err);
        }
    }
    if (ret == 0 && s->l1_dirty) {
        ret = qcow2_overlap_check(img, QCOW2_META_L1, s->l1_offset,
                                  (uint64_t)s->l1_size * 8, err);
    }
    if (ret == 0 && s->l1_dirty) {
        ret = qcow2_write_table(img, s->l1_offset, s->l1, s->l1_size, err);
        if (ret == 0) {
            s->l1_dirty = false;
        }
    }
    if (ret == 0 && s->dirty_marked) {
        /* everything is consistent on disk again */
        ret = qcow2_write_header_field64(img, QCOW2_HDR_INCOMPAT,
                                         s->h.incompatible_features, err);
        if (ret == 0) {
            s->dirty_marked = false;
        }
    }
    return ret;
}

/* ---- compressed writes ---- */

int df_qcow2_write_compressed(struct df_image *img, uint64_t off,
                              const void *cdata, size_t clen,
                              struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_slot *slot;
    uint64_t idx, x, nb;
    int64_t host;
    int ret;

    if (img->drv != &df_qcow2_driver) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': compressed clusters "
                       "need a qcow2 image", img->path);
    }
    pthread_mutex_lock(&img->lock);
    ret = check_writable_state(img, err);
    if (ret == 0 && clen == 0) {
        /* pad the file to whole sectors, for sector-based readers */
        uint64_t end = DF_ROUND_UP(s->file_size, 512);
        ret = qcow2_flush_tables(img, err);
        if (ret == 0 && end > s->file_size) {
            if (ftruncate(img->fd, (off_t)end) < 0) {
                ret = df_fail_sys(err, "'%s': cannot extend the file",
                                  img->path);
            } else {
                s->file_size = end;
            }
        }
        goto out;
    }
    if (ret == 0 && (qcow2_offset_into_cluster(s, off) ||
                     clen >= s->cluster_size)) {
        ret = df_fail(err, DF_E_INVAL, "'%s': bad compressed write at %llu "
                      "(%zu bytes)", img->path, (unsigned long long)off,
                      clen);
    }
    if (ret == 0) {
        ret = get_l2(img, off, true, &slot, err);
    }
    if (ret < 0) {
        goto out;
    }
    idx = qcow2_l2_index(s, off);
    if (slot->table[idx] && slot->table[idx] != QCOW2_OFLAG_ZERO) {
        ret = df_fail(err, DF_E_INVAL, "'%s': compressed write over the "
                      "allocated cluster at %llu", img->path,
                      (unsigned long long)off);
        goto out;
    }
    host = qcow2_alloc_bytes(img, clen, err);
    if (host < 0) {
        ret = (int)host;
        goto out;
    }
    ret = qcow2_overlap_check(img, 0, (uint64_t)host, clen, err);
    if (ret == 0) {
        ret = df_io_pwrite(img->fd, cdata, clen, (uint64_t)host, img->path,
                           err);
    }
    if (ret < 0) {
        goto out;
    }
    note_file_end(s, (uint64_t)host + clen);
    ret = get_l2(img, off, true, &slot, err);
    if (ret < 0) {
        goto out;
    }
    x = 62 - (s->cluster_bits - 8);
    nb = (((uint64_t)host + clen - 1) >> 9) - ((uint64_t)host >> 9);
    slot->table[idx] = (uint64_t)host | QCOW2_OFLAG_COMPRESSED | (nb << x);
    slot->dirty = true;
out:
    pthread_mutex_unlock(&img->lock);
    return ret;
}

/* ---- whole-image changes: resize, make empty ---- */

/*
 * Unlink the L2 table of L1 entry @i: drop it from the cache and free its
 * cluster.  The entries it held must have been released already.
 */
static int drop_l2_table(struct df_image *img, uint64_t i,
                         struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t l2off = s->l1[i] & QCOW2_OFFSET_MASK;
    struct qcow2_l2_slot *slot = cache_find(s, l2off);

    if (slot) {
        slot->offset = 0;
        slot->dirty = false;
    }
    s->l1[i] = 0;
    s->l1_dirty = true;
    s->meta_gen++;
    return qcow2_free_clusters(img, l2off, 1, err);
}

/* Write the tables back, then cut the file after its last used cluster. */
static int flush_and_trim(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int64_t last;
    int ret = qcow2_flush_tables(img, err);

    if (ret == 0) {
        ret = qcow2_last_used_cluster(img, &last, err);
    }
    if (ret == 0 && last >= 0) {
        uint64_t end = (uint64_t)(last + 1) << s->cluster_bits;
        if (end < s->file_size && ftruncate(img->fd, (off_t)end) < 0) {
            ret = df_fail_sys(err, "'%s': cannot shorten the file", img->path);
        } else if (end < s->file_size) {
            s->file_size = end;
            df_hostmap_forget(img->hostmap); /* its tail is gone */
        }
    }
    return ret;
}

/* Release every cluster mapped in guest [off, end) (cluster aligned) and
 * leave the entries unallocated, as a full discard does. */
static int discard_range(struct df_image *img, uint64_t off, uint64_t end,
                         struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret = 0;

    while (ret == 0 && off < end) {
        uint64_t idx = qcow2_l2_index(s, off);
        uint64_t n = DF_MIN((end - off + s->cluster_size - 1) >>
                                s->cluster_bits,
                            s->l2_entries - idx);
        struct qcow2_l2_slot *slot;

        ret = get_l2(img, off, false, &slot, err);
        if (ret == 0 && slot &&
            !(s->l1[qcow2_l1_index(s, off)] & QCOW2_OFLAG_COPIED)) {
            ret = get_l2(img, off, true, &slot, err);
        }
        for (uint64_t k = 0; ret == 0 && slot && k < n; k++) {
            uint64_t e = slot->table[idx + k];
            if (!e) {
                continue;
            }
            slot->table[idx + k] = 0;
            slot->dirty = true;
            ret = release_entry(img, e, err);
        }
        off += n << s->cluster_bits;
    }
    return ret;
}

/*
 * Shrink to @size, as qemu-img resize --shrink does: the clusters past the
 * new end are discarded, the L2 tables that map nothing but them are
 * freed, so are the refcount blocks left counting nothing but themselves,
 * and the file is cut after its last cluster in use.
 */
static int shrink_locked(struct df_image *img, uint64_t size,
                         struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t keep = qcow2_l1_entries_for(size, s->cluster_bits);
    int ret = discard_range(img, DF_ROUND_UP(size, s->cluster_size),
                            DF_ROUND_UP(img->size, s->cluster_size), err);

    for (uint64_t i = keep; ret == 0 && i < s->l1_size; i++) {
        if (s->l1[i] & QCOW2_OFFSET_MASK) {
            ret = drop_l2_table(img, i, err);
        }
    }
    if (ret == 0) {
        ret = qcow2_flush_tables(img, err);
    }
    if (ret == 0) {
        ret = qcow2_drop_unused_refblocks(img, err);
    }
    if (ret == 0) {
        ret = qcow2_write_header_field64(img, 24, size, err);
    }
    if (ret == 0) {
        img->size = size;
        s->h.size = size;
        ret = flush_and_trim(img, err);
    }
    return ret;
}

/* Does the cluster holding guest @off need a new host cluster for a
 * write (not allocated here, zero without storage, compressed, shared)? */
static int cluster_needs_alloc(struct df_image *img, uint64_t off, bool *need,
                               struct df_error *err)
{
    struct qcow2_l2_slot *slot;
    int ret = get_l2(img, off, false, &slot, err);

    *need = true;
    if (ret == 0 && slot) {
        *need = needs_alloc(qcow2_state(img),
                            slot->table[qcow2_l2_index(qcow2_state(img), off)]);
    }
    return ret;
}

/* Zeros written over guest [off, end), through the normal write path. */
static int write_zero_bytes(struct df_image *img, uint64_t off, uint64_t end,
                            struct df_error *err)
{
    unsigned char *z = calloc(1, end - off);
    int ret;

    if (!z) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    ret = write_locked(img, z, end - off, off, err);
    free(z);
    return ret;
}

/* Do the bytes of guest [off, end), past the old end, hold anything but
 * zeros (left there by a shrink)? */
static int tail_is_stale(struct df_image *img, uint64_t off, uint64_t end,
                         bool *stale, struct df_error *err)
{
    unsigned char *buf = malloc(end - off);
    int ret;

    if (!buf) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    ret = read_range(img, buf, end - off, off, true, err);
    *stale = ret == 0 && !df_is_zero(buf, end - off);
    free(buf);
    return ret;
}

/*
 * Preallocation for growth, as QEMU places it: from the old last cluster
 * when the old size ends inside one that gets a new host cluster (always
 * for falloc/full, which map it and the new clusters to a fresh zeroed
 * area; for metadata when it is not allocated here yet), else from the
 * first new cluster.  What the guest saw before the old end is copied
 * into the new host cluster; the rest of it stays as preallocated.
 */
static int grow_prealloc(struct df_image *img, uint64_t old,
                         enum df_prealloc mode, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t head = qcow2_offset_into_cluster(s, old), start = old - head;
    bool redo = head != 0;
    unsigned char *buf = NULL;
    struct run r;
    int ret = 0;

    if (redo && mode == DF_PREALLOC_METADATA) {
        ret = cluster_needs_alloc(img, old, &redo, err);
    }
    if (ret == 0 && redo) {
        buf = malloc(head);
        if (!buf) {
            return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
        }
        ret = read_range(img, buf, head, start, true, err);
    }
    if (ret == 0) {
        uint64_t first = redo ? start : DF_ROUND_UP(old, s->cluster_size);
        ret = qcow2_preallocate(img, mode, first >> s->cluster_bits, err);
    }
    if (ret == 0 && redo) {
        ret = map_run(img, start, 1, &r, err);
        if (ret == 0) {
            ret = df_io_pwrite(img->fd, buf, head, r.host, img->path, err);
        }
    }
    free(buf);
    return ret;
}

/*
 * Grow to @size with qemu-img 7.2's results: what the guest saw stays, and
 * the new area reads as zeros even over a longer backing file.
 *   - preallocation as grow_prealloc() says;
 *   - when the backing file is longer than the old size, the whole new
 *     clusters get the zero flag (v3) and the rest of the old last cluster
 *     is written with zeros; falloc/full need neither (fresh zeros);
 *   - without one, the rest of an old last cluster that holds anything
 *     but zeros is zeroed anyway, so that bytes a shrink left beyond the
 *     old end do not come back (QEMU shows them again: a deliberate
 *     difference).
 */
static int grow_locked(struct df_image *img, uint64_t size,
                       enum df_prealloc mode, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t old = img->size, cs = s->cluster_size;
    uint64_t zero_start = DF_ROUND_UP(old, cs);
    uint64_t head_end = DF_MIN(zero_start, size);
    bool fresh = mode == DF_PREALLOC_FALLOC || mode == DF_PREALLOC_FULL;
    bool hide = img->backing && img->backing->size > old && !fresh;
    struct run r;
    int ret;

    if (hide && s->h.version < 3 && size > zero_start) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': Failed to zero out new "
                       "clusters: Operation not supported (a compat=0.10 "
                       "image has no zero flag to hide its longer backing "
                       "file; use --preallocation=falloc or full)",
                       img->path);
    }
    ret = qcow2_grow_l1(img, qcow2_l1_entries_for(size, s->cluster_bits),
                        err);
    if (ret < 0) {
        return ret;
    }
    img->size = size;
    s->h.size = size;
    if (mode != DF_PREALLOC_OFF) {
        ret = grow_prealloc(img, old, mode, err);
    }
    if (ret == 0 && hide && size > zero_start) {
        ret = zero_locked(img, zero_start, size - zero_start,
                          DF_ZERO_HIDE_BACKING, err);
    }
    if (ret == 0 && old < zero_start && !fresh) {
        /* the rest of the old last cluster */
        bool stale = false;
        ret = map_run(img, old, 1, &r, err);
        if (ret == 0 && !hide && (r.type == QCOW2_CLUSTER_NORMAL ||
                                  r.type == QCOW2_CLUSTER_COMPRESSED)) {
            ret = tail_is_stale(img, old, head_end, &stale, err);
        }
        if (ret == 0 && (hide || stale)) {
            ret = write_zero_bytes(img, old, head_end, err);
        }
    }
    if (ret == 0) {
        ret = qcow2_flush_tables(img, err);
    }
    if (ret == 0) {
        ret = qcow2_write_header_field64(img, 24, size, err);
    }
    return ret;
}

int qcow2_resize(struct df_image *img, uint64_t size, enum df_prealloc mode,
                 struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret;

    if (size == img->size) {
        return 0; /* nothing changes, nothing is written */
    }
    if (size < img->size && mode != DF_PREALLOC_OFF) {
        return df_fail(err, DF_E_INVAL, "'%s': preallocation can only be "
                       "used for growing images", img->path);
    }
    if (qcow2_l1_entries_for(size, s->cluster_bits) * 8 > QCOW2_MAX_L1_BYTES) {
        return df_fail(err, DF_E_INVAL, "'%s': size %llu is too large for "
                       "cluster size %llu", img->path,
                       (unsigned long long)size,
                       (unsigned long long)s->cluster_size);
    }
    pthread_mutex_lock(&img->lock);
    ret = check_writable_state(img, err);
    if (ret == 0 && size < img->size) {
        ret = shrink_locked(img, size, err);
    } else if (ret == 0) {
        uint64_t old = img->size;
        ret = grow_locked(img, size, mode, err);
        if (ret < 0) {
            img->size = old;
            s->h.size = old;
        }
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}

int qcow2_make_empty(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret;

    pthread_mutex_lock(&img->lock);
    ret = check_writable_state(img, err);
    for (uint32_t i = 0; i < s->l1_size && ret == 0; i++) {
        struct qcow2_l2_slot *slot;

        if (!(s->l1[i] & QCOW2_OFFSET_MASK)) {
            continue;
        }
        ret = get_l2(img, (uint64_t)i << (s->cluster_bits + s->l2_bits),
                     false, &slot, err);
        for (uint64_t j = 0; ret == 0 && j < s->l2_entries; j++) {
            ret = release_entry(img, slot->table[j], err);
        }
        if (ret == 0) {
            ret = drop_l2_table(img, i, err);
        }
    }
    if (ret == 0) {
        ret = flush_and_trim(img, err);
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}
