/* SPDX-License-Identifier: MIT */
/*
 * cmd-create.c - `diskforge create`: a new raw or qcow2 image, with
 * qemu-img create's options, checks and "Formatting ..." line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: diskforge create [-q] [-f FMT] [-o OPT=VAL[,OPT=VAL...]]\n"
    "                        [-b BACKING -F BACKING_FMT] [-u] IMG [SIZE]\n"
    "\n"
    "Create the image IMG of SIZE bytes (suffixes K, M, G, T, P, E are\n"
    "powers of 1024).  With a backing file SIZE defaults to its size.\n"
    "\n"
    "  -f FMT          format of IMG: raw (default) or qcow2\n"
    "  -o OPTIONS      format options, comma separated; '-o help' lists them\n"
    "  -b BACKING      backing file of a qcow2 image, stored as given (a\n"
    "                  relative name is relative to IMG's directory)\n"
    "  -F BACKING_FMT  format of the backing file (required with -b)\n"
    "  -u              SIZE must be given; accepted for qemu-img\n"
    "                  compatibility (the backing file is still opened)\n"
    "  -q              quiet: do not print the 'Formatting' line\n"
    "  -h, --help      show this help\n";

struct create_args {
    struct cli_image_opts io;
    enum df_format fmt;
    const char *img;         /* as given (the "Formatting" line) */
    char *path;              /* the local path of IMG */
    const char *backing;     /* -b */
    const char *backing_fmt; /* -F */
    bool unsafe;             /* -u */
    bool quiet;              /* -q */
};

/*
 * Open the backing file as the engine will (so that a bad one is reported
 * before the "Formatting" line, as qemu-img does); without a size given,
 * the image takes the backing file's size.
 */
static int open_backing(struct create_args *a)
{
    struct df_create_opts *o = &a->io.opts;
    struct df_error err = { 0 };
    struct df_image *b;
    char *path = df_backing_path(a->path, o->backing_file, &err);

    if (!path) {
        df_error_prefix(&err, "'%s': cannot open backing file: ", a->img);
        return cli_fail(&err);
    }
    b = df_image_open(path, o->backing_format, DF_OPEN_NO_BACKING, &err);
    free(path);
    if (!b) {
        df_error_prefix(&err, "'%s': cannot open backing file: ", a->img);
        return cli_fail(&err);
    }
    if (!a->io.have_size) {
        o->size = df_image_size(b);
        a->io.have_size = true;
    }
    df_image_close(b, NULL);
    return CLI_OK;
}

/* Backing-file rules of qemu-img 7.2, then the size. */
static int check_backing_and_size(struct create_args *a)
{
    struct df_create_opts *o = &a->io.opts;
    int ret;

    if (a->backing) {
        o->backing_file = a->backing;
    }
    if (a->backing_fmt) {
        if (df_format_parse(a->backing_fmt, &o->backing_format) < 0) {
            return cli_usage("create", "unknown backing format '%s' (use "
                             "raw or qcow2)", a->backing_fmt);
        }
        a->io.backing_fmt = a->backing_fmt;
    }
    if (o->backing_file && a->fmt != DF_FMT_QCOW2) {
        cli_error("'%s': a %s image cannot have a backing file", a->img,
                  df_format_name(a->fmt));
        return CLI_USAGE;
    }
    if (a->io.backing_fmt && !o->backing_file) {
        cli_error("'%s': a backing format cannot be used without a backing "
                  "file", a->img);
        return CLI_USAGE;
    }
    if ((ret = cli_backing_format_given(a->img, o->backing_file,
                                        o->backing_format)) != CLI_OK ||
        (ret = cli_check_backing_name(a->img, o->backing_file)) != CLI_OK) {
        return ret;
    }
    if (o->backing_file && o->prealloc != DF_PREALLOC_OFF) {
        cli_error("'%s': a backing file and preallocation cannot be used "
                  "together", a->img);
        return CLI_USAGE;
    }
    if (o->backing_file && !a->unsafe) {
        ret = open_backing(a);
        if (ret != CLI_OK) {
            return ret;
        }
    }
    if (!a->io.have_size) {
        cli_error("'%s': missing size: give SIZE%s", a->img,
                  o->backing_file ? " (-u does not read the backing file)"
                                  : " or a backing file");
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* qemu-img's line, options in its order, values as the user spelt them. */
static void print_formatting(const struct create_args *a)
{
    const struct cli_image_opts *io = &a->io;
    const struct df_create_opts *o = &io->opts;

    printf("Formatting '%s', fmt=%s", a->img, df_format_name(a->fmt));
    if (a->fmt == DF_FMT_RAW) {
        printf(" size=%llu", (unsigned long long)o->size);
        if (io->preallocation) {
            printf(" preallocation=%s", io->preallocation);
        }
        putchar('\n');
        return;
    }
    if (io->encryption) {
        printf(" encryption=%s", io->encryption);
    }
    printf(" cluster_size=%u extended_l2=%s", o->cluster_size,
           io->extended_l2 ? io->extended_l2 : "off");
    if (io->preallocation) {
        printf(" preallocation=%s", io->preallocation);
    }
    printf(" compression_type=%s size=%llu",
           io->compression_type ? io->compression_type : "zlib",
           (unsigned long long)o->size);
    if (io->compat) {
        printf(" compat=%s", io->compat);
    }
    if (o->backing_file) {
        printf(" backing_file=%s", o->backing_file);
    }
    if (io->backing_fmt) {
        printf(" backing_fmt=%s", io->backing_fmt);
    }
    printf(" lazy_refcounts=%s refcount_bits=%d\n",
           io->lazy_refcounts ? io->lazy_refcounts : "off", o->refcount_bits);
}

static int parse_args(struct create_args *a, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *fmt = "raw";
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:o:b:F:uqh", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'o':
            if (cli_image_opts_add(&a->io, optarg) != CLI_OK) {
                return CLI_FAIL;
            }
            break;
        case 'b': a->backing = optarg; break;
        case 'F': a->backing_fmt = optarg; break;
        case 'u': a->unsafe = true; break;
        case 'q': a->quiet = true; break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return cli_bad_option("create", c, argv, longopts);
        }
    }
    if (cli_parse_format("create", fmt, &a->fmt) < 0) {
        return CLI_USAGE;
    }
    a->img = optind < argc ? argv[optind] : NULL;
    ret = cli_image_opts_parse(&a->io, a->fmt, a->img ? a->img : "");
    if (ret != CLI_OK || a->io.help) {
        return ret;
    }
    if (!a->img) {
        return cli_usage("create", "missing image name");
    }
    a->path = argv[optind];
    if ((ret = cli_image_names(&a->path, 1)) != CLI_OK) {
        return ret;
    }
    if (argc - optind > 2) {
        return cli_usage("create", "too many arguments after '%s'",
                         argv[optind + 1]);
    }
    if (argc - optind == 2) {
        if (a->io.have_size) {
            cli_error("'%s': the image size must be given only once (SIZE "
                      "or -o size)", a->img);
            return CLI_USAGE;
        }
        if (cli_parse_size("create", argv[optind + 1], &a->io.opts.size) <
            0) {
            return CLI_USAGE;
        }
        a->io.have_size = true;
    }
    return check_backing_and_size(a);
}

int cmd_create(int argc, char **argv)
{
    struct create_args a = { .fmt = DF_FMT_RAW };
    struct df_error err = { 0 };
    int ret;

    cli_image_opts_init(&a.io);
    ret = parse_args(&a, argc, argv);
    if (ret < 0) {
        ret = CLI_OK; /* --help */
    } else if (ret == CLI_OK && a.io.help) {
        cli_image_opts_help(a.fmt);
    } else if (ret == CLI_OK) {
        if (!a.quiet) {
            print_formatting(&a);
            fflush(stdout);
        }
        if (df_image_create(a.img, &a.io.opts, &err) < 0) {
            ret = cli_fail(&err);
        }
    }
    cli_image_opts_release(&a.io);
    return ret;
}
