/* SPDX-License-Identifier: MIT */
/*
 * diskforge/ops.h - whole-image operations built on the engine: convert,
 * digest, compare.  Each is a library call (the CLI and the job runner use
 * the same functions) and each can report progress and be cancelled.
 *
 * Thread-safety: any thread; different calls are independent.  Several
 * calls may read the same source file concurrently.
 */
#ifndef DISKFORGE_OPS_H
#define DISKFORGE_OPS_H

#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Progress callback: @done of @total bytes.  Called on the thread running
 * the operation.  Return non-zero to cancel; the operation then fails
 * with DF_E_CANCELED and removes any partial output.
 */
typedef int (*df_progress_fn)(void *opaque, uint64_t done, uint64_t total);

struct df_convert_opts {
    enum df_format src_format;    /* DF_FMT_AUTO probes */
    struct df_create_opts target; /* format, cluster size, compat, ...;
                                   * size is taken from the source */
    uint64_t sparse_size;         /* -S: zero runs of this many bytes (a
                                   * multiple of 512) are not written;
                                   * 0 allocates everything.  Default 4096 */
    bool compress;                /* -c (qcow2 target) */
    df_progress_fn progress;
    void *progress_opaque;
};

DF_API void df_convert_opts_init(struct df_convert_opts *o);

/**
 * df_convert() - copy the guest-visible bytes of @src into a new image at
 * @dst.  The output is written under a temporary name beside @dst and
 * renamed into place only on success; on failure nothing is left behind
 * and an existing @dst is untouched.  Holes and zero ranges of the source
 * are not written.
 */
DF_API int df_convert(const char *src, const char *dst,
                      const struct df_convert_opts *o, struct df_error *err);

#define DF_SHA256_LEN 32

/** df_digest() - SHA-256 of every guest-visible byte of @img. */
DF_API int df_digest(struct df_image *img, unsigned char out[DF_SHA256_LEN],
                     df_progress_fn progress, void *opaque,
                     struct df_error *err);

/** df_digest_hex() - @hex receives 64 lowercase hex digits and a NUL. */
DF_API void df_digest_hex(const unsigned char d[DF_SHA256_LEN],
                          char hex[2 * DF_SHA256_LEN + 1]);

struct df_compare_result {
    bool identical;
    bool size_mismatch;      /* the virtual sizes differ */
    uint64_t mismatch_offset; /* first differing byte when !identical */
};

/**
 * df_compare() - compare the guest-visible bytes of @a and @b the way
 * qemu-img compare does: unallocated and zero ranges equal explicit zeros,
 * and when the sizes differ the longer image's tail must read as zeros
 * (with @strict, a size difference is itself a mismatch).
 */
DF_API int df_compare(struct df_image *a, struct df_image *b, bool strict,
                      struct df_compare_result *res, df_progress_fn progress,
                      void *opaque, struct df_error *err);

#ifdef __cplusplus
}
#endif
#endif
