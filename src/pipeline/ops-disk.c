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
 * -d copies the source files' times, so they are set afterwards with
 * debugfs; mkfs.fat 4.2 and mtools 4.0.32 take SOURCE_DATE_EPOCH
 * themselves.  Directories are walked in byte order of their names, never
 * in readdir order, so the host file system does not change the bytes.
 */
#include "ops-disk.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "diskforge/image.h"

/* 1980-01-01T00:00:00Z: the first time FAT can record, fine for ext4. */
#define DF_DEFAULT_EPOCH 315532800LL
#define COPY_CHUNK (1u << 20)
#define ZERO_GRAIN 4096u

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
 * directory (the step's paths are resolved already).  A
 * missing tool names its Debian package; a failure quotes its last line.
 * With @out, the output is left there (caller frees out->buf).
 */
static int run_tool(struct op_ctx *ctx, const struct tool *t, char **argv,
                    const struct fs_env *env, struct capture *out)
{
    struct capture cap = { malloc(OUTPUT_LIMIT), 0, 0 };
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
    ret = op_spawn(ctx, prog, argv, env->envp, NULL, pipefd[1], &pid);
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
                    const struct fs_env *env, struct capture *out)
{
    int ret = a->oom ? df_fail(&ctx->err, DF_E_NOMEM, "out of memory")
                     : run_tool(ctx, t, a->v, env, out);

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
    return run_args(ctx, t, a, env, NULL);
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

struct sif_walk {
    struct op_ctx *ctx;
    FILE *cmds;
    long long epoch;
};

static void sif_times(FILE *f, const char *rel, long long epoch)
{
    static const char *const fields[] = { "atime", "mtime", "ctime",
                                          "crtime" };

    for (size_t i = 0; i < 4; i++) {
        fprintf(f, "sif \"/%s\" %s @%lld\n", rel, fields[i], epoch);
    }
}

static int sif_entry(void *opaque, const char *rel, const struct stat *st)
{
    struct sif_walk *w = opaque;

    (void)st;
    if (strpbrk(rel, "\"\n\\")) {
        return df_fail(&w->ctx->err, DF_E_INVAL, "'%s': a name with '\"', "
                       "'\\\\' or a newline cannot be given to debugfs",
                       rel);
    }
    sif_times(w->cmds, rel, w->epoch);
    return 0;
}

/* Every inode's times to @epoch (mke2fs -d copied the host's). */
static int ext4_fix_times(struct op_ctx *ctx, const char *tmp,
                          const struct fs_env *env, long long epoch)
{
    const struct job_step *s = ctx->step;
    struct sif_walk w = { ctx, NULL, epoch };
    struct capture out = { 0 };
    struct args a = { 0 };
    char *cmdfile = NULL;
    int ret;

    if (asprintf(&cmdfile, "%s.debugfs", tmp) < 0) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    w.cmds = fopen(cmdfile, "w");
    if (!w.cmds) {
        ret = df_fail_sys(&ctx->err, "cannot create '%s'", cmdfile);
        free(cmdfile);
        return ret;
    }
    sif_times(w.cmds, "", epoch);
    ret = walk(ctx, s->from, "", sif_entry, &w);
    if (fclose(w.cmds) != 0 && ret == 0) {
        ret = df_fail_sys(&ctx->err, "cannot write '%s'", cmdfile);
    }
    arg_add(&a, "debugfs");
    arg_add(&a, "-w");
    arg_add(&a, "-f");
    arg_add(&a, cmdfile);
    arg_add(&a, tmp);
    if (ret == 0) {
        ret = run_args(ctx, &tool_debugfs, &a, env, &out);
    }
    if (ret == 0) {
        /* debugfs exits 0 whatever its commands did: anything but the
         * echo of a command and the banner is an error */
        char *line = out.buf, *end = out.buf + out.len;
        while (line < end) {
            char *nl = memchr(line, '\n', (size_t)(end - line));
            size_t len = nl ? (size_t)(nl - line) : (size_t)(end - line);
            if (len && strncmp(line, "debugfs", 7) != 0) {
                ret = df_fail(&ctx->err, DF_E_IO, "debugfs could not set "
                              "the times: %.*s", (int)(len > 200 ? 200 : len),
                              line);
                break;
            }
            line += len + 1;
        }
        free(out.buf);
    }
    unlink(cmdfile);
    free(cmdfile);
    args_release(&a);
    return ret;
}

static void derive_text(const struct op_ctx *ctx, const char *what,
                        struct df_guid *g)
{
    const char *parts[] = { ctx->job->name, ctx->step->id, "filesystem",
                            ctx->step->partition, what };

    df_guid_derive(parts, 5, g);
}

static int build_ext4(struct op_ctx *ctx, const char *tmp,
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
    arg_addf(&a, "lazy_itable_init=0,lazy_journal_init=0,hash_seed=%s",
             seed);
    if (s->from) {
        arg_add(&a, "-d");
        arg_add(&a, s->from);
    }
    ret = run_mkfs(ctx, &tool_mke2fs, &a, tmp, env);
    if (ret == 0 && s->from) {
        ret = ext4_fix_times(ctx, tmp, env, epoch);
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
        ret = run_args(ctx, &tool_mmd, &a, env, NULL);
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
        ret = run_args(ctx, &tool_mcopy, &a, env, NULL);
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
 * 4 KiB blocks as zero ranges. */
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

/* The file @fd (@len bytes) into the image at @base. */
static int copy_into(struct op_ctx *ctx, struct df_image *img, int fd,
                     uint64_t base, uint64_t len, struct copy_stats *cs)
{
    unsigned char *buf = malloc(COPY_CHUNK);
    uint64_t pos = 0;
    int ret = 0;

    if (!buf) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    op_progress(ctx, 0, len);
    while (ret == 0 && pos < len) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        if (data < 0) {
            data = errno == ENXIO ? (off_t)len : (off_t)pos;
        }
        if ((uint64_t)data > len) {
            data = (off_t)len;
        }
        if ((uint64_t)data > pos) {
            ret = zero_range(ctx, img, base + pos, (uint64_t)data - pos);
            cs->zero += (uint64_t)data - pos;
            pos = (uint64_t)data;
        } else {
            off_t hole = lseek(fd, (off_t)pos, SEEK_HOLE);
            uint64_t end = hole < 0 || (uint64_t)hole > len ? len
                                                            : (uint64_t)hole;
            size_t n = end - pos > COPY_CHUNK ? COPY_CHUNK
                                              : (size_t)(end - pos);
            ssize_t got = pread(fd, buf, n, (off_t)pos);
            if (got <= 0) {
                ret = got < 0 ? df_fail_sys(&ctx->err, "cannot read the "
                                            "temporary file system")
                              : df_fail(&ctx->err, DF_E_IO, "the temporary "
                                        "file system shrank");
                break;
            }
            ret = put_chunk(ctx, img, buf, (size_t)got, base + pos, cs);
            pos += (uint64_t)got;
        }
        if (ret == 0 && op_progress(ctx, pos, len)) {
            ret = df_fail(&ctx->err, DF_E_CANCELED, "'%s': interrupted",
                          ctx->step->image);
        }
    }
    free(buf);
    return ret;
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

int op_filesystem(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    struct df_gpt *g = calloc(1, sizeof(*g));
    const struct df_gpt_part *p = NULL;
    struct fs_env env = { 0 };
    struct copy_stats cs = { 0, 0 };
    struct df_image *img = NULL;
    long long epoch = source_date_epoch();
    uint64_t off, len;
    char *tmp = NULL;
    int fd = -1, ret;
    json_t *res;

    if (!g) {
        return df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
    }
    img = df_image_open(s->image, s->format, DF_OPEN_RDWR, &ctx->err);
    if (!img) {
        free(g);
        return -ctx->err.code;
    }
    ret = find_partition(ctx, img, g, &p);
    if (ret < 0) {
        goto out;
    }
    off = p->first_lba * DF_GPT_SECTOR;
    len = (p->last_lba - p->first_lba + 1) * DF_GPT_SECTOR;
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
    /* the temporary file system beside the image: same file system, so
     * the space check and the cleanup of temporaries cover it */
    if (asprintf(&tmp, "%s.%s-XXXXXX.tmp", s->image, s->id) < 0) {
        tmp = NULL;
        ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        goto out;
    }
    fd = mkstemps(tmp, 4);
    if (fd < 0) {
        ret = df_fail_sys(&ctx->err, "cannot create a temporary file '%s'",
                          tmp);
        free(tmp);
        tmp = NULL;
        goto out;
    }
    if (ftruncate(fd, (off_t)len) < 0) {
        ret = df_fail_sys(&ctx->err, "cannot size '%s' to %llu bytes", tmp,
                          (unsigned long long)len);
        goto out;
    }
    if (env_build(&env, epoch) < 0) {
        ret = df_fail(&ctx->err, DF_E_NOMEM, "out of memory");
        goto out;
    }
    res = result_of(ctx);
    ret = s->fs_type == JOB_FS_VFAT ? build_vfat(ctx, tmp, fd, &env, epoch,
                                                 res)
                                    : build_ext4(ctx, tmp, &env, epoch, res);
    if (ret == 0) {
        ret = copy_into(ctx, img, fd, off, len, &cs);
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
    if (fd >= 0) {
        close(fd);
    }
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    env_release(&env);
    ret = finish_image(ctx, img, ret);
    free(g);
    return ret;
}
