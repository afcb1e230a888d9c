/* SPDX-License-Identifier: MIT */
/*
 * gpt.c - GUID partition tables read and written through the image API
 * (diskforge/gpt.h).  Layout facts from the UEFI specification, chapter 5:
 * header fields at fixed offsets, little-endian; GUIDs on disk with their
 * first three fields little-endian; CRC-32 as zlib computes it, over the
 * header (its CRC field zero) and over the whole entry array.
 */
#include "diskforge/gpt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>

#define HDR_SIZE 92u
#define ARRAY_BYTES (DF_GPT_ENTRIES * DF_GPT_ENTRY_SIZE)
#define ALIGN_LBAS (DF_GPT_ALIGN / DF_GPT_SECTOR)
/* An entry array larger than this is taken as hostile (UEFI sets no
 * limit; every tool writes 16 KiB). */
#define MAX_ARRAY_BYTES (4u << 20)
/* first usable LBA of our layout: MBR, header, 32 array sectors */
#define OUR_FIRST_USABLE (2 + DF_GPT_ARRAY_SECTORS)

/* ---- little-endian fields ---- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t crc(const uint8_t *p, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);

    while (n) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)c;
}

/* ---- GUIDs ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

int df_guid_parse(const char *s, struct df_guid *out)
{
    struct df_guid g;
    size_t bi = 0;

    if (!s || strlen(s) != 36) {
        return -DF_E_INVAL;
    }
    for (size_t i = 0; i < 36;) {
        int hi, lo;
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return -DF_E_INVAL;
            }
            i++;
            continue;
        }
        hi = hexval(s[i]);
        lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) {
            return -DF_E_INVAL;
        }
        g.b[bi++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    *out = g;
    return 0;
}

void df_guid_format(const struct df_guid *g, bool upper, char buf[37])
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            buf[o++] = '-';
        }
        buf[o++] = digits[g->b[i] >> 4];
        buf[o++] = digits[g->b[i] & 15];
    }
    buf[o] = '\0';
}

bool df_guid_is_zero(const struct df_guid *g)
{
    for (size_t i = 0; i < 16; i++) {
        if (g->b[i]) {
            return false;
        }
    }
    return true;
}

/* Text order <-> on-disk order: the first three fields are little-endian. */
static void guid_to_disk(const struct df_guid *g, uint8_t *p)
{
    static const int order[16] = { 3, 2, 1, 0, 5, 4, 7, 6,
                                   8, 9, 10, 11, 12, 13, 14, 15 };

    for (int i = 0; i < 16; i++) {
        p[i] = g->b[order[i]];
    }
}

static void guid_from_disk(const uint8_t *p, struct df_guid *g)
{
    static const int order[16] = { 3, 2, 1, 0, 5, 4, 7, 6,
                                   8, 9, 10, 11, 12, 13, 14, 15 };

    for (int i = 0; i < 16; i++) {
        g->b[order[i]] = p[i];
    }
}

/* diskforge's namespace for name-based GUIDs (a random GUID, fixed once). */
static const struct df_guid df_namespace = { {
    0xe7, 0x0c, 0x35, 0x39, 0x47, 0x3b, 0x42, 0x8a,
    0xbc, 0x08, 0x94, 0x72, 0x3b, 0xff, 0xde, 0x6f,
} };

void df_guid_derive(const char *const *parts, size_t n, struct df_guid *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    memset(md, 0, sizeof(md));
    if (ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL)) {
        EVP_DigestUpdate(ctx, df_namespace.b, sizeof(df_namespace.b));
        for (size_t i = 0; i < n; i++) {
            const char *s = parts[i] ? parts[i] : "";
            EVP_DigestUpdate(ctx, s, strlen(s) + 1); /* with its NUL */
        }
        EVP_DigestFinal_ex(ctx, md, &mdlen);
    }
    EVP_MD_CTX_free(ctx);
    memcpy(out->b, md, 16);
    out->b[6] = (uint8_t)((out->b[6] & 0x0f) | 0x50); /* version 5 */
    out->b[8] = (uint8_t)((out->b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

/* ---- types and attributes ---- */

static const struct {
    const char *alias;
    const char *guid;
} types[] = {
    { "esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" },
    { "bios-boot", "21686148-6449-6E6F-744E-656564454649" },
    { "linux", "0FC63DAF-8483-4772-8E79-3D69D8477DE4" },
    { "linux-root-x86-64", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" },
    { "linux-root-arm64", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" },
    { "swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" },
    { "linux-home", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" },
};
#define N_TYPES (sizeof(types) / sizeof(types[0]))

static const char *const type_aliases[N_TYPES + 1] = {
    "esp", "bios-boot", "linux", "linux-root-x86-64", "linux-root-arm64",
    "swap", "linux-home", NULL,
};

const char *const *df_gpt_type_aliases(void)
{
    return type_aliases;
}

int df_gpt_type_parse(const char *s, struct df_guid *out)
{
    for (size_t i = 0; i < N_TYPES; i++) {
        if (!strcmp(s, types[i].alias)) {
            return df_guid_parse(types[i].guid, out);
        }
    }
    if (df_guid_parse(s, out) < 0 || df_guid_is_zero(out)) {
        return -DF_E_INVAL; /* the zero GUID marks an unused entry */
    }
    return 0;
}

const char *df_gpt_type_name(const struct df_guid *type)
{
    for (size_t i = 0; i < N_TYPES; i++) {
        struct df_guid g;
        if (df_guid_parse(types[i].guid, &g) == 0 &&
            !memcmp(g.b, type->b, 16)) {
            return types[i].alias;
        }
    }
    return NULL;
}

int df_gpt_attr_parse(const char *s, unsigned *bit)
{
    char *end;
    unsigned long v;

    if (!strcmp(s, "legacy_bios_bootable")) {
        *bit = DF_GPT_ATTR_LEGACY_BIOS_BOOTABLE;
    } else if (!strcmp(s, "read_only")) {
        *bit = DF_GPT_ATTR_READ_ONLY;
    } else if (!strcmp(s, "no_automount")) {
        *bit = DF_GPT_ATTR_NO_AUTOMOUNT;
    } else {
        if (*s < '0' || *s > '9') {
            return -DF_E_INVAL;
        }
        v = strtoul(s, &end, 10);
        if (*end || v > 63) {
            return -DF_E_INVAL;
        }
        *bit = (unsigned)v;
    }
    return 0;
}

/* ---- names: UTF-8 <-> UTF-16LE ---- */

/* The next code point of @s (advanced), or -1 for invalid UTF-8. */
static long utf8_next(const unsigned char **s)
{
    const unsigned char *p = *s;
    long cp;
    int more;

    if (p[0] < 0x80) {
        cp = p[0];
        more = 0;
    } else if ((p[0] & 0xe0) == 0xc0) {
        cp = p[0] & 0x1f;
        more = 1;
    } else if ((p[0] & 0xf0) == 0xe0) {
        cp = p[0] & 0x0f;
        more = 2;
    } else if ((p[0] & 0xf8) == 0xf0) {
        cp = p[0] & 0x07;
        more = 3;
    } else {
        return -1;
    }
    for (int i = 1; i <= more; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return -1;
        }
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((more == 1 && cp < 0x80) || (more == 2 && cp < 0x800) ||
        (more == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return -1; /* overlong, out of range, or a surrogate */
    }
    *s = p + more + 1;
    return cp;
}

/* Encode @utf8 into @units (at most DF_GPT_NAME_UNITS); the count, or -1. */
static int utf8_to_utf16(const char *utf8, uint16_t *units)
{
    const unsigned char *s = (const unsigned char *)utf8;
    int n = 0;

    while (*s) {
        long cp = utf8_next(&s);
        if (cp < 0) {
            return -1;
        }
        if (cp >= 0x10000) {
            if (n + 2 > (int)DF_GPT_NAME_UNITS) {
                return -2;
            }
            cp -= 0x10000;
            units[n++] = (uint16_t)(0xd800 | (cp >> 10));
            units[n++] = (uint16_t)(0xdc00 | (cp & 0x3ff));
        } else {
            if (n + 1 > (int)DF_GPT_NAME_UNITS) {
                return -2;
            }
            units[n++] = (uint16_t)cp;
        }
    }
    return n;
}

int df_gpt_name_check(const char *utf8, struct df_error *err)
{
    uint16_t units[DF_GPT_NAME_UNITS];
    int n = utf8_to_utf16(utf8, units);

    if (n == -1) {
        return df_fail(err, DF_E_INVAL, "partition name '%s' is not valid "
                       "UTF-8", utf8);
    }
    if (n < 0) {
        return df_fail(err, DF_E_INVAL, "partition name '%s' is longer "
                       "than the 36 UTF-16 code units a GPT entry holds",
                       utf8);
    }
    return 0;
}

static size_t put_utf8(char *out, long cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The name field of an entry (72 bytes) as UTF-8; bad surrogates become
 * U+FFFD. */
static void name_from_disk(const uint8_t *p, char *out, size_t cap)
{
    size_t o = 0;

    for (unsigned i = 0; i < DF_GPT_NAME_UNITS; i++) {
        long cp = p[2 * i] | p[2 * i + 1] << 8;
        if (!cp) {
            break;
        }
        if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < DF_GPT_NAME_UNITS) {
            long lo = p[2 * i + 2] | p[2 * i + 3] << 8;
            if (lo >= 0xdc00 && lo <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i++;
            } else {
                cp = 0xfffd;
            }
        } else if (cp >= 0xd800 && cp <= 0xdfff) {
            cp = 0xfffd;
        }
        if (o + 5 > cap) {
            break;
        }
        o += put_utf8(out + o, cp);
    }
    out[o] = '\0';
}

/* ---- layout ---- */

static uint64_t align_up(uint64_t lba)
{
    return (lba + ALIGN_LBAS - 1) / ALIGN_LBAS * ALIGN_LBAS;
}

static const char *pname(const char *const *names, size_t i, char *buf,
                         size_t len)
{
    if (names && names[i]) {
        snprintf(buf, len, "'%s'", names[i]);
    } else {
        snprintf(buf, len, "%zu", i + 1);
    }
    return buf;
}

/* Lay out @want on @total sectors; the last LBA of each into @last (and
 * starts into @first).  Returns the index of the first partition that does
 * not fit, or @n. */
static size_t place(const struct df_gpt_want *want, size_t n, uint64_t total,
                    uint64_t *first, uint64_t *last)
{
    uint64_t last_usable = total >= 2 * OUR_FIRST_USABLE
                               ? total - OUR_FIRST_USABLE
                               : 0;
    uint64_t next = OUR_FIRST_USABLE;

    for (size_t i = 0; i < n; i++) {
        uint64_t start = align_up(next);
        uint64_t end;
        if (want[i].rest) {
            if (start > last_usable) {
                return i;
            }
            end = last_usable;
        } else {
            end = start + want[i].size / DF_GPT_SECTOR - 1;
            if (end > last_usable || end < start) {
                return i;
            }
        }
        first[i] = start;
        last[i] = end;
        next = end + 1;
    }
    return n;
}

uint64_t df_gpt_min_disk_size(const struct df_gpt_want *want, size_t n)
{
    uint64_t next = OUR_FIRST_USABLE, end = OUR_FIRST_USABLE - 1;

    for (size_t i = 0; i < n; i++) {
        uint64_t start = align_up(next);
        end = start + (want[i].rest ? 1 : want[i].size / DF_GPT_SECTOR) - 1;
        next = end + 1;
    }
    /* the last usable LBA is the disk's sectors minus 34 */
    end = end + OUR_FIRST_USABLE;
    if (end < 2 * OUR_FIRST_USABLE) {
        end = 2 * OUR_FIRST_USABLE;
    }
    return end * DF_GPT_SECTOR;
}

int df_gpt_layout(struct df_gpt *g, uint64_t disk_size,
                  const struct df_gpt_want *want, const char *const *names,
                  size_t n, struct df_error *err)
{
    uint64_t total = disk_size / DF_GPT_SECTOR;
    uint64_t first[DF_GPT_ENTRIES], last[DF_GPT_ENTRIES];
    char nb[80];
    size_t bad;

    if (n > DF_GPT_ENTRIES) {
        return df_fail(err, DF_E_INVAL, "%zu partitions: a GPT holds at "
                       "most %u", n, DF_GPT_ENTRIES);
    }
    for (size_t i = 0; i < n; i++) {
        if (want[i].rest && i + 1 != n) {
            return df_fail(err, DF_E_INVAL, "partition %s has size 'rest' "
                           "but is not the last one",
                           pname(names, i, nb, sizeof(nb)));
        }
        if (!want[i].rest &&
            (!want[i].size || want[i].size % DF_GPT_SECTOR)) {
            return df_fail(err, DF_E_INVAL, "partition %s: size %llu is "
                           "not a positive multiple of 512 bytes",
                           pname(names, i, nb, sizeof(nb)),
                           (unsigned long long)want[i].size);
        }
    }
    if (disk_size < df_gpt_min_disk_size(NULL, 0)) {
        return df_fail(err, DF_E_NOSPC, "a disk of %llu bytes is too small "
                       "for a GPT (it needs %llu bytes)",
                       (unsigned long long)disk_size,
                       (unsigned long long)df_gpt_min_disk_size(NULL, 0));
    }
    bad = place(want, n, total, first, last);
    if (bad < n) {
        return df_fail(err, DF_E_NOSPC, "partition %s does not fit: the "
                       "partitions need a disk of at least %llu bytes, "
                       "this one has %llu",
                       pname(names, bad, nb, sizeof(nb)),
                       (unsigned long long)df_gpt_min_disk_size(want, n),
                       (unsigned long long)disk_size);
    }
    g->disk_sectors = total;
    g->first_usable = OUR_FIRST_USABLE;
    g->last_usable = total - OUR_FIRST_USABLE;
    g->n_parts = n;
    for (size_t i = 0; i < n; i++) {
        g->parts[i].first_lba = first[i];
        g->parts[i].last_lba = last[i];
        g->parts[i].index = (uint32_t)i;
    }
    return 0;
}

/* ---- encoding ---- */

/* CHS of @lba with 255 heads and 63 sectors a track; 0xFFFFFF beyond. */
static void chs(uint64_t lba, uint8_t *p)
{
    uint64_t c = lba / (255 * 63);
    unsigned h = (unsigned)(lba / 63 % 255), s = (unsigned)(lba % 63 + 1);

    if (c > 1023) {
        p[0] = p[1] = p[2] = 0xff;
        return;
    }
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(s | ((c >> 2) & 0xc0));
    p[2] = (uint8_t)c;
}

static void encode_header(const struct df_gpt *g, uint64_t my_lba,
                          uint64_t alt_lba, uint64_t array_lba,
                          uint32_t array_crc, uint8_t *h)
{
    memset(h, 0, DF_GPT_SECTOR);
    memcpy(h, "EFI PART", 8);
    put32(h + 8, 0x00010000);
    put32(h + 12, HDR_SIZE);
    put64(h + 24, my_lba);
    put64(h + 32, alt_lba);
    put64(h + 40, g->first_usable);
    put64(h + 48, g->last_usable);
    guid_to_disk(&g->disk_guid, h + 56);
    put64(h + 72, array_lba);
    put32(h + 80, DF_GPT_ENTRIES);
    put32(h + 84, DF_GPT_ENTRY_SIZE);
    put32(h + 88, array_crc);
    put32(h + 16, crc(h, HDR_SIZE));
}

int df_gpt_encode(const struct df_gpt *g, struct df_gpt_blob *out,
                  struct df_error *err)
{
    uint64_t total = g->disk_sectors;
    uint32_t array_crc;
    uint8_t *m = out->mbr;

    if (total < 2 * OUR_FIRST_USABLE || g->first_usable < OUR_FIRST_USABLE ||
        g->last_usable > total - OUR_FIRST_USABLE ||
        g->first_usable > g->last_usable || g->n_parts > DF_GPT_ENTRIES) {
        return df_fail(err, DF_E_INVAL, "the GPT layout does not fit a disk "
                       "of %llu sectors", (unsigned long long)total);
    }
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < g->n_parts; i++) {
        const struct df_gpt_part *p = &g->parts[i];
        uint16_t units[DF_GPT_NAME_UNITS];
        uint8_t *e;
        int nu;
        if (p->index >= DF_GPT_ENTRIES || p->first_lba < g->first_usable ||
            p->last_lba > g->last_usable || p->first_lba > p->last_lba) {
            return df_fail(err, DF_E_INVAL, "partition %u lies outside the "
                           "usable sectors %llu..%llu", p->index + 1,
                           (unsigned long long)g->first_usable,
                           (unsigned long long)g->last_usable);
        }
        nu = utf8_to_utf16(p->name, units);
        if (nu < 0) {
            return df_gpt_name_check(p->name, err);
        }
        e = out->array + (size_t)p->index * DF_GPT_ENTRY_SIZE;
        guid_to_disk(&p->type, e);
        guid_to_disk(&p->guid, e + 16);
        put64(e + 32, p->first_lba);
        put64(e + 40, p->last_lba);
        put64(e + 48, p->attributes);
        for (int k = 0; k < nu; k++) {
            put16(e + 56 + 2 * k, units[k]);
        }
    }
    array_crc = crc(out->array, ARRAY_BYTES);
    encode_header(g, 1, total - 1, 2, array_crc, out->primary);
    encode_header(g, total - 1, 1, total - 1 - DF_GPT_ARRAY_SECTORS,
                  array_crc, out->backup);
    /* protective MBR: one entry of type 0xEE from LBA 1 to the end */
    m[446 + 0] = 0x00;
    m[446 + 1] = 0x00;
    m[446 + 2] = 0x02;
    m[446 + 3] = 0x00;
    m[446 + 4] = 0xee;
    chs(total - 1, m + 446 + 5);
    put32(m + 446 + 8, 1);
    put32(m + 446 + 12, total - 1 > 0xffffffffu ? 0xffffffffu
                                                 : (uint32_t)(total - 1));
    m[510] = 0x55;
    m[511] = 0xaa;
    return 0;
}

/* ---- writing ---- */

struct region {
    uint64_t off;
    size_t len;
    const void *data;
};

int df_gpt_write(struct df_image *img, const struct df_gpt *g,
                 struct df_error *err)
{
    struct df_gpt_blob *blob = malloc(sizeof(*blob));
    uint64_t total = g->disk_sectors, size = df_image_size(img);
    uint8_t *saved_head = NULL, *saved_tail = NULL;
    size_t head_len = OUR_FIRST_USABLE * DF_GPT_SECTOR;
    size_t tail_len = (DF_GPT_ARRAY_SECTORS + 1) * DF_GPT_SECTOR;
    uint64_t tail_off;
    struct region regs[5];
    int ret;

    if (!blob) {
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    if (size / DF_GPT_SECTOR != total) {
        free(blob);
        return df_fail(err, DF_E_INVAL, "'%s': the GPT was laid out for "
                       "%llu sectors, the image has %llu",
                       df_image_path(img), (unsigned long long)total,
                       (unsigned long long)(size / DF_GPT_SECTOR));
    }
    ret = df_gpt_encode(g, blob, err);
    if (ret < 0) {
        free(blob);
        return ret;
    }
    tail_off = (total - 1 - DF_GPT_ARRAY_SECTORS) * DF_GPT_SECTOR;
    saved_head = malloc(head_len);
    saved_tail = malloc(tail_len);
    if (!saved_head || !saved_tail) {
        ret = df_fail(err, DF_E_NOMEM, "out of memory");
        goto out;
    }
    ret = df_image_pread(img, saved_head, head_len, 0, err);
    if (ret == 0) {
        ret = df_image_pread(img, saved_tail, tail_len, tail_off, err);
    }
    if (ret < 0) {
        goto out;
    }
    /* the backup first, the protective MBR last */
    regs[0] = (struct region){ tail_off, ARRAY_BYTES, blob->array };
    regs[1] = (struct region){ (total - 1) * DF_GPT_SECTOR, DF_GPT_SECTOR,
                               blob->backup };
    regs[2] = (struct region){ 2 * DF_GPT_SECTOR, ARRAY_BYTES, blob->array };
    regs[3] = (struct region){ DF_GPT_SECTOR, DF_GPT_SECTOR, blob->primary };
    regs[4] = (struct region){ 0, DF_GPT_SECTOR, blob->mbr };
    for (size_t i = 0; i < 5 && ret == 0; i++) {
        ret = df_image_pwrite(img, regs[i].data, regs[i].len, regs[i].off,
                              err);
    }
    if (ret == 0) {
        ret = df_image_flush(img, err);
    }
    if (ret < 0) {
        /* put back what was there; the first error stays the one shown */
        df_image_pwrite(img, saved_tail, tail_len, tail_off, NULL);
        df_image_pwrite(img, saved_head, head_len, 0, NULL);
        df_image_flush(img, NULL);
    }
out:
    free(saved_head);
    free(saved_tail);
    free(blob);
    return ret;
}

/* ---- reading ---- */

DF_PRINTF(2, 3)
static void problem(struct df_gpt_status *st, const char *fmt, ...)
{
    va_list ap;

    if (st->n_problems >= DF_GPT_MAX_PROBLEMS) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(st->problems[st->n_problems++], sizeof(st->problems[0]), fmt,
              ap);
    va_end(ap);
}

struct hdr {
    uint64_t my_lba, alt_lba, first_usable, last_usable, array_lba;
    uint32_t n_entries, entry_size, array_crc;
    struct df_guid disk_guid;
};

/*
 * Check the header in @buf, read from @lba, and its entry array; on
 * success fill @h and @g (used entries).  Problems go to @st with @which
 * ("primary", "backup") in front.  Returns 1 when sound, 0 when not, <0 on
 * an I/O error.
 */
static int check_copy(struct df_image *img, const uint8_t *buf, uint64_t lba,
                      uint64_t total, const char *which, struct hdr *h,
                      struct df_gpt *g, struct df_gpt_status *st,
                      struct df_error *err)
{
    uint8_t tmp[DF_GPT_SECTOR];
    uint32_t hsize = get32(buf + 12);
    uint64_t array_bytes, array_sectors;
    uint8_t *array;
    bool ok = true;
    int ret;

    if (memcmp(buf, "EFI PART", 8) != 0) {
        problem(st, "%s header at LBA %llu: no GPT signature", which,
                (unsigned long long)lba);
        return 0;
    }
    if (hsize < HDR_SIZE || hsize > DF_GPT_SECTOR) {
        problem(st, "%s header: header size %u is invalid", which, hsize);
        return 0;
    }
    memcpy(tmp, buf, DF_GPT_SECTOR);
    put32(tmp + 16, 0);
    if (crc(tmp, hsize) != get32(buf + 16)) {
        problem(st, "%s header: CRC-32 mismatch (stored 0x%08x, computed "
                "0x%08x)", which, get32(buf + 16), crc(tmp, hsize));
        return 0;
    }
    h->my_lba = get64(buf + 24);
    h->alt_lba = get64(buf + 32);
    h->first_usable = get64(buf + 40);
    h->last_usable = get64(buf + 48);
    guid_from_disk(buf + 56, &h->disk_guid);
    h->array_lba = get64(buf + 72);
    h->n_entries = get32(buf + 80);
    h->entry_size = get32(buf + 84);
    h->array_crc = get32(buf + 88);
    if (h->my_lba != lba) {
        problem(st, "%s header: says it is at LBA %llu, found at %llu",
                which, (unsigned long long)h->my_lba,
                (unsigned long long)lba);
        ok = false;
    }
    if (h->alt_lba >= total) {
        problem(st, "%s header: the other header's LBA %llu lies outside "
                "the disk (%llu sectors)", which,
                (unsigned long long)h->alt_lba, (unsigned long long)total);
        ok = false;
    }
    if (h->first_usable > h->last_usable || h->last_usable >= total) {
        problem(st, "%s header: usable LBAs %llu..%llu lie outside the "
                "disk (%llu sectors)", which,
                (unsigned long long)h->first_usable,
                (unsigned long long)h->last_usable,
                (unsigned long long)total);
        ok = false;
    }
    if (h->entry_size < DF_GPT_ENTRY_SIZE || h->entry_size % 8 ||
        h->entry_size > 4096) {
        problem(st, "%s header: entry size %u is invalid", which,
                h->entry_size);
        return 0;
    }
    array_bytes = (uint64_t)h->n_entries * h->entry_size;
    if (array_bytes > MAX_ARRAY_BYTES) {
        problem(st, "%s header: %u entries of %u bytes (%llu bytes) is "
                "not a plausible entry array", which, h->n_entries,
                h->entry_size, (unsigned long long)array_bytes);
        return 0;
    }
    array_sectors = (array_bytes + DF_GPT_SECTOR - 1) / DF_GPT_SECTOR;
    if (h->array_lba >= total || array_sectors > total - h->array_lba ||
        (h->array_lba <= lba && lba < h->array_lba + array_sectors)) {
        problem(st, "%s header: entry array at LBA %llu (%llu sectors) "
                "lies outside the disk or over the header", which,
                (unsigned long long)h->array_lba,
                (unsigned long long)array_sectors);
        return 0;
    }
    if (!ok) {
        return 0;
    }
    array = malloc(array_bytes ? array_bytes : 1);
    if (!array) {
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    ret = df_image_pread(img, array, array_bytes,
                         h->array_lba * DF_GPT_SECTOR, err);
    if (ret < 0) {
        free(array);
        return ret;
    }
    if (crc(array, array_bytes) != h->array_crc) {
        problem(st, "%s entry array: CRC-32 mismatch (stored 0x%08x, "
                "computed 0x%08x)", which, h->array_crc,
                crc(array, array_bytes));
        free(array);
        return 0;
    }
    memset(g, 0, sizeof(*g));
    g->disk_guid = h->disk_guid;
    g->first_usable = h->first_usable;
    g->last_usable = h->last_usable;
    g->disk_sectors = total;
    for (uint32_t i = 0; i < h->n_entries; i++) {
        const uint8_t *e = array + (size_t)i * h->entry_size;
        struct df_gpt_part *p;
        struct df_guid type;
        guid_from_disk(e, &type);
        if (df_guid_is_zero(&type)) {
            continue;
        }
        if (g->n_parts == DF_GPT_ENTRIES) {
            problem(st, "%s entry array: more than %u partitions", which,
                    DF_GPT_ENTRIES);
            ok = false;
            break;
        }
        p = &g->parts[g->n_parts++];
        p->type = type;
        guid_from_disk(e + 16, &p->guid);
        p->first_lba = get64(e + 32);
        p->last_lba = get64(e + 40);
        p->attributes = get64(e + 48);
        p->index = i;
        name_from_disk(e + 56, p->name, sizeof(p->name));
        if (p->first_lba > p->last_lba || p->first_lba < h->first_usable ||
            p->last_lba > h->last_usable) {
            problem(st, "%s entry %u: LBAs %llu..%llu lie outside the "
                    "usable LBAs %llu..%llu", which, i + 1,
                    (unsigned long long)p->first_lba,
                    (unsigned long long)p->last_lba,
                    (unsigned long long)h->first_usable,
                    (unsigned long long)h->last_usable);
            ok = false;
        }
    }
    for (size_t i = 0; ok && i < g->n_parts; i++) {
        for (size_t j = i + 1; j < g->n_parts; j++) {
            const struct df_gpt_part *a = &g->parts[i], *b = &g->parts[j];
            if (a->first_lba <= b->last_lba && b->first_lba <= a->last_lba) {
                problem(st, "%s entries %u and %u overlap", which,
                        a->index + 1, b->index + 1);
                ok = false;
            }
        }
    }
    free(array);
    return ok ? 1 : 0;
}

int df_gpt_read(struct df_image *img, struct df_gpt *g,
                struct df_gpt_status *st, struct df_error *err)
{
    uint64_t total = df_image_size(img) / DF_GPT_SECTOR;
    uint8_t mbr[DF_GPT_SECTOR], pbuf[DF_GPT_SECTOR], bbuf[DF_GPT_SECTOR];
    struct df_gpt *bg = malloc(sizeof(*bg));
    struct hdr ph = { 0 }, bh = { 0 };
    uint64_t blba;
    bool pmagic, bmagic = false, protective = false;
    int pr = 0, br = 0, ret = 0;

    memset(st, 0, sizeof(*st));
    memset(g, 0, sizeof(*g));
    if (!bg) {
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    if (total < 3) {
        free(bg);
        return 0; /* too small to hold one */
    }
    if ((ret = df_image_pread(img, mbr, sizeof(mbr), 0, err)) < 0 ||
        (ret = df_image_pread(img, pbuf, sizeof(pbuf), DF_GPT_SECTOR,
                              err)) < 0) {
        free(bg);
        return ret;
    }
    pmagic = memcmp(pbuf, "EFI PART", 8) == 0;
    /* the backup where the primary says, else at the last LBA */
    blba = total - 1;
    if (pmagic) {
        uint64_t alt = get64(pbuf + 32);
        if (alt > 1 && alt < total) {
            blba = alt;
        }
    }
    ret = df_image_pread(img, bbuf, sizeof(bbuf), blba * DF_GPT_SECTOR, err);
    if (ret < 0) {
        free(bg);
        return ret;
    }
    bmagic = memcmp(bbuf, "EFI PART", 8) == 0;
    if (!pmagic && !bmagic) {
        free(bg);
        return 0;
    }
    if (pmagic) {
        pr = check_copy(img, pbuf, 1, total, "primary", &ph, g, st, err);
    } else {
        problem(st, "primary header at LBA 1: no GPT signature");
    }
    if (pr >= 0) {
        br = check_copy(img, bbuf, blba, total, "backup", &bh,
                        pr == 1 ? bg : g, st, err);
    }
    if (pr < 0 || br < 0) {
        free(bg);
        return pr < 0 ? pr : br;
    }
    st->primary_ok = pr == 1;
    st->backup_ok = br == 1;
    st->from_backup = !st->primary_ok && st->backup_ok;
    if (st->primary_ok && ph.alt_lba != total - 1) {
        problem(st, "primary header: the backup header is at LBA %llu, "
                "not at the disk's last LBA %llu (the disk was resized?)",
                (unsigned long long)ph.alt_lba,
                (unsigned long long)(total - 1));
    }
    if (st->primary_ok && st->backup_ok &&
        (memcmp(ph.disk_guid.b, bh.disk_guid.b, 16) ||
         ph.first_usable != bh.first_usable ||
         ph.last_usable != bh.last_usable || ph.n_entries != bh.n_entries ||
         ph.entry_size != bh.entry_size || ph.array_crc != bh.array_crc ||
         bh.alt_lba != 1)) {
        problem(st, "the backup GPT disagrees with the primary");
    }
    for (size_t i = 0; i < 4; i++) {
        if (mbr[446 + 16 * i + 4] == 0xee) {
            protective = true;
        }
    }
    if (!protective || mbr[510] != 0x55 || mbr[511] != 0xaa) {
        problem(st, "no protective MBR at LBA 0");
    }
    if (!st->primary_ok && !st->backup_ok) {
        memset(g, 0, sizeof(*g));
    }
    st->state = st->n_problems ? DF_GPT_DAMAGED : DF_GPT_VALID;
    free(bg);
    return 0;
}

const struct df_gpt_part *df_gpt_find(const struct df_gpt *g,
                                      const char *name_or_number)
{
    char *end;
    unsigned long n;

    for (size_t i = 0; i < g->n_parts; i++) {
        if (!strcmp(g->parts[i].name, name_or_number)) {
            return &g->parts[i];
        }
    }
    if (*name_or_number < '1' || *name_or_number > '9') {
        return NULL;
    }
    n = strtoul(name_or_number, &end, 10);
    for (size_t i = 0; !*end && i < g->n_parts; i++) {
        if (g->parts[i].index + 1 == n) {
            return &g->parts[i];
        }
    }
    return NULL;
}
