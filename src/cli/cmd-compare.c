/* SPDX-License-Identifier: MIT */
/*
 * cmd-compare.c - `diskforge compare`: qemu-img compare's messages and
 * exit codes (0 identical, 1 different, 2 error).
 */
#include <stdio.h>

#include "cli.h"

static const char usage_text[] =
    "usage: diskforge compare [-U] [-q] [-p] [-s] [-f FMT] [-F FMT] IMG1 IMG2\n"
    "\n"
    "Check that IMG1 and IMG2 have the same content, as a guest reads it:\n"
    "unallocated ranges and zeros are equal, and when the sizes differ the\n"
    "tail of the larger image must read as zeros.\n"
    "\n"
    "  -f FMT       format of IMG1 (raw or qcow2); probed if not given\n"
    "  -F FMT       format of IMG2 (raw or qcow2); probed if not given\n"
    "  -s           strict: images of different sizes are different\n"
    "  -p           show progress\n"
    "  -q           quiet: print nothing, only set the exit status\n"
    "  -U, --force-share\n"
    "               read even if another process writes it (qemu-img -U)\n"
    CLI_UNTRUSTED_HELP
    "  -h, --help   show this help\n"
    "\n"
    "Exit status: 0 identical, 1 different, 2 error.\n";

/* compare's own exit codes (qemu-img's) */
enum { CMP_SAME = 0, CMP_DIFFERENT = 1, CMP_ERROR = 2 };

static void say(bool quiet, const char *msg)
{
    if (!quiet) {
        puts(msg);
    }
}

/* Bytes present in both images. */
static uint64_t common_size(struct df_image *const img[2])
{
    uint64_t a = df_image_size(img[0]), b = df_image_size(img[1]);

    return a < b ? a : b;
}

/* Open and compare; prints the verdict and returns the exit code. */
static int compare(const char *name[2], const enum df_format fmt[2],
                   unsigned share, bool strict, bool quiet,
                   struct cli_progress *prog)
{
    struct df_image *img[2] = { NULL, NULL };
    struct df_compare_result res;
    struct df_error err = { 0 };
    int ret = CMP_ERROR;

    for (int i = 0; i < 2; i++) {
        img[i] = df_image_open(name[i], fmt[i], share, &err);
        if (!img[i]) {
            cli_fail(&err);
            goto out;
        }
    }
    cli_catch_signals();
    if (df_compare(img[0], img[1], strict, &res, cli_progress, prog,
                   &err) < 0) {
        cli_progress_end(prog);
        ret = cli_fail(&err) == CLI_INTERRUPTED ? CLI_INTERRUPTED : CMP_ERROR;
        goto out;
    }
    cli_progress_end(prog);
    if (res.size_mismatch && strict) {
        say(quiet, "Strict mode: Image size mismatch!");
        ret = CMP_DIFFERENT;
        goto out;
    }
    /* qemu-img warns when it reaches the tail, after a matching prefix */
    if (res.size_mismatch &&
        (res.identical || res.mismatch_offset >= common_size(img))) {
        say(quiet, "Warning: Image size mismatch!");
    }
    if (res.identical) {
        say(quiet, "Images are identical.");
        ret = CMP_SAME;
    } else {
        if (!quiet) {
            printf("Content mismatch at offset %llu!\n",
                   (unsigned long long)res.mismatch_offset);
        }
        ret = CMP_DIFFERENT;
    }
out:
    df_image_close(img[0], NULL);
    df_image_close(img[1], NULL);
    return ret;
}

int cmd_compare(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum df_format fmt[2] = { DF_FMT_AUTO, DF_FMT_AUTO };
    struct cli_progress prog = { 0 };
    bool strict = false, quiet = false;
    unsigned share = 0;
    const char *name[2];
    int c;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:F:spqUh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
        case 'F':
            if (cli_parse_format("compare", optarg, &fmt[c == 'F']) < 0) {
                return CMP_ERROR;
            }
            break;
        case 's': strict = true; break;
        case 'p': prog.show = true; break;
        case 'q': quiet = true; break;
        case CLI_OPT_UNTRUSTED: cli_untrusted(); break;
        case 'U': share = DF_OPEN_SHARE; break;
        case 'h': fputs(usage_text, stdout); return CMP_SAME;
        default: return cli_bad_option("compare", c, argv, longopts);
        }
    }
    if (argc - optind != 2) {
        return cli_usage("compare", "expected two image names");
    }
    if (cli_image_names(argv + optind, 2) != CLI_OK) {
        return CMP_ERROR;
    }
    name[0] = argv[optind];
    name[1] = argv[optind + 1];
    prog.show = prog.show && !quiet;
    return compare(name, fmt, share, strict, quiet, &prog);
}
