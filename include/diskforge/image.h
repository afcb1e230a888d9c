/* SPDX-License-Identifier: MIT */
/*
 * diskforge/image.h - the image engine: create, open, read, write, block
 * status and info for raw and qcow2 (versions 2 and 3) images.
 *
 * Thread-safety
 *   df_image_pread(), df_image_block_status(), df_image_size() and
 *   df_image_info() may be called on one open image from any number of
 *   threads at once.  df_image_pwrite(), df_image_write_zeroes() and
 *   df_image_flush() may also be called from any thread; the image
 *   serialises metadata changes with its own lock, so concurrent writers
 *   are safe but do not run in parallel.  df_image_close() must be the last
 *   call on an image, made by one thread when no other call is running.
 *   Different images are independent.  A backing file is opened read-only
 *   and never written through an overlay.
 */
#ifndef DISKFORGE_IMAGE_H
#define DISKFORGE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum df_format {
    DF_FMT_AUTO = 0, /* probe (never used for a backing file with a format) */
    DF_FMT_RAW = 1,
    DF_FMT_QCOW2 = 2,
};

enum df_prealloc {
    DF_PREALLOC_OFF = 0,
    DF_PREALLOC_METADATA = 1, /* qcow2 only */
    DF_PREALLOC_FALLOC = 2,
    DF_PREALLOC_FULL = 3,
};

enum df_compression {
    DF_COMPRESS_ZLIB = 0,
    DF_COMPRESS_ZSTD = 1,
};

/* Deepest backing chain an image may have (the image itself excluded). */
#define DF_MAX_BACKING_DEPTH 64

struct df_create_opts {
    enum df_format format;         /* DF_FMT_RAW or DF_FMT_QCOW2 */
    uint64_t size;                 /* bytes; 0 with a backing: its size */
    enum df_prealloc prealloc;     /* DF_PREALLOC_OFF by default */
    uint32_t cluster_size;         /* qcow2: 512..2 MiB, power of two */
    int compat;                    /* qcow2: 2 (0.10) or 3 (1.1) */
    bool lazy_refcounts;           /* qcow2 v3 only */
    int refcount_bits;             /* qcow2: 1..64, power of two */
    enum df_compression compression; /* qcow2 v3 header field */
    const char *backing_file;      /* qcow2: stored as given, or NULL */
    enum df_format backing_format; /* required with backing_file: a
                                    * backing format is never probed */
};

/** df_create_opts_init() - qemu-img's defaults: qcow2 v3, 64 KiB, 16 bits. */
DF_API void df_create_opts_init(struct df_create_opts *o);

/**
 * df_image_create() - create a new image at @path, replacing any file there.
 * The image is built under a temporary name in the same directory and
 * renamed into place only when complete, so a failure leaves whatever was
 * at @path untouched.  The output is deterministic: the same options give
 * the same bytes.  A size of 0 makes an empty image, as qemu-img does.
 * With a backing file, o->backing_format must be given (-DF_E_INVAL
 * otherwise: the format recorded for a backing file is never guessed);
 * the backing is opened (read-only) to validate it and to take its size
 * when o->size is 0.  @path is a file name as for df_image_open().
 * Thread-safety: any thread.
 */
DF_API int df_image_create(const char *path, const struct df_create_opts *o,
                           struct df_error *err);

/**
 * df_filename() - the local path a file name stands for, read as qemu-img
 * reads file names: a "file:" prefix is stripped; "json:" pseudo-file names
 * and every other protocol prefix (a ':' before any '/': "nbd:",
 * "blkdebug:", "http:"...) are refused with -DF_E_UNSUPPORTED naming them.
 * A file whose name has a ':' is written "./a:b".  *@path receives a
 * malloc'd path (free it), which reads the same when given again.
 * Every df_image_*() call and operation that takes an image name applies
 * this; backing names read from a header follow the same rules (a relative
 * name is taken from the directory of the image naming it, except after
 * "file:", where, as in qemu, it is relative to the current directory).
 */
DF_API int df_filename(const char *name, char **path, struct df_error *err);

/**
 * df_backing_path() - the local path of the backing file that the image at
 * @image names @backing: resolved against @image's directory (unless
 * absolute or with a protocol, as qemu does), then read by df_filename().
 * Malloc'd (free it), or NULL with @err set.  Every backing name read from
 * a header, or about to be recorded in one, goes through this.
 */
DF_API char *df_backing_path(const char *image, const char *backing,
                             struct df_error *err);

enum df_open_flags {
    DF_OPEN_RDWR = 1 << 0,       /* open for writing */
    DF_OPEN_NO_BACKING = 1 << 1, /* do not open the backing chain */
    DF_OPEN_SHARE = 1 << 2,      /* read-only: share every permission with
                                  * other users, as qemu-img -U does (the
                                  * image may be changing under you) */
    DF_OPEN_METADATA = 1 << 3,   /* read-only, for the header and metadata
                                  * only (info): lock as qemu-img info does
                                  * (qcow2: no writer may be present; raw:
                                  * no locks) */
};

struct df_image;

/**
 * df_image_open() - open the image at @path (a file name as df_filename()
 * reads it).  @fmt DF_FMT_AUTO probes (qcow2 magic, else raw): do that
 * only for images the user named, never to record a format.  Unless
 * DF_OPEN_NO_BACKING, the backing chain is opened read-only, each backing
 * name read by df_backing_path() (json: and protocol names refused, with
 * the name in the error); a loop or a chain deeper than DF_MAX_BACKING_DEPTH is
 * an error.  Every file opened (backing files included) takes QEMU's
 * advisory locks (docs/design.md, "Image locks"): an image another
 * process (QEMU, qemu-nbd, qemu-img, diskforge) writes cannot be opened,
 * nor one it reads opened for writing: -DF_E_BUSY, a message naming the
 * image and "in use".  Readers do not block each other.  Returns a handle you own (release it with df_image_close()),
 * or NULL with @err set.
 */
DF_API struct df_image *df_image_open(const char *path, enum df_format fmt,
                                      unsigned flags, struct df_error *err);

/**
 * df_untrusted_begin() - treat every image opened on the calling thread
 * from now on as hostile (docs/untrusted.md), until df_untrusted_end():
 *   - its format must be given (DF_FMT_AUTO is refused: no probing), and
 *     each backing file must have its format recorded in the header;
 *   - a backing file is followed only if its real path is one of
 *     @allowed (@n paths: files the job made, `allow_backing`), or if its
 *     name is relative and it lies, after symbolic links, inside the
 *     directory of the image opened; an absolute name, or one that leaves
 *     that directory, fails with -DF_E_INVAL and the backing name in the
 *     message.
 * The strings are borrowed until df_untrusted_end().
 */
DF_API void df_untrusted_begin(const char *const *allowed, size_t n);
DF_API void df_untrusted_end(void);

/**
 * df_image_close() - flush (if writable) and release @img and its backing
 * chain.  @img is freed even when the flush fails.  NULL is accepted.
 */
DF_API int df_image_close(struct df_image *img, struct df_error *err);

DF_API uint64_t df_image_size(const struct df_image *img);
DF_API enum df_format df_image_format(const struct df_image *img);
DF_API const char *df_image_path(const struct df_image *img);
/** df_image_backing() - the opened backing image (borrowed), or NULL. */
DF_API struct df_image *df_image_backing(const struct df_image *img);
DF_API const char *df_format_name(enum df_format fmt);
/** df_format_parse() - "raw"/"qcow2" to a format; -DF_E_INVAL otherwise. */
DF_API int df_format_parse(const char *name, enum df_format *out);
DF_API const char *df_prealloc_name(enum df_prealloc p);
DF_API int df_prealloc_parse(const char *name, enum df_prealloc *out);

/**
 * df_image_pread() - read @len guest bytes at @off.  Ranges beyond the
 * virtual size are an error.  Unallocated ranges read through the backing
 * chain, or as zeros.
 */
DF_API int df_image_pread(struct df_image *img, void *buf, size_t len,
                          uint64_t off, struct df_error *err);

/** df_image_pwrite() - write @len guest bytes at @off (any alignment). */
DF_API int df_image_pwrite(struct df_image *img, const void *buf, size_t len,
                           uint64_t off, struct df_error *err);

enum df_zero_flags {
    DF_ZERO_MAY_UNMAP = 1 << 0, /* deallocate where that reads as zeros */
};

/**
 * df_image_write_zeroes() - make @len bytes at @off read as zeros.  qcow2 v3
 * sets the zero flag on whole clusters (freeing them with
 * DF_ZERO_MAY_UNMAP); v2 deallocates when there is no backing file and
 * writes zeros otherwise; raw punches holes with DF_ZERO_MAY_UNMAP.
 */
DF_API int df_image_write_zeroes(struct df_image *img, uint64_t off,
                                 uint64_t len, unsigned flags,
                                 struct df_error *err);

/** df_image_flush() - write cached metadata and fsync nothing else. */
DF_API int df_image_flush(struct df_image *img, struct df_error *err);

/* Block status of a guest range. */
enum df_block_flags {
    DF_BLOCK_DATA = 1 << 0, /* backed by host storage (may hold zeros) */
    DF_BLOCK_ZERO = 1 << 1, /* reads as zeros */
    DF_BLOCK_COMPRESSED = 1 << 2,
};

#define DF_NO_OFFSET UINT64_MAX

struct df_extent {
    uint64_t start;
    uint64_t length;
    unsigned flags;       /* DF_BLOCK_* */
    int depth;            /* layer holding it: 0 = this image, 1 = its
                           * backing...; chain length if nowhere */
    uint64_t host_offset; /* in the file at @depth, or DF_NO_OFFSET */
};

/**
 * df_image_block_status() - describe the longest run starting at @off (at
 * most @len bytes, clipped to the virtual size) whose bytes share one kind.
 * With @follow_backing, unallocated runs are resolved through the chain;
 * otherwise they are reported as depth 1 (or zero with no backing).
 */
DF_API int df_image_block_status(struct df_image *img, uint64_t off,
                                 uint64_t len, bool follow_backing,
                                 struct df_extent *ext, struct df_error *err);

struct df_info {
    enum df_format format;
    uint64_t virtual_size;
    uint64_t actual_size; /* allocated bytes of the file (st_blocks * 512) */
    uint64_t file_size;   /* length of the file */
    /* qcow2 only below */
    uint32_t cluster_size;
    int version;          /* 2 or 3 */
    bool lazy_refcounts;
    int refcount_bits;
    enum df_compression compression;
    bool dirty;
    bool corrupt;
    bool extended_l2;
    char backing_file[1024];  /* as stored in the image, "" if none */
    char backing_format[32];  /* as stored, "" if none */
    char full_backing_file[4096]; /* resolved against the image's dir */
};

/** df_image_info() - fill @info from @img (header fields and file stats). */
DF_API int df_image_info(struct df_image *img, struct df_info *info,
                         struct df_error *err);

/**
 * df_parse_size() - qemu-img size syntax: a number with an optional
 * suffix B, K, M, G, T, P, E (powers of 1024; k/m/g also accepted, and an
 * optional trailing "iB"/"B").  Decimal fractions with a suffix are taken
 * ("1.5G"); hexadecimal numbers too ("0x10000", as qemu-img 7.2, which
 * also takes a suffix after them: "0x10K"), but without a fraction.
 * Negative numbers, garbage and overflow are -DF_E_INVAL.
 */
DF_API int df_parse_size(const char *s, uint64_t *out, struct df_error *err);

/** df_format_size() - "1 GiB", "196 KiB", "0 B" as qemu-img prints sizes. */
DF_API void df_format_size(uint64_t v, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
