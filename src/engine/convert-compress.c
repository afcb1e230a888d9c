/* SPDX-License-Identifier: MIT */
/*
 * convert-compress.c - the compressed path of df_convert() (convert -c).
 *
 * The source is read a batch of clusters at a time.  All-zero clusters are
 * skipped (the new target reads zeros there), unless the output must be
 * fully allocated (-S 0: then, as with qemu-img, they are compressed and
 * stored like the others); the others are compressed in
 * parallel, one compressor per thread, and then written in guest order by
 * the calling thread.  Since each cluster is compressed on its own and the
 * writes happen in a fixed order, the output is the same bytes whatever
 * the number of threads.  A cluster that does not shrink is stored as it
 * is, like qemu-img does.
 *
 * Threads: the caller plus (usable CPUs - 1) workers (workers.c),
 * created once per conversion.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "internal.h"

#define MAX_THREADS 16
#define BATCH_BYTES (8u << 20)

enum { SLOT_ZERO = 0, SLOT_RAW = 1, SLOT_PACKED = 2 };

struct pool {
    struct df_workers *workers;
    unsigned nthreads;
    struct df_compressor *comp[MAX_THREADS]; /* one per thread */

    /* the batch: input clusters and their results */
    const unsigned char *in;
    unsigned char *out; /* cluster_size bytes per cluster */
    size_t *out_len;
    int *kind;
    size_t nclusters;
    size_t cs;
    size_t last_len; /* bytes of the batch's last cluster (image end) */
    atomic_size_t next; /* the next cluster to compress */
    bool keep_zeros; /* -S 0: all-zero clusters are stored too */
};

/* Compress clusters of the batch until none is left (any thread). */
static void compress_share(void *arg, unsigned t)
{
    struct pool *p = arg;
    struct df_compressor *c = p->comp[t];
    size_t i;

    while ((i = atomic_fetch_add(&p->next, 1)) < p->nclusters) {
        const unsigned char *src = p->in + i * p->cs;
        size_t n = i + 1 == p->nclusters ? p->last_len : p->cs;

        if (!p->keep_zeros && df_is_zero(src, n)) {
            p->kind[i] = SLOT_ZERO;
            continue;
        }
        /* qemu-img gives the compressor one byte less than a cluster */
        p->out_len[i] = df_compress(c, src, p->cs, p->out + i * p->cs,
                                    p->cs - 1);
        p->kind[i] = p->out_len[i] ? SLOT_PACKED : SLOT_RAW;
    }
}

static void pool_stop(struct pool *p)
{
    df_workers_stop(p->workers);
    for (unsigned i = 0; i < MAX_THREADS; i++) {
        df_compressor_free(p->comp[i]);
    }
}

static int pool_start(struct pool *p, enum df_compression type,
                      const char *dst, struct df_error *err)
{
    p->workers = df_workers_start(DF_MIN(df_usable_cpus(),
                                         (unsigned)MAX_THREADS));
    p->nthreads = df_workers_count(p->workers);
    for (unsigned i = 0; i < p->nthreads; i++) {
        p->comp[i] = df_compressor_new(type);
        if (!p->comp[i]) {
            return df_fail(err, DF_E_NOMEM, "'%s': cannot set up the "
                           "compressor", dst);
        }
    }
    return 0;
}

/* Write the batch at guest @off in order. */
static int write_batch(struct pool *p, struct df_image *dst, uint64_t off,
                       struct df_error *err)
{
    int ret = 0;

    for (size_t i = 0; i < p->nclusters && ret == 0; i++) {
        uint64_t at = off + i * p->cs;
        size_t n = i + 1 == p->nclusters ? p->last_len : p->cs;

        switch (p->kind[i]) {
        case SLOT_PACKED:
            ret = df_qcow2_write_compressed(dst, at, p->out + i * p->cs,
                                            p->out_len[i], err);
            break;
        case SLOT_RAW:
            ret = df_image_pwrite(dst, p->in + i * p->cs, n, at, err);
            break;
        default:
            break;
        }
    }
    return ret;
}

static int hash_failed(const char *dst_name, struct df_error *err)
{
    return df_fail(err, DF_E_IO, "'%s': SHA-256 update failed", dst_name);
}

int df_convert_compressed(struct df_image *src, struct df_image *dst,
                          bool keep_zeros, EVP_MD_CTX *hash,
                          df_progress_fn progress, void *opaque,
                          const char *dst_name, struct df_error *err)
{
    struct df_info info;
    struct pool p = { 0 };
    uint64_t size = df_image_size(src), off = 0;
    unsigned char *in = NULL;
    size_t batch;
    int ret;

    ret = df_image_info(dst, &info, err);
    if (ret < 0) {
        return ret;
    }
    p.cs = info.cluster_size;
    batch = DF_MAX(BATCH_BYTES / p.cs, (size_t)1);
    in = malloc(batch * p.cs);
    p.out = malloc(batch * p.cs);
    p.out_len = calloc(batch, sizeof(*p.out_len));
    p.kind = calloc(batch, sizeof(*p.kind));
    if (!in || !p.out || !p.out_len || !p.kind) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", dst_name);
        goto out;
    }
    p.in = in;
    p.keep_zeros = keep_zeros;
    ret = pool_start(&p, info.compression, dst_name, err);
    while (ret == 0 && off < size) {
        uint64_t len = DF_MIN((uint64_t)batch * p.cs, size - off);
        struct df_extent ext;

        ret = df_image_block_status(src, off, len, true, &ext, err);
        if (ret < 0) {
            break;
        }
        if ((ext.flags & DF_BLOCK_ZERO) && ext.length >= p.cs &&
            !p.keep_zeros) {
            /* whole clusters of zeros: nothing to write */
            uint64_t n = ext.length / p.cs * p.cs;
            if (hash && df_sha256_zeros(hash, n) < 0) {
                ret = hash_failed(dst_name, err);
                break;
            }
            off += n;
            if (progress && progress(opaque, off, size)) {
                ret = df_fail(err, DF_E_CANCELED, "'%s': conversion "
                              "canceled", dst_name);
            }
            continue;
        }
        ret = df_image_pread(src, in, (size_t)len, off, err);
        if (ret < 0) {
            break;
        }
        if (hash && !EVP_DigestUpdate(hash, in, (size_t)len)) {
            ret = hash_failed(dst_name, err);
            break;
        }
        p.nclusters = (size_t)DF_DIV_ROUND_UP(len, p.cs);
        p.last_len = (size_t)(len - (p.nclusters - 1) * p.cs);
        /* a partial last cluster is compressed as a whole, zero-padded */
        memset(in + len, 0, p.nclusters * p.cs - len);
        atomic_store(&p.next, 0);
        df_workers_run(p.workers, compress_share, &p);
        ret = write_batch(&p, dst, off, err);
        off += len;
        if (ret == 0 && progress && progress(opaque, off, size)) {
            ret = df_fail(err, DF_E_CANCELED, "'%s': conversion canceled",
                          dst_name);
        }
    }
    if (ret == 0) {
        ret = df_qcow2_write_compressed(dst, 0, NULL, 0, err);
    }
out:
    pool_stop(&p);
    free(in);
    free(p.out);
    free(p.out_len);
    free(p.kind);
    return ret;
}
