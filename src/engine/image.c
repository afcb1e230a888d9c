/* SPDX-License-Identifier: MIT */
/*
 * image.c - the generic image layer: format probing, bounds checks, the
 * backing chain, and the names of formats and modes.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static const struct df_driver *const drivers[] = {
    &df_qcow2_driver, /* probed first: it has a magic number */
    &df_raw_driver,
};

const struct df_driver *df_driver_for(enum df_format fmt)
{
    for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++) {
        if (drivers[i]->format == fmt) {
            return drivers[i];
        }
    }
    return NULL;
}

const char *df_format_name(enum df_format fmt)
{
    switch (fmt) {
    case DF_FMT_RAW: return "raw";
    case DF_FMT_QCOW2: return "qcow2";
    case DF_FMT_AUTO: break;
    }
    return "auto";
}

int df_format_parse(const char *name, enum df_format *out)
{
    if (name && strcmp(name, "raw") == 0) {
        *out = DF_FMT_RAW;
    } else if (name && strcmp(name, "qcow2") == 0) {
        *out = DF_FMT_QCOW2;
    } else {
        return -DF_E_INVAL;
    }
    return 0;
}

static const char *const prealloc_names[] = { "off", "metadata", "falloc",
                                              "full" };

const char *df_prealloc_name(enum df_prealloc p)
{
    return (unsigned)p < 4 ? prealloc_names[p] : "?";
}

int df_prealloc_parse(const char *name, enum df_prealloc *out)
{
    for (int i = 0; name && i < 4; i++) {
        if (strcmp(name, prealloc_names[i]) == 0) {
            *out = (enum df_prealloc)i;
            return 0;
        }
    }
    return -DF_E_INVAL;
}

void df_create_opts_init(struct df_create_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->format = DF_FMT_QCOW2;
    o->cluster_size = 65536;
    o->compat = 3;
    o->refcount_bits = 16;
    o->compression = DF_COMPRESS_ZLIB;
}

char *df_path_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *d;

    if (!slash) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    d = malloc((size_t)(slash - path) + 1);
    if (d) {
        memcpy(d, path, (size_t)(slash - path));
        d[slash - path] = '\0';
    }
    return d;
}

char *df_path_relative_to(const char *base, const char *name)
{
    char *dir, *out;
    size_t n;

    /* as qemu: a name with a protocol ("file:x", "json:{...}") is taken
     * as it is, and df_filename() then decides what it means */
    if (name[0] == '/' || df_has_protocol(name)) {
        return strdup(name);
    }
    dir = df_path_dir(base);
    if (!dir) {
        return NULL;
    }
    if (strcmp(dir, ".") == 0) {
        free(dir);
        return strdup(name);
    }
    n = strlen(dir) + strlen(name) + 2;
    out = malloc(n);
    if (out) {
        snprintf(out, n, "%s/%s", dir, name);
    }
    free(dir);
    return out;
}

char *df_temp_name(const char *target)
{
    static atomic_uint counter;
    const char *slash = strrchr(target, '/');
    const char *base = slash ? slash + 1 : target;
    size_t dirlen = slash ? (size_t)(slash - target) + 1 : 0;
    size_t n = strlen(target) + 64;
    char *out = malloc(n);

    if (out) {
        /* "./" keeps a ':' in the name from reading as a protocol */
        snprintf(out, n, "%s%.*s.%s.df-%ld-%u.tmp",
                 !slash && strchr(base, ':') ? "./" : "", (int)dirlen, target,
                 base, (long)getpid(), atomic_fetch_add(&counter, 1));
    }
    return out;
}

int df_rename_into_place(const char *tmp, const char *target,
                         struct df_error *err)
{
    /* cancelled after the work was done: cancelled all the same */
    int ret = df_cancel_point(target, err);

    if (ret == 0) {
        ret = df_lock_check_replace(target, err);
    }
    if (ret == 0 && rename(tmp, target) < 0) {
        ret = df_fail_sys(err, "'%s': cannot rename the temporary file into "
                          "place", target);
    }
    return ret;
}

/* ---- file names as qemu takes them ---- */

bool df_has_protocol(const char *name)
{
    /* qemu's test: a ':' before any '/' */
    return name[strcspn(name, ":/")] == ':';
}

int df_filename(const char *name, char **path, struct df_error *err)
{
    const char *rest = name;
    int n;

    *path = NULL;
    if (!name || !*name) {
        return df_fail(err, DF_E_INVAL, "empty file name");
    }
    if (strncmp(name, "json:", 5) == 0) {
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': json: pseudo-file names "
                       "are not supported (name the image file itself)",
                       name);
    }
    if (df_has_protocol(name)) {
        n = (int)strcspn(name, ":");
        if (n != 4 || strncmp(name, "file", 4) != 0) {
            return df_fail(err, DF_E_UNSUPPORTED, "'%s': the '%.*s' protocol "
                           "is not supported: diskforge opens local files "
                           "only (a file whose name has a ':' is written "
                           "'./NAME')", name, n, name);
        }
        rest = name + 5; /* the file protocol: the rest is the path */
        if (!*rest) {
            return df_fail(err, DF_E_INVAL, "'%s': empty file name after "
                           "'file:'", name);
        }
    }
    /* as qemu does, keep a ':' left in the path from reading as a protocol */
    if (asprintf(path, "%s%s", df_has_protocol(rest) ? "./" : "", rest) < 0) {
        *path = NULL;
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", name);
    }
    return 0;
}

/* ---- I/O helpers ---- */

int df_io_pread(int fd, void *buf, size_t len, uint64_t off, const char *path,
                struct df_error *err)
{
    unsigned char *p = buf;

    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return df_fail_errno(err, DF_E_IO, "'%s': read of %zu bytes at "
                                 "offset %llu failed", path, len,
                                 (unsigned long long)off);
        }
        if (n == 0) {
            memset(p, 0, len); /* past the end of the file */
            break;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int df_io_pwrite(int fd, const void *buf, size_t len, uint64_t off,
                 const char *path, struct df_error *err)
{
    const unsigned char *p = buf;

    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return df_fail_sys(err, "'%s': write of %zu bytes at offset %llu "
                               "failed", path, len, (unsigned long long)off);
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int df_io_write_zeroes(int fd, uint64_t off, uint64_t len, const char *path,
                       struct df_error *err)
{
    size_t bsz = DF_MIN(len, (uint64_t)DF_CHUNK);
    void *z;
    int ret = 0;

    if (!len) {
        return 0;
    }
    z = calloc(1, bsz);
    if (!z) {
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", path);
    }
    while (len && ret == 0) {
        size_t n = (size_t)DF_MIN(len, (uint64_t)bsz);
        ret = df_cancel_point(path, err);
        if (ret == 0) {
            ret = df_io_pwrite(fd, z, n, off, path, err);
        }
        off += n;
        len -= n;
    }
    free(z);
    return ret;
}

int df_io_fallocate(int fd, uint64_t off, uint64_t len, const char *path,
                    struct df_error *err)
{
    /* in steps, so that a cancel is seen within one step's time */
    const uint64_t step = 1ull << 30;

    while (len) {
        uint64_t n = DF_MIN(len, step);
        int r = df_cancel_point(path, err);
        if (r < 0) {
            return r;
        }
        r = posix_fallocate(fd, (off_t)off, (off_t)n);
        if (r) {
            errno = r;
            return df_fail_sys(err, "'%s': cannot preallocate %llu bytes at "
                               "offset %llu", path, (unsigned long long)n,
                               (unsigned long long)off);
        }
        off += n;
        len -= n;
    }
    return 0;
}

int df_io_file_size(int fd, uint64_t *size, const char *path,
                    struct df_error *err)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        return df_fail_errno(err, DF_E_IO, "'%s': cannot stat", path);
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

/* ---- create ---- */

static int check_create_opts(const char *path, const struct df_create_opts *o,
                             struct df_error *err)
{
    if (o->format != DF_FMT_RAW && o->format != DF_FMT_QCOW2) {
        return df_fail(err, DF_E_INVAL, "'%s': unknown image format", path);
    }
    if ((unsigned)o->prealloc > DF_PREALLOC_FULL) {
        return df_fail(err, DF_E_INVAL, "'%s': unknown preallocation mode",
                       path);
    }
    if (o->format == DF_FMT_RAW) {
        if (o->prealloc == DF_PREALLOC_METADATA) {
            return df_fail(err, DF_E_INVAL, "'%s': preallocation 'metadata' "
                           "is only for qcow2 images", path);
        }
        if (o->backing_file) {
            return df_fail(err, DF_E_INVAL, "'%s': a raw image cannot have a "
                           "backing file", path);
        }
    }
    if (o->size > (uint64_t)INT64_MAX) {
        return df_fail(err, DF_E_INVAL, "'%s': image size too large", path);
    }
    return 0;
}

int df_image_create_at(const char *path, const struct df_create_opts *o,
                       struct df_error *err)
{
    const struct df_driver *drv;
    struct df_create_opts opts = *o;
    int fd, ret;

    ret = check_create_opts(path, o, err);
    if (ret < 0) {
        return ret;
    }
    if (opts.backing_file && opts.backing_format == DF_FMT_AUTO) {
        /* a probed format recorded in a header is a known hole: a raw
         * disk whose guest wrote a qcow2 header would be read as qcow2 */
        return df_fail(err, DF_E_INVAL, "'%s': backing file '%s' given "
                       "without its format (a backing file's format is "
                       "never probed: give raw or qcow2)", path,
                       opts.backing_file);
    }
    if (opts.backing_file) {
        /* validate the backing file, and take its size if none was given */
        char *bpath = df_path_relative_to(path, opts.backing_file);
        struct df_image *b;
        if (!bpath) {
            return df_fail(err, DF_E_NOMEM, "'%s': out of memory", path);
        }
        b = df_image_open(bpath, opts.backing_format, 0, err);
        free(bpath);
        if (!b) {
            df_error_prefix(err, "'%s': cannot open backing file: ", path);
            return -err->code;
        }
        if (!opts.size) {
            opts.size = df_image_size(b);
        }
        df_image_close(b, NULL);
    }
    /* whole 512-byte sectors, as qemu-img makes images of both formats */
    opts.size = DF_ROUND_UP(opts.size, 512);
    drv = df_driver_for(opts.format);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        return df_fail_sys(err, "'%s': cannot create", path);
    }
    /* a temporary being written is locked like any image being written */
    ret = df_lock_take(fd, path, DF_LOCK_WRITE, err);
    if (ret == 0) {
        ret = drv->create(fd, path, &opts, err);
    }
    if (df_lock_close(fd) < 0 && ret == 0) {
        ret = df_fail_sys(err, "'%s': close failed", path);
    }
    return ret;
}

int df_image_create(const char *name, const struct df_create_opts *o,
                    struct df_error *err)
{
    char *path, *tmp;
    int ret = df_filename(name, &path, err);

    if (ret < 0) {
        return ret;
    }
    /* an image someone uses is not replaced under them */
    ret = df_lock_check_replace(path, err);
    if (ret < 0) {
        free(path);
        return ret;
    }
    tmp = df_temp_name(path);
    if (!tmp) {
        free(path);
        return df_fail(err, DF_E_NOMEM, "'%s': out of memory", name);
    }
    ret = df_image_create_at(tmp, o, err);
    if (ret == 0) {
        ret = df_rename_into_place(tmp, path, err);
    }
    if (ret < 0) {
        unlink(tmp);
        /* name the file the user asked for, not the temporary */
        if (err && strstr(err->msg, tmp)) {
            char msg[sizeof(err->msg)];
            char *at = strstr(err->msg, tmp);
            snprintf(msg, sizeof(msg), "%.*s%s%s", (int)(at - err->msg),
                     err->msg, path, at + strlen(tmp));
            memcpy(err->msg, msg, sizeof(msg));
        }
    }
    free(tmp);
    free(path);
    return ret;
}

/* ---- open / close ---- */

/* The untrusted-image policy of this thread (df_untrusted_begin()). */
static _Thread_local struct {
    bool on;
    const char *const *allowed;
    size_t n;
} untrusted;

void df_untrusted_begin(const char *const *allowed, size_t n)
{
    untrusted.on = true;
    untrusted.allowed = allowed;
    untrusted.n = n;
}

void df_untrusted_end(void)
{
    memset(&untrusted, 0, sizeof(untrusted));
}

/* Is the file at @real (a real path) one the policy lists? */
static bool untrusted_listed(const char *real)
{
    for (size_t i = 0; i < untrusted.n; i++) {
        char *r = realpath(untrusted.allowed[i], NULL);
        bool same = r && strcmp(r, real) == 0;
        free(r);
        if (same) {
            return true;
        }
    }
    return false;
}

/* Is @real inside the directory @dir (both real paths)? */
static bool path_inside(const char *real, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(real, dir, n) == 0 &&
           (real[n] == '/' || (n == 1 && dir[0] == '/'));
}

/*
 * May the untrusted image @top be read through the backing file named
 * @name, whose real path is @real?  0, or -DF_E_INVAL naming it.
 */
static int untrusted_backing_ok(const struct df_image *top, const char *cur,
                                const char *name, const char *real,
                                struct df_error *err)
{
    char *dir, *topreal;
    bool inside;

    if (untrusted_listed(real)) {
        return 0;
    }
    if (name[0] == '/' || df_has_protocol(name)) {
        return df_fail(err, DF_E_INVAL, "'%s': untrusted image: backing "
                       "file '%s' is refused (an absolute name; list it in "
                       "allow_backing to follow it)", cur, name);
    }
    topreal = realpath(top->path, NULL);
    dir = topreal ? df_path_dir(topreal) : NULL;
    inside = dir && path_inside(real, dir);
    free(dir);
    free(topreal);
    if (!inside) {
        return df_fail(err, DF_E_INVAL, "'%s': untrusted image: backing "
                       "file '%s' is refused (it leaves the image's "
                       "directory; list it in allow_backing to follow it)",
                       cur, name);
    }
    return 0;
}

static bool chain_has(const char *const *seen, int n, const char *real)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(seen[i], real) == 0) {
            return true;
        }
    }
    return false;
}

/* The locks an open with @flags takes (lock.c). */
static enum df_lock_mode open_lock_mode(const struct df_driver *drv,
                                        unsigned flags)
{
    if (flags & DF_OPEN_RDWR) {
        return DF_LOCK_WRITE;
    }
    if (flags & DF_OPEN_SHARE) {
        return DF_LOCK_SHARE_ALL;
    }
    if (flags & DF_OPEN_METADATA) {
        /* as qemu-img info: a qcow2's metadata must not change under
         * it; a raw image has none */
        return drv->format == DF_FMT_QCOW2 ? DF_LOCK_METADATA : DF_LOCK_NONE;
    }
    return DF_LOCK_READ;
}

static struct df_image *open_one(const char *path, enum df_format fmt,
                                 unsigned flags, struct df_error *err)
{
    struct df_image *img;
    const struct df_driver *drv = NULL;
    struct stat st;
    int ret;

    img = calloc(1, sizeof(*img));
    if (!img || !(img->path = strdup(path))) {
        free(img);
        df_fail(err, DF_E_NOMEM, "'%s': out of memory", path);
        return NULL;
    }
    img->fd = open(path, ((flags & DF_OPEN_RDWR) ? O_RDWR : O_RDONLY) |
                             O_CLOEXEC);
    if (img->fd < 0) {
        df_fail_sys(err, "cannot open '%s'", path);
        goto fail;
    }
    if (fstat(img->fd, &st) < 0 || !(S_ISREG(st.st_mode) ||
                                     S_ISBLK(st.st_mode))) {
        df_fail(err, DF_E_INVAL, "'%s' is not a regular file", path);
        goto fail;
    }
    img->writable = flags & DF_OPEN_RDWR;
    if (fmt == DF_FMT_AUTO) {
        unsigned char head[512];
        if (df_io_pread(img->fd, head, sizeof(head), 0, path, err) < 0) {
            goto fail;
        }
        for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++) {
            if (drivers[i]->probe(head, sizeof(head))) {
                drv = drivers[i];
                break;
            }
        }
    } else {
        drv = df_driver_for(fmt);
    }
    if (!drv) {
        df_fail(err, DF_E_INVAL, "'%s': unknown image format", path);
        goto fail;
    }
    img->drv = drv;
    if (df_lock_take(img->fd, path, open_lock_mode(drv, flags), err) < 0) {
        goto fail;
    }
    img->hostmap = df_hostmap_new();
    if (!img->hostmap) {
        df_fail(err, DF_E_NOMEM, "'%s': out of memory", path);
        goto fail;
    }
    pthread_mutex_init(&img->lock, NULL);
    ret = drv->open(img, flags, err);
    if (ret < 0) {
        pthread_mutex_destroy(&img->lock);
        img->drv = NULL;
        goto fail;
    }
    return img;
fail:
    if (img->fd >= 0) {
        df_lock_close(img->fd);
    }
    df_hostmap_free(img->hostmap);
    free(img->path);
    free(img);
    return NULL;
}

char *df_backing_path(const char *image, const char *backing,
                      struct df_error *err)
{
    char *joined = df_path_relative_to(image, backing), *path = NULL;

    if (!joined) {
        df_fail(err, DF_E_NOMEM, "out of memory");
        return NULL;
    }
    df_filename(joined, &path, err);
    free(joined);
    return path;
}

/*
 * Open the backing chain of @top iteratively: each layer names the next.
 * Loops are found by comparing canonical paths.
 */
static int open_backing_chain(struct df_image *top, unsigned flags,
                              struct df_error *err)
{
    const char *seen[DF_MAX_BACKING_DEPTH + 2];
    char *owned[DF_MAX_BACKING_DEPTH + 2];
    int nseen = 0, ret = 0;
    struct df_image *cur = top;

    owned[0] = realpath(top->path, NULL);
    if (!owned[0]) {
        return df_fail_errno(err, DF_E_IO, "'%s': cannot resolve path",
                             top->path);
    }
    seen[nseen++] = owned[0];
    for (int depth = 1;; depth++) {
        struct df_info info;
        enum df_format bfmt = DF_FMT_AUTO;
        char *bpath, *real;

        if (cur->drv->format != DF_FMT_QCOW2) {
            break;
        }
        if (cur->drv->info(cur, &info, err) < 0) {
            ret = -err->code;
            break;
        }
        if (!info.backing_file[0]) {
            break;
        }
        if (depth > DF_MAX_BACKING_DEPTH) {
            ret = df_fail(err, DF_E_INVAL, "'%s': backing chain deeper than "
                          "%d images", top->path, DF_MAX_BACKING_DEPTH);
            break;
        }
        if (untrusted.on && !info.backing_format[0]) {
            ret = df_fail(err, DF_E_INVAL, "'%s': untrusted image: backing "
                          "file '%s' has no recorded format (untrusted "
                          "images are never probed)", cur->path,
                          info.backing_file);
            break;
        }
        if (info.backing_format[0] &&
            df_format_parse(info.backing_format, &bfmt) < 0) {
            ret = df_fail(err, DF_E_UNSUPPORTED, "'%s': unknown backing "
                          "format '%s'", cur->path, info.backing_format);
            break;
        }
        bpath = df_backing_path(cur->path, info.backing_file, err);
        if (!bpath) {
            df_error_prefix(err, "'%s': cannot open backing file: ",
                            cur->path);
            ret = -err->code;
            break;
        }
        real = realpath(bpath, NULL);
        if (untrusted.on && !real &&
            (info.backing_file[0] == '/' ||
             df_has_protocol(info.backing_file) ||
             strstr(info.backing_file, ".."))) {
            /* refused for its name even when it does not exist */
            ret = untrusted_backing_ok(top, cur->path, info.backing_file, "",
                                       err);
        }
        if (ret < 0) {
            free(bpath);
            break;
        }
        if (!real) {
            /* qemu's wording, after the name of the image */
            ret = df_fail_sys(err, "'%s': Could not open backing file: "
                              "Could not open '%s'", cur->path, bpath);
            free(bpath);
            break;
        }
        if (untrusted.on) {
            ret = untrusted_backing_ok(top, cur->path, info.backing_file,
                                       real, err);
            if (ret < 0) {
                free(real);
                free(bpath);
                break;
            }
        }
        if (chain_has(seen, nseen, real)) {
            ret = df_fail(err, DF_E_INVAL, "'%s': Backing file '%s' creates "
                          "an infinite loop.", cur->path, info.backing_file);
            free(real);
            free(bpath);
            break;
        }
        owned[nseen] = real;
        seen[nseen++] = real;
        /* read-only; shared as the top is (qemu-img -U shares them all;
         * info's opens read metadata only) */
        cur->backing = open_one(bpath, bfmt,
                                flags & (DF_OPEN_SHARE | DF_OPEN_METADATA),
                                err);
        free(bpath);
        if (!cur->backing) {
            df_error_prefix(err, "'%s': Could not open backing file: ",
                            cur->path);
            ret = -err->code;
            break;
        }
        cur = cur->backing;
    }
    for (int i = 0; i < nseen; i++) {
        free(owned[i]);
    }
    return ret;
}

struct df_image *df_image_open(const char *name, enum df_format fmt,
                               unsigned flags, struct df_error *err)
{
    struct df_image *img = NULL;
    char *path;

    if (untrusted.on && fmt == DF_FMT_AUTO) {
        df_fail(err, DF_E_INVAL, "'%s': untrusted image: its format must be "
                "given (untrusted images are never probed)", name);
        return NULL;
    }
    if (df_filename(name, &path, err) == 0) {
        img = open_one(path, fmt, flags, err);
        free(path);
    }
    if (img && !(flags & DF_OPEN_NO_BACKING) &&
        open_backing_chain(img, flags, err) < 0) {
        df_image_close(img, NULL);
        return NULL;
    }
    return img;
}

int df_image_close(struct df_image *img, struct df_error *err)
{
    int ret = 0;

    while (img) {
        struct df_image *next = img->backing;
        if (img->writable) {
            int r = img->drv->flush(img, err);
            if (r < 0 && ret == 0) {
                ret = r;
            }
        }
        img->drv->close(img);
        if (df_lock_close(img->fd) < 0 && ret == 0) {
            ret = df_fail_sys(err, "'%s': close failed", img->path);
        }
        pthread_mutex_destroy(&img->lock);
        df_hostmap_free(img->hostmap);
        free(img->path);
        free(img);
        img = next;
    }
    return ret;
}

uint64_t df_image_size(const struct df_image *img)
{
    return img->size;
}

enum df_format df_image_format(const struct df_image *img)
{
    return img->drv->format;
}

const char *df_image_path(const struct df_image *img)
{
    return img->path;
}

struct df_image *df_image_backing(const struct df_image *img)
{
    return img->backing;
}

/* ---- I/O ---- */

static int check_range(struct df_image *img, uint64_t off, uint64_t len,
                       struct df_error *err)
{
    if (off > img->size || len > img->size - off) {
        return df_fail(err, DF_E_INVAL, "'%s': request at offset %llu, "
                       "length %llu is beyond the image size %llu", img->path,
                       (unsigned long long)off, (unsigned long long)len,
                       (unsigned long long)img->size);
    }
    return 0;
}

static int check_writable(struct df_image *img, struct df_error *err)
{
    if (!img->writable) {
        return df_fail(err, DF_E_INVAL, "'%s' is open read-only", img->path);
    }
    return 0;
}

int df_image_pread(struct df_image *img, void *buf, size_t len, uint64_t off,
                   struct df_error *err)
{
    int ret = check_range(img, off, len, err);
    return ret < 0 || !len ? ret : img->drv->pread(img, buf, len, off, err);
}

int df_image_pwrite(struct df_image *img, const void *buf, size_t len,
                    uint64_t off, struct df_error *err)
{
    int ret = check_writable(img, err);
    if (ret == 0) {
        ret = check_range(img, off, len, err);
    }
    return ret < 0 || !len ? ret : img->drv->pwrite(img, buf, len, off, err);
}

int df_image_write_zeroes(struct df_image *img, uint64_t off, uint64_t len,
                          unsigned flags, struct df_error *err)
{
    int ret = check_writable(img, err);
    if (ret == 0) {
        ret = check_range(img, off, len, err);
    }
    return ret < 0 || !len ? ret
                           : img->drv->write_zeroes(img, off, len, flags, err);
}

int df_image_flush(struct df_image *img, struct df_error *err)
{
    return img->writable ? img->drv->flush(img, err) : 0;
}

int df_image_read_backing(struct df_image *img, void *buf, size_t len,
                          uint64_t off, struct df_error *err)
{
    struct df_image *b = img->backing;
    size_t n = 0;

    if (b && off < b->size) {
        n = (size_t)DF_MIN((uint64_t)len, b->size - off);
        int ret = b->drv->pread(b, buf, n, off, err);
        if (ret < 0) {
            return ret;
        }
    }
    memset((char *)buf + n, 0, len - n);
    return 0;
}

int df_image_block_status(struct df_image *img, uint64_t off, uint64_t len,
                          bool follow_backing, struct df_extent *ext,
                          struct df_error *err)
{
    struct df_image *cur = img;
    int depth = 0, ret;

    if (off >= img->size) {
        return df_fail(err, DF_E_INVAL, "'%s': block status at offset %llu "
                       "is beyond the image size", img->path,
                       (unsigned long long)off);
    }
    len = DF_MIN(len, img->size - off);
    for (;;) {
        ret = cur->drv->block_status(cur, off, len, ext, err);
        if (ret < 0) {
            return ret;
        }
        ext->depth = depth;
        if (ext->flags) {
            return 0;
        }
        /* unallocated in this layer */
        len = ext->length;
        if (!cur->backing || !follow_backing) {
            /* a layer not opened (DF_OPEN_NO_BACKING) reads as zeros */
            ext->depth = depth + (cur->backed ? 1 : 0);
            if (!cur->backed || follow_backing) {
                ext->flags = DF_BLOCK_ZERO;
            }
            ext->host_offset = DF_NO_OFFSET;
            return 0;
        }
        cur = cur->backing;
        depth++;
        if (off >= cur->size) {
            /* past the end of the backing file: zeros */
            ext->start = off;
            ext->length = len;
            ext->flags = DF_BLOCK_ZERO;
            ext->depth = depth;
            ext->host_offset = DF_NO_OFFSET;
            return 0;
        }
        len = DF_MIN(len, cur->size - off);
    }
}

int df_image_info(struct df_image *img, struct df_info *info,
                  struct df_error *err)
{
    struct stat st;
    int ret;

    memset(info, 0, sizeof(*info));
    ret = img->drv->info(img, info, err);
    if (ret < 0) {
        return ret;
    }
    info->format = img->drv->format;
    info->virtual_size = img->size;
    if (fstat(img->fd, &st) < 0) {
        return df_fail_errno(err, DF_E_IO, "'%s': cannot stat", img->path);
    }
    info->actual_size = (uint64_t)st.st_blocks * 512;
    info->file_size = (uint64_t)st.st_size;
    if (info->backing_file[0]) {
        char *full = df_path_relative_to(img->path, info->backing_file);
        if (full) {
            snprintf(info->full_backing_file,
                     sizeof(info->full_backing_file), "%s", full);
            free(full);
        }
    }
    return 0;
}
