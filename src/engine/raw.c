/* SPDX-License-Identifier: MIT */
/*
 * raw.c - the raw format: guest offset == file offset.  Holes are found
 * with SEEK_DATA/SEEK_HOLE, once per open (hostmap.c); zeroing punches
 * holes when allowed.
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static bool raw_probe(const unsigned char *buf, size_t len)
{
    return true; /* anything is a raw image */
}

static int raw_open(struct df_image *img, unsigned flags, struct df_error *err)
{
    struct stat st;

    if (fstat(img->fd, &st) < 0) {
        return df_fail_errno(err, DF_E_IO, "'%s': cannot stat", img->path);
    }
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(img->fd, 0, SEEK_END);
        if (end < 0) {
            return df_fail_errno(err, DF_E_IO, "'%s': cannot get size",
                                 img->path);
        }
        img->size = (uint64_t)end;
    } else {
        /* like qemu: a raw image is a whole number of 512-byte sectors;
         * the bytes past the end of the file read as zeros */
        img->size = DF_ROUND_UP((uint64_t)st.st_size, 512);
    }
    return 0;
}

static void raw_close(struct df_image *img)
{
}

static int raw_create(int fd, const char *path, const struct df_create_opts *o,
                      struct df_error *err)
{
    uint64_t size = o->size; /* whole sectors: see df_image_create_at() */

    if (ftruncate(fd, (off_t)size) < 0) {
        return df_fail_sys(err, "'%s': cannot set size", path);
    }
    switch (o->prealloc) {
    case DF_PREALLOC_FALLOC:
        return df_io_fallocate(fd, 0, size, path, err);
    case DF_PREALLOC_FULL:
        return df_io_write_zeroes(fd, 0, size, path, err);
    default:
        return 0;
    }
}

static int raw_pread(struct df_image *img, void *buf, size_t len, uint64_t off,
                     struct df_error *err)
{
    return df_io_pread(img->fd, buf, len, off, img->path, err);
}

static int raw_pwrite(struct df_image *img, const void *buf, size_t len,
                      uint64_t off, struct df_error *err)
{
    int ret = df_io_pwrite(img->fd, buf, len, off, img->path, err);

    df_hostmap_note_write(img->hostmap, off, len);
    return ret;
}

static int raw_write_zeroes(struct df_image *img, uint64_t off, uint64_t len,
                            unsigned flags, struct df_error *err)
{
    int mode = (flags & DF_ZERO_MAY_UNMAP)
                   ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                   : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

    if (fallocate(img->fd, mode, (off_t)off, (off_t)len) == 0) {
        return 0;
    }
    /* not supported by this file system: write the zeros */
    return df_io_write_zeroes(img->fd, off, len, img->path, err);
}

static int raw_flush(struct df_image *img, struct df_error *err)
{
    return 0;
}

static int raw_block_status(struct df_image *img, uint64_t off, uint64_t len,
                            struct df_extent *ext, struct df_error *err)
{
    bool data;
    int ret = df_hostmap_lookup(img->hostmap, img->fd, img->path, off, len,
                                &data, &ext->length, err);

    ext->start = off;
    ext->flags = data ? DF_BLOCK_DATA : DF_BLOCK_ZERO;
    ext->host_offset = data ? off : DF_NO_OFFSET;
    return ret;
}

static int raw_info(struct df_image *img, struct df_info *info,
                    struct df_error *err)
{
    return 0;
}

const struct df_driver df_raw_driver = {
    .name = "raw",
    .format = DF_FMT_RAW,
    .probe = raw_probe,
    .open = raw_open,
    .close = raw_close,
    .create = raw_create,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .write_zeroes = raw_write_zeroes,
    .flush = raw_flush,
    .block_status = raw_block_status,
    .info = raw_info,
};
