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

/**
 * df_cancel_hook() - make every engine call on the calling thread poll
 * @fn(@opaque) between chunks of work (preallocation, check, resize and
 * every bulk copy), and just before a finished output is renamed into
 * place; once it returns true the call fails with DF_E_CANCELED and
 * removes its temporary.  Operations that take a df_progress_fn poll
 * both.  @fn NULL removes the hook.  Per thread: a job runner sets it on
 * each worker.
 */
DF_API void df_cancel_hook(bool (*fn)(void *opaque), void *opaque);

#define DF_SHA256_LEN 32

struct df_convert_opts {
    enum df_format src_format;    /* DF_FMT_AUTO probes */
    struct df_create_opts target; /* format, cluster size, compat, ...;
                                   * size is taken from the source */
    uint64_t sparse_size;         /* -S: zero runs of this many bytes (a
                                   * multiple of 512) are not written;
                                   * 0 allocates everything.  Default 4096 */
    bool compress;                /* -c (qcow2 target) */
    bool no_create;               /* -n: write into the existing image at
                                   * the destination (of target.format, at
                                   * least as large as the source) instead
                                   * of creating one; in place, so not
                                   * atomic; target's other fields unused */
    bool force_share;             /* -U: open the source sharing every
                                   * permission (DF_OPEN_SHARE) */
    unsigned char *guest_sha256;  /* out, or NULL: the SHA-256 of every
                                   * guest-visible byte (what df_digest()
                                   * gives), taken while converting;
                                   * DF_SHA256_LEN bytes, set on success */
    df_progress_fn progress;
    void *progress_opaque;
};

DF_API void df_convert_opts_init(struct df_convert_opts *o);

/**
 * df_convert() - copy the guest-visible bytes of @src into a new image at
 * @dst.  The output is written under a temporary name beside @dst and
 * renamed into place only on success; on failure nothing is left behind
 * and an existing @dst is untouched.  Holes and zero ranges of the source
 * are not written.  With o->no_create, @dst is written in place instead,
 * and the source's zero ranges are written as zeros.
 */
DF_API int df_convert(const char *src, const char *dst,
                      const struct df_convert_opts *o, struct df_error *err);

/* df_image_fill(): what to copy, and what came of it. */
struct df_fill {
    int fd;             /* the source: its bytes from offset 0 */
    bool drop_source;   /* its pages are clean: evict them once copied */
    df_progress_fn progress; /* may be NULL */
    void *opaque;
    unsigned char sha256[DF_SHA256_LEN]; /* out: of the image's file */
    uint64_t data;      /* out: bytes written */
};

/**
 * df_image_fill() - copy the first @len bytes of f->fd into @img at guest
 * offset @off, a range that must read as zeros, and give the SHA-256 of
 * the image's file as it stands afterwards (f->sha256), hashed while the
 * copy is written.  A block of 4 KiB that is all zeros is not written;
 * a qcow2 cluster gets host storage only when a byte of it is not zero,
 * so the same bytes always make the same image.  The image's tables are
 * written before the data, so nothing but the data changes once the
 * hashing starts; the file must not be written by anyone else meanwhile.
 * -DF_E_UNSUPPORTED, with nothing changed, when the image has a backing
 * file or does not read as zeros there, or the source cannot be mapped:
 * write it with df_image_pwrite() and hash the file afterwards instead.
 */
DF_API int df_image_fill(struct df_image *img, uint64_t off, uint64_t len,
                         struct df_fill *f, struct df_error *err);

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

/* ---- check and repair ---- */

enum df_repair {
    DF_REPAIR_NONE = 0,
    DF_REPAIR_LEAKS = 1, /* -r leaks: free clusters nothing references */
    DF_REPAIR_ALL = 2,   /* -r all: also rebuild wrong refcounts */
};

/* OR'd into df_check()'s @repair with DF_REPAIR_NONE: open the image
 * sharing every permission, as qemu-img check -U (DF_OPEN_SHARE). */
#define DF_CHECK_SHARE 0x100

struct df_check_result {
    uint64_t corruptions;       /* errors that can lose or corrupt data */
    uint64_t leaks;             /* clusters counted but not referenced */
    uint64_t check_errors;      /* errors that stopped the check itself */
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
    uint64_t total_clusters;    /* guest clusters */
    uint64_t allocated_clusters;
    uint64_t fragmented_clusters;
    uint64_t compressed_clusters;
    uint64_t image_end_offset;  /* end of the last cluster in use */
    bool repaired;              /* a repair ran: figures are after it */
};

/* One line of the check's findings ("Leaked cluster 22 refcount=1
 * reference=0"), for the caller to print; called on the checking thread. */
typedef void (*df_message_fn)(void *opaque, const char *line);

/**
 * df_check() - walk the metadata of the qcow2 image at @path the way
 * qemu-img check does: every L1/L2 entry and refcount, reporting leaks,
 * refcounts lower than the references, offsets outside the file or not
 * aligned, metadata overlapping other clusters, and wrong COPIED flags.
 * With @repair, fix leaks (DF_REPAIR_LEAKS) or rebuild the refcounts
 * (DF_REPAIR_ALL), then check again; @res then describes the repaired
 * image and the *_fixed counts what changed.  Returns 0 when the check
 * ran (whatever it found), -DF_E_UNSUPPORTED for raw images, or another
 * error when the image cannot be checked at all.
 */
DF_API int df_check(const char *path, enum df_format fmt,
                    enum df_repair repair, struct df_check_result *res,
                    df_message_fn msg, void *opaque, struct df_error *err);

/* ---- operations that change an image in place ---- */

/**
 * df_resize() - set the virtual size of the image at @path to @size.
 * Growing a qcow2 extends its L1 table; @prealloc applies to the new
 * part, and the new area reads as zeros even over a longer backing file
 * (qemu-img resize's results).  Shrinking needs @shrink (raw and qcow2;
 * qcow2 drops the clusters past the new end and cuts the file).
 */
DF_API int df_resize(const char *path, enum df_format fmt, uint64_t size,
                     enum df_prealloc prealloc, bool shrink,
                     struct df_error *err);

/**
 * df_commit() - copy the data of the qcow2 overlay at @path into its
 * backing file, then empty the overlay (as qemu-img commit does).
 */
DF_API int df_commit(const char *path, enum df_format fmt,
                     df_progress_fn progress, void *opaque,
                     struct df_error *err);

/**
 * df_commit_to() - df_commit() with qemu-img commit's -b and -d.  @base
 * (NULL: the immediate backing file) names an image further down the
 * overlay's backing chain, as recorded in the image above it or as any
 * path of the same file: everything the layers above it hold goes into
 * it, and the overlay is left as it is (-b implies -d; the images in
 * between no longer show what they did).  @keep: do not empty the
 * overlay after committing (-d).
 */
DF_API int df_commit_to(const char *path, enum df_format fmt,
                        const char *base, bool keep, df_progress_fn progress,
                        void *opaque, struct df_error *err);

/**
 * df_rebase() - make @backing (NULL: none) the backing file of the qcow2
 * image at @path.  Unless @unsafe, first copy into the image every range
 * where the old and the new backing chains differ, so that the guest
 * sees the same bytes; with @unsafe only the header changes.  A @backing
 * needs its @backing_fmt (DF_FMT_AUTO is refused: a recorded format is
 * never probed), and is read as a header's name is (df_backing_path()).
 */
DF_API int df_rebase(const char *path, enum df_format fmt,
                     const char *backing, enum df_format backing_fmt,
                     bool unsafe, df_progress_fn progress, void *opaque,
                     struct df_error *err);

/**
 * df_sparsify() - deallocate the all-zero clusters (qcow2) or blocks (raw)
 * of the image at @path in place; the content does not change.
 * @freed receives the number of bytes deallocated (may be NULL).
 */
DF_API int df_sparsify(const char *path, enum df_format fmt,
                       uint64_t *freed, df_progress_fn progress,
                       void *opaque, struct df_error *err);

/* copy, map, measure */

enum df_sparse_mode {
    DF_SPARSE_AUTO = 0,   /* cp's default: a sparse source stays sparse */
    DF_SPARSE_ALWAYS = 1, /* holes kept, blocks of zeros made holes */
    DF_SPARSE_NEVER = 2,  /* every byte written, holes included */
};

/** df_sparse_mode_parse() - "auto"/"always"/"never"; -DF_E_INVAL else. */
DF_API int df_sparse_mode_parse(const char *name, enum df_sparse_mode *out);
DF_API const char *df_sparse_mode_name(enum df_sparse_mode mode);

/**
 * df_copy() - copy the bytes of the host file @src (a regular file or a
 * block device; no image format is involved) to the new file @dst, with
 * cp --sparse=@mode semantics (coreutils 9.1):
 *   DF_SPARSE_NEVER writes every byte, so @dst is fully allocated;
 *   DF_SPARSE_ALWAYS keeps @src's holes (SEEK_DATA/SEEK_HOLE) and also
 *   leaves out blocks of zeros (the file system's block size, aligned),
 *   which become holes;
 *   DF_SPARSE_AUTO copies a source that has holes as ALWAYS does, and any
 *   other source as it is (allocated zeros stay allocated).
 * @dst is written under a temporary name beside it and renamed into place
 * only when complete; on failure nothing is left behind and an existing
 * @dst is untouched.  Replacing @dst keeps its permission bits.  Copying a
 * file onto itself is refused.  @progress (may be NULL) sees bytes of
 * @src done; returning non-zero cancels with DF_E_CANCELED.
 * Thread-safety: any thread.
 */
DF_API int df_copy(const char *src, const char *dst, enum df_sparse_mode mode,
                   df_progress_fn progress, void *opaque,
                   struct df_error *err);

struct df_copy_opts {
    enum df_sparse_mode mode;   /* default DF_SPARSE_AUTO */
    df_progress_fn progress;    /* may be NULL */
    void *progress_opaque;
    unsigned char *sha256;      /* out (DF_SHA256_LEN bytes): SHA-256 of
                                 * the copy's bytes, holes as zeros,
                                 * computed while copying, so the copy is
                                 * never read back; NULL: not computed.
                                 * It costs a read of the source's data
                                 * into memory (copy_file_range() alone
                                 * would not bring it there) */
};

DF_API void df_copy_opts_init(struct df_copy_opts *o);

/**
 * df_copy_with() - df_copy() with its options in @o, and the SHA-256 of
 * what it wrote (o->sha256), written only on success.
 */
DF_API int df_copy_with(const char *src, const char *dst,
                        const struct df_copy_opts *o, struct df_error *err);

/* One range of an image as `qemu-img map` describes it. */
struct df_map_extent {
    uint64_t start;
    uint64_t length;
    int depth;              /* layer that decides: 0 = the image itself */
    bool present;           /* allocated in that layer (false: nowhere) */
    bool zero;              /* reads as zeros */
    bool data;              /* stored in that layer's file (or compressed) */
    uint64_t offset;        /* where in that layer's file, or DF_NO_OFFSET
                             * (unallocated, zero or compressed clusters) */
    struct df_image *layer; /* the image at @depth (borrowed) */
};

struct df_map;

/**
 * df_map_new() - start walking the guest range [@start, @start + @len) of
 * @img (clipped to its virtual size) the way qemu-img map 7.2 does.
 * Returns an iterator you own (release it with df_map_free(), before
 * closing @img), or NULL with @err set.
 */
DF_API struct df_map *df_map_new(struct df_image *img, uint64_t start,
                                 uint64_t len, struct df_error *err);

/**
 * df_map_next() - the next range, as qemu-img map prints it: each range
 * belongs to the first layer of the chain, top first, that allocates it,
 * or (present false, zero true) to the layer that ends the search (no
 * backing file, or past the end of a shorter one); adjacent ranges with
 * the same depth and flags and contiguous offsets are merged.  Returns 1
 * with *@e filled, 0 at the end, or a negative error.  A window that
 * starts at or past the end of the image gives one empty range, as
 * qemu-img prints one.
 * Thread-safety: per iterator; the image as for df_image_block_status().
 */
DF_API int df_map_next(struct df_map *m, struct df_map_extent *e,
                       struct df_error *err);

/** df_map_free() - release @m; NULL is accepted. */
DF_API void df_map_free(struct df_map *m);

struct df_measure {
    uint64_t required;        /* bytes the new image needs for the content */
    uint64_t fully_allocated; /* bytes with every cluster allocated */
    bool has_bitmaps;         /* qemu-img prints "bitmaps size" */
    uint64_t bitmaps;         /* bytes for persistent bitmaps (always 0) */
};

/**
 * df_measure() - the file size of a new image with the format and options
 * of @o (format, cluster_size, refcount_bits, compat, prealloc, and
 * backing_file, which only matters when set), computed as qemu-img
 * measure 7.2 does: holding the content of @src (read through its backing
 * chain) or, with @src NULL, empty with a virtual size of o->size.
 * Thread-safety: any thread; @src as for df_image_block_status().
 */
DF_API int df_measure(struct df_image *src, const struct df_create_opts *o,
                      struct df_measure *res, struct df_error *err);

#ifdef __cplusplus
}
#endif
#endif
