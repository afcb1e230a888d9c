/* SPDX-License-Identifier: MIT */
/*
 * qcow2-compress.c - compressed clusters: raw deflate (no zlib header,
 * 4 KiB window, as QEMU writes them) and zstd frames.
 */
#include <stdlib.h>

#include <zlib.h>
#include <zstd.h>

#include "qcow2.h"

static int inflate_cluster(const void *src, size_t slen, void *dst,
                           size_t dlen)
{
    z_stream z = { 0 };
    int ret;

    if (inflateInit2(&z, -12) != Z_OK) {
        return -1;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)slen;
    z.next_out = dst;
    z.avail_out = (uInt)dlen;
    ret = inflate(&z, Z_FINISH);
    /*
     * The input may run on into the next compressed cluster, so a full
     * output buffer is success even without the end of the stream.
     */
    if ((ret != Z_STREAM_END && ret != Z_BUF_ERROR && ret != Z_OK) ||
        z.avail_out != 0) {
        inflateEnd(&z);
        return -1;
    }
    inflateEnd(&z);
    return 0;
}

static int unzstd_cluster(const void *src, size_t slen, void *dst,
                          size_t dlen)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer in = { src, slen, 0 };
    ZSTD_outBuffer out = { dst, dlen, 0 };
    int ret = 0;

    if (!d) {
        return -1;
    }
    while (out.pos < out.size) {
        size_t r = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(r)) {
            ret = -1;
            break;
        }
        if (r == 0 || in.pos == in.size) {
            /* end of the frame, or of the input */
            break;
        }
    }
    if (out.pos != out.size) {
        ret = -1;
    }
    ZSTD_freeDCtx(d);
    return ret;
}

int qcow2_decompress(int type, const void *src, size_t slen, void *dst,
                     size_t dlen)
{
    return type == 1 ? unzstd_cluster(src, slen, dst, dlen)
                     : inflate_cluster(src, slen, dst, dlen);
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
