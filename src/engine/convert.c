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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

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
    bool whole_granules;   /* a granule is the unit the target allocates
                            * (a qcow2 cluster): write whole ones */
    unsigned char *buf[2];  /* the two windows' bytes */
    struct df_workers *workers; /* read windows on every usable CPU */
    EVP_MD_CTX *hash;       /* the guest bytes' SHA-256, or NULL */
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
    if (o->no_create && o->target.backing_file) {
        return df_fail(err, DF_E_INVAL, "'%s': a backing file (-B) cannot "
                       "be given when the output is not created (-n)", dst);
    }
    if (o->no_create && o->compress) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': compressed output (-c) "
                       "into an existing image (-n) is not supported", dst);
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

/* ---- reading windows of the source on every usable CPU ---- */

/*
 * A window is planned on the caller's thread: block status finds the data
 * in it (a list of source ranges to read) and its zero ranges are cleared
 * at once.  Its pieces are then read by the workers while the caller
 * writes the window before it: two windows, each with its buffer, take
 * turns.  Pieces are at most MAX_PIECE bytes, so that one big run is read
 * (and, for a compressed source, inflated) by every thread; the threads
 * take pieces in turn from a shared index.
 */
#define MAX_PIECE (256u << 10)

struct piece {
    uint64_t off;   /* in the source */
    size_t at, len; /* in the window buffer */
};

struct window {
    struct convert *c;
    unsigned char *buf;
    uint64_t zfrom;     /* the zero run before the window starts here */
    uint64_t start;     /* guest offset of buf[0] */
    size_t len;         /* bytes in the window; 0: the image ended */
    struct piece *p;
    size_t n, cap;
    uint64_t bytes;     /* in all the pieces */
    struct df_workers *readers; /* the pool reading it, or NULL */
    bool posted;        /* reading, not waited for yet */
    atomic_size_t next; /* the next piece to read */
    atomic_int failed;
    pthread_mutex_t mu; /* guards err */
    struct df_error err;
};

static int add_piece(struct window *w, uint64_t off, size_t at, size_t len,
                     struct df_error *err)
{
    while (len) {
        size_t n = DF_MIN(len, (size_t)MAX_PIECE);
        if (w->n == w->cap) {
            size_t cap = w->cap * 2 + 64;
            struct piece *p = realloc(w->p, cap * sizeof(*p));
            if (!p) {
                return df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                               w->c->dst_name);
            }
            w->p = p;
            w->cap = cap;
        }
        w->p[w->n++] = (struct piece){ .off = off, .at = at, .len = n };
        off += n;
        at += n;
        len -= n;
    }
    return 0;
}

static void read_pieces(void *arg, unsigned t)
{
    struct window *w = arg;
    struct convert *c = w->c;
    size_t i;

    (void)t;
    while (!atomic_load(&w->failed) &&
           (i = atomic_fetch_add(&w->next, 1)) < w->n) {
        struct df_error e = { 0 };
        const struct piece *p = &w->p[i];
        if (df_image_pread(c->src, w->buf + p->at, p->len, p->off, &e) < 0 &&
            !atomic_exchange(&w->failed, 1)) {
            pthread_mutex_lock(&w->mu);
            w->err = e;
            pthread_mutex_unlock(&w->mu);
        }
    }
}

/*
 * Plan the window at @start, at most @max bytes: its data pieces, and its
 * zero ranges cleared.  With @may_skip (output already reads zeros where
 * nothing is written), the window ends where a zero run covers a whole
 * granule: the next window skips that run without reading or writing it.
 * Windows start and end on granule boundaries (but at the image's end),
 * so small extents that share an output cluster go out in one write.
 */
static int plan_pieces(struct convert *c, struct window *w, uint64_t start,
                       size_t max, bool may_skip, struct df_error *err)
{
    uint64_t pos = start, end = start + max;
    int ret = 0;

    while (pos < end && ret == 0) {
        struct df_extent ext;
        uint64_t n;
        ret = df_image_block_status(c->src, pos, end - pos, true, &ext, err);
        if (ret < 0) {
            return ret;
        }
        if (ext.length == 0) {
            return df_fail(err, DF_E_IO, "'%s': block status at offset %llu "
                           "returned an empty range", df_image_path(c->src),
                           (unsigned long long)pos);
        }
        n = DF_MIN(ext.length, end - pos);
        if (ext.flags & DF_BLOCK_ZERO) {
            uint64_t g = may_skip ? DF_ROUND_UP(pos, c->granule) : end;
            if (may_skip && g > pos && g + c->granule <= pos + n) {
                /* a whole granule of zeros follows: end the window */
                n = g - pos;
                end = g;
            } else if (may_skip && g == pos && pos + n >= g + c->granule) {
                end = pos;
                break;
            }
            memset(w->buf + (pos - start), 0, (size_t)n);
        } else {
            ret = add_piece(w, pos, (size_t)(pos - start), (size_t)n, err);
            w->bytes += n;
        }
        pos += n;
    }
    w->len = (size_t)(end - start);
    return ret;
}

/*
 * Plan the next window from guest @off: where the output already reads as
 * zeros, first pass over the zero runs there (the window's zfrom..start),
 * then plan the window from the granule of the first data.  A window of
 * length 0 means the image ends in that zero run.
 */
static int plan_window(struct convert *c, struct window *w, uint64_t off,
                       bool may_skip, struct df_error *err)
{
    int ret;

    w->zfrom = w->start = off;
    w->len = 0;
    w->n = 0;
    w->bytes = 0;
    while (may_skip && off < c->size) {
        struct df_extent ext;
        ret = df_image_block_status(c->src, off, c->size - off, true, &ext,
                                    err);
        if (ret < 0) {
            return ret;
        }
        if (!(ext.flags & DF_BLOCK_ZERO) || !ext.length) {
            break;
        }
        off += DF_MIN(ext.length, c->size - off);
    }
    if (off >= c->size) {
        w->start = c->size;
        return 0;
    }
    /* the window holds the whole granule of its first data */
    w->start = may_skip ? off / c->granule * c->granule : off;
    ret = plan_pieces(c, w, w->start,
                      (size_t)DF_MIN((uint64_t)c->buf_size,
                                     c->size - w->start),
                      may_skip, err);
    if (ret == 0 && w->len == 0) {
        /* cannot happen (off is data): never loop without progress */
        ret = df_fail(err, DF_E_IO, "'%s': block status at offset %llu "
                      "changed during the conversion",
                      df_image_path(c->src), (unsigned long long)off);
    }
    return ret;
}

/* Start reading the window's pieces on the workers. */
static void post_window(struct window *w)
{
    if (!w->n) {
        return;
    }
    atomic_store(&w->next, 0);
    atomic_store(&w->failed, 0);
    /* waking the workers costs more than a few small reads */
    w->readers = w->bytes >= 2 * MAX_PIECE ? w->c->workers : NULL;
    w->posted = true;
    df_workers_post(w->readers, read_pieces, w);
}

/* Finish reading the window (the caller reads what is left). */
static int wait_window(struct window *w, struct df_error *err)
{
    if (!w->posted) {
        return 0;
    }
    w->posted = false;
    df_workers_wait(w->readers, read_pieces, w);
    if (atomic_load(&w->failed)) {
        if (err) {
            *err = w->err;
        }
        return -w->err.code;
    }
    return 0;
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
 * Write a run whose every byte matters (it differs from the base, or the
 * output is an existing image): its all-zero granules as zero ranges
 * (zero clusters, no data: as qemu-img stores a zeroed area), the rest as
 * data.
 */
static int write_diff(struct convert *c, const unsigned char *buf, size_t len,
                      uint64_t off, struct df_error *err)
{
    size_t pos = 0;
    int ret = 0;

    while (pos < len && ret == 0) {
        size_t g = (size_t)DF_MIN((uint64_t)(len - pos), c->granule);
        bool zero = df_is_zero(buf + pos, g);
        size_t end = pos + g;
        while (end < len) {
            size_t n = (size_t)DF_MIN((uint64_t)(len - end), c->granule);
            if (df_is_zero(buf + end, n) != zero) {
                break;
            }
            end += n;
        }
        ret = zero ? df_image_write_zeroes(c->dst, off + pos, end - pos,
                                           DF_ZERO_MAY_UNMAP, err)
                   : df_image_pwrite(c->dst, buf + pos, end - pos, off + pos,
                                     err);
        pos = end;
    }
    return ret;
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
                ret = write_diff(c, buf + run, pos - run, off + run, err);
            }
            run = next;
        }
        pos = next;
    }
    if (ret == 0 && run < len) {
        ret = write_diff(c, buf + run, len - run, off + run, err);
    }
    return ret;
}

/*
 * Write only the data runs of the window at guest @off, each through the
 * sparse scan on its own bytes (as qemu-img does for a raw output: the
 * zeros around a small extent are not written, so a granule with a
 * little data allocates only the file blocks that data covers).
 */
static int write_runs(struct convert *c, const struct window *w, uint64_t off,
                      struct df_error *err)
{
    int ret = 0;

    for (size_t i = 0; i < w->n && ret == 0;) {
        size_t at = w->p[i].at, end = at + w->p[i].len;
        while (++i < w->n && w->p[i].at == end) {
            end += w->p[i].len;
        }
        ret = write_sparse(c, w->buf + at, end - at, off + at, err);
    }
    return ret;
}

/* Add @len guest bytes to the digest: @buf's, or zeros when NULL. */
static int hash_guest(struct convert *c, const unsigned char *buf,
                      uint64_t len, struct df_error *err)
{
    int ok = buf ? EVP_DigestUpdate(c->hash, buf, (size_t)len)
                 : df_sha256_zeros(c->hash, len) == 0;

    return ok ? 0 : df_fail(err, DF_E_IO, "'%s': SHA-256 update failed",
                            c->dst_name);
}

/*
 * Write a window that has been read, with the zero run before it: where
 * the output is an existing image (-n) that run is made to read as zeros;
 * otherwise it is left alone.
 */
static int write_window(struct convert *c, const struct window *w,
                        bool may_skip, struct df_error *err)
{
    uint64_t zlen = w->start - w->zfrom;
    int ret = 0;

    if (zlen && c->o->no_create) {
        ret = df_image_write_zeroes(c->dst, w->zfrom, zlen,
                                    DF_ZERO_MAY_UNMAP, err);
    }
    if (ret == 0 && c->hash && zlen) {
        ret = hash_guest(c, NULL, zlen, err);
    }
    if (ret < 0 || !w->len) {
        return ret;
    }
    ret = c->base ? write_over_base(c, w->buf, w->len, w->start, err)
         : may_skip && c->o->no_create ? write_diff(c, w->buf, w->len,
                                                    w->start, err)
         : may_skip && !c->whole_granules ? write_runs(c, w, w->start, err)
         : write_sparse(c, w->buf, w->len, w->start, err);
    if (ret == 0 && c->hash) {
        ret = hash_guest(c, w->buf, w->len, err);
    }
    return ret;
}

/*
 * Walk the source by block status and copy it window by window, reading
 * the next window on the workers while the caller writes this one.  Where
 * the output already reads as zeros (no -S 0, no -B), runs of zeros are
 * neither read nor written; everything else is read into a window and
 * written through the sparse scan (or the comparison with -B).  An
 * existing output (-n) gets zero ranges where the source reads zeros.
 */
static int copy_image(struct convert *c, struct df_error *err)
{
    bool may_skip = c->granule && !c->base;
    struct window w[2] = { { .c = c, .buf = c->buf[0] },
                           { .c = c, .buf = c->buf[1] } };
    unsigned cur = 0;
    int ret;

    pthread_mutex_init(&w[0].mu, NULL);
    pthread_mutex_init(&w[1].mu, NULL);
    ret = report(c, 0, err);
    if (ret == 0) {
        ret = plan_window(c, &w[0], 0, may_skip, err);
    }
    if (ret == 0) {
        post_window(&w[0]);
    }
    while (ret == 0) {
        struct window *a = &w[cur], *b = &w[cur ^ 1];
        uint64_t end = a->start + a->len; /* the image's size when len is 0 */
        bool more = a->len && end < c->size;

        /* plan the next window while the workers read this one */
        if (more) {
            ret = plan_window(c, b, end, may_skip, err);
        }
        {
            int r = wait_window(a, ret < 0 ? NULL : err);
            ret = ret < 0 ? ret : r;
        }
        if (ret < 0) {
            break;
        }
        if (more) {
            post_window(b);
        }
        ret = write_window(c, a, may_skip, err);
        if (ret == 0) {
            ret = report(c, end, err);
        }
        if (!more) {
            break;
        }
        cur ^= 1;
    }
    /* never leave a batch reading into buffers about to be freed */
    for (unsigned i = 0; i < 2; i++) {
        wait_window(&w[i], NULL);
        pthread_mutex_destroy(&w[i].mu);
        free(w[i].p);
    }
    return ret;
}

/* Set up the copy into the open target c->dst, and run it. */
static int convert_open(struct convert *c, uint64_t cluster_size,
                        struct df_error *err)
{
    int ret;

    c->base = df_image_backing(c->dst);
    c->workers = df_workers_start(df_usable_cpus());
    c->granule = c->o->sparse_size;
    if (df_image_format(c->dst) == DF_FMT_QCOW2 && (c->granule || c->base)) {
        /* qcow2 allocates whole clusters: judge whole clusters */
        c->granule = DF_MAX(c->granule, cluster_size);
        c->whole_granules = true;
    }
    c->buf_size = (size_t)DF_MAX((uint64_t)DF_CHUNK, c->granule);
    c->buf[0] = malloc(c->buf_size);
    c->buf[1] = malloc(c->buf_size);
    c->bbuf = c->base ? malloc(c->buf_size) : NULL;
    if (!c->buf[0] || !c->buf[1] || (c->base && !c->bbuf)) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", c->dst_name);
    }
    if (c->o->guest_sha256) {
        c->hash = EVP_MD_CTX_new();
        if (!c->hash || !EVP_DigestInit_ex(c->hash, EVP_sha256(), NULL)) {
            return df_fail(err, DF_E_NOMEM, "'%s': cannot start SHA-256",
                           c->dst_name);
        }
    }
    ret = c->o->compress
              ? df_convert_compressed(c->src, c->dst, c->o->sparse_size == 0,
                                      c->hash, c->o->progress,
                                      c->o->progress_opaque, c->dst_name, err)
              : copy_image(c, err);
    if (ret == 0 && c->hash &&
        !EVP_DigestFinal_ex(c->hash, c->o->guest_sha256, NULL)) {
        ret = df_fail(err, DF_E_IO, "'%s': cannot finish SHA-256",
                      c->dst_name);
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
    ret = convert_open(c, topts.cluster_size, err);
    if (ret == 0) {
        /* closing flushes the target's metadata: it can fail */
        ret = df_image_close(c->dst, err);
        c->dst = NULL;
    }
    return ret;
}

/*
 * -n: write into the image already at @dst, in place (as qemu-img: there
 * is no temporary copy, so a failure leaves it partly written).  Its
 * backing file is not opened: every guest byte of the source is written,
 * zeros as zero ranges, so what the backing file holds does not matter.
 */
static int convert_existing(struct convert *c, struct df_error *err)
{
    struct df_info info;
    int ret;

    c->dst = df_image_open(c->dst_name, c->o->target.format,
                           DF_OPEN_RDWR | DF_OPEN_NO_BACKING, err);
    if (!c->dst) {
        return -err->code;
    }
    ret = df_image_info(c->dst, &info, err);
    if (ret == 0 && df_image_size(c->dst) < c->size) {
        ret = df_fail(err, DF_E_INVAL, "'%s': output file is smaller than "
                      "input file (%llu < %llu bytes)", c->dst_name,
                      (unsigned long long)df_image_size(c->dst),
                      (unsigned long long)c->size);
    }
    if (ret == 0) {
        ret = convert_open(c, info.cluster_size, err);
    }
    {
        int r = df_image_close(c->dst, ret < 0 ? NULL : err);
        c->dst = NULL;
        return ret < 0 ? ret : r;
    }
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
    c.src = df_image_open(src, o->src_format,
                          o->force_share ? DF_OPEN_SHARE : 0, err);
    if (!c.src) {
        return -err->code;
    }
    c.size = df_image_size(c.src);
    if (o->no_create) {
        ret = convert_existing(&c, err);
        goto out;
    }
    /* an image someone uses is not replaced under them */
    ret = df_lock_check_replace(dst, err);
    if (ret < 0) {
        goto out;
    }
    tmp = df_temp_name(dst);
    if (!tmp) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", dst);
        goto out;
    }
    ret = convert_into(&c, tmp, err);
    if (ret == 0) {
        ret = df_rename_into_place(tmp, dst, err);
    }
    if (ret < 0) {
        df_image_close(c.dst, NULL);
        unlink(tmp);
        df_error_rename_file(err, tmp, dst);
    }
out:
    df_workers_stop(c.workers);
    EVP_MD_CTX_free(c.hash);
    free(c.buf[0]);
    free(c.buf[1]);
    free(c.bbuf);
    free(tmp);
    df_image_close(c.src, NULL);
    return ret;
}
