/* SPDX-License-Identifier: MIT */
/*
 * cmd-digest.c - `diskforge digest`: the SHA-256 of an image's content,
 * printed like sha256sum, so that a raw image gives the same line as
 * `sha256sum` on the file.
 */
#include <stdio.h>

#include "cli.h"

static const char usage_text[] =
    "usage: diskforge digest [-U] [-p] [-f FMT] IMG\n"
    "\n"
    "Print the SHA-256 of the bytes a guest reads from IMG (through its\n"
    "backing chain), as '<64 hex digits>  IMG'.\n"
    "\n"
    "  -f FMT       format of IMG (raw or qcow2); probed if not given\n"
    "  -p           show progress\n"
    "  -U, --force-share\n"
    "               read even if another process writes it (qemu-img -U)\n"
    CLI_UNTRUSTED_HELP
    "  -h, --help   show this help\n";

int cmd_digest(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum df_format fmt = DF_FMT_AUTO;
    struct cli_progress prog = { 0 };
    struct df_error err = { 0 };
    unsigned char sum[DF_SHA256_LEN];
    char hex[2 * DF_SHA256_LEN + 1];
    struct df_image *img;
    unsigned share = 0;
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:pUh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (cli_parse_format("digest", optarg, &fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case 'p': prog.show = true; break;
        case CLI_OPT_UNTRUSTED: cli_untrusted(); break;
        case 'U': share = DF_OPEN_SHARE; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return cli_bad_option("digest", c, argv, longopts);
        }
    }
    if (argc - optind != 1) {
        return cli_usage("digest", argc == optind ? "missing image name"
                                                  : "expected one image name");
    }
    if ((ret = cli_image_names(argv + optind, 1)) != CLI_OK) {
        return ret;
    }
    img = df_image_open(argv[optind], fmt, share, &err);
    if (!img) {
        return cli_fail(&err);
    }
    cli_catch_signals();
    ret = df_digest(img, sum, cli_progress, &prog, &err);
    cli_progress_end(&prog);
    df_image_close(img, NULL);
    if (ret < 0) {
        return cli_fail(&err);
    }
    df_digest_hex(sum, hex);
    printf("%s  %s\n", hex, argv[optind]);
    return CLI_OK;
}
