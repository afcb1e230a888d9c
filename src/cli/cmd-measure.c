/* SPDX-License-Identifier: MIT */
/*
 * cmd-measure.c - `diskforge measure`: the file size a new image needs,
 * with qemu-img measure's figures and output.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: diskforge measure [-U] [-O FMT] [-o OPTIONS] [-f FMT]\n"
    "                         [--output human|json] (--size SIZE | SRC)\n"
    "\n"
    "Print how large a new image of format FMT would be: empty with a\n"
    "virtual size of SIZE, or holding the content of the image SRC (read\n"
    "through its backing chain).  'required size' is what the content\n"
    "needs, 'fully allocated size' what the image takes with every cluster\n"
    "allocated.  The figures are qemu-img measure's.\n"
    "\n"
    "  -O FMT           format of the new image: raw (default) or qcow2\n"
    "  -o OPTIONS       its options, as for create; '-o help' lists them\n"
    "  -f FMT           format of SRC (raw or qcow2); probed if not given\n"
    "  --size SIZE      measure an empty image of SIZE bytes\n"
    "  --output FORMAT  human (default) or json\n"
    "  -U, --force-share\n"
    "                   read even if another process writes it (qemu-img -U)\n"
    "  -h, --help       show this help\n";

enum { OPT_OUTPUT = 256, OPT_SIZE };

static void print_result(const struct df_measure *m, bool json)
{
    if (json) {
        fputs("{\n", stdout);
        if (m->has_bitmaps) {
            printf("    \"bitmaps\": %" PRIu64 ",\n", m->bitmaps);
        }
        printf("    \"required\": %" PRIu64 ",\n"
               "    \"fully-allocated\": %" PRIu64 "\n"
               "}\n", m->required, m->fully_allocated);
        return;
    }
    printf("required size: %" PRIu64 "\n"
           "fully allocated size: %" PRIu64 "\n", m->required,
           m->fully_allocated);
    if (m->has_bitmaps) {
        printf("bitmaps size: %" PRIu64 "\n", m->bitmaps);
    }
}

struct measure_args {
    struct cli_image_opts io;
    enum df_format src_fmt;
    const char *src;
    const char *size; /* --size as given, or NULL */
    bool json;
    unsigned share; /* -U: DF_OPEN_SHARE */
};

/* Returns CLI_OK, a failure status, or -1 after printing a help text. */
static int parse_args(struct measure_args *a, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "size", required_argument, NULL, OPT_SIZE },
        { "force-share", no_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *out_fmt = "raw";
    enum df_format fmt;
    uint64_t size;
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:O:o:Uh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (cli_parse_format("measure", optarg, &a->src_fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case 'O': out_fmt = optarg; break;
        case 'o':
            if (cli_image_opts_add(&a->io, optarg) != CLI_OK) {
                return CLI_FAIL;
            }
            break;
        case OPT_OUTPUT:
            if (strcmp(optarg, "json") && strcmp(optarg, "human")) {
                return cli_usage("measure", "unknown output format '%s' "
                                 "(use human or json)", optarg);
            }
            a->json = !strcmp(optarg, "json");
            break;
        case OPT_SIZE: a->size = optarg; break;
        case 'U': a->share = DF_OPEN_SHARE; break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return cli_bad_option("measure", c, argv, longopts);
        }
    }
    if (cli_parse_format("measure", out_fmt, &fmt) < 0) {
        return CLI_USAGE;
    }
    if (argc - optind > 1) {
        return cli_usage("measure", "expected one source image");
    }
    if ((ret = cli_image_names(argv + optind, argc - optind)) != CLI_OK) {
        return ret;
    }
    a->src = optind < argc ? argv[optind] : NULL;
    ret = cli_image_opts_parse(&a->io, fmt, a->src ? a->src : "new image");
    if (ret != CLI_OK) {
        return ret;
    }
    if (a->io.help) {
        cli_image_opts_help(fmt);
        return -1;
    }
    if (!a->src == !a->size) {
        return cli_usage("measure", a->src ? "--size cannot be used together "
                                             "with a source image"
                                           : "give either --size SIZE or "
                                             "one source image");
    }
    /* --size wins over -o size, as in qemu-img */
    if (a->size) {
        if (cli_parse_size("measure", a->size, &size) < 0) {
            return CLI_USAGE;
        }
        a->io.opts.size = size;
    }
    return CLI_OK;
}

int cmd_measure(int argc, char **argv)
{
    struct measure_args a = { .src_fmt = DF_FMT_AUTO };
    struct df_error err = { 0 };
    struct df_image *src = NULL;
    struct df_measure m;
    int ret;

    cli_image_opts_init(&a.io);
    ret = parse_args(&a, argc, argv);
    if (ret != CLI_OK) {
        cli_image_opts_release(&a.io);
        return ret < 0 ? CLI_OK : ret;
    }
    if (a.src && !(src = df_image_open(a.src, a.src_fmt, a.share, &err))) {
        ret = cli_fail(&err);
    } else if (df_measure(src, &a.io.opts, &m, &err) < 0) {
        ret = cli_fail(&err);
    } else {
        print_result(&m, a.json);
    }
    df_image_close(src, NULL);
    cli_image_opts_release(&a.io);
    return ret;
}
