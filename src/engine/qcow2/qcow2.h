/* SPDX-License-Identifier: MIT */
/*
 * qcow2.h - the qcow2 driver's private state and the functions its files
 * share.  The on-disk format is QEMU's docs/interop/qcow2.txt.
 *
 * Locking: every function here that touches struct qcow2_state runs with
 * img->lock held, except the pure arithmetic helpers and the decoders.
 */
#ifndef DF_QCOW2_H
#define DF_QCOW2_H

#include "internal.h"

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_V2_HEADER_LEN 72
#define QCOW2_V3_HEADER_LEN 112 /* what we write: 104 + compression byte + pad */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_MAX_HOST_OFFSET ((1ULL << 56) - 1)

/* entry bits */
#define QCOW2_OFLAG_COPIED (1ULL << 63)
#define QCOW2_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW2_OFLAG_ZERO 1ULL
#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ULL
#define QCOW2_L1_RESERVED 0x7f000000000001ffULL
#define QCOW2_L2_RESERVED 0x3f000000000001feULL
#define QCOW2_REFT_RESERVED 0x1ffULL

/* feature bits */
#define QCOW2_INCOMPAT_DIRTY (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1fULL
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ULL << 0)

/* header extension types */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_FDE 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* byte offsets of header fields we rewrite in place */
#define QCOW2_HDR_L1_SIZE 36
#define QCOW2_HDR_L1_OFFSET 40
#define QCOW2_HDR_RT_OFFSET 48
#define QCOW2_HDR_RT_CLUSTERS 56
#define QCOW2_HDR_INCOMPAT 72
#define QCOW2_HDR_AUTOCLEAR 88

/* The decoded header (host byte order). */
struct qcow2_header {
    uint32_t magic;
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
};

/* Kinds of L2 entries. */
enum qcow2_cluster_type {
    QCOW2_CLUSTER_UNALLOCATED,
    QCOW2_CLUSTER_ZERO_PLAIN, /* zero flag, no offset */
    QCOW2_CLUSTER_ZERO_ALLOC, /* zero flag with a preallocated offset */
    QCOW2_CLUSTER_NORMAL,
    QCOW2_CLUSTER_COMPRESSED,
};

struct qcow2_l2_slot {
    uint64_t offset; /* host offset of the table, 0 when the slot is free */
    uint64_t *table; /* entries in host byte order */
    uint64_t lru;
    bool dirty;
};

struct qcow2_state {
    struct qcow2_header h;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint64_t l2_entries; /* per L2 table */
    uint32_t l2_bits;
    uint32_t refcount_bits;
    uint32_t rb_bits;   /* log2(refcounts per refblock) */
    uint64_t rb_entries; /* refcounts per refblock */
    uint64_t file_size;  /* length of the file as we know it */
    bool short_file;     /* data written into fresh clusters left their
                          * zero tail unwritten: the file may be shorter
                          * than file_size until the next flush */

    uint64_t *l1;        /* host byte order; l1_size entries */
    uint32_t l1_size;
    uint64_t l1_offset;
    bool l1_dirty;

    /* L2 cache: bounded, least recently used slot is evicted */
    struct qcow2_l2_slot *l2_cache;
    unsigned l2_cache_slots;
    uint64_t lru_clock;

    /* refcount table and every refblock loaded so far (writable opens) */
    uint64_t *rt;        /* host byte order */
    uint64_t rt_size;    /* entries */
    uint64_t rt_offset;
    bool rt_dirty;
    bool rt_moved;       /* header must point at a new table */
    unsigned char **rb;  /* rt_size pointers, NULL = not loaded */
    bool *rb_dirty;
    bool refcounts_loaded;
    uint64_t free_cluster_index;
    uint64_t free_byte_offset; /* where the next compressed cluster goes */

    char backing_name[QCOW2_MAX_BACKING_NAME + 1];
    char backing_format[32];
    bool dirty_marked; /* we set the dirty bit (lazy refcounts) */
    bool write_begun;  /* qcow2_begin_write() ran: autoclear bits cleared */
    bool has_bitmaps;  /* the header has a bitmaps extension: */
    uint32_t bm_count;      /* its number of bitmaps, */
    uint64_t bm_dir_size;   /* and where their directory is */
    uint64_t bm_dir_offset;
    bool corrupt;      /* an inconsistency was met; writes refused */
    /* may data clusters be holes in the file (metadata preallocation)?
     * decided on the first block status; see qcow2_status() */
    bool sparse_known, sparse_file;

    /* where the L2 tables and refcount blocks are (qcow2-overlap.c):
     * sorted cluster numbers, rebuilt when meta_gen moves on; bump
     * meta_gen whenever an L1 or refcount table entry changes */
    uint64_t meta_gen, meta_built_gen;
    bool meta_built;
    bool tables_checked; /* L1 and refcount table found inside the file */
    uint64_t *meta_l2, *meta_rb;
    uint64_t meta_l2_n, meta_rb_n;
};

static inline struct qcow2_state *qcow2_state(struct df_image *img)
{
    return img->state;
}

static inline uint64_t qcow2_offset_into_cluster(const struct qcow2_state *s,
                                                 uint64_t off)
{
    return off & (s->cluster_size - 1);
}

static inline uint64_t qcow2_l1_index(const struct qcow2_state *s,
                                      uint64_t off)
{
    return off >> (s->cluster_bits + s->l2_bits);
}

static inline uint64_t qcow2_l2_index(const struct qcow2_state *s,
                                      uint64_t off)
{
    return (off >> s->cluster_bits) & (s->l2_entries - 1);
}

/* Number of L1 entries needed to map @size bytes. */
static inline uint64_t qcow2_l1_entries_for(uint64_t size,
                                            uint32_t cluster_bits)
{
    uint32_t shift = cluster_bits + (cluster_bits - 3);
    return (size + (1ULL << shift) - 1) >> shift;
}

enum qcow2_cluster_type qcow2_entry_type(const struct qcow2_state *s,
                                         uint64_t entry);
/* Host offset and byte length of the compressed data entry @e describes. */
void qcow2_compressed_span(const struct qcow2_state *s, uint64_t e,
                           uint64_t *off, uint64_t *len);

/* qcow2-overlap.c: what a write may not touch (QCOW2_META_* to skip:
 * the kind of structure being written) */
enum {
    QCOW2_META_HEADER = 1 << 0,
    QCOW2_META_L1 = 1 << 1,
    QCOW2_META_RT = 1 << 2,
    QCOW2_META_RB = 1 << 3,
    QCOW2_META_L2 = 1 << 4,
};
int qcow2_overlap_check(struct df_image *img, unsigned skip, uint64_t off,
                        uint64_t len, struct df_error *err);
void qcow2_overlap_free(struct qcow2_state *s);
/* Before the first change to an image: are its L1 and refcount tables
 * inside the file? */
int qcow2_tables_in_file(struct df_image *img, struct df_error *err);

/* qcow2.c */
int qcow2_header_decode(const unsigned char *buf, size_t len,
                        struct qcow2_header *h);
size_t qcow2_header_encode(const struct qcow2_header *h, unsigned char *buf);
int qcow2_validate_header(const struct qcow2_header *h, uint64_t file_size,
                          const char *path, struct df_error *err);
/* Every change to the image goes through here first (lock held). */
int qcow2_begin_write(struct df_image *img, struct df_error *err);
int qcow2_write_header_field64(struct df_image *img, unsigned off,
                               uint64_t v, struct df_error *err);
int qcow2_write_header_field32(struct df_image *img, unsigned off,
                               uint32_t v, struct df_error *err);
/* Read or write @n big-endian 64-bit table entries at @off. */
int qcow2_read_table(struct df_image *img, uint64_t off, uint64_t *t,
                     uint64_t n, struct df_error *err);
int qcow2_write_table(struct df_image *img, uint64_t off, const uint64_t *t,
                      uint64_t n, struct df_error *err);

/* qcow2-cluster.c */
int qcow2_cache_init(struct qcow2_state *s);
void qcow2_cache_free(struct qcow2_state *s);
int qcow2_read(struct df_image *img, void *buf, size_t len, uint64_t off,
               struct df_error *err);
int qcow2_write(struct df_image *img, const void *buf, size_t len,
                uint64_t off, struct df_error *err);
int qcow2_allocate(struct df_image *img, uint64_t off, uint64_t len,
                   struct df_error *err);
int qcow2_zero(struct df_image *img, uint64_t off, uint64_t len,
               unsigned flags, struct df_error *err);
int qcow2_status(struct df_image *img, uint64_t off, uint64_t len,
                 struct df_extent *ext, struct df_error *err);
int qcow2_flush_tables(struct df_image *img, struct df_error *err);
int qcow2_grow_l1(struct df_image *img, uint64_t min_size,
                  struct df_error *err);
int qcow2_preallocate(struct df_image *img, enum df_prealloc mode,
                      uint64_t first, struct df_error *err);
int qcow2_resize(struct df_image *img, uint64_t size, enum df_prealloc mode,
                 struct df_error *err);
int qcow2_make_empty(struct df_image *img, struct df_error *err);
int qcow2_set_backing(struct df_image *img, const char *name,
                      enum df_format fmt, struct df_error *err);

/* qcow2-refcount.c */
int qcow2_refcounts_load(struct df_image *img, struct df_error *err);
void qcow2_refcounts_free(struct qcow2_state *s);
int qcow2_get_refcount(struct df_image *img, uint64_t cluster,
                       uint64_t *rc, struct df_error *err);
int64_t qcow2_alloc_clusters(struct df_image *img, uint64_t n,
                             struct df_error *err);
int qcow2_alloc_clusters_at(struct df_image *img, uint64_t offset,
                            uint64_t n, struct df_error *err);
int qcow2_free_clusters(struct df_image *img, uint64_t offset, uint64_t n,
                        struct df_error *err);
int64_t qcow2_refcount_area(struct df_image *img, uint64_t start_offset,
                            uint64_t additional_clusters, bool exact_size,
                            uint64_t new_rb_index, uint64_t new_rb_offset,
                            struct df_error *err);
uint64_t qcow2_refcount_metadata_clusters(uint64_t clusters,
                                          uint64_t cluster_size,
                                          uint32_t refcount_order,
                                          bool generous, uint64_t *blocks);
int qcow2_flush_refcounts(struct df_image *img, struct df_error *err);
int64_t qcow2_alloc_bytes(struct df_image *img, uint64_t size,
                          struct df_error *err);
int qcow2_set_refcount(struct df_image *img, uint64_t cluster, uint64_t v,
                       struct df_error *err);
int qcow2_rebuild_refcounts(struct df_image *img, const uint16_t *refs,
                            uint64_t nb, struct df_error *err);
uint64_t qcow2_rb_get(const unsigned char *rb, uint64_t idx,
                      uint32_t refcount_bits);
void qcow2_rb_set(unsigned char *rb, uint64_t idx, uint32_t refcount_bits,
                  uint64_t v);
int qcow2_drop_unused_refblocks(struct df_image *img, struct df_error *err);
int qcow2_last_used_cluster(struct df_image *img, int64_t *last,
                            struct df_error *err);

/* qcow2-check.c */
int qcow2_check(struct df_image *img, enum df_repair repair,
                struct df_check_result *res, df_message_fn msg, void *opaque,
                struct df_error *err);
/* Forget the persistent bitmaps (lock held): @unlink takes them out of
 * the header, then the refcounts of their clusters drop. */
int qcow2_forget_bitmaps(struct df_image *img,
                         int (*unlink)(struct df_image *, struct df_error *),
                         struct df_error *err);
/* The same with img->lock held. */
int qcow2_check_locked(struct df_image *img, enum df_repair repair,
                       struct df_check_result *res, df_message_fn msg,
                       void *opaque, struct df_error *err);

/* qcow2-compress.c: inflate (type 0) or zstd (type 1) one cluster with the
 * calling thread's context; qcow2_decompress_buffer() is that thread's
 * buffer for the compressed bytes (at least @len, valid until its next
 * call on this thread), or NULL when out of memory */
int qcow2_decompress(int type, const void *src, size_t slen, void *dst,
                     size_t dlen);
unsigned char *qcow2_decompress_buffer(size_t len);
#endif
