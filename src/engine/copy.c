/* SPDX-License-Identifier: MIT */
/*
 * copy.c - df_copy(): a byte copy of a host file with the --sparse
 * semantics of cp (GNU coreutils 9.1, as observed with strace and
 * stat %b):
 *
 *   never   every byte is written: holes of the source become zeros on
 *           disk, so the copy is fully allocated.
 *   always  holes stay holes, and blocks of zeros inside the data (whole
 *           blocks of the destination file system, 4 KiB on ext4) become
 *           holes too.
 *   auto    a source that looks sparse (fewer 512-byte blocks allocated
 *           than its length needs, cp's test) is copied as with always;
 *           any other source is copied as it is, allocated zeros
 *           included, with copy_file_range() (which lets a file system
 *           share or clone the extents).  Holes are kept either way.
 *
 * The source is walked with SEEK_DATA/SEEK_HOLE, so holes are never read.
 * Where blocks are scanned for zeros, data is read in 2 MiB chunks and
 * the non-zero runs are written at their offsets; the final length is set
 * with ftruncate(), which also makes a trailing run of zeros a hole.
 *
 * With a digest asked for (df_copy_with(), o->sha256), the SHA-256 of the
 * copy's bytes is computed as they are written, in file order, so that
 * the copy is never read back: data copied as it is is read and hashed a
 * chunk at a time, then that chunk is copied with copy_file_range() (from
 * the page cache; extents are still shared where the file system can) or
 * written from the buffer; holes, kept or written as zeros, are hashed from a
 * constant zero buffer (df_sha256_zeros()); where worker threads scan for
 * zeros, they read each batch into one buffer at its offset, and the
 * caller hashes the batch in order once they are done.
 *
 * The copy is written under a temporary name beside @dst and renamed over
 * it only when complete.  On any failure the temporary file is removed and
 * @dst is left as it was.  Replacing an existing @dst keeps its permission
 * bits, as cp does when it overwrites; a new @dst gets the source's,
 * less the umask.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "internal.h"
#include "output.h"

/* Largest piece handed to copy_file_range(): progress and cancel points. */
#define COPY_STEP (64u << 20)

/*
 * Piece read and scanned for zeros at a time: small enough to stay in the
 * CPU's cache from the read through the scan to the write.  With 2 MiB
 * pieces, copy --sparse=always of a 1 GiB file measured 9 % slower than
 * cp; with 128 KiB, the same as cp (bench/bench-copy.sh).
 */
#define SCAN_STEP (128u << 10)

struct copy {
    const char *src, *dst; /* the user's names */
    const char *tmp;       /* where the copy is built */
    int in, out;
    uint64_t size;         /* length of the source when the copy started */
    uint64_t granule;      /* zero-detection unit; 0: copy data as it is */
    bool keep_holes;       /* false: write zeros for the source's holes */
    bool seek;             /* the source answers SEEK_DATA/SEEK_HOLE */
    bool plain_io;         /* copy_file_range() is unusable here */
    bool created;          /* c->tmp exists and is ours to remove */
    unsigned char *buf;    /* DF_CHUNK bytes */
    struct df_workers *workers; /* scanning threads, started on first use */
    unsigned char *scan_buf; /* a scan piece per thread */
    size_t step;           /* scan piece: SCAN_STEP or a granule */
    unsigned char *zeros;  /* DF_CHUNK zero bytes, for filling holes */
    EVP_MD_CTX *md;        /* the digest of the output, or NULL */
    unsigned char *batch;  /* with md and workers: a batch's bytes */
    df_progress_fn progress;
    void *opaque;
};

static const char *const mode_names[] = {
    [DF_SPARSE_AUTO] = "auto",
    [DF_SPARSE_ALWAYS] = "always",
    [DF_SPARSE_NEVER] = "never",
};

const char *df_sparse_mode_name(enum df_sparse_mode mode)
{
    return (unsigned)mode < sizeof(mode_names) / sizeof(mode_names[0])
               ? mode_names[mode]
               : "unknown";
}

int df_sparse_mode_parse(const char *name, enum df_sparse_mode *out)
{
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++) {
        if (strcmp(name, mode_names[i]) == 0) {
            *out = (enum df_sparse_mode)i;
            return 0;
        }
    }
    return -DF_E_INVAL;
}

static int report(struct copy *c, uint64_t done, struct df_error *err)
{
    if (c->progress && c->progress(c->opaque, done, c->size)) {
        return df_fail(err, DF_E_CANCELED, "'%s': copy canceled", c->dst);
    }
    return 0;
}

/* Add @n bytes of the output to its digest (when one is computed). */
static int hash_bytes(struct copy *c, const unsigned char *buf, size_t n,
                      struct df_error *err)
{
    if (c->md && !EVP_DigestUpdate(c->md, buf, n)) {
        return df_fail(err, DF_E_IO, "'%s': SHA-256 update failed", c->dst);
    }
    return 0;
}

/* Add @n zero bytes of the output to its digest. */
static int hash_zero_bytes(struct copy *c, uint64_t n, struct df_error *err)
{
    if (c->md && df_sha256_zeros(c->md, n) < 0) {
        return df_fail(err, DF_E_IO, "'%s': SHA-256 update failed", c->dst);
    }
    return 0;
}

/*
 * The source at @off: a hole or data (*@hole), and how many bytes of that
 * kind follow (*@len, at least 1, never past c->size).
 */
static int source_extent(struct copy *c, uint64_t off, bool *hole,
                         uint64_t *len, struct df_error *err)
{
    off_t data, end;

    *hole = false;
    *len = c->size - off;
    if (!c->seek) {
        return 0;
    }
    data = lseek(c->in, (off_t)off, SEEK_DATA);
    if (data < 0 && errno == ENXIO) {
        *hole = true; /* a hole up to the end of the file */
        return 0;
    }
    if (data < 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
        c->seek = false; /* no hole detection here: all data */
        return 0;
    }
    if (data < 0) {
        return df_fail_errno(err, DF_E_IO, "'%s': cannot find data at "
                             "offset %llu", c->src, (unsigned long long)off);
    }
    if ((uint64_t)data > off) {
        *hole = true;
        *len = DF_MIN((uint64_t)data, c->size) - off;
        return 0;
    }
    end = lseek(c->in, (off_t)off, SEEK_HOLE);
    if (end < 0) {
        return df_fail_errno(err, DF_E_IO, "'%s': cannot find a hole after "
                             "offset %llu", c->src, (unsigned long long)off);
    }
    if ((uint64_t)end > off) {
        *len = DF_MIN((uint64_t)end, c->size) - off;
    }
    return 0;
}

static int write_out(void *opaque, const unsigned char *buf, size_t len,
                     uint64_t off, struct df_error *err)
{
    struct copy *c = opaque;

    return df_io_pwrite(c->out, buf, len, off, c->tmp, err);
}

/* Errors of copy_file_range() that mean "not here": use read and write. */
static bool copy_range_unusable(int e)
{
    return e == ENOSYS || e == EOPNOTSUPP || e == ENOTTY || e == EXDEV ||
           e == EINVAL || e == EBADF || e == EPERM || e == ETXTBSY;
}

/* One step of a copy: the @n bytes at @off (n <= DF_CHUNK). */
typedef int (*step_fn)(struct copy *c, uint64_t off, size_t n,
                       struct df_error *err);

static int read_write(struct copy *c, uint64_t off, size_t n,
                      struct df_error *err)
{
    int ret = df_io_pread(c->in, c->buf, n, off, c->src, err);

    return ret < 0 ? ret : df_io_pwrite(c->out, c->buf, n, off, c->tmp, err);
}

/*
 * A step of a hashed copy: read the @n bytes at @off and hash them, then
 * copy those same bytes with copy_file_range() (the second read comes
 * from the page cache, and a file system that shares extents still
 * shares them), or write them from the buffer where it cannot be used.
 */
static int copy_hashed(struct copy *c, uint64_t off, size_t n,
                       struct df_error *err)
{
    int ret = df_io_pread(c->in, c->buf, n, off, c->src, err);
    size_t done = 0;

    if (ret == 0) {
        ret = hash_bytes(c, c->buf, n, err);
    }
    while (ret == 0 && done < n && !c->plain_io) {
        loff_t in = (loff_t)(off + done), out = (loff_t)(off + done);
        ssize_t r = copy_file_range(c->in, &in, c->out, &out, n - done, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && !copy_range_unusable(errno)) {
            return df_fail_sys(err, "'%s': cannot copy %zu bytes at offset "
                               "%llu to '%s'", c->src, n - done,
                               (unsigned long long)(off + done), c->tmp);
        }
        if (r <= 0) {
            c->plain_io = true; /* the rest from the buffer */
            break;
        }
        done += (size_t)r;
    }
    if (ret == 0 && done < n) {
        ret = df_io_pwrite(c->out, c->buf + done, n - done, off + done,
                           c->tmp, err);
    }
    return ret;
}

/*
 * ---- leaving out the all-zero granules, on every CPU ----
 *
 * The data is read, scanned and written in SCAN_STEP pieces (aligned to
 * SCAN_STEP in the file, so that each holds whole granules), each thread
 * with a buffer of its own, taking pieces in turn from a shared index.
 * Progress is reported between batches of SCAN_BATCH bytes.  When the
 * output is hashed, the threads read into c->batch at the piece's offset
 * in the batch instead, and the caller hashes the batch when it is done.
 */
#define SCAN_BATCH (32u << 20)

struct scan {
    struct copy *c;
    uint64_t base, off, end; /* pieces from base; the batch is [off, end) */
    size_t step;
    atomic_uint_fast64_t next; /* the next piece */
    atomic_int failed;
    pthread_mutex_t mu;        /* guards err */
    struct df_error err;
};

static void scan_pieces(void *arg, unsigned t)
{
    struct scan *s = arg;
    struct copy *c = s->c;
    unsigned char *own = c->scan_buf + (size_t)t * s->step;
    uint64_t i;

    while (!atomic_load(&s->failed) &&
           (i = atomic_fetch_add(&s->next, 1)) * s->step + s->base < s->end) {
        uint64_t at = DF_MAX(s->off, s->base + i * s->step);
        size_t n = (size_t)(DF_MIN(s->end, s->base + (i + 1) * s->step) - at);
        unsigned char *buf = c->batch ? c->batch + (at - s->off) : own;
        struct df_error e = { 0 };
        int ret = df_io_pread(c->in, buf, n, at, c->src, &e);
        if (ret == 0) {
            ret = df_write_nonzero(buf, n, at, c->granule, write_out, c, &e);
        }
        if (ret < 0 && !atomic_exchange(&s->failed, 1)) {
            pthread_mutex_lock(&s->mu);
            s->err = e;
            pthread_mutex_unlock(&s->mu);
        }
    }
}

static int copy_sparse(struct copy *c, uint64_t off, uint64_t len,
                       struct df_error *err)
{
    struct scan s = { .c = c };
    uint64_t end = off + len;
    int ret = 0;

    if (!c->scan_buf) {
        c->workers = df_workers_start(df_usable_cpus());
        c->step = (size_t)DF_MAX((uint64_t)SCAN_STEP, c->granule);
        c->scan_buf = malloc(c->step * df_workers_count(c->workers));
        if (c->md && !c->batch) {
            c->batch = malloc(SCAN_BATCH);
        }
        if (!c->scan_buf || (c->md && !c->batch)) {
            return df_fail(err, DF_E_NOMEM, "'%s': out of memory", c->dst);
        }
    }
    s.step = c->step;
    pthread_mutex_init(&s.mu, NULL);
    s.base = off / s.step * s.step;
    while (ret == 0 && off < end) {
        s.off = off;
        s.end = DF_MIN(end, (off / s.step * s.step) + SCAN_BATCH);
        atomic_store(&s.next, (s.off - s.base) / s.step);
        df_workers_run(c->workers, scan_pieces, &s);
        if (atomic_load(&s.failed)) {
            if (err) {
                *err = s.err;
            }
            ret = -s.err.code;
            break;
        }
        ret = hash_bytes(c, c->batch, (size_t)(s.end - s.off), err);
        off = s.end;
        if (ret == 0) {
            ret = report(c, off, err);
        }
    }
    pthread_mutex_destroy(&s.mu);
    return ret;
}

/* A hole of the source, made zeros on disk (never). */
static int write_zeros(struct copy *c, uint64_t off, size_t n,
                       struct df_error *err)
{
    int ret;

    if (!c->zeros && !(c->zeros = calloc(1, DF_CHUNK))) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", c->dst);
    }
    ret = hash_zero_bytes(c, n, err);
    return ret < 0 ? ret : df_io_pwrite(c->out, c->zeros, n, off, c->tmp, err);
}

/* A hole of the source, kept as a hole: only hashed, if that is asked. */
static int hash_hole(struct copy *c, uint64_t off, size_t n,
                     struct df_error *err)
{
    (void)off;
    return hash_zero_bytes(c, n, err);
}

/*
 * Run @step over [@off, @off + @len) in chunks of @chunk bytes (at most
 * DF_CHUNK), which end on granule boundaries (so that a chunk holds whole granules), and
 * report progress after each.
 */
static int by_chunks(struct copy *c, uint64_t off, uint64_t len,
                     size_t chunk, step_fn step, struct df_error *err)
{
    uint64_t end = off + len;

    while (off < end) {
        uint64_t n = DF_MIN(end - off, (uint64_t)chunk);
        int ret;
        if (c->granule && off + n < end) {
            n = (off + n) / c->granule * c->granule - off;
        }
        ret = step(c, off, (size_t)n, err);
        if (ret == 0) {
            off += n;
            ret = report(c, off, err);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * Copy [@off, @off + @len) of the source as it is: copy_file_range(), or
 * read and write where it cannot be used.
 */
static int copy_data(struct copy *c, uint64_t off, uint64_t len,
                     struct df_error *err)
{
    uint64_t end = off + len;

    if (c->md) {
        return by_chunks(c, off, len, DF_CHUNK, copy_hashed, err);
    }
    while (off < end && !c->plain_io) {
        size_t n = (size_t)DF_MIN(end - off, (uint64_t)COPY_STEP);
        loff_t in = (loff_t)off, out = (loff_t)off;
        ssize_t r = copy_file_range(c->in, &in, c->out, &out, n, 0);
        int ret;
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && !copy_range_unusable(errno)) {
            return df_fail_sys(err, "'%s': cannot copy %zu bytes at offset "
                               "%llu to '%s'", c->src, n,
                               (unsigned long long)off, c->tmp);
        }
        if (r <= 0) {
            /* unsupported, or the source ended early: read and write,
             * which reads zeros past its end */
            c->plain_io = true;
            break;
        }
        off += (uint64_t)r;
        ret = report(c, off, err);
        if (ret < 0) {
            return ret;
        }
    }
    return off < end ? by_chunks(c, off, end - off, DF_CHUNK, read_write, err) : 0;
}

static int copy_file(struct copy *c, struct df_error *err)
{
    uint64_t off = 0;
    int ret = report(c, 0, err);

    while (ret == 0 && off < c->size) {
        uint64_t len;
        bool hole;
        ret = source_extent(c, off, &hole, &len, err);
        if (ret < 0) {
            break;
        }
        if (hole && c->keep_holes && !c->md) {
            ret = report(c, off + len, err);
        } else if (hole && c->keep_holes) {
            ret = by_chunks(c, off, len, DF_CHUNK, hash_hole, err);
        } else if (hole) {
            ret = by_chunks(c, off, len, DF_CHUNK, write_zeros, err);
        } else if (c->granule) {
            ret = copy_sparse(c, off, len, err);
        } else {
            ret = copy_data(c, off, len, err);
        }
        off += len;
    }
    if (ret == 0 && ftruncate(c->out, (off_t)c->size) < 0) {
        ret = df_fail_sys(err, "'%s': cannot set the length to %llu",
                          c->tmp, (unsigned long long)c->size);
    }
    return ret;
}

/* The zero-detection unit: the block size of the output's file system. */
static uint64_t block_size(int fd)
{
    struct stat st;

    if (fstat(fd, &st) == 0 && st.st_blksize >= 512 &&
        st.st_blksize <= (1 << 20) &&
        !(st.st_blksize & (st.st_blksize - 1))) {
        return (uint64_t)st.st_blksize;
    }
    return 4096;
}

/*
 * Open the source and look at both ends: fill c->in, c->size, c->seek,
 * *@src_st, and *@dst_mode (the permissions of an existing @dst, or -1).
 */
static int open_source(struct copy *c, struct stat *src_st, int *dst_mode,
                       struct df_error *err)
{
    struct stat st;

    /* O_NONBLOCK: a FIFO is refused below instead of waiting for a writer;
     * regular files and block devices ignore it */
    c->in = open(c->src, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (c->in < 0) {
        return df_fail_sys(err, "cannot open '%s'", c->src);
    }
    if (fstat(c->in, src_st) < 0) {
        return df_fail_errno(err, DF_E_IO, "'%s': cannot stat", c->src);
    }
    if (S_ISREG(src_st->st_mode)) {
        /* a file someone writes is not read */
        int r = df_lock_take(c->in, c->src, DF_LOCK_READ, err);
        if (r < 0) {
            return r;
        }
    }
    if (S_ISDIR(src_st->st_mode)) {
        return df_fail(err, DF_E_INVAL, "'%s' is a directory", c->src);
    }
    if (S_ISREG(src_st->st_mode)) {
        c->size = (uint64_t)src_st->st_size;
        c->seek = true;
    } else if (S_ISBLK(src_st->st_mode)) {
        off_t end = lseek(c->in, 0, SEEK_END);
        if (end < 0) {
            return df_fail_errno(err, DF_E_IO, "'%s': cannot get the size",
                                 c->src);
        }
        c->size = (uint64_t)end;
    } else {
        return df_fail(err, DF_E_INVAL, "'%s' is not a regular file or a "
                       "block device", c->src);
    }
    *dst_mode = -1;
    if (stat(c->dst, &st) == 0) {
        if (st.st_dev == src_st->st_dev && st.st_ino == src_st->st_ino) {
            return df_fail(err, DF_E_INVAL, "'%s' and '%s' are the same "
                           "file: cannot copy a file onto itself", c->src,
                           c->dst);
        }
        if (!S_ISREG(st.st_mode)) {
            return df_fail(err, DF_E_INVAL, "'%s' exists and is not a "
                           "regular file: not replaced", c->dst);
        }
        *dst_mode = (int)(st.st_mode & 07777);
    }
    posix_fadvise(c->in, 0, 0, POSIX_FADV_SEQUENTIAL);
    return 0;
}

/* Create the temporary output and copy the source into it. */
static int copy_into(struct copy *c, enum df_sparse_mode mode,
                     const struct stat *src_st, int dst_mode,
                     struct df_error *err)
{
    bool sparse_src = S_ISREG(src_st->st_mode) &&
                      (uint64_t)src_st->st_blocks <
                          (uint64_t)src_st->st_size / 512;
    int ret;

    /* read-write: a read lock needs a readable descriptor */
    c->out = open(c->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                  (mode_t)(src_st->st_mode & 0777));
    if (c->out < 0) {
        return df_fail_sys(err, "'%s': cannot create", c->tmp);
    }
    c->created = true;
    /* the temporary is locked as any image being written */
    ret = df_lock_take(c->out, c->tmp, DF_LOCK_WRITE, err);
    if (ret < 0) {
        return ret;
    }
    if (dst_mode >= 0 && fchmod(c->out, (mode_t)dst_mode) < 0) {
        return df_fail_sys(err, "'%s': cannot set the permissions", c->tmp);
    }
    c->keep_holes = mode != DF_SPARSE_NEVER;
    if (mode == DF_SPARSE_ALWAYS || (mode == DF_SPARSE_AUTO && sparse_src)) {
        c->granule = block_size(c->out);
    }
    ret = copy_file(c, err);
    if (df_lock_close(c->out) < 0 && ret == 0) {
        ret = df_fail_sys(err, "'%s': close failed", c->tmp);
    }
    c->out = -1;
    return ret;
}

void df_copy_opts_init(struct df_copy_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->mode = DF_SPARSE_AUTO;
}

int df_copy(const char *src, const char *dst, enum df_sparse_mode mode,
            df_progress_fn progress, void *opaque, struct df_error *err)
{
    struct df_copy_opts o;

    df_copy_opts_init(&o);
    o.mode = mode;
    o.progress = progress;
    o.progress_opaque = opaque;
    return df_copy_with(src, dst, &o, err);
}

int df_copy_with(const char *src, const char *dst,
                 const struct df_copy_opts *o, struct df_error *err)
{
    struct copy c = { .src = src, .dst = dst, .in = -1, .out = -1,
                      .progress = o->progress,
                      .opaque = o->progress_opaque };
    enum df_sparse_mode mode = o->mode;
    struct stat src_st;
    char *tmp = NULL;
    int dst_mode, ret;

    if ((unsigned)mode > DF_SPARSE_NEVER) {
        return df_fail(err, DF_E_INVAL, "'%s': unknown sparse mode %d", dst,
                       (int)mode);
    }
    ret = open_source(&c, &src_st, &dst_mode, err);
    if (ret < 0) {
        goto out;
    }
    ret = df_lock_check_replace(dst, err);
    if (ret < 0) {
        goto out;
    }
    tmp = df_temp_name(dst);
    c.buf = malloc(DF_CHUNK);
    if (!tmp || !c.buf) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", dst);
        goto out;
    }
    c.tmp = tmp;
    if (o->sha256) {
        c.md = EVP_MD_CTX_new();
        if (!c.md || !EVP_DigestInit_ex(c.md, EVP_sha256(), NULL)) {
            ret = df_fail(err, DF_E_NOMEM, "'%s': cannot start SHA-256",
                          dst);
            goto out;
        }
    }
    ret = copy_into(&c, mode, &src_st, dst_mode, err);
    if (ret == 0 && c.md) {
        unsigned int len = 0;
        if (!EVP_DigestFinal_ex(c.md, o->sha256, &len) ||
            len != DF_SHA256_LEN) {
            ret = df_fail(err, DF_E_IO, "'%s': cannot finish SHA-256", dst);
        }
    }
    if (ret == 0) {
        ret = df_rename_into_place(tmp, dst, err);
    }
    if (ret < 0 && tmp) {
        if (c.out >= 0) {
            df_lock_close(c.out);
        }
        if (c.created) {
            unlink(tmp);
        }
        df_error_rename_file(err, tmp, dst);
    }
out:
    if (c.in >= 0) {
        df_lock_close(c.in);
    }
    df_workers_stop(c.workers);
    free(c.scan_buf);
    free(c.buf);
    free(c.zeros);
    free(c.batch);
    EVP_MD_CTX_free(c.md);
    free(tmp);
    return ret;
}
