/* SPDX-License-Identifier: MIT */
/*
 * qcow2-compress.c - compressed clusters: raw deflate (no zlib header,
 * 4 KiB window, as QEMU writes them) and zstd frames.
 */
#include <pthread.h>
#include <stdlib.h>

#include <zlib.h>
#include <zstd.h>

#include "qcow2.h"

/*
 * ---- decompression, one context per thread ----
 *
 * Setting up an inflate stream or a zstd context costs more than many a
 * cluster takes to decompress, so each thread that reads compressed
 * clusters keeps its contexts (and its input buffer) for its lifetime and
 * resets them per cluster.  They are freed when the thread exits.
 */
struct dctx {
    z_stream z;
    bool z_ready;
    ZSTD_DCtx *zstd;
    unsigned char *in;
    size_t in_cap;
};

static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;
static bool dctx_key_ok;

static void dctx_free(void *arg)
{
    struct dctx *d = arg;

    if (d->z_ready) {
        inflateEnd(&d->z);
    }
    ZSTD_freeDCtx(d->zstd);
    free(d->in);
    free(d);
}

static void dctx_key_make(void)
{
    dctx_key_ok = pthread_key_create(&dctx_key, dctx_free) == 0;
}

static struct dctx *thread_dctx(void)
{
    struct dctx *d;

    pthread_once(&dctx_once, dctx_key_make);
    if (!dctx_key_ok) {
        return NULL;
    }
    d = pthread_getspecific(dctx_key);
    if (!d && (d = calloc(1, sizeof(*d))) != NULL &&
        pthread_setspecific(dctx_key, d) != 0) {
        free(d);
        d = NULL;
    }
    return d;
}

unsigned char *qcow2_decompress_buffer(size_t len)
{
    struct dctx *d = thread_dctx();

    if (!d) {
        return NULL;
    }
    if (len > d->in_cap) {
        unsigned char *in = realloc(d->in, len);
        if (!in) {
            return NULL;
        }
        d->in = in;
        d->in_cap = len;
    }
    return d->in;
}

static int inflate_cluster(struct dctx *d, const void *src, size_t slen,
                           void *dst, size_t dlen)
{
    z_stream *z = &d->z;
    int ret;

    if (!d->z_ready) {
        if (inflateInit2(z, -12) != Z_OK) {
            return -1;
        }
        d->z_ready = true;
    } else if (inflateReset(z) != Z_OK) {
        return -1;
    }
    z->next_in = (Bytef *)src;
    z->avail_in = (uInt)slen;
    z->next_out = dst;
    z->avail_out = (uInt)dlen;
    ret = inflate(z, Z_FINISH);
    /*
     * The input may run on into the next compressed cluster, so a full
     * output buffer is success even without the end of the stream.
     */
    if ((ret != Z_STREAM_END && ret != Z_BUF_ERROR && ret != Z_OK) ||
        z->avail_out != 0) {
        return -1;
    }
    return 0;
}

static int unzstd_cluster(struct dctx *d, const void *src, size_t slen,
                          void *dst, size_t dlen)
{
    ZSTD_inBuffer in = { src, slen, 0 };
    ZSTD_outBuffer out = { dst, dlen, 0 };

    if (!d->zstd) {
        d->zstd = ZSTD_createDCtx();
        if (!d->zstd) {
            return -1;
        }
    } else if (ZSTD_isError(ZSTD_DCtx_reset(d->zstd,
                                            ZSTD_reset_session_only))) {
        return -1;
    }
    while (out.pos < out.size) {
        size_t r = ZSTD_decompressStream(d->zstd, &out, &in);
        if (ZSTD_isError(r)) {
            return -1;
        }
        if (r == 0 || in.pos == in.size) {
            /* end of the frame, or of the input */
            break;
        }
    }
    return out.pos == out.size ? 0 : -1;
}

int qcow2_decompress(int type, const void *src, size_t slen, void *dst,
                     size_t dlen)
{
    struct dctx *d = thread_dctx();

    if (!d) {
        return -1;
    }
    return type == 1 ? unzstd_cluster(d, src, slen, dst, dlen)
                     : inflate_cluster(d, src, slen, dst, dlen);
}

/* ---- compression, one context per thread ---- */

struct df_compressor {
    enum df_compression type;
    z_stream z;
    bool z_ready;
    ZSTD_CCtx *zstd;
};

struct df_compressor *df_compressor_new(enum df_compression type)
{
    struct df_compressor *c = calloc(1, sizeof(*c));

    if (!c) {
        return NULL;
    }
    c->type = type;
    if (type == DF_COMPRESS_ZSTD) {
        c->zstd = ZSTD_createCCtx();
        if (!c->zstd) {
            free(c);
            return NULL;
        }
    } else {
        /* raw deflate with a 4 KiB window: what qcow2 readers expect */
        if (deflateInit2(&c->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                         Z_DEFAULT_STRATEGY) != Z_OK) {
            free(c);
            return NULL;
        }
        c->z_ready = true;
    }
    return c;
}

void df_compressor_free(struct df_compressor *c)
{
    if (!c) {
        return;
    }
    if (c->z_ready) {
        deflateEnd(&c->z);
    }
    ZSTD_freeCCtx(c->zstd);
    free(c);
}

size_t df_compress(struct df_compressor *c, const void *src, size_t slen,
                   void *dst, size_t dlen)
{
    if (c->type == DF_COMPRESS_ZSTD) {
        size_t r = ZSTD_compress2(c->zstd, dst, dlen, src, slen);
        return ZSTD_isError(r) ? 0 : r;
    }
    if (deflateReset(&c->z) != Z_OK) {
        return 0;
    }
    c->z.next_in = (Bytef *)src;
    c->z.avail_in = (uInt)slen;
    c->z.next_out = dst;
    c->z.avail_out = (uInt)dlen;
    if (deflate(&c->z, Z_FINISH) != Z_STREAM_END) {
        return 0; /* does not fit: store the cluster as it is */
    }
    return dlen - c->z.avail_out;
}
