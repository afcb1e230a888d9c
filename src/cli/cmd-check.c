/* SPDX-License-Identifier: MIT */
/*
 * cmd-check.c - `diskforge check`: qemu-img check's report and exit codes
 * (0 clean, 1 check not completed, 2 corruptions, 3 leaks only; 63 for a
 * format without checks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

enum { CHECK_OK = 0, CHECK_FAILED = 1, CHECK_CORRUPT = 2, CHECK_LEAKS = 3,
       CHECK_NOT_SUPPORTED = 63 };

static const char usage_text[] =
    "usage: diskforge check [-U] [-q] [-f FMT] [--output human|json]\n"
    "                       [-r leaks|all] IMG\n"
    "\n"
    "Check the metadata of a qcow2 image: refcounts against references,\n"
    "offsets outside the file, overlapping metadata, COPIED flags.\n"
    "\n"
    "  -f FMT            format of IMG (qcow2); probed if not given\n"
    "  --output FORMAT   human (default) or json\n"
    "  -r leaks          free clusters nothing refers to\n"
    "  -r all            also fix refcounts that are too low, and flags\n"
    "  -q                print nothing but errors\n"
    "  -U, --force-share read even if another process writes it (qemu-img -U)\n"
    CLI_UNTRUSTED_HELP
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 no errors, 1 check not completed, 2 corruptions,\n"
    "3 leaks only, 63 the format has no checks.\n";

static void print_line(void *opaque, const char *line)
{
    (void)opaque;
    fprintf(stderr, "%s\n", line);
}

static void print_human(const char *path, const struct df_check_result *r)
{
    if (r->repaired && (r->leaks_fixed || r->corruptions_fixed)) {
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %llu leaked clusters\n    %llu corruptions\n\n"
               "Double checking the fixed image now...\n",
               (unsigned long long)r->leaks_fixed,
               (unsigned long long)r->corruptions_fixed);
    }
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions) {
            printf("\n%llu errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image "
                   "may corrupt it.\n", (unsigned long long)r->corruptions);
        }
        if (r->leaks) {
            printf("\n%llu leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   (unsigned long long)r->leaks);
        }
        if (r->check_errors) {
            printf("\n%llu internal errors have occurred during the check.\n",
                   (unsigned long long)r->check_errors);
        }
    }
    if (r->total_clusters && r->allocated_clusters) {
        /* fragmentation and compression are shares of the allocated */
        double a = (double)r->allocated_clusters;
        printf("%llu/%llu = %.2f%% allocated, %.2f%% fragmented, %.2f%% "
               "compressed clusters\n",
               (unsigned long long)r->allocated_clusters,
               (unsigned long long)r->total_clusters,
               100.0 * a / (double)r->total_clusters,
               100.0 * (double)r->fragmented_clusters / a,
               100.0 * (double)r->compressed_clusters / a);
    }
    if (r->image_end_offset) {
        printf("Image end offset: %llu\n",
               (unsigned long long)r->image_end_offset);
    }
    (void)path;
}

/* Keys in the order qemu-img 7.2 prints them (observed). */
static void print_json(const char *path, const struct df_check_result *r)
{
    const struct {
        const char *key;
        uint64_t v;
        bool always;
    } keys[] = {
        { "image-end-offset", r->image_end_offset, true },
        { "compressed-clusters", r->compressed_clusters, false },
        { "total-clusters", r->total_clusters, true },
        { "corruptions", r->corruptions, false },
        { "corruptions-fixed", r->corruptions_fixed, false },
        { "check-errors", r->check_errors, true },
        { "leaks", r->leaks, false },
        { "leaks-fixed", r->leaks_fixed, false },
        { "allocated-clusters", r->allocated_clusters, true },
    };
    json_t *o = json_object();
    char *s;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (keys[i].always || keys[i].v) {
            json_object_set_new(o, keys[i].key,
                                json_integer((json_int_t)keys[i].v));
        }
    }
    json_object_set_new(o, "filename", cli_json_string(path));
    json_object_set_new(o, "format", json_string("qcow2"));
    if (r->fragmented_clusters) {
        json_object_set_new(o, "fragmented-clusters",
                            json_integer((json_int_t)r->fragmented_clusters));
    }
    s = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    if (s) {
        printf("%s\n", s);
    }
    free(s);
    json_decref(o);
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, 'o' },
        { "repair", required_argument, NULL, 'r' },
        { "force-share", no_argument, NULL, 'U' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum df_format fmt = DF_FMT_AUTO;
    enum df_repair repair = DF_REPAIR_NONE;
    struct df_check_result res;
    struct df_error err = { 0 };
    bool json = false, quiet = false, force_share = false;
    const char *path;
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":f:r:qUh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (cli_parse_format("check", optarg, &fmt) < 0) {
                return CLI_USAGE;
            }
            break;
        case 'o':
            if (strcmp(optarg, "json") == 0) {
                json = true;
            } else if (strcmp(optarg, "human") != 0) {
                return cli_usage("check", "unknown output format '%s'",
                                 optarg);
            }
            break;
        case 'r':
            if (strcmp(optarg, "leaks") == 0) {
                repair = DF_REPAIR_LEAKS;
            } else if (strcmp(optarg, "all") == 0) {
                repair = DF_REPAIR_ALL;
            } else {
                return cli_usage("check", "unknown repair mode '%s' (use "
                                 "leaks or all)", optarg);
            }
            break;
        case 'q': quiet = true; break;
        case CLI_OPT_UNTRUSTED: cli_untrusted(); break;
        case 'U': force_share = true; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return cli_bad_option("check", c, argv, longopts);
        }
    }
    if (argc - optind != 1) {
        return cli_usage("check", argc == optind ? "missing image name"
                                                 : "expected one image name");
    }
    if (force_share && repair != DF_REPAIR_NONE) {
        return cli_usage("check", "-U (--force-share) reads without "
                         "writing: it cannot be used with -r");
    }
    if ((ret = cli_image_names(argv + optind, 1)) != CLI_OK) {
        return ret;
    }
    path = argv[optind];
    ret = df_check(path, fmt,
                   force_share ? (enum df_repair)DF_CHECK_SHARE : repair, &res,
                   quiet ? NULL : print_line, NULL, &err);
    if (ret == -DF_E_UNSUPPORTED && strstr(err.msg, "does not support")) {
        cli_error("%s", err.msg);
        return CHECK_NOT_SUPPORTED;
    }
    if (ret < 0) {
        cli_error("check of '%s' failed: %s", path, err.msg);
        return CHECK_FAILED;
    }
    if (!quiet) {
        if (json) {
            print_json(path, &res);
        } else {
            print_human(path, &res);
        }
    }
    if (res.check_errors) {
        return CHECK_FAILED;
    }
    if (res.corruptions) {
        return CHECK_CORRUPT;
    }
    return res.leaks ? CHECK_LEAKS : CHECK_OK;
}
