/* SPDX-License-Identifier: MIT */
/*
 * qcow2.c - qcow2 header parsing and validation, header extensions, open,
 * create, info, and the driver table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2.h"

int qcow2_header_decode(const unsigned char *b, size_t len,
                        struct qcow2_header *h)
{
    memset(h, 0, sizeof(*h));
    if (len < QCOW2_V2_HEADER_LEN) {
        return -1;
    }
    h->magic = df_be32(b + 0);
    h->version = df_be32(b + 4);
    h->backing_file_offset = df_be64(b + 8);
    h->backing_file_size = df_be32(b + 16);
    h->cluster_bits = df_be32(b + 20);
    h->size = df_be64(b + 24);
    h->crypt_method = df_be32(b + 32);
    h->l1_size = df_be32(b + 36);
    h->l1_table_offset = df_be64(b + 40);
    h->refcount_table_offset = df_be64(b + 48);
    h->refcount_table_clusters = df_be32(b + 56);
    h->nb_snapshots = df_be32(b + 60);
    h->snapshots_offset = df_be64(b + 64);
    if (h->version < 3) {
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LEN;
        return 0;
    }
    if (len < 104) {
        return -1;
    }
    h->incompatible_features = df_be64(b + 72);
    h->compatible_features = df_be64(b + 80);
    h->autoclear_features = df_be64(b + 88);
    h->refcount_order = df_be32(b + 96);
    h->header_length = df_be32(b + 100);
    if (h->header_length > 104 && len > 104) {
        h->compression_type = b[104];
    }
    return 0;
}

size_t qcow2_header_encode(const struct qcow2_header *h, unsigned char *b)
{
    size_t n = h->version >= 3 ? QCOW2_V3_HEADER_LEN : QCOW2_V2_HEADER_LEN;

    memset(b, 0, n);
    df_put_be32(b + 0, h->magic);
    df_put_be32(b + 4, h->version);
    df_put_be64(b + 8, h->backing_file_offset);
    df_put_be32(b + 16, h->backing_file_size);
    df_put_be32(b + 20, h->cluster_bits);
    df_put_be64(b + 24, h->size);
    df_put_be32(b + 32, h->crypt_method);
    df_put_be32(b + 36, h->l1_size);
    df_put_be64(b + 40, h->l1_table_offset);
    df_put_be64(b + 48, h->refcount_table_offset);
    df_put_be32(b + 56, h->refcount_table_clusters);
    df_put_be32(b + 60, h->nb_snapshots);
    df_put_be64(b + 64, h->snapshots_offset);
    if (h->version >= 3) {
        df_put_be64(b + 72, h->incompatible_features);
        df_put_be64(b + 80, h->compatible_features);
        df_put_be64(b + 88, h->autoclear_features);
        df_put_be32(b + 96, h->refcount_order);
        df_put_be32(b + 100, (uint32_t)n);
        b[104] = h->compression_type;
    }
    return n;
}

/* Is [off, off + len) a valid, cluster-aligned table in the file? */
static bool table_ok(uint64_t off, uint64_t len, uint64_t cluster_size)
{
    return (off & (cluster_size - 1)) == 0 && off <= QCOW2_MAX_HOST_OFFSET &&
           len <= QCOW2_MAX_HOST_OFFSET - off;
}

int qcow2_validate_header(const struct qcow2_header *h, uint64_t file_size,
                          const char *path, struct df_error *err)
{
    uint64_t cs, unknown;

    if (h->magic != QCOW2_MAGIC) {
        return df_fail(err, DF_E_FORMAT, "'%s' is not a qcow2 image (bad "
                       "magic number)", path);
    }
    if (h->version != 2 && h->version != 3) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': unsupported qcow2 "
                       "version %u", path, h->version);
    }
    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        return df_fail(err, DF_E_CORRUPT, "'%s': unsupported cluster size "
                       "2^%u (512 B to 2 MiB allowed)", path, h->cluster_bits);
    }
    cs = 1ULL << h->cluster_bits;
    if (h->version >= 3) {
        if (h->header_length < 104) {
            return df_fail(err, DF_E_CORRUPT, "'%s': qcow2 header too short "
                           "(%u bytes)", path, h->header_length);
        }
        if (h->header_length > cs) {
            return df_fail(err, DF_E_CORRUPT, "'%s': qcow2 header length %u "
                           "exceeds the cluster size", path,
                           h->header_length);
        }
    }
    if (h->crypt_method != 0) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': encrypted images are not "
                       "supported (crypt_method %u)", path, h->crypt_method);
    }
    if (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': images with an external "
                       "data file are not supported", path);
    }
    if (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': images with extended L2 "
                       "entries are not supported", path);
    }
    unknown = h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
    if (unknown) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': unsupported qcow2 "
                       "feature(s): unknown incompatible feature bits 0x%llx",
                       path, (unsigned long long)unknown);
    }
    if (h->refcount_order > 6) {
        return df_fail(err, DF_E_CORRUPT, "'%s': refcount width 2^%u bits is "
                       "too large (at most 64 bits)", path,
                       h->refcount_order);
    }
    if (h->compression_type > 1) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': unknown compression type "
                       "%u", path, h->compression_type);
    }
    if (!!h->compression_type !=
        !!(h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
        return df_fail(err, DF_E_CORRUPT, "'%s': compression type %u and the "
                       "compression-type feature bit disagree", path,
                       h->compression_type);
    }
    if (h->size > (uint64_t)INT64_MAX) {
        return df_fail(err, DF_E_CORRUPT, "'%s': virtual size %llu is too "
                       "large", path, (unsigned long long)h->size);
    }
    if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        return df_fail(err, DF_E_CORRUPT, "'%s': Active L1 table too large "
                       "(%u entries, at most %u)", path, h->l1_size,
                       QCOW2_MAX_L1_BYTES / 8);
    }
    if (h->l1_size < qcow2_l1_entries_for(h->size, h->cluster_bits)) {
        return df_fail(err, DF_E_CORRUPT, "'%s': L1 table is too small for "
                       "the virtual size", path);
    }
    if (h->l1_size &&
        !table_ok(h->l1_table_offset, (uint64_t)h->l1_size * 8, cs)) {
        return df_fail(err, DF_E_CORRUPT, "'%s': L1 table offset 0x%llx is "
                       "invalid", path,
                       (unsigned long long)h->l1_table_offset);
    }
    if (h->refcount_table_clusters == 0) {
        return df_fail(err, DF_E_CORRUPT, "'%s': image has no refcount "
                       "table", path);
    }
    if ((uint64_t)h->refcount_table_clusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
        return df_fail(err, DF_E_CORRUPT, "'%s': refcount table too large "
                       "(%u clusters)", path, h->refcount_table_clusters);
    }
    if (!table_ok(h->refcount_table_offset,
                  (uint64_t)h->refcount_table_clusters * cs, cs)) {
        return df_fail(err, DF_E_CORRUPT, "'%s': refcount table offset 0x%llx "
                       "is invalid", path,
                       (unsigned long long)h->refcount_table_offset);
    }
    if (h->nb_snapshots > 65536) {
        return df_fail(err, DF_E_CORRUPT, "'%s': snapshot table too large "
                       "(%u snapshots)", path, h->nb_snapshots);
    }
    if (h->nb_snapshots && !table_ok(h->snapshots_offset, 0, cs)) {
        return df_fail(err, DF_E_CORRUPT, "'%s': snapshot table offset 0x%llx "
                       "is invalid", path,
                       (unsigned long long)h->snapshots_offset);
    }
    if (h->backing_file_offset) {
        if (h->backing_file_offset > cs ||
            h->backing_file_size > QCOW2_MAX_BACKING_NAME ||
            h->backing_file_size > cs - h->backing_file_offset) {
            return df_fail(err, DF_E_CORRUPT, "'%s': backing file name too "
                           "long or outside the header cluster", path);
        }
    }
    return 0;
}

/* Walk the header extensions in @c0 (cluster 0) from @start to @end. */
/*
 * Before writing: the L1 and refcount tables must lie inside the file.  An
 * image whose header puts one past the end (only a damaged or crafted one
 * does) would have its next metadata update written there, growing the
 * file to wherever the header points (terabytes) for the next check to
 * walk.  `check -r all` rebuilds the refcount table inside the file.
 */
static int tables_in_file(struct df_image *img, struct df_error *err)
{
    const struct qcow2_state *s = qcow2_state(img);
    uint64_t l1_end = s->h.l1_table_offset + (uint64_t)s->h.l1_size * 8;
    uint64_t rt_end = s->h.refcount_table_offset +
                      (uint64_t)s->h.refcount_table_clusters * s->cluster_size;

    if (s->h.l1_size && l1_end > s->file_size) {
        return df_fail(err, DF_E_CORRUPT, "'%s': the L1 table at 0x%llx "
                       "lies beyond the end of the file (%llu bytes); cannot "
                       "write the image", img->path,
                       (unsigned long long)s->h.l1_table_offset,
                       (unsigned long long)s->file_size);
    }
    if (rt_end > s->file_size) {
        return df_fail(err, DF_E_CORRUPT, "'%s': the refcount table at 0x%llx "
                       "lies beyond the end of the file (%llu bytes); repair "
                       "it with 'check -r all' before writing", img->path,
                       (unsigned long long)s->h.refcount_table_offset,
                       (unsigned long long)s->file_size);
    }
    return 0;
}

static int read_extensions(struct df_image *img, const unsigned char *c0,
                           uint64_t start, uint64_t end, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t off = start;

    while (off + 8 <= end) {
        uint32_t type = df_be32(c0 + off);
        uint32_t len = df_be32(c0 + off + 4);

        off += 8;
        if (type == QCOW2_EXT_END) {
            return 0;
        }
        if (len > end - off) {
            return df_fail(err, DF_E_CORRUPT, "'%s': header extension 0x%x "
                           "too large", img->path, type);
        }
        if (type == QCOW2_EXT_BACKING_FORMAT) {
            if (len >= sizeof(s->backing_format)) {
                return df_fail(err, DF_E_CORRUPT, "'%s': backing format name "
                               "too long", img->path);
            }
            memcpy(s->backing_format, c0 + off, len);
            s->backing_format[len] = '\0';
        }
        if (type == QCOW2_EXT_BITMAPS && len >= 24) {
            s->has_bitmaps = true;
            s->bm_count = df_be32(c0 + off);
            s->bm_dir_size = df_be64(c0 + off + 8);
            s->bm_dir_offset = df_be64(c0 + off + 16);
        }
        /* other extensions are not needed to read or write data */
        off += DF_ROUND_UP((uint64_t)len, 8);
    }
    return 0;
}

static int qcow2_load_l1(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);

    s->l1_size = s->h.l1_size;
    s->l1_offset = s->h.l1_table_offset;
    s->l1 = calloc(DF_MAX(s->l1_size, 1u), sizeof(uint64_t));
    if (!s->l1) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory for the L1 "
                       "table", img->path);
    }
    return qcow2_read_table(img, s->l1_offset, s->l1, s->l1_size, err);
}

static void qcow2_free_state(struct df_image *img)
{
    struct qcow2_state *s = qcow2_state(img);

    if (!s) {
        return;
    }
    qcow2_cache_free(s);
    qcow2_refcounts_free(s);
    qcow2_overlap_free(s);
    free(s->l1);
    free(s);
    img->state = NULL;
}

static bool qcow2_probe(const unsigned char *buf, size_t len)
{
    return len >= 4 && df_be32(buf) == QCOW2_MAGIC;
}

static int qcow2_open(struct df_image *img, unsigned flags,
                      struct df_error *err)
{
    struct qcow2_state *s;
    unsigned char head[512];
    unsigned char *c0 = NULL;
    uint64_t file_size, ext_end;
    int ret;

    s = calloc(1, sizeof(*s));
    if (!s) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    img->state = s;
    ret = df_io_file_size(img->fd, &file_size, img->path, err);
    if (ret < 0) {
        goto fail;
    }
    if (file_size < QCOW2_V2_HEADER_LEN) {
        ret = df_fail(err, DF_E_FORMAT, "'%s': file too short (%llu bytes) "
                      "for a qcow2 header", img->path,
                      (unsigned long long)file_size);
        goto fail;
    }
    ret = df_io_pread(img->fd, head, sizeof(head), 0, img->path, err);
    if (ret < 0) {
        goto fail;
    }
    if (qcow2_header_decode(head, DF_MIN(file_size, sizeof(head)), &s->h) <
        0) {
        /* a v3 header cut short */
        if (df_be32(head) == QCOW2_MAGIC) {
            ret = df_fail(err, DF_E_CORRUPT, "'%s': qcow2 header is "
                          "truncated", img->path);
        } else {
            ret = df_fail(err, DF_E_FORMAT, "'%s' is not a qcow2 image",
                          img->path);
        }
        goto fail;
    }
    ret = qcow2_validate_header(&s->h, file_size, img->path, err);
    if (ret < 0) {
        goto fail;
    }
    if (s->h.header_length > file_size) {
        ret = df_fail(err, DF_E_CORRUPT, "'%s': qcow2 header is truncated",
                      img->path);
        goto fail;
    }
    s->cluster_bits = s->h.cluster_bits;
    s->cluster_size = 1ULL << s->cluster_bits;
    s->l2_bits = s->cluster_bits - 3;
    s->l2_entries = 1ULL << s->l2_bits;
    s->refcount_bits = 1u << s->h.refcount_order;
    s->rb_bits = s->cluster_bits + 3 - s->h.refcount_order;
    s->rb_entries = 1ULL << s->rb_bits;
    s->file_size = file_size;
    img->size = s->h.size;

    /* extensions and the backing file name live in cluster 0 */
    c0 = calloc(1, s->cluster_size);
    if (!c0) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
        goto fail;
    }
    ret = df_io_pread(img->fd, c0, s->cluster_size, 0, img->path, err);
    if (ret < 0) {
        goto fail;
    }
    ext_end = s->h.backing_file_offset ? s->h.backing_file_offset
                                       : s->cluster_size;
    if (s->h.header_length < ext_end) {
        ret = read_extensions(img, c0, s->h.header_length, ext_end, err);
        if (ret < 0) {
            goto fail;
        }
    }
    if (s->h.backing_file_offset) {
        memcpy(s->backing_name, c0 + s->h.backing_file_offset,
               s->h.backing_file_size);
        s->backing_name[s->h.backing_file_size] = '\0';
        if (strlen(s->backing_name) != s->h.backing_file_size) {
            ret = df_fail(err, DF_E_CORRUPT, "'%s': backing file name holds "
                          "a NUL byte", img->path);
            goto fail;
        }
    }
    free(c0);
    c0 = NULL;
    img->backed = s->backing_name[0] != '\0';

    if ((flags & DF_OPEN_RDWR) && !(flags & DF_OPEN_CHECK)) {
        if (s->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
            ret = df_fail(err, DF_E_CORRUPT, "'%s': image is marked corrupt; "
                          "cannot open it for writing", img->path);
            goto fail;
        }
        if (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) {
            ret = df_fail(err, DF_E_UNSUPPORTED, "'%s': image was not closed "
                          "cleanly (dirty bit set); repair it with 'check -r "
                          "all' before writing", img->path);
            goto fail;
        }
        if (s->h.nb_snapshots) {
            ret = df_fail(err, DF_E_UNSUPPORTED, "'%s': writing images with "
                          "internal snapshots is not supported", img->path);
            goto fail;
        }
        ret = tables_in_file(img, err);
        if (ret < 0) {
            goto fail;
        }
    }
    ret = qcow2_load_l1(img, err);
    if (ret == 0 && qcow2_cache_init(s) < 0) {
        ret = df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    if (ret < 0) {
        goto fail;
    }
    return 0;
fail:
    free(c0);
    qcow2_free_state(img);
    return ret;
}

static void qcow2_close(struct df_image *img)
{
    qcow2_free_state(img);
}

/*
 * The one place every change to an image passes before it touches the
 * file: data and zero writes, compressed writes, resize, rebase (also -u),
 * commit into a base and out of an overlay, and repair.  The first time,
 * it clears the autoclear feature bits.  The spec asks a writer that does
 * not know an autoclear bit to clear it before writing, and we implement
 * none: bit 0 says the persistent dirty bitmaps are consistent with the
 * data, which stops being true as soon as we write without updating them;
 * bit 1 belongs to external data files, which are refused at open.  With
 * the bit clear QEMU no longer trusts the bitmaps (it warns and drops
 * them; their clusters then show as leaks that 'check -r leaks' frees).
 */
static int unlink_bitmaps(struct df_image *img, struct df_error *err);

static int clear_autoclear(struct df_image *img, struct df_error *err)
{
    int ret = qcow2_write_header_field64(img, QCOW2_HDR_AUTOCLEAR, 0, err);

    if (ret == 0) {
        qcow2_state(img)->h.autoclear_features = 0;
    }
    return ret;
}

int qcow2_begin_write(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    int ret;

    if (s->write_begun) {
        return 0;
    }
    if (!img->writable) {
        return df_fail(err, DF_E_INVAL, "'%s': image is open read-only",
                       img->path);
    }
    if (s->h.version < 3 || !s->h.autoclear_features) {
        s->write_begun = true;
        return 0;
    }
    /* set first: dropping the bitmaps writes too */
    s->write_begun = true;
    if ((s->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) &&
        s->has_bitmaps) {
        /* the bitmaps go whole, and their clusters are freed */
        ret = qcow2_forget_bitmaps(img, unlink_bitmaps, err);
        if (ret < 0) {
            df_error_prefix(err, "'%s': dropping its persistent bitmaps: ",
                            img->path);
        }
    } else {
        ret = clear_autoclear(img, err);
    }
    if (ret < 0) {
        s->write_begun = false;
    }
    return ret;
}

int qcow2_write_header_field64(struct df_image *img, unsigned off, uint64_t v,
                               struct df_error *err)
{
    unsigned char b[8];
    df_put_be64(b, v);
    return df_io_pwrite(img->fd, b, 8, off, img->path, err);
}

int qcow2_write_header_field32(struct df_image *img, unsigned off, uint32_t v,
                               struct df_error *err)
{
    unsigned char b[4];
    df_put_be32(b, v);
    return df_io_pwrite(img->fd, b, 4, off, img->path, err);
}

int qcow2_read_table(struct df_image *img, uint64_t off, uint64_t *t,
                     uint64_t n, struct df_error *err)
{
    unsigned char *raw = malloc(DF_MAX(n, 1) * 8);
    int ret;

    if (!raw) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    ret = df_io_pread(img->fd, raw, n * 8, off, img->path, err);
    for (uint64_t i = 0; ret == 0 && i < n; i++) {
        t[i] = df_be64(raw + 8 * i);
    }
    free(raw);
    return ret;
}

int qcow2_write_table(struct df_image *img, uint64_t off, const uint64_t *t,
                      uint64_t n, struct df_error *err)
{
    unsigned char *raw = malloc(DF_MAX(n, 1) * 8);
    int ret;

    if (!raw) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    for (uint64_t i = 0; i < n; i++) {
        df_put_be64(raw + 8 * i, t[i]);
    }
    ret = df_io_pwrite(img->fd, raw, n * 8, off, img->path, err);
    free(raw);
    return ret;
}

/*
 * Feature-name table entries, in the order qemu-img 7.2 writes them.
 * qemu-img leaves the table out of images with clusters under 8 KiB
 * (observed), and so do we, so that both write the same bytes.
 */
#define QCOW2_FEATURE_TABLE_MIN_CLUSTER 8192
static const struct {
    uint8_t type, bit;
    const char *name;
} feature_names[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

static size_t put_ext(unsigned char *p, uint32_t type, const void *data,
                      uint32_t len)
{
    df_put_be32(p, type);
    df_put_be32(p + 4, len);
    memcpy(p + 8, data, len);
    return 8 + DF_ROUND_UP((size_t)len, 8);
}

static int check_create(const char *path, const struct df_create_opts *o,
                        struct df_error *err)
{
    uint32_t cs = o->cluster_size;

    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
        return df_fail(err, DF_E_INVAL, "'%s': cluster size must be a power "
                       "of two between 512 and 2048k", path);
    }
    if (o->compat != 2 && o->compat != 3) {
        return df_fail(err, DF_E_INVAL, "'%s': compat must be 0.10 or 1.1",
                       path);
    }
    if (o->refcount_bits < 1 || o->refcount_bits > 64 ||
        (o->refcount_bits & (o->refcount_bits - 1))) {
        return df_fail(err, DF_E_INVAL, "'%s': refcount width must be a "
                       "power of two and may not exceed 64 bits", path);
    }
    if (o->compat == 2) {
        if (o->refcount_bits != 16) {
            return df_fail(err, DF_E_INVAL, "'%s': refcount widths other than "
                           "16 bits require compat 1.1", path);
        }
        if (o->lazy_refcounts) {
            return df_fail(err, DF_E_INVAL, "'%s': lazy refcounts require "
                           "compat 1.1", path);
        }
        if (o->compression != DF_COMPRESS_ZLIB) {
            return df_fail(err, DF_E_INVAL, "'%s': compression types other "
                           "than zlib require compat 1.1", path);
        }
    }
    if ((unsigned)o->compression > DF_COMPRESS_ZSTD) {
        return df_fail(err, DF_E_INVAL, "'%s': unknown compression type",
                       path);
    }
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
        return df_fail(err, DF_E_INVAL, "'%s': backing file name longer than "
                       "%d bytes", path, QCOW2_MAX_BACKING_NAME);
    }
    {
        unsigned bits = 0;
        while ((1u << bits) < cs) {
            bits++;
        }
        if (qcow2_l1_entries_for(o->size, bits) * 8 > QCOW2_MAX_L1_BYTES) {
            return df_fail(err, DF_E_INVAL, "'%s': the image size is too large "
                           "for cluster size %u (try a larger cluster size)",
                           path, cs);
        }
    }
    return 0;
}

/*
 * Write the empty image's first three clusters: the header (with its
 * extensions and backing name), a one-cluster refcount table and the
 * refcount block that covers them.  The L1 table and the virtual size are
 * added afterwards by growing the image, as for a resize.
 */
static int write_skeleton(int fd, const char *path,
                          const struct df_create_opts *o, unsigned cbits,
                          struct df_error *err)
{
    uint64_t cs = 1ULL << cbits;
    struct qcow2_header h = { 0 };
    unsigned char *buf;
    size_t off;
    unsigned order = 0;
    int ret;

    while ((1 << order) < o->refcount_bits) {
        order++;
    }
    buf = calloc(3, cs);
    if (!buf) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", path);
    }
    h.magic = QCOW2_MAGIC;
    h.version = (uint32_t)o->compat;
    h.cluster_bits = cbits;
    h.refcount_table_offset = cs;
    h.refcount_table_clusters = 1;
    h.refcount_order = order;
    if (o->compat >= 3) {
        if (o->lazy_refcounts) {
            h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
        }
        if (o->compression == DF_COMPRESS_ZSTD) {
            h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
            h.compression_type = 1;
        }
    }
    off = qcow2_header_encode(&h, buf);
    if (o->backing_file && o->backing_format != DF_FMT_AUTO) {
        const char *f = df_format_name(o->backing_format);
        off += put_ext(buf + off, QCOW2_EXT_BACKING_FORMAT, f,
                       (uint32_t)strlen(f));
    }
    if (o->compat >= 3 && cs >= QCOW2_FEATURE_TABLE_MIN_CLUSTER) {
        size_t n = sizeof(feature_names) / sizeof(feature_names[0]);
        unsigned char *t = buf + off + 8;
        df_put_be32(buf + off, QCOW2_EXT_FEATURE_TABLE);
        df_put_be32(buf + off + 4, (uint32_t)(48 * n));
        for (size_t i = 0; i < n; i++) {
            t[48 * i] = feature_names[i].type;
            t[48 * i + 1] = feature_names[i].bit;
            memcpy(t + 48 * i + 2, feature_names[i].name,
                   strlen(feature_names[i].name));
        }
        off += 8 + 48 * n;
    }
    off += 8; /* end-of-extensions marker: type 0, length 0 */
    if (o->backing_file) {
        size_t n = strlen(o->backing_file);
        if (off + n > cs) {
            free(buf);
            return df_fail(err, DF_E_INVAL, "'%s': backing file name does not "
                           "fit in the header cluster", path);
        }
        memcpy(buf + off, o->backing_file, n);
        df_put_be64(buf + 8, off);
        df_put_be32(buf + 16, (uint32_t)n);
    }
    /* refcount table entry 0 -> the refcount block in cluster 2 */
    df_put_be64(buf + cs, 2 * cs);
    /* the refcount block: clusters 0, 1, 2 are in use */
    for (uint64_t i = 0; i < 3; i++) {
        qcow2_rb_set(buf + 2 * cs, i, (uint32_t)o->refcount_bits, 1);
    }
    ret = df_io_pwrite(fd, buf, 3 * cs, 0, path, err);
    free(buf);
    return ret;
}

static int qcow2_create(int fd, const char *path,
                        const struct df_create_opts *o, struct df_error *err)
{
    struct df_image img = { .fd = fd, .path = (char *)path, .writable = true };
    unsigned cbits = 0;
    int ret;

    ret = check_create(path, o, err);
    if (ret < 0) {
        return ret;
    }
    while ((1u << cbits) < o->cluster_size) {
        cbits++;
    }
    ret = write_skeleton(fd, path, o, cbits, err);
    if (ret < 0) {
        return ret;
    }
    /* reopen the skeleton and grow it to its size like a resize would */
    pthread_mutex_init(&img.lock, NULL);
    ret = qcow2_open(&img, DF_OPEN_RDWR, err);
    if (ret < 0) {
        pthread_mutex_destroy(&img.lock);
        return ret;
    }
    ret = qcow2_grow_l1(&img, qcow2_l1_entries_for(o->size, cbits), err);
    if (ret == 0) {
        ret = qcow2_write_header_field64(&img, 24, o->size, err);
        img.size = o->size;
        qcow2_state(&img)->h.size = o->size;
    }
    if (ret == 0 && o->prealloc != DF_PREALLOC_OFF) {
        ret = qcow2_preallocate(&img, o->prealloc, 0, err);
    }
    if (ret == 0) {
        ret = qcow2_flush_tables(&img, err);
    }
    qcow2_close(&img);
    pthread_mutex_destroy(&img.lock);
    return ret;
}

static int qcow2_info(struct df_image *img, struct df_info *info,
                      struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);

    info->cluster_size = (uint32_t)s->cluster_size;
    info->version = (int)s->h.version;
    info->lazy_refcounts =
        s->h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS;
    info->refcount_bits = (int)s->refcount_bits;
    info->compression = s->h.compression_type == 1 ? DF_COMPRESS_ZSTD
                                                   : DF_COMPRESS_ZLIB;
    info->dirty = s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY;
    info->corrupt = s->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT;
    info->extended_l2 = false;
    memcpy(info->backing_file, s->backing_name, sizeof(s->backing_name));
    memcpy(info->backing_format, s->backing_format,
           sizeof(s->backing_format));
    return 0;
}

static int qcow2_flush(struct df_image *img, struct df_error *err)
{
    int ret;

    pthread_mutex_lock(&img->lock);
    ret = qcow2_flush_tables(img, err);
    pthread_mutex_unlock(&img->lock);
    return ret;
}

const struct df_driver df_qcow2_driver = {
    .name = "qcow2",
    .format = DF_FMT_QCOW2,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .create = qcow2_create,
    .pread = qcow2_read,
    .pwrite = qcow2_write,
    .write_zeroes = qcow2_zero,
    .flush = qcow2_flush,
    .block_status = qcow2_status,
    .allocate = qcow2_allocate,
    .info = qcow2_info,
};

/*
 * Rewrite the header cluster with the backing file name @name (NULL or ""
 * for none) and format @fmt (NULL: none recorded), leaving out the header
 * extension @drop (0: none).  The header fields and every other extension
 * are kept as they are.  Called with the lock held.
 */
static int rewrite_header(struct df_image *img, const char *name,
                          const char *fmt, uint32_t drop,
                          struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size, hl = s->h.header_length;
    uint64_t end = s->h.backing_file_offset ? s->h.backing_file_offset : cs;
    size_t nlen = name ? strlen(name) : 0;
    unsigned char *old = calloc(1, cs), *buf = calloc(1, cs);
    uint64_t in, out, tail;
    int ret;

    if (!old || !buf) {
        free(old);
        free(buf);
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", img->path);
    }
    if (nlen > QCOW2_MAX_BACKING_NAME) {
        ret = df_fail(err, DF_E_INVAL, "'%s': backing file name longer than "
                      "%d bytes", img->path, QCOW2_MAX_BACKING_NAME);
        goto out;
    }
    ret = df_io_pread(img->fd, old, cs, 0, img->path, err);
    if (ret < 0) {
        goto out;
    }
    memcpy(buf, old, hl);
    out = hl;
    if (nlen && fmt) {
        out += put_ext(buf + out, QCOW2_EXT_BACKING_FORMAT, fmt,
                       (uint32_t)strlen(fmt));
    }
    for (in = hl; in + 8 <= end;) {
        uint32_t type = df_be32(old + in), len = df_be32(old + in + 4);
        uint64_t step = 8 + DF_ROUND_UP((uint64_t)len, 8);
        if (type == QCOW2_EXT_END || len > end - in - 8) {
            break;
        }
        if (type != QCOW2_EXT_BACKING_FORMAT && type != drop) {
            if (out + step + 8 + nlen > cs) {
                ret = df_fail(err, DF_E_NOSPC, "'%s': the header extensions "
                              "do not fit in the header cluster", img->path);
                goto out;
            }
            memcpy(buf + out, old + in, step);
            out += step;
        }
        in += step;
    }
    out += 8; /* end of extensions */
    if (out + nlen > cs) {
        ret = df_fail(err, DF_E_NOSPC, "'%s': backing file name does not fit "
                      "in the header cluster", img->path);
        goto out;
    }
    memcpy(buf + out, name ? name : "", nlen);
    df_put_be64(buf + 8, nlen ? out : 0);
    df_put_be32(buf + 16, (uint32_t)nlen);
    tail = DF_MAX(out + nlen, hl + 8);
    ret = df_io_pwrite(img->fd, buf, tail, 0, img->path, err);
    if (ret == 0) {
        /* clear what the old, longer header may have left behind */
        ret = df_io_pwrite(img->fd, buf + tail, cs - tail, tail, img->path,
                           err);
    }
    if (ret == 0) {
        img->backed = nlen != 0;
        s->h.backing_file_offset = nlen ? out : 0;
        s->h.backing_file_size = (uint32_t)nlen;
        memmove(s->backing_name, name ? name : "", nlen);
        s->backing_name[nlen] = '\0';
        memmove(s->backing_format, nlen && fmt ? fmt : "",
                nlen && fmt ? strlen(fmt) + 1 : 1);
    }
out:
    free(old);
    free(buf);
    return ret;
}

/* The header part of dropping the bitmaps: the bit, then the extension. */
static int unlink_bitmaps(struct df_image *img, struct df_error *err)
{
    struct qcow2_state *s = qcow2_state(img);
    char fmt[sizeof(s->backing_format)];
    int ret = clear_autoclear(img, err);

    memcpy(fmt, s->backing_format, sizeof(fmt));
    if (ret == 0) {
        ret = rewrite_header(img, s->backing_name, fmt[0] ? fmt : NULL,
                             QCOW2_EXT_BITMAPS, err);
    }
    if (ret == 0) {
        s->has_bitmaps = false;
    }
    return ret;
}

int qcow2_set_backing(struct df_image *img, const char *name,
                      enum df_format fmt, struct df_error *err)
{
    int ret;

    pthread_mutex_lock(&img->lock);
    ret = qcow2_begin_write(img, err);
    if (ret == 0) {
        ret = rewrite_header(img, name && *name ? name : NULL,
                             fmt != DF_FMT_AUTO ? df_format_name(fmt) : NULL,
                             0, err);
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}
