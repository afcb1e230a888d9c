/* SPDX-License-Identifier: MIT */
/*
 * fuzz_image.c - one fuzz input is the bytes of an image file.  The
 * engine must take any file without crashing, hanging, leaking or reading
 * outside its buffers, whatever it answers.  For each input:
 *
 *   1. open it as qcow2 (and, when that fails, probe it), without its
 *      backing chain (a fuzzed backing name must not reach other files);
 *   2. info, block status over the whole disk and reads of what it
 *      reports, both bounded so that a 4 TiB disk costs no more than a
 *      small one, and the guest's GPT (gpt.h) read and checked;
 *   3. check without repair;
 *   4. on a private copy: check -r all, then writes and zero writes at
 *      the start, the middle and the end, then check again; then, for an
 *      image without a backing file, shrink to half and grow past the
 *      old size, and check.
 *
 * The file lives in a memfd, named through /proc/self/fd, so that no
 * input touches the disk.  The same function serves libFuzzer (built
 * with -DDF_FUZZ=ON and clang) and fuzz_replay.c, which runs saved inputs
 * in the ordinary test suite.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <diskforge/gpt.h>
#include <diskforge/image.h>
#include <diskforge/ops.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EXTENTS 4096
#define MAX_READ (8u << 20)   /* bytes read per input, over all extents */
#define READ_PIECE (64u << 10)

static unsigned char buf[READ_PIECE];

/* A memfd holding @data; *@path receives its name.  -1 on failure. */
static int file_of(const uint8_t *data, size_t size, char *path, size_t plen)
{
    int fd = memfd_create("df-fuzz", MFD_CLOEXEC);
    size_t done = 0;

    if (fd < 0) {
        return -1;
    }
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    snprintf(path, plen, "/proc/self/fd/%d", fd);
    return fd;
}

/* Block status from 0 to the end, and reads of the first bytes of each
 * extent, within MAX_EXTENTS and MAX_READ. */
static void walk(struct df_image *img)
{
    uint64_t size = df_image_size(img), off = 0, read = 0;
    struct df_error err;

    for (int i = 0; i < MAX_EXTENTS && off < size; i++) {
        struct df_extent ext;
        size_t n;
        if (df_image_block_status(img, off, size - off, false, &ext,
                                  &err) < 0 ||
            ext.length == 0) {
            break;
        }
        n = (size_t)(ext.length < READ_PIECE ? ext.length : READ_PIECE);
        if (read + n <= MAX_READ) {
            (void)df_image_pread(img, buf, n, off, &err);
            read += n;
        }
        off = ext.start + ext.length > off ? ext.start + ext.length
                                           : off + 1;
    }
    if (size > 0) { /* the last byte, wherever it is */
        (void)df_image_pread(img, buf, 1, size - 1, &err);
    }
}

static void read_only(const char *path)
{
    struct df_error err;
    struct df_image *img = df_image_open(path, DF_FMT_QCOW2,
                                         DF_OPEN_NO_BACKING, &err);
    struct df_check_result res;
    struct df_info info;

    if (!img) {
        img = df_image_open(path, DF_FMT_AUTO, DF_OPEN_NO_BACKING, &err);
    }
    if (img) {
        struct df_gpt *g = malloc(sizeof(*g));
        struct df_gpt_status st;
        (void)df_image_info(img, &info, &err);
        walk(img);
        if (g) {
            (void)df_gpt_read(img, g, &st, &err);
            free(g);
        }
        df_image_close(img, &err);
    }
    (void)df_check(path, DF_FMT_QCOW2, DF_REPAIR_NONE, &res, NULL, NULL,
                   &err);
}

/* Shrink to half and grow back past the old size, unless the image names
 * a backing file (resize opens the chain, and a fuzzed name must not
 * reach other files). */
static void resize_both_ways(const char *path, uint64_t size)
{
    struct df_check_result res;
    struct df_error err;
    struct df_info info;
    struct df_image *img = df_image_open(path, DF_FMT_QCOW2,
                                         DF_OPEN_NO_BACKING, &err);
    bool backed = true;

    if (img) {
        backed = df_image_info(img, &info, &err) < 0 ||
                 info.backing_file[0] != '\0';
        df_image_close(img, &err);
    }
    if (backed || size < 1024) {
        return;
    }
    (void)df_resize(path, DF_FMT_QCOW2, size / 2 - size / 2 % 512,
                    DF_PREALLOC_OFF, true, &err);
    (void)df_resize(path, DF_FMT_QCOW2, size + (1u << 20), DF_PREALLOC_OFF,
                    false, &err);
    (void)df_check(path, DF_FMT_QCOW2, DF_REPAIR_NONE, &res, NULL, NULL,
                   &err);
}

static void read_write(const char *path)
{
    static const unsigned char pattern[3000] = { 0x5a, 0xa5, 1, 2, 3 };
    struct df_check_result res;
    struct df_error err;
    struct df_image *img;
    uint64_t size;

    (void)df_check(path, DF_FMT_QCOW2, DF_REPAIR_ALL, &res, NULL, NULL,
                   &err);
    img = df_image_open(path, DF_FMT_QCOW2, DF_OPEN_RDWR | DF_OPEN_NO_BACKING,
                        &err);
    if (!img) {
        return;
    }
    size = df_image_size(img);
    if (size >= sizeof(pattern)) {
        uint64_t at[3] = { 0, size / 2 - size / 2 % 512,
                           size - sizeof(pattern) };
        for (int i = 0; i < 3; i++) {
            if (df_image_pwrite(img, pattern, sizeof(pattern), at[i],
                                &err) < 0) {
                break;
            }
        }
        (void)df_image_write_zeroes(img, 0, size < (1u << 20) ? size
                                                             : 1u << 20,
                                    DF_ZERO_MAY_UNMAP, &err);
        (void)df_image_pread(img, buf, sizeof(pattern), at[1], &err);
    }
    df_image_close(img, &err);
    (void)df_check(path, DF_FMT_QCOW2, DF_REPAIR_NONE, &res, NULL, NULL,
                   &err);
    resize_both_ways(path, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = file_of(data, size, path, sizeof(path));

    if (fd < 0) {
        return 0;
    }
    read_only(path);
    read_write(path); /* the memfd is this input's own copy */
    close(fd);
    return 0;
}
