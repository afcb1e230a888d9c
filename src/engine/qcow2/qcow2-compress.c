/* SPDX-License-Identifier: MIT */
/*
 * qcow2-compress.c - compressed clusters: raw deflate (no zlib header,
 * 4 KiB window, as QEMU writes them) and zstd frames.
 */
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
