/* SPDX-License-Identifier: MIT */
/*
 * cmd-info.c - `diskforge info`: what qemu-img info prints, in the same
 * words (human) and the same keys in the same order (JSON).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "ops-disk.h"

static const char usage_text[] =
    "usage: diskforge info [-U] [-f FMT] [--output human|json] "
    "[--backing-chain] IMG\n"
    "\n"
    "Show the format, sizes and format options of the image IMG.\n"
    "\n"
    "  -f FMT            format of IMG (raw or qcow2); probed if not given\n"
    "  --output FORMAT   human (default) or json, as qemu-img info prints\n"
    "  --backing-chain   also show every image of IMG's backing chain\n"
    "  -U, --force-share read even if another process writes it (qemu-img -U)\n"
    CLI_UNTRUSTED_HELP
    "  -h, --help        show this help\n";

enum { OPT_OUTPUT = 256, OPT_BACKING_CHAIN };

/* ---- human ---- */

static void print_human(const char *path, const struct df_info *in)
{
    char vsize[32], dsize[32];

    df_format_size(in->virtual_size, vsize, sizeof(vsize));
    df_format_size(in->actual_size, dsize, sizeof(dsize));
    printf("image: %s\n"
           "file format: %s\n"
           "virtual size: %s (%llu bytes)\n"
           "disk size: %s\n",
           path, df_format_name(in->format), vsize,
           (unsigned long long)in->virtual_size, dsize);
    if (in->format != DF_FMT_QCOW2) {
        return;
    }
    printf("cluster_size: %u\n", in->cluster_size);
    if (in->dirty) {
        printf("cleanly shut down: no\n");
    }
    if (in->backing_file[0]) {
        printf("backing file: %s", in->backing_file);
        if (strcmp(in->backing_file, in->full_backing_file) != 0) {
            printf(" (actual path: %s)", in->full_backing_file);
        }
        putchar('\n');
    }
    if (in->backing_format[0]) {
        printf("backing file format: %s\n", in->backing_format);
    }
    printf("Format specific information:\n"
           "    compat: %s\n"
           "    compression type: %s\n",
           in->version == 2 ? "0.10" : "1.1",
           in->compression == DF_COMPRESS_ZSTD ? "zstd" : "zlib");
    if (in->version == 2) {
        printf("    refcount bits: %d\n", in->refcount_bits);
        return;
    }
    printf("    lazy refcounts: %s\n"
           "    refcount bits: %d\n"
           "    corrupt: %s\n"
           "    extended l2: %s\n",
           in->lazy_refcounts ? "true" : "false", in->refcount_bits,
           in->corrupt ? "true" : "false", in->extended_l2 ? "true" : "false");
}

/* ---- JSON ---- */


static json_t *format_specific(const struct df_info *in)
{
    json_t *data = json_object();

    json_object_set_new(data, "compat",
                        json_string(in->version == 2 ? "0.10" : "1.1"));
    json_object_set_new(data, "compression-type",
                        json_string(in->compression == DF_COMPRESS_ZSTD
                                        ? "zstd" : "zlib"));
    if (in->version != 2) {
        json_object_set_new(data, "lazy-refcounts",
                            json_boolean(in->lazy_refcounts));
    }
    json_object_set_new(data, "refcount-bits",
                        json_integer(in->refcount_bits));
    if (in->version != 2) {
        json_object_set_new(data, "corrupt", json_boolean(in->corrupt));
        json_object_set_new(data, "extended-l2",
                            json_boolean(in->extended_l2));
    }
    return json_pack("{s:s, s:o}", "type", "qcow2", "data", data);
}

/* The keys in qemu-img 7.2's order (it is not alphabetical). */
static json_t *info_json(const char *path, const struct df_info *in)
{
    json_t *o = json_object();
    bool qcow2 = in->format == DF_FMT_QCOW2;

    if (in->backing_format[0]) {
        json_object_set_new(o, "backing-filename-format",
                            cli_json_string(in->backing_format));
    }
    json_object_set_new(o, "virtual-size",
                        json_integer((json_int_t)in->virtual_size));
    json_object_set_new(o, "filename", cli_json_string(path));
    if (qcow2) {
        json_object_set_new(o, "cluster-size",
                            json_integer(in->cluster_size));
    }
    json_object_set_new(o, "format", json_string(df_format_name(in->format)));
    json_object_set_new(o, "actual-size",
                        json_integer((json_int_t)in->actual_size));
    if (qcow2) {
        json_object_set_new(o, "format-specific", format_specific(in));
    }
    if (in->backing_file[0]) {
        json_object_set_new(o, "full-backing-filename",
                            cli_json_string(in->full_backing_file));
        json_object_set_new(o, "backing-filename", cli_json_string(in->backing_file));
    }
    json_object_set_new(o, "dirty-flag", json_boolean(in->dirty));
    return o;
}

/* ---- the command ---- */

static int parse_output(const char *s, bool *json)
{
    if (!strcmp(s, "human")) {
        *json = false;
    } else if (!strcmp(s, "json")) {
        *json = true;
    } else {
        return cli_usage("info", "--output must be 'human' or 'json', not "
                         "'%s'", s);
    }
    return CLI_OK;
}

/* ---- the partition table (SPEC §9) ---- */

struct table {
    struct df_gpt g;
    struct df_gpt_status st;
};

/*
 * Read the GPT that the guest of @img sees; NULL when there is none (or it
 * cannot be read, which is said on stderr: the image's own info is still
 * shown).  An image opened without its backing chain (@in names a backing
 * file that is not open) is opened again with it, read-only; when that
 * fails, the table is not shown.
 */
static struct table *read_table(struct df_image *img, const struct df_info *in)
{
    struct df_error err = { 0 };
    struct table *t = calloc(1, sizeof(*t));
    struct df_image *full = NULL;

    if (!t) {
        return NULL;
    }
    if (in->backing_file[0] && !df_image_backing(img)) {
        full = df_image_open(df_image_path(img), df_image_format(img), 0,
                             &err);
        if (!full) {
            free(t);
            return NULL; /* the backing file is not there: no guest view */
        }
    }
    if (df_gpt_read(full ? full : img, &t->g, &t->st, &err) < 0) {
        cli_error("cannot read the partition table of '%s': %s",
                  df_image_path(img), err.msg);
        t->st.state = DF_GPT_NONE;
    }
    df_image_close(full, NULL);
    if (t->st.state == DF_GPT_NONE) {
        free(t);
        return NULL;
    }
    return t;
}

static void print_table_human(const struct table *t)
{
    char guid[37], type[37], size[32];

    df_guid_format(&t->g.disk_guid, true, guid);
    printf("Partition table: gpt%s\n",
           t->st.state == DF_GPT_VALID ? "" : " (DAMAGED)");
    for (size_t i = 0; i < t->st.n_problems; i++) {
        printf("    problem: %s\n", t->st.problems[i]);
    }
    if (!t->st.primary_ok && !t->st.backup_ok) {
        printf("    no sound copy of the table to show\n");
        return;
    }
    if (t->st.from_backup) {
        printf("    shown from the backup copy\n");
    }
    printf("    disk guid: %s\n", guid);
    for (size_t i = 0; i < t->g.n_parts; i++) {
        const struct df_gpt_part *p = &t->g.parts[i];
        const char *alias = df_gpt_type_name(&p->type);
        uint64_t bytes = (p->last_lba - p->first_lba + 1) * DF_GPT_SECTOR;
        df_guid_format(&p->type, true, type);
        df_guid_format(&p->guid, true, guid);
        df_format_size(bytes, size, sizeof(size));
        printf("    %u: name '%s', start %llu, size %llu (%s), type %s%s%s%s, "
               "guid %s\n", p->index + 1, p->name,
               (unsigned long long)(p->first_lba * DF_GPT_SECTOR),
               (unsigned long long)bytes, size, type, alias ? " (" : "",
               alias ? alias : "", alias ? ")" : "", guid);
    }
}

static void add_table_json(json_t *o, const struct table *t)
{
    json_t *pt = json_object(), *probs = json_array();
    char guid[37];
    bool shown = t->st.primary_ok || t->st.backup_ok;

    json_object_set_new(pt, "type", json_string("gpt"));
    json_object_set_new(pt, "valid",
                        json_boolean(t->st.state == DF_GPT_VALID));
    if (shown) {
        df_guid_format(&t->g.disk_guid, true, guid);
        json_object_set_new(pt, "disk-guid", json_string(guid));
        json_object_set_new(pt, "from-backup",
                            json_boolean(t->st.from_backup));
    }
    for (size_t i = 0; i < t->st.n_problems; i++) {
        json_array_append_new(probs, cli_json_string(t->st.problems[i]));
    }
    json_object_set_new(pt, "problems", probs);
    json_object_set_new(o, "partition-table", pt);
    json_object_set_new(o, "partitions", shown ? gpt_partitions_json(&t->g)
                                               : json_array());
}

/* Print IMG (and its backing chain when @chain); returns the exit code. */
static int show(struct df_image *top, bool json, bool chain)
{
    struct df_error err = { 0 };
    json_t *arr = json_array();
    int ret = CLI_OK;

    for (struct df_image *img = top; img && ret == CLI_OK;
         img = chain ? df_image_backing(img) : NULL) {
        struct df_info in;
        struct table *t = NULL;
        if (df_image_info(img, &in, &err) < 0) {
            ret = cli_fail(&err);
        } else if (json) {
            json_t *o = info_json(df_image_path(img), &in);
            if ((t = read_table(img, &in))) {
                add_table_json(o, t);
            }
            json_array_append_new(arr, o);
        } else {
            if (img != top) {
                putchar('\n');
            }
            print_human(df_image_path(img), &in);
            if ((t = read_table(img, &in))) {
                print_table_human(t);
            }
        }
        free(t);
    }
    if (ret == CLI_OK && json) {
        json_t *out = chain ? arr : json_array_get(arr, 0);
        if (json_dumpf(out, stdout, JSON_INDENT(4) | JSON_PRESERVE_ORDER) <
            0) {
            cli_error("cannot write the JSON output");
            ret = CLI_FAIL;
        } else {
            putchar('\n');
        }
    }
    json_decref(arr);
    return ret;
}

int cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
        { "force-share", no_argument, NULL, 'U' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum df_format fmt = DF_FMT_AUTO;
    struct df_error err = { 0 };
    struct df_image *img;
    bool json = false, chain = false;
    unsigned share = DF_OPEN_METADATA; /* the locks qemu-img info takes */
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:Uh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (cli_parse_format("info", optarg, &fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case OPT_OUTPUT:
            if (parse_output(optarg, &json) != CLI_OK) {
                return CLI_USAGE;
            }
            break;
        case OPT_BACKING_CHAIN: chain = true; break;
        case CLI_OPT_UNTRUSTED: cli_untrusted(); break;
        case 'U': share = DF_OPEN_SHARE; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return cli_bad_option("info", c, argv, longopts);
        }
    }
    if (argc - optind != 1) {
        return cli_usage("info", argc == optind ? "missing image name"
                                                : "expected one image name");
    }
    if ((ret = cli_image_names(argv + optind, 1)) != CLI_OK) {
        return ret;
    }
    /* a plain info does not need (or check) the backing files */
    img = df_image_open(argv[optind], fmt,
                        share | (chain ? 0 : DF_OPEN_NO_BACKING),
                        &err);
    if (!img) {
        return cli_fail(&err);
    }
    ret = show(img, json, chain);
    df_image_close(img, NULL);
    return ret;
}
