/* SPDX-License-Identifier: MIT */
/*
 * cmd-convert.c - `diskforge convert`: copy an image into a new one,
 * changing format, options or sparseness (qemu-img convert's flags).
 */
#include <stdio.h>

#include "cli.h"

static const char usage_text[] =
    "usage: diskforge convert [-q] [-p] [-n] [-f FMT] [-O FMT] [-o OPTIONS]\n"
    "                         [-c] [-S SIZE] [-B BACKING -F FMT] [-U] SRC DST\n"
    "\n"
    "Copy the content of the image SRC (through its backing chain) into a\n"
    "new image DST.  DST appears only when complete: it is written under a\n"
    "temporary name and renamed, so a failure leaves an existing DST as it\n"
    "was.  Ranges of zeros are not written.\n"
    "\n"
    "  -f FMT       format of SRC (raw or qcow2); probed if not given\n"
    "  -O FMT       format of DST: raw (default) or qcow2\n"
    "  -o OPTIONS   DST's format options, as for create; '-o help' lists "
    "them\n"
    "  -c           compress DST's clusters (qcow2; zlib, or zstd with\n"
    "               -o compression_type=zstd), on every CPU\n"
    "  -B BACKING   make DST (qcow2) an overlay of BACKING, holding only\n"
    "               the clusters where SRC differs from it; a relative name\n"
    "               is relative to DST's directory\n"
    "  -F FMT       format of BACKING (raw or qcow2), required with -B: the\n"
    "               format recorded for a backing file is never probed\n"
    "  -n           do not create DST: write into the existing image DST\n"
    "               (of format -O, at least as large as SRC), in place;\n"
    "               zero runs of SRC are written as zeros\n"
    "  -S SIZE      zero runs of SIZE bytes (a multiple of 512, at most 16M;\n"
    "               default 4K) are left unwritten; 0 allocates everything\n"
    "  -p           show progress\n"
    "  -q           quiet: no progress\n"
    "  -U           read the source even if another process writes it\n"
    CLI_UNTRUSTED_HELP
    "  -h, --help   show this help\n";

/* Largest -S value, as in qemu-img 7.2. */
#define MAX_SPARSE (16u << 20)

struct convert_args {
    struct df_convert_opts opts;
    struct cli_image_opts io;
    const char *src, *dst;
    bool progress, quiet;
    bool have_o;                 /* -o was given */
    const char *backing;         /* -B */
    enum df_format backing_fmt;  /* -F */
};

static int parse_args(struct convert_args *a, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *out_fmt = "raw", *sparse = NULL;
    enum df_format fmt;
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:O:o:cS:pqnB:F:Uh", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 'f':
            if (cli_parse_format("convert", optarg, &a->opts.src_format) < 0) {
                return CLI_USAGE;
            }
            break;
        case 'O': out_fmt = optarg; break;
        case 'o':
            a->have_o = true;
            if (cli_image_opts_add(&a->io, optarg) != CLI_OK) {
                return CLI_FAIL;
            }
            break;
        case 'c': a->opts.compress = true; break;
        case 'S': sparse = optarg; break;
        case 'p': a->progress = true; break;
        case 'q': a->quiet = true; break;
        case 'n': a->opts.no_create = true; break;
        case 'B': a->backing = optarg; break;
        case 'F':
            if (cli_parse_format("convert", optarg, &a->backing_fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case CLI_OPT_UNTRUSTED: cli_untrusted(); break;
        case 'U': a->opts.force_share = true; break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return cli_bad_option("convert", c, argv, longopts);
        }
    }
    if (cli_parse_format("convert", out_fmt, &fmt) < 0) {
        return CLI_USAGE;
    }
    if ((ret = cli_image_names(argv + optind, argc - optind < 2
                                                  ? argc - optind : 2)) !=
        CLI_OK) {
        return ret;
    }
    a->src = optind < argc ? argv[optind] : NULL;
    a->dst = optind + 1 < argc ? argv[optind + 1] : NULL;
    ret = cli_image_opts_parse(&a->io, fmt, a->dst ? a->dst : "");
    if (ret != CLI_OK || a->io.help) {
        return ret;
    }
    if (!a->dst) {
        return cli_usage("convert", "expected a source and a destination "
                         "image");
    }
    if (argc - optind > 2) {
        return cli_usage("convert", "too many arguments: convert takes one "
                         "source and one destination");
    }
    if (sparse && (cli_parse_size("convert", sparse, &a->opts.sparse_size) <
                   0)) {
        return CLI_USAGE;
    }
    if (a->opts.sparse_size % 512 || a->opts.sparse_size > MAX_SPARSE) {
        return cli_usage("convert", "invalid sparse size '%s': use a "
                         "multiple of 512 up to 16M, or 0 to allocate the "
                         "whole output", sparse);
    }
    if (a->io.have_size) {
        return cli_usage("convert", "option 'size' cannot be used: the size "
                         "of '%s' is the size of '%s'", a->dst, a->src);
    }
    if (a->opts.no_create && (a->have_o || a->backing)) {
        return cli_usage("convert", "%s has no effect when skipping image "
                         "creation (-n)", a->have_o ? "-o" : "-B");
    }
    if (!a->backing && a->backing_fmt != DF_FMT_AUTO) {
        return cli_usage("convert", "-F gives the format of -B BACKING: it "
                         "cannot be used without -B");
    }
    if (a->backing) {
        a->io.opts.backing_file = a->backing;
        if (a->backing_fmt != DF_FMT_AUTO) {
            /* else -o backing_fmt=, as qemu-img takes it */
            a->io.opts.backing_format = a->backing_fmt;
        }
    }
    /* -B or -o backing_file: the format must come with it */
    if ((ret = cli_backing_format_given(a->dst, a->io.opts.backing_file,
                                        a->io.opts.backing_format)) !=
            CLI_OK ||
        (ret = cli_check_backing_name(a->dst, a->io.opts.backing_file)) !=
            CLI_OK) {
        return ret;
    }
    a->opts.target = a->io.opts;
    return CLI_OK;
}

int cmd_convert(int argc, char **argv)
{
    struct convert_args a = { 0 };
    struct cli_progress prog = { 0 };
    struct df_error err = { 0 };
    int ret;

    df_convert_opts_init(&a.opts);
    cli_image_opts_init(&a.io);
    ret = parse_args(&a, argc, argv);
    if (ret < 0) {
        ret = CLI_OK; /* --help */
    } else if (ret == CLI_OK && a.io.help) {
        cli_image_opts_help(a.io.opts.format);
    } else if (ret == CLI_OK) {
        prog.show = a.progress && !a.quiet;
        a.opts.progress = cli_progress;
        a.opts.progress_opaque = &prog;
        cli_catch_signals();
        ret = df_convert(a.src, a.dst, &a.opts, &err);
        cli_progress_end(&prog);
        ret = ret < 0 ? cli_fail(&err) : CLI_OK;
    }
    cli_image_opts_release(&a.io);
    return ret;
}
