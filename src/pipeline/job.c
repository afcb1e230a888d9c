/* SPDX-License-Identifier: MIT */
/*
 * job.c - the parts of the job model that do not touch YAML: diagnostics,
 * variables, names of ops and keys, path arithmetic, and freeing a job.
 */
#include "job.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "job-keys.h"

/* ---- diagnostics ---- */

void job_diags_init(struct job_diags *d)
{
    memset(d, 0, sizeof(*d));
}

void job_diags_release(struct job_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].msg);
    }
    free(d->v);
    free(d->file);
    memset(d, 0, sizeof(*d));
}

void job_diag_add(struct job_diags *d, const struct job_loc *loc,
                  const char *fmt, ...)
{
    struct job_diag *g;
    va_list ap;
    char *msg = NULL;
    int n;

    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct job_diag *v = realloc(d->v, cap * sizeof(*v));
        if (!v) {
            return; /* out of memory: the diagnostics already held stay */
        }
        d->v = v;
        d->cap = cap;
    }
    va_start(ap, fmt);
    n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    g = &d->v[d->n++];
    memset(g, 0, sizeof(*g));
    if (loc) {
        g->loc = *loc;
    }
    g->msg = msg;
}

static int diag_cmp(const void *pa, const void *pb)
{
    const struct job_diag *a = pa, *b = pb;

    if (a->loc.line != b->loc.line) {
        return a->loc.line < b->loc.line ? -1 : 1;
    }
    if (a->loc.col != b->loc.col) {
        return a->loc.col < b->loc.col ? -1 : 1;
    }
    return strcmp(a->msg, b->msg);
}

void job_diags_print(const struct job_diags *d, FILE *out)
{
    struct job_diag *copy;

    if (!d->n) {
        return;
    }
    /* print a sorted copy, so that positions come in file order */
    copy = malloc(d->n * sizeof(*copy));
    if (copy) {
        memcpy(copy, d->v, d->n * sizeof(*copy));
        qsort(copy, d->n, sizeof(*copy), diag_cmp);
    }
    for (size_t i = 0; i < d->n; i++) {
        const struct job_diag *g = copy ? &copy[i] : &d->v[i];
        if (g->loc.file && g->loc.line) {
            fprintf(out, "%s:%d:%d: error: %s\n", g->loc.file, g->loc.line,
                    g->loc.col, g->msg);
        } else if (g->loc.file) {
            fprintf(out, "%s: error: %s\n", g->loc.file, g->msg);
        } else {
            fprintf(out, "error: %s\n", g->msg);
        }
    }
    free(copy);
}

/* ---- variables ---- */

void job_vars_release(struct job_vars *vars)
{
    for (size_t i = 0; i < vars->n; i++) {
        free(vars->v[i].name);
        free(vars->v[i].value);
    }
    free(vars->v);
    memset(vars, 0, sizeof(*vars));
}

int job_vars_set(struct job_vars *vars, const char *name, const char *value)
{
    char *v = strdup(value);

    if (!v) {
        return -1;
    }
    for (size_t i = 0; i < vars->n; i++) {
        if (strcmp(vars->v[i].name, name) == 0) {
            free(vars->v[i].value);
            vars->v[i].value = v;
            return 0;
        }
    }
    if (vars->n == vars->cap) {
        size_t cap = vars->cap ? vars->cap * 2 : 8;
        struct job_var *nv = realloc(vars->v, cap * sizeof(*nv));
        if (!nv) {
            free(v);
            return -1;
        }
        vars->v = nv;
        vars->cap = cap;
    }
    vars->v[vars->n].name = strdup(name);
    if (!vars->v[vars->n].name) {
        free(v);
        return -1;
    }
    vars->v[vars->n++].value = v;
    return 0;
}

bool job_var_name_ok(const char *s, size_t len)
{
    if (!len || !(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') ||
                  (s[0] >= 'a' && s[0] <= 'z'))) {
        return false;
    }
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9'))) {
            return false;
        }
    }
    return true;
}

int job_vars_set_arg(struct job_vars *vars, const char *arg)
{
    const char *eq = strchr(arg, '=');
    char *name;
    int ret;

    if (!eq || !job_var_name_ok(arg, (size_t)(eq - arg))) {
        return -1;
    }
    name = strndup(arg, (size_t)(eq - arg));
    if (!name) {
        return -1;
    }
    ret = job_vars_set(vars, name, eq + 1);
    free(name);
    return ret;
}

const char *job_vars_get(const struct job_vars *vars, const char *name)
{
    for (size_t i = 0; vars && i < vars->n; i++) {
        if (strcmp(vars->v[i].name, name) == 0) {
            return vars->v[i].value;
        }
    }
    return NULL;
}

/* ---- names ---- */

static const char *const op_names[JOB_OP_COUNT] = {
    [JOB_OP_CREATE] = "create",     [JOB_OP_OVERLAY] = "overlay",
    [JOB_OP_COPY] = "copy",         [JOB_OP_CONVERT] = "convert",
    [JOB_OP_WRITE] = "write",       [JOB_OP_FILL] = "fill",
    [JOB_OP_RESIZE] = "resize",     [JOB_OP_COMMIT] = "commit",
    [JOB_OP_REBASE] = "rebase",     [JOB_OP_SPARSIFY] = "sparsify",
    [JOB_OP_CHECK] = "check",       [JOB_OP_DIGEST] = "digest",
    [JOB_OP_COMPARE] = "compare",   [JOB_OP_INFO] = "info",
    [JOB_OP_COMMAND] = "command",
    [JOB_OP_PARTITION] = "partition", [JOB_OP_FILESYSTEM] = "filesystem",
    [JOB_OP_FILES] = "files",
};

const char *job_op_name(enum job_op op)
{
    return (unsigned)op < JOB_OP_COUNT ? op_names[op] : "?";
}

int job_op_parse(const char *name, enum job_op *out)
{
    for (int i = 0; i < JOB_OP_COUNT; i++) {
        if (strcmp(op_names[i], name) == 0) {
            *out = (enum job_op)i;
            return 0;
        }
    }
    return -1;
}

static const char *const key_names[JOB_KEY_COUNT] = {
    [JOB_KEY_ID] = "id",
    [JOB_KEY_OP] = "op",
    [JOB_KEY_NEEDS] = "needs",
    [JOB_KEY_DESCRIPTION] = "description",
    [JOB_KEY_IMAGE] = "image",
    [JOB_KEY_FORMAT] = "format",
    [JOB_KEY_SIZE] = "size",
    [JOB_KEY_PREALLOCATION] = "preallocation",
    [JOB_KEY_CLUSTER_SIZE] = "cluster_size",
    [JOB_KEY_COMPAT] = "compat",
    [JOB_KEY_LAZY_REFCOUNTS] = "lazy_refcounts",
    [JOB_KEY_REFCOUNT_BITS] = "refcount_bits",
    [JOB_KEY_COMPRESSION_TYPE] = "compression_type",
    [JOB_KEY_BACKING] = "backing",
    [JOB_KEY_BACKING_FORMAT] = "backing_format",
    [JOB_KEY_BACKING_PATH] = "backing_path",
    [JOB_KEY_FROM] = "from",
    [JOB_KEY_FROM_FORMAT] = "from_format",
    [JOB_KEY_TO] = "to",
    [JOB_KEY_SPARSE] = "sparse",
    [JOB_KEY_COMPRESS] = "compress",
    [JOB_KEY_SPARSE_SIZE] = "sparse_size",
    [JOB_KEY_OFFSET] = "offset",
    [JOB_KEY_LENGTH] = "length",
    [JOB_KEY_PATTERN] = "pattern",
    [JOB_KEY_REPAIR] = "repair",
    [JOB_KEY_EXPECT] = "expect",
    [JOB_KEY_SHA256] = "sha256",
    [JOB_KEY_A] = "a",
    [JOB_KEY_B] = "b",
    [JOB_KEY_UNSAFE] = "unsafe",
    [JOB_KEY_ARGV] = "argv",
    [JOB_KEY_SHELL] = "shell",
    [JOB_KEY_INPUTS] = "inputs",
    [JOB_KEY_OUTPUTS] = "outputs",
    [JOB_KEY_TABLE] = "table",
    [JOB_KEY_DISK_GUID] = "disk_guid",
    [JOB_KEY_PARTITIONS] = "partitions",
    [JOB_KEY_PARTITION] = "partition",
    [JOB_KEY_TYPE] = "type",
    [JOB_KEY_LABEL] = "label",
    [JOB_KEY_UUID] = "uuid",
    [JOB_KEY_OPTIONS] = "options",
    [JOB_KEY_UNTRUSTED] = "untrusted",
    [JOB_KEY_ALLOW_BACKING] = "allow_backing",
};

const char *job_key_name(enum job_key key)
{
    return (unsigned)key < JOB_KEY_COUNT ? key_names[key] : "?";
}

int job_key_parse(const char *name, enum job_key *out)
{
    for (int i = 0; i < JOB_KEY_COUNT; i++) {
        if (strcmp(key_names[i], name) == 0) {
            *out = (enum job_key)i;
            return 0;
        }
    }
    return -1;
}

#define K(x) (UINT64_C(1) << JOB_KEY_##x)
#define COMMON (K(ID) | K(OP) | K(NEEDS) | K(DESCRIPTION))
/* every op that opens images may treat them as hostile (SPEC §8) */
#define UNTRUSTED (K(UNTRUSTED) | K(ALLOW_BACKING))
#define QCOW2_OPTS                                                            \
    (K(CLUSTER_SIZE) | K(COMPAT) | K(LAZY_REFCOUNTS) | K(REFCOUNT_BITS) |    \
     K(COMPRESSION_TYPE))

/* The keys each op takes, and those it must have (SPEC §4). */
static const struct {
    uint64_t allowed, required;
} op_keys[JOB_OP_COUNT] = {
    [JOB_OP_CREATE] = { COMMON | UNTRUSTED | K(IMAGE) | K(FORMAT) | K(SIZE) |
                            K(PREALLOCATION) | QCOW2_OPTS | K(BACKING) |
                            K(BACKING_FORMAT) | K(BACKING_PATH),
                        K(IMAGE) },
    [JOB_OP_OVERLAY] = { COMMON | UNTRUSTED | K(IMAGE) | K(BACKING) | K(BACKING_FORMAT) |
                             K(FORMAT) | K(SIZE) | QCOW2_OPTS |
                             K(BACKING_PATH),
                         K(IMAGE) | K(BACKING) },
    [JOB_OP_COPY] = { COMMON | K(FROM) | K(TO) | K(SPARSE), K(FROM) | K(TO) },
    [JOB_OP_CONVERT] = { COMMON | UNTRUSTED | K(FROM) | K(FROM_FORMAT) | K(TO) |
                             K(FORMAT) | K(COMPRESS) | K(PREALLOCATION) |
                             QCOW2_OPTS | K(SPARSE_SIZE) | K(BACKING) |
                             K(BACKING_FORMAT),
                         K(FROM) | K(TO) },
    [JOB_OP_WRITE] = { COMMON | UNTRUSTED | K(IMAGE) | K(FROM) | K(OFFSET) | K(FORMAT),
                       K(IMAGE) | K(FROM) },
    [JOB_OP_FILL] = { COMMON | UNTRUSTED | K(IMAGE) | K(OFFSET) | K(LENGTH) |
                          K(PATTERN) | K(FORMAT),
                      K(IMAGE) | K(PATTERN) },
    [JOB_OP_RESIZE] = { COMMON | UNTRUSTED | K(IMAGE) | K(SIZE) | K(PREALLOCATION) |
                            K(FORMAT),
                        K(IMAGE) | K(SIZE) },
    [JOB_OP_COMMIT] = { COMMON | UNTRUSTED | K(IMAGE) | K(FORMAT), K(IMAGE) },
    [JOB_OP_REBASE] = { COMMON | UNTRUSTED | K(IMAGE) | K(BACKING) | K(BACKING_FORMAT) |
                            K(UNSAFE) | K(FORMAT) | K(BACKING_PATH),
                        K(IMAGE) | K(BACKING) },
    [JOB_OP_SPARSIFY] = { COMMON | UNTRUSTED | K(IMAGE) | K(FORMAT), K(IMAGE) },
    [JOB_OP_CHECK] = { COMMON | UNTRUSTED | K(IMAGE) | K(REPAIR) | K(EXPECT) | K(FORMAT),
                       K(IMAGE) },
    [JOB_OP_DIGEST] = { COMMON | UNTRUSTED | K(IMAGE) | K(SHA256) | K(FORMAT), K(IMAGE) },
    [JOB_OP_COMPARE] = { COMMON | UNTRUSTED | K(A) | K(B), K(A) | K(B) },
    [JOB_OP_INFO] = { COMMON | UNTRUSTED | K(IMAGE) | K(FORMAT), K(IMAGE) },
    [JOB_OP_COMMAND] = { COMMON | K(ARGV) | K(SHELL) | K(INPUTS) |
                             K(OUTPUTS),
                         0 /* argv or shell: checked by hand */ },
    [JOB_OP_PARTITION] = { COMMON | K(IMAGE) | K(FORMAT) | K(TABLE) |
                               K(DISK_GUID) | K(PARTITIONS),
                           K(IMAGE) | K(PARTITIONS) },
    [JOB_OP_FILESYSTEM] = { COMMON | K(IMAGE) | K(FORMAT) | K(PARTITION) |
                                K(TYPE) | K(LABEL) | K(UUID) | K(FROM) |
                                K(OPTIONS),
                            K(IMAGE) | K(PARTITION) | K(TYPE) },
    [JOB_OP_FILES] = { COMMON | K(IMAGE) | K(FORMAT) | K(PARTITION) |
                           K(FROM) | K(TO),
                       K(IMAGE) | K(PARTITION) | K(FROM) },
};

/* Keys `defaults:` may set: the options of create, overlay and convert. */
const uint64_t job_default_keys =
    K(FORMAT) | K(PREALLOCATION) | QCOW2_OPTS | K(BACKING_FORMAT) |
    K(BACKING_PATH) | K(COMPRESS) | K(SPARSE_SIZE);

uint64_t job_op_allowed_keys(enum job_op op)
{
    return op_keys[op].allowed;
}

uint64_t job_op_required_keys(enum job_op op)
{
    return op_keys[op].required;
}

size_t job_name_stem(const char *name)
{
    size_t n = strlen(name);

    if (n > 5 && !strcmp(name + n - 5, ".yaml")) {
        return n - 5;
    }
    if (n > 4 && !strcmp(name + n - 4, ".yml")) {
        return n - 4;
    }
    return n;
}

/* ---- edit distance for "did you mean" ---- */

int job_edit_distance(const char *a, const char *b)
{
    /* optimal string alignment: insertions, deletions, substitutions and
     * swaps of two neighbours ("imgae" is one step from "image") */
    size_t la = strlen(a), lb = strlen(b);
    int d[64][64];

    if (la >= 63 || lb >= 63) {
        return 100;
    }
    for (size_t i = 0; i <= la; i++) {
        d[i][0] = (int)i;
    }
    for (size_t j = 0; j <= lb; j++) {
        d[0][j] = (int)j;
    }
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) {
                best = d[i - 1][j] + 1;
            }
            if (d[i][j - 1] + 1 < best) {
                best = d[i][j - 1] + 1;
            }
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
                a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best) {
                best = d[i - 2][j - 2] + 1;
            }
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

const char *job_closest(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    int best_d = 100;
    int limit = strlen(word) <= 4 ? 1 : 2;

    for (size_t i = 0; i < n; i++) {
        int d;
        if (!cands[i]) {
            continue;
        }
        d = job_edit_distance(word, cands[i]);
        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    return best_d <= limit ? best : NULL;
}

const char *job_closest_key(const char *word, uint64_t allowed)
{
    const char *cands[JOB_KEY_COUNT] = { 0 };

    for (int i = 0; i < JOB_KEY_COUNT; i++) {
        if ((allowed >> i) & 1) {
            cands[i] = key_names[i];
        }
    }
    return job_closest(word, cands, JOB_KEY_COUNT);
}

const char *job_closest_op(const char *word)
{
    return job_closest(word, op_names, JOB_OP_COUNT);
}

/* ---- paths ---- */

char *job_path_normalize(const char *path)
{
    size_t len = strlen(path);
    bool abs = path[0] == '/';
    char *copy = strdup(path);
    char **parts, *out, *save = NULL, *tok;
    size_t n = 0, o = 0;

    if (!copy) {
        return NULL;
    }
    parts = malloc((len / 2 + 2) * sizeof(*parts));
    out = malloc(len + 3);
    if (!parts || !out) {
        free(copy);
        free(parts);
        free(out);
        return NULL;
    }
    for (tok = strtok_r(copy, "/", &save); tok;
         tok = strtok_r(NULL, "/", &save)) {
        if (strcmp(tok, ".") == 0) {
            continue;
        }
        if (strcmp(tok, "..") == 0) {
            if (n && strcmp(parts[n - 1], "..") != 0) {
                n--;
                continue;
            }
            if (abs) {
                continue; /* "/.." is "/" */
            }
        }
        parts[n++] = tok;
    }
    if (abs) {
        out[o++] = '/';
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(parts[i]);
        if (i) {
            out[o++] = '/';
        }
        memcpy(out + o, parts[i], l);
        o += l;
    }
    if (o == 0) {
        out[o++] = '.';
    }
    out[o] = '\0';
    free(parts);
    free(copy);
    return out;
}

char *job_path_resolve(const char *dir, const char *path)
{
    char *joined, *out;

    if (path[0] == '/' || !dir || strcmp(dir, ".") == 0) {
        return job_path_normalize(path);
    }
    if (asprintf(&joined, "%s/%s", dir, path) < 0) {
        return NULL;
    }
    out = job_path_normalize(joined);
    free(joined);
    return out;
}

char *job_path_absolute(const char *p)
{
    char *cwd, *out;

    if (p[0] == '/') {
        return job_path_normalize(p);
    }
    cwd = getcwd(NULL, 0);
    if (!cwd) {
        return NULL;
    }
    out = job_path_resolve(cwd, p);
    free(cwd);
    return out;
}

/* Split normalised @p into components (pointers into @p, '/' -> NUL). */
static size_t split_parts(char *p, char **parts)
{
    size_t n = 0;
    char *save = NULL;

    if (strcmp(p, ".") == 0) {
        return 0;
    }
    for (char *tok = strtok_r(p, "/", &save); tok;
         tok = strtok_r(NULL, "/", &save)) {
        parts[n++] = tok;
    }
    return n;
}

char *job_path_relative(const char *from_dir, const char *target)
{
    char *d, *t, *out = NULL;
    char **dp = NULL, **tp = NULL;
    size_t nd, nt, common = 0, len = 2;

    /* mixed absolute/relative, or a climb above the start: go absolute */
    if ((from_dir[0] == '/') != (target[0] == '/') ||
        strncmp(from_dir, "..", 2) == 0 || strncmp(target, "..", 2) == 0) {
        d = job_path_absolute(from_dir);
        t = job_path_absolute(target);
    } else {
        d = job_path_normalize(from_dir);
        t = job_path_normalize(target);
    }
    if (!d || !t) {
        goto out;
    }
    dp = malloc((strlen(d) / 2 + 2) * sizeof(*dp));
    tp = malloc((strlen(t) / 2 + 2) * sizeof(*tp));
    if (!dp || !tp) {
        goto out;
    }
    nd = split_parts(d, dp);
    nt = split_parts(t, tp);
    while (common < nd && common < nt && strcmp(dp[common], tp[common]) == 0) {
        common++;
    }
    for (size_t i = common; i < nt; i++) {
        len += strlen(tp[i]) + 1;
    }
    len += (nd - common) * 3;
    out = malloc(len);
    if (out) {
        size_t o = 0;
        for (size_t i = common; i < nd; i++) {
            memcpy(out + o, "../", 3);
            o += 3;
        }
        for (size_t i = common; i < nt; i++) {
            size_t l = strlen(tp[i]);
            memcpy(out + o, tp[i], l);
            o += l;
            out[o++] = '/';
        }
        if (o == 0) {
            out[o++] = '.';
        } else {
            o--; /* the last '/' */
        }
        out[o] = '\0';
    }
out:
    free(dp);
    free(tp);
    free(d);
    free(t);
    return out;
}

/* ---- freeing ---- */

void job_strv_release(struct job_strv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free(v->v[i]);
    }
    free(v->v);
    free(v->loc);
    memset(v, 0, sizeof(*v));
}

void job_step_release(struct job_step *s)
{
    free(s->id);
    free(s->description);
    job_strv_release(&s->needs);
    free(s->image);
    free(s->backing);
    free(s->backing_given);
    free(s->from);
    free(s->to);
    free(s->a);
    free(s->b);
    job_strv_release(&s->argv);
    free(s->shell);
    job_strv_release(&s->inputs);
    job_strv_release(&s->outputs);
    for (size_t i = 0; i < s->n_parts; i++) {
        free(s->parts[i].name);
    }
    free(s->parts);
    free(s->partition);
    free(s->label);
    free(s->uuid);
    job_strv_release(&s->options);
    job_strv_release(&s->allow_backing);
}

void job_free(struct job *job)
{
    if (!job) {
        return;
    }
    for (size_t i = 0; i < job->n_steps; i++) {
        job_step_release(&job->steps[i]);
    }
    free(job->steps);
    free(job->path);
    free(job->dir);
    free(job->name);
    job_vars_release(&job->vars);
    free(job);
}

char *job_step_disk_text(const struct job_step *s)
{
    char *out = NULL, g[37];
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    if (!f) {
        return NULL;
    }
    if (s->op == JOB_OP_PARTITION) {
        df_guid_format(&s->disk_guid, true, g);
        fprintf(f, "gpt disk_guid=%s\n",
                job_step_has(s, JOB_KEY_DISK_GUID) ? g : "derived");
        for (size_t i = 0; i < s->n_parts; i++) {
            const struct job_part *p = &s->parts[i];
            char t[37];
            df_guid_format(&p->type, true, t);
            df_guid_format(&p->guid, true, g);
            fprintf(f, "%zu name=%s type=%s size=%llu rest=%d guid=%s "
                    "attributes=%llx\n", i, p->name, t,
                    (unsigned long long)p->size, p->rest,
                    p->has_guid ? g : "derived",
                    (unsigned long long)p->attributes);
        }
    } else if (s->op == JOB_OP_FILESYSTEM) {
        fprintf(f, "partition=%s type=%s label=%s uuid=%s\n",
                s->partition ? s->partition : "",
                s->fs_type == JOB_FS_VFAT ? "vfat" : "ext4",
                s->label ? s->label : "(none)",
                s->uuid ? s->uuid : "(derived)");
        for (size_t i = 0; i < s->options.n; i++) {
            fprintf(f, "option=%s\n", s->options.v[i]);
        }
    } else if (s->op == JOB_OP_FILES) {
        fprintf(f, "partition=%s to=%s\n", s->partition ? s->partition : "",
                s->to ? s->to : "/");
    }
    fclose(f);
    return out;
}

const struct job_step *job_find_step(const struct job *job, const char *id)
{
    for (size_t i = 0; i < job->n_steps; i++) {
        if (job->steps[i].id && strcmp(job->steps[i].id, id) == 0) {
            return &job->steps[i];
        }
    }
    return NULL;
}
