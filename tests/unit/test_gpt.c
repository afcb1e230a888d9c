/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the GPT code (src/engine/gpt.c): GUID text and on-disk
 * order, name-based GUIDs, type aliases and attributes, UTF-16LE names,
 * the 1 MiB layout arithmetic, the encoded bytes (CRC-32s, protective
 * MBR), and write + read round trips on real images, including damaged
 * and hostile tables.
 *
 * Known answers: the ESP type GUID's on-disk bytes are the ones every
 * GPT tool writes (28 73 2a c1 1f f8 d2 11 ...); the derived GUID was
 * computed independently with Python's uuid.uuid5(namespace, name) for
 * the name "golden\0gpt\0partition\0root\0".
 */
#include <check.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "diskforge/gpt.h"
#include "diskforge/image.h"

#define MiB (UINT64_C(1) << 20)

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* ---- GUIDs ---- */

START_TEST(guid_text_round_trip)
{
    struct df_guid g;
    char buf[37];

    ck_assert_int_eq(df_guid_parse("c12a7328-F81F-11d2-ba4b-00A0C93EC93B",
                                   &g), 0);
    ck_assert_uint_eq(g.b[0], 0xc1);
    ck_assert_uint_eq(g.b[15], 0x3b);
    df_guid_format(&g, true, buf);
    ck_assert_str_eq(buf, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    df_guid_format(&g, false, buf);
    ck_assert_str_eq(buf, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
}
END_TEST

static const char *const bad_guids[] = {
    "",
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93",   /* short */
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93BB", /* long */
    "C12A7328F81F-11D2-BA4B-00A0C93EC93B0",  /* dash misplaced */
    "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",  /* not hex */
    "{C12A7328-F81F-11D2-BA4B-00A0C93EC93}",
};

START_TEST(guid_malformed)
{
    struct df_guid g;

    ck_assert_int_eq(df_guid_parse(bad_guids[_i], &g), -DF_E_INVAL);
}
END_TEST

START_TEST(guid_derive_known_answer)
{
    const char *parts[] = { "golden", "gpt", "partition", "root" };
    const char *other[] = { "golden", "gpt", "partition", "roof" };
    /* "a" + "b" must not collide with "ab" + "" */
    const char *ab1[] = { "a", "b" }, *ab2[] = { "ab", "" };
    struct df_guid g, h, x, y;
    char buf[37];

    df_guid_derive(parts, 4, &g);
    df_guid_format(&g, true, buf);
    ck_assert_str_eq(buf, "DC4EB5A0-0E27-5DAF-914A-A5DF2B31E126");
    ck_assert_uint_eq(g.b[6] >> 4, 5);      /* version 5 */
    ck_assert_uint_eq(g.b[8] & 0xc0, 0x80); /* RFC 4122 variant */
    df_guid_derive(parts, 4, &h);
    ck_assert_mem_eq(g.b, h.b, 16);
    df_guid_derive(other, 4, &h);
    ck_assert(memcmp(g.b, h.b, 16) != 0);
    df_guid_derive(ab1, 2, &x);
    df_guid_derive(ab2, 2, &y);
    ck_assert(memcmp(x.b, y.b, 16) != 0);
}
END_TEST

/* ---- types, attributes, names ---- */

START_TEST(type_aliases)
{
    static const struct {
        const char *alias, *guid;
    } want[] = {
        { "esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" },
        { "bios-boot", "21686148-6449-6E6F-744E-656564454649" },
        { "linux", "0FC63DAF-8483-4772-8E79-3D69D8477DE4" },
        { "linux-root-x86-64", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" },
        { "linux-root-arm64", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" },
        { "swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" },
        { "linux-home", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" },
    };
    struct df_guid g;
    char buf[37];

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        ck_assert_int_eq(df_gpt_type_parse(want[i].alias, &g), 0);
        df_guid_format(&g, true, buf);
        ck_assert_str_eq(buf, want[i].guid);
        ck_assert_str_eq(df_gpt_type_name(&g), want[i].alias);
    }
    ck_assert_int_eq(df_gpt_type_parse("0fc63daf-8483-4772-8e79-3d69d8477de4",
                                       &g), 0);
    ck_assert_str_eq(df_gpt_type_name(&g), "linux");
    ck_assert_int_eq(df_gpt_type_parse("ESP", &g), -DF_E_INVAL);
    ck_assert_int_eq(df_gpt_type_parse("linux-root", &g), -DF_E_INVAL);
    ck_assert_int_eq(df_gpt_type_parse("00000000-0000-0000-0000-000000000000",
                                       &g), -DF_E_INVAL);
}
END_TEST

START_TEST(attributes)
{
    unsigned bit;

    ck_assert_int_eq(df_gpt_attr_parse("legacy_bios_bootable", &bit), 0);
    ck_assert_uint_eq(bit, 2);
    ck_assert_int_eq(df_gpt_attr_parse("read_only", &bit), 0);
    ck_assert_uint_eq(bit, 60);
    ck_assert_int_eq(df_gpt_attr_parse("no_automount", &bit), 0);
    ck_assert_uint_eq(bit, 63);
    ck_assert_int_eq(df_gpt_attr_parse("0", &bit), 0);
    ck_assert_uint_eq(bit, 0);
    ck_assert_int_eq(df_gpt_attr_parse("63", &bit), 0);
    ck_assert_uint_eq(bit, 63);
    ck_assert_int_eq(df_gpt_attr_parse("64", &bit), -DF_E_INVAL);
    ck_assert_int_eq(df_gpt_attr_parse("-1", &bit), -DF_E_INVAL);
    ck_assert_int_eq(df_gpt_attr_parse("hidden", &bit), -DF_E_INVAL);
    ck_assert_int_eq(df_gpt_attr_parse("", &bit), -DF_E_INVAL);
}
END_TEST

START_TEST(utf16_names)
{
    struct df_error err = { 0 };
    char n36[37], n37[38], n35e[40];

    memset(n36, 'x', 36);
    n36[36] = '\0';
    memset(n37, 'x', 37);
    n37[37] = '\0';
    memset(n35e, 'x', 35);
    memcpy(n35e + 35, "\xf0\x9f\x98\x80", 5); /* U+1F600: 2 units */
    ck_assert_int_eq(df_gpt_name_check(n36, &err), 0);
    ck_assert_int_eq(df_gpt_name_check(n37, &err), -DF_E_INVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "36 UTF-16"));
    df_error_clear(&err);
    ck_assert_int_eq(df_gpt_name_check(n35e, &err), -DF_E_INVAL);
    df_error_clear(&err);
    ck_assert_int_eq(df_gpt_name_check("\xc3\x28", &err), -DF_E_INVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "UTF-8"));
    df_error_clear(&err);
    ck_assert_int_eq(df_gpt_name_check("\xc0\xaf", &err), -DF_E_INVAL);
    df_error_clear(&err);
    ck_assert_int_eq(df_gpt_name_check("\xed\xa0\x80", &err), -DF_E_INVAL);
}
END_TEST

/* ---- layout ---- */

START_TEST(layout_alignment)
{
    struct df_gpt_want want[] = { { 64 * MiB, false },
                                  { MiB + 512, false },
                                  { 0, true } };
    const char *names[] = { "esp", "odd", "root" };
    struct df_gpt *g = calloc(1, sizeof(*g));
    struct df_error err = { 0 };
    uint64_t total = 256 * MiB / 512;

    ck_assert_int_eq(df_gpt_layout(g, 256 * MiB, want, names, 3, &err), 0);
    ck_assert_uint_eq(g->first_usable, 34);
    ck_assert_uint_eq(g->last_usable, total - 34);
    ck_assert_uint_eq(g->disk_sectors, total);
    ck_assert_uint_eq(g->parts[0].first_lba, 2048);
    ck_assert_uint_eq(g->parts[0].last_lba, 2048 + 131072 - 1);
    ck_assert_uint_eq(g->parts[1].first_lba, 133120);
    ck_assert_uint_eq(g->parts[1].last_lba, 133120 + 2049 - 1);
    /* the next 1 MiB boundary after the odd-sized partition */
    ck_assert_uint_eq(g->parts[2].first_lba, 137216);
    ck_assert_uint_eq(g->parts[2].last_lba, total - 34);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_uint_eq(g->parts[i].first_lba % 2048, 0);
        ck_assert_uint_eq(g->parts[i].index, i);
    }
    free(g);
}
END_TEST

START_TEST(layout_errors)
{
    struct df_gpt_want two[] = { { 64 * MiB, false }, { 64 * MiB, false } };
    struct df_gpt_want rest_first[] = { { 0, true }, { MiB, false } };
    struct df_gpt_want odd[] = { { 1000, false } };
    struct df_gpt_want *many = calloc(129, sizeof(*many));
    struct df_gpt *g = calloc(1, sizeof(*g));
    struct df_error err = { 0 };
    uint64_t min = df_gpt_min_disk_size(two, 2);

    /* 1 MiB + 128 MiB + the 33 sectors of the backup + 1 */
    ck_assert_uint_eq(min, (2048 + 2 * 131072 + 33) * UINT64_C(512));
    ck_assert_int_eq(df_gpt_layout(g, min, two, NULL, 2, &err), 0);
    ck_assert_uint_eq(g->parts[1].last_lba, g->last_usable);
    ck_assert_int_eq(df_gpt_layout(g, min - 512, two, NULL, 2, &err),
                     -DF_E_NOSPC);
    ck_assert_ptr_nonnull(strstr(err.msg, "partition 2 does not fit"));
    df_error_clear(&err);
    ck_assert_int_eq(df_gpt_layout(g, 256 * MiB, rest_first, NULL, 2, &err),
                     -DF_E_INVAL);
    df_error_clear(&err);
    ck_assert_int_eq(df_gpt_layout(g, 256 * MiB, odd, NULL, 1, &err),
                     -DF_E_INVAL);
    df_error_clear(&err);
    for (size_t i = 0; i < 129; i++) {
        many[i].size = 512;
    }
    ck_assert_int_eq(df_gpt_layout(g, UINT64_C(1) << 40, many, NULL, 129,
                                   &err), -DF_E_INVAL);
    df_error_clear(&err);
    ck_assert_int_eq(df_gpt_layout(g, UINT64_C(1) << 40, many, NULL, 128,
                                   &err), 0);
    ck_assert_int_eq(df_gpt_layout(g, 30 * 1024, NULL, NULL, 0, &err),
                     -DF_E_NOSPC);
    ck_assert_ptr_nonnull(strstr(err.msg, "too small"));
    free(many);
    free(g);
}
END_TEST

/* ---- encoding ---- */

static struct df_gpt *sample(uint64_t disk)
{
    struct df_gpt_want want[] = { { 64 * MiB, false }, { 0, true } };
    const char *names[] = { "esp", "root" };
    struct df_gpt *g = calloc(1, sizeof(*g));
    struct df_error err = { 0 };

    ck_assert_int_eq(df_gpt_layout(g, disk, want, names, 2, &err), 0);
    df_guid_parse("11111111-2222-3333-4444-555555555555", &g->disk_guid);
    df_gpt_type_parse("esp", &g->parts[0].type);
    df_gpt_type_parse("linux-root-x86-64", &g->parts[1].type);
    df_guid_parse("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE", &g->parts[0].guid);
    df_guid_parse("01020304-0506-0708-090A-0B0C0D0E0F10", &g->parts[1].guid);
    strcpy(g->parts[0].name, "esp");
    strcpy(g->parts[1].name, "r\xc3\xb6\xc3\xb6t \xf0\x9f\x98\x80");
    g->parts[1].attributes = UINT64_C(1) << 63 | UINT64_C(1) << 2;
    return g;
}

START_TEST(encode_bytes)
{
    static const uint8_t esp_on_disk[16] = {
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11,
        0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
    };
    struct df_gpt *g = sample(256 * MiB);
    struct df_gpt_blob *b = calloc(1, sizeof(*b));
    struct df_error err = { 0 };
    uint64_t total = 256 * MiB / 512;
    uint8_t hdr[512];
    const uint8_t *e1;

    ck_assert_int_eq(df_gpt_encode(g, b, &err), 0);
    /* protective MBR */
    ck_assert_uint_eq(b->mbr[450], 0xee);
    ck_assert_uint_eq(le32(b->mbr + 454), 1);
    ck_assert_uint_eq(le32(b->mbr + 458), total - 1);
    ck_assert_uint_eq(b->mbr[510], 0x55);
    ck_assert_uint_eq(b->mbr[511], 0xaa);
    ck_assert_uint_eq(b->mbr[462], 0); /* one entry only */
    /* primary header fields and CRCs (zlib crc32) */
    ck_assert_mem_eq(b->primary, "EFI PART", 8);
    ck_assert_uint_eq(le32(b->primary + 8), 0x00010000);
    ck_assert_uint_eq(le32(b->primary + 12), 92);
    ck_assert_uint_eq(le64(b->primary + 24), 1);
    ck_assert_uint_eq(le64(b->primary + 32), total - 1);
    ck_assert_uint_eq(le64(b->primary + 40), 34);
    ck_assert_uint_eq(le64(b->primary + 48), total - 34);
    ck_assert_uint_eq(le64(b->primary + 72), 2);
    ck_assert_uint_eq(le32(b->primary + 80), 128);
    ck_assert_uint_eq(le32(b->primary + 84), 128);
    ck_assert_uint_eq(le32(b->primary + 88),
                      crc32(0, b->array, sizeof(b->array)));
    memcpy(hdr, b->primary, 512);
    put_le32(hdr + 16, 0);
    ck_assert_uint_eq(le32(b->primary + 16), crc32(0, hdr, 92));
    /* the rest of the header sector is zero */
    for (size_t i = 92; i < 512; i++) {
        ck_assert_uint_eq(b->primary[i], 0);
    }
    /* backup header: swapped LBAs, array just before it */
    ck_assert_uint_eq(le64(b->backup + 24), total - 1);
    ck_assert_uint_eq(le64(b->backup + 32), 1);
    ck_assert_uint_eq(le64(b->backup + 72), total - 33);
    ck_assert_uint_eq(le32(b->backup + 88), le32(b->primary + 88));
    memcpy(hdr, b->backup, 512);
    put_le32(hdr + 16, 0);
    ck_assert_uint_eq(le32(b->backup + 16), crc32(0, hdr, 92));
    /* disk GUID, mixed endian */
    ck_assert_uint_eq(b->primary[56], 0x11);
    ck_assert_uint_eq(b->primary[60], 0x22);
    ck_assert_uint_eq(b->primary[62], 0x33);
    ck_assert_uint_eq(b->primary[64], 0x44);
    /* entries */
    ck_assert_mem_eq(b->array, esp_on_disk, 16);
    ck_assert_uint_eq(le64(b->array + 32), 2048);
    ck_assert_uint_eq(le64(b->array + 40), 2048 + 131072 - 1);
    ck_assert_mem_eq(b->array + 56, "e\0s\0p\0\0\0", 8);
    e1 = b->array + 128;
    ck_assert_uint_eq(le64(e1 + 48), UINT64_C(1) << 63 | 4);
    ck_assert_uint_eq(le64(e1 + 40), total - 34);
    /* "röös 😀" in UTF-16LE: o-umlaut is 0x00f6, U+1F600 a pair */
    ck_assert_mem_eq(e1 + 56, "r\0\xf6\0\xf6\0t\0 \0\x3d\xd8\x00\xde\0\0", 16);
    for (size_t i = 256; i < sizeof(b->array); i++) {
        ck_assert_uint_eq(b->array[i], 0);
    }
    free(b);
    free(g);
}
END_TEST

/* ---- round trips on images ---- */

#define UNIT_TMPDIR_NAME "gpt"
#include "unit-tmpdir.h"

static struct df_image *new_image(const char *name, enum df_format fmt,
                                  uint64_t size)
{
    struct df_create_opts o;
    struct df_error err = { 0 };
    struct df_image *img;
    const char *path = path_in(name);

    df_create_opts_init(&o);
    o.format = fmt;
    o.size = size;
    ck_assert_msg(df_image_create(path, &o, &err) == 0, "%s", err.msg);
    img = df_image_open(path, fmt, DF_OPEN_RDWR, &err);
    ck_assert_msg(img != NULL, "%s", err.msg);
    return img;
}

START_TEST(round_trip)
{
    enum df_format fmt = _i ? DF_FMT_QCOW2 : DF_FMT_RAW;
    struct df_image *img = new_image("rt.img", fmt, 256 * MiB);
    struct df_gpt *g = sample(256 * MiB), *back = calloc(1, sizeof(*back));
    struct df_gpt_status st;
    struct df_error err = { 0 };
    const struct df_gpt_part *p;

    ck_assert_int_eq(df_gpt_read(img, back, &st, &err), 0);
    ck_assert_int_eq(st.state, DF_GPT_NONE);
    ck_assert_msg(df_gpt_write(img, g, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(df_gpt_read(img, back, &st, &err), 0);
    ck_assert_msg(st.state == DF_GPT_VALID, "%s", st.problems[0]);
    ck_assert(st.primary_ok && st.backup_ok && !st.from_backup);
    ck_assert_uint_eq(back->n_parts, 2);
    ck_assert_mem_eq(back->disk_guid.b, g->disk_guid.b, 16);
    for (size_t i = 0; i < 2; i++) {
        ck_assert_mem_eq(back->parts[i].type.b, g->parts[i].type.b, 16);
        ck_assert_mem_eq(back->parts[i].guid.b, g->parts[i].guid.b, 16);
        ck_assert_uint_eq(back->parts[i].first_lba, g->parts[i].first_lba);
        ck_assert_uint_eq(back->parts[i].last_lba, g->parts[i].last_lba);
        ck_assert_uint_eq(back->parts[i].attributes,
                          g->parts[i].attributes);
        ck_assert_str_eq(back->parts[i].name, g->parts[i].name);
    }
    p = df_gpt_find(back, "esp");
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(p->index, 0);
    p = df_gpt_find(back, "2");
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(p->index, 1);
    ck_assert_ptr_null(df_gpt_find(back, "3"));
    ck_assert_ptr_null(df_gpt_find(back, "0"));
    ck_assert_ptr_null(df_gpt_find(back, "boot"));
    /* a layout for another size is refused before any write */
    g->disk_sectors++;
    ck_assert_int_eq(df_gpt_write(img, g, &err), -DF_E_INVAL);
    df_image_close(img, NULL);
    free(g);
    free(back);
}
END_TEST

/* Write the sample, then let @damage change the raw file. */
static void damaged(void (*damage)(int fd), enum df_gpt_state want_state,
                    bool want_primary, bool want_backup, const char *want)
{
    struct df_image *img = new_image("bad.img", DF_FMT_RAW, 64 * MiB);
    struct df_gpt *g = calloc(1, sizeof(*g)), *back = calloc(1, sizeof(*back));
    struct df_gpt_want w[] = { { 0, true } };
    struct df_gpt_status st;
    struct df_error err = { 0 };
    const char *path;
    int fd;

    ck_assert_int_eq(df_gpt_layout(g, 64 * MiB, w, NULL, 1, &err), 0);
    df_gpt_type_parse("linux", &g->parts[0].type);
    strcpy(g->parts[0].name, "data");
    ck_assert_int_eq(df_gpt_write(img, g, &err), 0);
    df_image_close(img, NULL);
    path = path_in("bad.img");
    fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    damage(fd);
    close(fd);
    img = df_image_open(path, DF_FMT_RAW, 0, &err);
    ck_assert_ptr_nonnull(img);
    ck_assert_int_eq(df_gpt_read(img, back, &st, &err), 0);
    ck_assert_int_eq(st.state, want_state);
    ck_assert_int_eq(st.primary_ok, want_primary);
    ck_assert_int_eq(st.backup_ok, want_backup);
    ck_assert_uint_ge(st.n_problems, 1);
    ck_assert_msg(strstr(st.problems[0], want), "'%s' lacks '%s'",
                  st.problems[0], want);
    if (want_primary || want_backup) {
        ck_assert_uint_eq(back->n_parts, 1); /* shown from the sound copy */
    } else {
        ck_assert_uint_eq(back->n_parts, 0);
    }
    df_image_close(img, NULL);
    free(g);
    free(back);
}

static void flip_array_byte(int fd)
{
    uint8_t c;

    ck_assert_int_eq(pread(fd, &c, 1, 1024 + 60), 1);
    c ^= 1;
    ck_assert_int_eq(pwrite(fd, &c, 1, 1024 + 60), 1);
}

/* Rewrite the primary header with @field (at @off) set, CRC fixed. */
static void set_header_field(int fd, size_t off, uint64_t v, int width)
{
    uint8_t h[512];

    ck_assert_int_eq(pread(fd, h, 512, 512), 512);
    for (int i = 0; i < width; i++) {
        h[off + (size_t)i] = (uint8_t)(v >> (8 * i));
    }
    put_le32(h + 16, 0);
    put_le32(h + 16, (uint32_t)crc32(0, h, 92));
    ck_assert_int_eq(pwrite(fd, h, 512, 512), 512);
}

static void huge_entry_count(int fd)
{
    set_header_field(fd, 80, 0xffffffffu, 4);
}

static void entry_past_end(int fd)
{
    uint8_t a[16384];

    /* the entry's last LBA far past the disk, both arrays and CRCs fixed */
    ck_assert_int_eq(pread(fd, a, sizeof(a), 1024), (ssize_t)sizeof(a));
    a[40 + 5] = 0x10;
    ck_assert_int_eq(pwrite(fd, a, sizeof(a), 1024), (ssize_t)sizeof(a));
    set_header_field(fd, 88, (uint32_t)crc32(0, a, sizeof(a)), 4);
}

static void header_crc(int fd)
{
    uint8_t c = 0x5a;

    ck_assert_int_eq(pwrite(fd, &c, 1, 512 + 16), 1);
}

static void both_headers(int fd)
{
    uint8_t z[512] = { 0 };

    header_crc(fd);
    z[0] = 'E';
    ck_assert_int_eq(pwrite(fd, "EFI PART", 8, 64 * MiB - 512), 8);
    ck_assert_int_eq(pwrite(fd, z + 1, 8, 64 * MiB - 512 + 16), 8);
}

static void no_mbr(int fd)
{
    uint8_t z[512] = { 0 };

    ck_assert_int_eq(pwrite(fd, z, 512, 0), 512);
}

START_TEST(damaged_array_crc)
{
    damaged(flip_array_byte, DF_GPT_DAMAGED, false, true,
            "primary entry array: CRC-32 mismatch");
}
END_TEST

START_TEST(damaged_header_crc)
{
    damaged(header_crc, DF_GPT_DAMAGED, false, true,
            "primary header: CRC-32 mismatch");
}
END_TEST

START_TEST(hostile_entry_count)
{
    damaged(huge_entry_count, DF_GPT_DAMAGED, false, true,
            "4294967295 entries");
}
END_TEST

START_TEST(hostile_partition_past_end)
{
    damaged(entry_past_end, DF_GPT_DAMAGED, false, true, "lie outside");
}
END_TEST

START_TEST(damaged_both)
{
    damaged(both_headers, DF_GPT_DAMAGED, false, false, "CRC-32 mismatch");
}
END_TEST

START_TEST(damaged_no_mbr)
{
    damaged(no_mbr, DF_GPT_DAMAGED, true, true, "no protective MBR");
}
END_TEST

/* A write that fails leaves the image as it was: a read-only image
 * refuses the first write. */
START_TEST(write_failure_changes_nothing)
{
    struct df_image *img = new_image("ro.img", DF_FMT_RAW, 64 * MiB);
    struct df_gpt *g = calloc(1, sizeof(*g)), *back = calloc(1, sizeof(*back));
    struct df_gpt_want w[] = { { 0, true } };
    struct df_gpt_status st;
    struct df_error err = { 0 };
    const char *path;

    df_image_close(img, NULL);
    path = path_in("ro.img");
    img = df_image_open(path, DF_FMT_RAW, 0, &err);
    ck_assert_int_eq(df_gpt_layout(g, 64 * MiB, w, NULL, 1, &err), 0);
    df_gpt_type_parse("linux", &g->parts[0].type);
    ck_assert_int_lt(df_gpt_write(img, g, &err), 0);
    df_error_clear(&err);
    ck_assert_int_eq(df_gpt_read(img, back, &st, &err), 0);
    ck_assert_int_eq(st.state, DF_GPT_NONE);
    df_image_close(img, NULL);
    free(g);
    free(back);
}
END_TEST

static Suite *gpt_suite(void)
{
    Suite *s = suite_create("gpt");
    TCase *tc = tcase_create("codec");

    tcase_add_test(tc, guid_text_round_trip);
    tcase_add_loop_test(tc, guid_malformed, 0,
                        (int)(sizeof(bad_guids) / sizeof(bad_guids[0])));
    tcase_add_test(tc, guid_derive_known_answer);
    tcase_add_test(tc, type_aliases);
    tcase_add_test(tc, attributes);
    tcase_add_test(tc, utf16_names);
    tcase_add_test(tc, layout_alignment);
    tcase_add_test(tc, layout_errors);
    tcase_add_test(tc, encode_bytes);
    suite_add_tcase(s, tc);

    tc = tcase_create("images");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, round_trip, 0, 2);
    tcase_add_test(tc, damaged_array_crc);
    tcase_add_test(tc, damaged_header_crc);
    tcase_add_test(tc, hostile_entry_count);
    tcase_add_test(tc, hostile_partition_past_end);
    tcase_add_test(tc, damaged_both);
    tcase_add_test(tc, damaged_no_mbr);
    tcase_add_test(tc, write_failure_changes_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(gpt_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
