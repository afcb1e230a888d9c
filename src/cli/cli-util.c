/* SPDX-License-Identifier: MIT */
/*
 * cli-util.c - helpers shared by the subcommands: messages, option and
 * size parsing, the -o image option list, progress and interruption.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

/* ---- messages ---- */

static void vmessage(const char *cmd, const char *fmt, va_list ap)
{
    fputs("diskforge: ", stderr);
    if (cmd) {
        fprintf(stderr, "%s: ", cmd);
    }
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage(NULL, fmt, ap);
    va_end(ap);
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage(cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try 'diskforge %s --help' for more information.\n",
            cmd);
    return CLI_USAGE;
}

/* The signal caught (0: none), set from the handler, read by
 * cli_progress(), cli_fail() and cli_signal(). */
static volatile sig_atomic_t interrupted;

int cli_fail(const struct df_error *err)
{
    cli_error("%s", err->code ? err->msg : "unknown error");
    return err->code == DF_E_CANCELED && interrupted ? CLI_INTERRUPTED
                                                     : CLI_FAIL;
}

/* ---- getopt ---- */

void cli_untrusted(void)
{
    df_untrusted_begin(NULL, 0);
}

void cli_getopt_reset(void)
{
    optind = 0; /* glibc: 0 also resets its internal state, 1 does not */
    opterr = 0; /* cli_bad_option() prints the messages */
}

/* Options qemu-img has that diskforge refuses by name, not as unknown. */
static int refused_option(const char *cmd, const char *arg)
{
    static const char *const refused[] = { "--image-opts",
                                           "--target-image-opts" };
    size_t n = strcspn(arg, "=");

    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (n == strlen(refused[i]) && !strncmp(arg, refused[i], n)) {
            cli_error("%s: %s is not supported: diskforge takes image file "
                      "names only (no option strings or json: names)", cmd,
                      refused[i]);
            return CLI_FAIL;
        }
    }
    return -1;
}

int cli_bad_option(const char *cmd, int c, char **argv,
                   const struct option *longopts)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "";

    if (c == ':') {
        /* optopt is the option's short letter or its long option value */
        for (const struct option *o = longopts; o && o->name; o++) {
            if (o->val == optopt && strncmp(arg, "--", 2) == 0) {
                return cli_usage(cmd, "option '--%s' requires an argument",
                                 o->name);
            }
        }
        return cli_usage(cmd, "option '-%c' requires an argument", optopt);
    }
    if (optopt) {
        return cli_usage(cmd, "unknown option '-%c'", optopt);
    }
    if (refused_option(cmd, arg) == CLI_FAIL) {
        return CLI_FAIL;
    }
    /* an unknown (or ambiguous) long option: name it without its value */
    return cli_usage(cmd, "unknown option '%.*s'", (int)strcspn(arg, "="),
                     arg);
}

int cli_parse_format(const char *cmd, const char *name, enum df_format *out)
{
    if (df_format_parse(name, out) < 0) {
        cli_usage(cmd, "unknown image format '%s' (use raw or qcow2)",
                  name);
        return -1;
    }
    return 0;
}

int cli_parse_size(const char *cmd, const char *s, uint64_t *out)
{
    struct df_error err = { 0 };

    if (df_parse_size(s, out, &err) < 0) {
        cli_usage(cmd, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* ---- file names ---- */

int cli_image_names(char **names, int n)
{
    /* the paths live until exit: commands keep pointers into argv */
    static char *owned[8];
    static int nowned;

    for (int i = 0; i < n; i++) {
        struct df_error err = { 0 };
        char *path;

        if (!names[i]) {
            continue;
        }
        if (df_filename(names[i], &path, &err) < 0) {
            return cli_fail(&err);
        }
        if (nowned == (int)(sizeof(owned) / sizeof(owned[0]))) {
            free(path); /* not reached: no command takes that many */
            cli_error("too many image names");
            return CLI_USAGE;
        }
        owned[nowned++] = path;
        names[i] = path;
    }
    return CLI_OK;
}

int cli_backing_format_given(const char *img, const char *backing,
                             enum df_format fmt)
{
    if (backing && *backing && fmt == DF_FMT_AUTO) {
        /* qemu-img 7.2 refuses too: a probed format is a known hole */
        cli_error("'%s': backing file '%s' given without its format: add "
                  "-F raw or -F qcow2 (a backing file's format is never "
                  "probed)", img, backing);
        return CLI_USAGE;
    }
    return CLI_OK;
}

int cli_check_backing_name(const char *img, const char *name)
{
    struct df_error err = { 0 };
    char *path;

    if (!name || !*name) {
        return CLI_OK; /* none (rebase -b "") */
    }
    if (df_filename(name, &path, &err) < 0) {
        df_error_prefix(&err, "'%s': backing file: ", img);
        return cli_fail(&err);
    }
    free(path);
    return CLI_OK;
}

/* ---- -o image options ---- */

#define FMT_RAW (1u << DF_FMT_RAW)
#define FMT_QCOW2 (1u << DF_FMT_QCOW2)

/* Each setter validates @val and returns CLI_OK, CLI_USAGE or CLI_FAIL. */
typedef int (*opt_setter)(struct cli_image_opts *io, const char *name,
                          const char *val, const char *img);

struct opt_desc {
    const char *name;
    unsigned formats; /* FMT_* mask */
    const char *type; /* for -o help */
    const char *help;
    opt_setter set;
};

static int bad_value(const char *img, const char *name, const char *val,
                     const char *expected)
{
    cli_error("'%s': invalid value '%s' for option '%s': %s", img, val, name,
              expected);
    return CLI_USAGE;
}

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* on/off, also true/false as qemu-img accepts, into *@out. */
static int bool_value(const char *img, const char *name, const char *val,
                      bool *out)
{
    if (!strcmp(val, "on") || !strcmp(val, "true")) {
        *out = true;
    } else if (!strcmp(val, "off") || !strcmp(val, "false")) {
        *out = false;
    } else {
        return bad_value(img, name, val, "use on or off");
    }
    return CLI_OK;
}

static int set_size(struct cli_image_opts *io, const char *name,
                    const char *val, const char *img)
{
    struct df_error err = { 0 };

    (void)name;
    if (df_parse_size(val, &io->opts.size, &err) < 0) {
        cli_error("'%s': %s", img, err.msg);
        return CLI_USAGE;
    }
    io->have_size = true;
    return CLI_OK;
}

static int set_cluster_size(struct cli_image_opts *io, const char *name,
                            const char *val, const char *img)
{
    uint64_t v;

    if (df_parse_size(val, &v, NULL) < 0 || !is_pow2(v) || v < 512 ||
        v > (2u << 20)) {
        return bad_value(img, name, val, "the cluster size must be a power "
                         "of two between 512 and 2048k");
    }
    io->opts.cluster_size = (uint32_t)v;
    return CLI_OK;
}

static int set_compat(struct cli_image_opts *io, const char *name,
                      const char *val, const char *img)
{
    if (!strcmp(val, "0.10") || !strcmp(val, "v2")) {
        io->opts.compat = 2;
    } else if (!strcmp(val, "1.1") || !strcmp(val, "v3")) {
        io->opts.compat = 3;
    } else {
        return bad_value(img, name, val, "use 0.10 (v2) or 1.1 (v3)");
    }
    io->compat = val;
    return CLI_OK;
}

static int set_lazy_refcounts(struct cli_image_opts *io, const char *name,
                              const char *val, const char *img)
{
    int ret = bool_value(img, name, val, &io->opts.lazy_refcounts);

    if (ret == CLI_OK) {
        io->lazy_refcounts = val;
    }
    return ret;
}

static int set_refcount_bits(struct cli_image_opts *io, const char *name,
                             const char *val, const char *img)
{
    char *end;
    /* a number as qemu reads one: decimal, 0x hexadecimal, 0 octal */
    unsigned long v = strtoul(val, &end, 0);

    if (end == val || *end || !is_pow2(v) || v > 64) {
        return bad_value(img, name, val, "the refcount width must be a "
                         "power of two and may not exceed 64 bits");
    }
    io->opts.refcount_bits = (int)v;
    return CLI_OK;
}

static int set_compression_type(struct cli_image_opts *io, const char *name,
                                const char *val, const char *img)
{
    if (!strcmp(val, "zlib")) {
        io->opts.compression = DF_COMPRESS_ZLIB;
    } else if (!strcmp(val, "zstd")) {
        io->opts.compression = DF_COMPRESS_ZSTD;
    } else {
        return bad_value(img, name, val, "use zlib or zstd");
    }
    io->compression_type = val;
    return CLI_OK;
}

static int set_preallocation(struct cli_image_opts *io, const char *name,
                             const char *val, const char *img)
{
    if (df_prealloc_parse(val, &io->opts.prealloc) < 0) {
        return bad_value(img, name, val, "use off, metadata (qcow2 only), "
                         "falloc or full");
    }
    io->preallocation = val;
    return CLI_OK;
}

static int set_backing_file(struct cli_image_opts *io, const char *name,
                            const char *val, const char *img)
{
    (void)name;
    (void)img;
    io->opts.backing_file = val;
    return CLI_OK;
}

static int set_backing_fmt(struct cli_image_opts *io, const char *name,
                           const char *val, const char *img)
{
    if (df_format_parse(val, &io->opts.backing_format) < 0) {
        return bad_value(img, name, val, "use raw or qcow2");
    }
    io->backing_fmt = val;
    return CLI_OK;
}

static int set_extended_l2(struct cli_image_opts *io, const char *name,
                           const char *val, const char *img)
{
    bool on;
    int ret = bool_value(img, name, val, &on);

    if (ret == CLI_OK && on) {
        cli_error("'%s': extended L2 entries are not supported", img);
        ret = CLI_FAIL;
    }
    if (ret == CLI_OK) {
        io->extended_l2 = val;
    }
    return ret;
}

/* encryption=off is qemu-img's default, accepted as it is; on is refused. */
static int set_encryption(struct cli_image_opts *io, const char *name,
                          const char *val, const char *img)
{
    bool on;
    int ret = bool_value(img, name, val, &on);

    if (ret == CLI_OK && on) {
        cli_error("'%s': encryption is not supported (diskforge writes no "
                  "encrypted images)", img);
        ret = CLI_FAIL;
    }
    if (ret == CLI_OK) {
        io->encryption = val;
    }
    return ret;
}

/* Options qemu-img knows that this engine deliberately does not write. */
static int set_unsupported(struct cli_image_opts *io, const char *name,
                           const char *val, const char *img)
{
    (void)io;
    (void)val;
    cli_error("'%s': option '%s' is not supported (diskforge writes neither "
              "encrypted images nor external data files)", img, name);
    return CLI_FAIL;
}

/* Sorted by name, as -o help lists them. */
static const struct opt_desc image_opts[] = {
    { "backing_file", FMT_QCOW2, "<str>", "File name of a base image",
      set_backing_file },
    { "backing_fmt", FMT_QCOW2, "<str>", "Image format of the base image",
      set_backing_fmt },
    { "cluster_size", FMT_QCOW2, "<size>", "qcow2 cluster size",
      set_cluster_size },
    { "compat", FMT_QCOW2, "<str>",
      "Compatibility level (v2 [0.10] or v3 [1.1])", set_compat },
    { "compression_type", FMT_QCOW2, "<str>",
      "Compression method used for image cluster compression (zlib, zstd)",
      set_compression_type },
    { "data_file", FMT_QCOW2, NULL, NULL, set_unsupported },
    { "data_file_raw", FMT_QCOW2, NULL, NULL, set_unsupported },
    { "encryption", FMT_QCOW2, "<bool (on/off)>",
      "Encrypt the image (only off is supported)", set_encryption },
    { "extended_l2", FMT_QCOW2, "<bool (on/off)>",
      "Extended L2 tables (only off is supported)", set_extended_l2 },
    { "lazy_refcounts", FMT_QCOW2, "<bool (on/off)>",
      "Postpone refcount updates", set_lazy_refcounts },
    { "preallocation", FMT_QCOW2, "<str>", "Preallocation mode (allowed "
      "values: off, metadata, falloc, full)", set_preallocation },
    { "preallocation", FMT_RAW, "<str>",
      "Preallocation mode (allowed values: off, falloc, full)",
      set_preallocation },
    { "refcount_bits", FMT_QCOW2, "<num>",
      "Width of a reference count entry in bits", set_refcount_bits },
    { "size", FMT_RAW | FMT_QCOW2, "<size>", "Virtual disk size", set_size },
};

static const struct opt_desc *find_opt(const char *name, enum df_format fmt)
{
    for (size_t i = 0; i < sizeof(image_opts) / sizeof(image_opts[0]); i++) {
        const struct opt_desc *d = &image_opts[i];
        if ((d->formats & (1u << fmt)) && (!strcmp(d->name, name) ||
            (d->set == set_unsupported && !strncmp(name, "encrypt.", 8) &&
             !strcmp(d->name, "data_file")))) {
            return d;
        }
    }
    return NULL;
}

void cli_image_opts_help(enum df_format fmt)
{
    printf("Supported %s options:\n", df_format_name(fmt));
    for (size_t i = 0; i < sizeof(image_opts) / sizeof(image_opts[0]); i++) {
        const struct opt_desc *d = &image_opts[i];
        char left[64];
        if (!(d->formats & (1u << fmt)) || !d->help) {
            continue;
        }
        snprintf(left, sizeof(left), "%s=%s", d->name, d->type);
        printf("  %-22s - %s\n", left, d->help);
    }
}

void cli_image_opts_init(struct cli_image_opts *io)
{
    memset(io, 0, sizeof(*io));
    df_create_opts_init(&io->opts);
}

void cli_image_opts_release(struct cli_image_opts *io)
{
    free(io->list);
    io->list = NULL;
}

int cli_image_opts_add(struct cli_image_opts *io, const char *arg)
{
    size_t old = io->list ? strlen(io->list) : 0;
    char *p = realloc(io->list, old + strlen(arg) + 2);

    if (!p) {
        cli_error("out of memory");
        return CLI_FAIL;
    }
    if (old) {
        p[old++] = ',';
    }
    strcpy(p + old, arg);
    io->list = p;
    return CLI_OK;
}

/*
 * Cut the next item off *@cursor in place: items are separated by ',' and
 * ",," stands for a literal comma (qemu's escape, for file names).
 */
static char *next_item(char **cursor)
{
    char *item = *cursor, *r = item, *w = item;

    if (!item) {
        return NULL;
    }
    for (; *r; r++) {
        if (*r == ',' && r[1] == ',') {
            *w++ = *r++;
        } else if (*r == ',') {
            break;
        } else {
            *w++ = *r;
        }
    }
    *cursor = *r ? r + 1 : NULL;
    *w = '\0';
    return item;
}

/* Combinations qemu-img 7.2 refuses; messages follow its wording. */
static int check_combinations(const struct cli_image_opts *io,
                              enum df_format fmt, const char *img)
{
    const struct df_create_opts *o = &io->opts;
    const char *why = NULL;

    if (fmt == DF_FMT_RAW && o->prealloc == DF_PREALLOC_METADATA) {
        cli_error("'%s': unsupported preallocation mode 'metadata' for a raw "
                  "image (it is for qcow2)", img);
        return CLI_USAGE;
    }
    if (fmt != DF_FMT_QCOW2 || o->compat != 2) {
        return CLI_OK;
    }
    if (o->refcount_bits != 16) {
        why = "different refcount widths than 16 bits require";
    } else if (o->compression != DF_COMPRESS_ZLIB) {
        why = "non-zlib compression type is only supported with";
    } else if (o->lazy_refcounts) {
        why = "lazy refcounts are only supported with";
    }
    if (why) {
        cli_error("'%s': %s compatibility level 1.1 and above (use "
                  "compat=1.1 or compat=v3)", img, why);
        return CLI_USAGE;
    }
    return CLI_OK;
}

int cli_image_opts_parse(struct cli_image_opts *io, enum df_format fmt,
                         const char *img)
{
    char *cursor = io->list, *item;

    io->opts.format = fmt;
    while ((item = next_item(&cursor)) != NULL) {
        char *eq = strchr(item, '=');
        const char *val = eq ? eq + 1 : "on"; /* "name" alone means on */
        const struct opt_desc *d;
        int ret;

        if (!*item) {
            continue;
        }
        if (!strcmp(item, "help") || !strcmp(item, "?")) {
            io->help = true;
            return CLI_OK;
        }
        if (eq) {
            *eq = '\0';
        }
        d = find_opt(item, fmt);
        if (!d) {
            cli_error("'%s': unknown option '%s' for format %s (see -o help)",
                      img, item, df_format_name(fmt));
            return CLI_USAGE;
        }
        ret = d->set(io, item, val, img);
        if (ret != CLI_OK) {
            return ret;
        }
    }
    return check_combinations(io, fmt, img);
}

/* ---- progress and interruption ---- */

static void on_signal(int sig)
{
    interrupted = sig;
}

int cli_signal(void)
{
    return interrupted;
}

void cli_catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    /* a second signal takes the default action: a way out if stuck */
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct cli_progress *p = opaque;

    if (interrupted) {
        return 1;
    }
    if (p && p->show) {
        double pct = total ? 100.0 * (double)done / (double)total : 100.0;
        /* like qemu-img: a new line at most every percent, and at 100 */
        if (!p->printed || pct >= p->last + 1.0 ||
            (done == total && p->last < 100.0)) {
            printf("    (%3.2f/100%%)\r", pct);
            fflush(stdout);
            p->printed = true;
            p->last = pct;
        }
    }
    return 0;
}

void cli_progress_end(struct cli_progress *p)
{
    if (p->printed) {
        putchar('\n');
        p->printed = false;
    }
}

/* Length of the valid UTF-8 sequence at @p, or 0 if it is not one. */
static size_t utf8_len(const unsigned char *p)
{
    size_t n = p[0] < 0x80 ? 1 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2
             : p[0] >= 0xe0 && p[0] < 0xf0 ? 3 : p[0] >= 0xf0 && p[0] < 0xf5
             ? 4 : 0;

    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    /* overlong 3/4-byte forms, surrogates, and beyond U+10FFFF */
    if ((n == 3 && ((p[0] == 0xe0 && p[1] < 0xa0) ||
                    (p[0] == 0xed && p[1] >= 0xa0))) ||
        (n == 4 && ((p[0] == 0xf0 && p[1] < 0x90) ||
                    (p[0] == 0xf4 && p[1] >= 0x90)))) {
        return 0;
    }
    return n;
}

/*
 * A JSON string.  A file name need not be UTF-8; like qemu-img, replace
 * each byte that is not part of a valid sequence by U+FFFD.
 */
json_t *cli_json_string(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    json_t *j = json_string(s);
    char *out, *w;

    if (j || !(out = malloc(3 * strlen(s) + 1))) {
        return j;
    }
    for (w = out; *p;) {
        size_t n = utf8_len(p);
        if (n) {
            memcpy(w, p, n);
            w += n;
            p += n;
        } else {
            /* one U+FFFD for the lead byte and the continuation bytes
             * it claims, as qemu-img does */
            size_t claim = *p >= 0xfc ? 6 : *p >= 0xf8 ? 5 : *p >= 0xf0 ? 4
                         : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 1;
            memcpy(w, "\xEF\xBF\xBD", 3);
            w += 3;
            p++;
            while (--claim && (*p & 0xc0) == 0x80) {
                p++;
            }
        }
    }
    *w = '\0';
    j = json_string(out);
    free(out);
    return j;
}
