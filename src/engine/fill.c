/* SPDX-License-Identifier: MIT */
/*
 * fill.c - copy a file into a range of an image that reads as zeros, and
 * hash the image's file while doing it (df_image_fill()).
 *
 * The filesystem op writes a file system it has just made into a
 * partition, and the report needs the SHA-256 of the image's file after
 * that (SPEC §6).  Hashing after the copy costs a second pass over the
 * output; hashing during it needs the file's bytes in order, while a
 * qcow2 image's tables at the start of the file change until its last
 * cluster is placed.  So the copy goes in three passes:
 *
 *   1. find the clusters of the source that hold a non-zero byte (the
 *      source is mapped, and only its data extents are read);
 *   2. give them host clusters (the driver's allocate(): L2 tables and
 *      data clusters in guest order) and flush the tables: from then on
 *      no byte of the file changes but the data being copied;
 *   3. write the non-zero blocks straight into their host clusters, in
 *      guest order, while a second thread hashes the file from its start
 *      up to the lowest host offset that is still to be written.
 *
 * Only a range that reads as zeros today, in an image without a backing
 * file, is filled this way: a block that stays zero is then simply not
 * written.  Anything else is -DF_E_UNSUPPORTED, with nothing changed, and
 * the caller copies and hashes the usual way.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "diskforge/ops.h"
#include "internal.h"

/* Blocks are written or skipped (left reading as zeros) in this unit. */
#define FILL_BLOCK 4096u
/* How much is written, or hashed, between two looks at the others. */
#define FILL_STEP (1u << 20)
/* How much of the existing image is read to see that it holds zeros. */
#define FILL_CHECK (1u << 20)

/* A guest run to copy and where it lives in the file. */
struct seg {
    uint64_t guest, host, len;
};

struct segs {
    struct seg *v;
    size_t n, cap;
};

static int segs_add(struct segs *s, uint64_t guest, uint64_t host,
                    uint64_t len)
{
    if (s->n && s->v[s->n - 1].guest + s->v[s->n - 1].len == guest &&
        s->v[s->n - 1].host + s->v[s->n - 1].len == host) {
        s->v[s->n - 1].len += len;
        return 0;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct seg *v = realloc(s->v, cap * sizeof(*v));
        if (!v) {
            return -1;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (struct seg){ guest, host, len };
    return 0;
}

/*
 * Does the image read as zeros over [off, off + len)?  Ranges block status
 * calls zero are taken at its word; allocated data is read.
 */
static int reads_zero(struct df_image *img, uint64_t off, uint64_t len,
                      bool *zero, struct df_error *err)
{
    unsigned char *buf = NULL;
    int ret = 0;

    *zero = true;
    while (len && *zero && ret == 0) {
        struct df_extent ext;
        ret = df_image_block_status(img, off, len, true, &ext, err);
        if (ret < 0 || !ext.length) {
            break;
        }
        if (ext.depth != 0 || (ext.flags & DF_BLOCK_COMPRESSED)) {
            *zero = false; /* from a backing file, or compressed */
            break;
        }
        for (uint64_t done = 0;
             !(ext.flags & DF_BLOCK_ZERO) && done < ext.length && ret == 0;) {
            size_t n = (size_t)DF_MIN(ext.length - done, (uint64_t)FILL_CHECK);
            if (!buf && !(buf = malloc(FILL_CHECK))) {
                ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                              img->path);
                break;
            }
            ret = df_image_pread(img, buf, n, off + done, err);
            if (ret == 0 && !df_is_zero(buf, n)) {
                *zero = false;
                break;
            }
            done += n;
        }
        off += ext.length;
        len -= ext.length;
    }
    free(buf);
    return ret;
}

/*
 * Pass 1: the units (clusters; 64 KiB for raw) of [off, off + len) in
 * which @src holds a non-zero byte, as guest runs.  Only @fd's data
 * extents are read.
 */
static int find_data(const unsigned char *src, int fd, uint64_t off,
                     uint64_t len, uint64_t unit, struct segs *runs,
                     const char *path, struct df_error *err)
{
    uint64_t pos = 0;

    while (pos < len) {
        off_t d = lseek(fd, (off_t)pos, SEEK_DATA), h;
        if (d < 0 && errno == ENXIO) {
            break;
        }
        if (d < 0) {
            d = (off_t)pos; /* no SEEK_DATA: all data */
        }
        h = lseek(fd, d, SEEK_HOLE);
        if (h < 0 || (uint64_t)h > len) {
            h = (off_t)len;
        }
        if ((uint64_t)d >= len) {
            break;
        }
        for (uint64_t g = (uint64_t)d; g < (uint64_t)h;) {
            /* the unit of image offset off + g, clipped to the extent */
            uint64_t u0 = (off + g) & ~(unit - 1);
            uint64_t end = DF_MIN(u0 + unit - off, (uint64_t)h);
            bool data = false;
            for (uint64_t b = g; b < end && !data; b += FILL_BLOCK) {
                data = !df_is_zero(src + b, (size_t)DF_MIN(FILL_BLOCK,
                                                           end - b));
            }
            if (data) {
                /* the whole unit, within the range */
                uint64_t a = DF_MAX(u0, off), z = DF_MIN(u0 + unit, off + len);
                if (!(runs->n && runs->v[runs->n - 1].guest +
                                         runs->v[runs->n - 1].len >= z) &&
                    segs_add(runs, a, a, z - a) < 0) {
                    return df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                                   path);
                }
            }
            g = end;
            if (df_cancel_requested()) {
                return df_cancel_point(path, err);
            }
        }
        pos = (uint64_t)h;
    }
    return 0;
}

/*
 * Pass 2: host storage for every run, and where each part of it lies in
 * the file (@segs, in guest order).
 */
static int place(struct df_image *img, const struct segs *runs,
                 uint64_t cluster, struct segs *segs, struct df_error *err)
{
    int ret = 0;

    for (size_t i = 0; i < runs->n && ret == 0; i++) {
        const struct seg *r = &runs->v[i];
        uint64_t a = r->guest & ~(cluster - 1);
        uint64_t z = DF_ROUND_UP(r->guest + r->len, cluster);
        if (!img->drv->allocate) {
            if (segs_add(segs, r->guest, r->guest, r->len) < 0) {
                ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                              img->path);
            }
            continue;
        }
        ret = img->drv->allocate(img, a, z - a, err);
    }
    if (ret < 0 || !img->drv->allocate) {
        return ret;
    }
    ret = img->drv->flush(img, err);
    for (size_t i = 0; i < runs->n && ret == 0; i++) {
        uint64_t g = runs->v[i].guest, end = g + runs->v[i].len;
        while (g < end && ret == 0) {
            struct df_extent ext;
            ret = df_image_block_status(img, g, end - g, false, &ext, err);
            if (ret < 0) {
                break;
            }
            if (!(ext.flags & DF_BLOCK_DATA) || ext.depth != 0 ||
                (ext.flags & DF_BLOCK_COMPRESSED) ||
                ext.host_offset == DF_NO_OFFSET || !ext.length) {
                ret = df_fail(err, DF_E_CORRUPT, "'%s': guest offset %llu "
                              "has no host cluster after allocation",
                              img->path, (unsigned long long)g);
                break;
            }
            if (segs_add(segs, g, ext.host_offset, ext.length) < 0) {
                ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory",
                              img->path);
            }
            g += ext.length;
        }
    }
    return ret;
}

/* The hashing thread and what it shares with the writer. */
struct hasher {
    int fd;
    const char *path;
    uint64_t end;   /* the file's length */
    EVP_MD_CTX *md;
    pthread_mutex_t lock;
    pthread_cond_t more;
    uint64_t ready; /* every byte below is final */
    bool stop;
    int ret;
    struct df_error err;
};

/* Hash [pos, lim) of the file: holes from a constant buffer. */
static int hash_part(struct hasher *h, unsigned char *buf, uint64_t pos,
                     uint64_t lim)
{
    while (pos < lim) {
        off_t d = lseek(h->fd, (off_t)pos, SEEK_DATA), e;
        if (d < 0 && errno != ENXIO) {
            d = (off_t)pos;
        }
        if (d < 0 || (uint64_t)d > lim) {
            d = (off_t)lim;
        }
        if (df_sha256_zeros(h->md, (uint64_t)d - pos) < 0) {
            return df_fail(&h->err, DF_E_NOMEM, "'%s': hashing failed",
                           h->path);
        }
        pos = (uint64_t)d;
        e = lseek(h->fd, d, SEEK_HOLE);
        if (e < 0 || (uint64_t)e > lim || e <= d) {
            e = (off_t)lim;
        }
        while (pos < (uint64_t)e) {
            size_t n = (size_t)DF_MIN((uint64_t)e - pos, (uint64_t)FILL_STEP);
            int ret = df_io_pread(h->fd, buf, n, pos, h->path, &h->err);
            if (ret < 0) {
                return ret;
            }
            if (EVP_DigestUpdate(h->md, buf, n) != 1) {
                return df_fail(&h->err, DF_E_NOMEM, "'%s': hashing failed",
                               h->path);
            }
            pos += n;
        }
    }
    return 0;
}

static void *hash_file(void *opaque)
{
    struct hasher *h = opaque;
    unsigned char *buf = malloc(FILL_STEP);
    uint64_t pos = 0;
    int ret = buf ? 0 : df_fail(&h->err, DF_E_NOMEM, "out of memory");

    while (ret == 0 && pos < h->end) {
        uint64_t lim;
        pthread_mutex_lock(&h->lock);
        while (h->ready <= pos && !h->stop) {
            pthread_cond_wait(&h->more, &h->lock);
        }
        lim = DF_MIN(h->ready, h->end);
        if (h->stop) {
            lim = pos;
        }
        pthread_mutex_unlock(&h->lock);
        if (lim <= pos) {
            break;
        }
        ret = hash_part(h, buf, pos, lim);
        pos = lim;
    }
    free(buf);
    if (ret == 0 && pos < h->end) {
        ret = -DF_E_CANCELED;
    }
    h->ret = ret;
    return NULL;
}

static void hasher_set(struct hasher *h, uint64_t ready, bool stop)
{
    pthread_mutex_lock(&h->lock);
    if (ready > h->ready) {
        h->ready = ready;
    }
    h->stop |= stop;
    pthread_cond_signal(&h->more);
    pthread_mutex_unlock(&h->lock);
}

/* Write the non-zero blocks of @n source bytes at guest @g to host @host. */
static int put(struct df_image *img, const unsigned char *p, uint64_t g,
               uint64_t host, uint64_t n, uint64_t *data, struct df_error *err)
{
    uint64_t i = 0;

    while (i < n) {
        /* blocks at multiples of FILL_BLOCK in the guest */
        uint64_t b = DF_MIN(n - i, FILL_BLOCK - ((g + i) & (FILL_BLOCK - 1)));
        uint64_t j = i + b;
        int ret;
        if (df_is_zero(p + i, (size_t)b)) {
            i = j;
            continue;
        }
        while (j < n) {
            uint64_t c = DF_MIN(n - j, (uint64_t)FILL_BLOCK);
            if (df_is_zero(p + j, (size_t)c)) {
                break;
            }
            j += c;
        }
        ret = df_io_pwrite(img->fd, p + i, (size_t)(j - i), host + i,
                           img->path, err);
        if (ret < 0) {
            return ret;
        }
        df_hostmap_note_write(img->hostmap, host + i, j - i);
        *data += j - i;
        i = j;
    }
    return 0;
}

/*
 * Pass 3: the segments in guest order.  Every byte of the file below the
 * lowest host offset of the segments not yet written (@low[i]: of segments
 * i on) is final, and so is the part of the segment being written that is
 * done, up to @low[i + 1]: the hasher may read that far.
 */
static int write_all(struct df_image *img, const unsigned char *src,
                     uint64_t off, uint64_t len, const struct segs *segs,
                     const uint64_t *low, struct hasher *h,
                     struct df_fill *f, struct df_error *err)
{
    uint64_t dropped = 0;
    int ret = 0;

    for (size_t i = 0; i < segs->n && ret == 0; i++) {
        const struct seg *s = &segs->v[i];
        for (uint64_t k = 0; k < s->len && ret == 0;) {
            uint64_t n = DF_MIN(s->len - k, (uint64_t)FILL_STEP);
            uint64_t rel = s->guest - off + k;
            ret = put(img, src + rel, s->guest + k, s->host + k, n,
                      &f->data, err);
            k += n;
            if (ret == 0 && h) {
                /* this segment's first k bytes are in the file too */
                hasher_set(h, DF_MIN(s->host + k, low[i + 1]), false);
            }
            if (ret == 0 && f->drop_source && rel + n - dropped >= FILL_STEP) {
                /* the source up to here is done with: let it go (its
                 * pages are clean, so nothing is written back) */
                uint64_t from = dropped & ~(uint64_t)(FILL_BLOCK - 1);
                (void)madvise((void *)(src + from), rel + n - from,
                              MADV_DONTNEED);
                (void)posix_fadvise(f->fd, (off_t)from, (off_t)(rel + n - from),
                                    POSIX_FADV_DONTNEED);
                dropped = rel + n;
            }
            if (ret == 0 && f->progress &&
                f->progress(f->opaque, rel + n, len)) {
                ret = df_fail(err, DF_E_CANCELED, "'%s': interrupted",
                              img->path);
            }
            if (ret == 0) {
                ret = df_cancel_point(img->path, err);
            }
        }
        if (ret == 0 && h) {
            hasher_set(h, low[i + 1], false);
        }
    }
    return ret;
}

static int fill(struct df_image *img, const unsigned char *src, uint64_t off,
                uint64_t len, struct df_fill *f, struct df_error *err)
{
    uint64_t cluster = 64u << 10;
    struct segs runs = { 0 }, segs = { 0 };
    struct hasher h = { .fd = img->fd, .path = img->path };
    uint64_t *low = NULL;
    struct df_info info;
    struct stat st;
    pthread_t t;
    bool threaded = false;
    int ret;

    if (img->drv->allocate) {
        ret = img->drv->info(img, &info, err);
        if (ret < 0) {
            return ret;
        }
        cluster = info.cluster_size;
    }
    ret = find_data(src, f->fd, off, len, cluster, &runs, img->path, err);
    if (ret == 0) {
        ret = place(img, &runs, cluster, &segs, err);
    }
    free(runs.v);
    if (ret == 0 && fstat(img->fd, &st) < 0) {
        ret = df_fail_sys(err, "'%s': cannot stat", img->path);
    }
    if (ret == 0 && !(low = malloc((segs.n + 1) * sizeof(*low)))) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    if (ret < 0) {
        free(segs.v);
        return ret;
    }
    h.end = (uint64_t)st.st_size;
    low[segs.n] = h.end;
    for (size_t i = segs.n; i-- > 0;) {
        low[i] = DF_MIN(segs.v[i].host, low[i + 1]);
        if (segs.v[i].host + segs.v[i].len > h.end) {
            ret = df_fail(err, DF_E_CORRUPT, "'%s': a cluster at %llu lies "
                          "past the end of the file", img->path,
                          (unsigned long long)segs.v[i].host);
        }
    }
    h.md = EVP_MD_CTX_new();
    if (ret == 0 && (!h.md || EVP_DigestInit_ex(h.md, EVP_sha256(), NULL) != 1)) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    if (ret == 0) {
        h.ready = low[0];
        pthread_mutex_init(&h.lock, NULL);
        pthread_cond_init(&h.more, NULL);
        threaded = pthread_create(&t, NULL, hash_file, &h) == 0;
        ret = write_all(img, src, off, len, &segs, low, threaded ? &h : NULL,
                        f, err);
        if (threaded) {
            hasher_set(&h, ret == 0 ? h.end : 0, ret < 0);
            pthread_join(t, NULL);
        } else if (ret == 0) {
            /* no thread: hash once everything is written */
            h.ready = h.end;
            hash_file(&h);
        }
        pthread_cond_destroy(&h.more);
        pthread_mutex_destroy(&h.lock);
        if (ret == 0 && h.ret < 0) {
            df_error_set_at(err, h.err.file, h.err.line, h.err.code,
                            h.err.sys_errno, "%s", h.err.msg);
            ret = h.ret;
        }
    }
    if (ret == 0) {
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(h.md, f->sha256, &n) != 1) {
            ret = df_fail(err, DF_E_NOMEM, "'%s': hashing failed", img->path);
        }
    }
    EVP_MD_CTX_free(h.md);
    free(low);
    free(segs.v);
    return ret;
}

int df_image_fill(struct df_image *img, uint64_t off, uint64_t len,
                  struct df_fill *f, struct df_error *err)
{
    const unsigned char *src;
    bool zero;
    int ret;

    f->data = 0;
    if (!img->writable) {
        return df_fail(err, DF_E_INVAL, "'%s' is open read-only", img->path);
    }
    if (off > img->size || len > img->size - off) {
        return df_fail(err, DF_E_INVAL, "'%s': %llu bytes at %llu do not fit "
                       "in the image", img->path, (unsigned long long)len,
                       (unsigned long long)off);
    }
    if (img->backed || (img->drv->format != DF_FMT_RAW &&
                        img->drv->format != DF_FMT_QCOW2)) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': filling an image with a "
                       "backing file", img->path);
    }
    if (!len) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': nothing to fill",
                       img->path);
    }
    ret = reads_zero(img, off, len, &zero, err);
    if (ret < 0) {
        return ret;
    }
    if (!zero) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': the range to fill does "
                       "not read as zeros", img->path);
    }
    src = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, f->fd, 0);
    if (src == MAP_FAILED) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': cannot map the source: "
                       "%s", img->path, strerror(errno));
    }
    ret = fill(img, src, off, len, f, err);
    munmap((void *)src, (size_t)len);
    return ret;
}
