/* SPDX-License-Identifier: MIT */
/*
 * cmd-modify.c - the subcommands that change an image in place:
 * `resize`, `commit`, `rebase` and `sparsify`.  Each is a thin layer over
 * the library call of the same name, with qemu-img's flags and messages.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* ---- resize ---- */

static const char resize_usage[] =
    "usage: diskforge resize [-q] [-f FMT] [--preallocation MODE] [--shrink] "
    "IMG [+|-]SIZE\n"
    "\n"
    "Change the virtual size of IMG: an absolute SIZE, or +SIZE/-SIZE\n"
    "relative to the current one.  Images shrink only with --shrink (the\n"
    "data past the new end is lost).  Growing an overlay keeps what the\n"
    "guest saw and makes the new area read as zeros.\n"
    "\n"
    "  -f FMT                format of IMG (raw or qcow2); probed if not "
    "given\n"
    "  --preallocation MODE  off, metadata (qcow2), falloc or full, for the "
    "new part\n"
    "  --shrink              allow the image to get smaller\n"
    "  -q                    print nothing on success\n"
    "  -h, --help            show this help\n";

int cmd_resize(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "preallocation", required_argument, NULL, 'P' },
        { "shrink", no_argument, NULL, 'S' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum df_format fmt = DF_FMT_AUTO;
    enum df_prealloc prealloc = DF_PREALLOC_OFF;
    struct df_error err = { 0 };
    bool shrink = false, quiet = false;
    const char *sizearg, *path;
    uint64_t delta, size;
    int c, ret, sign = 0;

    /* the size may start with '-': take it out before getopt sees it */
    if (argc >= 2 && strcmp(argv[argc - 1], "-h") != 0 &&
        strcmp(argv[argc - 1], "--help") != 0) {
        sizearg = argv[--argc];
    } else {
        sizearg = NULL;
    }
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (cli_parse_format("resize", optarg, &fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case 'P':
            if (df_prealloc_parse(optarg, &prealloc) < 0) {
                return cli_usage("resize", "unknown preallocation mode '%s' "
                                 "(use off, metadata, falloc or full)",
                                 optarg);
            }
            break;
        case 'S': shrink = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(resize_usage, stdout); return CLI_OK;
        default: return cli_bad_option("resize", c, argv, longopts);
        }
    }
    if (!sizearg || argc - optind != 1) {
        return cli_usage("resize", "expected an image name and a size");
    }
    if ((ret = cli_image_names(argv + optind, 1)) != CLI_OK) {
        return ret;
    }
    path = argv[optind];
    if (*sizearg == '+' || *sizearg == '-') {
        sign = *sizearg == '+' ? 1 : -1;
        sizearg++;
    }
    if (cli_parse_size("resize", sizearg, &delta) < 0) {
        return CLI_USAGE;
    }
    size = delta;
    if (sign) {
        struct df_image *img = df_image_open(path, fmt, DF_OPEN_NO_BACKING,
                                             &err);
        uint64_t cur;
        if (!img) {
            return cli_fail(&err);
        }
        cur = df_image_size(img);
        df_image_close(img, NULL);
        if (sign < 0 && delta > cur) {
            cli_error("'%s': cannot shrink by %llu bytes: the image has %llu",
                      path, (unsigned long long)delta,
                      (unsigned long long)cur);
            return CLI_FAIL;
        }
        size = sign > 0 ? cur + delta : cur - delta;
    }
    if (df_resize(path, fmt, size, prealloc, shrink, &err) < 0) {
        return cli_fail(&err);
    }
    if (!quiet) {
        printf("Image resized.\n");
    }
    return CLI_OK;
}

/*
 * The options of commit and sparsify: [-q] [-p] [-f FMT] IMG, and for
 * commit (@base not NULL) also [-b BASE] [-d].  Returns CLI_OK with *path
 * set, -1 after --help, or an exit status.
 */
static int parse_one_image(int argc, char **argv, const char *cmd,
                           const char *usage, enum df_format *fmt,
                           struct cli_progress *prog, bool *quiet,
                           const char **base, bool *keep, const char **path)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *optstring = base ? ":f:pqhb:d" : ":f:pqh";
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
        switch (c) {
        case 'b': *base = optarg; break;
        case 'd': *keep = true; break;
        case 'f':
            if (cli_parse_format(cmd, optarg, fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case 'p': prog->show = true; break;
        case 'q': *quiet = true; break;
        case 'h': fputs(usage, stdout); return -1;
        default: return cli_bad_option(cmd, c, argv, longopts);
        }
    }
    if (argc - optind != 1) {
        return cli_usage(cmd, "expected one image name");
    }
    if ((ret = cli_image_names(argv + optind, 1)) != CLI_OK) {
        return ret;
    }
    *path = argv[optind];
    return CLI_OK;
}

/* ---- commit ---- */

static const char commit_usage[] =
    "usage: diskforge commit [-q] [-p] [-f FMT] [-b BASE] [-d] IMG\n"
    "\n"
    "Write the changes held by the overlay IMG into its backing file, then\n"
    "empty IMG.\n"
    "\n"
    "  -b BASE      commit into BASE, an image further down IMG's backing\n"
    "               chain: everything above it goes in; implies -d, and\n"
    "               the images in between no longer show what they did\n"
    "  -d           do not empty IMG afterwards\n"
    "  -f FMT       format of IMG (qcow2); probed if not given\n"
    "  -p           show progress\n"
    "  -q           print nothing on success\n"
    "  -h, --help   show this help\n";

int cmd_commit(int argc, char **argv)
{
    enum df_format fmt = DF_FMT_AUTO;
    struct cli_progress prog = { 0 };
    struct df_error err = { 0 };
    bool quiet = false, keep = false;
    const char *path = NULL, *base = NULL;
    int ret = parse_one_image(argc, argv, "commit", commit_usage, &fmt, &prog,
                              &quiet, &base, &keep, &path);

    if (ret != CLI_OK) {
        return ret < 0 ? CLI_OK : ret;
    }
    cli_catch_signals();
    ret = df_commit_to(path, fmt, base, keep, cli_progress, &prog, &err);
    cli_progress_end(&prog);
    if (ret < 0) {
        return cli_fail(&err);
    }
    if (!quiet) {
        printf("Image committed.\n");
    }
    return CLI_OK;
}

/* ---- rebase ---- */

static const char rebase_usage[] =
    "usage: diskforge rebase [-q] [-p] [-U] [-f FMT] [-u] -b BACKING "
    "-F BACKING_FMT IMG\n"
    "\n"
    "Make BACKING the backing file of IMG (\"\" for none).  Without -u the\n"
    "content IMG shows stays the same: what differs between the old and\n"
    "the new backing chain is first copied into IMG.  With -u only the\n"
    "name in the header changes.\n"
    "\n"
    "  -b BACKING      the new backing file, relative to IMG's directory\n"
    "  -F FMT          its format (raw or qcow2), required with a BACKING:\n"
    "                  the format recorded for a backing file is never probed\n"
    "  -U              accepted for qemu-img compatibility (no locks yet)\n"
    "  -u              unsafe: change the name only\n"
    "  -f FMT          format of IMG (qcow2)\n"
    "  -p              show progress\n"
    "  -h, --help      show this help\n";

int cmd_rebase(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum df_format fmt = DF_FMT_AUTO, bfmt = DF_FMT_AUTO;
    struct cli_progress prog = { 0 };
    struct df_error err = { 0 };
    const char *backing = NULL;
    bool unsafe = false;
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:F:b:upqUh", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'f':
            if (cli_parse_format("rebase", optarg, &fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case 'F':
            if (cli_parse_format("rebase", optarg, &bfmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case 'b': backing = optarg; break;
        case 'u': unsafe = true; break;
        case 'p': prog.show = true; break;
        case 'q': break;
        case 'U': break; /* the image is written: see docs/cli.md */
        case 'h': fputs(rebase_usage, stdout); return CLI_OK;
        default: return cli_bad_option("rebase", c, argv, longopts);
        }
    }
    if (!backing) {
        return cli_usage("rebase", "missing -b BACKING (use -b \"\" to "
                         "remove the backing file)");
    }
    if (argc - optind != 1) {
        return cli_usage("rebase", "expected one image name");
    }
    if ((ret = cli_backing_format_given(argv[optind], backing, bfmt)) !=
            CLI_OK ||
        (ret = cli_check_backing_name(argv[optind], backing)) != CLI_OK ||
        (ret = cli_image_names(argv + optind, 1)) != CLI_OK) {
        return ret;
    }
    cli_catch_signals();
    ret = df_rebase(argv[optind], fmt, backing, bfmt, unsafe, cli_progress,
                    &prog, &err);
    cli_progress_end(&prog);
    return ret < 0 ? cli_fail(&err) : CLI_OK;
}

/* ---- sparsify ---- */

static const char sparsify_usage[] =
    "usage: diskforge sparsify [-q] [-p] [-f FMT] IMG\n"
    "\n"
    "Deallocate, in place, the clusters (qcow2) or 4 KiB blocks (raw) of\n"
    "IMG that hold only zeros.  The content does not change.\n"
    "\n"
    "  -f FMT       format of IMG (raw or qcow2); probed if not given\n"
    "  -p           show progress\n"
    "  -q           print nothing on success\n"
    "  -h, --help   show this help\n";

int cmd_sparsify(int argc, char **argv)
{
    enum df_format fmt = DF_FMT_AUTO;
    struct cli_progress prog = { 0 };
    struct df_error err = { 0 };
    bool quiet = false;
    const char *path = NULL;
    uint64_t freed = 0;
    int ret = parse_one_image(argc, argv, "sparsify", sparsify_usage, &fmt, &prog,
                              &quiet, NULL, NULL, &path);

    if (ret != CLI_OK) {
        return ret < 0 ? CLI_OK : ret;
    }
    cli_catch_signals();
    ret = df_sparsify(path, fmt, &freed, cli_progress, &prog, &err);
    cli_progress_end(&prog);
    if (ret < 0) {
        return cli_fail(&err);
    }
    if (!quiet) {
        printf("Image sparsified: %llu bytes deallocated.\n",
               (unsigned long long)freed);
    }
    return CLI_OK;
}
