/* SPDX-License-Identifier: MIT */
/*
 * ops.c - what each op of a job file does, one function per op, each a
 * call into libdiskforge (never the diskforge program).  The table at the
 * end is the one place that says which ops work.
 *
 * Every function runs on a worker thread, reads its step, reports
 * progress through op_progress() (which also tells it to stop) and, on
 * failure, returns -DF_E_* with ctx->err set.  New files appear
 * atomically: df_image_create() and df_convert() build them under a
 * temporary name and rename them on success.  Ops that change an image in
 * place (write, fill, ...) do so directly, like qemu-io.
 *
 * Digests (SPEC §6): ops that write an output from start to end hash it
 * as they write and hand the digests over with op_set_digest(), so that it
 * is not read again after the step: copy (df_copy_with()), create of a raw
 * image (its bytes are zeros: hashed from a constant buffer, without
 * touching the disk) and convert (the guest-visible bytes, as the engine
 * writes them; they are the file's bytes too when the output is raw).
 * describe_outputs() puts them on the report's output entries; every
 * other output is hashed after its step by the incremental hooks.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "diskforge/ops.h"
#include "internal.h" /* df_sha256_zeros() */
#include "ops-disk.h"
#include "report.h"
#include "runner.h"

#define IO_CHUNK (1u << 20)
#define DF_MIN_U64(a, b) ((uint64_t)(a) < (uint64_t)(b) ? (uint64_t)(a) : (uint64_t)(b))

static int fail(struct op_ctx *ctx, enum df_errc code, const char *fmt, ...)
    DF_PRINTF(3, 4);

static int fail(struct op_ctx *ctx, enum df_errc code, const char *fmt, ...)
{
    char msg[sizeof(ctx->err.msg)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return df_fail(&ctx->err, code, "%s", msg);
}

static int cancelled(struct op_ctx *ctx, const char *what)
{
    return fail(ctx, DF_E_CANCELED, "'%s': interrupted", what);
}

static json_t *result_obj(struct op_ctx *ctx)
{
    if (!ctx->result) {
        ctx->result = json_object();
    }
    return ctx->result;
}

/* ---- directories and backing paths ---- */

/* mkdir -p of the directory that will hold @path. */
static int make_parent_dirs(struct op_ctx *ctx, const char *path)
{
    char *dir = strdup(path), *p;

    if (!dir) {
        return fail(ctx, DF_E_NOMEM, "out of memory");
    }
    p = strrchr(dir, '/');
    if (!p || p == dir) {
        free(dir);
        return 0;
    }
    *p = '\0';
    for (p = dir + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(dir, 0777) < 0 && errno != EEXIST) {
                int ret = df_fail_sys(&ctx->err, "cannot create directory "
                                      "'%s'", dir);
                free(dir);
                return ret;
            }
            *p = c;
            if (!c) {
                break;
            }
        }
    }
    free(dir);
    return 0;
}

/* The backing name to record in @image: relative to its directory unless
 * the step asks for an absolute path.  You own the result. */
static char *backing_name(const struct job_step *s, const char *image)
{
    char *dir, *out;

    if (s->backing_path_absolute) {
        char *cwd;
        if (s->backing[0] == '/') {
            return strdup(s->backing);
        }
        cwd = getcwd(NULL, 0);
        out = cwd ? job_path_resolve(cwd, s->backing) : NULL;
        free(cwd);
        return out;
    }
    dir = strdup(image);
    if (!dir) {
        return NULL;
    }
    if (strrchr(dir, '/')) {
        *strrchr(dir, '/') = '\0';
        if (!*dir) {
            strcpy(dir, "/");
        }
    } else {
        strcpy(dir, ".");
    }
    out = job_path_relative(dir, s->backing);
    free(dir);
    if (out && out[strcspn(out, ":/")] == ':') {
        /* "./a:b": qemu would read "a:b" as protocol "a" */
        char *dotted;
        if (asprintf(&dotted, "./%s", out) < 0) {
            dotted = NULL;
        }
        free(out);
        out = dotted;
    }
    return out;
}

static void create_opts_from_step(const struct job_step *s,
                                  struct df_create_opts *o)
{
    df_create_opts_init(o);
    o->format = s->format;
    o->size = s->size;
    o->prealloc = s->prealloc;
    if (s->format == DF_FMT_QCOW2) {
        o->cluster_size = s->cluster_size;
        o->compat = s->compat;
        o->lazy_refcounts = s->lazy_refcounts;
        o->refcount_bits = s->refcount_bits;
        o->compression = s->compression_type;
    }
}

/* ---- create, overlay, convert ---- */

/*
 * The new raw image @path reads as zeros whatever its preallocation (off,
 * falloc or full): its digest (file and guest alike) is that of its length
 * in zeros, hashed from a constant buffer, which costs the hashing (about
 * what reading it back would cost in CPU) but no I/O.  Cancellation is
 * polled between pieces; a step interrupted here fails, leaving the image
 * it made (the next run makes it again).
 */
static int digest_zeros(struct op_ctx *ctx, const char *path)
{
    unsigned char d[DF_SHA256_LEN];
    EVP_MD_CTX *md;
    struct stat st;
    uint64_t left;
    unsigned int len = 0;

    if (stat(path, &st) < 0 || !(md = EVP_MD_CTX_new())) {
        return 0; /* hashed after the step instead */
    }
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (left = (uint64_t)st.st_size; left;) {
        uint64_t n = DF_MIN_U64(left, 64u << 20);
        if (op_cancelled(ctx)) {
            EVP_MD_CTX_free(md);
            return fail(ctx, DF_E_CANCELED, "'%s': interrupted while "
                        "hashing it", path);
        }
        df_sha256_zeros(md, n);
        left -= n;
    }
    if (EVP_DigestFinal_ex(md, d, &len) == 1) {
        op_set_digest(ctx, path, d, d);
    }
    EVP_MD_CTX_free(md);
    return 0;
}

static int op_create(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_create_opts o;
    char *bname = NULL;
    int ret;

    create_opts_from_step(s, &o);
    if (s->backing) {
        bname = backing_name(s, s->image);
        if (!bname) {
            return fail(ctx, DF_E_NOMEM, "out of memory");
        }
        o.backing_file = bname;
        o.backing_format = s->backing_format;
    }
    op_progress(ctx, 0, 1);
    ret = df_image_create(s->image, &o, &ctx->err);
    op_progress(ctx, 1, 1);
    free(bname);
    if (ret == 0 && s->format == DF_FMT_RAW) {
        ret = digest_zeros(ctx, s->image);
    }
    return ret;
}

/* An overlay is a create of a qcow2 with a backing (size 0: its size). */
static int op_overlay(struct op_ctx *ctx)
{
    return op_create(ctx);
}

static int op_convert(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    unsigned char guest[DF_SHA256_LEN];
    struct df_convert_opts o;
    char *bname = NULL;
    int ret;

    df_convert_opts_init(&o);
    o.src_format = s->from_format;
    create_opts_from_step(s, &o.target);
    o.target.size = 0;
    o.sparse_size = s->sparse_size;
    if (s->compress != JOB_COMPRESS_NONE) {
        o.compress = true;
        o.target.compression = s->compress == JOB_COMPRESS_ZSTD
                                   ? DF_COMPRESS_ZSTD
                                   : DF_COMPRESS_ZLIB;
    }
    if (s->backing) {
        bname = backing_name(s, s->to);
        if (!bname) {
            return fail(ctx, DF_E_NOMEM, "out of memory");
        }
        o.target.backing_file = bname;
        o.target.backing_format = s->backing_format;
    }
    o.progress = op_progress;
    o.progress_opaque = ctx;
    o.guest_sha256 = guest;
    ret = df_convert(s->from, s->to, &o, &ctx->err);
    free(bname);
    if (ret == 0) {
        /* a raw output's file is its guest's bytes */
        op_set_digest(ctx, s->to, s->format == DF_FMT_RAW ? guest : NULL,
                      guest);
    }
    return ret;
}

/* ---- write and fill: change an image in place ---- */

static struct df_image *open_rw(struct op_ctx *ctx)
{
    return df_image_open(ctx->step->image, ctx->step->format, DF_OPEN_RDWR,
                         &ctx->err);
}

/* Close @img, keeping the first error. */
static int close_image(struct op_ctx *ctx, struct df_image *img, int ret)
{
    int cret = df_image_close(img, ret < 0 ? NULL : &ctx->err);

    return ret < 0 ? ret : cret;
}

static int check_range(struct op_ctx *ctx, struct df_image *img,
                       uint64_t off, uint64_t len)
{
    uint64_t size = df_image_size(img);

    if (off > size || len > size - off) {
        return fail(ctx, DF_E_INVAL, "'%s': %llu bytes at offset %llu do "
                    "not fit in its virtual size of %llu bytes",
                    ctx->step->image, (unsigned long long)len,
                    (unsigned long long)off, (unsigned long long)size);
    }
    return 0;
}

/* The unit in which `write` decides data or zeros: the image's cluster
 * (qcow2), else 4 KiB. */
static uint64_t write_grain(struct df_image *img)
{
    struct df_info in;
    struct df_error err = { 0 };

    if (df_image_info(img, &in, &err) == 0 && in.cluster_size >= 512 &&
        in.cluster_size <= IO_CHUNK) {
        return in.cluster_size;
    }
    return 4096;
}

/* Write @n bytes of @buf at guest offset @off, one grain at a time (grains
 * aligned in the guest): an all-zero grain as zeros, another as data. */
static int write_grains(struct op_ctx *ctx, struct df_image *img,
                        const unsigned char *buf, size_t n, uint64_t off,
                        uint64_t grain)
{
    size_t i = 0;
    int ret = 0;

    while (ret == 0 && i < n) {
        size_t len = (size_t)DF_MIN_U64(grain - (off + i) % grain, n - i);
        /* a run of pieces of one kind is one call */
        bool zero = buf[i] == 0 && !memcmp(buf + i, buf + i + 1, len - 1);
        size_t run = len;
        while (i + run < n) {
            size_t next = (size_t)DF_MIN_U64(grain, n - i - run);
            const unsigned char *p = buf + i + run;
            bool z = p[0] == 0 && !memcmp(p, p + 1, next - 1);
            if (z != zero) {
                break;
            }
            run += next;
        }
        ret = zero ? df_image_write_zeroes(img, off + i, run,
                                           DF_ZERO_MAY_UNMAP, &ctx->err)
                   : df_image_pwrite(img, buf + i, run, off + i, &ctx->err);
        i += run;
    }
    return ret;
}

/*
 * The bytes of a host file into the image.  Data or zeros is decided per
 * grain by content, never by the host file's holes, so the same bytes give
 * the same image whether the file was copied sparse or not (SPEC §6).
 * Reads are in chunks aligned to the grain in the guest.
 */
static int op_write(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_image *img = NULL;
    unsigned char *buf = NULL;
    struct stat st;
    uint64_t done = 0, len, grain = 4096;
    int fd, ret = 0;

    fd = open(s->from, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return df_fail_sys(&ctx->err, "cannot open '%s'", s->from);
    }
    if (fstat(fd, &st) < 0) {
        ret = df_fail_sys(&ctx->err, "cannot stat '%s'", s->from);
        goto out;
    }
    len = (uint64_t)st.st_size;
    img = open_rw(ctx);
    if (!img) {
        ret = -ctx->err.code;
        goto out;
    }
    ret = check_range(ctx, img, s->offset, len);
    grain = write_grain(img);
    buf = ret == 0 ? malloc(IO_CHUNK) : NULL;
    if (ret == 0 && !buf) {
        ret = fail(ctx, DF_E_NOMEM, "out of memory");
    }
    op_progress(ctx, 0, len);
    while (ret == 0 && done < len) {
        /* end each chunk on a grain boundary of the guest */
        uint64_t off = s->offset + done;
        size_t n = (size_t)DF_MIN_U64(IO_CHUNK - off % grain, len - done);
        ssize_t got = pread(fd, buf, n, (off_t)done);
        if (got <= 0) {
            ret = got < 0 ? df_fail_sys(&ctx->err, "cannot read '%s'", s->from)
                          : fail(ctx, DF_E_IO, "'%s' shrank while being "
                                 "written", s->from);
            break;
        }
        ret = write_grains(ctx, img, buf, (size_t)got, off, grain);
        done += (uint64_t)got;
        if (ret == 0 && op_progress(ctx, done, len)) {
            ret = cancelled(ctx, s->image);
        }
    }
    if (ret == 0) {
        json_object_set_new(result_obj(ctx), "bytes", json_integer((json_int_t)len));
    }
out:
    free(buf);
    if (img) {
        ret = close_image(ctx, img, ret);
    }
    close(fd);
    return ret;
}

/* splitmix64: a small, well-mixed, reproducible stream for random:SEED. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));

    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static int op_fill(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_image *img = open_rw(ctx);
    unsigned char *buf = NULL;
    uint64_t len, done = 0, state = s->pattern_seed;
    int ret;

    if (!img) {
        return -ctx->err.code;
    }
    len = job_step_has(s, JOB_KEY_LENGTH)
              ? s->length
              : (s->offset < df_image_size(img) ? df_image_size(img) - s->offset
                                                : 0);
    ret = check_range(ctx, img, s->offset, len);
    if (ret == 0 && s->pattern != JOB_PATTERN_ZERO) {
        buf = malloc(IO_CHUNK);
        if (!buf) {
            ret = fail(ctx, DF_E_NOMEM, "out of memory");
        } else if (s->pattern == JOB_PATTERN_BYTE) {
            memset(buf, s->pattern_byte, IO_CHUNK);
        }
    }
    op_progress(ctx, 0, len);
    while (ret == 0 && done < len) {
        uint64_t n = DF_MIN_U64(len - done, s->pattern == JOB_PATTERN_ZERO
                                                ? 64u * IO_CHUNK
                                                : IO_CHUNK);
        if (s->pattern == JOB_PATTERN_ZERO) {
            ret = df_image_write_zeroes(img, s->offset + done, n, 0,
                                        &ctx->err);
        } else {
            if (s->pattern == JOB_PATTERN_RANDOM) {
                for (uint64_t i = 0; i < n; i += 8) {
                    uint64_t v = splitmix64(&state);
                    memcpy(buf + i, &v, DF_MIN_U64(8, n - i));
                }
            }
            ret = df_image_pwrite(img, buf, (size_t)n, s->offset + done,
                                  &ctx->err);
        }
        done += n;
        if (ret == 0 && op_progress(ctx, done, len)) {
            ret = cancelled(ctx, s->image);
        }
    }
    if (ret == 0) {
        json_object_set_new(result_obj(ctx), "bytes",
                            json_integer((json_int_t)len));
    }
    free(buf);
    return close_image(ctx, img, ret);
}

/* ---- digest, compare, info: read only ---- */

static int op_digest(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_image *img = df_image_open(s->image, s->format, 0, &ctx->err);
    unsigned char sum[DF_SHA256_LEN];
    char hex[2 * DF_SHA256_LEN + 1];
    int ret;

    if (!img) {
        return -ctx->err.code;
    }
    ret = df_digest(img, sum, op_progress, ctx, &ctx->err);
    df_image_close(img, NULL);
    if (ret < 0) {
        return ret;
    }
    df_digest_hex(sum, hex);
    json_object_set_new(result_obj(ctx), "sha256", json_string(hex));
    if (s->sha256[0]) {
        json_object_set_new(result_obj(ctx), "expected",
                            json_string(s->sha256));
        if (strcmp(s->sha256, hex) != 0) {
            return fail(ctx, DF_E_CORRUPT, "'%s': sha256 is %s, expected %s",
                        s->image, hex, s->sha256);
        }
    }
    return 0;
}

static int op_compare(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_compare_result res = { 0 };
    struct df_image *a, *b = NULL;
    json_t *r;
    int ret;

    a = df_image_open(s->a, DF_FMT_AUTO, 0, &ctx->err);
    if (a) {
        b = df_image_open(s->b, DF_FMT_AUTO, 0, &ctx->err);
    }
    if (!a || !b) {
        df_image_close(a, NULL);
        return -ctx->err.code;
    }
    ret = df_compare(a, b, false, &res, op_progress, ctx, &ctx->err);
    df_image_close(a, NULL);
    df_image_close(b, NULL);
    if (ret < 0) {
        return ret;
    }
    r = result_obj(ctx);
    json_object_set_new(r, "identical", json_boolean(res.identical));
    json_object_set_new(r, "size_mismatch", json_boolean(res.size_mismatch));
    json_object_set_new(r, "mismatch_offset",
                        res.identical ? json_null()
                                      : json_integer((json_int_t)
                                                         res.mismatch_offset));
    if (!res.identical) {
        return fail(ctx, DF_E_CORRUPT, "'%s' and '%s' differ at offset %llu",
                    s->a, s->b, (unsigned long long)res.mismatch_offset);
    }
    return 0;
}

/* The image's header and sizes as a JSON object (also for outputs). */
static json_t *info_json(const struct df_info *in)
{
    json_t *o = json_object();

    json_object_set_new(o, "format", json_string(df_format_name(in->format)));
    json_object_set_new(o, "virtual_size",
                        json_integer((json_int_t)in->virtual_size));
    json_object_set_new(o, "actual_size",
                        json_integer((json_int_t)in->actual_size));
    json_object_set_new(o, "file_size",
                        json_integer((json_int_t)in->file_size));
    if (in->format == DF_FMT_QCOW2) {
        json_object_set_new(o, "cluster_size",
                            json_integer((json_int_t)in->cluster_size));
        json_object_set_new(o, "compat",
                            json_string(in->version == 2 ? "0.10" : "1.1"));
        json_object_set_new(o, "lazy_refcounts",
                            json_boolean(in->lazy_refcounts));
        json_object_set_new(o, "refcount_bits",
                            json_integer(in->refcount_bits));
        json_object_set_new(o, "compression_type",
                            json_string(in->compression == DF_COMPRESS_ZSTD
                                            ? "zstd"
                                            : "zlib"));
        json_object_set_new(o, "dirty", json_boolean(in->dirty));
        json_object_set_new(o, "corrupt", json_boolean(in->corrupt));
    }
    json_object_set_new(o, "backing", in->backing_file[0]
                                          ? json_string(in->backing_file)
                                          : json_null());
    json_object_set_new(o, "backing_format",
                        in->backing_format[0]
                            ? json_string(in->backing_format)
                            : json_null());
    return o;
}

static int op_info(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_image *img = df_image_open(s->image, s->format, 0, &ctx->err);
    struct df_info *in;
    json_t *chain;
    int ret = 0;

    if (!img) {
        return -ctx->err.code;
    }
    in = malloc(sizeof(*in));
    if (!in) {
        df_image_close(img, NULL);
        return fail(ctx, DF_E_NOMEM, "out of memory");
    }
    ret = df_image_info(img, in, &ctx->err);
    if (ret == 0) {
        json_decref(ctx->result);
        ctx->result = info_json(in);
        chain = json_array();
        for (struct df_image *b = df_image_backing(img); b && ret == 0;
             b = df_image_backing(b)) {
            json_t *o = json_object();
            json_object_set_new(o, "path", json_string(df_image_path(b)));
            json_object_set_new(o, "format",
                                json_string(df_format_name(
                                    df_image_format(b))));
            json_object_set_new(o, "virtual_size",
                                json_integer((json_int_t)df_image_size(b)));
            json_array_append_new(chain, o);
        }
        json_object_set_new(ctx->result, "backing_chain", chain);
    }
    free(in);
    df_image_close(img, NULL);
    return ret;
}

/* ---- check, in-place changes, copy ---- */

static int op_check(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_check_result res = { 0 };
    json_t *r;
    int ret;

    ret = df_check(s->image, s->format, s->repair, &res, NULL, NULL,
                   &ctx->err);
    if (ret < 0) {
        return ret;
    }
    r = result_obj(ctx);
    json_object_set_new(r, "corruptions", json_integer((json_int_t)res.corruptions));
    json_object_set_new(r, "leaks", json_integer((json_int_t)res.leaks));
    json_object_set_new(r, "check_errors", json_integer((json_int_t)res.check_errors));
    json_object_set_new(r, "corruptions_fixed",
                        json_integer((json_int_t)res.corruptions_fixed));
    json_object_set_new(r, "leaks_fixed", json_integer((json_int_t)res.leaks_fixed));
    json_object_set_new(r, "total_clusters",
                        json_integer((json_int_t)res.total_clusters));
    json_object_set_new(r, "allocated_clusters",
                        json_integer((json_int_t)res.allocated_clusters));
    json_object_set_new(r, "fragmented_clusters",
                        json_integer((json_int_t)res.fragmented_clusters));
    json_object_set_new(r, "compressed_clusters",
                        json_integer((json_int_t)res.compressed_clusters));
    json_object_set_new(r, "image_end_offset",
                        json_integer((json_int_t)res.image_end_offset));
    if (res.check_errors) {
        return fail(ctx, DF_E_IO, "'%s': the check could not complete "
                    "(%llu errors)", s->image,
                    (unsigned long long)res.check_errors);
    }
    if (res.corruptions != s->expect_errors || res.leaks != s->expect_leaks) {
        return fail(ctx, DF_E_CORRUPT, "'%s': %llu errors and %llu leaked "
                    "clusters, expected %llu and %llu", s->image,
                    (unsigned long long)res.corruptions,
                    (unsigned long long)res.leaks,
                    (unsigned long long)s->expect_errors,
                    (unsigned long long)s->expect_leaks);
    }
    return 0;
}

static int op_resize(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;

    return df_resize(s->image, s->format, s->size, s->prealloc, true,
                     &ctx->err);
}

static int op_commit(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;

    return df_commit(s->image, s->format, op_progress, ctx, &ctx->err);
}

static int op_rebase(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    char *bname = s->backing ? backing_name(s, s->image) : NULL;
    int ret;

    if (s->backing && !bname) {
        return fail(ctx, DF_E_NOMEM, "out of memory");
    }
    ret = df_rebase(s->image, s->format, bname, s->backing_format, s->unsafe,
                    op_progress, ctx, &ctx->err);
    free(bname);
    return ret;
}

static int op_sparsify(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    uint64_t freed = 0;
    int ret = df_sparsify(s->image, s->format, &freed, op_progress, ctx,
                          &ctx->err);

    if (ret == 0) {
        json_object_set_new(result_obj(ctx), "freed_bytes",
                            json_integer((json_int_t)freed));
    }
    return ret;
}

static int op_copy(struct op_ctx *ctx)
{
    static const enum df_sparse_mode modes[] = {
        [JOB_SPARSE_AUTO] = DF_SPARSE_AUTO,
        [JOB_SPARSE_ALWAYS] = DF_SPARSE_ALWAYS,
        [JOB_SPARSE_NEVER] = DF_SPARSE_NEVER,
    };
    const struct job_step *s = ctx->step;
    unsigned char d[DF_SHA256_LEN];
    struct df_copy_opts o;
    int ret;

    df_copy_opts_init(&o);
    o.mode = modes[s->sparse];
    o.progress = op_progress;
    o.progress_opaque = ctx;
    o.sha256 = d;
    ret = df_copy_with(s->from, s->to, &o, &ctx->err);
    if (ret == 0) {
        /* a byte copy: the guest's bytes are the file's only for a raw
         * image, which the report's hook decides from the format */
        op_set_digest(ctx, s->to, d, NULL);
    }
    return ret;
}

/* ---- command: an external program ---- */

struct file_id {
    bool exists;
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    off_t size;
};

static void file_id_of(const char *path, struct file_id *id)
{
    struct stat st;

    memset(id, 0, sizeof(*id));
    if (stat(path, &st) == 0) {
        id->exists = true;
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        id->mtime = st.st_mtim;
        id->size = st.st_size;
    }
}

static bool file_id_same(const struct file_id *a, const struct file_id *b)
{
    return a->exists == b->exists &&
           (!a->exists ||
            (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
             a->mtime.tv_sec == b->mtime.tv_sec &&
             a->mtime.tv_nsec == b->mtime.tv_nsec));
}

static void capture_add(struct capture *c, const char *p, size_t n)
{
    size_t limit = c->cap ? c->cap : OUTPUT_LIMIT;
    size_t keep = c->len < limit ? limit - c->len : 0;

    c->total += n;
    if (keep > n) {
        keep = n;
    }
    if (keep && c->buf) {
        memcpy(c->buf + c->len, p, keep);
        c->len += keep;
    }
}

int op_spawn(struct op_ctx *ctx, const char *prog, char *const argv[],
             char *const envp[], const char *dir, int out_fd, int err_fd,
             pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dfl;
    int rc;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    } else {
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    }
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    if (dir) {
        posix_spawn_file_actions_addchdir_np(&fa, dir);
    }
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    /* its own process group: cancelling kills the program and its children */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    rc = strchr(prog, '/') ? posix_spawn(pid, prog, &fa, &attr, argv, envp)
                           : posix_spawnp(pid, prog, &fa, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        errno = rc;
        return df_fail_sys(&ctx->err, "cannot run '%s' in '%s'", prog,
                           dir ? dir : ".");
    }
    return 0;
}

static int spawn_child(struct op_ctx *ctx, int out_fd, pid_t *pid)
{
    const struct job_step *s = ctx->step;
    char *sh_argv[] = { "sh", "-c", s->shell, NULL };

    return s->shell ? op_spawn(ctx, "/bin/sh", sh_argv, environ,
                               ctx->job->dir, out_fd, out_fd, pid)
                    : op_spawn(ctx, s->argv.v[0], s->argv.v, environ,
                               ctx->job->dir, out_fd, out_fd, pid);
}

static int64_t now_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read the child's output until it exits; kill it when cancelled. */
int op_supervise(struct op_ctx *ctx, int fd, pid_t pid, struct capture *cap,
                 int *status)
{
    int64_t killed_at = 0;
    bool eof = false, exited = false;
    char chunk[8192];

    while (!exited || !eof) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        int pr = eof ? 0 : poll(&pfd, 1, 100);
        if (pr > 0) {
            ssize_t n = read(fd, chunk, sizeof(chunk));
            if (n > 0) {
                capture_add(cap, chunk, (size_t)n);
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                eof = true;
            }
        }
        if (!exited) {
            pid_t w = waitpid(pid, status, WNOHANG);
            if (w == pid) {
                exited = true;
                /* a background grandchild may hold the pipe: drain briefly */
                if (!eof) {
                    struct pollfd p2 = { fd, POLLIN, 0 };
                    while (poll(&p2, 1, 50) > 0) {
                        ssize_t n = read(fd, chunk, sizeof(chunk));
                        if (n <= 0) {
                            break;
                        }
                        capture_add(cap, chunk, (size_t)n);
                    }
                    eof = true;
                }
            } else if (eof) {
                struct timespec ts = { 0, 20 * 1000000L };
                nanosleep(&ts, NULL);
            }
        }
        if (!exited && op_cancelled(ctx)) {
            int64_t now = now_mono_ms();
            if (!killed_at) {
                kill(-pid, SIGTERM);
                killed_at = now;
            } else if (now - killed_at > 2000) {
                kill(-pid, SIGKILL);
            }
        }
    }
    return killed_at ? 1 : 0;
}

static int op_command(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct capture cap = { malloc(OUTPUT_LIMIT), 0, 0, 0 };
    struct file_id *before = NULL;
    int pipefd[2], status = 0, ret = 0, killed;
    pid_t pid;
    json_t *r;

    if (!cap.buf) {
        return fail(ctx, DF_E_NOMEM, "out of memory");
    }
    before = calloc(s->outputs.n + 1, sizeof(*before));
    if (!before || pipe2(pipefd, O_CLOEXEC) < 0) {
        free(cap.buf);
        free(before);
        return before ? df_fail_sys(&ctx->err, "cannot create a pipe")
                      : fail(ctx, DF_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < s->outputs.n; i++) {
        file_id_of(s->outputs.v[i], &before[i]);
    }
    ret = spawn_child(ctx, pipefd[1], &pid);
    close(pipefd[1]);
    if (ret == 0) {
        killed = op_supervise(ctx, pipefd[0], pid, &cap, &status);
        r = result_obj(ctx);
        if (WIFEXITED(status)) {
            json_object_set_new(r, "exit_code",
                                json_integer(WEXITSTATUS(status)));
        } else {
            json_object_set_new(r, "exit_code", json_null());
            json_object_set_new(r, "signal", json_integer(WTERMSIG(status)));
        }
        json_object_set_new(r, "output", report_string(cap.buf, cap.len));
        json_object_set_new(r, "output_truncated",
                            json_boolean(cap.total > cap.len));
        if (killed) {
            ret = cancelled(ctx, s->shell ? s->shell : s->argv.v[0]);
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            /* quote the last line of output: usually the reason */
            size_t end = cap.len, start;
            while (end && (cap.buf[end - 1] == '\n' || cap.buf[end - 1] == '\r')) {
                end--;
            }
            start = end;
            while (start && cap.buf[start - 1] != '\n') {
                start--;
            }
            if (end - start > 200) {
                start = end - 200;
            }
            if (WIFEXITED(status)) {
                ret = fail(ctx, DF_E_IO, "'%s' exited with status %d%s%.*s",
                           s->shell ? s->shell : s->argv.v[0],
                           WEXITSTATUS(status), end > start ? ": " : "",
                           (int)(end - start), cap.buf + start);
            } else {
                ret = fail(ctx, DF_E_IO, "'%s' was killed by signal %d",
                           s->shell ? s->shell : s->argv.v[0],
                           WTERMSIG(status));
            }
        }
    }
    close(pipefd[0]);
    if (ret < 0) {
        /* like make's .DELETE_ON_ERROR: drop outputs the failure touched */
        for (size_t i = 0; i < s->outputs.n; i++) {
            struct file_id now;
            file_id_of(s->outputs.v[i], &now);
            if (now.exists && !file_id_same(&before[i], &now)) {
                unlink(s->outputs.v[i]);
            }
        }
    }
    free(before);
    free(cap.buf);
    return ret;
}

/* ---- before and after every op ---- */

static bool step_cancelled(void *opaque)
{
    return op_cancelled(opaque);
}

/* The backing files an untrusted step may follow (SPEC §8): what some step
 * of the job makes, and the step's allow_backing.  Borrowed strings. */
static _Thread_local const char **trusted;

static int untrusted_begin(struct op_ctx *ctx)
{
    const struct job *job = ctx->job;
    const struct job_step *s = ctx->step;
    size_t n = 0, cap = s->allow_backing.n;

    for (size_t i = 0; i < job->n_steps; i++) {
        cap += 2 + job->steps[i].outputs.n;
    }
    trusted = calloc(cap + 1, sizeof(*trusted));
    if (!trusted) {
        return fail(ctx, DF_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < job->n_steps; i++) {
        const struct job_step *o = &job->steps[i];
        if (o->image && o->op != JOB_OP_CHECK && o->op != JOB_OP_DIGEST &&
            o->op != JOB_OP_INFO) {
            trusted[n++] = o->image;
        }
        if (o->to) {
            trusted[n++] = o->to;
        }
        for (size_t j = 0; j < o->outputs.n; j++) {
            trusted[n++] = o->outputs.v[j];
        }
    }
    for (size_t j = 0; j < s->allow_backing.n; j++) {
        trusted[n++] = s->allow_backing.v[j];
    }
    df_untrusted_begin(trusted, n);
    return 0;
}

static int prepare(struct op_ctx *ctx)
{
    /* every engine loop on this thread now sees the run's cancel flag,
     * also those without a progress callback (create, resize, check) */
    df_cancel_hook(step_cancelled, ctx);
    if (ctx->step->untrusted && untrusted_begin(ctx) < 0) {
        return -ctx->err.code;
    }
    for (size_t i = 0; i < ctx->node->outputs.n; i++) {
        int ret = make_parent_dirs(ctx, ctx->node->outputs.v[i]);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* The digests the op handed over for output @k, onto its entry @o. */
static void add_digests(const struct op_ctx *ctx, size_t k, json_t *o)
{
    const struct op_digest *d = ctx->digests ? &ctx->digests[k] : NULL;
    char hex[2 * DF_SHA256_LEN + 1];

    if (d && d->has_sha256) {
        df_digest_hex(d->sha256, hex);
        json_object_set_new(o, "sha256", json_string(hex));
    }
    if (d && d->has_guest_sha256) {
        df_digest_hex(d->guest_sha256, hex);
        json_object_set_new(o, "guest_sha256", json_string(hex));
    }
}

/* Describe the files a successful step made or changed. */
static void describe_outputs(struct op_ctx *ctx, int ret)
{
    df_cancel_hook(NULL, NULL);
    df_untrusted_end();
    free(trusted);
    trusted = NULL;
    if (ret < 0) {
        return;
    }
    ctx->outputs = json_array();
    for (size_t i = 0; i < ctx->node->outputs.n; i++) {
        const char *path = ctx->node->outputs.v[i];
        struct df_error err = { 0 };
        struct df_image *img;
        struct df_info in;
        struct stat st;
        json_t *o;
        if (stat(path, &st) < 0) {
            continue;
        }
        img = S_ISREG(st.st_mode) && ctx->step->op != JOB_OP_COMMAND
                  ? df_image_open(path, DF_FMT_AUTO, DF_OPEN_NO_BACKING, &err)
                  : NULL;
        if (img && df_image_info(img, &in, &err) == 0) {
            json_t *full = info_json(&in);
            o = json_object();
            json_object_set_new(o, "path", json_string(path));
            json_object_set(o, "format", json_object_get(full, "format"));
            json_object_set(o, "virtual_size",
                            json_object_get(full, "virtual_size"));
            json_object_set(o, "actual_size",
                            json_object_get(full, "actual_size"));
            json_object_set(o, "file_size",
                            json_object_get(full, "file_size"));
            json_object_set(o, "backing", json_object_get(full, "backing"));
            json_decref(full);
        } else {
            o = json_object();
            json_object_set_new(o, "path", json_string(path));
            json_object_set_new(o, "format", json_null());
            json_object_set_new(o, "virtual_size", json_null());
            json_object_set_new(o, "actual_size",
                                json_integer((json_int_t)st.st_blocks * 512));
            json_object_set_new(o, "file_size",
                                json_integer((json_int_t)st.st_size));
            json_object_set_new(o, "backing", json_null());
        }
        df_image_close(img, NULL);
        add_digests(ctx, i, o);
        json_array_append_new(ctx->outputs, o);
    }
}

const struct op_table job_engine_ops = {
    .run = {
        [JOB_OP_CREATE] = op_create,
        [JOB_OP_OVERLAY] = op_overlay,
        [JOB_OP_COPY] = op_copy,
        [JOB_OP_CONVERT] = op_convert,
        [JOB_OP_WRITE] = op_write,
        [JOB_OP_FILL] = op_fill,
        [JOB_OP_RESIZE] = op_resize,
        [JOB_OP_COMMIT] = op_commit,
        [JOB_OP_REBASE] = op_rebase,
        [JOB_OP_SPARSIFY] = op_sparsify,
        [JOB_OP_CHECK] = op_check,
        [JOB_OP_DIGEST] = op_digest,
        [JOB_OP_COMPARE] = op_compare,
        [JOB_OP_INFO] = op_info,
        [JOB_OP_COMMAND] = op_command,
        [JOB_OP_PARTITION] = op_partition,
        [JOB_OP_FILESYSTEM] = op_filesystem,
        [JOB_OP_FILES] = op_files,
    },
    .before = prepare,
    .after = describe_outputs,
};
