/* SPDX-License-Identifier: MIT */
/*
 * admit.c - space admission before a run (admit.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "admit.h"
#include "diskforge/ops.h"
#include "internal.h" /* df_path_dir() */

/* The estimate of the last step before @i that writes @path, or -1. */
static int64_t made_by(const struct dag *dag, size_t i, const uint64_t *est,
                       const char *path)
{
    for (size_t k = i; k-- > 0;) {
        const struct dag_paths *w = &dag->nodes[k].writes;
        for (size_t j = 0; j < w->n; j++) {
            if (strcmp(w->v[j], path) == 0) {
                return (int64_t)est[k];
            }
        }
    }
    return -1;
}

/* Bytes @path holds on disk (allocated), or what the step making it was
 * estimated to write; @apparent: its length instead (copy --sparse=never,
 * write). */
static uint64_t source_bytes(const struct dag *dag, size_t i,
                             const uint64_t *est, const char *path,
                             bool apparent)
{
    struct stat st;
    int64_t e;

    if (path && stat(path, &st) == 0) {
        return apparent ? (uint64_t)st.st_size : (uint64_t)st.st_blocks * 512;
    }
    e = path ? made_by(dag, i, est, path) : -1;
    return e < 0 ? 0 : (uint64_t)e;
}

/* Virtual size of the image at @path (0 if it cannot be read now). */
static uint64_t virtual_size(const char *path)
{
    struct df_image *img = path ? df_image_open(path, DF_FMT_AUTO,
                                                DF_OPEN_METADATA |
                                                    DF_OPEN_NO_BACKING,
                                                NULL)
                                : NULL;
    uint64_t size = img ? df_image_size(img) : 0;

    df_image_close(img, NULL);
    return size;
}

/* Does step @s set the backing file of the image it writes? */
static const char *sets_backing_of(const struct job_step *s)
{
    switch (s->op) {
    case JOB_OP_CREATE:
    case JOB_OP_OVERLAY:
    case JOB_OP_REBASE:
        return s->image;
    case JOB_OP_CONVERT:
        return s->to;
    default:
        return NULL;
    }
}

/*
 * The backing file of @image as step @i finds it (malloc'd, NULL: none or
 * unknown): the one the last earlier step that made or rebased @image
 * gave it, else the one stored in the image on disk now.
 */
static char *backing_before(const struct dag *dag, size_t i, const char *image)
{
    struct df_image *img;
    struct df_info *info;
    char *out = NULL;

    for (size_t k = i; k-- > 0;) {
        const struct job_step *s = &dag->job->steps[k];
        const char *made = sets_backing_of(s);
        if (made && strcmp(made, image) == 0) {
            return s->backing ? strdup(s->backing) : NULL;
        }
    }
    img = df_image_open(image, DF_FMT_AUTO, DF_OPEN_METADATA |
                                                DF_OPEN_NO_BACKING, NULL);
    info = img ? malloc(sizeof(*info)) : NULL;
    if (info && df_image_info(img, info, NULL) == 0 &&
        info->full_backing_file[0]) {
        out = strdup(info->full_backing_file);
    }
    free(info);
    df_image_close(img, NULL);
    return out;
}

/*
 * A safe rebase's worst case: qemu-img rebase copies into the image every
 * cluster where the old and the new backing chains differ, which is at
 * most what the old chain holds (its files' allocated bytes, each file as
 * on disk, or as the step making it was estimated), and never more than
 * the image's virtual size.  An unsafe rebase changes the header only.
 */
static uint64_t rebase_bytes(const struct dag *dag, size_t i,
                             const uint64_t *est)
{
    const struct job_step *s = &dag->job->steps[i];
    uint64_t sum = 0, vsize = virtual_size(s->image);
    char *cur;

    if (s->unsafe) {
        return 0;
    }
    cur = backing_before(dag, i, s->image);
    for (int depth = 0; cur && depth < DF_MAX_BACKING_DEPTH; depth++) {
        char *next = backing_before(dag, i, cur);
        sum += source_bytes(dag, i, est, cur, false);
        free(cur);
        cur = next;
    }
    free(cur);
    return vsize && sum > vsize ? vsize : sum;
}

/* A new image's worst case, as `measure` computes it. */
static uint64_t new_image_bytes(const struct job_step *s, uint64_t size)
{
    struct df_create_opts o;
    struct df_measure m;

    if (s->format == DF_FMT_RAW) {
        return s->prealloc >= DF_PREALLOC_FALLOC ? size : 0;
    }
    df_create_opts_init(&o);
    o.size = size;
    o.prealloc = s->prealloc;
    if (s->cluster_size) {
        o.cluster_size = s->cluster_size;
    }
    if (s->refcount_bits) {
        o.refcount_bits = s->refcount_bits;
    }
    if (df_measure(NULL, &o, &m, NULL) < 0) {
        return 0;
    }
    return s->prealloc >= DF_PREALLOC_FALLOC ? m.fully_allocated
                                              : m.required;
}

uint64_t admit_estimate(const struct dag *dag, size_t i, const uint64_t *est)
{
    const struct job_step *s = &dag->job->steps[i];
    uint64_t size;

    switch (s->op) {
    case JOB_OP_CREATE:
    case JOB_OP_OVERLAY:
        size = job_step_has(s, JOB_KEY_SIZE) ? s->size
                                             : virtual_size(s->backing);
        return new_image_bytes(s, size);
    case JOB_OP_CONVERT:
        return source_bytes(dag, i, est, s->from, false);
    case JOB_OP_COPY:
        return source_bytes(dag, i, est, s->from,
                            s->sparse == JOB_SPARSE_NEVER);
    case JOB_OP_WRITE:
        return source_bytes(dag, i, est, s->from, true);
    case JOB_OP_FILL:
        if (s->pattern == JOB_PATTERN_ZERO) {
            return 0;
        }
        if (job_step_has(s, JOB_KEY_LENGTH)) {
            return s->length;
        }
        size = virtual_size(s->image);
        return size > s->offset ? size - s->offset : 0;
    case JOB_OP_RESIZE:
        if (s->prealloc < DF_PREALLOC_FALLOC) {
            return 0;
        }
        size = virtual_size(s->image);
        return s->size > size ? s->size - size : 0;
    case JOB_OP_COMMIT:
        return source_bytes(dag, i, est, s->image, false);
    case JOB_OP_REBASE:
        return rebase_bytes(dag, i, est);
    case JOB_OP_CHECK:
        return 0; /* a repair frees leaked clusters, or rewrites refcounts
                   * in place */
    case JOB_OP_COMMAND:
        return 0; /* what a program writes cannot be known (see admit.h) */
    default:
        return 0;
    }
}

/* ---- per file system ---- */

struct fsys {
    dev_t dev;
    char *dir;       /* an existing directory on it */
    uint64_t need;
    const char *example; /* an output that goes there */
};

/* The nearest existing directory above @path (malloc'd), and its stat. */
static char *existing_dir(const char *path, struct stat *st)
{
    char *dir = df_path_dir(path);

    while (dir && stat(dir, st) < 0) {
        char *up = df_path_dir(dir);
        if (up && strcmp(up, dir) == 0) {
            free(up);
            free(dir);
            return NULL;
        }
        free(dir);
        dir = up;
    }
    return dir;
}

/* The mount point of the file system holding the directory @dir. */
static void mount_point(const char *dir, dev_t dev, char *out, size_t len)
{
    char *cur = realpath(dir, NULL);

    snprintf(out, len, "%s", cur ? cur : dir);
    while (cur && strcmp(cur, "/") != 0) {
        struct stat st;
        char *up = df_path_dir(cur);
        if (!up || stat(up, &st) < 0 || st.st_dev != dev) {
            free(up);
            break;
        }
        free(cur);
        cur = up;
        snprintf(out, len, "%s", cur);
    }
    free(cur);
}

int admit_check(const struct dag *dag, const bool *skip,
                struct df_error *err)
{
    uint64_t *est = calloc(dag->n + 1, sizeof(*est));
    struct fsys *fs = calloc(dag->n + 1, sizeof(*fs));
    size_t nfs = 0;
    int ret = 0;

    if (!est || !fs) {
        free(est);
        free(fs);
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < dag->n; i++) {
        const struct dag_paths *w = &dag->nodes[i].writes;
        struct stat st;
        char *dir;
        size_t k;

        est[i] = admit_estimate(dag, i, est);
        if (skip && skip[i]) {
            continue; /* up to date: writes nothing (its estimate stays,
                       * for a later step reading what it made) */
        }
        if (!est[i] || !w->n || !(dir = existing_dir(w->v[0], &st))) {
            continue;
        }
        for (k = 0; k < nfs && fs[k].dev != st.st_dev; k++) {
        }
        if (k == nfs) {
            fs[nfs++] = (struct fsys){ .dev = st.st_dev, .dir = dir,
                                       .example = w->v[0] };
        } else {
            free(dir);
        }
        fs[k].need += est[i];
    }
    for (size_t k = 0; k < nfs && ret == 0; k++) {
        struct statvfs sv;
        uint64_t avail;
        char mnt[PATH_MAX];
        if (statvfs(fs[k].dir, &sv) < 0) {
            continue; /* cannot tell: let the steps find out */
        }
        avail = (uint64_t)sv.f_bavail * sv.f_frsize;
        if (fs[k].need > avail) {
            char hn[32], ha[32];
            mount_point(fs[k].dir, fs[k].dev, mnt, sizeof(mnt));
            df_format_size(fs[k].need, hn, sizeof(hn));
            df_format_size(avail, ha, sizeof(ha));
            ret = df_fail(err, DF_E_NOSPC, "not enough space on '%s' (the "
                          "file system of '%s'): the steps need %llu bytes "
                          "(%s), %llu bytes (%s) are free; nothing was "
                          "started (--no-space-check runs it anyway)", mnt,
                          fs[k].example, (unsigned long long)fs[k].need, hn,
                          (unsigned long long)avail, ha);
        }
    }
    for (size_t k = 0; k < nfs; k++) {
        free(fs[k].dir);
    }
    free(fs);
    free(est);
    return ret;
}
