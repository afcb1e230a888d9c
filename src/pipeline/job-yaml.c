/* SPDX-License-Identifier: MIT */
/*
 * job-yaml.c - read a job file with libyaml into the model of job.h.
 *
 * libyaml's document loader gives a node tree in which every node keeps
 * its start mark; each value is checked and converted right there, so an
 * error names the line and column of the offending value (libyaml counts
 * from 0, people from 1).  Reading goes on after an error, so that one
 * pass reports every problem of the file.  All strings are copied out of
 * the document before it is deleted.
 *
 * Order of work: root keys; vars (with --set); defaults; each step (op
 * first, then every key, then defaults, then checks that need several
 * keys); finally the ids that `needs` names.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <yaml.h>

#include "job-keys.h"

struct default_value {
    enum job_key key;
    yaml_node_t *value;
};

struct reader {
    const char *file;      /* for diagnostics: owned by diags */
    yaml_document_t doc;
    struct job_diags *diags;
    struct job *job;
    const struct job_vars *set;
    struct default_value defaults[JOB_KEY_COUNT];
    size_t n_defaults;
};

static struct job_loc loc_of(const struct reader *r, const yaml_node_t *n)
{
    struct job_loc l = { r->file, 0, 0 };

    if (n) {
        l.line = (int)n->start_mark.line + 1;
        l.col = (int)n->start_mark.column + 1;
    }
    return l;
}

/* The same location, pointing at the job's own copy of the file name. */
static struct job_loc job_loc_of(const struct reader *r, const yaml_node_t *n)
{
    struct job_loc l = loc_of(r, n);

    l.file = r->job->path;
    return l;
}

DF_PRINTF(3, 4)
static void error_at(struct reader *r, const yaml_node_t *n, const char *fmt,
                     ...)
{
    struct job_loc l = loc_of(r, n);
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) {
        msg = NULL;
    }
    va_end(ap);
    job_diag_add(r->diags, &l, "%s", msg ? msg : "out of memory");
    free(msg);
}

static const char *kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a value";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

static yaml_node_t *node(struct reader *r, int id)
{
    return yaml_document_get_node(&r->doc, id);
}

static const char *scalar_text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* A plain (unquoted) null: `key:` or `key: ~` or `key: null`. */
static bool is_null(const yaml_node_t *n)
{
    const char *s;

    if (n->type != YAML_SCALAR_NODE ||
        n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return false;
    }
    s = scalar_text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") ||
           !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* ---- ${NAME} substitution ---- */

static const char *var_value(struct reader *r, const char *name)
{
    const char *v = job_vars_get(r->set, name);

    return v ? v : job_vars_get(&r->job->vars, name);
}

/*
 * Copy @in with every ${NAME} replaced by its value; "$$" is a literal
 * '$', and a '$' not followed by '{' stays as it is.  Returns NULL after
 * reporting an error at @n.
 */
static char *substitute(struct reader *r, const yaml_node_t *n,
                        const char *in)
{
    size_t cap = strlen(in) + 1, len = 0;
    char *out = malloc(cap);
    const char *p = in;

    if (!out) {
        error_at(r, n, "out of memory");
        return NULL;
    }
    while (*p) {
        const char *add = p;
        size_t addlen = 1;
        char *name = NULL;
        if (p[0] == '$' && p[1] == '$') {
            addlen = 1;
            p += 2;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            if (!end) {
                error_at(r, n, "unterminated '${' in '%s'", in);
                free(out);
                return NULL;
            }
            name = strndup(p + 2, (size_t)(end - p - 2));
            if (!name || !job_var_name_ok(name, strlen(name))) {
                error_at(r, n, "bad variable name '${%.*s}'",
                         (int)(end - p - 2), p + 2);
                free(name);
                free(out);
                return NULL;
            }
            add = var_value(r, name);
            if (!add) {
                size_t nv = r->job->vars.n;
                const char **names = malloc((nv + 1) * sizeof(*names));
                const char *close = NULL;
                for (size_t i = 0; names && i < nv; i++) {
                    names[i] = r->job->vars.v[i].name;
                }
                if (names) {
                    close = job_closest(name, names, nv);
                }
                if (close) {
                    error_at(r, n, "undefined variable '%s' (did you mean "
                             "'%s'?)", name, close);
                } else {
                    error_at(r, n, "undefined variable '%s' (define it "
                             "under 'vars:' or with --set %s=VALUE)", name,
                             name);
                }
                free(names);
                free(name);
                free(out);
                return NULL;
            }
            addlen = strlen(add);
            p = end + 1;
        } else {
            p++;
        }
        if (len + addlen + 1 > cap) {
            char *bigger;
            cap = (len + addlen + 1) * 2;
            bigger = realloc(out, cap);
            if (!bigger) {
                free(name);
                free(out);
                error_at(r, n, "out of memory");
                return NULL;
            }
            out = bigger;
        }
        memcpy(out + len, add, addlen);
        len += addlen;
        free(name);
    }
    out[len] = '\0';
    return out;
}

/* ---- typed values: each reports its own error and returns -1 ---- */

/* The substituted text of scalar @n (you own it), or NULL. */
static char *get_text(struct reader *r, yaml_node_t *n, const char *key)
{
    if (n->type != YAML_SCALAR_NODE) {
        error_at(r, n, "'%s' must be a single value, not %s", key,
                 kind_name(n));
        return NULL;
    }
    return substitute(r, n, scalar_text(n));
}

static int get_string(struct reader *r, yaml_node_t *n, const char *key,
                      char **out)
{
    char *s = get_text(r, n, key);

    if (!s) {
        return -1;
    }
    free(*out);
    *out = s;
    return 0;
}

/*
 * A path, resolved against the job file's directory.  An @image name reads
 * as qemu-img reads file names (df_filename()): "file:" is stripped, and
 * json: and other protocols are refused.  A resolved path with a ':' before
 * any '/' becomes "./a:b", so that the engine never takes it for one.
 */
static int get_path(struct reader *r, yaml_node_t *n, const char *key,
                    bool image, char **out)
{
    char *s = get_text(r, n, key), *p;
    struct df_error err = { 0 };

    if (!s) {
        return -1;
    }
    if (!*s) {
        error_at(r, n, "'%s' is an empty path", key);
        free(s);
        return -1;
    }
    if (image) {
        char *plain;
        if (df_filename(s, &plain, &err) < 0) {
            error_at(r, n, "'%s': %s", key, err.msg);
            free(s);
            return -1;
        }
        free(s);
        s = plain;
    }
    p = job_path_resolve(r->job->dir, s);
    free(s);
    if (p && p[strcspn(p, ":/")] == ':') {
        s = p;
        if (asprintf(&p, "./%s", s) < 0) {
            p = NULL;
        }
        free(s);
    }
    if (!p) {
        error_at(r, n, "out of memory");
        return -1;
    }
    free(*out);
    *out = p;
    return 0;
}

static int get_size(struct reader *r, yaml_node_t *n, const char *key,
                    uint64_t *out)
{
    struct df_error err = { 0 };
    char *s = get_text(r, n, key);
    int ret = 0;

    if (!s) {
        return -1;
    }
    if (df_parse_size(s, out, &err) < 0) {
        error_at(r, n, "'%s': invalid size '%s' (use a number of bytes with "
                 "an optional suffix K, M, G, T, P or E)", key, s);
        ret = -1;
    }
    free(s);
    return ret;
}

static int get_uint(struct reader *r, yaml_node_t *n, const char *key,
                    uint64_t max, uint64_t *out)
{
    char *s = get_text(r, n, key), *end;
    unsigned long long v;
    int ret = 0;

    if (!s) {
        return -1;
    }
    errno = 0;
    v = strtoull(s, &end, 0);
    if (!*s || *end || s[0] == '-' || errno || v > max) {
        error_at(r, n, "'%s' must be a whole number from 0 to %" PRIu64
                 ", not '%s'", key, max, s);
        ret = -1;
    } else {
        *out = v;
    }
    free(s);
    return ret;
}

static int get_bool(struct reader *r, yaml_node_t *n, const char *key,
                    bool *out)
{
    static const char *const yes[] = { "true", "True", "TRUE", "yes", "on" };
    static const char *const no[] = { "false", "False", "FALSE", "no",
                                      "off" };
    char *s = get_text(r, n, key);
    int ret = -1;

    if (!s) {
        return -1;
    }
    for (size_t i = 0; i < 5; i++) {
        if (!strcmp(s, yes[i])) {
            *out = true;
            ret = 0;
        } else if (!strcmp(s, no[i])) {
            *out = false;
            ret = 0;
        }
    }
    if (ret < 0) {
        error_at(r, n, "'%s' must be true or false, not '%s'", key, s);
    }
    free(s);
    return ret;
}

/* One of @names (NULL-terminated); the index into *@out. */
static int get_choice(struct reader *r, yaml_node_t *n, const char *key,
                      const char *const *names, int *out)
{
    char *s = get_text(r, n, key);
    char choices[256] = "";
    size_t count = 0, used = 0;
    const char *close;

    if (!s) {
        return -1;
    }
    for (; names[count]; count++) {
        if (!strcmp(s, names[count])) {
            *out = (int)count;
            free(s);
            return 0;
        }
    }
    for (size_t i = 0; i < count && used < sizeof(choices); i++) {
        used += (size_t)snprintf(choices + used, sizeof(choices) - used,
                                 "%s%s", i ? (i + 1 == count ? " or " : ", ")
                                           : "", names[i]);
    }
    close = job_closest(s, names, count);
    if (close) {
        error_at(r, n, "invalid %s '%s' (did you mean '%s'?)", key, s, close);
    } else {
        error_at(r, n, "invalid %s '%s' (use %s)", key, s, choices);
    }
    free(s);
    return -1;
}

/* A list of values (a single value is a list of one). */
static int get_strv(struct reader *r, yaml_node_t *n, const char *key,
                    bool paths, struct job_strv *out)
{
    yaml_node_item_t *it;
    size_t count;
    int ret = 0;

    job_strv_release(out);
    if (n->type == YAML_SCALAR_NODE) {
        count = 1;
    } else if (n->type == YAML_SEQUENCE_NODE) {
        count = (size_t)(n->data.sequence.items.top -
                         n->data.sequence.items.start);
    } else {
        error_at(r, n, "'%s' must be a list, not %s", key, kind_name(n));
        return -1;
    }
    out->v = calloc(count + 1, sizeof(*out->v));
    out->loc = calloc(count + 1, sizeof(*out->loc));
    if (!out->v || !out->loc) {
        error_at(r, n, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = n;
        char *s = NULL;
        if (n->type == YAML_SEQUENCE_NODE) {
            it = n->data.sequence.items.start + i;
            item = node(r, *it);
        }
        if (paths ? get_path(r, item, key, false, &s) < 0
                  : get_string(r, item, key, &s) < 0) {
            ret = -1;
            continue;
        }
        out->loc[out->n] = job_loc_of(r, item);
        out->v[out->n++] = s;
    }
    return ret;
}

/* ---- keys ---- */

static const char *const format_names[] = { "raw", "qcow2", NULL };
static const enum df_format format_values[] = { DF_FMT_RAW, DF_FMT_QCOW2 };
static const char *const prealloc_names[] = { "off", "metadata", "falloc",
                                              "full", NULL };
static const char *const compat_names[] = { "0.10", "1.1", NULL };
static const char *const ctype_names[] = { "zlib", "zstd", NULL };
static const char *const backing_path_names[] = { "relative", "absolute",
                                                  NULL };
static const char *const sparse_names[] = { "auto", "always", "never",
                                            NULL };
static const char *const compress_names[] = { "false", "zlib", "zstd",
                                              "true", "no", NULL };
static const char *const repair_names[] = { "none", "leaks", "all", NULL };

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static int get_format(struct reader *r, yaml_node_t *n, const char *key,
                      enum df_format *out)
{
    int i;

    if (get_choice(r, n, key, format_names, &i) < 0) {
        return -1;
    }
    *out = format_values[i];
    return 0;
}

/* "0x41", "65" or "zero" or "random:SEED". */
static int get_pattern(struct reader *r, yaml_node_t *n, struct job_step *s)
{
    char *t = get_text(r, n, "pattern"), *end;
    unsigned long long v;
    int ret = 0;

    if (!t) {
        return -1;
    }
    errno = 0;
    if (!strcmp(t, "zero")) {
        s->pattern = JOB_PATTERN_ZERO;
    } else if (!strncmp(t, "random:", 7)) {
        v = strtoull(t + 7, &end, 0);
        if (!t[7] || *end || t[7] == '-' || errno) {
            error_at(r, n, "invalid pattern '%s': the seed of random:SEED "
                     "is a whole number", t);
            ret = -1;
        }
        s->pattern = JOB_PATTERN_RANDOM;
        s->pattern_seed = v;
    } else {
        v = strtoull(t, &end, 0);
        if (!*t || *end || t[0] == '-' || errno || v > 255) {
            error_at(r, n, "invalid pattern '%s' (use a byte value 0-255, "
                     "'zero', or 'random:SEED')", t);
            ret = -1;
        }
        s->pattern = JOB_PATTERN_BYTE;
        s->pattern_byte = (unsigned char)v;
    }
    free(t);
    return ret;
}

static int get_sha256(struct reader *r, yaml_node_t *n, struct job_step *s)
{
    char *t = get_text(r, n, "sha256");
    const char *hex;
    size_t i;
    int ret = 0;

    if (!t) {
        return -1;
    }
    hex = strncmp(t, "sha256:", 7) == 0 ? t + 7 : t;
    for (i = 0; hex[i]; i++) {
        char c = hex[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
              (c >= 'A' && c <= 'F'))) {
            break;
        }
    }
    if (i != 2 * DF_SHA256_LEN || hex[i]) {
        error_at(r, n, "invalid sha256 '%s': expected 64 hexadecimal digits",
                 t);
        ret = -1;
    } else {
        for (i = 0; i < 2 * DF_SHA256_LEN; i++) {
            s->sha256[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F'
                                      ? hex[i] - 'A' + 'a'
                                      : hex[i]);
        }
        s->sha256[i] = '\0';
    }
    free(t);
    return ret;
}

static int get_expect(struct reader *r, yaml_node_t *n, struct job_step *s)
{
    int ret = 0;

    if (n->type != YAML_MAPPING_NODE) {
        error_at(r, n, "'expect' must be a mapping such as "
                 "{errors: 0, leaks: 0}, not %s", kind_name(n));
        return -1;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
         p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(r, p->key), *v = node(r, p->value);
        const char *name = k->type == YAML_SCALAR_NODE ? scalar_text(k) : "";
        if (!strcmp(name, "errors")) {
            ret |= get_uint(r, v, "errors", UINT64_MAX, &s->expect_errors);
        } else if (!strcmp(name, "leaks")) {
            ret |= get_uint(r, v, "leaks", UINT64_MAX, &s->expect_leaks);
        } else {
            static const char *const names[] = { "errors", "leaks" };
            const char *close = job_closest(name, names, 2);
            error_at(r, k, "unknown key '%s' in 'expect'%s%s%s (use errors "
                     "and leaks)", name, close ? " (did you mean '" : "",
                     close ? close : "", close ? "'?)" : "");
            ret = -1;
        }
    }
    return ret ? -1 : 0;
}

/* ---- partition and filesystem (SPEC §9) ---- */

static void check_duplicate_keys(struct reader *r, yaml_node_t *m);
static yaml_node_t *lookup(struct reader *r, yaml_node_t *m,
                           const char *name);

/* Report keys of mapping @m not among @keys[0..n); -1 if there were any.
 * @where ends "unknown key 'x' ...". */
static int check_known_keys(struct reader *r, yaml_node_t *m,
                            const char *const *keys, size_t n,
                            const char *where)
{
    int ret = 0;

    for (yaml_node_pair_t *q = m->data.mapping.pairs.start;
         q < m->data.mapping.pairs.top; q++) {
        yaml_node_t *k = node(r, q->key);
        const char *name = k->type == YAML_SCALAR_NODE ? scalar_text(k) : "";
        bool known = false;
        for (size_t i = 0; i < n; i++) {
            known |= !strcmp(name, keys[i]);
        }
        if (!known) {
            const char *close = job_closest(name, keys, n);
            error_at(r, k, "unknown key '%s' %s%s%s%s", name, where,
                     close ? " (did you mean '" : "", close ? close : "",
                     close ? "'?)" : "");
            ret = -1;
        }
    }
    return ret;
}

static const char *const table_names[] = { "gpt", NULL };
static const char *const fs_type_names[] = { "ext4", "vfat", NULL };

static int get_guid(struct reader *r, yaml_node_t *n, const char *key,
                    struct df_guid *out)
{
    char *t = get_text(r, n, key);
    int ret = 0;

    if (!t) {
        return -1;
    }
    if (df_guid_parse(t, out) < 0) {
        error_at(r, n, "'%s': malformed GUID '%s' (use the form "
                 "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", key, t);
        ret = -1;
    }
    free(t);
    return ret;
}

static int get_part_type(struct reader *r, yaml_node_t *n, struct df_guid *out)
{
    char *t = get_text(r, n, "type");
    const char *const *aliases = df_gpt_type_aliases();
    size_t count = 0;
    const char *close;
    int ret = 0;

    if (!t) {
        return -1;
    }
    if (df_gpt_type_parse(t, out) < 0) {
        while (aliases[count]) {
            count++;
        }
        close = job_closest(t, aliases, count);
        error_at(r, n, "unknown partition type '%s' (%s%s%suse esp, "
                 "bios-boot, linux, linux-root-x86-64, linux-root-arm64, "
                 "swap, linux-home or a type GUID)", t,
                 close ? "did you mean '" : "", close ? close : "",
                 close ? "'? " : "");
        ret = -1;
    }
    free(t);
    return ret;
}

static int get_part_attributes(struct reader *r, yaml_node_t *n,
                               uint64_t *out)
{
    struct job_strv v = { 0 };
    int ret = get_strv(r, n, "attributes", false, &v);

    for (size_t i = 0; i < v.n; i++) {
        unsigned bit;
        if (df_gpt_attr_parse(v.v[i], &bit) < 0) {
            struct job_loc l = v.loc[i];
            l.file = r->file;
            job_diag_add(r->diags, &l, "unknown partition attribute '%s' "
                         "(use legacy_bios_bootable, read_only, "
                         "no_automount or a bit number 0-63)", v.v[i]);
            ret = -1;
        } else {
            *out |= UINT64_C(1) << bit;
        }
    }
    job_strv_release(&v);
    return ret;
}

/* `to` of a files step: an absolute directory of the file system. */
static int get_fs_dir(struct reader *r, yaml_node_t *n, char **out)
{
    char *t = get_text(r, n, "to"), *norm;

    if (!t) {
        return -1;
    }
    if (t[0] != '/' || strstr(t, "/../") || strpbrk(t, "\"\\\n") ||
        (strlen(t) >= 3 && !strcmp(t + strlen(t) - 3, "/.."))) {
        error_at(r, n, "'to' must be an absolute directory of the file "
                 "system without '..', '\"', '\\' or newlines, not '%s'", t);
        free(t);
        return -1;
    }
    norm = job_path_normalize(t);
    free(t);
    if (!norm) {
        error_at(r, n, "out of memory");
        return -1;
    }
    free(*out);
    *out = norm;
    return 0;
}

/* One entry of `partitions`: {name, type, size, guid, attributes}. */
static int get_part(struct reader *r, yaml_node_t *m, struct job_part *p)
{
    static const char *const keys[] = { "name", "type", "size", "guid",
                                        "attributes" };
    yaml_node_t *n;
    int ret = 0;

    p->loc = job_loc_of(r, m);
    if (m->type != YAML_MAPPING_NODE) {
        error_at(r, m, "a partition is a mapping with 'name', 'type' and "
                 "'size', not %s", kind_name(m));
        return -1;
    }
    check_duplicate_keys(r, m);
    if (check_known_keys(r, m, keys, 5, "in a partition") < 0) {
        ret = -1;
    }
    if (!(n = lookup(r, m, "name"))) {
        error_at(r, m, "a partition needs a 'name'");
        ret = -1;
    } else if (get_string(r, n, "name", &p->name) == 0) {
        struct df_error err = { 0 };
        if (!*p->name) {
            error_at(r, n, "a partition's 'name' is empty");
            ret = -1;
        } else if (df_gpt_name_check(p->name, &err) < 0) {
            error_at(r, n, "%s", err.msg);
            ret = -1;
        }
    } else {
        ret = -1;
    }
    if (!(n = lookup(r, m, "type"))) {
        error_at(r, m, "partition '%s' needs a 'type'",
                 p->name ? p->name : "?");
        ret = -1;
    } else {
        ret |= get_part_type(r, n, &p->type);
    }
    if (!(n = lookup(r, m, "size"))) {
        error_at(r, m, "partition '%s' needs a 'size' (or 'size: rest')",
                 p->name ? p->name : "?");
        ret = -1;
    } else {
        p->size_loc = job_loc_of(r, n);
        if (n->type == YAML_SCALAR_NODE && !strcmp(scalar_text(n), "rest")) {
            p->rest = true;
        } else if (get_size(r, n, "size", &p->size) < 0) {
            ret = -1;
        } else if (!p->size || p->size % DF_GPT_SECTOR) {
            error_at(r, n, "partition size %llu is not a positive multiple "
                     "of 512 bytes", (unsigned long long)p->size);
            ret = -1;
        }
    }
    if ((n = lookup(r, m, "guid"))) {
        ret |= get_guid(r, n, "guid", &p->guid);
        p->has_guid = true;
    }
    if ((n = lookup(r, m, "attributes"))) {
        ret |= get_part_attributes(r, n, &p->attributes);
    }
    return ret ? -1 : 0;
}

static int get_partitions(struct reader *r, yaml_node_t *n,
                          struct job_step *s)
{
    size_t count;
    int ret = 0;

    if (n->type != YAML_SEQUENCE_NODE) {
        error_at(r, n, "'partitions' must be a list of partitions, not %s",
                 kind_name(n));
        return -1;
    }
    count = (size_t)(n->data.sequence.items.top -
                     n->data.sequence.items.start);
    if (count > DF_GPT_ENTRIES) {
        error_at(r, n, "%zu partitions: a GPT holds at most %u", count,
                 DF_GPT_ENTRIES);
        return -1;
    }
    /* a second 'partitions' key (an error reported elsewhere) replaces
     * the first, as other keys do */
    for (size_t i = 0; i < s->n_parts; i++) {
        free(s->parts[i].name);
    }
    free(s->parts);
    s->n_parts = 0;
    s->parts = calloc(count + 1, sizeof(*s->parts));
    if (!s->parts) {
        error_at(r, n, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *m = node(r, n->data.sequence.items.start[i]);
        struct job_part *p = &s->parts[i];
        s->n_parts = i + 1;
        if (get_part(r, m, p) < 0) {
            ret = -1;
        }
        if (!p->name) {
            continue;
        }
        if (p->rest && i + 1 != count) {
            struct job_loc l = p->size_loc;
            l.file = r->file;
            job_diag_add(r->diags, &l, "partition '%s': only the last "
                         "partition may have 'size: rest'", p->name);
            ret = -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (s->parts[j].name && !strcmp(s->parts[j].name, p->name)) {
                error_at(r, m, "duplicate partition name '%s' (first at "
                         "line %d)", p->name, s->parts[j].loc.line);
                ret = -1;
                break;
            }
        }
    }
    return ret;
}

/* Read the value @v of key @k into @s.  Returns 0 or -1 (reported). */
static int parse_key(struct reader *r, struct job_step *s, enum job_key k,
                     yaml_node_t *v)
{
    const char *name = job_key_name(k);
    uint64_t u;
    int i, ret = 0;

    switch (k) {
    case JOB_KEY_ID:
    case JOB_KEY_OP:
        return 0; /* read first, by parse_step() */
    case JOB_KEY_NEEDS:
        ret = get_strv(r, v, name, false, &s->needs);
        break;
    case JOB_KEY_DESCRIPTION:
        ret = get_string(r, v, name, &s->description);
        break;
    case JOB_KEY_IMAGE: ret = get_path(r, v, name, true, &s->image); break;
    case JOB_KEY_FROM:
        ret = get_path(r, v, name, s->op == JOB_OP_CONVERT, &s->from);
        break;
    case JOB_KEY_TO:
        ret = s->op == JOB_OP_FILES
                  ? get_fs_dir(r, v, &s->to)
                  : get_path(r, v, name, s->op == JOB_OP_CONVERT, &s->to);
        break;
    case JOB_KEY_A: ret = get_path(r, v, name, true, &s->a); break;
    case JOB_KEY_B: ret = get_path(r, v, name, true, &s->b); break;
    case JOB_KEY_BACKING:
        if (s->op == JOB_OP_REBASE && is_null(v)) {
            /* `backing: null`: rebase onto nothing */
            free(s->backing_given);
            s->backing_given = strdup("");
            break;
        }
        ret = get_string(r, v, name, &s->backing_given);
        if (ret == 0 && *s->backing_given) {
            ret = get_path(r, v, name, true, &s->backing);
        } else if (ret == 0 && s->op != JOB_OP_REBASE) {
            error_at(r, v, "'backing' is an empty path");
            ret = -1;
        }
        break;
    case JOB_KEY_FORMAT: ret = get_format(r, v, name, &s->format); break;
    case JOB_KEY_FROM_FORMAT:
        ret = get_format(r, v, name, &s->from_format);
        break;
    case JOB_KEY_BACKING_FORMAT:
        ret = get_format(r, v, name, &s->backing_format);
        break;
    case JOB_KEY_SIZE: ret = get_size(r, v, name, &s->size); break;
    case JOB_KEY_OFFSET: ret = get_size(r, v, name, &s->offset); break;
    case JOB_KEY_LENGTH:
        ret = get_size(r, v, name, &s->length);
        if (ret == 0 && s->length == 0) {
            error_at(r, v, "'length' must be greater than zero");
            ret = -1;
        }
        break;
    case JOB_KEY_SPARSE_SIZE:
        ret = get_size(r, v, name, &s->sparse_size);
        if (ret == 0 && (s->sparse_size % 512 || s->sparse_size > (16u << 20))) {
            error_at(r, v, "invalid sparse_size: use a multiple of 512 up to "
                     "16M, or 0 to allocate the whole output");
            ret = -1;
        }
        break;
    case JOB_KEY_PREALLOCATION:
        if ((ret = get_choice(r, v, name, prealloc_names, &i)) == 0) {
            s->prealloc = (enum df_prealloc)i;
        }
        break;
    case JOB_KEY_CLUSTER_SIZE:
        ret = get_size(r, v, name, &u);
        if (ret == 0 && (!is_pow2(u) || u < 512 || u > (2u << 20))) {
            error_at(r, v, "invalid cluster_size: use a power of two from "
                     "512 to 2M");
            ret = -1;
        }
        s->cluster_size = (uint32_t)u;
        break;
    case JOB_KEY_COMPAT:
        if ((ret = get_choice(r, v, name, compat_names, &i)) == 0) {
            s->compat = i == 0 ? 2 : 3;
        }
        break;
    case JOB_KEY_LAZY_REFCOUNTS:
        ret = get_bool(r, v, name, &s->lazy_refcounts);
        break;
    case JOB_KEY_REFCOUNT_BITS:
        ret = get_uint(r, v, name, 64, &u);
        if (ret == 0 && !is_pow2(u)) {
            error_at(r, v, "invalid refcount_bits: use a power of two from 1 "
                     "to 64");
            ret = -1;
        }
        s->refcount_bits = (int)u;
        break;
    case JOB_KEY_COMPRESSION_TYPE:
        if ((ret = get_choice(r, v, name, ctype_names, &i)) == 0) {
            s->compression_type = i ? DF_COMPRESS_ZSTD : DF_COMPRESS_ZLIB;
        }
        break;
    case JOB_KEY_BACKING_PATH:
        if ((ret = get_choice(r, v, name, backing_path_names, &i)) == 0) {
            s->backing_path_absolute = i == 1;
        }
        break;
    case JOB_KEY_SPARSE:
        if ((ret = get_choice(r, v, name, sparse_names, &i)) == 0) {
            s->sparse = (enum job_sparse)i;
        }
        break;
    case JOB_KEY_COMPRESS:
        if ((ret = get_choice(r, v, name, compress_names, &i)) == 0) {
            static const enum job_compress map[] = {
                JOB_COMPRESS_NONE, JOB_COMPRESS_ZLIB, JOB_COMPRESS_ZSTD,
                JOB_COMPRESS_ZLIB, JOB_COMPRESS_NONE,
            };
            s->compress = map[i];
        }
        break;
    case JOB_KEY_PATTERN: ret = get_pattern(r, v, s); break;
    case JOB_KEY_REPAIR:
        if ((ret = get_choice(r, v, name, repair_names, &i)) == 0) {
            s->repair = (enum df_repair)i;
        }
        break;
    case JOB_KEY_EXPECT: ret = get_expect(r, v, s); break;
    case JOB_KEY_SHA256: ret = get_sha256(r, v, s); break;
    case JOB_KEY_UNSAFE: ret = get_bool(r, v, name, &s->unsafe); break;
    case JOB_KEY_ARGV:
        if (v->type != YAML_SEQUENCE_NODE) {
            error_at(r, v, "'argv' must be a list (program first); use "
                     "'shell' for a command line");
            return -1;
        }
        ret = get_strv(r, v, name, false, &s->argv);
        if (ret == 0 && s->argv.n == 0) {
            error_at(r, v, "'argv' is empty: name the program to run");
            ret = -1;
        }
        break;
    case JOB_KEY_SHELL: ret = get_string(r, v, name, &s->shell); break;
    case JOB_KEY_INPUTS: ret = get_strv(r, v, name, true, &s->inputs); break;
    case JOB_KEY_OUTPUTS:
        ret = get_strv(r, v, name, true, &s->outputs);
        break;
    case JOB_KEY_TABLE:
        ret = get_choice(r, v, name, table_names, &i);
        break;
    case JOB_KEY_DISK_GUID: ret = get_guid(r, v, name, &s->disk_guid); break;
    case JOB_KEY_PARTITIONS: ret = get_partitions(r, v, s); break;
    case JOB_KEY_PARTITION:
        ret = get_string(r, v, name, &s->partition);
        if (ret == 0 && !*s->partition) {
            error_at(r, v, "'partition' is empty: give a partition's name "
                     "or its number (from 1)");
            ret = -1;
        }
        break;
    case JOB_KEY_TYPE:
        if ((ret = get_choice(r, v, name, fs_type_names, &i)) == 0) {
            s->fs_type = (enum job_fs_type)i;
        }
        break;
    case JOB_KEY_LABEL: ret = get_string(r, v, name, &s->label); break;
    case JOB_KEY_UUID: ret = get_string(r, v, name, &s->uuid); break;
    case JOB_KEY_OPTIONS:
        ret = get_strv(r, v, name, false, &s->options);
        break;
    case JOB_KEY_UNTRUSTED:
        ret = get_bool(r, v, name, &s->untrusted);
        break;
    case JOB_KEY_ALLOW_BACKING:
        ret = get_strv(r, v, name, true, &s->allow_backing);
        break;
    case JOB_KEY_COUNT: break;
    }
    if (ret == 0) {
        s->keys |= JOB_KEY_BIT(k);
        s->key_loc[k] = job_loc_of(r, v);
    } else {
        s->bad_keys |= JOB_KEY_BIT(k); /* no "missing" error on top */
    }
    return ret;
}

/* ---- mappings ---- */

/* Report keys that appear twice in mapping @m (YAML forbids it). */
static void check_duplicate_keys(struct reader *r, yaml_node_t *m)
{
    yaml_node_pair_t *start = m->data.mapping.pairs.start;
    yaml_node_pair_t *top = m->data.mapping.pairs.top;

    for (yaml_node_pair_t *p = start; p < top; p++) {
        yaml_node_t *k = node(r, p->key);
        if (k->type != YAML_SCALAR_NODE) {
            continue;
        }
        for (yaml_node_pair_t *q = start; q < p; q++) {
            yaml_node_t *k2 = node(r, q->key);
            if (k2->type == YAML_SCALAR_NODE &&
                !strcmp(scalar_text(k), scalar_text(k2))) {
                error_at(r, k, "duplicate key '%s' (first at line %d)",
                         scalar_text(k), (int)k2->start_mark.line + 1);
                break;
            }
        }
    }
}

/* The value of key @name in mapping @m, or NULL. */
static yaml_node_t *lookup(struct reader *r, yaml_node_t *m, const char *name)
{
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
         p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(r, p->key);
        if (k->type == YAML_SCALAR_NODE && !strcmp(scalar_text(k), name)) {
            return node(r, p->value);
        }
    }
    return NULL;
}

/* Check key @k of a mapping: known and allowed by @allowed.  @what names
 * the mapping ("op 'create'", "defaults"). */
static int check_key(struct reader *r, yaml_node_t *k, uint64_t allowed,
                     const char *what, enum job_key *out)
{
    const char *name, *close;

    if (k->type != YAML_SCALAR_NODE) {
        error_at(r, k, "a key must be a name, not %s", kind_name(k));
        return -1;
    }
    name = scalar_text(k);
    if (job_key_parse(name, out) == 0 && ((allowed >> *out) & 1)) {
        return 0;
    }
    close = job_closest_key(name, allowed);
    if (job_key_parse(name, out) == 0) {
        error_at(r, k, "%s has no key '%s'%s%s%s", what, name,
                 close ? " (did you mean '" : "", close ? close : "",
                 close ? "'?)" : "");
    } else {
        error_at(r, k, "unknown key '%s'%s%s%s", name,
                 close ? " (did you mean '" : "", close ? close : "",
                 close ? "'?)" : "");
    }
    return -1;
}

/* ---- vars and defaults ---- */

static void read_vars(struct reader *r, yaml_node_t *m)
{
    if (m->type != YAML_MAPPING_NODE) {
        error_at(r, m, "'vars' must be a mapping of NAME: value, not %s",
                 kind_name(m));
        return;
    }
    check_duplicate_keys(r, m);
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
         p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(r, p->key), *v = node(r, p->value);
        const char *name;
        char *val;
        if (k->type != YAML_SCALAR_NODE ||
            !job_var_name_ok(scalar_text(k), strlen(scalar_text(k)))) {
            error_at(r, k, "bad variable name%s%s%s (use letters, digits "
                     "and '_', not starting with a digit)",
                     k->type == YAML_SCALAR_NODE ? " '" : "",
                     k->type == YAML_SCALAR_NODE ? scalar_text(k) : "",
                     k->type == YAML_SCALAR_NODE ? "'" : "");
            continue;
        }
        name = scalar_text(k);
        if (job_vars_get(r->set, name)) {
            continue; /* --set wins, and its value is taken literally */
        }
        /* a value may use the variables defined above it */
        val = get_text(r, v, name);
        if (val) {
            job_vars_set(&r->job->vars, name, val);
            free(val);
        }
    }
}

static void read_defaults(struct reader *r, yaml_node_t *m)
{
    struct job_step scratch;

    if (m->type != YAML_MAPPING_NODE) {
        error_at(r, m, "'defaults' must be a mapping, not %s", kind_name(m));
        return;
    }
    check_duplicate_keys(r, m);
    memset(&scratch, 0, sizeof(scratch));
    scratch.op = JOB_OP_CONVERT;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
         p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(r, p->key), *v = node(r, p->value);
        enum job_key key;
        if (check_key(r, k, job_default_keys, "defaults", &key) < 0) {
            continue;
        }
        /* check the value once here; steps then take it silently */
        if (parse_key(r, &scratch, key, v) == 0) {
            r->defaults[r->n_defaults].key = key;
            r->defaults[r->n_defaults++].value = v;
        }
    }
    job_step_release(&scratch);
}

/* ---- steps ---- */

static bool id_ok(const char *s)
{
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_')) {
            return false;
        }
    }
    return true;
}

static void apply_defaults(struct reader *r, struct job_step *s)
{
    if (s->op != JOB_OP_CREATE && s->op != JOB_OP_OVERLAY &&
        s->op != JOB_OP_CONVERT) {
        return;
    }
    for (size_t i = 0; i < r->n_defaults; i++) {
        enum job_key k = r->defaults[i].key;
        if (job_step_has(s, k) ||
            !((job_op_allowed_keys(s->op) >> k) & 1) ||
            (s->op == JOB_OP_OVERLAY && k == JOB_KEY_FORMAT)) {
            continue;
        }
        parse_key(r, s, k, r->defaults[i].value);
    }
}

/* ".qcow2" names give qcow2; anything else raw (qemu-img's default). */
static enum df_format format_from_name(const char *path)
{
    size_t n = path ? strlen(path) : 0;

    return n > 6 && !strcmp(path + n - 6, ".qcow2") ? DF_FMT_QCOW2
                                                      : DF_FMT_RAW;
}

static void error_key(struct reader *r, const struct job_step *s,
                      enum job_key k, const char *fmt, ...) DF_PRINTF(4, 5);

static void error_key(struct reader *r, const struct job_step *s,
                      enum job_key k, const char *fmt, ...)
{
    struct job_loc l = s->key_loc[k];
    va_list ap;
    char *msg;

    if (!job_step_has(s, k)) {
        l = s->loc;
    }
    l.file = r->file;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) {
        msg = NULL;
    }
    va_end(ap);
    job_diag_add(r->diags, &l, "step '%s': %s", s->id ? s->id : "?",
                 msg ? msg : "out of memory");
    free(msg);
}

/* A vfat volume id: 8 hex digits, or XXXX-XXXX. */
static bool volid_ok(const char *u)
{
    size_t n = 0;

    for (size_t i = 0; u[i]; i++) {
        if (i == 4 && u[i] == '-' && strlen(u) == 9) {
            continue;
        }
        if (!isxdigit((unsigned char)u[i])) {
            return false;
        }
        n++;
    }
    return n == 8;
}

static void check_filesystem(struct reader *r, struct job_step *s)
{
    bool vfat = s->fs_type == JOB_FS_VFAT;
    struct df_guid g;

    if (s->uuid && (vfat ? !volid_ok(s->uuid) : df_guid_parse(s->uuid, &g) < 0)) {
        error_key(r, s, JOB_KEY_UUID, "malformed %s uuid '%s' (%s)",
                  vfat ? "vfat" : "ext4", s->uuid,
                  vfat ? "a vfat volume id is 8 hexadecimal digits, or "
                         "XXXX-XXXX"
                       : "use the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
    }
    if (s->label && strlen(s->label) > (vfat ? 11u : 16u)) {
        error_key(r, s, JOB_KEY_LABEL, "label '%s' is longer than the %u "
                  "bytes %s holds", s->label, vfat ? 11u : 16u,
                  vfat ? "vfat" : "ext4");
    }
}

/* Checks that involve several keys of one step. */
static void check_step(struct reader *r, struct job_step *s)
{
    static const enum job_key qcow2_only[] = {
        JOB_KEY_CLUSTER_SIZE, JOB_KEY_COMPAT, JOB_KEY_LAZY_REFCOUNTS,
        JOB_KEY_REFCOUNT_BITS, JOB_KEY_COMPRESSION_TYPE,
    };
    uint64_t missing = job_op_required_keys(s->op) & ~(s->keys | s->bad_keys);
    bool makes_image = s->op == JOB_OP_CREATE || s->op == JOB_OP_OVERLAY ||
                       s->op == JOB_OP_CONVERT;

    for (int k = 0; k < JOB_KEY_COUNT; k++) {
        if ((missing >> k) & 1) {
            error_key(r, s, (enum job_key)k, "op '%s' needs '%s'",
                      job_op_name(s->op), job_key_name((enum job_key)k));
        }
    }
    if (s->op == JOB_OP_CREATE &&
        !((s->keys | s->bad_keys) &
          (JOB_KEY_BIT(JOB_KEY_SIZE) | JOB_KEY_BIT(JOB_KEY_BACKING)))) {
        error_key(r, s, JOB_KEY_SIZE, "op 'create' needs 'size' (or a "
                  "'backing' to take it from)");
    }
    if (s->op == JOB_OP_COMMAND) {
        bool a = job_step_has(s, JOB_KEY_ARGV);
        bool sh = job_step_has(s, JOB_KEY_SHELL);
        if (a == sh) {
            error_key(r, s, a ? JOB_KEY_SHELL : JOB_KEY_ID,
                      a ? "give 'argv' or 'shell', not both"
                        : "op 'command' needs 'argv' (a list) or 'shell'");
        }
    }
    if (s->op == JOB_OP_FILESYSTEM) {
        check_filesystem(r, s);
    }
    if (!makes_image) {
        return;
    }
    if (s->op == JOB_OP_OVERLAY) {
        if (job_step_has(s, JOB_KEY_FORMAT) && s->format != DF_FMT_QCOW2) {
            error_key(r, s, JOB_KEY_FORMAT, "an overlay is always qcow2");
        }
        s->format = DF_FMT_QCOW2;
    } else if (!job_step_has(s, JOB_KEY_FORMAT)) {
        s->format = format_from_name(s->op == JOB_OP_CONVERT ? s->to
                                                             : s->image);
    }
    if (s->format == DF_FMT_RAW) {
        for (size_t i = 0; i < sizeof(qcow2_only) / sizeof(qcow2_only[0]);
             i++) {
            if (job_step_has(s, qcow2_only[i])) {
                error_key(r, s, qcow2_only[i], "'%s' is only for qcow2 "
                          "images", job_key_name(qcow2_only[i]));
            }
        }
        if (s->prealloc == DF_PREALLOC_METADATA) {
            error_key(r, s, JOB_KEY_PREALLOCATION, "preallocation "
                      "'metadata' is only for qcow2 images");
        }
        if (s->op == JOB_OP_CREATE && job_step_has(s, JOB_KEY_BACKING)) {
            error_key(r, s, JOB_KEY_BACKING, "a raw image cannot have a "
                      "backing file");
        }
        if (s->compress != JOB_COMPRESS_NONE) {
            error_key(r, s, JOB_KEY_COMPRESS, "compression needs qcow2 "
                      "output");
        }
        return;
    }
    if (!job_step_has(s, JOB_KEY_COMPAT)) {
        s->compat = 3;
    }
    if (s->compat == 2 && job_step_has(s, JOB_KEY_LAZY_REFCOUNTS) &&
        s->lazy_refcounts) {
        error_key(r, s, JOB_KEY_LAZY_REFCOUNTS, "lazy_refcounts needs "
                  "compat 1.1");
    }
    if (s->compat == 2 && s->compression_type == DF_COMPRESS_ZSTD) {
        error_key(r, s, JOB_KEY_COMPRESSION_TYPE, "compression_type zstd "
                  "needs compat 1.1");
    }
    if (s->op == JOB_OP_CREATE && job_step_has(s, JOB_KEY_BACKING) &&
        s->prealloc != DF_PREALLOC_OFF) {
        error_key(r, s, JOB_KEY_PREALLOCATION, "preallocation cannot be "
                  "used with a backing file");
    }
    if (s->op == JOB_OP_CONVERT && s->compress != JOB_COMPRESS_NONE &&
        s->prealloc != DF_PREALLOC_OFF) {
        error_key(r, s, JOB_KEY_COMPRESS, "compression and preallocation "
                  "cannot be used together");
    }
}

static void parse_step(struct reader *r, yaml_node_t *m, struct job_step *s)
{
    yaml_node_t *idn, *opn;
    char opdesc[64];
    uint64_t allowed;
    bool op_ok = false;

    s->loc = job_loc_of(r, m);
    s->from_format = DF_FMT_AUTO;
    s->backing_format = DF_FMT_AUTO;
    s->format = DF_FMT_AUTO;
    s->sparse_size = 4096;
    s->refcount_bits = 16;
    s->cluster_size = 65536;
    s->compat = 3;
    if (m->type != YAML_MAPPING_NODE) {
        error_at(r, m, "a step must be a mapping with 'id' and 'op', not %s",
                 kind_name(m));
        return;
    }
    check_duplicate_keys(r, m);
    idn = lookup(r, m, "id");
    if (!idn) {
        error_at(r, m, "step %zu has no 'id'", s->index + 1);
    } else if (idn->type != YAML_SCALAR_NODE) {
        error_at(r, idn, "'id' must be a name, not %s", kind_name(idn));
    } else {
        char *id = substitute(r, idn, scalar_text(idn));
        if (id && !id_ok(id)) {
            error_at(r, idn, "invalid step id '%s' (use letters, digits, "
                     "'-' and '_')", id);
        }
        s->id = id;
        s->keys |= JOB_KEY_BIT(JOB_KEY_ID);
        s->key_loc[JOB_KEY_ID] = job_loc_of(r, idn);
    }
    opn = lookup(r, m, "op");
    if (!opn) {
        error_at(r, m, "step '%s' has no 'op'", s->id ? s->id : "?");
    } else if (opn->type != YAML_SCALAR_NODE) {
        error_at(r, opn, "'op' must be a name, not %s", kind_name(opn));
    } else if (job_op_parse(scalar_text(opn), &s->op) < 0) {
        const char *close = job_closest_op(scalar_text(opn));
        error_at(r, opn, "unknown op '%s'%s%s%s", scalar_text(opn),
                 close ? " (did you mean '" : "", close ? close : "",
                 close ? "'?)" : "");
    } else {
        op_ok = true;
        s->keys |= JOB_KEY_BIT(JOB_KEY_OP);
        s->key_loc[JOB_KEY_OP] = job_loc_of(r, opn);
    }
    /* without a known op, only check keys that every step has */
    allowed = op_ok ? job_op_allowed_keys(s->op)
                    : JOB_KEY_BIT(JOB_KEY_ID) | JOB_KEY_BIT(JOB_KEY_OP) |
                          JOB_KEY_BIT(JOB_KEY_NEEDS) |
                          JOB_KEY_BIT(JOB_KEY_DESCRIPTION);
    snprintf(opdesc, sizeof(opdesc), "op '%s'", job_op_name(s->op));
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
         p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(r, p->key), *v = node(r, p->value);
        enum job_key key;
        if (!op_ok && k->type == YAML_SCALAR_NODE &&
            job_key_parse(scalar_text(k), &key) == 0) {
            continue; /* a real key, but for an op we do not know */
        }
        if (check_key(r, k, allowed, opdesc, &key) == 0) {
            parse_key(r, s, key, v);
        }
    }
    if (!op_ok) {
        return;
    }
    apply_defaults(r, s);
    check_step(r, s);
}

static void read_steps(struct reader *r, yaml_node_t *seq)
{
    size_t n;

    if (seq->type != YAML_SEQUENCE_NODE) {
        error_at(r, seq, "'steps' must be a list of steps, not %s",
                 kind_name(seq));
        return;
    }
    n = (size_t)(seq->data.sequence.items.top -
                 seq->data.sequence.items.start);
    if (!n) {
        error_at(r, seq, "'steps' is empty");
        return;
    }
    r->job->steps = calloc(n, sizeof(*r->job->steps));
    if (!r->job->steps) {
        error_at(r, seq, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct job_step *s = &r->job->steps[i];
        s->index = i;
        r->job->n_steps = i + 1;
        parse_step(r, node(r, seq->data.sequence.items.start[i]), s);
    }
}

/* Duplicate ids, and `needs` naming no step. */
static void check_ids(struct reader *r)
{
    struct job *job = r->job;
    const char **ids = calloc(job->n_steps + 1, sizeof(*ids));

    for (size_t i = 0; i < job->n_steps; i++) {
        const struct job_step *s = &job->steps[i];
        ids[i] = s->id;
        for (size_t j = 0; s->id && j < i; j++) {
            if (job->steps[j].id && !strcmp(job->steps[j].id, s->id)) {
                struct job_loc l = s->key_loc[JOB_KEY_ID];
                l.file = r->file;
                job_diag_add(r->diags, &l, "duplicate step id '%s' (first "
                             "used at line %d)", s->id,
                             job->steps[j].key_loc[JOB_KEY_ID].line);
                break;
            }
        }
    }
    for (size_t i = 0; i < job->n_steps; i++) {
        const struct job_step *s = &job->steps[i];
        for (size_t j = 0; j < s->needs.n; j++) {
            const char *want = s->needs.v[j];
            struct job_loc l = s->needs.loc[j];
            const char *close;
            l.file = r->file;
            if (s->id && !strcmp(want, s->id)) {
                job_diag_add(r->diags, &l, "step '%s' needs itself", want);
                continue;
            }
            if (job_find_step(job, want)) {
                continue;
            }
            close = ids ? job_closest(want, ids, job->n_steps) : NULL;
            job_diag_add(r->diags, &l, "step '%s' needs '%s', which is not "
                         "a step%s%s%s", s->id ? s->id : "?", want,
                         close ? " (did you mean '" : "", close ? close : "",
                         close ? "'?)" : "");
        }
    }
    free(ids);
}

static bool strv_has(const struct job_strv *v, const char *s)
{
    for (size_t i = 0; i < v->n; i++) {
        if (!strcmp(v->v[i], s)) {
            return true;
        }
    }
    return false;
}

/*
 * The format of the image at @path as the last step before step @upto
 * that makes it leaves it, or DF_FMT_AUTO when no step before makes it
 * (or a command does, whose format the job cannot know).
 */
static enum df_format made_format(const struct job *job, size_t upto,
                                  const char *path)
{
    for (size_t i = upto; i-- > 0;) {
        const struct job_step *s = &job->steps[i];
        const char *made = s->op == JOB_OP_CONVERT || s->op == JOB_OP_COPY
                               ? s->to
                           : s->op == JOB_OP_CREATE ||
                                   s->op == JOB_OP_OVERLAY
                               ? s->image
                               : NULL;

        if (made && !strcmp(made, path)) {
            /* a byte copy has the format of what it copied */
            return s->op != JOB_OP_COPY ? s->format
                   : s->from            ? made_format(job, i, s->from)
                                        : DF_FMT_AUTO;
        }
        if (s->op == JOB_OP_COMMAND && strv_has(&s->outputs, path)) {
            return DF_FMT_AUTO;
        }
    }
    return DF_FMT_AUTO;
}

/*
 * Every step that records a backing file records its format too: the
 * step's own `backing_format`, else the format of the step of the job
 * that made the backing file.  A format is never probed to be recorded:
 * a raw disk whose guest wrote a qcow2 header would be taken for qcow2.
 */
static void check_backing_formats(struct reader *r)
{
    struct job *job = r->job;

    for (size_t i = 0; i < job->n_steps; i++) {
        struct job_step *s = &job->steps[i];
        bool records = s->op == JOB_OP_CREATE || s->op == JOB_OP_OVERLAY ||
                       s->op == JOB_OP_CONVERT || s->op == JOB_OP_REBASE;

        if (!records || !s->backing ||
            job_step_has(s, JOB_KEY_BACKING_FORMAT) ||
            ((s->bad_keys >> JOB_KEY_BACKING_FORMAT) & 1)) {
            continue;
        }
        s->backing_format = made_format(job, i, s->backing);
        if (s->backing_format == DF_FMT_AUTO) {
            error_key(r, s, JOB_KEY_BACKING, "the format of backing file "
                      "'%s' is not known: add 'backing_format: raw' or "
                      "'backing_format: qcow2' (no earlier step makes it, "
                      "and a backing file's format is never probed)",
                      s->backing_given ? s->backing_given : s->backing);
        }
    }
}

/*
 * The virtual size image @path has before step @upto, when the job states
 * it (create or overlay with a size, resize); 0 when unknown.
 */
static uint64_t known_size(const struct job *job, size_t upto,
                           const char *path)
{
    for (size_t i = upto; i-- > 0;) {
        const struct job_step *s = &job->steps[i];
        if (s->op == JOB_OP_COMMAND) {
            if (strv_has(&s->outputs, path)) {
                return 0;
            }
            continue;
        }
        if ((s->op == JOB_OP_CONVERT || s->op == JOB_OP_COPY) && s->to &&
            !strcmp(s->to, path)) {
            return 0;
        }
        if (!s->image || strcmp(s->image, path) != 0) {
            continue;
        }
        if (s->op == JOB_OP_CREATE || s->op == JOB_OP_OVERLAY ||
            s->op == JOB_OP_RESIZE) {
            return job_step_has(s, JOB_KEY_SIZE) ? s->size : 0;
        }
    }
    return 0;
}

/* Partition steps on images of a stated size; filesystem steps naming a
 * partition of the table the job wrote. */
static void check_disk_steps(struct reader *r)
{
    struct job *job = r->job;

    for (size_t i = 0; i < job->n_steps; i++) {
        struct job_step *s = &job->steps[i];
        uint64_t size;
        struct df_gpt_want *want;

        if (s->op != JOB_OP_PARTITION || !s->image ||
            !job_step_has(s, JOB_KEY_PARTITIONS) ||
            !(size = known_size(job, i, s->image))) {
            continue;
        }
        want = calloc(s->n_parts + 1, sizeof(*want));
        if (!want) {
            continue;
        }
        for (size_t k = 0; k < s->n_parts; k++) {
            want[k].size = s->parts[k].size;
            want[k].rest = s->parts[k].rest;
        }
        if (size < df_gpt_min_disk_size(NULL, 0)) {
            error_key(r, s, JOB_KEY_IMAGE, "a disk of %llu bytes is too small "
                      "for a GPT (it needs %llu bytes)",
                      (unsigned long long)size,
                      (unsigned long long)df_gpt_min_disk_size(NULL, 0));
        }
        for (size_t k = 0; k < s->n_parts; k++) {
            uint64_t need = df_gpt_min_disk_size(want, k + 1);
            if (need > size) {
                struct job_loc l = s->parts[k].size_loc;
                l.file = r->file;
                job_diag_add(r->diags, &l, "step '%s': partition '%s' does "
                             "not fit on the disk of %llu bytes (the "
                             "partitions up to it need %llu)", s->id,
                             s->parts[k].name, (unsigned long long)size,
                             (unsigned long long)need);
                break;
            }
        }
        free(want);
    }
    for (size_t i = 0; i < job->n_steps; i++) {
        struct job_step *s = &job->steps[i];
        const struct job_step *t = NULL;
        char *end;
        unsigned long num;

        if ((s->op != JOB_OP_FILESYSTEM && s->op != JOB_OP_FILES) ||
            !s->image || !s->partition) {
            continue;
        }
        for (size_t j = i; j-- > 0;) {
            if (job->steps[j].op == JOB_OP_PARTITION &&
                job->steps[j].image &&
                !strcmp(job->steps[j].image, s->image)) {
                t = &job->steps[j];
                break;
            }
        }
        if (!t || !job_step_has(t, JOB_KEY_PARTITIONS)) {
            continue; /* the table is the image's: checked when it runs */
        }
        num = strtoul(s->partition, &end, 10);
        if (!*end && s->partition[0] >= '1' && s->partition[0] <= '9' &&
            num <= t->n_parts) {
            continue;
        }
        {
            const char **names = calloc(t->n_parts + 1, sizeof(*names));
            const char *close = NULL;
            bool found = false;
            for (size_t k = 0; k < t->n_parts; k++) {
                found |= t->parts[k].name &&
                         !strcmp(t->parts[k].name, s->partition);
                if (names) {
                    names[k] = t->parts[k].name;
                }
            }
            if (!found) {
                close = names ? job_closest(s->partition, names, t->n_parts)
                              : NULL;
                error_key(r, s, JOB_KEY_PARTITION, "step '%s' makes no "
                          "partition '%s' in '%s'%s%s%s", t->id,
                          s->partition, s->image,
                          close ? " (did you mean '" : "",
                          close ? close : "", close ? "'?)" : "");
            }
            free(names);
        }
    }
}

static void read_root(struct reader *r, yaml_node_t *root)
{
    static const char *const root_keys[] = { "version", "name", "vars",
                                              "defaults", "steps" };
    yaml_node_t *n;

    if (root->type != YAML_MAPPING_NODE) {
        error_at(r, root, "a job file is a mapping with 'version' and "
                 "'steps', not %s", kind_name(root));
        return;
    }
    check_duplicate_keys(r, root);
    check_known_keys(r, root, root_keys, 5, "at the top of the job");
    /* --set values first: they win over vars */
    for (size_t i = 0; r->set && i < r->set->n; i++) {
        job_vars_set(&r->job->vars, r->set->v[i].name, r->set->v[i].value);
    }
    if ((n = lookup(r, root, "version"))) {
        uint64_t v;
        if (get_uint(r, n, "version", 1000, &v) == 0 && v != 1) {
            error_at(r, n, "unsupported job file version %" PRIu64 " (this "
                     "diskforge reads version 1)", v);
        }
        r->job->version = 1;
    }
    if ((n = lookup(r, root, "vars"))) {
        read_vars(r, n);
    }
    if ((n = lookup(r, root, "name"))) {
        get_string(r, n, "name", &r->job->name);
    }
    if ((n = lookup(r, root, "defaults"))) {
        read_defaults(r, n);
    }
    if ((n = lookup(r, root, "steps"))) {
        read_steps(r, n);
        check_ids(r);
        check_backing_formats(r);
        check_disk_steps(r);
    } else {
        error_at(r, root, "the job has no 'steps'");
    }
}

static void yaml_error(struct reader *r, const yaml_parser_t *p)
{
    struct job_loc l = { r->file, (int)p->problem_mark.line + 1,
                         (int)p->problem_mark.column + 1 };

    if (p->error == YAML_MEMORY_ERROR) {
        job_diag_add(r->diags, NULL, "%s: out of memory", r->file);
    } else if (p->context) {
        job_diag_add(r->diags, &l, "YAML syntax error: %s %s (line %d)",
                     p->problem ? p->problem : "", p->context,
                     (int)p->context_mark.line + 1);
    } else {
        job_diag_add(r->diags, &l, "YAML syntax error: %s",
                     p->problem ? p->problem : "unknown problem");
    }
}

/* The file's base name without .yaml / .yml. */
static char *default_name(const char *path)
{
    const char *base = strrchr(path, '/');
    size_t n;

    base = base ? base + 1 : path;
    n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".yaml")) {
        n -= 5;
    } else if (n > 4 && !strcmp(base + n - 4, ".yml")) {
        n -= 4;
    }
    return strndup(base, n);
}

struct job *job_load_string(const char *path, const char *text, size_t len,
                            const struct job_vars *set,
                            struct job_diags *diags)
{
    struct reader r = { .diags = diags, .set = set };
    yaml_parser_t parser;
    yaml_node_t *root;
    size_t before = diags->n;
    struct job *job = calloc(1, sizeof(*job));

    if (!diags->file) {
        diags->file = strdup(path);
    }
    r.file = diags->file ? diags->file : path;
    if (job) {
        const char *slash = strrchr(path, '/');
        job->path = strdup(path);
        job->dir = !slash ? strdup(".")
                   : strndup(path, slash == path ? 1 : (size_t)(slash - path));
    }
    if (!job || !job->path || !job->dir) {
        job_diag_add(diags, NULL, "%s: out of memory", path);
        job_free(job);
        return NULL;
    }
    job->version = 1;
    EVP_Digest(text, len, job->sha256, NULL, EVP_sha256(), NULL);
    r.job = job;
    if (!yaml_parser_initialize(&parser)) {
        job_diag_add(diags, NULL, "%s: out of memory", path);
        job_free(job);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &r.doc)) {
        yaml_error(&r, &parser);
        yaml_parser_delete(&parser);
        job_free(job);
        return NULL;
    }
    root = yaml_document_get_root_node(&r.doc);
    if (!root) {
        struct job_loc l = { r.file, 1, 1 };
        job_diag_add(diags, &l, "the job file is empty");
    } else {
        read_root(&r, root);
    }
    yaml_document_delete(&r.doc);
    yaml_parser_delete(&parser);
    if (!job->name) {
        job->name = default_name(path);
    }
    if (diags->n != before || !job->dir || !job->name) {
        job_free(job);
        return NULL;
    }
    return job;
}

struct job *job_load(const char *path, const struct job_vars *set,
                     struct job_diags *diags)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0, cap = 0;
    struct job *job;

    if (!f) {
        job_diag_add(diags, NULL, "cannot open '%s': %s", path,
                     strerror(errno));
        return NULL;
    }
    for (;;) {
        size_t n;
        if (len + 65536 > cap) {
            char *bigger;
            cap = (len + 65536) * 2;
            bigger = realloc(text, cap);
            if (!bigger) {
                free(text);
                fclose(f);
                job_diag_add(diags, NULL, "%s: out of memory", path);
                return NULL;
            }
            text = bigger;
        }
        n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        job_diag_add(diags, NULL, "cannot read '%s': %s", path,
                     strerror(errno));
        fclose(f);
        free(text);
        return NULL;
    }
    fclose(f);
    job = job_load_string(path, text, len, set, diags);
    free(text);
    return job;
}
