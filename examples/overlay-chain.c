/* SPDX-License-Identifier: MIT */
/*
 * overlay-chain.c - libdiskforge from a program of your own: a base image,
 * two overlays that share it, writes through each, and what each layer
 * holds.
 *
 *   cc overlay-chain.c $(pkg-config --cflags --libs diskforge) -o overlay-chain
 *   ./overlay-chain DIR
 *
 * Makes DIR/base.qcow2 (16 MiB, "base" written at 0 and 1 MiB) and two
 * overlays on it, DIR/web.qcow2 and DIR/db.qcow2, each of which writes
 * its own name at 1 MiB.  Then, for each overlay, it reads both offsets
 * back through the chain and prints the block status of the first 2 MiB
 * with the layer each range comes from (0: the image itself, 1: its
 * backing file, and so on).  The base is opened read-only by
 * the overlays and never written.  Exits 1, with the library's message,
 * when any call fails or a byte read back is not the one written.
 */
#include <stdio.h>
#include <string.h>

#include <diskforge/image.h>

#define MIB (1024 * 1024)

static int fail(const struct df_error *err)
{
    fprintf(stderr, "overlay-chain: %s\n", err->msg);
    return 1;
}

/* Create @path (qcow2, on @backing if not NULL), write @text at each
 * offset of @offs[@n], and close it. */
static int make(const char *path, const char *backing, const char *text,
                const uint64_t *offs, int n, struct df_error *err)
{
    struct df_create_opts o;
    struct df_image *img;

    df_create_opts_init(&o);
    o.format = DF_FMT_QCOW2;
    o.size = backing ? 0 : 16 * MIB; /* 0: the backing's size */
    o.backing_file = backing;        /* stored as given: relative */
    o.backing_format = backing ? DF_FMT_QCOW2 : DF_FMT_AUTO;
    if (df_image_create(path, &o, err) < 0) {
        return -1;
    }
    img = df_image_open(path, DF_FMT_QCOW2, DF_OPEN_RDWR, err);
    if (!img) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (df_image_pwrite(img, text, strlen(text), offs[i], err) < 0) {
            df_image_close(img, NULL);
            return -1;
        }
    }
    return df_image_close(img, err);
}

/* Read the two offsets back through the chain and print the layers. */
static int show(const char *path, const char *expect_at_1m,
                struct df_error *err)
{
    struct df_image *img = df_image_open(path, DF_FMT_QCOW2, 0, err);
    char buf[16];
    uint64_t off = 0;

    if (!img) {
        return -1;
    }
    printf("%s (backing: %s)\n", path,
           df_image_backing(img) ? df_image_path(df_image_backing(img))
                                 : "none");
    for (int i = 0; i < 2; i++) {
        const char *want = i ? expect_at_1m : "base";
        memset(buf, 0, sizeof(buf));
        if (df_image_pread(img, buf, strlen(want), i ? MIB : 0, err) < 0) {
            df_image_close(img, NULL);
            return -1;
        }
        printf("  at %d MiB: \"%s\"\n", i, buf);
        if (strcmp(buf, want) != 0) {
            fprintf(stderr, "overlay-chain: %s at %d MiB reads \"%s\", "
                    "want \"%s\"\n", path, i, buf, want);
            df_image_close(img, NULL);
            return 1;
        }
    }
    while (off < 2 * MIB) {
        struct df_extent e;
        if (df_image_block_status(img, off, 2 * MIB - off, true, &e,
                                  err) < 0) {
            df_image_close(img, NULL);
            return -1;
        }
        const struct df_image *layer = img;
        for (int d = 0; d < e.depth && layer; d++) {
            layer = df_image_backing(layer);
        }
        printf("  [%7llu, %7llu) %-5s layer %d (%s)\n",
               (unsigned long long)e.start,
               (unsigned long long)(e.start + e.length),
               e.flags & DF_BLOCK_DATA ? "data" : "zero", e.depth,
               layer ? df_image_path(layer) : "below the chain: zeros");
        off = e.start + e.length;
    }
    return df_image_close(img, err);
}

int main(int argc, char **argv)
{
    static const uint64_t base_offs[] = { 0, MIB }, top_offs[] = { MIB };
    struct df_error err = { 0 };
    char base[4096], web[4096], db[4096];
    int ret;

    if (argc != 2) {
        fprintf(stderr, "usage: overlay-chain DIR\n");
        return 2;
    }
    snprintf(base, sizeof(base), "%s/base.qcow2", argv[1]);
    snprintf(web, sizeof(web), "%s/web.qcow2", argv[1]);
    snprintf(db, sizeof(db), "%s/db.qcow2", argv[1]);
    if (make(base, NULL, "base", base_offs, 2, &err) < 0 ||
        make(web, "base.qcow2", "web", top_offs, 1, &err) < 0 ||
        make(db, "base.qcow2", "db", top_offs, 1, &err) < 0) {
        return fail(&err);
    }
    ret = show(web, "web", &err);
    if (ret == 0) {
        ret = show(db, "db", &err);
    }
    if (ret == 0) {
        ret = show(base, "base", &err); /* the base: unchanged */
    }
    if (ret < 0) {
        return fail(&err);
    }
    return ret;
}
