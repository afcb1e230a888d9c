/* SPDX-License-Identifier: MIT */
/*
 * cmd-map.c - `diskforge map`: which ranges of an image hold data, which
 * read as zeros, and which layer of the backing chain holds them, printed
 * byte for byte as qemu-img map 7.2 prints them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: diskforge map [-U] [-f FMT] [--output human|json]\n"
    "                     [--start-offset OFF] [--max-length LEN] IMG\n"
    "\n"
    "Show how the content of IMG is stored, range by range, as qemu-img map\n"
    "does: human output lists the ranges that hold data (offset, length,\n"
    "where in which file); JSON lists every range with its layer in the\n"
    "backing chain (depth) and its present, zero and data flags.\n"
    "\n"
    "  -f FMT              format of IMG (raw or qcow2); probed if not given\n"
    "  --output FORMAT     human (default) or json\n"
    "  --start-offset OFF  start at guest offset OFF (default 0)\n"
    "  --max-length LEN    stop after LEN bytes\n"
    "  -U, --force-share   read even if another process writes it (qemu-img -U)\n"
    CLI_UNTRUSTED_HELP
    "  -h, --help          show this help\n";

enum { OPT_OUTPUT = 256, OPT_START, OPT_MAX_LENGTH };

static bool has_offset(const struct df_map_extent *e)
{
    return e->offset != DF_NO_OFFSET;
}

/*
 * Print one merged range.  Human output shows data ranges only and cannot
 * show a data range without an offset (a compressed cluster): qemu-img
 * fails there, after the lines before it, and so does this (-1).
 */
static int print_entry(bool json, const char *img,
                       const struct df_map_extent *e, bool last)
{
    if (json) {
        printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", "
               "\"depth\": %d, \"present\": %s, \"zero\": %s, "
               "\"data\": %s", e->start, e->length, e->depth,
               e->present ? "true" : "false", e->zero ? "true" : "false",
               e->data ? "true" : "false");
        if (has_offset(e)) {
            printf(", \"offset\": %" PRIu64, e->offset);
        }
        fputs(last ? "}" : "},\n", stdout);
        return 0;
    }
    if (e->data && !has_offset(e)) {
        fflush(stdout);
        cli_error("'%s': File contains external, encrypted or compressed "
                  "clusters.", img);
        return -1;
    }
    if (e->data && !e->zero) {
        printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start,
               e->length, e->offset, df_image_path(e->layer));
    }
    return 0;
}

static int map_image(struct df_image *img, const char *name, bool json,
                     uint64_t start, uint64_t len)
{
    struct df_error err = { 0 };
    struct df_map_extent e, next;
    struct df_map *m;
    int ret;

    m = df_map_new(img, start, len, &err);
    if (!m) {
        return cli_fail(&err);
    }
    if (json) {
        putchar('[');
    } else {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to",
               "File");
    }
    /* one range ahead: JSON separates ranges and closes after the last */
    for (ret = df_map_next(m, &e, &err); ret > 0; e = next) {
        ret = df_map_next(m, &next, &err);
        if (ret < 0) {
            break; /* qemu-img does not print the range before the error */
        }
        if (print_entry(json, name, &e, ret == 0) < 0) {
            df_map_free(m);
            return CLI_FAIL;
        }
        if (ret == 0) {
            break;
        }
    }
    df_map_free(m);
    if (ret < 0) {
        fflush(stdout);
        return cli_fail(&err);
    }
    if (json) {
        puts("]");
    }
    return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
}

int cmd_map(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "start-offset", required_argument, NULL, OPT_START },
        { "max-length", required_argument, NULL, OPT_MAX_LENGTH },
        { "force-share", no_argument, NULL, 'U' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum df_format fmt = DF_FMT_AUTO;
    uint64_t start = 0, max_len = UINT64_MAX;
    struct df_error err = { 0 };
    struct df_image *img;
    bool json = false;
    unsigned share = 0;
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:Uh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (cli_parse_format("map", optarg, &fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case OPT_OUTPUT:
            if (strcmp(optarg, "json") && strcmp(optarg, "human")) {
                return cli_usage("map", "unknown output format '%s' (use "
                                 "human or json)", optarg);
            }
            json = !strcmp(optarg, "json");
            break;
        case OPT_START:
            if (cli_parse_size("map", optarg, &start) < 0) {
                return CLI_USAGE;
            }
            break;
        case OPT_MAX_LENGTH:
            if (cli_parse_size("map", optarg, &max_len) < 0) {
                return CLI_USAGE;
            }
            break;
        case CLI_OPT_UNTRUSTED: cli_untrusted(); break;
        case 'U': share = DF_OPEN_SHARE; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return cli_bad_option("map", c, argv, longopts);
        }
    }
    if (argc - optind != 1) {
        return cli_usage("map", argc == optind ? "missing image name"
                                               : "expected one image name");
    }
    if ((ret = cli_image_names(argv + optind, 1)) != CLI_OK) {
        return ret;
    }
    img = df_image_open(argv[optind], fmt, share, &err);
    if (!img) {
        return cli_fail(&err);
    }
    ret = map_image(img, argv[optind], json, start, max_len);
    df_image_close(img, NULL);
    return ret;
}
