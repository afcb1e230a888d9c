/* SPDX-License-Identifier: MIT */
/*
 * convert.c - df_convert(): copy the guest-visible bytes of one image into
 * a new image, the way `qemu-img convert` does.
 *
 * The source (with its backing chain) is walked by block status.  Ranges
 * that read as zeros are not read and not written: a new target already
 * reads as zeros there.  Data ranges are read in chunks and scanned in
 * granules; a granule that holds only zeros is not written either, so the
 * target stays sparse.  With a sparse size of 0 every byte is written and
 * the target ends up fully allocated (qemu-img convert -S 0).
 *
 * The target is built under a temporary name beside @dst and renamed over
 * it only after it was closed successfully.  On any failure the temporary
 * file is removed and @dst is left as it was.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "output.h"

/* Largest -S value qemu-img 7.2 accepts. */
#define MAX_SPARSE_SIZE (16u << 20)

struct convert {
    const struct df_convert_opts *o;
    const char *dst_name;  /* the user's name for the output */
    struct df_image *src;
    struct df_image *dst;  /* the temporary target, open read/write */
    uint64_t size;         /* virtual size of source and target */
    uint64_t granule;      /* zero-detection unit; 0: write everything */
    unsigned char *buf;
    unsigned nthreads;     /* usable CPUs, for reading chunks */
    struct df_image *base; /* the target's backing file (-B), or NULL */
    unsigned char *bbuf;   /* the base's bytes for the current chunk */
    size_t buf_size;       /* >= granule, so a chunk holds whole granules */
};

void df_convert_opts_init(struct df_convert_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->src_format = DF_FMT_AUTO;
    df_create_opts_init(&o->target);
    o->sparse_size = 4096;
}

/*
 * Compressed output needs a qcow2 target without preallocation (as in
 * qemu-img: a compressed cluster cannot be written over an allocated one).
 */
static int check_compress(const struct df_convert_opts *o, const char *dst,
                          struct df_error *err)
{
    if (!o->compress) {
        return 0;
    }
    if (o->target.format != DF_FMT_QCOW2) {
        return df_fail(err, DF_E_INVAL, "'%s': compression is only "
                       "supported for qcow2 output", dst);
    }
    if (o->target.prealloc != DF_PREALLOC_OFF) {
        return df_fail(err, DF_E_INVAL, "'%s': compression and "
                       "preallocation cannot be used together", dst);
    }
    return 0;
}

static int check_opts(const struct df_convert_opts *o, const char *dst,
                      struct df_error *err)
{
    if (o->sparse_size % 512 || o->sparse_size > MAX_SPARSE_SIZE) {
        return df_fail(err, DF_E_INVAL, "invalid sparse size %llu: use a "
                       "multiple of 512 up to %u, or 0 to allocate the "
                       "whole output", (unsigned long long)o->sparse_size,
                       MAX_SPARSE_SIZE);
    }
    if (o->target.backing_file && o->target.format != DF_FMT_QCOW2) {
        return df_fail(err, DF_E_INVAL, "'%s': only a qcow2 output can have "
                       "a backing file", dst);
    }
    if (o->target.backing_file && o->compress) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': compressed output on a "
                       "backing file is not supported", dst);
    }
    return check_compress(o, dst, err);
}

/* Refuse to convert a file onto itself (same inode, whatever the path). */
static int check_distinct(const char *src, const char *dst,
                          struct df_error *err)
{
    if (df_same_file(src, dst)) {
        return df_fail(err, DF_E_INVAL, "'%s' and '%s' are the same file: "
                       "cannot convert an image onto itself", src, dst);
    }
    return 0;
}

/* ---- reading a chunk on every usable CPU ---- */

struct slice {
    struct df_image *img;
    unsigned char *buf;
    size_t len;
    uint64_t off;
    int ret;
    struct df_error err;
};

static void *read_slice(void *arg)
{
    struct slice *sl = arg;
    sl->ret = df_image_pread(sl->img, sl->buf, sl->len, sl->off, &sl->err);
    return NULL;
}

/*
 * Read a chunk of the source, split in slices read concurrently: reading
 * is where the time goes for compressed sources (inflating) and the
 * image allows parallel readers.
 */
static int chunk_read(struct convert *c, unsigned char *buf, size_t len,
                      uint64_t off, struct df_error *err)
{
    enum { MAX_SLICES = 8, MIN_SLICE = 256 << 10 };
    struct slice sl[MAX_SLICES];
    pthread_t th[MAX_SLICES];
    bool started[MAX_SLICES] = { false };
    size_t n = DF_MIN((size_t)c->nthreads, (size_t)MAX_SLICES);
    size_t per;
    int ret = 0;

    if (n < 2 || len < 2 * (size_t)MIN_SLICE) {
        return df_image_pread(c->src, buf, len, off, err);
    }
    per = DF_ROUND_UP(DF_DIV_ROUND_UP(len, n), (size_t)65536);
    for (size_t i = 0; i < n; i++) {
        size_t at = DF_MIN(i * per, len);
        sl[i] = (struct slice){ .img = c->src, .buf = buf + at,
                                .len = DF_MIN(per, len - at), .off = off + at };
        if (i && sl[i].len &&
            pthread_create(&th[i], NULL, read_slice, &sl[i]) == 0) {
            started[i] = true;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!started[i] && sl[i].len) {
            read_slice(&sl[i]); /* the caller's share, or a failed start */
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (started[i]) {
            pthread_join(th[i], NULL);
        }
        if (sl[i].len && sl[i].ret < 0 && ret == 0) {
            ret = sl[i].ret;
            if (err && err->code == DF_OK) {
                *err = sl[i].err;
            }
        }
    }
    return ret;
}

static int report(struct convert *c, uint64_t done, struct df_error *err)
{
    const struct df_convert_opts *o = c->o;

    if (o->progress && o->progress(o->progress_opaque, done, c->size)) {
        return df_fail(err, DF_E_CANCELED, "'%s': conversion canceled",
                       c->dst_name);
    }
    return 0;
}

static int write_target(void *opaque, const unsigned char *buf, size_t len,
                        uint64_t off, struct df_error *err)
{
    struct convert *c = opaque;

    return df_image_pwrite(c->dst, buf, len, off, err);
}

/*
 * Write @len bytes of @buf (guest offset @off) to the target, leaving out
 * granules that hold only zeros (see df_write_nonzero()).
 */
static int write_sparse(struct convert *c, const unsigned char *buf,
                        size_t len, uint64_t off, struct df_error *err)
{
    if (!c->granule) {
        return df_image_pwrite(c->dst, buf, len, off, err);
    }
    return df_write_nonzero(buf, len, off, c->granule, write_target, c, err);
}

/*
 * With a backing file (-B): write only the granules whose bytes differ
 * from what the backing file shows there, zeros included, so the output
 * holds exactly what the source changes on top of its base.
 */
static int write_over_base(struct convert *c, const unsigned char *buf,
                           size_t len, uint64_t off, struct df_error *err)
{
    uint64_t bsize = df_image_size(c->base);
    size_t in_base = off < bsize ? (size_t)DF_MIN((uint64_t)len, bsize - off)
                                 : 0;
    size_t pos = 0, run = 0;
    int ret = 0;

    if (in_base) {
        ret = df_image_pread(c->base, c->bbuf, in_base, off, err);
        if (ret < 0) {
            return ret;
        }
    }
    memset(c->bbuf + in_base, 0, len - in_base);
    while (pos < len && ret == 0) {
        size_t next = (size_t)DF_MIN((uint64_t)len,
                                     ((off + pos) / c->granule + 1) *
                                             c->granule - off);
        if (memcmp(buf + pos, c->bbuf + pos, next - pos) == 0) {
            if (run < pos) {
                ret = df_image_pwrite(c->dst, buf + run, pos - run, off + run,
                                      err);
            }
            run = next;
        }
        pos = next;
    }
    if (ret == 0 && run < len) {
        ret = df_image_pwrite(c->dst, buf + run, len - run, off + run, err);
    }
    return ret;
}

/*
 * Copy the guest range [@off, @off + @len).  @zero says the source reads
 * as zeros there: then nothing is read, and nothing written unless the
 * output must be fully allocated.
 */
static int copy_range(struct convert *c, uint64_t off, uint64_t len,
                      bool zero, struct df_error *err)
{
    uint64_t end = off + len;
    int ret;

    if (zero && c->granule && !c->base) {
        return report(c, end, err);
    }
    if (zero) {
        memset(c->buf, 0, c->buf_size);
    }
    while (off < end) {
        uint64_t n = DF_MIN(end - off, (uint64_t)c->buf_size);
        if (off + n < end && c->granule) {
            /* end the chunk on a granule boundary */
            n = (off + n) / c->granule * c->granule - off;
        }
        if (!zero) {
            ret = chunk_read(c, c->buf, (size_t)n, off, err);
            if (ret < 0) {
                return ret;
            }
        }
        ret = c->base ? write_over_base(c, c->buf, (size_t)n, off, err)
                      : write_sparse(c, c->buf, (size_t)n, off, err);
        if (ret < 0) {
            return ret;
        }
        off += n;
        ret = report(c, off, err);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int copy_image(struct convert *c, struct df_error *err)
{
    uint64_t off = 0;
    int ret = report(c, 0, err);

    while (ret == 0 && off < c->size) {
        struct df_extent ext;
        ret = df_image_block_status(c->src, off, c->size - off, true, &ext,
                                    err);
        if (ret < 0) {
            break;
        }
        if (ext.length == 0) {
            return df_fail(err, DF_E_IO, "'%s': block status at offset %llu "
                           "returned an empty range",
                           df_image_path(c->src), (unsigned long long)off);
        }
        ext.length = DF_MIN(ext.length, c->size - off);
        ret = copy_range(c, off, ext.length, ext.flags & DF_BLOCK_ZERO, err);
        off += ext.length;
    }
    return ret;
}

/* Create and open the target at @tmp, then copy the source into it. */
static int convert_into(struct convert *c, const char *tmp,
                        struct df_error *err)
{
    struct df_create_opts topts = c->o->target;
    int ret;

    topts.size = c->size;
    ret = df_image_create_at(tmp, &topts, err);
    if (ret < 0) {
        return ret;
    }
    /* with -B the backing chain is opened too: it is compared against */
    c->dst = df_image_open(tmp, topts.format,
                           DF_OPEN_RDWR |
                               (topts.backing_file ? 0 : DF_OPEN_NO_BACKING),
                           err);
    if (!c->dst) {
        return -err->code;
    }
    c->base = df_image_backing(c->dst);
    c->nthreads = df_usable_cpus();
    c->granule = c->o->sparse_size;
    if (topts.format == DF_FMT_QCOW2 && (c->granule || c->base)) {
        /* qcow2 allocates whole clusters: judge whole clusters */
        c->granule = DF_MAX(c->granule, (uint64_t)topts.cluster_size);
    }
    c->buf_size = (size_t)DF_MAX((uint64_t)DF_CHUNK, c->granule);
    c->buf = malloc(c->buf_size);
    c->bbuf = c->base ? malloc(c->buf_size) : NULL;
    if (!c->buf || (c->base && !c->bbuf)) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", c->dst_name);
    }
    ret = c->o->compress
              ? df_convert_compressed(c->src, c->dst, c->o->progress,
                                      c->o->progress_opaque, c->dst_name, err)
              : copy_image(c, err);
    if (ret == 0) {
        /* closing flushes the target's metadata: it can fail */
        ret = df_image_close(c->dst, err);
        c->dst = NULL;
    }
    return ret;
}

int df_convert(const char *src, const char *dst,
               const struct df_convert_opts *o, struct df_error *err)
{
    struct convert c = { .o = o, .dst_name = dst };
    struct df_error local = { 0 };
    char *tmp = NULL;
    int ret;

    if (!err) {
        err = &local; /* failures below read err->code */
    }
    ret = check_opts(o, dst, err);
    if (ret == 0) {
        ret = check_distinct(src, dst, err);
    }
    if (ret < 0) {
        return ret;
    }
    c.src = df_image_open(src, o->src_format, 0, err);
    if (!c.src) {
        return -err->code;
    }
    c.size = df_image_size(c.src);
    tmp = df_temp_name(dst);
    if (!tmp) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", dst);
        goto out;
    }
    ret = convert_into(&c, tmp, err);
    if (ret == 0 && rename(tmp, dst) < 0) {
        ret = df_fail_sys(err, "'%s': cannot rename the temporary file "
                          "into place", dst);
    }
    if (ret < 0) {
        df_image_close(c.dst, NULL);
        unlink(tmp);
        df_error_rename_file(err, tmp, dst);
    }
out:
    free(c.buf);
    free(c.bbuf);
    free(tmp);
    df_image_close(c.src, NULL);
    return ret;
}
