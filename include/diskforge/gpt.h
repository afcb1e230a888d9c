/* SPDX-License-Identifier: MIT */
/*
 * diskforge/gpt.h - GUID partition tables (UEFI 2.x, chapter 5) on images.
 *
 * A GPT is image structure: it is read and written through the image API
 * (df_image_pread/pwrite), so it works on raw and qcow2 images and on
 * overlays alike.  Only 512-byte logical blocks are handled.
 *
 * What df_gpt_write() lays down (SPEC §9):
 *   LBA 0             protective MBR (one 0xEE entry over the whole disk)
 *   LBA 1             primary header
 *   LBA 2..33         primary entry array: 128 entries of 128 bytes
 *   LBA N-33..N-2     backup entry array
 *   LBA N-1           backup header
 * with the header and entry-array CRC-32s (zlib's crc32).
 *
 * GUIDs are held as 16 bytes in the order they are written as text
 * ("C12A7328-F81F-..." is c1 2a 73 28 f8 1f ...); the on-disk mixed-endian
 * order is the encoder's business.
 *
 * Thread-safety: every function is reentrant; df_gpt_read/write use the
 * image as its own rules allow (see image.h).
 */
#ifndef DISKFORGE_GPT_H
#define DISKFORGE_GPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DF_GPT_SECTOR 512u
#define DF_GPT_ENTRIES 128u
#define DF_GPT_ENTRY_SIZE 128u
/* Sectors of the entry array (128 x 128 bytes = 32 sectors). */
#define DF_GPT_ARRAY_SECTORS (DF_GPT_ENTRIES * DF_GPT_ENTRY_SIZE / DF_GPT_SECTOR)
/* Partition name: 36 UTF-16 code units. */
#define DF_GPT_NAME_UNITS 36u
/* Partitions start on 1 MiB boundaries. */
#define DF_GPT_ALIGN (1024u * 1024u)

/* Attribute bits with names (UEFI; the last two from the Discoverable
 * Partitions Specification). */
#define DF_GPT_ATTR_REQUIRED 0
#define DF_GPT_ATTR_LEGACY_BIOS_BOOTABLE 2
#define DF_GPT_ATTR_READ_ONLY 60
#define DF_GPT_ATTR_NO_AUTOMOUNT 63

struct df_guid {
    uint8_t b[16]; /* text order */
};

struct df_gpt_part {
    struct df_guid type;
    struct df_guid guid;
    uint64_t first_lba; /* inclusive */
    uint64_t last_lba;  /* inclusive */
    uint64_t attributes;
    char name[DF_GPT_NAME_UNITS * 3 + 1]; /* UTF-8 */
    uint32_t index;     /* 0-based entry slot (number = index + 1) */
};

struct df_gpt {
    struct df_guid disk_guid;
    uint64_t first_usable, last_usable; /* LBAs */
    uint64_t disk_sectors;              /* what the table was laid out for */
    size_t n_parts;                     /* used entries, in slot order */
    struct df_gpt_part parts[DF_GPT_ENTRIES];
};

/* ---- GUIDs ---- */

/**
 * df_guid_parse() - "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (hex digits of
 * either case).  Returns 0, or -DF_E_INVAL for anything else.
 */
DF_API int df_guid_parse(const char *s, struct df_guid *out);
/** df_guid_format() - the text form, upper case (sgdisk's) or lower. */
DF_API void df_guid_format(const struct df_guid *g, bool upper, char buf[37]);
DF_API bool df_guid_is_zero(const struct df_guid *g);

/**
 * df_guid_derive() - a name-based GUID in the manner of RFC 4122 version 5:
 * SHA-1 over diskforge's namespace GUID and the strings of @parts, each
 * followed by a NUL byte, truncated to 16 bytes, with the version (5) and
 * variant (10xx) bits set.  The same strings always give the same GUID.
 */
DF_API void df_guid_derive(const char *const *parts, size_t n,
                           struct df_guid *out);

/**
 * df_gpt_type_parse() - a partition type: one of the aliases esp,
 * bios-boot, linux, linux-root-x86-64, linux-root-arm64, swap, linux-home,
 * or a GUID.  -DF_E_INVAL otherwise.
 */
DF_API int df_gpt_type_parse(const char *s, struct df_guid *out);
/** df_gpt_type_name() - the alias of a type GUID, or NULL. */
DF_API const char *df_gpt_type_name(const struct df_guid *type);
/** The aliases, NULL-terminated (for "did you mean"). */
DF_API const char *const *df_gpt_type_aliases(void);

/** df_gpt_attr_parse() - "legacy_bios_bootable", "read_only",
 * "no_automount" or a bit number 0-63, to a bit number; -DF_E_INVAL. */
DF_API int df_gpt_attr_parse(const char *s, unsigned *bit);

/**
 * df_gpt_name_check() - 0 when @utf8 is valid UTF-8 that fits the 36
 * UTF-16 code units of an entry's name; -DF_E_INVAL with @err otherwise.
 */
DF_API int df_gpt_name_check(const char *utf8, struct df_error *err);

/* ---- layout ---- */

/* One partition as a job asks for it. */
struct df_gpt_want {
    uint64_t size; /* bytes, a multiple of 512; 0 with @rest */
    bool rest;     /* up to the last usable LBA */
};

/**
 * df_gpt_layout() - place @n partitions on a disk of @disk_size bytes:
 * the first at 1 MiB, each next at the first 1 MiB boundary after the end
 * of the previous one, `rest` ending at the last usable LBA.  Fills
 * first_lba/last_lba/index of @parts[0..n) and g->first_usable,
 * last_usable and disk_sectors.  -DF_E_NOSPC with a message naming the
 * partition (by @names[i] when given) when it does not fit, -DF_E_INVAL
 * for more than 128 partitions, a size that is not a multiple of 512, or
 * `rest` on other than the last one.
 */
DF_API int df_gpt_layout(struct df_gpt *g, uint64_t disk_size,
                         const struct df_gpt_want *want,
                         const char *const *names, size_t n,
                         struct df_error *err);

/** df_gpt_min_disk_size() - the smallest disk that holds @want. */
DF_API uint64_t df_gpt_min_disk_size(const struct df_gpt_want *want,
                                     size_t n);

/* ---- bytes ---- */

/* Everything df_gpt_write() writes, in memory. */
struct df_gpt_blob {
    uint8_t mbr[DF_GPT_SECTOR];
    uint8_t primary[DF_GPT_SECTOR];
    uint8_t backup[DF_GPT_SECTOR];
    uint8_t array[DF_GPT_ENTRIES * DF_GPT_ENTRY_SIZE];
};

/**
 * df_gpt_encode() - the protective MBR, both headers and the entry array
 * of @g (laid out by df_gpt_layout() or read by df_gpt_read()).
 * -DF_E_INVAL for a name that does not fit or a layout outside the disk.
 */
DF_API int df_gpt_encode(const struct df_gpt *g, struct df_gpt_blob *out,
                         struct df_error *err);

/**
 * df_gpt_write() - write @g into @img (opened read-write), whose size must
 * be at least g->disk_sectors * 512 and hold the layout.  The bytes are
 * encoded and checked before the first write, and what was there is read
 * first and written back if a write fails, so a failure leaves the image's
 * guest bytes as they were (as far as the image can still be written).
 */
DF_API int df_gpt_write(struct df_image *img, const struct df_gpt *g,
                        struct df_error *err);

/* ---- reading ---- */

enum df_gpt_state {
    DF_GPT_NONE = 0,    /* no GPT signature at LBA 1 or at the end */
    DF_GPT_VALID = 1,   /* both copies sound and in agreement */
    DF_GPT_DAMAGED = 2, /* something wrong: see problems */
};

#define DF_GPT_MAX_PROBLEMS 8

struct df_gpt_status {
    enum df_gpt_state state;
    bool primary_ok, backup_ok;   /* header and array CRCs and fields */
    bool from_backup;             /* the table shown is the backup's */
    size_t n_problems;
    char problems[DF_GPT_MAX_PROBLEMS][160];
};

/**
 * df_gpt_read() - find and check the GPT of @img: the protective MBR, both
 * headers (signature, size, CRC, own and alternate LBAs, usable range
 * inside the disk), both entry arrays (CRC, size, inside the disk) and
 * every used entry (inside the usable range, no overlaps).  On return 0,
 * @st says what was found; when a sound copy exists (primary first, else
 * backup) @g holds it, even if the state is DF_GPT_DAMAGED.  Hostile
 * values (an entry count of 2^32, offsets past the disk) are problems,
 * never crashes or huge allocations.  Errors (<0) only for I/O failures.
 */
DF_API int df_gpt_read(struct df_image *img, struct df_gpt *g,
                       struct df_gpt_status *st, struct df_error *err);

/**
 * df_gpt_find() - the partition named @name_or_number ("2" is the second
 * entry slot unless a partition is named "2"), or NULL.
 */
DF_API const struct df_gpt_part *df_gpt_find(const struct df_gpt *g,
                                             const char *name_or_number);

#ifdef __cplusplus
}
#endif
#endif
