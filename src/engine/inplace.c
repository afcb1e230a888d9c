/* SPDX-License-Identifier: MIT */
/*
 * inplace.c - operations that change an existing image: resize, commit,
 * rebase and sparsify.  Each opens the image itself, works through the
 * public image calls where it can, and uses the qcow2 driver's own
 * functions for what only the format can do (growing the L1 table,
 * emptying an image, rewriting the backing file name).
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2/qcow2.h"

static int progress_at(df_progress_fn fn, void *opaque, uint64_t done,
                       uint64_t total, const char *path, const char *what,
                       struct df_error *err)
{
    /* the thread's cancel hook as well as the caller's callback */
    if (df_cancel_requested() || (fn && fn(opaque, done, total))) {
        return df_fail(err, DF_E_CANCELED, "'%s': %s canceled", path, what);
    }
    return 0;
}

/* ---- resize ---- */

static int resize_raw(struct df_image *img, uint64_t size,
                      enum df_prealloc prealloc, bool shrink,
                      struct df_error *err)
{
    uint64_t old;
    int ret = df_io_file_size(img->fd, &old, img->path, err);

    if (ret < 0) {
        return ret;
    }
    if (size < old && !shrink) {
        return df_fail(err, DF_E_INVAL, "'%s': use the --shrink option to "
                       "perform a shrink operation", img->path);
    }
    if (prealloc == DF_PREALLOC_METADATA) {
        return df_fail(err, DF_E_INVAL, "'%s': preallocation 'metadata' is "
                       "only for qcow2 images", img->path);
    }
    if (ftruncate(img->fd, (off_t)size) < 0) {
        return df_fail_sys(err, "'%s': cannot resize to %llu bytes",
                           img->path, (unsigned long long)size);
    }
    if (size < old) {
        df_hostmap_forget(img->hostmap); /* its tail is gone */
    }
    if (size > old && prealloc == DF_PREALLOC_FULL) {
        return df_io_write_zeroes(img->fd, old, size - old, img->path, err);
    }
    if (size > old && prealloc == DF_PREALLOC_FALLOC) {
        return df_io_fallocate(img->fd, old, size - old, img->path, err);
    }
    return 0;
}

int df_resize(const char *path, enum df_format fmt, uint64_t size,
              enum df_prealloc prealloc, bool shrink, struct df_error *err)
{
    struct df_image *img;
    int ret;

    if ((unsigned)prealloc > DF_PREALLOC_FULL) {
        return df_fail(err, DF_E_INVAL, "'%s': unknown preallocation mode",
                       path);
    }
    if (size == 0 || size > (uint64_t)INT64_MAX) {
        return df_fail(err, DF_E_INVAL, "'%s': invalid new size %llu", path,
                       (unsigned long long)size);
    }
    /* the backing chain is opened: growing over a longer backing file
     * must hide it, and the old last cluster may be copied up from it */
    img = df_image_open(path, fmt, DF_OPEN_RDWR, err);
    if (!img) {
        return -err->code;
    }
    if (df_image_format(img) == DF_FMT_RAW) {
        ret = resize_raw(img, size, prealloc, shrink, err);
    } else if (size < df_image_size(img) && !shrink) {
        ret = df_fail(err, DF_E_INVAL, "'%s': use the --shrink option to "
                      "perform a shrink operation", path);
    } else {
        ret = qcow2_resize(img, size, prealloc, err);
    }
    if (df_image_close(img, ret < 0 ? NULL : err) < 0 && ret == 0) {
        ret = -err->code;
    }
    return ret;
}

/* ---- commit ---- */

/*
 * Copy into @base every range that @top's chain holds above depth
 * @depth (1: @top's own layer only, read with or without its chain):
 * data as data, zeros as zeros that hide whatever lies beneath @base.
 */
static int copy_allocated(struct df_image *top, struct df_image *base,
                          int depth, df_progress_fn progress, void *opaque,
                          struct df_error *err)
{
    uint64_t size = df_image_size(top), off = 0;
    unsigned char *buf = malloc(DF_CHUNK);
    unsigned zflags = DF_ZERO_MAY_UNMAP;
    struct df_info info;
    int ret = df_image_info(base, &info, err);

    if (ret == 0 && !buf) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                      df_image_path(top));
    }
    if (info.format == DF_FMT_QCOW2 && info.version >= 3) {
        /* zero clusters, as QEMU's commit leaves them (v2 keeps the
         * engine's own zeroing: deallocation where that reads as zeros) */
        zflags |= DF_ZERO_HIDE_BACKING;
    }
    while (ret == 0 && off < size) {
        struct df_extent ext;

        ret = df_image_block_status(top, off, size - off, depth > 1, &ext,
                                    err);
        if (ret < 0) {
            break;
        }
        if (ext.depth < depth && (ext.flags & DF_BLOCK_ZERO) &&
            !(ext.flags & DF_BLOCK_DATA)) {
            ret = df_image_write_zeroes(base, off, ext.length, zflags, err);
        } else if (ext.depth < depth && (ext.flags & DF_BLOCK_DATA)) {
            for (uint64_t p = off; ret == 0 && p < off + ext.length;) {
                size_t n = (size_t)DF_MIN((uint64_t)DF_CHUNK,
                                          off + ext.length - p);
                ret = df_image_pread(top, buf, n, p, err);
                if (ret == 0) {
                    ret = df_image_pwrite(base, buf, n, p, err);
                }
                p += n;
                if (ret == 0) { /* a chunk at a time: extents can be huge */
                    ret = progress_at(progress, opaque, p, size,
                                      df_image_path(top), "commit", err);
                }
            }
        }
        off += ext.length;
        if (ret == 0) {
            ret = progress_at(progress, opaque, off, size,
                              df_image_path(top), "commit", err);
        }
    }
    free(buf);
    return ret;
}

/* Is the image @layer the one the user named @name (as recorded in the
 * image above it, or as another name of the same file)? */
static bool names_layer(const char *name, const char *recorded,
                        const struct df_image *layer)
{
    struct stat a, b;

    if (strcmp(name, recorded) == 0 ||
        strcmp(name, df_image_path(layer)) == 0) {
        return true;
    }
    return stat(name, &a) == 0 && stat(df_image_path(layer), &b) == 0 &&
           a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/*
 * The image @name in @top's backing chain: its path (malloc'd), format
 * and depth (1: the immediate backing file).
 */
static int find_in_chain(struct df_image *top, const char *name,
                         char **path, enum df_format *fmt, int *depth,
                         struct df_error *err)
{
    struct df_image *above = top;
    int d = 1;

    for (struct df_image *l = df_image_backing(top); l;
         above = l, l = df_image_backing(l), d++) {
        struct df_info info;
        int ret = df_image_info(above, &info, err);

        if (ret < 0) {
            return ret;
        }
        if (names_layer(name, info.backing_file, l)) {
            *path = strdup(df_image_path(l));
            *fmt = df_image_format(l);
            *depth = d;
            return *path ? 0 : df_fail(err, DF_E_NOMEM, "out of memory");
        }
    }
    return df_fail(err, DF_E_NOENT, "Did not find '%s' in the backing chain "
                   "of '%s'", name, df_image_path(top));
}

int df_commit_to(const char *path, enum df_format fmt, const char *base_name,
                 bool keep, df_progress_fn progress, void *opaque,
                 struct df_error *err)
{
    struct df_image *top, *base = NULL;
    struct df_info info;
    enum df_format bfmt = DF_FMT_AUTO;
    char *bpath = NULL;
    int depth = 1, ret;

    if (base_name && !*base_name) {
        base_name = NULL;
    }
    /*
     * Committing into the immediate backing file reads the overlay's own
     * clusters only; a base further down is reached through the chain.
     * That chain is opened sharing every permission (as qemu reopens it
     * for its commit job): the base in it is opened again below, for
     * writing, and our own read-only handle must not refuse that.  The
     * top and the base are still locked for writing.
     */
    top = df_image_open(path, fmt,
                        DF_OPEN_RDWR | (base_name ? DF_OPEN_SHARE
                                                  : DF_OPEN_NO_BACKING),
                        err);
    if (!top) {
        return -err->code;
    }
    ret = df_image_info(top, &info, err);
    if (ret == 0 && !info.backing_file[0]) {
        ret = df_fail(err, DF_E_INVAL, "'%s' has no backing file to commit "
                      "into", path);
    }
    if (ret == 0 && base_name) {
        /* as with qemu-img, -b leaves the overlay as it is (-d): the
         * images between it and the base no longer hold what they did */
        keep = true;
        ret = find_in_chain(top, base_name, &bpath, &bfmt, &depth, err);
    } else if (ret == 0) {
        if (info.backing_format[0] &&
            df_format_parse(info.backing_format, &bfmt) < 0) {
            ret = df_fail(err, DF_E_UNSUPPORTED, "'%s': unknown backing "
                          "format '%s'", path, info.backing_format);
        }
        bpath = strdup(info.full_backing_file);
        if (ret == 0 && !bpath) {
            ret = df_fail(err, DF_E_NOMEM, "out of memory");
        }
    }
    if (ret == 0 && df_image_format(top) != DF_FMT_QCOW2) {
        keep = true;
    }
    if (ret == 0) {
        base = df_image_open(bpath, bfmt, DF_OPEN_RDWR, err);
        if (!base) {
            df_error_prefix(err, "'%s': cannot open the backing file for "
                            "writing: ", path);
            ret = -err->code;
        }
    }
    if (ret == 0 && df_image_size(base) < df_image_size(top)) {
        /* the base grows to hold everything the overlay shows */
        df_image_close(base, NULL);
        base = NULL;
        ret = df_resize(bpath, bfmt, df_image_size(top), DF_PREALLOC_OFF,
                        false, err);
        if (ret == 0) {
            base = df_image_open(bpath, bfmt, DF_OPEN_RDWR, err);
            ret = base ? 0 : -err->code;
        }
    }
    if (ret == 0) {
        ret = copy_allocated(top, base, depth, progress, opaque, err);
    }
    if (base && df_image_close(base, ret < 0 ? NULL : err) < 0 && ret == 0) {
        ret = -err->code;
    }
    if (ret == 0 && !keep) {
        /* everything now lives in the base: empty the overlay */
        ret = qcow2_make_empty(top, err);
    }
    if (df_image_close(top, ret < 0 ? NULL : err) < 0 && ret == 0) {
        ret = -err->code;
    }
    free(bpath);
    return ret;
}

int df_commit(const char *path, enum df_format fmt, df_progress_fn progress,
              void *opaque, struct df_error *err)
{
    return df_commit_to(path, fmt, NULL, false, progress, opaque, err);
}

/* ---- rebase ---- */

/*
 * Before @img gets the backing file @nb (NULL: none), copy into it each
 * cluster it does not hold itself whose content differs between its
 * current backing chain (none, shorter or longer than the image: zeros
 * where there is nothing) and @nb (zeros past its end), so that the guest
 * sees the same bytes afterwards.  As qemu-img rebase does, a cluster
 * that lies past the end of the old backing file (or with no old backing
 * file at all) is written as zeros (the v3 zero flag), any other as data.
 */
static int copy_differences(struct df_image *img, struct df_image *nb,
                            df_progress_fn progress, void *opaque,
                            struct df_error *err)
{
    struct df_info info;
    uint64_t size = df_image_size(img), off = 0, cs;
    uint64_t old_end = img->backing ? df_image_size(img->backing) : 0;
    uint64_t new_end = nb ? df_image_size(nb) : 0;
    unsigned char *a = NULL, *b = NULL;
    int ret = df_image_info(img, &info, err);

    if (ret < 0) {
        return ret;
    }
    cs = info.cluster_size;
    a = malloc(DF_CHUNK);
    b = malloc(DF_CHUNK);
    if (!a || !b) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    while (ret == 0 && off < size) {
        struct df_extent ext;

        /* this layer only: 0 flags = not allocated here */
        ret = img->drv->block_status(img, off, size - off, &ext, err);
        if (ret < 0 || ext.flags) {
            off += ret < 0 ? 0 : ext.length;
            continue;
        }
        for (uint64_t p = off; ret == 0 && p < off + ext.length;) {
            size_t n = (size_t)DF_MIN((uint64_t)DF_CHUNK,
                                      off + ext.length - p);
            size_t in_new = p < new_end
                                ? (size_t)DF_MIN((uint64_t)n, new_end - p)
                                : 0;

            ret = df_image_read_backing(img, a, n, p, err);
            if (ret == 0 && in_new) {
                ret = df_image_pread(nb, b, in_new, p, err);
            }
            memset(b + in_new, 0, n - in_new);
            for (size_t k = 0; ret == 0 && k < n;) {
                uint64_t at = p + k;
                size_t step = (size_t)DF_MIN((uint64_t)(n - k),
                                             cs - (at % cs));
                if (memcmp(a + k, b + k, step) == 0) {
                    /* the same either way */
                } else if (at - at % cs >= old_end && info.version >= 3) {
                    ret = df_image_write_zeroes(img, at, step,
                                                DF_ZERO_HIDE_BACKING, err);
                } else {
                    ret = df_image_pwrite(img, a + k, step, at, err);
                }
                k += step;
            }
            p += n;
            if (ret == 0) {
                ret = progress_at(progress, opaque, p, size, img->path,
                                  "rebase", err);
            }
        }
        off += ext.length;
        if (ret == 0) {
            ret = progress_at(progress, opaque, off, size, img->path,
                              "rebase", err);
        }
    }
    free(a);
    free(b);
    return ret;
}

int df_rebase(const char *path, enum df_format fmt, const char *backing,
              enum df_format backing_fmt, bool unsafe,
              df_progress_fn progress, void *opaque, struct df_error *err)
{
    struct df_image *img, *nb = NULL;
    char *bpath = NULL;
    int ret = 0;

    if (backing && !*backing) {
        backing = NULL;
    }
    img = df_image_open(path, fmt, DF_OPEN_RDWR | (unsafe ? DF_OPEN_NO_BACKING
                                                          : 0), err);
    if (!img) {
        return -err->code;
    }
    if (df_image_format(img) != DF_FMT_QCOW2) {
        ret = df_fail(err, DF_E_UNSUPPORTED, "'%s': only qcow2 images have a "
                      "backing file", path);
    }
    if (ret == 0 && backing && backing_fmt == DF_FMT_AUTO) {
        /* a format recorded in a header is never probed */
        ret = df_fail(err, DF_E_INVAL, "'%s': backing file '%s' given "
                      "without its format", path, backing);
    }
    if (ret == 0 && backing) {
        /* the name as it will be read back: json: and protocols refused */
        bpath = df_backing_path(path, backing, err);
        if (!bpath) {
            ret = -err->code;
        } else if (!unsafe) {
            /* safe mode reads the new chain */
            nb = df_image_open(bpath, backing_fmt, 0, err);
            if (!nb) {
                df_error_prefix(err, "'%s': cannot open the new backing "
                                "file: ", path);
                ret = -err->code;
            }
        }
    }
    if (ret == 0 && !unsafe) {
        ret = copy_differences(img, nb, progress, opaque, err);
    }
    if (ret == 0) {
        ret = df_image_flush(img, err);
    }
    if (ret == 0) {
        ret = qcow2_set_backing(img, backing, backing_fmt, err);
    }
    df_image_close(nb, NULL);
    if (df_image_close(img, ret < 0 ? NULL : err) < 0 && ret == 0) {
        ret = -err->code;
    }
    free(bpath);
    return ret;
}

/* ---- sparsify ---- */

static int sparsify_raw(struct df_image *img, uint64_t *freed,
                        df_progress_fn progress, void *opaque,
                        struct df_error *err)
{
    const uint64_t blk = 4096;
    uint64_t size = df_image_size(img), off = 0;
    unsigned char *buf = malloc(DF_CHUNK);
    int ret = 0;

    if (!buf) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    while (ret == 0 && off < size) {
        struct df_extent ext;

        ret = df_image_block_status(img, off, size - off, false, &ext, err);
        if (ret < 0) {
            break;
        }
        for (uint64_t p = off; ret == 0 && (ext.flags & DF_BLOCK_DATA) &&
                               !(ext.flags & DF_BLOCK_ZERO) &&
                               p < off + ext.length;) {
            size_t n = (size_t)DF_MIN((uint64_t)DF_CHUNK,
                                      off + ext.length - p);
            ret = df_image_pread(img, buf, n, p, err);
            for (size_t k = 0; ret == 0 && k < n;) {
                /* whole file-system blocks only */
                size_t step = (size_t)DF_MIN((uint64_t)(n - k),
                                             blk - ((p + k) % blk));
                if (step == blk && df_is_zero(buf + k, step)) {
                    if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE |
                                               FALLOC_FL_KEEP_SIZE,
                                  (off_t)(p + k), (off_t)step) < 0) {
                        ret = df_fail_errno(err, DF_E_IO, "'%s': cannot "
                                            "punch a hole", img->path);
                    }
                    *freed += step;
                }
                k += step;
            }
            p += n;
            if (ret == 0) {
                ret = progress_at(progress, opaque, p, size, img->path,
                                  "sparsify", err);
            }
        }
        off += ext.length;
        if (ret == 0) {
            ret = progress_at(progress, opaque, off, size, img->path,
                              "sparsify", err);
        }
    }
    free(buf);
    return ret;
}

static int sparsify_qcow2(struct df_image *img, uint64_t *freed,
                          df_progress_fn progress, void *opaque,
                          struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t size = df_image_size(img), off = 0, cs = s->cluster_size;
    uint64_t *holes = NULL, nholes = 0, cap = 0;
    unsigned char *buf = malloc(cs);
    int ret = 0;

    if (!buf) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    if (s->h.version < 3 && img->backing) {
        /* without the zero flag, zeros over a backing file must stay */
        free(buf);
        return 0;
    }
    while (ret == 0 && off < size) {
        struct df_extent ext;

        ret = df_image_block_status(img, off, size - off, false, &ext, err);
        if (ret < 0) {
            break;
        }
        if (ext.depth == 0 && (ext.flags & DF_BLOCK_DATA) &&
            !(ext.flags & DF_BLOCK_COMPRESSED)) {
            for (uint64_t p = off; ret == 0 && p < off + ext.length;
                 p += cs) {
                size_t n = (size_t)DF_MIN(cs, size - p);
                if ((p - off) % DF_CHUNK == 0 && p > off) {
                    ret = progress_at(progress, opaque, p, size, img->path,
                                      "sparsify", err);
                    if (ret < 0) {
                        break;
                    }
                }
                ret = df_image_pread(img, buf, n, p, err);
                if (ret < 0 || !df_is_zero(buf, n)) {
                    continue;
                }
                if (nholes == cap) {
                    uint64_t *h = realloc(holes, (cap = cap * 2 + 64) *
                                                     sizeof(*holes));
                    if (!h) {
                        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                                      img->path);
                        break;
                    }
                    holes = h;
                }
                holes[nholes++] = ext.host_offset + (p - off);
                ret = df_image_write_zeroes(img, p, cs, DF_ZERO_MAY_UNMAP,
                                            err);
            }
        }
        off += ext.length;
        if (ret == 0) {
            ret = progress_at(progress, opaque, off, size, img->path,
                              "sparsify", err);
        }
    }
    if (ret == 0) {
        ret = df_image_flush(img, err);
    }
    /* give the freed clusters back to the file system */
    for (uint64_t i = 0; ret == 0 && i < nholes; i++) {
        uint64_t rc;
        pthread_mutex_lock(&img->lock);
        ret = qcow2_get_refcount(img, holes[i] >> s->cluster_bits, &rc, err);
        pthread_mutex_unlock(&img->lock);
        if (ret == 0 && rc == 0) {
            if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          (off_t)holes[i], (off_t)cs) == 0) {
                *freed += cs;
            }
        }
    }
    free(holes);
    free(buf);
    return ret;
}

int df_sparsify(const char *path, enum df_format fmt, uint64_t *freed,
                df_progress_fn progress, void *opaque, struct df_error *err)
{
    uint64_t local = 0;
    struct df_image *img;
    int ret;

    if (!freed) {
        freed = &local;
    }
    *freed = 0;
    img = df_image_open(path, fmt, DF_OPEN_RDWR, err);
    if (!img) {
        return -err->code;
    }
    if (df_image_format(img) == DF_FMT_RAW) {
        ret = sparsify_raw(img, freed, progress, opaque, err);
    } else {
        ret = sparsify_qcow2(img, freed, progress, opaque, err);
    }
    if (df_image_close(img, ret < 0 ? NULL : err) < 0 && ret == 0) {
        ret = -err->code;
    }
    return ret;
}
