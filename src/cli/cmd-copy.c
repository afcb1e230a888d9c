/* SPDX-License-Identifier: MIT */
/*
 * cmd-copy.c - `diskforge copy`: a byte copy of a file with cp's
 * --sparse semantics, written atomically.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char usage_text[] =
    "usage: diskforge copy [-p] [--sparse=auto|always|never] SRC DST\n"
    "\n"
    "Copy the bytes of the file SRC to DST, as cp does (no image format is\n"
    "involved).  DST appears only when complete: it is written under a\n"
    "temporary name and renamed, so a failure leaves an existing DST as it\n"
    "was.  When DST is a directory the copy is DST/<name of SRC>.\n"
    "\n"
    "  --sparse=WHEN  auto (default): a SRC with holes gets a DST with the\n"
    "                 same holes and its blocks of zeros become holes too;\n"
    "                 any other SRC is copied as it is;\n"
    "                 always: keep holes and make blocks of zeros holes;\n"
    "                 never: write every byte, holes included\n"
    "  -p             show progress\n"
    "  -h, --help     show this help\n";

enum { OPT_SPARSE = 256 };

/* Like cp: a directory as destination receives a file named as @src. */
static char *target_name(const char *src, const char *dst)
{
    const char *base = strrchr(src, '/');
    struct stat st;
    size_t n;
    char *out;

    if (stat(dst, &st) < 0 || !S_ISDIR(st.st_mode)) {
        return strdup(dst);
    }
    base = base ? base + 1 : src;
    n = strlen(dst) + strlen(base) + 2;
    out = malloc(n);
    if (out) {
        snprintf(out, n, "%s%s%s", dst,
                 dst[strlen(dst) - 1] == '/' ? "" : "/", base);
    }
    return out;
}

int cmd_copy(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "sparse", required_argument, NULL, OPT_SPARSE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum df_sparse_mode mode = DF_SPARSE_AUTO;
    struct cli_progress prog = { 0 };
    struct df_error err = { 0 };
    char *dst;
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":ph", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SPARSE:
            if (df_sparse_mode_parse(optarg, &mode) < 0) {
                return cli_usage("copy", "invalid argument '%s' for "
                                 "'--sparse' (use auto, always or never)",
                                 optarg);
            }
            break;
        case 'p': prog.show = true; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return cli_bad_option("copy", c, argv, longopts);
        }
    }
    if (argc - optind != 2) {
        return cli_usage("copy", argc - optind < 2
                                     ? "expected a source and a destination "
                                       "file"
                                     : "too many arguments: copy takes one "
                                       "source and one destination");
    }
    dst = target_name(argv[optind], argv[optind + 1]);
    if (!dst) {
        cli_error("out of memory");
        return CLI_FAIL;
    }
    cli_catch_signals();
    ret = df_copy(argv[optind], dst, mode, cli_progress, &prog, &err);
    cli_progress_end(&prog);
    free(dst);
    return ret < 0 ? cli_fail(&err) : CLI_OK;
}
