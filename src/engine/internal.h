/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the engine's files share and the outside does not see:
 * the driver table, struct df_image, and the I/O helpers.
 */
#ifndef DF_ENGINE_INTERNAL_H
#define DF_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "diskforge/image.h"
#include "diskforge/ops.h"

struct df_driver {
    const char *name;
    enum df_format format;
    /* true when the first bytes of a file are this format */
    bool (*probe)(const unsigned char *buf, size_t len);
    /* fill img->size and img->state from img->fd */
    int (*open)(struct df_image *img, unsigned flags, struct df_error *err);
    void (*close)(struct df_image *img);
    /* write a new image into the empty file @fd */
    int (*create)(int fd, const char *path, const struct df_create_opts *o,
                  struct df_error *err);
    int (*pread)(struct df_image *img, void *buf, size_t len, uint64_t off,
                 struct df_error *err);
    int (*pwrite)(struct df_image *img, const void *buf, size_t len,
                  uint64_t off, struct df_error *err);
    int (*write_zeroes)(struct df_image *img, uint64_t off, uint64_t len,
                        unsigned flags, struct df_error *err);
    int (*flush)(struct df_image *img, struct df_error *err);
    /*
     * Status of this layer only: DF_BLOCK_DATA and/or DF_BLOCK_ZERO, or 0
     * for "not allocated here" (the backing decides).  depth is left 0.
     */
    int (*block_status)(struct df_image *img, uint64_t off, uint64_t len,
                        struct df_extent *ext, struct df_error *err);
    int (*info)(struct df_image *img, struct df_info *info,
                struct df_error *err);
    /*
     * Optional (df_image_fill()): give the guest range [off, off + len),
     * whole clusters, host storage of its own that reads as zeros, for
     * writes straight to the file; the tables are written by the next
     * flush.  Without it a guest offset is its host offset (raw).
     */
    int (*allocate)(struct df_image *img, uint64_t off, uint64_t len,
                    struct df_error *err);
};

extern const struct df_driver df_raw_driver;
extern const struct df_driver df_qcow2_driver;

/*
 * Internal write_zeroes flag: the range must read as zeros whatever
 * backing file the image has now or gets later (rebase, and resize over a
 * longer backing file).  qcow2 v3 sets the zero flag on every cluster,
 * allocating L2 tables as needed, as QEMU's zeroize does; v2, which has
 * no zero flag, writes zeros.
 */
#define DF_ZERO_HIDE_BACKING (1u << 8)

/* Internal open flag: allow dirty, corrupt and snapshot images to be opened
 * read-write, for check and repair. */
#define DF_OPEN_CHECK (1u << 8)

struct df_image {
    const struct df_driver *drv;
    char *path;               /* as given to df_image_open() */
    int fd;
    bool writable;
    uint64_t size;            /* virtual size */
    struct df_image *backing; /* read-only, owned */
    bool backed;              /* the image names a backing file, whether
                               * or not it was opened */
    void *state;              /* driver-private */
    struct df_hostmap *hostmap; /* the host file's data extents (hostmap.c) */
    pthread_mutex_t lock;     /* serialises metadata access (qcow2) */
};

const struct df_driver *df_driver_for(enum df_format fmt);

/* Full-length pread/pwrite on a file; short reads past EOF give zeros. */
int df_io_pread(int fd, void *buf, size_t len, uint64_t off, const char *path,
                struct df_error *err);
int df_io_pwrite(int fd, const void *buf, size_t len, uint64_t off,
                 const char *path, struct df_error *err);
/* Write @len zero bytes at @off (for full preallocation). */
int df_io_write_zeroes(int fd, uint64_t off, uint64_t len, const char *path,
                       struct df_error *err);
/* posix_fallocate() of @len bytes at @off, in steps that poll the cancel
 * hook. */
int df_io_fallocate(int fd, uint64_t off, uint64_t len, const char *path,
                    struct df_error *err);
/* Feed @len zero bytes to the SHA-256 context @ctx (an EVP_MD_CTX) from
 * a constant buffer: no memory is touched but that buffer (digest.c).
 * 0, or -1 if the update failed. */
struct evp_md_ctx_st;
int df_sha256_zeros(struct evp_md_ctx_st *ctx, uint64_t len);
/* Length of the file, or a negative error. */
int df_io_file_size(int fd, uint64_t *size, const char *path,
                    struct df_error *err);

/*
 * The data extents of an image's host file, found with one walk of
 * SEEK_DATA/SEEK_HOLE on the first lookup (hostmap.c).
 *   df_hostmap_lookup(): is host offset @off data, and for how many bytes
 *     (at most @len) does that hold?  Past the end of the file: a hole.
 *   df_hostmap_note_write(): we wrote data at [@off, @off + @len).
 *   df_hostmap_forget(): the file was cut short; walk it again.
 * Thread-safe.  Zero writes and punched holes need not be noted: a range
 * the map calls data is only read, and a hole reads as zeros.
 */
struct df_hostmap;
struct df_hostmap *df_hostmap_new(void);
void df_hostmap_free(struct df_hostmap *m);
int df_hostmap_lookup(struct df_hostmap *m, int fd, const char *path,
                      uint64_t off, uint64_t len, bool *data, uint64_t *run,
                      struct df_error *err);
void df_hostmap_note_write(struct df_hostmap *m, uint64_t off, uint64_t len);
void df_hostmap_forget(struct df_hostmap *m);

/* Read guest bytes of @img's backing (zeros past its end, or no backing). */
int df_image_read_backing(struct df_image *img, void *buf, size_t len,
                          uint64_t off, struct df_error *err);

/* Create the image at exactly @path (no temporary, no rename). */
int df_image_create_at(const char *path, const struct df_create_opts *o,
                       struct df_error *err);

/*
 * A unique temporary name beside @target ("dir/.name.df-PID-N.tmp").
 * Returns a malloc'd string, or NULL.
 */
char *df_temp_name(const char *target);

/*
 * QEMU-compatible image locks (lock.c).
 *   df_lock_take(): take on @fd the bytes an opener in @mode holds, then
 *     fail with -DF_E_BUSY ("'PATH' is in use ...") if another open file
 *     description's bytes conflict.  The locks go with the descriptor.
 *   df_lock_check_replace(): -DF_E_BUSY if the file at @path (if any) is
 *     held in a way that a writer would conflict with: replacing it by a
 *     rename would pull it from under its user.
 *   df_lock_in_use(): does anyone hold any of QEMU's lock bytes on @fd's
 *     file (other than through @fd)?
 */
enum df_lock_mode {
    DF_LOCK_NONE,      /* take and check nothing */
    DF_LOCK_SHARE_ALL, /* hold consistent read, share all (qemu-img -U) */
    DF_LOCK_METADATA,  /* hold nothing, share no write/resize (qemu-img
                        * info of a qcow2) */
    DF_LOCK_READ,      /* hold consistent read, share no write/resize */
    DF_LOCK_WRITE,     /* hold read, write, resize; share no write/resize */
};
int df_lock_take(int fd, const char *path, enum df_lock_mode mode,
                 struct df_error *err);
int df_lock_check_replace(const char *path, struct df_error *err);
bool df_lock_in_use(int fd);
/* close() of a descriptor that may hold image locks: the locks are
 * dropped first, so a forked child that has not exec'd yet keeps none. */
int df_lock_close(int fd);

/* The cancel hook (df_cancel_hook()): is it set and true on this thread?
 * df_cancel_point() is 0, or -DF_E_CANCELED with "'@path': interrupted". */
bool df_cancel_requested(void);
int df_cancel_point(const char *path, struct df_error *err);

/*
 * The last step of an atomic output: unless the cancel hook says stop or
 * someone uses the file at @target (df_lock_check_replace()), rename @tmp
 * over it.  The caller removes @tmp on failure.
 */
int df_rename_into_place(const char *tmp, const char *target,
                         struct df_error *err);

/* Directory part of @path ("." when none), malloc'd. */
char *df_path_dir(const char *path);
/*
 * @name resolved against the directory of @base, malloc'd.  A name that
 * is absolute or has a protocol ("file:x", "json:{...}") is returned as it
 * is, as qemu does: df_filename() then says what it means.
 */
char *df_path_relative_to(const char *base, const char *name);
/* qemu's test for a protocol prefix: a ':' before any '/'. */
bool df_has_protocol(const char *name);


static inline uint64_t df_be64(const void *p)
{
    const unsigned char *b = p;
    return ((uint64_t)b[0] << 56) | ((uint64_t)b[1] << 48) |
           ((uint64_t)b[2] << 40) | ((uint64_t)b[3] << 32) |
           ((uint64_t)b[4] << 24) | ((uint64_t)b[5] << 16) |
           ((uint64_t)b[6] << 8) | b[7];
}

static inline uint32_t df_be32(const void *p)
{
    const unsigned char *b = p;
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) |
           ((uint32_t)b[2] << 8) | b[3];
}

static inline uint16_t df_be16(const void *p)
{
    const unsigned char *b = p;
    return (uint16_t)((b[0] << 8) | b[1]);
}

static inline void df_put_be64(void *p, uint64_t v)
{
    unsigned char *b = p;
    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)v;
        v >>= 8;
    }
}

static inline void df_put_be32(void *p, uint32_t v)
{
    unsigned char *b = p;
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

static inline void df_put_be16(void *p, uint16_t v)
{
    unsigned char *b = p;
    b[0] = (unsigned char)(v >> 8);
    b[1] = (unsigned char)v;
}

static inline bool df_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    /* compare the first 16 bytes, then the buffer against itself shifted */
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++) {
        if (p[i]) {
            return false;
        }
    }
    return len <= 16 || __builtin_memcmp(p, p + 16, len - 16) == 0;
}

#define DF_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DF_MAX(a, b) ((a) > (b) ? (a) : (b))
#define DF_DIV_ROUND_UP(n, d) (((n) + (d)-1) / (d))
#define DF_ROUND_UP(n, d) (DF_DIV_ROUND_UP(n, d) * (d))

/*
 * Cluster compression for qcow2 output (qcow2-compress.c).  A compressor
 * belongs to one thread at a time.  df_compress() returns the compressed
 * length, or 0 when the result does not fit in @dlen bytes.
 */
struct df_compressor;
struct df_compressor *df_compressor_new(enum df_compression type);
void df_compressor_free(struct df_compressor *c);
size_t df_compress(struct df_compressor *c, const void *src, size_t slen,
                   void *dst, size_t dlen);

/*
 * Store @clen bytes of compressed data as the cluster at guest @off (cluster
 * aligned) of the qcow2 image @img, which must not be allocated yet.
 * Compressed clusters are packed back to back.  With @clen 0, only pad the
 * file to a whole number of 512-byte sectors (call once at the end).
 */
int df_qcow2_write_compressed(struct df_image *img, uint64_t off,
                              const void *cdata, size_t clen,
                              struct df_error *err);

/*
 * The compressed copy of df_convert(): every cluster of @src into the new
 * qcow2 image @dst, compressed on a thread per CPU (convert-compress.c);
 * all-zero clusters are left out unless @keep_zeros (-S 0).  @hash, when
 * not NULL, is fed every guest byte in order.
 */
struct evp_md_ctx_st; /* OpenSSL's EVP_MD_CTX */
int df_convert_compressed(struct df_image *src, struct df_image *dst,
                          bool keep_zeros, struct evp_md_ctx_st *hash,
                          df_progress_fn progress, void *opaque,
                          const char *dst_name, struct df_error *err);

/* Feed @len zero bytes to a SHA-256 (digest.c).  0, or -1 on failure. */
int df_sha256_zeros(struct evp_md_ctx_st *ctx, uint64_t len);

/* CPUs this process may use (its affinity mask), at least 1. */
unsigned df_usable_cpus(void);

/*
 * A fixed pool of threads for one bulk operation (workers.c).
 *   df_workers_start(n): n threads in all, the caller being one of them
 *     (so n - 1 are created; fewer if creation fails, and NULL only when
 *     out of memory: the functions below then run everything on the
 *     caller).
 *   df_workers_run(): call fn(ctx, t) on the caller (t 0) and on every
 *     worker t in 1..count-1 that is free to start before the caller's
 *     call returns; return when all the calls have returned.  fn must
 *     share out the work dynamically (an atomic index), since one call
 *     may have to do it all; t is for per-thread resources.
 *   df_workers_post(), df_workers_wait(): df_workers_run() in two
 *     halves.  post opens the batch to the workers and returns at once;
 *     wait (same fn and ctx) runs fn on the caller, then closes the batch
 *     and waits for the workers in it.  The caller must wait for a batch
 *     before it posts another, and before it frees what ctx points to.
 *   df_workers_stop(): join and free.  NULL is allowed everywhere.
 */
struct df_workers;
struct df_workers *df_workers_start(unsigned n);
unsigned df_workers_count(const struct df_workers *w);
void df_workers_run(struct df_workers *w, void (*fn)(void *ctx, unsigned t),
                    void *ctx);
void df_workers_post(struct df_workers *w, void (*fn)(void *ctx, unsigned t),
                     void *ctx);
void df_workers_wait(struct df_workers *w, void (*fn)(void *ctx, unsigned t),
                     void *ctx);
void df_workers_stop(struct df_workers *w);

/* Size of the I/O buffers bulk operations use. */
#define DF_CHUNK (2u << 20)

#endif
