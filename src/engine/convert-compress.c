/* SPDX-License-Identifier: MIT */
/*
 * convert-compress.c - the compressed path of df_convert() (convert -c).
 *
 * The source is read a batch of clusters at a time.  All-zero clusters are
 * skipped (the new target reads zeros there); the others are compressed in
 * parallel, one compressor per thread, and then written in guest order by
 * the calling thread.  Since each cluster is compressed on its own and the
 * writes happen in a fixed order, the output is the same bytes whatever
 * the number of threads.  A cluster that does not shrink is stored as it
 * is, like qemu-img does.
 *
 * Threads: the caller plus (usable CPUs - 1) workers, created once
 * per conversion.  Lock order: only pool.mu.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define MAX_THREADS 16
#define BATCH_BYTES (8u << 20)

enum { SLOT_ZERO = 0, SLOT_RAW = 1, SLOT_PACKED = 2 };

struct pool;

struct worker {
    struct pool *pool;
    unsigned index;
    struct df_compressor *comp;
    pthread_t thread;
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t go;   /* a new batch, or quit */
    pthread_cond_t done; /* a worker finished its share */
    unsigned generation;
    unsigned busy;
    bool quit;
    unsigned nthreads;
    struct worker w[MAX_THREADS];

    /* the batch: input clusters and their results */
    const unsigned char *in;
    unsigned char *out; /* cluster_size bytes per cluster */
    size_t *out_len;
    int *kind;
    size_t nclusters;
    size_t cs;
    size_t last_len; /* bytes of the batch's last cluster (image end) */
};

static void compress_share(struct pool *p, unsigned t, struct df_compressor *c)
{
    for (size_t i = t; i < p->nclusters; i += p->nthreads) {
        const unsigned char *src = p->in + i * p->cs;
        size_t n = i + 1 == p->nclusters ? p->last_len : p->cs;

        if (df_is_zero(src, n)) {
            p->kind[i] = SLOT_ZERO;
            continue;
        }
        /* qemu-img gives the compressor one byte less than a cluster */
        p->out_len[i] = df_compress(c, src, p->cs, p->out + i * p->cs,
                                    p->cs - 1);
        p->kind[i] = p->out_len[i] ? SLOT_PACKED : SLOT_RAW;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pool *p = w->pool;
    unsigned seen = 0;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) {
            pthread_cond_wait(&p->go, &p->mu);
        }
        if (p->quit) {
            break;
        }
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        compress_share(p, w->index, w->comp);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) {
            pthread_cond_signal(&p->done);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Compress the current batch on every thread, the caller's included. */
static void run_batch(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->busy = p->nthreads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    compress_share(p, 0, p->w[0].comp);
    pthread_mutex_lock(&p->mu);
    while (p->busy) {
        pthread_cond_wait(&p->done, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

static void pool_stop(struct pool *p, unsigned started)
{
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 1; i < started; i++) {
        pthread_join(p->w[i].thread, NULL);
    }
    for (unsigned i = 0; i < MAX_THREADS; i++) {
        df_compressor_free(p->w[i].comp);
    }
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
}

static int pool_start(struct pool *p, enum df_compression type,
                      unsigned *started, const char *dst,
                      struct df_error *err)
{
    p->nthreads = DF_MIN(df_usable_cpus(), (unsigned)MAX_THREADS);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    *started = 1;
    for (unsigned i = 0; i < p->nthreads; i++) {
        p->w[i].pool = p;
        p->w[i].index = i;
        p->w[i].comp = df_compressor_new(type);
        if (!p->w[i].comp) {
            return df_fail(err, DF_E_NOMEM, "'%s': cannot set up the "
                           "compressor", dst);
        }
    }
    for (unsigned i = 1; i < p->nthreads; i++) {
        if (pthread_create(&p->w[i].thread, NULL, worker_main, &p->w[i])) {
            /* run with the threads we have */
            p->nthreads = i;
            break;
        }
        *started = i + 1;
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

int df_convert_compressed(struct df_image *src, struct df_image *dst,
                          df_progress_fn progress, void *opaque,
                          const char *dst_name, struct df_error *err)
{
    struct df_info info;
    struct pool p = { 0 };
    uint64_t size = df_image_size(src), off = 0;
    unsigned char *in = NULL;
    unsigned started = 0;
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
    ret = pool_start(&p, info.compression, &started, dst_name, err);
    while (ret == 0 && off < size) {
        uint64_t len = DF_MIN((uint64_t)batch * p.cs, size - off);
        struct df_extent ext;

        ret = df_image_block_status(src, off, len, true, &ext, err);
        if (ret < 0) {
            break;
        }
        if ((ext.flags & DF_BLOCK_ZERO) && ext.length >= p.cs) {
            /* whole clusters of zeros: nothing to write */
            off += ext.length / p.cs * p.cs;
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
        p.nclusters = (size_t)DF_DIV_ROUND_UP(len, p.cs);
        p.last_len = (size_t)(len - (p.nclusters - 1) * p.cs);
        /* a partial last cluster is compressed as a whole, zero-padded */
        memset(in + len, 0, p.nclusters * p.cs - len);
        run_batch(&p);
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
    if (started) {
        pool_stop(&p, started);
    }
    free(in);
    free(p.out);
    free(p.out_len);
    free(p.kind);
    return ret;
}

unsigned df_usable_cpus(void)
{
    cpu_set_t set;
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    /* the CPUs this process may run on (taskset), else all online ones */
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        n = CPU_COUNT(&set);
    }
    return n < 1 ? 1 : (unsigned)n;
}
