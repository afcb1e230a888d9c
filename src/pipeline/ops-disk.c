/* SPDX-License-Identifier: MIT */
/*
 * ops-disk.c - disk layouts (SPEC §9): the `partition` op writes a GPT
 * through the engine; the `filesystem` op builds a file system with the
 * tool that owns the format in a temporary file the size of the
 * partition, then writes it into the partition through the engine.
 *
 * Reproducibility: GUIDs, UUIDs, volume ids and hash seeds left out of the
 * job are derived (df_guid_derive()) from the job name, the step id and
 * the partition name; every time a file system records is
 * SOURCE_DATE_EPOCH from the environment, else DF_DEFAULT_EPOCH.  mke2fs
 * -d copies the source files' times and owners, so they are set
 * afterwards in the inode tables (ext4-fix.c); the files op sets those of
 * what it writes with debugfs; mkfs.fat 4.2 and mtools 4.0.32 take
 * SOURCE_DATE_EPOCH
 * themselves.  Directories are walked in byte order of their names, never
 * in readdir order, so the host file system does not change the bytes.
 */
#include "ops-disk.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "diskforge/image.h"
#include "diskforge/ops.h" /* df_image_fill() */

/* 1980-01-01T00:00:00Z: the first time FAT can record, fine for ext4. */
#define DF_DEFAULT_EPOCH 315532800LL
#define COPY_CHUNK (1u << 20)
/* The unit in which the file-system ops compare with the image and tell
 * data from zeros: a default qcow2 cluster.  A smaller one splits the
 * writes of a file system full of small files into many (a cluster is
 * allocated whole anyway), and rewriting equal bytes changes nothing. */
#define ZERO_GRAIN (64u << 10)
/* How much of debugfs's `ls -p` output the files op reads (a directory of
 * 100,000 entries is about 5 MiB). */
#define LISTING_LIMIT (64u << 20)

extern char **environ;

json_t *gpt_partitions_json(const struct df_gpt *g)
{
    json_t *arr = json_array();

    for (size_t i = 0; i < g->n_parts; i++) {
        const struct df_gpt_part *p = &g->parts[i];
        char type[37], guid[37];
        df_guid_format(&p->type, true, type);
        df_guid_format(&p->guid, true, guid);
        json_array_append_new(
            arr, json_pack("{s:I, s:s, s:s, s:s, s:I, s:I}", "number",
                           (json_int_t)p->index + 1, "name", p->name,
                           "type", type, "guid", guid, "start",
                           (json_int_t)(p->first_lba * DF_GPT_SECTOR),
                           "size",
                           (json_int_t)((p->last_lba - p->first_lba + 1) *
                                        DF_GPT_SECTOR)));
    }
    return arr;
}

static json_t *result_of(struct op_ctx *ctx)
{
    if (!ctx->result) {
        ctx->result = json_object();
    }
    return ctx->result;
}

static int finish_image(struct op_ctx *ctx, struct df_image *img, int ret)
{
    int cret = df_image_close(img, ret < 0 ? NULL : &ctx->err);

    return ret < 0 ? ret : cret;
}

/* ---- partition ---- */

int op_partition(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_gpt *g = calloc(1, sizeof(*g));
    struct df_gpt_want *want = calloc(s->n_parts + 1, sizeof(*want));
    const char **names = calloc(s->n_parts + 1, sizeof(*names));
    struct df_image *img = NULL;
    char guid[37];
    int ret;

    if (!g || !want || !names) {
        ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        goto out;
    }
    img = df_image_open(s->image, s->format, DF_OPEN_RDWR, &ctx->err);
    if (!img) {
        ret = -ctx->err.code;
        goto out;
    }
    for (size_t i = 0; i < s->n_parts; i++) {
        want[i].size = s->parts[i].size;
        want[i].rest = s->parts[i].rest;
        names[i] = s->parts[i].name;
    }
    ret = df_gpt_layout(g, df_image_size(img), want, names, s->n_parts,
                        &ctx->err);
    if (ret < 0) {
        df_error_prefix(&ctx->err, "'%s': ", s->image);
        goto out;
    }
    if (job_step_has(s, JOB_KEY_DISK_GUID)) {
        g->disk_guid = s->disk_guid;
    } else {
        const char *parts[] = { ctx->job->name, s->id, "disk" };
        df_guid_derive(parts, 3, &g->disk_guid);
    }
    for (size_t i = 0; i < s->n_parts; i++) {
        const struct job_part *jp = &s->parts[i];
        struct df_gpt_part *p = &g->parts[i];
        p->type = jp->type;
        p->attributes = jp->attributes;
        snprintf(p->name, sizeof(p->name), "%s", jp->name);
        if (jp->has_guid) {
            p->guid = jp->guid;
        } else {
            const char *parts[] = { ctx->job->name, s->id, "partition",
                                    jp->name };
            df_guid_derive(parts, 4, &p->guid);
        }
    }
    op_progress(ctx, 0, 1);
    ret = df_gpt_write(img, g, &ctx->err);
    op_progress(ctx, 1, 1);
    if (ret == 0) {
        df_guid_format(&g->disk_guid, true, guid);
        json_object_set_new(result_of(ctx), "table", json_string("gpt"));
        json_object_set_new(result_of(ctx), "disk_guid", json_string(guid));
        json_object_set_new(result_of(ctx), "partitions",
                            gpt_partitions_json(g));
    }
out:
    if (img) {
        ret = finish_image(ctx, img, ret);
    }
    free(g);
    free(want);
    free(names);
    return ret;
}

/* ---- running the file-system tools ---- */

struct tool {
    const char *name;
    const char *package;
};

static const struct tool tool_mke2fs = { "mke2fs", "e2fsprogs" };
static const struct tool tool_debugfs = { "debugfs", "e2fsprogs" };
static const struct tool tool_mkfs_vfat = { "mkfs.vfat", "dosfstools" };
static const struct tool tool_mmd = { "mmd", "mtools" };
static const struct tool tool_mcopy = { "mcopy", "mtools" };

/* The program's path: PATH first, then /usr/sbin and /sbin (where Debian
 * keeps mke2fs and mkfs.vfat, outside a normal user's PATH); only the
 * directories of DISKFORGE_TOOL_PATH when that is set (to pin the tools'
 * versions, and for tests). */
static char *find_tool(const char *name)
{
    const char *env = getenv("PATH"), *pin = getenv("DISKFORGE_TOOL_PATH");
    char *path = NULL, *dirs, *save = NULL;

    if (pin ? asprintf(&dirs, "%s", pin) < 0
            : asprintf(&dirs, "%s:/usr/sbin:/sbin",
                       env ? env : "/usr/bin:/bin") < 0) {
        return NULL;
    }
    for (char *d = strtok_r(dirs, ":", &save); d;
         d = strtok_r(NULL, ":", &save)) {
        if (asprintf(&path, "%s/%s", *d ? d : ".", name) < 0) {
            path = NULL;
            break;
        }
        if (access(path, X_OK) == 0) {
            break;
        }
        free(path);
        path = NULL;
    }
    free(dirs);
    return path;
}

struct fs_env {
    char **envp;
    size_t n;
};

/* environ without the variables we set, then ours. */
static int env_build(struct fs_env *e, long long epoch)
{
    static const char *const ours[] = { "SOURCE_DATE_EPOCH=",
                                        "E2FSPROGS_FAKE_TIME=",
                                        "MTOOLS_SKIP_CHECK=", "LC_ALL=",
                                        "TZ=" };
    size_t n = 0;

    while (environ[n]) {
        n++;
    }
    e->envp = calloc(n + 6, sizeof(*e->envp));
    e->n = 0;
    if (!e->envp) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        bool skip = false;
        for (size_t k = 0; k < 5; k++) {
            skip |= !strncmp(environ[i], ours[k], strlen(ours[k]));
        }
        if (!skip) {
            e->envp[e->n++] = strdup(environ[i]);
        }
    }
    if (asprintf(&e->envp[e->n++], "SOURCE_DATE_EPOCH=%lld", epoch) < 0 ||
        asprintf(&e->envp[e->n++], "E2FSPROGS_FAKE_TIME=%lld", epoch) < 0) {
        return -1;
    }
    e->envp[e->n++] = strdup("MTOOLS_SKIP_CHECK=1");
    e->envp[e->n++] = strdup("LC_ALL=C");
    /* mtools writes local time: make it UTC, as the FAT code below */
    e->envp[e->n++] = strdup("TZ=UTC");
    for (size_t i = 0; i < e->n; i++) {
        if (!e->envp[i]) {
            return -1;
        }
    }
    return 0;
}

static void env_release(struct fs_env *e)
{
    for (size_t i = 0; e->envp && i < e->n; i++) {
        free(e->envp[i]);
    }
    free(e->envp);
}

/* @cap's text for a message: at most 300 bytes from its end, lines joined
 * with "; " (a tool's reason is often not on its last line). */
static void output_text(const struct capture *cap, char *out, size_t size)
{
    size_t b = cap->len > 300 ? cap->len - 300 : 0, o = 0;

    for (size_t i = b; i < cap->len && o + 3 < size; i++) {
        char c = cap->buf[i];
        if (c == '\n' || c == '\r') {
            if (o && i + 1 < cap->len && out[o - 1] != ' ') {
                out[o++] = ';';
                out[o++] = ' ';
            }
        } else {
            out[o++] = c;
        }
    }
    while (o && (out[o - 1] == ' ' || out[o - 1] == ';')) {
        o--;
    }
    out[o] = '\0';
}

/*
 * Run tool @t with @argv (argv[0] is replaced by its path) in the current
 * directory (the step's paths are resolved already).  A missing tool names
 * its Debian package; a failure quotes the end of its output.  With @out,
 * the output is left there (the caller frees out->buf), kept up to
 * out->cap bytes (0: OUTPUT_LIMIT); with @errors_only, standard output
 * goes to /dev/null and only standard error is captured.
 */
static int run_tool(struct op_ctx *ctx, const struct tool *t, char **argv,
                    const struct fs_env *env, struct capture *out,
                    bool errors_only)
{
    size_t limit = out && out->cap ? out->cap : OUTPUT_LIMIT;
    struct capture cap = { malloc(limit), 0, 0, limit };
    char *prog = find_tool(t->name);
    int pipefd[2], status = 0, ret;
    char *argv0 = argv[0];
    pid_t pid;

    if (!prog) {
        free(cap.buf);
        return df_fail(&ctx->err, DF_E_NOENT, "step '%s' needs %s, which "
                       "is not installed (apt-get install %s)",
                       ctx->step->id, t->name, t->package);
    }
    if (!cap.buf || pipe2(pipefd, O_CLOEXEC) < 0) {
        ret = cap.buf ? df_fail_sys(&ctx->err, "cannot create a pipe")
                      : df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        free(cap.buf);
        free(prog);
        return ret;
    }
    argv[0] = prog;
    ret = op_spawn(ctx, prog, argv, env->envp, NULL,
                   errors_only ? -1 : pipefd[1], pipefd[1], &pid);
    close(pipefd[1]);
    if (ret == 0) {
        int killed = op_supervise(ctx, pipefd[0], pid, &cap, &status);
        char text[320];
        output_text(&cap, text, sizeof(text));
        if (killed) {
            ret = df_fail(&ctx->err, DF_E_CANCELED, "'%s': interrupted",
                          t->name);
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ret = df_fail(&ctx->err, DF_E_IO, "%s failed (%s %d)%s%s",
                          t->name, WIFEXITED(status) ? "exit status"
                                                     : "signal",
                          WIFEXITED(status) ? WEXITSTATUS(status)
                                            : WTERMSIG(status),
                          *text ? ": " : "", text);
        }
    }
    close(pipefd[0]);
    argv[0] = argv0;
    free(prog);
    if (out && ret == 0) {
        *out = cap;
    } else {
        free(cap.buf);
    }
    return ret;
}

/* ---- a growing argv ---- */

struct args {
    char **v;
    size_t n, cap;
    bool oom;
};

static void arg_add(struct args *a, const char *s)
{
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 32;
        char **v = realloc(a->v, cap * sizeof(*v));
        if (!v) {
            a->oom = true;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n] = strdup(s);
    if (!a->v[a->n]) {
        a->oom = true;
        return;
    }
    a->v[++a->n] = NULL;
}

DF_PRINTF(2, 3)
static void arg_addf(struct args *a, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) {
        s = NULL;
    }
    va_end(ap);
    if (!s) {
        a->oom = true;
        return;
    }
    arg_add(a, s);
    free(s);
}

static void args_release(struct args *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->v[i]);
    }
    free(a->v);
    memset(a, 0, sizeof(*a));
}

/* Run tool @t with the arguments of @a, then release them. */
static int run_args(struct op_ctx *ctx, const struct tool *t, struct args *a,
                    const struct fs_env *env, struct capture *out,
                    bool errors_only)
{
    int ret = a->oom ? df_fail(&ctx->err, DF_E_NOMEM, "out of memory")
                     : run_tool(ctx, t, a->v, env, out, errors_only);

    args_release(a);
    return ret;
}

/* mke2fs and mkfs.vfat: the step's `options`, then the file, and run. */
static int run_mkfs(struct op_ctx *ctx, const struct tool *t, struct args *a,
                    const char *tmp, const struct fs_env *env)
{
    for (size_t i = 0; i < ctx->step->options.n; i++) {
        arg_add(a, ctx->step->options.v[i]);
    }
    arg_add(a, tmp);
    return run_args(ctx, t, a, env, NULL, false);
}

/* ---- walking the source tree in name order ---- */

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int not_dots(const struct dirent *d)
{
    return strcmp(d->d_name, ".") && strcmp(d->d_name, "..");
}

/*
 * Call @fn for every entry under @root/@rel (rel "" is the root itself,
 * not visited), directories before what they hold, names in byte order.
 */
typedef int (*walk_fn)(void *opaque, const char *rel, const struct stat *st);

static int walk(struct op_ctx *ctx, const char *root, const char *rel,
                walk_fn fn, void *opaque)
{
    struct dirent **ents = NULL;
    char *dir;
    int n, ret = 0;

    if (asprintf(&dir, "%s%s%s", root, *rel ? "/" : "", rel) < 0) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    n = scandir(dir, &ents, not_dots, name_cmp);
    if (n < 0) {
        ret = df_fail_sys(&ctx->err, "cannot read directory '%s'", dir);
        free(dir);
        return ret;
    }
    for (int i = 0; i < n; i++) {
        char *sub = NULL, *full = NULL;
        struct stat st;
        if (ret == 0 &&
            (asprintf(&sub, "%s%s%s", rel, *rel ? "/" : "",
                      ents[i]->d_name) < 0 ||
             asprintf(&full, "%s/%s", dir, ents[i]->d_name) < 0)) {
            ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        }
        if (ret == 0 && lstat(full, &st) < 0) {
            ret = df_fail_sys(&ctx->err, "cannot stat '%s'", full);
        }
        if (ret == 0) {
            ret = fn(opaque, sub, &st);
        }
        if (ret == 0 && S_ISDIR(st.st_mode)) {
            ret = walk(ctx, root, sub, fn, opaque);
        }
        free(sub);
        free(full);
        free(ents[i]);
    }
    free(ents);
    free(dir);
    return ret;
}

/* ---- ext4 ---- */

/* An inode's owner to root and its times to @epoch: the builder's uid
 * and the host's file times never reach the image. */
static void sif_times(FILE *f, const char *rel, long long epoch)
{
    static const char *const fields[] = { "atime", "mtime", "ctime",
                                          "crtime" };

    fprintf(f, "sif \"/%s\" uid 0\nsif \"/%s\" gid 0\n", rel, rel);
    for (size_t i = 0; i < 4; i++) {
        fprintf(f, "sif \"/%s\" %s @%lld\n", rel, fields[i], epoch);
    }
}

/*
 * debugfs exits 0 whatever its commands did, and prints its complaints on
 * standard error: anything in @out (standard error only) but its banner is
 * an error.
 */
static int check_debugfs_output(struct op_ctx *ctx, const struct capture *out,
                                 const char *what)
{
    const char *line = out->buf, *end = out->buf + out->len;

    while (line && line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t len = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (len && strncmp(line, "debugfs", 7) != 0 &&
            strncmp(line, "Allocated inode:", 16) != 0) {
            return df_fail(&ctx->err, DF_E_IO, "debugfs %s: %.*s", what,
                           (int)(len > 200 ? 200 : len), line);
        }
        line += len + 1;
    }
    return 0;
}

static void derive_text(const struct op_ctx *ctx, const char *what,
                        struct df_guid *g)
{
    const char *parts[] = { ctx->job->name, ctx->step->id, "filesystem",
                            ctx->step->partition, what };

    df_guid_derive(parts, 5, g);
}

static int build_ext4(struct op_ctx *ctx, const char *tmp, int fd,
                      const struct fs_env *env, long long epoch,
                      json_t *res)
{
    const struct job_step *s = ctx->step;
    struct args a = { 0 };
    struct df_guid g;
    char uuid[37], seed[37];
    int ret;

    if (s->uuid) {
        snprintf(uuid, sizeof(uuid), "%s", s->uuid);
    } else {
        derive_text(ctx, "uuid", &g);
        df_guid_format(&g, false, uuid);
    }
    derive_text(ctx, "hash_seed", &g);
    df_guid_format(&g, false, seed);
    arg_add(&a, "mke2fs");
    arg_add(&a, "-q");
    arg_add(&a, "-F");
    arg_add(&a, "-t");
    arg_add(&a, "ext4");
    if (s->label) {
        arg_add(&a, "-L");
        arg_add(&a, s->label);
    }
    arg_add(&a, "-U");
    arg_add(&a, uuid);
    arg_add(&a, "-E");
    /* the temporary is new and sparse, so it reads as zeros: mke2fs need
     * not write the zeros of the journal (64 MiB to 1 GiB) into it, then
     * sync them, for the copy to skip them (the same bytes result) */
    arg_addf(&a, "lazy_itable_init=0,lazy_journal_init=0,"
             "assume_storage_prezeroed=1,hash_seed=%s", seed);
    if (s->from) {
        arg_add(&a, "-d");
        arg_add(&a, s->from);
    }
    ret = run_mkfs(ctx, &tool_mke2fs, &a, tmp, env);
    if (ret == 0) {
        uint64_t fixed;
        ret = ext4_fix_inodes(ctx, fd, epoch, &fixed);
    }
    json_object_set_new(res, "uuid", json_string(uuid));
    return ret;
}

/* ---- vfat ---- */

struct fat_walk {
    struct op_ctx *ctx;
    struct args dirs;  /* ::/a ::/a/b ... in creation order */
    char **files;      /* relative paths of regular files, walk order */
    size_t n_files, cap_files;
};

static int fat_entry(void *opaque, const char *rel, const struct stat *st)
{
    struct fat_walk *w = opaque;
    struct stat follow;
    char *full;

    if (S_ISDIR(st->st_mode)) {
        arg_addf(&w->dirs, "::/%s", rel);
        return w->dirs.oom ? df_fail(&w->ctx->err, DF_E_NOMEM,
                                     "out of memory")
                           : 0;
    }
    if (asprintf(&full, "%s/%s", w->ctx->step->from, rel) < 0) {
        return df_fail(&w->ctx->err, DF_E_NOMEM, "out of memory");
    }
    /* a symbolic link is copied as what it points to */
    if (stat(full, &follow) < 0 || !S_ISREG(follow.st_mode)) {
        int ret = df_fail(&w->ctx->err, DF_E_INVAL, "'%s': vfat holds only "
                          "regular files and directories", full);
        free(full);
        return ret;
    }
    free(full);
    if (w->n_files == w->cap_files) {
        size_t cap = w->cap_files ? w->cap_files * 2 : 64;
        char **v = realloc(w->files, cap * sizeof(*v));
        if (!v) {
            return df_fail(&w->ctx->err, DF_E_NOMEM, "out of memory");
        }
        w->files = v;
        w->cap_files = cap;
    }
    w->files[w->n_files] = strdup(rel);
    if (!w->files[w->n_files]) {
        return df_fail(&w->ctx->err, DF_E_NOMEM, "out of memory");
    }
    w->n_files++;
    return 0;
}

static size_t dir_len(const char *rel)
{
    const char *slash = strrchr(rel, '/');

    return slash ? (size_t)(slash - rel) : 0;
}

/* mmd every directory, then mcopy the files of each directory together. */
static int vfat_fill(struct op_ctx *ctx, const char *tmp,
                     const struct fs_env *env)
{
    const struct job_step *s = ctx->step;
    struct fat_walk w = { .ctx = ctx };
    int ret = walk(ctx, s->from, "", fat_entry, &w);

    if (ret == 0 && w.dirs.n) {
        struct args a = { 0 };
        arg_add(&a, "mmd");
        arg_add(&a, "-i");
        arg_add(&a, tmp);
        for (size_t i = 0; i < w.dirs.n; i++) {
            arg_add(&a, w.dirs.v[i]);
        }
        ret = run_args(ctx, &tool_mmd, &a, env, NULL, false);
    }
    for (size_t i = 0; ret == 0 && i < w.n_files;) {
        /* the files of one directory (adjacent in walk order), at most
         * 512 a call */
        size_t dl = dir_len(w.files[i]), j = i;
        struct args a = { 0 };
        arg_add(&a, "mcopy");
        arg_add(&a, "-i");
        arg_add(&a, tmp);
        while (j < w.n_files && j - i < 512 && dir_len(w.files[j]) == dl &&
               !strncmp(w.files[j], w.files[i], dl)) {
            arg_addf(&a, "%s/%s", s->from, w.files[j]);
            j++;
        }
        arg_addf(&a, "::/%.*s%s", (int)dl, w.files[i], dl ? "/" : "");
        ret = run_args(ctx, &tool_mcopy, &a, env, NULL, false);
        i = j;
    }
    args_release(&w.dirs);
    for (size_t i = 0; i < w.n_files; i++) {
        free(w.files[i]);
    }
    free(w.files);
    return ret;
}

static uint16_t le16_at(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/*
 * mkfs.fat stamps the volume label's root directory entry with the
 * current time (with --invariant, a time of its own): set its times to
 * @epoch (UTC; FAT cannot record before 1980).  The root directory is the
 * fixed area of FAT12/16 or the first cluster of FAT32's.
 */
static int vfat_fix_label_time(struct op_ctx *ctx, int fd, long long epoch)
{
    unsigned char bs[512], *dir = NULL;
    time_t t = (time_t)(epoch < DF_DEFAULT_EPOCH ? DF_DEFAULT_EPOCH : epoch);
    struct tm tm;
    uint32_t bps, spc, rs, nf, root_ents, fatsz, first, len;
    uint16_t dtime, ddate;
    int ret = 0;

    gmtime_r(&t, &tm);
    dtime = (uint16_t)(tm.tm_hour << 11 | tm.tm_min << 5 | tm.tm_sec / 2);
    ddate = (uint16_t)((tm.tm_year - 80) << 9 | (tm.tm_mon + 1) << 5 |
                       tm.tm_mday);
    if (pread(fd, bs, sizeof(bs), 0) != (ssize_t)sizeof(bs)) {
        return df_fail_sys(&ctx->err, "cannot read the new vfat boot "
                           "sector");
    }
    bps = le16_at(bs + 11);
    spc = bs[13];
    rs = le16_at(bs + 14);
    nf = bs[16];
    root_ents = le16_at(bs + 17);
    fatsz = le16_at(bs + 22);
    if (!fatsz) { /* FAT32 */
        fatsz = (uint32_t)le16_at(bs + 36) | (uint32_t)le16_at(bs + 38) << 16;
        first = (rs + nf * fatsz +
                 (((uint32_t)le16_at(bs + 44) | (uint32_t)le16_at(bs + 46)
                                                    << 16) - 2) * spc) * bps;
        len = spc * bps;
    } else {
        first = (rs + nf * fatsz) * bps;
        len = root_ents * 32;
    }
    if (bps < 512 || !spc || !len || len > (1u << 20)) {
        return df_fail(&ctx->err, DF_E_FORMAT, "mkfs.vfat made a boot "
                       "sector this op cannot read");
    }
    dir = malloc(len);
    if (!dir) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    if (pread(fd, dir, len, first) != (ssize_t)len) {
        ret = df_fail_sys(&ctx->err, "cannot read the vfat root directory");
    }
    for (uint32_t o = 0; ret == 0 && o + 32 <= len && dir[o]; o += 32) {
        unsigned char *e = dir + o;
        if (e[0] == 0xe5 || e[11] != 0x08) {
            continue; /* deleted, or not the label (long names are 0x0f) */
        }
        e[13] = 0;
        e[14] = (unsigned char)dtime;
        e[15] = (unsigned char)(dtime >> 8);
        for (int k = 16; k <= 24; k += 2) {
            if (k == 20) {
                continue; /* high word of the first cluster */
            }
            e[k] = (unsigned char)(k == 22 ? dtime : ddate);
            e[k + 1] = (unsigned char)((k == 22 ? dtime : ddate) >> 8);
        }
        if (pwrite(fd, e, 32, first + o) != 32) {
            ret = df_fail_sys(&ctx->err, "cannot write the vfat root "
                              "directory");
        }
    }
    free(dir);
    return ret;
}

static int build_vfat(struct op_ctx *ctx, const char *tmp, int fd,
                      const struct fs_env *env, long long epoch, json_t *res)
{
    const struct job_step *s = ctx->step;
    struct args a = { 0 };
    char volid[9];
    int ret;

    if (s->uuid) {
        size_t o = 0;
        for (const char *p = s->uuid; *p && o < 8; p++) {
            if (*p != '-') {
                volid[o++] = *p;
            }
        }
        volid[o] = '\0';
    } else {
        struct df_guid g;
        derive_text(ctx, "volume_id", &g);
        snprintf(volid, sizeof(volid), "%02x%02x%02x%02x", g.b[0], g.b[1],
                 g.b[2], g.b[3]);
    }
    arg_add(&a, "mkfs.vfat");
    arg_add(&a, "--invariant"); /* before -i, which it would override */
    arg_add(&a, "-i");
    arg_add(&a, volid);
    if (s->label) {
        arg_add(&a, "-n");
        arg_add(&a, s->label);
    }
    ret = run_mkfs(ctx, &tool_mkfs_vfat, &a, tmp, env);
    if (ret == 0) {
        ret = vfat_fix_label_time(ctx, fd, epoch);
    }
    if (ret == 0 && s->from) {
        ret = vfat_fill(ctx, tmp, env);
    }
    json_object_set_new(res, "uuid", json_string(volid));
    return ret;
}

/* ---- writing the file system into the partition ---- */

struct copy_stats {
    uint64_t data, zero;
};

/* Make @len bytes at @off read as zeros, skipping what already does. */
static int zero_range(struct op_ctx *ctx, struct df_image *img, uint64_t off,
                      uint64_t len)
{
    while (len) {
        struct df_extent ext;
        int ret = df_image_block_status(img, off, len, true, &ext, &ctx->err);
        if (ret < 0) {
            return ret;
        }
        if (!ext.length) {
            break;
        }
        if (!(ext.flags & DF_BLOCK_ZERO)) {
            ret = df_image_write_zeroes(img, off, ext.length,
                                        DF_ZERO_MAY_UNMAP, &ctx->err);
            if (ret < 0) {
                return ret;
            }
        }
        off += ext.length;
        len -= ext.length;
    }
    return 0;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* Write @n bytes of @buf at image offset @off: data as data, all-zero
 * ZERO_GRAIN blocks as zero ranges. */
static int put_chunk(struct op_ctx *ctx, struct df_image *img,
                     const unsigned char *buf, size_t n, uint64_t off,
                     struct copy_stats *cs)
{
    size_t i = 0;

    while (i < n) {
        size_t g = n - i < ZERO_GRAIN ? n - i : ZERO_GRAIN;
        bool zero = all_zero(buf + i, g);
        size_t j = i + g;
        int ret;
        while (j < n) {
            size_t h = n - j < ZERO_GRAIN ? n - j : ZERO_GRAIN;
            if (all_zero(buf + j, h) != zero) {
                break;
            }
            j += h;
        }
        if (zero) {
            ret = zero_range(ctx, img, off + i, j - i);
            cs->zero += j - i;
        } else {
            ret = df_image_pwrite(img, buf + i, j - i, off + i, &ctx->err);
            cs->data += j - i;
        }
        if (ret < 0) {
            return ret;
        }
        i = j;
    }
    return 0;
}

/* Does @n bytes of @mine differ from the image's @theirs (NULL: zeros)? */
static bool differs(const unsigned char *mine, const unsigned char *theirs,
                    size_t n)
{
    return theirs ? memcmp(mine, theirs, n) != 0 : !all_zero(mine, n);
}

/*
 * The file @fd (@len bytes) into the image at @base: only the ZERO_GRAIN
 * blocks that differ from what the image holds, all-zero ones as zero
 * ranges.
 * An overlay thus gets just the delta, and a fresh image just the data.
 * With @drop (a temporary that is clean, so that dropping its pages
 * writes nothing back: mke2fs syncs what it made, and ext4_fix_inodes()
 * dirties only inode tables; mcopy and debugfs do not sync), each piece
 * leaves the page cache once written, so the image's writes can reuse its
 * pages, and a large copy does not push everything else out.
 */
static int copy_into(struct op_ctx *ctx, struct df_image *img, int fd,
                     uint64_t base, uint64_t len, bool drop,
                     struct copy_stats *cs)
{
    unsigned char *mine = malloc(COPY_CHUNK), *theirs = malloc(COPY_CHUNK);
    uint64_t pos = 0;
    int ret = 0;

    if (!mine || !theirs) {
        free(mine);
        free(theirs);
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    while (ret == 0 && pos < len) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        size_t n;
        const unsigned char *cmp = NULL;
        struct df_extent ext;
        if (data < 0) {
            data = errno == ENXIO ? (off_t)len : (off_t)pos;
        }
        if ((uint64_t)data > len) {
            data = (off_t)len;
        }
        if ((uint64_t)data > pos) {
            /* a hole: zero in the copy; was it zero in the image? */
            ret = zero_range(ctx, img, base + pos, (uint64_t)data - pos);
            cs->zero += (uint64_t)data - pos;
            pos = (uint64_t)data;
            continue;
        }
        n = len - pos > COPY_CHUNK ? COPY_CHUNK : (size_t)(len - pos);
        if (pread(fd, mine, n, (off_t)pos) != (ssize_t)n) {
            ret = df_fail_sys(&ctx->err, "cannot read the temporary copy of "
                              "the partition");
            break;
        }
        /* the image's bytes, unless it reads as zeros there */
        ret = df_image_block_status(img, base + pos, n, true, &ext,
                                    &ctx->err);
        if (ret == 0 && !(ext.flags & DF_BLOCK_ZERO && ext.length >= n)) {
            ret = df_image_pread(img, theirs, n, base + pos, &ctx->err);
            cmp = theirs;
        }
        for (size_t i = 0; ret == 0 && i < n;) {
            size_t j = i;
            while (j < n && differs(mine + j, cmp ? cmp + j : NULL,
                                    n - j < ZERO_GRAIN ? n - j
                                                       : ZERO_GRAIN)) {
                j += ZERO_GRAIN;
            }
            if (j > n) {
                j = n;
            }
            if (j > i) {
                ret = put_chunk(ctx, img, mine + i, j - i, base + pos + i,
                                cs);
                i = j;
            } else {
                i += ZERO_GRAIN;
            }
        }
        if (ret == 0 && drop) {
            (void)posix_fadvise(fd, (off_t)pos, (off_t)n,
                                POSIX_FADV_DONTNEED);
        }
        pos += n;
        if (ret == 0 && op_progress(ctx, pos, len)) {
            ret = df_fail(&ctx->err, DF_E_CANCELED, "'%s': interrupted",
                          ctx->step->image);
        }
    }
    free(mine);
    free(theirs);
    return ret;
}

/*
 * A file system just made in the temporary @fd into the partition at
 * @base: when the partition reads as zeros (a new disk), df_image_fill()
 * writes it and hashes the image's file on a second thread at the same
 * time, which the step would otherwise do after it (SPEC §6: the report's
 * sha256); anything else goes through copy_into().
 */
static int fill_partition(struct op_ctx *ctx, struct df_image *img, int fd,
                          uint64_t base, uint64_t len, bool drop,
                          struct copy_stats *cs)
{
    struct df_fill f = { .fd = fd, .drop_source = drop,
                         .progress = op_progress, .opaque = ctx };
    int ret = df_image_fill(img, base, len, &f, &ctx->err);

    if (ret == -DF_E_UNSUPPORTED) {
        df_error_clear(&ctx->err);
        return copy_into(ctx, img, fd, base, len, drop, cs);
    }
    if (ret == 0) {
        cs->data = f.data;
        cs->zero = len - f.data;
        /* a raw image's file is what its guest reads */
        op_set_digest(ctx, ctx->step->image, f.sha256,
                      df_image_format(img) == DF_FMT_RAW ? f.sha256 : NULL);
    }
    return ret;
}

/* ---- temporaries ---- */

/*
 * A temporary file of @len bytes (sparse) beside the step's image: on the
 * same file system, so the space check and the cleanup of temporaries
 * cover it.  *@tmp (malloc'd) and *@fd, or an error with both unset.
 */
static int make_temp(struct op_ctx *ctx, uint64_t len, char **tmp, int *fd)
{
    const struct job_step *s = ctx->step;
    int ret;

    *fd = -1;
    if (asprintf(tmp, "%s.%s-XXXXXX.tmp", s->image, s->id) < 0) {
        *tmp = NULL;
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    *fd = mkstemps(*tmp, 4);
    if (*fd < 0) {
        ret = df_fail_sys(&ctx->err, "cannot create a temporary file '%s'",
                          *tmp);
    } else if (ftruncate(*fd, (off_t)len) < 0) {
        ret = df_fail_sys(&ctx->err, "cannot size '%s' to %llu bytes", *tmp,
                          (unsigned long long)len);
        close(*fd);
        unlink(*tmp);
        *fd = -1;
    } else {
        return 0;
    }
    free(*tmp);
    *tmp = NULL;
    return ret;
}

static void *closer(void *opaque)
{
    close((int)(intptr_t)opaque);
    return NULL;
}

/*
 * Remove the temporary @tmp (malloc'd, or NULL), open as @fd (or -1): its
 * name at once, and its blocks on a thread of its own.  Freeing a large
 * file's blocks (and discarding them, on a file system mounted with -o
 * discard) can take a second or more, for which the step need not wait:
 * it goes on to hash its output meanwhile.  A process that exits waits
 * for that close, so a run leaves no space held behind it.
 */
static void remove_temp(char *tmp, int fd)
{
    pthread_attr_t attr;
    pthread_t t;

    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    if (fd < 0) {
        return;
    }
    if (pthread_attr_init(&attr) == 0) {
        bool started =
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
            pthread_create(&t, &attr, closer, (void *)(intptr_t)fd) == 0;
        pthread_attr_destroy(&attr);
        if (started) {
            return;
        }
    }
    close(fd);
}

/* ---- filesystem ---- */

static long long source_date_epoch(void)
{
    const char *e = getenv("SOURCE_DATE_EPOCH");
    char *end;
    long long v;

    if (!e || !*e) {
        return DF_DEFAULT_EPOCH;
    }
    v = strtoll(e, &end, 10);
    return *end || v < 0 ? DF_DEFAULT_EPOCH : v;
}

/* The partition the step names, from the image's sound GPT. */
static int find_partition(struct op_ctx *ctx, struct df_image *img,
                          struct df_gpt *g, const struct df_gpt_part **out)
{
    const struct job_step *s = ctx->step;
    struct df_gpt_status st;
    int ret = df_gpt_read(img, g, &st, &ctx->err);

    if (ret < 0) {
        return ret;
    }
    if (st.state == DF_GPT_NONE) {
        return df_fail(&ctx->err, DF_E_INVAL, "'%s' has no GPT partition "
                       "table (add a 'partition' step before)", s->image);
    }
    if (st.state != DF_GPT_VALID) {
        return df_fail(&ctx->err, DF_E_CORRUPT, "'%s': the GPT is damaged: "
                       "%s", s->image, st.problems[0]);
    }
    *out = df_gpt_find(g, s->partition);
    if (!*out) {
        return df_fail(&ctx->err, DF_E_INVAL, "'%s' has no partition '%s' "
                       "(%zu partitions)", s->image, s->partition,
                       g->n_parts);
    }
    return 0;
}

/*
 * Open the step's image read-write and find its partition: *@img (close
 * it even on failure when set), and the partition's byte range.
 */
static int open_partition(struct op_ctx *ctx, struct df_image **img,
                          struct df_gpt *g, const struct df_gpt_part **p,
                          uint64_t *off, uint64_t *len)
{
    int ret;

    *img = df_image_open(ctx->step->image, ctx->step->format, DF_OPEN_RDWR,
                         &ctx->err);
    if (!*img) {
        return -ctx->err.code;
    }
    ret = find_partition(ctx, *img, g, p);
    if (ret == 0) {
        *off = (*p)->first_lba * DF_GPT_SECTOR;
        *len = ((*p)->last_lba - (*p)->first_lba + 1) * DF_GPT_SECTOR;
    }
    return ret;
}

int op_filesystem(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_gpt *g = calloc(1, sizeof(*g));
    const struct df_gpt_part *p = NULL;
    struct fs_env env = { 0 };
    struct copy_stats cs = { 0, 0 };
    struct df_image *img = NULL;
    long long epoch = source_date_epoch();
    uint64_t off = 0, len = 0;
    char *tmp = NULL;
    int fd = -1, ret;
    json_t *res;

    if (!g) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    ret = open_partition(ctx, &img, g, &p, &off, &len);
    if (ret < 0) {
        goto out;
    }
    if (s->from) {
        struct stat st;
        if (stat(s->from, &st) < 0 || !S_ISDIR(st.st_mode)) {
            ret = stat(s->from, &st) < 0
                      ? df_fail_sys(&ctx->err, "'from': cannot use '%s'",
                                    s->from)
                      : df_fail(&ctx->err, DF_E_INVAL, "'from': '%s' is not "
                                "a directory", s->from);
            goto out;
        }
    }
    ret = make_temp(ctx, len, &tmp, &fd);
    if (ret < 0) {
        goto out;
    }
    if (env_build(&env, epoch) < 0) {
        ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        goto out;
    }
    res = result_of(ctx);
    ret = s->fs_type == JOB_FS_VFAT ? build_vfat(ctx, tmp, fd, &env, epoch,
                                                 res)
                                    : build_ext4(ctx, tmp, fd, &env, epoch, res);
    if (ret == 0) {
        ret = fill_partition(ctx, img, fd, off, len,
                             s->fs_type != JOB_FS_VFAT, &cs);
    }
    if (ret == 0) {
        json_object_set_new(res, "type", json_string(s->fs_type == JOB_FS_VFAT
                                                         ? "vfat"
                                                         : "ext4"));
        json_object_set_new(res, "partition",
                            json_integer((json_int_t)p->index + 1));
        json_object_set_new(res, "start",
                            json_integer((json_int_t)off));
        json_object_set_new(res, "size", json_integer((json_int_t)len));
        json_object_set_new(res, "data_bytes",
                            json_integer((json_int_t)cs.data));
        json_object_set_new(res, "zero_bytes",
                            json_integer((json_int_t)cs.zero));
        json_object_set_new(res, "source_date_epoch",
                            json_integer((json_int_t)epoch));
    }
out:
    remove_temp(tmp, fd);
    env_release(&env);
    ret = img ? finish_image(ctx, img, ret) : ret;
    free(g);
    return ret;
}

/* ---- files: add or replace files in an ext4 inside a partition ---- */

/* What the tree under `from` holds, in walk order. */
struct tree_entry {
    char *rel;
    mode_t mode;
    char *target; /* of a symbolic link */
};

struct tree {
    struct op_ctx *ctx;
    struct tree_entry *v;
    size_t n, cap;
};

static bool debugfs_safe(const char *s)
{
    return !strpbrk(s, "\"\n\\");
}

static int tree_entry(void *opaque, const char *rel, const struct stat *st)
{
    struct tree *t = opaque;
    struct op_ctx *ctx = t->ctx;
    struct tree_entry *e;

    if (!S_ISDIR(st->st_mode) && !S_ISREG(st->st_mode) &&
        !S_ISLNK(st->st_mode)) {
        return df_fail(&ctx->err, DF_E_INVAL, "'%s/%s': only regular files, "
                       "directories and symbolic links can be added",
                       ctx->step->from, rel);
    }
    if (!debugfs_safe(rel)) {
        return df_fail(&ctx->err, DF_E_INVAL, "'%s': a name with '\"', "
                       "'\\\\' or a newline cannot be given to debugfs", rel);
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct tree_entry *v = realloc(t->v, cap * sizeof(*v));
        if (!v) {
            return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        }
        t->v = v;
        t->cap = cap;
    }
    e = &t->v[t->n];
    memset(e, 0, sizeof(*e));
    e->mode = st->st_mode;
    e->rel = strdup(rel);
    if (!e->rel) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    t->n++;
    if (S_ISLNK(st->st_mode)) {
        char *full, buf[4096];
        ssize_t n;
        if (asprintf(&full, "%s/%s", ctx->step->from, rel) < 0) {
            return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        }
        n = readlink(full, buf, sizeof(buf) - 1);
        free(full);
        if (n < 0) {
            return df_fail_sys(&ctx->err, "cannot read link '%s'", rel);
        }
        buf[n] = '\0';
        if (!debugfs_safe(buf) || !(e->target = strdup(buf))) {
            return df_fail(&ctx->err, DF_E_INVAL, "'%s': link target "
                           "cannot be given to debugfs", rel);
        }
    }
    return 0;
}

static void tree_release(struct tree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].rel);
        free(t->v[i].target);
    }
    free(t->v);
}

/* The file-system path of tree entry @rel under @to ("" for @to). */
static char *fs_path(const char *to, const char *rel)
{
    char *p;

    if (asprintf(&p, "%s%s%s", to, strcmp(to, "/") && *rel ? "/" : "",
                 rel) < 0) {
        return NULL;
    }
    return p;
}

/* What exists in the file system: full path -> mode (0: absent). */
struct listing {
    char **path;
    unsigned *mode;
    size_t n, cap;
};

static int listing_add(struct listing *l, const char *dir, const char *name,
                       unsigned mode)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char **p = realloc(l->path, cap * sizeof(*p));
        unsigned *m = p ? realloc(l->mode, cap * sizeof(*m)) : NULL;
        if (p) {
            l->path = p;
        }
        if (!m) {
            return -1;
        }
        l->mode = m;
        l->cap = cap;
    }
    if (asprintf(&l->path[l->n], "%s%s%s", dir, strcmp(dir, "/") ? "/" : "",
                 name) < 0) {
        return -1;
    }
    l->mode[l->n++] = mode;
    return 0;
}

static unsigned listing_mode(const struct listing *l, const char *path)
{
    if (!strcmp(path, "/")) {
        return S_IFDIR | 0755;
    }
    for (size_t i = l->n; i-- > 0;) {
        if (!strcmp(l->path[i], path)) {
            return l->mode[i];
        }
    }
    return 0;
}

static void listing_release(struct listing *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->path[i]);
    }
    free(l->path);
    free(l->mode);
}

/*
 * Run debugfs (read-only) with `ls -p DIR` for each of @dirs and record
 * the entries of those that exist.  Output sections follow the echo of
 * each command; entries read "/ino/mode/uid/gid/name/size/".
 */
static int list_dirs(struct op_ctx *ctx, const char *tmp,
                     const struct fs_env *env, char **dirs, size_t n,
                     struct listing *l)
{
    struct capture out = { NULL, 0, 0, LISTING_LIMIT };
    struct args a = { 0 };
    char *cmdfile = NULL;
    FILE *f;
    long sect = -1;
    int ret;

    if (asprintf(&cmdfile, "%s.ls", tmp) < 0 || !(f = fopen(cmdfile, "w"))) {
        ret = cmdfile ? df_fail_sys(&ctx->err, "cannot create '%s'", cmdfile)
                      : df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        free(cmdfile);
        return ret;
    }
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "ls -p \"%s\"\n", dirs[i]);
    }
    if (fclose(f) != 0) {
        ret = df_fail_sys(&ctx->err, "cannot write '%s'", cmdfile);
        unlink(cmdfile);
        free(cmdfile);
        return ret;
    }
    arg_add(&a, "debugfs");
    arg_add(&a, "-f");
    arg_add(&a, cmdfile);
    arg_add(&a, tmp);
    ret = run_args(ctx, &tool_debugfs, &a, env, &out, false);
    unlink(cmdfile);
    free(cmdfile);
    if (ret == 0 && out.total > out.len) {
        ret = df_fail(&ctx->err, DF_E_UNSUPPORTED, "the directories to "
                      "change hold too many entries to list (over %u bytes)",
                      LISTING_LIMIT);
    }
    for (char *line = out.buf, *end = out.buf + out.len;
         ret == 0 && line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t len = nl ? (size_t)(nl - line) : (size_t)(end - line);
        line[len] = '\0';
        if (!strncmp(line, "debugfs: ", 9)) {
            sect++;
        } else if (line[0] == '/' && sect >= 0 && (size_t)sect < n) {
            /* /ino/mode/uid/gid/name/size/ */
            char *fld[6] = { 0 }, *p = line + 1;
            for (int k = 0; k < 6 && p; k++) {
                fld[k] = p;
                p = strchr(p, '/');
                if (p) {
                    *p++ = '\0';
                }
            }
            if (fld[4] && strcmp(fld[4], ".") && strcmp(fld[4], "..") &&
                listing_add(l, dirs[sect], fld[4],
                            (unsigned)strtoul(fld[1], NULL, 8)) < 0) {
                ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
            }
        }
        line += len + 1;
    }
    free(out.buf);
    return ret;
}

/* Write the debugfs script that puts the tree under `to`. */
static int files_script(struct op_ctx *ctx, FILE *f, const struct tree *t,
                        const struct listing *l, long long epoch,
                        unsigned *added, unsigned *replaced)
{
    const struct job_step *s = ctx->step;
    const char *to = s->to ? s->to : "/";
    char *walkp = strdup(to);
    int ret = 0;

    if (!walkp) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    /* the directories of `to`, made where missing */
    for (char *p = walkp + 1; ret == 0; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            unsigned m;
            *p = '\0';
            m = listing_mode(l, walkp);
            if (m && !S_ISDIR(m)) {
                ret = df_fail(&ctx->err, DF_E_INVAL, "'%s' exists in the "
                              "file system and is not a directory", walkp);
            } else if (!m && strcmp(walkp, "/")) {
                fprintf(f, "mkdir \"%s\"\n", walkp);
            }
            if (ret == 0) { /* new entries change a directory's times */
                sif_times(f, walkp + 1, epoch);
            }
            *p = c;
            if (!c) {
                break;
            }
        }
    }
    free(walkp);
    for (size_t i = 0; ret == 0 && i < t->n; i++) {
        const struct tree_entry *e = &t->v[i];
        char *full = fs_path(to, e->rel);
        unsigned m;
        if (!full) {
            ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
            break;
        }
        m = listing_mode(l, full);
        if (m && (S_ISDIR(m) != S_ISDIR(e->mode))) {
            ret = df_fail(&ctx->err, DF_E_INVAL, "'%s' exists in the file "
                          "system as a %s", full,
                          S_ISDIR(m) ? "directory" : "file");
        } else if (S_ISDIR(e->mode)) {
            if (!m) {
                fprintf(f, "mkdir \"%s\"\n", full);
                (*added)++;
            }
        } else {
            if (m) {
                fprintf(f, "rm \"%s\"\n", full);
                (*replaced)++;
            } else {
                (*added)++;
            }
            if (S_ISLNK(e->mode)) {
                fprintf(f, "symlink \"%s\" \"%s\"\n", full, e->target);
            } else {
                fprintf(f, "write \"%s/%s\" \"%s\"\n", s->from, e->rel,
                        full);
            }
        }
        if (ret == 0) {
            fprintf(f, "sif \"%s\" mode 0%o\n", full, (unsigned)e->mode);
            sif_times(f, full + 1, epoch);
        }
        free(full);
    }
    return ret;
}

/* Copy the partition out of the image into @fd, leaving zeros as holes. */
static int copy_out(struct op_ctx *ctx, struct df_image *img, int fd,
                    uint64_t base, uint64_t len)
{
    unsigned char *buf = malloc(COPY_CHUNK);
    uint64_t pos = 0;
    int ret = 0;

    if (!buf) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    while (ret == 0 && pos < len) {
        struct df_extent ext;
        uint64_t n;
        ret = df_image_block_status(img, base + pos, len - pos, true, &ext,
                                    &ctx->err);
        if (ret < 0 || !ext.length) {
            break;
        }
        n = ext.length > COPY_CHUNK ? COPY_CHUNK : ext.length;
        if (!(ext.flags & DF_BLOCK_ZERO)) {
            ret = df_image_pread(img, buf, (size_t)n, base + pos, &ctx->err);
            for (size_t i = 0; ret == 0 && i < n; i += ZERO_GRAIN) {
                size_t g = n - i < ZERO_GRAIN ? (size_t)(n - i) : ZERO_GRAIN;
                if (!all_zero(buf + i, g) &&
                    pwrite(fd, buf + i, g, (off_t)(pos + i)) != (ssize_t)g) {
                    ret = df_fail_sys(&ctx->err, "cannot write the "
                                      "temporary copy of the partition");
                }
            }
        }
        pos += n;
        if (ret == 0 && op_cancelled(ctx)) {
            ret = df_fail(&ctx->err, DF_E_CANCELED, "'%s': interrupted",
                          ctx->step->image);
        }
    }
    free(buf);
    return ret;
}

int op_files(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    const char *to = s->to ? s->to : "/";
    struct df_gpt *g = calloc(1, sizeof(*g));
    const struct df_gpt_part *p = NULL;
    struct tree t = { .ctx = ctx };
    struct listing l = { 0 };
    struct fs_env env = { 0 };
    struct copy_stats cs = { 0, 0 };
    struct capture out = { 0 };
    struct args a = { 0 };
    struct df_image *img = NULL;
    long long epoch = source_date_epoch();
    unsigned added = 0, replaced = 0;
    char **dirs = NULL, *tmp = NULL, *script = NULL;
    size_t n_dirs = 0;
    unsigned char magic[2];
    uint64_t off = 0, len = 0;
    FILE *f = NULL;
    int fd = -1, ret;

    if (!g) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    ret = open_partition(ctx, &img, g, &p, &off, &len);
    if (ret == 0) {
        ret = len > 1082 ? df_image_pread(img, magic, 2, off + 1080,
                                          &ctx->err)
                         : -DF_E_INVAL;
        if (ret == 0 && (magic[0] != 0x53 || magic[1] != 0xef)) {
            ret = df_fail(&ctx->err, DF_E_FORMAT, "partition %s of '%s' "
                          "holds no ext2/3/4 file system (files adds to "
                          "ext4 only)", s->partition, s->image);
        }
    }
    if (ret == 0) {
        ret = walk(ctx, s->from, "", tree_entry, &t);
    }
    if (ret == 0 && env_build(&env, epoch) < 0) {
        ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    if (ret == 0) {
        ret = make_temp(ctx, len, &tmp, &fd);
    }
    if (ret == 0) {
        ret = copy_out(ctx, img, fd, off, len);
    }
    /* what exists: `to`, its parents, and every directory of the tree */
    dirs = ret == 0 ? calloc(t.n + 64, sizeof(*dirs)) : NULL;
    if (ret == 0 && !dirs) {
        ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    if (ret == 0) {
        char *cur = strdup(to);
        while (cur && n_dirs < 63) {
            char *slash = strrchr(cur, '/');
            dirs[n_dirs++] = strdup(cur);
            if (!strcmp(cur, "/")) {
                break;
            }
            slash[slash == cur ? 1 : 0] = '\0';
        }
        free(cur);
        for (size_t i = 0; i < t.n; i++) {
            if (S_ISDIR(t.v[i].mode)) {
                dirs[n_dirs++] = fs_path(to, t.v[i].rel);
            }
        }
        for (size_t i = 0; i < n_dirs; i++) {
            if (!dirs[i]) {
                ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
            }
        }
    }
    if (ret == 0) {
        ret = list_dirs(ctx, tmp, &env, dirs, n_dirs, &l);
    }
    if (ret == 0 && (asprintf(&script, "%s.debugfs", tmp) < 0 ||
                     !(f = fopen(script, "w")))) {
        ret = script ? df_fail_sys(&ctx->err, "cannot create '%s'", script)
                     : df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    if (ret == 0) {
        ret = files_script(ctx, f, &t, &l, epoch, &added, &replaced);
    }
    if (f && fclose(f) != 0 && ret == 0) {
        ret = df_fail_sys(&ctx->err, "cannot write '%s'", script);
    }
    if (ret == 0) {
        arg_add(&a, "debugfs");
        arg_add(&a, "-w");
        arg_add(&a, "-f");
        arg_add(&a, script);
        arg_add(&a, tmp);
        ret = run_args(ctx, &tool_debugfs, &a, &env, &out, true);
    }
    if (ret == 0) {
        ret = check_debugfs_output(ctx, &out, "could not add the files");
    }
    if (ret == 0) {
        ret = copy_into(ctx, img, fd, off, len, false, &cs);
    }
    if (ret == 0) {
        json_t *res = result_of(ctx);
        json_object_set_new(res, "partition",
                            json_integer((json_int_t)p->index + 1));
        json_object_set_new(res, "to", json_string(to));
        json_object_set_new(res, "added", json_integer(added));
        json_object_set_new(res, "replaced", json_integer(replaced));
        json_object_set_new(res, "data_bytes",
                            json_integer((json_int_t)cs.data));
        json_object_set_new(res, "zero_bytes",
                            json_integer((json_int_t)cs.zero));
    }
    free(out.buf);
    if (script) {
        unlink(script);
        free(script);
    }
    for (size_t i = 0; i < n_dirs; i++) {
        free(dirs[i]);
    }
    free(dirs);
    listing_release(&l);
    tree_release(&t);
    env_release(&env);
    remove_temp(tmp, fd);
    free(g);
    return img ? finish_image(ctx, img, ret) : ret;
}
