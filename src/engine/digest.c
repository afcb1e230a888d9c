/* SPDX-License-Identifier: MIT */
/*
 * digest.c - SHA-256 of the guest-visible bytes of an image.
 *
 * The digest covers every byte from 0 to the virtual size, as a guest
 * reads them through the backing chain, so a raw image and a qcow2 image
 * with the same contents have the same digest (and it equals sha256sum of
 * the raw file).  Ranges that block status reports as zeros are hashed
 * from a constant zero buffer instead of being read.
 */
#include <stdlib.h>

#include <openssl/evp.h>

#include "internal.h"

/* Read-only, so it is not shared mutable state. */
static const unsigned char zeros[64 * 1024];

int df_sha256_zeros(EVP_MD_CTX *ctx, uint64_t len)
{
    while (len) {
        size_t n = (size_t)DF_MIN(len, (uint64_t)sizeof(zeros));
        if (!EVP_DigestUpdate(ctx, zeros, n)) {
            return -1;
        }
        len -= n;
    }
    return 0;
}

/*
 * Hash [@off, @off + @len), which reads as zeros when @zero.  Progress is
 * reported (and cancellation honoured) after every chunk, zeros included,
 * so a huge sparse image still reacts quickly.
 */
static int hash_range(struct df_image *img, EVP_MD_CTX *ctx,
                      unsigned char *buf, uint64_t off, uint64_t len,
                      bool zero, df_progress_fn progress, void *opaque,
                      struct df_error *err)
{
    const char *path = df_image_path(img);
    uint64_t end = off + len;

    while (off < end) {
        size_t n = (size_t)DF_MIN(end - off, (uint64_t)DF_CHUNK);
        int ret = 0;

        if (zero) {
            ret = df_sha256_zeros(ctx, n);
        } else {
            ret = df_image_pread(img, buf, n, off, err);
            if (ret < 0) {
                return ret;
            }
            ret = EVP_DigestUpdate(ctx, buf, n) ? 0 : -1;
        }
        if (ret < 0) {
            return df_fail(err, DF_E_IO, "'%s': SHA-256 update failed",
                           path);
        }
        off += n;
        if (progress && progress(opaque, off, df_image_size(img))) {
            return df_fail(err, DF_E_CANCELED, "'%s': digest canceled",
                           path);
        }
    }
    return 0;
}

int df_digest(struct df_image *img, unsigned char out[DF_SHA256_LEN],
              df_progress_fn progress, void *opaque, struct df_error *err)
{
    const char *path = df_image_path(img);
    uint64_t size = df_image_size(img), off = 0;
    unsigned char *buf = malloc(DF_CHUNK);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int outlen = 0;
    int ret = 0;

    if (!buf || !ctx) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", path);
        goto out;
    }
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        ret = df_fail(err, DF_E_IO, "'%s': cannot start SHA-256", path);
        goto out;
    }
    while (off < size) {
        struct df_extent ext;
        ret = df_image_block_status(img, off, size - off, true, &ext, err);
        if (ret < 0) {
            goto out;
        }
        if (ext.length == 0) {
            ret = df_fail(err, DF_E_IO, "'%s': block status at offset %llu "
                          "returned an empty range", path,
                          (unsigned long long)off);
            goto out;
        }
        ext.length = DF_MIN(ext.length, size - off);
        ret = hash_range(img, ctx, buf, off, ext.length,
                         ext.flags & DF_BLOCK_ZERO, progress, opaque, err);
        if (ret < 0) {
            goto out;
        }
        off += ext.length;
    }
    if (!EVP_DigestFinal_ex(ctx, out, &outlen) || outlen != DF_SHA256_LEN) {
        ret = df_fail(err, DF_E_IO, "'%s': cannot finish SHA-256", path);
    }
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    return ret;
}

void df_digest_hex(const unsigned char d[DF_SHA256_LEN],
                   char hex[2 * DF_SHA256_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < DF_SHA256_LEN; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[2 * DF_SHA256_LEN] = '\0';
}
