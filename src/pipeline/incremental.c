/* SPDX-License-Identifier: MIT */
/*
 * incremental.c - fingerprints, identities and reasons (incremental.h).
 *
 * Everything is decided before the run starts, in memory, from the job,
 * the dag and the records loaded from the store: no step's identity
 * depends on running it (steps are deterministic), so the identity of a
 * file the job makes is known without reading it.  Only external inputs
 * are hashed, and only when their stat changed.  The store is written by
 * the `finished` hook, on the scheduler thread, one transaction per step.
 */
#include "incremental.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "internal.h" /* df_temp_name() */
#include "job-keys.h"
#include "state.h"

#define HASH_CHUNK (1u << 20)
#define UP_TO_DATE "up-to-date"

static atomic_uint_fast64_t files_hashed;

uint64_t incr_files_hashed(void)
{
    return atomic_load(&files_hashed);
}

/* ---- SHA-256 helpers ---- */

static void hex_of(const unsigned char *d, char hex[65])
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
}

/* Feed a tagged, length-prefixed field: no two field lists collide. */
static void feed(EVP_MD_CTX *md, const char *tag, const void *p, size_t len)
{
    uint64_t n = len;

    EVP_DigestUpdate(md, tag, strlen(tag) + 1);
    EVP_DigestUpdate(md, &n, sizeof(n));
    EVP_DigestUpdate(md, p, len);
}

static void feed_str(EVP_MD_CTX *md, const char *tag, const char *s)
{
    feed(md, tag, s ? s : "", s ? strlen(s) : 0);
    EVP_DigestUpdate(md, s ? "s" : "-", 1); /* absent differs from "" */
}

static void feed_u64(EVP_MD_CTX *md, const char *tag, uint64_t v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    feed(md, tag, buf, strlen(buf));
}

static void finish_hex(EVP_MD_CTX *md, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    EVP_DigestFinal_ex(md, d, &len);
    hex_of(d, hex);
    EVP_MD_CTX_free(md);
}

static EVP_MD_CTX *sha256_new(void)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    if (md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        md = NULL;
    }
    return md;
}

/* Polled between the chunks of a hash: true stops it (SIGINT). */
struct hash_stop {
    bool (*fn)(void *opaque);
    void *opaque;
};

static bool stop_now(const struct hash_stop *stop)
{
    return stop && stop->fn && stop->fn(stop->opaque);
}

/*
 * Feed @n bytes of @fd from @off to @md.  Returns 0 or -1 (errno set;
 * ECANCELED when @stop said so).
 */
static int feed_fd(EVP_MD_CTX *md, int fd, unsigned char *buf, uint64_t off,
                   uint64_t n, bool *qcow2, const struct hash_stop *stop)
{
    while (n) {
        if (stop_now(stop)) {
            errno = ECANCELED;
            return -1;
        }
        ssize_t r = pread(fd, buf, (size_t)DF_MIN(n, (uint64_t)HASH_CHUNK),
                          (off_t)off);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return r < 0 ? -1 : 0; /* the file shrank: hash what there is */
        }
        if (qcow2 && off == 0) {
            *qcow2 = r >= 4 && !memcmp(buf, "QFI\xfb", 4);
        }
        EVP_DigestUpdate(md, buf, (size_t)r);
        off += (uint64_t)r;
        n -= (uint64_t)r;
    }
    return 0;
}

/*
 * SHA-256 of the file at @path into @hex; -1 if it cannot be read.
 * *@qcow2 (if not NULL) says whether it starts with the qcow2 magic.
 *
 * With @by_extents (the identity of an external input), holes are not
 * read: the hash covers the file's length and each data extent's offset,
 * length and bytes (SEEK_DATA/SEEK_HOLE), so a 3 TiB sparse image costs
 * what its data costs.  The same bytes laid out with other holes get
 * another identity, which only reruns a step.  Without it (an output's
 * sha256 in the report and --sums), it is the plain SHA-256 of the bytes.
 * @stop (may be NULL) is polled between chunks: -1 with errno ECANCELED.
 */
static int hash_file(const char *path, char hex[65], bool *qcow2,
                     bool by_extents, const struct hash_stop *stop)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    unsigned char *buf;
    EVP_MD_CTX *md;
    off_t end, pos = 0;
    int ret = 0;

    if (fd < 0) {
        return -1;
    }
    atomic_fetch_add(&files_hashed, 1);
    buf = malloc(HASH_CHUNK);
    md = sha256_new();
    end = lseek(fd, 0, SEEK_END);
    if (!buf || !md || end < 0) {
        free(buf);
        EVP_MD_CTX_free(md);
        close(fd);
        return -1;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (qcow2) {
        *qcow2 = false;
    }
    if (by_extents) {
        feed_u64(md, "length", (uint64_t)end);
    }
    while (ret == 0 && pos < end) {
        off_t d = by_extents ? lseek(fd, pos, SEEK_DATA) : pos, h;
        if (d < 0 && errno == ENXIO) {
            break; /* a hole to the end */
        }
        if (d < 0) {
            d = pos; /* no SEEK_DATA here: all data */
            by_extents = false;
        }
        h = by_extents ? lseek(fd, d, SEEK_HOLE) : end;
        if (h <= d) {
            h = end;
        }
        if (by_extents) {
            feed_u64(md, "extent", (uint64_t)d);
            feed_u64(md, "extent-length", (uint64_t)(h - d));
        }
        ret = feed_fd(md, fd, buf, (uint64_t)d, (uint64_t)(h - d), qcow2,
                      stop);
        pos = h;
    }
    free(buf);
    close(fd);
    if (ret < 0) {
        EVP_MD_CTX_free(md);
        return -1;
    }
    finish_hex(md, hex);
    return 0;
}

int incr_hash_file(const char *path, char hex[65])
{
    return hash_file(path, hex, NULL, false, NULL);
}

static void stat_of(const struct stat *sb, struct state_stat *out)
{
    out->size = (int64_t)sb->st_size;
    out->mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 +
                    sb->st_mtim.tv_nsec;
    out->ctime_ns = (int64_t)sb->st_ctim.tv_sec * 1000000000 +
                    sb->st_ctim.tv_nsec;
    out->inode = (int64_t)sb->st_ino;
}

static bool stat_same(const struct state_stat *a, const struct state_stat *b)
{
    return a->size == b->size && a->mtime_ns == b->mtime_ns &&
           a->ctime_ns == b->ctime_ns && a->inode == b->inode;
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the context ---- */

struct incr_input {
    const char *path; /* the dag's path (borrowed) */
    char *key;        /* relative to the job's directory */
    long writer;      /* the earlier step that wrote it, or -1 */
    char id[65];
};

/* What the worker saw of an output when the step finished. */
struct incr_capture {
    bool exists;
    struct state_stat st;
    char sha256[65]; /* "" when not a regular file */
};

struct incr_step {
    char def_fp[65];
    char out_id[65];
    struct incr_input *in;  /* sorted by key */
    size_t n_in;
    char **out_keys;        /* keys of dag_node.outputs */
    bool *final;            /* per output: no later step writes it */
    const struct state_step *rec;
    bool runs;
    char *reason;
    struct incr_capture *cap; /* per output, written by the worker */
};

/* An external input's identity, computed once per run. */
struct memo {
    char *key;
    char id[65];
};

struct incr {
    const struct job *job;
    const struct dag *dag;
    struct incr_opts o;
    struct state *st;
    struct state_records recs;
    struct incr_step *steps;
    const char **reasons;
    struct memo *memo;
    size_t n_memo, cap_memo;
    struct state_hash *fresh; /* hashes computed now, for the cache */
    size_t n_fresh, cap_fresh;
    int64_t started_ns;
    struct run_hooks hooks;
    struct df_error store_err;
    bool oom;
    struct hash_stop stop; /* o.stop */
    bool stopped; /* o.stop said so while inputs were hashed */
};

static char *key_of(const struct incr *in, const char *path)
{
    return job_path_relative(in->job->dir, path);
}

/* ---- definition fingerprints ---- */

static void feed_path(EVP_MD_CTX *md, const struct job *job, const char *tag,
                      const char *path)
{
    char *key = path ? job_path_relative(job->dir, path) : NULL;

    feed_str(md, tag, path ? (key ? key : path) : NULL);
    free(key);
}

static void feed_strv(EVP_MD_CTX *md, const struct job *job, const char *tag,
                      const struct job_strv *v, bool paths)
{
    feed_u64(md, tag, v->n);
    for (size_t i = 0; i < v->n; i++) {
        if (paths) {
            feed_path(md, job, tag, v->v[i]);
        } else {
            feed_str(md, tag, v->v[i]);
        }
    }
}

/* One key's effective value (after substitution and defaults). */
static void feed_key(EVP_MD_CTX *md, const struct job *job,
                     const struct job_step *s, enum job_key k)
{
    const char *t = job_key_name(k);

    switch (k) {
    case JOB_KEY_ID:
    case JOB_KEY_OP:
    case JOB_KEY_NEEDS:
    case JOB_KEY_DESCRIPTION:
    case JOB_KEY_COUNT:
        break;
    case JOB_KEY_IMAGE: feed_path(md, job, t, s->image); break;
    case JOB_KEY_BACKING: feed_path(md, job, t, s->backing); break;
    case JOB_KEY_FROM: feed_path(md, job, t, s->from); break;
    case JOB_KEY_TO:
        if (s->op == JOB_OP_FILES) {
            feed_str(md, t, s->to); /* a directory inside the file system */
        } else {
            feed_path(md, job, t, s->to);
        }
        break;
    case JOB_KEY_A: feed_path(md, job, t, s->a); break;
    case JOB_KEY_B: feed_path(md, job, t, s->b); break;
    case JOB_KEY_FORMAT: feed_str(md, t, df_format_name(s->format)); break;
    case JOB_KEY_FROM_FORMAT:
        feed_str(md, t, df_format_name(s->from_format));
        break;
    case JOB_KEY_BACKING_FORMAT:
        feed_str(md, t, df_format_name(s->backing_format));
        break;
    case JOB_KEY_SIZE:
        /* an overlay without a size takes its backing's */
        feed_u64(md, t, job_step_has(s, k) || s->op != JOB_OP_OVERLAY
                            ? s->size : UINT64_MAX);
        break;
    case JOB_KEY_PREALLOCATION:
        feed_str(md, t, df_prealloc_name(s->prealloc));
        break;
    case JOB_KEY_CLUSTER_SIZE: feed_u64(md, t, s->cluster_size); break;
    case JOB_KEY_COMPAT: feed_u64(md, t, (uint64_t)s->compat); break;
    case JOB_KEY_LAZY_REFCOUNTS: feed_u64(md, t, s->lazy_refcounts); break;
    case JOB_KEY_REFCOUNT_BITS:
        feed_u64(md, t, (uint64_t)s->refcount_bits);
        break;
    case JOB_KEY_COMPRESSION_TYPE:
        feed_u64(md, t, (uint64_t)s->compression_type);
        break;
    case JOB_KEY_BACKING_PATH:
        feed_u64(md, t, s->backing_path_absolute);
        break;
    case JOB_KEY_SPARSE: feed_u64(md, t, (uint64_t)s->sparse); break;
    case JOB_KEY_COMPRESS: feed_u64(md, t, (uint64_t)s->compress); break;
    case JOB_KEY_SPARSE_SIZE: feed_u64(md, t, s->sparse_size); break;
    case JOB_KEY_OFFSET: feed_u64(md, t, s->offset); break;
    case JOB_KEY_LENGTH:
        /* fill without a length runs to the end of the image */
        feed_u64(md, t, job_step_has(s, k) ? s->length : UINT64_MAX);
        break;
    case JOB_KEY_PATTERN:
        feed_u64(md, t, (uint64_t)s->pattern);
        feed_u64(md, t, s->pattern_byte);
        feed_u64(md, t, s->pattern_seed);
        break;
    case JOB_KEY_REPAIR: feed_u64(md, t, (uint64_t)s->repair); break;
    case JOB_KEY_EXPECT:
        feed_u64(md, t, s->expect_errors);
        feed_u64(md, t, s->expect_leaks);
        break;
    case JOB_KEY_SHA256: feed_str(md, t, s->sha256); break;
    case JOB_KEY_UNSAFE: feed_u64(md, t, s->unsafe); break;
    case JOB_KEY_ARGV: feed_strv(md, job, t, &s->argv, false); break;
    case JOB_KEY_SHELL: feed_str(md, t, s->shell); break;
    case JOB_KEY_INPUTS: feed_strv(md, job, t, &s->inputs, true); break;
    case JOB_KEY_OUTPUTS: feed_strv(md, job, t, &s->outputs, true); break;
    case JOB_KEY_TABLE:
    case JOB_KEY_DISK_GUID:
    case JOB_KEY_PARTITIONS:
    case JOB_KEY_PARTITION:
    case JOB_KEY_TYPE:
    case JOB_KEY_LABEL:
    case JOB_KEY_UUID:
    case JOB_KEY_OPTIONS:
        break; /* all in job_step_disk_text(), fed once */
    case JOB_KEY_UNTRUSTED: feed_u64(md, t, s->untrusted); break;
    case JOB_KEY_ALLOW_BACKING:
        feed_strv(md, job, t, &s->allow_backing, true);
        break;
    }
}

void incr_def_fingerprint(const struct job *job, const struct job_step *s,
                          int engine_format, char hex[65])
{
    EVP_MD_CTX *md = sha256_new();
    uint64_t allowed = job_op_allowed_keys(s->op);

    if (!md) {
        memset(hex, '0', 64);
        hex[64] = '\0';
        return;
    }
    feed_str(md, "diskforge-step", "1");
    feed_u64(md, "engine-format", (uint64_t)engine_format);
    feed_str(md, "op", job_op_name(s->op));
    for (int k = 0; k < JOB_KEY_COUNT; k++) {
        if ((allowed >> k) & 1) {
            feed_key(md, job, s, (enum job_key)k);
        }
    }
    if (s->op == JOB_OP_PARTITION || s->op == JOB_OP_FILESYSTEM ||
        s->op == JOB_OP_FILES) {
        char *disk = job_step_disk_text(s);
        feed_str(md, "disk", disk ? disk : "?");
        free(disk);
    }
    if (s->op == JOB_OP_COMMAND || s->op == JOB_OP_FILESYSTEM ||
        s->op == JOB_OP_FILES) {
        /* passed to the program (and the file system's times), and meant
         * to change its bytes (§6) */
        feed_str(md, "SOURCE_DATE_EPOCH", getenv("SOURCE_DATE_EPOCH"));
    }
    finish_hex(md, hex);
}

/* ---- identities of external inputs ---- */

static int add_fresh(struct incr *in, const char *key,
                     const struct state_stat *st, const char *hex,
                     const char *backing)
{
    struct state_hash *h;

    if (in->n_fresh == in->cap_fresh) {
        size_t cap = in->cap_fresh ? in->cap_fresh * 2 : 16;
        struct state_hash *v = realloc(in->fresh, cap * sizeof(*v));
        if (!v) {
            return -1;
        }
        in->fresh = v;
        in->cap_fresh = cap;
    }
    h = &in->fresh[in->n_fresh];
    if (!(h->path = strdup(key))) {
        return -1;
    }
    h->backing = backing ? strdup(backing) : NULL;
    if (backing && !h->backing) {
        free(h->path);
        return -1;
    }
    h->st = *st;
    memcpy(h->sha256, hex, 65);
    h->recorded_ns = in->started_ns;
    in->n_fresh++;
    return 0;
}

/* The backing file name stored in the qcow2 image @path, or NULL. */
static char *backing_name_of(const char *path)
{
    struct df_error err = { 0 };
    struct df_image *img = df_image_open(path, DF_FMT_QCOW2,
                                         DF_OPEN_NO_BACKING, &err);
    struct df_info *info = malloc(sizeof(*info));
    char *out = NULL;

    if (img && info && df_image_info(img, info, &err) == 0 &&
        info->backing_file[0]) {
        out = strdup(info->backing_file);
    }
    free(info);
    df_image_close(img, NULL);
    return out;
}

/*
 * Content hash of the regular file @path, from the cache when trusted,
 * and in *@backing (yours; NULL: none) the backing name a qcow2 image
 * stores, cached with it so that a warm cache reads nothing.
 */
static int file_identity(struct incr *in, const char *path, const char *key,
                         const struct stat *sb, char hex[65], char **backing)
{
    struct state_hash cached = { 0 };
    struct state_stat now;
    struct df_error err = { 0 };
    bool qcow2 = false;

    *backing = NULL;
    stat_of(sb, &now);
    if (state_get_hash(in->st, key, &cached, &err) == 1) {
        if (stat_same(&cached.st, &now) &&
            now.mtime_ns < cached.recorded_ns - in->o.window_ns &&
            now.ctime_ns < cached.recorded_ns - in->o.window_ns) {
            memcpy(hex, cached.sha256, 65);
            *backing = cached.backing;
            return 0;
        }
        free(cached.backing);
    }
    if (hash_file(path, hex, &qcow2, true, &in->stop) < 0) {
        if (errno == ECANCELED || stop_now(&in->stop)) {
            in->stopped = true;
        }
        return -1;
    }
    if (qcow2) {
        *backing = backing_name_of(path);
    }
    if (add_fresh(in, key, &now, hex, *backing) < 0) {
        in->oom = true;
    }
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void dir_identity(struct incr *in, const char *path, const char *key,
                         char hex[65]);

/* One directory entry into @md: name, mode, then what it holds. */
static void feed_entry(struct incr *in, EVP_MD_CTX *md, const char *dir,
                       const char *dkey, const char *name)
{
    char *p = NULL, *k = NULL, sub[65], target[4096];
    struct stat sb;

    if (asprintf(&p, "%s/%s", dir, name) < 0 ||
        asprintf(&k, "%s/%s", dkey, name) < 0) {
        in->oom = true;
        free(p);
        return;
    }
    feed_str(md, "name", name);
    if (lstat(p, &sb) < 0) {
        feed_str(md, "gone", NULL);
    } else {
        feed_u64(md, "mode", (uint64_t)sb.st_mode);
        if (S_ISDIR(sb.st_mode)) {
            dir_identity(in, p, k, sub);
            feed_str(md, "dir", sub);
        } else if (S_ISLNK(sb.st_mode)) {
            ssize_t n = readlink(p, target, sizeof(target) - 1);
            target[n > 0 ? n : 0] = '\0';
            feed_str(md, "symlink", target);
        } else if (S_ISREG(sb.st_mode)) {
            char *backing = NULL;
            if (file_identity(in, p, k, &sb, sub, &backing) < 0) {
                snprintf(sub, sizeof(sub), "unreadable");
            }
            free(backing); /* files in a directory: their bytes only */
            feed_str(md, "file", sub);
        }
    }
    free(p);
    free(k);
}

/* Names, modes, symlink targets and contents, recursively, sorted. */
static void dir_identity(struct incr *in, const char *path, const char *key,
                         char hex[65])
{
    EVP_MD_CTX *md = sha256_new();
    DIR *d = opendir(path);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;

    if (!md) {
        in->oom = true;
        snprintf(hex, 65, "unhashable");
        if (d) {
            closedir(d);
        }
        return;
    }
    feed_str(md, "directory", d ? "1" : NULL);
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) {
            continue;
        }
        if (n == cap) {
            char **v = realloc(names, (cap = cap ? cap * 2 : 32) *
                                          sizeof(*v));
            if (!v) {
                in->oom = true;
                break;
            }
            names = v;
        }
        if (!(names[n] = strdup(e->d_name))) {
            in->oom = true;
            break;
        }
        n++;
    }
    if (d) {
        closedir(d);
    }
    if (n) {
        qsort(names, n, sizeof(*names), name_cmp);
    }
    for (size_t i = 0; i < n; i++) {
        feed_entry(in, md, path, key, names[i]);
        free(names[i]);
    }
    free(names);
    finish_hex(md, hex);
}

static void external_identity(struct incr *in, const char *path,
                              const char *key, char hex[65], int depth);

/* Fold the identity of @path's backing file @name into @hex: an image is
 * its bytes and its chain's. */
static void add_backing(struct incr *in, const char *path, const char *name,
                        char hex[65], int depth)
{
    char *dir = df_path_dir(path);
    char *bpath = dir ? job_path_resolve(dir, name) : NULL;
    char *bkey = bpath ? key_of(in, bpath) : NULL;
    char bid[65];
    EVP_MD_CTX *md;

    if (!bkey || !(md = sha256_new())) {
        in->oom = true;
    } else if (depth >= DF_MAX_BACKING_DEPTH) {
        EVP_MD_CTX_free(md);
        snprintf(hex, 65, "backing-chain-too-deep");
    } else {
        external_identity(in, bpath, bkey, bid, depth + 1);
        feed_str(md, "image", hex);
        feed_str(md, "backing", bkey);
        feed_str(md, "backing-identity", bid);
        finish_hex(md, hex);
    }
    free(bkey);
    free(bpath);
    free(dir);
}

/* The identity of an input no earlier step writes: its content (and a
 * qcow2 image's backing chain, followed on disk). */
static void external_identity(struct incr *in, const char *path,
                              const char *key, char hex[65], int depth)
{
    char *backing = NULL;
    struct stat sb;

    for (size_t i = 0; i < in->n_memo; i++) {
        if (!strcmp(in->memo[i].key, key)) {
            memcpy(hex, in->memo[i].id, 65);
            return;
        }
    }
    if (stat(path, &sb) < 0) {
        snprintf(hex, 65, "missing");
    } else if (S_ISDIR(sb.st_mode)) {
        dir_identity(in, path, key, hex);
    } else if (!S_ISREG(sb.st_mode) ||
               file_identity(in, path, key, &sb, hex, &backing) < 0) {
        snprintf(hex, 65, "unreadable");
    }
    if (backing) {
        add_backing(in, path, backing, hex, depth);
        free(backing);
    }
    if (in->n_memo == in->cap_memo) {
        size_t cap = in->cap_memo ? in->cap_memo * 2 : 16;
        struct memo *v = realloc(in->memo, cap * sizeof(*v));
        if (!v) {
            in->oom = true;
            return;
        }
        in->memo = v;
        in->cap_memo = cap;
    }
    if (!(in->memo[in->n_memo].key = strdup(key))) {
        in->oom = true;
        return;
    }
    memcpy(in->memo[in->n_memo++].id, hex, 65);
}

/* ---- what each step reads ---- */

/* Ops that change their image where it is: they read its old version. */
static bool in_place(const struct job_step *s)
{
    switch (s->op) {
    case JOB_OP_WRITE:
    case JOB_OP_FILL:
    case JOB_OP_RESIZE:
    case JOB_OP_COMMIT:
    case JOB_OP_REBASE:
    case JOB_OP_SPARSIFY:
    case JOB_OP_CHECK: /* writes only with repair */
        return true;
    default:
        return false;
    }
}

/* The earlier step that last wrote @path, as step @i sees it, or -1. */
static long writer_of(const struct dag *dag, size_t i, const char *path)
{
    const struct dag_node *n = &dag->nodes[i];

    for (size_t k = 0; k < n->n_preds; k++) {
        const struct dag_edge *e = &n->preds[k];
        for (size_t r = 0; r < e->n_reasons; r++) {
            if ((e->reasons[r].why == DAG_RAW ||
                 e->reasons[r].why == DAG_WAW) &&
                !strcmp(e->reasons[r].path, path)) {
                return (long)e->pred;
            }
        }
    }
    return -1;
}

/* Whether @succ depends on @pred through a write of the same path. */
static const char *waw_path(const struct dag *dag, size_t succ, size_t pred)
{
    const struct dag_node *n = &dag->nodes[succ];

    for (size_t k = 0; k < n->n_preds; k++) {
        const struct dag_edge *e = &n->preds[k];
        if (e->pred != pred) {
            continue;
        }
        for (size_t r = 0; r < e->n_reasons; r++) {
            if (e->reasons[r].why == DAG_WAW) {
                return e->reasons[r].path;
            }
        }
    }
    return NULL;
}

static int input_cmp(const void *a, const void *b)
{
    return strcmp(((const struct incr_input *)a)->key,
                  ((const struct incr_input *)b)->key);
}

static int add_input(struct incr *in, struct incr_step *st, size_t i,
                     const char *path)
{
    struct incr_input *v = realloc(st->in, (st->n_in + 1) * sizeof(*v));

    if (!v) {
        return -1;
    }
    st->in = v;
    v += st->n_in;
    v->path = path;
    v->key = key_of(in, path);
    v->writer = writer_of(in->dag, i, path);
    v->id[0] = '\0';
    if (!v->key) {
        return -1;
    }
    st->n_in++;
    return 0;
}

/* The inputs of step @i with their identities, then its output identity.
 * Steps are taken in file order: a writer comes before its readers. */
static int identify(struct incr *in, size_t i)
{
    const struct job_step *s = &in->job->steps[i];
    const struct dag_node *n = &in->dag->nodes[i];
    struct incr_step *st = &in->steps[i];
    EVP_MD_CTX *md;

    incr_def_fingerprint(in->job, s, in->o.engine_format, st->def_fp);
    for (size_t k = 0; k < n->reads.n; k++) {
        if (add_input(in, st, i, n->reads.v[k]) < 0) {
            return -1;
        }
    }
    for (size_t k = 0; in_place(s) && k < n->writes.n; k++) {
        if (add_input(in, st, i, n->writes.v[k]) < 0) {
            return -1;
        }
    }
    if (st->n_in > 1) {
        qsort(st->in, st->n_in, sizeof(*st->in), input_cmp);
    }
    for (size_t k = 0; k < st->n_in; k++) {
        struct incr_input *x = &st->in[k];
        if (x->writer >= 0) {
            memcpy(x->id, in->steps[x->writer].out_id, 65);
        } else {
            external_identity(in, x->path, x->key, x->id, 0);
        }
    }
    md = sha256_new();
    if (!md) {
        return -1;
    }
    feed_str(md, "diskforge-output", "1");
    feed_str(md, "definition", st->def_fp);
    for (size_t k = 0; k < st->n_in; k++) {
        feed_str(md, "input", st->in[k].key);
        feed_str(md, "identity", st->in[k].id);
    }
    finish_hex(md, st->out_id);
    return 0;
}

/* Keys of the outputs, and which are the last write of their path. */
static int outputs_of(struct incr *in, size_t i)
{
    const struct dag_node *n = &in->dag->nodes[i];
    struct incr_step *st = &in->steps[i];

    st->out_keys = calloc(n->outputs.n + 1, sizeof(*st->out_keys));
    st->final = calloc(n->outputs.n + 1, sizeof(*st->final));
    st->cap = calloc(n->outputs.n + 1, sizeof(*st->cap));
    if (!st->out_keys || !st->final || !st->cap) {
        return -1;
    }
    for (size_t k = 0; k < n->outputs.n; k++) {
        st->out_keys[k] = key_of(in, n->outputs.v[k]);
        if (!st->out_keys[k]) {
            return -1;
        }
        st->final[k] = true;
        for (size_t j = 0; j < n->n_succs; j++) {
            const char *p = waw_path(in->dag, n->succs[j], i);
            if (p && !strcmp(p, n->outputs.v[k])) {
                st->final[k] = false;
            }
        }
    }
    return 0;
}

/* ---- reasons ---- */

static int set_reason(struct incr *in, size_t i, const char *word,
                      const char *arg)
{
    struct incr_step *st = &in->steps[i];

    if (st->reason) {
        return 0;
    }
    if (asprintf(&st->reason, "%s%s%s", word, arg ? " " : "",
                 arg ? arg : "") < 0) {
        st->reason = NULL;
        in->oom = true;
        return -1;
    }
    st->runs = strcmp(word, UP_TO_DATE) != 0;
    return 1;
}

static bool forced(const struct incr *in, const struct job_step *s)
{
    if (in->o.force || in->o.expect_reproducible) {
        return true;
    }
    for (size_t k = 0; k < in->o.n_rebuild; k++) {
        if (!strcmp(in->o.rebuild[k], s->id)) {
            return true;
        }
    }
    return false;
}

/*
 * The first input, in key order, that the record lacks or gave another
 * identity: among the external inputs (@external) or the job-made ones.  A
 * recorded input no longer read counts among the external ones.  NULL
 * when everything matches.
 */
static const char *changed_input(const struct incr_step *st, bool external)
{
    const struct state_step *r = st->rec;
    size_t j = 0;

    for (size_t k = 0; k < st->n_in; k++) {
        const struct incr_input *x = &st->in[k];
        bool found;
        if (k && !strcmp(x->key, st->in[k - 1].key)) {
            continue;
        }
        while (j < r->n_inputs && strcmp(r->inputs[j].path, x->key) < 0) {
            if (external) {
                return r->inputs[j].path;
            }
            j++;
        }
        found = j < r->n_inputs && !strcmp(r->inputs[j].path, x->key);
        if ((x->writer < 0) == external &&
            (!found || strcmp(r->inputs[j].identity, x->id) != 0)) {
            return x->path;
        }
        j += found;
    }
    return external && j < r->n_inputs ? r->inputs[j].path : NULL;
}

/* The reasons a step has of its own: forced ... input-changed. */
static void own_reason(struct incr *in, size_t i)
{
    const struct job_step *s = &in->job->steps[i];
    struct incr_step *st = &in->steps[i];
    const char *p;

    if (forced(in, s)) {
        set_reason(in, i, "forced", NULL);
    } else if (s->op == JOB_OP_COMMAND && s->outputs.n == 0) {
        set_reason(in, i, "always", NULL);
    } else if (!st->rec) {
        set_reason(in, i, "never-run", NULL);
    } else if (strcmp(st->rec->def_fp, st->def_fp) != 0) {
        set_reason(in, i, "definition-changed", NULL);
    } else if ((p = changed_input(st, true)) != NULL) {
        set_reason(in, i, "input-changed", p);
    }
}

static const struct state_output *recorded_output(const struct state_step *r,
                                                  const char *key)
{
    for (size_t k = 0; r && k < r->n_outputs; k++) {
        if (!strcmp(r->outputs[k].path, key)) {
            return &r->outputs[k];
        }
    }
    return NULL;
}

/* The first writer of the in-place chain that ends with step @i's write
 * of @path. */
static size_t chain_head(const struct incr *in, size_t i, const char *path)
{
    for (;;) {
        const struct dag_node *n = &in->dag->nodes[i];
        long prev = -1;
        for (size_t k = 0; k < n->n_preds && prev < 0; k++) {
            const char *p = waw_path(in->dag, i, n->preds[k].pred);
            if (p && !strcmp(p, path)) {
                prev = (long)n->preds[k].pred;
            }
        }
        if (prev < 0) {
            return i;
        }
        i = (size_t)prev;
    }
}

/* Each path as its last writer left it: missing or changed behind our
 * back makes the first writer of its chain run. */
static void check_outputs(struct incr *in, size_t i)
{
    const struct dag_node *n = &in->dag->nodes[i];
    struct incr_step *st = &in->steps[i];

    if (!st->rec) {
        return;
    }
    for (size_t k = 0; k < n->outputs.n; k++) {
        const struct state_output *o;
        struct state_stat now;
        struct stat sb;
        size_t head;
        if (!st->final[k]) {
            continue;
        }
        o = recorded_output(st->rec, st->out_keys[k]);
        head = chain_head(in, i, n->outputs.v[k]);
        if (stat(n->outputs.v[k], &sb) < 0) {
            set_reason(in, head, "output-missing", n->outputs.v[k]);
            continue;
        }
        stat_of(&sb, &now);
        if (!o || !stat_same(&o->st, &now)) {
            set_reason(in, head, "output-modified", n->outputs.v[k]);
        }
    }
}

/* Runs because a step it depends on runs, or another writer of a path it
 * writes (before or after it) runs.  Returns true when anything changed. */
static bool propagate(struct incr *in)
{
    bool changed = false;

    for (size_t i = 0; i < in->dag->n; i++) {
        const struct dag_node *n = &in->dag->nodes[i];
        if (in->steps[i].runs) {
            continue;
        }
        for (size_t k = 0; k < n->n_preds && !in->steps[i].runs; k++) {
            size_t p = n->preds[k].pred;
            if (in->steps[p].runs) {
                free(in->steps[i].reason);
                in->steps[i].reason = NULL;
                set_reason(in, i, "upstream", in->job->steps[p].id);
                changed = true;
            }
        }
        for (size_t k = 0; k < n->n_succs && !in->steps[i].runs; k++) {
            size_t q = n->succs[k];
            if (in->steps[q].runs && waw_path(in->dag, q, i)) {
                free(in->steps[i].reason);
                in->steps[i].reason = NULL;
                set_reason(in, i, "upstream", in->job->steps[q].id);
                changed = true;
            }
        }
    }
    return changed;
}

static void decide(struct incr *in)
{
    bool changed;

    for (size_t i = 0; i < in->dag->n; i++) {
        in->steps[i].rec = in->st ? state_records_find(&in->recs,
                                                       in->job->steps[i].id)
                                  : NULL;
        own_reason(in, i);
    }
    for (size_t i = 0; i < in->dag->n; i++) {
        check_outputs(in, i);
    }
    do {
        while (propagate(in)) {
        }
        /* a job-made input whose writer does not run but whose identity
         * is not the one recorded (e.g. the writer ran alone since) */
        changed = false;
        for (size_t i = 0; i < in->dag->n; i++) {
            struct incr_step *st = &in->steps[i];
            const char *p;
            if (!st->runs && st->rec && (p = changed_input(st, false))) {
                free(st->reason);
                st->reason = NULL;
                set_reason(in, i, "input-changed", p);
                changed = true;
            }
        }
    } while (changed);
    for (size_t i = 0; i < in->dag->n; i++) {
        if (!in->steps[i].reason) {
            set_reason(in, i, UP_TO_DATE, NULL);
        }
        in->reasons[i] = in->steps[i].reason ? in->steps[i].reason : "?";
    }
}

/* ---- opening ---- */

char *incr_default_state_path(const char *job_path)
{
    const char *slash = strrchr(job_path, '/');
    const char *base = slash ? slash + 1 : job_path;
    size_t n = job_name_stem(base);
    char *out;

    if (asprintf(&out, "%.*s.diskforge/%.*s.db",
                 slash ? (int)(slash - job_path + 1) : 0, job_path, (int)n,
                 base) < 0) {
        return NULL;
    }
    return out;
}

static int open_store(struct incr *in, struct df_error *err)
{
    char *path = in->o.state_path ? strdup(in->o.state_path)
                                  : incr_default_state_path(in->job->path);
    int ret;

    if (!path) {
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    if (in->o.writable && !in->o.state_path) {
        char *dir = strdup(path);
        if (!dir) {
            free(path);
            return df_fail(err, DF_E_NOMEM, "out of memory");
        }
        *strrchr(dir, '/') = '\0';
        if (mkdir(dir, 0777) < 0 && errno != EEXIST) {
            ret = df_fail_sys(err, "cannot create the directory '%s' for "
                              "the state store", dir);
            free(dir);
            free(path);
            return ret;
        }
        free(dir);
    }
    ret = state_open(path, in->o.writable, &in->st, err);
    free(path);
    if (ret == 0) {
        ret = state_load(in->st, &in->recs, err);
    }
    return ret;
}

static void hooks_init(struct incr *in);

int incr_open(const struct dag *dag, const struct incr_opts *o,
              struct incr **out, struct df_error *err)
{
    struct incr *in = calloc(1, sizeof(*in));
    int ret;

    *out = NULL;
    if (!in || !(in->steps = calloc(dag->n + 1, sizeof(*in->steps))) ||
        !(in->reasons = calloc(dag->n + 1, sizeof(*in->reasons)))) {
        incr_free(in);
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    in->job = dag->job;
    in->dag = dag;
    in->o = *o;
    if (!in->o.engine_format) {
        in->o.engine_format = INCR_ENGINE_FORMAT;
    }
    in->started_ns = now_ns();
    in->stop.fn = o->stop;
    in->stop.opaque = o->stop_opaque;
    ret = open_store(in, err);
    for (size_t i = 0; ret == 0 && i < dag->n && !in->stopped; i++) {
        if (stop_now(&in->stop)) {
            in->stopped = true;
        } else if (identify(in, i) < 0 || outputs_of(in, i) < 0) {
            in->oom = true;
        }
    }
    if (ret == 0 && in->stopped) {
        ret = df_fail(err, DF_E_CANCELED, "interrupted while looking at "
                      "the steps' inputs (hashing them), before any step "
                      "started");
    }
    if (ret == 0 && !in->oom) {
        decide(in);
    }
    if (ret == 0 && in->oom) {
        ret = df_fail(err, DF_E_NOMEM, "out of memory");
    }
    if ((ret == 0 || in->stopped) && in->o.writable && in->st) {
        /* the cache is only a cache: failing to write it is no error */
        struct df_error e2 = { 0 };
        state_put_hashes(in->st, in->fresh, in->n_fresh, &e2);
    }
    if (ret < 0) {
        incr_free(in);
        return ret;
    }
    hooks_init(in);
    *out = in;
    return 0;
}

void incr_free(struct incr *in)
{
    if (!in) {
        return;
    }
    for (size_t i = 0; in->steps && i < in->dag->n; i++) {
        struct incr_step *st = &in->steps[i];
        for (size_t k = 0; k < st->n_in; k++) {
            free(st->in[k].key);
        }
        for (size_t k = 0; st->out_keys && k < in->dag->nodes[i].outputs.n;
             k++) {
            free(st->out_keys[k]);
        }
        free(st->in);
        free(st->out_keys);
        free(st->final);
        free(st->cap);
        free(st->reason);
    }
    for (size_t i = 0; i < in->n_memo; i++) {
        free(in->memo[i].key);
    }
    for (size_t i = 0; i < in->n_fresh; i++) {
        free(in->fresh[i].path);
        free(in->fresh[i].backing);
    }
    free(in->memo);
    free(in->fresh);
    free(in->steps);
    free(in->reasons);
    state_records_free(&in->recs);
    state_close(in->st);
    free(in);
}

bool incr_up_to_date(const struct incr *in, size_t i)
{
    return !in->steps[i].runs;
}

const char *incr_reason(const struct incr *in, size_t i)
{
    return in->reasons[i];
}

const char *const *incr_reasons(const struct incr *in)
{
    return in->reasons;
}

const char *incr_output_identity(const struct incr *in, size_t i)
{
    return in->steps[i].out_id;
}

const char *incr_input_identity(const struct incr *in, size_t i,
                                const char *path)
{
    const struct incr_step *st = &in->steps[i];

    for (size_t k = 0; k < st->n_in; k++) {
        if (!strcmp(st->in[k].path, path)) {
            return st->in[k].id;
        }
    }
    return NULL;
}

const struct df_error *incr_store_error(const struct incr *in)
{
    return in->store_err.code ? &in->store_err : NULL;
}

/* ---- the runner's hooks ---- */

/* The output object of @outputs (a JSON array) for @path, or NULL. */
static json_t *output_entry(json_t *outputs, const char *path)
{
    size_t k;
    json_t *o;

    json_array_foreach(outputs, k, o) {
        const char *p = json_string_value(json_object_get(o, "path"));
        if (p && !strcmp(p, path)) {
            return o;
        }
    }
    return NULL;
}

/* An up-to-date step: its outputs and result as recorded. */
static bool hook_skip(void *opaque, struct run_step *rs)
{
    struct incr *in = opaque;
    struct incr_step *st = &in->steps[rs->index];
    const struct dag_node *n = &in->dag->nodes[rs->index];

    rs->reason = in->reasons[rs->index];
    if (st->runs) {
        return false;
    }
    rs->ctx.outputs = json_array();
    for (size_t k = 0; k < n->outputs.n; k++) {
        const struct state_output *o = recorded_output(st->rec,
                                                       st->out_keys[k]);
        json_t *j = o && o->info ? json_loads(o->info, 0, NULL) : NULL;
        if (!j) {
            continue;
        }
        /* the path as this run spells it (the cwd may differ) */
        json_object_set_new(j, "path", json_string(n->outputs.v[k]));
        json_array_append_new(rs->ctx.outputs, j);
    }
    if (st->rec && st->rec->result) {
        rs->ctx.result = json_loads(st->rec->result, 0, NULL);
    }
    return true;
}

static bool step_cancelled(void *opaque)
{
    return op_cancelled(opaque);
}

/* The sha256 the op computed for output @k (op_set_digest()), in @hex. */
static bool digest_given(const struct op_ctx *ctx, size_t k, char hex[65])
{
    if (!ctx->digests || !ctx->digests[k].has_sha256) {
        return false;
    }
    hex_of(ctx->digests[k].sha256, hex);
    return true;
}

/* The "sha256" an output entry already carries (a step run elsewhere,
 * `step` under Slurm, hashed it when it finished: a later step may have
 * changed the file in place since), into @hex; false when it has none. */
static bool known_sha256(json_t *entry, char hex[65])
{
    const char *v = json_string_value(json_object_get(entry, "sha256"));

    if (!v || strlen(v) != 64) {
        return false;
    }
    memcpy(hex, v, 65);
    return true;
}

/*
 * Output @k of a finished step, at @path (its report entry @entry, may be
 * NULL): its SHA-256 into @hex, the one the op computed while writing it,
 * else by reading it now; "" when it is not a regular file or cannot be
 * read.  A raw image's guest-visible bytes are its file's bytes, so its
 * guest_sha256 is that same hash.  -1 (@hex "") when the step was
 * cancelled while the file was read.
 */
static int output_digest(struct run_step *rs, size_t k, const char *path,
                         const struct stat *sb, json_t *entry, char hex[65])
{
    struct hash_stop stop = { step_cancelled, &rs->ctx };
    const char *fmt = json_string_value(json_object_get(entry, "format"));

    hex[0] = '\0';
    if (S_ISREG(sb->st_mode) && !known_sha256(entry, hex) &&
        !digest_given(&rs->ctx, k, hex) &&
        hash_file(path, hex, NULL, false, &stop) < 0) {
        hex[0] = '\0';
        if (op_cancelled(&rs->ctx)) {
            return -1;
        }
    }
    if (entry) {
        json_object_set_new(entry, "sha256", hex[0] ? json_string(hex)
                                                    : json_null());
        if (hex[0] && fmt && !strcmp(fmt, "raw") &&
            !json_object_get(entry, "guest_sha256")) {
            json_object_set_new(entry, "guest_sha256", json_string(hex));
        }
    }
    return 0;
}

/* Fail a step interrupted while its outputs were hashed. */
static void interrupted_hashing(struct run_step *rs, const char *path)
{
    rs->ret = df_fail(&rs->ctx.err, DF_E_CANCELED, "'%s': interrupted while "
                      "hashing it", path);
    /* a failed step lists no outputs */
    json_decref(rs->ctx.outputs);
    rs->ctx.outputs = NULL;
}

void incr_output_digests(struct run_step *rs, const struct dag_node *n)
{
    if (rs->ret < 0) {
        return;
    }
    for (size_t k = 0; k < n->outputs.n; k++) {
        json_t *entry = output_entry(rs->ctx.outputs, n->outputs.v[k]);
        char hex[65];
        struct stat sb;
        if (stat(n->outputs.v[k], &sb) < 0) {
            continue;
        }
        if (output_digest(rs, k, n->outputs.v[k], &sb, entry, hex) < 0) {
            interrupted_hashing(rs, n->outputs.v[k]);
            return;
        }
    }
}

/*
 * On the worker (or, for a step run elsewhere, the scheduler's thread):
 * what the step left, with the SHA-256 of each file (see output_digest()).  A SIGINT while reading fails the step (interrupted):
 * its record is not written, and the next run runs it again.
 */
static void hook_after(void *opaque, struct run_step *rs)
{
    struct incr *in = opaque;
    struct incr_step *st = &in->steps[rs->index];
    const struct dag_node *n = &in->dag->nodes[rs->index];

    if (rs->ret < 0) {
        return;
    }
    for (size_t k = 0; k < n->outputs.n; k++) {
        struct incr_capture *c = &st->cap[k];
        json_t *entry = output_entry(rs->ctx.outputs, n->outputs.v[k]);
        struct stat sb;
        if (stat(n->outputs.v[k], &sb) < 0) {
            continue;
        }
        c->exists = true;
        if (output_digest(rs, k, n->outputs.v[k], &sb, entry,
                          c->sha256) < 0) {
            interrupted_hashing(rs, n->outputs.v[k]);
            return;
        }
        /* the stat taken before the read: reading changes no field */
        stat_of(&sb, &c->st);
    }
}

static void note_store_error(struct incr *in, const struct df_error *err)
{
    if (!in->store_err.code) {
        in->store_err = *err;
    }
}

/* --expect-reproducible: the outputs' hashes against the last record. */
static enum run_repro compare_with_record(const struct incr *in, size_t i)
{
    const struct incr_step *st = &in->steps[i];
    const struct dag_node *n = &in->dag->nodes[i];

    if (!st->rec) {
        return RUN_REPRO_UNKNOWN;
    }
    for (size_t k = 0; k < n->outputs.n; k++) {
        const struct state_output *o = recorded_output(st->rec,
                                                       st->out_keys[k]);
        if (!o || !st->cap[k].exists) {
            if (!o != !st->cap[k].exists) {
                return RUN_REPRO_DIFFERENT;
            }
            continue;
        }
        if (strcmp(o->sha256, st->cap[k].sha256) != 0) {
            return RUN_REPRO_DIFFERENT;
        }
    }
    return RUN_REPRO_SAME;
}

/* On the scheduler thread: one transaction per finished step. */
static void hook_finished(void *opaque, struct run_step *rs)
{
    struct incr *in = opaque;
    struct incr_step *st = &in->steps[rs->index];
    const struct dag_node *n = &in->dag->nodes[rs->index];
    struct state_step rec = { 0 };
    struct df_error err = { 0 };

    if (in->o.expect_reproducible && rs->status == STEP_SUCCEEDED) {
        rs->reproducible = compare_with_record(in, rs->index);
    }
    if (!in->st || !in->o.writable) {
        return;
    }
    if (rs->status != STEP_SUCCEEDED) {
        if (state_forget_step(in->st, in->job->steps[rs->index].id, &err) < 0) {
            note_store_error(in, &err);
        }
        return;
    }
    rec.id = in->job->steps[rs->index].id;
    memcpy(rec.def_fp, st->def_fp, 65);
    rec.finished_ms = rs->finished_ms;
    rec.result = rs->ctx.result ? json_dumps(rs->ctx.result,
                                             JSON_COMPACT |
                                                 JSON_PRESERVE_ORDER)
                                : NULL;
    rec.inputs = calloc(st->n_in + 1, sizeof(*rec.inputs));
    rec.outputs = calloc(n->outputs.n + 1, sizeof(*rec.outputs));
    if (!rec.inputs || !rec.outputs) {
        df_fail(&err, DF_E_NOMEM, "out of memory");
        note_store_error(in, &err);
        goto out;
    }
    for (size_t k = 0; k < st->n_in; k++) {
        rec.inputs[rec.n_inputs].path = st->in[k].key;
        rec.inputs[rec.n_inputs++].identity = st->in[k].id;
    }
    for (size_t k = 0; k < n->outputs.n; k++) {
        struct state_output *o = &rec.outputs[rec.n_outputs];
        json_t *entry = output_entry(rs->ctx.outputs, n->outputs.v[k]);
        if (!st->cap[k].exists) {
            continue;
        }
        o->path = st->out_keys[k];
        o->st = st->cap[k].st;
        memcpy(o->sha256, st->cap[k].sha256, 65);
        o->info = entry ? json_dumps(entry, JSON_COMPACT |
                                                JSON_PRESERVE_ORDER)
                        : NULL;
        rec.n_outputs++;
    }
    if (state_put_step(in->st, &rec, &err) < 0) {
        note_store_error(in, &err);
    }
out:
    for (size_t k = 0; k < rec.n_outputs; k++) {
        free(rec.outputs[k].info);
    }
    free(rec.outputs);
    free(rec.inputs);
    free(rec.result);
}

static void hooks_init(struct incr *in)
{
    in->hooks.opaque = in;
    in->hooks.skip = hook_skip;
    in->hooks.after = hook_after;
    in->hooks.finished = hook_finished;
}

const struct run_hooks *incr_hooks(struct incr *in)
{
    return &in->hooks;
}

/* ---- sums ---- */

struct sum_line {
    char *path;
    const char *sha;
};

static int sum_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sum_line *)a)->path,
                  ((const struct sum_line *)b)->path);
}

/* The hash of output @k of step @i as the run leaves it, or NULL. */
static const char *final_hash(const struct incr *in, const struct run *run,
                              size_t i, size_t k)
{
    const struct incr_step *st = &in->steps[i];
    const struct state_output *o;

    switch (run->steps[i].status) {
    case STEP_SUCCEEDED:
        return st->cap[k].exists && st->cap[k].sha256[0] ? st->cap[k].sha256
                                                         : NULL;
    case STEP_UP_TO_DATE:
        o = recorded_output(st->rec, st->out_keys[k]);
        return o && o->sha256[0] ? o->sha256 : NULL;
    default:
        return NULL;
    }
}

int incr_write_sums(const struct incr *in, const struct run *run,
                    const char *path, size_t *missing, struct df_error *err)
{
    char *dir = df_path_dir(path), *tmp = df_temp_name(path);
    struct sum_line *lines = NULL;
    size_t n = 0, cap = 0;
    FILE *f = NULL;
    int ret = 0;

    *missing = 0;
    if (!dir || !tmp) {
        ret = df_fail(err, DF_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < in->dag->n; i++) {
        const struct dag_node *nd = &in->dag->nodes[i];
        for (size_t k = 0; k < nd->outputs.n; k++) {
            const char *sha;
            struct stat sb;
            if (!in->steps[i].final[k]) {
                continue;
            }
            sha = final_hash(in, run, i, k);
            if (!sha) {
                /* a directory made by a command has no single hash */
                if (stat(nd->outputs.v[k], &sb) < 0 || S_ISREG(sb.st_mode)) {
                    (*missing)++;
                }
                continue;
            }
            if (n == cap) {
                struct sum_line *v = realloc(lines, (cap = cap ? cap * 2 : 32) *
                                                        sizeof(*v));
                if (!v) {
                    ret = df_fail(err, DF_E_NOMEM, "out of memory");
                    goto out;
                }
                lines = v;
            }
            lines[n].sha = sha;
            lines[n].path = job_path_relative(dir, nd->outputs.v[k]);
            if (!lines[n].path) {
                ret = df_fail(err, DF_E_NOMEM, "out of memory");
                goto out;
            }
            n++;
        }
    }
    if (n > 1) {
        qsort(lines, n, sizeof(*lines), sum_cmp);
    }
    f = fopen(tmp, "w");
    if (!f) {
        ret = df_fail_sys(err, "cannot write the sums file '%s'", path);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s  %s\n", lines[i].sha, lines[i].path);
    }
    if (fclose(f) != 0) {
        f = NULL;
        ret = df_fail_sys(err, "cannot write the sums file '%s'", path);
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) < 0) {
        ret = df_fail_sys(err, "cannot write the sums file '%s'", path);
    }
out:
    if (f) {
        fclose(f);
    }
    if (ret < 0 && tmp) {
        unlink(tmp);
    }
    for (size_t i = 0; i < n; i++) {
        free(lines[i].path);
    }
    free(lines);
    free(tmp);
    free(dir);
    return ret;
}
