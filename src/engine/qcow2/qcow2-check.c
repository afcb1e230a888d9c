/* SPDX-License-Identifier: MIT */
/*
 * qcow2-check.c - consistency check and repair, with qemu-img check's
 * semantics and messages.
 *
 * The check counts, for every host cluster of the file, how many times the
 * metadata refers to it (header, L1 tables, L2 tables, data, compressed
 * data, refcount structures, the snapshot table), then compares those
 * counts with the stored refcounts:
 *   stored > counted  a leak: space is wasted, nothing else;
 *   stored < counted  a corruption: a write could overwrite live data.
 * It also reports entries that cannot be right (reserved bits, offsets not
 * aligned or outside the file) and COPIED flags that disagree with a
 * refcount of exactly one.  Nothing is followed blindly: a bad table is
 * reported and not descended into, so no input makes the check loop.
 *
 * Repair: leaks are fixed by lowering refcounts; "all" also raises them,
 * clears entries that point outside the file or are misaligned, fixes
 * COPIED flags, and rebuilds the refcount structures when a cluster in use
 * has no refcount at all.  The check then runs again on the result.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

struct check {
    struct df_image *img;
    struct qcow2_state *s;
    enum df_repair repair;
    uint16_t *refs; /* references per host cluster, saturating */
    uint64_t nb;    /* host clusters in the file */
    struct df_check_result *res;
    df_message_fn msg;
    void *opaque;
    bool need_rebuild;
    bool tables_changed;
};

static void say(struct check *c, const char *fmt, ...) DF_PRINTF(2, 3);

static void say(struct check *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (!c->msg) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    c->msg(c->opaque, line);
}

/*
 * Count one reference to each cluster of [off, off + len).  A range that
 * runs past the end of the file by a cluster or more is a corruption.
 * Returns false when the range was not counted.
 */
static bool add_ref(struct check *c, uint64_t off, uint64_t len)
{
    uint64_t cs = c->s->cluster_size;
    uint64_t first, last;

    if (!len) {
        return true;
    }
    first = off / cs;
    last = (off + len - 1) / cs;
    if (last >= c->nb || off + len < off) {
        say(c, "ERROR: counting reference for region exceeding the end of "
               "the file by one cluster or more: offset 0x%llx size 0x%llx",
            (unsigned long long)off, (unsigned long long)len);
        c->res->corruptions++;
        return false;
    }
    for (uint64_t k = first; k <= last; k++) {
        if (c->refs[k] < UINT16_MAX) {
            c->refs[k]++;
        }
    }
    return true;
}

/*
 * Count the references of one L2 table.  @active: the table belongs to
 * the active L1 (entries are checked and, in repair mode, fixed; figures
 * are gathered).  Returns true when @t was changed.
 */
static bool check_l2(struct check *c, uint64_t *t, bool active)
{
    struct qcow2_state *s = c->s;
    uint64_t next = 0;
    bool changed = false;
    bool fix = active && c->repair == DF_REPAIR_ALL;

    for (uint64_t j = 0; j < s->l2_entries; j++) {
        uint64_t e = t[j], off, len;
        uint64_t reserved = QCOW2_L2_RESERVED |
                            (s->h.version < 3 ? QCOW2_OFLAG_ZERO : 0);

        switch (qcow2_entry_type(s, e)) {
        case QCOW2_CLUSTER_COMPRESSED:
            if (e & QCOW2_OFLAG_COPIED) {
                qcow2_compressed_span(s, e, &off, &len);
                say(c, "ERROR: coffset=0x%llx: copied flag must never be "
                       "set for compressed clusters", (unsigned long long)off);
                if (fix) {
                    t[j] = e &= ~QCOW2_OFLAG_COPIED;
                    changed = true;
                    c->res->corruptions_fixed++;
                } else {
                    c->res->corruptions++;
                }
            }
            qcow2_compressed_span(s, e, &off, &len);
            if (!add_ref(c, off, len) && fix) {
                t[j] = 0;
                changed = true;
                c->res->corruptions--;
                c->res->corruptions_fixed++;
                continue;
            }
            if (active) {
                c->res->allocated_clusters++;
                c->res->compressed_clusters++;
                c->res->fragmented_clusters++;
            }
            break;
        case QCOW2_CLUSTER_ZERO_ALLOC:
        case QCOW2_CLUSTER_NORMAL:
            if (active && (e & reserved)) {
                say(c, "ERROR found l2 entry with reserved bits set: "
                       "0x%llx", (unsigned long long)e);
                goto bad_entry;
            }
            off = e & QCOW2_OFFSET_MASK;
            if (active) {
                c->res->allocated_clusters++;
                if (next && off != next) {
                    c->res->fragmented_clusters++;
                }
                next = off + s->cluster_size;
            }
            if ((off & (s->cluster_size - 1)) && active) {
                say(c, "ERROR offset=%llx: Data cluster is not properly "
                       "aligned; L2 entry corrupted.",
                    (unsigned long long)off);
                if (fix) {
                    goto fix_entry;
                }
                /* counted anyway, as qemu-img does: the clusters it
                 * straddles show up as shared */
                c->res->corruptions++;
            }
            if (!add_ref(c, off, s->cluster_size) && fix) {
                c->res->corruptions--;
                goto fix_entry;
            }
            break;
        default:
            if (active && (e & reserved) && e != QCOW2_OFLAG_ZERO) {
                say(c, "ERROR found l2 entry with reserved bits set: "
                       "0x%llx", (unsigned long long)e);
                goto bad_entry;
            }
            break;
        }
        continue;
bad_entry:
        if (!fix) {
            c->res->corruptions++;
            continue;
        }
fix_entry:
        /* the data cannot be trusted: make the cluster read as zeros */
        t[j] = s->h.version >= 3 ? QCOW2_OFLAG_ZERO : 0;
        changed = true;
        c->res->corruptions_fixed++;
    }
    return changed;
}

/* Count an L1 table and everything below it. */
static int check_l1(struct check *c, uint64_t l1_off, uint64_t *l1,
                    uint64_t n, bool active, struct df_error *err)
{
    struct qcow2_state *s = c->s;
    uint64_t *t = malloc(s->cluster_size);
    bool l1_changed = false;
    int ret = 0;

    if (!t) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", c->img->path);
    }
    add_ref(c, l1_off, n * 8);
    for (uint64_t i = 0; i < n && ret == 0; i++) {
        uint64_t e = l1[i], off = e & QCOW2_OFFSET_MASK;
        bool bad = false;

        if (!off) {
            continue;
        }
        /* an L2 table at a time: a cancel is seen within one */
        ret = df_cancel_point(c->img->path, err);
        if (ret < 0) {
            break;
        }
        if (active && (e & QCOW2_L1_RESERVED)) {
            say(c, "ERROR found L1 entry with reserved bits set: 0x%llx",
                (unsigned long long)e);
            bad = true;
        } else if (off & (s->cluster_size - 1)) {
            say(c, "ERROR l2_offset=0x%llx: Table is not cluster aligned; L1 "
                   "entry corrupted", (unsigned long long)off);
            bad = true;
        } else if (!add_ref(c, off, s->cluster_size)) {
            if (active && c->repair == DF_REPAIR_ALL) {
                c->res->corruptions--;
                bad = true;
            } else {
                continue;
            }
        }
        if (bad) {
            if (active && c->repair == DF_REPAIR_ALL) {
                l1[i] = 0;
                l1_changed = true;
                c->res->corruptions_fixed++;
            } else {
                c->res->corruptions++;
            }
            continue;
        }
        ret = qcow2_read_table(c->img, off, t, s->l2_entries, err);
        if (ret == 0 && check_l2(c, t, active)) {
            ret = qcow2_write_table(c->img, off, t, s->l2_entries, err);
            c->tables_changed = true;
        }
    }
    if (ret == 0 && l1_changed) {
        ret = qcow2_write_table(c->img, l1_off, l1, n, err);
        c->tables_changed = true;
    }
    free(t);
    return ret;
}

/* Count the snapshot table and each snapshot's tables (read only). */
static int check_snapshots(struct check *c, struct df_error *err)
{
    struct qcow2_state *s = c->s;
    uint64_t off = s->h.snapshots_offset;
    unsigned char fixed[40];
    int ret = 0;

    for (uint32_t i = 0; i < s->h.nb_snapshots && ret == 0; i++) {
        uint64_t l1_off, l1_size, entry;
        uint64_t *l1;

        if (off >= s->file_size) {
            say(c, "ERROR snapshot table entry %u is outside the file", i);
            c->res->corruptions++;
            return 0;
        }
        ret = df_io_pread(c->img->fd, fixed, sizeof(fixed), off,
                          c->img->path, err);
        if (ret < 0) {
            return ret;
        }
        l1_off = df_be64(fixed);
        l1_size = df_be32(fixed + 8);
        entry = 40 + df_be32(fixed + 36) + df_be16(fixed + 12) +
                df_be16(fixed + 14);
        off += DF_ROUND_UP(entry, 8);
        if ((l1_off & (s->cluster_size - 1)) ||
            l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            say(c, "ERROR snapshot %u has an invalid L1 table", i);
            c->res->corruptions++;
            continue;
        }
        l1 = malloc(DF_MAX(l1_size, 1) * 8);
        if (!l1) {
            return df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                           c->img->path);
        }
        ret = qcow2_read_table(c->img, l1_off, l1, l1_size, err);
        if (ret == 0) {
            ret = check_l1(c, l1_off, l1, l1_size, false, err);
        }
        free(l1);
    }
    add_ref(c, s->h.snapshots_offset, off - s->h.snapshots_offset);
    return ret;
}

/*
 * Count the clusters of the persistent dirty bitmaps (their directory,
 * each bitmap table and the data clusters it points at), as qemu-img
 * does, while the autoclear bit says they are valid.
 */
#define BITMAP_DIR_MAX (1024u * 65535u)
#define BITMAP_TABLE_MAX 0x8000000u
static int check_bitmaps(struct check *c, struct df_error *err)
{
    struct qcow2_state *s = c->s;
    uint64_t cs = s->cluster_size, pos = 0;
    unsigned char *dir;
    int ret = 0;

    if (!s->has_bitmaps ||
        !(s->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        return 0;
    }
    if (s->bm_dir_size > BITMAP_DIR_MAX || (s->bm_dir_offset & (cs - 1)) ||
        !add_ref(c, s->bm_dir_offset, s->bm_dir_size)) {
        say(c, "ERROR bitmap directory at 0x%llx (%llu bytes) is invalid",
            (unsigned long long)s->bm_dir_offset,
            (unsigned long long)s->bm_dir_size);
        c->res->corruptions++;
        return 0;
    }
    dir = malloc(DF_MAX(s->bm_dir_size, 1));
    if (!dir) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", c->img->path);
    }
    ret = df_io_pread(c->img->fd, dir, s->bm_dir_size, s->bm_dir_offset,
                      c->img->path, err);
    for (uint32_t i = 0; ret == 0 && i < s->bm_count &&
                         pos + 24 <= s->bm_dir_size; i++) {
        uint64_t toff = df_be64(dir + pos), n = df_be32(dir + pos + 8);
        uint64_t *t;

        pos += DF_ROUND_UP(24 + (uint64_t)df_be32(dir + pos + 20) +
                               df_be16(dir + pos + 18), 8);
        if (n > BITMAP_TABLE_MAX || (toff & (cs - 1)) ||
            !add_ref(c, toff, n * 8)) {
            say(c, "ERROR bitmap %u has an invalid bitmap table", i);
            c->res->corruptions++;
            continue;
        }
        t = malloc(DF_MAX(n, 1) * 8);
        if (!t) {
            ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                          c->img->path);
            break;
        }
        ret = qcow2_read_table(c->img, toff, t, n, err);
        for (uint64_t k = 0; ret == 0 && k < n; k++) {
            uint64_t d = t[k] & QCOW2_OFFSET_MASK;
            if (d && ((d & (cs - 1)) || !add_ref(c, d, cs))) {
                say(c, "ERROR bitmap %u: data cluster 0x%llx is invalid", i,
                    (unsigned long long)d);
                c->res->corruptions++;
            }
        }
        free(t);
    }
    free(dir);
    return ret;
}

/* Count the refcount table and blocks (as they are on disk). */
static void check_reftable(struct check *c)
{
    struct qcow2_state *s = c->s;

    add_ref(c, s->rt_offset, s->rt_size * 8);
    for (uint64_t i = 0; i < s->rt_size; i++) {
        uint64_t off = s->rt[i];
        if (!off) {
            continue;
        }
        if (off & (s->cluster_size - 1)) {
            say(c, "ERROR refcount block %llu is not cluster aligned; "
                   "refcount table entry corrupted", (unsigned long long)i);
            c->res->corruptions++;
            continue;
        }
        if (off >> s->cluster_bits >= c->nb) {
            say(c, "ERROR refcount block %llu is outside image",
                (unsigned long long)i);
            c->res->corruptions++;
            continue;
        }
        if (c->refs[off >> s->cluster_bits]) {
            /* something else lives in this refcount block's cluster */
            say(c, "ERROR refcount block %llu refcount=%u",
                (unsigned long long)i, c->refs[off >> s->cluster_bits] + 1);
            c->res->corruptions++;
            c->need_rebuild = true;
        }
        add_ref(c, off, s->cluster_size);
    }
}

/*
 * Compare the counted references with the refcounts; fix as @fix allows.
 * Like qemu-img, a repair first runs this with DF_REPAIR_NONE, which
 * prints each finding ("Leaked cluster ...", "ERROR cluster ..."), then
 * again to fix them ("Repairing cluster ...").
 */
static int compare_refcounts(struct check *c, enum df_repair fix,
                             struct df_error *err)
{
    uint64_t highest = 0;
    bool any = false;

    for (uint64_t i = 0; i < c->nb; i++) {
        uint64_t rc, ref = c->refs[i];
        int ret = (i & 0xffff) == 0 ? df_cancel_point(c->img->path, err) : 0;

        if (ret < 0) {
            return ret;
        }
        ret = qcow2_get_refcount(c->img, i, &rc, NULL);

        if (ret < 0) {
            say(c, "Can't get refcount for cluster %llu",
                (unsigned long long)i);
            c->res->check_errors++;
            continue;
        }
        if (rc || ref) {
            highest = i;
            any = true;
        }
        if (rc == ref) {
            continue;
        }
        if (rc == 0) {
            c->need_rebuild = true;
        }
        if (rc && ((rc > ref && fix != DF_REPAIR_NONE) ||
                   (rc < ref && fix == DF_REPAIR_ALL))) {
            say(c, "Repairing cluster %llu refcount=%llu reference=%llu",
                (unsigned long long)i, (unsigned long long)rc,
                (unsigned long long)ref);
            ret = qcow2_set_refcount(c->img, i, ref, err);
            if (ret < 0) {
                return ret;
            }
            if (rc > ref) {
                c->res->leaks_fixed++;
            } else {
                c->res->corruptions_fixed++;
            }
            continue;
        }
        say(c, "%s cluster %llu refcount=%llu reference=%llu",
            rc < ref ? "ERROR" : "Leaked", (unsigned long long)i,
            (unsigned long long)rc, (unsigned long long)ref);
        if (rc < ref) {
            c->res->corruptions++;
        } else {
            c->res->leaks++;
        }
    }
    c->res->image_end_offset = any ? (highest + 1) * c->s->cluster_size : 0;
    return 0;
}

/* Check (and in repair mode fix) COPIED flags against the refcounts. */
static int check_copied(struct check *c, struct df_error *err)
{
    struct qcow2_state *s = c->s;
    /* a flag that disagrees with its refcount is always safe to fix */
    bool fix = c->repair != DF_REPAIR_NONE;
    bool l1_changed = false;
    uint64_t *t = malloc(s->cluster_size);
    int ret = 0;

    if (!t) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", c->img->path);
    }
    for (uint64_t i = 0; i < s->l1_size && ret == 0; i++) {
        uint64_t e = s->l1[i], off = e & QCOW2_OFFSET_MASK, rc;
        bool changed = false;

        if (!off || (off & (s->cluster_size - 1)) ||
            qcow2_get_refcount(c->img, off >> s->cluster_bits, &rc, NULL) <
                0) {
            continue;
        }
        if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
            say(c, "%s OFLAG_COPIED L2 cluster: l1_index=%llu l1_entry=%llx "
                   "refcount=%llu", fix ? "Repairing" : "ERROR",
                (unsigned long long)i, (unsigned long long)e,
                (unsigned long long)rc);
            if (fix) {
                s->l1[i] = rc == 1 ? e | QCOW2_OFLAG_COPIED
                                   : e & ~QCOW2_OFLAG_COPIED;
                l1_changed = true;
                c->res->corruptions_fixed++;
            } else {
                c->res->corruptions++;
            }
        }
        ret = qcow2_read_table(c->img, off, t, s->l2_entries, err);
        for (uint64_t j = 0; ret == 0 && j < s->l2_entries; j++) {
            enum qcow2_cluster_type ty = qcow2_entry_type(s, t[j]);
            uint64_t d = t[j] & QCOW2_OFFSET_MASK;

            if ((ty != QCOW2_CLUSTER_NORMAL &&
                 ty != QCOW2_CLUSTER_ZERO_ALLOC) ||
                (d & (s->cluster_size - 1)) ||
                qcow2_get_refcount(c->img, d >> s->cluster_bits, &rc,
                                   NULL) < 0) {
                continue;
            }
            if ((rc == 1) != !!(t[j] & QCOW2_OFLAG_COPIED)) {
                say(c, "%s OFLAG_COPIED data cluster: l2_entry=%llx "
                       "refcount=%llu", fix ? "Repairing" : "ERROR",
                    (unsigned long long)t[j], (unsigned long long)rc);
                if (fix) {
                    t[j] = rc == 1 ? t[j] | QCOW2_OFLAG_COPIED
                                   : t[j] & ~QCOW2_OFLAG_COPIED;
                    changed = true;
                    c->res->corruptions_fixed++;
                } else {
                    c->res->corruptions++;
                }
            }
        }
        if (ret == 0 && changed) {
            ret = qcow2_write_table(c->img, off, t, s->l2_entries, err);
            c->tables_changed = true;
        }
    }
    if (ret == 0 && l1_changed) {
        ret = qcow2_write_table(c->img, s->l1_offset, s->l1, s->l1_size, err);
    }
    free(t);
    return ret;
}

/* One pass over the image.  With c->repair, fixes what it may. */
static int check_pass(struct check *c, struct df_error *err)
{
    struct qcow2_state *s = c->s;
    struct df_check_result pre;
    int ret;

    c->nb = DF_DIV_ROUND_UP(s->file_size, s->cluster_size);
    free(c->refs);
    c->refs = calloc(DF_MAX(c->nb, 1), sizeof(*c->refs));
    if (!c->refs) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory for %llu "
                       "clusters", c->img->path, (unsigned long long)c->nb);
    }
    c->res->total_clusters = DF_DIV_ROUND_UP(c->img->size, s->cluster_size);
    c->need_rebuild = false;

    add_ref(c, 0, s->cluster_size); /* the header */
    ret = check_l1(c, s->l1_offset, s->l1, s->l1_size, true, err);
    if (ret == 0) {
        ret = check_snapshots(c, err);
    }
    if (ret == 0) {
        ret = check_bitmaps(c, err);
    }
    if (ret < 0) {
        return ret;
    }
    check_reftable(c);
    pre = *c->res;
    ret = compare_refcounts(c, DF_REPAIR_NONE, err);
    if (ret < 0) {
        return ret;
    }
    if (c->repair == DF_REPAIR_ALL) {
        /* decide on a rebuild before fixing single refcounts */
        for (uint64_t i = 0; i < c->nb && !c->need_rebuild; i++) {
            uint64_t rc;
            if (c->refs[i] &&
                (qcow2_get_refcount(c->img, i, &rc, NULL) < 0 || rc == 0)) {
                c->need_rebuild = true;
            }
        }
        if (c->need_rebuild) {
            bool *old = calloc(DF_MAX(c->nb, 1), sizeof(*old));
            if (!old) {
                return df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                               c->img->path);
            }
            /* what the findings counted is fixed by the rebuild, and a
             * refcount block overlap is not a corruption left after it */
            *c->res = pre;
            c->res->corruptions = 0;
            say(c, "Rebuilding refcount structure");
            for (uint64_t i = 0; i < c->nb; i++) {
                uint64_t rc = 0;
                qcow2_get_refcount(c->img, i, &rc, NULL);
                if (rc < c->refs[i]) {
                    c->res->corruptions_fixed++;
                } else if (rc > c->refs[i]) {
                    c->res->leaks_fixed++;
                }
            }
            /* the old structures will not be referenced any more */
            for (uint64_t i = 0; i < s->rt_size; i++) {
                uint64_t k = s->rt[i] >> s->cluster_bits;
                if (s->rt[i] && !(s->rt[i] & (s->cluster_size - 1)) &&
                    k < c->nb && c->refs[k]) {
                    c->refs[k]--;
                    old[k] = true;
                }
            }
            for (uint64_t k = 0; k < s->rt_size * 8 / s->cluster_size; k++) {
                uint64_t idx = (s->rt_offset >> s->cluster_bits) + k;
                if (idx < c->nb && c->refs[idx]) {
                    c->refs[idx]--;
                    old[idx] = true;
                }
            }
            ret = qcow2_rebuild_refcounts(c->img, c->refs, c->nb, err);
            /* the old structures' clusters are free now, as qemu-img
             * reports them once its rebuilt refcounts let it free them */
            for (uint64_t k = 0; ret == 0 && k < c->nb; k++) {
                if (old[k] && !c->refs[k]) {
                    say(c, "Repairing cluster %llu refcount=1 reference=0",
                        (unsigned long long)k);
                }
            }
            free(old);
            if (ret < 0) {
                return ret;
            }
            c->need_rebuild = false;
            return check_copied(c, err);
        }
    }
    if (c->need_rebuild && c->repair != DF_REPAIR_NONE) {
        say(c, "ERROR need to rebuild refcount structures");
        c->res->check_errors++;
        return df_fail(err, DF_E_CORRUPT, "'%s': the refcount structures "
                       "must be rebuilt: use repair mode 'all'",
                       c->img->path);
    }
    if (c->repair != DF_REPAIR_NONE && (c->res->leaks || c->res->corruptions)) {
        /* the findings were printed: now fix what the mode allows */
        *c->res = pre;
        ret = compare_refcounts(c, c->repair, err);
    }
    if (ret == 0) {
        ret = check_copied(c, err);
    }
    return ret;
}

/*
 * Forget the persistent bitmaps: count every reference (bitmaps included)
 * and the bitmaps' own, call @unlink to take them out of the header, then
 * lower by the bitmaps' share the refcount of each cluster they used whose
 * refcount was right.  A cluster whose refcount was wrong is left for a
 * repair to report; one a crafted bitmap shares with live data keeps that
 * reference.  A crash before the refcounts are written leaks clusters,
 * nothing worse.
 */
int qcow2_forget_bitmaps(struct df_image *img,
                         int (*unlink)(struct df_image *, struct df_error *),
                         struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    struct df_check_result r_all = { 0 }, r_bm = { 0 };
    struct check all = { .img = img, .s = s, .res = &r_all };
    struct check bm = { .img = img, .s = s, .res = &r_bm };
    int ret = qcow2_flush_tables(img, err);

    if (ret == 0) {
        ret = qcow2_refcounts_load(img, err);
    }
    if (ret == 0) {
        ret = check_pass(&all, err);
    }
    if (ret == 0) {
        bm.nb = all.nb;
        bm.refs = calloc(DF_MAX(bm.nb, 1), sizeof(*bm.refs));
        ret = bm.refs ? check_bitmaps(&bm, err)
                      : df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                                img->path);
    }
    if (ret == 0) {
        ret = unlink(img, err);
    }
    for (uint64_t k = 0; ret == 0 && k < bm.nb; k++) {
        uint64_t rc;
        if (!bm.refs[k] || all.refs[k] == UINT16_MAX ||
            qcow2_get_refcount(img, k, &rc, NULL) < 0 || rc != all.refs[k]) {
            continue;
        }
        ret = qcow2_set_refcount(img, k, rc - bm.refs[k], err);
    }
    if (ret == 0) {
        ret = qcow2_flush_refcounts(img, err);
    }
    free(all.refs);
    free(bm.refs);
    return ret;
}

/*
 * A repair is a write, and passes qcow2_begin_write() first (which drops
 * persistent bitmaps) -- but only when there is something to repair: a
 * quiet read-only pass decides, so that repairing a clean image changes
 * nothing.
 */
static int begin_repair(struct check *c, struct df_error *err)
{
    struct qcow2_state *s = c->s;
    struct df_check_result found = { 0 };
    struct check probe = { .img = c->img, .s = s, .repair = DF_REPAIR_NONE,
                           .res = &found };
    int ret = qcow2_flush_tables(c->img, err);

    if (ret == 0) {
        ret = qcow2_refcounts_load(c->img, err);
    }
    if (ret == 0) {
        ret = check_pass(&probe, err);
    }
    free(probe.refs);
    if (ret < 0) {
        return ret;
    }
    if (found.corruptions || found.leaks || found.check_errors ||
        (s->h.incompatible_features &
         (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT))) {
        ret = qcow2_begin_write(c->img, err);
    }
    return ret;
}

int qcow2_check(struct df_image *img, enum df_repair repair,
                struct df_check_result *res, df_message_fn msg, void *opaque,
                struct df_error *err)
{
    int ret;

    pthread_mutex_lock(&img->lock);
    ret = qcow2_check_locked(img, repair, res, msg, opaque, err);
    pthread_mutex_unlock(&img->lock);
    return ret;
}

int qcow2_check_locked(struct df_image *img, enum df_repair repair,
                       struct df_check_result *res, df_message_fn msg,
                       void *opaque, struct df_error *err)
{
    struct check c = { .img = img, .s = qcow2_state(img), .repair = repair,
                       .res = res, .msg = msg, .opaque = opaque };
    int ret;

    memset(res, 0, sizeof(*res));
    ret = repair != DF_REPAIR_NONE ? begin_repair(&c, err) : 0;
    if (ret == 0) {
        ret = qcow2_flush_tables(img, err);
    }
    if (ret == 0) {
        ret = qcow2_refcounts_load(img, err);
    }
    if (ret == 0) {
        ret = check_pass(&c, err);
    }
    if (ret == 0 && repair != DF_REPAIR_NONE) {
        struct df_check_result first = *res;
        struct qcow2_state *s = c.s;

        ret = qcow2_flush_tables(img, err);
        if (ret == 0 && (first.leaks_fixed || first.corruptions_fixed ||
                         s->h.incompatible_features &
                             (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT))) {
            /* a clean image needs neither flag */
            uint64_t clean = s->h.incompatible_features &
                             ~(QCOW2_INCOMPAT_DIRTY |
                               (repair == DF_REPAIR_ALL ? QCOW2_INCOMPAT_CORRUPT
                                                        : 0));
            ret = qcow2_write_header_field64(img, QCOW2_HDR_INCOMPAT, clean,
                                             err);
            s->h.incompatible_features = clean;
        }
        if (ret == 0) {
            /* check again, without fixing, and report that */
            memset(res, 0, sizeof(*res));
            c.repair = DF_REPAIR_NONE;
            ret = check_pass(&c, err);
            res->leaks_fixed = first.leaks_fixed;
            res->corruptions_fixed = first.corruptions_fixed;
            res->repaired = true;
        }
    }
    free(c.refs);
    return ret;
}
